"""Walk-forward evaluation (usp.eval): fold layout, baselines against independent oracles
(least squares, the EWMA closed form, the local-level Kalman gain, arch's own forecast),
metrics on hand-made arrays, no look-ahead for every model, bad input, seeded tuning.

One small predictor backtest and its redrawn twin are shared by the module (each fold's cold
start trains the DGM network).
"""

import math

import jax
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import optuna
import pytest
from arch import arch_model
from hypothesis import given, settings
from hypothesis import strategies as hs
from scipy.stats import norm

from usp.api import DomainError, FunctionalPredictor, PredictorConfig
from usp.eval import (
    BASELINES,
    SEARCH_SPACE,
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
    tune,
    walk_forward,
)
from usp.eval.report import FIGURES, write_report
from usp.eval.tune import suggest_config
from usp.eval.walk_forward import coverage, diebold_mariano, gaussian_interval, mae, rmse

N = PredictorConfig().wtmm_buffer_size
TRAIN, TEST = N, 32
SERIES = 100.0 * np.exp(np.cumsum(np.random.default_rng(3).normal(0.0, 0.01, TRAIN + 1 + 2 * TEST)))
CUT = TRAIN + 1 + TEST + 10  # inside the second fold's test window


def price_path(seed: int, n: int) -> np.ndarray:
    """A positive geometric random walk with a little AR(1) in its returns."""
    rng = np.random.default_rng(seed)
    returns = np.zeros(n)
    for t in range(1, n):
        returns[t] = 0.2 * returns[t - 1] + rng.normal(0.0, 0.01)
    return 50.0 * np.exp(np.cumsum(returns))


# --------------------------------------------------------------------------------------------
# Folds


def test_fold_layout_tiles_and_trains_on_the_past():
    folds = make_folds(1000, train_size=256, test_size=100)
    assert folds.n_folds == 7
    targets = folds.target_index.reshape(-1)
    assert targets[0] == 257 and np.all(np.diff(targets) == 1) and targets[-1] <= 999
    values = np.arange(1000.0)
    train = folds.train_windows(values)
    # W_k = {a_k - 1 - L, ..., a_k - 2}: ends just before the first test tick a_k - 1.
    assert np.array_equal(train[:, -1], folds.first_targets - 2)
    assert np.array_equal(folds.test_ticks(values), folds.target_index - 1.0)
    assert make_folds(1000, train_size=256, n_folds=3).test_size == (1000 - 1 - 256) // 3


def test_fold_layout_rejects_what_does_not_fit():
    with pytest.raises(ValueError, match="more than train_size"):
        make_folds(100, train_size=128)
    with pytest.raises(ValueError, match="do not fit"):
        make_folds(300, train_size=128, test_size=100, n_folds=3)


# --------------------------------------------------------------------------------------------
# Baselines against independent computations


def test_ar1_matches_least_squares_on_the_same_window():
    values = price_path(1, 600)
    index = np.array([300, 301, 450, 599])
    ours = ar1_forecasts(values, index, window=200)
    for i, forecast in zip(index, ours, strict=True):
        design = np.column_stack([np.ones(200), values[i - 201 : i - 1]])
        coef, *_ = np.linalg.lstsq(design, values[i - 200 : i], rcond=None)
        assert forecast == pytest.approx(coef[0] + coef[1] * values[i - 1], rel=1e-12)


def test_ar1_flat_window_forecasts_its_level():
    values = np.r_[np.full(50, 3.0), 4.0]
    assert ar1_forecasts(values, np.array([50]), window=20)[0] == pytest.approx(3.0, abs=1e-15)


@settings(max_examples=25, deadline=None)
@given(hs.floats(0.01, 1.0), hs.integers(0, 50), hs.integers(60, 199))
def test_ewma_recursion_matches_its_closed_form(smoothing, start, target):
    values = price_path(2, 200)
    j = np.arange(start + 1, target)
    closed = (1 - smoothing) ** (target - 1 - start) * values[start] + smoothing * np.sum(
        (1 - smoothing) ** (target - 1 - j) * values[j]
    )
    ours = ewma_forecasts(values, np.array([target]), smoothing=smoothing, start=start)[0]
    assert ours == pytest.approx(closed, rel=1e-12)


