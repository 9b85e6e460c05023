"""The contracts every layer builds on: configuration, observations and results, errors and
warnings, the branch contract and the jaxtyping aliases.

This is the bottom layer: it imports nothing else from ``usp``, so any module (a kernel, the
snapshot format, the step) may import it without pulling in the predictors above.
"""

from .branch import COLLAPSE_CHECK, EMERGENCY_FALLBACK, AbstractBranch, Forecast
from .config import SCHEMA_VERSION, PredictorConfig
from .errors import (
    DomainError,
    FrequencyWarning,
    IntegrityError,
    KurtosisOutlierWarning,
    ModeDegradationAlert,
    NormalOperationRestoredEvent,
    StalenessWarning,
    USPError,
    USPWarning,
)
from .types import (
    REFIT_ALARM,
    REFIT_DOMAIN,
    REFIT_SCHEDULE,
    MarketObservation,
    PredictionResult,
    refit_reasons,
)

__all__ = [
    "COLLAPSE_CHECK",
    "EMERGENCY_FALLBACK",
    "REFIT_ALARM",
    "REFIT_DOMAIN",
    "REFIT_SCHEDULE",
    "SCHEMA_VERSION",
    "AbstractBranch",
    "DomainError",
    "Forecast",
    "FrequencyWarning",
    "IntegrityError",
    "KurtosisOutlierWarning",
    "MarketObservation",
    "ModeDegradationAlert",
    "NormalOperationRestoredEvent",
    "PredictionResult",
    "PredictorConfig",
    "StalenessWarning",
    "USPError",
    "USPWarning",
    "refit_reasons",
]
