"""The built-in demo study: the organism, every unlearning method, the two ground-truth controls and the zoo
(analysis.zoo: models whose knowledge of the forget set is known by construction).

``build_demo`` is idempotent: a model whose directory is complete and listed in the manifest is reused,
so a second run (or a rerun after an interruption) only builds what is missing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from analysis.data.corpus import build_corpus
from analysis.data.schema import write_jsonl
from analysis.evaluation import evaluate_study
from analysis.models import load_model
from analysis.models.organism_io import ORGANISM_CONFIG, WEIGHTS, save_organism_dir
from analysis.organism import OrganismConfig, train_organism
from analysis.store import ProgressFn
from analysis.study import MANIFEST, Manifest, Study
from analysis.unlearning import UNLEARNING_METHODS, UnlearnConfig, run_unlearning
from analysis.unlearning.log import LOG_FILE, write_unlearning_log

# Models of the demo study, in build order: name -> (method, role); each model is named after its method and
# takes the role its method's class declares ("control" for the two controls, else "unlearned").
DEMO_MODELS: dict[str, tuple[str, str]] = {
    m: (m, UNLEARNING_METHODS.get(m).role)
    for m in ("retrain", "readout_suppression", "grad_ascent", "grad_diff", "npo", "simnpo", "rmu")
}
# Rough share of build time per stage, for one progress bar over the whole build (the zoo: the last _ZOO_SHARE).
_ZOO_SHARE = 0.6
_WEIGHTS = {k: (1 - _ZOO_SHARE) * v for k, v in
            {"original": 0.35, "retrain": 0.35, **{n: 0.05 for n in DEMO_MODELS if n != "retrain"}}.items()}


def demo_complete(study: Study) -> bool:
    """Whether a built-in demo study finished building (False: an interrupted build that `build_demo` resumes).
    Studies built before the ``complete`` flag existed count as complete when every demo model is in."""
    extra = study.manifest.extra
    if "complete" in extra:
        return bool(extra["complete"])
    return all(n in study.manifest.models for n in DEMO_MODELS) and study.manifest.retrain is not None


def demo_build_args(study: Study) -> dict[str, int | None]:
    """The arguments of ``build_demo`` that resume this demo study's build exactly as it was started."""
    build = study.manifest.extra.get("build") or {}
    return {"seed": study.manifest.seed, "n_people": study.manifest.extra.get("n_people"),
            "organism_steps": build.get("organism_steps"), "unlearn_steps": build.get("unlearn_steps")}


def _build_steps(study: Study, organism_steps: int | None, unlearn_steps: int | None
                 ) -> tuple[int | None, int | None]:
    build = study.manifest.extra.get("build") or {}
    return (organism_steps if organism_steps is not None else build.get("organism_steps"),
            unlearn_steps if unlearn_steps is not None else build.get("unlearn_steps"))


def _complete(model_dir: Path, unlearned: bool) -> bool:
    ok = (model_dir / ORGANISM_CONFIG).is_file() and (model_dir / WEIGHTS).is_file()
    return ok and (not unlearned or (model_dir / LOG_FILE).is_file())


