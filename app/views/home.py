"""Home: the models of the open study, and their next-token predictions for a prompt, side by side."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.errors import AnalysisInputError
from analysis.figures import topk_bars
from analysis.scoring import encode_pair, top_next_tokens
from app.state import get_study, guarded, load_model, plain


def page() -> None:
    st.title("Erasure Workbench")
    st.caption("Did unlearning erase the knowledge, or only suppress it? Compare a model before unlearning "
               "with models after it.")
    study = get_study()
    st.subheader(f"Study: {plain(study.manifest.name)}")
    rows = [{"model": n, "role": (e := study.entry(n)).role, "method": e.method or "",
             "fingerprint": study.fingerprint(n), "path": e.path} for n in study.model_names]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    if study.ruler_names:
        st.caption(f"Plus {len(study.ruler_names)} zoo models (the ruler the Validation page measures the signals "
                   "with; they load by name like any model).")
    counts = {s: len(study.samples(s)) for s in study.manifest.samples}
    st.caption(" · ".join(f"{n} {plain(s)} samples" for s, n in counts.items()))

    st.subheader("Next-token predictions")
    forget = study.forget
    default_prompt = forget[0].prompt if forget else ""
    col1, col2 = st.columns([3, 1])
    prompt = col1.text_input("Prompt", value=default_prompt, key="prompt",
                             help="A forget-set prompt is pre-filled: compare what each model predicts.")
    k = col2.slider("top-k", 3, 20, 8, key="topk")
    defaults = [n for n in ("original", "retrain", "readout_suppression", "npo") if n in study.model_names]
    chosen = st.multiselect("Models", study.model_names, default=defaults or study.model_names[:3], key="models")
    if not prompt.strip():
        st.error("Enter a prompt to see the models' next-token predictions.")
        return
    if not chosen:
        st.warning("Pick at least one model.")
        return
    results = {}
    for name in chosen:
        handle = load_model(name)
        try:
            results[name] = top_next_tokens(handle, prompt, k=k)
        except AnalysisInputError as e:
            st.error(f"{plain(name)}: {plain(e)}")
            return
    roles = {n: study.entry(n).role for n in results}
    match = next((s for s in study.samples() if s.prompt == prompt.strip()), None)
    expected = None
    if match is not None:  # the answer's first token as the models would emit it after this prompt
        h = load_model(chosen[0])
        _, answer_ids = encode_pair(h.tokenizer, match.prompt, match.answer, h.prepend_bos)
        expected = h.tokenizer.decode([answer_ids[0]])
    st.plotly_chart(topk_bars(results, roles=roles, expected=expected), width="stretch", key="topk_chart")
    st.caption("Bar colours by model role (written in each panel's title): teal = original, blue = control "
               "(retrain / readout suppression), vermillion = unlearned." +
               (" The expected answer's bar is outlined in black and marked ✓ expected." if expected else ""))
    if match is not None:
        st.caption(f"Sample {plain(match.id)} ({plain(match.split)}, {plain(match.relation)}): expected answer "
                   f"**{plain(match.answer)}**.")


guarded(page)
