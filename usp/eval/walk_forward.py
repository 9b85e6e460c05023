# GENERATED FILE - DO NOT EDIT.
# Source: notebooks/11_walk_forward.md (code cells tagged `export`).
# Edit the notebook, then run `make export`.

"""Walk-forward validation: the predictor and its baselines on the same out-of-sample targets.

See notebooks/11_walk_forward.md for the fold layout (eq. folds), the baselines' one-step
forecasts (eqs. naive, ewma, ar1, garch) and the metrics (eqs. rmse, direction, coverage).
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import minimize_scalar
from scipy.signal import lfilter
from scipy.stats import norm

from usp.api.functional import FunctionalPredictor
from usp.contracts.branch import AbstractBranch
from usp.contracts.config import PredictorConfig
from usp.contracts.errors import DomainError
from usp.contracts.types import PredictionResult
from usp.core.step import PredictorState, run
from usp.eval.backtest import Backtest

BASELINES = ("naive", "ewma", "ar1", "garch")
INTERVAL_LEVELS = (0.5, 0.8, 0.9, 0.95)
Progress = Callable[[int, int], object]


@dataclass(frozen=True)
class Folds:
    """Rolling windows (eq. folds): fold k trains on ``values[a_k - 1 - L : a_k - 1]``, then
    forecasts the targets ``a_k, ..., a_k + T - 1`` from the ticks ``a_k - 1, ..., a_k + T - 2``.
    """

    train_size: int
    """L: training values of each fold."""
    test_size: int
    """T: targets of each fold."""
    first_targets: np.ndarray
    """(F,) int: a_k, the first target of each fold; a_{k+1} = a_k + T (test windows tile)."""

    @property
    def n_folds(self) -> int:
        return len(self.first_targets)

    @property
    def target_index(self) -> np.ndarray:
        """(F, T) int: the target of every forecast, fold by fold."""
        return self.first_targets[:, None] + np.arange(self.test_size)[None, :]

    def train_windows(self, values: np.ndarray) -> np.ndarray:
        """(F, L): each fold's training values, oldest first."""
        starts = self.first_targets - 1 - self.train_size
        return np.stack([values[s : s + self.train_size] for s in starts])

    def test_ticks(self, values: np.ndarray) -> np.ndarray:
        """(F, T): the prices fed to each fold's test ticks, ``values[a_k - 1 + j]``."""
        return values[self.target_index - 1]


def make_folds(
    n_values: int,
    *,
    train_size: int,
    test_size: int | None = None,
    n_folds: int | None = None,
) -> Folds:
    """Tile the series after the first training window with test windows of ``test_size``
    targets (or with ``n_folds`` equal windows). Targets past the last whole window are left
    out, so every fold has the same shape (one compiled program for all of them)."""
    available = n_values - 1 - train_size  # targets L + 1, ..., n - 1
    if available < 1:
        raise ValueError(
            f"walk-forward needs more than train_size + 1 = {train_size + 1} values, got {n_values}"
        )
    if test_size is None and n_folds is None:
        n_folds = 1
    for name, count in (("test_size", test_size), ("n_folds", n_folds)):
        if count is not None and count < 1:
            raise ValueError(f"{name} must be at least 1, got {count}")
    if test_size is None:
        test_size = available // n_folds
    if n_folds is None:
        n_folds = available // test_size
    if test_size < 1 or n_folds < 1 or n_folds * test_size > available:
        raise ValueError(
            f"{n_folds} folds of {test_size} targets do not fit in the {available} targets "
            f"after a {train_size}-value training window"
        )
    first = train_size + 1 + test_size * np.arange(n_folds)
    return Folds(train_size, test_size, first)


