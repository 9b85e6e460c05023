"""Does the JKO blend earn its keep? The blend against online aggregation of its own branches.

    python benchmarks/bench_aggregation.py [--quick]

On every bundled series that a walk-forward can run on (the Nile's 100 values are fewer than
one training window and are skipped) and on the S&P 500 and NASDAQ closes shipped with
``arch`` (their last 1,600 values), one ``usp.eval.walk_forward(values, name=...)`` (default
layout: 256-value training windows, 256-target folds, every whole fold) gives the predictor's
forecasts ("usp", the blend), each branch's forecasts (``branch_labels``: the experts) and the
random walk's ("naive"). Series that cross zero are lifted by LIFT = 500 as in
notebooks/12_case_studies.md (branches A-C model log-prices). Every rule of
``usp.eval.aggregation`` then runs on the branch forecasts, online over all targets in order
(across folds), with squared losses scaled by the lagged EWMA of squared random-walk errors
(``random_walk_scale``, λ = 0.94): equal weights, EWA (rate sqrt(8 ln K / T)), BOA (opera's
adaptive version), ML-Poly, Fixed-Share (α = 0.01, EWA's rate); and the hindsight references,
fitted on the same targets' unscaled squared error: the best branch and the best fixed convex
combination of the branches.

Table: RMSE / random-walk RMSE per series and model. Figures (ratios of RMSEs, max or median
over series): ``usp_over_boa_median``, ``usp_over_boa_max``, ``usp_over_best_branch_max``,
``usp_over_best_convex_max``, ``usp_over_best_anchor_max`` (the best online rule per series),
``usp_over_rw_martingales_max`` (S&P 500, NASDAQ, fBm H = 0.5: the random walk is the oracle
there, or nearly). Below 1 the blend wins. Cost: each rule's median seconds per target over
series (three timed runs per series), against the predictor's seconds per tick (walk-forward
time less refits over ticks, median over series after the first, which compiles):
``aggregation_over_usp_tick``.

``--quick``: the first 1,025 values of each bundled series and the last 1,025 of the 1,600
market values: three folds, 768 targets per series (one compilation for all). The last line
is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402
from _timing import report  # noqa: E402

from usp.api import PredictorConfig  # noqa: E402
from usp.eval import (  # noqa: E402
    AGGREGATION_RULES,
    best_convex,
    best_expert,
    random_walk_scale,
    walk_forward,
)
from usp.io.data import PACKAGE_SERIES, available_series, load_series  # noqa: E402

TRAIN = 2 * PredictorConfig().wtmm_buffer_size  # walk_forward's default training window
LIFT = 500.0
"""Added to a series that crosses zero (notebooks/12_case_studies.md)."""
MARKET_VALUES = 1600
QUICK_VALUES = 1025  # 256 training values + 1 + 3 folds of 256 targets
MARTINGALES = ("sp500", "nasdaq", "fbm_h05")
TIMING_REPEATS = 3
COLUMNS = ("usp", "best_branch", "boa", "ewa", "ml_poly", "fixed_share", "equal", "best_convex")


def series_values(name: str, quick: bool) -> tuple[np.ndarray, float]:
    """The values a walk-forward runs on, and the lift added to them."""
    raw = load_series(name).values
    if name in PACKAGE_SERIES:
        raw = raw[-MARKET_VALUES:]
    lift = LIFT if raw.min() <= 0 else 0.0
    if quick:
        raw = raw[-QUICK_VALUES:] if name in PACKAGE_SERIES else raw[:QUICK_VALUES]
    return raw + lift, lift


def rmse(realised: np.ndarray, forecast: np.ndarray) -> float:
    return float(np.sqrt(np.mean((realised - forecast) ** 2)))


def aggregate(bt) -> tuple[dict[str, float], dict[str, float], dict[str, object]]:
    """RMSE / random walk of the blend, the rules and the references on one backtest; each
    rule's median seconds per target; which branch is best and the convex weights."""
    names = list(bt.branch_labels)
    experts = np.stack([bt.forecasts[b] for b in names], axis=1)
    y, previous = bt.realised, bt.previous
    scale = random_walk_scale(y, previous)
    naive = rmse(y, bt.forecasts["naive"])
    forecasts = {"usp": bt.forecasts["usp"]}
    seconds = {}
    for rule_name, rule in AGGREGATION_RULES.items():
        times = []
        for _ in range(TIMING_REPEATS):
            start = time.perf_counter()
            result = rule(experts, y, scale=scale)
            times.append(time.perf_counter() - start)
        forecasts[rule_name] = result.forecasts
        seconds[rule_name] = statistics.median(times) / len(y)
    best = best_expert(experts, y)
    forecasts["best_branch"] = best.forecasts
    start = time.perf_counter()
    mix = best_convex(experts, y)
    seconds["best_convex"] = (time.perf_counter() - start) / len(y)
    forecasts["best_convex"] = mix.forecasts
    ratios = {m: rmse(y, forecasts[m]) / naive for m in COLUMNS}
    detail = {
        "best_branch": names[int(np.argmax(best.weights[0]))],
        "convex_weights": {
            b: round(float(w), 4) for b, w in zip(names, mix.weights[0], strict=True)
        },
    }
    return ratios, seconds, detail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three folds per series")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    wall = time.perf_counter()

    table: dict[str, dict[str, float]] = {}
    details: dict[str, dict[str, object]] = {}
    rule_seconds: dict[str, list[float]] = {}
    usp_tick_seconds: list[float] = []
    skipped: dict[str, str] = {}
    for name in available_series():
        values, lift = series_values(name, args.quick)
        if len(values) <= TRAIN + 1:
            skipped[name] = f"{len(values)} values: no target after a {TRAIN}-value window"
            continue
        start = time.perf_counter()
        bt = walk_forward(values, name=name, baselines=())
        elapsed = time.perf_counter() - start
        print(f"[bench_aggregation] {name}: {elapsed:.1f} s", file=sys.stderr, flush=True)
        ticks = bt.settings["usp_ticks"]
        usp_tick_seconds.append((bt.seconds["usp"] - bt.settings["usp_refit_seconds"]) / ticks)
        ratios, seconds, detail = aggregate(bt)
        table[name] = {"targets": len(bt.index), **{m: round(v, 5) for m, v in ratios.items()}}
        details[name] = {"lift": lift, "walk_forward_s": round(elapsed, 2), **detail}
        for rule_name, s in seconds.items():
            rule_seconds.setdefault(rule_name, []).append(s)

    header = f"  {'series':<9}{'T':>6}" + "".join(f"{c:>13}" for c in COLUMNS)
    print("RMSE / random walk (scaled losses for the online rules):")
    print(header)
    for name, row in table.items():
        cells = "".join(f"{row[c]:>13.4f}" for c in COLUMNS)
        print(f"  {name:<9}{row['targets']:>6}{cells}")

    def over(model: str) -> dict[str, float]:
        return {n: row["usp"] / row[model] for n, row in table.items()}

    usp_over_boa = over("boa")
    online = ("boa", "ewa", "ml_poly", "fixed_share", "equal")
    usp_over_best_anchor = {n: row["usp"] / min(row[m] for m in online) for n, row in table.items()}
    # The first walk-forward compiles; later ones reuse its shapes.
    usp_tick = statistics.median(usp_tick_seconds[1:] or usp_tick_seconds)
    rule_per_step = {r: statistics.median(s) for r, s in rule_seconds.items()}
    figures: dict[str, object] = {
        "device": str(jax.devices()[0].device_kind),
        "quick": args.quick,
        "series": list(table),
        "skipped": skipped,
        "usp_over_boa_median": statistics.median(usp_over_boa.values()),
        "usp_over_boa_max": max(usp_over_boa.values()),
        "usp_over_boa_max_series": max(usp_over_boa, key=usp_over_boa.get),
        "usp_over_best_branch_max": max(over("best_branch").values()),
        "usp_over_best_convex_max": max(over("best_convex").values()),
        "usp_over_best_anchor_max": max(usp_over_best_anchor.values()),
        "usp_over_rw_martingales_max": max(table[n]["usp"] for n in MARTINGALES if n in table),
        "usp_over_boa": {n: round(v, 4) for n, v in usp_over_boa.items()},
        "usp_over_best_anchor": {n: round(v, 4) for n, v in usp_over_best_anchor.items()},
        "usp_s_per_tick": usp_tick,
        "rule_us_per_target": {r: round(1e6 * s, 2) for r, s in rule_per_step.items()},
        "aggregation_over_usp_tick": {r: s / usp_tick for r, s in rule_per_step.items()},
        "table": table,
        "details": details,
        "load_avg_1min_start": load_start,
        "load_avg_1min_end": os.getloadavg()[0],
        "bench_wall_s": time.perf_counter() - wall,
    }
    figures["target_blend_beats_anchors_ok"] = bool(figures["usp_over_best_anchor_max"] <= 1.0)
    report(figures)


if __name__ == "__main__":
    main()
