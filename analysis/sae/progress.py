"""Progress of the SAE analyses over counted units of work (training steps, models, forwards, probe fits,
sample batches): a fraction is always units done / units, never a guess at time. ``ProgressFn`` is
``analysis.store``'s ``progress(fraction, message)``."""

from __future__ import annotations

from analysis.store import ProgressFn


def span(progress: ProgressFn | None, start: float, end: float, prefix: str = "") -> ProgressFn | None:
    """A ProgressFn mapping a sub-job's own fraction (0..1) onto ``[start, end]`` of ``progress``, its
    messages prefixed; None when ``progress`` is None."""
    if progress is None:
        return None
    outer = progress

    def report(frac: float, msg: str) -> None:
        outer(start + (end - start) * min(1.0, max(0.0, frac)), f"{prefix}{msg}")

    return report


class Units:
    """One ProgressFn over ``total`` counted units of work: ``say`` names the unit about to run (at the
    fraction done so far), ``tick`` counts units as done, ``sub(n)`` hands the next ``n`` units to a sub-job
    that reports its own fraction (count them with ``tick`` afterwards)."""

    def __init__(self, progress: ProgressFn | None, total: int, prefix: str = "") -> None:
        self.progress, self.total, self.prefix, self.done = progress, max(1, int(total)), prefix, 0

    def fraction(self) -> float:
        return min(1.0, self.done / self.total)

    def say(self, msg: str) -> None:
        if self.progress is not None:
            self.progress(self.fraction(), f"{self.prefix}{msg}")

    def tick(self, msg: str, n: int = 1) -> None:
        self.done += n
        self.say(msg)

    def sub(self, n: int, prefix: str = "") -> ProgressFn | None:
        return span(self.progress, self.fraction(), min(1.0, (self.done + n) / self.total), self.prefix + prefix)