def naive_forecasts(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Random walk (eq. naive): the forecast of ``values[i]`` is ``values[i - 1]``."""
    return np.asarray(values, float)[np.asarray(index) - 1]


def ewma_level(values: np.ndarray, smoothing: float) -> np.ndarray:
    """m_t = λ y_t + (1 - λ) m_{t-1}, m_0 = y_0 (eq. ewma), as one linear filter."""
    values = np.asarray(values, float)
    decay = 1.0 - smoothing
    rest, _ = lfilter([smoothing], [1.0, -decay], values[1:], zi=[decay * values[0]])
    return np.concatenate([values[:1], rest])


def fit_ewma_smoothing(train: np.ndarray) -> float:
    """λ minimising the one-step squared error of the EWMA forecast on ``train``.

    λ = 1 is the random walk, so the fitted EWMA nests the naive forecast."""
    train = np.asarray(train, float)

    def sse(smoothing: float) -> float:
        return float(np.sum((train[1:] - ewma_level(train, smoothing)[:-1]) ** 2))

    best = minimize_scalar(sse, bounds=(1e-3, 1.0), method="bounded", options={"xatol": 1e-4})
    return float(best.x) if sse(float(best.x)) < sse(1.0) else 1.0


def ewma_forecasts(
    values: np.ndarray, index: np.ndarray, *, smoothing: float, start: int = 0
) -> np.ndarray:
    """Forecast of ``values[i]`` = m_{i-1}, the EWMA level started at ``values[start]``."""
    index = np.asarray(index)
    if index.size and index.min() <= start:
        raise ValueError(f"EWMA targets must come after its start {start}, got {index.min()}")
    level = ewma_level(np.asarray(values, float)[start : index.max()], smoothing)
    return level[index - 1 - start]


def ar1_forecasts(values: np.ndarray, index: np.ndarray, *, window: int) -> np.ndarray:
    """AR(1) by least squares on the ``window`` pairs (y_{t-1}, y_t) before each target
    (eq. ar1), re-estimated at every target: c + φ y_{i-1} with (c, φ) from values < i."""
    values = np.asarray(values, float)
    index = np.asarray(index)
    if index.size and index.min() < window + 1:
        raise ValueError(f"AR(1) with window {window} needs targets >= {window + 1}")
    # Row j of `past` holds values[i - 1 - window : i] for the j-th target i.
    past = np.lib.stride_tricks.sliding_window_view(values, window + 1)[index - 1 - window]
    before, after = past[:, :-1], past[:, 1:]
    before_mean = before.mean(axis=1, keepdims=True)
    after_mean = after.mean(axis=1, keepdims=True)
    spread = np.sum((before - before_mean) ** 2, axis=1)
    covariance = np.sum((before - before_mean) * (after - after_mean), axis=1)
    # A flat window has no slope: forecast its (constant) mean.
    slope = np.where(spread > 0, covariance / np.where(spread > 0, spread, 1.0), 0.0)
    intercept = after_mean[:, 0] - slope * before_mean[:, 0]
    return intercept + slope * values[index - 1]


@dataclass(frozen=True)
class GarchFit:
    """What the GARCH baseline did: refits, those that did not converge, and on what scale."""

    n_fits: int
    n_not_converged: int
    on_log_returns: bool


def _garch_filter(
    params: np.ndarray, returns: np.ndarray, *, shock: float, variance: float, first_origin: int
) -> tuple[np.ndarray, np.ndarray]:
    """One-step AR(1)-GARCH(1,1) mean and variance forecasts made at each origin t >=
    ``first_origin`` of ``returns`` with fixed ``params`` (μ, φ, ω, α, β), continuing arch's
    in-sample recursion from its last residual ``shock`` and conditional ``variance``."""
    mu, phi, omega, alpha, beta = params
    mean = np.full(len(returns), np.nan)
    next_variance = np.full(len(returns), np.nan)
    for t in range(first_origin, len(returns)):
        if t > first_origin:  # the return at t is now known: its shock updates the variance
            shock, variance = returns[t] - mean[t - 1], next_variance[t - 1]
        mean[t] = mu + phi * returns[t]
        next_variance[t] = omega + alpha * shock**2 + beta * variance
    return mean, next_variance


def _garch_block(
    values: np.ndarray, steps: np.ndarray, block: np.ndarray, *, window: int, on_log_returns: bool
) -> tuple[np.ndarray, bool]:
    """Forecasts of the consecutive targets ``block`` from one fit on the ``window`` returns
    before its first target, and whether that fit converged. ``steps[t]`` is the return ending
    at ``values[t + 1]``, so target i's origin is ``steps[i - 2]``."""
    from arch import arch_model

    fit_lo, fit_hi = block[0] - 1 - window, block[0] - 1  # the returns of values < block[0]
    scale = 1.0 if on_log_returns else float(np.std(steps[fit_lo:fit_hi])) or 1.0
    returns = steps[fit_lo : block[-1] - 1] / scale  # fit window, then the block's origins
    model = arch_model(returns[:window], mean="AR", lags=1, vol="GARCH", p=1, q=1,
                       rescale=False)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = model.fit(disp="off")
    mean, variance = _garch_filter(
        fitted.params.to_numpy(),
        returns,
        shock=float(fitted.resid[-1]),
        variance=float(fitted.conditional_volatility[-1]) ** 2,
        first_origin=window - 1,
    )
    origins = block - 2 - fit_lo  # positions in `returns` of each target's origin
    last = values[block - 1]
    if on_log_returns:
        forecasts = last * np.exp(mean[origins] / 100 + variance[origins] / 2e4)
    else:
        forecasts = last + scale * mean[origins]
    return forecasts, bool(fitted.convergence_flag == 0)


def garch_forecasts(
    values: np.ndarray,
    index: np.ndarray,
    *,
    window: int,
    refit_every: int = 20,
) -> tuple[np.ndarray, GarchFit]:
    """AR(1)-GARCH(1,1) on returns (eq. garch), refitted every ``refit_every`` targets on the
    ``window`` returns before the first of them and filtered with fixed parameters in between
    (the filter reads each return only after its origin: no look-ahead).

    ``index`` is one run of targets (T,) or one row per fold (F, T); blocks are cut row by
    row, so a block never spans two folds and each fold's first block is fitted on the
    returns ending at its first test tick. The forecasts have the shape of ``index``.

    Series positive before the first target use percent log returns and the log-normal mean
    ŷ_i = y_{i-1} exp(μ̂_i/100 + ĥ_i/(2·100²)); others use increments, in units of their
    standard deviation over the fitting window, and ŷ_i = y_{i-1} + s μ̂_i.
    """
    values = np.asarray(values, float)
    index = np.asarray(index)
    targets = index.reshape(-1)
    if targets.size and (np.any(np.diff(targets) <= 0) or targets.min() < window + 1):
        raise ValueError(f"GARCH targets must increase and be >= window + 1 = {window + 1}")
    # The transform is chosen from the past of the first target, never from later values.
    on_log_returns = bool(np.all(values[: targets[0]] > 0)) if targets.size else True
    used = values[: targets[-1]] if targets.size else values
    if on_log_returns and np.any(used <= 0):
        where = int(np.flatnonzero(used <= 0)[0])
        raise DomainError(
            f"GARCH on log returns: the series turns non-positive at position {where}"
        )
    steps = np.diff(np.log(values)) * 100.0 if on_log_returns else np.diff(values)
    rows = np.atleast_2d(index)  # one row per fold
    forecasts = np.empty(rows.shape)
    n_fits = n_bad = 0
    for row, fold_targets in enumerate(rows):
        for first in range(0, len(fold_targets), refit_every):
            block = fold_targets[first : first + refit_every]
            forecasts[row, first : first + len(block)], converged = _garch_block(
                values, steps, block, window=window, on_log_returns=on_log_returns
            )
            n_fits += 1
            n_bad += int(not converged)
    return forecasts.reshape(index.shape), GarchFit(n_fits, n_bad, on_log_returns)


@functools.lru_cache(maxsize=8)
def batched_predictor(config: PredictorConfig) -> tuple[FunctionalPredictor, Callable]:
    """The functional predictor and its scan vmapped over folds, compiled once per config
    (and per number of folds: the leading axis is part of the compiled shape)."""
    return _batched(FunctionalPredictor(config))


def _batched(fp: FunctionalPredictor) -> tuple[FunctionalPredictor, Callable]:
    return fp, jax.jit(jax.vmap(functools.partial(run, fp.model)))


def _fold(states: PredictorState, k: int) -> PredictorState:
    return jax.tree.map(lambda leaf: leaf[k], states)


def _stack(states: Sequence[PredictorState]) -> PredictorState:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def _chunks(ticks: np.ndarray, size: int) -> list[np.ndarray]:
    """(F, T) -> list of (F, size) chunks; the last is padded with each fold's last price.
    Padded ticks come after every real one, so their outputs (dropped) change nothing."""
    n_chunks = -(-ticks.shape[1] // size)
    padded = np.concatenate(
        [ticks, np.repeat(ticks[:, -1:], n_chunks * size - ticks.shape[1], axis=1)], axis=1
    )
    return list(padded.reshape(ticks.shape[0], n_chunks, size).transpose(1, 0, 2))


def predictor_forecasts(
    values: np.ndarray,
    folds: Folds,
    config: PredictorConfig,
    *,
    branches: Sequence[AbstractBranch] | None = None,
    progress: Callable[[], object] = lambda: None,
) -> tuple[PredictionResult, FunctionalPredictor, float]:
    """Cold-start every fold on its training window, then step through its test window.

    Training follows ``UniversalPredictor.fit_history``: the first buffer, a refit, the rest
    of the window in buffer-sized chunks, a refit. Every fold runs in one vmapped scan per
    chunk; refits (the slow path) go fold by fold. Returns (F, T, ...) results: row [k, j] is
    made at tick a_k - 1 + j, so ``predicted_next[k, j]`` forecasts ``values[a_k + j]``;
    the predictor that made them; and the seconds spent in refits. ``branches``: the
    predictor's branches (default: the spec's four, compiled once per config).
    """
    if branches is None:
        fp, batched_run = batched_predictor(config)
    else:
        fp, batched_run = _batched(FunctionalPredictor(config, branches=branches))
    size = config.wtmm_buffer_size
    train = folds.train_windows(values)
    train = train[:, train.shape[1] % size :]  # whole buffers only, as in fit_history
    base = jax.random.key(config.seed)
    # A fold's key depends on where it starts, not on how many folds there are.
    states = _stack(
        [fp.init_state(key=jax.random.fold_in(base, int(a))) for a in folds.first_targets]
    )
    train_chunks = _chunks(train, size)
    refit_seconds = 0.0
    for c, chunk in enumerate(train_chunks):
        states, _ = batched_run(states, chunk, chunk)
        progress()
        if c == 0 or c == len(train_chunks) - 1:
            start = time.perf_counter()
            refitted = []
            for k in range(folds.n_folds):
                refitted.append(jax.block_until_ready(fp.refit(_fold(states, k))))
                progress()
            states = _stack(refitted)
            refit_seconds += time.perf_counter() - start
    results = []
    for chunk in _chunks(folds.test_ticks(values), size):
        states, result = batched_run(states, chunk, chunk)
        results.append(result)
        progress()
    stacked = jax.tree.map(lambda *parts: np.concatenate(parts, axis=1), *results)
    return jax.tree.map(lambda leaf: leaf[:, : folds.test_size], stacked), fp, refit_seconds


def _rows(leaf: np.ndarray) -> np.ndarray:
    """(F, T, ...) -> (F·T, ...): one row per target, fold after fold."""
    leaf = np.asarray(leaf)
    return leaf.reshape(-1, *leaf.shape[2:])


def n_progress_units(folds: Folds, config: PredictorConfig, n_baselines: int) -> int:
    """Work units ``walk_forward`` reports: chunks, fold refits and baselines."""
    size = config.wtmm_buffer_size
    n_train = folds.train_size // size
    n_refits = 1 if n_train == 1 else 2
    return n_train + n_refits * folds.n_folds + -(-folds.test_size // size) + n_baselines


def rmse(realised: np.ndarray, forecast: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(realised) - np.asarray(forecast)) ** 2)))


