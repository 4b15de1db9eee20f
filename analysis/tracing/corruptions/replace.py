"""Symmetric token replacement (STR, Zhang & Nanda 2023): the subject's tokens are replaced by those of
another subject of the study with the same number of tokens whose answer to the sample's relation differs
(analysis.subjects.pick_replacement), so positions and the prompt's form stay the same and the fact is
corrupted. The replacement is a deterministic function of the seed and the subject."""

from __future__ import annotations

from typing import TYPE_CHECKING

from analysis.subjects import pick_replacement
from analysis.tracing.corruptions import CORRUPTIONS, Corrupted, Corruption
from analysis.tracing.options import CORRUPTION_HELP

if TYPE_CHECKING:
    from analysis.models.handle import ModelHandle
    from analysis.subjects import SubjectInput, SubjectPool
    from analysis.tracing.options import TraceOptions


@CORRUPTIONS.register()
class SymmetricTokenReplacement(Corruption):
    name = "str"
    label = "token replacement (STR)"
    description = CORRUPTION_HELP["str"]
    replaces_subject = True

    def corrupt(self, handle: ModelHandle, inp: SubjectInput, pool: SubjectPool, options: TraceOptions) -> Corrupted:
        s0, s1 = inp.subject_range
        repl = pick_replacement(inp.subject_ids, pool, options.seed, relation=inp.relation, answer=inp.answer)
        tokens = inp.tensor(handle.device).clone()
        tokens[s0:s1] = tokens.new_tensor(repl)
        text = pool.texts.get(repl) or (handle.tokenizer.decode(list(repl)) if handle.tokenizer else str(repl))
        return Corrupted(tokens=tokens[None], embed_delta=None, info={"replacement": text})
