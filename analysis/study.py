"""A Study: a directory with a manifest (models with paths and roles, sample files, seeds), model
directories and a results store. The one object the app, the CLI and notebooks open.

Layout::

    study.json              manifest
    samples/{split}.jsonl   forget / retain / utility samples
    models/{name}/          model directories of the built-in study (user studies point anywhere)
    results.sqlite          the results store (WAL)
    fingerprints.json       per model: its fingerprint and the sizes and times of the files it was hashed from

Results are keyed by what they were computed from: a model's fingerprint is rechecked against its files
whenever it is used (``Study.fingerprint``: sizes and times, a full hash only when they changed; the
``fingerprint`` of a manifest entry is only a cache of it), sample files are reread when they change, and
the store keys per-sample rows by the sample's content and dataset-level rows by every sample's
(``Study.sample_keys``, ``Study.samples_digest``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.data.formats import ImportOptions, read_sample_file
from analysis.data.schema import Sample, json_kind, read_jsonl, write_jsonl
from analysis.errors import ModelLoadError, SampleError, StudyError
from analysis.models import ModelHandle, load_model
from analysis.models.handle import (
    MODEL_ROLES,
    FileStat,
    file_stats,
    fingerprint_dir,
    is_fingerprint,
    tokenizer_signature,
)
from analysis.models.loader import detect_format
from analysis.names import NAME_RULE, is_inside, is_safe_name, relative_path_problem
from analysis.store import ResultStore
from analysis.subjects import SubjectPool

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

MANIFEST = "study.json"
FINGERPRINTS = "fingerprints.json"
SAMPLE_SPLITS = ("forget", "retain", "utility")
# Timestamps have a granularity: a file rewritten (same size) within the tick of the moment its stats were
# recorded keeps them. Stats recorded less than this after a file's last change are not trusted (rechecked).
SETTLE_NS = 2_000_000_000


@dataclass
class ModelEntry:
    name: str
    path: str  # relative to the study root, or absolute for users' own checkpoints
    role: str  # original / unlearned / control
    method: str | None = None  # unlearning method or control that produced it
    fingerprint: str = ""  # a cache of Study.fingerprint(name); "" until known

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "role": self.role, "method": self.method, "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class Comparison:
    """The models a before/after analysis of one judged model needs: the original, the judged model and the
    study's reference control (the retrain model, true deletion; None when the study has none).
    ``names`` lists them once each, in that order."""

    original: str
    model: str
    reference: str | None

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys([self.original, self.model, *([self.reference] if self.reference else [])]))


@dataclass
class Manifest:
    name: str
    models: dict[str, ModelEntry]
    samples: dict[str, str]  # split -> file (relative)
    seed: int | None = None
    retrain: str | None = None  # name of the retrain (true-deletion) control, the forget-quality reference
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": "erasure-study", "version": 1, "name": self.name, "seed": self.seed,
                "retrain": self.retrain, "samples": self.samples,
                "models": {n: e.to_dict() for n, e in self.models.items()}, "extra": self.extra}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: Path) -> Manifest:
        """The validated manifest of ``where`` (study.json). Every field is checked by type; model names
        must be safe names (``analysis.names.NAME_RULE``), sample paths must stay inside the study, and an
        invalid fingerprint is treated as missing (recomputed from the files), never used in a path."""

        def bad(field_name: str, expected: str, value: object = ...) -> StudyError:
            got = "" if value is ... else f", got {json_kind(value)}"
            return StudyError(f"{where}: field {field_name!r}: expected {expected}{got}")

        if not isinstance(d, dict):
            raise StudyError(f"{where} is not a valid study manifest: expected a JSON object, got {json_kind(d)}")
        if d.get("format", "erasure-study") != "erasure-study":
            raise bad("format", "'erasure-study'", d.get("format"))
        name = d.get("name", where.parent.name)
        if not isinstance(name, str):
            raise bad("name", "a string", name)
        models_raw = d.get("models")
        if not isinstance(models_raw, dict):
            raise bad("models", "an object of model name -> {path, role, method, fingerprint}", models_raw)
        models: dict[str, ModelEntry] = {}
        for mname, e in models_raw.items():
            if not is_safe_name(mname):
                raise bad("models", f"model names of {NAME_RULE}", mname)
            at = f"models.{mname}"
            if not isinstance(e, dict):
                raise bad(at, "an object {path, role, method, fingerprint}", e)
            path = e.get("path")
            if not isinstance(path, str) or not path.strip():
                raise bad(f"{at}.path", "a non-empty string (the model directory)", path)
            if not Path(path).is_absolute() and (problem := relative_path_problem(path)):
                raise bad(f"{at}.path", f"an absolute path or {problem.removeprefix('expected ')}", path)
            role = e.get("role")
            if not isinstance(role, str) or role not in MODEL_ROLES:
                raise bad(f"{at}.role", f"one of {', '.join(MODEL_ROLES)}", role)
            method = e.get("method")
            if method is not None and not isinstance(method, str):
                raise bad(f"{at}.method", "a string or null", method)
            models[mname] = ModelEntry(name=mname, path=path, role=role, method=method,
                                       fingerprint=cached_fingerprint(e.get("fingerprint")))
        samples_raw = d.get("samples")
        if not isinstance(samples_raw, dict):
            raise bad("samples", f"an object of split ({', '.join(SAMPLE_SPLITS)}) -> relative file path",
                      samples_raw)
        samples: dict[str, str] = {}
        for split, rel in samples_raw.items():
            if split not in SAMPLE_SPLITS:
                raise bad("samples", f"splits among {', '.join(SAMPLE_SPLITS)}", split)
            if problem := relative_path_problem(rel):
                raise bad(f"samples.{split}", problem.removeprefix("expected "), rel)
            samples[split] = rel
        seed = d.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise bad("seed", "an integer or null", seed)
        retrain = d.get("retrain")
        if retrain is not None and (not isinstance(retrain, str) or retrain not in models):
            raise bad("retrain", f"null or the name of one of the study's models ({', '.join(models) or 'none'})",
                      retrain)
        extra = d.get("extra", {})
        if not isinstance(extra, dict):
            raise bad("extra", "an object", extra)
        return cls(name=name, models=models, samples=samples, seed=seed, retrain=retrain, extra=extra)


def cached_fingerprint(value: object) -> str:
    """A manifest's ``fingerprint`` when it is well formed, else "" (recomputed from the files): the value is
    only a cache, and one such as ``x/../../elsewhere`` or ``123`` must never reach a store key or a path."""
    return value if isinstance(value, str) and is_fingerprint(value) else ""


def sample_digest(sample: Sample) -> str:
    """A short digest of what a per-sample analysis reads of a sample: its prompt, answer and subject."""
    text = json.dumps([sample.prompt, sample.answer, sample.subject], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _settled(mtimes_ns: Iterable[int], checked_ns: int) -> bool:
    """True when stats recorded at ``checked_ns`` will show any later change of the files: each was last
    modified at least SETTLE_NS before (a file modified within a timestamp tick of the check might not)."""
    return all(m < checked_ns - SETTLE_NS for m in mtimes_ns)


def _write_json_atomic(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class _FingerprintRecord:
    """A model's fingerprint with the stats of the files it was hashed from (taken just before hashing)."""

    path: str
    fingerprint: str
    checked_ns: int
    files: list[FileStat]

    def still_valid(self, path: str, files: list[FileStat]) -> bool:
        return self.path == path and self.files == files and _settled((f[2] for f in files), self.checked_ns)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "fingerprint": self.fingerprint, "checked_ns": self.checked_ns,
                "files": [list(f) for f in self.files]}

    @classmethod
    def from_dict(cls, d: Any) -> _FingerprintRecord | None:
        """None for anything malformed (the file is only a cache)."""
        try:
            files = [(str(n), int(a), int(b), int(c)) for n, a, b, c in d["files"]]
            rec = cls(path=d["path"], fingerprint=d["fingerprint"], checked_ns=int(d["checked_ns"]), files=files)
        except (KeyError, TypeError, ValueError):
            return None
        return rec if isinstance(rec.path, str) and is_fingerprint(rec.fingerprint) else None


