"""Evaluation: walk-forward validation, baselines, tuning, reports.

``walk_forward(values, name=...)`` returns a ``Backtest``; ``tune(values, n_trials=...)`` a
``TuneResult``. See notebooks/11_walk_forward.md.
"""

from usp.eval.backtest import Backtest
from usp.eval.tune import SEARCH_SPACE, TuneResult, tune
from usp.eval.walk_forward import (
    BASELINES,
    Folds,
    ar1_forecasts,
    baseline_forecasts,
    directional_accuracy,
    ewma_forecasts,
    fit_ewma_smoothing,
    garch_forecasts,
    look_ahead_leaks,
    make_folds,
    naive_forecasts,
    point_metrics,
    walk_forward,
)

__all__ = [
    "BASELINES",
    "SEARCH_SPACE",
    "Backtest",
    "Folds",
    "TuneResult",
    "ar1_forecasts",
    "baseline_forecasts",
    "directional_accuracy",
    "ewma_forecasts",
    "fit_ewma_smoothing",
    "garch_forecasts",
    "look_ahead_leaks",
    "make_folds",
    "naive_forecasts",
    "point_metrics",
    "tune",
    "walk_forward",
]
