"""One record of a foreign data format -> the fields of our ``Sample`` (analysis.data.schema), before validation.

Each converter takes the record (a dict, as read from JSON or a CSV row after the column map), the place it
came from (``where``: ``file:line`` or ``file[index]``, prefixed to every message) and returns a dict of our
fields (``prompt``, ``answer``, optionally ``id``, ``subject``, ``relation``, ``paraphrases``) with every other
field of the record kept under ``metadata`` (TOFU's ``paraphrased_answer`` and ``perturbed_answer``,
CounterFact's ``target_new`` and ``neighborhood_prompts`` ...), and ``question`` / ``answer`` texts the subject
finder reads (``_question``: the text a found subject is searched in).

- ``tofu`` (TOFU, open-unlearning's QA datasets): ``question``, ``answer``; ``paraphrased_question`` becomes a
  paraphrase; the rest (``paraphrased_answer``, ``perturbed_answer``, ``perturbed_question``, ``index``) metadata.
- ``counterfact`` (ROME / MEMIT ``counterfact.json``): ``requested_rewrite`` = {``prompt`` with ``{}`` where
  the subject goes, ``subject``, ``target_true`` {``str``}, ``relation_id``}; ``paraphrase_prompts`` become
  paraphrases; the answer is the TRUE target (what the model knows and an unlearning removes), the edit's
  ``target_new`` is kept in metadata.
- ``known`` (ROME ``known_1000.json``): ``subject``, ``attribute`` (or ``target``), ``prompt`` or ``template``
  with ``{}``, ``relation_id``.
- ``jsonl``: our own fields, as they are.
"""

from __future__ import annotations

from typing import Any

from analysis.data.schema import json_kind
from analysis.errors import SampleError

Record = dict[str, Any]


def field_error(where: str, name: str, expected: str, value: object = ...) -> SampleError:
    got = "" if value is ... else f", got {json_kind(value)}"
    return SampleError(f"{where}: field {name!r}: expected {expected}{got}")


def missing(where: str, name: str, fmt: str, needs: str) -> SampleError:
    return SampleError(f"{where}: field {name!r}: missing required field {name!r} ({fmt} records need {needs})")


def text_field(where: str, rec: Record, name: str, fmt: str, needs: str, label: str | None = None) -> str:
    """``rec[name]`` as a non-empty string (a ``{"str": ...}`` object counts: CounterFact's targets)."""
    if name not in rec or rec[name] is None:
        raise missing(where, label or name, fmt, needs)
    value = rec[name]
    if isinstance(value, dict) and "str" in value:
        value = value["str"]
    if not isinstance(value, str) or not value.strip():
        raise field_error(where, label or name, "a non-empty string", value)
    return value


def fill(where: str, name: str, template: str, subject: str) -> str:
    """A ``{}`` template with the subject put in (ROME's ``template.format(subject)``)."""
    if "{}" not in template:
        raise field_error(where, name, "a prompt template with {} where the subject goes", template)
    return template.replace("{}", subject, 1)


def _rest(rec: Record, used: set[str]) -> dict[str, Any]:
    meta = dict(rec.get("metadata") or {}) if isinstance(rec.get("metadata"), dict) else {}
    meta.update({k: v for k, v in rec.items() if k not in used and k != "metadata"})
    return meta


TOFU_NEEDS = "question and answer"


def tofu(rec: Record, where: str) -> Record:
    q = text_field(where, rec, "question", "TOFU", TOFU_NEEDS)
    a = text_field(where, rec, "answer", "TOFU", TOFU_NEEDS)
    para = rec.get("paraphrased_question")
    out: Record = {"prompt": q, "answer": a, "_question": q,
                   "paraphrases": [para] if isinstance(para, str) and para.strip() else [],
                   "metadata": _rest(rec, {"question", "answer", "paraphrased_question", "id", "subject",
                                           "relation"})}
    for k in ("id", "subject", "relation"):
        if k in rec:
            out[k] = rec[k]
    return out


CF_NEEDS = "requested_rewrite {prompt, subject, target_true}"


def counterfact(rec: Record, where: str) -> Record:
    rr = rec.get("requested_rewrite")
    if not isinstance(rr, dict):
        if rr is None:
            raise missing(where, "requested_rewrite", "CounterFact", CF_NEEDS)
        raise field_error(where, "requested_rewrite", "an object {prompt, subject, target_true}", rr)
    subject = text_field(where, rr, "subject", "CounterFact", CF_NEEDS, "requested_rewrite.subject")
    template = text_field(where, rr, "prompt", "CounterFact", CF_NEEDS, "requested_rewrite.prompt")
    answer = text_field(where, rr, "target_true", "CounterFact", CF_NEEDS, "requested_rewrite.target_true")
    meta = _rest(rec, {"requested_rewrite", "paraphrase_prompts"})
    meta.update({"template": template, **{k: v for k, v in rr.items()
                                          if k not in ("prompt", "subject", "target_true", "relation_id")}})
    out: Record = {"prompt": fill(where, "requested_rewrite.prompt", template, subject), "answer": answer,
                   "subject": subject, "relation": rr.get("relation_id") or "",
                   "paraphrases": rec.get("paraphrase_prompts") or [], "metadata": meta}
    if "case_id" in rec:
        out["id"] = f"case-{rec['case_id']}"
    return out


KNOWN_NEEDS = "subject, attribute and a prompt or a template with {}"


def known(rec: Record, where: str) -> Record:
    subject = text_field(where, rec, "subject", "known-facts", KNOWN_NEEDS)
    key = "attribute" if "attribute" in rec else "target"
    answer = text_field(where, rec, key, "known-facts", KNOWN_NEEDS, "attribute" if key == "attribute" else None)
    if rec.get("prompt") is not None:
        prompt = text_field(where, rec, "prompt", "known-facts", KNOWN_NEEDS)
    else:
        prompt = fill(where, "template", text_field(where, rec, "template", "known-facts", KNOWN_NEEDS), subject)
    relation = rec.get("relation_id", rec.get("relation")) or ""
    out: Record = {"prompt": prompt, "answer": answer, "subject": subject, "relation": relation,
                   "paraphrases": rec.get("paraphrases") or [],
                   "metadata": _rest(rec, {"subject", key, "prompt", "relation_id", "relation", "paraphrases",
                                           "id"})}
    if "id" in rec:
        out["id"] = rec["id"]
    elif "known_id" in rec:
        out["id"] = f"known-{rec['known_id']}"
    return out


OURS_FIELDS = ("id", "prompt", "answer", "subject", "relation", "split", "paraphrases")


def ours(rec: Record, where: str) -> Record:
    out: Record = {k: rec[k] for k in OURS_FIELDS if k in rec}
    out["metadata"] = _rest(rec, set(OURS_FIELDS))
    if isinstance(rec.get("prompt"), str):
        out["_question"] = rec["prompt"]
    return out


CONVERTERS = {"jsonl": ours, "tofu": tofu, "counterfact": counterfact, "known": known}


def detect(rec: Record) -> str | None:
    """The format of a record from its fields (None: none fits)."""
    if "requested_rewrite" in rec:
        return "counterfact"
    if "subject" in rec and ("attribute" in rec or "target" in rec) and ("template" in rec or "prompt" in rec):
        return "known"
    if "question" in rec and "answer" in rec:
        return "tofu"
    if "prompt" in rec and "answer" in rec:
        return "jsonl"
    return None
