"""The predictor's step: single-asset latency, batched throughput, cold start and FLOP use.

    python benchmarks/bench_step.py [--quick]

Figures (float64 state, default ``PredictorConfig``, on whatever CPU/GPU JAX picks; the Hölder
estimate runs in float32, chapter 1's eq. float32-error):

- ``step_p50_ms`` / ``step_p99_ms``: percentiles of per-tick wall times of the jitted
  ``FunctionalPredictor.step`` on one warm asset (fitted on 300 values of a seeded random walk),
  state carried from tick to tick, ``.block_until_ready()`` on ``predicted_next``. Its peer, in
  the same run and measured the same way, is the dispatch floor of a trivial jitted function
  (``dispatch_floor_ms``): the cost of calling anything compiled from Python.
- ``universal_step_p50_ms`` / ``universal_step_p99_ms``: the same for ``UniversalPredictor.step``
  (host-side tick gate, flag edges and result conversion included).
- ``asset_steps_per_s_{1,64,1024}``: N / (median wall time of one ``step_batch`` tick over N
  assets). The N states are one fitted state broadcast to N, each asset with its own prices.
- ``batch_speedup_vs_loop_1024``: per-asset time of a Python loop of ``UniversalPredictor.step``
  calls (timed over ``loop_assets_timed`` assets, scaled per asset) over the per-asset time of
  ``step_batch`` on 1024 assets.
- ``fit_history_5000_s``: ``UniversalPredictor(clock=None).fit_history`` on 5000 values in a
  fresh process, so every compilation is included.
- ``refit_s``: median wall time of one warm ``refit`` of one asset (every branch's fit; the slow
  path the refit policy runs off the tick), its ratio to ``step_p50_ms``, and
  ``refit_amortised_ms_per_tick`` = ``refit_s`` / ``refit_every``: the schedule's cost spread
  over its ticks. The per-tick timings above use ``auto_refit=False``, so they time the tick
  path alone.
- ``wtmm_f64_*``: the peer for the float32 Hölder estimate, in the same run: the same step with
  the estimator's float64 twin (``compute_dtype="float64"``, the estimate before chapter 1's
  float32 section): its single-asset p50/p99 (timed alternately with the float32 step, tick by
  tick) and its 1024-asset throughput, with ``speedup_*_vs_wtmm_f64`` ratios.
- ``no_holder_*``: the ceiling, timed in turn with the two above: the step with an estimator that
  reads nothing (``ConstantHolder``: H_t = 0.5, not valid). ``holder_share_of_step_*`` = 1 -
  no_holder / now: the part of a tick, batched and single, that the Hölder estimate costs.
- ``flops_per_asset_step``: XLA's cost analysis of the step vmapped over 1024 assets, / 1024.
  ``peak_flops`` is the *practical* peak: the achieved FLOP/s of a 2048x2048 float64 ``jnp.dot``
  in the same run (all cores the JAX CPU backend uses), ``peak_flops_f32`` the same in float32.
  ``peak_fraction`` = flops_per_asset_step x asset_steps_per_s_1024 / peak_flops; most of those
  FLOPs are now the float32 transform, so ``peak_fraction_f32`` (against the float32 peak) is
  the stricter figure.
- ``t1024_*_ms``: where one 1024-asset tick goes: each stage of ``usp.core.step.step`` jitted
  alone and batched as ``step_batch`` batches (``blockwise``) on the same 1024 states
  (``t1024_parts_sum_ms`` adds them up; the step fuses them, so the sum need not equal
  ``t1024_step_ms``).

Targets (reported, not enforced): step_p99_ms <= 1.0, asset_steps_per_s_1024 >= 10 000,
batch_speedup_vs_loop_1024 >= 5, fit_history_5000_s <= 30. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from functools import partial

import jax

jax.config.update("jax_enable_x64", True)
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _timing import median_seconds, paired_medians, report  # noqa: E402

from usp.api import PredictorConfig  # noqa: E402
from usp.api.functional import FunctionalPredictor, _guarded_step, blockwise  # noqa: E402
from usp.api.runtime import broadcast_states  # noqa: E402
from usp.api.universal import UniversalPredictor  # noqa: E402
from usp.contracts.types import MarketObservation  # noqa: E402
from usp.core.step import _learned_tau, jko_step_from_config  # noqa: E402
from usp.eval.throughput import (  # noqa: E402
    INCREMENT_STD,
    TICK_NS,
    per_call_seconds,
    percentiles_ms,
    random_walk,
)
from usp.kernels.wtmm import WTMMEstimator, holder_exponent, prepare_buffer  # noqa: E402

HISTORY_LENGTH = 300
BATCH_SIZES = (1, 64, 1024)
FIT_HISTORY_SCRIPT = """
import time, numpy as np, jax
jax.config.update("jax_enable_x64", True)
from usp.api.universal import UniversalPredictor
history = 100.0 + np.cumsum(np.random.default_rng(1).normal(0.0, {std}, {n}))
predictor = UniversalPredictor(clock=None)
start = time.perf_counter()
predictor.fit_history(history)
print(time.perf_counter() - start)
"""


class Sections:
    """Wall time of each part of the benchmark itself, printed to stderr as it goes."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        print(f"[bench_step] {name}: {now - self.last:.1f} s", file=sys.stderr, flush=True)
        self.last = now

    def total(self) -> float:
        return time.perf_counter() - self.start


