"""Session-scoped fixtures: a small organism and a small study, built once and shared by all tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SMALL_PEOPLE = 40
SMALL_STEPS = 300  # organism steps for the small study (reaches ~full recall on 40 people)
SMALL_UNLEARN_STEPS = None  # each method's own default steps


@pytest.fixture(scope="session")
def small_corpus():
    from analysis.data.corpus import build_corpus

    return build_corpus(seed=0, n_people=SMALL_PEOPLE)


@pytest.fixture(scope="session")
def small_study(tmp_path_factory: pytest.TempPathFactory, small_corpus):
    """The demo study at test size: every demo model, trained and unlearned for real.

    For development only, ``ERASURE_TEST_STUDY=DIR`` copies an already built small study instead of
    building one (CI never sets it, so CI always builds from scratch)."""
    from analysis.demo import build_demo

    root = tmp_path_factory.mktemp("study") / "demo"
    prebuilt = os.environ.get("ERASURE_TEST_STUDY")
    if prebuilt:
        shutil.copytree(prebuilt, root, ignore=shutil.ignore_patterns("results.sqlite*"))
    study, _ = build_demo(root, seed=0, n_people=SMALL_PEOPLE, organism_steps=SMALL_STEPS,
                          unlearn_steps=SMALL_UNLEARN_STEPS)
    return study


@pytest.fixture(scope="session")
def organism_dir(small_study) -> Path:
    return small_study.model_path("original")


@pytest.fixture(scope="session")
def organism(small_study):
    return small_study.load("original")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one intra-op thread is as fast, and far faster on a CPU shared with other jobs. Modules
    opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


VALIDATED_SIGNALS = ("emphasis_recovery", "output_forget_acc")  # cheap ones, in the results' order (by name)


@pytest.fixture(scope="session")
def validated(small_study):
    """One meta-evaluation of the small study's zoo with two cheap signals (robustness on: the page's default),
    stored in the study: tests/test_validation.py reads it, the browser walkthrough opens it on the Validation
    page (``?signals=...``)."""
    from analysis.validation import runner
    from analysis.validation.options import ValidationOptions

    opts = ValidationOptions(signals=VALIDATED_SIGNALS)
    return small_study, opts, runner.validate(small_study, opts)
