"""CUSUM detector: run lengths against Siegmund, the Nile alarm, and the cost of an update.

    python benchmarks/bench_cusum.py [--quick]

Accuracy: simulated one-sided ARL0 (in control) and ARL1 (one-sigma shift) at k = 0.5 for
h = 4 and h = 5, as relative errors against Siegmund's approximation (target <= 0.05) and against
Page's integral equation (exact, Nystrom). Cost: the jitted update against a plain Python/NumPy
implementation of the same recursion, measured in this run, called three ways (one update from
Python, a long series, a batch of assets). One jitted call from Python is dominated by turning
its 29 output arrays (state and report) into Python objects, so the plain Python update wins
there; inside a scan or vmap, where the detector lives in the predictor's compiled step, the
compiled update wins. The last line is one JSON object of all figures.
"""

from __future__ import annotations

import argparse
import math
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.stats as st  # noqa: E402
from _timing import median_seconds, report  # noqa: E402

from usp.api import PredictorConfig  # noqa: E402
from usp.core.cusum import (  # noqa: E402
    CusumDetector,
    cusum_update,
    default_warmup,
    init_cusum,
)
from usp.io.data import load_series  # noqa: E402
from usp.reference.cusum import (  # noqa: E402
    average_run_length,
    siegmund_arl,
    simulate_run_lengths,
)