def test_fitted_ewma_recovers_the_local_level_kalman_gain():
    # y = μ + ε, μ a random walk with signal-to-noise q: the optimal λ is the steady-state gain.
    rng = np.random.default_rng(4)
    q = 0.5
    level = np.cumsum(rng.normal(0.0, math.sqrt(q), 40_000))
    values = level + rng.normal(0.0, 1.0, level.size)
    gain = (math.sqrt(q * q + 4 * q) - q) / 2
    assert fit_ewma_smoothing(values) == pytest.approx(gain, abs=0.02)
    assert fit_ewma_smoothing(np.cumsum(rng.normal(size=20_000))) > 0.95  # a pure random walk


def test_garch_matches_arch_forecasts_with_fixed_parameters():
    values = price_path(5, 700)
    window, index = 300, np.arange(400, 420)
    ours, fit = garch_forecasts(values, index, window=window, refit_every=20)
    assert fit.n_fits == 1 and fit.on_log_returns
    returns = 100 * np.diff(np.log(values))
    # The single fit: on the `window` returns ending at the first origin, values[399].
    fitted = arch_model(returns[99:399], mean="AR", lags=1, vol="GARCH", p=1, q=1, rescale=False)
    params = fitted.fit(disp="off").params
    for i, forecast in zip(index[[0, 7, 19]], ours[[0, 7, 19]], strict=True):
        # arch's own one-step forecast from the fixed parameters filtered up to origin i - 1.
        own = arch_model(returns[99 : i - 1], mean="AR", lags=1, vol="GARCH", p=1, q=1,
                         rescale=False).fix(params).forecast(horizon=1, reindex=False)  # fmt: skip
        mean, variance = own.mean.iloc[-1, 0], own.variance.iloc[-1, 0]
        oracle = values[i - 1] * math.exp(mean / 100 + variance / 2e4)
        assert forecast == pytest.approx(oracle, rel=1e-10)


def test_garch_refit_blocks_never_span_two_folds():
    # 25 targets per fold, refits every 10: blocks of 10, 10, 5 in each fold; cut over the
    # flattened targets instead, the third block would run from fold 0 into fold 1.
    window, refit_every = 64, 10
    values = price_path(13, window + 1 + 3 * 25)
    folds = make_folds(len(values), train_size=window, test_size=25)
    by_fold, fit = garch_forecasts(
        values, folds.target_index, window=window, refit_every=refit_every
    )
    assert by_fold.shape == (3, 25) and fit.n_fits == 3 * 3
    for k, targets in enumerate(folds.target_index):  # each fold as if it were alone
        alone, _ = garch_forecasts(values, targets, window=window, refit_every=refit_every)
        assert np.array_equal(by_fold[k], alone), k
    # Fold 1's first target: arch's own forecast from a fit on the `window` returns ending at
    # its first test tick a_1 - 1.
    a1 = int(folds.first_targets[1])
    returns = 100 * np.diff(np.log(values))
    own = (
        arch_model(returns[a1 - 1 - window : a1 - 1], mean="AR", lags=1, vol="GARCH", p=1, q=1,
                   rescale=False).fit(disp="off").forecast(horizon=1, reindex=False)
    )  # fmt: skip
    mean, variance = own.mean.iloc[-1, 0], own.variance.iloc[-1, 0]
    oracle = values[a1 - 1] * math.exp(mean / 100 + variance / 2e4)
    assert by_fold[1, 0] == pytest.approx(oracle, rel=1e-10)
    # The flattened layout gives that target a fit made inside fold 0: a different forecast.
    flat, flat_fit = garch_forecasts(
        values, folds.target_index.reshape(-1), window=window, refit_every=refit_every
    )
    assert flat_fit.n_fits == 8 and flat[25] != by_fold[1, 0]
    # walk_forward's dispatcher uses the per-fold blocks.
    forecasts, details = baseline_forecasts("garch", values, folds, garch_refit_every=refit_every)
    assert np.array_equal(forecasts, by_fold.reshape(-1)) and details["garch_fits"] == 9


