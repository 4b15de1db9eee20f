"""The analyses behind docs/REAL_MODEL.md (issue 17, build item 3, every bullet but the benchmarks), on any study
with a zoo, as one resumable command:

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.real_model_report STUDY [--json OUT] [--md OUT] \
        [--sections trace,cud,recovery,validation,verdict] [--max-known N] [--quick] [--organism STUDY] \
        [--signals a,b] [--sae-steps N] [--robustness] [--cud-settings ours,reference]

Sections (each a markdown table with a one-line caption, and the same numbers in the JSON):

1. ``trace``: causal tracing (``analysis.tracing.trace_dataset``, the workbench's default trace options) of the
   original on the study's ``utility`` split (on the real study: the curated real facts the model gets top-1
   right; at most ``--max-known``, chosen round-robin over relations in file order) and on the forget split
   (the fictitious facts): per kind and token role the peak average indirect effect and its layer, beside ROME's
   GPT-2 XL figures as the issue quotes them.
2. ``cud``: CUD against its baselines on the forget set (``analysis.circuits.runner.score_study``) in our setting
   and the CUD reference code's, against every label kind (``label_comparison``), with bootstrap intervals this
   report adds (the library gives none); the easy / hard circuit signature (edge depth, path length).
3. ``recovery``: keyword-emphasis recovery per unlearning method with the retrain baseline
   (``analysis.attribution.recover``, the ``erasure recover`` path) and the contribution shift, original vs each
   method and vs the retrain control (``compare_models``, the ``erasure attribute --all`` path).
4. ``validation``: every registered signal's AUROC of knowledge-present against knowledge-absent zoo members
   with its bootstrap interval (``analysis.validation.runner.validate``, the ``erasure validate`` path), beside
   the organism's (``--organism STUDY``'s stored readings, else benchmarks/VALIDATION.md).
5. ``verdict``: the fitted verdict (``analysis.verdict.judge``, the ``erasure verdict`` path) of every unlearning
   method, and the held-out-zoo check of the verdict issue (benchmarks/verdict_fit.py's ``tally``): the rule,
   fitted on organism zoos only, judged on this study's zoo members.

Everything is computed by the library and kept in the study's results store, so a rerun after an interruption
resumes where it stopped and a finished rerun only reads. ``--quick`` traces fewer facts with fewer noise
samples and trains a capped SAE (see ``--sae-steps``) when the study has none: for tests.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.cli_common import ProgressBar, dumps, progress_bar
from analysis.errors import WorkbenchError

if TYPE_CHECKING:
    from analysis.study import Study
    from analysis.tracing.result import AIEResult

SECTIONS: tuple[str, ...] = ("trace", "cud", "recovery", "validation", "verdict")
SECTION_TITLES: dict[str, str] = {
    "trace": "causal tracing of the original: its own (utility) facts and the fictitious forget facts",
    "cud": "CUD vs the baselines on the forget set, and the easy / hard circuit signature",
    "recovery": "keyword-emphasis recovery and the contribution shift per unlearning method",
    "validation": "the meta-evaluation: every signal's AUROC on this study's zoo",
    "verdict": "the verdict of each unlearning method and the held-out-zoo check",
}
QUICK_FACTS = 4  # --quick: facts traced per split
QUICK_NOISE = 3  # --quick: noise samples per trace
QUICK_SAE_STEPS = 150  # --quick: SAE training steps when the study has no SAE yet
N_RESAMPLES = 1000  # bootstrap resamples of the intervals this report adds (CUD)
VALIDATION_MD = Path(__file__).resolve().parent / "VALIDATION.md"
# ROME (Meng et al. 2022) on GPT-2 XL, exactly as issue 17 quotes it; a cell the issue gives no figure for is absent.
ROME_GPT2XL: dict[tuple[str, str], str] = {
    ("resid", "last subject token"): "8.7% (peak, around the middle layers)",
    ("mlp", "last subject token"): "6.6% (MLP peak)",
    ("attn", "last subject token"): "1.6% (attention at the last subject token)",
    ("attn", "last token"): "attention matters here (no figure quoted)",
}
FIRST_SUBSEQUENT = "first subsequent token"  # ROME's role; derived here from the stored per-sample traces
UDS_NOTE = ("UDS's published AUROCs are not quoted anywhere in the repository's code or docs (grep 'UDS'), so "
            "there is no UDS column")


@dataclass(frozen=True)
class ReportConfig:
    sections: tuple[str, ...] = SECTIONS
    max_known: int = 24
    max_forget: int | None = None  # forget facts traced (None: all)
    n_noise: int | None = None  # noise samples per trace (None: the trace default, ROME's 10)
    quick: bool = False
    organism: str | None = None
    signals: tuple[str, ...] | None = None
    sae_steps: int | None = None  # None: the library's default SAE (or the study's cached one)
    robustness: bool = False
    cud_settings: tuple[str, ...] = ("ours",)  # the reference setting runs one IG per upstream node: opt in
    seed: int = 0

    @property
    def noise_samples(self) -> int | None:
        return QUICK_NOISE if self.quick else self.n_noise  # None: the trace default

    @property
    def facts_cap(self) -> int:
        return min(self.max_known, QUICK_FACTS) if self.quick else self.max_known

    @property
    def sae_cap(self) -> int | None:
        return self.sae_steps if self.sae_steps is not None else (QUICK_SAE_STEPS if self.quick else None)


@dataclass
class SectionOut:
    data: dict[str, Any] = field(default_factory=dict)
    md: list[str] = field(default_factory=list)


def span(bar: ProgressBar, lo: float, hi: float, prefix: str = "") -> Callable[[float, str], None]:
    """A ProgressFn mapped onto ``[lo, hi]`` of ``bar``, its messages prefixed."""
    def report(frac: float, msg: str) -> None:
        bar(lo + (hi - lo) * min(1.0, max(0.0, frac)), prefix + msg)

    return report


# ---- formatting ----------------------------------------------------------------------------------------------
def fmt(x: float | None, spec: str = ".2f") -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def with_ci(x: float | None, ci: Sequence[float] | None, spec: str = ".2f") -> str:
    if x is None:
        return "–"
    return fmt(x, spec) + ("" if not ci else f" [{fmt(ci[0], spec)}, {fmt(ci[1], spec)}]")


def md_table(caption: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A caption line and a markdown table (cells are escaped for pipes)."""
    def cell(x: str) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    return [f"*{caption}*", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(cell(c) for c in r) + " |" for r in rows), ""]


