# GENERATED FILE - DO NOT EDIT.
# Source: notebooks/09_predictor.md (code cells tagged `export`).
# Edit the notebook, then run `make export`.

"""The predictor's pure step: the state pytree, one tick, and the slow-path refit.

The predictor holds its branches as data, a tuple of modules that implement the branch contract
(``usp.contracts.branch``), and a matching tuple of parameter pytrees in the state. The step
loops over them and never names a branch: what it must know (the emergency fallback, the
branches subject to the collapse check) it reads from each branch's roles.

See notebooks/09_predictor.md for the timing of each quantity and the weight logic
(eqs. used-weights, learned-weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float

from usp.contracts.arrays import (
    BranchCounts,
    BranchFlags,
    BranchValues,
    Count,
    Flag,
    PRNGKey,
    Scalar,
    ScalarLike,
    Signal,
    Weights,
)
from usp.contracts.branch import COLLAPSE_CHECK, EMERGENCY_FALLBACK, ROLES, AbstractBranch
from usp.contracts.config import PredictorConfig
from usp.contracts.types import PredictionResult
from usp.core.cusum import COUNT_CEILING, CusumDetector, CusumState, count_up
from usp.core.jko import (
    TauLearner,
    energy,
    free_energy,
    init_tau_learner,
    jko_step_from_config,
    tau_optimizer,
    update_tau,
)
from usp.core.refit import (
    RefitClock,
    init_refit_clock,
    refit_verdict,
    refitted_clock,
    tick_refit_clock,
)
from usp.kernels.dgm import DGMBranch
from usp.kernels.imex import IMEXBranch
from usp.kernels.levy import LevyBranch
from usp.kernels.signature import SignatureBranch
from usp.kernels.wtmm import WTMMEstimator, circuit_breaker

EMERGENCY_FLOOR = 1e-4
"""δ of eq. used-weights: what each branch but the fallback keeps in emergency mode."""
COLLAPSE_WEIGHT = 0.05
"""A collapsed branch holding more weight than this counts towards switching it off (API §12)."""


def default_branches(config: PredictorConfig) -> tuple[AbstractBranch, ...]:
    """Branches A-D, each built from the config's fields (the composition root)."""
    return (
        LevyBranch.from_config(config),
        DGMBranch.from_config(config),
        IMEXBranch.from_config(config),
        SignatureBranch.from_config(config),
    )


class PredictorState(eqx.Module):
    """Everything one asset carries from one tick to the next (a pytree of arrays)."""

    buffer: Signal
    """The last N prices, oldest first; zeros before they arrive."""
    n_filled: Count
    params: tuple[Any, ...]
    """Each branch's parameter pytree, in the predictor's branch order."""
    weights: Weights
    """ρ_t: the weights learned by the JKO flow (eq. learned-weights)."""
    branch_forecasts: BranchValues
    """p_{t+1}: each branch's forecast made at this tick, scored at the next."""
    forecast: Scalar
    """ŷ_{t+1}: the blended forecast made at this tick."""
    has_forecast: Flag
    previous_weights: Weights
    previous_forecasts: BranchValues
    previous_target: Scalar
    has_previous: Flag
    """The last JKO step's inputs, kept for the τ gradient."""
    tau: TauLearner
    cusum: CusumState
    collapse_streak: BranchCounts
    """Ticks each branch has been collapsed while holding weight (0 without the role)."""
    branch_off: BranchFlags
    """Branches switched off by the collapse check until the next refit."""
    refit_clock: RefitClock
    """The refit policy's memory (``usp.core.refit``, chapter 14)."""
    ticks: Count
    """Ticks stepped, saturating at the int32 maximum (a restored state never wraps negative)."""
    key: PRNGKey


