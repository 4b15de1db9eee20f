"""The verdict matrix (analysis.verdict.matrix, issue 19): readings of hand-built models against a hand-computed
in-sample boundary and the rule's, the retrain control never read against itself, the rule's column equal to
``judge`` on the small study, the grid figure, the forget-quality-vs-utility scatter and `erasure verdict
--matrix`."""

from __future__ import annotations

import json

import pytest

from analysis.palette import BLUE, ORANGE, ROLE_COLORS
from analysis.signals import SignalReading
from analysis.verdict.judge import judge_reading
from analysis.verdict.matrix import (
    MatrixRow,
    build_matrix,
    forget_utility_scatter,
    label_positions,
    verdict_matrix,
    verdict_matrix_figure,
)
from analysis.verdict.rule import Rule, threshold_between, write_rule

pytestmark = pytest.mark.usefixtures("one_thread")

RULE = Rule(version=9, signal="sae_probe_gap", threshold=0.4)  # a signal defined against the retrain control


def _r(signal: str, model: str, values: list[float | None], note: str = "") -> SignalReading:
    return SignalReading(signal, model, None, per_sample={f"s{i}": v for i, v in enumerate(values)}, note=note)


def _hand_built():
    rows = [MatrixRow("retrain", "control"), MatrixRow("above", "unlearned"), MatrixRow("straddle", "unlearned"),
            MatrixRow("missing", "unlearned"), MatrixRow("undefined", "unlearned"),
            MatrixRow("p1", "control", "zoo", "P"), MatrixRow("p2", "control", "zoo", "P"),
            MatrixRow("n1", "control", "zoo", "N"), MatrixRow("n2", "control", "zoo", "N")]
    other = {"p1": [1.0] * 6, "p2": [0.9] * 6, "n1": [0.0] * 6, "n2": [0.1] * 6,
             "above": [0.8, 0.9, 0.85, 0.75, 0.8, 0.9], "straddle": [0.0, 1.0] * 4, "retrain": [0.9] * 6,
             "undefined": [None, None]}
    rule_sig = {"above": [1.0] * 8, "retrain": [1.0] * 8, "straddle": [0.0, 1.0] * 4, "n1": [0.0] * 8,
                "p1": [1.0] * 8}
    readings = {"other": {m: _r("other", m, v, "no sample qualifies" if m == "undefined" else "")
                          for m, v in other.items()},
                "sae_probe_gap": {m: _r("sae_probe_gap", m, v) for m, v in rule_sig.items()}}
    return rows, readings, build_matrix(rows, readings, RULE, retrain="retrain", study="hand", seed=3)


def test_hand_built_readings_against_the_boundaries() -> None:
    rows, readings, m = _hand_built()
    assert [c.signal for c in m.columns] == ["sae_probe_gap", "other"]  # the rule's signal first
    rule_col, other = m.columns
    assert rule_col.is_rule and rule_col.boundary == 0.4 and "rule v9" in rule_col.boundary_source
    # in-sample boundary on "other": P scores {1.0, 0.9}, N {0.0, 0.1}: separated, midpoint (0.9 + 0.1) / 2
    assert other.boundary == pytest.approx(0.5) and not other.is_rule and "in-sample" in other.boundary_source
    assert other.auroc == 1.0 and (other.n_present, other.n_absent) == (2, 2)
    above = m.cell("above", "other")  # values 0.75 .. 0.9: the whole interval lies above 0.5
    assert above.reading == "present" and above.ci[0] > 0.5 and above.value == pytest.approx(5.0 / 6)
    straddle = m.cell("straddle", "other")  # mean 0.5 on 0 / 1 values: the interval straddles 0.5
    assert straddle.reading == "inconclusive" and straddle.ci[0] < 0.5 < straddle.ci[1]
    assert m.cell("missing", "other").reading == "unavailable" and m.cell("missing", "other").value is None
    assert m.cell("missing", "sae_probe_gap").reading == "unavailable"
    undefined = m.cell("undefined", "other")  # stored but undefined: judge_reading's inconclusive, saying why
    assert undefined.reading == "inconclusive" and "no sample qualifies" in undefined.note
    assert m.cell("p2", "other").reading == "present" and m.cell("n2", "other").reading == "gone"
    # the rule's column gives the rule's verdict words, exactly judge_reading's verdict, score and interval
    for name in ("above", "straddle", "n1", "p1"):
        v = judge_reading(readings["sae_probe_gap"][name], RULE)
        cell = m.cell(name, "sae_probe_gap")
        assert (cell.reading, cell.value, cell.ci) == (v.verdict, v.score, v.ci)
    assert [m.cell(n, "sae_probe_gap").reading for n in ("above", "straddle", "n1")] == [
        "suppressed", "inconclusive", "erased"]
    # the retrain control: no reading on a signal defined against it (though its values are defined), a reading
    # on one that is not
    assert m.cell("retrain", "sae_probe_gap").reading == "unavailable"
    assert "never judged against itself" in m.cell("retrain", "sae_probe_gap").note
    assert m.cell("retrain", "other").reading == "present"