def parse_md_table(lines: Sequence[str], caption_start: str) -> list[list[str]]:
    """The body rows of the table right after the caption line starting with ``caption_start`` (tests read the
    markdown back through this)."""
    for i, line in enumerate(lines):
        if line.startswith("*" + caption_start):
            body = []
            for row in lines[i + 4:]:
                if not row.startswith("|"):
                    break
                body.append([c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]])
            return body
    raise KeyError(caption_start)


# ---- 1. causal tracing ------------------------------------------------------------------------------------------
def known_ids(study: Study, cap: int) -> list[str]:
    """Up to ``cap`` utility samples with a subject (tracing corrupts it), chosen deterministically: round-robin
    over the relations in the order they first appear in the file, each relation's facts in file order."""
    if "utility" not in study.manifest.samples:
        return []
    by_relation: dict[str, list[str]] = {}
    for s in study.samples("utility"):
        if s.subject:
            by_relation.setdefault(s.relation or "", []).append(s.id)
    out: list[str] = []
    queues = [list(v) for v in by_relation.values()]
    while len(out) < cap and any(queues):
        for q in queues:
            if q and len(out) < cap:
                out.append(q.pop(0))
    return out


def first_subsequent(a: AIEResult) -> dict[str, tuple[list[float | None], int]]:
    """ROME's "first subsequent token" role (the token right after the subject, when it is not the last token),
    averaged over the traces the AIEResult keeps: {kind: (AIE per layer, samples with the role)}. The library's
    "further tokens" role includes this position."""
    out: dict[str, tuple[list[float | None], int]] = {}
    for kind in a.aie:
        rows = [t.indirect_effect(kind)[:, t.subject_range[1]] for t in a.traces.values()
                if t.subject_range[1] < len(t.tokens) - 1]
        out[kind] = ((np.mean(np.stack(rows), axis=0).tolist(), len(rows)) if rows
                     else ([None] * len(a.layers), 0))
    return out


def peak(row: Sequence[float | None]) -> tuple[float | None, int | None]:
    """(max, argmax) of a per-layer AIE row (None entries skipped; (None, None) when every entry is None)."""
    arr = np.array([np.nan if v is None else v for v in row], dtype=float)
    if not np.isfinite(arr).any():
        return None, None
    j = int(np.nanargmax(arr))
    return float(arr[j]), j


def peak_rows(a: AIEResult) -> list[dict[str, Any]]:
    """One row per (kind, role): the peak AIE, its layer and its depth fraction layer / (n_layers - 1), with
    ROME's figure where the issue quotes one."""
    n_layers = len(a.layers)
    extra = first_subsequent(a)
    rows = []
    for kind, grid in a.aie.items():
        roles = list(zip(a.roles, grid, strict=True))
        roles.insert(a.roles.index("further tokens"), (FIRST_SUBSEQUENT, extra[kind][0]))
        for role, row in roles:
            value, layer = peak(row)
            n = extra[kind][1] if role == FIRST_SUBSEQUENT else a.counts[role]
            rows.append({"kind": kind, "role": role, "n": n, "peak_aie": value, "peak_layer": layer,
                         "depth": None if layer is None else layer / max(1, n_layers - 1),
                         "derived": role == FIRST_SUBSEQUENT, "rome": ROME_GPT2XL.get((kind, role))})
    return rows


def trace_options_note(opts: dict[str, Any], n_layers: int) -> str:
    window = opts.get("window")
    same = opts.get("noise_scale") == 3.0 and window == 10 and opts.get("corruption") == "noise"
    return (f"{opts.get('corruption')} corruption, noise {opts.get('noise_scale')} x the std of the study's "
            f"subject-token embeddings, {opts.get('n_samples')} noise samples, window {window} of {n_layers} layers, "
            f"metric {opts.get('metric')}; ROME's reference: noise 3 x the embedding std over subject tokens, "
            f"window 10: " + ("the same" if same else "ours differs (window = min(10, n_layers // 2))"))


