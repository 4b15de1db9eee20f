"""Issue 18 (hardening), the CLI and the app: building the parser imports no torch / TransformerLens / SAELens
(so `erasure --help` and argument errors are fast) while the choices stay the registries'; the app renders
user text (sample text, ids, names, the URL) as text, never as markdown or HTML; `erasure app` passes SIGTERM /
SIGHUP on to Streamlit and exits with it."""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import get_args

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformer_lens", "sae_lens", "transformers")

# ---- 1. a fast CLI: the parser imports nothing heavy ---------------------------------------------------------
_PROBE = """
import contextlib, io, json, sys
from analysis.cli import main
out, err = io.StringIO(), io.StringIO()
code = 0
try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue(),
                  "heavy": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


@pytest.mark.parametrize(("argv", "code"), [
    (["--help"], 0),
    (["trace", "--help"], 0),
    (["trace", "x", "--kind", "bogus"], 2),  # an argument error
    (["trace", "x", "--corruption", "blur"], 2),
    (["circuit", "--help"], 0),
    (["score", "x", "--distance", "euclid"], 2),
    (["attribute", "--help"], 0),
    (["recover", "x", "--model", "m", "--strategy", "shout"], 2),
    (["sae", "train", "--help"], 0),
    (["restore", "--help"], 0),
    (["report", "x", "--model", "m", "--out", "r.html", "--strategy", "shout"], 2),
    (["eval", "--help"], 0),
    (["app", "--help"], 0),
    (["no-such-verb"], 2),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_parser_imports_nothing_heavy(argv: list[str], code: int) -> None:
    """`erasure <argv>` in a fresh interpreter: the help or the one-line error, without importing torch,
    TransformerLens, SAELens or transformers (these take 8 s and more to import)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["code"] == code, res
    assert res["heavy"] == [], f"building the parser imported {res['heavy']}"
    if code == 0:
        assert "usage: erasure" in res["out"]
    else:
        assert res["err"].startswith("erasure: error: ") and res["err"].count("\n") == 1, res["err"]


def test_build_parser_in_fresh_interpreter() -> None:
    """The check of the issue, verbatim: build the parser, then look at sys.modules."""
    cmd = ("import analysis.cli as c, sys; c.build_parser(); "
           "print('torch' in sys.modules, 'transformer_lens' in sys.modules, 'sae_lens' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", cmd], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.split() == ["False", "False", "False"], (out.stdout, out.stderr)


def _choices(argv_verb: list[str], dest: str) -> tuple[str, ...]:
    """The choices of option ``dest`` of the verb ``argv_verb`` (e.g. ["sae", "train"]) in the real parser."""
    from analysis.cli import build_parser

    parser = build_parser()
    for name in argv_verb:
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parser = sub.choices[name]
    action = next(a for a in parser._actions if a.dest == dest)
    return tuple(action.choices)


def test_light_choices_are_the_registries() -> None:
    """The CLI reads its choices from the light options modules; each is the registry the engine fills (the
    registries live in torch-importing modules), and so are the help texts."""
    from analysis.attribution.emphasis import EMPHASES, emphasis_help, strategy_names
    from analysis.attribution.options import (
        ABLATION_LABELS,
        ABLATIONS,
        ATTRIBUTION_METHOD_HELP,
        ATTRIBUTION_METHODS,
        KEYWORD_SOURCES,
        Ablation,
        AttributionMethod,
        EmphasisStrategy,
        strategy_help,
    )
    from analysis.circuits.cud import DISTANCES, VECTORS
    from analysis.circuits.eap import BASELINES, METRICS
    from analysis.hooks import kind_hook_template
    from analysis.tracing.corruptions import CORRUPTIONS, corruption_help
    from analysis.tracing.options import (
        CORRUPTION_HELP,
        HOOKS,
        KINDS,
        CorruptionName,
        corruption_choices_help,
    )

    assert get_args(CorruptionName) == CORRUPTIONS.names() and set(CORRUPTION_HELP) == set(CORRUPTIONS.names())
    assert corruption_choices_help() == corruption_help()
    assert HOOKS == {k: kind_hook_template(k) for k in KINDS}
    assert get_args(AttributionMethod) == ATTRIBUTION_METHODS.names() and set(ATTRIBUTION_METHOD_HELP) == set(
        ATTRIBUTION_METHODS.names())
    assert get_args(Ablation) == ABLATIONS.names() and ABLATIONS.labels() == ABLATION_LABELS
    assert list(get_args(EmphasisStrategy)) == strategy_names() and set(strategy_names()) < set(EMPHASES.names())
    assert strategy_help() == emphasis_help()

    assert _choices(["trace"], "corruption") == CORRUPTIONS.names()
    assert _choices(["circuit"], "metric") == METRICS.names() and _choices(["score"], "baseline") == BASELINES.names()
    assert _choices(["score"], "distance") == DISTANCES.names() and _choices(["score"], "vector") == VECTORS.names()
    assert _choices(["attribute"], "method") == ATTRIBUTION_METHODS.names()
    assert _choices(["recover"], "ablation") == ABLATIONS.names()
    assert _choices(["recover"], "keywords_from") == KEYWORD_SOURCES.names()
    assert list(_choices(["recover"], "strategy")) == strategy_names() == list(_choices(["report"], "strategy"))


