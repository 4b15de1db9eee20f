"""Diagnosis: known answers on the small study's controls (readout_suppression is suppressed, a retrain of another
seed, zoo_retrain_1, is erased; the reference retrain control itself is never diagnosed against itself), the per-sample table, the JSON round trip, the self-contained HTML report, `erasure report`, bad
inputs, the summary rule on its own, and the page."""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from analysis.diagnosis import SAMPLE_COLUMNS, Diagnosis, DiagnosisOptions, Signal, diagnose, stored_diagnosis
from analysis.diagnosis.cli import add_parser
from analysis.diagnosis.figures import diagnosis_charts
from analysis.diagnosis.report import ReportError, write_report
from analysis.diagnosis.rules import agreement, caveats, summary_verdict
from analysis.errors import AnalysisInputError, StudyError
from analysis.evaluation import model_scores
from analysis.sae import SAEOptions, load_sae, restore

SAE_OPTS = SAEOptions(k=16, expansion=4, steps=300, batch_tokens=256)  # the SAE tests' options: one cached SAE
TEST_OPTS = DiagnosisOptions(sae=SAE_OPTS)
VIEWS = Path(__file__).resolve().parent.parent / "app" / "views"
# The diagnosis page inside a navigation with the pages it links to (as app/Home.py registers them).
NAV = """
import streamlit as st
views = {views!r}
pages = [st.Page(views + "/diagnosis.py", url_path="diagnosis", default=True)]
pages += [st.Page(views + "/" + n + ".py", url_path=n) for n in ("tracing", "attribution", "circuits")]
st.navigation(pages).run()
"""


@pytest.fixture(scope="module")
def suppressed(small_study) -> Diagnosis:
    return diagnose(small_study, "readout_suppression", TEST_OPTS)


@pytest.fixture(scope="module")
def retrained(small_study) -> Diagnosis:
    """A retrain of another seed (zoo_retrain_1) judged against the reference retrain control: the reference
    itself cannot be diagnosed (judged against itself, every signal's gap is 0 by construction)."""
    return diagnose(small_study, "zoo_retrain_1", TEST_OPTS)


def test_controls_known_answers(suppressed, retrained):
    # ground truth: readout_suppression changed only the unembedding (suppression), zoo_retrain_1 never learned
    assert suppressed.signals["sae"].reading == "present", suppressed.signals["sae"].evidence
    assert suppressed.verdict == "suppressed", suppressed.headline
    assert retrained.signals["sae"].reading == "gone", retrained.signals["sae"].evidence
    assert retrained.signals["outputs"].reading == "gone"
    assert retrained.verdict == "erased", retrained.headline
    # judged against the reference (another seed), its emphasis recovery is not trivially net zero
    nets = retrained.signals["emphasis"].numbers["net_by_strategy"]
    assert nets and any(v not in (None, 0.0) for v in nets.values()), nets
    assert retrained.agreement["disagree"] == []
    assert any("the SAE" in a and "gone" in a for a in retrained.agreement["agree"])
    # emphasis acts before the readout, so it cannot undo a readout-only change: the brief's disagreement
    assert suppressed.signals["emphasis"].reading == "gone", suppressed.signals["emphasis"].evidence
    assert any(line.startswith("The SAE says suppressed") and "emphasis" in line and "readout" in line
               for line in suppressed.agreement["disagree"]), suppressed.agreement
    assert suppressed.signals["cud"].reading == "context"


def test_disagreements_are_every_present_gone_pair(suppressed, retrained):
    for d in (suppressed, retrained):
        present = [s for s in d.signals.values() if s.reading == "present"]
        gone = [s for s in d.signals.values() if s.reading == "gone"]
        assert len(d.agreement["disagree"]) == len(present) * len(gone)
        assert d.headline.startswith(f"{d.model}: {d.verdict}")
        assert len(d.evidence) == len(d.signals) == 5