def section_trace(study: Study, cfg: ReportConfig, bar: ProgressBar) -> SectionOut:
    from analysis.tracing.options import TraceOptions
    from analysis.tracing.runner import trace_dataset

    opts = TraceOptions() if cfg.noise_samples is None else TraceOptions(n_samples=cfg.noise_samples)
    splits = {"utility": known_ids(study, cfg.facts_cap),
              "forget": [s.id for s in study.forget][: (QUICK_FACTS if cfg.quick else cfg.max_forget)]}
    splits = {k: v for k, v in splits.items() if v}
    out = SectionOut({"splits": {}})
    n_layers = study.load("original").n_layers
    for i, (split, ids) in enumerate(splits.items()):
        a = trace_dataset(study, "original", opts, split=split, sample_ids=ids, progress=bar.part(i, len(splits)))
        rows = peak_rows(a)
        out.data["splits"][split] = {
            "sample_ids": ids, "n_traced": a.n_samples, "skipped": a.skipped, "clean": a.clean,
            "corrupted": a.corrupted, "options": a.options, "counts": a.counts, "layers": a.layers,
            "aie": a.aie, "peaks": rows}
        what = ("the model's own facts (utility split" + (", top-1 right" if study.manifest.extra.get("real_study")
                                                          else "") + ")") if split == "utility" else \
            "the fictitious forget facts"
        caption = (f"Causal tracing, original, {what}: peak average indirect effect (answer probability) per kind "
                   f"and token role, n = {a.n_samples} facts traced ({len(a.skipped)} skipped), clean p {a.clean:.3f}, "
                   f"corrupted p {a.corrupted:.3f}; {trace_options_note(a.options, n_layers)}. Depth = layer / "
                   f"{n_layers - 1}. '{FIRST_SUBSEQUENT}' is derived from the stored traces (the library's "
                   "'further tokens' includes it).")
        out.md += md_table(caption, ["kind", "token role", "n", "peak AIE", "layer", "depth", "ROME GPT-2 XL"],
                           [[r["kind"], r["role"], str(r["n"]), pct(r["peak_aie"]), fmt(r["peak_layer"], "d"),
                             fmt(r["depth"]), r["rome"] or ""] for r in rows])
    if not splits:
        out.data["note"] = "the study has neither utility facts with a subject nor forget samples"
    return out


