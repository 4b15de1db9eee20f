"""End-to-end walk through the app in a real browser (Playwright + the system Chromium) on the small study:
every page is visited, its main control used, its charts must render and no exception box may appear; then
the bad inputs a user can make (unknown sample id in the URL, empty prompt, a prompt longer than the
model's context, a model directory that fails to load) must each show a clear error, never a traceback.

Full-page screenshots of every page go to $ERASURE_SCREENSHOTS (else the test's tmp dir); the README's
screenshots come from this walk (`ERASURE_SCREENSHOTS=docs/screenshots pytest tests/test_walkthrough.py`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.app_server import running_app
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, IDLE, TIMEOUT_MS, _screenshot, _wait_idle

pytestmark = pytest.mark.browser

EXCEPTION = '[data-testid="stException"]'
ERROR = '[data-testid="stAlertContentError"]'
ATTRIBUTION_GRAD = "input × gradient"
# At least n Plotly charts have drawn their SVG (each chart holds several svg.main-svg layers).
DRAWN_CHARTS = ("n => [...document.querySelectorAll('[data-testid=\"stPlotlyChart\"]')]"
                ".filter(c => c.querySelector('svg.main-svg')).length >= n")


def _settle(page: Any) -> None:
    """Wait until the script run has finished and the charts have been drawn."""
    page.wait_for_timeout(300)  # a rerun triggered by the last interaction has started
    _wait_idle(page)


def _check(page: Any, min_charts: int) -> None:
    assert page.locator(EXCEPTION).count() == 0, page.locator(EXCEPTION).all_inner_texts()
    assert page.locator(ERROR).count() == 0, page.locator(ERROR).all_inner_texts()
    if min_charts:  # charts draw one after another once the script has finished
        page.wait_for_function(DRAWN_CHARTS, arg=min_charts)
    charts = page.locator('[data-testid="stPlotlyChart"]')
    assert charts.count() >= min_charts, f"{charts.count()} charts, expected >= {min_charts}"
    for i in range(charts.count()):  # every chart has drawn its SVG
        assert charts.nth(i).locator("svg.main-svg").count() > 0


def _radio(page: Any, option: str) -> None:
    """Pick a radio option by its label."""
    page.locator('[data-testid="stRadio"]').get_by_text(option, exact=True).click()
    _settle(page)


def _select(page: Any, label: str, option: str) -> None:
    """Pick a selectbox option (Streamlit's selectbox is a combobox labelled by its widget label)."""
    page.get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option, exact=True).click()
    _settle(page)


def _errors(page: Any) -> list[str]:
    return page.locator(ERROR).all_inner_texts()


def _click_if_present(page: Any, name: str) -> None:
    """Press a 'compute' button when the page asks for one (results not yet in the study store)."""
    button = page.get_by_role("button", name=name)
    if button.count():
        button.first.click()
        _settle(page)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"system Chromium not found at {CHROMIUM} (CI installs Debian's chromium)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[[], Any]]:
    pages: list[Any] = []

    def make() -> Any:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.js_errors = errors
        pages.append(page)
        return page

    yield make
    for p in pages:
        assert not p.js_errors, p.js_errors
        p.close()