@dataclass
class _SplitFile:
    """A sample file as last read: its stats (taken before reading), when, a hash of its bytes, its samples."""

    stat: tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode
    checked_ns: int
    digest: str
    samples: list[Sample]


class Study:
    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest
        self.store = ResultStore(root / "results.sqlite", content=self)
        self._handles: dict[tuple[str, str | None], ModelHandle] = {}
        self.n_devices = 1  # GPUs each model is split over when loaded (TransformerLens n_devices)
        self._samples: dict[str, _SplitFile] = {}
        self._content: tuple[dict[str, str], str] | None = None  # (sample_keys, samples_digest)
        self._fingerprints: dict[str, _FingerprintRecord] | None = None  # fingerprints.json, read on first use
        self._subject_pool: SubjectPool | None = None

    # ---- opening and creating -------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Study:
        root = Path(path).expanduser()
        mf = root / MANIFEST
        if not root.is_dir():
            raise StudyError(f"study directory not found: {root}")
        if not mf.is_file():
            raise StudyError(f"{root} is not a study (no {MANIFEST})")
        try:
            data = json.loads(mf.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise StudyError(f"{mf} is not valid JSON ({e.msg})") from None
        except RecursionError:
            raise StudyError(f"{mf} is not a valid study manifest (JSON nested too deeply)") from None
        except (OSError, UnicodeDecodeError) as e:
            raise StudyError(f"{mf} could not be read as UTF-8 text ({e})") from None
        study = cls(root, Manifest.from_dict(data, mf))
        for split, rel in study.manifest.samples.items():
            if not (root / rel).is_file():
                raise StudyError(f"sample file for split {split!r} is missing: {root / rel}")
            if not is_inside(root, root / rel):
                raise StudyError(f"{mf}: field 'samples.{split}': expected a file inside the study, but {rel!r} "
                                 f"resolves to {(root / rel).resolve()}, outside the study")
        return study

    @classmethod
    def create(cls, out: str | os.PathLike[str], original: str | os.PathLike[str],
               unlearned: dict[str, str | os.PathLike[str]], forget: str | os.PathLike[str],
               retain: str | os.PathLike[str], utility: str | os.PathLike[str] | None = None,
               retrain: str | None = None, name: str | None = None,
               sample_format: ImportOptions | None = None) -> Study:
        """A study over users' own local checkpoints. Models stay where they are (absolute paths);
        samples are validated and copied in. ``retrain`` names one of ``unlearned`` as the
        true-deletion reference for forget quality. Model names must be safe names
        (``analysis.names.NAME_RULE``), and every sample must fit the context window of every model (prompt
        + answer, and each paraphrase + answer, in the original's tokens).

        Sample files are read by analysis.data.formats.read_sample_file with ``sample_format`` (default: the
        format detected per file: our JSONL, TOFU / open-unlearning QA, CounterFact, ROME known facts, CSV); how
        each split was read, how its samples got their subjects and which have none is kept in
        ``manifest.extra["sample_import"]``."""
        root = Path(out).expanduser()
        for parent in (root, *root.parents):  # the first part of --out that exists must be a directory
            if parent.exists():
                if not parent.is_dir():
                    raise StudyError(f"--out {root}: {parent} is an existing file, not a directory (expected a "
                                     "new or empty directory for the study)")
                break
        if (root / MANIFEST).exists():
            raise StudyError(f"a study already exists at {root}")
        if name is not None and not isinstance(name, str):
            raise StudyError(f"study name: expected a string, got {json_kind(name)}")
        if "original" in unlearned:
            raise StudyError("'original' is reserved for the model before unlearning")
        for mname in unlearned:
            if not is_safe_name(mname):
                raise StudyError(f"model name {mname!r} is not a safe name (expected {NAME_RULE})")
        if retrain is not None and retrain not in unlearned:
            raise StudyError(f"retrain model {retrain!r} is not among the unlearned models {sorted(unlearned)}")
        files = {"forget": forget, "retain": retain, **({"utility": utility} if utility else {})}
        imported = {split: read_sample_file(f, split=split, options=sample_format) for split, f in files.items()}
        located = {split: imp.samples for split, imp in imported.items()}
        first: dict[str, str] = {}
        for split, rows in located.items():
            for where, s in rows:
                if s.id in first:
                    raise SampleError(f"{where}: field 'id': duplicate sample id {s.id!r} (also in "
                                      f"{first[s.id]}; expected ids unique across the study's splits)")
                first[s.id] = f"{files[split]}"
        samples = {split: [s for _, s in rows] for split, rows in located.items()}
        entries: dict[str, ModelEntry] = {}
        tokenizers: dict[str, PreTrainedTokenizerBase] = {}
        for mname, mpath in {"original": original, **unlearned}.items():
            p = Path(mpath).expanduser().resolve()
            detect_format(p)
            role = "original" if mname == "original" else ("control" if mname == retrain else "unlearned")
            entries[mname] = ModelEntry(mname, str(p), role, method=None)
            tokenizers[mname] = _tokenizer_of(p)
        ref = tokenizer_signature(tokenizers["original"])
        for mname, tok in tokenizers.items():
            if tokenizer_signature(tok) != ref:
                raise StudyError(f"model {mname!r} has a different tokenizer from 'original'; "
                                 "all models of a study must share one")
        _check_context({m: Path(e.path) for m, e in entries.items()}, tokenizers["original"], located)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StudyError(f"--out {root}: could not create the study directory ({e.strerror or e})") from None
        for split, ss in samples.items():
            write_jsonl(ss, root / "samples" / f"{split}.jsonl")
        manifest = Manifest(name=name or root.name, models=entries,
                            samples={s: f"samples/{s}.jsonl" for s in samples}, retrain=retrain,
                            extra={"sample_import": {split: imp.summary() for split, imp in imported.items()}})
        study = cls(root, manifest)
        for mname in entries:
            study.fingerprint(mname)  # hashed once here, with its files' stats recorded
        study.save_manifest()
        return study

    def save_manifest(self) -> None:
        """Atomic write (temp + rename): a reader never sees half a manifest."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".study.", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(self.manifest.to_dict(), fh, indent=2)
        os.replace(tmp, self.root / MANIFEST)

    def add_model(self, name: str, path: str | os.PathLike[str], role: str, method: str | None = None) -> None:
        if not is_safe_name(name):
            raise StudyError(f"model name {name!r} is not a safe name (expected {NAME_RULE})")
        if role not in MODEL_ROLES:
            raise StudyError(f"unknown role {role!r} (expected one of {', '.join(MODEL_ROLES)})")
        p = Path(path)
        rel = os.path.relpath(p, self.root) if p.is_absolute() and p.is_relative_to(self.root) else str(p)
        if not Path(rel).is_absolute() and (problem := relative_path_problem(rel)):
            raise StudyError(f"model {name!r}: path {rel!r}: {problem}")
        previous = self.manifest.models.get(name)
        self.manifest.models[name] = ModelEntry(name, rel, role, method)
        try:
            self.fingerprint(name)  # hashed, with its files' stats recorded
        except StudyError:
            if previous is None:
                del self.manifest.models[name]
            else:
                self.manifest.models[name] = previous
            raise
        self.save_manifest()

    # ---- models -----------------------------------------------------------------------------------
    @property
    def all_model_names(self) -> list[str]:
        """Every model of the manifest: the study's own models, then the zoo's members and their robustness
        variants (analysis.zoo, analysis.validation)."""
        return list(self.manifest.models)

    @property
    def ruler_names(self) -> set[str]:
        """Models that exist to measure the signals, not models under study: the zoo's own members (named
        ``zoo_*``; the study's readout control, which the zoo also counts, stays a study model) and their
        robustness variants (``manifest.extra["zoo_variants"]``)."""
        variants = self.manifest.extra.get("zoo_variants") or {}
        return {n for n in self.manifest.models
                if n.startswith("zoo_") or (isinstance(variants, dict) and n in variants)}

    @property
    def model_names(self) -> list[str]:
        """The study's own models (original, unlearned models, controls): what the pages, the scoreboard and the
        batch verbs show by default. Zoo members load by name like any model (``all_model_names``)."""
        ruler = self.ruler_names
        return [n for n in self.manifest.models if n not in ruler]

    @property
    def unlearned_names(self) -> list[str]:
        return [n for n in self.model_names if n != "original"]

    def entry(self, name: str) -> ModelEntry:
        try:
            return self.manifest.models[name]
        except KeyError:
            raise StudyError(f"unknown model {name!r} (this study has: {', '.join(self.model_names)})") from None

    def model_path_of(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.root / p

    def model_path(self, name: str) -> Path:
        return self.model_path_of(self.entry(name).path)

    def load(self, name: str, device: str | None = None) -> ModelHandle:
        """Load a model of the study; checks its tokenizer matches 'original'. Handles are cached, and loaded
        again when the model's files changed (its fingerprint, rechecked here, is not the handle's)."""
        key = (name, device)
        cached = self._handles.get(key)
        if cached is None or cached.fingerprint != self.fingerprint(name):  # new, or its files changed since
            entry = self.entry(name)
            try:
                handle = load_model(self.model_path(name), name=name, role=entry.role, device=device,
                                    n_devices=self.n_devices)
            except ModelLoadError as e:
                raise StudyError(f"model {name!r} failed to load: {e}") from None
            if name != "original" and "original" in self.manifest.models:
                orig = self.load("original", device)
                if tokenizer_signature(orig.tokenizer) != tokenizer_signature(handle.tokenizer):
                    raise StudyError(f"model {name!r} has a different tokenizer from 'original'")
            if cached is not None and name == "original":
                self._subject_pool = None  # built with the original's tokenizer
            self._handles[key] = handle
        return self._handles[key]

    def comparison(self, model: str) -> Comparison:
        """The models judging ``model`` involves: original, ``model`` and the reference (retrain) control."""
        self.entry(model)
        return Comparison("original", model, self.manifest.retrain)

    def subject_pool(self) -> SubjectPool:
        """The subjects of every sample of the study as token ids (tracing's noise scale and replacements,
        the corrupted EAP-IG baseline). Built once per Study (all its models share one tokenizer), and again
        when a sample file changed."""
        samples = self.samples()  # rereads a changed sample file (which resets the pool)
        if self._subject_pool is None:
            self._subject_pool = SubjectPool.from_samples(self.load("original").tokenizer, samples)
        return self._subject_pool

    def subjects_digest(self, answers: bool = False) -> str:
        """A digest of the subject pool: part of the store key of every result that reads it (tracing's
        corruptions, the corrupted EAP-IG baseline), so editing or adding a subject recomputes them. With
        ``answers`` (results that replace subjects: the replacement must answer differently) it covers what
        each subject answers per relation too."""
        return self.subject_pool().digest(answers)

    def fingerprint(self, name: str) -> str:
        """The model's real fingerprint (analysis.models.handle.fingerprint_dir of its directory), which
        keys its results. Rechecked on every call, cheaply: the sizes and times of its weight and config
        files are compared with those recorded (in fingerprints.json) when it was last hashed, and the files
        are hashed again only when those changed. A new fingerprint is written back to the manifest's entry
        (atomic; only that field), and ``load`` reloads a handle whose fingerprint changed."""
        entry = self.entry(name)
        path = self.model_path(name)
        checked = time.time_ns()  # before the stats: a change after this shows on the next call
        try:
            files = file_stats(path)
            records = self._fingerprint_records()
            rec = records.get(name)
            if rec is not None and rec.still_valid(str(path), files):
                fp = rec.fingerprint
            else:
                fp = fingerprint_dir(path)
                records[name] = new = _FingerprintRecord(str(path), fp, checked, files)
                if rec is None or (rec.path, rec.fingerprint, rec.files) != (new.path, fp, files) or \
                        _settled((f[2] for f in files), checked):
                    self._save_fingerprint_records()  # (not while a just-written file is hashed every call)
        except ModelLoadError as e:
            raise StudyError(f"model {name!r}: {e}") from None
        if entry.fingerprint != fp:
            entry.fingerprint = fp
            self._save_manifest_fingerprint(name, entry)
        return fp

    def _fingerprint_records(self) -> dict[str, _FingerprintRecord]:
        if self._fingerprints is None:
            self._fingerprints = {}
            try:
                data = json.loads((self.root / FINGERPRINTS).read_text())
                models = data.get("models", {}) if isinstance(data, dict) else {}
                for n, d in (models.items() if isinstance(models, dict) else ()):
                    rec = _FingerprintRecord.from_dict(d)
                    if rec is not None:
                        self._fingerprints[n] = rec
            except (OSError, ValueError):
                pass  # absent or unreadable: every model is hashed once
        return self._fingerprints

    def _save_fingerprint_records(self) -> None:
        records = self._fingerprint_records()
        try:
            _write_json_atomic(self.root / FINGERPRINTS,
                               {"version": 1, "models": {n: r.to_dict() for n, r in records.items()}})
        except OSError:
            pass  # a read-only study: the fingerprints are rechecked (hashed) in every process instead

    def _save_manifest_fingerprint(self, name: str, entry: ModelEntry) -> None:
        """Write a model's new fingerprint into study.json, changing only that field of the file as it is on
        disk now (another process may have changed the rest). Best effort: the value is only a cache."""
        mf = self.root / MANIFEST
        try:
            data = json.loads(mf.read_text())
            on_disk = data["models"][name]
            if on_disk.get("path") != entry.path:
                return  # the manifest on disk names other files for this model: leave it alone
            on_disk["fingerprint"] = entry.fingerprint
            _write_json_atomic(mf, data)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass

    # ---- samples ----------------------------------------------------------------------------------
    def samples(self, split: str | None = None) -> list[Sample]:
        splits = [split] if split else list(self.manifest.samples)
        out: list[Sample] = []
        for sp in splits:
            if sp not in self.manifest.samples:
                if split is None:
                    continue
                raise StudyError(f"this study has no {sp!r} samples")
            out.extend(self._split_samples(sp))
        return out

    def _split_samples(self, split: str) -> list[Sample]:
        """The samples of one split, reread when its file changed (stats first; bytes hashed only then)."""
        path = self.root / self.manifest.samples[split]
        checked = time.time_ns()
        try:
            st = path.stat()
        except OSError:
            return read_jsonl(path, split=split)  # raises SampleError naming the file
        stat = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        seen = self._samples.get(split)
        if seen is not None and seen.stat == stat and _settled([st.st_mtime_ns], seen.checked_ns):
            return seen.samples
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if seen is not None and seen.digest == digest:
            samples = seen.samples
        else:
            samples = read_jsonl(path, split=split)
            self._content = None
            self._subject_pool = None
        self._samples[split] = _SplitFile(stat, checked, digest, samples)
        return samples

    def sample_keys(self) -> dict[str, str]:
        """Every sample id -> the key its per-sample results are stored under: the id and a digest of the
        sample's prompt, answer and subject, so an edited sample is recomputed (see analysis.store)."""
        return self._content_keys()[0]

    def samples_digest(self) -> str:
        """A digest of every sample of every split: part of the key of each dataset-level result."""
        return self._content_keys()[1]

    def _content_keys(self) -> tuple[dict[str, str], str]:
        samples = self.samples()  # rereads changed files (which resets self._content)
        if self._content is None:
            keys = {s.id: f"{s.id}#{sample_digest(s)}" for s in samples}
            text = json.dumps([s.to_dict() for s in samples], sort_keys=True, ensure_ascii=False, default=str)
            self._content = (keys, hashlib.sha256(text.encode()).hexdigest()[:16])
        return self._content

    @property
    def forget(self) -> list[Sample]:
        return self.samples("forget")

    @property
    def retain(self) -> list[Sample]:
        return self.samples("retain")

    def sample(self, sample_id: str) -> Sample:
        for s in self.samples():
            if s.id == sample_id:
                return s
        raise StudyError(f"unknown sample id {sample_id!r}")

    def read_model_json(self, name: str, filename: str) -> dict[str, Any] | None:
        p = self.model_path(name) / filename
        return json.loads(p.read_text()) if p.is_file() else None

    def remove(self) -> None:
        shutil.rmtree(self.root)