def test_no_boundary_without_p_and_n() -> None:
    rows = [MatrixRow("a", "unlearned"), MatrixRow("p1", "control", "zoo", "P")]
    m = build_matrix(rows, {"other": {"a": _r("other", "a", [1.0] * 4), "p1": _r("other", "p1", [1.0] * 4)}}, None)
    (col,) = m.columns
    assert col.boundary is None and col.boundary_source.startswith("none")
    assert m.cell("a", "other").reading == "unavailable" and m.cell("a", "other").value == 1.0


def test_frame_records_and_figure() -> None:
    rows, _, m = _hand_built()
    frame = m.frame
    assert list(frame.index) == [r.model for r in rows]
    assert frame.loc["above", ("other", "reading")] == "present"
    assert frame.loc["above", ("other", "value")] == pytest.approx(5.0 / 6)
    assert frame.loc["p1", ("model", "status")] == "P"
    recs = m.records()
    assert [r["model"] for r in recs] == [r.model for r in rows]
    assert recs[1]["signals"]["other"]["reading"] == "present"
    fig = verdict_matrix_figure(m)
    heat = fig.data[0]
    assert list(heat.y) == ["retrain", "above", "straddle", "missing", "undefined", "p1 · P", "p2 · P", "n1 · N",
                            "n2 · N"]
    codes = {"present": 3, "suppressed": 3, "gone": 0, "erased": 0, "inconclusive": 1, "unavailable": 2}
    assert heat.z[1][1] == codes["present"] and heat.z[7][0] == codes["erased"] and heat.z[3][1] == 2
    assert heat.colorscale[0][1] == BLUE and heat.colorscale[-1][1] == ORANGE
    texts = [t for tr in fig.data[1:] if tr.mode == "text" for t in tr.text]
    assert "present<br>0.83 [" in " ".join(texts) and "unavailable" in texts  # the words beside the colours
    assert len(texts) == len(rows) * len(m.columns)
    legend = " ".join(tr.name for tr in fig.data[1:] if tr.mode == "markers")
    assert all(w in legend for w in ("suppressed", "erased", "inconclusive", "unavailable"))
    # the zoo rows are set apart: a line between the last study row (index 4) and the first zoo row
    assert any(s.y0 == 4.5 and s.y1 == 4.5 for s in fig.layout.shapes)


# ---- on the small study (the `validated` fixture stored emphasis_recovery and output_forget_acc) -------------
def test_rule_column_equals_judge_on_the_study(validated) -> None:
    from analysis.validation.runner import zoo_of
    from analysis.verdict.judge import judge, ruler

    study, _, _ = validated
    rule = Rule(version=5, signal="output_forget_acc", threshold=0.5)
    m = verdict_matrix(study, rule)
    zoo = {z.name: z.status for z in zoo_of(study)}
    assert [r.model for r in m.rows] == study.model_names + [n for n in zoo if n not in study.model_names]
    assert {r.model: r.status for r in m.rows if r.status} == {n: {"present": "P", "absent": "N"}[s]
                                                               for n, s in zoo.items()}
    unlearned = [n for n in study.model_names if study.entry(n).role == "unlearned"]
    assert unlearned
    for n in unlearned:
        v = judge(study, n, rule)
        cell = m.cell(n, rule.signal)
        assert (cell.reading, cell.value, cell.ci) == (v.verdict, v.score, v.ci), n
    col = next(c for c in m.columns if c.signal == "emphasis_recovery")
    scores = ruler(study, "emphasis_recovery")  # the zoo's stored scores, read another way
    p = [s for st, s in scores.values() if st == "present"]
    n_ = [s for st, s in scores.values() if st == "absent"]
    assert col.boundary == pytest.approx(threshold_between(p, n_)) and (col.n_present, col.n_absent) == (len(p),
                                                                                                          len(n_))