def _shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("ERASURE_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_walk_every_page(small_study: Any, validated: Any, new_page: Callable[[], Any], tmp_path: Path) -> None:
    from tests.conftest import VALIDATED_SIGNALS

    shots = _shots(tmp_path)
    forget = small_study.forget[0]
    with running_app(small_study.root, log=tmp_path / "streamlit.log") as url:
        page = new_page()

        # Home: type a prompt; the top-k chart is drawn for it.
        page.goto(url)
        _settle(page)
        prompt = page.get_by_label("Prompt", exact=True)
        prompt.fill(small_study.retain[0].prompt)
        prompt.press("Enter")
        page.get_by_text(f"Sample {small_study.retain[0].id}", exact=False).wait_for()
        _settle(page)
        _check(page, 1)
        _screenshot(page, shots / "home.png")
        page.goto(f"{url}/home")  # the default page also answers at /home
        _settle(page)
        assert page.get_by_text("Page not found").count() == 0
        _check(page, 1)

        # Study: the scoreboard; the sample table on the retain split (no unlearning trajectories for it),
        # then back on the forget split with the trajectories.
        page.goto(f"{url}/study")
        _settle(page)
        _radio(page, "retain")
        _check(page, 1)
        _radio(page, "forget")
        _check(page, 4)  # scoreboard, verdict matrix, forget quality vs utility, trajectories
        page.get_by_role("heading", name="Verdict matrix").wait_for()
        matrix = page.locator('[data-testid="stPlotlyChart"]').nth(1)
        assert "Verdict matrix" in matrix.inner_text() and "zoo_retrain_1" in matrix.inner_text()
        assert "erased" in matrix.inner_text() or "suppressed" in matrix.inner_text()
        _screenshot(page, shots / "study.png")

        # Causal tracing: symmetric token replacement, then the forget-set average.
        page.goto(f"{url}/tracing?sample={forget.id}")
        _settle(page)
        _radio(page, "token replacement (STR)")
        _click_if_present(page, "Compute over the forget set")
        _check(page, 4)
        _screenshot(page, shots / "tracing.png")
        # A typed prompt (a paraphrase the study has no sample for), traced on both models.
        _radio(page, "your own prompt")
        for label, text in (("Prompt", forget.paraphrases[0]), ("Subject", forget.subject),
                            ("Answer", forget.answer)):
            box = page.get_by_role("textbox", name=label, exact=True)
            box.fill(text)
            box.press("Enter")
            _settle(page)
        page.get_by_role("heading", name=f"Your prompt: {forget.paraphrases[0]}", exact=False).wait_for()
        _check(page, 3)
        assert "source=" in page.url and "prompt=" in page.url  # the typed prompt is in the address
        _screenshot(page, shots / "tracing_typed.png")

        # Circuits: a smaller circuit with the top-n slider (keyboard on the slider thumb).
        page.goto(f"{url}/circuits?sample={forget.id}")
        _settle(page)
        thumb = page.get_by_role("slider").first
        thumb.focus()
        for _ in range(5):
            thumb.press("ArrowLeft")
        _settle(page)
        _check(page, 2)
        _screenshot(page, shots / "circuits.png")

        # Difficulty: CUD with another distance.
        page.goto(f"{url}/difficulty")
        _settle(page)
        _select(page, "Distance", "jaccard")
        _check(page, 4)
        _screenshot(page, shots / "difficulty.png")

        # Attribution: the gradient method, then the dataset comparison and the recovery.
        page.goto(f"{url}/attribution?sample={forget.id}")
        _settle(page)
        _radio(page, ATTRIBUTION_GRAD)
        _click_if_present(page, "Compare over")
        _click_if_present(page, "Compute recovery")
        _check(page, 3)
        _screenshot(page, shots / "attribution.png")

        # Suppression vs deletion: the SAE the page asks for by default (its training is timed by test_sae; here
        # it is trained beforehand so the page is not timed on a loaded machine); steering mode "add".
        from analysis.sae.options import SAEOptions
        from analysis.sae.train import train_sae

        train_sae(small_study, SAEOptions(layer=small_study.load("original").n_layers // 2))
        page.goto(f"{url}/sae")
        # the page restores every model with the SAE on first view (a background job with a progress bar): on a
        # loaded 2-core machine that took over 3 minutes once, so this wait is longer than the others
        page.wait_for_timeout(300)
        page.wait_for_selector(IDLE, timeout=TIMEOUT_MS * 4)
        _settle(page)
        _click_if_present(page, "Train a TopK SAE")
        _radio(page, "add expert decoder directions")
        _check(page, 2)
        _screenshot(page, shots / "sae.png")

        # Diagnosis: one unlearned model (chosen by the URL), every signal.
        model = "npo" if "npo" in small_study.model_names else small_study.unlearned_names[0]
        page.goto(f"{url}/diagnosis?model={model}")
        _settle(page)
        _click_if_present(page, "Diagnose")
        _click_if_present(page, "Compute sae_probe_gap")  # the fitted verdict's signal (analysis/verdict/rule.json)
        _check(page, 1)
        _screenshot(page, shots / "diagnosis.png")
        # Its sample link opens Causal tracing on the same model with the diagnosis's own trace options, and the
        # page reuses the traces the diagnosis stored (no trace is computed again).
        traces_before = dict(small_study.store.kinds()).get("trace", 0)
        page.get_by_role("link", name=f"Causal tracing ({model})").click()
        page.wait_for_url("**/tracing?*")
        _settle(page)
        _check(page, 3)
        assert f"model={model}" in page.url and "metric=logit_diff_corrupted" in page.url, page.url
        titles = " ".join(page.locator(".gtitle").all_text_contents())
        assert model in titles and "original" in titles, titles
        assert dict(small_study.store.kinds()).get("trace", 0) == traces_before

        # Knowledge signals: patching, logit lens, relearning attack and membership for one unlearned model.
        page.goto(f"{url}/signals")
        _settle(page)
        for button in ("Compute patching", "Compute the logit lens", "Run the attack", "Compute membership"):
            _click_if_present(page, button)
        _check(page, 4)
        _screenshot(page, shots / "signals.png")

        # Validation: the stored meta-evaluation (the `validated` fixture's signals, carried by the URL).
        page.goto(f"{url}/validation?signals={','.join(VALIDATED_SIGNALS)}")
        _settle(page)
        assert page.get_by_role("button", name="Run the meta-evaluation").count() == 0  # found in the store
        _check(page, 3 + len(VALIDATED_SIGNALS))
        _screenshot(page, shots / "validation.png")


def test_bad_inputs_show_clear_errors(small_study: Any, new_page: Callable[[], Any], tmp_path: Path) -> None:
    # A copy of the study whose first unlearned model has a truncated weights file.
    broken_root = tmp_path / "broken"
    shutil.copytree(small_study.root, broken_root, ignore=shutil.ignore_patterns("results.sqlite*", "sae"))
    victim = "npo" if "npo" in small_study.model_names else small_study.unlearned_names[0]
    weights = next((broken_root / small_study.entry(victim).path).glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    n_ctx = int(small_study.load("original").model.cfg.n_ctx)

    with running_app(small_study.root, log=tmp_path / "ok.log") as url:
        page = new_page()
        page.goto(f"{url}/tracing?sample=ghost")  # unknown sample id in the URL
        _settle(page)
        assert any("ghost" in e for e in _errors(page)), _errors(page)
        assert page.locator(EXCEPTION).count() == 0

        page.goto(url)
        _settle(page)
        prompt = page.get_by_label("Prompt", exact=True)
        prompt.fill("")  # empty prompt
        prompt.press("Enter")
        _settle(page)
        assert any("Enter a prompt" in e for e in _errors(page)), _errors(page)
        prompt.fill(" ".join(["the"] * (n_ctx + 5)))  # longer than the model's context
        prompt.press("Enter")
        _settle(page)
        assert any("context" in e for e in _errors(page)), _errors(page)
        assert page.locator(EXCEPTION).count() == 0

    with running_app(broken_root, log=tmp_path / "broken.log") as url:
        page = new_page()
        page.goto(url)  # the Home page loads npo by default
        _settle(page)
        errs = _errors(page)
        assert any(victim in e and "could not be loaded" in e for e in errs), errs
        assert page.locator(EXCEPTION).count() == 0
        _screenshot(page, _shots(tmp_path) / "error_broken_model.png")
