"""What a walk-forward backtest returns: aligned forecasts, telemetry and metrics.

``usp.eval.walk_forward`` produces a :class:`Backtest`; ``usp.eval.report`` and the ``usp``
command only read one. Every array shares the leading axis of ``index``: row ``i`` is the
forecast of ``values[index[i]]`` made with data up to ``values[index[i] - 1]`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Backtest:
    """One series' out-of-sample forecasts from the predictor and its baselines."""

    name: str
    """The series (dataset name or file stem)."""
    index: np.ndarray
    """(T,) int: position in the series of each forecast's target."""
    realised: np.ndarray
    """(T,) float: the value that was forecast, ``values[index]``."""
    previous: np.ndarray
    """(T,) float: the last value known when forecasting, ``values[index - 1]``."""
    forecasts: dict[str, np.ndarray]
    """Model name -> (T,) point forecasts. Always holds "usp" and "naive"; also the other
    baselines ("ewma", "ar1", "garch") and each branch alone, under its name ("A" ... "D" for
    the default branches; see ``branch_labels``)."""
    telemetry: dict[str, np.ndarray]
    """PredictionResult field -> (T, ...) values of the predictor's ticks that made the
    forecasts: weights (T, k), holder_exponent, cusum_drift, adaptive_threshold, kurtosis,
    free_energy, regime_change_detected, emergency_mode, robust_mode, ..."""
    branch_labels: dict[str, str] = field(default_factory=dict)
    """Branch name -> label (e.g. "A" -> "A Lévy"), in the predictor's branch order: the
    columns of ``telemetry["weights"]`` and ``telemetry["branch_forecasts"]``."""
    intervals: dict[str, np.ndarray] = field(default_factory=dict)
    """Level name (e.g. "90%") -> (T, 2) lower and upper predictive bounds of "usp"."""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    """Model name -> {"rmse", "mae", "rmse_over_naive", "mae_over_naive",
    "directional_accuracy", ...}, plus "usp" calibration entries such as "coverage_90"."""
    timestamps: np.ndarray | None = None
    """(T,) optional calendar positions of the targets (years, dates) for plots."""
    fold: np.ndarray | None = None
    """(T,) int: the walk-forward fold (training window) each row's forecast came from."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Model name -> wall seconds spent producing its forecasts in this run ("usp" includes
    compilation, cold starts and refits of every fold)."""
    settings: dict[str, object] = field(default_factory=dict)
    """How the run was laid out and what it cost: train_size, test_size, n_folds, first_target,
    last_target, usp_ticks (predictor ticks run, training included), usp_refit_seconds (part of
    seconds["usp"]), and per-baseline details (ewma_smoothing per fold, garch_fits,
    garch_not_converged, garch_on_log_returns)."""
