# GENERATED FILE - DO NOT EDIT.
# Source: notebooks/08_jko.md (code cells tagged `export`).
# Edit the notebook, then run `make export`.

"""JKO/Sinkhorn update of the branch weights ρ ∈ Δ⁴, with entropy annealing and a learned τ.

One call moves the weights one step down the realised loss of the blended forecast: a mirror
(KL-proximal) step proposes a target, log-domain Sinkhorn (OTT-JAX) prices the transport of
weight between branches, and the step length along the proposal minimises the JKO objective on
that path. See notebooks/08_jko.md for the derivation.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.scipy.special import xlogy
from jaxtyping import Array, Float, Int
from ott.geometry import geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn

from usp.contracts.arrays import Flag, Scalar, ScalarLike, Weights
from usp.contracts.config import PredictorConfig

HUBER_DELTA = 1.35
"""Huber threshold in units of the error scale σ_t (δ = 1.35 σ_t, 95% Gaussian efficiency)."""
SINKHORN_THRESHOLD = 1e-3
"""Sinkhorn stops when the ℓ1 error of the column marginal falls below this (OTT's default)."""


def huber(u: ScalarLike, delta: ScalarLike) -> Scalar:
    """½u² for |u| ≤ δ, δ(|u| − δ/2) beyond."""
    size = jnp.abs(u)
    return 0.5 * jnp.minimum(size, delta) ** 2 + delta * jnp.maximum(size - delta, 0.0)


def loss_threshold(robust: Flag | bool, dtype: jnp.dtype) -> Scalar:
    """δ of the loss: 1.35 in robust mode, else a number so large that Huber is ½u²."""
    return jnp.where(robust, HUBER_DELTA, jnp.sqrt(jnp.finfo(dtype).max)).astype(dtype)


def standardised_residual(
    weights: Weights, predictions: Weights, target: ScalarLike, sigma: ScalarLike
) -> Scalar:
    """r = (ρ·p − y)/σ, with p and y centred on the mean forecast (same value on the simplex)."""
    centre = jnp.mean(predictions)
    return (weights @ (predictions - centre) - (target - centre)) / sigma


def energy(
    weights: Weights,
    predictions: Weights,
    target: ScalarLike,
    *,
    sigma: ScalarLike,
    robust: Flag | bool,
) -> Scalar:
    """E(ρ): loss of the blended forecast in units of σ², eq. (jko-energy)."""
    residual = standardised_residual(weights, predictions, target, sigma)
    return huber(residual, loss_threshold(robust, residual.dtype))


def free_energy(weights: Weights, energy_value: ScalarLike, epsilon: ScalarLike) -> Scalar:
    """F(ρ) = E(ρ) + ε Σ ρ log ρ, eq. (jko-free-energy)."""
    return energy_value + epsilon * jnp.sum(xlogy(weights, weights))


def mirror_step(weights: Weights, gradient: Weights, tau: ScalarLike) -> Weights:
    """ρ̃ = softmax(log ρ − τ∇E), eq. (jko-mirror): the KL-proximal step."""
    floor = jnp.finfo(weights.dtype).tiny
    return jax.nn.softmax(jnp.log(jnp.maximum(weights, floor)) - tau * gradient)


def discrete_metric(n_branches: int, dtype: jnp.dtype | None = None) -> Float[Array, "k k"]:
    """Ground cost between branches: 0 on the diagonal, 1 elsewhere, eq. (jko-cost).

    ``dtype`` None is JAX's default float (float64 when x64 is enabled).
    """
    return 1.0 - jnp.eye(n_branches, dtype=dtype)


def discrete_metric_potentials(
    source: Weights, target: Weights, epsilon: ScalarLike
) -> tuple[Weights, Weights]:
    """Dual potentials (f, g) of the entropic plan in the ε → 0 limit, eq. (jko-warm-start).

    Surplus branches (ρ_i > ρ̃_i) send their excess to deficit branches in proportion to both
    excesses; the plan keeps min(ρ_i, ρ̃_i) on the diagonal. On that support
    f_i + g_j − C_ij = ε log π_ij.
    """
    kept = jnp.minimum(source, target)
    excess = source - target
    surplus, deficit = excess > 0, excess < 0
    moved = jnp.sum(jnp.maximum(excess, 0.0))
    safe_excess = jnp.where(surplus | deficit, jnp.abs(excess), 1.0)
    log_kept = jnp.log(kept)
    g_surplus = -0.5 + epsilon * (log_kept - jnp.log(safe_excess))
    g_deficit = 0.5 + epsilon * (jnp.log(safe_excess) - jnp.log(jnp.where(moved > 0, moved, 1.0)))
    g = jnp.where(surplus, g_surplus, jnp.where(deficit, g_deficit, 0.0))
    return epsilon * log_kept - g, g


class Transport(eqx.Module):
    """One Sinkhorn solve: transport cost ⟨C, π⟩ of its plan, whether it converged (and is
    finite), and how many iterations it ran."""

    cost: Scalar
    converged: Flag
    iterations: Int[Array, ""]


def entropic_transport(
    source: Weights,
    target: Weights,
    *,
    epsilon: ScalarLike,
    max_iterations: int,
    threshold: float = SINKHORN_THRESHOLD,
    warm_start: bool = True,
) -> Transport:
    """Log-domain Sinkhorn (OTT-JAX) from ρ_k to ρ̃ on the discrete metric, eq. (jko-sinkhorn).

    ``warm_start`` starts from the potentials of eq. (jko-warm-start); without it OTT starts
    from zero potentials.
    """
    floor = jnp.finfo(source.dtype).tiny
    a, b = jnp.maximum(source, floor), jnp.maximum(target, floor)
    cost_matrix = discrete_metric(a.shape[0], a.dtype)
    problem = linear_problem.LinearProblem(
        geometry.Geometry(cost_matrix=cost_matrix, epsilon=epsilon), a=a, b=b
    )
    solver = sinkhorn.Sinkhorn(
        lse_mode=True,
        threshold=threshold,
        max_iterations=max_iterations,
        inner_iterations=1,
        implicit_diff=None,  # gradients unroll the iterations actually run (see the chapter)
    )
    init = discrete_metric_potentials(a, b, epsilon) if warm_start else None
    out = solver(problem, init=init)
    cost = jnp.sum(out.matrix * cost_matrix)
    return Transport(
        cost=cost, converged=out.converged & jnp.isfinite(cost), iterations=out.n_iters
    )


def annealed_transport(
    source: Weights,
    target: Weights,
    *,
    epsilon: ScalarLike,
    max_iterations: int,
    threshold: float = SINKHORN_THRESHOLD,
    warm_start: bool = True,
) -> tuple[Transport, Scalar]:
    """Sinkhorn at ε; if it fails, once more at 2ε. Returns the accepted transport and its ε;
    ``converged`` is False when both attempts failed."""
    solve = lambda eps: entropic_transport(
        source,
        target,
        epsilon=eps,
        max_iterations=max_iterations,
        threshold=threshold,
        warm_start=warm_start,
    )
    epsilon = jnp.asarray(epsilon, source.dtype)
    first = solve(epsilon)
    return jax.lax.cond(
        first.converged,
        lambda: (first, epsilon),
        lambda: (solve(2.0 * epsilon), 2.0 * epsilon),
    )


def _single_transport(
    source: Weights, target: Weights, *, epsilon: ScalarLike, **solver: Any
) -> tuple[Transport, Scalar]:
    """One Sinkhorn solve at ``epsilon``, returned like ``annealed_transport``'s."""
    epsilon = jnp.asarray(epsilon, source.dtype)
    return entropic_transport(source, target, epsilon=epsilon, **solver), epsilon


def step_fraction(
    residual: ScalarLike,
    slope: ScalarLike,
    transport_cost: ScalarLike,
    tau: ScalarLike,
    robust: Flag | bool,
) -> Scalar:
    """θ* = argmin over [0, 1] of ℓ(r + θΔ) + θ² W/(2τ), eqs. (jko-theta), (jko-theta-huber).

    ``residual`` is r at ρ_k, ``slope`` is Δ = dr/dθ along the mirror path, ``transport_cost``
    is W.
    """
    curvature = slope**2 + transport_cost / tau
    safe_curvature = jnp.where(curvature > 0, curvature, 1.0)
    theta_quadratic = jnp.where(curvature > 0, -residual * slope / safe_curvature, 0.0)
    saturated = robust & (jnp.abs(residual + theta_quadratic * slope) > HUBER_DELTA)
    safe_cost = jnp.where(transport_cost > 0, transport_cost, 1.0)
    theta_saturated = jnp.where(
        transport_cost > 0, HUBER_DELTA * jnp.abs(slope) * tau / safe_cost, 1.0
    )
    theta = jnp.where(saturated, theta_saturated, theta_quadratic)
    return jnp.clip(jnp.where(jnp.isfinite(theta), theta, 0.0), 0.0, 1.0)


class JKOResult(eqx.Module):
    """One JKO step: the new weights and what the orchestrator reports about them."""

    weights: Weights
    """ρ_{k+1} on the simplex (uniform when Sinkhorn failed twice)."""
    free_energy: Scalar
    """F(ρ_{k+1}) = E(ρ_{k+1}) + ε Σ ρ log ρ, with the nominal ε."""
    energy: Scalar
    """E(ρ_{k+1}): the realised loss of the new weights on this tick, in units of σ²."""
    energy_before: Scalar
    """E(ρ_k)."""
    transport_cost: Scalar
    """W = ⟨C, π⟩ of the Sinkhorn plan from ρ_k to ρ̃ (0 on fallback)."""
    step_fraction: Scalar
    """θ*: the fraction of the mirror step that was taken (0 on fallback)."""
    sinkhorn_converged: Flag
    epsilon_used: Scalar
    """ε of the accepted Sinkhorn solve: ε, or 2ε after annealing (2ε also on fallback)."""
    sinkhorn_iterations: Int[Array, ""]


def jko_step(
    weights: Weights,
    predictions: Weights,
    target: ScalarLike,
    *,
    tau: ScalarLike,
    epsilon: ScalarLike,
    robust: Flag | bool = False,
    sigma: ScalarLike = 1.0,
    max_iterations: int = 200,
    threshold: float = SINKHORN_THRESHOLD,
    warm_start: bool = True,
    anneal: bool = True,
) -> JKOResult:
    """One JKO step of the weights on the realised loss of the blended forecast.

    ``weights`` ρ_k (renormalised to sum 1); ``predictions`` the branches' forecasts of
    ``target``, the value just realised; ``sigma`` the EWMA error scale σ_t; ``robust`` selects
    the Huber loss with δ = 1.35 σ_t. ``tau`` > 0 is the JKO time step, ``epsilon`` > 0 the
    entropic regularisation, ``max_iterations`` the cap of each Sinkhorn solve. ``anneal``
    False solves once, at ``epsilon`` (the τ gradient, given the ε the annealed step accepted).

    Degradation (fast path, no exceptions): invalid inputs (see ``inputs_are_valid``) or two
    failed Sinkhorn solves give uniform weights and ``sinkhorn_converged = False``.
    """
    _check_hyper_parameters(tau, epsilon, max_iterations)
    valid = inputs_are_valid(weights, predictions, target, sigma)
    weights = weights / jnp.sum(weights)
    gradient = jax.grad(energy)(weights, predictions, target, sigma=sigma, robust=robust)
    proposal = mirror_step(weights, gradient, tau)
    solve = annealed_transport if anneal else _single_transport
    transport, epsilon_used = solve(
        weights,
        proposal,
        epsilon=epsilon,
        max_iterations=max_iterations,
        threshold=threshold,
        warm_start=warm_start,
    )
    cost = transport.cost

    residual = standardised_residual(weights, predictions, target, sigma)
    slope = (proposal - weights) @ (predictions - jnp.mean(predictions)) / sigma
    theta = step_fraction(residual, slope, cost, tau, robust)
    moved = (1.0 - theta) * weights + theta * proposal

    ok = valid & transport.converged & jnp.all(jnp.isfinite(moved))
    new_weights = jnp.where(ok, moved, jnp.full_like(weights, 1.0 / weights.shape[0]))
    energy_after = energy(new_weights, predictions, target, sigma=sigma, robust=robust)
    zero = jnp.zeros((), weights.dtype)
    return JKOResult(
        weights=new_weights,
        free_energy=free_energy(new_weights, energy_after, epsilon),
        energy=energy_after,
        energy_before=energy(weights, predictions, target, sigma=sigma, robust=robust),
        transport_cost=jnp.where(ok, cost, zero),
        step_fraction=jnp.where(ok, theta, zero),
        sinkhorn_converged=ok,
        epsilon_used=epsilon_used,
        sinkhorn_iterations=transport.iterations,
    )


def inputs_are_valid(
    weights: Weights, predictions: Weights, target: ScalarLike, sigma: ScalarLike
) -> Flag:
    """Finite non-negative weights with a positive sum, finite forecasts and target, and a
    finite σ > 0."""
    good_weights = jnp.all(jnp.isfinite(weights) & (weights >= 0)) & (jnp.sum(weights) > 0)
    good_data = jnp.all(jnp.isfinite(predictions)) & jnp.isfinite(target)
    return good_weights & good_data & jnp.isfinite(sigma) & (sigma > 0)


def _check_hyper_parameters(tau: object, epsilon: object, max_iterations: object) -> None:
    for name, value in (("tau", tau), ("epsilon", epsilon)):
        if isinstance(value, int | float) and not value > 0:
            raise ValueError(f"jko_step: {name} must be > 0, got {value!r}")
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int):
        raise ValueError(f"jko_step: max_iterations must be an int, got {max_iterations!r}")
    if max_iterations < 1:
        raise ValueError(f"jko_step: max_iterations must be >= 1, got {max_iterations}")


