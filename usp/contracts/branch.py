"""The branch contract (DESIGN §6) every forecasting branch A-D implements.

A branch is an immutable module holding its static hyper-parameters (taken from
``PredictorConfig``). Its learned state lives in a separate ``params`` pytree, so the step can
carry it inside the predictor state, vmap it over assets and snapshot it:

* ``init(*, key) -> params`` — a valid, untrained parameter pytree;
* ``fit(params, buffer) -> params`` — the slow path (training, estimation); never per tick;
* ``predict(params, buffer, *, key) -> Forecast`` — the fast path, inside the compiled step.
"""

from __future__ import annotations

import abc
from typing import Generic, NamedTuple, TypeVar

import equinox as eqx

from .arrays import PRNGKey, Scalar, Signal

Params = TypeVar("Params")


class Forecast(NamedTuple):
    """One-step-ahead predictive mean of the next value and its scale (a standard deviation or
    a robust equivalent for heavy tails)."""

    mean: Scalar
    scale: Scalar


class AbstractBranch(eqx.Module, Generic[Params]):
    """Abstract base of branches A-D: subclass, implement the three methods, mark it final."""

    @abc.abstractmethod
    def init(self, *, key: PRNGKey) -> Params:
        """Untrained parameters (must already give a finite forecast)."""

    @abc.abstractmethod
    def fit(self, params: Params, buffer: Signal) -> Params:
        """Re-estimate parameters from the buffer (oldest first). Slow path."""

    @abc.abstractmethod
    def predict(self, params: Params, buffer: Signal, *, key: PRNGKey) -> Forecast:
        """Forecast of the value that follows ``buffer[-1]``. Fast path: jit-able, no host calls."""
