"""The verdict matrix: every model of a study (its own models, then the zoo members with their known status) x
every signal ``erasure validate`` stored for it, each cell the model's score (the mean of the signal's defined
per-sample values), its 95% bootstrap interval over samples and a reading; and the forget-quality-vs-utility
scatter of the study's models (as open-unlearning reports it).

Readings come from one logic, :func:`analysis.verdict.judge.judge_reading` (the interval against a boundary):

- the fitted rule's signal: the rule's own verdict (``suppressed`` / ``erased`` / ``inconclusive``) against the
  rule's boundary, fitted on the development zoos of other studies (``rule.json``; benchmarks/VERDICT.md), the
  same verdict ``erasure verdict`` gives;
- every other signal: ``present`` / ``gone`` / ``inconclusive`` against a boundary fitted IN-SAMPLE on this
  study's own zoo by the rule's own threshold search (:func:`analysis.verdict.rule.candidate_summary`: the
  midpoint of the gap between the lowest P and the highest N member score, else the best balanced-accuracy cut).
  The zoo members' own cells are in-sample by construction, and such a boundary is not validated on held-out
  zoos: the other words ("present" / "gone" rather than "suppressed" / "erased") keep the difference visible,
  and every column says where its boundary comes from (``boundary_source``) and its in-sample AUROC.

``unavailable``: no reading stored for the model (nothing is computed here: the matrix reads the store), no
boundary (the zoo has no P or no N score on that signal), or a signal defined relative to the reference retrain
control on that control itself (never judged against itself: :data:`RETRAIN_RELATIVE`). A stored reading with no
defined value reads ``inconclusive``, as :func:`judge_reading` says, with its note.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import plotly.graph_objects as go

from analysis.palette import BLACK, BLUE, GREY, ORANGE, ROLE_COLORS, reading_color
from analysis.signals import SignalReading
from analysis.verdict.judge import judge_reading
from analysis.verdict.rule import DevStudy, Rule, candidate_summary, defined_values, load_rule, model_score

if TYPE_CHECKING:
    from analysis.evaluation import ModelEval
    from analysis.study import Study

# Signals whose per-sample values are defined against the reference retrain control (a probe gap over it,
# recovery or restoration net of it, a depth score against its curves): on the control itself they would read
# "nothing beyond the control" by construction, so the matrix gives it no reading on them.
RETRAIN_RELATIVE: frozenset[str] = frozenset({"sae_probe_gap", "sae_net_restoration", "sae_feature_retention",
                                              "emphasis_recovery", "relearn", "patching"})
RULE_WORDS: tuple[str, ...] = ("suppressed", "erased", "inconclusive")  # judge_reading's verdicts
IN_SAMPLE_WORDS: dict[str, str] = {"suppressed": "present", "erased": "gone", "inconclusive": "inconclusive"}
READINGS: tuple[str, ...] = ("suppressed", "present", "inconclusive", "unavailable", "gone", "erased")
UNAVAILABLE = "unavailable"
LIGHT_GREY = "#DDDDDD"  # "unavailable": the palette's grey family, lighter than "inconclusive"
READING_LEGEND: dict[str, str] = {
    "suppressed": "suppressed / present: the knowledge is inside (interval above the boundary)",
    "erased": "erased / gone: no more than in a model that never learned it (interval below the boundary)",
    "inconclusive": "inconclusive: the interval straddles the boundary (or the signal is undefined here)",
    UNAVAILABLE: "unavailable: not read (run erasure validate), no boundary, or the retrain control itself",
}


@dataclass(frozen=True)
class MatrixRow:
    """One model of the matrix. ``group``: "study" (the study's own models) or "zoo" (a zoo member that is not
    one of them); ``status``: "P" / "N" for a zoo member (known by construction), "" otherwise."""

    model: str
    role: str
    group: str = "study"
    status: str = ""

    @property
    def label(self) -> str:
        return f"{self.model} · {self.status}" if self.status else self.model


@dataclass(frozen=True)
class MatrixColumn:
    """One signal: its boundary and where the boundary comes from; ``auroc``: its in-sample AUROC of P over N on
    this study's zoo (None without P and N scores)."""

    signal: str
    label: str
    boundary: float | None
    boundary_source: str
    is_rule: bool = False
    auroc: float | None = None
    n_present: int = 0
    n_absent: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"signal": self.signal, "label": self.label, "boundary": self.boundary,
                "boundary_source": self.boundary_source, "is_rule": self.is_rule, "auroc": self.auroc,
                "n_present": self.n_present, "n_absent": self.n_absent}


