"""Branch B (usp.kernels.dgm): derivative jet, DGM on closed-form PDEs, the entropy monitor and
the branch contract. Training runs use the notebook's CI sizes, seeded, on CPU (deterministic).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st
from hypothesis import given, settings
from hypothesis import strategies as hst

from usp.api import AbstractBranch, DomainError, Forecast, PredictorConfig
from usp.kernels import dgm
from usp.reference import dgm as dgm_reference

HEAT_SIZE = dict(width=32, depth=3, batch_size=256, n_steps=2500)
MERTON_SIZE = dict(width=32, depth=3, batch_size=256, n_steps=4000)
OU = dict(coefficient=0.6, mean=100.0, noise=1.0)
BUFFER = PredictorConfig().wtmm_buffer_size


def simulate_ou(n, *, coefficient, mean, noise, seed):
    """Exact discretisation of an OU process sampled once per unit of time."""
    rng = np.random.default_rng(seed)
    x = np.empty(n)
    x[0] = mean + noise / math.sqrt(1 - coefficient**2) * rng.standard_normal()
    for k in range(n - 1):
        x[k + 1] = mean + coefficient * (x[k] - mean) + noise * rng.standard_normal()
    return x


def train(problem, args, *, width, depth, batch_size, n_steps, seed):
    net = dgm.DGMNet(
        problem.t_final,
        problem.x_lo,
        problem.x_hi,
        width=width,
        depth=depth,
        key=jax.random.key(seed),
    )
    return dgm.train_dgm(
        net,
        problem,
        args,
        key=jax.random.key(seed + 1),
        n_steps=n_steps,
        batch_size=batch_size,
        learning_rate=3e-3,
    )


def relative_l2(net, exact, t, x):
    approx = jax.vmap(jax.vmap(net))(t, x)
    return float(jnp.linalg.norm(approx - exact) / jnp.linalg.norm(exact))


# --------------------------------------------------------------------------------------------
# derivative jet


def test_jet_matches_analytic_derivatives():
    def v(t, x):
        return jnp.exp(-t) * jnp.sin(2 * x) + t * x**3

    t, x = jnp.asarray(0.3), jnp.asarray(-0.7)
    got = dgm.jet(v, t, x)
    want = (
        v(t, x),
        -jnp.exp(-t) * jnp.sin(2 * x) + x**3,
        2 * jnp.exp(-t) * jnp.cos(2 * x) + 3 * t * x**2,
        -4 * jnp.exp(-t) * jnp.sin(2 * x) + 6 * t * x,
    )
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-13, atol=1e-14)


def test_dgm_net_rejects_an_empty_domain():
    with pytest.raises(ValueError, match="x_hi > x_lo"):
        dgm.DGMNet(1.0, 1.0, 1.0, key=jax.random.key(0))


# --------------------------------------------------------------------------------------------
# DGM on closed forms


@pytest.fixture(scope="module")
def heat():
    args = dgm_reference.HeatCoefficients(sigma=1.0, width=0.5, t_final=1.0)
    net, history = train(dgm_reference.heat_problem(), args, seed=0, **HEAT_SIZE)
    return net, history, args


def test_heat_equation_relative_l2_below_two_percent(heat):
    net, history, args = heat
    t, x = jnp.meshgrid(jnp.linspace(0.0, 1.0, 21), jnp.linspace(-3.0, 3.0, 61))
    error = relative_l2(net, dgm_reference.heat_solution(t, x, args), t, x)
    assert error <= 0.02, error
    assert np.all(np.isfinite(np.asarray(history.loss_terms)))
    # The loss fell by orders of magnitude: training, not luck of initialisation. Measured
    # 1/510 with this seed's (float32-drawn) training points; 1/200 asked, with 2.5x headroom.
    # An untrained or barely trained network stays within one order.
    terms = np.asarray(history.loss_terms).sum(axis=1)
    assert terms[-100:].mean() < 5e-3 * terms[:10].mean()


def test_training_is_deterministic():
    args = dgm_reference.HeatCoefficients(sigma=1.0, width=0.5, t_final=1.0)
    size = dict(width=8, depth=2, batch_size=64, n_steps=50)
    first, _ = train(dgm_reference.heat_problem(), args, seed=3, **size)
    second, _ = train(dgm_reference.heat_problem(), args, seed=3, **size)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_merton_value_function_and_optimal_fraction():
    args = dgm_reference.MertonCoefficients(
        rate=0.05, drift=0.15, volatility=0.3, risk_aversion=2.0, t_final=1.0
    )
    net, _ = train(dgm_reference.merton_problem(), args, seed=2, **MERTON_SIZE)
    t, x = jnp.meshgrid(jnp.linspace(0.0, 1.0, 21), jnp.linspace(0.5, 2.0, 61))
    assert relative_l2(net, dgm_reference.merton_value(t, x, args), t, x) <= 0.01
    wealth = jnp.linspace(0.65, 1.85, 121)
    jets = jax.vmap(lambda w: dgm.jet(net, jnp.asarray(0.0), w))(wealth)
    fraction = dgm_reference.merton_policy(wealth, jets, args) / dgm_reference.merton_fraction(args)
    # pi* is a ratio of derivatives that the HJB residual constrains weakly (the notebook derives
    # why): at this size its RMS error spans 2-15% over seeds (this seed: ~15%); full size ~2-3%.
    assert float(jnp.sqrt(jnp.mean((fraction - 1.0) ** 2))) <= 0.20


def test_merton_closed_form_solves_its_hjb():
    """The oracle itself: the closed form has zero reduced-HJB residual and the right pi*."""
    args = dgm_reference.MertonCoefficients(
        rate=0.05, drift=0.15, volatility=0.3, risk_aversion=2.0, t_final=1.0
    )
    for t, x in [(0.0, 0.7), (0.4, 1.3), (0.9, 1.9)]:
        j = dgm.jet(
            lambda s, y: dgm_reference.merton_value(s, y, args), jnp.asarray(t), jnp.asarray(x)
        )
        residual = j.v_t + dgm_reference.merton_hamiltonian(jnp.asarray(t), jnp.asarray(x), j, args)
        assert abs(float(residual)) < 1e-12
        np.testing.assert_allclose(
            float(dgm_reference.merton_policy(x, j, args)),
            float(dgm_reference.merton_fraction(args)),
            rtol=1e-12,
        )


# --------------------------------------------------------------------------------------------
# entropy and mode collapse


@pytest.mark.parametrize(
    "sample, window",
    [
        (np.random.default_rng(0).standard_normal(128), None),
        (np.random.default_rng(1).exponential(size=300), None),
        (np.random.default_rng(2).uniform(size=64), 5),
        (np.random.default_rng(3).standard_t(3, size=200), 20),
    ],
)
def test_spacing_entropy_matches_scipy(sample, window):
    ours = float(dgm.spacing_entropy(jnp.asarray(sample), window=window))
    theirs = st.differential_entropy(sample, window_length=window, method="ebrahimi")
    assert abs(ours - theirs) < 1e-12


def test_spacing_entropy_of_a_large_gaussian_sample():
    sample = jnp.asarray(np.random.default_rng(4).standard_normal(20_000))
    assert abs(float(dgm.spacing_entropy(sample)) - 0.5 * math.log(2 * math.pi * math.e)) < 0.01


def test_spacing_entropy_rejects_a_window_too_wide():
    with pytest.raises(ValueError, match="window"):
        dgm.spacing_entropy(jnp.arange(10.0), window=5)


@settings(max_examples=25, deadline=None)
@given(
    seed=hst.integers(0, 2**31 - 1),
    log_scale=hst.floats(-6.0, 6.0),
    shift=hst.floats(-1e3, 1e3),
)
def test_spacing_entropy_shift_scale_and_order(seed, log_scale, shift):
    """H[a v + b] = H[v] + log|a| exactly, and H ignores the order of the sample."""
    sample = jnp.asarray(np.random.default_rng(seed).standard_normal(64))
    scale = math.exp(log_scale)
    base = float(dgm.spacing_entropy(sample))
    moved = float(dgm.spacing_entropy(scale * sample + shift))
    assert abs(moved - (base + log_scale)) < 1e-9 + 1e-13 * abs(shift) / scale
    flipped = float(dgm.spacing_entropy(-sample[::-1]))
    assert abs(flipped - base) < 1e-12


def test_entropy_check_detects_shrinkage_not_shape():
    gamma = PredictorConfig().dgm_entropy_gamma
    g = jnp.asarray(st.norm.ppf((np.arange(128) + 0.5) / 128))
    faithful = dgm.entropy_check(0.9 * g + 3.0, g, gamma)
    shrunk = dgm.entropy_check(1e-3 * g + 3.0, g, gamma)
    constant = dgm.entropy_check(jnp.full(128, 3.0), g, gamma)
    assert not bool(faithful.collapsed)
    assert bool(shrunk.collapsed) and bool(constant.collapsed)
    assert float(constant.dgm_entropy) < -15.0  # the 1e-9 spacing floor keeps it finite
    # the check does not depend on the units of V and g (both measured in std(g))
    rescaled = dgm.entropy_check(1e4 * (0.9 * g + 3.0), 1e4 * g, gamma)
    assert abs(float(rescaled.dgm_entropy) - float(faithful.dgm_entropy)) < 1e-9


def test_nan_entropy_reads_as_collapsed():
    g = jnp.linspace(-2.0, 2.0, 64)
    check = dgm.entropy_check(jnp.full(64, jnp.nan), g, 0.5)
    assert bool(check.collapsed)


# --------------------------------------------------------------------------------------------
# the AR(1) -> diffusion embedding (the branch's oracle)


@settings(max_examples=40, deadline=None)
@given(
    coefficient=hst.floats(0.01, 1.2),
    intercept=hst.floats(-2.0, 2.0),
    residual_std=hst.floats(0.01, 3.0),
    z=hst.floats(-5.0, 5.0),
)
def test_linear_diffusion_reproduces_the_ar1_transition(coefficient, intercept, residual_std, z):
    fit = dgm.AR1Fit(jnp.asarray(intercept), jnp.asarray(coefficient), jnp.asarray(residual_std))
    diffusion = dgm.linear_diffusion_from_ar1(fit)
    mean = float(dgm_reference.linear_diffusion_mean(diffusion, z))
    assert abs(mean - (intercept + coefficient * z)) < 1e-9 * (1 + abs(z))
    slope, vol = float(diffusion.slope), float(diffusion.volatility)
    variance = vol**2 * (math.expm1(2 * slope) / (2 * slope) if abs(slope) > 1e-12 else 1.0)
    assert abs(variance - residual_std**2) < 1e-9 * residual_std**2


def test_embedding_is_continuous_at_the_random_walk():
    near = [1.0 - 1e-7, 1.0, 1.0 + 1e-7]
    diffusions = [
        dgm.linear_diffusion_from_ar1(
            dgm.AR1Fit(jnp.asarray(0.3), jnp.asarray(phi), jnp.asarray(0.5))
        )
        for phi in near
    ]
    for d in diffusions:
        assert abs(float(d.intercept) - 0.3) < 1e-6
        assert abs(float(d.volatility) - 0.5) < 1e-6


def test_fit_ar1_matches_least_squares():
    z = jnp.asarray(simulate_ou(200, seed=5, **OU))
    z = (z - z.mean()) / z.std()
    fit = dgm.fit_ar1(z)
    slope, intercept = np.polyfit(np.asarray(z[:-1]), np.asarray(z[1:]), 1)
    np.testing.assert_allclose([float(fit.coefficient), float(fit.intercept)], [slope, intercept])
    residuals = np.asarray(z[1:]) - intercept - slope * np.asarray(z[:-1])
    np.testing.assert_allclose(float(fit.residual_std), residuals.std(ddof=2))


# --------------------------------------------------------------------------------------------
# the branch


@pytest.fixture(scope="module")
def branch():
    return dgm.DGMBranch.from_config(PredictorConfig())


@pytest.fixture(scope="module")
def ou_series():
    return simulate_ou(BUFFER + 300, seed=7, **OU)


@pytest.fixture(scope="module")
def fitted(branch, ou_series):
    params = branch.init(key=jax.random.key(0))
    return branch.fit(params, jnp.asarray(ou_series[:BUFFER]))


def test_branch_contract(branch):
    config = PredictorConfig(dgm_entropy_gamma=0.7)
    configured = dgm.DGMBranch.from_config(config, train_steps=100)
    assert isinstance(configured, AbstractBranch)
    assert configured.entropy_gamma == 0.7 and configured.train_steps == 100
    assert configured.entropy_points == config.wtmm_buffer_size
    params = branch.init(key=jax.random.key(1))
    forecast = branch.predict(params, jnp.linspace(1.0, 2.0, BUFFER), key=jax.random.key(2))
    assert isinstance(forecast, Forecast)
    assert np.isfinite(float(forecast.mean)) and float(forecast.scale) > 0


def test_params_are_a_pytree_of_arrays(fitted, branch, ou_series):
    """So the step can carry them through jax.jit, lax.scan and msgpack snapshots."""
    leaves = jax.tree.leaves(fitted)
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)
    buffer = jnp.asarray(ou_series[:BUFFER])
    jitted = jax.jit(lambda p, b: branch.predict(p, b, key=jax.random.key(0)))(fitted, buffer)
    eager = branch.predict(fitted, buffer, key=jax.random.key(0))
    np.testing.assert_allclose(float(jitted.mean), float(eager.mean), rtol=1e-14)


def test_fitted_pde_solution_matches_closed_form(fitted):
    zs = jnp.linspace(-3.0, 3.0, 121)
    v = jax.vmap(lambda z: fitted.net(0.0, z))(zs)
    exact = dgm_reference.linear_diffusion_mean(fitted.diffusion, zs)
    assert float(jnp.max(jnp.abs(v - exact))) < 0.05 * float(fitted.step_std)
    assert int(fitted.n_rounds) == 1 and float(fitted.training_loss) <= 1e-3
    assert not bool(fitted.entropy.collapsed)


def test_ou_forecast_tracks_the_true_conditional_mean(branch, fitted, ou_series):
    windows = np.lib.stride_tricks.sliding_window_view(ou_series[:-1], BUFFER)
    targets = ou_series[BUFFER:]
    predict = jax.jit(
        jax.vmap(lambda p, b: branch.predict(p, b, key=jax.random.key(0)).mean, (None, 0))
    )
    params, forecasts = fitted, []
    for block in range(0, len(targets), 25):
        buffers = jnp.asarray(windows[block : block + 25])
        if block > 0:
            params = branch.fit(params, buffers[0])  # warm start
        forecasts.append(np.asarray(predict(params, buffers)))
    forecasts = np.concatenate(forecasts)
    last = windows[:, -1]
    oracle = OU["mean"] + OU["coefficient"] * (last - OU["mean"])

    def rmse(prediction):
        return float(np.sqrt(np.mean((prediction - targets) ** 2)))

    ratio = rmse(forecasts) / rmse(oracle)
    assert ratio <= 1.05, ratio
    assert ratio < rmse(last) / rmse(oracle) - 0.05  # a forecaster, not the last value
    assert int(params.n_rounds) >= len(range(0, len(targets), 25))


def test_predict_is_linear_beyond_the_domain(branch, fitted, ou_series):
    buffer = jnp.asarray(ou_series[:BUFFER])
    far = fitted.loc + 7.0 * fitted.scale  # z = 7 > half_width = 5
    mean = branch.predict(fitted, buffer.at[-1].set(far), key=jax.random.key(0)).mean
    exact = fitted.loc + fitted.scale * dgm_reference.linear_diffusion_mean(fitted.diffusion, 7.0)
    assert abs(float(mean - exact)) < 0.1 * float(fitted.scale * fitted.step_std)


def test_predict_vmaps_over_assets(branch, fitted, ou_series):
    buffers = jnp.asarray(np.lib.stride_tricks.sliding_window_view(ou_series, BUFFER)[:5])
    batched = jax.vmap(lambda b: branch.predict(fitted, b, key=jax.random.key(0)))(buffers)
    for k in range(5):
        single = branch.predict(fitted, buffers[k], key=jax.random.key(0))
        np.testing.assert_allclose(float(batched.mean[k]), float(single.mean), rtol=1e-13)


def test_collapsed_network_trips_the_check_and_trained_one_does_not(branch, fitted):
    """The last layer's weights zeroed: V is the constant bias."""
    again = branch.entropy(fitted)
    assert not bool(again.collapsed)
    # the fit computed it inside its compiled program: equal up to XLA's re-association
    np.testing.assert_allclose(
        float(again.dgm_entropy), float(fitted.entropy.dgm_entropy), rtol=1e-12
    )
    assert float(again.terminal_entropy) == pytest.approx(float(fitted.entropy.terminal_entropy))
    collapsed = eqx.tree_at(
        lambda p: p.net.layers[-1].weight, fitted, jnp.zeros_like(fitted.net.layers[-1].weight)
    )
    assert bool(branch.entropy(collapsed).collapsed)