def flops_of(compiled) -> float:
    """Total 'flops' of a compiled XLA program (cost_analysis is a dict or a list of dicts)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, dict):
        analysis = [analysis]
    return float(sum(part.get("flops", 0.0) for part in analysis))


def matmul_peak_flops(repeats: int, n: int = 2048, dtype=jnp.float64) -> float:
    """Achieved FLOP/s of an n x n matmul: the practical peak of this device in ``dtype``."""
    key_a, key_b = jax.random.split(jax.random.key(3))
    a = jax.random.normal(key_a, (n, n), dtype)
    b = jax.random.normal(key_b, (n, n), dtype)
    dot = jax.jit(jnp.dot)
    seconds = median_seconds(lambda: dot(a, b).block_until_ready(), repeats)
    return 2.0 * n**3 / seconds


def fit_history_fresh_process(n: int, timeout_s: float) -> float | None:
    """Seconds of ``fit_history`` on n values in a new interpreter (compilation included)."""
    code = FIT_HISTORY_SCRIPT.format(std=INCREMENT_STD, n=n)
    env = {**os.environ, "JAX_ENABLE_X64": "1"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            check=True,
        )
    except subprocess.TimeoutExpired:
        return None
    return float(done.stdout.strip().splitlines()[-1])


class ConstantHolder(WTMMEstimator):
    """An estimator that reads nothing: H_t = 0.5, not valid. The step built on it is the step
    without the Hölder estimate, the ceiling that no cheaper estimate can pass."""

    def __call__(self, buffer, n_valid=None):
        return jnp.asarray(0.5, buffer.dtype), jnp.asarray(False)


def without_holder(model):
    """The same predictor with the Hölder estimate replaced by ``ConstantHolder``."""
    fields = {f.name: getattr(model.wtmm, f.name) for f in dataclasses.fields(model.wtmm)}
    return eqx.tree_at(lambda m: m.wtmm, model, ConstantHolder(**fields))


def with_float64_wtmm(model):
    """The same predictor with its Hölder estimator's float64 twin: the peer of the float32 one."""
    twin = WTMMEstimator.from_config(model.config, compute_dtype="float64")
    return eqx.tree_at(lambda m: m.wtmm, model, twin)


def paired_tick_times(steps, state, prices, n_ticks: int) -> list[np.ndarray]:
    """Per-tick wall times of each jitted guarded step in ``steps``, one asset, timed in turn on
    the same tick so that every step sees the same machine load; each carries its own state."""
    states = [state] * len(steps)
    no = jnp.asarray(False)
    times = np.empty((len(steps), n_ticks))
    for i in range(n_ticks + 5):
        price = jnp.asarray(float(prices[i]))
        for k, jitted in enumerate(steps):
            start = time.perf_counter()
            states[k], result, _ = jitted(states[k], price, price, no)
            result.predicted_next.block_until_ready()
            if i >= 5:  # the first ticks compile and warm up
                times[k, i - 5] = time.perf_counter() - start
    return list(times)


