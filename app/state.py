"""Shared app state: which study is open, cached study and model handles, error display, and ``plain``: the one
way user text (anything from the study's files or the URL) reaches Streamlit's markdown."""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st
from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException

from analysis.errors import WorkbenchError

if TYPE_CHECKING:
    from analysis.models import ModelHandle
    from analysis.study import Study

DEFAULT_STUDY = "studies/demo"
# One page script computes at a time. The analyses add TransformerLens hooks to, and switch graph-mode flags
# on, model objects shared through the caches below; when a widget change reruns a page while the previous
# run is still computing on the same model, the two runs would see each other's hooks (found by the
# end-to-end browser walk: EAP-IG failed with a shape mismatch). The previous run stops at its next
# Streamlit call (a progress update), so the wait is short.
_RUN_LOCK = threading.RLock()
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


def get_study() -> Study:
    """The open Study; builds the built-in demo study on first run (with a progress bar)."""
    from analysis.study import MANIFEST

    path = study_path()
    if not (path / MANIFEST).exists():
        is_default = path == Path(DEFAULT_STUDY).resolve() or os.environ.get("ERASURE_BUILD_DEMO") == "1"
        if not is_default:
            st.error(f"No study at {plain(path)}. Create one with `erasure study create` or `erasure demo --out` "
                     f"{plain(path)}.")
            st.stop()
        st.info("First run: building the built-in demo study (organism + unlearned models). This takes a few "
                "minutes on a laptop CPU and happens once.")
        bar = st.progress(0.0, text="starting")
        from analysis.demo import build_demo

        try:
            build_demo(path, progress=lambda f, m: bar.progress(min(1.0, max(0.0, f)), text=plain(m)))
        except WorkbenchError as e:
            st.error(f"Building the demo study failed: {plain(e)}")
            st.stop()
        bar.empty()
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
    traceback in the page; the traceback goes to the server log). Page runs are serialised (_RUN_LOCK)."""
    try:
        with _RUN_LOCK:
            return fn()
    except WorkbenchError as e:
        st.error(plain(e))
    except ScriptControlException:  # st.stop / st.rerun must propagate
        raise
    except Exception as e:  # noqa: BLE001 - last line of defence for the UI
        traceback.print_exc()
        st.error(f"Unexpected error ({type(e).__name__}): {plain(e)}")
    return None


def sample_picker(study: Study, key: str = "sample", label: str = "Sample (forget set first)",
                  container: Any = None) -> str | None:
    """The sample selectbox shared by the analysis pages: forget samples first, then the rest; a
    ``?sample=ID`` in the URL selects that sample once (later picks in the box are kept), and an unknown
    id shows an error. Returns the chosen id, or None (with st.error) when the study has no samples."""
    samples = {s.id: s for s in study.samples()}
    order = [s.id for s in study.forget] + [i for i in samples if samples[i].split != "forget"]
    if not order:
        st.error("This study has no samples.")
        return None
    wanted = st.query_params.get("sample")
    if wanted is not None and wanted not in samples:
        st.error(f"Unknown sample id {plain(repr(wanted))} in the URL (`?sample=`); pick one below.")
        wanted = None
    if wanted is not None and st.session_state.get(f"_{key}_param") != wanted:
        st.session_state[key] = wanted
    st.session_state[f"_{key}_param"] = wanted
    if st.session_state.get(key) not in samples:
        st.session_state[key] = order[0]

    def fmt(sid: str) -> str:
        s = samples[sid]
        return f"{sid} · {s.prompt} → {s.answer}" + ("" if s.subject else " (no subject)")

    return (container or st).selectbox(label, order, key=key, format_func=fmt)


def run_per_model(names: list[str], compute: Callable[[str, Callable[[float, str], None]], Any],
                  show_progress: bool, text: str) -> dict[str, Any] | None:
    """``compute(name, progress)`` for each model under one overall progress bar (shown only when
    ``show_progress``, i.e. something is not in the study store yet). A WorkbenchError becomes st.error
    and None."""
    bar = st.progress(0.0, text=text) if show_progress else None
    out: dict[str, Any] = {}
    try:
        for i, name in enumerate(names):
            def progress(frac: float, msg: str, _i: int = i) -> None:
                if bar is not None:
                    bar.progress(min(1.0, (_i + frac) / len(names)), text=plain(msg))

            out[name] = compute(name, progress)
    except WorkbenchError as e:
        st.error(plain(e))
        return None
    finally:
        if bar is not None:
            bar.empty()
    return out