class Predictor(eqx.Module):
    """The static model: config, branches, estimators. ``step`` is pure and jit-able."""

    config: PredictorConfig = eqx.field(static=True)
    branches: tuple[AbstractBranch, ...]
    wtmm: WTMMEstimator
    cusum: CusumDetector
    learn_tau: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if not self.branches:
            raise ValueError("a predictor needs at least one branch")
        for branch in self.branches:
            if not isinstance(branch, AbstractBranch):
                raise TypeError(f"{branch!r} does not implement AbstractBranch")
            if unknown := set(branch.roles) - ROLES:  # a misspelt role would silently do nothing
                raise ValueError(f"branch {branch.name}: unknown roles {sorted(unknown)}")
        names = self.branch_names
        if len(set(names)) != len(names):
            raise ValueError(f"branch names must be unique, got {names}")

    @classmethod
    def from_config(
        cls,
        config: PredictorConfig,
        *,
        branches: Sequence[AbstractBranch] | None = None,
        learn_tau: bool = True,
    ) -> Predictor:
        """``branches`` default to the spec's four (``default_branches``)."""
        return cls(
            config=config,
            branches=default_branches(config) if branches is None else tuple(branches),
            wtmm=WTMMEstimator.from_config(config),
            cusum=CusumDetector.from_config(config),
            learn_tau=learn_tau,
        )

    @property
    def optimizer(self) -> optax.GradientTransformation:
        return tau_optimizer(self.config.learning_rate)

    @property
    def branch_names(self) -> tuple[str, ...]:
        return tuple(branch.name for branch in self.branches)

    def with_role(self, role: str) -> tuple[int, ...]:
        """Positions of the branches that declare ``role`` (static)."""
        return tuple(i for i, branch in enumerate(self.branches) if role in branch.roles)


def init_state(model: Predictor, *, key: PRNGKey) -> PredictorState:
    """A cold state: empty buffer, unfitted branches (each forecasts the last value)."""
    n_branches = len(model.branches)
    *keys, state_key = jax.random.split(key, n_branches + 1)
    params = tuple(branch.init(key=k) for branch, k in zip(model.branches, keys, strict=True))
    zero = jnp.zeros(())
    uniform = jnp.full(n_branches, 1.0 / n_branches, zero.dtype)  # no weakly typed leaves
    return PredictorState(
        buffer=jnp.zeros(model.config.wtmm_buffer_size),
        n_filled=jnp.zeros((), jnp.int32),
        params=params,
        weights=uniform,
        branch_forecasts=jnp.zeros(n_branches),
        forecast=zero,
        has_forecast=jnp.asarray(False),
        previous_weights=uniform,
        previous_forecasts=jnp.zeros(n_branches),
        previous_target=zero,
        has_previous=jnp.asarray(False),
        tau=init_tau_learner(model.config.jko_tau, model.optimizer),
        cusum=model.cusum.init(),
        collapse_streak=jnp.zeros(n_branches, jnp.int32),
        branch_off=jnp.zeros(n_branches, bool),
        refit_clock=init_refit_clock(n_branches),
        ticks=jnp.zeros((), jnp.int32),
        key=state_key,
    )


