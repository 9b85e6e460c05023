"""The ``usp`` command.

    usp demo [--dataset NAME ...] [--window N]   branch A's rolling one-step forecasts on bundled
                                                 data, against the naive forecast
    usp datasets                                 list the series usp can load

Errors print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from usp.io.data import available_series, load_series

DEMO_DATASETS = ("merton", "ou", "fbm_h05", "sp500")
PREDICTOR_DATASETS = ("merton", "sp500")
PREDICTOR_TICKS = 1000
"""The full predictor is fitted on what precedes the last PREDICTOR_TICKS values, then steps
through them one tick at a time."""


def _rolling_windows(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Every window of ``window`` values and the value that follows it (no look-ahead)."""
    starts = np.arange(len(values) - window)
    windows = values[starts[:, None] + np.arange(window)[None, :]]
    return windows, values[window:]


def demo_table(datasets: Sequence[str], window: int, chunk: int = 256) -> list[dict]:
    """Branch A fitted on each rolling window, forecasting the next value."""
    import jax
    import jax.numpy as jnp
    from tqdm import tqdm

    from usp.api import PredictorConfig
    from usp.kernels.levy import LevyBranch

    jax.config.update("jax_enable_x64", True)
    branch = LevyBranch.from_config(PredictorConfig().replace(levy_mc_samples=1024))
    levels = jnp.array([0.05, 0.5, 0.95])

    @jax.jit
    def forecast_chunk(windows, keys):
        def one(buffer, key):
            params = branch.fit(branch.init(key=key), buffer)
            return branch.predictive_quantiles(params, buffer, levels, key=key), params.law.alpha

        return jax.vmap(one)(windows, keys)

    rows = []
    for name in datasets:
        series = load_series(name)
        if len(series) <= window + 1:
            raise ValueError(f"{name}: {len(series)} values, need more than {window + 1}")
        windows, targets = _rolling_windows(series.values, window)
        quantiles, alphas = [], []
        key = jax.random.key(0)
        for start in tqdm(range(0, len(windows), chunk), desc=f"{name:>8}", unit="chunk"):
            block = windows[start : start + chunk]
            pad = chunk - len(block)  # fixed chunk shape: one compile for every chunk
            padded = np.concatenate([block, np.repeat(block[-1:], pad, axis=0)])
            keys = jax.random.split(jax.random.fold_in(key, start), chunk)
            q, a = forecast_chunk(jnp.asarray(padded), keys)
            quantiles.append(np.asarray(q)[: len(block)])
            alphas.append(np.asarray(a)[: len(block)])
        q = np.concatenate(quantiles)
        naive_mae = np.mean(np.abs(windows[:, -1] - targets))
        branch_mae = np.mean(np.abs(q[:, 1] - targets))
        rows.append(
            {
                "dataset": name,
                "forecasts": len(targets),
                "naive_mae": naive_mae,
                "branch_a_mae": branch_mae,
                "ratio": branch_mae / naive_mae,
                "coverage_90": np.mean((targets >= q[:, 0]) & (targets <= q[:, 2])),
                "median_alpha": float(np.median(np.concatenate(alphas))),
            }
        )
    return rows


def predictor_table(datasets: Sequence[str]) -> list[dict]:
    """The full predictor: fit_history on the past, then one ``step`` per remaining tick."""
    import jax

    from usp import MarketObservation, UniversalPredictor

    jax.config.update("jax_enable_x64", True)
    rows = []
    for name in datasets:
        values = load_series(name).values
        history, live = values[:-PREDICTOR_TICKS], values[-PREDICTOR_TICKS:]
        predictor = UniversalPredictor(clock=None)
        predictor.fit_history(history)
        forecasts, emergency, alarms = [], 0, 0
        for t, price in enumerate(live):
            result = predictor.step(MarketObservation(float(price), float(price), t + 1))
            forecasts.append(float(result.predicted_next))
            emergency += bool(result.emergency_mode)
            alarms += bool(result.regime_change_detected)
        predicted = np.array(forecasts[:-1])
        realised, naive = live[1:], live[:-1]
        predictor_rmse = float(np.sqrt(np.mean((predicted - realised) ** 2)))
        naive_rmse = float(np.sqrt(np.mean((naive - realised) ** 2)))
        rows.append(
            {
                "dataset": name,
                "forecasts": len(realised),
                "naive_rmse": naive_rmse,
                "predictor_rmse": predictor_rmse,
                "ratio": predictor_rmse / naive_rmse,
                "emergency_share": emergency / len(live),
                "regime_changes": alarms,
                "weights": np.asarray(result.weights),
            }
        )
    return rows


def print_predictor_table(rows: list[dict]) -> None:
    header = (
        f"{'dataset':>10} {'forecasts':>9} {'naive RMSE':>11} {'usp RMSE':>10} {'ratio':>6} "
        f"{'emergency':>9} {'alarms':>6}  final weights A/B/C/D"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        weights = "/".join(f"{w:.2f}" for w in r["weights"])
        print(
            f"{r['dataset']:>10} {r['forecasts']:>9d} {r['naive_rmse']:>11.5g} "
            f"{r['predictor_rmse']:>10.5g} {r['ratio']:>6.3f} {r['emergency_share']:>9.3f} "
            f"{r['regime_changes']:>6d}  {weights}"
        )


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'dataset':>10} {'forecasts':>9} {'naive MAE':>11} {'branch A MAE':>13} "
        f"{'ratio':>6} {'90% cover':>9} {'median α':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['dataset']:>10} {r['forecasts']:>9d} {r['naive_mae']:>11.5g} "
            f"{r['branch_a_mae']:>13.5g} {r['ratio']:>6.3f} {r['coverage_90']:>9.3f} "
            f"{r['median_alpha']:>8.2f}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="usp", description="Universal Stochastic Predictor")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="branch A's rolling forecasts on bundled data")
    demo.add_argument("--dataset", action="append", help=f"default: {', '.join(DEMO_DATASETS)}")
    demo.add_argument("--window", type=int, default=128, help="values per fit (default 128)")
    sub.add_parser("datasets", help="list the series usp can load")
    args = parser.parse_args(argv)
    try:
        if args.command == "datasets":
            print("\n".join(available_series()))
            return 0
        if args.window < 17:
            raise ValueError(f"--window must be at least 17, got {args.window}")
        rows = demo_table(args.dataset or DEMO_DATASETS, args.window)
    except (KeyError, ValueError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"usp: error: {message}", file=sys.stderr)
        return 2
    print()
    print("Branch A (α-stable Lévy) one-step forecasts, rolling windows, no look-ahead")
    print_table(rows)
    if args.dataset is None:
        print()
        print(
            f"The full predictor (all four branches, JKO weights, guards): fitted on the history, "
            f"then stepped tick by tick through the last {PREDICTOR_TICKS} values"
        )
        print_predictor_table(predictor_table(PREDICTOR_DATASETS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
