"""What goes into and comes out of one tick (API §2.2, §2.3)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, no_type_check

import equinox as eqx
import numpy as np
from jaxtyping import Array, Bool, Float, Int

Mode = Literal["Standard", "Robust", "Emergency"]


# Runtime type checkers (the test suite's jaxtyping hook) would reject a wrong type before
# __post_init__ could name the field; __post_init__ checks the types itself.
@no_type_check
@dataclass(frozen=True)
class MarketObservation:
    """One tick: the price y_t, the realised target of the previous forecast, and its time."""

    price: float
    target: float
    timestamp_ns: int | np.integer

    def __post_init__(self) -> None:
        for name in ("price", "target"):
            value = getattr(self, name)
            # bool is a number to Python, never a price; None and strings are not numbers.
            if isinstance(value, (bool, np.bool_)) or not isinstance(
                value, (int, float, np.integer, np.floating)
            ):
                raise TypeError(f"{name} must be a real number, got {value!r:.80}")
            object.__setattr__(self, name, float(value))
        stamp = self.timestamp_ns
        if isinstance(stamp, bool) or not isinstance(stamp, (int, np.integer)):
            raise TypeError(f"timestamp_ns must be an integer (ns since epoch), got {stamp!r}")
        object.__setattr__(self, "timestamp_ns", int(stamp))  # numpy ints from data feeds

    def validate_domain(
        self, sigma_bound: float = 20.0, sigma_val: float = 1.0, center: float = 0.0
    ) -> bool:
        """True when the price is finite and within ``center ± sigma_bound · sigma_val``.

        The spec compares a z-scored price with 20; callers with raw prices pass the recent
        centre and scale. NaN and inf are outside every domain.
        """
        price = float(self.price)
        return math.isfinite(price) and abs(price - center) <= sigma_bound * sigma_val


REFIT_SCHEDULE = 1
"""``refit_due`` bit: ``refit_every`` ticks have passed since the last refit."""
REFIT_ALARM = 2
"""``refit_due`` bit: a regime alarm fired and its grace period has collected new data since."""
REFIT_DOMAIN = 4
"""``refit_due`` bit: a branch forecast outside its fitted domain, or its recent error left the
blend's (``refit_error_ratio``)."""
REFIT_REASONS = {REFIT_SCHEDULE: "schedule", REFIT_ALARM: "alarm", REFIT_DOMAIN: "domain"}


def refit_reasons(code: int) -> tuple[str, ...]:
    """The names of the bits set in a ``refit_due`` code, e.g. ``("schedule", "domain")``."""
    return tuple(name for bit, name in REFIT_REASONS.items() if int(code) & bit)


class PredictionResult(eqx.Module):
    """Forecast and telemetry of one tick (a pytree: batched results carry a leading axis)."""

    predicted_next: Float[Array, "*batch"]
    holder_exponent: Float[Array, "*batch"]
    cusum_drift: Float[Array, "*batch"]
    distance_to_collapse: Float[Array, "*batch"]
    free_energy: Float[Array, "*batch"]
    kurtosis: Float[Array, "*batch"]
    dgm_entropy: Float[Array, "*batch"]
    adaptive_threshold: Float[Array, "*batch"]
    weights: Float[Array, "*batch k"]
    """The weights the blend used, one per branch (in the predictor's branch order)."""
    branch_forecasts: Float[Array, "*batch k"]
    """Each branch's own forecast of the next value: the blend's ingredients."""
    branch_scales: Float[Array, "*batch k"]
    """Each branch's own predictive scale (``Forecast.scale``; NaN where it is not finite)."""
    predictive_scale: Float[Array, "*batch"]
    """σ_t: EWMA standard deviation of the blended forecast's recent errors (the CUSUM's scale);
    ``predicted_next ± z σ_t`` is the predictor's Gaussian interval."""
    sinkhorn_converged: Bool[Array, "*batch"]
    degraded_inference_mode: Bool[Array, "*batch"]
    emergency_mode: Bool[Array, "*batch"]
    regime_change_detected: Bool[Array, "*batch"]
    mode_collapse_warning: Bool[Array, "*batch"]
    robust_mode: Bool[Array, "*batch"]
    """Huber loss in force (in emergency, or in the grace period after a regime change)."""
    kurtosis_alert: Bool[Array, "*batch"]
    """κ_t above ``kurtosis_alert_level`` for more than ``kurtosis_alert_steps`` steps."""
    branch_in_domain: Bool[Array, "*batch k"]
    """Each branch's forecast lies in the domain of its last fit (``Forecast.in_domain``); a
    branch outside it gets no weight in the blend."""
    refit_due: Int[Array, "*batch"]
    """The refit policy's verdict after this tick: 0 when no refit is due, else the reasons as
    bits (``REFIT_SCHEDULE``, ``REFIT_ALARM``, ``REFIT_DOMAIN``). ``UniversalPredictor.step``
    refits on it; batched callers pass it to ``FunctionalPredictor.refit_assets``."""

    @property
    def mode(self) -> Mode | np.ndarray:
        """'Emergency' over 'Robust' over 'Standard'; an array of names for a batch."""
        names = np.where(
            np.asarray(self.emergency_mode),
            "Emergency",
            np.where(np.asarray(self.robust_mode), "Robust", "Standard"),
        )
        return str(names) if names.ndim == 0 else names
