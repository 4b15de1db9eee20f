"""Screenshots of every app page on any study, in a real browser (Playwright + the system Chromium): the pages of
the README come from tests/test_walkthrough.py on the organism; this command takes the same walk on a study of
your own (docs/screenshots/smollm2/ comes from the real SmolLM2 study):

    python -m benchmarks.app_screenshots studies/smollm2 --out docs/screenshots/smollm2 [--model npo]

Each page is opened, its compute buttons pressed when the results are not in the study's store yet (on a 135M
model a first view can take minutes: the wait per page is ``--page-timeout``), and the page must show no exception
box and no error before its full-page screenshot is taken. Prints one line per page with the seconds it took;
exits 1 naming the pages that failed (their screenshots are still written, for a look at what went wrong).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from analysis.study import Study
from tests.app_server import running_app
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, IDLE, _screenshot

EXCEPTION = '[data-testid="stException"]'
ERROR = '[data-testid="stAlertContentError"]'
# The buttons a page shows when what it draws is not in the store yet (app/views/*.py).
COMPUTE_BUTTONS = ("Compute over the forget set", "Compare over", "Compute recovery", "Train a TopK SAE", "Diagnose",
                   "Compute sae_probe_gap", "Compute patching", "Compute the logit lens", "Run the attack",
                   "Compute membership")


def _idle(page: Any, timeout_ms: int) -> None:
    page.wait_for_timeout(400)  # a rerun triggered by the last interaction has started
    page.wait_for_selector(IDLE, timeout=timeout_ms)
    page.wait_for_load_state("networkidle", timeout=timeout_ms)


def _press_compute(page: Any, timeout_ms: int, skip: tuple[str, ...] = ()) -> list[str]:
    pressed = []
    for name in COMPUTE_BUTTONS:
        if name in skip:
            continue
        button = page.get_by_role("button", name=name)
        if button.count():
            button.first.click()
            _idle(page, timeout_ms)
            pressed.append(name)
    return pressed


def _problems(page: Any) -> list[str]:
    return [*page.locator(EXCEPTION).all_inner_texts(), *page.locator(ERROR).all_inner_texts()]


def walk(study_dir: Path, out: Path, model: str | None, page_timeout_s: float, log: Path,
         skip: tuple[str, ...] = (), only: tuple[str, ...] = (), signals: tuple[str, ...] = ()) -> dict[str, Any]:
    """Visit every page (see the module docstring); returns per page: seconds, buttons pressed, problems."""
    from playwright.sync_api import sync_playwright

    study = Study.open(study_dir)
    forget = study.forget[0]
    known = next((s for s in study.samples() if s.split == "utility" and s.subject), None)
    model = model or ("npo" if "npo" in study.model_names else study.unlearned_names[0])
    timeout_ms = int(page_timeout_s * 1000)
    pages: list[tuple[str, str, Callable[[Any], None] | None]] = [
        ("home", "", _type_prompt(known.prompt if known else forget.prompt)),
        ("study", "study", None),
        ("tracing", f"tracing?sample={quote(forget.id)}&model={quote(model)}", None),
        *([("tracing_known", f"tracing?sample={quote(known.id)}&model={quote(model)}", None)] if known else []),
        ("circuits", f"circuits?sample={quote(forget.id)}", None),
        ("difficulty", "difficulty", None),
        ("attribution", f"attribution?sample={quote(forget.id)}&model={quote(model)}", None),
        ("sae", "sae", None),
        ("diagnosis", f"diagnosis?model={quote(model)}", None),
        ("signals", f"signals?model={quote(model)}", None),
        ("validation", "validation" + (f"?signals={quote(','.join(signals))}" if signals else ""), None),
    ]
    if only:
        pages = [p for p in pages if p[0] in only]
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    with running_app(study.root, log=log, timeout=180) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(timeout_ms)
        for name, path, action in pages:
            t0 = time.perf_counter()
            page.set_viewport_size({"width": 1400, "height": 900})
            page.goto(f"{url}/{path}")
            _idle(page, timeout_ms)
            if action is not None:
                action(page)
                _idle(page, timeout_ms)
            pressed = _press_compute(page, timeout_ms, skip)
            problems = _problems(page)
            _screenshot(page, out / f"{name}.png")
            report[name] = {"seconds": round(time.perf_counter() - t0, 1), "pressed": pressed, "problems": problems}
            print(f"{name:<14} {report[name]['seconds']:>7.1f}s  pressed: {', '.join(pressed) or '-'}"
                  + (f"  PROBLEMS: {problems}" if problems else ""), flush=True)
        browser.close()
    return report


def _type_prompt(prompt: str) -> Callable[[Any], None]:
    def act(page: Any) -> None:
        box = page.get_by_label("Prompt", exact=True)
        box.fill(prompt)
        box.press("Enter")

    return act


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study")
    ap.add_argument("--out", required=True, help="directory for the PNG files")
    ap.add_argument("--model", default=None, help="the unlearned model the per-model pages show (default npo)")
    ap.add_argument("--page-timeout", type=float, default=1800.0, help="seconds one page may take (default 1800)")
    ap.add_argument("--log", default="/tmp/app_screenshots_streamlit.log")
    ap.add_argument("--pages", default="", help="only these pages, comma-separated (home, study, tracing, "
                                                 "tracing_known, circuits, difficulty, attribution, sae, diagnosis, "
                                                 "signals, validation)")
    ap.add_argument("--signals", default="", help="the Validation page's signals (comma-separated; default the "
                                                   "page's own): the ones `erasure validate` stored")
    ap.add_argument("--skip", default="", help="compute buttons not to press, comma-separated (e.g. 'Diagnose': "
                                                "on a 135M model a diagnosis traces every forget sample)")
    args = ap.parse_args(argv)
    skip = tuple(s.strip() for s in args.skip.split(",") if s.strip())
    unknown = [s for s in skip if s not in COMPUTE_BUTTONS]
    if unknown:
        ap.error(f"--skip: unknown button(s) {unknown}; expected some of {', '.join(COMPUTE_BUTTONS)}")
    only = tuple(s.strip() for s in args.pages.split(",") if s.strip())
    signals = tuple(s.strip() for s in args.signals.split(",") if s.strip())
    report = walk(Path(args.study), Path(args.out), args.model, args.page_timeout, Path(args.log), skip, only,
                  signals)
    bad = [k for k, v in report.items() if v["problems"]]
    if bad:
        print(f"pages with problems: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
