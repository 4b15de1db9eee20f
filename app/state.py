"""Shared app state: which study is open, cached study and model handles, error display, and ``plain``: the one
way user text (anything from the study's files or the URL) reaches Streamlit's markdown."""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import streamlit as st
from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException

from analysis.errors import WorkbenchError
from app.jobs import Job, JobRegistry, ProgressFn

if TYPE_CHECKING:
    from analysis.models import ModelHandle
    from analysis.study import Study

DEFAULT_STUDY = "studies/demo"
T = TypeVar("T")
# What can start markdown in Streamlit (CommonMark + GFM + Streamlit's own): code, emphasis, strikethrough,
# links and images, autolinks and HTML, entities, math, tables, headings, e-mail autolinks, and ':' for URL
# schemes (http://), emoji codes and directives (:red[...], :material/...:). Apostrophes, quotes, '-', '.', '/'
# stay as they are (they start nothing inside a line), so messages and ids read normally in the page source.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_~\[\]<>&$|#@:])")
_WWW = re.compile(r"(www)\.", re.IGNORECASE)  # GFM's www. autolinks
_LINE_START = re.compile(r"^(\s*\d*)([-+=.)])")  # a list item or heading underline at the start of the text


def plain(text: object) -> str:
    """``text`` escaped for Streamlit's markdown, so that it shows exactly as typed: a sample's prompt, answer or
    subject, an id, a model or study name, an error message (which quotes such values) - anything from the
    study's files or the URL. The characters that can start markdown are backslash-escaped (CommonMark lets any
    ASCII punctuation be), so no image, link, autolink, HTML tag, emphasis, heading, list, code span, math ($) or
    directive can come out of it; line breaks become spaces. Every st.markdown / st.caption / st.error / ... body,
    widget or metric label and progress text that interpolates such values passes them through here."""
    one_line = str(text).replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    escaped = _WWW.sub(r"\1\\.", _MARKDOWN_SPECIAL.sub(r"\\\1", one_line))
    return _LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), escaped, count=1)


