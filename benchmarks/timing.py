"""Shared timing helper of the benchmark scripts (run them as ``python benchmarks/<script>.py``, which
puts this folder on ``sys.path``)."""

from __future__ import annotations

import time
from typing import Callable


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """The shortest wall time of ``repeat`` calls of ``fn`` (seconds): the least disturbed run."""
    times = []
    for _ in range(max(1, int(repeat))):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
