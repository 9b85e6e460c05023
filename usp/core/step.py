# GENERATED FILE - DO NOT EDIT.
# Source: notebooks/09_predictor.md (code cells tagged `export`).
# Edit the notebook, then run `make export`.

"""The predictor's pure step: the state pytree, one tick, and the slow-path refit.

See notebooks/09_predictor.md for the timing of each quantity and the weight logic
(eqs. used-weights, learned-weights).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float

from usp.contracts.arrays import Count, Flag, PRNGKey, Scalar, ScalarLike, Signal, Weights
from usp.contracts.config import PredictorConfig
from usp.contracts.types import PredictionResult
from usp.core.cusum import CusumDetector, CusumState
from usp.core.jko import (
    TauLearner,
    energy,
    free_energy,
    init_tau_learner,
    jko_step_from_config,
    tau_optimizer,
    update_tau,
)
from usp.kernels.dgm import DGMBranch, DGMParams
from usp.kernels.imex import IMEXBranch, IMEXParams
from usp.kernels.levy import LevyBranch, LevyParams
from usp.kernels.signature import SignatureBranch, SignatureParams
from usp.kernels.wtmm import WTMMEstimator, holder_exponent

BRANCHES = ("A: Lévy", "B: DGM", "C: IMEX", "D: signature")
BRANCH_B, BRANCH_D = 1, 3
EMERGENCY_FLOOR = 1e-4
"""δ of eq. used-weights: what the other branches keep in emergency mode."""
COLLAPSE_WEIGHT = 0.05
"""ρ_B above this while B is collapsed counts towards switching B off (spec §12)."""


class BranchParams(eqx.Module):
    levy: LevyParams
    dgm: DGMParams
    imex: IMEXParams
    signature: SignatureParams


class PredictorState(eqx.Module):
    """Everything one asset carries from one tick to the next (a pytree of arrays)."""

    buffer: Signal
    """The last N prices, oldest first; zeros before they arrive."""
    n_filled: Count
    params: BranchParams
    weights: Weights
    """ρ_t: the weights learned by the JKO flow (eq. learned-weights)."""
    branch_forecasts: Weights
    """p_{t+1}: each branch's forecast made at this tick, scored at the next."""
    forecast: Scalar
    """ŷ_{t+1}: the blended forecast made at this tick."""
    has_forecast: Flag
    previous_weights: Weights
    previous_forecasts: Weights
    previous_target: Scalar
    has_previous: Flag
    """The last JKO step's inputs, kept for the τ gradient."""
    tau: TauLearner
    cusum: CusumState
    collapse_streak: Count
    branch_b_off: Flag
    ticks: Count
    key: PRNGKey


class Predictor(eqx.Module):
    """The static model: config, branches, estimators. ``step`` is pure and jit-able."""

    config: PredictorConfig = eqx.field(static=True)
    levy: LevyBranch
    dgm: DGMBranch
    imex: IMEXBranch
    signature: SignatureBranch
    wtmm: WTMMEstimator
    cusum: CusumDetector
    learn_tau: bool = eqx.field(static=True, default=True)

    @classmethod
    def from_config(cls, config: PredictorConfig, *, learn_tau: bool = True) -> Predictor:
        return cls(
            config=config,
            levy=LevyBranch.from_config(config),
            dgm=DGMBranch.from_config(config),
            imex=IMEXBranch.from_config(config),
            signature=SignatureBranch.from_config(config),
            wtmm=WTMMEstimator.from_config(config),
            cusum=CusumDetector.from_config(config),
            learn_tau=learn_tau,
        )

    @property
    def optimizer(self) -> optax.GradientTransformation:
        return tau_optimizer(self.config.learning_rate)


