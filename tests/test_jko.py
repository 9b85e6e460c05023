"""JKO/Sinkhorn weight update (usp.core.jko): oracles (SciPy, POT, closed forms), invariants
(hypothesis), entropy annealing, bad input, and the optax-learned time step."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import ot
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

from usp.api import PredictorConfig
from usp.core.jko import (
    HUBER_DELTA,
    discrete_metric,
    discrete_metric_potentials,
    energy,
    entropic_transport,
    free_energy,
    init_tau_learner,
    jko_step,
    jko_step_from_config,
    mirror_step,
    next_tick_loss,
    step_fraction,
    tau_optimizer,
    update_tau,
)

CONFIG = PredictorConfig()
EPS, TAU, MAX_IT = CONFIG.epsilon, CONFIG.jko_tau, CONFIG.sinkhorn_max_iterations
C = np.asarray(discrete_metric(4))
STEP = jax.jit(jko_step, static_argnames=("robust", "max_iterations", "threshold", "warm_start"))
SOLVE = jax.jit(entropic_transport, static_argnames=("max_iterations", "threshold", "warm_start"))


def _case(seed, spread=1.0, level=100.0):
    rng = np.random.default_rng(seed)
    weights = jnp.asarray(rng.dirichlet(np.full(4, 0.7)))
    predictions = jnp.asarray(level + spread * rng.normal(size=4))
    return weights, predictions, float(level + rng.normal()), float(0.5 + rng.uniform())


def _assert_uniform_fallback(result, epsilon=None):
    """Uniform weights, flag down; after two failed solves the reported ε is 2ε."""
    assert not bool(result.sinkhorn_converged)
    np.testing.assert_array_equal(np.asarray(result.weights), np.full(4, 0.25))
    if epsilon is not None:
        assert float(result.epsilon_used) == pytest.approx(2 * epsilon, rel=1e-15)


# -- energy and mirror step ------------------------------------------------------------------


@pytest.mark.parametrize("level", [0.0, 1.1, 1e4])
def test_energy_is_the_raw_loss_over_sigma_squared(level):
    weights, predictions, target, sigma = _case(0, spread=2.0, level=level)
    error = float(weights @ predictions) - target
    squared = float(energy(weights, predictions, target, sigma=sigma, robust=False))
    assert squared * sigma**2 == pytest.approx(0.5 * error**2, rel=1e-9)
    delta = HUBER_DELTA * sigma  # raw-units Huber threshold 1.35 σ
    huber_raw = 0.5 * error**2 if abs(error) <= delta else delta * (abs(error) - 0.5 * delta)
    robust = float(energy(weights, predictions, target, sigma=sigma, robust=True))
    assert robust * sigma**2 == pytest.approx(huber_raw, rel=1e-9)


def test_energy_gradient_is_psi_times_centred_forecasts():
    weights, predictions, target, sigma = _case(1, spread=3.0)
    for robust in (False, True):
        grad = jax.grad(energy)(weights, predictions, target, sigma=sigma, robust=robust)
        residual = (float(weights @ predictions) - target) / sigma
        psi = np.clip(residual, -HUBER_DELTA, HUBER_DELTA) if robust else residual
        centred = np.asarray(predictions) - np.mean(np.asarray(predictions))
        np.testing.assert_allclose(np.asarray(grad), psi * centred / sigma, rtol=1e-12)


def test_mirror_step_solves_the_kl_proximal_problem():
    rng = np.random.default_rng(2)
    for _ in range(5):
        rho, g, tau = rng.dirichlet(np.ones(4)), rng.normal(size=4), rng.uniform(0.05, 2.0)
        objective = lambda x, g=g, rho=rho, tau=tau: (
            g @ x + np.sum(x * np.log(np.maximum(x, 1e-300) / rho)) / tau
        )
        numeric = scipy.optimize.minimize(
            objective,
            rho,
            method="SLSQP",
            bounds=[(1e-12, 1.0)] * 4,
            constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0}],
            options={"ftol": 1e-14, "maxiter": 500},
        ).x
        closed = mirror_step(jnp.asarray(rho), jnp.asarray(g), tau)
        np.testing.assert_allclose(np.asarray(closed), numeric, atol=1e-6)


def test_free_energy_adds_epsilon_times_negative_entropy():
    weights = jnp.array([0.5, 0.5, 0.0, 0.0])  # zero weights contribute 0 log 0 = 0
    assert float(free_energy(weights, 2.0, 0.1)) == pytest.approx(2.0 - 0.1 * np.log(2.0))


# -- Sinkhorn -----------------------------------------------------------------------------------


def test_sinkhorn_matches_pot_and_the_exact_linear_programme():
    rng = np.random.default_rng(3)
    for _ in range(5):
        a, b = rng.dirichlet(np.ones(4)), rng.dirichlet(np.ones(4))
        ours = SOLVE(
            jnp.asarray(a),
            jnp.asarray(b),
            epsilon=0.05,
            max_iterations=5000,
            threshold=1e-12,
            warm_start=False,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pot_plan = ot.bregman.sinkhorn_log(a, b, C, 0.05, stopThr=1e-13, numItermax=20000)
        assert float(ours.cost) == pytest.approx(np.sum(pot_plan * C), abs=1e-9)
        exact = ot.emd2(a, b, C)
        assert exact == pytest.approx(0.5 * np.abs(a - b).sum(), abs=1e-12)  # W0 = TV
        small = SOLVE(jnp.asarray(a), jnp.asarray(b), epsilon=EPS, max_iterations=MAX_IT)
        assert bool(small.converged)
        assert float(small.cost) == pytest.approx(exact, abs=1e-9)


def test_warm_start_is_the_small_epsilon_solution():
    weights, predictions, target, sigma = _case(4)
    grad = jax.grad(energy)(weights, predictions, target, sigma=sigma, robust=False)
    proposal = mirror_step(weights, grad, TAU)
    f, g = discrete_metric_potentials(weights, proposal, EPS)
    plan = np.exp((np.asarray(f)[:, None] + np.asarray(g)[None, :] - C) / EPS)
    np.testing.assert_allclose(plan.sum(axis=1), np.asarray(weights), atol=1e-13)
    np.testing.assert_allclose(plan.sum(axis=0), np.asarray(proposal), atol=1e-13)
    solved = SOLVE(weights, proposal, epsilon=EPS, max_iterations=MAX_IT)
    assert bool(solved.converged) and int(solved.iterations) == 1


def test_cold_start_cannot_converge_at_the_default_epsilon():
    """The spec's defaults (ε = 1e-3, 200 iterations) fail from zero potentials: the reason
    for the warm start. Without it every tick would end in the uniform fallback."""
    weights, predictions, target, sigma = _case(5)
    grad = jax.grad(energy)(weights, predictions, target, sigma=sigma, robust=False)
    proposal = mirror_step(weights, grad, TAU)
    cold = SOLVE(weights, proposal, epsilon=EPS, max_iterations=MAX_IT, warm_start=False)
    assert not bool(cold.converged) and int(cold.iterations) == MAX_IT
    result = STEP(weights, predictions, target, tau=TAU, epsilon=EPS, sigma=sigma, warm_start=False)
    _assert_uniform_fallback(result, EPS)


# -- the step length ---------------------------------------------------------------------------


@pytest.mark.parametrize("robust", [False, True])
def test_step_fraction_matches_brute_force(robust):
    rng = np.random.default_rng(6)
    grid = np.linspace(0.0, 1.0, 200_001)
    delta = HUBER_DELTA if robust else np.inf
    for _ in range(100):
        residual = rng.normal(scale=3.0)
        slope = -np.sign(residual) * abs(rng.normal(scale=2.0))  # rΔ ≤ 0 (mirror descent)
        cost, tau = rng.uniform(0.0, 1.0), rng.uniform(0.01, 3.0)
        u = residual + grid * slope
        loss = np.where(np.abs(u) <= delta, 0.5 * u**2, delta * (np.abs(u) - 0.5 * delta))
        brute = grid[np.argmin(loss + grid**2 * cost / (2 * tau))]
        closed = float(step_fraction(residual, slope, cost, tau, robust))
        assert abs(closed - brute) < 1e-5  # grid step 5e-6


# -- invariants (hypothesis) -------------------------------------------------------------------

weights_st = st.lists(st.floats(1e-9, 1.0), min_size=4, max_size=4).map(
    lambda w: jnp.asarray(w) / sum(w)
)
predictions_st = st.lists(st.floats(-1e3, 1e3), min_size=4, max_size=4).map(jnp.asarray)
target_st = st.floats(-1e3, 1e3)
sigma_st = st.floats(1e-2, 1e2)
tau_st = st.floats(1e-4, 10.0)


@settings(max_examples=40, deadline=None)
@given(
    weights_st,
    predictions_st,
    target_st,
    sigma_st,
    tau_st,
    st.floats(1e-4, 1.0),
    st.booleans(),
)
def test_weights_stay_on_the_simplex(weights, predictions, target, sigma, tau, epsilon, robust):
    result = STEP(
        weights, predictions, target, tau=tau, epsilon=epsilon, sigma=sigma, robust=robust
    )
    new = np.asarray(result.weights)
    assert np.all(np.isfinite(new)) and np.all(new >= 0.0)
    assert abs(new.sum() - 1.0) < 1e-12
    assert np.isfinite(float(result.free_energy)) and np.isfinite(float(result.energy))


@settings(max_examples=40, deadline=None)
@given(
    weights_st,
    predictions_st,
    target_st,
    sigma_st,
    tau_st,
    st.floats(1e-4, 5e-2),
    st.booleans(),
)
def test_realised_loss_never_increases(weights, predictions, target, sigma, tau, epsilon, robust):
    result = STEP(
        weights, predictions, target, tau=tau, epsilon=epsilon, sigma=sigma, robust=robust
    )
    assert bool(result.sinkhorn_converged)  # the warm start converges on this whole range
    before, after = float(result.energy_before), float(result.energy)
    assert after <= before + 1e-12 * (1.0 + before)
    assert 0.0 <= float(result.step_fraction) <= 1.0


@settings(max_examples=30, deadline=None)
@given(weights_st, predictions_st, target_st, sigma_st, st.floats(1e-9, 1e-4), st.booleans())
def test_small_tau_leaves_the_weights_unchanged(
    weights, predictions, target, sigma, tau_times_osc, robust
):
    grad = jax.grad(energy)(weights, predictions, target, sigma=sigma, robust=robust)
    oscillation = float(jnp.max(grad) - jnp.min(grad))
    tau = tau_times_osc / oscillation if oscillation > 0 else 1e-6
    result = STEP(weights, predictions, target, tau=tau, epsilon=EPS, sigma=sigma, robust=robust)
    moved = float(jnp.abs(result.weights - weights).sum())
    assert moved <= np.expm1(tau * oscillation) + 1e-13  # eq. (jko-small-tau)


@settings(max_examples=30, deadline=None)
@given(
    weights_st,
    predictions_st,
    target_st,
    sigma_st,
    tau_st,
    st.booleans(),
    st.permutations(range(4)),
)
def test_permuting_branches_permutes_weights(
    weights, predictions, target, sigma, tau, robust, permutation
):
    perm = np.asarray(permutation)
    result = STEP(weights, predictions, target, tau=tau, epsilon=EPS, sigma=sigma, robust=robust)
    permuted = STEP(
        weights[perm], predictions[perm], target, tau=tau, epsilon=EPS, sigma=sigma, robust=robust
    )
    np.testing.assert_allclose(
        np.asarray(permuted.weights), np.asarray(result.weights)[perm], atol=1e-12
    )
    assert bool(permuted.sinkhorn_converged) == bool(result.sinkhorn_converged)


def test_robust_mode_ignores_the_size_of_an_outlier():
    weights, predictions, target, sigma = _case(7)
    far = STEP(
        weights, predictions, target + 10 * sigma, tau=TAU, epsilon=EPS, sigma=sigma, robust=True
    )
    farther = STEP(
        weights, predictions, target + 1e3 * sigma, tau=TAU, epsilon=EPS, sigma=sigma, robust=True
    )
    np.testing.assert_allclose(np.asarray(far.weights), np.asarray(farther.weights), atol=1e-14)
    squared = STEP(weights, predictions, target + 1e3 * sigma, tau=TAU, epsilon=EPS, sigma=sigma)
    assert not np.allclose(np.asarray(squared.weights), np.asarray(farther.weights), atol=1e-3)


# -- annealing and bad input -------------------------------------------------------------------


def test_annealing_retries_at_twice_epsilon():
    weights = jnp.array([0.1, 0.2, 0.3, 0.4])
    predictions, target, sigma = jnp.array([99.0, 100.5, 101.0, 100.2]), 100.3, 0.5
    grad = jax.grad(energy)(weights, predictions, target, sigma=sigma, robust=False)
    proposal = mirror_step(weights, grad, TAU)
    assert not bool(SOLVE(weights, proposal, epsilon=0.3, max_iterations=8).converged)
    assert bool(SOLVE(weights, proposal, epsilon=0.6, max_iterations=8).converged)
    result = STEP(weights, predictions, target, tau=TAU, epsilon=0.3, sigma=sigma, max_iterations=8)
    assert bool(result.sinkhorn_converged)
    assert float(result.epsilon_used) == pytest.approx(0.6)


@pytest.mark.parametrize(
    "bad",
    ["nan_prediction", "inf_target", "zero_sigma", "nan_sigma", "nan_weight", "negative_weight"],
)
def test_bad_input_falls_back_to_uniform(bad):
    weights, predictions, target, sigma = _case(8)
    if bad == "nan_prediction":
        predictions = predictions.at[2].set(jnp.nan)
    elif bad == "inf_target":
        target = float("inf")
    elif bad == "zero_sigma":
        sigma = 0.0
    elif bad == "nan_sigma":
        sigma = float("nan")
    elif bad == "nan_weight":
        weights = weights.at[0].set(jnp.nan)
    else:
        weights = weights.at[0].set(-0.5)
    result = STEP(weights, predictions, target, tau=TAU, epsilon=EPS, sigma=sigma)
    _assert_uniform_fallback(result)


def test_forced_sinkhorn_failure_falls_back_to_uniform():
    weights, predictions, target, sigma = _case(9)
    result = STEP(
        weights,
        predictions,
        target,
        tau=TAU,
        epsilon=1e-4,
        sigma=sigma,
        max_iterations=1,
        warm_start=False,
    )
    _assert_uniform_fallback(result, 1e-4)
    assert float(result.step_fraction) == 0.0 and float(result.transport_cost) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tau": 0.0}, "tau"),
        ({"epsilon": -1e-3}, "epsilon"),
        ({"max_iterations": 0}, "max_iterations"),
        ({"max_iterations": 2.5}, "max_iterations"),
    ],
)
def test_bad_hyper_parameters_raise(kwargs, message):
    weights, predictions, target, sigma = _case(10)
    arguments = {"tau": TAU, "epsilon": EPS, "max_iterations": MAX_IT, **kwargs}
    # a non-int cap is already refused by the jaxtyping/beartype hook of the test suite
    with pytest.raises((ValueError, TypeError), match=message):
        jko_step(weights, predictions, target, sigma=sigma, **arguments)


# -- compiled and batched use --------------------------------------------------------------------


def test_vmap_over_assets_matches_a_loop():
    keys = jax.random.split(jax.random.key(0), 3)
    weights = jax.random.dirichlet(keys[0], jnp.ones(4), (16,))
    predictions = 100.0 + jax.random.normal(keys[1], (16, 4))
    targets = 100.0 + jax.random.normal(keys[2], (16,))
    batched = jax.jit(jax.vmap(lambda w, p, y: jko_step(w, p, y, tau=TAU, epsilon=EPS, sigma=0.7)))(
        weights, predictions, targets
    )
    for i in range(16):
        single = STEP(weights[i], predictions[i], targets[i], tau=TAU, epsilon=EPS, sigma=0.7)
        np.testing.assert_allclose(
            np.asarray(batched.weights[i]), np.asarray(single.weights), atol=1e-13
        )
    assert bool(jnp.all(batched.sinkhorn_converged))


def test_from_config_uses_the_config_and_float32_works():
    weights, predictions, target, sigma = _case(11)
    config = CONFIG.replace(jko_tau=0.2, epsilon=2e-3, sinkhorn_max_iterations=50)
    ours = jko_step_from_config(config, weights, predictions, target, sigma=sigma)
    explicit = jko_step(
        weights, predictions, target, tau=0.2, epsilon=2e-3, sigma=sigma, max_iterations=50
    )
    np.testing.assert_array_equal(np.asarray(ours.weights), np.asarray(explicit.weights))
    single = jko_step(
        weights.astype(jnp.float32),
        (predictions - 100.0).astype(jnp.float32),
        jnp.float32(target - 100.0),
        tau=TAU,
        epsilon=EPS,
        sigma=jnp.float32(sigma),
    )
    assert single.weights.dtype == jnp.float32 and bool(single.sinkhorn_converged)
    assert abs(float(single.weights.sum()) - 1.0) < 1e-6


# -- learning τ with optax -----------------------------------------------------------------------


def test_hypergradient_matches_central_difference():
    hyper = jax.jit(
        jax.value_and_grad(lambda lt, *a: next_tick_loss(lt, *a, epsilon=EPS, sigma=1.0))
    )
    rng = np.random.default_rng(12)
    checked = 0
    for seed in range(20):
        weights, predictions, target, _ = _case(100 + seed)
        args = (
            weights,
            predictions,
            target,
            predictions + jnp.asarray(0.3 * rng.normal(size=4)),
            target + rng.normal(),
        )
        log_tau = float(np.log(rng.uniform(0.05, 2.0)))
        theta = float(STEP(*args[:3], tau=np.exp(log_tau), epsilon=EPS, sigma=1.0).step_fraction)
        if not 1e-3 < theta < 1 - 1e-3:  # at the clip L has a kink
            continue
        _, grad = hyper(log_tau, *args)
        h = 1e-5
        fd = (hyper(log_tau + h, *args)[0] - hyper(log_tau - h, *args)[0]) / (2 * h)
        assert float(grad) == pytest.approx(float(fd), rel=1e-5, abs=1e-8)
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize(
    ("epsilon", "max_iterations", "accepted_epsilon"), [(EPS, 200, EPS), (0.3, 8, 0.6)]
)
def test_update_tau_takes_the_gradient_through_the_annealing_choice(
    epsilon, max_iterations, accepted_epsilon
):
    """update_tau differentiates one solve at the accepted ε; differentiating through the
    annealing cond gives the same loss and gradient (the second case anneals: 0.3 → 0.6)."""
    weights = jnp.array([0.1, 0.2, 0.3, 0.4])
    predictions, target, sigma = jnp.array([99.0, 100.5, 101.0, 100.2]), 100.3, 0.5
    following = (predictions + jnp.array([0.2, -0.1, 0.3, 0.0]), target + 0.4)
    solver = dict(epsilon=epsilon, sigma=sigma, max_iterations=max_iterations)
    accepted = STEP(weights, predictions, target, tau=TAU, **solver).epsilon_used
    assert float(accepted) == pytest.approx(accepted_epsilon)
    through_cond = jax.value_and_grad(next_tick_loss)(
        jnp.log(TAU), weights, predictions, target, *following, **solver
    )
    optimizer = optax.sgd(1.0)  # the update is minus the gradient
    learner = init_tau_learner(TAU, optimizer)
    new, loss = update_tau(learner, optimizer, weights, predictions, target, *following, **solver)
    assert float(loss) == pytest.approx(float(through_cond[0]), rel=1e-12)
    step = float(learner.log_tau - new.log_tau)
    assert step == pytest.approx(float(through_cond[1]), rel=1e-9, abs=1e-14)
    assert abs(step) > 1e-6  # a gradient that could be wrong


def _stream(seed, n_ticks):
    rng = np.random.default_rng(seed)
    target = np.cumsum(rng.normal(size=n_ticks))
    scales = np.ones((n_ticks, 4))
    scales[: n_ticks // 2, 0] = 0.3
    scales[n_ticks // 2 :, 2] = 0.3
    predictions = target[:, None] + scales * rng.normal(size=(n_ticks, 4))
    return jnp.asarray(predictions), jnp.asarray(target)


@jax.jit
def _run_fixed(predictions, targets, tau):
    def tick(carry, inputs):
        weights, variance = carry
        p, y = inputs
        res = jko_step(weights, p, y, tau=tau, epsilon=EPS, sigma=jnp.sqrt(variance))
        error = weights @ p - y
        return (res.weights, 0.9 * variance + 0.1 * error**2), (error, weights)

    return jax.lax.scan(tick, (jnp.full(4, 0.25), jnp.asarray(1.0)), (predictions, targets))[1]


OPTIMIZER = tau_optimizer(0.05)


@jax.jit
def _run_learning(predictions, targets, tau0):
    def tick(carry, inputs):
        weights, variance, learner, previous = carry
        p, y = inputs
        sigma = jnp.sqrt(variance)
        learner, _ = update_tau(learner, OPTIMIZER, *previous, p, y, epsilon=EPS, sigma=sigma)
        res = jko_step(weights, p, y, tau=learner.tau, epsilon=EPS, sigma=sigma)
        error = weights @ p - y
        return (res.weights, 0.9 * variance + 0.1 * error**2, learner, (weights, p, y)), learner.tau

    start = (
        jnp.full(4, 0.25),
        jnp.asarray(1.0),
        init_tau_learner(tau0, OPTIMIZER),
        (jnp.full(4, 0.25), predictions[0], targets[0]),
    )
    return jax.lax.scan(tick, start, (predictions[1:], targets[1:]))[1]


def test_weights_track_the_best_branch_through_a_switch():
    predictions, targets = _stream(1, 800)
    _, weights = _run_fixed(predictions, targets, 0.1)
    w = np.asarray(weights)
    before, after = w[300:400].mean(axis=0), w[700:].mean(axis=0)
    assert before.argmax() == 0 and before[0] > 0.6
    assert after.argmax() == 2 and after[2] > 0.6


@pytest.mark.parametrize("tau0", [3.0, 0.01])
def test_learned_tau_moves_towards_lower_loss(tau0):
    predictions, targets = _stream(2, 800)
    taus = np.asarray(_run_learning(predictions, targets, tau0))
    learned = float(np.exp(np.mean(np.log(taus[-100:]))))
    mse = lambda tau: float(jnp.mean(_run_fixed(predictions, targets, tau)[0] ** 2))
    assert (learned < tau0) if tau0 > 1 else (learned > tau0)
    assert mse(learned) < 0.9 * mse(tau0)
