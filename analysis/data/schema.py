"""The Sample schema, JSONL IO and validation with specific errors.

Every field of a sample line is checked by type and range on read; a problem raises ``SampleError`` naming
the file, the line, the field and what was expected (``forget.jsonl:3: field 'prompt': expected a
non-empty string, got null``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from analysis.errors import SampleError

SPLITS: tuple[str, ...] = ("forget", "retain", "eval", "utility")
REQUIRED_FIELDS: tuple[str, ...] = ("id", "prompt", "answer")
KNOWN_FIELDS: tuple[str, ...] = ("id", "prompt", "answer", "subject", "relation", "split", "paraphrases",
                                 "metadata")
# Sane upper bounds on the text of one sample, far above any fact query; the check against a model's context
# window (in tokens) happens when a study is created (analysis.study.Study.create).
MAX_PROMPT_CHARS = 10_000  # prompts, paraphrases and training prompts
MAX_ANSWER_CHARS = 2_000
MAX_ID_CHARS = 200
MAX_SHORT_CHARS = 1_000  # subject, relation
MAX_METADATA_DEPTH = 32  # nesting levels of the free metadata object


def json_kind(value: object) -> str:
    """How a JSON value reads in a message: null, true, a number, a list, an object or a short string."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return f"the text {value[:40]!r}{'...' if len(value) > 40 else ''}" if value.strip() else "an empty text"
    return type(value).__name__


class _Where:
    """The place a message names: ``file:line`` (or a caller's label) and the field."""

    def __init__(self, where: str) -> None:
        self.where = where

    def error(self, name: str, expected: str, value: object = ..., got: str | None = None) -> SampleError:
        """``got`` describes the value in words where ``json_kind(value)`` would not (e.g. its length)."""
        got = f", got {got}" if got is not None else "" if value is ... else f", got {json_kind(value)}"
        prefix = f"{self.where}: " if self.where else "sample: "
        return SampleError(f"{prefix}field {name!r}: expected {expected}{got}")


def _text(loc: _Where, d: dict[str, Any], name: str, limit: int, required: bool) -> str:
    value = d.get(name)
    if value is None and not required:
        return ""
    what = f"a {'non-empty ' if required else ''}string of at most {limit:,} characters"
    if not isinstance(value, str):
        raise loc.error(name, what, value)
    if required and not value.strip():
        raise loc.error(name, what, value)
    if len(value) > limit:
        raise loc.error(name, what, got=f"a text of {len(value):,} characters")
    if "\x00" in value:
        raise loc.error(name, f"{what} without NUL characters")
    return value


def _text_list(loc: _Where, name: str, value: object, limit: int) -> tuple[str, ...]:
    what = f"a list of non-empty strings of at most {limit:,} characters each"
    if value is None:
        return ()
    if isinstance(value, str):  # one paraphrase given as a string
        value = [value]
    if not isinstance(value, list):
        raise loc.error(name, what, value)
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip() or len(item) > limit:
            long = isinstance(item, str) and len(item) > limit
            raise loc.error(f"{name}[{i}]", f"a non-empty string of at most {limit:,} characters", item,
                            got=f"a text of {len(item):,} characters" if long else None)
    return tuple(value)


