# GENERATED FILE - DO NOT EDIT.
# Source: notebooks/07_cusum.md (code cells tagged `export`).
# Edit the notebook, then run `make export`.

"""Adaptive two-sided CUSUM regime detector with a grace period (ORCH-4, ORCH-5).

Prediction errors are standardised by the EWMA volatility known before they arrive, accumulated
by Page's two-sided CUSUM, and compared with a threshold that widens when the rolling kurtosis
of the signed standardised errors shows heavy tails. After an emitted alarm the detector is
silenced for a grace period. See notebooks/07_cusum.md for the derivation, the spec faults it
avoids, and the checks against run-length theory.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike
from jaxtyping import Array, Float

from usp.contracts.arrays import Count, Flag, Scalar, ScalarLike
from usp.contracts.config import PredictorConfig

GAUSSIAN_KURTOSIS = 3.0
"""E[Z^4] / E[Z^2]^2 of a Gaussian: the reference of the adaptive threshold (signed errors)."""
MIN_KURTOSIS_SAMPLES = 30
"""Fewer standardised errors than this in the window: the kurtosis is reported as 3.0."""
MIN_WINDOW_VARIANCE = 1e-12
"""A window of standardised errors (unit variance by construction) with a smaller variance is
numerically constant; its kurtosis is undefined and reported as 3.0."""
MAX_STANDARDISED_ERROR = 1e4
"""|z| is clipped here, so a zero volatility cannot produce inf or NaN."""
COUNT_CEILING = int(np.iinfo(np.int32).max)
"""Where the saturating counters (``count_up``) stop: a restored state never wraps negative."""


Batched = Float[Array, "*batch"] | float
"""A float or an array of any shape (the recursion is elementwise: runs, assets)."""


def cusum_recursion(
    g_plus: Batched, g_minus: Batched, z: Batched, slack: ScalarLike
) -> tuple[Array, Array]:
    """One step of Page's two-sided CUSUM on standardised errors ``z`` (elementwise)."""
    g_plus = jnp.maximum(0.0, g_plus + z - slack)
    g_minus = jnp.maximum(0.0, g_minus - z - slack)
    return g_plus, g_minus


def ewma_variance(error_var: Scalar, error: Scalar, n_obs: Count, alpha: float) -> Scalar:
    """σ²_t: the plain mean of e² over the first 1/α errors, then an EWMA of decay α.

    The weight max(α, 1/(n+1)) is 1 for the first error, which initialises σ² = e_0².
    """
    weight = jnp.maximum(alpha, 1.0 / (n_obs + 1.0))
    return error_var + weight * (error**2 - error_var)


def predictive_standardise(error: Scalar, error_var: Scalar) -> Scalar:
    """z_t = e_t / σ_{t-1}, clipped to ±MAX_STANDARDISED_ERROR; 0 when e_t = σ_{t-1} = 0."""
    denominator = jnp.maximum(jnp.sqrt(error_var), jnp.abs(error) / MAX_STANDARDISED_ERROR)
    positive = denominator > 0.0
    return jnp.where(positive, error / jnp.where(positive, denominator, 1.0), 0.0)


def default_warmup(volatility_alpha: float) -> int:
    """⌈1/α⌉ errors: σ² is then the plain mean of that many squared errors."""
    return max(1, math.ceil(1.0 / volatility_alpha - 1e-9))


def sample_kurtosis(
    window: Float[Array, " w"], count: Count | int, min_samples: int = MIN_KURTOSIS_SAMPLES
) -> Scalar:
    """m4 / m2² of the first ``count`` entries of ``window`` (central moments).

    3.0 (the Gaussian value: no evidence of heavy tails) while fewer than ``min_samples``
    entries are filled, or when they are numerically constant.
    """
    filled = jnp.arange(window.shape[0]) < count
    n = jnp.maximum(count, 1).astype(window.dtype)
    mean = jnp.sum(jnp.where(filled, window, 0.0)) / n
    deviation = jnp.where(filled, window - mean, 0.0)
    m2 = jnp.sum(deviation**2) / n
    m4 = jnp.sum(deviation**4) / n
    defined = (count >= min_samples) & (m2 > MIN_WINDOW_VARIANCE)
    return jnp.where(defined, m4 / jnp.where(defined, m2, 1.0) ** 2, GAUSSIAN_KURTOSIS)