def test_default_rule_unread_signal_is_unavailable(validated) -> None:
    from analysis.validation.runner import stored_reading
    from analysis.verdict.rule import load_rule

    study, _, _ = validated
    rule = load_rule()
    m = verdict_matrix(study)
    assert m.columns[0].signal == rule.signal and m.columns[0].is_rule
    assert {"emphasis_recovery", "output_forget_acc"} <= set(m.signals)
    unread = [r.model for r in m.rows if stored_reading(study, rule.signal, r.model) is None]
    assert unread and all(m.cell(n, rule.signal).reading == "unavailable" for n in unread)


def _points(fig) -> dict[str, tuple[float, float]]:
    out = {}
    for tr in fig.data:
        if tr.mode and "markers" in tr.mode and tr.text is not None:
            for name, x, y in zip(tr.text, tr.x, tr.y, strict=True):
                assert name not in out, f"{name} drawn twice"
                out[name] = (x, y)
    return out


def test_scatter_one_point_per_model(small_study) -> None:
    from analysis.evaluation import evaluate_study
    from analysis.verdict.matrix import model_roles

    scores = evaluate_study(small_study)
    ref = small_study.manifest.retrain
    fig = forget_utility_scatter(scores, model_roles(small_study, scores), ref)
    pts = _points(fig)
    assert sorted(pts) == sorted(small_study.model_names)
    assert fig.layout.xaxis.type == "log" and any(s.x0 == 0.05 for s in fig.layout.shapes)
    for n, (x, y) in pts.items():
        want = 1.0 if n == ref else max(scores[n].forget_quality, 1e-16)
        assert x == pytest.approx(want) and y == pytest.approx(scores[n].utility), n
    (target,) = [tr for tr in fig.data if tr.text is not None and list(tr.text) == [ref]]
    assert target.marker.symbol == "star" and "target" in target.name
    (unl,) = [tr for tr in fig.data if tr.name == "unlearned"]
    assert unl.marker.color == ROLE_COLORS["unlearned"]


def test_scatter_falls_back_to_forget_accuracy() -> None:
    scores = {"original": {"forget_acc": 1.0, "utility": 0.9, "forget_quality": None, "retain_acc": 1.0},
              "retrain": {"forget_acc": 0.2, "utility": 0.8, "forget_quality": None, "retain_acc": 1.0},
              "a": {"forget_acc": 0.1, "utility": 0.5, "forget_quality": 0.3, "retain_acc": 0.9},
              "b": {"forget_acc": 0.1, "utility": 0.5, "forget_quality": None, "retain_acc": 0.9}}
    fig = forget_utility_scatter(scores, retrain="retrain")
    pts = _points(fig)  # "original" has no forget quality: every model on forget accuracy
    assert pts == {"original": (1.0, 0.9), "retrain": (0.2, 0.8), "a": (0.1, 0.5), "b": (0.1, 0.5)}
    assert fig.layout.xaxis.type != "log" and any(s.x0 == 0.2 for s in fig.layout.shapes)  # the target's line
    pos = {}
    for tr in fig.data:
        if tr.text is not None:
            pos.update(dict(zip(tr.text, [tr.textposition] * len(tr.text) if isinstance(tr.textposition, str)
                                else tr.textposition, strict=True)))
    assert pos["a"] != pos["b"]  # two models at one place: their labels go to different sides
    assert label_positions({"u": (1.0, 1.0), "v": (1.0, 1.0), "w": (100.0, 0.0)}, log_x=True) == {
        "u": "top center", "v": "bottom center", "w": "top center"}


def test_cli_matrix(validated, tmp_path, capsys) -> None:
    from analysis.cli import main

    study, _, _ = validated
    rule = Rule(version=5, signal="output_forget_acc", threshold=0.5)
    path = write_rule(rule, tmp_path / "rule.json")
    m = verdict_matrix(study, rule)
    assert main(["verdict", str(study.root), "--matrix", "--rule", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in out["models"]] == [r.model for r in m.rows]
    for rec in out["models"]:
        cell = m.cell(rec["model"], rule.signal)
        assert rec["signals"][rule.signal]["reading"] == cell.reading
        assert rec["signals"][rule.signal]["ci"] == (list(cell.ci) if cell.ci else None)
    assert out["columns"][0]["signal"] == rule.signal and out["columns"][0]["is_rule"]
    assert main(["verdict", str(study.root), "--matrix", "--rule", str(path)]) == 0
    text = capsys.readouterr().out
    assert all(r.model in text for r in m.rows) and "zoo members" in text
    assert main(["verdict", str(study.root), "--matrix", "--rule", str(path), "--model", "npo", "--json"]) == 0
    only = [r["model"] for r in json.loads(capsys.readouterr().out)["models"] if r["group"] == "study"]
    assert only == ["npo"]
    assert main(["verdict", str(study.root), "--matrix", "--model", "ghost"]) != 0
