"""The branch contract every forecasting branch implements (the book's architecture chapter).

A branch is an immutable module holding its static hyper-parameters (taken from
``PredictorConfig``). Its learned state lives in a separate ``params`` pytree, so the step can
carry it inside the predictor state, vmap it over assets and snapshot it:

* ``init(*, key) -> params`` — a valid, untrained parameter pytree;
* ``fit(params, buffer) -> params`` — the slow path (training, estimation); never per tick;
* ``predict(params, buffer, *, key) -> Forecast`` — the fast path, inside the compiled step.

The predictor holds its branches as a sequence (branches as data): the step loops over them and
never names one. What the step must know about a branch it reads from the branch itself: its
``name`` and ``label``, and its ``roles`` —

* ``EMERGENCY_FALLBACK``: while the circuit breaker is tripped, the blend hands (almost) all its
  weight to the branches with this role;
* ``COLLAPSE_CHECK``: the branch reports an entropy check (``collapse_check``); a collapse that
  lasts while the branch holds weight switches it off until its next fit.

Concrete branches are final (Equinox's abstract/final pattern): subclass ``AbstractBranch``,
implement the three methods, set ``name`` and ``label``, and do not subclass the result.
"""

from __future__ import annotations

import abc
from typing import ClassVar, Generic, NamedTuple, TypeVar

import equinox as eqx
import jax.numpy as jnp

from .arrays import Flag, PRNGKey, Scalar, Signal

Params = TypeVar("Params")

EMERGENCY_FALLBACK = "emergency_fallback"
"""Role: takes over the blend while the circuit breaker is tripped."""
COLLAPSE_CHECK = "collapse_check"
"""Role: subject to the mode-collapse check (``AbstractBranch.collapse_check``)."""
ROLES = frozenset({EMERGENCY_FALLBACK, COLLAPSE_CHECK})


class Forecast(NamedTuple):
    """One-step-ahead predictive mean of the next value and its scale (a standard deviation or
    a robust equivalent for heavy tails). The step blends the means and reports each branch's
    scale beside its mean (``PredictionResult.branch_scales``).

    ``in_domain`` is the branch's own statement that the forecast lies in the domain it was
    fitted on (e.g. the price range of its last fit). A forecast outside it gets no weight in
    the blend and makes a refit due (the predictor's refit policy); a branch whose mathematics
    holds everywhere leaves the default."""

    mean: Scalar
    scale: Scalar
    in_domain: Flag | bool = True


class AbstractBranch(eqx.Module, Generic[Params]):
    """Abstract base of the forecasting branches: subclass, implement the three methods, set
    ``name`` (a short key such as ``"A"``) and ``label`` (``"A Lévy"``), and mark it final."""

    name: eqx.AbstractClassVar[str]
    label: eqx.AbstractClassVar[str]
    roles: ClassVar[frozenset[str]] = frozenset()
    non_finite_params: ClassVar[dict[str, frozenset[str]]] = {}
    """Parameter leaves that hold a non-finite value by design, by path below the params (e.g.
    ``".training_loss"``) -> the allowed values (``"nan"``, ``"inf"``, ``"-inf"``). Every other
    leaf of a restored state must be finite (``usp.io.sense``)."""

    @abc.abstractmethod
    def init(self, *, key: PRNGKey) -> Params:
        """Untrained parameters (must already give a finite forecast)."""

    @abc.abstractmethod
    def fit(self, params: Params, buffer: Signal) -> Params:
        """Re-estimate parameters from the buffer (oldest first). Slow path."""

    @abc.abstractmethod
    def predict(self, params: Params, buffer: Signal, *, key: PRNGKey) -> Forecast:
        """Forecast of the value that follows ``buffer[-1]``. Fast path: jit-able, no host calls."""

    def collapse_check(self, params: Params) -> tuple[Scalar, Flag]:
        """(entropy, collapsed) of the last fit, for a branch with the ``COLLAPSE_CHECK`` role.
        The default has nothing to check: (NaN, False)."""
        return jnp.asarray(jnp.nan), jnp.asarray(False)