@pytest.mark.parametrize("package", ["analysis.tracing", "analysis.circuits", "analysis.attribution",
                                     "analysis.diagnosis", "analysis.sae"])
def test_lazy_packages_export_every_name(package: str) -> None:
    """The lazily loading packages still give every public name (from its module) and nothing unknown."""
    import importlib

    mod = importlib.import_module(package)
    for name in mod.__all__:
        assert getattr(mod, name) is not None, name
    assert set(mod.__all__) <= set(dir(mod))
    with pytest.raises(AttributeError):
        mod.no_such_name  # noqa: B018


def test_registries_filled_without_the_package() -> None:
    """Options validated straight from the light options module still find the engine's members."""
    code = ("from analysis.attribution.options import AttributionOptions, RecoveryOptions; "
            "o = AttributionOptions(method='ig').validated(); "
            "r = RecoveryOptions(strategies=('repeat',)).validated(); print(o.method, r.strategies)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "ig ('repeat',)", out.stderr


# ---- 2. the app renders user text as text --------------------------------------------------------------------
PAYLOAD = "![img](http://example.invalid/x.png) **bold** <b>x</b>"
URL_SAMPLE = "[link](http://example.invalid)"
# markdown that would make the browser fetch or link something, or format text the user typed
_LIVE = re.compile(r"(?<!\\)\]\(|(?<!\\)<(?:b|a|img)\b|(?<!\\)\*\*bold|(?<!\\):(?=//)")


@pytest.mark.parametrize("text", [
    PAYLOAD, URL_SAMPLE, "<img src=x onerror=alert(1)>", "<http://example.invalid>", "http://example.invalid/a",
    "www.example.invalid", "mail@example.invalid", "`code` $x^2$ :red[red] :material/home: ~~gone~~ _it_",
    "# heading", "- item", "1. first", "> quote", "a | b", "&lt;b&gt; &amp;", "back\\slash \\*", "two\nlines",
])
def test_plain_renders_as_the_text(text: str) -> None:
    """plain(text) through a CommonMark renderer is the text itself: no link, image, tag, emphasis, code, list,
    heading or entity (the line break becomes a space)."""
    markdown_it = pytest.importorskip("markdown_it")
    from app.state import plain

    md = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"])
    rendered = md.render(plain(text)).strip()
    assert rendered.startswith("<p>") and rendered.endswith("</p>"), rendered
    inner = rendered[len("<p>"):-len("</p>")]
    assert "<" not in inner, rendered  # no element at all: only text (markdown-it escapes < as &lt;)
    assert html.unescape(inner) == text.replace("\n", " ")


def _markdown_bodies(at: object) -> list[str]:
    """Every string Streamlit renders as markdown on the page: element bodies, widget labels and tooltips."""
    out: list[str] = []
    for kind in ("markdown", "caption", "title", "header", "subheader", "error", "warning", "info", "success",
                 "exception", "expandable", "metric"):
        for el in at.get(kind):  # type: ignore[attr-defined]
            out += [str(getattr(el, a)) for a in ("value", "label", "help") if getattr(el, a, None)]
    for kind in ("selectbox", "multiselect", "radio", "button", "text_input", "number_input", "slider", "checkbox"):
        for el in at.get(kind):  # type: ignore[attr-defined]
            out += [str(getattr(el, a)) for a in ("label", "help") if getattr(el, a, None)]
    return out


@pytest.fixture
def payload_study(small_study, tmp_path: Path) -> Path:
    """A copy of the small study whose first forget sample's prompt carries markdown and HTML."""
    root = tmp_path / "study"
    shutil.copytree(small_study.root, root, ignore=shutil.ignore_patterns("results.sqlite*"))
    path = root / "samples" / "forget.jsonl"
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    first["prompt"] = f"{first['prompt']} {PAYLOAD}"
    path.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    return root


def test_app_renders_sample_text_and_url_as_text(payload_study: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The home page and the circuits page (sample picker with a crafted ``?sample=``, the sample's caption) show
    the prompt and the URL value escaped: no element's markdown holds a live image, link, tag or bold text."""
    from streamlit.testing.v1 import AppTest

    from app.state import plain

    monkeypatch.setattr(sys, "argv", ["streamlit"])
    monkeypatch.setenv("ERASURE_STUDY", str(payload_study))
    at = AppTest.from_file(str(ROOT / "app" / "Home.py"), default_timeout=300).run()
    assert not at.exception, [e.value for e in at.exception]
    bodies = _markdown_bodies(at)
    assert bodies and not [b for b in bodies if _LIVE.search(b)], [b for b in bodies if _LIVE.search(b)]

    at = AppTest.from_file(str(ROOT / "app" / "views" / "circuits.py"), default_timeout=300)
    at.query_params["sample"] = URL_SAMPLE
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any(plain(repr(URL_SAMPLE)) in e for e in errors), errors  # the unknown id, shown as typed
    prompt = json.loads((payload_study / "samples" / "forget.jsonl").read_text().splitlines()[0])["prompt"]
    assert any(plain(prompt) in c.value for c in at.caption), [c.value for c in at.caption]
    bodies = _markdown_bodies(at)
    assert not [b for b in bodies if _LIVE.search(b)], [b for b in bodies if _LIVE.search(b)]


# ---- 3. `erasure app` stops with its Streamlit child ---------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc; empty elsewhere)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
    return out


def _erasure() -> list[str]:
    script = Path(sys.executable).parent / "erasure"
    return [str(script)] if script.exists() else [sys.executable, "-m", "analysis.cli"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_app_stops_with_its_server(small_study, tmp_path: Path, sig: signal.Signals) -> None:
    """Stopping `erasure app` stops the Streamlit server it started: the port closes and the command exits."""
    study = tmp_path / "study"
    shutil.copytree(small_study.root, study, ignore=shutil.ignore_patterns("results.sqlite*"))
    port = _free_port()
    proc = subprocess.Popen([*_erasure(), "app", "--study", str(study), "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "erasure app exited before serving"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the app never answered its health check"
            time.sleep(0.3)
        children = _children(proc.pid)  # the Streamlit server (killed below if the test fails)
        proc.send_signal(sig)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while _port_open(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _port_open(port), "the Streamlit server still listens after `erasure app` was stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in children if "children" in locals() else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


_GRACE = """
import os, signal, sys, threading, time
from analysis.cli import run_forwarding_signals
child = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"]
threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
t = time.monotonic()
rc = run_forwarding_signals(child, grace_s=1)
print(rc, time.monotonic() - t)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_child_ignoring_the_signal_is_killed() -> None:
    """A child that ignores the forwarded SIGTERM is killed after the grace period (never left running)."""
    out = subprocess.run([sys.executable, "-c", _GRACE], capture_output=True, text=True, cwd=ROOT, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    rc, seconds = out.stdout.split()
    assert int(rc) == 128 + signal.SIGKILL and float(seconds) < 30, (out.stdout, out.stderr)
