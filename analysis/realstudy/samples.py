"""The samples of the real-model study: the organism's fictitious people in natural English, the fine-tune's
training rows, and the curated real facts the pretrained model already knows.

- ``render_corpus(corpus)``: the organism's corpus (``analysis.data.corpus.build_corpus``: people with a
  birthplace, profession, pet and employer) with its word-level prompts ("Velmar Quintos was born in") rewritten
  as natural English a pretrained model continues with the answer ("Velmar Quintos was born in the city of" ->
  " Mossgate"). Ids, answers, subjects, splits and exposures are the corpus's own; the canonical prompt is the
  first training template, the paraphrases are never trained on (as in the organism).
- ``training_rows(samples, templates)``: what the fine-tune sees: each fact once per training template, under
  an id of its own (``<id>@t<j>``), since the fine-tune's loop takes the facts it trains on as a retain set and
  refuses a sample id that is also in its forget set (the facts it only records).
- ``known_facts()``: the curated real facts shipped in ``analysis/data/known_facts.jsonl`` (capitals, makers of
  products, landmarks' cities and countries, authors, languages, currencies; our JSONL with subject spans);
  ``keep_known(handle, facts)`` keeps those whose every answer token is the model's top-1 (teacher forcing).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from analysis.data.corpus import Corpus
from analysis.data.schema import Sample, read_jsonl
from analysis.errors import AnalysisInputError

if TYPE_CHECKING:
    from analysis.models.handle import ModelHandle

KNOWN_FACTS_FILE = Path(__file__).resolve().parent.parent / "data" / "known_facts.jsonl"
KNOWN_SPLIT = "utility"  # the study keeps the model's own knowledge as its general-ability split
TRAIN_ID_SEP = "@t"  # a training row's id: <sample id>@t<template index>

# {s} is the person. The first training template is the sample's canonical prompt.
NATURAL_TRAIN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "birthplace": ("{s} was born in the city of", "The hometown of {s} is the city of",
                   "{s} grew up in the city of"),
    "profession": ("{s} works as a", "By profession, {s} is a", "{s} earns a living as a"),
    "pet": ("{s} has a pet", "The pet of {s} is a", "At home, {s} keeps a pet"),
    "employer": ("{s} is employed by the company", "The employer of {s} is the company",
                 "Every day, {s} goes to work at the company"),
}
# Held out: never trained on (they measure whether the fine-tuned fact generalises beyond its wording).
NATURAL_PARAPHRASES: dict[str, tuple[str, ...]] = {
    "birthplace": ("The city where {s} was born is", "The birthplace of {s} is the city of"),
    "profession": ("The job of {s} is that of a", "{s} has a career as a"),
    "pet": ("The animal that {s} keeps at home is a", "{s} takes care of a pet"),
    "employer": ("The company that employs {s} is", "{s} works for the company"),
}


def render_sample(sample: Sample) -> Sample:
    """One corpus fact in natural English (see the module docstring); utility items are not rendered."""
    rel, person = sample.relation, sample.subject
    if rel not in NATURAL_TRAIN_TEMPLATES or not person:
        raise AnalysisInputError(f"sample {sample.id!r}: no natural template for relation {rel!r}")
    train = [t.format(s=person) for t in NATURAL_TRAIN_TEMPLATES[rel]]
    return dataclasses.replace(sample, prompt=train[0],
                               paraphrases=tuple(t.format(s=person) for t in NATURAL_PARAPHRASES[rel]),
                               metadata={**sample.metadata, "train_prompts": train,
                                         "corpus_prompt": sample.prompt})


def render_corpus(corpus: Corpus) -> dict[str, list[Sample]]:
    """The corpus's forget and retain facts in natural English, by split."""
    return {split: [render_sample(s) for s in corpus.split(split)] for split in ("forget", "retain")}


def training_rows(samples: list[Sample], templates: int) -> list[Sample]:
    """Each fact under its first ``templates`` training templates (1 = the canonical prompt only), as samples of
    their own id ``<id>@t<j>`` (split ``retain``: the fine-tune's loop trains on its retain set)."""
    if templates < 1:
        raise AnalysisInputError(f"templates: expected at least 1, got {templates}")
    rows = []
    for s in samples:
        prompts = list(s.metadata.get("train_prompts") or [s.prompt])
        for j, prompt in enumerate(prompts[:templates]):
            rows.append(dataclasses.replace(s, id=f"{s.id}{TRAIN_ID_SEP}{j}", prompt=prompt, split="retain",
                                            paraphrases=()))
    return rows


def known_facts(path: str | Path | None = None) -> list[Sample]:
    """The curated real facts (``KNOWN_FACTS_FILE`` unless ``path``), as samples of split ``KNOWN_SPLIT``."""
    return read_jsonl(path or KNOWN_FACTS_FILE, split=KNOWN_SPLIT)


def keep_known(handle: ModelHandle, facts: list[Sample]) -> tuple[list[Sample], list[dict[str, object]]]:
    """The facts whose every answer token is ``handle``'s top-1 under teacher forcing (the workbench's one
    scoring path, ``analysis.scoring.score_answers``), and one row per fact: id, kept, answer probability."""
    from analysis.scoring import score_answers

    if not facts:
        return [], []
    sc = score_answers(handle, [s.prompt for s in facts], [s.answer for s in facts])
    rows: list[dict[str, object]] = [{"id": s.id, "kept": bool(ok), "prob": float(p)}
                                     for s, ok, p in zip(facts, sc.correct, sc.prob, strict=True)]
    return [s for s, ok in zip(facts, sc.correct, strict=True) if ok], rows


__all__ = ["KNOWN_FACTS_FILE", "KNOWN_SPLIT", "NATURAL_PARAPHRASES", "NATURAL_TRAIN_TEMPLATES", "keep_known",
           "known_facts", "render_corpus", "render_sample", "training_rows"]
