"""The app in a real browser (Playwright + the system Chromium) against the small study: the Home chart
renders and re-renders for a typed prompt, the Study page draws its scoreboard. Full-page screenshots go
to $ERASURE_SCREENSHOTS (else the test's tmp dir) as home.png and study.png."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.app_server import running_app

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
CHART_SVG = '[data-testid="stPlotlyChart"] .js-plotly-plot svg.main-svg'
TIMEOUT_MS = 180_000  # first run loads torch and the models


def _wait_idle(page) -> None:
    """Streamlit has finished the script run (a run has started first: the app element exists)."""
    page.wait_for_selector(IDLE, timeout=TIMEOUT_MS)
    page.wait_for_load_state("networkidle")


def _screenshot(page, path: Path) -> None:
    """The whole page: Streamlit scrolls inside its main element, not the document, so a full-page
    screenshot alone stops at the viewport; grow the viewport to the content height first."""
    size = page.viewport_size
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], height)})
    page.wait_for_timeout(500)  # let the charts re-layout
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)


def _tokens(page) -> list[str]:
    """The token labels of the Home top-k chart, in drawing order."""
    return page.locator('[data-testid="stPlotlyChart"] .ytick text').all_text_contents()


def _no_exception(page) -> None:
    boxes = page.locator('[data-testid="stException"]')
    assert boxes.count() == 0, boxes.all_inner_texts()


def test_app_in_browser(small_study, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(
            f"system Chromium not found at {CHROMIUM} (CI installs Debian's chromium; "
            "`apt-get install chromium` to run this test)"
        )
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    shots = Path(os.environ.get("ERASURE_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)

    with running_app(small_study.root, log=tmp_path / "streamlit.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))

            page.goto(url)
            _wait_idle(page)
            page.wait_for_selector(CHART_SVG)
            _no_exception(page)
            assert page.locator('[data-testid="stPlotlyChart"]').count() == 1
            assert page.locator(".js-plotly-plot .bars .point").count() > 0
            assert page.get_by_text(f"Study: {small_study.manifest.name}").is_visible()

            # A new prompt: the script reruns and the chart is drawn again for it.
            old_points = page.locator(".js-plotly-plot .bars .point").count()
            old_tokens = _tokens(page)
            prompt = page.get_by_label("Prompt", exact=True)
            retain = small_study.retain[0]
            prompt.fill(retain.prompt)
            prompt.press("Enter")
            page.get_by_text(f"Sample {retain.id}", exact=False).wait_for()
            _wait_idle(page)
            page.wait_for_selector(CHART_SVG)
            _no_exception(page)
            assert page.locator('[data-testid="stAlertContentError"]').count() == 0
            assert page.locator(".js-plotly-plot .bars .point").count() == old_points
            assert _tokens(page) != old_tokens  # new predictions, not the old chart left in place
            _screenshot(page, shots / "home.png")

            page.goto(f"{url}/study")
            _wait_idle(page)
            page.get_by_role("heading", name="Scoreboard").wait_for()
            page.wait_for_selector(CHART_SVG)
            _no_exception(page)
            # scoreboard, forget quality vs utility, trajectories (+ the verdict matrix once signals are read)
            assert page.locator('[data-testid="stPlotlyChart"]').count() in (3, 4)
            # one bar per model and metric (forget, paraphrase, retain, utility) on the scoreboard chart
            bars = page.locator('[data-testid="stPlotlyChart"]').first.locator(".barlayer .point")
            assert bars.count() == 4 * len(small_study.model_names)
            _screenshot(page, shots / "study.png")
            assert not errors, errors
        finally:
            browser.close()