def stage_times_1024(fp: FunctionalPredictor, states, prices, repeats: int) -> dict[str, float]:
    """Median ms of each stage of the step, jitted alone and batched like ``step_batch``.

    Every input is an argument of the jitted function, so XLA cannot constant-fold a stage.
    The ``holder_upto_*`` entries are cumulative prefixes of ``holder`` (not added to the sum).
    """
    model, config = fp.model, fp.config
    wtmm = model.wtmm
    one, no, yes = jnp.asarray(1.0), jnp.asarray(False), jnp.asarray(True)

    def holder_upto_cwt(state, price, key):
        return wtmm.coefficients(prepare_buffer(state.buffer, state.n_filled))

    def holder_upto_lines(state, price, key):
        return wtmm.lines(prepare_buffer(state.buffer, state.n_filled)).sup

    def predict_stage(position: int):
        branch = model.branches[position]
        return lambda state, price, key: (
            branch.predict(state.params[position], state.buffer, key=key).mean
        )

    stages = {
        "cusum": lambda state, price, key: (
            model.cusum.update(state.cusum, price - state.forecast)[1].cusum_drift
        ),
        "holder": lambda state, price, key: holder_exponent(wtmm, state.buffer, state.n_filled)[0],
        "tau_update": lambda state, price, key: (
            _learned_tau(model, state, price, one, no, yes).log_tau
        ),
        "jko": lambda state, price, key: (
            jko_step_from_config(
                config,
                state.weights,
                state.branch_forecasts,
                price,
                sigma=one,
                robust=no,
                tau=state.tau.tau,
            ).weights
        ),  # fmt: skip
        **{
            f"predict_{branch.name}": predict_stage(position)
            for position, branch in enumerate(model.branches)
        },
        "holder_upto_cwt": holder_upto_cwt,
        "holder_upto_lines": holder_upto_lines,
    }
    keys = jax.random.split(jax.random.key(5), prices.shape[0])
    times = {}
    for name, stage in stages.items():
        batched = jax.jit(blockwise(stage))
        times[name] = 1e3 * median_seconds(
            lambda batched=batched: batched(states, prices, keys).block_until_ready(), repeats
        )
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer ticks and repeats")
    args = parser.parse_args()
    n_ticks = 300 if args.quick else 2000
    batch_repeats = 11 if args.quick else 21
    loop_assets = 64 if args.quick else 256
    rng = np.random.default_rng(0)
    config = PredictorConfig()
    sections = Sections()
    load_start = os.getloadavg()[0]

    # --- one warm asset --------------------------------------------------------------------
    history = random_walk(rng, 100.0, HISTORY_LENGTH)
    # The tick path alone: refits (the slow path) are timed on their own below.
    universal = UniversalPredictor(config, clock=None, auto_refit=False)
    start = time.perf_counter()
    universal.fit_history(history)
    fit_history_300_s = time.perf_counter() - start
    fitted = universal.state
    fp = universal.functional

    prices = random_walk(rng, float(history[-1]), n_ticks + 10)
    carried = {"state": fitted}

    def functional_tick(i: int) -> None:
        price = float(prices[i])
        obs = MarketObservation(price, price, (i + 1) * TICK_NS)
        carried["state"], result = fp.step(carried["state"], obs)
        result.predicted_next.block_until_ready()

    step_times = per_call_seconds(functional_tick, n_ticks)

    bump = jax.jit(lambda x: x + 1.0)
    scalar = jnp.asarray(1.0)
    floor_times = per_call_seconds(lambda i: bump(scalar).block_until_ready(), n_ticks)

    def universal_tick(i: int) -> None:
        price = float(prices[i])
        universal.step(MarketObservation(price, price, (i + 1) * TICK_NS))
        universal.last_result.predicted_next.block_until_ready()

    universal_times = per_call_seconds(universal_tick, n_ticks)

    # The peer: the same tick with the float64 Hölder estimate, timed tick by tick in turn.
    # A second peer bounds what any cheaper estimate could give: the step without it.
    models = (fp.model, with_float64_wtmm(fp.model), without_holder(fp.model))
    paired_now, paired_f64, paired_none = paired_tick_times(
        [jax.jit(partial(_guarded_step, m)) for m in models],
        fitted,
        random_walk(rng, float(history[-1]), n_ticks + 5),
        n_ticks,
    )

    refit_s = median_seconds(
        lambda: jax.block_until_ready(fp.refit(fitted)), 3 if args.quick else 7
    )

    sections.done("single asset (fit_history on 300 values, per-tick timings, refit)")

    # --- many assets -----------------------------------------------------------------------
    throughput = {}
    for n_assets in BATCH_SIZES:
        batch = {"states": broadcast_states(fitted, n_assets)}
        base = float(history[-1]) + 0.01 * rng.standard_normal(n_assets)
        moves = rng.normal(0.0, INCREMENT_STD, (batch_repeats + 2, n_assets))
        tick_prices = [jnp.asarray(base + m) for m in np.cumsum(moves, axis=0)]
        counter = iter(range(10**9))

        def batch_tick(batch=batch, tick_prices=tick_prices, counter=counter) -> None:
            p = tick_prices[next(counter) % len(tick_prices)]
            batch["states"], results, _ = fp.step_batch(batch["states"], p, p)
            results.predicted_next.block_until_ready()

        throughput[n_assets] = n_assets / median_seconds(batch_tick, batch_repeats)
    states_1024 = broadcast_states(fitted, 1024)
    prices_1024 = jnp.asarray(float(history[-1]) + 0.01 * rng.standard_normal(1024))
    no_1024 = jnp.zeros(1024, bool)
    batch_ticks = [jax.jit(blockwise(partial(_guarded_step, m))) for m in models]
    now_tick, f64_tick, none_tick = paired_medians(
        [
            lambda tick=tick: tick(states_1024, prices_1024, prices_1024, no_1024)[
                1
            ].predicted_next.block_until_ready()
            for tick in batch_ticks
        ],
        batch_repeats,
    )

    # The loop peer: one UniversalPredictor stepping through loop_assets observations. Each
    # asset of a real loop would own a predictor; once compiled, the per-call cost is the same
    # (but each instance jits its own step, so a real loop also pays one compile per asset).
    loop_prices = random_walk(rng, float(prices[n_ticks]), loop_assets)
    first_ns = (n_ticks + 100) * TICK_NS

    def loop_over_assets() -> None:
        nonlocal first_ns
        for j, price in enumerate(loop_prices):
            universal.step(MarketObservation(float(price), float(price), first_ns + j * TICK_NS))
        universal.last_result.predicted_next.block_until_ready()
        loop_prices[:] = loop_prices[-1] + np.cumsum(rng.normal(0.0, INCREMENT_STD, loop_assets))
        first_ns += loop_assets * TICK_NS

    loop_per_asset = median_seconds(loop_over_assets, 5 if args.quick else 9) / loop_assets
    batch_per_asset = 1.0 / throughput[1024]

    sections.done("batched throughput and the loop peer")

    # --- FLOPs and the practical peak ------------------------------------------------------
    # The arithmetic of one plain vmap over all 1024 assets: XLA's cost analysis counts a loop
    # body once, so the blockwise program (a loop over blocks) would be undercounted.
    plain_vmap = jax.jit(jax.vmap(partial(_guarded_step, fp.model)))
    compiled = plain_vmap.lower(
        states_1024, prices_1024, prices_1024, jnp.zeros(1024, bool)
    ).compile()
    flops_per_asset_step = flops_of(compiled) / 1024
    peak = matmul_peak_flops(3 if args.quick else 7)
    peak_f32 = matmul_peak_flops(3 if args.quick else 7, dtype=jnp.float32)

    sections.done("cost analysis and matmul peak")

    # --- where a 1024-asset tick goes ------------------------------------------------------
    stages = stage_times_1024(fp, states_1024, prices_1024, 3 if args.quick else 9)

    sections.done("stage breakdown at 1024 assets")

    # --- cold start in a fresh process -----------------------------------------------------
    fit_5000 = fit_history_fresh_process(5000, timeout_s=150 if args.quick else 600)

    sections.done("fit_history(5000) in a fresh process")

    step_p50, step_p99 = percentiles_ms(step_times)
    (now_p50, now_p99), (f64_p50, f64_p99), (none_p50, none_p99) = (
        percentiles_ms(times) for times in (paired_now, paired_f64, paired_none)
    )
    universal_p50, universal_p99 = percentiles_ms(universal_times)
    floor_p50, floor_p99 = percentiles_ms(floor_times)
    figures: dict[str, float | int | str | bool | None] = {
        "device": str(jax.devices()[0].device_kind),
        "quick": args.quick,
        "ticks_timed": n_ticks,
        "step_p50_ms": step_p50,
        "step_p99_ms": step_p99,
        "step_p90_ms": float(np.percentile(step_times, 90) * 1e3),
        "universal_step_p50_ms": universal_p50,
        "universal_step_p99_ms": universal_p99,
        "dispatch_floor_ms": floor_p50,
        "dispatch_floor_p99_ms": floor_p99,
        "step_p50_over_dispatch": step_p50 / floor_p50,
        **{f"asset_steps_per_s_{n}": throughput[n] for n in BATCH_SIZES},
        "t1024_step_ms": batch_per_asset * 1024 * 1e3,
        **{f"t1024_{name}_ms": ms for name, ms in stages.items()},
        "t1024_parts_sum_ms": sum(
            ms for name, ms in stages.items() if not name.startswith("holder_upto")
        ),
        "loop_assets_timed": loop_assets,
        "loop_per_asset_ms": loop_per_asset * 1e3,
        "batch_speedup_vs_loop_1024": loop_per_asset / batch_per_asset,
        "flops_per_asset_step": flops_per_asset_step,
        "peak_flops": peak,
        "peak_assumption": "achieved FLOP/s of a 2048x2048 float64 jnp.dot, same run",
        "peak_fraction": flops_per_asset_step * throughput[1024] / peak,
        "peak_flops_f32": peak_f32,
        "peak_fraction_f32": flops_per_asset_step * throughput[1024] / peak_f32,
        "paired_step_p50_ms": now_p50,
        "paired_step_p99_ms": now_p99,
        "wtmm_f64_step_p50_ms": f64_p50,
        "wtmm_f64_step_p99_ms": f64_p99,
        "speedup_p50_vs_wtmm_f64": f64_p50 / now_p50,
        "t1024_paired_step_ms": now_tick * 1e3,
        "wtmm_f64_t1024_step_ms": f64_tick * 1e3,
        "speedup_1024_vs_wtmm_f64": f64_tick / now_tick,
        "no_holder_step_p50_ms": none_p50,
        "no_holder_step_p99_ms": none_p99,
        "no_holder_t1024_step_ms": none_tick * 1e3,
        "holder_share_of_step_1024": 1.0 - none_tick / now_tick,
        "holder_share_of_step_p50": 1.0 - none_p50 / now_p50,
        "fit_history_300_s": fit_history_300_s,
        "fit_history_5000_s": fit_5000,
        "refit_s": refit_s,
        "refit_over_step_p50": refit_s * 1e3 / step_p50,
        "refit_amortised_ms_per_tick": refit_s * 1e3 / config.refit_every,
        "load_avg_1min_start": load_start,
        "load_avg_1min_end": os.getloadavg()[0],
        "bench_wall_s": sections.total(),
        "target_step_p99_ok": step_p99 <= 1.0,
        "target_asset_steps_per_s_1024_ok": throughput[1024] >= 10_000,
        "target_batch_speedup_ok": loop_per_asset / batch_per_asset >= 5,
        "target_fit_history_5000_ok": fit_5000 is not None and fit_5000 <= 30.0,
    }
    report(figures)


if __name__ == "__main__":
    main()