def test_train_vmaps_over_assets(fitted, ou_series):
    """`train` (fit without host checks) is one pure program: vmapped fits of many assets agree
    with one-by-one fits."""
    small = dgm.DGMBranch.from_config(PredictorConfig(), train_steps=20)
    buffers = jnp.stack([jnp.asarray(ou_series[:BUFFER]), jnp.asarray(ou_series[90 : 90 + BUFFER])])
    stacked = jax.tree.map(lambda leaf: jnp.stack([leaf, leaf]), fitted)
    batched = jax.vmap(small.train)(stacked, buffers)
    for k in range(2):
        single = small.train(fitted, buffers[k])
        assert int(batched.n_rounds[k]) == int(single.n_rounds) == int(fitted.n_rounds) + 1
        np.testing.assert_allclose(float(batched.loc[k]), float(single.loc), rtol=1e-14)
        for a, b in zip(jax.tree.leaves(batched.net), jax.tree.leaves(single.net), strict=True):
            np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b), rtol=1e-8, atol=1e-10)


def test_negative_autocorrelation_degrades_to_the_mean(branch, fitted):
    """phi < 0 has no diffusion embedding: phi is clipped to 0.01 (documented degradation)."""
    series = simulate_ou(BUFFER, coefficient=-0.5, mean=10.0, noise=1.0, seed=8)
    params = branch.fit(fitted, jnp.asarray(series))  # a warm refit from the OU network
    # the dynamics moved too far for one warm round: fit added long rounds until converged
    assert int(params.n_rounds) > int(fitted.n_rounds) + 1
    assert float(params.training_loss) <= branch.loss_tolerance
    assert abs(float(jnp.exp(params.diffusion.slope)) - 0.01) < 1e-12
    forecast = branch.predict(params, jnp.asarray(series), key=jax.random.key(0))
    z_now = (series[-1] - float(params.loc)) / float(params.scale)
    assert abs(float(forecast.mean) - float(params.loc)) < 0.05 * float(params.scale) * (
        1 + abs(z_now)
    )


