"""The Streamlit app, run headless with AppTest against the small study: pages render, bad inputs
become st.error (never an exception)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

HOME = str(Path(__file__).resolve().parent.parent / "app" / "Home.py")
TIMEOUT = 120  # the pages import torch and load models on first run


@pytest.fixture
def app(small_study, monkeypatch) -> AppTest:
    """AppTest of app/Home.py opening the small study through $ERASURE_STUDY (argv cleared so pytest's
    own arguments are not read as --study)."""
    monkeypatch.setattr(sys, "argv", ["streamlit"])
    monkeypatch.setenv("ERASURE_STUDY", str(small_study.root))
    return AppTest.from_file(HOME, default_timeout=TIMEOUT)


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def _assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_home_renders_models_and_chart(app, small_study):
    at = app.run()
    _assert_clean(at)
    assert not at.error, _errors(at)
    assert at.title[0].value == "Erasure Workbench"
    assert len(at.get("plotly_chart")) == 1
    table = at.dataframe[0].value
    assert list(table["model"]) == small_study.model_names
    assert at.text_input(key="prompt").value == small_study.forget[0].prompt

    retain = small_study.retain[0]
    at.text_input(key="prompt").set_value(retain.prompt).run()
    _assert_clean(at)
    assert not at.error, _errors(at)
    assert len(at.get("plotly_chart")) == 1
    assert any(retain.id in c.value and "retain" in c.value for c in at.caption)

    at.slider(key="topk").set_value(3).run()
    _assert_clean(at)
    assert len(at.get("plotly_chart")) == 1


def test_home_empty_prompt_is_an_error(app):
    at = app.run()
    at.text_input(key="prompt").set_value("   ").run()
    _assert_clean(at)
    assert any("Enter a prompt" in e for e in _errors(at))
    assert not at.get("plotly_chart")


def test_home_prompt_longer_than_context_is_an_error(app):
    at = app.run()
    at.text_input(key="prompt").set_value("cat " * 200).run()
    _assert_clean(at)
    assert any("longer than the model's context" in e for e in _errors(at)), _errors(at)
    assert not at.get("plotly_chart")


def test_home_no_models_chosen_is_a_warning(app):
    at = app.run()
    at.multiselect(key="models").set_value([]).run()
    _assert_clean(at)
    assert any("Pick at least one model" in w.value for w in at.warning)
    assert not at.get("plotly_chart")


def test_missing_study_dir_is_an_error(tmp_path, monkeypatch):
    from app.state import plain

    missing = tmp_path / "no-such-study"
    monkeypatch.setattr(sys, "argv", ["streamlit"])
    monkeypatch.setenv("ERASURE_STUDY", str(missing))
    at = AppTest.from_file(HOME, default_timeout=TIMEOUT).run()
    _assert_clean(at)
    errors = _errors(at)
    assert errors and any(plain(missing.resolve()) in e for e in errors), errors  # escaped: shown as typed
    assert not missing.exists()  # a non-default path is never built into a demo study


def test_study_page(app, small_study):
    at = app.run()
    _assert_clean(at)
    at.switch_page("views/study.py").run()
    _assert_clean(at)
    assert not at.error, _errors(at)
    assert at.title[0].value == "Study"
    board = at.dataframe[0].value
    assert sorted(board["model"]) == sorted(small_study.model_names)
    assert len(board) == len(small_study.model_names)
    charts = at.get("plotly_chart")
    assert len(charts) == 3  # scoreboard, forget quality vs utility, unlearning trajectories (forget split)
    # no signal read on this study yet: the verdict matrix says how to fill it instead of drawing an empty grid
    assert any("No signal has been read" in i.value for i in at.info)
    labels = [x for t in json.loads(charts[1].proto.spec)["data"] for x in (t.get("text") or [])]
    assert sorted(set(labels) & set(small_study.model_names)) == sorted(small_study.model_names)
    traces = {t.get("name") for t in json.loads(charts[2].proto.spec)["data"]}
    assert "retrain" not in traces and "npo" in traces  # retrain has no per-step trajectory to draw
    samples = at.dataframe[1].value
    assert len(samples) == len(small_study.forget)
    assert any(c.startswith("difficulty[") for c in samples.columns)

    at.radio(key="split").set_value("retain").run()
    _assert_clean(at)
    samples = at.dataframe[1].value
    assert len(samples) == len(small_study.retain)
    assert not any(c.startswith("difficulty[") for c in samples.columns)
    assert len(at.get("plotly_chart")) == 2  # no trajectories on the retain split
