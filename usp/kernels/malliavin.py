# GENERATED FILE - DO NOT EDIT.
# Source: notebooks/02_malliavin.md (code cells tagged `export`).
# Edit the notebook, then run `make export`.

"""Malliavin (Bismut–Elworthy–Li) delta of a payoff of a scalar Itô diffusion.

For dX = b(X) dt + σ(X) dW on [0, T], the delta ∂/∂x0 E[f(X_T)] equals E[f(X_T) π] with the
Bismut–Elworthy–Li weight π = (1/T) ∫_0^T σ⁻¹(X_t) Y_t dW_t, where Y_t = ∂X_t/∂x0 is the tangent
process. The payoff is never differentiated, so digital payoffs get a finite-variance estimator.
The augmented system (X, Y, ∫σ⁻¹Y dW) is integrated by Euler–Maruyama, either by `lax.scan`
(the default, faster) or by diffrax (the reference); both read the same pre-drawn increments.
Source: notebooks/02_malliavin.md.
"""

import math
from collections.abc import Callable
from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Float

from usp.contracts.arrays import PRNGKey, Scalar, ScalarLike

ScalarFunction = Callable[[Scalar], Scalar]
"""A scalar map x ↦ g(x) (drift, diffusion or payoff); it is vmapped over paths."""
Increments = Float[Array, "steps paths"]
"""Brownian increments ΔW, time-major so that `lax.scan` reads one contiguous row per step."""
PathValues = Float[Array, " paths"]


class AugmentedState(eqx.Module):
    """The augmented system on every path: X_t, its tangent Y_t = ∂X_t/∂x0, and ∫σ⁻¹(X)Y dW."""

    state: PathValues
    tangent: PathValues
    weight_integral: PathValues


def initial_augmented_state(x0: ScalarLike, n_paths: int) -> AugmentedState:
    """Z_0 = (x0, 1, 0) on every path: the flow starts at x0 and ∂x0/∂x0 = 1."""
    ones = jnp.ones(n_paths)
    return AugmentedState(x0 * ones, ones, jnp.zeros(n_paths))


def augmented_drift(
    drift: ScalarFunction, diffusion: ScalarFunction, z: AugmentedState
) -> AugmentedState:
    """dt-coefficients (b(X), b'(X)·Y, 0); the weight integral is a pure Itô integral."""
    # One forward-mode JVP gives b(X) and b'(X)Y together, without forming b'.
    b, b_prime_y = jax.jvp(jax.vmap(drift), (z.state,), (z.tangent,))
    return AugmentedState(b, b_prime_y, jnp.zeros_like(z.weight_integral))


def augmented_diffusion(
    drift: ScalarFunction, diffusion: ScalarFunction, z: AugmentedState
) -> AugmentedState:
    """dW-coefficients (σ(X), σ'(X)·Y, σ⁻¹(X)·Y): all three are driven by the same dW."""
    sigma, sigma_prime_y = jax.jvp(jax.vmap(diffusion), (z.state,), (z.tangent,))
    return AugmentedState(sigma, sigma_prime_y, z.tangent / sigma)


def brownian_increments(
    key: PRNGKey, n_paths: int, n_steps: int, maturity: ScalarLike
) -> Increments:
    """ΔW_k ~ N(0, Δt) i.i.d., shape (n_steps, n_paths), with Δt = T / n_steps."""
    dt = maturity / n_steps
    return jnp.sqrt(dt) * jax.random.normal(key, (n_steps, n_paths))


def euler_maruyama_step(
    drift: ScalarFunction,
    diffusion: ScalarFunction,
    z: AugmentedState,
    dt: ScalarLike,
    dw: PathValues,
) -> AugmentedState:
    """Z_{k+1} = Z_k + b̃(Z_k) Δt + σ̃(Z_k) ΔW_k, coefficients at the left end (Itô)."""
    b = augmented_drift(drift, diffusion, z)
    s = augmented_diffusion(drift, diffusion, z)
    return jax.tree.map(lambda zi, bi, si: zi + bi * dt + si * dw, z, b, s)


def solve_augmented_scan(
    drift: ScalarFunction,
    diffusion: ScalarFunction,
    x0: ScalarLike,
    maturity: ScalarLike,
    increments: Increments,
) -> AugmentedState:
    """Z_T by Euler–Maruyama as a `lax.scan` over the rows of `increments` (the hot path)."""
    n_steps, n_paths = increments.shape
    dt = maturity / n_steps

    def step(z, dw):
        return euler_maruyama_step(drift, diffusion, z, dt, dw), None

    z_final, _ = jax.lax.scan(step, initial_augmented_state(x0, n_paths), increments)
    return z_final


