# GENERATED FILE - DO NOT EDIT.
# Source: notebooks/03_levy.md (code cells tagged `export`).
# Edit the notebook, then run `make export`.

"""Branch A: α-stable increments — CMS sampling, characteristic-function fit, MC forecast.

Parameters are stored in Nolan's S0 parameterisation, which is continuous in α and closed
under affine maps; see notebooks/03_levy.md for the derivation.
"""

from __future__ import annotations

import functools
from typing import ClassVar, final

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from usp.contracts.arrays import PRNGKey, Quantiles, Samples, Scalar, ScalarLike, Signal
from usp.contracts.branch import AbstractBranch, Forecast
from usp.contracts.config import PredictorConfig

# Within this distance of α = 1, CMS uses its α = 1 formula (S0 is continuous in α).
ALPHA_ONE_TOLERANCE = 1e-6
# Fitted α is clipped to this range; below 0.3 the ECF regression is meaningless on ~100 points.
ALPHA_RANGE = (0.3, 2.0)


# Jitted (once per shape): called eagerly, its lax.cond, whose branches are closures made anew
# on every call, would be traced and compiled again at every draw.
@functools.partial(jax.jit, static_argnames="shape")
def standard_stable_s1(
    key: PRNGKey, alpha: ScalarLike, beta: ScalarLike, shape: tuple[int, ...]
) -> Float[Array, "..."]:
    """Draws of S1(α, β, 1, 0) by Chambers–Mallows–Stuck, including the α = 1 branch."""
    key_v, key_w = jax.random.split(key)
    half_pi = jnp.pi / 2
    # The uniforms are drawn in float32 and widened: JAX's float64 draws use other bits of the
    # key, and a float32 run must see the same variates as a float64 run to agree with it.
    dtype = jnp.result_type(float)
    u_v, u_w = (jax.random.uniform(k, shape, jnp.float32).astype(dtype) for k in (key_v, key_w))
    v = half_pi * (2.0 * u_v - 1.0)
    # Exp(1) via -log(1 - U) with U in [0, 1); W = 0 would divide by zero below.
    w = -jnp.log1p(-u_w)
    w = jnp.maximum(w, jnp.finfo(w.dtype).tiny)

    def general(alpha):
        tan_term = beta * jnp.tan(half_pi * alpha)
        b = jnp.arctan(tan_term) / alpha
        s = (1.0 + tan_term**2) ** (1.0 / (2.0 * alpha))
        return (
            s
            * jnp.sin(alpha * (v + b))
            / jnp.cos(v) ** (1.0 / alpha)
            * (jnp.cos(v - alpha * (v + b)) / w) ** ((1.0 - alpha) / alpha)
        )

    def alpha_one(alpha):
        del alpha
        shifted_v = half_pi + beta * v
        return (2.0 / jnp.pi) * (
            shifted_v * jnp.tan(v) - beta * jnp.log(half_pi * w * jnp.cos(v) / shifted_v)
        )

    # lax.cond evaluates one branch for a scalar α (under vmap it becomes a select).
    is_one = jnp.abs(alpha - 1.0) < ALPHA_ONE_TOLERANCE
    return jax.lax.cond(is_one, alpha_one, general, jnp.asarray(alpha, v.dtype))


def s0_shift(alpha: ScalarLike, beta: ScalarLike) -> Scalar:
    """μ0 − μ1 for a unit-scale law: β tan(πα/2), and 0 at α = 1."""
    is_one = jnp.abs(alpha - 1.0) < ALPHA_ONE_TOLERANCE
    return jnp.where(is_one, 0.0, beta * jnp.tan(jnp.pi / 2 * jnp.where(is_one, 0.5, alpha)))


def stable_sample(
    key: PRNGKey,
    alpha: ScalarLike,
    beta: ScalarLike,
    scale: ScalarLike,
    loc: ScalarLike,
    shape: tuple[int, ...],
) -> Float[Array, "..."]:
    """Draws of S0(α, β, σ, μ0): σ·(Z1 − β tan(πα/2)) + μ0."""
    z0 = standard_stable_s1(key, alpha, beta, shape) - s0_shift(alpha, beta)
    return scale * z0 + loc