def test_garch_refuses_a_log_series_that_turns_non_positive():
    values = np.r_[price_path(6, 400), -1.0, 2.0]
    with pytest.raises(DomainError, match="non-positive at position 400"):
        garch_forecasts(values, np.arange(300, 402), window=200)


# --------------------------------------------------------------------------------------------
# Metrics on hand-made arrays


def test_point_metrics_by_hand():
    realised = np.array([1.0, 2.0, 4.0, 3.0])
    previous = np.array([0.0, 1.0, 2.0, 4.0])
    forecast = np.array([1.0, 1.0, 5.0, 5.0])
    assert rmse(realised, forecast) == pytest.approx(math.sqrt((0 + 1 + 1 + 4) / 4))
    assert mae(realised, forecast) == pytest.approx(1.0)
    # up/up: 1, flat call: 1/2, up/up: 1, down vs up: 0
    assert directional_accuracy(realised, previous, forecast) == pytest.approx(2.5 / 4)
    assert directional_accuracy(realised, previous, previous) == 0.5
    table = point_metrics(realised, previous, {"naive": previous, "m": forecast})
    naive_rmse = math.sqrt((1 + 1 + 4 + 1) / 4)
    assert table["m"]["rmse_over_naive"] == pytest.approx(math.sqrt(6 / 4) / naive_rmse)
    assert table["naive"]["rmse_over_naive"] == 1.0
    assert math.isnan(table["naive"]["dm_stat_vs_naive"])  # no loss differential at all


def test_diebold_mariano_sign_and_size():
    rng = np.random.default_rng(8)
    realised = rng.normal(size=5000)
    good, bad = realised + rng.normal(0, 0.5, 5000), realised + rng.normal(0, 1.0, 5000)
    statistic, p_value = diebold_mariano(realised, good, bad)
    assert statistic < -10 and p_value < 1e-10
    same = diebold_mariano(realised, bad, bad + rng.normal(0, 1e-9, 5000))
    assert same[1] > 1e-3 or math.isnan(same[0])


def test_gaussian_interval_coverage_is_nominal_on_gaussian_errors():
    rng = np.random.default_rng(9)
    scale = rng.uniform(0.5, 2.0, 200_000)
    realised = scale * rng.standard_normal(scale.size)
    for level in (0.5, 0.8, 0.9, 0.95):
        interval = gaussian_interval(np.zeros(scale.size), scale, level)
        assert coverage(realised, interval) == pytest.approx(level, abs=0.004)
    assert coverage(np.array([0.0]), np.array([[np.nan, np.nan]])) == 0.0


# --------------------------------------------------------------------------------------------
# No look-ahead (eq. no-look-ahead): baselines by hypothesis, the predictor on a shared run


@settings(max_examples=6, deadline=None)
@given(hs.integers(0, 10_000), hs.integers(0, 95))
def test_no_baseline_looks_ahead(seed, offset):
    values = price_path(seed, 64 + 1 + 4 * 24)
    folds = make_folds(len(values), train_size=64, test_size=24)
    index = folds.target_index.reshape(-1)
    cut = int(index[offset])
    for name in BASELINES:

        def forecast(series, name=name):
            # 10 does not divide 24: each fold ends on a short block.
            return baseline_forecasts(name, series, folds, garch_refit_every=10)[0]

        assert look_ahead_leaks(forecast, values, index, cut, seed=seed).size == 0, name


def test_look_ahead_check_catches_a_leak():
    values = price_path(11, 300)
    index = np.arange(100, 300)
    peeking = lambda series: series[index]  # noqa: E731 - "forecasts" each target by itself
    assert look_ahead_leaks(peeking, values, index, 200).size > 0


@pytest.fixture(scope="module")
def backtests():
    """The same two-fold walk-forward on SERIES and on SERIES redrawn from CUT on."""
    changed = SERIES.copy()
    changed[CUT:] *= np.exp(np.random.default_rng(12).normal(0.0, 0.03, len(SERIES) - CUT))
    calls = []
    original = walk_forward(
        SERIES,
        name="gbm",
        train_size=TRAIN,
        test_size=TEST,
        timestamps=np.arange(len(SERIES)) + 1900,
        progress=lambda done, total: calls.append((done, total)),
    )
    redrawn = walk_forward(changed, train_size=TRAIN, test_size=TEST)
    return original, redrawn, calls