def adaptive_threshold(threshold: ScalarLike, kurtosis: Batched) -> Array:
    """h_t = h · max(1, 1 + ln(κ/3)): wider for heavy tails, never below the calibrated h."""
    excess = jnp.maximum(kurtosis, GAUSSIAN_KURTOSIS) / GAUSSIAN_KURTOSIS
    return threshold * (1.0 + jnp.log(excess))


class GraceGate(NamedTuple):
    """The grace period applied to one raw alarm."""

    alarm: Flag
    """The alarm that is emitted."""
    silenced: Flag
    """Inside the grace period: a raw alarm here is not emitted."""
    steps_since_alarm: Count
    """The counter to store: 0 after an emitted alarm, else incremented (saturating)."""
    grace_remaining: Count
    """Grace left at this step, before an alarm restarts it: the spec table's counter column."""


def grace_gate(raw_alarm: Flag, steps_since_alarm: Count, grace_period_steps: int) -> GraceGate:
    """Silence raw alarms for ``grace_period_steps`` steps after an emitted alarm (spec §9.3)."""
    steps = jnp.minimum(steps_since_alarm + 1, grace_period_steps)
    silenced = steps < grace_period_steps
    alarm = raw_alarm & jnp.logical_not(silenced)
    return GraceGate(
        alarm=alarm,
        silenced=silenced,
        steps_since_alarm=jnp.where(alarm, 0, steps),
        grace_remaining=grace_period_steps - steps,
    )


def count_up(counter: Count, ceiling: int) -> Count:
    """counter + 1, saturating at ``ceiling`` (without overflowing first)."""
    return jnp.where(counter < ceiling, counter + 1, counter)


def excursion_length(previous: Count, statistic: Scalar) -> Count:
    """Consecutive steps the CUSUM statistic has been above zero (0 when it is at zero)."""
    return jnp.where(statistic > 0.0, count_up(previous, COUNT_CEILING), 0)


class CusumState(eqx.Module):
    """Everything the detector carries from one error to the next (one asset)."""

    g_plus: Scalar
    """Upper CUSUM G⁺: evidence that the errors turned positive (forecasts too low)."""
    g_minus: Scalar
    """Lower CUSUM G⁻: evidence that the errors turned negative (forecasts too high)."""
    error_var: Scalar
    """σ²: EWMA of the squared raw prediction errors."""
    window: Float[Array, " w"]
    """Ring buffer of the last ``kurtosis_window`` signed standardised errors."""
    window_pos: Count
    """Where the next standardised error is written."""
    window_count: Count
    """How many entries of ``window`` are filled (saturates at its length)."""
    kurtosis: Scalar
    """κ of the window after the last update; it sets the next threshold."""
    n_obs: Count
    """Finite errors seen (saturates at the int32 maximum)."""
    steps_since_alarm: Count
    """Steps since the last emitted alarm, saturating at the grace length."""
    kurtosis_streak: Count
    """Consecutive steps with κ above the alert level (saturating)."""
    plus_excursion: Count
    """Consecutive steps with G⁺ > 0."""
    minus_excursion: Count
    """Consecutive steps with G⁻ > 0."""