def init_state(model: Predictor, *, key: PRNGKey) -> PredictorState:
    """A cold state: empty buffer, unfitted branches (each forecasts the last value)."""
    keys = jax.random.split(key, 5)
    params = BranchParams(
        levy=model.levy.init(key=keys[0]),
        dgm=model.dgm.init(key=keys[1]),
        imex=model.imex.init(key=keys[2]),
        signature=model.signature.init(key=keys[3]),
    )
    zero = jnp.zeros(())
    uniform = jnp.full(4, 0.25, zero.dtype)  # explicit dtype: no weakly typed leaves
    no = jnp.asarray(False)
    return PredictorState(
        buffer=jnp.zeros(model.config.wtmm_buffer_size),
        n_filled=jnp.zeros((), jnp.int32),
        params=params,
        weights=uniform,
        branch_forecasts=jnp.zeros(4),
        forecast=zero,
        has_forecast=no,
        previous_weights=uniform,
        previous_forecasts=jnp.zeros(4),
        previous_target=zero,
        has_previous=no,
        tau=init_tau_learner(model.config.jko_tau, model.optimizer),
        cusum=model.cusum.init(),
        collapse_streak=jnp.zeros((), jnp.int32),
        branch_b_off=no,
        ticks=jnp.zeros((), jnp.int32),
        key=keys[4],
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
    holder, holder_valid = holder_exponent(model.wtmm, buffer, n_filled)
    emergency = holder_valid & (holder < config.holder_threshold)
    robust = emergency | cusum.silenced
    learn = state.has_forecast & ~freeze & jnp.isfinite(target)
    tau = _learned_tau(model, state, target, sigma, robust, learn)
    jko = jko_step_from_config(
        config, state.weights, state.branch_forecasts, target,
        sigma=sigma, robust=robust, tau=tau.tau,
    )  # fmt: skip
    uniform = jnp.full(4, 0.25, buffer.dtype)
    weights = jnp.where(learn, jko.weights, state.weights)
    weights = jnp.where(cusum.alarm & ~freeze, uniform, weights)
    # F of the weights actually kept (the JKO's, or frozen, or reset), on this tick's loss.
    loss = energy(weights, state.branch_forecasts, target, sigma=sigma, robust=robust)
    reported_free_energy = free_energy(weights, loss, config.epsilon)

    # 3. Forecast: each branch from the new buffer, then the blend (eq. used-weights).
    collapsed = state.params.dgm.entropy.collapsed & ~state.branch_b_off
    streak = jnp.where(collapsed & (weights[BRANCH_B] > COLLAPSE_WEIGHT),
                       state.collapse_streak + 1, 0)  # fmt: skip
    branch_b_off = state.branch_b_off | (streak > config.mode_collapse_steps)
    key, *keys = jax.random.split(state.key, 5)
    forecasts = _branch_forecasts(model, state.params, buffer, keys)
    used = _used_weights(weights, emergency, branch_b_off)
    forecast = used @ forecasts

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
        collapse_streak=jnp.where(branch_b_off, 0, streak),
        branch_b_off=branch_b_off,
        ticks=state.ticks + 1,
        key=key,
    )
    dgm_entropy = state.params.dgm.entropy.dgm_entropy
    result = PredictionResult(
        predicted_next=forecast,
        holder_exponent=holder,
        cusum_drift=cusum.cusum_drift,
        distance_to_collapse=cusum.distance_to_collapse,
        free_energy=reported_free_energy,
        kurtosis=cusum.kurtosis,
        dgm_entropy=jnp.where(branch_b_off, jnp.nan, dgm_entropy),
        adaptive_threshold=cusum.threshold,
        weights=used,
        branch_forecasts=forecasts,
        predictive_scale=cusum.sigma,
        sinkhorn_converged=jnp.where(learn, jko.sinkhorn_converged, True),
        degraded_inference_mode=freeze,
        emergency_mode=emergency,
        regime_change_detected=cusum.alarm,
        mode_collapse_warning=branch_b_off,
        robust_mode=robust,
        kurtosis_alert=cusum.kurtosis_alert,
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
    model: Predictor, params: BranchParams, buffer: Signal, keys: list[PRNGKey]
) -> Float[Array, " 4"]:
    means = jnp.stack(
        [
            model.levy.predict(params.levy, buffer, key=keys[0]).mean,
            model.dgm.predict(params.dgm, buffer, key=keys[1]).mean,
            model.imex.predict(params.imex, buffer, key=keys[2]).mean,
            model.signature.predict(params.signature, buffer, key=keys[3]).mean,
        ]
    )
    return jnp.where(jnp.isfinite(means), means, buffer[-1])


def _used_weights(weights: Weights, emergency: Flag, branch_b_off: Bool[Array, ""]) -> Weights:
    without_b = weights.at[BRANCH_B].set(0.0)
    without_b = without_b / jnp.maximum(without_b.sum(), 1e-12)
    used = jnp.where(branch_b_off, without_b, weights)
    branch_d_only = (
        jnp.full_like(weights, EMERGENCY_FLOOR).at[BRANCH_D].set(1.0 - 3.0 * EMERGENCY_FLOOR)
    )
    return jnp.where(emergency, branch_d_only, used)


def refit(model: Predictor, state: PredictorState) -> PredictorState:
    """Re-run every branch's fit on the buffer (slow path; needs a full buffer)."""
    if int(state.n_filled) < state.buffer.shape[0]:
        raise ValueError(
            f"refit needs a full buffer of {state.buffer.shape[0]} prices, "
            f"have {int(state.n_filled)}"
        )
    buffer = state.buffer
    params = BranchParams(
        levy=model.levy.fit(state.params.levy, buffer),
        dgm=model.dgm.fit(state.params.dgm, buffer),
        imex=model.imex.fit(state.params.imex, buffer),
        signature=model.signature.fit(state.params.signature, buffer),
    )
    return eqx.tree_at(
        lambda s: (s.params, s.branch_b_off, s.collapse_streak),
        state,
        (params, jnp.asarray(False), jnp.zeros((), jnp.int32)),
    )


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
