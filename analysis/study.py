"""A Study: a directory with a manifest (models with paths and roles, sample files, seeds), model
directories and a results store. The one object the app, the CLI and notebooks open.

Layout::

    study.json              manifest
    samples/{split}.jsonl   forget / retain / utility samples
    models/{name}/          model directories of the built-in study (user studies point anywhere)
    results.sqlite          the results store (WAL)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.data.schema import Sample, read_jsonl, validate_samples, write_jsonl
from analysis.errors import ModelLoadError, StudyError
from analysis.models import ModelHandle, load_model
from analysis.models.handle import MODEL_ROLES, fingerprint_dir, tokenizer_signature
from analysis.models.loader import detect_format
from analysis.store import ResultStore
from analysis.subjects import SubjectPool

MANIFEST = "study.json"
SAMPLE_SPLITS = ("forget", "retain", "utility")


@dataclass
class ModelEntry:
    name: str
    path: str  # relative to the study root, or absolute for users' own checkpoints
    role: str  # original / unlearned / control
    method: str | None = None  # unlearning method or control that produced it
    fingerprint: str = ""

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
        try:
            models = {n: ModelEntry(name=n, path=e["path"], role=e["role"], method=e.get("method"),
                                    fingerprint=e.get("fingerprint", "")) for n, e in d["models"].items()}
            return cls(name=d.get("name", where.parent.name), models=models, samples=dict(d["samples"]),
                       seed=d.get("seed"), retrain=d.get("retrain"), extra=d.get("extra", {}))
        except (KeyError, TypeError, AttributeError) as e:
            raise StudyError(f"{where} is not a valid study manifest (bad or missing field {e})") from None


class Study:
    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest
        self.store = ResultStore(root / "results.sqlite")
        self._handles: dict[tuple[str, str | None], ModelHandle] = {}
        self.n_devices = 1  # GPUs each model is split over when loaded (TransformerLens n_devices)
        self._samples: dict[str, list[Sample]] = {}
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
            data = json.loads(mf.read_text())
        except json.JSONDecodeError as e:
            raise StudyError(f"{mf} is not valid JSON ({e.msg})") from None
        study = cls(root, Manifest.from_dict(data, mf))
        for split, rel in study.manifest.samples.items():
            if not (root / rel).is_file():
                raise StudyError(f"sample file for split {split!r} is missing: {root / rel}")
        return study

    @classmethod
    def create(cls, out: str | os.PathLike[str], original: str | os.PathLike[str],
               unlearned: dict[str, str | os.PathLike[str]], forget: str | os.PathLike[str],
               retain: str | os.PathLike[str], utility: str | os.PathLike[str] | None = None,
               retrain: str | None = None, name: str | None = None) -> Study:
        """A study over users' own local checkpoints. Models stay where they are (absolute paths);
        samples are validated and copied in. ``retrain`` names one of ``unlearned`` as the
        true-deletion reference for forget quality."""
        root = Path(out).expanduser()
        if (root / MANIFEST).exists():
            raise StudyError(f"a study already exists at {root}")
        if "original" in unlearned:
            raise StudyError("'original' is reserved for the model before unlearning")
        if retrain is not None and retrain not in unlearned:
            raise StudyError(f"retrain model {retrain!r} is not among the unlearned models {sorted(unlearned)}")
        files = {"forget": forget, "retain": retain, **({"utility": utility} if utility else {})}
        samples = {split: read_jsonl(f, split=split) for split, f in files.items()}
        validate_samples([s for ss in samples.values() for s in ss])
        entries: dict[str, ModelEntry] = {}
        signatures: dict[str, str] = {}
        for mname, mpath in {"original": original, **unlearned}.items():
            p = Path(mpath).expanduser().resolve()
            detect_format(p)
            role = "original" if mname == "original" else ("control" if mname == retrain else "unlearned")
            entries[mname] = ModelEntry(mname, str(p), role, method=None, fingerprint=fingerprint_dir(p))
            signatures[mname] = _tokenizer_signature_of(p)
        ref = signatures["original"]
        for mname, sig in signatures.items():
            if sig != ref:
                raise StudyError(f"model {mname!r} has a different tokenizer from 'original'; "
                                 "all models of a study must share one")
        root.mkdir(parents=True, exist_ok=True)
        for split, ss in samples.items():
            write_jsonl(ss, root / "samples" / f"{split}.jsonl")
        manifest = Manifest(name=name or root.name, models=entries,
                            samples={s: f"samples/{s}.jsonl" for s in samples}, retrain=retrain)
        study = cls(root, manifest)
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
        if role not in MODEL_ROLES:
            raise StudyError(f"unknown role {role!r} (expected one of {', '.join(MODEL_ROLES)})")
        p = Path(path)
        rel = os.path.relpath(p, self.root) if p.is_absolute() and p.is_relative_to(self.root) else str(p)
        self.manifest.models[name] = ModelEntry(name, rel, role, method, fingerprint_dir(self.model_path_of(rel)))
        self.save_manifest()

    # ---- models -----------------------------------------------------------------------------------
    @property
    def model_names(self) -> list[str]:
        return list(self.manifest.models)

    @property
    def unlearned_names(self) -> list[str]:
        return [n for n, e in self.manifest.models.items() if n != "original"]

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
        """Load (once; handles are cached) a model of the study; checks its tokenizer matches 'original'."""
        key = (name, device)
        if key not in self._handles:
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
            self._handles[key] = handle
        return self._handles[key]

    def comparison(self, model: str) -> Comparison:
        """The models judging ``model`` involves: original, ``model`` and the reference (retrain) control."""
        self.entry(model)
        return Comparison("original", model, self.manifest.retrain)

    def subject_pool(self) -> SubjectPool:
        """The subjects of every sample of the study as token ids (tracing's noise scale and replacements,
        the corrupted EAP-IG baseline). Built once per Study: all its models share one tokenizer."""
        if self._subject_pool is None:
            self._subject_pool = SubjectPool.from_samples(self.load("original").tokenizer, self.samples())
        return self._subject_pool

    def fingerprint(self, name: str) -> str:
        entry = self.entry(name)
        return entry.fingerprint or fingerprint_dir(self.model_path(name))

    # ---- samples ----------------------------------------------------------------------------------
    def samples(self, split: str | None = None) -> list[Sample]:
        splits = [split] if split else list(self.manifest.samples)
        out: list[Sample] = []
        for sp in splits:
            if sp not in self.manifest.samples:
                if split is None:
                    continue
                raise StudyError(f"this study has no {sp!r} samples")
            if sp not in self._samples:
                self._samples[sp] = read_jsonl(self.root / self.manifest.samples[sp], split=sp)
            out.extend(self._samples[sp])
        return out

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


def _tokenizer_signature_of(path: Path) -> str:
    from transformers import AutoTokenizer

    try:
        return tokenizer_signature(AutoTokenizer.from_pretrained(str(path)))
    except Exception as e:  # noqa: BLE001 - tokenizer loading raises many types
        raise StudyError(f"tokenizer in {path} could not be loaded: {e}") from None
