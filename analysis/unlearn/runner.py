"""`erasure unlearn`: unlearn a user's Hugging Face checkpoint directory and write the result as a standard
Hugging Face checkpoint, resumably.

``unlearn_checkpoint(model_dir, forget, retain, out, options, progress)``:

1. reads the forget and retain samples, resolves the settings (``options.preset``: the pretrained preset of
   ``analysis.unlearning.base.PRETRAINED_PRESET`` or the organism's defaults; explicit options win) and the run's
   key (method, resolved settings, the checkpoint's fingerprint, the samples' digest);
2. returns the recorded run when ``out`` already holds this run complete (``unlearn_run.json``); refuses an
   ``out`` holding anything else;
3. loads the checkpoint (float32) into the workbench's hooked model, freezes the parameters with no source in
   the checkpoint (``analysis.models.export``: they could not be saved back) and runs the method in the shared
   loop, saving its state every ``checkpoint_every`` steps and after the last under ``out/.partial``
   (``analysis.unlearn.checkpoint``): a rerun with the same arguments resumes there and ends with the same
   weights. Training is float32 on any device (Adam: 16 bytes a parameter, plus the frozen source copy);
4. writes the trained weights back under the checkpoint's own names, in float32
   (``analysis.models.export.save_hf_checkpoint``: safetensors, the checkpoint's config.json with the export's
   changes, e.g. untied embeddings, and its tokenizer files);
5. reloads the saved directory with ``transformers.AutoModelForCausalLM`` (every weight loaded, none missing or
   left over) and compares its logits with the trained model's on the forget and retain prompts (float32,
   within ``VERIFY_ATOL`` x max(1, max |logit|)); a larger difference is an error, not a warning;
6. writes the per-sample trajectory (``unlearning.json``, as the demo's unlearned models have) and the run's
   record (``unlearn_run.json``, last), and removes ``out/.partial``.

``add_to_study`` registers the result in a study (`erasure study add`).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from analysis.data.formats import ImportOptions
from analysis.data.schema import Sample
from analysis.errors import AnalysisInputError, StudyError
from analysis.models.handle import ModelHandle, fingerprint_dir, tokenizer_signature
from analysis.store import ProgressFn
from analysis.unlearn.checkpoint import Checkpointer, read_json_dict, write_json_atomic
from analysis.unlearn.options import (
    PARTIAL_DIR,
    RUN_FILE,
    RUN_FORMAT,
    RUN_VERSION,
    SCRATCH,
    SCRATCH_LR,
    VERIFY_ATOL,
    UnlearnRunOptions,
)
from analysis.unlearn.result import UnlearnRun
from analysis.unlearning.base import UnlearnConfig, UnlearnResult, pretrained_config, run_method
from analysis.unlearning.log import LOG_FILE

RUN_KEY_FILE = "run.json"  # in OUT/.partial: the key of the run the saved states belong to
EXPORT_DIR = "export"  # in OUT/.partial: the checkpoint being written, moved into OUT when verified
BASE_INIT_DIR = "base_init"  # in OUT/.partial: the seeded random init of --base scratch
# Files of a checkpoint directory that belong to its tokenizer (and generation defaults), copied as they are.
TOKENIZER_FILES: tuple[str, ...] = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                    "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
                                    "spiece.model", "vocab.txt", "chat_template.jinja", "chat_template.json",
                                    "generation_config.json")
VERIFY_ROWS = 64  # prompts per split the saved checkpoint is checked on


# ---- inputs ----------------------------------------------------------------------------------------------------


def read_samples(path: str | Path, split: str, options: ImportOptions | None = None) -> list[Sample]:
    """The samples of a sample file in any format ``analysis.data.formats`` reads (our JSONL, TOFU /
    open-unlearning question-answer files, CounterFact, known facts, CSV / JSON tables with a column map)."""
    from analysis.data.formats import read_samples as read_any

    return read_any(path, split=split, options=options)


def samples_digest(samples: list[Sample]) -> str:
    """SHA-256 (16 hex) of the samples' ids, prompts, answers and subjects, in order."""
    h = hashlib.sha256()
    for s in samples:
        h.update(json.dumps([s.id, s.prompt, s.answer, s.subject]).encode())
    return h.hexdigest()[:16]


