"""Entry point: `erasure app` / `make app` run `streamlit run app/Home.py -- --study DIR`."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent  # pages live in views/, not pages/: only st.navigation defines them
if str(ROOT.parent) not in sys.path:  # running from a source checkout without installing
    sys.path.insert(0, str(ROOT.parent))

st.set_page_config(page_title="Erasure Workbench", page_icon="🧽", layout="wide")

PAGES = [
    st.Page(str(ROOT / "views" / "home.py"), title="Home", icon="🏠", default=True, url_path="overview"),
    # the default page is served at "/" only; /home (a natural address to type or bookmark) opens it too
    st.Page(str(ROOT / "views" / "home.py"), title="Home", icon="🏠", url_path="home", visibility="hidden"),
    st.Page(str(ROOT / "views" / "study.py"), title="Study", icon="📊", url_path="study"),
    st.Page(str(ROOT / "views" / "tracing.py"), title="Causal tracing", icon="🔬", url_path="tracing"),
    st.Page(str(ROOT / "views" / "circuits.py"), title="Circuits", icon="🕸️", url_path="circuits"),
    st.Page(str(ROOT / "views" / "difficulty.py"), title="Difficulty", icon="🧗", url_path="difficulty"),
    st.Page(str(ROOT / "views" / "attribution.py"), title="Attribution", icon="🔎", url_path="attribution"),
    st.Page(str(ROOT / "views" / "sae.py"), title="Suppression vs deletion", icon="🧠", url_path="sae"),
    st.Page(str(ROOT / "views" / "signals.py"), title="Knowledge signals", icon="🧪", url_path="signals"),
    st.Page(str(ROOT / "views" / "diagnosis.py"), title="Diagnosis", icon="🩺", url_path="diagnosis"),
    st.Page(str(ROOT / "views" / "validation.py"), title="Validation", icon="⚖️", url_path="validation"),
]
st.navigation(PAGES).run()
