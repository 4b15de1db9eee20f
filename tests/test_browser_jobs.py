"""The app in a real browser while it works: a long job in one tab does not freeze another tab, its progress bar
moves by a real fraction, and a demo-study build that was interrupted resumes in the app and ends with a
working app (issue 19). Playwright + the system Chromium, on copies of the small study."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.app_server import running_app
from tests.test_browser import CHART_SVG, TIMEOUT_MS, _screenshot
from tests.test_walkthrough import EXCEPTION, _errors, _settle, _shots, browser, new_page  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser

PROGRESS = '[data-testid="stProgress"] [role="progressbar"]'
# The fraction a progress bar shows (aria-valuenow, 0-100), or -1 while none is on the page.
PROGRESS_NOW = (f"() => {{ const b = document.querySelector('{PROGRESS}'); "
                "return b ? Number(b.getAttribute('aria-valuenow')) : -1; }")


def _copy(small_study: Any, dest: Path) -> Path:
    shutil.copytree(small_study.root, dest, ignore=shutil.ignore_patterns("sae"))
    return dest


def test_long_job_does_not_freeze_another_tab(small_study: Any, new_page: Callable[[], Any],  # noqa: F811
                                              tmp_path: Path) -> None:
    root = _copy(small_study, tmp_path / "study")
    with running_app(root, log=tmp_path / "streamlit.log") as url:
        first = new_page()
        first.goto(f"{url}/sae")
        _settle(first)
        steps = first.get_by_role("spinbutton", name="training steps")
        steps.fill("20000")  # long enough to still be running when the second tab has finished
        steps.press("Enter")
        _settle(first)
        first.get_by_role("button", name="Train a TopK SAE").click()
        first.wait_for_selector(PROGRESS)
        # the bar moves by SAE training steps (a real fraction), not a spinner
        first.wait_for_function(f"() => ({PROGRESS_NOW})() > 0", timeout=TIMEOUT_MS)
        assert "training the SAE" in first.locator('[data-testid="stProgress"]').inner_text()

        second = new_page()
        t0 = time.monotonic()
        second.goto(url)
        _settle(second)
        second.wait_for_selector(CHART_SVG)
        seconds = time.monotonic() - t0
        assert second.locator(EXCEPTION).count() == 0 and not _errors(second)
        assert second.locator(".js-plotly-plot .bars .point").count() > 0
        # Home is complete while the SAE is still training in the first tab: the tabs do not wait on each other
        still = first.evaluate(PROGRESS_NOW)
        assert 0 < still < 100, f"the first tab's job is no longer running ({still}); Home took {seconds:.1f} s"
        print(f"second tab: Home rendered in {seconds:.1f} s while the first tab's SAE training was at {still}%")
        _screenshot(first, _shots(tmp_path) / "long_job.png")


def test_interrupted_demo_build_resumes(small_study: Any, new_page: Callable[[], Any],  # noqa: F811
                                        tmp_path: Path) -> None:
    """What a server stopped half-way through the first-run build leaves: the manifest without the last demo
    model, that model's directory half-written, the study not marked complete. The app resumes the build
    (only the missing model is trained again), says so while it runs, and then works."""
    from analysis.demo import DEMO_MODELS, demo_complete
    from analysis.study import MANIFEST, Study

    root = _copy(small_study, tmp_path / "demo")
    last = list(DEMO_MODELS)[-1]
    manifest = json.loads((root / MANIFEST).read_text())
    del manifest["models"][last]
    manifest["extra"] |= {"complete": False, "build": {"organism_steps": 300, "unlearn_steps": None}}
    (root / MANIFEST).write_text(json.dumps(manifest))
    for f in (root / "models" / last).iterdir():  # keep a truncated weights file, as a killed save leaves it
        if f.suffix != ".safetensors":
            f.unlink()
    weights = next((root / "models" / last).glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:64])
    assert not demo_complete(Study.open(root))

    with running_app(root, log=tmp_path / "streamlit.log") as url:
        page = new_page()
        page.goto(url)
        page.get_by_text("Resuming the interrupted build of the demo study").wait_for()
        page.wait_for_selector(PROGRESS)
        page.wait_for_selector(CHART_SVG, timeout=TIMEOUT_MS * 3)  # Home's chart: the build is done
        _settle(page)
        assert page.get_by_text("Resuming the interrupted build").count() == 0  # the banner went
        assert page.locator(EXCEPTION).count() == 0 and not _errors(page), _errors(page)
        _screenshot(page, _shots(tmp_path) / "resumed_build.png")
    study = Study.open(root)
    assert demo_complete(study) and last in study.model_names
    assert study.load(last).n_layers > 0  # the rebuilt weights load