def test_per_sample_table(small_study, suppressed):
    frame = suppressed.samples_frame()
    assert list(frame["id"]) == [s.id for s in small_study.forget]
    assert list(frame.columns) == list(SAMPLE_COLUMNS)
    assert list(frame["person"]) == [s.subject for s in small_study.forget]
    per = model_scores(small_study, "readout_suppression")["per_sample"]
    after = dict(zip(per["ids"], per["correct"], strict=True))
    assert list(frame["correct_after"]) == [after[i] for i in frame["id"]]
    used = load_sae(small_study, path=small_study.root / "sae" / suppressed.options["sae"])  # the SAE it used
    rep = restore(small_study, "readout_suppression", trained=used)
    assert list(frame["sae_verdict"]) == [s["verdict"] for s in rep.per_sample]
    # recovery only applies where the original answers and this model does not
    applies = frame["correct_before"] & ~frame["correct_after"]
    assert frame.loc[~applies, "recovered"].isna().all()
    assert frame.loc[applies, "recovered"].notna().all()
    rec = suppressed.details["recovery"]["results"]
    assert int(applies.sum()) == max(r["n_denominator"] for r in rec.values())
    for strategy, r in rec.items():  # per sample net of the control: never more than the model's own count
        assert frame["recovered_by"].fillna("").str.contains(strategy).sum() <= r["n_recovered"]
    assert frame["cud"].between(0, 1).all()
    traced = frame.dropna(subset=["trace_shift"])
    assert len(traced) > 0
    assert (traced["trace_shift"] - (traced["trace_after"] - traced["trace_before"])).abs().max() < 1e-12


def test_json_round_trip_and_store(small_study, suppressed):
    text = json.dumps(suppressed.to_dict(), allow_nan=False)
    assert Diagnosis.from_dict(json.loads(text)) == suppressed
    fresh = diagnose(small_study, "readout_suppression", TEST_OPTS, use_store=False)  # analyses read their stores
    assert Diagnosis.from_dict(json.loads(json.dumps(fresh.to_dict()))) == suppressed
    assert stored_diagnosis(small_study, "readout_suppression", TEST_OPTS) == suppressed


def test_report_is_self_contained(suppressed, tmp_path):
    html_path, json_path = tmp_path / "report.html", tmp_path / "report.json"
    sizes = write_report(suppressed, html_path, json_path)
    text = html_path.read_text(encoding="utf-8")
    assert sizes[str(html_path)] == len(text.encode("utf-8"))
    assert text.count("* plotly.js v") == 1  # the bundle, inline, once
    assert not re.search(r"<script[^>]*\bsrc=", text)
    assert not re.search(r"<link[^>]*\bhref=\"?https?:", text)
    assert "cdn.plot.ly/plotly" not in text  # (the bundle itself mentions a topojson URL for geo maps)
    assert text.count('class="plotly-graph-div"') == len(diagnosis_charts(suppressed))
    assert all(s["id"] in text for s in suppressed.samples)
    assert ">suppressed</h2>" in text
    embedded = re.search(r'<script type="application/json" id="diagnosis-data">(.*?)</script>', text, re.S)
    assert embedded and json.loads(embedded.group(1).replace("<\\/", "</")) == suppressed.to_dict()
    assert json.loads(json_path.read_text()) == suppressed.to_dict()


def _report_cli() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="erasure")
    add_parser(parser.add_subparsers(dest="verb", required=True), None)
    return parser


def test_report_cli(small_study, retrained, tmp_path, capsys):
    out, data = tmp_path / "r.html", tmp_path / "r.json"
    args = _report_cli().parse_args(["report", str(small_study.root), "--model", "zoo_retrain_1", "--out", str(out),
                                     "--json", str(data)])
    args.fn(args)
    printed = capsys.readouterr().out
    assert printed.startswith("zoo_retrain_1: erased") and str(out) in printed
    assert out.stat().st_size > 1_000_000 and json.loads(data.read_text())["verdict"] == "erased"
    # the fitted verdict (analysis/verdict/rule.json) on an N member of the zoo: erased, in text, JSON and HTML
    assert "fitted verdict: erased" in printed
    assert json.loads(data.read_text())["fitted_verdict"]["verdict"] == "erased"
    assert "Fitted verdict: erased" in out.read_text()
    args = _report_cli().parse_args(["report", str(small_study.root), "--model", "zoo_retrain_1", "--out", str(out),
                                     "--json"])
    args.fn(args)
    obj = json.loads(capsys.readouterr().out)
    assert obj["diagnosis"]["verdict"] == "erased" and obj["html"] == str(out)


