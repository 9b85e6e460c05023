# GENERATED FILE - DO NOT EDIT.
# Source: notebooks/14_refit.md (code cells tagged `export`).
# Edit the notebook, then run `make export`.

"""The predictor's refit policy: when the slow path must run (derived in notebooks/14_refit.md).

The verdict is computed inside the compiled step from the policy's memory (``RefitClock``, part
of the predictor state); acting on it — the fit — stays on the host (``UniversalPredictor.step``,
``FunctionalPredictor.refit_assets``).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp

from usp.contracts.arrays import BranchFlags, BranchValues, Count, Flag, ScalarLike, Weights
from usp.contracts.config import PredictorConfig
from usp.contracts.types import REFIT_ALARM, REFIT_DOMAIN, REFIT_SCHEDULE
from usp.core.cusum import COUNT_CEILING, count_up

HOLDING_WEIGHT = 0.05
"""A branch holding more learned weight than this is trusted by the blend: its error counts."""


class RefitClock(eqx.Module):
    """The refit policy's memory for one asset (part of ``PredictorState``)."""

    since_refit: Count
    """Ticks since the last refit (or since the cold start)."""
    since_alarm: Count
    """Ticks since the last CUSUM alarm; ``COUNT_CEILING`` when there has been none."""
    branch_error_ms: BranchValues
    """m_k: EWMA of each branch's squared forecast error since the last refit."""


def init_refit_clock(n_branches: int) -> RefitClock:
    return RefitClock(
        since_refit=jnp.zeros((), jnp.int32),
        since_alarm=jnp.full((), COUNT_CEILING, jnp.int32),
        branch_error_ms=jnp.zeros(n_branches),
    )


def tick_refit_clock(
    clock: RefitClock, branch_errors: BranchValues, alarm: Flag, alpha: float
) -> RefitClock:
    """One tick of the counters, and the error EWMA of every branch whose error is finite
    (none before the first forecast)."""
    scored = jnp.isfinite(branch_errors)
    squared = jnp.where(scored, branch_errors, 0.0) ** 2
    updated = (1.0 - alpha) * clock.branch_error_ms + alpha * squared
    return RefitClock(
        since_refit=count_up(clock.since_refit, COUNT_CEILING),
        since_alarm=jnp.where(alarm, 0, count_up(clock.since_alarm, COUNT_CEILING)),
        branch_error_ms=jnp.where(scored, updated, clock.branch_error_ms),
    )


def refit_verdict(
    config: PredictorConfig,
    clock: RefitClock,
    *,
    full: Flag | bool,
    weights: Weights,
    in_domain: BranchFlags,
    sigma: ScalarLike,
) -> Count:
    """Eq. verdict: 0, or the reasons a refit is due as ``REFIT_*`` bits."""
    schedule = (config.refit_every > 0) & (clock.since_refit >= config.refit_every)
    grace = config.grace_period_steps
    alarm = (clock.since_alarm >= grace) & (clock.since_refit > clock.since_alarm)
    strayed = jnp.sqrt(clock.branch_error_ms) > config.refit_error_ratio * sigma
    failing = strayed & (weights > HOLDING_WEIGHT)
    domain = (jnp.any(~in_domain) | jnp.any(failing)) & (clock.since_refit >= grace)
    code = schedule * REFIT_SCHEDULE + alarm * REFIT_ALARM + domain * REFIT_DOMAIN
    return jnp.where(full, code, 0).astype(jnp.int32)


def refitted_clock(clock: RefitClock) -> RefitClock:
    """The memory right after a refit: nothing since, and no error of the new fit yet."""
    return RefitClock(
        since_refit=jnp.zeros_like(clock.since_refit),
        since_alarm=clock.since_alarm,
        branch_error_ms=jnp.zeros_like(clock.branch_error_ms),
    )


__all__ = [
    "HOLDING_WEIGHT",
    "RefitClock",
    "init_refit_clock",
    "refit_verdict",
    "refitted_clock",
    "tick_refit_clock",
]
