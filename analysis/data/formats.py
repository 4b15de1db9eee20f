"""Sample files in the formats researchers have: our JSONL, TOFU / open-unlearning question-answer files, ROME's
known-facts and CounterFact records, and any JSON / JSONL / CSV table with a column map. ``read_sample_file``
turns one file into validated ``Sample``s (``Study.create`` and ``erasure study create`` call it per split) and
says how each sample got its subject and which samples have none.

**Syntax.** A file whose name ends in ``.csv`` (``.tsv``: tab-separated), or read with ``format="csv"``, is a CSV
table with a header row; any other file is JSON: a JSON list of objects when its first character is ``[``,
else one JSON object a line (what Hugging Face ``datasets`` writes, TOFU's ``forget10.json`` included).

**Format** (the record schema), from the first record's fields unless forced (``ImportOptions.format``):
``requested_rewrite`` -> ``counterfact``; ``subject`` + ``attribute``/``target`` + ``template``/``prompt`` ->
``known``; ``question`` + ``answer`` -> ``tofu``; ``prompt`` + ``answer`` -> ``jsonl`` (ours). The converters are
in analysis.data.records. A column map (``prompt=question,answer=answer,subject=name``: OUR field = THEIR
column, a dotted column reads a nested field) renames a record's columns first; the mapped record is then read
as ours.

**Ids.** A record's own id (ours, ``id`` mapped, CounterFact's ``case_id`` as ``case-N``, known-facts'
``known_id`` as ``known-N``), else ``<split>-<index>`` (the file's stem without a split), ``index`` the 0-based
position of the record in the file.

**Answers and prompts.** Our samples store the answer without leading space and the scorer
(analysis.scoring.encode_pair) joins prompt and answer with one space unless the prompt ends in whitespace,
tokenising the answer in context: ``The capital of France is`` + ``Paris`` is scored as the tokens of
`` Paris`` after the prompt, as ROME scores its `` Paris`` target. Every answer read through this module is
therefore stripped of surrounding whitespace (ROME's and CounterFact's `` Paris`` and ``Paris`` score the
same). ``prompt_template`` (e.g. ``Question: {}\\nAnswer:``, open-unlearning's base-model QA template) wraps
every prompt and paraphrase; a template's trailing spaces are dropped (the scorer adds the one space), a
trailing newline is kept (then no space is added).

**Subjects**, for records that have none, in this order: ``subject_field`` (a field of the record whose text
must occur in the question; case-insensitive as a fallback, taking the question's own spelling),
``subject_pattern`` (a regular expression searched in the question, its first group or the whole match),
then, where the format has no subject field at all (TOFU, a CSV or mapped table without a subject column) the
automatic rule of analysis.data.entities (a capitalised multi-word span shared by question and answer, else
the question's longest capitalised span). A sample that gets none is kept with subject ``""`` and listed in
``ImportedFile.no_subject`` with the reason: causal tracing and the corrupted EAP-IG baseline skip it, every
other analysis uses it. A record's own subject (a subject column, CounterFact's, a mapped one) that does not
occur in its prompt is reported the same way (case-insensitive as a fallback).

Our own JSONL read without options goes through ``analysis.data.schema.read_jsonl_lines`` unchanged (a subject
not in its prompt is an error there, as before).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from analysis.data.entities import find_subject
from analysis.data.records import CONVERTERS, Record, detect
from analysis.data.schema import MAX_METADATA_DEPTH, Sample, json_kind, read_jsonl_lines
from analysis.errors import SampleError

FormatName = Literal["jsonl", "tofu", "counterfact", "known", "csv"]
FORMATS: tuple[FormatName, ...] = get_args(FormatName)
FORMAT_HELP: dict[str, str] = {
    "jsonl": "our samples (id, prompt, answer, subject, relation, paraphrases, metadata)",
    "tofu": "TOFU / open-unlearning question-answer records (question, answer, paraphrased_question, "
            "paraphrased_answer, perturbed_answer)",
    "counterfact": "ROME / MEMIT CounterFact records (requested_rewrite: prompt with {}, subject, target_true; "
                   "paraphrase_prompts, neighborhood_prompts)",
    "known": "ROME known-facts records (known_1000.json: subject, attribute, template with {} or prompt)",
    "csv": "a CSV table (.tsv: tab-separated) with a header row: our field names, TOFU's question / answer, "
           "or columns named with --map",
}
MAPPABLE: tuple[str, ...] = ("id", "prompt", "answer", "subject", "relation", "paraphrases")
SUBJECT_SOURCES: tuple[str, ...] = ("record", "field", "pattern", "shared", "question")
CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}


def parse_column_map(text: str) -> tuple[tuple[str, str], ...]:
    """``prompt=question,answer=answer,subject=name`` -> ((our field, their column), ...); SampleError naming
    the bad item."""
    pairs = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        ours, sep, theirs = (x.strip() for x in item.partition("="))
        if not sep or not ours or not theirs:
            raise SampleError(f"column map item {item!r}: expected FIELD=COLUMN (e.g. prompt=question)")
        pairs.append((ours, theirs))
    return checked_column_map(pairs)


def checked_column_map(pairs: Iterable[tuple[str, str]] | Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """(our field, their column) pairs, each field one of MAPPABLE and mapped once; SampleError otherwise."""
    out: dict[str, str] = {}
    for ours, theirs in (pairs.items() if isinstance(pairs, Mapping) else pairs):
        if ours not in MAPPABLE:
            raise SampleError(f"column map item {ours}={theirs}: unknown field {ours!r} (expected one of "
                              f"{', '.join(MAPPABLE)})")
        if not isinstance(theirs, str) or not theirs.strip():
            raise SampleError(f"column map: field {ours!r}: expected a column name, got {json_kind(theirs)}")
        if ours in out:
            raise SampleError(f"column map: field {ours!r} mapped twice")
        out[ours] = theirs
    if not out:
        raise SampleError("column map is empty (expected FIELD=COLUMN,..., e.g. prompt=question,answer=answer)")
    return tuple(out.items())


@dataclass(frozen=True)
class ImportOptions:
    """How sample files are read. ``format``: None detects it per file (FORMATS); ``column_map``: (our field,
    their column) pairs (``parse_column_map``); ``subject_field`` / ``subject_pattern``: where a record without
    a subject gets one; ``auto_subject``: find one in the question where the format has no subject field;
    ``prompt_template``: a text with one ``{}`` where the record's prompt (TOFU: the question) goes. The same
    options read every sample file of a study (``Study.create``); the format is still detected per file."""

    format: FormatName | None = None
    column_map: tuple[tuple[str, str], ...] = ()
    subject_field: str | None = None
    subject_pattern: str | None = None
    prompt_template: str | None = None
    auto_subject: bool = True

    def validated(self) -> ImportOptions:
        if self.format is not None and self.format not in FORMATS:
            raise SampleError(f"unknown sample format {self.format!r} (expected one of {', '.join(FORMATS)})")
        cmap = self.column_map
        if isinstance(cmap, str):
            cmap = parse_column_map(cmap)
        elif cmap:
            cmap = checked_column_map(cmap)
        if self.subject_pattern is not None:
            try:
                re.compile(self.subject_pattern)
            except re.error as e:
                raise SampleError(f"subject pattern {self.subject_pattern!r} is not a regular expression ({e})"
                                  ) from None
        if self.subject_field is not None and not str(self.subject_field).strip():
            raise SampleError("subject field: expected a field name, got an empty text")
        t = self.prompt_template
        if t is not None and (not isinstance(t, str) or t.count("{}") != 1):
            raise SampleError(f"prompt template {t!r}: expected a text with exactly one {{}} where the question "
                              "goes (e.g. 'Question: {}\\nAnswer:')")
        return replace(self, column_map=cmap)

    @property
    def native(self) -> bool:
        """Nothing to do per record beyond our own reader."""
        return not (self.column_map or self.subject_field or self.subject_pattern or self.prompt_template)

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "column_map": dict(self.column_map), "subject_field": self.subject_field,
                "subject_pattern": self.subject_pattern, "prompt_template": self.prompt_template,
                "auto_subject": self.auto_subject}


@dataclass
class ImportedFile:
    """One sample file read: its samples with where each came from (``file:line`` or ``file[index]``), the
    format, how many samples got their subject which way (SUBJECT_SOURCES) and the samples with none."""

    path: str
    format: str
    syntax: str  # "jsonl", "json" (a list) or "csv"
    samples: list[tuple[str, Sample]]
    subject_from: dict[str, int] = field(default_factory=dict)
    no_subject: dict[str, str] = field(default_factory=dict)  # sample id -> why it has no subject
    options: dict[str, Any] = field(default_factory=dict)  # ImportOptions.to_dict() it was read with

    def summary(self) -> dict[str, Any]:
        return {"file": self.path, "format": self.format, "syntax": self.syntax, "samples": len(self.samples),
                "subject_from": dict(self.subject_from), "no_subject": dict(self.no_subject),
                "options": dict(self.options)}


# ---- reading records ----------------------------------------------------------------------------------------
def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _loads(text: str, where: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as e:
        raise SampleError(f"{where}: invalid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except ValueError as e:
        raise SampleError(f"{where}: invalid JSON ({e})") from None
    except RecursionError:
        raise SampleError(f"{where}: invalid record (JSON nested too deeply; at most {MAX_METADATA_DEPTH} "
                          "levels)") from None


def _text_of(p: Path) -> str:
    if not p.is_file():
        raise SampleError(f"sample file not found: {p}")
    try:
        return p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise SampleError(f"{p}: not UTF-8 text (byte {e.start}: {e.reason}); expected a UTF-8 file") from None


def _csv_cell(value: str | None) -> Any:
    """A CSV cell: empty -> absent; a JSON list (``["a", "b"]``) -> the list; else the text."""
    if value is None or not value.strip():
        return None
    v = value.strip()
    if v.startswith("[") and v.endswith("]"):
        try:
            parsed = json.loads(v)
        except ValueError:
            return value
        if isinstance(parsed, list):
            return parsed
    return value


def _records(p: Path, csv_delimiter: str | None) -> tuple[str, Iterator[tuple[str, Any]]]:
    """(syntax, (where, record) for every record of the file)."""
    text = _text_of(p)
    if csv_delimiter is not None:
        def rows() -> Iterator[tuple[str, Any]]:
            reader = csv.DictReader(text.splitlines(keepends=True), delimiter=csv_delimiter)
            if not reader.fieldnames:
                raise SampleError(f"{p}: no header row (expected column names on the first line)")
            try:
                for row in reader:
                    if None in row:
                        raise SampleError(f"{p}:{reader.line_num}: more cells than the {len(reader.fieldnames)} "
                                          "columns of the header")
                    cells = {k: _csv_cell(v) for k, v in row.items()}
                    if any(v is not None for v in cells.values()):
                        yield f"{p}:{reader.line_num}", {k: v for k, v in cells.items() if v is not None}
            except csv.Error as e:
                raise SampleError(f"{p}:{reader.line_num}: invalid CSV ({e})") from None

        return "csv", rows()
    if text.lstrip().startswith("["):
        data = _loads(text, str(p))
        if not isinstance(data, list):
            raise SampleError(f"{p}: expected a JSON list of records, got {json_kind(data)}")
        return "json", ((f"{p}[{i}]", r) for i, r in enumerate(data))

    def lines() -> Iterator[tuple[str, Any]]:
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                yield f"{p}:{lineno}", _loads(line, f"{p}:{lineno}")

    return "jsonl", lines()


def _get(rec: Record, path: str) -> tuple[bool, Any]:
    """A (possibly dotted) field of a record: (found, value)."""
    if path in rec:
        return True, rec[path]
    cur: Any = rec
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def _mapped(rec: Record, cmap: tuple[tuple[str, str], ...], where: str) -> Record:
    out = {k: v for k, v in rec.items() if k not in {theirs for _, theirs in cmap}}
    for ours, theirs in cmap:
        found, value = _get(rec, theirs)
        if not found:
            cols = ", ".join(sorted(map(str, rec))[:12])
            raise SampleError(f"{where}: field {theirs!r}: missing column {theirs!r} (mapped to {ours!r}; the "
                              f"record has {cols})")
        out[ours] = value
    return out


# ---- subjects -----------------------------------------------------------------------------------------------
def _locate(span: str, question: str) -> str:
    """``span`` as written in ``question`` (exact, else case-insensitive), or ""."""
    if span in question:
        return span
    i = question.casefold().find(span.casefold())
    return question[i: i + len(span)] if i >= 0 and len(question.casefold()) == len(question) else ""


def _subject(rec: Record, d: Record, opts: ImportOptions, auto: bool) -> tuple[str, str, str]:
    """(subject, how, why none) for a record without one."""
    question = d.get("_question") or d.get("prompt") or ""
    if not isinstance(question, str):
        return "", "", "no question text"
    if opts.subject_field:
        found, value = _get(rec, opts.subject_field)
        if not found or not isinstance(value, str) or not value.strip():
            return "", "", f"field {opts.subject_field!r} is missing or empty"
        span = _locate(value.strip(), question)
        return (span, "field", "") if span else ("", "", f"field {opts.subject_field!r} ({value.strip()!r}) "
                                                            "does not occur in the question")
    if opts.subject_pattern:
        m = re.search(opts.subject_pattern, question)
        span = (m.group(1) if m and m.re.groups else m.group(0) if m else "") or ""
        span = span.strip()
        return (span, "pattern", "") if span else ("", "", "the subject pattern does not match the question")
    if auto and opts.auto_subject:
        answer = d.get("answer") if isinstance(d.get("answer"), str) else ""
        f = find_subject(question, answer)
        return f.span, f.how, f.reason
    return "", "", "the record has no subject"


def _template(opts: ImportOptions, text: Any) -> Any:
    if opts.prompt_template is None or not isinstance(text, str):
        return text
    return opts.prompt_template.replace("{}", text, 1).rstrip(" \t")


# ---- the file -------------------------------------------------------------------------------------------------
def read_sample_file(path: str | os.PathLike[str], split: str | None = None,
                     options: ImportOptions | None = None) -> ImportedFile:
    """Every record of ``path`` as a validated Sample (``split`` overrides the records' own), in one of FORMATS
    (see the module docstring). SampleError names the file, the record (``file:line`` / ``file[index]``) and
    the field of the first problem."""
    opts = (options or ImportOptions()).validated()
    p = Path(path).expanduser()
    delim = CSV_SUFFIXES.get(p.suffix.lower()) if opts.format in (None, "csv", "tofu", "jsonl") else None
    if opts.format == "csv" and delim is None:
        delim = ","
    if delim is None and opts.format in (None, "jsonl") and opts.native and not _starts_list(p):
        first = _first_record(p)
        if first is None or (detect(first) == "jsonl" and "id" in first):  # ours (or unreadable): as before
            rows = read_jsonl_lines(p, split)
            return ImportedFile(str(p.resolve()), "jsonl", "jsonl", [(f"{p}:{n}", s) for n, s in rows],
                                subject_from=dict(Counter("record" for _, s in rows if s.subject)),
                                no_subject={s.id: "the record has no subject" for _, s in rows if not s.subject},
                                options=opts.to_dict())
    syntax, records = _records(p, delim)
    fmt: str | None = opts.format if opts.format != "csv" else None
    samples: list[tuple[str, Sample]] = []
    first_at: dict[str, str] = {}
    how: Counter[str] = Counter()
    no_subject: dict[str, str] = {}
    prefix = split or p.stem
    for index, (where, rec) in enumerate(records):
        if not isinstance(rec, dict):
            raise SampleError(f"{where}: expected a JSON object (a record), got {json_kind(rec)}")
        rec = _mapped(rec, opts.column_map, where) if opts.column_map else rec
        if fmt is None:
            fmt = detect(rec)
            if fmt is None:
                cols = ", ".join(sorted(map(str, rec))[:12])
                raise SampleError(f"{where}: cannot tell the format from the fields ({cols}); expected "
                                  "prompt + answer (ours), question + answer (TOFU), requested_rewrite "
                                  "(CounterFact) or subject + attribute + template (known facts); name the "
                                  "columns with --map prompt=COLUMN,answer=COLUMN or pass --format")
        d = CONVERTERS[fmt](rec, where)
        if opts.prompt_template is not None:
            d["prompt"] = _template(opts, d.get("prompt"))
            if isinstance(d.get("paraphrases"), list):
                d["paraphrases"] = [_template(opts, x) for x in d["paraphrases"]]
            elif isinstance(d.get("paraphrases"), str):
                d["paraphrases"] = [_template(opts, d["paraphrases"])]
        if isinstance(d.get("answer"), str):
            d["answer"] = d["answer"].strip()
        d.setdefault("id", f"{prefix}-{index}")
        if isinstance(d["id"], int) and not isinstance(d["id"], bool):
            d["id"] = str(d["id"])
        if split is not None:
            d["split"] = split
        subject = d.get("subject")
        if isinstance(subject, str) and subject.strip():
            prompt = d.get("prompt") if isinstance(d.get("prompt"), str) else ""
            d["subject"] = _locate(subject.strip(), prompt)
            source, why = "record", "" if d["subject"] else f"subject {subject.strip()!r} does not occur in the prompt"
        else:
            auto = "subject" not in d and (fmt == "tofu" or syntax == "csv" or bool(opts.column_map))
            d["subject"], source, why = _subject(rec, d, opts, auto)
        d.pop("_question", None)
        s = Sample.from_dict(d, where=where)
        if s.id in first_at:
            raise SampleError(f"{where}: field 'id': duplicate sample id {s.id!r} (first at {first_at[s.id]}; "
                              "expected ids unique across the study)")
        first_at[s.id] = where
        if s.subject:
            how[source] += 1
        else:
            no_subject[s.id] = why
        samples.append((where, s))
    if not samples:
        raise SampleError(f"sample file is empty: {p}")
    return ImportedFile(str(p.resolve()), fmt or "jsonl", syntax, samples, dict(how), no_subject, opts.to_dict())


def _starts_list(p: Path) -> bool:
    """The file's first non-space character is ``[`` (a JSON list)."""
    try:
        with p.open(encoding="utf-8-sig") as fh:
            head = fh.read(4096)
    except (OSError, UnicodeDecodeError):
        return False
    return head.lstrip().startswith("[")


def _first_record(p: Path) -> dict[str, Any] | None:
    """The first line of a JSON-lines file as an object, or None (missing, not JSON lines, not an object): our
    own reader then says what is wrong."""
    try:
        with p.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    rec = json.loads(line)
                    return rec if isinstance(rec, dict) else None
    except (ValueError, UnicodeDecodeError, RecursionError, OSError):
        return None
    return None


def read_samples(path: str | os.PathLike[str], split: str | None = None,
                 options: ImportOptions | None = None) -> list[Sample]:
    """The samples of ``read_sample_file`` without their places."""
    return [s for _, s in read_sample_file(path, split, options).samples]