@dataclass(frozen=True)
class MatrixCell:
    """One model on one signal: its score (mean of the defined per-sample values), the 95% bootstrap interval
    over samples, the number of defined samples, the reading and why (``note``)."""

    model: str
    signal: str
    reading: str
    value: float | None = None
    ci: tuple[float, float] | None = None
    n_samples: int = 0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "ci": list(self.ci) if self.ci is not None else None,
                "n_samples": self.n_samples, "reading": self.reading, "note": self.note}


@dataclass
class VerdictMatrix:
    """The matrix: ``rows`` (study models, then zoo members), ``columns`` (the rule's signal first, then the others
    by name), ``cells[(model, signal)]``; ``rule``: the rule's dict (None without one); ``boundary_source``: one
    sentence on where the boundaries come from."""

    study: str
    rows: list[MatrixRow]
    columns: list[MatrixColumn]
    cells: dict[tuple[str, str], MatrixCell]
    rule: dict[str, Any] | None = None
    boundary_source: str = ""
    notes: list[str] = field(default_factory=list)

    def cell(self, model: str, signal: str) -> MatrixCell:
        return self.cells[(model, signal)]

    @property
    def signals(self) -> list[str]:
        return [c.signal for c in self.columns]

    @property
    def frame(self) -> pd.DataFrame:
        """One row per model (index: model); columns ``(signal, field)`` with field reading / value / ci_low /
        ci_high / n_samples, after ``("model", role | group | status)``."""
        recs = []
        for r in self.rows:
            d: dict[tuple[str, str], Any] = {("model", "role"): r.role, ("model", "group"): r.group,
                                             ("model", "status"): r.status}
            for c in self.columns:
                cell = self.cell(r.model, c.signal)
                d[(c.signal, "reading")] = cell.reading
                d[(c.signal, "value")] = cell.value
                d[(c.signal, "ci_low")] = cell.ci[0] if cell.ci is not None else None
                d[(c.signal, "ci_high")] = cell.ci[1] if cell.ci is not None else None
                d[(c.signal, "n_samples")] = cell.n_samples
            recs.append(d)
        cols = pd.MultiIndex.from_tuples([("model", k) for k in ("role", "group", "status")]
                                         + [(c.signal, f) for c in self.columns
                                            for f in ("reading", "value", "ci_low", "ci_high", "n_samples")])
        return pd.DataFrame(recs, index=pd.Index([r.model for r in self.rows], name="model"), columns=cols)

    def table(self) -> pd.DataFrame:
        """For display: one row per model, one text column per signal ("reading value [lo, hi]")."""
        data = {"status": [r.status or r.role for r in self.rows]}
        for c in self.columns:
            data[c.signal] = [cell_text(self.cell(r.model, c.signal), " ") for r in self.rows]
        return pd.DataFrame(data, index=pd.Index([r.model for r in self.rows], name="model"))

    def records(self) -> list[dict[str, Any]]:
        """One record per model (the CLI's ``--json``)."""
        return [{"model": r.model, "role": r.role, "group": r.group, "status": r.status,
                 "signals": {c.signal: self.cell(r.model, c.signal).to_dict() for c in self.columns}}
                for r in self.rows]

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.study, "rule": self.rule, "boundary_source": self.boundary_source,
                "columns": [c.to_dict() for c in self.columns], "models": self.records(), "notes": list(self.notes)}


# ---- building ----------------------------------------------------------------------------------------------
def _fmt(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.2f}" if abs(x) < 100 else f"{x:.3g}"


