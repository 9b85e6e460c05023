"""usp — the Universal Stochastic Predictor.

A literate reference implementation of an online stochastic forecaster in JAX. The public API
is re-exported here; modules with a leading underscore are private.
"""

from .api import (
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
)

__version__ = "0.1.0"

__all__ = [
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
]
