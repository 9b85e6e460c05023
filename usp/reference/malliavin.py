# GENERATED FILE - DO NOT EDIT.
# Source: notebooks/02_malliavin.md (code cells tagged `export-reference`).
# Edit the notebook, then run `make export`.

"""The finite-difference peer of the Malliavin delta (notebooks/02_malliavin.md).

The central difference [f(X_T^{x0+h}) − f(X_T^{x0−h})] / 2h on the Euler paths of
``usp.kernels.malliavin``, with common random numbers. Teaching code: notebooks, tests and
benchmarks measure the Bismut–Elworthy–Li weight against it; the runtime never imports it.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from usp.contracts.arrays import PRNGKey, Scalar, ScalarLike
from usp.kernels import malliavin as estimator

# The estimator's functions are reached through its module, not imported by name: run in the
# notebook, this cell must not replace the chapter's own definitions above.


@eqx.filter_jit
def _finite_difference_delta(drift, diffusion, payoff, x0, maturity, key, n_paths, n_steps, bump):
    # The same increments drive both bumped starts: common random numbers.
    increments = estimator.brownian_increments(key, n_paths, n_steps, maturity)
    up = estimator.solve_augmented_scan(drift, diffusion, x0 + bump, maturity, increments).state
    down = estimator.solve_augmented_scan(drift, diffusion, x0 - bump, maturity, increments).state
    samples = (jax.vmap(payoff)(up) - jax.vmap(payoff)(down)) / (2.0 * bump)
    return estimator.mean_and_standard_error(samples)


def finite_difference_delta(
    drift: estimator.ScalarFunction,
    diffusion: estimator.ScalarFunction,
    x0: ScalarLike,
    maturity: ScalarLike,
    payoff: estimator.ScalarFunction,
    *,
    key: PRNGKey,
    n_paths: int,
    n_steps: int,
    bump: ScalarLike,
) -> tuple[Scalar, Scalar]:
    """The peer: central difference [f(X_T^{x0+h}) − f(X_T^{x0−h})] / 2h, common random numbers."""
    estimator._check_inputs(diffusion, x0, maturity, n_paths, n_steps)
    bump_host = float(bump)
    if not (math.isfinite(bump_host) and bump_host > 0.0):
        raise ValueError(f"bump must be a finite positive number, got {bump_host}")
    x0, maturity = jnp.asarray(x0, float), jnp.asarray(maturity, float)
    result = _finite_difference_delta(
        drift, diffusion, payoff, x0, maturity, key, n_paths, n_steps, jnp.asarray(bump_host)
    )
    return estimator._checked(*result)


__all__ = ["finite_difference_delta"]
