# GENERATED FILE - DO NOT EDIT.
# Source: notebooks/06_signatures.md (code cells tagged `export-reference`).
# Edit the notebook, then run `make export`.

"""Signature algebra, a synthetic series and a backtest: the oracles of notebooks/06_signatures.md.

The signature's size, Chen's identity, a series whose next increment depends on the shape of
the recent path (its Lévy area and chord excursion, in closed form), and a one-step backtest of
the branch of ``usp.kernels.signature``. Teaching code: notebooks, tests and benchmarks check the
branch against it; the runtime never imports it.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import signax
from jaxtyping import Array, Float

from usp.contracts import Forecast
from usp.contracts.arrays import PRNGKey, Scalar, Signal
from usp.kernels.signature import DEFAULT_WINDOW, SignatureBranch


def signature_dimension(dim: int, depth: int) -> int:
    """Coordinates of the truncated signature without its level-0 term: dim + ... + dim**depth."""
    return sum(dim**level for level in range(1, depth + 1))


def signature_product(
    left: Float[Array, " f"], right: Float[Array, " f"], *, dim: int, depth: int
) -> Float[Array, " f"]:
    """Chen's identity: the signature of a concatenated path from the two pieces' signatures."""
    left_levels = signax.utils.unravel_signature(left, dim, depth)
    right_levels = signax.utils.unravel_signature(right, dim, depth)
    product = signax.signature_combine(left_levels, right_levels)
    return jnp.concatenate([level.ravel() for level in product])


def levy_area(window: Float[Array, " w"]) -> Scalar:
    """Eq. (Lévy area) of the time-augmented window, in closed form (shoelace formula)."""
    time = jnp.linspace(0.0, 1.0, window.shape[0], dtype=window.dtype)
    path = window - window[0]
    return 0.5 * jnp.sum(time[:-1] * jnp.diff(path) - path[:-1] * jnp.diff(time))


def chord_excursion(window: Float[Array, " w"]) -> Scalar:
    """Mean squared distance of the window from its chord (E_k of eq. path-dependent series)."""
    time = jnp.linspace(0.0, 1.0, window.shape[0], dtype=window.dtype)
    path = window - window[0]
    distance = path - path[-1] * time
    return jnp.sum(distance[:-1] ** 2) / (window.shape[0] - 1)


def path_dependent_series(
    length: int,
    *,
    key: PRNGKey,
    window: int = DEFAULT_WINDOW,
    reversal: float = 0.8,
    excursion_loading: float = 0.8,
) -> Float[Array, " length"]:
    """Synthetic series of eq. (path-dependent series): unit noise plus a drift set by the
    Lévy area and the chord excursion of the last ``window`` values."""
    noise = jax.random.normal(key, (length,))
    bridge_excursion = (window - 1) / 6.0

    def step(recent: Float[Array, " w"], shock: Scalar) -> tuple[Float[Array, " w"], Scalar]:
        drift = -reversal * jnp.tanh(levy_area(recent)) + excursion_loading * jnp.tanh(
            chord_excursion(recent) / bridge_excursion - 1.0
        )
        following = recent[-1] + drift + shock
        return jnp.concatenate([recent[1:], following[None]]), following

    start = jnp.cumsum(noise[:window])
    _, rest = jax.lax.scan(step, start, noise[window:])
    return jnp.concatenate([start, rest])


class Backtest(eqx.Module):
    """One-step forecasts of ``realised`` from the buffers just before it."""

    mean: Float[Array, " t"]
    scale: Float[Array, " t"]
    realised: Float[Array, " t"]
    previous: Float[Array, " t"]
    """The last buffered value: the naive (random-walk) forecast."""

    def rmse_over_naive(self) -> Scalar:
        model = jnp.sqrt(jnp.mean((self.mean - self.realised) ** 2))
        naive = jnp.sqrt(jnp.mean((self.previous - self.realised) ** 2))
        return model / naive


def one_step_backtest(
    branch: SignatureBranch, series: Float[Array, " N"], *, buffer_length: int, stride: int
) -> Backtest:
    """Fit on series[e - buffer_length : e] and forecast series[e], for e on a stride."""
    ends = np.arange(buffer_length, series.shape[0], stride)
    buffers = series[ends[:, None] - buffer_length + np.arange(buffer_length)[None, :]]
    forecasts = _fit_and_forecast_each(branch, buffers)
    return Backtest(forecasts.mean, forecasts.scale, series[ends], series[ends - 1])


@eqx.filter_jit
def _fit_and_forecast_each(branch: SignatureBranch, buffers: Float[Array, "t n"]) -> Forecast:
    untrained = branch.init(key=jax.random.key(0))

    def fit_and_forecast(buffer: Signal) -> Forecast:
        params = branch.fit(untrained, buffer)
        return branch.forecast_with_flag(params, buffer)[0]

    return jax.vmap(fit_and_forecast)(buffers)


__all__ = [
    "Backtest",
    "chord_excursion",
    "levy_area",
    "one_step_backtest",
    "path_dependent_series",
    "signature_dimension",
    "signature_product",
]
