"""The predictors: `FunctionalPredictor` (pure, many assets), `UniversalPredictor` (one asset,
stateful), the tick gate, runtime set-up, exported programs and sharding.

The contracts (config, types, errors, the branch contract) live in ``usp.contracts``; they are
re-exported here so that code written against ``usp.api`` keeps working."""

from usp.api.functional import FunctionalPredictor
from usp.api.gate import TickGate
from usp.api.universal import UniversalPredictor
from usp.contracts import (
    COLLAPSE_CHECK,
    EMERGENCY_FALLBACK,
    SCHEMA_VERSION,
    AbstractBranch,
    DomainError,
    Forecast,
    FrequencyWarning,
    IntegrityError,
    KurtosisOutlierWarning,
    MarketObservation,
    ModeDegradationAlert,
    NormalOperationRestoredEvent,
    PredictionResult,
    PredictorConfig,
    StalenessWarning,
    USPError,
    USPWarning,
)
from usp.core.step import default_branches

__all__ = [
    "COLLAPSE_CHECK",
    "EMERGENCY_FALLBACK",
    "SCHEMA_VERSION",
    "AbstractBranch",
    "DomainError",
    "Forecast",
    "FunctionalPredictor",
    "FrequencyWarning",
    "IntegrityError",
    "KurtosisOutlierWarning",
    "MarketObservation",
    "ModeDegradationAlert",
    "NormalOperationRestoredEvent",
    "PredictionResult",
    "PredictorConfig",
    "StalenessWarning",
    "TickGate",
    "USPError",
    "USPWarning",
    "UniversalPredictor",
    "default_branches",
]
