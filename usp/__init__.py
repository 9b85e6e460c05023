"""usp — the Universal Stochastic Predictor.

A literate reference implementation of an online stochastic forecaster in JAX. The public API
is re-exported here; modules with a leading underscore are private.
"""

from .api import (
    COLLAPSE_CHECK,
    EMERGENCY_FALLBACK,
    AbstractBranch,
    DomainError,
    Forecast,
    FrequencyWarning,
    FunctionalPredictor,
    IntegrityError,
    KurtosisOutlierWarning,
    MarketObservation,
    ModeDegradationAlert,
    NormalOperationRestoredEvent,
    PredictionResult,
    PredictorConfig,
    StalenessWarning,
    UniversalPredictor,
    default_branches,
)

__version__ = "0.1.0"

__all__ = [
    "COLLAPSE_CHECK",
    "EMERGENCY_FALLBACK",
    "AbstractBranch",
    "DomainError",
    "Forecast",
    "FrequencyWarning",
    "FunctionalPredictor",
    "IntegrityError",
    "KurtosisOutlierWarning",
    "MarketObservation",
    "ModeDegradationAlert",
    "NormalOperationRestoredEvent",
    "PredictionResult",
    "PredictorConfig",
    "StalenessWarning",
    "UniversalPredictor",
    "default_branches",
]