class StableParams(eqx.Module):
    """An S0(α, β, σ, μ0) law of increments, and whether it came from a successful fit."""

    alpha: Scalar
    beta: Scalar
    scale: Scalar
    loc: Scalar
    valid: Bool[Array, ""]

    @property
    def mean(self) -> Scalar:
        """E[X] = μ0 − σβ tan(πα/2) for α > 1; NaN where the mean does not exist."""
        mu1 = self.loc - self.scale * s0_shift(self.alpha, self.beta)
        return jnp.where(self.alpha > 1.0, mu1, jnp.nan)


ECF_POINTS = 10
"""Koutrouvelis' grid u_k = πk/25, k = 1..10."""


def _least_squares(design: Float[Array, "k p"], target: Float[Array, " k"]) -> Float[Array, " p"]:
    return jnp.linalg.lstsq(design, target)[0]


def _ecf_regression(z: Float[Array, " n"], mask: Bool[Array, " n"]) -> tuple[Scalar, ...]:
    """One Koutrouvelis pass on roughly standard data: (α, β, σ, μ0)."""
    # Built here, in the data's dtype: a module-level jnp array would start a JAX backend at
    # import and freeze its dtype before the user chooses float32 or float64.
    u = jnp.pi * jnp.arange(1, ECF_POINTS + 1, dtype=z.dtype) / 25.0
    weights = mask / jnp.maximum(mask.sum(), 1)
    phase = u[:, None] * jnp.where(mask, z, 0.0)[None, :]
    ecf = (weights * jnp.exp(1j * phase)).sum(axis=1)

    modulus_sq = jnp.clip(jnp.abs(ecf) ** 2, 1e-12, 1.0 - 1e-12)
    log_u = jnp.log(u)
    real_design = jnp.stack([jnp.ones_like(log_u), log_u], axis=1)
    intercept, slope = _least_squares(real_design, jnp.log(-jnp.log(modulus_sq)))
    alpha = jnp.clip(slope, *ALPHA_RANGE)
    scale = (jnp.exp(intercept) / 2.0) ** (1.0 / alpha)

    su = scale * u
    near_one = jnp.abs(alpha - 1.0) < 1e-3  # the limit form avoids 0·∞ near α = 1
    a = jnp.where(near_one, 0.5, alpha)
    g_general = jnp.tan(jnp.pi * a / 2) * (su**a - su)
    g_one = -(2.0 / jnp.pi) * su * jnp.log(su)
    g = jnp.where(near_one, g_one, g_general)
    imag_design = jnp.stack([u, g], axis=1)
    loc, beta = _least_squares(imag_design, jnp.angle(ecf))
    return alpha, jnp.clip(beta, -1.0, 1.0), scale, loc


def fit_stable(increments: Float[Array, " n"], *, min_count: int = 16) -> StableParams:
    """S0 parameters of i.i.d. increments by ECF regression; non-finite entries are ignored.

    ``valid`` is False when fewer than ``min_count`` finite values remain, when they have no
    spread (a constant series), or when the regression produced a non-finite number.
    """
    mask = jnp.isfinite(increments)
    x = jnp.where(mask, increments, jnp.nan)
    q25, median, q75 = jnp.nanquantile(x, jnp.array([0.25, 0.5, 0.75]))
    spread = (q75 - q25) / 2.0
    safe_spread = jnp.where(spread > 0, spread, 1.0)

    z1 = jnp.where(mask, (x - median) / safe_spread, 0.0)
    alpha, _, scale1, loc1 = _ecf_regression(z1, mask)
    z2 = jnp.where(mask, (z1 - loc1) / scale1, 0.0)
    alpha, beta, scale2, loc2 = _ecf_regression(z2, mask)

    scale = safe_spread * scale1 * scale2
    loc = median + safe_spread * (loc1 + scale1 * loc2)
    finite = jnp.isfinite(jnp.stack([alpha, beta, scale, loc])).all()
    valid = (mask.sum() >= min_count) & (spread > 0) & finite & (scale > 0)
    return StableParams(alpha=alpha, beta=beta, scale=scale, loc=loc, valid=valid)