def jko_step_from_config(
    config: PredictorConfig,
    weights: Weights,
    predictions: Weights,
    target: ScalarLike,
    *,
    sigma: ScalarLike,
    robust: Flag | bool = False,
    tau: ScalarLike | None = None,
) -> JKOResult:
    """``jko_step`` with τ, ε and the iteration cap from the config (τ overridable: learned)."""
    return jko_step(
        weights,
        predictions,
        target,
        tau=config.jko_tau if tau is None else tau,
        epsilon=config.epsilon,
        robust=robust,
        sigma=sigma,
        max_iterations=config.sinkhorn_max_iterations,
    )


LOG_TAU_RANGE = (-7.0, 3.0)
"""log τ is kept in [log 0.0009, log 20]: beyond, the step is frozen or a pure argmax."""


class TauLearner(eqx.Module):
    """Online state of the learned JKO time step: log τ and its optax optimiser state."""

    log_tau: Scalar
    opt_state: optax.OptState

    @property
    def tau(self) -> Scalar:
        return jnp.exp(self.log_tau)


def tau_optimizer(learning_rate: float) -> optax.GradientTransformation:
    """Adam on log τ: a step of size lr is the same relative change of τ at any scale."""
    return optax.adam(learning_rate)


def init_tau_learner(tau: ScalarLike, optimizer: optax.GradientTransformation) -> TauLearner:
    log_tau = jnp.log(jnp.asarray(tau, dtype=jnp.result_type(float)))
    return TauLearner(log_tau=log_tau, opt_state=optimizer.init(log_tau))


