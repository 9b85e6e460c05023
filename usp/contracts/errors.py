"""Errors, warnings and events of the predictor (API §11).

Errors stop an operation; warnings are emitted through :mod:`warnings` and logged; events are
plain records a caller may subscribe to. Each carries the numbers that triggered it.
"""

from __future__ import annotations

from dataclasses import dataclass


class USPError(Exception):
    """Base class of every error raised by ``usp``."""


class DomainError(USPError, ValueError):
    """An observation outside its domain: NaN/inf, or a catastrophic outlier (> 20 σ)."""


class IntegrityError(USPError):
    """A snapshot failed its checksum, schema-version or structure check; cold-start instead."""


class USPWarning(UserWarning):
    """Base class of every warning emitted by ``usp``."""


class StalenessWarning(USPWarning):
    """Tick latency exceeded ``staleness_ttl_ns``: weights are frozen (degraded inference)."""


class FrequencyWarning(USPWarning):
    """Ticks arrive slower than ``besov_nyquist_interval_ns``: the Hölder estimate is unreliable."""


class ModeDegradationAlert(USPWarning):
    """DGM entropy stayed below γ·H[g] for more than 10 steps: branch B is switched off."""


class KurtosisOutlierWarning(USPWarning):
    """Error kurtosis stayed above 20 for more than 5 steps: the residual model is failing."""


@dataclass(frozen=True)
class NormalOperationRestoredEvent:
    """Emitted when latency falls below ``hysteresis · TTL`` and degraded mode ends."""

    timestamp_ns: int
    latency_ns: int
    threshold_ns: int
