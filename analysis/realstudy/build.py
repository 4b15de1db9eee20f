"""Build the real-model study (`erasure demo --model smollm2`), stage by stage, cached and resumable.

TOFU-style, so that ground truth exists: the organism's fictitious people (``analysis.data.corpus``) in natural
English are fine-tuned into the pretrained model (the ORIGINAL: the base fine-tuned on every fictitious fact);
the same fine-tune on the retain facts only is the RETRAIN control (true deletion: same steps, rate, seed and
batch); the five unlearning methods and the readout control run from the original with the pretrained preset
(``analysis.unlearning.base.PRETRAINED_PRESET``); the zoo (``analysis.realstudy.zoo``) is built around it. The
model's own real knowledge is the study's ``utility`` split: the curated facts of ``analysis/data/
known_facts.jsonl`` that the base model gets top-1 right and the original still does after the fine-tune (a 135M
model fine-tuned on 160 new facts forgets some of what it knew: both numbers are recorded).

Every model is an `erasure unlearn` run (``analysis.unlearn.unlearn_checkpoint``: method ``retrain`` with a base
fine-tunes the base on a set) registered with `erasure study add` (``analysis.unlearn.add_to_study``); the study
is made by ``Study.create``. Stages (``analysis.realstudy.options.STAGES``): base, samples, original, study,
retrain, methods, zoo, evaluate. A completed stage is skipped on rerun (a model whose run is complete and
registered is not loaded again; the scoreboard is read from the store); an interrupted fine-tune resumes from its
last saved state (``unlearn_checkpoint``). One ``progress(fraction, message)`` covers the whole build;
``RealBuild.timings`` has the seconds per stage and ``RealBuild.reused`` the stages that had nothing to do.

Departures from TOFU: the fine-tunes use lr ``finetune_lr`` 1e-4 for 10 epochs (TOFU: 1e-5 for 5 epochs) so that a
135M model learns the facts within the CPU budget; the methods use the preset's rate and its 10 epochs over the
forget set, with a batch of 8 rather than 32 (16 forget facts: 2 steps an epoch instead of 1); the depth-limited
zoo members use 1e-4 so that they do hide the answers.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.data.corpus import build_corpus
from analysis.data.schema import Sample, read_jsonl, write_jsonl
from analysis.errors import AnalysisInputError, StudyError
from analysis.realstudy.options import (
    CONTROLS,
    DEFAULT,
    MANIFEST_KEY,
    RETRAIN_NAME,
    SAMPLES_RECORD,
    STAGE_WEIGHTS,
    STAGES,
    RealStudyOptions,
)
from analysis.realstudy.samples import KNOWN_FACTS_FILE, keep_known, known_facts, render_corpus, training_rows
from analysis.store import ProgressFn
from analysis.study import MANIFEST, Study
from analysis.unlearn.checkpoint import read_json_dict, write_json_atomic
from analysis.unlearn.options import UnlearnRunOptions

BUILD_RECORD = "build/real_study.json"  # in the study: the options a build was started with (before study.json)
FINETUNE_CHECKPOINT_EVERY = 20  # steps between a fine-tune's saved states (an interrupted one resumes there)
KNOWN_BASE = "build/known_base.jsonl"  # in the study: the curated facts the base gets top-1 right


@dataclass
class RealBuild:
    """What a build did: the study, seconds per stage (and ``total``), the stages that had nothing to do
    (``reused``), and per model the run's summary (steps, seconds, forget / retain accuracy before and after)."""

    study: Study
    timings: dict[str, float] = field(default_factory=dict)
    reused: dict[str, bool] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"study": str(self.study.root), "models": self.study.model_names, "seconds": self.timings,
                "reused": self.reused, "runs": self.runs}


def real_study_complete(study: Study) -> bool:
    """Whether a real study finished building (False: an interrupted build that ``build_real_study`` resumes)."""
    rec = study.manifest.extra.get(MANIFEST_KEY) or {}
    return bool(isinstance(rec, dict) and rec.get("complete"))


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _run_summary(rec: dict[str, Any], reused: bool) -> dict[str, Any]:
    before, after = rec.get("before") or {}, rec.get("after") or {}
    return {"method": rec.get("method"), "steps": rec.get("steps"), "lr": (rec.get("config") or {}).get("lr"),
            "batch_size": (rec.get("config") or {}).get("batch_size"), "seconds": rec.get("seconds"),
            "reused": reused, "resumed_from": rec.get("resumed_from", 0),
            **{f"{split}_acc_{when}": (d.get(split) or {}).get("accuracy")
               for when, d in (("before", before), ("after", after)) for split in ("forget", "retain")}}