def solve_augmented_diffrax(
    drift: ScalarFunction,
    diffusion: ScalarFunction,
    x0: ScalarLike,
    maturity: ScalarLike,
    increments: Increments,
) -> AugmentedState:
    """Z_T by `diffrax.Euler` on MultiTerm(ODETerm, ControlTerm), reading the same increments.

    The control returns the pre-drawn ΔW of the step that starts at t0, so this path and
    `solve_augmented_scan` integrate the same Brownian paths; the noise is one Brownian motion
    per path, so the diffusion is a diagonal operator (elementwise product with ΔW).
    """
    n_steps, n_paths = increments.shape
    dt = maturity / n_steps

    def control(t0, t1):
        # Steps start on the grid k·Δt; rounding recovers k despite floating-point drift in t0.
        k = jnp.clip(jnp.round(t0 / dt).astype(jnp.int32), 0, n_steps - 1)
        dw = increments[k]
        return AugmentedState(dw, dw, dw)

    def dt_field(t, z, args):
        return augmented_drift(drift, diffusion, z)

    def dw_field(t, z, args):
        return lx.DiagonalLinearOperator(augmented_diffusion(drift, diffusion, z))

    terms = diffrax.MultiTerm(diffrax.ODETerm(dt_field), diffrax.ControlTerm(dw_field, control))
    solution = diffrax.diffeqsolve(
        terms,
        diffrax.Euler(),
        t0=0.0,
        t1=maturity,
        dt0=dt,
        y0=initial_augmented_state(x0, n_paths),
        saveat=diffrax.SaveAt(t1=True),
        max_steps=n_steps + 1,
    )
    return jax.tree.map(lambda leaf: leaf[0], solution.ys)


def bel_weight(z_final: AugmentedState, maturity: ScalarLike) -> PathValues:
    """π = (1/T) ∫_0^T σ⁻¹(X_t) Y_t dW_t on every path."""
    return z_final.weight_integral / maturity


def mean_and_standard_error(samples: PathValues) -> tuple[Scalar, Scalar]:
    """Sample mean and its standard error s / √n (s with Bessel's correction)."""
    n = samples.shape[0]
    return jnp.mean(samples), jnp.std(samples, ddof=1) / jnp.sqrt(n)


Solver = Literal["scan", "diffrax"]
_SOLVERS = {"scan": solve_augmented_scan, "diffrax": solve_augmented_diffrax}


@eqx.filter_jit
def _malliavin_delta(drift, diffusion, payoff, x0, maturity, key, n_paths, n_steps, solver):
    increments = brownian_increments(key, n_paths, n_steps, maturity)
    z_final = _SOLVERS[solver](drift, diffusion, x0, maturity, increments)
    samples = jax.vmap(payoff)(z_final.state) * bel_weight(z_final, maturity)
    return mean_and_standard_error(samples)


def _check_inputs(diffusion, x0, maturity, n_paths, n_steps) -> None:
    """Host-side checks, before anything is traced: each failure names the bad argument."""
    x0_host, maturity_host = float(x0), float(maturity)
    if not math.isfinite(x0_host):
        raise ValueError(f"x0 must be finite, got {x0_host}")
    if not (math.isfinite(maturity_host) and maturity_host > 0.0):
        raise ValueError(f"maturity T must be a finite positive number, got {maturity_host}")
    if isinstance(n_paths, bool) or not isinstance(n_paths, int) or n_paths < 2:
        raise ValueError(f"n_paths must be an integer >= 2 for a standard error, got {n_paths!r}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
    sigma0 = float(diffusion(jnp.asarray(x0_host)))
    if not (math.isfinite(sigma0) and sigma0 != 0.0):
        raise ValueError(f"the weight needs σ(x0) finite and non-zero, got σ({x0_host}) = {sigma0}")


def _checked(estimate: Scalar, standard_error: Scalar) -> tuple[Scalar, Scalar]:
    if not (jnp.isfinite(estimate) and jnp.isfinite(standard_error)):
        raise ValueError(
            "the Monte Carlo estimate is not finite: σ(X_t) vanished on a path, or the payoff or "
            "the Euler scheme overflowed; use more steps or a diffusion bounded away from zero"
        )
    return estimate, standard_error


def malliavin_delta(
    drift: ScalarFunction,
    diffusion: ScalarFunction,
    x0: ScalarLike,
    maturity: ScalarLike,
    payoff: ScalarFunction,
    *,
    key: PRNGKey,
    n_paths: int,
    n_steps: int,
    solver: Solver = "scan",
) -> tuple[Scalar, Scalar]:
    """Delta ∂/∂x0 E[f(X_T)] = E[f(X_T) π] with the Bismut–Elworthy–Li weight π.

    `drift`, `diffusion` and `payoff` map a scalar to a scalar (discounting belongs in the
    payoff). Returns (estimate, standard error). Pass the same function objects between calls
    to reuse the compiled code. Raises ValueError on bad arguments or a non-finite result.
    """
    _check_inputs(diffusion, x0, maturity, n_paths, n_steps)
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {sorted(_SOLVERS)}, got {solver!r}")
    x0, maturity = jnp.asarray(x0, float), jnp.asarray(maturity, float)
    result = _malliavin_delta(drift, diffusion, payoff, x0, maturity, key, n_paths, n_steps, solver)
    return _checked(*result)


__all__ = [
    "AugmentedState",
    "Increments",
    "PathValues",
    "ScalarFunction",
    "Solver",
    "augmented_diffusion",
    "augmented_drift",
    "bel_weight",
    "brownian_increments",
    "euler_maruyama_step",
    "initial_augmented_state",
    "malliavin_delta",
    "mean_and_standard_error",
    "solve_augmented_diffrax",
    "solve_augmented_scan",
]
