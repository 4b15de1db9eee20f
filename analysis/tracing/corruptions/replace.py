"""Symmetric token replacement (STR, Zhang & Nanda 2023): the subject's tokens are replaced by those of
another subject of the study with the same number of tokens, so positions and the prompt's form stay
the same. The replacement is a deterministic function of the seed and the subject."""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING

from analysis.errors import AnalysisInputError
from analysis.tracing.corruptions import Corrupted, Corruption, register_corruption

if TYPE_CHECKING:
    from analysis.models.handle import ModelHandle
    from analysis.tracing.options import TraceOptions
    from analysis.tracing.tokens import SubjectPool, TraceInput


def pick_replacement(own: tuple[int, ...], pool: SubjectPool, seed: int) -> tuple[int, ...]:
    """Another subject with as many tokens; preferably one that differs at every position (a replacement
    sharing e.g. the first name would leave that token uncorrupted)."""
    candidates = sorted({s for s in pool.subjects if len(s) == len(own) and s != own})
    if not candidates:
        raise AnalysisInputError(f"no other subject of {len(own)} token(s) in the study to replace the subject "
                                 "with (symmetric token replacement); use noise corruption")
    disjoint = [c for c in candidates if all(a != b for a, b in zip(c, own, strict=True))]
    candidates = disjoint or candidates
    digest = hashlib.sha256(f"{seed}|{','.join(map(str, own))}".encode()).hexdigest()
    return random.Random(int(digest[:16], 16)).choice(candidates)


@register_corruption
class SymmetricTokenReplacement(Corruption):
    name = "str"
    label = "symmetric token replacement of the subject"

    def corrupt(self, handle: ModelHandle, inp: TraceInput, pool: SubjectPool, options: TraceOptions) -> Corrupted:
        s0, s1 = inp.subject_range
        repl = pick_replacement(inp.subject_ids, pool, options.seed)
        tokens = inp.tensor(handle.device).clone()
        tokens[s0:s1] = tokens.new_tensor(repl)
        text = pool.texts.get(repl) or (handle.tokenizer.decode(list(repl)) if handle.tokenizer else str(repl))
        return Corrupted(tokens=tokens[None], embed_delta=None, info={"replacement": text})
