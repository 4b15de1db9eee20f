"""Start the Streamlit app as a subprocess for browser tests: a context manager that yields its URL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from analysis.cli import streamlit_command

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode} before serving:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise TimeoutError(f"streamlit did not answer on {url} within {timeout:.0f}s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


@contextmanager
def running_app(study: str | os.PathLike[str], log: Path, timeout: float = 90.0) -> Iterator[str]:
    """Run ``streamlit run app/Home.py -- --study STUDY`` on a free localhost port (own process group,
    output to ``log``); yields the base URL once the server answers HTTP, kills the group on exit."""
    port = free_port()
    cmd = streamlit_command(study, port=port)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("ERASURE_STUDY", None)
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        _wait_http(f"{url}/_stcore/health", proc, log, timeout)
        yield url
    finally:
        _stop(proc)