def test_predictor_never_looks_ahead(backtests):
    original, redrawn, _ = backtests
    before = original.index <= CUT
    assert before.sum() == TEST + 11 and (~before).any()  # targets <= CUT
    for model in original.forecasts:
        assert np.array_equal(original.forecasts[model][before], redrawn.forecasts[model][before])
        assert not np.array_equal(
            original.forecasts[model][~before], redrawn.forecasts[model][~before]
        ), model
    for field, rows in original.telemetry.items():
        assert np.array_equal(rows[before], redrawn.telemetry[field][before], equal_nan=True)


def test_backtest_record_is_aligned_and_complete(backtests):
    bt, _, calls = backtests
    assert np.array_equal(bt.index, np.arange(TRAIN + 1, TRAIN + 1 + 2 * TEST))
    assert np.array_equal(bt.realised, SERIES[bt.index])
    assert np.array_equal(bt.previous, SERIES[bt.index - 1])
    assert np.array_equal(bt.timestamps, bt.index + 1900)
    assert set(bt.forecasts) == {"usp", "naive", "ewma", "ar1", "garch", "A", "B", "C", "D"}
    assert bt.telemetry["weights"].shape == (2 * TEST, 4)
    assert np.allclose(bt.telemetry["weights"].sum(axis=1), 1.0, atol=1e-9)
    # The blend is the weighted branches (the weights reported are the ones used).
    blend = np.sum(bt.telemetry["weights"] * bt.telemetry["branch_forecasts"], axis=1)
    assert np.allclose(blend, bt.forecasts["usp"], rtol=1e-12)
    assert np.array_equal(bt.fold, np.repeat([0, 1], TEST))
    lo90, hi90 = bt.intervals["90%"].T
    lo50, hi50 = bt.intervals["50%"].T
    assert np.all(lo90 <= lo50) and np.all(hi50 <= hi90)
    # Eq. coverage: forecast -/+ z sigma, sigma the predictive scale known at the tick before.
    scale = bt.telemetry["predictive_scale"]
    assert np.all(np.isfinite(scale) & (scale > 0))
    for label, level in (("50%", 0.5), ("80%", 0.8), ("90%", 0.9), ("95%", 0.95)):
        lo, hi = bt.intervals[label].T
        np.testing.assert_allclose((lo + hi) / 2, bt.forecasts["usp"], rtol=1e-13, atol=0)
        # measured: half-widths within 5.5e-14 relative, coverage recounted exactly
        np.testing.assert_allclose((hi - lo) / 2, norm.ppf(0.5 + level / 2) * scale, rtol=1e-12)
        inside = np.abs(bt.realised - bt.forecasts["usp"]) <= norm.ppf(0.5 + level / 2) * scale
        assert bt.metrics["usp"][f"coverage_{label[:-1]}"] == inside.mean()
    assert bt.metrics["naive"]["rmse_over_naive"] == 1.0
    assert set(bt.seconds) == {"usp", *BASELINES} and bt.settings["n_folds"] == 2
    assert calls[-1][0] == calls[-1][1] and [d for d, _ in calls] == list(range(1, len(calls) + 1))