@pytest.mark.parametrize(("argv", "error", "match"), [
    (["--model", "nope"], StudyError, "unknown model 'nope'"),
    (["--model", "original"], AnalysisInputError, "not the original"),
    (["--model", "retrain"], AnalysisInputError, "reference retrain control"),
    (["--model", "zoo_retrain_1", "--out", "{tmp}/missing/r.html"], ReportError, "does not exist"),
    (["--model", "zoo_retrain_1", "--out", "{tmp}"], ReportError, "is a directory"),
    (["--model", "zoo_retrain_1", "--json", "{tmp}/r.html"], ReportError, "different files"),
])
def test_report_cli_errors(small_study, tmp_path, argv, error, match):
    argv = [a.format(tmp=tmp_path) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "r.html")]
    args = _report_cli().parse_args(["report", str(small_study.root), *argv])
    with pytest.raises(error, match=match):
        args.fn(args)
    assert not (tmp_path / "r.html").exists()


@pytest.fixture
def erasure(monkeypatch):
    """analysis.cli.main with `erasure report` registered (as the lead wires it into ANALYSIS_VERBS)."""
    import analysis.cli as cli

    monkeypatch.setattr(cli, "ANALYSIS_VERBS", tuple(dict.fromkeys((*cli.ANALYSIS_VERBS, "analysis.diagnosis.cli"))))
    return cli.main