def cell_text(cell: MatrixCell, sep: str = "<br>") -> str:
    """The reading, the value and the interval, as the figure and the table write them."""
    if cell.reading == UNAVAILABLE or cell.value is None:
        return cell.reading
    ci = f"[{_fmt(cell.ci[0])}, {_fmt(cell.ci[1])}]" if cell.ci is not None else "[no interval]"
    return f"{cell.reading}{sep}{_fmt(cell.value)} {ci}"


def _seeds(rule: Rule) -> str:
    return ", ".join(str(d.get("seed")) for d in rule.fitted_on) or "?"


def rule_source(rule: Rule, seed: int | None = None) -> str:
    """Where the rule's boundary comes from, in words (``seed``: the judged study's, to say when it is one of the
    seeds the rule was fitted on)."""
    text = (f"rule v{rule.version}: fitted on the development zoos of seeds {_seeds(rule)} "
            "(benchmarks/VERDICT.md), not on this study's readings")
    seeds = {d.get("seed") for d in rule.fitted_on}
    if seed is not None and seed in seeds:
        text += f"; this study's seed {seed} is one of them, so a demo study of that seed is in-sample for the rule"
    return text


def _in_sample_source(n_p: int, n_n: int) -> str:
    return (f"in-sample: fitted on this study's own zoo ({n_p} P, {n_n} N) by the rule's threshold search; "
            "not validated on held-out zoos")


def build_matrix(rows: Sequence[MatrixRow], readings: Mapping[str, Mapping[str, SignalReading | None]],
                 rule: Rule | None, retrain: str | None = None, study: str = "", seed: int | None = None,
                 labels: Mapping[str, str] | None = None,
                 relative_to_retrain: Iterable[str] = RETRAIN_RELATIVE) -> VerdictMatrix:
    """The matrix from readings already in hand: ``readings[signal][model]`` (a missing or None entry is
    "unavailable"). The zoo members are the rows with status P / N; their scores fit the in-sample boundaries.
    ``retrain``: the reference retrain control, given no reading on the ``relative_to_retrain`` signals."""
    relative = set(relative_to_retrain)
    signals = sorted(readings)
    if rule is not None:
        signals = [rule.signal] + [s for s in signals if s != rule.signal]
    status = {r.model: {"P": "present", "N": "absent"}[r.status] for r in rows if r.status in ("P", "N")}
    dev = DevStudy(study, seed, status, {s: {m: r.per_sample for m, r in readings.get(s, {}).items()
                                             if r is not None and m in status} for s in signals})
    columns: list[MatrixColumn] = []
    cells: dict[tuple[str, str], MatrixCell] = {}
    for s in signals:
        summary = candidate_summary([dev], s)
        auroc = summary["per_study"][0]["auroc"] if summary else None
        n_p = summary["per_study"][0]["n_present"] if summary else 0
        n_n = summary["per_study"][0]["n_absent"] if summary else 0
        label = (labels or {}).get(s, s)
        if rule is not None and s == rule.signal:
            col_rule: Rule | None = rule
            col = MatrixColumn(s, label, rule.threshold, rule_source(rule, seed), True, auroc, n_p, n_n)
        elif summary is not None:
            col_rule = Rule(version=0, signal=s, threshold=float(summary["threshold"]),
                            level=rule.level if rule is not None else 0.95)
            col = MatrixColumn(s, label, col_rule.threshold, _in_sample_source(n_p, n_n), False, auroc, n_p, n_n)
        else:
            col_rule = None
            col = MatrixColumn(s, label, None, "none: this study's zoo has no P or no N score on this signal",
                               False, None, n_p, n_n)
        columns.append(col)
        for r in rows:
            cells[(r.model, s)] = _cell(r.model, s, readings.get(s, {}).get(r.model), col_rule, col.is_rule,
                                        r.model == retrain and s in relative)
    note = ("the rule's column: " + rule_source(rule, seed) + ". " if rule is not None else "no fitted rule. ")
    note += ("Every other column: a boundary fitted in-sample on this study's zoo members (their own cells are "
             "in-sample by construction), read as present / gone / inconclusive.")
    return VerdictMatrix(study=study, rows=list(rows), columns=columns, cells=cells,
                         rule=rule.to_dict() if rule is not None else None, boundary_source=note)


