"""Evaluation: walk-forward validation, baselines, tuning, reports.

``walk_forward(values, name=...)`` returns a ``Backtest``; ``tune(values, n_trials=...)`` a
``TuneResult``. See notebooks/11_walk_forward.md.
"""

from usp.eval.aggregation import (
    AGGREGATION_RULES,
    Aggregation,
    best_convex,
    best_expert,
    boa,
    convex_weights,
    equal_weights,
    ewa,
    fixed_share,
    ml_poly,
    random_walk_scale,
)
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
    "AGGREGATION_RULES",
    "BASELINES",
    "SEARCH_SPACE",
    "Aggregation",
    "Backtest",
    "Folds",
    "TuneResult",
    "ar1_forecasts",
    "baseline_forecasts",
    "best_convex",
    "best_expert",
    "boa",
    "convex_weights",
    "directional_accuracy",
    "equal_weights",
    "ewa",
    "ewma_forecasts",
    "fit_ewma_smoothing",
    "fixed_share",
    "garch_forecasts",
    "look_ahead_leaks",
    "make_folds",
    "ml_poly",
    "naive_forecasts",
    "point_metrics",
    "random_walk_scale",
    "tune",
    "walk_forward",
]
