"""Hyper-parameter search (EVAL-2): Optuna's TPE over the spec's space, scored by walk-forward
RMSE. The objective and its cost are derived in notebooks/11_walk_forward.md (eq. tuning).

Every field searched here is static in the compiled step, so each trial with a new config
compiles the predictor again: a trial costs one compilation plus one walk-forward.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from usp.contracts.config import PredictorConfig
from usp.eval.walk_forward import walk_forward

SEARCH_SPACE: dict[str, tuple[str, int | float, int | float]] = {
    "log_sig_depth": ("int", 2, 5),
    "epsilon": ("log", 1e-4, 1e-1),
    "jko_tau": ("log", 0.01, 2.0),
    "cusum_h": ("float", 2.0, 8.0),
    "cusum_k": ("float", 0.1, 1.0),
    "volatility_alpha": ("log", 0.01, 0.3),
    "besov_cone_c": ("float", 1.0, 3.0),
    "holder_threshold": ("float", 0.01, 0.2),
}
"""PredictorConfig field -> (kind, low, high); kind "log" samples on a log scale. The spec's
ranges, except holder_threshold: its 0.3-0.6 would trip the circuit breaker on about half the
ticks of a random walk with a 128-value buffer (see PredictorConfig.holder_threshold)."""


@dataclass(frozen=True)
class TuneResult:
    """The best config found and every trial (a table: one dict per trial)."""

    best_config: PredictorConfig
    best_rmse: float
    trials: list[dict[str, Any]]
    """number, the searched fields, rmse, rmse_over_naive, seconds (compilation included)."""
    seed: int

    def table(self) -> list[dict[str, Any]]:
        """Trials sorted by RMSE, best first."""
        return sorted(self.trials, key=lambda row: row["rmse"])


def suggest_config(
    trial: Any, base: PredictorConfig, space: Mapping[str, tuple[str, int | float, int | float]]
) -> PredictorConfig:
    """The config an Optuna trial proposes: ``base`` with the searched fields replaced."""
    changes: dict[str, Any] = {}
    for name, (kind, low, high) in space.items():
        if kind == "int":
            changes[name] = trial.suggest_int(name, int(low), int(high))
        elif kind in ("float", "log"):
            changes[name] = trial.suggest_float(name, low, high, log=kind == "log")
        else:
            raise ValueError(f"search space {name}: unknown kind {kind!r}")
    return base.replace(**changes)


def tune(
    values: Sequence[float] | np.ndarray,
    *,
    n_trials: int = 20,
    seed: int = 0,
    config: PredictorConfig | None = None,
    space: Mapping[str, tuple[str, int | float, int | float]] | None = None,
    include_base: bool = True,
    progress: Callable[[int, int], object] | None = None,
    **walk_forward_options: Any,
) -> TuneResult:
    """Seeded TPE search minimising the predictor's walk-forward RMSE on ``values``.

    ``include_base`` makes the first trial ``config`` itself (default ``PredictorConfig()``),
    so the result is never worse than the starting point on this objective. Options such as
    ``train_size`` and ``test_size`` go to ``walk_forward``; baselines are not run.
    """
    with warnings.catch_warnings():  # optuna's import of tqdm.auto warns outside Jupyter widgets
        warnings.simplefilter("ignore")
        import optuna

    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, got {n_trials}")
    base = config or PredictorConfig()
    space = dict(SEARCH_SPACE if space is None else space)
    unknown = set(space) - set(base.to_dict())
    if unknown:
        raise ValueError(f"search space names unknown PredictorConfig fields {sorted(unknown)}")
    values = np.asarray(values, dtype=float)
    rows: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        start = time.perf_counter()
        candidate = suggest_config(trial, base, space)
        backtest = walk_forward(values, candidate, baselines=(), **walk_forward_options)
        usp = backtest.metrics["usp"]
        rows.append(
            {
                "number": trial.number,
                **{name: getattr(candidate, name) for name in space},
                "rmse": usp["rmse"],
                "rmse_over_naive": usp["rmse_over_naive"],
                "seconds": time.perf_counter() - start,
            }
        )
        if progress is not None:
            progress(len(rows), n_trials)
        return usp["rmse"]

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is too chatty
    try:
        sampler = optuna.samplers.TPESampler(seed=seed)
        study = optuna.create_study(direction="minimize", sampler=sampler)
        if include_base:
            study.enqueue_trial({name: getattr(base, name) for name in space})
        study.optimize(objective, n_trials=n_trials)
    finally:
        optuna.logging.set_verbosity(verbosity)
    best = study.best_trial
    best_config = base.replace(**{name: best.params[name] for name in space})
    return TuneResult(best_config, float(best.value), rows, seed)


__all__ = ["SEARCH_SPACE", "TuneResult", "suggest_config", "tune"]