def step(
    model: Predictor,
    state: PredictorState,
    price: ScalarLike,
    target: ScalarLike,
    freeze: Flag | bool,
) -> tuple[PredictorState, PredictionResult]:
    """One tick (eq. step). ``freeze`` holds the learned weights (stale or sparse data)."""
    config = model.config
    n_branches = len(model.branches)
    price = jnp.asarray(price, state.buffer.dtype)
    target = jnp.asarray(target, state.buffer.dtype)
    freeze = jnp.asarray(freeze)

    # 1. Score the last forecast: CUSUM on its error (a non-finite error is skipped).
    error = jnp.where(state.has_forecast, target - state.forecast, jnp.nan)
    cusum_state, cusum = model.cusum.update(state.cusum, error)
    sigma = jnp.where(cusum.sigma > 0, cusum.sigma, 1.0)

    # 2. Move the learned weights (eq. learned-weights).
    buffer = jnp.roll(state.buffer, -1).at[-1].set(price)
    n_filled = jnp.minimum(state.n_filled + 1, buffer.shape[0])
    breaker = circuit_breaker(model.wtmm, buffer, n_filled, config.holder_threshold)
    holder, emergency = breaker.holder, breaker.trips
    robust = emergency | cusum.silenced
    learn = state.has_forecast & ~freeze & jnp.isfinite(target)
    tau = _learned_tau(model, state, target, sigma, robust, learn)
    jko = jko_step_from_config(
        config, state.weights, state.branch_forecasts, target,
        sigma=sigma, robust=robust, tau=tau.tau,
    )  # fmt: skip
    uniform = jnp.full(n_branches, 1.0 / n_branches, buffer.dtype)
    weights = jnp.where(learn, jko.weights, state.weights)
    weights = jnp.where(cusum.alarm & ~freeze, uniform, weights)
    # F of the weights actually kept (the JKO's, or frozen, or reset), on this tick's loss.
    loss = energy(weights, state.branch_forecasts, target, sigma=sigma, robust=robust)
    reported_free_energy = free_energy(weights, loss, config.epsilon)

    # 3. Forecast: each branch from the new buffer, then the blend (eq. used-weights).
    entropy, collapsed = _collapse_checks(model, state.params)
    collapsed = collapsed & ~state.branch_off
    streak = jnp.where(collapsed & (weights > COLLAPSE_WEIGHT), state.collapse_streak + 1, 0)
    branch_off = state.branch_off | (streak > config.mode_collapse_steps)
    key, *keys = jax.random.split(state.key, n_branches + 1)
    forecasts, scales, in_domain = _branch_forecasts(model, state.params, buffer, keys)
    used = _used_weights(model, weights, emergency, branch_off | ~in_domain)
    forecast = used @ forecasts

    # 4. The refit policy's verdict (chapter 14): the host refits when it is not 0.
    branch_errors = jnp.where(state.has_forecast, target - state.branch_forecasts, jnp.nan)
    refit_clock = tick_refit_clock(
        state.refit_clock, branch_errors, cusum.alarm, config.volatility_alpha
    )
    refit_due = refit_verdict(
        config, refit_clock, full=n_filled == buffer.shape[0], weights=weights,
        in_domain=in_domain, sigma=sigma,
    )  # fmt: skip

    new_state = PredictorState(
        buffer=buffer,
        n_filled=n_filled,
        params=state.params,
        weights=weights,
        branch_forecasts=forecasts,
        forecast=forecast,
        has_forecast=jnp.asarray(True),
        previous_weights=jnp.where(learn, state.weights, state.previous_weights),
        previous_forecasts=jnp.where(learn, state.branch_forecasts, state.previous_forecasts),
        previous_target=jnp.where(learn, target, state.previous_target),
        has_previous=state.has_previous | learn,
        tau=tau,
        cusum=cusum_state,
        collapse_streak=jnp.where(branch_off, 0, streak),
        branch_off=branch_off,
        refit_clock=refit_clock,
        ticks=count_up(state.ticks, COUNT_CEILING),
        key=key,
    )
    result = PredictionResult(
        predicted_next=forecast,
        holder_exponent=holder,
        cusum_drift=cusum.cusum_drift,
        distance_to_collapse=cusum.distance_to_collapse,
        free_energy=reported_free_energy,
        kurtosis=cusum.kurtosis,
        dgm_entropy=_reported_entropy(model, entropy, branch_off),
        adaptive_threshold=cusum.threshold,
        weights=used,
        branch_forecasts=forecasts,
        branch_scales=scales,
        predictive_scale=cusum.sigma,
        sinkhorn_converged=jnp.where(learn, jko.sinkhorn_converged, True),
        degraded_inference_mode=freeze,
        emergency_mode=emergency,
        regime_change_detected=cusum.alarm,
        mode_collapse_warning=jnp.any(branch_off),
        robust_mode=robust,
        kurtosis_alert=cusum.kurtosis_alert,
        branch_in_domain=in_domain,
        refit_due=refit_due,
    )
    return new_state, result


def _learned_tau(
    model: Predictor,
    state: PredictorState,
    target: Scalar,
    sigma: Scalar,
    robust: Flag,
    learn: Flag,
) -> TauLearner:
    """One Adam step on log τ from the previous tick's JKO choice scored at this tick."""
    if not model.learn_tau:  # static switch, not a traced value
        return state.tau
    learner, _ = update_tau(
        state.tau,
        model.optimizer,
        state.previous_weights,
        state.previous_forecasts,
        state.previous_target,
        state.branch_forecasts,
        target,
        epsilon=model.config.epsilon,
        sigma=sigma,
        robust=robust,
        max_iterations=model.config.sinkhorn_max_iterations,
    )
    ok = learn & state.has_previous
    return jax.tree.map(lambda new, old: jnp.where(ok, new, old), learner, state.tau)


def _branch_forecasts(
    model: Predictor, params: tuple[Any, ...], buffer: Signal, keys: list[PRNGKey]
) -> tuple[BranchValues, BranchValues, BranchFlags]:
    """Each branch's (mean, scale, in_domain); a non-finite mean becomes the last price, and
    is out of the branch's domain."""
    outputs = [
        branch.predict(p, buffer, key=k)
        for branch, p, k in zip(model.branches, params, keys, strict=True)
    ]
    means = jnp.stack([out.mean for out in outputs])
    scales = jnp.stack([jnp.asarray(out.scale, means.dtype) for out in outputs])
    in_domain = jnp.stack([jnp.asarray(out.in_domain, bool) for out in outputs])
    finite = jnp.isfinite(means)
    means = jnp.where(finite, means, buffer[-1])
    return means, jnp.where(jnp.isfinite(scales), scales, jnp.nan), in_domain & finite