def _tokenizer_of(path: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as e:  # noqa: BLE001 - tokenizer loading raises many types
        raise StudyError(f"tokenizer in {path} could not be loaded: {e}") from None


def model_context(path: Path, tokenizer: PreTrainedTokenizerBase) -> tuple[int, bool]:
    """(n_ctx, prepend_bos) of the model directory ``path``, read cheaply from its config file (no weights):
    ``organism.json``'s architecture, or the Hugging Face config through the loader's own mapping."""
    if detect_format(path) == "organism":
        from analysis.models.organism_io import read_organism_config

        arch = read_organism_config(path)["architecture"]
        return int(arch["n_ctx"]), bool(arch.get("default_prepend_bos", True)) and \
            tokenizer.bos_token_id is not None
    from transformers import AutoConfig

    from analysis.models.hf import hf_config_to_tl, read_architecture, tokenizer_adds_bos

    read_architecture(path)  # one line naming the supported architectures for any other
    try:
        n_ctx = int(hf_config_to_tl(AutoConfig.from_pretrained(str(path), local_files_only=True,
                                                               trust_remote_code=False))["n_ctx"])
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - config classes raise many types
        raise ModelLoadError(f"{path / 'config.json'} is malformed: {e}") from None
    return n_ctx, tokenizer_adds_bos(tokenizer)


def _check_context(models: dict[str, Path], tokenizer: PreTrainedTokenizerBase,
                   located: dict[str, list[tuple[str, Sample]]]) -> None:
    """Refuse a sample whose prompt (or a paraphrase) + answer is longer than a model's context window,
    naming the sample, its split, where it was read (``file:line`` / ``file[index]``), and the model."""
    from analysis.scoring import encode_pair

    try:
        contexts = {m: model_context(p, tokenizer) for m, p in models.items()}
    except ModelLoadError as e:
        raise StudyError(str(e)) from None
    model, (n_ctx, _) = min(contexts.items(), key=lambda kv: kv[1][0])
    bos = any(b for _, b in contexts.values())
    for split, rows in located.items():
        for where, s in rows:
            for what, prompt in (("prompt", s.prompt), *((f"paraphrases[{i}]", p) for i, p in
                                                          enumerate(s.paraphrases))):
                p_ids, a_ids = encode_pair(tokenizer, prompt, s.answer, prepend_bos=bos)
                n = len(p_ids) + len(a_ids)
                if n > n_ctx:
                    raise StudyError(f"{where}: {split} sample {s.id!r}, field {what!r}: "
                                     f"{what} + answer is {n} tokens, longer than the context window of model "
                                     f"{model!r} ({n_ctx} tokens); expected a shorter sample")
