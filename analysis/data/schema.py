"""The Sample schema, JSONL IO and validation with specific errors."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from analysis.errors import SampleError

SPLITS: tuple[str, ...] = ("forget", "retain", "eval", "utility")
REQUIRED_FIELDS: tuple[str, ...] = ("id", "prompt", "answer")


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
        loc = f" ({where})" if where else ""
        if not isinstance(d, dict):
            raise SampleError(f"sample{loc} is not a JSON object")
        for name in REQUIRED_FIELDS:
            if name not in d:
                raise SampleError(f"sample{loc} is missing required field {name!r}")
        known = {"id", "prompt", "answer", "subject", "relation", "split", "paraphrases", "metadata"}
        extra = {k: v for k, v in d.items() if k not in known}
        metadata = dict(d.get("metadata") or {})
        metadata.update(extra)  # unknown top-level fields (e.g. "exposures") are kept as metadata
        paraphrases = d.get("paraphrases") or ()
        if isinstance(paraphrases, str):
            paraphrases = (paraphrases,)
        return cls(
            id=str(d["id"]),
            prompt=str(d["prompt"]),
            answer=str(d["answer"]),
            subject=str(d.get("subject") or ""),
            relation=str(d.get("relation") or ""),
            split=str(d.get("split") or "eval"),
            paraphrases=tuple(str(p) for p in paraphrases),
            metadata=metadata,
        )


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


def read_jsonl(path: str | os.PathLike[str], split: str | None = None) -> list[Sample]:
    """Read and validate samples from a JSONL file. ``split`` overrides the split of every sample."""
    p = Path(path)
    if not p.is_file():
        raise SampleError(f"sample file not found: {p}")
    samples: list[Sample] = []
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise SampleError(f"{p}:{lineno}: invalid JSON ({e.msg})") from None
            if split is not None and isinstance(d, dict):
                d["split"] = split
            samples.append(Sample.from_dict(d, where=f"{p.name}:{lineno}"))
    if not samples:
        raise SampleError(f"sample file is empty: {p}")
    validate_samples(samples)
    return samples


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