# ---- 2. CUD -----------------------------------------------------------------------------------------------------
def spearman_ci(x: np.ndarray, y: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = 0,
                level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of Spearman's rho over paired samples (resampled together, seeded); the
    resamples whose rho is undefined (a constant side) are left out; None when fewer than half are defined."""
    from scipy.stats import rankdata

    ok = np.isfinite(x) & np.isfinite(y)
    x, y = np.asarray(x, float)[ok], np.asarray(y, float)[ok]
    if len(x) < 3:
        return None
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_resamples, len(x)))
    rx, ry = rankdata(x[idx], axis=1), rankdata(y[idx], axis=1)
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    den = np.sqrt((rx ** 2).sum(1) * (ry ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, (rx * ry).sum(1) / den, np.nan)
    rho = rho[np.isfinite(rho)]
    if len(rho) < n_resamples / 2:
        return None
    tail = 100 * (1 - level) / 2
    return float(np.percentile(rho, tail)), float(np.percentile(rho, 100 - tail))


def cud_predictors(study: Study, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """The baselines exactly as ``score_study`` builds them (higher = harder): the original's answer log-prob
    (lower loss = harder) and the fact's training exposures."""
    from analysis.scoring import score_answers

    forget = {s.id: s for s in study.forget}
    ans = score_answers(study.load("original"), [forget[i].prompt for i in ids], [forget[i].answer for i in ids])
    return {"original_loss": ans.logprob.astype(float),
            "exposures": np.array([float(forget[i].metadata.get("exposures", np.nan)) for i in ids])}


def interval_row(x: np.ndarray, observed: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, Any]:
    """AUROC of hard (+1) over easy (-1) samples with its bootstrap interval (``analysis.validation.auroc``) and
    Spearman's rho against the observed difficulty with its interval."""
    from analysis.circuits.cud import spearman
    from analysis.validation.auroc import auroc_ci

    ok = np.isfinite(x)
    a = auroc_ci(x[ok & (labels == 1)].tolist(), x[ok & (labels == -1)].tolist(), n_resamples=N_RESAMPLES, seed=seed)
    return {"auroc": a.auroc, "auroc_ci": None if a.ci_low is None else [a.ci_low, a.ci_high],
            "spearman": spearman(x[ok], observed[ok]), "spearman_ci": spearman_ci(x, observed, seed=seed)}


def cud_cell(got: dict[str, Any], intervals: dict[str, Any] | None, name: str, key: str) -> str:
    """One predictor's rho or AUROC from the library's report, with this report's interval when given."""
    return with_ci(got[name][key], None if intervals is None else intervals[name][f"{key}_ci"])


def section_cud(study: Study, cfg: ReportConfig, bar: ProgressBar) -> SectionOut:
    from analysis.circuits.graph import Graph
    from analysis.circuits.options import CUDOptions
    from analysis.circuits.runner import score_study

    out = SectionOut({"settings": {}})
    n_layers = Graph.of(study.load("original").model).n_layers
    rows, sig_rows = [], []
    predictors: dict[str, np.ndarray] | None = None
    for i, setting in enumerate(cfg.cud_settings):
        rep = score_study(study, CUDOptions(setting=setting), progress=bar.part(i, len(cfg.cud_settings)))
        if predictors is None:
            predictors = cud_predictors(study, rep.ids)
        observed, labels = np.asarray(rep.observed, float), np.asarray(rep.labels, int)
        primary = rep.validation["labels"]
        intervals = {"cud": interval_row(np.asarray(rep.cud, float), observed, labels, cfg.seed),
                     **{k: interval_row(v, observed, labels, cfg.seed) for k, v in predictors.items()}}
        report = rep.to_dict()
        report["anchors"] = {k: len(v) for k, v in report["anchors"].items()}  # one value per edge: only the size
        out.data["settings"][setting] = {"report": report, "primary_labels": primary, "intervals": intervals}
        for kind, comp in rep.label_comparison.items():
            if "error" in comp:
                rows.append([setting, kind, "–", comp["error"], *["–"] * 6])
                continue
            got = {"cud": comp["cud"], **comp["baselines"]}
            cis = intervals if kind == primary else None
            best = max(got, key=lambda n, got=got: -1.0 if got[n]["auroc"] is None else got[n]["auroc"])
            rows.append([setting, kind + (" (this setting's labels)" if kind == primary else ""),
                         f"{comp['n_hard']} / {comp['n_easy']}",
                         *(cud_cell(got, cis, name, key) for name in ("cud", "original_loss", "exposures")
                           for key in ("spearman", "auroc")), best])
        for group in ("easy", "hard", "all"):
            s = rep.signature.get(group, {})
            layer = s.get("mean_edge_layer")
            sig_rows.append([setting, group, str(s.get("n", 0)), fmt(layer), fmt(None if layer is None else
                                                                                  layer / n_layers),
                             fmt(s.get("mean_path_length")), fmt(s.get("longest_path"), ".1f"),
                             fmt(s.get("last_third_share"))])
    n = len(study.forget)
    out.md += md_table(
        f"CUD and its baselines on the {n} forget facts (higher = predicted harder; CUD out of fold, "
        f"{CUDOptions().folds} folds): Spearman rho against the observed difficulty and AUROC of hard over easy, "
        f"per setting and label kind; 95% bootstrap intervals ({N_RESAMPLES} resamples, added by this report: the "
        "library gives none) on each setting's own labels.",
        ["setting", "labels", "n hard / easy", "CUD rho", "CUD AUROC", "answer-loss rho", "answer-loss AUROC",
         "exposures rho", "exposures AUROC", "best AUROC"], rows)
    out.md += md_table(
        f"Easy vs hard circuit signature (top-{CUDOptions().top_n} greedy circuits of the original, "
        f"{n_layers} layers): mean edge layer (and as a fraction of depth, layer / {n_layers}), mean and longest "
        "input-to-logits path length in edges, share of attribution in the last third of the layers.",
        ["setting", "group", "n", "mean edge layer", "depth", "mean path length", "longest path",
         "last-third share"], sig_rows)
    return out


# ---- 3. keyword-emphasis recovery and the contribution shift ------------------------------------------------------
def unlearned_methods(study: Study) -> list[str]:
    return [n for n in study.model_names if study.entry(n).role == "unlearned"]


def section_recovery(study: Study, cfg: ReportConfig, bar: ProgressBar) -> SectionOut:  # noqa: ARG001
    from analysis.attribution import compare_models, recover
    from analysis.attribution.options import RecoveryOptions

    methods = unlearned_methods(study)
    retrain = study.manifest.retrain
    shifted = [*methods, *([retrain] if retrain else [])]
    n_parts = len(methods) + len(shifted)
    out = SectionOut({"recovery": {}, "shift": {}})
    rec_rows, best_rows, shift_rows = [], [], []
    for i, m in enumerate(methods):
        rep = recover(study, m, RecoveryOptions(), progress=bar.part(i, n_parts, f"recover {m}: "))
        out.data["recovery"][m] = rep.to_dict() | {"table": rep.table()}
        for r in rep.table():
            rec_rows.append([m, r["strategy"], r["recovered"], fmt(r["recovery_rate"]),
                             fmt(r["retrain_recovery_rate"]), fmt(r["net_recovery_rate"], "+.2f"),
                             fmt(r["prob_gain"], "+.3f"), fmt(r["retrain_prob_gain"], "+.3f")])
        best_rows.append([m, f"{rep.n_eligible} / {rep.n_forget}", rep.best_strategy or "–",
                          fmt(rep.best_net, "+.2f")])
    for j, m in enumerate(shifted):
        c = compare_models(study, m, progress=bar.part(len(methods) + j, n_parts, f"attribute {m}: "))
        d = c.to_dict()
        d.pop("samples")
        out.data["shift"][m] = d | {"n_samples": len(c.samples)}
        fg, rt = c.summary.get("forget", {}), c.summary.get("retain", {})
        shift_rows.append([m + (" (retrain control)" if m == retrain else ""), fmt(fg.get("keyword"), "+.3f"),
                           fmt(fg.get("non_keyword"), "+.3f"), fmt(rt.get("all"), "+.3f"),
                           fmt(c.disrupted_focus, "+.3f"), fmt(c.indiscriminate_penalisation, "+.3f"),
                           fmt(c.retain_abs_change, ".3f"), fmt(c.keyword_overlap.get("forget")),
                           fmt(c.logprob_change.get("forget"), "+.2f"), fmt(c.logprob_change.get("retain"), "+.2f")])
    opts = RecoveryOptions().validated()
    out.md += md_table(
        "Keyword-emphasis recovery per method and strategy (keywords: the original's KeyTokens; eligible: forget "
        "facts the original answers top-1): recovered / eligible facts the model misses without emphasis, the "
        "rate beside the retrain control's, net = rate minus the retrain's, mean change of the answer "
        f"probability (strategies: {', '.join(opts.strategies or ())}).",
        ["method", "strategy", "recovered", "rate", "retrain rate", "net", "p gain", "retrain p gain"], rec_rows)
    out.md += md_table("Best net recovery per method (eligible / forget facts, the strategy with the largest net "
                       "rate).", ["method", "eligible", "best strategy", "best net"], best_rows)
    out.md += md_table(
        "Contribution shift, original -> model (LOO prompt-token contributions, groups from the original's "
        "keywords): mean change of the forget keywords', forget non-keywords' and retain tokens' contributions; "
        "disrupted focus = the forget keywords' drop, indiscriminate penalisation = the retain tokens' drop; "
        "keyword overlap (Jaccard) on forget; mean change of the answer log-prob.",
        ["model", "forget keyword", "forget non-keyword", "retain all", "disrupted focus",
         "indiscriminate penalisation", "retain mean abs", "keyword overlap", "LP forget", "LP retain"], shift_rows)
    return out


# ---- 4. the meta-evaluation ---------------------------------------------------------------------------------------
def ensure_sae(study: Study, cfg: ReportConfig, progress: Callable[[float, str], None] | None) -> dict[str, Any]:
    """With an SAE cap (``--sae-steps``, or ``--quick``): when the study has no SAE at the default layer and k,
    train one with that many steps (the SAE signals then use it: ``load_sae`` takes the latest one there when
    the default-options SAE is missing). Without a cap nothing is done here (the signals train the default)."""
    from analysis.diagnosis.signals import cached_sae
    from analysis.sae.options import SAEOptions
    from analysis.sae.train import train_sae

    cached = cached_sae(study, SAEOptions())
    if cached is not None:
        return {"sae": str(cached.path), "options": cached.options, "trained_here": False}
    if cfg.sae_cap is None:
        return {"sae": None, "note": "none cached: the SAE signals train the library's default SAE"}
    trained = train_sae(study, replace(SAEOptions(), steps=cfg.sae_cap), progress=progress)
    return {"sae": str(trained.path), "options": trained.options, "trained_here": True,
            "note": f"trained with {cfg.sae_cap} steps (capped; the library's default is {SAEOptions().steps})"}


def needs_sae(study: Study, signals: Sequence[str], models: Sequence[str]) -> bool:
    """Whether an SAE signal among ``signals`` still has a model of ``models`` to read (nothing stored)."""
    from analysis.validation.runner import stored_reading

    return any(stored_reading(study, s, m) is None for s in signals if s.startswith("sae_") for m in models)


def organism_validation(path: str | None, signals: Sequence[str], seed: int) -> tuple[dict[str, dict[str, str]],
                                                                                       str]:
    """The organism's AUROC per signal: {signal: {column: "0.87 [0.60, 1.00]"}} and where it came from. From the
    stored readings of ``path`` (a study that went through ``erasure validate``; nothing is computed), else the
    table of benchmarks/VALIDATION.md."""
    if path:
        from analysis.study import Study
        from analysis.validation.options import ValidationOptions
        from analysis.validation.runner import assemble, stored_reading, validation_members

        org = Study.open(path)
        members = validation_members(org)
        have = [s for s in signals if all(stored_reading(org, s, m.name) is not None for m in members)]
        readings = {s: {m.name: stored_reading(org, s, m.name) for m in members} for s in have}
        res = assemble(org, members, have, readings, {}, ValidationOptions(seed=seed), [])  # type: ignore[arg-type]
        col = f"organism {path}"
        return ({r.signal: {col: r.interval()} for r in res.signals},
                f"the organism's stored readings in {path} (signals not read there are left blank)")
    return parse_validation_md(VALIDATION_MD), "benchmarks/VALIDATION.md, per demo seed"


def parse_validation_md(path: Path) -> dict[str, dict[str, str]]:
    """{signal: {"organism seed ...": "AUROC [lo, hi]"}} from the "AUROC per signal and seed" table."""
    if not path.is_file():
        return {}
    lines = path.read_text().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("| signal |"))
    except StopIteration:
        return {}
    heads = [h.strip() for h in lines[start].strip().strip("|").split("|")][1:]
    out: dict[str, dict[str, str]] = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        out[cells[0]] = {f"organism {h}": c.replace("✓", "").replace("✗", "").strip()
                         for h, c in zip(heads, cells[1:], strict=False)}
    return out


