"""Bit-identical training for a given seed, also with several CPU threads.

Threaded CPU kernels (e.g. the embedding backward) otherwise sum gradients in a varying order, so two
runs with the same seed drift apart in the last bits and then further. ``warn_only`` keeps ops that have
no deterministic kernel (some CUDA ones) working, with a warning instead of an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def deterministic() -> Iterator[None]:
    prev, prev_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)
