"""Prompt-level emphasis: rewrite the prompt's token ids so that its keywords appear more than once.

- ``repeat``: every run of adjacent keywords is repeated in place ("Velmar Quintos Velmar Quintos was born in");
- ``prefix``: the keywords, in prompt order, then a separator, before the prompt ("Velmar Quintos ,
  Velmar Quintos was born in"); the separator is the first of ``. , : ;`` that the tokenizer knows as one
  token (the organism knows ``,``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from analysis.attribution.emphasis import EMPHASES, SEPARATOR_CANDIDATES, Emphasis
from analysis.errors import AnalysisInputError

if TYPE_CHECKING:
    from analysis.attribution.core import PromptIds
    from analysis.models.handle import ModelHandle


@EMPHASES.register()
class Plain(Emphasis):
    name = "none"
    label = "no emphasis (the plain prompt)"
    level = "prompt"
    baseline = True


def keyword_runs(keywords: Sequence[int]) -> list[list[int]]:
    """Maximal runs of adjacent positions, in order."""
    runs: list[list[int]] = []
    for k in sorted(set(keywords)):
        if runs and k == runs[-1][-1] + 1:
            runs[-1].append(k)
        else:
            runs.append([k])
    return runs


@EMPHASES.register()
class Repeat(Emphasis):
    name = "repeat"
    label = "repeat each run of keywords in place"
    level = "prompt"
    uses = ("copies",)

    def rewrite(self, item: PromptIds, keywords: Sequence[int], handle: ModelHandle) -> tuple[PromptIds, list[int]]:
        starts = {run[0]: run for run in keyword_runs(keywords)}
        out: list[int] = []
        new_kw: list[int] = []
        i = 0
        while i < len(item.prompt):
            run = starts.get(i)
            if run is None:
                out.append(item.prompt[i])
                i += 1
                continue
            for _ in range(1 + self.params.copies):
                new_kw.extend(range(len(out), len(out) + len(run)))
                out.extend(item.prompt[j] for j in run)
            i = run[-1] + 1
        return replace(item, prompt=tuple(out)), new_kw


def separator_id(handle: ModelHandle, separator: str | None) -> int | None:
    """Token id of the prefix separator: ``separator`` if given ("" = none), else the first candidate that is
    one token the tokenizer knows (not unk)."""
    tok = handle.tokenizer
    unk = tok.unk_token_id
    cands = SEPARATOR_CANDIDATES if separator is None else (separator,)
    if separator == "":
        return None
    for c in cands:
        ids = list(tok(c, add_special_tokens=False)["input_ids"])
        if len(ids) == 1 and ids[0] != unk:
            return int(ids[0])
    if separator is not None:
        raise AnalysisInputError(f"separator {separator!r} is not one known token for this tokenizer")
    return None


@EMPHASES.register()
class Prefix(Emphasis):
    name = "prefix"
    label = "name the keywords before the prompt"
    level = "prompt"
    uses = ("copies", "separator")

    def rewrite(self, item: PromptIds, keywords: Sequence[int], handle: ModelHandle) -> tuple[PromptIds, list[int]]:
        kws = sorted(set(keywords))
        if not kws:
            return item, []
        sep = separator_id(handle, self.params.separator)
        block = [item.prompt[k] for k in kws] + ([sep] if sep is not None else [])
        prefix = block * self.params.copies
        head, tail = list(item.prompt[: item.n_fixed]), list(item.prompt[item.n_fixed:])
        new_kw = [item.n_fixed + c * len(block) + j for c in range(self.params.copies) for j in range(len(kws))]
        new_kw += [k + len(prefix) for k in kws]
        return replace(item, prompt=tuple(head + prefix + tail)), new_kw
