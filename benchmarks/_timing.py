"""Shared timing helpers for the benchmarks: medians over repeats, one JSON line at the end."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed calls.

    ``fn`` must block until its work is done (call ``.block_until_ready()`` on JAX results).
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_medians(calls: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median seconds of each call, the calls timed in turn on every repeat so that a peer and
    what it is compared with see the same machine load (after one untimed call each)."""
    for call in calls:
        call()
    times = [[] for _ in calls]
    for _ in range(repeats):
        for call, spent in zip(calls, times, strict=True):
            start = time.perf_counter()
            call()
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


def report(figures: dict[str, float | int | str | bool]) -> None:
    """Print a readable table, then the figures as one JSON object on the last line."""
    width = max(len(k) for k in figures)
    for name, value in figures.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"  {name:<{width}}  {shown}")
    print(json.dumps(figures, sort_keys=False))
