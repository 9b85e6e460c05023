# GENERATED FILE - DO NOT EDIT.
# Source: notebooks/05_imex.md (code cells tagged `export-reference`).
# Edit the notebook, then run `make export`.

"""Closed forms and a simulator of Merton's jump-diffusion: the oracles of notebooks/05_imex.md.

The compensator and log-drift of the model, its exponential moments, Merton's call price, the
call payoff that the PIDE solver of ``usp.kernels.imex`` prices against it, and an exact
simulator of prices. Teaching code: notebooks, tests and benchmarks check the solver and the
branch against it; the runtime never imports it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln, xlogy
from jax.scipy.stats import norm
from jaxtyping import Array, Float

from usp.contracts.arrays import PRNGKey, Scalar, ScalarLike
from usp.kernels.imex import AbstractPayoff, MertonModel


def jump_compensator(model: MertonModel) -> Scalar:
    """kappa = E[exp(Y) - 1], the mean relative price jump."""
    return jnp.expm1(model.jump_mean + 0.5 * jnp.square(model.jump_std))


def log_drift(model: MertonModel) -> Scalar:
    """b = mu - sigma^2/2 - lambda kappa: the drift of X that gives E[S_t] = S_0 exp(mu t)."""
    diffusion_correction = 0.5 * jnp.square(model.volatility)
    return model.growth_rate - diffusion_correction - model.jump_intensity * jump_compensator(model)


def exponential_moment(model: MertonModel, power: ScalarLike, horizon: ScalarLike) -> Scalar:
    """E[exp(p (X_t - X_0))] = exp(t psi(p)) with the Lévy exponent psi (no discounting)."""
    jump_mgf = jnp.exp(power * model.jump_mean + 0.5 * jnp.square(power * model.jump_std))
    psi = (
        power * log_drift(model)
        + 0.5 * jnp.square(power * model.volatility)
        + model.jump_intensity * (jump_mgf - 1.0)
    )
    return jnp.exp(horizon * psi)


def merton_call_price(
    spot: ScalarLike,
    strike: ScalarLike,
    maturity: ScalarLike,
    model: MertonModel,
    *,
    n_terms: int = 80,
) -> Scalar:
    """Merton's closed form: a Poisson(lambda (1 + kappa) T) mixture of Black-Scholes prices.

    Prices under the risk-neutral model, with r = ``model.discount_rate`` (the growth rate is
    taken to be r). ``n_terms`` jump counts are summed; 80 is exact to machine precision for
    lambda T up to about 20.
    """
    kappa = jump_compensator(model)
    mean_jumps = model.jump_intensity * (1.0 + kappa) * maturity
    n = jnp.arange(n_terms, dtype=float)
    # Poisson weights in log space: no overflow of (lambda' T)^n / n!, and 0 log 0 = 0.
    log_weights = -mean_jumps + xlogy(n, mean_jumps) - gammaln(n + 1.0)
    vol_n = jnp.sqrt(jnp.square(model.volatility) + n * jnp.square(model.jump_std) / maturity)
    rate_n = (
        model.discount_rate
        - model.jump_intensity * kappa
        + n * (model.jump_mean + 0.5 * jnp.square(model.jump_std)) / maturity
    )
    sd = vol_n * jnp.sqrt(maturity)
    d1 = (jnp.log(spot / strike) + (rate_n + 0.5 * jnp.square(vol_n)) * maturity) / sd
    d2 = d1 - sd
    black_scholes = spot * norm.cdf(d1) - strike * jnp.exp(-rate_n * maturity) * norm.cdf(d2)
    return jnp.sum(jnp.exp(log_weights) * black_scholes)


class CallPayoff(AbstractPayoff):
    """European call max(e^x - K, 0); far field: the discounted intrinsic value."""

    strike: ScalarLike
    discount_rate: ScalarLike = 0.0

    def terminal(self, x: Float[Array, " k"]) -> Float[Array, " k"]:
        return jnp.maximum(jnp.exp(x) - self.strike, 0.0)

    def far_field(self, tau: ScalarLike, x: Float[Array, " k"]) -> Float[Array, " k"]:
        discounted_strike = self.strike * jnp.exp(-self.discount_rate * tau)
        return jnp.maximum(jnp.exp(x) - discounted_strike, 0.0)


def simulate_merton(
    model: MertonModel, n_steps: int, *, key: PRNGKey, initial_price: float = 100.0
) -> Float[Array, " steps_plus_one"]:
    """Prices S_0, ..., S_n of the Merton model at unit time steps."""
    normal_key, count_key, size_key = jax.random.split(key, 3)
    diffusion = model.volatility * jax.random.normal(normal_key, (n_steps,))
    counts = jax.random.poisson(count_key, model.jump_intensity, (n_steps,)).astype(float)
    jumps = counts * model.jump_mean + jnp.sqrt(counts) * model.jump_std * jax.random.normal(
        size_key, (n_steps,)
    )
    log_path = jnp.cumsum(log_drift(model) + diffusion + jumps)
    return initial_price * jnp.exp(jnp.concatenate([jnp.zeros(1), log_path]))


__all__ = [
    "CallPayoff",
    "exponential_moment",
    "jump_compensator",
    "log_drift",
    "merton_call_price",
    "simulate_merton",
]
