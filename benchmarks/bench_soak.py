"""Memory soak (OPS-4): does a long run of ``UniversalPredictor.step`` grow the process?

    python benchmarks/bench_soak.py [--quick] [--ticks N]

One asset, tick by tick, on a seeded random walk (1 ms apart, replay clock), with the host-side
gate, flag edges and warnings all live, as a service runs it. The resident set size (RSS, from
psutil) is sampled every ``ticks / 200`` ticks. Figures:

- ``rss_slope_kb_per_10k_ticks``: least-squares slope of RSS against ticks over the second half
  of the run (the first half holds one-off growth: compiled programs, allocator pools, the
  warnings registry's first entries). Flat means |slope| within the noise of the peer.
- ``rss_start_mb`` / ``rss_end_mb``: RSS after the first tick (compiled) and at the end.
- ``peer_rss_slope_kb_per_10k_ticks``: the same slope for the peer, a plain loop of the same
  length that builds each tick's ``MarketObservation`` and calls a trivial jitted function
  (the JAX runtime's dispatch and Python's allocator, without the predictor).
  ``slope_excess_kb_per_10k_ticks`` = slope - peer slope; ``projected_mb_per_million_ticks``
  extrapolates the excess.
- ``ticks_per_s``: throughput of the soak loop.

The compiled step is the same program for fitted and unfitted branch parameters (shapes and
dtypes decide it), so the soak starts from a cold state: no minute of fitting first. --quick runs
20,000 ticks; the default 200,000. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
from _timing import report  # noqa: E402

from usp.api._memory import apply_xla_memory_defaults  # noqa: E402
from usp.api.universal import UniversalPredictor  # noqa: E402
from usp.contracts.types import MarketObservation  # noqa: E402
from usp.eval.throughput import TICK_NS  # noqa: E402

apply_xla_memory_defaults()  # XLA reads them at the first operation; `import usp` sets nothing

SAMPLES = 200


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def stream(n: int, seed: int = 0) -> np.ndarray:
    return 100.0 + np.cumsum(np.random.default_rng(seed).normal(0.0, 0.1, n))


def soak(tick, n_ticks: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Run ``tick(k)`` for k < n_ticks; RSS samples (tick index, MB) and the loop's seconds."""
    every = max(n_ticks // SAMPLES, 1)
    tick(0)  # compile before the first sample
    gc.collect()
    marks, sizes = [0], [rss_mb()]
    start = time.perf_counter()
    for k in range(1, n_ticks):
        tick(k)
        if k % every == 0 or k == n_ticks - 1:
            marks.append(k)
            sizes.append(rss_mb())
    return np.asarray(marks, float), np.asarray(sizes), time.perf_counter() - start


def slope_kb_per_10k(marks: np.ndarray, sizes: np.ndarray) -> float:
    """Least-squares slope over the second half of the run, in kB per 10,000 ticks."""
    half = marks >= marks[-1] / 2
    slope_mb_per_tick = np.polyfit(marks[half], sizes[half], 1)[0]
    return float(slope_mb_per_tick * 1024 * 10_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 ticks")
    parser.add_argument("--ticks", type=int, default=None, help="override the tick count")
    args = parser.parse_args()
    n_ticks = args.ticks or (20_000 if args.quick else 200_000)
    prices = stream(n_ticks)

    # The unfitted predictor logs an error at every emergency tick; keep the console readable
    # (the warnings, whose registry is a classic slow leak, stay live).
    logging.getLogger("usp").setLevel(logging.CRITICAL)
    predictor = UniversalPredictor(clock=None)

    def predictor_tick(k: int) -> None:
        price = float(prices[k])
        result = predictor.step(MarketObservation(price, price, (k + 1) * TICK_NS))
        result.predicted_next.block_until_ready()

    marks, sizes, seconds = soak(predictor_tick, n_ticks)
    slope = slope_kb_per_10k(marks, sizes)

    trivial = jax.jit(lambda x, y: x + y)
    total = jnp.zeros(())

    def peer_tick(k: int) -> None:
        nonlocal total
        price = float(prices[k])
        obs = MarketObservation(price, price, (k + 1) * TICK_NS)
        total = trivial(total, obs.price)
        total.block_until_ready()

    peer_marks, peer_sizes, peer_seconds = soak(peer_tick, n_ticks)
    peer_slope = slope_kb_per_10k(peer_marks, peer_sizes)
    excess = slope - peer_slope
    assert math.isfinite(float(total))

    report(
        {
            "ticks": n_ticks,
            "rss_slope_kb_per_10k_ticks": slope,
            "rss_start_mb": float(sizes[0]),
            "rss_end_mb": float(sizes[-1]),
            "rss_max_mb": float(sizes.max()),
            "peer_rss_slope_kb_per_10k_ticks": peer_slope,
            "slope_excess_kb_per_10k_ticks": excess,
            "projected_mb_per_million_ticks": excess * 100 / 1024,
            "ticks_per_s": (n_ticks - 1) / seconds,
            "peer_ticks_per_s": (n_ticks - 1) / peer_seconds,
            "samples": int(len(marks)),
        }
    )


if __name__ == "__main__":
    main()
