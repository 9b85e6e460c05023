"""Tests of usp.kernels.malliavin: Bismut–Elworthy–Li deltas against closed forms (SIA-3).

Statistical checks use a fixed key and assert two things: the estimate lies within 3 standard
errors of the oracle, and the standard error is small enough for that to have power.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from usp.kernels.malliavin import (
    bel_weight,
    brownian_increments,
    malliavin_delta,
    mean_and_standard_error,
    solve_augmented_diffrax,
    solve_augmented_scan,
)
from usp.reference.malliavin import finite_difference_delta

S0, STRIKE, RATE, VOL, MATURITY = 100.0, 100.0, 0.05, 0.2, 1.0
DISCOUNT = float(np.exp(-RATE * MATURITY))
D1 = (np.log(S0 / STRIKE) + (RATE + VOL**2 / 2) * MATURITY) / (VOL * np.sqrt(MATURITY))
D2 = D1 - VOL * np.sqrt(MATURITY)
CALL_DELTA = float(norm.cdf(D1))
DIGITAL_DELTA = float(DISCOUNT * norm.pdf(D2) / (S0 * VOL * np.sqrt(MATURITY)))
MC = dict(key=jax.random.key(0), n_paths=200_000, n_steps=50)


def bs_drift(x):
    return RATE * x


def bs_diffusion(x):
    return VOL * x


def call_payoff(x):
    return DISCOUNT * jnp.maximum(x - STRIKE, 0.0)


def digital_payoff(x):
    return DISCOUNT * jnp.where(x > STRIKE, 1.0, 0.0)


BS = dict(drift=bs_drift, diffusion=bs_diffusion, x0=S0, maturity=MATURITY)


@pytest.fixture(scope="module")
def digital_malliavin():
    return malliavin_delta(**BS, payoff=digital_payoff, **MC)


def test_black_scholes_call_delta_within_three_standard_errors():
    estimate, se = malliavin_delta(**BS, payoff=call_payoff, **MC)
    assert abs(estimate - CALL_DELTA) <= 3 * se
    assert se < 0.005  # 0.8% of the delta: the 3-s.e. band is tight enough to catch a bad weight


def test_black_scholes_digital_delta_within_three_standard_errors(digital_malliavin):
    estimate, se = digital_malliavin
    assert abs(estimate - DIGITAL_DELTA) <= 3 * se
    assert se < 1e-4  # 0.5% of the delta


def test_diffrax_solver_gives_the_same_estimate_as_scan():
    scan = malliavin_delta(**BS, payoff=call_payoff, **MC, solver="scan")
    via_diffrax = malliavin_delta(**BS, payoff=call_payoff, **MC, solver="diffrax")
    np.testing.assert_allclose(np.array(via_diffrax), np.array(scan), rtol=1e-12)


def test_digital_standard_error_is_below_the_finite_difference_bump(digital_malliavin):
    """SIA-3: lower variance than a finite-difference bump (CRN) for the digital.

    Predicted s.e. ratios (notebook eqs fd-variance, bel-variance): 3.3 at h = 1e-2·S0 and 10.7
    at h = 1e-3·S0; the bounds sit about 10% below them.
    """
    _, malliavin_se = digital_malliavin
    for relative_bump, lower_bound in [(1e-2, 3.0), (1e-3, 9.5)]:
        fd_estimate, fd_se = finite_difference_delta(
            **BS, payoff=digital_payoff, **MC, bump=relative_bump * S0
        )
        assert fd_se / malliavin_se >= lower_bound
        assert abs(fd_estimate - DIGITAL_DELTA) <= 3 * fd_se  # the peer is unbiased here too


def black_scholes_call_price(spot):
    d1 = (np.log(spot / STRIKE) + (RATE + VOL**2 / 2) * MATURITY) / (VOL * np.sqrt(MATURITY))
    d2 = d1 - VOL * np.sqrt(MATURITY)
    return spot * norm.cdf(d1) - STRIKE * DISCOUNT * norm.cdf(d2)


def test_finite_difference_peer_matches_the_central_difference_of_the_price():
    """The peer's expectation is the central difference of the exact price (bias ~ h²Γ'/6)."""
    bump = 1e-2 * S0
    target = (black_scholes_call_price(S0 + bump) - black_scholes_call_price(S0 - bump)) / (
        2 * bump
    )
    estimate, se = finite_difference_delta(**BS, payoff=call_payoff, **MC, bump=bump)
    assert abs(estimate - target) <= 3 * se
    assert se < 0.002


def test_constant_drift_bachelier_delta_is_not_zero():
    """DESIGN §8.4: with constant drift the spec's σ⁻¹(∂b)Y weight vanishes; the BEL one must not.

    dX = μ dt + σ dW is integrated exactly by Euler: X_T ~ N(x0 + μT, σ²T), call delta N(d).
    """
    mu, sigma, x0, strike = 0.3, 2.0, 10.0, 10.5
    exact = float(norm.cdf((x0 + mu * MATURITY - strike) / (sigma * np.sqrt(MATURITY))))
    estimate, se = malliavin_delta(
        lambda x: mu + 0.0 * x,
        lambda x: sigma + 0.0 * x,
        x0,
        MATURITY,
        lambda x: jnp.maximum(x - strike, 0.0),
        **MC,
    )
    assert abs(estimate - exact) <= 3 * se
    assert se < 0.005 and estimate > 0.4


def test_ornstein_uhlenbeck_matches_the_exact_law_of_the_euler_scheme():
    """An exact oracle for the discretised estimator, no time-step bias.

    Euler on dX = κ(θ − X)dt + σ dW gives X_N = θ + a^N (x0 − θ) + σ Σ a^{N−1−k} ΔW_k with
    a = 1 − κΔt, and Y_k = a^k. By Stein's lemma E[f(X_N) ΔW_k] = σ a^{N−1−k} Δt E[f'(X_N)], so
    E[f(X_N) π] = a^{N−1} E[f'(X_N)]: for a call, a^{N−1} N(d_N) with X_N Gaussian. Few steps
    (N = 10) make this differ from the continuous e^{−κT} N(d) by several standard errors.
    """
    kappa, theta, sigma, x0, strike, n_steps = 1.0, 0.5, 0.7, 0.0, 0.2, 10
    a = 1.0 - kappa * MATURITY / n_steps
    mean = theta + a**n_steps * (x0 - theta)
    std = sigma * np.sqrt(MATURITY / n_steps * np.sum(a ** (2 * np.arange(n_steps))))
    exact_discrete = a ** (n_steps - 1) * norm.cdf((mean - strike) / std)
    estimate, se = malliavin_delta(
        lambda x: kappa * (theta - x),
        lambda x: sigma + 0.0 * x,
        x0,
        MATURITY,
        lambda x: jnp.maximum(x - strike, 0.0),
        key=jax.random.key(1),
        n_paths=400_000,
        n_steps=n_steps,
    )
    assert abs(estimate - exact_discrete) <= 3 * se
    assert se < 0.002


def nonlinear_drift(x):
    return 0.5 * jnp.sin(x) - 0.3 * x


def nonlinear_diffusion(x):
    return 0.4 + 0.2 * jnp.cos(x)


def test_nonlinear_sde_weight_agrees_with_the_pathwise_delta():
    """State-dependent σ exercises σ'(X)Y: for a smooth payoff E[f(X)π] = E[f'(X)Y] (pathwise).

    Compared path by path (same paths), so the test is on the mean of the difference. Its
    time-step bias at N = 100 is about 0.2 of its standard error (measured at N = 25: 2 s.e.).
    """
    increments = brownian_increments(jax.random.key(2), 200_000, 100, 1.0)
    z = solve_augmented_scan(nonlinear_drift, nonlinear_diffusion, 0.3, 1.0, increments)
    weight_estimator = jnp.tanh(z.state) * bel_weight(z, 1.0)
    pathwise_estimator = jax.vmap(jax.grad(jnp.tanh))(z.state) * z.tangent
    gap, gap_se = mean_and_standard_error(weight_estimator - pathwise_estimator)
    assert abs(gap) <= 3 * gap_se
    assert gap_se < 0.005  # the delta is ≈ 0.85: this is a sub-percent check


def test_constant_payoff_has_zero_delta():
    """E[π] = 0: the weight is an Itô integral."""
    estimate, se = malliavin_delta(**BS, payoff=lambda x: 1.0 + 0.0 * x, **MC)
    assert abs(estimate) <= 3 * se
    assert se < 1e-3


def random_model(params):
    """A smooth nonlinear SDE with σ bounded away from zero, from four parameters."""
    a, b, c, d = params

    def drift(x):
        return a * jnp.sin(x) + b * x

    def diffusion(x):
        return c + d * jnp.cos(x)  # c ∈ [0.3, 1], |d| ≤ 0.2: σ ≥ 0.1

    return drift, diffusion


model_params = st.tuples(
    st.floats(-1.0, 1.0), st.floats(-1.0, 1.0), st.floats(0.3, 1.0), st.floats(-0.2, 0.2)
)


@jax.jit
def _tangent_and_autodiff(params, x0, increments):
    drift, diffusion = random_model(params)
    z = solve_augmented_scan(drift, diffusion, x0, 1.0, increments)
    _, dx_dx0 = jax.jvp(
        lambda start: solve_augmented_scan(drift, diffusion, start, 1.0, increments).state,
        (x0,),
        (jnp.ones_like(x0),),
    )
    return z.tangent, dx_dx0


@jax.jit
def _scan_and_diffrax(params, x0, increments):
    drift, diffusion = random_model(params)
    return (
        solve_augmented_scan(drift, diffusion, x0, 1.0, increments),
        solve_augmented_diffrax(drift, diffusion, x0, 1.0, increments),
    )


@settings(max_examples=15, deadline=None)
@given(params=model_params, x0=st.floats(-2.0, 2.0), seed=st.integers(0, 2**31 - 1))
def test_tangent_is_the_derivative_of_the_euler_scheme(params, x0, seed):
    """Y_N = ∂X_N/∂x0 exactly: the tangent recursion is the derivative of the state recursion."""
    increments = brownian_increments(jax.random.key(seed), 64, 40, 1.0)
    tangent, autodiff = _tangent_and_autodiff(jnp.array(params), jnp.asarray(x0), increments)
    np.testing.assert_allclose(tangent, autodiff, rtol=1e-10, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(params=model_params, x0=st.floats(-2.0, 2.0), seed=st.integers(0, 2**31 - 1))
def test_scan_and_diffrax_integrate_the_same_paths(params, x0, seed):
    """Same increments, same scheme: the two solvers agree to rounding on every component."""
    increments = brownian_increments(jax.random.key(seed), 64, 37, 1.0)
    scan, via_diffrax = _scan_and_diffrax(jnp.array(params), jnp.asarray(x0), increments)
    for a, b in zip(jax.tree.leaves(scan), jax.tree.leaves(via_diffrax), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)


def test_same_key_same_result_and_different_key_different_result():
    small = dict(n_paths=1_000, n_steps=20)
    first = malliavin_delta(**BS, payoff=call_payoff, key=jax.random.key(5), **small)
    again = malliavin_delta(**BS, payoff=call_payoff, key=jax.random.key(5), **small)
    other = malliavin_delta(**BS, payoff=call_payoff, key=jax.random.key(6), **small)
    assert np.array_equal(np.array(first), np.array(again))
    assert not np.array_equal(np.array(first), np.array(other))


def test_key_is_keyword_only():
    with pytest.raises(TypeError):
        malliavin_delta(
            bs_drift, bs_diffusion, S0, MATURITY, call_payoff, jax.random.key(0), 10, 10
        )


SMALL = dict(key=jax.random.key(0), n_paths=16, n_steps=4)


@pytest.mark.parametrize("maturity", [0.0, -1.0, float("nan"), float("inf")])
def test_non_positive_or_non_finite_maturity_is_rejected(maturity):
    with pytest.raises(ValueError, match="maturity"):
        malliavin_delta(bs_drift, bs_diffusion, S0, maturity, call_payoff, **SMALL)


@pytest.mark.parametrize("n_paths", [1, 0, -5])
def test_fewer_than_two_paths_is_rejected(n_paths):
    with pytest.raises(ValueError, match="n_paths"):
        malliavin_delta(**BS, payoff=call_payoff, key=jax.random.key(0), n_paths=n_paths, n_steps=4)


@pytest.mark.parametrize("x0", [float("nan"), float("inf"), -float("inf"), jnp.asarray(jnp.nan)])
def test_non_finite_start_is_rejected(x0):
    with pytest.raises(ValueError, match="x0"):
        malliavin_delta(bs_drift, bs_diffusion, x0, MATURITY, call_payoff, **SMALL)


def test_zero_steps_is_rejected():
    with pytest.raises(ValueError, match="n_steps"):
        malliavin_delta(**BS, payoff=call_payoff, key=jax.random.key(0), n_paths=16, n_steps=0)


def test_degenerate_diffusion_at_the_start_is_rejected():
    """σ(x0) = 0 (Black–Scholes at x0 = 0): σ⁻¹ in the weight does not exist."""
    with pytest.raises(ValueError, match="σ"):
        malliavin_delta(bs_drift, bs_diffusion, 0.0, MATURITY, call_payoff, **SMALL)


def test_unknown_solver_is_rejected():
    # ValueError from the function; under the test suite's jaxtyping hook the Literal annotation
    # (a TypeError) fires first. Either way the message names the argument.
    with pytest.raises((ValueError, TypeError), match="solver"):
        malliavin_delta(**BS, payoff=call_payoff, **SMALL, solver="milstein")


@pytest.mark.parametrize("bump", [0.0, -1.0, float("nan")])
def test_finite_difference_rejects_a_bad_bump(bump):
    with pytest.raises(ValueError, match="bump"):
        finite_difference_delta(**BS, payoff=call_payoff, **SMALL, bump=bump)


def test_non_finite_result_is_an_error_not_a_number():
    """A payoff that overflows on the simulated paths gives a clear error, not inf."""
    with pytest.raises(ValueError, match="not finite"):
        malliavin_delta(**BS, payoff=lambda x: jnp.exp(10.0 * x), **SMALL)
