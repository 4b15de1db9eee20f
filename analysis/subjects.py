"""The subject of a prompt, shared by every analysis that corrupts or locates it (causal tracing, the
corrupted EAP-IG baseline): where the subject's tokens are (:func:`subject_input`), the pool of the study's
subjects (their token ids in context, and what each answers per relation; ``Study.subject_pool()`` caches it
per study) and symmetric token replacement's choice of another subject (:func:`pick_replacement`): one whose
answer to the sample's relation differs from the sample's, so that the replacement corrupts the fact.

Token ids come from analysis.scoring (the one tokenisation path); this module only maps the subject's
character span onto those ids.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from analysis.data.schema import Sample
from analysis.errors import AnalysisInputError, SampleError
from analysis.models.handle import ModelHandle
from analysis.scoring import encode_pair, encode_text

# The version of pick_replacement's rule, part of the store key of every result that replaces subjects
# (tracing's STR, the corrupted EAP-IG baseline): bump it when the rule changes what it picks.
# 2: the replacement's answer to the sample's relation must differ from the sample's answer.
REPLACEMENT_RULE = 2


def relation_key(sample: Sample) -> str:
    """What "the same question about another subject" means for ``sample``: its relation, or (a sample
    without one) its prompt with the subject cut out, so a subject's answer to that prompt is comparable."""
    if sample.relation:
        return sample.relation
    start = sample.prompt.rfind(sample.subject) if sample.subject else -1
    if start < 0:
        return ""
    return "prompt: " + sample.prompt[:start] + "{subject}" + sample.prompt[start + len(sample.subject):]


def _norm(answer: str) -> str:
    """An answer as compared with another: whitespace and case aside."""
    return " ".join(answer.split()).casefold()


@dataclass(frozen=True)
class SubjectInput:
    """One (prompt, answer) pair as token ids: the prompt, then the answer teacher-forced after it."""

    ids: tuple[int, ...]  # prompt + answer
    prompt_len: int
    answer_ids: tuple[int, ...]
    subject_range: tuple[int, int]  # [start, end) prompt positions of the subject (BOS included in positions)
    sample_id: str = ""
    answer: str = ""
    relation: str = ""  # relation_key of the sample ("": unknown)

    @property
    def subject_ids(self) -> tuple[int, ...]:
        return self.ids[self.subject_range[0]: self.subject_range[1]]

    def tensor(self, device: torch.device | str) -> torch.Tensor:
        return torch.tensor(self.ids, dtype=torch.long, device=device)