def test_erasure_report_one_line_errors(small_study, retrained, erasure, tmp_path, capsys):
    study = str(small_study.root)
    assert erasure(["report", study, "--model", "zoo_retrain_1", "--out", str(tmp_path / "r.html"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["diagnosis"]["verdict"] == "erased"
    for argv, match in ((["--model", "nope"], "unknown model 'nope'"), (["--model", "original"], "not the original"),
                        (["--model", "retrain"], "reference retrain control"),
                        (["--model", "zoo_retrain_1", "--out", str(tmp_path / "no" / "r.html")], "does not exist")):
        out = ["--out", str(tmp_path / "x.html")] if "--out" not in argv else []
        assert erasure(["report", study, *argv, *out]) == 2
        err = capsys.readouterr().err
        assert err.startswith("erasure: error: ") and match in err and err.count("\n") == 1, err


def test_unwritable_output(suppressed, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # (root may write anywhere: then only the failure below is checked)
            with pytest.raises(ReportError, match="not writable"):
                write_report(suppressed, locked / "r.html")
    finally:
        locked.chmod(0o700)

    def read_only(self: Path, *args: object, **kwargs: object) -> int:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "write_text", read_only)
    with pytest.raises(ReportError, match="could not write .*Read-only file system"):
        write_report(suppressed, tmp_path / "r.html")
    assert not list(tmp_path.glob("*r.html*"))


def test_bad_models(small_study):
    with pytest.raises(AnalysisInputError, match="not the original"):
        diagnose(small_study, "original", TEST_OPTS)
    with pytest.raises(StudyError, match="unknown model"):
        diagnose(small_study, "no-such-model", TEST_OPTS)


def test_without_retrain_control_the_sae_signal_is_unavailable(small_study, monkeypatch):
    monkeypatch.setattr(small_study.manifest, "retrain", None)
    d = diagnose(small_study, "npo", TEST_OPTS, use_store=False)
    assert d.signals["sae"].reading == "unavailable" and "retrain control" in d.signals["sae"].summary
    assert d.verdict != "erased"  # erasure needs the SAE's judgement against the control
    assert any(line.startswith("The SAE: unavailable") and "retrain control" in line for line in d.agreement["silent"])


def _signal(name: str, reading: str) -> Signal:
    return Signal(name, name, reading, f"{name} reads {reading}")


@pytest.mark.parametrize(("readings", "verdict"), [
    ({"outputs": "present", "sae": "present"}, "not unlearned"),
    ({"outputs": "gone", "sae": "gone", "emphasis": "present"}, "suppressed"),
    ({"outputs": "inconclusive", "sae": "inconclusive", "trace": "present"}, "suppressed"),
    ({"outputs": "gone", "sae": "gone", "emphasis": "gone", "trace": "inconclusive"}, "erased"),
    ({"outputs": "gone", "sae": "inconclusive", "emphasis": "gone"}, "inconclusive"),
    ({"outputs": "unavailable", "sae": "present"}, "inconclusive"),
])
def test_summary_rule(readings, verdict):
    signals = {k: _signal(k, v) for k, v in readings.items()}
    assert summary_verdict(signals)[0] == verdict
    a = agreement(signals)
    n_present = sum(v == "present" for v in readings.values())
    n_gone = sum(v == "gone" for v in readings.values())
    assert len(a["disagree"]) == n_present * n_gone


def test_retain_collapse_is_a_caveat():
    outputs = Signal("outputs", "outputs", "gone", "", numbers={"retain_acc_original": 1.0, "retain_acc": 0.3})
    assert caveats({"outputs": outputs}) and "0.30" in caveats({"outputs": outputs})[0]
    outputs.numbers["retain_acc"] = 0.95
    assert caveats({"outputs": outputs}) == []


def _page(small_study, monkeypatch, study_root: Path | None = None):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["streamlit"])
    monkeypatch.setenv("ERASURE_STUDY", str(study_root or small_study.root))
    return AppTest.from_string(NAV.format(views=str(VIEWS)), default_timeout=120)


def _fitted_charts(study, model: str) -> int:
    """Charts of the fitted-verdict section (analysis.verdict) the page shows for ``model``: its rulers once the
    rule's signal has been read on the model (else the page offers a button), none otherwise."""
    from analysis.diagnosis.report import fitted_html, fitted_verdict
    from analysis.validation.runner import stored_reading
    from analysis.verdict.rule import load_rule

    if stored_reading(study, load_rule().signal, model) is None:
        return 0
    return len(fitted_html(fitted_verdict(study, model))[1])


def test_page(small_study, suppressed, monkeypatch):
    at = _page(small_study, monkeypatch).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    options = at.selectbox(key="diag_model").options
    assert "readout_suppression (control)" in options and not any(o.startswith("retrain ") for o in options)
    at.selectbox(key="diag_model").set_value("readout_suppression").run()  # stored: shown at once
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("SUPPRESSED" in m.value for m in at.markdown)
    assert any("readout" in w.value for w in at.warning)  # the disagreement, shown plainly
    assert len(at.get("plotly_chart")) == len(diagnosis_charts(suppressed)) + _fitted_charts(small_study,
                                                                                               "readout_suppression")
    table = at.dataframe[0].value
    assert list(table["id"]) == [s.id for s in small_study.forget]
    # the links carry the diagnosed model, and Causal tracing's the diagnosis's own trace options (so the page
    # shows, and reuses, the trace the diagnosis read)
    from urllib.parse import parse_qs, urlsplit

    from analysis.diagnosis import DiagnosisOptions

    trace = DiagnosisOptions().trace.validated(small_study.load("original").n_layers)
    first = small_study.forget[0].id
    link = urlsplit(table["tracing"].iloc[0])
    query = {k: v[0] for k, v in parse_qs(link.query).items()}
    assert link.path == "tracing" and query == {
        "study": small_study.manifest.name, "sample": first, "model": "readout_suppression", "before": "original",
        "corruption": trace.corruption, "metric": trace.metric, "kinds": ",".join(trace.kinds),
        "window": str(trace.window), "n_samples": str(trace.n_samples), "seed": str(trace.seed)}
    assert "model=readout_suppression" in table["circuits"].iloc[0]
    links = at.get("page_link")
    assert len(links) == 3 and all(f"sample={first}" in link.proto.query_string
                                   and "model=readout_suppression" in link.proto.query_string for link in links)

    at.selectbox(key="diag_f_after").set_value("no").run()
    n_forgotten = int((~suppressed.samples_frame()["correct_after"]).sum())
    assert len(at.dataframe[0].value) == n_forgotten
    at.selectbox(key="diag_open").set_value(str(at.dataframe[0].value["id"].iloc[-1])).run()
    assert all(f"sample={at.dataframe[0].value['id'].iloc[-1]}" in link.proto.query_string
               for link in at.get("page_link"))

    at.selectbox(key="diag_model").set_value("grad_diff").run()  # not diagnosed yet: a button, no work
    assert not at.exception and len(at.get("plotly_chart")) == _fitted_charts(small_study, "grad_diff")
    at.button(key="diag_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert any(d.upper() in m.value for m in at.markdown for d in ("ERASED", "SUPPRESSED", "INCONCLUSIVE"))
    assert stored_diagnosis(small_study, "grad_diff") is not None


def test_page_model_that_fails_to_load(small_study, monkeypatch, tmp_path):
    root = tmp_path / "study"
    shutil.copytree(small_study.root, root, ignore=shutil.ignore_patterns("results.sqlite*", "models", "sae"))
    manifest = json.loads((root / "study.json").read_text())
    for name, entry in manifest["models"].items():
        entry["path"] = str(tmp_path / "gone") if name == "npo" else str(small_study.model_path(name))
    (root / "study.json").write_text(json.dumps(manifest))
    at = _page(small_study, monkeypatch, root).run()
    at.selectbox(key="diag_model").set_value("npo").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("could not be loaded" in e.value for e in at.error), [e.value for e in at.error]