def _collapse_checks(model: Predictor, params: tuple[Any, ...]) -> tuple[BranchValues, BranchFlags]:
    """(entropy, collapsed) per branch; NaN and False for branches without the role."""
    checks = [
        branch.collapse_check(p) if COLLAPSE_CHECK in branch.roles else (jnp.nan, False)
        for branch, p in zip(model.branches, params, strict=True)
    ]
    entropy = jnp.stack([jnp.asarray(h, float) for h, _ in checks])
    collapsed = jnp.stack([jnp.asarray(c, bool) for _, c in checks])
    return entropy, collapsed


def _reported_entropy(model: Predictor, entropy: BranchValues, off: BranchFlags) -> Scalar:
    """H_DGM of the result: the lowest entropy among the checked branches still on (NaN when
    none is checked or all are off)."""
    checked = model.with_role(COLLAPSE_CHECK)
    if not checked:  # static: the branch tuple is part of the model
        return jnp.asarray(jnp.nan, entropy.dtype)
    values = jnp.where(off, jnp.nan, entropy)[jnp.asarray(checked)]
    return values.min()


def _used_weights(
    model: Predictor, weights: Weights, emergency: Flag, excluded: Bool[Array, " k"]
) -> Weights:
    """Eq. used-weights: excluded branches (switched off, or out of their fitted domain) get no
    weight, unless that would leave none; in emergency the fallbacks take all but δ per other
    branch (a predictor without a fallback keeps its learned weights)."""
    kept = jnp.where(excluded, 0.0, weights)
    total = kept.sum()
    used = jnp.where(total > 0, kept / jnp.where(total > 0, total, 1.0), weights)
    fallback = model.with_role(EMERGENCY_FALLBACK)
    if not fallback:  # static
        return used
    others = len(model.branches) - len(fallback)
    share = (1.0 - others * EMERGENCY_FLOOR) / len(fallback)
    to_fallback = jnp.full_like(weights, EMERGENCY_FLOOR).at[jnp.asarray(fallback)].set(share)
    return jnp.where(emergency, to_fallback, used)


def refit(model: Predictor, state: PredictorState) -> PredictorState:
    """Re-run every branch's fit on the buffer (slow path; needs a full buffer)."""
    if int(state.n_filled) < state.buffer.shape[0]:
        raise ValueError(
            f"refit needs a full buffer of {state.buffer.shape[0]} prices, "
            f"have {int(state.n_filled)}"
        )
    params = tuple(
        branch.fit(p, state.buffer) for branch, p in zip(model.branches, state.params, strict=True)
    )
    n_branches = len(model.branches)
    return eqx.tree_at(
        lambda s: (s.params, s.branch_off, s.collapse_streak, s.refit_clock),
        state,
        (
            params,
            jnp.zeros(n_branches, bool),
            jnp.zeros(n_branches, jnp.int32),
            refitted_clock(state.refit_clock),
        ),
    )


def postpone_refit(state: PredictorState) -> PredictorState:
    """A refit that could not run (a buffer a branch cannot fit): keep the parameters and
    restart the policy's clock, so the next attempt waits for new data instead of every tick."""
    return eqx.tree_at(lambda s: s.refit_clock, state, refitted_clock(state.refit_clock))


def run(
    model: Predictor,
    state: PredictorState,
    prices: Float[Array, " t"],
    targets: Float[Array, " t"],
    freeze: Bool[Array, " t"] | None = None,
) -> tuple[PredictorState, PredictionResult]:
    """The step scanned over a series; results are stacked along a leading time axis."""
    if freeze is None:
        freeze = jnp.zeros(prices.shape, bool)

    def tick(carry, inputs):
        return step(model, carry, *inputs)

    return jax.lax.scan(tick, state, (prices, targets, freeze))


__all__ = [
    "COLLAPSE_WEIGHT",
    "EMERGENCY_FLOOR",
    "Predictor",
    "PredictorState",
    "default_branches",
    "init_state",
    "postpone_refit",
    "refit",
    "run",
    "step",
]