def study_path() -> Path:
    """--study on the command line (`erasure app`), else $ERASURE_STUDY, else studies/demo."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--study", default=None)
    args, _ = parser.parse_known_args(sys.argv[1:])
    return Path(args.study or os.environ.get("ERASURE_STUDY") or DEFAULT_STUDY).expanduser().resolve()


@st.cache_resource(show_spinner=False)
def _open_study(path: str) -> Study:
    from analysis.study import Study

    return Study.open(path)


@st.cache_resource(show_spinner=False)
def jobs() -> JobRegistry:
    """The background jobs of this app server (shared by every tab and session)."""
    return JobRegistry()


def wait_for(job: Job, label: str, delay_s: float = 0.3) -> Any:
    """Wait for a background job, with a progress bar of its own fraction and message (shown only when the job
    takes longer than ``delay_s``, so instant results do not flash a bar). Returns its result; re-raises its
    error. A page left while waiting stops here (Streamlit stops the run at its next call); the job goes on."""
    if not job.done.wait(delay_s):
        bar = st.progress(job.fraction, text=plain(f"{label}: {job.message}"))
        while not job.done.wait(0.25):
            bar.progress(job.fraction, text=plain(f"{label}: {job.message} ({job.elapsed:.0f} s)"))
        bar.empty()
    if job.error is not None:
        raise job.error
    return job.result


def run_job(key: str, label: str, fn: Callable[[Study, ProgressFn], T], delay_s: float = 0.3) -> T:
    """``fn(study, progress)`` as a background job (app.jobs) on its own instance of the open study, keyed by
    ``key`` within it: every tab asking for the same key waits on the same job and sees its progress."""
    path = study_path()

    def work(progress: ProgressFn) -> T:
        with _borrowed_study(path) as study:
            return fn(study, progress)

    return wait_for(jobs().submit(f"{path}::{key}", label, work), label, delay_s)


def _build_demo_job(path: Path, fresh: bool) -> Any:
    """The build (or resumed build) of the demo study at ``path`` as a background job."""
    from analysis.demo import build_demo, demo_build_args

    def work(progress: ProgressFn) -> None:
        if fresh:
            build_demo(path, progress=progress)
        else:
            from analysis.study import Study

            build_demo(path, **demo_build_args(Study.open(path)), progress=progress)

    return jobs().submit(f"{path}::build_demo", "building the demo study", work)


def get_study() -> Study:
    """The open Study. The built-in demo study is built on first run, and a build that was interrupted (the
    server stopped half-way) is resumed: as a background job with a progress bar (every tab shows the same
    one), and a banner that goes once the study is ready. `make app` / `erasure app` build it in the terminal
    before serving, so the app usually finds it complete."""
    from analysis.demo import demo_complete
    from analysis.study import MANIFEST

    path = study_path()
    exists = (path / MANIFEST).exists()
    if exists:
        try:
            study = _open_study(str(path))
        except WorkbenchError as e:
            st.error(plain(e))
            st.stop()
        if not study.manifest.extra.get("builtin") or demo_complete(study):
            return study
    elif not (path == Path(DEFAULT_STUDY).resolve() or os.environ.get("ERASURE_BUILD_DEMO") == "1"):
        st.error(f"No study at {plain(path)}. Create one with `erasure study create` or `erasure demo --out` "
                 f"{plain(path)}.")
        st.stop()
    banner = st.empty()
    banner.info(("Resuming the interrupted build of the demo study (models already built are kept)." if exists else
                 "First run: building the built-in demo study (the organism, the unlearned models and the zoo); "
                 "it happens once. `erasure demo` builds it from a terminal.") + " Other tabs show the same build.")
    try:
        wait_for(_build_demo_job(path, fresh=not exists), "building the demo study", delay_s=0.0)
    except WorkbenchError as e:
        banner.empty()
        st.error(f"Building the demo study failed: {plain(e)}. Reload the page to resume it, or run `erasure demo "
                 f"--out {plain(path)}` in a terminal.")
        st.stop()
    banner.empty()
    _open_study.clear()
    try:
        return _open_study(str(path))
    except WorkbenchError as e:
        st.error(plain(e))
        st.stop()


@st.cache_resource(show_spinner="Loading model…", max_entries=16)
def _load(path: str, name: str, fingerprint: str) -> ModelHandle:
    # Keyed by the model's current fingerprint (rechecked against its files), so replaced weights load anew.
    return _open_study(path).load(name)


def load_model(name: str) -> ModelHandle:
    """A cached ModelHandle of the open study; shows st.error and stops the page if it fails to load."""
    try:
        path = str(study_path())
        return _load(path, name, _open_study(path).fingerprint(name))
    except WorkbenchError as e:
        st.error(f"Model {plain(repr(name))} could not be loaded: {plain(e)}")
        st.stop()


def guarded(fn: Callable[[], Any]) -> Any:
    """Run a page body: user-facing errors become st.error, anything else a short message (never a raw
    traceback in the page; the traceback goes to the server log). Page runs are not serialised: a page's
    computations run as background jobs on their own models (run_job), so pages and tabs never wait on each other."""
    try:
        return fn()
    except WorkbenchError as e:
        st.error(plain(e))
    except ScriptControlException:  # st.stop / st.rerun must propagate
        raise
    except Exception as e:  # noqa: BLE001 - last line of defence for the UI
        traceback.print_exc()
        st.error(f"Unexpected error ({type(e).__name__}): {plain(e)}")
    return None


def run_per_model(names: list[str], compute: Callable[[Study, str, ProgressFn], Any], key: str, text: str
                  ) -> dict[str, Any] | None:
    """``compute(study, name, progress)`` for each model, each a background job (run_job, keyed by ``key`` and
    the model), under one overall progress bar: (models done + this model's fraction) / models. A
    WorkbenchError becomes st.error and None."""
    bar = st.empty()
    out: dict[str, Any] = {}
    try:
        for i, name in enumerate(names):
            job = jobs().submit(f"{study_path()}::{key}::{name}", f"{text}: {name}",
                                lambda progress, _n=name: _in_worker_study(compute, _n, progress))
            if not job.done.wait(0.3):
                while not job.done.wait(0.25):
                    bar.progress(min(1.0, (i + job.fraction) / len(names)),
                                 text=plain(f"{text} · {name} ({i + 1}/{len(names)}): {job.message}"))
            if job.error is not None:
                raise job.error
            out[name] = job.result
    except WorkbenchError as e:
        st.error(plain(e))
        return None
    finally:
        bar.empty()
    return out


# Study instances that background jobs have finished with, by study path: a job borrows one (so the models it
# loaded are reused) and has it alone while it runs (so no two jobs share model objects). Module-level, not
# st.cache_resource: worker threads have no Streamlit script context.
_IDLE_STUDIES: dict[str, list[Study]] = {}
_POOL_LOCK = threading.Lock()


@contextmanager
def _borrowed_study(path: Path) -> Iterator[Study]:
    from analysis.study import Study

    with _POOL_LOCK:
        idle = _IDLE_STUDIES.setdefault(str(path), [])
        study = idle.pop() if idle else None
    if study is None:
        study = Study.open(path)
    try:
        yield study
    finally:
        with _POOL_LOCK:
            _IDLE_STUDIES[str(path)].append(study)


def _in_worker_study(compute: Callable[[Study, str, ProgressFn], Any], name: str, progress: ProgressFn) -> Any:
    with _borrowed_study(study_path()) as study:
        return compute(study, name, progress)


def compute_button(label: str, key: str, help: str | None = None) -> bool:
    """A button that asks to compute something not in the study store yet; it disappears once pressed (the
    results that follow take its place) instead of staying above them."""
    slot = st.empty()
    if slot.button(label, key=key, help=help, type="primary"):
        slot.empty()
        return True
    return False
