"""Out-of-sample accuracy of the predictor against oracles and baselines (issue 7 §5).

    python benchmarks/bench_accuracy.py [--quick]

Figures (float64, default ``PredictorConfig``, ``usp.eval.walk_forward`` with 256-value
training windows and 256-target test windows; all models on the same targets):

- ``ou_rmse_over_oracle``, ``merton_rmse_over_oracle``: the predictor's RMSE over the RMSE of
  the true conditional mean, from data/MANIFEST.json's parameters: for the OU series
  mu + (y - mu) exp(-theta dt); for Merton S exp(mu dt + lam dt (exp(m + s^2/2) - 1)).
  Targets <= 1.03. ``*_naive_over_oracle`` etc. give the baselines' ratios as context.
- ``sp500_rmse_over_random_walk`` (target <= 1.00), ``sp500_rmse_over_garch``, the MAE ratio,
  the Diebold-Mariano p-value against the random walk, directional accuracy and the coverage of
  the 90% Gaussian interval, on the S&P 500 closes shipped with ``arch``.
- ``nile_alarm_year_abs_error`` (target <= 3): |first CUSUM alarm year - 1898| on the Nile
  (None, and ``target_nile_ok`` false, when the detector never alarms). The Nile has 100
  values, fewer than one 128-value buffer, so the full predictor cannot run on it; as in
  notebooks/07_cusum.md, the predictor's CUSUM detector watches the errors of a frozen 20-year
  mean (``bench_cusum.nile_figures``, reused). ``nile_change_point_abs_error``
  is the error of the change point the alarm dates (alarm year - onset lag).
- Speed, on one fixed series in both modes: the first 769 values of Merton, two folds of 256
  targets (512 targets; 1024 predictor ticks, training included). ``usp_backtest_s`` is the
  median over ``speed_repeats`` warm walk-forwards of the predictor alone (no baselines; same
  shapes as an earlier run, so no compilation; cold starts and refits of both folds included),
  ``backtest_ticks_per_s`` and ``usp_targets_per_s`` follow from it, ``backtest_refit_share``
  is the median share of refits and ``backtest_scan_ticks_per_s`` the ticks per second
  without them. The peer, on the same folds and targets: ``garch_backtest_s``, the median over
  repeats of the AR(1)-GARCH(1,1) baseline alone (``baseline_forecasts``: its ``arch`` fits
  and filter), and ``usp_seconds_per_target_over_garch``, the predictor's seconds per target
  over GARCH's. ``naive_targets_per_s`` is the random walk's, for scale. The repeats cost
  about 3-5 s each on a 2-core CPU, which is why the speed series stays at two folds in the
  full run too. ``first_backtest_s`` is the first walk-forward, compilation included.

``--quick`` uses two folds per series (the last 769 values of S&P 500, the first 769 of the
synthetic ones); the full run uses every whole fold. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402
from _timing import median_seconds, report  # noqa: E402
from bench_cusum import nile_figures  # noqa: E402

from usp.eval import baseline_forecasts, make_folds, walk_forward  # noqa: E402
from usp.io.data import load_series  # noqa: E402

TRAIN = TEST = 256
SPEED_SERIES = "merton"
SPEED_REPEATS = 3


def oracle_forecasts(name: str, previous: np.ndarray) -> np.ndarray:
    """The true conditional mean of each target given the last value."""
    p = load_series(name).metadata["parameters"]
    if name == "ou":
        return p["mu"] + (previous - p["mu"]) * math.exp(-p["theta"] * p["dt"])
    if name == "merton":
        jump_mean = math.exp(p["jump_mean"] + p["jump_sd"] ** 2 / 2) - 1
        return previous * math.exp(p["mu"] * p["dt"] + p["lam"] * p["dt"] * jump_mean)
    raise KeyError(name)


def series_values(name: str, quick: bool) -> np.ndarray:
    values = load_series(name).values
    if not quick:
        return values
    n = TRAIN + 1 + 2 * TEST
    return values[-n:] if name == "sp500" else values[:n]


def speed_figures(warm: bool) -> dict[str, float | int | str]:
    """The predictor's backtest speed against the GARCH baseline's on the same targets, each a
    median over repeats. ``warm``: an earlier walk-forward compiled these shapes (two folds);
    otherwise one untimed walk-forward compiles them first."""
    values = series_values(SPEED_SERIES, quick=True)
    runs = [
        walk_forward(values, train_size=TRAIN, test_size=TEST, baselines=())
        for _ in range(SPEED_REPEATS + (0 if warm else 1))
    ][-SPEED_REPEATS:]
    usp_s = float(np.median([r.seconds["usp"] for r in runs]))
    refit_s = float(np.median([r.settings["usp_refit_seconds"] for r in runs]))
    scan_s = float(np.median([r.seconds["usp"] - r.settings["usp_refit_seconds"] for r in runs]))
    n_ticks, n_targets = runs[0].settings["usp_ticks"], len(runs[0].index)
    folds = make_folds(len(values), train_size=TRAIN, test_size=TEST)
    garch_s = median_seconds(lambda: baseline_forecasts("garch", values, folds), SPEED_REPEATS)
    naive_s = median_seconds(lambda: baseline_forecasts("naive", values, folds), 50)
    return {
        "speed_series": f"{SPEED_SERIES}[:{len(values)}]",
        "speed_targets": n_targets,
        "speed_repeats": SPEED_REPEATS,
        "usp_backtest_s": usp_s,
        "backtest_ticks_per_s": n_ticks / usp_s,
        "usp_targets_per_s": n_targets / usp_s,
        "backtest_refit_share": refit_s / usp_s,
        "backtest_scan_ticks_per_s": n_ticks / scan_s,
        "garch_backtest_s": garch_s,
        "garch_targets_per_s": n_targets / garch_s,
        "naive_targets_per_s": n_targets / naive_s,
        "usp_seconds_per_target_over_garch": usp_s / garch_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two folds per series")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    wall = time.perf_counter()
    figures: dict[str, float | int | str | bool | None] = {
        "device": str(jax.devices()[0].device_kind),
        "quick": args.quick,
    }
    runs = {}
    for name in ("ou", "merton", "sp500"):
        start = time.perf_counter()
        runs[name] = walk_forward(
            series_values(name, args.quick), name=name, train_size=TRAIN, test_size=TEST
        )
        seconds = time.perf_counter() - start
        if name == "ou":
            figures["first_backtest_s"] = seconds
        print(f"[bench_accuracy] {name}: {seconds:.1f} s", file=sys.stderr, flush=True)

    for name in ("ou", "merton"):
        bt = runs[name]
        oracle = np.sqrt(np.mean((bt.realised - oracle_forecasts(name, bt.previous)) ** 2))
        figures[f"{name}_targets"] = len(bt.index)
        figures[f"{name}_rmse_over_oracle"] = bt.metrics["usp"]["rmse"] / oracle
        for model in ("naive", "ewma", "ar1", "garch", "A", "B", "C", "D"):
            figures[f"{name}_{model}_over_oracle"] = bt.metrics[model]["rmse"] / oracle

    sp = runs["sp500"]
    usp = sp.metrics["usp"]
    figures |= {
        "sp500_targets": len(sp.index),
        "sp500_rmse_over_random_walk": usp["rmse_over_naive"],
        "sp500_rmse_over_garch": usp["rmse"] / sp.metrics["garch"]["rmse"],
        "sp500_mae_over_random_walk": usp["mae_over_naive"],
        "sp500_dm_pvalue_vs_random_walk": usp["dm_pvalue_vs_naive"],
        "sp500_directional_accuracy": usp["directional_accuracy"],
        "sp500_coverage_90": usp["coverage_90"],
        "sp500_garch_over_random_walk": sp.metrics["garch"]["rmse_over_naive"],
        "sp500_best_branch_over_random_walk": min(
            sp.metrics[b]["rmse_over_naive"] for b in ("A", "B", "C", "D")
        ),
    }

    nile = nile_figures()
    change = nile["nile_change_point_year"]
    alarmed = nile["nile_alarmed"]
    figures |= {
        "nile_alarm_year": nile["nile_alarm_year"],
        "nile_alarm_year_abs_error": abs(nile["nile_alarm_year"] - change) if alarmed else None,
        "nile_change_point_abs_error": (
            abs(nile["nile_onset_year"] - 1 - change) if alarmed else None
        ),
    }

    # --quick: the OU run compiled the speed runs' shapes (two folds of 256 + 256).
    start = time.perf_counter()
    figures |= speed_figures(warm=args.quick)
    figures["speed_s"] = time.perf_counter() - start
    figures |= {
        "garch_fits": runs["merton"].settings["garch_fits"],
        "load_avg_1min_start": load_start,
        "load_avg_1min_end": os.getloadavg()[0],
        "bench_wall_s": time.perf_counter() - wall,
    }
    figures |= {
        "target_ou_ok": bool(figures["ou_rmse_over_oracle"] <= 1.03),
        "target_merton_ok": bool(figures["merton_rmse_over_oracle"] <= 1.03),
        "target_sp500_ok": bool(figures["sp500_rmse_over_random_walk"] <= 1.00),
        "target_nile_ok": alarmed and figures["nile_alarm_year_abs_error"] <= 3,
    }
    report(figures)


if __name__ == "__main__":
    main()