class CusumOutput(NamedTuple):
    """What one update reports (wrapped in ``stop_gradient``)."""

    alarm: Flag
    """Regime change emitted: a raw alarm outside the grace period."""
    raw_alarm: Flag
    """max(G⁺, G⁻) > h_t, before the grace period."""
    silenced: Flag
    """Inside the grace period."""
    grace_remaining: Count
    """Steps of grace left (0 outside it); the counter column of the spec's table."""
    cusum_drift: Scalar
    """max(G⁺, G⁻) after this error, before an alarm resets it."""
    g_plus: Scalar
    g_minus: Scalar
    onset_lag: Count
    """Excursion length of the larger statistic: at an alarm at step t the change is estimated
    to have begun at step t − onset_lag + 1."""
    threshold: Scalar
    """h_t, from the kurtosis before this error."""
    distance_to_collapse: Scalar
    """h_t − cusum_drift: negative exactly when the raw alarm is on."""
    standardised_error: Scalar
    """z_t = e_t / σ_{t-1} (0 for the first error and for a rejected one)."""
    sigma: Scalar
    """σ_t after this error."""
    kurtosis: Scalar
    """κ_t of the window after this error."""
    kurtosis_alert: Flag
    """κ above ``kurtosis_alert_level`` for more than ``kurtosis_alert_steps`` steps."""
    ready: Flag
    """Past the warm-up: this error was accumulated by the CUSUM."""
    valid: Flag
    """The error was finite. A non-finite error is rejected and leaves the state unchanged."""


def _select(condition: Flag, if_true, if_false):
    """Leafwise ``jnp.where`` of two pytrees of the same structure."""
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), if_true, if_false)