_FORECAST_LEVELS = (0.15865525393145707, 0.5, 0.8413447460685429)  # Φ(−1), median, Φ(1)


class LevyParams(eqx.Module):
    """Branch A's state: the fitted law, its forecast quantiles, and the key of the next fit."""

    law: StableParams
    increment_quantiles: Float[Array, " 3"]
    """Monte-Carlo quantiles of the next increment at Φ(−1), 1/2, Φ(1), drawn at fit time."""
    key: PRNGKey


@final
class LevyBranch(AbstractBranch[LevyParams]):
    """Branch A: next value = last value + median α-stable increment, by Monte Carlo."""

    name: ClassVar[str] = "A"
    label: ClassVar[str] = "A Lévy"
    n_samples: int = eqx.field(static=True, default=4096)
    min_increments: int = eqx.field(static=True, default=16)

    @classmethod
    def from_config(cls, config: PredictorConfig) -> LevyBranch:
        return cls(n_samples=config.levy_mc_samples)

    def init(self, *, key: PRNGKey) -> LevyParams:
        one = jnp.ones(())  # not jnp.asarray(1.0): weakly typed leaves would recompile the step
        gaussian = StableParams(
            alpha=2.0 * one, beta=0.0 * one, scale=one, loc=0.0 * one, valid=jnp.asarray(False)
        )
        return LevyParams(law=gaussian, increment_quantiles=jnp.zeros(3), key=key)

    def fit(self, params: LevyParams, buffer: Signal) -> LevyParams:
        if buffer.shape[0] - 1 < self.min_increments:
            raise ValueError(
                f"LevyBranch.fit needs at least {self.min_increments + 1} values, "
                f"got a buffer of {buffer.shape[0]}"
            )
        fitted = fit_stable(jnp.diff(buffer), min_count=self.min_increments)
        # A failed fit (constant or mostly non-finite buffer) keeps the previous law.
        law = jax.tree.map(lambda new, old: jnp.where(fitted.valid, new, old), fitted, params.law)
        draw_key, next_key = jax.random.split(params.key)
        draws = self.increments(law, key=draw_key)
        quantiles = jnp.quantile(draws, jnp.asarray(_FORECAST_LEVELS, draws.dtype))
        quantiles = jnp.where(fitted.valid, quantiles, params.increment_quantiles)
        return LevyParams(law=law, increment_quantiles=quantiles, key=next_key)

    def increments(self, law: StableParams, *, key: PRNGKey) -> Samples:
        """M Monte-Carlo draws of the next increment."""
        return stable_sample(key, law.alpha, law.beta, law.scale, law.loc, (self.n_samples,))

    def predictive_quantiles(
        self, params: LevyParams, buffer: Signal, levels: Quantiles, *, key: PRNGKey
    ) -> Quantiles:
        """Quantiles of x_{t+1} at any ``levels`` (fresh draws; unfitted: the last value)."""
        draws = jnp.quantile(self.increments(params.law, key=key), levels)
        return buffer[-1] + jnp.where(params.law.valid, draws, 0.0)

    def predict(self, params: LevyParams, buffer: Signal, *, key: PRNGKey) -> Forecast:
        """Last value + predictive median of the increment (L1-optimal; the mean has
        infinite-variance noise for α < 2, see the chapter). O(1): the quantiles were drawn
        at fit time, since the increment law only changes when the branch is refitted."""
        del key
        low, median, high = params.increment_quantiles
        mean = buffer[-1] + jnp.where(params.law.valid, median, 0.0)
        return Forecast(mean=mean, scale=(high - low) / 2.0)


__all__ = [
    "ALPHA_ONE_TOLERANCE",
    "ALPHA_RANGE",
    "ECF_POINTS",
    "LevyBranch",
    "LevyParams",
    "StableParams",
    "fit_stable",
    "s0_shift",
    "stable_sample",
    "standard_stable_s1",
]
