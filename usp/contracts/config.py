"""`PredictorConfig`: the hyper-parameter vector Λ (API §2.1), validated on construction.

The first fourteen fields and their defaults are the spec's. The rest are what an
implementation needs and the spec leaves implicit; each says where it is used.
A frozen dataclass of Python scalars is hashable, so it can be a static argument of ``jax.jit``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, no_type_check

SCHEMA_VERSION = "1.0"


# Runtime type checkers (the test suite's jaxtyping hook) would reject a wrong type before
# __post_init__ could name the field; the validation below covers types and ranges itself.
@no_type_check
@dataclass(frozen=True)
class PredictorConfig:
    """Hyper-parameters of the predictor. Invalid values raise ``ValueError`` naming the field."""

    schema_version: str = SCHEMA_VERSION
    epsilon: float = 1e-3
    """Entropic regularisation of Sinkhorn."""
    learning_rate: float = 0.01
    """Step size of the orchestrator's meta-parameter learning (optax)."""
    log_sig_depth: int = 3
    """Truncation depth of the log-signature (branch D)."""
    wtmm_buffer_size: int = 128
    """Length N of the signal buffer shared by WTMM and the branches."""
    besov_cone_c: float = 1.5
    """Cone of influence |x - x0| <= C·a when linking maxima across scales."""
    holder_threshold: float = 0.15
    """Circuit breaker (``usp.kernels.wtmm.circuit_breaker``): emergency mode when H_t is below
    this *and* one of the 16 newest increments exceeds 8 standard deviations of the buffer's
    other increments. The spec's 0.4 on H_t alone assumes a precise estimate; on a 128-value
    buffer H_t alone trips on calm data (0.05: 1% of the ticks of data/ou.csv, a fifth of those
    of a fast mean-reverting series). With the jump gate calm series trip on none of their ticks,
    and 0.15 catches a 20σ jump within four ticks in 99.9% of trials (see the WTMM chapter)."""
    cusum_h: float = 5.0
    cusum_k: float = 0.5
    grace_period_steps: int = 20
    """Steps after a regime change during which CUSUM alarms are silenced."""
    volatility_alpha: float = 0.1
    """EWMA decay of the prediction-error variance."""
    staleness_ttl_ns: int = 500_000_000
    besov_nyquist_interval_ns: int = 100_000_000
    inference_recovery_hysteresis: float = 0.8

    # -- beyond the spec's table ------------------------------------------------------------
    jko_tau: float = 0.5
    """JKO time step τ of the mirror step softmax(log ρ - τ ∇E)."""
    kurtosis_window: int = 252
    """Rolling window of standardised errors for the kurtosis κ_t."""
    wtmm_n_scales: int = 40
    """Number of CWT scales 2^linspace(1, 6)."""
    holder_min_samples: int = 32
    """Fewer buffered samples than this: H_t defaults to 0.5."""
    outlier_sigma: float = 20.0
    """Catastrophic outlier bound, in standard deviations of the recent increments."""
    timestamp_horizon_ns: int = 30 * 86_400 * 10**9
    """The tick gate's clock bound (30 days): a tick stamped more than this after the last
    accepted one (a clock jump) is held back until three consecutive ticks agree, and a tick
    more than this ahead of the caller's wall clock is refused; restored timestamps beyond it
    are refused. Raise it for series sampled less often than monthly."""
    dgm_entropy_gamma: float = 0.5
    """Mode collapse when H_DGM < γ·H[g]."""
    mode_collapse_steps: int = 10
    kurtosis_alert_level: float = 20.0
    kurtosis_alert_steps: int = 5
    levy_mc_samples: int = 4096
    """Monte-Carlo draws of branch A per prediction."""
    sinkhorn_max_iterations: int = 200
    refit_every: int = 128
    """The refit policy's schedule: the branches are refitted on the buffer every this many
    ticks (0: never on a schedule). A buffer's worth keeps every fit on data the previous fit
    did not see; the refit chapter measures the choice."""
    refit_error_ratio: float = 3.0
    """The refit policy's error rule: a refit is due when a branch holding more than 5% of the
    weight has a recent RMS error (EWMA, ``volatility_alpha``) above this many times the
    blend's σ_t: it has left the data it was fitted on."""
    seed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            _check(f.name, getattr(self, f.name))

    def replace(self, **changes: Any) -> PredictorConfig:
        """A copy with some fields changed (validated again)."""
        return PredictorConfig(**{**asdict(self), **changes})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PredictorConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"PredictorConfig: unknown field(s) {sorted(unknown)}")
        return cls(**data)


# field -> (type, lower, upper, lower inclusive, upper inclusive); None = unbounded
_RULES: dict[str, tuple[type, float | None, float | None, bool, bool]] = {
    "epsilon": (float, 0.0, None, False, False),
    "learning_rate": (float, 0.0, None, False, False),
    "log_sig_depth": (int, 1, 6, True, True),
    "wtmm_buffer_size": (int, 64, 1 << 16, True, True),
    "besov_cone_c": (float, 0.0, None, False, False),
    "holder_threshold": (float, 0.0, 1.0, False, False),
    "cusum_h": (float, 0.0, None, False, False),
    "cusum_k": (float, 0.0, None, True, False),
    "grace_period_steps": (int, 0, None, True, False),
    "volatility_alpha": (float, 0.0, 1.0, False, True),
    "staleness_ttl_ns": (int, 0, None, False, False),
    "besov_nyquist_interval_ns": (int, 0, None, False, False),
    "inference_recovery_hysteresis": (float, 0.0, 1.0, False, True),
    "jko_tau": (float, 0.0, None, False, False),
    "kurtosis_window": (int, 8, None, True, False),
    "wtmm_n_scales": (int, 4, 128, True, True),
    "holder_min_samples": (int, 8, None, True, False),
    "outlier_sigma": (float, 0.0, None, False, False),
    "timestamp_horizon_ns": (int, 0, None, False, False),
    "dgm_entropy_gamma": (float, 0.0, 1.0, False, True),
    "mode_collapse_steps": (int, 1, None, True, False),
    "kurtosis_alert_level": (float, 3.0, None, False, False),
    "kurtosis_alert_steps": (int, 1, None, True, False),
    "levy_mc_samples": (int, 64, 1 << 22, True, True),
    "sinkhorn_max_iterations": (int, 1, None, True, False),
    "refit_every": (int, 0, None, True, False),
    "refit_error_ratio": (float, 1.0, None, False, False),
    "seed": (int, 0, (1 << 32) - 1, True, True),
}


def _check(name: str, value: Any) -> None:
    if name == "schema_version":
        if not isinstance(value, str) or not value:
            raise ValueError(f"PredictorConfig.{name} must be a non-empty string, got {value!r}")
        return
    kind, lo, hi, lo_inc, hi_inc = _RULES[name]
    # bool is an int subclass; True as a buffer size is a bug, not a number.
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ValueError(f"PredictorConfig.{name} must be {kind.__name__}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise ValueError(f"PredictorConfig.{name} must be finite, got {value!r}")
    too_low = lo is not None and (value < lo if lo_inc else value <= lo)
    too_high = hi is not None and (value > hi if hi_inc else value >= hi)
    if too_low or too_high:
        left = "unbounded" if lo is None else ("[" if lo_inc else "(") + f"{lo}"
        right = "unbounded" if hi is None else f"{hi}" + ("]" if hi_inc else ")")
        raise ValueError(f"PredictorConfig.{name} = {value!r} is outside {left}, {right}")
    if name == "wtmm_buffer_size" and value & (value - 1):
        raise ValueError(f"PredictorConfig.{name} must be a power of two (FFT size), got {value}")
