"""What the URL carries: the study, the model, the sample and the options of a page, so that every link (the
Diagnosis's per-sample links, a copied address) opens the same model with the same options, and reuses the
result the study store holds for them.

Each bound widget reads its ``?param=`` once when the URL changes (later picks in the widget are kept) and
writes its current value back, so the address bar always names what the page shows. The model and sample also
follow the user across pages through the session (``shared``): picking npo on Diagnosis and then opening Causal
tracing from the sidebar shows npo there too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

import streamlit as st

from app.state import plain

if TYPE_CHECKING:
    from analysis.data.schema import Sample
    from analysis.study import Study
    from analysis.tracing import TraceOptions

T = TypeVar("T")
_SHARED = "_context"  # session_state[_SHARED][name]: the model / sample last picked on any page


def _shared() -> dict[str, Any]:
    return st.session_state.setdefault(_SHARED, {})


def _from_url(key: str, param: str, parse: Callable[[str], T | None]) -> None:
    """Apply ``?param=`` to the widget state ``key`` when the URL's value is new (an unparseable one: st.error)."""
    raw = st.query_params.get(param)
    seen = f"_{key}_url"
    if raw is not None and st.session_state.get(seen) != raw:
        value = parse(raw)
        if value is None:
            st.error(f"Ignored {plain(param)}={plain(repr(raw))} in the URL: not a valid choice here.")
        else:
            st.session_state[key] = value
    st.session_state[seen] = raw


def _to_url(key: str, param: str, value: str) -> None:
    """Write the widget's value to the URL, and remember it as seen (so the next run does not re-apply it over a
    newer pick in the widget)."""
    if st.query_params.get(param) != value:
        st.query_params[param] = value
    st.session_state[f"_{key}_url"] = value


def _choice(options: Sequence[T]) -> Callable[[str], T | None]:
    by_text = {str(o): o for o in options}
    return by_text.get


def url_select(label: str, options: Sequence[T], *, key: str, param: str, default: T | None = None,
               shared: str | None = None, container: Any = None, radio: bool = False, **kwargs: Any) -> T:
    """A selectbox (or horizontal radio) bound to ``?param=`` and, with ``shared``, to the choice last made on
    any page; falls back to ``default`` (else the first option)."""
    options = list(options)
    _from_url(key, param, _choice(options))
    if st.session_state.get(key) not in options:
        remembered = _shared().get(shared) if shared else None
        st.session_state[key] = (remembered if remembered in options else
                                 default if default in options else options[0])
    host = container or st
    value = (host.radio(label, options, key=key, horizontal=True, **kwargs) if radio else
             host.selectbox(label, options, key=key, **kwargs))
    _to_url(key, param, str(value))
    if shared:
        _shared()[shared] = value
    return value


def url_multiselect(label: str, options: Sequence[str], *, key: str, param: str, default: Sequence[str],
                    container: Any = None, **kwargs: Any) -> list[str]:
    """A multiselect bound to ``?param=a,b`` (the URL lists the chosen options in their order)."""
    def parse(raw: str) -> list[str] | None:
        chosen = [x for x in raw.split(",") if x]
        return chosen if all(x in options for x in chosen) else None

    _from_url(key, param, parse)
    if key not in st.session_state:
        st.session_state[key] = list(default)
    value = (container or st).multiselect(label, list(options), key=key, **kwargs)
    _to_url(key, param, ",".join(value))
    return value


def url_int(label: str, *, key: str, param: str, default: int, min_value: int, max_value: int | None = None,
            container: Any = None, **kwargs: Any) -> int:
    """A whole-number input bound to ``?param=N`` (out-of-range or non-numeric values: an error, then ignored)."""
    def parse(raw: str) -> int | None:
        try:
            n = int(raw)
        except ValueError:
            return None
        return n if n >= min_value and (max_value is None or n <= max_value) else None

    _from_url(key, param, parse)
    if key not in st.session_state:
        st.session_state[key] = default
    value = (container or st).number_input(label, min_value=min_value, max_value=max_value, step=1, key=key,
                                           **kwargs)
    _to_url(key, param, str(int(value)))
    return int(value)