def _cell(model: str, signal: str, reading: SignalReading | None, rule: Rule | None, is_rule: bool,
          self_reference: bool) -> MatrixCell:
    if self_reference:
        return MatrixCell(model, signal, UNAVAILABLE, note=f"{signal} is defined against the reference retrain "
                          "control: the control is never judged against itself")
    if reading is None:
        return MatrixCell(model, signal, UNAVAILABLE, note="not read yet (erasure validate stores the readings)")
    if rule is None:
        values = list(defined_values(reading.per_sample).values())
        return MatrixCell(model, signal, UNAVAILABLE, value=model_score(reading.per_sample), n_samples=len(values),
                          note="no boundary: this study's zoo has no P or no N score on this signal")
    v = judge_reading(reading, rule)
    word = v.verdict if is_rule else IN_SAMPLE_WORDS[v.verdict]
    reason = v.reason if is_rule else v.reason.replace(f" (rule v{rule.version})", " (in-sample boundary)")
    return MatrixCell(model, signal, word, value=v.score, ci=v.ci, n_samples=v.n_samples, note=reason)


def matrix_rows(study: Study, models: Sequence[str] | None = None) -> list[MatrixRow]:
    """The study's own models (``study.model_names``, or ``models``), then the zoo members that are not among
    them; every zoo member with its status P / N."""
    from analysis.errors import AnalysisInputError
    from analysis.validation.runner import zoo_of

    try:
        zoo = {m.name: m.status for m in zoo_of(study)}
    except AnalysisInputError:
        zoo = {}
    short = {"present": "P", "absent": "N"}
    names = list(models) if models is not None else study.model_names
    for n in names:
        study.entry(n)  # an unknown model: a clear error naming it
    rows = [MatrixRow(n, study.entry(n).role, "study", short.get(zoo.get(n, ""), "")) for n in names]
    rows += [MatrixRow(n, study.entry(n).role, "zoo", short[s]) for n, s in zoo.items() if n not in names]
    return rows


def verdict_matrix(study: Study, rule: Rule | None = None, models: Sequence[str] | None = None) -> VerdictMatrix:
    """Every model (``matrix_rows``) x every signal with a reading stored for any of them by ``erasure validate``
    (plus the rule's signal, ``rule`` default: the shipped ``rule.json``), from STORED readings only (nothing is
    computed; a missing reading is "unavailable"). Module docstring for the readings."""
    from analysis.signals import SIGNALS
    from analysis.validation.runner import load_signals, stored_reading

    rule = rule if rule is not None else load_rule()
    notes = load_signals()
    rows = matrix_rows(study, models)
    readings: dict[str, dict[str, SignalReading | None]] = {}
    for s in sorted(set(SIGNALS.names()) | {rule.signal}):
        got = {r.model: stored_reading(study, s, r.model) for r in rows}
        if s == rule.signal or any(x is not None for x in got.values()):
            readings[s] = got
    labels = {s: SIGNALS.label(s) if s in SIGNALS else s for s in readings}
    m = build_matrix(rows, readings, rule, study.manifest.retrain, study.manifest.name, study.manifest.seed, labels)
    m.notes = notes
    return m


# ---- figures -----------------------------------------------------------------------------------------------
_CODE = {"erased": 0, "gone": 0, "inconclusive": 1, UNAVAILABLE: 2, "suppressed": 3, "present": 3}
_SCALE: list[list[float | str]] = [[0.0, BLUE], [1 / 6, BLUE], [1 / 6, GREY], [0.5, GREY], [0.5, LIGHT_GREY],
                                   [5 / 6, LIGHT_GREY], [5 / 6, ORANGE], [1.0, ORANGE]]
ROW_PX = 50  # one model's row (three lines of cell text)