def test_fold_zero_replicated_without_vmap(backtests):
    """Fold 0 rebuilt from the public functional API, one state, no vmap: cold state seeded
    by its first target, a run over its training window, the refit, then its test ticks. Row
    j of the backtest must be the forecast made at tick a_0 - 1 + j of values[a_0 + j]; a
    forecast shifted by one tick would differ by a whole price move."""
    bt, _, _ = backtests
    config = PredictorConfig()
    fp = FunctionalPredictor(config)
    first = TRAIN + 1  # a_0; TRAIN is one buffer: one training chunk, so one refit after it
    state = fp.init_state(key=jax.random.fold_in(jax.random.key(config.seed), first))
    state, _ = fp.run(state, SERIES[first - 1 - TRAIN : first - 1])  # W_0
    state = fp.refit(state)
    ticks = SERIES[first - 1 : first - 1 + TEST]  # a_0 - 1, ..., a_0 + T - 2
    # Padded to a whole buffer with the last price, as walk_forward does; the pad comes after
    # every real tick, so it changes none of the forecasts kept.
    padded = np.r_[ticks, np.full(config.wtmm_buffer_size - TEST, ticks[-1])]
    _, result = fp.run(state, padded)
    rebuilt = np.asarray(result.predicted_next)[:TEST]
    np.testing.assert_allclose(bt.forecasts["usp"][:TEST], rebuilt, rtol=1e-9, atol=0)
    rebuilt_weights = np.asarray(result.weights)[:TEST]
    np.testing.assert_allclose(
        bt.telemetry["weights"][:TEST], rebuilt_weights, rtol=1e-9, atol=1e-12
    )
    # The check resolves a one-tick shift: the forecasts made one tick earlier do not pass it.
    assert not np.allclose(bt.forecasts["usp"][1:TEST], rebuilt[:-1], rtol=1e-9, atol=0)


def test_write_report_leaves_the_matplotlib_backend_alone(backtests, tmp_path):
    bt, _, _ = backtests
    before = matplotlib.get_backend()
    open_figures = plt.get_fignums()
    matplotlib.use("svg")  # a backend the report does not use: a switch to Agg would show
    try:
        paths = write_report(bt, tmp_path)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert plt.get_fignums() == open_figures  # no figure left in pyplot's registry
    for name in FIGURES:
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


# --------------------------------------------------------------------------------------------
# Bad input


def test_walk_forward_rejects_bad_input():
    with pytest.raises(ValueError, match="more than train_size"):
        walk_forward(SERIES[: TRAIN + 1], train_size=TRAIN)
    with pytest.raises(DomainError, match=r"non-finite values at positions \[7\]"):
        walk_forward(np.r_[SERIES[:7], np.nan, SERIES[8:]], train_size=TRAIN)
    with pytest.raises(ValueError, match="at least wtmm_buffer_size"):
        walk_forward(SERIES, train_size=N - 1)
    with pytest.raises(ValueError, match="1-d series"):
        walk_forward(SERIES.reshape(-1, 1))
    with pytest.raises(ValueError, match="unknown baseline"):
        walk_forward(SERIES, train_size=TRAIN, baselines=("naive", "prophet"))
    with pytest.raises(ValueError, match="timestamps"):
        walk_forward(SERIES, train_size=TRAIN, test_size=TEST, timestamps=np.arange(3))


# --------------------------------------------------------------------------------------------
# Tuning


def _cheap_study(seed: int, n_trials: int = 12) -> list[dict]:
    """TPE over SEARCH_SPACE with a cheap objective: every proposal must be a valid config."""
    base = PredictorConfig()
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))

    def objective(trial):
        config = suggest_config(trial, base, SEARCH_SPACE)
        return (config.cusum_h - 4.0) ** 2 + math.log(config.epsilon / 1e-2) ** 2

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=n_trials)
    return [trial.params for trial in study.trials]


def test_seeded_search_is_reproducible_and_stays_in_the_space():
    first, again, other = _cheap_study(0), _cheap_study(0), _cheap_study(1)
    assert first == again and first != other
    for params in first:
        assert set(params) == set(SEARCH_SPACE)
        for name, value in params.items():
            kind, low, high = SEARCH_SPACE[name]
            assert low <= value <= high and isinstance(value, int) == (kind == "int")


def test_tune_first_trial_is_the_base_config(backtests):
    bt, _, _ = backtests
    result = tune(SERIES, n_trials=1, seed=0, train_size=TRAIN, test_size=TEST)
    assert result.best_config == PredictorConfig()
    assert result.best_rmse == pytest.approx(bt.metrics["usp"]["rmse"], rel=1e-12)
    with pytest.raises(ValueError, match="unknown PredictorConfig fields"):
        tune(SERIES, n_trials=1, space={"depth": ("int", 2, 4)})


def test_naive_forecasts_are_the_last_value():
    values = np.arange(10.0) ** 2
    assert np.array_equal(naive_forecasts(values, np.array([3, 9])), [4.0, 64.0])