def sample_picker(study: Study, key: str = "sample", label: str = "Sample (forget set first)",
                  container: Any = None) -> str | None:
    """The sample selectbox of the analysis pages: forget samples first, then the rest; bound to ``?sample=ID``
    and shared across pages. An unknown id in the URL shows an error. None (with st.error) when the study has
    no samples."""
    samples = {s.id: s for s in study.samples()}
    order = [s.id for s in study.forget] + [i for i in samples if samples[i].split != "forget"]
    if not order:
        st.error("This study has no samples.")
        return None
    wanted = st.query_params.get("sample")
    if wanted is not None and wanted not in samples:
        st.error(f"Unknown sample id {plain(repr(wanted))} in the URL (`?sample=`); pick one below.")
        del st.query_params["sample"]

    def fmt(sid: str) -> str:
        s = samples[sid]
        return f"{sid} · {s.prompt} → {s.answer}" + ("" if s.subject else " (no subject)")

    return url_select(label, order, key=key, param="sample", shared="sample", container=container, format_func=fmt)


def url_text(label: str, *, key: str, param: str, default: str = "", container: Any = None, **kwargs: Any) -> str:
    """A text input bound to ``?param=text``."""
    _from_url(key, param, lambda raw: raw)
    if key not in st.session_state:
        st.session_state[key] = default
    value = (container or st).text_input(label, key=key, **kwargs)
    _to_url(key, param, value)
    return value


@dataclass(frozen=True)
class PromptChoice:
    """What an analysis page runs on: a sample of the study (``sample_id``), or a prompt the user typed
    (``typed``: an analysis.typed sample, traced / attributed / circuited by the ``*_typed`` entry points)."""

    sample_id: str | None = None
    typed: Sample | None = None

    @property
    def id(self) -> str:
        return self.sample_id if self.typed is None else self.typed.id


SOURCES = ("study sample", "your own prompt")


def prompt_source(study: Study, key: str, label: str = "Sample (forget set first)", container: Any = None,
                  subject_help: str = "the part of the prompt the model must recall a fact about") -> PromptChoice | None:
    """A study sample (sample_picker) or a typed prompt, subject and answer (all in the URL: ``?source=typed&
    prompt=...&subject=...&answer=...``). None (with st.error) when the typed text is not a usable sample."""
    from analysis.errors import AnalysisInputError
    from analysis.typed import typed_sample

    host = container or st
    source = url_select("Run on", list(SOURCES), key=f"{key}_source", param="source", radio=True, container=host)
    if source == SOURCES[0]:
        sid = sample_picker(study, key=key, label=label, container=host)
        return None if sid is None else PromptChoice(sample_id=sid)
    first = study.forget[0] if study.forget else None
    c1, c2, c3 = host.columns([3, 2, 1])
    prompt = url_text("Prompt", key=f"{key}_prompt", param="prompt", default=first.prompt if first else "",
                      container=c1, help="Any prompt in the model's vocabulary; the answer is what should follow it.")
    subject = url_text("Subject", key=f"{key}_subject", param="subject",
                       default=(first.subject or "") if first else "", container=c2, help=subject_help)
    answer = url_text("Answer", key=f"{key}_answer", param="answer", default=first.answer if first else "",
                      container=c3, help="The expected continuation (several tokens are fine: the analyses use "
                                         "its length-normalised log-probability).")
    try:
        return PromptChoice(typed=typed_sample(prompt, answer, subject or None))
    except AnalysisInputError as e:
        st.error(plain(e))
        return None


def study_param(study: Study) -> None:
    """``?study=NAME``: a link made for another study says so (the app serves one study per server)."""
    wanted = st.query_params.get("study")
    if wanted is not None and wanted != study.manifest.name:
        st.warning(f"This link was made for study {plain(repr(wanted))}; this app serves "
                   f"{plain(repr(study.manifest.name))}. Showing this study's models.")
    st.query_params["study"] = study.manifest.name


def trace_params(model: str, before: str, opts: TraceOptions) -> dict[str, str]:
    """The URL parameters of the Causal tracing page that open ``model`` vs ``before`` with these options."""
    return {"model": model, "before": before, "corruption": opts.corruption, "metric": opts.metric,
            "kinds": ",".join(opts.kinds), "window": str(opts.window), "n_samples": str(opts.n_samples),
            "seed": str(opts.seed)}


def link(page: str, **params: str) -> str:
    """A relative link to a page (its url_path) with these URL parameters."""
    return f"{page}?{urlencode(params)}" if params else page


__all__ = ["SOURCES", "PromptChoice", "link", "prompt_source", "url_text", "sample_picker", "study_param", "trace_params", "url_int", "url_multiselect", "url_select"]