def build_demo(out: str | os.PathLike[str] = "studies/demo", seed: int = 0, n_people: int = 200,
               organism_steps: int | None = None, unlearn_steps: int | None = None,
               progress: ProgressFn | None = None, evaluate: bool = True) -> tuple[Study, dict[str, float]]:
    """Build (or finish building) the demo study at ``out``. Returns the study and seconds per stage.

    ``organism_steps``/``unlearn_steps``/``n_people`` shrink the study for tests; defaults are the demo's.
    """
    root = Path(out).expanduser().resolve()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    done_frac = 0.0

    def report(stage: str, frac: float, msg: str) -> None:
        if progress:
            progress(min(0.999, done_frac + _WEIGHTS.get(stage, 0.05) * frac), msg)

    corpus = build_corpus(seed=seed, n_people=n_people)
    if (root / MANIFEST).is_file():
        study = Study.open(root)
        if study.manifest.seed != seed or study.manifest.extra.get("n_people") != n_people:
            raise ValueError(f"{root} holds a demo study built with seed {study.manifest.seed} and "
                             f"{study.manifest.extra.get('n_people')} people; use another --out")
        if not demo_complete(study):  # a resumed build keeps the step counts it was started with
            organism_steps, unlearn_steps = _build_steps(study, organism_steps, unlearn_steps)
    else:
        for split in ("forget", "retain", "utility"):
            write_jsonl(corpus.split(split), root / "samples" / f"{split}.jsonl")
        manifest = Manifest(name="demo", models={}, samples={s: f"samples/{s}.jsonl" for s in
                                                             ("forget", "retain", "utility")},
                            seed=seed, retrain=None,  # set once the retrain model is in (study.json is valid)
                            extra={"n_people": n_people, "forget_people": corpus.forget_people, "builtin": True,
                                   "complete": False, "build": {"organism_steps": organism_steps,
                                                                "unlearn_steps": unlearn_steps}})
        study = Study(root, manifest)
        study.save_manifest()

    org_cfg = OrganismConfig(seed=seed, n_people=n_people, device="cpu")
    if organism_steps is not None:
        org_cfg.steps = organism_steps
    orig_dir = root / "models" / "original"
    if not (_complete(orig_dir, False) and "original" in study.manifest.models):
        t0 = time.perf_counter()
        train_organism(org_cfg, out=orig_dir, corpus=corpus,
                       progress=lambda f, m: report("original", f, m))
        study.add_model("original", orig_dir, "original", method=None)
        timings["original"] = time.perf_counter() - t0
    done_frac += _WEIGHTS["original"]
    original = load_model(orig_dir, name="original", device="cpu")
    forget, retain = corpus.split("forget"), corpus.split("retain")

    for name, (method, role) in DEMO_MODELS.items():
        mdir = root / "models" / name
        if not (_complete(mdir, True) and name in study.manifest.models):
            t0 = time.perf_counter()
            cfg = UnlearnConfig(seed=seed)
            if unlearn_steps is not None:
                cfg.steps = unlearn_steps
            if method == "retrain" and organism_steps is not None:
                cfg.retrain_steps = organism_steps
            # The suppression control must change nothing but the forget answers, so its retain term also
            # covers the general-ability set (the unlearning methods see only the retain split, as in TOFU).
            keep = retain + corpus.split("utility") if method == "readout_suppression" else retain
            handle, result = run_unlearning(original, method, forget, keep, cfg, corpus=corpus,
                                            progress=lambda f, m, _n=name: report(_n, f, f"{_n}: {m}"))
            save_organism_dir(handle.model, handle.tokenizer, mdir,
                              meta={"unlearning": handle.meta.get("unlearning", {}), "method": method})
            write_unlearning_log(mdir, result)
            study.add_model(name, mdir, role, method=method)
            timings[name] = time.perf_counter() - t0
        if method == "retrain" and study.manifest.retrain is None:
            study.manifest.retrain = name  # the forget-quality reference, once it exists (study.json stays valid)
            study.save_manifest()
        done_frac += _WEIGHTS.get(name, 0.05)
        if progress:
            progress(min(0.999, done_frac), f"{name} ready")
    study = Study.open(root)
    from analysis.zoo import ZooOptions, build_zoo

    t0 = time.perf_counter()  # the zoo: cached and resumable like the models above; its steps scale like theirs
    zoo = build_zoo(study, ZooOptions(unlearn_steps=unlearn_steps),
                    progress=(lambda f, m: progress(min(0.999, 1 - _ZOO_SHARE + _ZOO_SHARE * f), m)) if progress
                    else None)
    if zoo.built:
        timings["zoo"] = time.perf_counter() - t0
    if evaluate:
        t0 = time.perf_counter()
        evaluate_study(study)
        timings["evaluate"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    if not study.manifest.extra.get("complete"):
        study.manifest.extra["complete"] = True  # the app and `erasure app` resume a build that lacks this
        study.save_manifest()
    if progress:
        progress(1.0, "demo study ready")
    return study, timings


__all__ = ["DEMO_MODELS", "build_demo", "demo_build_args", "demo_complete"]