def _column_title(c: MatrixColumn) -> str:
    """Three short lines (horizontal at 1400 px): the signal (bold: the rule's), where its boundary comes from and
    its value, the in-sample AUROC."""
    head = f"<b>{c.signal}</b>" if c.is_rule else c.signal
    if c.boundary is None:
        src = "no boundary"
    else:
        src = f"{'rule' if c.is_rule else 'in-sample'} {_fmt(c.boundary)}"
    auroc = f"AUROC {c.auroc:.2f}" if c.auroc is not None else "AUROC –"
    return "<br>".join((head, src, auroc))


def verdict_matrix_figure(matrix: VerdictMatrix) -> go.Figure:
    """The grid: one row per model (study models, a line, then the zoo members with P / N), one column per
    signal (the rule's first, bold, set apart by a line); each cell coloured by its reading (orange suppressed /
    present, blue erased / gone, grey inconclusive, light grey unavailable) and WRITTEN: the reading, the value
    and its 95% interval. Hover: why."""
    rows, cols = matrix.rows, matrix.columns
    ys = [r.label for r in rows]
    xs = [_column_title(c) for c in cols]
    cells = [[matrix.cell(r.model, c.signal) for c in cols] for r in rows]
    z = [[_CODE.get(cell.reading, 2) for cell in row] for row in cells]
    hover = [[f"{r.model} on {c.signal}: {cell_text(cell, ' ')}<br>{cell.note}<br>boundary: {c.boundary_source}"
              for c, cell in zip(cols, row, strict=True)] for r, row in zip(rows, cells, strict=True)]
    fig = go.Figure(go.Heatmap(z=z, x=xs, y=ys, zmin=0, zmax=3, colorscale=_SCALE, showscale=False, xgap=2, ygap=2,
                               customdata=hover, hovertemplate="%{customdata}<extra></extra>", name="readings"))
    for dark, color in ((True, "white"), (False, BLACK)):  # white text on blue, dark text on the rest
        pts = [(x, y, cell_text(cell)) for y, row in zip(ys, cells, strict=True)
               for x, cell in zip(xs, row, strict=True) if (cell.reading in ("erased", "gone")) == dark]
        if pts:
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], text=[p[2] for p in pts],
                                     mode="text", textfont={"size": 10, "color": color}, hoverinfo="skip",
                                     showlegend=False, name="cell text"))
    for word in ("suppressed", "erased", "inconclusive", UNAVAILABLE):  # the legend: colour AND words
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=READING_LEGEND[word],
                                 marker={"symbol": "square", "size": 14,
                                         "color": LIGHT_GREY if word == UNAVAILABLE else reading_color(word)}))
    n_study = sum(r.group == "study" for r in rows)
    if 0 < n_study < len(rows):  # the zoo below a thick line
        fig.add_shape(type="line", xref="paper", x0=-0.25, x1=1, yref="y", y0=n_study - 0.5, y1=n_study - 0.5,
                      line={"color": BLACK, "width": 3})
    if cols and cols[0].is_rule and len(cols) > 1:
        fig.add_shape(type="line", xref="x", x0=0.5, x1=0.5, yref="paper", y0=0, y1=1,
                      line={"color": BLACK, "width": 3})
    fig.update_yaxes(categoryorder="array", categoryarray=ys, autorange="reversed", tickfont={"size": 12},
                     title_text=None)
    fig.update_xaxes(categoryorder="array", categoryarray=xs, side="top", tickfont={"size": 10}, tickangle=0,
                     title_text=None)
    sub = ("rows above the line: the study's models; below: zoo members, knowledge known by construction "
           "(P present, N absent). Column 1: the fitted rule (boundary from other seeds); the others: in-sample "
           "boundaries on this zoo." if cols and cols[0].is_rule else "In-sample boundaries on this study's zoo.")
    fig.update_layout(height=200 + ROW_PX * max(1, len(rows)), plot_bgcolor="white",
                      margin={"l": 10, "r": 10, "t": 120, "b": 10},
                      legend={"orientation": "h", "y": -0.01, "x": 0, "yanchor": "top", "font": {"size": 11}},
                      title={"text": "Verdict matrix: every model x every signal (reading, value [95% interval])",
                             "subtitle": {"text": sub, "font": {"size": 11}}, "font": {"size": 15},
                             "y": 0.995, "yanchor": "top"})
    return fig


