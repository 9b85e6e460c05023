"""How fast the installed predictor is on this machine: what ``usp bench`` prints.

    >>> from usp.eval.throughput import measure_throughput
    >>> figures = measure_throughput(quick=True)

Figures (float64 unless JAX is told otherwise, default or given ``PredictorConfig``):

- ``first_fit_s``: ``UniversalPredictor.fit_history`` on a seeded random walk in this process,
  compilation of the scan and of every branch's fit included.
- ``first_step_s``: the first single-asset tick after it, compilation of the step included.
  The two together are the start-up cost.
- ``step_p50_ms`` / ``step_p99_ms``: per-tick wall time of the jitted single-asset
  ``FunctionalPredictor.step``, state carried over, ``.block_until_ready()`` on the forecast.
- ``asset_steps_per_s_N``: N / median wall time of one ``step_batch`` tick over N assets.

The benchmark ``benchmarks/bench_step.py`` measures the same things against peers and in more
detail; this is the short figure a user checks an installation with.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from usp.api.runtime import broadcast_states
from usp.api.universal import UniversalPredictor
from usp.contracts.config import PredictorConfig
from usp.contracts.types import MarketObservation

INCREMENT_STD = 0.1
TICK_NS = 1_000_000
"""1 ms between ticks: well inside the Nyquist interval, so the tick gate never freezes."""


def random_walk(rng: np.random.Generator, start: float, n: int) -> np.ndarray:
    """A Gaussian random walk of ``n`` prices from ``start`` (increments of INCREMENT_STD)."""
    return start + np.cumsum(rng.normal(0.0, INCREMENT_STD, n))


def per_call_seconds(fn: Callable[[int], object], n: int, warmup: int = 5) -> np.ndarray:
    """Wall time of each of ``n`` calls ``fn(i)``, i = warmup, ..., after ``warmup`` untimed
    calls (i = 0, ..., warmup - 1): every call gets a fresh index (a fresh tick)."""
    for i in range(warmup):
        fn(i)
    times = np.empty(n)
    for i in range(n):
        start = time.perf_counter()
        fn(warmup + i)
        times[i] = time.perf_counter() - start
    return times


def percentiles_ms(times: np.ndarray) -> tuple[float, float]:
    """Median and 99th percentile of per-call seconds, in milliseconds."""
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def measure_throughput(
    config: PredictorConfig | None = None,
    *,
    quick: bool = False,
    history_length: int = 300,
    progress: Callable[[str], None] | None = None,
) -> dict[str, float | int | str]:
    """Latency percentiles of one asset's step and batched asset-steps per second."""
    config = PredictorConfig() if config is None else config
    report = progress or (lambda stage: None)
    n_ticks = 200 if quick else 2000
    batch_sizes = (64,) if quick else (64, 1024)
    repeats = 5 if quick else 21
    rng = np.random.default_rng(0)
    history = random_walk(rng, 100.0, max(history_length, config.wtmm_buffer_size))

    report("fit_history (compiles the scan and every branch's fit)")
    predictor = UniversalPredictor(config, clock=None)
    start = time.perf_counter()
    predictor.fit_history(history)
    first_fit_s = time.perf_counter() - start
    fitted, fp = predictor.state, predictor.functional

    report(f"single asset: {n_ticks} ticks")
    prices = random_walk(rng, float(history[-1]), n_ticks + 10)
    carried = {"state": fitted}

    def tick(i: int) -> None:
        price = float(prices[i])
        carried["state"], result = fp.step(
            carried["state"], MarketObservation(price, price, (i + 1) * TICK_NS)
        )
        result.predicted_next.block_until_ready()

    start = time.perf_counter()
    tick(len(prices) - 1)  # compiles the step; a price the timed ticks below do not use
    first_step_s = time.perf_counter() - start
    step_times = per_call_seconds(tick, n_ticks)
    step_p50, step_p99 = percentiles_ms(step_times)
    figures: dict[str, float | int | str] = {
        "device": str(jax.devices()[0]).replace(" ", ""),
        "dtype": str(fitted.buffer.dtype),
        "first_fit_s": first_fit_s,
        "first_step_s": first_step_s,
        "step_p50_ms": step_p50,
        "step_p99_ms": step_p99,
        "ticks_timed": n_ticks,
    }
    for n_assets in batch_sizes:
        report(f"batch of {n_assets} assets (compiles step_batch for this size)")
        states = broadcast_states(fitted, n_assets)
        moves = np.cumsum(rng.normal(0.0, INCREMENT_STD, (repeats + 1, n_assets)), axis=0)
        batches = [jnp.asarray(float(history[-1]) + m) for m in moves]
        states, results, _ = fp.step_batch(states, batches[0], batches[0])  # compile
        results.predicted_next.block_until_ready()
        times = []
        for batch in batches[1:]:
            start = time.perf_counter()
            states, results, _ = fp.step_batch(states, batch, batch)
            results.predicted_next.block_until_ready()
            times.append(time.perf_counter() - start)
        figures[f"asset_steps_per_s_{n_assets}"] = n_assets / statistics.median(times)
    return figures


def throughput_table(figures: dict[str, float | int | str]) -> str:
    """The figures, one per line, aligned."""
    width = max(len(name) for name in figures)
    return "\n".join(
        f"  {name:<{width}}  {value:.4g}"
        if isinstance(value, float)
        else f"  {name:<{width}}  {value}"
        for name, value in figures.items()
    )