def page_arl(shift: float, threshold: float, slack: float, nodes: int = 64) -> float:
    """Exact one-sided ARL from Page's integral equation (Gauss-Legendre Nystrom)."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    x, w = threshold * (x + 1) / 2, w * threshold / 2
    u = np.concatenate([[0.0], x])
    kernel = np.empty((nodes + 1, nodes + 1))
    kernel[:, 0] = st.norm.cdf(slack - shift - u)
    kernel[:, 1:] = w * st.norm.pdf(x[None, :] - u[:, None] + slack - shift)
    return float(np.linalg.solve(np.eye(nodes + 1) - kernel, np.ones(nodes + 1))[0])


class NumpyCusum:
    """The same detector in plain Python + NumPy, one asset, one error per call (the peer)."""

    def __init__(self, config: PredictorConfig):
        self.h, self.k, self.alpha = config.cusum_h, config.cusum_k, config.volatility_alpha
        self.grace, self.size = config.grace_period_steps, config.kurtosis_window
        self.warmup = default_warmup(config.volatility_alpha)
        self.window = np.zeros(self.size)
        self.pos = self.count = self.n = 0
        self.g_plus = self.g_minus = self.var = 0.0
        self.kurtosis, self.since = 3.0, self.grace

    def update(self, error: float) -> bool:
        if not math.isfinite(error):
            return False
        ready = self.n >= self.warmup
        z = 0.0
        if self.n > 0:
            denominator = max(math.sqrt(self.var), abs(error) / 1e4)
            z = error / denominator if denominator > 0 else 0.0
        g_plus, g_minus = self.g_plus, self.g_minus
        if ready:
            g_plus, g_minus = max(0.0, g_plus + z - self.k), max(0.0, g_minus - z - self.k)
        threshold = self.h * max(1.0, 1.0 + math.log(self.kurtosis / 3.0))
        self.since = min(self.since + 1, self.grace)
        alarm = max(g_plus, g_minus) > threshold and self.since >= self.grace
        if ready:
            self.window[self.pos] = z
            self.pos, self.count = (self.pos + 1) % self.size, min(self.count + 1, self.size)
        filled = self.window[: self.count]
        deviation = filled - filled.mean() if self.count else filled
        m2 = float(np.mean(deviation**2)) if self.count else 0.0
        enough = self.count >= min(30, self.size) and m2 > 1e-12
        self.kurtosis = float(np.mean(deviation**4)) / m2**2 if enough else 3.0
        weight = max(self.alpha, 1.0 / (self.n + 1))
        self.var += weight * (error * error - self.var)
        self.n += 1
        self.g_plus, self.g_minus = (0.0, 0.0) if alarm else (g_plus, g_minus)
        if alarm:
            self.since = 0
        return alarm


def arl_figures(n_runs: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    for threshold in (4.0, 5.0):
        tag = f"h{threshold:.0f}"
        for label, shift in (("arl0", 0.0), ("arl1", 1.0)):
            key = jax.random.key(int(100 * threshold + 10 * shift))
            lengths = simulate_run_lengths(
                key, shift=shift, threshold=threshold, slack=0.5, n_runs=n_runs, max_steps=40_000
            )
            mc, se = average_run_length(lengths)
            approx = float(siegmund_arl(shift, threshold, 0.5))
            figures[f"{label}_{tag}_mc"] = mc
            figures[f"{label}_{tag}_siegmund"] = approx
            figures[f"{label}_rel_error_{tag}"] = abs(mc / approx - 1)
            figures[f"{label}_rel_error_vs_page_{tag}"] = abs(
                mc / page_arl(shift, threshold, 0.5) - 1
            )
            figures[f"{label}_rel_se_{tag}"] = se / mc
    for label in ("arl0", "arl1"):
        figures[f"{label}_rel_error"] = max(
            figures[f"{label}_rel_error_h4"], figures[f"{label}_rel_error_h5"]
        )
    return figures


def nile_figures() -> dict[str, int | bool | None]:
    """The first CUSUM alarm on the errors of a frozen 20-year mean of the Nile, the onset it
    dates, and the documented change point. With no alarm, the alarm and onset years are None
    (``np.argmax`` of an all-False array is 0: it would report the first year)."""
    nile = load_series("nile")
    flow, years = np.asarray(nile.values), nile.index.astype(int)
    forecasts = np.array([flow[: min(t, 20)].mean() for t in range(1, len(flow))])
    _, out = CusumDetector.from_config(PredictorConfig()).run(jnp.asarray(flow[1:] - forecasts))
    alarms = np.asarray(out.alarm)
    alarmed = bool(alarms.any())
    figures: dict[str, int | bool | None] = {
        "nile_alarmed": alarmed,
        "nile_alarm_year": None,
        "nile_onset_year": None,
        "nile_change_point_year": int(nile.metadata["parameters"]["change_point_year"]),
    }
    if alarmed:
        first = int(np.argmax(alarms))
        figures["nile_alarm_year"] = int(years[1:][first])
        figures["nile_onset_year"] = int(years[1:][first] - int(out.onset_lag[first]) + 1)
    return figures


def timing_figures(quick: bool) -> dict[str, float]:
    config = PredictorConfig()
    rng = np.random.default_rng(0)
    n_series, n_assets = (5_000, 256) if quick else (50_000, 4096)
    series = rng.standard_normal(n_series)

    # one update called from Python: dispatch-bound for JAX
    single = jax.jit(cusum_update, static_argnames="config")
    state = init_cusum(config)
    for e in series[:300]:  # a filled-in state, past the warm-up
        state, _ = single(state, e, config=config)
    t_jax = median_seconds(
        lambda: single(state, 0.3, config=config)[1].alarm.block_until_ready(), 300
    )
    # the same update with only the alarm flag returned: the compute, without the Python-side
    # cost of materialising the 29 arrays of state and report
    detector = CusumDetector.from_config(config)
    alarm_only = jax.jit(lambda s, e: detector.update(s, e)[1].alarm)
    error = jnp.asarray(0.3)
    t_alarm_only = median_seconds(lambda: alarm_only(state, error).block_until_ready(), 300)
    peer = NumpyCusum(config)
    for e in series[:300]:
        peer.update(float(e))
    t_numpy = median_seconds(lambda: peer.update(0.3), 300)

    # a long series: lax.scan against the Python loop
    run = jax.jit(CusumDetector.from_config(config).run)
    errors = jnp.asarray(series)
    t_scan = median_seconds(lambda: run(errors)[1].alarm.block_until_ready(), 5)

    def python_loop():
        p = NumpyCusum(config)
        for e in series:
            p.update(float(e))

    t_loop = median_seconds(python_loop, 3)

    # one step for many assets: vmap against a Python loop over assets
    batched = jax.jit(jax.vmap(lambda s, e: cusum_update(s, e, config)))
    states = jax.vmap(lambda _: init_cusum(config))(jnp.arange(n_assets))
    asset_errors = jnp.asarray(rng.standard_normal(n_assets))
    t_vmap = median_seconds(lambda: batched(states, asset_errors)[1].alarm.block_until_ready(), 20)
    peers = [NumpyCusum(config) for _ in range(n_assets)]
    for p in peers:  # past the warm-up, with a full kurtosis window, like a live asset
        for e in rng.standard_normal(config.kurtosis_window + 20):
            p.update(float(e))
    host_errors = [float(e) for e in np.asarray(asset_errors)]

    def python_assets():
        for p, e in zip(peers, host_errors, strict=True):
            p.update(e)

    t_assets = median_seconds(python_assets, 3)
    return {
        "update_us": t_jax * 1e6,
        "update_numpy_us": t_numpy * 1e6,
        "update_speedup_vs_numpy": t_numpy / t_jax,
        "update_alarm_only_us": t_alarm_only * 1e6,
        "scan_us_per_update": t_scan / n_series * 1e6,
        "loop_numpy_us_per_update": t_loop / n_series * 1e6,
        "scan_speedup_vs_numpy": t_loop / t_scan,
        "n_assets": n_assets,
        "vmap_us_per_asset": t_vmap / n_assets * 1e6,
        "assets_numpy_us_per_asset": t_assets / n_assets * 1e6,
        "vmap_speedup_vs_numpy": t_assets / t_vmap,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and repeats (CI-sized)")
    args = parser.parse_args()
    start = time.perf_counter()
    n_runs = 10_000 if args.quick else 40_000
    figures: dict[str, float | int | str | bool] = {"n_runs": n_runs}
    figures |= arl_figures(n_runs)
    figures |= nile_figures()
    figures |= timing_figures(args.quick)
    figures["arl_within_5pct"] = bool(
        max(figures["arl0_rel_error"], figures["arl1_rel_error"]) <= 0.05
    )
    figures["wall_s"] = time.perf_counter() - start
    report(figures)


if __name__ == "__main__":
    main()