def _same_run(rec: dict[str, Any], options: UnlearnRunOptions) -> bool:
    """Whether a completed run's record was made with ``options``' method, seed and every setting it gives
    (``None`` settings take the preset's value, which the record holds: not compared)."""
    key = rec.get("key") or {}
    cfg = key.get("config") or {}
    given = {k: getattr(options, k) for k in ("steps", "lr", "batch_size", "retain_weight")
             if getattr(options, k) is not None}
    return key.get("method") == options.method and cfg.get("seed") == options.seed and \
        all(cfg.get(k) == v for k, v in given.items()) and key.get("layer") == options.layer


class _Builder:
    """The build's shared state: the study root, options, base checkpoint, the progress bar and the records."""

    def __init__(self, root: Path, opts: RealStudyOptions, progress: ProgressFn | None) -> None:
        self.root, self.opts, self.progress = root, opts, progress
        self.result: RealBuild | None = None
        self.timings: dict[str, float] = {}
        self.reused: dict[str, bool] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.done = 0.0
        self.base_dir: Path | None = None
        self.base_fp = ""
        self.samples: dict[str, list[Sample]] = {}

    # ---- progress and stages ---------------------------------------------------------------------------
    def sub(self, stage: str) -> ProgressFn:
        lo, w = self.done, STAGE_WEIGHTS[stage]  # type: ignore[index]

        def report(frac: float, msg: str) -> None:
            if self.progress is not None:
                self.progress(min(0.999, lo + w * max(0.0, min(1.0, frac))), f"{stage}: {msg}")

        return report

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, bool]]:
        """Times a stage; the body sets ``flag["built"] = True`` when it did any work."""
        flag = {"built": False}
        t0 = time.perf_counter()
        self.sub(name)(0.0, "starting")
        yield flag
        self.timings[name] = round(time.perf_counter() - t0, 2)
        self.reused[name] = not flag["built"]
        self.done += STAGE_WEIGHTS[name]  # type: ignore[index]
        self.sub(name)(0.0, "done" if flag["built"] else "already built")

    # ---- runs ------------------------------------------------------------------------------------------
    def run(self, name: str, source: Path, forget: list[Sample], retain: list[Sample], options: UnlearnRunOptions,
            progress: ProgressFn, source_fp: str) -> tuple[dict[str, Any], bool]:
        """``unlearn_checkpoint`` into ``models/<name>``, unless that run is complete already and was made from
        ``source_fp`` (then nothing is loaded or hashed again). Returns its record and whether it was built."""
        from analysis.unlearn.runner import completed_run, unlearn_checkpoint

        out = self.root / "models" / name
        rec = completed_run(out)
        if rec is not None and (rec.get("key") or {}).get("source") == source_fp and _same_run(rec, options) and \
                (options.base is None or (rec.get("key") or {}).get("base") == self.base_fp):
            progress(1.0, "already built")
            self.runs.setdefault(name, _run_summary(rec, True))
            return rec, False
        if rec is not None:  # a complete run of this build made with other settings: replaced
            import shutil

            progress(0.0, "settings changed: building it again")
            shutil.rmtree(out)
        res = unlearn_checkpoint(source, forget, retain, out, options, progress=progress)
        rec = completed_run(out) or res.to_dict()
        self.runs.setdefault(name, _run_summary(rec, res.reused))
        return rec, not res.reused

    def finetune_options(self, seed: int) -> UnlearnRunOptions:
        o = self.opts
        return UnlearnRunOptions(method="retrain", preset="pretrained", steps=o.finetune_steps, lr=o.finetune_lr,
                                 batch_size=o.finetune_batch, seed=seed, base=str(self.base_dir),
                                 checkpoint_every=FINETUNE_CHECKPOINT_EVERY)

    def method_options(self, method: str, seed: int) -> UnlearnRunOptions:
        return UnlearnRunOptions(method=method, preset="pretrained", steps=self.opts.method_steps,
                                 batch_size=self.opts.method_batch, seed=seed)

    def register(self, study: Study, name: str, reference: bool = False, role: str | None = None) -> None:
        """`erasure study add` (``role``: default the run's), unless ``name`` is registered at this path already."""
        from analysis.unlearn.runner import add_to_study

        entry = study.manifest.models.get(name)
        rel = f"models/{name}"
        if entry is not None and entry.path == rel:
            return
        if entry is not None:
            raise StudyError(f"the study already has a model named {name!r} at {entry.path}, not {rel}")
        add_to_study(study.root, name, study.root / rel, role=role, reference=reference)
        fresh = Study.open(study.root)  # add_to_study wrote the manifest; keep this instance in step
        study.manifest = fresh.manifest