class CusumDetector(eqx.Module):
    """Static hyper-parameters of the detector; ``init`` and ``update`` do the work."""

    threshold: float = eqx.field(static=True, default=5.0)
    """h, in standard deviations of the errors (``cusum_h``)."""
    slack: float = eqx.field(static=True, default=0.5)
    """k, in standard deviations (``cusum_k``): half the shift the chart is tuned to."""
    volatility_alpha: float = eqx.field(static=True, default=0.1)
    grace_period_steps: int = eqx.field(static=True, default=20)
    kurtosis_window: int = eqx.field(static=True, default=252)
    kurtosis_alert_level: float = eqx.field(static=True, default=20.0)
    kurtosis_alert_steps: int = eqx.field(static=True, default=5)
    warmup_steps: int = eqx.field(static=True, default=10)
    """Errors that only build σ before the CUSUM accumulates (at least 1)."""
    min_kurtosis_samples: int = eqx.field(static=True, default=MIN_KURTOSIS_SAMPLES)
    adaptive: bool = eqx.field(static=True, default=True)
    """False: h_t = h always (the fixed chart of run-length theory)."""

    def __check_init__(self) -> None:
        for name in ("threshold", "kurtosis_window", "warmup_steps", "kurtosis_alert_steps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"CusumDetector.{name} must be positive, got {value!r}")
        if not (math.isfinite(self.slack) and self.slack >= 0.0):
            raise ValueError(f"CusumDetector.slack must be >= 0, got {self.slack!r}")
        if not 0.0 < self.volatility_alpha <= 1.0:
            raise ValueError(
                f"CusumDetector.volatility_alpha must lie in (0, 1], got {self.volatility_alpha!r}"
            )
        if self.grace_period_steps < 0:
            raise ValueError(
                f"CusumDetector.grace_period_steps must be >= 0, got {self.grace_period_steps!r}"
            )
        if not 2 <= self.min_kurtosis_samples <= self.kurtosis_window:
            raise ValueError(
                "CusumDetector.min_kurtosis_samples must lie in [2, kurtosis_window], "
                f"got {self.min_kurtosis_samples!r}"
            )

    @classmethod
    def from_config(cls, config: PredictorConfig, *, adaptive: bool = True) -> CusumDetector:
        # float(): PredictorConfig accepts an int for a float field.
        return cls(
            threshold=float(config.cusum_h),
            slack=float(config.cusum_k),
            volatility_alpha=float(config.volatility_alpha),
            grace_period_steps=config.grace_period_steps,
            kurtosis_window=config.kurtosis_window,
            kurtosis_alert_level=float(config.kurtosis_alert_level),
            kurtosis_alert_steps=config.kurtosis_alert_steps,
            warmup_steps=default_warmup(config.volatility_alpha),
            min_kurtosis_samples=min(MIN_KURTOSIS_SAMPLES, config.kurtosis_window),
            adaptive=adaptive,
        )

    def init(self, dtype: DTypeLike | None = None) -> CusumState:
        """The state before any error: G = 0, no σ yet, κ = 3, nothing silenced."""
        zero = jnp.zeros((), dtype=dtype or float)
        count = jnp.zeros((), jnp.int32)
        return CusumState(
            g_plus=zero,
            g_minus=zero,
            error_var=zero,
            window=jnp.zeros((self.kurtosis_window,), zero.dtype),
            window_pos=count,
            window_count=count,
            kurtosis=zero + GAUSSIAN_KURTOSIS,
            n_obs=count,
            steps_since_alarm=count + self.grace_period_steps,
            kurtosis_streak=count,
            plus_excursion=count,
            minus_excursion=count,
        )

    def current_threshold(self, state: CusumState) -> Scalar:
        """h_t for the next error, from the kurtosis of the errors seen so far."""
        if self.adaptive:  # static flag
            return adaptive_threshold(self.threshold, state.kurtosis)
        return jnp.asarray(self.threshold, dtype=state.g_plus.dtype)

    def update(self, state: CusumState, error: ScalarLike) -> tuple[CusumState, CusumOutput]:
        """Take the prediction error e_t = target − forecast; return the new state and report."""
        state = jax.lax.stop_gradient(state)
        error = jax.lax.stop_gradient(jnp.asarray(error, dtype=state.g_plus.dtype))
        valid = jnp.isfinite(error)
        advanced, report = self._advance(state, jnp.where(valid, error, 0.0))
        new_state = _select(valid, advanced, state)
        output = _select(valid, report, self._rejected(state))
        return new_state, jax.lax.stop_gradient(output)

    def run(
        self, errors: Float[Array, " t"], state: CusumState | None = None
    ) -> tuple[CusumState, CusumOutput]:
        """``update`` over a sequence of errors (``lax.scan``); outputs are stacked over time."""
        state = self.init(errors.dtype) if state is None else state
        return jax.lax.scan(self.update, state, errors)

    def _advance(self, state: CusumState, error: Scalar) -> tuple[CusumState, CusumOutput]:
        ready = state.n_obs >= self.warmup_steps
        # z_t uses σ_{t-1}: the error is judged against the volatility known before it arrived.
        z = jnp.where(state.n_obs > 0, predictive_standardise(error, state.error_var), 0.0)
        g_plus, g_minus = cusum_recursion(state.g_plus, state.g_minus, z, self.slack)
        g_plus = jnp.where(ready, g_plus, state.g_plus)  # warm-up: G stays at 0
        g_minus = jnp.where(ready, g_minus, state.g_minus)
        drift = jnp.maximum(g_plus, g_minus)
        threshold = self.current_threshold(state)
        raw_alarm = drift > threshold
        gate = grace_gate(raw_alarm, state.steps_since_alarm, self.grace_period_steps)

        window, window_pos, window_count = self._push(state, z, ready)
        kurtosis = sample_kurtosis(window, window_count, self.min_kurtosis_samples)
        ceiling = self.kurtosis_alert_steps + 1
        streak = jnp.where(
            kurtosis > self.kurtosis_alert_level, count_up(state.kurtosis_streak, ceiling), 0
        )
        plus_excursion = excursion_length(state.plus_excursion, g_plus)
        minus_excursion = excursion_length(state.minus_excursion, g_minus)
        error_var = ewma_variance(state.error_var, error, state.n_obs, self.volatility_alpha)

        new_state = CusumState(
            g_plus=jnp.where(gate.alarm, 0.0, g_plus),
            g_minus=jnp.where(gate.alarm, 0.0, g_minus),
            error_var=error_var,
            window=window,
            window_pos=window_pos,
            window_count=window_count,
            kurtosis=kurtosis,
            n_obs=count_up(state.n_obs, COUNT_CEILING),
            steps_since_alarm=gate.steps_since_alarm,
            kurtosis_streak=streak,
            plus_excursion=jnp.where(gate.alarm, 0, plus_excursion),
            minus_excursion=jnp.where(gate.alarm, 0, minus_excursion),
        )
        report = CusumOutput(
            alarm=gate.alarm,
            raw_alarm=raw_alarm,
            silenced=gate.silenced,
            grace_remaining=gate.grace_remaining,
            cusum_drift=drift,
            g_plus=g_plus,
            g_minus=g_minus,
            onset_lag=jnp.where(g_plus >= g_minus, plus_excursion, minus_excursion),
            threshold=threshold,
            distance_to_collapse=threshold - drift,
            standardised_error=z,
            sigma=jnp.sqrt(error_var),
            kurtosis=kurtosis,
            kurtosis_alert=streak > self.kurtosis_alert_steps,
            ready=ready,
            valid=jnp.asarray(True),
        )
        return new_state, report

    def _push(self, state: CusumState, z: Scalar, ready: Flag) -> tuple[Array, Count, Count]:
        """Write z into the kurtosis ring (only once past the warm-up)."""
        window = jnp.where(ready, state.window.at[state.window_pos].set(z), state.window)
        position = jnp.where(ready, (state.window_pos + 1) % self.kurtosis_window, state.window_pos)
        count = count_up(state.window_count, self.kurtosis_window)
        return window, position, jnp.where(ready, count, state.window_count)

    def _rejected(self, state: CusumState) -> CusumOutput:
        """The report for a rejected (non-finite) error: nothing moved."""
        drift = jnp.maximum(state.g_plus, state.g_minus)
        threshold = self.current_threshold(state)
        no = jnp.asarray(False)
        return CusumOutput(
            alarm=no,
            raw_alarm=no,
            silenced=state.steps_since_alarm < self.grace_period_steps,
            grace_remaining=self.grace_period_steps - state.steps_since_alarm,
            cusum_drift=drift,
            g_plus=state.g_plus,
            g_minus=state.g_minus,
            onset_lag=jnp.where(
                state.g_plus >= state.g_minus, state.plus_excursion, state.minus_excursion
            ),
            threshold=threshold,
            distance_to_collapse=threshold - drift,
            standardised_error=jnp.zeros_like(state.g_plus),
            sigma=jnp.sqrt(state.error_var),
            kurtosis=state.kurtosis,
            kurtosis_alert=state.kurtosis_streak > self.kurtosis_alert_steps,
            ready=no,
            valid=no,
        )


def init_cusum(config: PredictorConfig, dtype: DTypeLike | None = None) -> CusumState:
    """The detector's initial state for ``config``."""
    return CusumDetector.from_config(config).init(dtype)


def cusum_update(
    state: CusumState, error: ScalarLike, config: PredictorConfig
) -> tuple[CusumState, CusumOutput]:
    """One detector update with the hyper-parameters of ``config``."""
    return CusumDetector.from_config(config).update(state, error)


__all__ = [
    "COUNT_CEILING",
    "GAUSSIAN_KURTOSIS",
    "MAX_STANDARDISED_ERROR",
    "MIN_KURTOSIS_SAMPLES",
    "MIN_WINDOW_VARIANCE",
    "Batched",
    "CusumDetector",
    "CusumOutput",
    "CusumState",
    "GraceGate",
    "adaptive_threshold",
    "count_up",
    "cusum_recursion",
    "cusum_update",
    "default_warmup",
    "ewma_variance",
    "excursion_length",
    "grace_gate",
    "init_cusum",
    "predictive_standardise",
    "sample_kurtosis",
]