POSITIONS = ("top center", "bottom center", "middle right", "middle left", "top right", "bottom left", "top left",
             "bottom right")  # labels of points that sit together, in turn


def label_positions(points: Mapping[str, tuple[float | None, float | None]], log_x: bool = False,
                    near: tuple[float, float] = (0.04, 0.06)) -> dict[str, str]:
    """A text position per labelled point so that points at (nearly) the same place do not write their labels
    over each other: each point takes the next of :data:`POSITIONS` after those of the earlier points within
    ``near`` (a share of the x and y spans)."""
    def tx(x: float) -> float:
        return math.log10(x) if log_x else x

    placed = {n: (tx(x), y) for n, (x, y) in points.items() if x is not None and y is not None and (x > 0 or not
                                                                                                  log_x)}
    if not placed:
        return dict.fromkeys(points, POSITIONS[0])
    xs, ys = [p[0] for p in placed.values()], [p[1] for p in placed.values()]
    sx, sy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    out: dict[str, str] = {}
    done: list[tuple[float, float]] = []
    for n in points:
        if n not in placed:
            out[n] = POSITIONS[0]
            continue
        x, y = placed[n]
        k = sum(abs(x - a) / sx < near[0] and abs(y - b) / sy < near[1] for a, b in done)
        out[n] = POSITIONS[k % len(POSITIONS)]
        done.append((x, y))
    return out


# a shape per role as well as a colour; the larger shapes are drawn first, so two models at one place both show
ROLE_SYMBOLS: dict[str, str] = {"original": "diamond", "control": "square", "unlearned": "circle",
                                "zoo": "triangle-up"}
ROLE_SIZES: dict[str, int] = {"original": 14, "control": 15, "unlearned": 11, "zoo": 12}
FQ_FLOOR = 1e-16  # forget-quality p-values below this are drawn at it (hover gives the value)
FQ_LINE = 0.05


def _metric(score: ModelEval | Mapping[str, Any], key: str) -> float | None:
    x = score.get(key) if isinstance(score, Mapping) else getattr(score, key, None)
    return None if x is None or not math.isfinite(float(x)) else float(x)


def model_roles(study: Study, names: Iterable[str]) -> dict[str, str]:
    """{model: role} for :func:`forget_utility_scatter` ("zoo" for a zoo member outside the study's models)."""
    own = set(study.model_names)
    return {n: study.entry(n).role if n in own else "zoo" for n in names}