def _check_record(root: Path, opts: RealStudyOptions, base: str | None) -> dict[str, Any]:
    """The build record (``BUILD_RECORD``): written when a build starts, compared when it resumes."""
    want = {"options": opts.to_dict(), "base": str(Path(base).expanduser().resolve()) if base else None}
    path = root / BUILD_RECORD
    rec = read_json_dict(path)
    if rec is not None:  # an option added since the build started reads as its default
        rec = {**rec, "options": {**RealStudyOptions().to_dict(), **(rec.get("options") or {})}}
    if rec is not None and {k: rec.get(k) for k in want} != want:
        diff = [k for k, v in want["options"].items() if (rec.get("options") or {}).get(k) != v]
        raise AnalysisInputError(f"{root} holds a real study built with other settings ({', '.join(diff) or 'base'}"
                                 "): use another --out")
    if rec is None:
        if (root / MANIFEST).exists():
            raise AnalysisInputError(f"{root} holds a study that is not a real-model study: use another --out")
        rec = {**want, "format": 1}
        write_json_atomic(path, rec)
    return rec


def build_real_study(out: str | os.PathLike[str] = "studies/smollm2", options: RealStudyOptions | None = None,
                     progress: ProgressFn | None = None, base: str | os.PathLike[str] | None = None) -> RealBuild:
    """Build (or finish building) the real study at ``out`` (module docstring). ``base``: a Hugging Face checkpoint
    directory to build on instead of the packaged model (the tests use a tiny Llama)."""
    opts = (options if options is not None else DEFAULT).validated()
    root = Path(out).expanduser().resolve()
    t_start = time.perf_counter()
    _check_record(root, opts, str(base) if base is not None else None)
    b = _Builder(root, opts, progress)

    with b.stage("base") as flag:
        if base is not None:
            b.base_dir = Path(base).expanduser().resolve()
        else:
            from analysis.models.gguf import fetch

            conv = fetch(opts.model, progress=b.sub("base"))
            b.base_dir, flag["built"] = conv.path, not conv.reused
        from analysis.models.handle import fingerprint_dir

        b.base_fp = fingerprint_dir(b.base_dir)

    with b.stage("samples") as flag:
        flag["built"] = _samples_stage(b)
    forget, retain = b.samples["forget"], b.samples["retain"]
    seed = opts.seed

    with b.stage("original") as flag:
        _, flag["built"] = b.run("original", b.base_dir, forget, training_rows(forget + retain, opts.train_templates),
                                 b.finetune_options(seed), b.sub("original"), b.base_fp)

    with b.stage("study") as flag:
        study, flag["built"] = _study_stage(b)
    original_fp = study.fingerprint("original")

    with b.stage("retrain") as flag:
        _, flag["built"] = b.run(RETRAIN_NAME, study.model_path("original"), forget,
                                 training_rows(retain, opts.train_templates), b.finetune_options(seed),
                                 b.sub("retrain"), original_fp)
        b.register(study, RETRAIN_NAME, reference=True)

    with b.stage("methods") as flag:
        names = [*opts.methods, *CONTROLS]
        for i, method in enumerate(names):
            from analysis.realstudy.zoo import zoo_progress

            _, built = b.run(method, study.model_path("original"), forget, retain, b.method_options(method, seed),
                             zoo_progress(b.sub("methods"), i, len(names), method), original_fp)
            b.register(study, method)
            flag["built"] |= built

    with b.stage("zoo") as flag:
        flag["built"] = _zoo_stage(b, study)

    with b.stage("evaluate") as flag:
        if opts.evaluate:
            flag["built"] = _evaluate_stage(study, b.sub("evaluate"))

    b.timings["total"] = round(time.perf_counter() - t_start, 2)
    rec = dict(study.manifest.extra.get(MANIFEST_KEY) or {})
    rec.update(complete=True, timings=b.timings, reused=b.reused, runs=b.runs)
    study.manifest.extra[MANIFEST_KEY] = rec
    study.save_manifest()
    if progress is not None:
        progress(1.0, "real study ready")
    return RealBuild(study=study, timings=b.timings, reused=b.reused, runs=b.runs)