def mae(realised: np.ndarray, forecast: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(realised) - np.asarray(forecast))))


def directional_accuracy(realised: np.ndarray, previous: np.ndarray, forecast: np.ndarray) -> float:
    """Share of targets whose move from the last value the forecast calls right (eq. direction).
    A forecast equal to the last value, or a target equal to it, scores 1/2: the random walk
    scores exactly 1/2 and a coin flip 1/2 on average."""
    move = np.sign(np.asarray(realised) - np.asarray(previous))
    call = np.sign(np.asarray(forecast) - np.asarray(previous))
    score = np.where((move == 0) | (call == 0), 0.5, (move == call).astype(float))
    return float(np.mean(score))


def gaussian_interval(mean: np.ndarray, scale: np.ndarray, level: float) -> np.ndarray:
    """(T, 2) central interval mean ∓ z σ with z = Φ⁻¹((1 + level)/2) (eq. coverage)."""
    half = norm.ppf(0.5 + level / 2) * np.asarray(scale)
    return np.stack([mean - half, mean + half], axis=-1)


def coverage(realised: np.ndarray, interval: np.ndarray) -> float:
    """Share of targets inside their interval (a NaN bound covers nothing)."""
    realised = np.asarray(realised)
    return float(np.mean((interval[:, 0] <= realised) & (realised <= interval[:, 1])))


