# GENERATED FILE - DO NOT EDIT.
# Source: notebooks/03_levy.md (code cells tagged `export-reference`).
# Edit the notebook, then run `make export`.

"""The α-stable characteristic function in Nolan's S0 parameterisation (notebooks/03_levy.md).

Teaching code: the oracle that notebooks and tests check the sampler of ``usp.kernels.levy``
against; the runtime never imports it.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from usp.contracts.arrays import ScalarLike
from usp.kernels.levy import ALPHA_ONE_TOLERANCE


def characteristic_function(
    u: Float[Array, " k"], alpha: ScalarLike, beta: ScalarLike, scale: ScalarLike, loc: ScalarLike
) -> Float[Array, " k"] | Array:
    """E exp(iuX) for X ~ S0(α, β, σ, μ0), eq. (levy-cf-s0)."""
    abs_su = jnp.abs(scale * u)
    safe_su = jnp.where(abs_su > 0, abs_su, 1.0)  # u = 0: the skew term is multiplied by 0
    is_one = jnp.abs(alpha - 1.0) < ALPHA_ONE_TOLERANCE
    a = jnp.where(is_one, 0.5, alpha)
    skew_general = jnp.tan(jnp.pi * a / 2) * (safe_su ** (1.0 - a) - 1.0)
    skew_one = (2.0 / jnp.pi) * jnp.log(safe_su)
    skew = beta * jnp.sign(u) * jnp.where(is_one, skew_one, skew_general)
    log_cf = -(abs_su**alpha) * (1.0 + 1j * skew) + 1j * loc * u
    return jnp.exp(log_cf)


__all__ = ["characteristic_function"]