def _depth(value: object) -> int:
    """Nesting depth of a JSON value (iterative: never a RecursionError); -1 if it holds a non-finite number
    (JSON written from it would not be JSON)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > MAX_METADATA_DEPTH:
            return deepest
        if isinstance(v, float) and not math.isfinite(v):
            return -1
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


def _metadata(loc: _Where, d: dict[str, Any]) -> dict[str, Any]:
    raw = d.get("metadata")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise loc.error("metadata", "an object (a JSON {...} of free fields)", raw)
    metadata = dict(raw)
    metadata.update({k: v for k, v in d.items() if k not in KNOWN_FIELDS})  # e.g. a top-level "exposures"
    depth = _depth(metadata)
    if depth > MAX_METADATA_DEPTH:
        raise loc.error("metadata", f"at most {MAX_METADATA_DEPTH} levels of nesting")
    if depth < 0:
        raise loc.error("metadata", "finite numbers only (no NaN or Infinity)")
    if "exposures" in metadata:
        x = metadata["exposures"]
        if isinstance(x, bool) or not isinstance(x, int) or x < 0:
            raise loc.error("exposures", "a non-negative integer (how often the fact was seen in training)", x)
    if "train_prompts" in metadata:
        metadata["train_prompts"] = list(_text_list(loc, "train_prompts", metadata["train_prompts"],
                                                    MAX_PROMPT_CHARS))
    return metadata


@dataclass(frozen=True)
class Sample:
    """One fact query: ``prompt`` should be continued by ``answer``.

    ``subject`` is a span inside ``prompt`` (the entity the fact is about); ``paraphrases`` are other
    prompts with the same answer; ``metadata`` holds free fields such as the exposure count.
    """

    id: str
    prompt: str
    answer: str
    subject: str = ""
    relation: str = ""
    split: str = "eval"
    paraphrases: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    def subject_char_span(self) -> tuple[int, int]:
        """Character span of the subject in the prompt (last occurrence, like ROME)."""
        if not self.subject:
            raise SampleError(f"sample {self.id!r} has no subject")
        start = self.prompt.rfind(self.subject)
        if start < 0:
            raise SampleError(f"sample {self.id!r}: subject {self.subject!r} not found in prompt {self.prompt!r}")
        return start, start + len(self.subject)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["paraphrases"] = list(self.paraphrases)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "") -> Sample:
        """A validated sample. ``where`` (``file:line``) prefixes every message; fields of the wrong type,
        empty or over-long texts, a subject not in the prompt and an unknown split raise SampleError."""
        loc = _Where(where)
        if not isinstance(d, dict):
            raise SampleError(f"{where or 'sample'}: expected a JSON object {{\"id\": ..., \"prompt\": ..., "
                              f"\"answer\": ...}}, got {json_kind(d)}")
        for name in REQUIRED_FIELDS:
            if name not in d:
                raise SampleError(f"{where or 'sample'}: field {name!r}: missing required field {name!r}")
        sid = _text(loc, d, "id", MAX_ID_CHARS, required=True)
        if sid != sid.strip() or any(ord(c) < 32 for c in sid):
            raise loc.error("id", "an id without leading/trailing spaces or control characters", sid)
        prompt = _text(loc, d, "prompt", MAX_PROMPT_CHARS, required=True)
        answer = _text(loc, d, "answer", MAX_ANSWER_CHARS, required=True)
        subject = _text(loc, d, "subject", MAX_SHORT_CHARS, required=False)
        if subject and subject not in prompt:
            raise SampleError(f"{where or 'sample'}: field 'subject': subject {subject!r} not found in prompt "
                              f"{prompt[:200]!r} (expected a span of the prompt)")
        relation = _text(loc, d, "relation", MAX_SHORT_CHARS, required=False)
        split = d.get("split")
        if split is None:
            split = "eval"
        if not isinstance(split, str) or split not in SPLITS:
            raise SampleError(f"{where or 'sample'}: field 'split': unknown split {split!r} "
                              f"(expected one of {', '.join(SPLITS)})")
        return cls(id=sid, prompt=prompt, answer=answer, subject=subject, relation=relation, split=split,
                   paraphrases=_text_list(loc, "paraphrases", d.get("paraphrases"), MAX_PROMPT_CHARS),
                   metadata=_metadata(loc, d))


def validate_samples(samples: Sequence[Sample], require_subject: bool = False) -> None:
    """Raise SampleError naming the first problem: empty prompt/answer, subject not in prompt,
    duplicate ids, unknown split."""
    seen: set[str] = set()
    for s in samples:
        if not s.id:
            raise SampleError("a sample has an empty id")
        if s.id in seen:
            raise SampleError(f"duplicate sample id {s.id!r}")
        seen.add(s.id)
        if not s.prompt.strip():
            raise SampleError(f"sample {s.id!r} has an empty prompt")
        if not s.answer.strip():
            raise SampleError(f"sample {s.id!r} has an empty answer")
        if s.split not in SPLITS:
            raise SampleError(f"sample {s.id!r} has unknown split {s.split!r} (expected one of {', '.join(SPLITS)})")
        if s.subject and s.subject not in s.prompt:
            raise SampleError(f"sample {s.id!r}: subject {s.subject!r} not found in prompt {s.prompt!r}")
        if require_subject and not s.subject:
            raise SampleError(f"sample {s.id!r} has no subject")


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def read_jsonl_lines(path: str | os.PathLike[str], split: str | None = None) -> list[tuple[int, Sample]]:
    """(line number, sample) for every sample of a JSONL file, each line validated (``read_jsonl``)."""
    p = Path(path)
    if not p.is_file():
        raise SampleError(f"sample file not found: {p}")
    out: list[tuple[int, Sample]] = []
    first_line: dict[str, int] = {}
    try:
        with p.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line, parse_constant=_no_constants)
                except json.JSONDecodeError as e:
                    raise SampleError(f"{p}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
                except ValueError as e:  # NaN / Infinity
                    raise SampleError(f"{p}:{lineno}: invalid JSON ({e})") from None
                except RecursionError:
                    raise SampleError(f"{p}:{lineno}: invalid sample (JSON nested too deeply; expected an object "
                                      f"of text fields and at most {MAX_METADATA_DEPTH} levels of metadata)"
                                      ) from None
                if split is not None and isinstance(d, dict):
                    d["split"] = split
                s = Sample.from_dict(d, where=f"{p}:{lineno}")
                if s.id in first_line:
                    raise SampleError(f"{p}:{lineno}: field 'id': duplicate sample id {s.id!r} (first on line "
                                      f"{first_line[s.id]}; expected ids unique across the study)")
                first_line[s.id] = lineno
                out.append((lineno, s))
    except UnicodeDecodeError as e:
        raise SampleError(f"{p}: not UTF-8 text (byte {e.start}: {e.reason}); expected a UTF-8 JSONL file"
                          ) from None
    if not out:
        raise SampleError(f"sample file is empty: {p}")
    return out


def read_jsonl(path: str | os.PathLike[str], split: str | None = None) -> list[Sample]:
    """Read and validate samples from a JSONL file (one JSON object a line). ``split`` overrides the split
    of every sample. Raises SampleError naming the file, the line and the field of the first problem."""
    return [s for _, s in read_jsonl_lines(path, split)]


def write_jsonl(samples: Iterable[Sample], path: str | os.PathLike[str]) -> None:
    """Write samples atomically (temp file + rename), so readers never see a half-written file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for s in samples:
                fh.write(json.dumps(s.to_dict(), ensure_ascii=False) + "\n")
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