def diebold_mariano(
    realised: np.ndarray, forecast: np.ndarray, reference: np.ndarray
) -> tuple[float, float]:
    """(statistic, two-sided p-value) of equal squared error against ``reference``
    (eq. diebold-mariano, one-step horizon); a negative statistic favours ``forecast``."""
    realised = np.asarray(realised)
    loss_gap = (realised - np.asarray(forecast)) ** 2 - (realised - np.asarray(reference)) ** 2
    spread = np.std(loss_gap, ddof=1)
    if not spread > 0:
        return math.nan, math.nan
    statistic = float(np.mean(loss_gap) / (spread / math.sqrt(len(loss_gap))))
    return statistic, float(2 * norm.sf(abs(statistic)))


def point_metrics(
    realised: np.ndarray, previous: np.ndarray, forecasts: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """RMSE, MAE, their ratios to the random walk's, directional accuracy and the
    Diebold-Mariano test against the random walk, per model."""
    naive_rmse, naive_mae = rmse(realised, previous), mae(realised, previous)
    table = {}
    for model, forecast in forecasts.items():
        error_rmse, error_mae = rmse(realised, forecast), mae(realised, forecast)
        table[model] = {
            "rmse": error_rmse,
            "mae": error_mae,
            "rmse_over_naive": error_rmse / naive_rmse if naive_rmse > 0 else math.nan,
            "mae_over_naive": error_mae / naive_mae if naive_mae > 0 else math.nan,
            "directional_accuracy": directional_accuracy(realised, previous, forecast),
        }
        statistic, p_value = diebold_mariano(realised, forecast, previous)
        table[model] |= {"dm_stat_vs_naive": statistic, "dm_pvalue_vs_naive": p_value}
    return table


def look_ahead_leaks(
    forecast: Callable[[np.ndarray], np.ndarray],
    values: np.ndarray,
    index: np.ndarray,
    cut: int,
    *,
    seed: int = 0,
) -> np.ndarray:
    """Targets ``i <= cut`` whose forecast changes when ``values[cut:]`` are redrawn
    (eq. no-look-ahead): empty for a causal forecaster. ``forecast(values)`` returns the
    forecasts of ``values[index]``."""
    values = np.asarray(values, float)
    index = np.asarray(index)
    rng = np.random.default_rng(seed)
    changed = values.copy()
    changed[cut:] += rng.normal(0.0, 3.0 * np.std(np.diff(values)), len(values) - cut)
    before, after = np.asarray(forecast(values)), np.asarray(forecast(changed))
    early = index <= cut
    return index[early][before[early] != after[early]]


def baseline_forecasts(
    name: str, values: np.ndarray, folds: Folds, *, garch_refit_every: int = 20
) -> tuple[np.ndarray, dict[str, object]]:
    """One baseline's forecasts of every fold's targets (rows as in ``folds.target_index``),
    each fitted on the same past as the predictor's fold, and what it chose on the way."""
    index = folds.target_index.reshape(-1)
    window = folds.train_size
    if name == "naive":
        return naive_forecasts(values, index), {}
    if name == "ar1":
        return ar1_forecasts(values, index, window=window), {}
    if name == "ewma":
        # λ per fold from its training window; the level starts at the window's first value.
        starts = folds.first_targets - 1 - window
        smoothing = [fit_ewma_smoothing(train) for train in folds.train_windows(values)]
        forecasts = [
            ewma_forecasts(values, targets, smoothing=lam, start=int(start))
            for targets, lam, start in zip(folds.target_index, smoothing, starts, strict=True)
        ]
        return np.concatenate(forecasts), {"ewma_smoothing": smoothing}
    if name == "garch":
        # One row per fold: refit blocks restart at every fold's first target.
        forecasts, fit = garch_forecasts(
            values, folds.target_index, window=window, refit_every=garch_refit_every
        )
        return forecasts.reshape(-1), {
            "garch_refit_every": garch_refit_every,
            "garch_fits": fit.n_fits,
            "garch_not_converged": fit.n_not_converged,
            "garch_on_log_returns": fit.on_log_returns,
        }
    raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES}")


