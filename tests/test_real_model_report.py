"""benchmarks/real_model_report.py: every section in --quick mode on the small study (the tables against the
stored results and against the report's own JSON, the verdict rows against the study's models, a rerun of some
sections read back from the store), and known answers for the pieces it computes itself (the derived ROME role,
the peak, the deterministic choice of facts, the Spearman interval, the organism table reader)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from analysis.tracing.result import TraceResult, average_indirect_effect
from benchmarks.real_model_report import (
    FIRST_SUBSEQUENT,
    first_subsequent,
    fmt,
    known_ids,
    main,
    parse_md_table,
    parse_validation_md,
    pct,
    peak,
    peak_rows,
    spearman_ci,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SIGNALS = "emphasis_recovery,output_forget_acc"  # cheap ones (the verdict's rule signal is read in its section)
SAE_STEPS = "50"


@pytest.fixture(scope="module")
def report(small_study, tmp_path_factory):
    out = tmp_path_factory.mktemp("real_model_report")
    argv = [str(small_study.root), "--quick", "--signals", SIGNALS, "--sae-steps", SAE_STEPS,
            "--cud-settings", "ours,reference",
            "--json", str(out / "r.json"), "--md", str(out / "r.md")]
    assert main(argv) == 0
    return small_study, json.loads((out / "r.json").read_text()), (out / "r.md").read_text().splitlines(), out


# ---- known answers (no model) ---------------------------------------------------------------------------------
def _trace(sid: str, tokens: int, subject: tuple[int, int], resid: list[list[float]], corrupted: float) -> TraceResult:
    return TraceResult(tokens=[f"t{i}" for i in range(tokens)], subject_range=subject, layers=[0, 1], clean=1.0,
                       corrupted=corrupted, scores={"resid": resid}, options={}, model="m", sample_id=sid)


def test_first_subsequent_role_and_peaks_by_hand():
    # a: 4 tokens, subject [0, 2): first subsequent = position 2 (not the last token 3)
    # b: 3 tokens, subject [1, 2): first subsequent = position 2 = the last token -> no such role
    # c: 5 tokens, subject [0, 1): first subsequent = position 1
    a = _trace("a", 4, (0, 2), [[0.1, 0.2, 0.5, 0.9], [0.3, 0.4, 0.7, 0.6]], corrupted=0.1)
    b = _trace("b", 3, (1, 2), [[0.0, 0.0, 0.8], [0.0, 0.0, 0.9]], corrupted=0.0)
    c = _trace("c", 5, (0, 1), [[0.2, 0.3, 0.0, 0.0, 0.4], [0.2, 0.0, 0.0, 0.0, 0.4]], corrupted=0.2)
    agg = average_indirect_effect([a, b, c])
    got, n = first_subsequent(agg)["resid"]
    # effects (score - corrupted) at the first subsequent position: a: layer 0 0.5-0.1, layer 1 0.7-0.1;
    # c: layer 0 0.3-0.2, layer 1 0.0-0.2
    assert n == 2
    assert got == pytest.approx([(0.4 + 0.1) / 2, (0.6 - 0.2) / 2])
    assert peak([None, 0.2, 0.5, None, 0.1]) == (0.5, 2)
    assert peak([None, None]) == (None, None)
    rows = {(r["kind"], r["role"]): r for r in peak_rows(agg)}
    # the derived role sits before "further tokens"; its peak: layer 0 (0.25 against 0.2 at layer 1)
    assert [role for kind, role in rows if kind == "resid"].index(FIRST_SUBSEQUENT) == 3
    assert rows[("resid", FIRST_SUBSEQUENT)]["peak_aie"] == pytest.approx(0.25)
    assert rows[("resid", FIRST_SUBSEQUENT)]["peak_layer"] == 0
    assert rows[("resid", FIRST_SUBSEQUENT)]["n"] == 2
    # last token: a 0.9-0.1 / 0.6-0.1; b 0.8 / 0.9; c 0.4-0.2 / 0.4-0.2 -> layer 0: 1.8/3, layer 1: 1.6/3
    assert rows[("resid", "last token")]["peak_layer"] == 0
    assert rows[("resid", "last token")]["peak_aie"] == pytest.approx(1.8 / 3)
    assert rows[("resid", "last token")]["depth"] == 0.0
    assert rows[("resid", "last subject token")]["rome"].startswith("8.7%")


def test_known_facts_are_chosen_round_robin_over_relations():
    def s(i: str, rel: str, subject: str | None = "x") -> SimpleNamespace:
        return SimpleNamespace(id=i, relation=rel, subject=subject)

    samples = [s("c1", "capital"), s("c2", "capital"), s("c3", "capital"), s("m1", "maker"), s("n0", "capital", None),
               s("l1", "language"), s("m2", "maker")]
    study = SimpleNamespace(manifest=SimpleNamespace(samples={"utility": "u.jsonl"}), samples=lambda split: samples)
    assert known_ids(study, 5) == ["c1", "m1", "l1", "c2", "m2"]  # type: ignore[arg-type]
    assert known_ids(study, 2) == ["c1", "m1"]  # type: ignore[arg-type]
    assert known_ids(study, 10) == ["c1", "m1", "l1", "c2", "m2", "c3"]  # type: ignore[arg-type]
    no_utility = SimpleNamespace(manifest=SimpleNamespace(samples={"forget": "f.jsonl"}))
    assert known_ids(no_utility, 5) == []  # type: ignore[arg-type]


def test_spearman_interval_known_answers():
    x = np.arange(8.0)
    assert spearman_ci(x, 2 * x + 1) == (1.0, 1.0)  # every defined resample is perfectly monotone
    assert spearman_ci(x, -x) == (-1.0, -1.0)
    assert spearman_ci(x, np.ones(8)) is None  # rho undefined on every resample
    lo, hi = spearman_ci(x, np.array([0, 2, 1, 3, 5, 4, 7, 6.0]), seed=1)
    assert -1 <= lo < 0.93 < hi <= 1  # rho of the sample itself: 1 - 6 * 8 / (8 * 63) = 0.905


def test_organism_table_reader(tmp_path):
    md = tmp_path / "V.md"
    md.write_text("# x\n\n| signal | seed 0 (40 people) | seed 2 |\n|---|---|---|\n"
                  "| logit_lens | 0.97 [0.87, 1.00] ✓ | 0.93 [0.73, 1.00] ✓ |\n| membership | 0.33 [0.00, 0.70] | – |\n"
                  "\n✓ separates\n")
    got = parse_validation_md(md)
    assert got == {"logit_lens": {"organism seed 0 (40 people)": "0.97 [0.87, 1.00]",
                                  "organism seed 2": "0.93 [0.73, 1.00]"},
                   "membership": {"organism seed 0 (40 people)": "0.33 [0.00, 0.70]", "organism seed 2": "–"}}
    assert parse_validation_md(tmp_path / "missing.md") == {}


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        main(["somewhere", "--sections", "trace,bogus"])
    with pytest.raises(SystemExit):
        main(["somewhere", "--cud-settings", "theirs"])


# ---- the whole report on the small study --------------------------------------------------------------------
def test_trace_tables_peak_at_the_argmax_of_the_stored_aie(report):
    from analysis.tracing.options import TraceOptions
    from analysis.tracing.runner import trace_dataset

    study, data, md, _ = report
    sec = data["sections"]["trace"]
    assert set(sec["splits"]) == {"utility", "forget"}
    for split, d in sec["splits"].items():
        assert 0 < d["n_traced"] <= 4
        # read back from the store (nothing is traced again): the same ids, the quick options
        a = trace_dataset(study, "original", TraceOptions(n_samples=d["options"]["n_samples"]), split=split,
                          sample_ids=d["sample_ids"])
        caption = "Causal tracing, original, " + ("the model's own" if split == "utility" else "the fictitious")
        table = {(r[0], r[1]): r for r in parse_md_table(md, caption)}
        for kind in ("resid", "mlp", "attn"):
            arr = a.array(kind)
            for i, role in enumerate(a.roles):
                row = table[(kind, role)]
                if np.isnan(arr[i]).all():
                    assert row[3] == "–" and row[4] == "–"
                    continue
                layer = int(np.nanargmax(arr[i]))
                assert row[4] == str(layer)
                assert row[3] == pct(float(arr[i, layer]))
                assert row[5] == fmt(layer / (len(a.layers) - 1))
            assert (kind, FIRST_SUBSEQUENT) in table
    assert table[("resid", "last subject token")][6].startswith("8.7%")
    assert table[("mlp", "last subject token")][6].startswith("6.6%")


def test_cud_intervals_recompute_the_library_numbers(report):
    _, data, md, _ = report
    settings = data["sections"]["cud"]["settings"]
    assert set(settings) == {"ours", "reference"}
    for setting, d in settings.items():
        v = d["report"]["validation"]
        iv = d["intervals"]
        # the report's own predictors and out-of-fold scores give back the library's point estimates
        assert iv["cud"]["auroc"] == pytest.approx(v["auroc"])
        assert iv["cud"]["spearman"] == pytest.approx(v["spearman"])
        for name in ("original_loss", "exposures"):
            assert iv[name]["auroc"] == pytest.approx(v["baselines"][name]["auroc"])
            assert iv[name]["spearman"] == pytest.approx(v["baselines"][name]["spearman"])
        lo, hi = iv["cud"]["auroc_ci"]
        assert lo <= iv["cud"]["auroc"] <= hi
        rows = [r for r in parse_md_table(md, "CUD and its baselines") if r[0] == setting]
        assert {r[1].split(" ")[0] for r in rows} == {"auc_after", "auc", "final_loss"}
        own = next(r for r in rows if "this setting's labels" in r[1])
        assert own[1].startswith(v["labels"])
        assert own[4] == f"{fmt(v['auroc'])} [{fmt(lo)}, {fmt(hi)}]"
        sig = {r[1]: r for r in parse_md_table(md, "Easy vs hard circuit signature") if r[0] == setting}
        for group in ("easy", "hard", "all"):
            assert sig[group][2] == str(d["report"]["signature"][group]["n"])
            assert sig[group][3] == fmt(d["report"]["signature"][group]["mean_edge_layer"])


def test_recovery_and_shift_cover_every_method_and_the_retrain(report):
    study, data, md, _ = report
    methods = [n for n in study.model_names if study.entry(n).role == "unlearned"]
    sec = data["sections"]["recovery"]
    assert list(sec["recovery"]) == methods
    assert list(sec["shift"]) == [*methods, study.manifest.retrain]
    best = {r[0]: r for r in parse_md_table(md, "Best net recovery per method")}
    for m in methods:
        assert best[m][3] == fmt(sec["recovery"][m]["best_net"], "+.2f")
    shift = {r[0].split(" ")[0]: r for r in parse_md_table(md, "Contribution shift")}
    for m, d in sec["shift"].items():
        assert shift[m][4] == fmt(d["disrupted_focus"], "+.3f")


def test_validation_table_equals_the_json(report):
    study, data, md, _ = report
    sec = data["sections"]["validation"]
    records = {r["signal"]: r for r in sec["result"]["signals"]}
    assert set(records) == set(SIGNALS.split(","))
    rows = {r[0]: r for r in parse_md_table(md, "The meta-evaluation on this study's zoo")}
    assert set(rows) == set(records)
    for name, r in records.items():
        ci = "" if r["ci_low"] is None else f" [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
        assert rows[name][1] == f"{r['auroc']:.2f}{ci}"
        assert rows[name][3] == f"{r['n_present']} / {r['n_absent']}" == f"{sec['n_present']} / {sec['n_absent']}"
    from analysis.zoo import zoo_members

    zoo = zoo_members(study)
    assert sec["n_present"] == sum(m.status == "present" for m in zoo.values())
    assert sec["n_absent"] == sum(m.status == "absent" for m in zoo.values())


def test_verdict_rows_cover_every_method_and_zoo_member(report):
    from analysis.zoo import zoo_members

    study, data, md, _ = report
    sec = data["sections"]["verdict"]
    methods = [n for n in study.model_names if study.entry(n).role == "unlearned"]
    assert sec["methods"] == methods
    rows = {r[0]: r for r in parse_md_table(md, "The verdict of each unlearning method")}
    assert list(rows) == methods
    for m in methods:
        v = sec["verdicts"][m]
        assert rows[m][1] == v["verdict"]
        assert rows[m][2] == f"{fmt(v['score'])} [{fmt(v['ci'][0])}, {fmt(v['ci'][1])}]"
    zoo = zoo_members(study)
    check = {r[0]: r for r in parse_md_table(md, "The held-out-zoo verdict check")}
    assert set(check) == set(zoo)
    expected = {"present": "suppressed", "absent": "erased"}
    for name, r in check.items():
        assert r[1] == zoo[name].status and r[4] == sec["verdicts"][name]["verdict"]
        assert (r[6] == "yes") == (r[4] == expected[r[1]])
    assert sec["check"]["right"] == sum(r[6] == "yes" for r in check.values())
    assert sec["check"]["members"] == len(zoo)
    assert {f["member"] for f in sec["failures"]} == {n for n, r in check.items() if r[6] != "yes"}


def test_sections_are_skippable_and_a_rerun_reads_the_store(report):
    study, data, _, out = report
    assert [r for r in data["sections"]] == ["trace", "cud", "recovery", "validation", "verdict"]
    assert all(s["seconds"] >= 0 and "error" not in s for s in data["sections"].values())
    assert main([str(study.root), "--quick", "--sections", "trace,verdict", "--sae-steps", SAE_STEPS,
                 "--json", str(out / "again.json"), "--md", str(out / "again.md")]) == 0
    again = json.loads((out / "again.json").read_text())
    assert list(again["sections"]) == ["trace", "verdict"]
    for split, d in data["sections"]["trace"]["splits"].items():
        assert again["sections"]["trace"]["splits"][split]["peaks"] == d["peaks"]
    assert again["sections"]["verdict"]["verdicts"] == data["sections"]["verdict"]["verdicts"]