def section_validation(study: Study, cfg: ReportConfig, bar: ProgressBar) -> SectionOut:
    from analysis.validation.options import ValidationOptions
    from analysis.validation.runner import (
        check_members,
        load_signals,
        resolve_signals,
        validate,
        validation_members,
    )

    opts = ValidationOptions(signals=cfg.signals, robustness=cfg.robustness, seed=cfg.seed)
    load_signals()
    signals = resolve_signals(opts.validated())
    members = validation_members(study)
    check_members(members)  # no zoo: say so before any SAE is trained
    models = [m.name for m in members]
    sae_signal = any(s.startswith("sae_") for s in signals)  # the robustness variants are read after they are built
    todo = needs_sae(study, signals, models) or (cfg.robustness and sae_signal)
    sae = ensure_sae(study, cfg, span(bar, 0.0, 0.2, "SAE: ")) if todo else {}
    res = validate(study, opts, progress=span(bar, 0.2 if sae else 0.0, 1.0))
    organism, source = organism_validation(cfg.organism, signals, cfg.seed)
    columns = list(dict.fromkeys(c for s in res.signals for c in organism.get(s.signal, {})))
    rows = []
    for r in res.signals:
        rows.append([r.signal, r.interval(), r.separation, f"{r.n_present} / {r.n_absent}",
                     *(organism.get(r.signal, {}).get(c, "–") for c in columns), r.note])
    present, absent = res.by_status("present"), res.by_status("absent")
    out = SectionOut({"result": res.to_dict(), "statement": res.statement(), "placement": res.placement(),
                      "organism": organism, "organism_source": source, "uds": UDS_NOTE, "sae": sae,
                      "n_present": len(present), "n_absent": len(absent)})
    out.md += md_table(
        f"The meta-evaluation on this study's zoo: AUROC of knowledge-present (P, n = {len(present)}: "
        f"{', '.join(m.name for m in present)}) over knowledge-absent (N, n = {len(absent)}: "
        f"{', '.join(m.name for m in absent)}) members with its 95% bootstrap interval ({opts.n_resamples} "
        f"resamples, P and N resampled separately; with so few members the intervals are wide), beside the "
        f"organism's ({source}). {UDS_NOTE}.",
        ["signal", "AUROC [95% CI]", "separation", "n P / n N", *columns, "note"], rows)
    members = res.members
    out.md += md_table(
        "Each member's score per signal (higher = knowledge present; unknown = the unlearning methods).",
        ["member", "status", *[s.signal for s in res.signals]],
        [[m.name, m.status, *(fmt(m.scores.get(s.signal)) for s in res.signals)] for m in members])
    return out


