"""Honest figures (issue 19, item 5): every figure builder of analysis/ drawn from small synthetic results and
checked for what a reader needs to trust it:

- one colour language: every colour in a figure is a palette colour (analysis.palette) or a neutral grey, set
  explicitly on every mark (never the template's red / green colorway), no named red/blue or viridis scale;
- every value inside its axis, and no axis that leaves the data in a sliver of it (bars at 0.02 on a 0-1 axis)
  unless the axis title says the range is fixed (``0-1``);
- integer ticks on every layer axis;
- heatmap colour ranges from the data (symmetric around 0 when diverging), the range written in the colorbar;
- values above their nominal range (faithfulness 3.09, retention 2.15) or below it (a negative net recovered
  share) stay on the axis, with a dotted line at the nominal bound;
- the circuit graph: palette edge colours by sign named in a legend, nodes on integer layer rows, short labels.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest

from analysis import palette

PALETTE = {c.upper() for c in (palette.ORANGE, palette.VERMILLION, palette.BLUE, palette.SKY, palette.GREY,
                               palette.BLACK, palette.TEAL, palette.PURPLE)}
OLD_HEX = ("#d62728", "#2ca02c", "#ff9896", "#1f77b4", "#ffbf00", "#EF553B", "#00cc96", "#636efa")
HOOK = "blocks.{layer}.hook_resid_post"
LAYERS = list(range(6))


# ---- synthetic results ---------------------------------------------------------------------------------------

def _trace(scale: float = 1.0, seed: int = 0) -> Any:
    from analysis.tracing.result import TraceResult

    rng = np.random.default_rng(seed)
    tokens = ["<bos>", "The", "Eif", "fel", "Tower", "is", "in"]
    scores = (0.05 + 0.5 * rng.random((len(LAYERS), len(tokens))) * scale).tolist()
    return TraceResult(tokens=tokens, subject_range=(2, 5), layers=LAYERS, clean=0.55 * scale, corrupted=0.05,
                       scores={"resid": scores, "mlp": scores}, options={"metric": "prob"}, model="fp")


def _aie(name: str, shift: float = 0.0) -> Any:
    from analysis.tracing.result import TOKEN_ROLES, AIEResult

    rows = [[0.02 * (i + 1) + 0.01 * layer + shift for layer in LAYERS] for i in range(len(TOKEN_ROLES))]
    rows[1] = [None] * len(LAYERS)  # a role no sample has
    return AIEResult(roles=list(TOKEN_ROLES), layers=LAYERS, aie={"resid": rows, "mlp": rows}, n_samples=3,
                     counts=dict.fromkeys(TOKEN_ROLES, 3), clean=0.5, corrupted=0.05, options={"metric": "prob"},
                     model=name)


def _lens(name: str, level: float) -> Any:
    from analysis.logit_lens.result import build_lens_result

    rng = np.random.default_rng(1)
    prob = level * (0.5 + 0.5 * rng.random((4, len(LAYERS))))
    rank = 1 + 50 * rng.random((4, len(LAYERS)))
    values = {"first_prob": prob, "mean_prob": prob, "first_rank": rank, "mean_rank": rank}
    return build_lens_result(name, "original", ["a", "b", "c", "d"], values, {}, {}, HOOK)


def _patching(depth_level: float) -> Any:
    from analysis.patching.result import build_result

    rng = np.random.default_rng(2)
    drop = 0.1 + rng.random((4, len(LAYERS)))
    ref = 0.5 + rng.random((4, len(LAYERS)))
    ratio = np.clip(depth_level * (0.5 + rng.random((4, len(LAYERS)))), 0, 1)
    ratio[0, 0] = np.nan
    return build_result("npo", "retrain", ["a", "b", "c", "d"], np.zeros(4), drop, ref, {}, {}, HOOK, ratio,
                        depth=ratio[:, 1:].mean(axis=1))


def _relearn(value: float, ci: tuple[float, float]) -> Any:
    from analysis.relearn.result import RelearnResult, VariantResult

    def variant(v: str, x: float, c: tuple[float, float]) -> VariantResult:
        return VariantResult(variant=v, per_sample={"a": x}, value=x, ci=c, pooled=x,
                             accuracy={"original": 0.9, "retrain": 0.0, "model": 0.0}, attacked={}, reference_attacked={},
                             curve=[0.0, 0.01, 0.02, 0.02], reference_curve=[0.0, 0.0, 0.01, 0.01])

    return RelearnResult(model="npo", reference="retrain", options={}, fingerprints={},
                         variants={"forget": variant("forget", value, ci), "retain": variant("retain", 0.02, (0.0, 0.03))})


def _membership(auroc: float) -> Any:
    from analysis.membership.options import SCORES
    from analysis.membership.result import MembershipResult, ScoreSummary

    scores = {k: ScoreSummary(score=k, auroc=auroc, auroc_ci=(auroc - 0.01, auroc + 0.01), percentile={"a": 0.1},
                              forget={"a": 0.1, "b": 0.2}, heldout=[0.3, 0.4, 0.5]) for k in SCORES}
    return MembershipResult(model="npo", fingerprint="fp", options={}, heldout="retain", heldout_ids=["x"],
                            scores=scores)


def _validation() -> Any:
    from analysis.validation.result import MemberRecord, SignalRecord, ValidationResult

    signals = [SignalRecord("lens", "lens", 0.95, 0.9, 1.0, 3, 3, 0.9, 0.8, 0.85),
               SignalRecord("outputs", "outputs", 0.2, 0.05, 0.4, 3, 3, 1.0, 0.98, 0.99),
               SignalRecord("mia", "mia", 0.55, 0.3, 0.8, 3, 3, -0.2, 0.5, None)]
    members = [MemberRecord("p1", "present", {"lens": 0.8, "outputs": 0.1, "mia": 0.5}),
               MemberRecord("p2", "present", {"lens": 0.7, "outputs": 0.0, "mia": 0.6}),
               MemberRecord("n1", "absent", {"lens": 0.1, "outputs": 0.2, "mia": 0.55}),
               MemberRecord("n2", "absent", {"lens": 0.2, "outputs": 0.3, "mia": None}),
               MemberRecord("npo", "unknown", {"lens": 0.6, "outputs": 0.0, "mia": 0.5})]
    return ValidationResult(study="s", signals=signals, members=members)


def _recovery(rate: float) -> Any:
    from analysis.attribution.result import RecoveryReport, StrategyRecovery

    def res(r: float) -> dict[str, StrategyRecovery]:
        return {s: StrategyRecovery(s, r, r / 2, 10, 8, round(8 * r), 0.01, 0.02, r) for s in ("repeat", "prefix")}

    return RecoveryReport(model="rmu", retrain="retrain", strategies=["repeat", "prefix"], options={}, fingerprints={},
                          results=res(rate), retrain_results=res(rate / 2), original_results={}, n_forget=10,
                          n_eligible=10)


def _attribution(scale: float) -> Any:
    from analysis.attribution.result import TokenAttribution

    return TokenAttribution(tokens=["<bos>", "The", "Eiffel", "Tower", "is", "in"], token_ids=[0, 1, 2, 3, 4, 5],
                            contributions=[None, 0.1 * scale, -0.5 * scale, 0.8 * scale, 0.05 * scale, 0.2 * scale],
                            keywords=[3], method="loo", options={}, model="fp")


def _comparison() -> Any:
    from analysis.attribution.result import AttributionComparison

    summary = {"forget": {"keyword": -0.3, "non_keyword": 0.02, "function": 0.01, "other": -0.05},
               "retain": {"keyword": 0.01, "non_keyword": 0.0, "function": 0.02, "other": 0.01}}
    return AttributionComparison(before="original", after="npo", models=["a", "b"], options={}, samples=[],
                                 summary=summary, keyword_overlap={}, logprob_change={}, disrupted_focus=None,
                                 indiscriminate_penalisation=None, retain_abs_change=None)


def _cud_table() -> Any:
    from analysis.circuits.figures import cud_table
    from analysis.circuits.result import CUDReport

    rep = CUDReport(ids=["a", "b", "c", "d", "e"], cud=[0.1, 0.5, 0.3, 0.9, 0.2], observed=[0.2, 0.4, 0.1, 0.8, 0.3],
                    labels=[1, -1, 0, 1, -1], distance="jaccard", validation={}, signature={}, options={})
    return cud_table(rep)


def _circuit(n_layers: int = 4, n_heads: int = 4, top: int = 40) -> tuple[list[dict[str, Any]], list[int]]:
    from analysis.circuits.graph import Graph

    g = Graph(n_layers, n_heads, True)
    rng = np.random.default_rng(3)
    scores = rng.normal(size=g.n_edges)
    edges = g.edge_dicts(scores)
    return edges, [int(i) for i in np.argsort(-np.abs(scores))[:top]]


def _ruler() -> go.Figure:
    from analysis.verdict.figures import ruler_figure
    from analysis.verdict.judge import ModelVerdict

    v = ModelVerdict(model="npo", verdict="suppressed", score=0.03, ci=(0.02, 0.04), signal="sig", threshold=0.015,
                     rule_version=2, n_samples=8, reason="r")
    return ruler_figure({"p1": ("present", 0.035), "p2": ("present", 0.04), "n1": ("absent", 0.001),
                         "n2": ("absent", 0.005)}, v)


def _figures() -> dict[str, Callable[[], go.Figure]]:
    from analysis.attribution import figures as attribution
    from analysis.circuits import figures as circuits
    from analysis.diagnosis.figures import reading_map
    from analysis.figures import scoreboard_bars, topk_bars, trajectory_lines
    from analysis.logit_lens.figures import lens_lines
    from analysis.membership import figures as membership
    from analysis.patching import figures as patching
    from analysis.relearn import figures as relearn
    from analysis.sae.figures import probe_layers, restoration_curves
    from analysis.tracing import figures as tracing
    from analysis.tracing.result import trace_difference
    from analysis.validation import figures as validation
    from analysis.verdict.figures import signal_ruler_figure

    board = __import__("pandas").DataFrame(
        [{"model": "original", "forget_acc": 0.02, "paraphrase_acc": 0.015, "retain_acc": 0.018, "utility": 0.01},
         {"model": "npo", "forget_acc": 0.0, "paraphrase_acc": 0.005, "retain_acc": 0.012, "utility": 0.01}])
    figs: dict[str, Callable[[], go.Figure]] = {
        "topk_bars": lambda: topk_bars({"original": [("Paris", 0.02), ("Rome", 0.01)], "npo": [("x", 0.015)]},
                                       roles={"original": "original", "npo": "unlearned"}),
        "scoreboard_bars": lambda: scoreboard_bars(board),
        "trajectory_lines": lambda: trajectory_lines({"npo": [0.02, 0.01, 0.005], "rmu": [0.02, 0.015, 0.01]}),
        "attribution_heatmap": lambda: attribution.attribution_heatmap(
            {"original": _attribution(1.0), "npo": _attribution(0.5)}, keywords_from="original"),
        "contribution_change_bars": lambda: attribution.contribution_change_bars({"npo": _comparison()}),
        "recovery_bars": lambda: attribution.recovery_bars({"rmu": _recovery(0.02)}),
        "circuit_graph": lambda: circuits.circuit_graph(*_circuit(), n_layers=4, n_heads=4, title="c"),
        "cud_scatter": lambda: circuits.cud_scatter(_cud_table(), 0.3),
        "cud_histogram": lambda: circuits.cud_histogram(_cud_table()),
        "signature_bars": lambda: circuits.signature_bars({"easy": {"n": 3, "size": 0.02, "depth": 1.5},
                                                           "hard": {"n": 2, "size": 0.015, "depth": 2.5},
                                                           "all": {"n": 5, "size": 0.018, "depth": 2.0}}),
        "reading_map": lambda: reading_map({"answers": ["present", "gone", "inconclusive", "n/a"],
                                            "trace": ["gone", "gone", "present", "present"]}, ["a", "b", "c", "d"]),
        "lens_lines": lambda: lens_lines({"original": _lens("original", 0.02), "npo": _lens("npo", 0.01)}),
        "score_histograms": lambda: membership.score_histograms(_membership(0.6)),
        "membership_auroc_bars": lambda: membership.auroc_bars({"npo": _membership(0.03)}),
        "patching_curves": lambda: patching.patching_curves(_patching(0.02)),
        "ratio_heatmap": lambda: patching.ratio_heatmap(_patching(0.05)),
        "depth_bars": lambda: patching.depth_bars({"npo": _patching(0.02)}),
        "recovery_curves": lambda: relearn.recovery_curves(_relearn(0.02, (0.0, 0.05))),
        "recovered_share_bars": lambda: relearn.recovered_share_bars({"npo": _relearn(-0.22, (-0.4, -0.05))}),
        "restoration_curves": lambda: restoration_curves({"npo": {"0": 0.0, "2": 0.01, "4": 0.02},
                                                          "retrain": {"0": 0.0, "2": 0.0, "4": 0.005}}),
        "probe_layers": lambda: probe_layers({"npo": {str(x): 0.01 + 0.002 * x for x in LAYERS},
                                              "retrain": {str(x): 0.005 for x in LAYERS}}),
        "trace_heatmaps": lambda: tracing.trace_heatmaps(_trace()),
        "trace_difference_heatmaps": lambda: tracing.trace_heatmaps(
            trace_difference(_trace(0.2, seed=1), _trace()), diverging=True),
        "aie_lines": lambda: tracing.aie_lines({"original": _aie("original"), "npo": _aie("npo", -0.02)}),
        "strip_plot": lambda: validation.strip_plot(_validation(), "lens"),
        "status_legend": validation.status_legend,
        "auroc_figure": lambda: validation.auroc_figure(_validation()),
        "robustness_bars": lambda: validation.robustness_bars(_validation()),
        "signal_ruler_figure": lambda: signal_ruler_figure({"p": ("present", 0.8), "n": ("absent", 0.1)}, "npo",
                                                           0.5, (0.4, 0.6), "sig", 0.45),
        "ruler_figure": _ruler,
    }
    try:  # builders added for issue 19 (the figures of values beyond their nominal range)
        from analysis.circuits.figures import faithfulness_bars
        from analysis.sae.figures import retention_bars
    except ImportError:
        return figs
    figs["faithfulness_bars"] = lambda: faithfulness_bars({"original": 0.96, "npo": 3.09, "rmu": None})
    figs["retention_bars"] = lambda: retention_bars({"npo": 2.15, "rmu": 0.02, "retrain": 0.3})
    return figs


FIGURE_NAMES = list(_figures())
# figures that show layers on an axis, and those whose marks are heatmaps with a colour scale
LAYER_FIGURES = ["circuit_graph", "lens_lines", "patching_curves", "ratio_heatmap", "probe_layers", "trace_heatmaps",
                 "trace_difference_heatmaps", "aie_lines"]
HEATMAP_FIGURES = ["attribution_heatmap", "ratio_heatmap", "trace_heatmaps", "trace_difference_heatmaps"]
DIVERGING_FIGURES = ["attribution_heatmap", "trace_difference_heatmaps"]


@pytest.fixture(scope="module")
def figures() -> dict[str, go.Figure]:
    return {name: build() for name, build in _figures().items()}


# ---- reading a figure ----------------------------------------------------------------------------------------

def _plain(fig: go.Figure) -> dict[str, Any]:
    """The figure as JSON types, without the template (the template is plotly's, not ours)."""
    d = json.loads(fig.to_json())
    d.get("layout", {}).pop("template", None)
    return d


def _colour_values(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(key, value) of every colour setting in a figure's JSON (``*color``, ``colorscale``, ``colorway``)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k.lower().endswith("color") or k in ("colorscale", "colorway"):
                yield k, v
            else:
                yield from _colour_values(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _colour_values(v, key)


def _hex(c: str) -> str | None:
    """'#RRGGBB' of a colour string (hex, rgb/rgba or a few names); None when it cannot be read."""
    c = c.strip()
    names = {"white": "#FFFFFF", "black": "#000000", "grey": "#808080", "gray": "#808080"}
    if c.lower() in names:
        return names[c.lower()]
    if re.fullmatch(r"#[0-9a-fA-F]{3}", c):
        return "#" + "".join(ch * 2 for ch in c[1:]).upper()
    if re.fullmatch(r"#[0-9a-fA-F]{6}([0-9a-fA-F]{2})?", c):
        return c[:7].upper()
    m = re.fullmatch(r"rgba?\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*(,\s*[\d.]+\s*)?\)", c)
    if m:
        return "#" + "".join(f"{int(x):02X}" for x in m.groups()[:3])
    return None


def _allowed(c: str) -> bool:
    if c.lower() in ("transparent", "rgba(0,0,0,0)"):
        return True
    h = _hex(c)
    return h is not None and (h in PALETTE or h[1:3] == h[3:5] == h[5:7])  # a palette colour or a grey


def _flat_colours(v: Any) -> list[str]:
    if isinstance(v, str):
        return [v]
    if isinstance(v, list):
        out: list[str] = []
        for x in v:
            out += _flat_colours(x[1] if isinstance(x, list) and len(x) == 2 and isinstance(x[0], int | float)
                                 else x)
        return out
    return []


def _axis_of(trace: Any, letter: str) -> str:
    ref = getattr(trace, f"{letter}axis", None) or letter
    return f"{letter}axis{ref[1:]}"


def _layout_axis(fig: go.Figure, name: str) -> Any:
    return fig.layout[name] if name in fig.layout else getattr(fig.layout, name[:5])


def _title(ax: Any) -> str:
    return (ax.title.text or "") if ax.title else ""


def _values(trace: Any, letter: str) -> list[float]:
    """Finite numeric values a trace draws along one axis (error bar ends included)."""
    raw = getattr(trace, letter, None)
    if raw is None:
        return []
    vals = [float(v) for v in np.asarray(raw, dtype=object).ravel()
            if isinstance(v, int | float | np.floating | np.integer) and math.isfinite(float(v))]
    err = getattr(trace, f"error_{letter}", None)
    if err is not None and err.array is not None and len(vals) == len(err.array):
        minus = err.arrayminus if err.arrayminus is not None else err.array
        vals += [v + float(e or 0) for v, e in zip(vals, err.array, strict=True)]
        vals += [v - float(e or 0) for v, e in zip(vals[: len(minus)], minus, strict=True)]
    return vals


def _value_letter(trace: Any) -> str:
    return "x" if getattr(trace, "orientation", None) == "h" else "y"


def _axes_with_range(fig: go.Figure) -> dict[str, tuple[float, float]]:
    out = {}
    for name in [k for k in fig.layout if re.fullmatch(r"[xy]axis\d*", k)]:
        ax = fig.layout[name]
        if ax.range is not None and ax.type != "log" and ax.type != "category":
            out[name] = (float(ax.range[0]), float(ax.range[1]))
    return out


# ---- every figure --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FIGURE_NAMES)
def test_palette_colours_only(figures: dict[str, go.Figure], name: str) -> None:
    """Every colour is a palette colour or a grey; no named scale; no old red / green code or word anywhere."""
    fig = figures[name]
    plain = _plain(fig)
    text = json.dumps(plain)
    found = [old for old in OLD_HEX if old.lower() in text.lower()] + re.findall(r"\b(?:red|green)\b", text, re.I)
    assert not found, (name, found)
    bad = []
    for key, v in _colour_values(plain):
        if key == "colorscale" and isinstance(v, str):
            bad.append(v)  # a named scale (RdBu, Viridis, Purples): not the palette
            continue
        bad += [c for c in _flat_colours(v) if not _allowed(c)]
    assert not bad, (name, bad)


@pytest.mark.parametrize("name", FIGURE_NAMES)
def test_every_mark_has_an_explicit_colour(figures: dict[str, go.Figure], name: str) -> None:
    """A mark without a colour takes the template's colorway (plotly's red and green): every bar, line, marker and
    colour scale sets its own."""
    fig = figures[name]

    def uncoloured(t: Any) -> bool:
        if t.visible is False or t.type not in ("bar", "histogram", "scatter"):
            return False  # heatmaps: their scale is checked by test_palette_colours_only
        if t.type in ("bar", "histogram"):
            return t.marker.color is None
        mode = t.mode or "lines+markers"
        return ("lines" in mode and t.line.color is None) or \
            ("markers" in mode and t.marker.color is None and t.line.color is None)

    missing = [t.name for t in fig.data if uncoloured(t)]
    assert not missing, (name, missing)


@pytest.mark.parametrize("name", FIGURE_NAMES)
def test_values_inside_axis_and_axis_fits_data(figures: dict[str, go.Figure], name: str) -> None:
    """Every value (and interval end) lies inside an axis that sets a range; and the data spans at least half
    of that range (bars at 0.02 on a 0-1 axis fail), unless the axis title says the range is fixed (0-1)."""
    fig = figures[name]
    ranges = _axes_with_range(fig)
    extent: dict[tuple[float, float], list[float]] = {}
    titled_fixed: set[tuple[float, float]] = set()
    for t in fig.data:
        if t.type not in ("bar", "scatter", "histogram"):
            continue
        for letter in ("x", "y"):
            axis = _axis_of(t, letter)
            if axis not in ranges:
                continue
            lo, hi = ranges[axis]
            vals = _values(t, letter)
            out = [v for v in vals if not lo - 1e-9 <= v <= hi + 1e-9]
            assert not out, (name, axis, (lo, hi), out)
            if vals and (t.type == "bar" and letter == _value_letter(t)):
                vals = [*vals, 0.0]  # a bar is drawn from 0
            extent.setdefault((lo, hi), []).extend(vals)
            if "0-1" in _title(_layout_axis(fig, axis)):
                titled_fixed.add((lo, hi))
    for s in fig.layout.shapes:  # reference lines drawn on an axis (the original's accuracy ...) are data too
        for letter in ("x", "y"):
            axis = f"{letter}axis{(s[f'{letter}ref'] or letter)[1:]}"
            if axis in ranges and s[f"{letter}0"] is not None and s[f"{letter}0"] == s[f"{letter}1"]:
                extent.setdefault(ranges[axis], []).append(float(s[f"{letter}0"]))
    for (lo, hi), vals in extent.items():
        if not vals or (lo, hi) in titled_fixed:
            continue
        share = (max(vals) - min(vals)) / (hi - lo)
        assert share >= 0.5, (name, (lo, hi), (min(vals), max(vals)), f"data spans {share:.0%} of the axis")


@pytest.mark.parametrize("name", LAYER_FIGURES)
def test_layer_axes_have_integer_ticks(figures: dict[str, go.Figure], name: str) -> None:
    """Every axis that shows layers (its title says "layer") ticks at whole layers: linear with a whole dtick,
    or an array of whole tick values."""
    fig = figures[name]

    def whole(ax: Any) -> bool:
        if ax.tickvals is not None:
            return all(float(v).is_integer() for v in ax.tickvals)
        # a dtick without tick values is linear (plotly's default tickmode once dtick is set)
        return ax.tickmode in (None, "linear") and ax.dtick is not None and float(ax.dtick).is_integer() \
            and float(ax.dtick) >= 1 and float(ax.tick0 or 0).is_integer()

    layer_axes = [k for k in fig.layout if re.fullmatch(r"[xy]axis\d*", k) and "layer" in _title(fig.layout[k]).lower()]
    bad = [(k, fig.layout[k].tickmode, fig.layout[k].dtick) for k in layer_axes if not whole(fig.layout[k])]
    assert layer_axes and not bad, (name, layer_axes, bad)


@pytest.mark.parametrize("name", HEATMAP_FIGURES)
def test_heatmap_colour_range_from_data(figures: dict[str, go.Figure], name: str) -> None:
    """zmin / zmax are set from the data: the data covers at least half of the colour range (never an all-white
    map); a diverging map (a difference, a contribution) uses the palette's blue / white / orange scale symmetric
    around 0, a sequential one a single hue from white; the colorbar title writes the range."""
    fig = figures[name]
    for t in [t for t in fig.data if t.type == "heatmap"]:
        if t.coloraxis is not None:
            ca = fig.layout[t.coloraxis]
            lo, hi, scale, bar = ca.cmin, ca.cmax, ca.colorscale, ca.colorbar
        else:
            lo, hi, scale, bar = t.zmin, t.zmax, t.colorscale, t.colorbar
        z = [float(v) for v in np.asarray(t.z, dtype=object).ravel() if v is not None and math.isfinite(float(v))]
        assert lo is not None and hi is not None and (max(z) - min(z)) >= 0.5 * (hi - lo), \
            (name, (lo, hi), (min(z), max(z)))
        stops = [(float(p), _hex(c)) for p, c in scale] if not isinstance(scale, str) else [(0.0, scale)]
        if name in DIVERGING_FIGURES:
            ok = stops == [(0.0, palette.BLUE), (0.5, "#FFFFFF"), (1.0, palette.ORANGE)] and lo == pytest.approx(-hi)
        else:
            ok = len(stops) == 2 and stops[0] == (0.0, "#FFFFFF")
        assert ok, (name, stops, lo, hi)
        text = bar.title.text or ""
        assert f"{hi:.3g}" in text and f"{lo:.3g}" in text, (name, text, lo, hi)


# ---- nominal ranges ------------------------------------------------------------------------------------------

def _dotted_lines_at(fig: go.Figure, value: float, letter: str = "y") -> list[Any]:
    other = "x" if letter == "y" else "y"
    return [s for s in fig.layout.shapes if s.line.dash == "dot" and s[f"{letter}0"] == value == s[f"{letter}1"]
            and s[f"{other}ref"] is not None]


def test_faithfulness_above_one_stays_visible() -> None:
    """A circuit faithfulness of 3.09 (the circuit's metric exceeds the full model's) is drawn, not clipped: the
    axis grows past it and a dotted line marks 1 = the full model."""
    from analysis.circuits.figures import faithfulness_bars

    fig = faithfulness_bars({"original": 0.96, "npo": 3.09, "rmu": None})
    lo, hi = fig.layout.yaxis.range
    assert lo <= 0 and hi > 3.09
    assert list(fig.data[0].y)[:2] == [0.96, 3.09]
    assert _dotted_lines_at(fig, 1.0), "no dotted line at 1"
    assert any("full model" in (a.text or "") for a in fig.layout.annotations)


def test_retention_above_one_stays_visible() -> None:
    """Expert-feature retention 2.15 (features more active than in the original) is drawn with a line at 1."""
    from analysis.sae.figures import retention_bars

    fig = retention_bars({"npo": 2.15, "retrain": 0.3}, reference="retrain")
    lo, hi = fig.layout.yaxis.range
    assert lo <= 0 and hi > 2.15
    assert _dotted_lines_at(fig, 1.0)
    assert any("original" in (a.text or "") for a in fig.layout.annotations)


def test_negative_recovered_share_not_clipped() -> None:
    """A net recovered share below 0 (the model relearns less than the retrain control) is on the axis, with a
    dotted line at 0."""
    from analysis.relearn.figures import recovered_share_bars

    fig = recovered_share_bars({"npo": _relearn(-0.22, (-0.4, -0.05))})
    lo, hi = fig.layout.yaxis.range
    assert lo < -0.4 and hi > 0.03
    assert _dotted_lines_at(fig, 0.0)


def test_layer_ticks_whole_numbers_for_deep_models() -> None:
    """Up to 32 layers every layer is ticked; deeper models get a whole-number step, never a fraction."""
    from analysis.figures import layer_ticks

    assert layer_ticks(list(range(6))) == {"tickmode": "linear", "tick0": 0, "dtick": 1}
    assert layer_ticks(32)["dtick"] == 1
    for n in (33, 48, 80, 126):
        d = layer_ticks(n)["dtick"]
        assert isinstance(d, int) and d >= 2 and n / d <= 32, (n, d)
    assert layer_ticks(30, max_ticks=8)["dtick"] == 5 and layer_ticks(4, max_ticks=8)["dtick"] == 1  # SmolLM2, organism


# ---- meanings: palette colours and text beside them ----------------------------------------------------------

def test_status_and_role_colours_are_the_palette() -> None:
    from analysis.figures import ROLE_COLORS
    from analysis.validation.figures import SEPARATION_COLORS, STATUS_COLORS

    assert STATUS_COLORS == {"present": palette.ORANGE, "absent": palette.BLUE, "unknown": palette.GREY}
    assert ROLE_COLORS == palette.ROLE_COLORS
    assert all(_allowed(c) for c in SEPARATION_COLORS.values())


# what each figure's colours mean, as words its legend entries or annotations must write
MEANING_WORDS = {"reading_map": ("present", "gone", "inconclusive", "▲", "●"), "status_legend": ("(P)", "(N)"),
                 "strip_plot": ("P: knowledge present", "N: knowledge absent"),
                 "auroc_figure": ("separates", "reversed"), "circuit_graph": ("positive", "negative")}


@pytest.mark.parametrize("name", list(MEANING_WORDS))
def test_colour_meanings_have_text_labels(figures: dict[str, go.Figure], name: str) -> None:
    """Where a colour means something, the meaning is written beside it: legend entries or annotations name it
    (and the reading map writes a mark in every cell)."""
    fig = figures[name]
    words = " ".join([t.name or "" for t in fig.data if t.showlegend is not False]
                     + [a.text or "" for a in fig.layout.annotations])
    if name == "reading_map":
        words += " ".join(m for row in (fig.data[0].text or []) for m in row) if fig.data[0].texttemplate else ""
    missing = [w for w in MEANING_WORDS[name] if w not in words]
    assert not missing, (name, missing, words)


def test_circuit_graph_readable() -> None:
    """Edge colours by sign (orange positive, blue negative, as the diverging scale), nodes on whole layer rows,
    short distinct labels, a height that grows with depth within bounds."""
    from analysis.circuits.figures import circuit_graph

    edges, circuit = _circuit()
    fig = circuit_graph(edges, circuit, 4, 4)
    signs = {}
    for t in fig.data:
        if t.mode == "lines" and t.text:
            m = re.search(r"score ([+-])", t.text[0])
            if m:
                signs.setdefault(m.group(1), set()).add(t.line.color)
    assert signs == {"+": {palette.ORANGE}, "-": {palette.BLUE}}, signs
    nodes = [t for t in fig.data if t.mode and "markers" in t.mode and t.x and None not in t.x]
    pos = [(x, y) for t in nodes for x, y in zip(t.x, t.y, strict=True)]
    # every node on a whole layer row, no two at one place
    assert pos and all(float(y).is_integer() for _, y in pos) and len(set(pos)) == len(pos), pos
    labels = [s for t in nodes for s in (t.text or []) if s]
    assert labels and all(len(s) <= 4 for s in labels), labels
    deep = circuit_graph(*_circuit(40, 8, 60), n_layers=40, n_heads=8)
    assert 300 <= fig.layout.height < deep.layout.height <= 1000, (fig.layout.height, deep.layout.height)


def test_report_colours_are_the_palette() -> None:
    from analysis.diagnosis import report

    assert report.VERDICT_COLORS["suppressed"] == palette.ORANGE and report.VERDICT_COLORS["erased"] == palette.BLUE
    css = report._STYLE.lower()
    assert not any(old.lower() in css for old in OLD_HEX) and "#1b6e1b" not in css and "#9a1c1c" not in css
