"""Branch A (usp.kernels.levy) against SciPy and closed forms, plus its bad-input behaviour."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st

from usp.api import PredictorConfig
from usp.kernels.levy import (
    LevyBranch,
    LevyParams,
    fit_stable,
    stable_sample,
    standard_stable_s1,
)
from usp.reference.levy import characteristic_function

N_DRAWS = 40_000
CASES = [(0.8, -0.3), (1.0, 0.0), (1.0, 0.7), (1.5, 0.5), (1.95, 0.2), (2.0, 0.0)]


@pytest.fixture
def scipy_s0():
    """SciPy's levy_stable in Nolan's S0 parameterisation (it is a global switch)."""
    previous = st.levy_stable.parameterization
    st.levy_stable.parameterization = "S0"
    yield st.levy_stable
    st.levy_stable.parameterization = previous


@pytest.mark.parametrize(("alpha", "beta"), CASES)
def test_samples_match_characteristic_function(alpha, beta):
    draws = stable_sample(jax.random.key(1), alpha, beta, 0.7, -0.2, (N_DRAWS,))
    u = jnp.linspace(-4.0, 4.0, 33)
    empirical = jnp.exp(1j * u[:, None] * draws[None, :]).mean(axis=1)
    exact = characteristic_function(u, alpha, beta, 0.7, -0.2)
    # each |ecf(u) - cf(u)| has standard deviation <= n^{-1/2}; 5 of them bounds the max of 33
    assert float(jnp.max(jnp.abs(empirical - exact))) < 5.0 / np.sqrt(N_DRAWS)


@pytest.mark.parametrize(("alpha", "beta"), CASES[:-1])
def test_samples_match_scipy_cdf(alpha, beta, scipy_s0):
    draws = np.sort(np.asarray(stable_sample(jax.random.key(2), alpha, beta, 1.0, 0.0, (N_DRAWS,))))
    grid = np.quantile(draws, np.linspace(0.02, 0.98, 25))
    empirical = np.searchsorted(draws, grid, side="right") / N_DRAWS
    ks_on_grid = np.max(np.abs(empirical - scipy_s0.cdf(grid, alpha, beta)))
    assert ks_on_grid < 1.95 / np.sqrt(N_DRAWS)  # KS critical value at level 0.001


def test_s1_sampler_matches_scipy_s1_default():
    draws = np.sort(np.asarray(standard_stable_s1(jax.random.key(3), 1.3, 0.6, (N_DRAWS,))))
    grid = np.quantile(draws, np.linspace(0.05, 0.95, 19))
    empirical = np.searchsorted(draws, grid, side="right") / N_DRAWS
    exact = st.levy_stable.cdf(grid, 1.3, 0.6)  # SciPy's default parameterisation is S1
    assert np.max(np.abs(empirical - exact)) < 1.95 / np.sqrt(N_DRAWS)


def test_alpha_one_branch_is_used_and_finite():
    draws = standard_stable_s1(jax.random.key(4), 1.0, 0.9, (10_000,))
    assert bool(jnp.isfinite(draws).all())
    # Cauchy-type: the median absolute value of a centred S1(1, 0) draw is 1
    symmetric = standard_stable_s1(jax.random.key(5), 1.0, 0.0, (N_DRAWS,))
    assert abs(float(jnp.median(jnp.abs(symmetric))) - 1.0) < 0.03


def test_alpha_two_is_gaussian_with_variance_two_sigma_squared():
    draws = stable_sample(jax.random.key(6), 2.0, 0.0, 1.5, 0.3, (N_DRAWS,))
    assert abs(float(draws.mean()) - 0.3) < 4 * np.sqrt(2 * 1.5**2 / N_DRAWS)
    assert abs(float(draws.var()) / (2 * 1.5**2) - 1.0) < 0.03


@pytest.mark.parametrize(("alpha", "beta"), [(1.2, 0.0), (1.5, 0.3), (1.8, -0.2)])
def test_fit_recovers_alpha(alpha, beta):
    keys = jax.random.split(jax.random.key(11), 20)
    data = jax.vmap(lambda k: stable_sample(k, alpha, beta, 0.01, 0.001, (2000,)))(keys)
    fitted = jax.vmap(fit_stable)(data)
    alpha_hat = np.asarray(fitted.alpha)
    assert bool(fitted.valid.all())
    assert abs(alpha_hat.mean() - alpha) < 0.03  # measured bias <= 0.005
    assert alpha_hat.std(ddof=1) < 0.06  # measured spread 0.03-0.04 at n = 2000
    assert abs(float(jnp.median(fitted.scale)) / 0.01 - 1.0) < 0.05


def test_fit_is_jittable_and_affine_equivariant():
    x = stable_sample(jax.random.key(12), 1.6, 0.4, 1.0, 0.0, (1000,))
    base, shifted = jax.jit(fit_stable)(x), jax.jit(fit_stable)(3.0 * x + 5.0)
    np.testing.assert_allclose(shifted.alpha, base.alpha, rtol=1e-9)
    np.testing.assert_allclose(shifted.scale, 3.0 * base.scale, rtol=1e-9)
    np.testing.assert_allclose(shifted.loc, 3.0 * base.loc + 5.0, rtol=1e-9)


def test_fit_ignores_nan_and_inf():
    x = np.array(stable_sample(jax.random.key(13), 1.7, 0.0, 1.0, 0.0, (1000,)))
    clean = fit_stable(jnp.asarray(x[~np.isin(np.arange(1000), [3, 500, 900])]))
    x[[3, 500, 900]] = [np.nan, np.inf, -np.inf]
    dirty = fit_stable(jnp.asarray(x))
    assert bool(dirty.valid)
    np.testing.assert_allclose(dirty.alpha, clean.alpha, rtol=1e-12)


@pytest.mark.parametrize(
    "increments",
    [np.zeros(127), np.full(127, np.nan), np.r_[np.full(120, np.nan), np.ones(7)]],
    ids=["constant", "all-nan", "too-few-finite"],
)
def test_fit_flags_degenerate_input(increments):
    assert not bool(fit_stable(jnp.asarray(increments)).valid)


def test_branch_keeps_previous_params_when_fit_fails():
    branch = LevyBranch.from_config(PredictorConfig())
    good = 100.0 + jnp.cumsum(stable_sample(jax.random.key(14), 1.6, 0.0, 0.5, 0.05, (128,)))
    params = branch.fit(branch.init(key=jax.random.key(0)), good)
    assert bool(params.law.valid)
    after_constant = branch.fit(params, jnp.full(128, 100.0))
    after_nan = branch.fit(params, jnp.full(128, jnp.nan))
    for kept in (after_constant, after_nan):
        assert jax.tree.all(jax.tree.map(lambda a, b: bool(a == b), kept.law, params.law))
        np.testing.assert_array_equal(kept.increment_quantiles, params.increment_quantiles)


def test_branch_rejects_too_short_buffer():
    branch = LevyBranch()
    with pytest.raises(ValueError, match="at least 17 values"):
        branch.fit(branch.init(key=jax.random.key(0)), jnp.arange(10.0))


def test_unfitted_branch_forecasts_last_value():
    branch = LevyBranch(n_samples=256)
    buffer = jnp.linspace(1.0, 2.0, 128)
    forecast = branch.predict(branch.init(key=jax.random.key(0)), buffer, key=jax.random.key(1))
    assert float(forecast.mean) == 2.0


def test_forecast_beats_naive_on_heavy_tailed_drift():
    """Independent paths: distance of each forecast to the true conditional centre."""
    drift, n_paths = 0.004, 600
    steps = stable_sample(jax.random.key(5), 1.5, 0.0, 0.01, drift, (n_paths, 128))
    paths = jnp.cumsum(steps, axis=1)
    branch = LevyBranch(n_samples=1024)

    @jax.jit
    def forecast(buffer, key):
        return branch.predict(branch.fit(branch.init(key=key), buffer), buffer, key=key).mean

    predicted = jax.vmap(forecast)(paths, jax.random.split(jax.random.key(0), n_paths))
    oracle = paths[:, -1] + drift
    rmse_branch = float(jnp.sqrt(jnp.mean((predicted - oracle) ** 2)))
    rmse_naive = drift
    rmse_sample_mean = float(
        jnp.sqrt(jnp.mean((paths[:, -1] + jnp.diff(paths, axis=1).mean(axis=1) - oracle) ** 2))
    )
    assert rmse_branch < 0.6 * rmse_naive  # measured 0.36
    assert rmse_branch < 0.4 * rmse_sample_mean  # measured 0.21


def test_predictive_quantiles_are_ordered_and_centred():
    branch = LevyBranch(n_samples=4096)
    buffer = 10.0 + jnp.cumsum(stable_sample(jax.random.key(7), 1.8, 0.0, 0.1, 0.0, (128,)))
    params = branch.fit(branch.init(key=jax.random.key(0)), buffer)
    levels = jnp.array([0.05, 0.25, 0.5, 0.75, 0.95])
    q = branch.predictive_quantiles(params, buffer, levels, key=jax.random.key(8))
    assert bool(jnp.all(jnp.diff(q) > 0))
    forecast = branch.predict(params, buffer, key=jax.random.key(8))
    assert float(q[1]) < float(forecast.mean) < float(q[3])  # fit-time median, fresh quartiles


def test_predict_is_vmappable_over_assets():
    branch = LevyBranch(n_samples=256)
    buffers = 1.0 + jnp.cumsum(
        stable_sample(jax.random.key(9), 1.7, 0.0, 0.01, 0.0, (8, 128)), axis=1
    )
    params = jax.vmap(lambda b: branch.fit(branch.init(key=jax.random.key(0)), b))(buffers)
    keys = jax.random.split(jax.random.key(1), 8)
    batched = jax.vmap(lambda p, b, k: branch.predict(p, b, key=k))(params, buffers, keys)
    single = branch.predict(jax.tree.map(lambda x: x[3], params), buffers[3], key=keys[3])
    np.testing.assert_allclose(batched.mean[3], single.mean, rtol=1e-12)
    assert isinstance(params, LevyParams)


def test_predict_reads_fit_time_quantiles_and_matches_fresh_draws():
    branch = LevyBranch(n_samples=20_000)
    buffer = 5.0 + jnp.cumsum(stable_sample(jax.random.key(21), 1.6, 0.3, 0.1, 0.0, (128,)))
    params = branch.fit(branch.init(key=jax.random.key(0)), buffer)
    forecast = branch.predict(params, buffer, key=jax.random.key(99))
    fresh = branch.predictive_quantiles(params, buffer, jnp.array([0.5]), key=jax.random.key(7))
    # two independent 20k-draw medians of a law with scale ~0.1 agree to a few 1e-3
    np.testing.assert_allclose(forecast.mean, fresh[0], atol=5e-3)
    again = branch.fit(branch.init(key=jax.random.key(0)), buffer)
    assert float(again.increment_quantiles[1]) == float(params.increment_quantiles[1])