# ---- 5. the verdict -------------------------------------------------------------------------------------------
def zoo_why(study: Study, name: str, reading_details: dict[str, Any]) -> str:
    """What the zoo record and the rule signal's reading say about a member (for a failed check)."""
    from analysis.zoo import zoo_members

    m = zoo_members(study).get(name)
    checks = {} if m is None else m.checks
    keep = ("forget_acc", "retain_acc", "probe_layer", "probe_acc", "frozen_below", "source_forget_acc")
    parts = [f"{k} {fmt(checks[k]) if isinstance(checks[k], float) else checks[k]}" for k in keep if k in checks]
    parts += [f"{k} {reading_details[k]}" for k in ("verdict", "probe_gap_layer", "sae_layer")
              if reading_details.get(k) is not None]
    return "; ".join(parts)


def section_verdict(study: Study, cfg: ReportConfig, bar: ProgressBar) -> SectionOut:
    from analysis.signals import SIGNALS
    from analysis.validation.runner import load_signals, stored_reading, validation_members
    from analysis.verdict.judge import judge
    from analysis.verdict.options import EXPECTED
    from analysis.verdict.rule import load_rule
    from benchmarks.verdict_fit import tally

    rule = load_rule()
    n_layers = study.load("original").n_layers
    load_signals()
    members = validation_members(study)
    names = [m.name for m in members]
    sae = ensure_sae(study, cfg, span(bar, 0.0, 0.25, "SAE: ")) if needs_sae(study, [rule.signal], names) else {}
    prepare = getattr(SIGNALS.get(rule.signal), "prepare", None)
    todo = [n for n in names if stored_reading(study, rule.signal, n) is None]
    if prepare is not None and todo:  # as the validation runner does: one batched pass over every model
        bar(0.25, f"{rule.signal}: preparing {len(todo)} model(s) in one pass")
        try:
            prepare(study, todo)
        except WorkbenchError:
            pass  # each model's reading then says why
    verdicts = {}
    for i, n in enumerate(names):
        span(bar, 0.5, 1.0)(i / len(names), f"judging {n}")
        verdicts[n] = judge(study, n, rule)
    bar(1.0, "verdicts done")
    in_sample = any(str(d.get("study", "")).endswith(f"@{study.root}") for d in rule.fitted_on)
    fitted = ", ".join(f"{d.get('study')} (seed {d.get('seed')})" for d in rule.fitted_on)
    method_rows, member_rows, failures = [], [], []
    for m in members:
        v = verdicts[m.name]
        n_sup = sum(c == "suppressed" for c in v.per_sample.values())
        if m.status == "unknown":
            method_rows.append([m.name, v.verdict, with_ci(v.score, v.ci), f"{v.threshold:.3f}",
                                f"{n_sup} / {len(v.per_sample)}", v.reason])
            continue
        expected = EXPECTED[m.status]
        right = v.verdict == expected
        reading = stored_reading(study, rule.signal, m.name)
        why = "" if right else f"{v.reason}; {zoo_why(study, m.name, reading.details if reading else {})}"
        if not right:
            failures.append({"member": m.name, "status": m.status, "verdict": v.verdict, "expected": expected,
                             "why": why})
        member_rows.append([m.name, m.status, m.recipe.get("kind", "") if isinstance(m.recipe, dict) else "",
                            with_ci(v.score, v.ci), v.verdict, expected,
                            "yes" if right else ("inconclusive" if v.verdict == "inconclusive" else "NO"), why])
    rows = [(m.name, m.status, verdicts[m.name]) for m in members]
    t = tally(rows)  # type: ignore[arg-type]
    out = SectionOut({"rule": rule.to_dict(), "in_sample": in_sample, "sae": sae,
                      "verdicts": {n: v.to_dict() for n, v in verdicts.items()},
                      "methods": [r[0] for r in method_rows], "check": t, "failures": failures})
    out.md += md_table(
        f"The verdict of each unlearning method (rule v{rule.version}: {rule.signal} against {rule.threshold:.3f}, "
        f"fitted on {fitted}; this study: seed {study.manifest.seed}, {n_layers} layers): the model score (the mean "
        "of the signal's per-sample values, with its 95% bootstrap interval over samples; the meta-evaluation's "
        "table shows the signal's own per-model value); suppressed when the interval lies above the boundary, "
        "erased below, inconclusive when it straddles it.",
        ["method", "verdict", "score [95% CI]", "boundary", "samples suppressed", "why"], method_rows)
    out.md += md_table(
        f"The {'in-sample' if in_sample else 'held-out'}-zoo verdict check: the rule (never fitted on this study"
        + (": except that it was" if in_sample else "") + f") on each zoo member; {t['right']} of {t['members']} "
        f"right, {t['inconclusive']} inconclusive, {t['wrong']} wrong.",
        ["member", "status", "recipe", "score [95% CI]", "verdict", "expected", "right?", "why (when not right)"],
        member_rows)
    return out


