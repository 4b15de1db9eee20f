"""Background jobs of the app: every computation that takes more than a moment runs once, in a worker thread,
and every tab (and every rerun) that asks for the same result waits on that one job and shows its progress.

Why not one lock around page runs (as before): one long job (SAE training, minutes) then froze every tab of
every user. Why a thread per job and not Streamlit's own caching: ``st.cache_data`` computes inside the page
run that asks first, so a second tab asking for the same result computes it again, and a page that is left
(the user navigates away) stops the computation half-way. Here a job outlives the page run that started it;
a page that comes back finds it still running (or its result in the study store).

A job computes on its own ``Study`` instance (opened by ``app.state.run_job``), so its model objects are its
own: TransformerLens hooks and graph-mode flags that an analysis sets on a model never reach a model another
page is using. Jobs are keyed by what they compute; a job that fails is dropped, so asking again retries.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ProgressFn = Callable[[float, str], None]


@dataclass(eq=False)
class Job:
    """One background computation: its progress (a fraction in [0, 1] and a message), then its result or error."""

    key: str
    label: str
    fraction: float = 0.0
    message: str = "starting"
    started: float = field(default_factory=time.monotonic)
    result: Any = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def update(self, fraction: float, message: str) -> None:
        """The job's progress callback (called from its worker thread)."""
        self.fraction = min(1.0, max(0.0, float(fraction)))
        self.message = message

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


class JobRegistry:
    """The running jobs of one app server, by key. Thread-safe."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def submit(self, key: str, label: str, fn: Callable[[ProgressFn], Any]) -> Job:
        """The running job for ``key``, or a new one that runs ``fn(progress)`` in a worker thread."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                job = Job(key=key, label=label)
                self._jobs[key] = job
                threading.Thread(target=self._run, args=(job, fn), name=f"erasure-job:{label}", daemon=True).start()
            return job

    def _run(self, job: Job, fn: Callable[[ProgressFn], Any]) -> None:
        try:
            job.result = fn(job.update)
            job.fraction, job.message = 1.0, "done"
        except BaseException as e:  # noqa: BLE001 - handed to every page that waits on the job
            job.error = e
            if not _expected(e):
                traceback.print_exc()
        finally:
            with self._lock:  # finished jobs leave: their results are in the study store; a failed one is retried
                if self._jobs.get(job.key) is job:
                    del self._jobs[job.key]
            job.done.set()

    def running(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())


def _expected(e: BaseException) -> bool:
    from analysis.errors import WorkbenchError

    return isinstance(e, WorkbenchError)


__all__ = ["Job", "JobRegistry", "ProgressFn"]
