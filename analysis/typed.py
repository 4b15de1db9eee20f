"""Typed prompts: a (prompt, subject, answer) that a researcher types instead of picking a sample of the study.

:func:`typed_sample` checks the text and makes a :class:`~analysis.data.schema.Sample` of it (split
:data:`TYPED_SPLIT`, id ``typed-`` + a digest of the text, so the same text typed twice is the same sample); the
analyses' typed entry points (``analysis.tracing.runner.trace_typed``,
``analysis.attribution.runner.attribute_typed``, ``analysis.circuits.runner.circuit_typed``) take such a sample
and run the same code as their by-id entry points. The text is never changed: an answer typed without the
leading space the model expects is tokenised exactly as a sample file's answer is (``analysis.scoring.encode_pair``
puts the separator between prompt and answer).

Where they are stored. A result of a typed sample is cached in the study store under its own kind
(:func:`typed_kind`: ``<kind>:typed``, so no reader of the study's per-sample rows ever meets one), under the
typed id and the same options key as the by-id result, and the stored value carries the text it was computed
from (prompt, subject, answer and the relation used, :func:`typed_text`): a read whose text differs (a digest
collision, another study's row) is a miss, recomputed and replaced. So equal typed prompts share one entry and
a hash collision can never serve another prompt's result.

The relation. A typed sample has no relation; when its prompt is, with the subject cut out, the prompt (or a
paraphrase) of the study's samples of one relation (``"{subject} was born in"``), :func:`with_study_relation`
gives it that relation, so symmetric token replacement (tracing's STR, the corrupted EAP-IG baseline) picks a
replacement subject whose answer to that relation differs, exactly as for the study's own sample.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from analysis.data.schema import MAX_ANSWER_CHARS, MAX_PROMPT_CHARS, MAX_SHORT_CHARS, Sample
from analysis.errors import AnalysisInputError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from analysis.store import ResultStore
    from analysis.study import Study

TYPED_SPLIT = "typed"  # the split of a typed sample (never a split of a study's sample files)
TYPED_PREFIX = "typed-"
TYPED_KIND_SUFFIX = ":typed"


# ---- the sample -------------------------------------------------------------------------------------------
def typed_id(prompt: str, answer: str, subject: str = "") -> str:
    """``typed-`` + a 12-hex digest of (prompt, subject, answer): equal typed text, equal id."""
    text = json.dumps([prompt, subject, answer], ensure_ascii=False)
    return TYPED_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:12]


def _check_text(what: str, value: object, limit: int, hint: str) -> str:
    if not isinstance(value, str):
        raise AnalysisInputError(f"typed prompt: the {what} must be text, got {type(value).__name__}")
    if not value.strip():
        raise AnalysisInputError(f"typed prompt: the {what} is empty; {hint}")
    if len(value) > limit:
        raise AnalysisInputError(f"typed prompt: the {what} has {len(value):,} characters; at most {limit:,} "
                                 "are allowed")
    if "\x00" in value:
        raise AnalysisInputError(f"typed prompt: the {what} contains a NUL character")
    return value


def typed_sample(prompt: str, answer: str, subject: str | None = None) -> Sample:
    """A sample of typed text, checked: prompt and answer non-empty (and not over the sample files' limits),
    the subject (optional; ``None`` or ``""``: none) a span of the prompt, typed exactly as it appears there.
    The text is kept as typed. Raises AnalysisInputError naming what is wrong. Tokenisation is checked when
    an analysis runs it on a model (:func:`check_encodable`)."""
    prompt = _check_text("prompt", prompt, MAX_PROMPT_CHARS, "type the text the model should continue")
    answer = _check_text("answer", answer, MAX_ANSWER_CHARS,
                         "type the answer the prompt should be continued with")
    if subject is None or subject == "":
        subject = ""
    else:
        subject = _check_text("subject", subject, MAX_SHORT_CHARS,
                              "type the part of the prompt the fact is about (e.g. a name), or leave it out")
        if subject not in prompt:
            other_case = subject.casefold() in prompt.casefold()
            raise AnalysisInputError(
                f"typed prompt: the subject {subject!r} is not in the prompt {prompt[:200]!r}; type it exactly as "
                f"it appears in the prompt{' (it differs in upper / lower case)' if other_case else ''}")
    return Sample(id=typed_id(prompt, answer, subject), prompt=prompt, answer=answer, subject=subject,
                  split=TYPED_SPLIT)


def is_typed(sample: Sample) -> bool:
    """True for a sample made by :func:`typed_sample` (its split, and its id matches its text)."""
    return sample.split == TYPED_SPLIT and sample.id == typed_id(sample.prompt, sample.answer, sample.subject)


def checked_typed(sample: Sample) -> Sample:
    """``sample`` when it is a typed sample whose text passes :func:`typed_sample`'s checks (a Sample built by
    hand, or edited with ``dataclasses.replace``, is refused: its id would not follow its text)."""
    if not isinstance(sample, Sample):
        raise AnalysisInputError(f"expected a typed Sample (analysis.typed.typed_sample), got "
                                 f"{type(sample).__name__}")
    again = typed_sample(sample.prompt, sample.answer, sample.subject or None)
    if not is_typed(sample) or again.id != sample.id:
        raise AnalysisInputError(f"sample {sample.id!r} is not a typed sample: make it with "
                                 "analysis.typed.typed_sample(prompt, answer, subject)")
    return sample


# ---- the model's tokenizer --------------------------------------------------------------------------------
def unknown_words(tokenizer: PreTrainedTokenizerBase, text: str) -> list[str]:
    """The pieces of ``text`` the tokenizer can only read as its unknown token (a word-level tokenizer such as
    the organism's knows only its corpus words; byte-level BPE knows every text and gives none)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return []
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = list(enc["offset_mapping"])
    except (NotImplementedError, ValueError, TypeError):  # slow tokenizers have no offsets
        enc, offsets = tokenizer(text, add_special_tokens=False), []
    ids = list(enc["input_ids"])
    if unk not in ids:
        return []
    if len(offsets) != len(ids):
        return [str(tokenizer.unk_token)] * ids.count(unk)
    return [text[a:b] for i, (a, b) in zip(ids, offsets, strict=True) if i == unk]


def check_encodable(tokenizer: PreTrainedTokenizerBase, sample: Sample, model: str = "") -> None:
    """AnalysisInputError when the model's tokenizer cannot encode a word of the prompt or the answer (it would
    read it as its unknown token, which means nothing to the model), naming the words."""
    parts = []
    for what, text in (("prompt", sample.prompt), ("answer", sample.answer)):
        words = list(dict.fromkeys(unknown_words(tokenizer, text)))
        if words:
            shown = ", ".join(repr(w) for w in words[:8]) + (f" and {len(words) - 8} more" if len(words) > 8 else "")
            parts.append(f"{shown} in the {what}")
    if parts:
        whose = f"the tokenizer of {model!r}" if model else "the model's tokenizer"
        raise AnalysisInputError(
            f"typed prompt: {whose} cannot encode {'; '.join(parts)}: it would read them as its unknown token "
            f"{getattr(tokenizer, 'unk_token', None)!r}. A word-level tokenizer (the organism's) knows only the "
            "words of its training corpus: use words and names from the study's samples")


# ---- the relation ---------------------------------------------------------------------------------------
def _template(prompt: str, subject: str) -> str | None:
    start = prompt.rfind(subject) if subject else -1
    if start < 0:
        return None
    return prompt[:start] + "{subject}" + prompt[start + len(subject):]


def study_relations(samples: Sequence[Sample]) -> dict[str, str]:
    """Prompt template (the prompt or a paraphrase with the subject cut out) -> the relation of the samples
    asking it, for every template that only samples of one relation ask."""
    seen: dict[str, set[str]] = {}
    for s in samples:
        if not s.relation or not s.subject:
            continue
        for text in (s.prompt, *s.paraphrases):
            t = _template(text, s.subject)
            if t is not None:
                seen.setdefault(t, set()).add(s.relation)
    return {t: next(iter(r)) for t, r in seen.items() if len(r) == 1}


def with_study_relation(study: Study, sample: Sample) -> Sample:
    """``sample`` with the relation of the study's samples that ask the same question (its prompt with the
    subject cut out), when exactly one relation does; else unchanged (no relation: the replacement subject is
    then any other subject of as many tokens, see analysis.subjects.pick_replacement)."""
    if sample.relation or not sample.subject:
        return sample
    t = _template(sample.prompt, sample.subject)
    rel = study_relations(study.samples()).get(t) if t is not None else None
    return replace(sample, relation=rel) if rel else sample


# ---- the store --------------------------------------------------------------------------------------------
def typed_kind(kind: str) -> str:
    """The store kind of typed results of an analysis whose per-sample rows are ``kind``."""
    return kind + TYPED_KIND_SUFFIX


def typed_text(sample: Sample) -> dict[str, str]:
    """What a typed result was computed from, stored beside it and compared on every read."""
    return {"prompt": sample.prompt, "subject": sample.subject, "answer": sample.answer, "relation": sample.relation}


class Slot(Protocol):
    """Where one sample's result of one analysis on some models lives in the store, per options key."""

    def get(self, key: dict[str, Any]) -> Any | None: ...

    def put(self, key: dict[str, Any], value: Any) -> None: ...


@dataclass(frozen=True)
class SampleSlot:
    """A study sample's rows: the analysis's kind, under the sample id (the store adds its content digest)."""

    store: ResultStore
    kind: str
    models: Sequence[str]
    sample_id: str

    def get(self, key: dict[str, Any]) -> Any | None:
        return self.store.get(self.kind, list(self.models), key, sample_id=self.sample_id)

    def put(self, key: dict[str, Any], value: Any) -> None:
        self.store.put(self.kind, list(self.models), key, value, sample_id=self.sample_id)


@dataclass(frozen=True)
class TypedSlot:
    """A typed sample's rows: ``<kind>:typed`` under the typed id, the value stored with its text and served
    only to a read of the same text."""

    store: ResultStore
    kind: str
    models: Sequence[str]
    sample: Sample

    def get(self, key: dict[str, Any]) -> Any | None:
        row = self.store.get(typed_kind(self.kind), list(self.models), key, sample_id=self.sample.id)
        if not isinstance(row, dict) or row.get("typed") != typed_text(self.sample):
            return None
        return row.get("value")

    def put(self, key: dict[str, Any], value: Any) -> None:
        self.store.put(typed_kind(self.kind), list(self.models), key,
                       {"typed": typed_text(self.sample), "value": value}, sample_id=self.sample.id)


def slot(study: Study, kind: str, models: Sequence[str], sample: Sample) -> Slot:
    """The store slot of ``sample``'s results of ``kind`` on ``models`` (fingerprints): a typed sample's own
    (:class:`TypedSlot`), or a study sample's (:class:`SampleSlot`)."""
    if sample.split == TYPED_SPLIT:
        return TypedSlot(study.store, kind, tuple(models), sample)
    return SampleSlot(study.store, kind, tuple(models), sample.id)


def typed_input(study: Study, model: str, sample: Sample, *, needs_subject: str = "") -> Sample:
    """A typed sample ready for an analysis on ``model``: checked (:func:`checked_typed`), its subject required
    when ``needs_subject`` names what needs it, every word encodable by the model's tokenizer, and given the
    study's relation for its question (:func:`with_study_relation`). Loads the model (``study.load``, cached)."""
    sample = checked_typed(sample)
    if needs_subject and not sample.subject:
        raise AnalysisInputError(f"typed prompt: {needs_subject} needs a subject: type the part of the prompt the "
                                 "fact is about (e.g. a name), exactly as it appears in the prompt")
    check_encodable(study.load(model).tokenizer, sample, model)
    return with_study_relation(study, sample)
