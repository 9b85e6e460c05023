"""usp — the Universal Stochastic Predictor.

A literate reference implementation of an online stochastic forecaster in JAX. The public API
is re-exported here; modules with a leading underscore are private.
"""

# XLA reads its memory settings when JAX creates its first GPU client, so they go into the
# environment before anything below imports JAX (see usp/_env.py; a user's own values win).
from ._env import apply_xla_memory_defaults

apply_xla_memory_defaults()

from .api import (  # noqa: E402
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