# ---- the command ------------------------------------------------------------------------------------------------
SECTION_FNS: dict[str, Callable[[Study, ReportConfig, ProgressBar], SectionOut]] = {
    "trace": section_trace, "cud": section_cud, "recovery": section_recovery, "validation": section_validation,
    "verdict": section_verdict,
}


def model_facts(study: Study) -> dict[str, Any]:
    cfg = study.load("original").model.cfg
    return {"n_layers": int(cfg.n_layers), "d_model": int(cfg.d_model), "n_heads": int(cfg.n_heads),
            "n_key_value_heads": getattr(cfg, "n_key_value_heads", None), "d_vocab": int(cfg.d_vocab),
            "n_params": int(sum(p.numel() for p in study.load("original").model.parameters()))}


def run_report(study_path: str, cfg: ReportConfig,
               after_section: Callable[[dict[str, Any], list[str]], None] | None = None
               ) -> tuple[dict[str, Any], list[str]]:
    """Every section of ``cfg`` on the study: (JSON, markdown lines). A section that fails with a WorkbenchError
    (e.g. a study without a zoo) records the error and the others still run. ``after_section(data, md)`` is
    called after each section with what is there so far (main writes the outputs, so a long run that is
    stopped keeps the sections it finished)."""
    from analysis.study import Study

    study = Study.open(study_path)
    data: dict[str, Any] = {"study": str(study.root), "name": study.manifest.name, "model": model_facts(study),
                            "config": asdict(cfg), "sections": {}}
    md: list[str] = []
    for name in cfg.sections:
        t0 = time.perf_counter()
        try:
            with progress_bar(f"{name}") as bar:
                got = SECTION_FNS[name](study, cfg, bar)
        except WorkbenchError as e:
            got = SectionOut({"error": str(e)}, [f"*{SECTION_TITLES[name]}: not run ({e}).*", ""])
        seconds = time.perf_counter() - t0
        data["sections"][name] = {**got.data, "seconds": seconds}
        md += [f"<!-- section {name}: {SECTION_TITLES[name]} ({seconds:.0f} s) -->", *got.md]
        print(f"[{name}] {seconds:.1f} s" + (f": {got.data['error']}" if "error" in got.data else ""),
              file=sys.stderr, flush=True)
        if after_section is not None:
            after_section(data, md)
    md += md_table("Wall seconds per section of this report (this machine; stored results are read, not "
                   "recomputed, on a rerun).", ["section", "seconds"],
                   [[n, f"{data['sections'][n]['seconds']:.1f}"] for n in cfg.sections])
    data["total_seconds"] = sum(s["seconds"] for s in data["sections"].values())
    return data, md


