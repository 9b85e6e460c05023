# GENERATED FILE - DO NOT EDIT.
# Source: notebooks/07_cusum.md (code cells tagged `export-reference`).
# Edit the notebook, then run `make export`.

"""Run-length theory of the CUSUM chart: the oracles of notebooks/07_cusum.md.

Siegmund's approximation of the average run length, a vectorised first-passage simulation of
the chart with known σ = 1, and the Monte-Carlo mean with its standard error. Teaching code:
notebooks, tests and benchmarks check ``usp.core.cusum`` against it; the runtime never imports it.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int

from usp.contracts.arrays import PRNGKey, Scalar, ScalarLike
from usp.core.cusum import cusum_recursion

SIEGMUND_OVERSHOOT = 1.166
"""2ρ, ρ = −ζ(1/2)/√(2π) ≈ 0.583: expected overshoot of a Gaussian random walk over a barrier."""


def siegmund_arl(shift: ScalarLike, threshold: ScalarLike, slack: ScalarLike) -> Scalar:
    """Siegmund's approximation of the ARL of a one-sided CUSUM (Δ = shift − slack, b = h + 1.166).

    ``shift`` is the mean of the standardised errors (0 in control). At Δ = 0 the limit b² is used.
    """
    delta = jnp.asarray(shift, dtype=float) - slack
    b = threshold + SIEGMUND_OVERSHOOT
    at_zero = jnp.abs(delta) < 1e-8
    safe = jnp.where(at_zero, 1.0, delta)
    general = (jnp.exp(-2.0 * safe * b) + 2.0 * safe * b - 1.0) / (2.0 * safe**2)
    return jnp.where(at_zero, b**2, general)


@functools.partial(jax.jit, static_argnames=("n_runs", "max_steps", "two_sided", "block"))
def simulate_run_lengths(
    key: PRNGKey,
    *,
    shift: ScalarLike,
    threshold: ScalarLike,
    slack: ScalarLike,
    n_runs: int,
    max_steps: int,
    two_sided: bool = False,
    block: int = 32,
) -> Int[Array, " r"]:
    """Run lengths of ``n_runs`` independent CUSUMs fed N(shift, 1) errors (known σ = 1).

    Each run starts at G = 0 and stops at the first step whose statistic exceeds ``threshold``
    (G⁺, or max(G⁺, G⁻) when ``two_sided``); its run length is that step's 1-based index. A run
    that has not alarmed within ``max_steps`` is censored and reported as -1.
    """
    dtype = jnp.zeros((), dtype=float).dtype

    def unfinished(carry):
        first_step, _, _, run_lengths = carry
        return jnp.any(run_lengths < 0) & (first_step < max_steps)

    def advance_block(carry):
        first_step, g_plus, g_minus, run_lengths = carry
        draws = jax.random.normal(jax.random.fold_in(key, first_step), (block, n_runs), dtype)

        def one_step(inner, z_and_step):
            g_plus, g_minus, run_lengths = inner
            z, step = z_and_step
            g_plus, g_minus = cusum_recursion(g_plus, g_minus, shift + z, slack)
            statistic = jnp.maximum(g_plus, g_minus) if two_sided else g_plus
            first_passage = (run_lengths < 0) & (statistic > threshold) & (step < max_steps)
            return (g_plus, g_minus, jnp.where(first_passage, step + 1, run_lengths)), None

        steps = first_step + jnp.arange(block, dtype=jnp.int32)
        inner, _ = jax.lax.scan(one_step, (g_plus, g_minus, run_lengths), (draws, steps))
        return (first_step + block, *inner)

    zeros = jnp.zeros((n_runs,), dtype)
    start = (jnp.zeros((), jnp.int32), zeros, zeros, jnp.full((n_runs,), -1, jnp.int32))
    return jax.lax.while_loop(unfinished, advance_block, start)[-1]


def average_run_length(run_lengths: Int[Array, " r"]) -> tuple[float, float]:
    """Monte-Carlo ARL and its standard error (host side). Censored runs are an error."""
    lengths = np.asarray(run_lengths)
    if lengths.ndim != 1 or lengths.size < 2:
        raise ValueError(f"need a 1-d array of at least 2 run lengths, got shape {lengths.shape}")
    censored = int(np.sum(lengths < 0))
    if censored:
        raise ValueError(
            f"{censored} of {lengths.size} runs did not alarm within the horizon: raise "
            "max_steps (a mean that drops censored runs is biased low)"
        )
    return float(lengths.mean()), float(lengths.std(ddof=1) / math.sqrt(lengths.size))


__all__ = ["SIEGMUND_OVERSHOOT", "average_run_length", "siegmund_arl", "simulate_run_lengths"]
