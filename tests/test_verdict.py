"""The fitted verdict (analysis.verdict, issue 15): the threshold and the signal choice on hand-built zoos with
known answers, the interval rule on hand-built readings, the rule file's errors, the shipped rule, and
`erasure verdict` on the small study."""

from __future__ import annotations

import json
import math

import pytest

from analysis.errors import AnalysisInputError
from analysis.signals import SignalReading
from analysis.verdict.judge import false_alarm_rate, firing_rate, judge_reading
from analysis.verdict.rule import (
    DevStudy,
    Rule,
    fit_rule,
    load_rule,
    model_score,
    threshold_between,
    write_rule,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _rule(threshold: float = 0.4, signal: str = "sig") -> Rule:
    return Rule(version=7, signal=signal, threshold=threshold)


def _reading(values: list[float | None], signal: str = "sig") -> SignalReading:
    return SignalReading(signal, "m", None, per_sample={f"s{i}": v for i, v in enumerate(values)})


# ---- threshold and signal choice ---------------------------------------------------------------------------
def test_threshold_between_known_answers() -> None:
    assert threshold_between([0.7, 0.9], [0.1, 0.3]) == pytest.approx(0.5)  # midpoint of the gap (0.3, 0.7)
    # overlapping: P = {0.2, 0.6, 0.8}, N = {0.1, 0.3, 0.5}. Cuts 0.15, 0.25, 0.4, 0.55, 0.7: balanced accuracy
    # 0.15 -> (3/3 + 1/3)/2 = .667; 0.25 -> (2/3 + 1/3)/2 = .5; 0.4 -> (2/3 + 2/3)/2 = .667;
    # 0.55 -> (2/3 + 3/3)/2 = .833; 0.7 -> (1/3 + 1)/2 = .667  => 0.55
    assert threshold_between([0.2, 0.6, 0.8], [0.1, 0.3, 0.5]) == pytest.approx(0.55)
    with pytest.raises(AnalysisInputError):
        threshold_between([], [0.1])


def _dev(name: str, a: dict[str, list[float]], b: dict[str, list[float]], status: dict[str, str]) -> DevStudy:
    return DevStudy(name, 0, status, {"a": {m: {"x": v[0], "y": v[1]} for m, v in a.items()},
                                      "b": {m: {"x": v[0], "y": v[1]} for m, v in b.items()}})


def test_fit_rule_takes_the_signal_that_separates_on_every_study() -> None:
    status = {"p1": "present", "p2": "present", "n1": "absent", "n2": "absent"}
    # signal a separates on both studies; b separates perfectly on the first and is reversed on the second
    d1 = _dev("one", {"p1": [1, 1], "p2": [1, 0], "n1": [0, 0], "n2": [0, 0]},
              {"p1": [1, 1], "p2": [1, 1], "n1": [0, 0], "n2": [0, 0]}, status)
    d2 = _dev("two", {"p1": [1, 1], "p2": [1, 1], "n1": [0, 0], "n2": [1, 0]},
              {"p1": [0, 0], "p2": [0, 0], "n1": [1, 1], "n2": [1, 1]}, status)
    rule = fit_rule([d1, d2], ["a", "b"], version=3)
    assert rule.signal == "a" and rule.version == 3
    # a's scores: P = {1, .5, 1, 1}, N = {0, 0, 0, .5}: lowest P .5 == highest N .5 -> not separated; cuts
    # 0.25 -> (4/4 + 3/4)/2 = .875, 0.75 -> (3/4 + 4/4)/2 = .875: the lower cut on ties
    assert rule.threshold == pytest.approx(0.25)
    by = {c["signal"]: c for c in rule.candidates}
    # per study a separates (one: P {1, .5} > N {0, 0}; two: P {1, 1} > N {0, .5}), only pooled they touch
    assert by["b"]["min_auroc"] == 0.0 and by["a"]["min_auroc"] == 1.0
    assert [d["n_present"] for d in rule.fitted_on] == [2, 2]


# ---- the interval rule -------------------------------------------------------------------------------------
def test_judge_reading_interval_rule() -> None:
    rule = _rule(0.4)
    sup = judge_reading(_reading([1.0] * 8 + [None]), rule)
    assert sup.verdict == "suppressed" and sup.ci == (1.0, 1.0) and sup.n_samples == 8
    assert set(sup.per_sample.values()) == {"suppressed"} and "s8" not in sup.per_sample
    assert model_score({"a": 1.0, "b": None, "c": 0.0, "d": math.nan}) == pytest.approx(0.5)
    era = judge_reading(_reading([0.0] * 10), rule)
    assert era.verdict == "erased" and era.score == 0.0
    mixed = judge_reading(_reading([0.0, 1.0] * 3), rule)  # mean .5, interval wide around .4
    assert mixed.verdict == "inconclusive" and mixed.ci[0] < 0.4 < mixed.ci[1]
    assert "straddles" in mixed.reason and mixed.drivers == ["sig"] and mixed.rule_version == 7
    undefined = judge_reading(SignalReading("sig", "m", None, per_sample={"a": None}, note="no control"), rule)
    assert undefined.verdict == "inconclusive" and "no control" in undefined.reason
    with pytest.raises(ValueError, match="reads 'sig'"):
        judge_reading(_reading([1.0], signal="other"), rule)


def test_per_sample_calls_are_gated_by_the_model_and_rates() -> None:
    rule = _rule(0.5)
    # one firing sample in twelve: the model's interval lies below .5 (erased), so the lone hit is inconclusive
    lone = judge_reading(_reading([1.0] + [0.0] * 11), rule)
    assert lone.verdict == "erased" and lone.per_sample["s0"] == "inconclusive"
    assert set(list(lone.per_sample.values())[1:]) == {"erased"}
    # a suppressed model: firing samples are suppressed, the others erased
    sup = judge_reading(_reading([1.0] * 10 + [0.0, 0.0]), rule)
    assert sup.verdict == "suppressed" and sup.per_sample["s0"] == "suppressed" and sup.per_sample["s11"] == "erased"
    assert false_alarm_rate([lone, sup]) == pytest.approx(10 / 24)
    assert false_alarm_rate([lone]) == 0.0
    assert firing_rate([_reading([1.0] + [0.0] * 11)], rule) == pytest.approx(1 / 12)
    assert model_score({"a": 1.0, "b": None, "c": 0.0, "d": math.nan}) == pytest.approx(0.5)


# ---- the rule file -----------------------------------------------------------------------------------------
def test_rule_file_round_trip_and_errors(tmp_path) -> None:
    p = write_rule(_rule(0.3), tmp_path / "rule.json")
    assert load_rule(p) == _rule(0.3)
    with pytest.raises(AnalysisInputError, match="no verdict rule"):
        load_rule(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    for text, words in [("{", "cannot be read"), ("[]", "not a JSON object"), ('{"format": "x"}', "not a verdict"),
                        (json.dumps({**_rule().to_dict(), "threshold": "nan"}), "finite"),
                        (json.dumps({k: v for k, v in _rule().to_dict().items() if k != "signal"}), "signal")]:
        bad.write_text(text)
        with pytest.raises(AnalysisInputError, match=words):
            load_rule(bad)


def test_the_shipped_rule_reads_a_registered_signal() -> None:
    from analysis.signals import SIGNALS
    from analysis.validation.runner import load_signals

    rule = load_rule()
    load_signals()
    assert rule.signal in SIGNALS.names() and math.isfinite(rule.threshold)
    assert rule.fitted_on and all("seed" in d for d in rule.fitted_on)
    assert rule.candidates[0]["signal"] == rule.signal


# ---- on the small study ------------------------------------------------------------------------------------
def test_cli_verdict_on_the_small_study(small_study, capsys) -> None:
    from analysis.cli import main
    from analysis.validation.runner import signal_reading

    rule = load_rule()
    assert main(["verdict", str(small_study.root), "--model", "zoo_retrain_1", "--model", "readout_suppression",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    got = {v["model"]: v for v in out["verdicts"]}
    assert out["rule"]["version"] == rule.version
    for name in ("zoo_retrain_1", "readout_suppression"):
        again = judge_reading(signal_reading(small_study, rule.signal, name), rule).to_dict()
        assert got[name] == again  # the CLI's verdict is the rule applied to the stored reading
    # the readout-only control hides nothing inside: whatever the rule's signal, it must not read "erased"
    assert got["readout_suppression"]["verdict"] != "erased"
    assert got["zoo_retrain_1"]["verdict"] != "suppressed"
    assert main(["verdict", str(small_study.root), "--model", "ghost"]) != 0


def test_report_box_and_ruler_of_a_fitted_verdict() -> None:
    from analysis.diagnosis.report import fitted_html

    v = judge_reading(_reading([1.0] * 6 + [0.0, 0.0], signal="sig"), _rule(0.4))
    zoo = {"p_member": ("present", 0.8), "n_member": ("absent", 0.05), "n<b>": ("absent", 0.1)}
    box, charts = fitted_html((v, zoo))
    assert "Fitted verdict: suppressed" in box and "6 of 8 forget samples" in box
    (chart,) = charts
    ys = [list(t.y) for t in chart.figure.data]
    assert ys == [["p_member"], ["n_member", "n<b>"], ["m"]]  # P, N, then the judged model with its interval
    judged = chart.figure.data[-1]
    assert judged.x[0] == pytest.approx(v.score) and judged.error_x.arrayminus[0] == pytest.approx(v.score - v.ci[0])
    assert fitted_html(None) == ("", [])


def test_report_shows_every_other_signal_ruler() -> None:
    from analysis.diagnosis.report import fitted_html

    v = judge_reading(_reading([1.0] * 6 + [0.0, 0.0], signal="sig"), _rule(0.4))
    zoo = {"p": ("present", 0.8), "n": ("absent", 0.05)}
    others = [("sig", zoo, v.score, v.ci), ("other", {"p": ("present", -0.3), "n": ("absent", 2.0)}, 1.5, (1.0, 2.0))]
    _, charts = fitted_html((v, zoo, others))
    assert [c.key for c in charts] == ["ruler", "ruler-other"]  # the rule's signal is not repeated
    fig = charts[1].figure
    assert [list(t.x) for t in fig.data] == [[-0.3], [2.0], [1.5]] and not fig.layout.shapes  # no boundary line