def _validated(values: Sequence[float] | np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"walk-forward needs a 1-d series, got shape {values.shape}")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DomainError(f"series has non-finite values at positions {bad[:5].tolist()}")
    return values


def walk_forward(
    values: Sequence[float] | np.ndarray,
    config: PredictorConfig | None = None,
    *,
    name: str = "series",
    train_size: int | None = None,
    test_size: int | None = None,
    n_folds: int | None = None,
    baselines: Sequence[str] = BASELINES,
    garch_refit_every: int = 20,
    timestamps: Sequence | np.ndarray | None = None,
    progress: Progress | None = None,
    branches: Sequence[AbstractBranch] | None = None,
) -> Backtest:
    """Out-of-sample one-step forecasts of ``values`` by the predictor, each of its branches
    and ``baselines``, all on the same targets (eq. folds), with their metrics.

    ``train_size`` (default two buffers) values train each fold; its ``test_size`` targets
    (default two buffers, or what ``n_folds`` equal windows leave) follow. The forecast of
    ``values[i]`` uses ``values[:i]`` only. ``progress(done, total)`` is called as work units
    (compiled chunks, fold refits, baselines) finish. ``branches`` replaces the spec's four
    (each is then scored alone too, under its name).
    """
    config = config or PredictorConfig()
    values = _validated(values)
    size = config.wtmm_buffer_size
    train_size = 2 * size if train_size is None else int(train_size)
    if train_size < size:
        raise ValueError(f"train_size must be at least wtmm_buffer_size = {size}, got {train_size}")
    unknown = set(baselines) - set(BASELINES)
    if unknown:
        raise ValueError(f"unknown baseline(s) {sorted(unknown)}; choose from {BASELINES}")
    if test_size is None and n_folds is None:
        test_size = min(2 * size, len(values) - 1 - train_size)
    folds = make_folds(len(values), train_size=train_size, test_size=test_size, n_folds=n_folds)
    if timestamps is not None and len(timestamps) != len(values):
        raise ValueError(f"{len(timestamps)} timestamps for {len(values)} values")

    total = n_progress_units(folds, config, len(baselines))
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    index = folds.target_index.reshape(-1)
    realised, previous = values[index], values[index - 1]
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    result, fp, refit_seconds = predictor_forecasts(
        values, folds, config, branches=branches, progress=tick
    )
    seconds["usp"] = time.perf_counter() - start
    telemetry = {f.name: _rows(getattr(result, f.name)) for f in fields(result)}
    forecasts = {"usp": telemetry["predicted_next"], "naive": previous}
    for b, branch in enumerate(fp.branch_names):
        forecasts[branch] = telemetry["branch_forecasts"][:, b]

    settings: dict[str, object] = {
        "train_size": train_size,
        "test_size": folds.test_size,
        "n_folds": folds.n_folds,
        "first_target": int(index[0]),
        "last_target": int(index[-1]),
        "usp_refit_seconds": refit_seconds,
        "usp_ticks": folds.n_folds * (train_size // size * size + folds.test_size),
    }
    for baseline in baselines:
        start = time.perf_counter()
        forecasts[baseline], details = baseline_forecasts(
            baseline, values, folds, garch_refit_every=garch_refit_every
        )
        seconds[baseline] = time.perf_counter() - start
        settings |= details
        tick()

    metrics = point_metrics(realised, previous, forecasts)
    intervals = {}
    for level in INTERVAL_LEVELS:
        label = f"{round(100 * level)}%"
        intervals[label] = gaussian_interval(forecasts["usp"], telemetry["predictive_scale"], level)
        metrics["usp"][f"coverage_{round(100 * level)}"] = coverage(realised, intervals[label])
    return Backtest(
        name=name,
        branch_labels=dict(zip(fp.branch_names, fp.branch_labels, strict=True)),
        index=index,
        realised=realised,
        previous=previous,
        forecasts=forecasts,
        telemetry=telemetry,
        intervals=intervals,
        metrics=metrics,
        timestamps=None if timestamps is None else np.asarray(timestamps)[index],
        fold=np.repeat(np.arange(folds.n_folds), folds.test_size),
        seconds=seconds,
        settings=settings,
    )


__all__ = [
    "BASELINES",
    "INTERVAL_LEVELS",
    "Folds",
    "GarchFit",
    "Progress",
    "ar1_forecasts",
    "baseline_forecasts",
    "batched_predictor",
    "coverage",
    "diebold_mariano",
    "directional_accuracy",
    "ewma_forecasts",
    "ewma_level",
    "fit_ewma_smoothing",
    "garch_forecasts",
    "gaussian_interval",
    "look_ahead_leaks",
    "mae",
    "make_folds",
    "n_progress_units",
    "naive_forecasts",
    "point_metrics",
    "predictor_forecasts",
    "rmse",
    "walk_forward",
]