def resolve_config(options: UnlearnRunOptions, defaults: dict[str, Any], n_forget: int, n_retain: int
                   ) -> UnlearnConfig:
    """The run's settings: the preset's (pretrained, or ``defaults``: the method's organism defaults) with the
    options given."""
    o = options
    given: dict[str, Any] = {"steps": o.steps, "lr": o.lr, "batch_size": o.batch_size, "seed": o.seed,
                             "retain_weight": o.retain_weight}
    if o.method == "rmu" and o.layer is not None:
        given["rmu_layer"] = o.layer
    if o.method == "retrain" and o.base == SCRATCH and o.lr is None:
        given["lr"] = SCRATCH_LR
    if o.preset == "pretrained":
        cfg = pretrained_config(o.method, n_forget, n_retain, **given)
    else:
        cfg = UnlearnConfig(**{k: v for k, v in given.items() if v is not None})
    cfg = cfg.resolved(defaults)
    cfg.validate()
    return cfg


def method_defaults(method: str) -> dict[str, Any]:
    """The organism defaults of ``method`` (``defaults`` of its class)."""
    if method == "depth_suppression":
        from analysis.zoo.suppression import DepthSuppression

        return dict(DepthSuppression.defaults)
    from analysis.unlearn.methods import method_for

    return dict(method_for(method).defaults)


def run_key(options: UnlearnRunOptions, cfg: UnlearnConfig, source_fp: str, base_fp: str | None,
            forget: list[Sample], retain: list[Sample]) -> dict[str, Any]:
    """Everything that decides the run's weights (not the device, not how often it saves)."""
    return {"version": RUN_VERSION, "method": options.method, "preset": options.preset, "config": cfg.to_dict(),
            "layer": options.layer, "depth_loss": options.depth_loss if options.method == "depth_suppression"
            else None, "source": source_fp, "base": base_fp, "forget": samples_digest(forget),
            "retain": samples_digest(retain)}


# ---- the output directory --------------------------------------------------------------------------------------


def completed_run(out: Path) -> dict[str, Any] | None:
    """The record of the complete run in ``out`` (its ``unlearn_run.json``), or None."""
    rec = read_json_dict(out / RUN_FILE)
    return rec if rec is not None and rec.get("format") == RUN_FORMAT else None


def _differences(a: dict[str, Any], b: dict[str, Any]) -> str:
    keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
    if "config" in keys:
        ca, cb = a.get("config") or {}, b.get("config") or {}
        keys = [k for k in keys if k != "config"] + [f"config.{k}" for k in dict.fromkeys([*ca, *cb])
                                                     if ca.get(k) != cb.get(k)]
    return ", ".join(keys) or "none"


def prepare_out(out: Path, key: dict[str, Any], restart: bool) -> None:
    """Make ``out`` ready for this run: new, empty, or holding this run's partial state (kept: the run resumes),
    or another run's partial state when ``restart`` (removed). Anything else is refused."""
    if out.exists() and not out.is_dir():
        raise AnalysisInputError(f"--out {out} is a file, not a directory")
    partial = out / PARTIAL_DIR
    done = completed_run(out)
    if done is not None:
        raise AnalysisInputError(f"--out {out} holds another complete run of `erasure unlearn` (it differs in "
                                 f"{_differences(done.get('key') or {}, key)}): choose another --out")
    old = read_json_dict(partial / RUN_KEY_FILE)
    if old is not None and old.get("key") != key:
        if not restart:
            raise AnalysisInputError(f"--out {out} holds a partial run made with other arguments (it differs in "
                                     f"{_differences(old.get('key') or {}, key)}): rerun with the same arguments "
                                     "to resume it, or pass --restart to discard it")
        shutil.rmtree(partial)
        old = None
    if old is None and out.is_dir():
        stray = sorted(p.name for p in out.iterdir() if p.name != PARTIAL_DIR)
        if stray:
            raise AnalysisInputError(f"--out {out} is not empty ({', '.join(stray[:3])}) and holds no run of "
                                     "`erasure unlearn`: choose a new or empty directory")
        if partial.exists():
            shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    if old is None:
        write_json_atomic(partial / RUN_KEY_FILE, {"key": key})


# ---- models ----------------------------------------------------------------------------------------------------