def summary(data: dict[str, Any]) -> list[str]:
    lines = [f"{data['name']} at {data['study']} ({data['model']['n_layers']} layers, d_model "
             f"{data['model']['d_model']}): {data['total_seconds']:.1f} s"]
    for name, s in data["sections"].items():
        head = f"  {name:<11}{s['seconds']:>8.1f} s"
        if "error" in s:
            lines.append(f"{head}  not run: {s['error']}")
        elif name == "trace":
            for split, d in s["splits"].items():
                r = next(p for p in d["peaks"] if p["kind"] == "resid" and p["role"] == "last subject token")
                lines.append(f"{head}  {split}: {d['n_traced']} facts, resid AIE peak at the last subject token "
                             f"{pct(r['peak_aie'])} at layer {r['peak_layer']}")
                head = " " * len(head)
        elif name == "cud":
            for setting, d in s["settings"].items():
                v = d["report"]["validation"]
                lines.append(f"{head}  {setting}: CUD AUROC {fmt(v['auroc'])}, answer loss "
                             f"{fmt(v['baselines']['original_loss']['auroc'])} ({v['labels']} labels)")
                head = " " * len(head)
        elif name == "recovery":
            best = {m: r["best_net"] for m, r in s["recovery"].items()}
            lines.append(f"{head}  best net recovery: " + ", ".join(f"{m} {fmt(b, '+.2f')}" for m, b in best.items()))
        elif name == "validation":
            lines.append(f"{head}  {s['n_present']} P / {s['n_absent']} N; " + " ".join(s["statement"][1:2]))
        elif name == "verdict":
            c = s["check"]
            lines.append(f"{head}  zoo check {c['right']}/{c['members']} right, {c['wrong']} wrong; methods: "
                         + ", ".join(f"{m} {s['verdicts'][m]['verdict']}" for m in s["methods"]))
    return lines


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, ReportConfig]:
    from analysis.cli_common import positive_int

    ap = argparse.ArgumentParser(prog="python -m benchmarks.real_model_report", description=__doc__.split("\n\n")[0])
    ap.add_argument("study")
    ap.add_argument("--json", default=None, help="write the report's JSON here")
    ap.add_argument("--md", default=None, help="write the markdown tables here (default: stdout)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    ap.add_argument("--max-known", type=positive_int, default=24, help="utility facts traced (default 24)")
    ap.add_argument("--max-forget", type=positive_int, default=None, help="forget facts traced (default all)")
    ap.add_argument("--noise-samples", type=positive_int, default=None,
                    help="noise samples per trace (default the trace default, 10 as in ROME)")
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK_FACTS} facts per split with {QUICK_NOISE} noise samples; an SAE capped at "
                         f"{QUICK_SAE_STEPS} steps when the study has none (tests)")
    ap.add_argument("--organism", default=None, help="a validated organism study to compare with (its stored "
                                                     "readings; default: benchmarks/VALIDATION.md)")
    ap.add_argument("--signals", default=None, help="validation signals (comma-separated; default: every one)")
    ap.add_argument("--sae-steps", type=positive_int, default=None,
                    help="when the study has no SAE yet, train one with this many steps (SAEOptions.steps; the "
                         "library's default is 1500) for the SAE signals and the verdict. NB: the validation "
                         "readings' store key does not name the SAE, so later runs reuse these readings")
    ap.add_argument("--robustness", action="store_true",
                    help="also build the quantised and fine-tuned variant of every zoo member (UDS-style R / Q / H; "
                         "writes two models per member into the study)")
    ap.add_argument("--cud-settings", default="ours",
                    help="CUD settings, comma-separated: ours (default; its report also scores against the CUD "
                         "reference's final_loss labels) and/or reference (the CUD reference code's setting: IG "
                         "over each node's activations, one IG run per upstream node of the graph, i.e. about "
                         "300 times ours on a 30-layer model with 9 heads)")
    a = ap.parse_args(argv)
    sections = tuple(s.strip() for s in a.sections.split(",") if s.strip())
    bad = [s for s in sections if s not in SECTIONS]
    if bad or not sections:
        ap.error(f"--sections: expected some of {', '.join(SECTIONS)}, got {a.sections!r}")
    settings = tuple(s.strip() for s in a.cud_settings.split(",") if s.strip())
    if not settings or any(s not in ("ours", "reference") for s in settings):
        ap.error(f"--cud-settings: expected ours and/or reference, got {a.cud_settings!r}")
    signals = tuple(s.strip() for s in a.signals.split(",") if s.strip()) if a.signals else None
    return a, ReportConfig(sections=sections, max_known=a.max_known, max_forget=a.max_forget,
                           n_noise=a.noise_samples, quick=a.quick, organism=a.organism,
                           signals=signals, sae_steps=a.sae_steps, robustness=a.robustness, cud_settings=settings)


def write_outputs(a: argparse.Namespace, data: dict[str, Any], md: list[str]) -> None:
    """The JSON and the markdown where --json / --md say (the sections finished so far)."""
    for path, text in ((a.json, lambda: dumps(data, indent=1)), (a.md, lambda: "\n".join(md) + "\n")):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text())


def main(argv: list[str] | None = None) -> int:
    a, cfg = parse_args(argv)
    data, md = run_report(a.study, cfg, after_section=lambda d, m: write_outputs(a, d, m))
    write_outputs(a, data, md)
    if not a.md:
        print("\n".join(md))
    print("\n".join(summary(data)), file=sys.stderr if not a.md else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