def forget_utility_scatter(scores: Mapping[str, ModelEval | Mapping[str, Any]],
                           roles: Mapping[str, str] | None = None, retrain: str | None = None) -> go.Figure:
    """One labelled point per model: x = forget quality (the TOFU KS p-value against the retrain control, log
    axis, the 0.05 line; the retrain control itself at 1, the target) or, when some model other than the control
    has none, forget accuracy for every model (lower = forgotten; the control's own as the target line); y =
    model utility (retain accuracy when no model has a utility score). Coloured by role (``roles``: model ->
    original / control / unlearned / zoo; default: "original" for the model named so, "control" for
    ``retrain``, "unlearned" otherwise), the retrain control a star labelled "target". ``scores``: ``evaluate_study``
    (``ModelEval``) or dicts with the same keys."""
    names = list(scores)
    roles = dict(roles or {})
    for n in names:
        roles.setdefault(n, "original" if n == "original" else "control" if n == retrain else "unlearned")
    use_fq = bool(names) and all(_metric(scores[n], "forget_quality") is not None for n in names if n != retrain) \
        and any(n != retrain for n in names) and retrain is not None
    use_utility = any(_metric(s, "utility") is not None for s in scores.values())
    ykey = "utility" if use_utility else "retain_acc"

    def x_of(n: str) -> float | None:
        if not use_fq:
            return _metric(scores[n], "forget_acc")
        if n == retrain:
            return 1.0  # the control against itself: identical distributions, p = 1
        fq = _metric(scores[n], "forget_quality")
        return None if fq is None else max(fq, FQ_FLOOR)

    def raw(n: str) -> str:
        x = _metric(scores[n], "forget_quality" if use_fq else "forget_acc")
        if use_fq and n == retrain:
            return "1 (the target itself)"
        return "undefined" if x is None else f"{x:.3g}"

    where = label_positions({n: (x_of(n), _metric(scores[n], ykey)) for n in names}, log_x=use_fq)
    fig = go.Figure()
    order = ["original", "control", "unlearned", "zoo"]
    for role in order + sorted({r for r in roles.values() if r not in order}):
        group = [n for n in names if roles[n] == role and n != retrain]
        if not group:
            continue
        ys = [_metric(scores[n], ykey) for n in group]
        fig.add_trace(go.Scatter(
            x=[x_of(n) for n in group], y=ys, mode="markers+text", text=group,
            textposition=[where[n] for n in group],
            name=role, marker={"size": ROLE_SIZES.get(role, 12), "color": ROLE_COLORS.get(role, GREY),
                               "symbol": ROLE_SYMBOLS.get(role, "circle"), "line": {"width": 1, "color": "white"}},
            customdata=[[raw(n), _fmt(y)] for n, y in zip(group, ys, strict=True)],
            hovertemplate="%{text}: x %{customdata[0]}, y %{customdata[1]}<extra>" + role + "</extra>"))
    if retrain is not None and retrain in scores:
        y = _metric(scores[retrain], ykey)
        fig.add_trace(go.Scatter(
            x=[x_of(retrain)], y=[y], mode="markers+text", text=[retrain], textposition="bottom center",
            name=f"{retrain}: the retrain control (target)",
            marker={"size": 20, "symbol": "star", "color": ROLE_COLORS["control"], "line": {"width": 1,
                                                                                           "color": BLACK}},
            customdata=[[raw(retrain), _fmt(y)]],
            hovertemplate="%{text} (target): x %{customdata[0]}, y %{customdata[1]}<extra></extra>"))
    if use_fq:
        fig.add_vline(x=FQ_LINE, line_dash="dash", line_color=GREY)  # a shape: data units on a log axis
        fig.add_annotation(x=math.log10(FQ_LINE), xref="x", y=0, yref="y domain", xanchor="right", yanchor="bottom",
                           showarrow=False, font={"size": 11}, text="p = 0.05: left of it, distinguishable from "
                           "the retrain control")  # an annotation: log10 units on a log axis
        fig.update_xaxes(type="log", title_text="forget quality (TOFU KS p-value vs the retrain control; right = "
                         "closer to the target)", exponentformat="power")
    else:
        target = _metric(scores[retrain], "forget_acc") if retrain is not None and retrain in scores else None
        if target is not None:
            fig.add_vline(x=target, line_dash="dot", line_color=BLUE, annotation_text="the retrain control's "
                          "forget accuracy (target)", annotation_position="top right", annotation_font_size=11)
        fig.update_xaxes(range=[-0.05, 1.05], title_text="forget accuracy (no forget quality: lower = forgotten; "
                         "the target is the retrain control's)")
    fig.update_yaxes(title_text="model utility (higher = kept)" if use_utility else
                     "retain accuracy (no utility set; higher = kept)", range=[-0.05, 1.1])
    fig.update_layout(height=480, plot_bgcolor="white", margin={"l": 10, "r": 10, "t": 50, "b": 40},
                      title={"text": "Forget quality vs utility" if use_fq else "Forget accuracy vs utility",
                             "font": {"size": 15}},
                      legend={"orientation": "h", "y": -0.18, "x": 0})
    fig.update_xaxes(showgrid=True, gridcolor="#eeeeee")
    fig.update_yaxes(showgrid=True, gridcolor="#eeeeee")
    return fig