def _char_spans(tokenizer: PreTrainedTokenizerBase, text: str, ids: list[int]) -> list[tuple[int, int]]:
    """Character span of each token of ``text`` (without special tokens)."""
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if list(enc["input_ids"]) == ids:
            return [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    except (NotImplementedError, ValueError, TypeError):  # slow tokenizers have no offsets
        pass
    # Fallback (as ROME's find_token_range): the decoded prefix lengths give each token's end.
    spans, prev = [], 0
    for i in range(len(ids)):
        end = len(tokenizer.decode(ids[: i + 1]))
        spans.append((prev, end))
        prev = end
    return spans


def subject_token_range(tokenizer: PreTrainedTokenizerBase, sample: Sample, prepend_bos: bool) -> tuple[int, int]:
    """[start, end) positions of the subject's tokens in the prompt's token ids (BOS counted)."""
    try:
        cs, ce = sample.subject_char_span()
    except SampleError as e:
        raise AnalysisInputError(str(e)) from None
    ids = encode_text(tokenizer, sample.prompt, False)
    spans = _char_spans(tokenizer, sample.prompt, ids)
    hits = [i for i, (a, b) in enumerate(spans) if a < ce and b > cs and sample.prompt[max(a, cs):min(b, ce)].strip()]
    if not hits:
        raise AnalysisInputError(f"sample {sample.id!r}: subject {sample.subject!r} covers no token of the prompt")
    offset = 1 if prepend_bos else 0
    return hits[0] + offset, hits[-1] + 1 + offset


def subject_input(handle: ModelHandle, sample: Sample, purpose: str = "causal tracing") -> SubjectInput:
    """Token ids of a sample with its subject located; AnalysisInputError when the subject cannot be
    corrupted (no subject, subject not in the prompt) or the sample is too long for the model."""
    if not sample.subject:
        raise AnalysisInputError(f"sample {sample.id!r} has no subject to corrupt; {purpose} needs one")
    p_ids, a_ids = encode_pair(handle.tokenizer, sample.prompt, sample.answer, handle.prepend_bos)
    if len(p_ids) + len(a_ids) > handle.model.cfg.n_ctx:
        raise AnalysisInputError(f"sample {sample.id!r}: prompt + answer is {len(p_ids) + len(a_ids)} tokens, "
                                 f"longer than the model's context of {handle.model.cfg.n_ctx}")
    rng = subject_token_range(handle.tokenizer, sample, handle.prepend_bos)
    return SubjectInput(ids=tuple(p_ids + a_ids), prompt_len=len(p_ids), answer_ids=tuple(a_ids), subject_range=rng,
                        sample_id=sample.id, answer=sample.answer, relation=relation_key(sample))


def token_strings(tokenizer: PreTrainedTokenizerBase | None, ids: Sequence[int]) -> list[str]:
    if tokenizer is None:
        return [f"#{i}" for i in ids]
    return [tokenizer.decode([int(i)]) for i in ids]


@dataclass(frozen=True)
class SubjectPool:
    """Token ids (in context) of every subject occurrence among the study's samples, and the answers each
    subject gives per relation (:func:`relation_key`; answers normalised: whitespace and case aside)."""

    subjects: tuple[tuple[int, ...], ...]  # one entry per sample with a subject (duplicates kept)
    texts: dict[tuple[int, ...], str]
    answers: dict[tuple[int, ...], dict[str, frozenset[str]]] = field(default_factory=dict)

    @classmethod
    def from_samples(cls, tokenizer: PreTrainedTokenizerBase, samples: Sequence[Sample]) -> SubjectPool:
        subjects: list[tuple[int, ...]] = []
        texts: dict[tuple[int, ...], str] = {}
        facts: list[tuple[tuple[int, ...], str, str]] = []
        for s in samples:
            if not s.subject or s.subject not in s.prompt:
                continue
            try:
                a, b = subject_token_range(tokenizer, s, prepend_bos=False)
            except AnalysisInputError:
                continue
            ids = tuple(encode_text(tokenizer, s.prompt, False)[a:b])
            subjects.append(ids)
            texts.setdefault(ids, s.subject)
            facts.append((ids, relation_key(s), s.answer))
        return cls(tuple(subjects), texts, _answers(facts))

    @classmethod
    def from_ids(cls, subjects: Sequence[Sequence[int]],
                 facts: Iterable[tuple[Sequence[int], str, str]] = ()) -> SubjectPool:
        """A pool of token-id subjects; ``facts`` are (subject ids, relation, answer) triples."""
        subs = tuple(tuple(int(i) for i in s) for s in subjects)
        known = [(tuple(int(i) for i in ids), rel, ans) for ids, rel, ans in facts]
        return cls(subs, {s: " ".join(f"#{i}" for i in s) for s in subs}, _answers(known))

    def answers_to(self, subject: tuple[int, ...], relation: str) -> frozenset[str] | None:
        """The (normalised) answers ``subject`` gives to ``relation`` in the study; None when unknown."""
        if not relation:
            return None
        return self.answers.get(subject, {}).get(relation)

    def digest(self, answers: bool = False) -> str:
        """A digest of the subjects (their ids and texts), and with ``answers`` of what they answer: part of
        the store key of every result that reads the pool."""
        parts: tuple[object, ...] = (self.subjects, sorted(self.texts.items()))
        if answers:
            parts += (sorted((s, sorted((r, sorted(a)) for r, a in by.items())) for s, by in self.answers.items()),)
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]

    def __len__(self) -> int:
        return len(self.subjects)

    @torch.no_grad()
    def embedding_std(self, handle: ModelHandle) -> float:
        """Std over all elements of the token embeddings (the output of ``hook_embed``, as ROME's
        ``collect_embedding_std`` takes the embedding layer's output) of every subject-token occurrence."""
        if not self.subjects:
            raise AnalysisInputError("the study has no samples with a subject: no embedding scale for the noise")
        flat = torch.tensor([i for s in self.subjects for i in s], dtype=torch.long)
        uniq, counts = torch.unique(flat, return_counts=True)
        emb = handle.model.embed(uniq[None].to(handle.device))[0].double().cpu()  # [U, d]
        w = counts.double()[:, None]
        m = float(w.sum()) * emb.shape[1]
        s1 = float((w * emb).sum())
        s2 = float((w * emb * emb).sum())
        var = (s2 - s1 * s1 / m) / max(m - 1, 1)
        return float(max(var, 0.0) ** 0.5)


def _answers(facts: Iterable[tuple[tuple[int, ...], str, str]]) -> dict[tuple[int, ...], dict[str, frozenset[str]]]:
    out: dict[tuple[int, ...], dict[str, set[str]]] = {}
    for ids, relation, answer in facts:
        if relation:
            out.setdefault(ids, {}).setdefault(relation, set()).add(_norm(answer))
    return {ids: {r: frozenset(a) for r, a in by.items()} for ids, by in out.items()}


def pick_replacement(own: tuple[int, ...], pool: SubjectPool, seed: int, *, relation: str,
                     answer: str) -> tuple[int, ...]:
    """Symmetric token replacement's choice (STR, Zhang & Nanda 2023): another subject of the study with as
    many tokens whose answer to ``relation`` differs from ``answer`` (a subject with the same answer would
    corrupt nothing). Subjects whose answer to the relation the pool does not know are taken only when no
    subject is known to answer differently. Among those, preferably one that differs at every position (a
    replacement sharing e.g. the first name would leave that token uncorrupted). A deterministic function of
    the seed and the subject. ``relation`` is the sample's :func:`relation_key` ("" = unknown)."""
    same_length = sorted({s for s in pool.subjects if len(s) == len(own) and s != own})
    if not same_length:
        raise AnalysisInputError(f"no other subject of {len(own)} token(s) in the study to replace the subject "
                                 "with (symmetric token replacement); use noise corruption")
    differ, unknown = [], []
    for c in same_length:
        known = pool.answers_to(c, relation)
        if known is None:
            unknown.append(c)
        elif _norm(answer) not in known:
            differ.append(c)
    candidates = differ or unknown
    if not candidates:
        raise AnalysisInputError(
            f"every other subject of {len(own)} token(s) in the study ({len(same_length)}) gives the answer "
            f"{answer!r} to {relation!r} too: replacing the subject with one of them would corrupt nothing "
            "(symmetric token replacement); use noise corruption")
    disjoint = [c for c in candidates if all(a != b for a, b in zip(c, own, strict=True))]
    candidates = disjoint or candidates
    digest = hashlib.sha256(f"{seed}|{','.join(map(str, own))}".encode()).hexdigest()
    return random.Random(int(digest[:16], 16)).choice(candidates)
