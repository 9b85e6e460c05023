"""Public contracts: configuration, observations, results, errors and the branch contract."""

from .branch import AbstractBranch, Forecast
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
from .predictor import FunctionalPredictor, TickGate, UniversalPredictor
from .types import MarketObservation, PredictionResult

__all__ = [
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
]