def test_degenerate_but_valid_buffers_give_sensible_forecasts(branch):
    """A straight line (fitted exactly) and a flat buffer with one move: finite forecasts and a
    positive scale, not NaN."""
    line = 100.0 + 0.5 * jnp.arange(BUFFER, dtype=float)
    params = branch.fit(branch.init(key=jax.random.key(4)), line)
    forecast = branch.predict(params, line, key=jax.random.key(0))
    # DGM's error at this size is ~1e-2 of the buffer's std (the normalised unit); the last
    # value would miss by the whole step, 0.5
    error = abs(float(forecast.mean) - (float(line[-1]) + 0.5))
    assert error < 0.02 * float(jnp.std(line)) and error < 0.25
    assert float(forecast.scale) > 0
    step = jnp.full(BUFFER, 100.0).at[-1].set(101.0)
    params = branch.fit(params, step)  # a warm refit
    forecast = branch.predict(params, step, key=jax.random.key(0))
    assert np.isfinite(float(forecast.mean)) and float(forecast.scale) > 0
    assert abs(float(jnp.exp(params.diffusion.slope)) - 1.0) < 1e-12  # random walk assumed


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b.at[5].set(jnp.nan), "non-finite"),
        (lambda b: b.at[-1].set(jnp.inf), "non-finite"),
        (lambda b: b.at[0].set(-jnp.inf), "non-finite"),
        (lambda b: jnp.full_like(b, 101.5), "constant"),
        (lambda b: b[:8], "at least"),
    ],
)
def test_fit_rejects_bad_buffers(branch, fitted, ou_series, mutate, message):
    bad = mutate(jnp.asarray(ou_series[:BUFFER]))
    with pytest.raises(ValueError, match=message):
        branch.fit(fitted, bad)


def test_non_finite_values_raise_a_domain_error(branch, fitted, ou_series):
    with pytest.raises(DomainError):
        branch.fit(fitted, jnp.asarray(ou_series[:BUFFER]).at[3].set(jnp.nan))


def test_predict_on_a_non_finite_last_value_is_nan(branch, fitted, ou_series):
    buffer = jnp.asarray(ou_series[:BUFFER]).at[-1].set(jnp.nan)
    assert np.isnan(float(branch.predict(fitted, buffer, key=jax.random.key(0)).mean))