def _samples_stage(b: _Builder) -> bool:
    """The corpus in natural English (the forget / retain sample files) and the curated facts the BASE gets top-1
    right (``KNOWN_BASE``: the study stage keeps those the original still gets right as the utility split).
    Skipped when written for the same corpus, base and facts file."""
    o = b.opts
    key = {"seed": o.seed, "n_people": o.n_people, "forget_fraction": o.forget_fraction, "base": b.base_fp,
           "known_facts": _file_digest(KNOWN_FACTS_FILE)}
    rec_path = b.root / SAMPLES_RECORD
    files = {s: b.root / "samples" / f"{s}.jsonl" for s in ("forget", "retain")}
    known_base = b.root / KNOWN_BASE
    rec = read_json_dict(rec_path)
    if rec is not None and rec.get("key") == key and all(f.is_file() for f in [*files.values(), known_base]):
        b.samples = {s: read_jsonl(f, split=s) for s, f in files.items()}
        return False
    corpus = build_corpus(seed=o.seed, n_people=o.n_people, forget_fraction=o.forget_fraction)
    rendered = render_corpus(corpus)
    report = b.sub("samples")
    report(0.1, "loading the base model to filter the curated facts")
    import torch

    from analysis.models import load_model

    handle = load_model(b.base_dir, name="base", device="cpu", dtype=torch.float32)
    report(0.5, "scoring the curated facts")
    facts = known_facts()
    kept, rows = keep_known(handle, facts)
    del handle
    for split in ("forget", "retain"):
        write_jsonl(rendered[split], files[split])
    write_jsonl(kept, known_base)
    write_json_atomic(rec_path, {"key": key, "forget_people": corpus.forget_people, "known_facts_base": rows,
                           "n_known_facts": len(facts), "n_kept_base": len(kept)})
    b.samples = dict(rendered)
    return True


def _known_on_original(b: _Builder) -> list[Sample]:
    """The curated facts the base gets top-1 right that the original (after the fine-tune) still does: the real
    knowledge the study traces (the fine-tune never sees them; a small model forgets some)."""
    import torch

    from analysis.models import load_model

    path = b.root / KNOWN_BASE
    candidates = read_jsonl(path, split="utility") if path.is_file() and path.stat().st_size else []
    if not candidates:
        return []
    handle = load_model(b.root / "models" / "original", name="original", device="cpu", dtype=torch.float32)
    kept, rows = keep_known(handle, candidates)
    rec = read_json_dict(b.root / SAMPLES_RECORD) or {}
    rec.update(known_facts_original=rows, n_kept=len(kept))
    write_json_atomic(b.root / SAMPLES_RECORD, rec)
    return kept


def _study_stage(b: _Builder) -> tuple[Study, bool]:
    """``Study.create`` over the original and the sample files (once), the utility split being the curated facts
    both the base and the original get top-1 right; the original's path made study-relative."""
    if (b.root / MANIFEST).is_file():
        return Study.open(b.root), False
    files = {s: b.root / "samples" / f"{s}.jsonl" for s in ("forget", "retain", "utility")}
    b.sub("study")(0.1, "the curated facts the original still gets right")
    kept = _known_on_original(b)
    if kept:
        write_jsonl(kept, files["utility"])
    study = Study.create(b.root, original=b.root / "models" / "original", unlearned={}, forget=files["forget"],
                         retain=files["retain"], utility=files["utility"] if kept else None,
                         name=f"{b.opts.model} (real model)")
    study.add_model("original", "models/original", "original")  # relative: the study can move
    samples = read_json_dict(b.root / SAMPLES_RECORD) or {}
    from analysis.realstudy.zoo import NOT_BUILT

    study.manifest.seed = b.opts.seed
    study.manifest.extra.update({
        "n_people": b.opts.n_people, "forget_people": samples.get("forget_people", []),
        MANIFEST_KEY: {"model": b.opts.model, "options": b.opts.to_dict(), "base": str(b.base_dir),
                       "base_fingerprint": b.base_fp, "complete": False,
                       "known_facts": {"file": KNOWN_FACTS_FILE.name, "n": samples.get("n_known_facts"),
                                       "kept_by_base": samples.get("n_kept_base"), "kept": len(kept)},
                       "zoo_not_built": NOT_BUILT}})
    study.save_manifest()
    return study, True