def next_tick_loss(
    log_tau: ScalarLike,
    weights: Weights,
    predictions: Weights,
    target: ScalarLike,
    next_predictions: Weights,
    next_target: ScalarLike,
    *,
    epsilon: ScalarLike,
    sigma: ScalarLike,
    robust: Flag | bool = False,
    max_iterations: int = 200,
    anneal: bool = True,
) -> Scalar:
    """L(log τ): loss at tick k+1 of the weights the JKO step chose at tick k with τ,
    eq. (jko-hyper-loss)."""
    step = jko_step(
        weights,
        predictions,
        target,
        tau=jnp.exp(log_tau),
        epsilon=epsilon,
        robust=robust,
        sigma=sigma,
        max_iterations=max_iterations,
        anneal=anneal,
    )
    return energy(step.weights, next_predictions, next_target, sigma=sigma, robust=robust)


def update_tau(
    learner: TauLearner,
    optimizer: optax.GradientTransformation,
    weights: Weights,
    predictions: Weights,
    target: ScalarLike,
    next_predictions: Weights,
    next_target: ScalarLike,
    *,
    epsilon: ScalarLike,
    sigma: ScalarLike,
    robust: Flag | bool = False,
    max_iterations: int = 200,
) -> tuple[TauLearner, Scalar]:
    """One optax step on log τ down dL/dlog τ; returns the new learner and L.

    Annealing (ε or 2ε) is a discrete choice with no derivative: it is made forward, then one
    Sinkhorn solve at the accepted ε is differentiated. The gradient is the one through the
    ``lax.cond``, with half the backward pass to trace and to run.
    """
    context = (weights, predictions, target)
    accepted = jko_step(
        *context,
        tau=learner.tau,
        epsilon=epsilon,
        robust=robust,
        sigma=sigma,
        max_iterations=max_iterations,
    ).epsilon_used
    loss, grad = jax.value_and_grad(next_tick_loss)(
        learner.log_tau,
        *context,
        next_predictions,
        next_target,
        epsilon=jax.lax.stop_gradient(accepted),
        sigma=sigma,
        robust=robust,
        max_iterations=max_iterations,
        anneal=False,
    )
    grad = jnp.where(jnp.isfinite(grad), grad, 0.0)  # a bad tick must not poison Adam's moments
    updates, opt_state = optimizer.update(grad, learner.opt_state, learner.log_tau)
    log_tau = jnp.clip(optax.apply_updates(learner.log_tau, updates), *LOG_TAU_RANGE)
    return TauLearner(log_tau=log_tau, opt_state=opt_state), loss


__all__ = [
    "HUBER_DELTA",
    "LOG_TAU_RANGE",
    "SINKHORN_THRESHOLD",
    "JKOResult",
    "TauLearner",
    "Transport",
    "annealed_transport",
    "discrete_metric",
    "discrete_metric_potentials",
    "energy",
    "entropic_transport",
    "free_energy",
    "huber",
    "init_tau_learner",
    "inputs_are_valid",
    "jko_step",
    "jko_step_from_config",
    "loss_threshold",
    "mirror_step",
    "next_tick_loss",
    "standardised_residual",
    "step_fraction",
    "tau_optimizer",
    "update_tau",
]