def copy_tokenizer_files(src: Path, dest: Path) -> list[str]:
    """Copy ``src``'s tokenizer (and generation-config) files into ``dest`` as they are; returns their names."""
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)
            copied.append(name)
    return copied


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No transformers progress bars ("Loading weights", "Writing model shards"): they would cut through the
    verb's own bar."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def scratch_base(model_dir: Path, dest: Path, seed: int) -> Path:
    """A seeded random init of ``model_dir``'s architecture (transformers' own init for its config), saved with
    its tokenizer into ``dest`` (reused when already there)."""
    if (dest / "config.json").is_file() and any(dest.glob("*.safetensors")):
        return dest
    from transformers import AutoModelForCausalLM

    from analysis.models.hf import load_hf_config

    config = load_hf_config(model_dir)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with _quiet_transformers():
        model.save_pretrained(str(tmp))
    copy_tokenizer_files(model_dir, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def freeze_unexportable(handle: ModelHandle, hf_dir: Path) -> list[str]:
    """Prepare the loaded model for training so that it still exports to ``hf_dir``
    (``analysis.models.export.export_plan`` / ``prepare_for_training``): the parameters with no (or only some)
    source in the checkpoint are returned, to be frozen, and TL copies of one HF tensor become one parameter."""
    from analysis.models.export import export_plan, prepare_for_training

    return sorted(prepare_for_training(handle.model, export_plan(handle, hf_dir)))


def save_checkpoint(model: torch.nn.Module, hf_dir: Path, dest: Path) -> dict[str, Any]:
    """Save the trained hooked ``model`` (loaded from ``hf_dir``) as a Hugging Face checkpoint in ``dest``, in
    float32 (``analysis.models.export.save_hf_checkpoint``: the checkpoint's own names, config and tokenizer
    files). Returns the config.json fields that changed (e.g. ``tie_word_embeddings``)."""
    from analysis.models.export import save_hf_checkpoint

    save_hf_checkpoint(model, dest, hf_dir=hf_dir, dtype=torch.float32)
    for stale in (RUN_FILE, LOG_FILE):  # a source that was itself an `erasure unlearn` output
        (dest / stale).unlink(missing_ok=True)
    old = json.loads((hf_dir / "config.json").read_text())
    new = json.loads((dest / "config.json").read_text())
    return {k: v for k, v in new.items() if k not in ("dtype", "torch_dtype") and old.get(k) != v}


@torch.no_grad()
def verify_export(handle: ModelHandle, dest: Path, samples: list[Sample]) -> dict[str, Any]:
    """Reload ``dest`` with ``transformers.AutoModelForCausalLM`` (float32) and compare its logits with the trained
    hooked model's on ``samples`` (prompt + answer, the workbench's tokens) at every real position. Raises when
    the largest difference exceeds ``VERIFY_ATOL`` x max(1, max |logit|)."""
    from transformers import AutoModelForCausalLM

    from analysis.scoring import make_batch
    from analysis.unlearning.base import real_positions

    with _quiet_transformers():
        hf, info = AutoModelForCausalLM.from_pretrained(str(dest), dtype=torch.float32, local_files_only=True,
                                                        trust_remote_code=False, output_loading_info=True)
    loose = {k: sorted(map(str, v))[:3] for k, v in info.items() if k != "error_msgs" and v}
    if loose:  # transformers only warns, and initialises a missing weight at random
        raise AnalysisInputError(f"the saved checkpoint in {dest} does not load strictly with transformers: {loose}")
    hf = hf.to(handle.device).eval()
    batch = make_batch(handle, [s.prompt for s in samples], [s.answer for s in samples])
    mask = real_positions(batch)
    ours = handle.model(batch.tokens, return_type="logits").float()[mask]
    theirs = hf(input_ids=batch.tokens).logits.float()[mask]
    diff = float((ours - theirs).abs().max())
    scale = max(1.0, float(ours.abs().max()))
    record = {"max_abs_logit_diff": diff, "max_abs_logit": scale, "tolerance": VERIFY_ATOL * scale,
              "rows": len(samples), "positions": int(mask.sum())}
    if not diff <= VERIFY_ATOL * scale:
        raise AnalysisInputError(f"the saved checkpoint in {dest} does not reproduce the trained model: its logits "
                                 f"differ by up to {diff:.3g} (tolerance {VERIFY_ATOL * scale:.3g}); not saved")
    return record


def answer_metrics(handle: ModelHandle, samples: list[Sample]) -> dict[str, float]:
    """Mean length-normalised answer log-prob and top-1 accuracy of ``samples`` under ``handle``."""
    from analysis.scoring import score_answers

    sc = score_answers(handle, [s.prompt for s in samples], [s.answer for s in samples])
    return {"logprob": float(sc.logprob.mean()), "accuracy": float(sc.correct.mean()), "n": len(samples)}


# ---- the run ---------------------------------------------------------------------------------------------------


def _stage(progress: ProgressFn | None, lo: float, hi: float) -> ProgressFn:
    def report(frac: float, msg: str) -> None:
        if progress is not None:
            f = 0.0 if not math.isfinite(frac) else min(1.0, max(0.0, frac))
            progress(lo + (hi - lo) * f, msg)

    return report


def unlearn_checkpoint(model_dir: str | Path, forget: str | Path | list[Sample], retain: str | Path | list[Sample],
                       out: str | Path, options: UnlearnRunOptions, progress: ProgressFn | None = None,
                       sample_options: ImportOptions | None = None) -> UnlearnRun:
    """Unlearn ``forget`` from the checkpoint ``model_dir`` and save the result in ``out`` (module docstring).
    ``forget`` / ``retain`` are sample files (read with ``sample_options``: format, column map, prompt template)
    or lists of samples. Resumable; a finished run is returned as recorded (``UnlearnRun.reused``)."""
    from analysis.models.hf import read_architecture
    from analysis.models.loader import detect_format, load_model
    from analysis.unlearn.methods import method_for
    from analysis.unlearning.log import write_unlearning_log

    t0 = time.perf_counter()
    opts = options.validated()
    model_dir = Path(model_dir).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    if detect_format(model_dir) != "hf":
        raise AnalysisInputError(f"{model_dir} is the built-in organism: `erasure unlearn` takes a Hugging Face "
                                 "checkpoint directory (the organism's models are built by `erasure demo`)")
    read_architecture(model_dir)  # an unsupported architecture is refused before anything is written
    if out == model_dir or model_dir in out.parents:
        raise AnalysisInputError(f"--out {out} is inside the checkpoint {model_dir}: choose another directory")
    f_samples = forget if isinstance(forget, list) else read_samples(forget, "forget", sample_options)
    r_samples = retain if isinstance(retain, list) else read_samples(retain, "retain", sample_options)
    base_dir: Path | None = None
    if opts.base is not None and opts.base != SCRATCH:
        base_dir = Path(opts.base).expanduser().resolve()
        if detect_format(base_dir) != "hf":
            raise AnalysisInputError(f"--base {base_dir} is not a Hugging Face checkpoint directory")
        read_architecture(base_dir)
        _check_base_tokenizer(model_dir, base_dir)
    report = _stage(progress, 0.0, 0.05)
    report(0.0, "hashing the checkpoint")
    source_fp = fingerprint_dir(model_dir)
    base_fp = SCRATCH if opts.base == SCRATCH else (fingerprint_dir(base_dir) if base_dir is not None else None)
    cfg = resolve_config(opts, method_defaults(opts.method), len(f_samples), len(r_samples))
    key = run_key(opts, cfg, source_fp, base_fp, f_samples, r_samples)
    done = completed_run(out)
    if done is not None and done.get("key") == key:
        if progress is not None:
            progress(1.0, "already done")
        return UnlearnRun.from_dict(done, reused=True, out=str(out))
    prepare_out(out, key, opts.restart)
    partial = out / PARTIAL_DIR

    report(0.3, "loading the checkpoint")
    source_dir = model_dir
    if opts.method == "retrain":
        source_dir = base_dir if base_dir is not None else scratch_base(model_dir, partial / BASE_INIT_DIR, opts.seed)
    handle = load_model(source_dir, name=model_dir.name, role="original", device=opts.device, dtype=torch.float32)
    method = method_for(opts.method, opts.depth_loss, opts.layer, handle.n_layers)
    frozen = freeze_unexportable(handle, source_dir)
    before = {"forget": answer_metrics(handle, f_samples), "retain": answer_metrics(handle, r_samples)}

    ckpt = Checkpointer(partial, opts.checkpoint_every, int(cfg.steps or 0))
    trained, result = run_method(handle, method, f_samples, r_samples, cfg, progress=_stage(progress, 0.05, 0.9),
                                 frozen=frozen, checkpoint=ckpt)
    after = {"forget": answer_metrics(trained, f_samples), "retain": answer_metrics(trained, r_samples)}

    _stage(progress, 0.9, 1.0)(0.0, "saving the checkpoint")
    export_dir = partial / EXPORT_DIR
    shutil.rmtree(export_dir, ignore_errors=True)
    changes = save_checkpoint(trained.model, source_dir, export_dir)
    _stage(progress, 0.9, 1.0)(0.5, "checking the saved checkpoint against the trained model")
    verification = verify_export(trained, export_dir, f_samples[:VERIFY_ROWS] + r_samples[:VERIFY_ROWS])
    write_unlearning_log(export_dir, result)
    files = sorted(p.name for p in export_dir.iterdir() if p.is_file())
    for name in files:
        (export_dir / name).replace(out / name)
    record = _record(opts, key, result, model_dir, source_dir, base_dir, before, after, verification, changes,
                     files, ckpt.resumed_from, time.perf_counter() - t0)
    record["out"] = str(out)
    write_json_atomic(out / RUN_FILE, record)
    shutil.rmtree(partial, ignore_errors=True)
    if progress is not None:
        progress(1.0, f"saved {out}")
    return UnlearnRun.from_dict(record)


def _check_base_tokenizer(model_dir: Path, base_dir: Path) -> None:
    from analysis.models.hf import load_tokenizer

    if tokenizer_signature(load_tokenizer(model_dir)) != tokenizer_signature(load_tokenizer(base_dir)):
        raise AnalysisInputError(f"--base {base_dir} has a different tokenizer from {model_dir}: the retrain "
                                 "control must share the model's tokens")


def _record(opts: UnlearnRunOptions, key: dict[str, Any], result: UnlearnResult, model_dir: Path, source_dir: Path,
            base_dir: Path | None, before: dict[str, Any], after: dict[str, Any], verification: dict[str, Any],
            changes: dict[str, Any], files: list[str], resumed_from: int, seconds: float) -> dict[str, Any]:
    return {"format": RUN_FORMAT, "version": RUN_VERSION, "key": key, "method": opts.method,
            "role": opts.role, "preset": opts.preset, "config": result.config.to_dict(),
            "model": str(model_dir), "source": str(source_dir) if opts.base != SCRATCH else SCRATCH,
            "base": str(base_dir) if base_dir is not None else (SCRATCH if opts.base == SCRATCH else None),
            "steps": int(result.config.steps or 0), "resumed_from": resumed_from, "seconds": seconds,
            "before": before, "after": after, "verification": verification,
            "config_changes": {k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
                               for k, v in changes.items()},
            "frozen_parameters": list(result.extra.get("frozen_parameters", [])),
            "extra": {k: v for k, v in result.extra.items() if k != "frozen_parameters"
                      and isinstance(v, (int, float, str, bool, list))},
            "files": files}


# ---- registering the result in a study --------------------------------------------------------------------------


def add_to_study(study_dir: str | Path, name: str, path: str | Path, role: str | None = None,
                 method: str | None = None, reference: bool = False) -> dict[str, Any]:
    """Register the model directory ``path`` in the study at ``study_dir`` as ``name`` (`erasure study add`).

    ``role`` / ``method`` default to what the directory's ``unlearn_run.json`` records (``unlearned`` for an
    unlearning method, ``control`` for a control), else ``unlearned`` and none. ``reference`` makes it the study's
    reference retrain control (forget quality). The model must share the original's tokenizer; a name already in
    the study is refused."""
    from analysis.models.hf import load_tokenizer
    from analysis.models.loader import detect_format
    from analysis.study import Study

    study = Study.open(study_dir)
    p = Path(path).expanduser().resolve()
    detect_format(p)
    if name in study.manifest.models:
        raise StudyError(f"the study already has a model named {name!r}")
    rec = completed_run(p) or {}
    role = role or str(rec.get("role") or "unlearned")
    method = method or (str(rec["method"]) if rec.get("method") else None)
    if "original" in study.manifest.models and role != "original":
        orig = study.model_path("original")
        if detect_format(orig) == "hf" and detect_format(p) == "hf" and \
                tokenizer_signature(load_tokenizer(orig)) != tokenizer_signature(load_tokenizer(p)):
            raise StudyError(f"model {name!r} has a different tokenizer from 'original'; all models of a study must "
                             "share one")
    study.add_model(name, p, role, method)
    if reference:
        if role != "control":
            raise StudyError(f"the reference retrain control must have role 'control', {name!r} has {role!r}")
        study.manifest.retrain = name
        study.save_manifest()
    entry = study.entry(name)
    return {"study": str(study.root), "name": name, **entry.to_dict(), "reference": study.manifest.retrain == name}