def _zoo_stage(b: _Builder, study: Study) -> bool:
    """Build the zoo members (``analysis.realstudy.zoo``) and record each in the manifest as soon as it is
    judged; a member recorded with the same recipe and a complete model is skipped."""
    from analysis.realstudy.zoo import ProbeCache, judge, plan_members, zoo_progress
    from analysis.zoo.options import RECIPE_VERSION
    from analysis.zoo.result import recorded_members
    from analysis.zoo.runner import record_member

    forget, retain = b.samples["forget"], b.samples["retain"]
    base_recipe = {"version": RECIPE_VERSION, "original": study.fingerprint("original"),
                   "samples": study.samples_digest()}
    n_layers = _n_layers(study.model_path("original"))
    members = plan_members(b.opts, n_layers, base_recipe, b.base_fp, b.method_options, b.finetune_options)
    order = [m.name for m in members]
    rec = dict(study.manifest.extra.get(MANIFEST_KEY) or {})
    probe = ProbeCache(study, rec)
    ref_log = study.read_model_json(RETRAIN_NAME, "unlearn_run.json") or {}
    ref_seed = (ref_log.get("config") or {}).get("seed")
    original: dict[str, float] | None = None
    built = False
    report = b.sub("zoo")
    for i, m in enumerate(members):
        sub = zoo_progress(report, i, len(members), m.name)
        recorded = recorded_members(study)
        old = recorded.get(m.name)
        if old is not None and old.recipe == m.recipe and (m.name in study.manifest.models or
                                                           old.status == "excluded" and not old.fingerprint):
            sub(1.0, "already built")
            continue
        if m.source != "original" and m.source not in study.manifest.models:
            from analysis.zoo.result import ZooMember

            record_member(study, ZooMember(m.name, "excluded", m.recipe, {"source": m.source},
                                           f"its source {m.source!r} was not built"), order)
            continue
        rows = training_rows(retain, b.opts.train_templates) if m.retain_rows == "train" else retain
        source_dir = study.model_path(m.source)
        run, did = b.run(m.name, source_dir, forget, rows, m.run, sub, study.fingerprint(m.source))
        b.register(study, m.name, role="control")  # as the organism's zoo: every member a control
        if original is None:
            from analysis.evaluation import model_scores

            metrics = model_scores(study, "original")["metrics"]
            original = {"forget_acc": float(metrics["forget_acc"]), "retain_acc": float(metrics["retain_acc"])}
        member = judge(study, m, run, probe, forget, rows, ref_seed if isinstance(ref_seed, int) else None,
                       original, recorded)
        study.manifest.extra[MANIFEST_KEY] = rec  # the probe's record, if it ran
        record_member(study, member, order)
        built = True
    return built


def _n_layers(model_dir: Path) -> int:
    from analysis.models.hf import load_hf_config

    cfg = load_hf_config(model_dir)
    n = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    if not isinstance(n, int):
        raise AnalysisInputError(f"{model_dir}: config.json does not say how many layers the model has")
    return n


def _evaluate_stage(study: Study, progress: ProgressFn) -> bool:
    """The scoreboard (``analysis.evaluation.evaluate_study``); False when every model's scores were stored."""
    from analysis.evaluation import EVAL_OPTIONS, evaluate_study

    missing = [n for n in study.model_names if study.store.get("eval", [study.fingerprint(n)], EVAL_OPTIONS) is None]
    evaluate_study(study, progress=progress)
    return bool(missing)


__all__ = ["BUILD_RECORD", "STAGES", "RealBuild", "build_real_study", "real_study_complete"]
