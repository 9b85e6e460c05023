"""The two public faces of the step: `FunctionalPredictor` (pure, many assets) and
`UniversalPredictor` (one asset, stateful, with the host-side tick gate of API §4.2).

The compiled step lives in ``usp.core.step``; this module adds what must stay on the host:
input validation, clocks, warnings, events, emergency dumps and snapshots (the file format
and the background writer are in ``usp.io.snapshot``).
"""

from __future__ import annotations

import functools
import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from usp.api import programs
from usp.contracts.config import PredictorConfig
from usp.contracts.errors import (
    DomainError,
    FrequencyWarning,
    IntegrityError,
    KurtosisOutlierWarning,
    ModeDegradationAlert,
    NormalOperationRestoredEvent,
    StalenessWarning,
)
from usp.contracts.types import MarketObservation, PredictionResult
from usp.core.step import Predictor, PredictorState, init_state, refit, run, step
from usp.io import snapshot as snap

logger = logging.getLogger("usp")


def _guarded_step(
    model: Predictor, state: PredictorState, price, target, freeze
) -> tuple[PredictorState, PredictionResult, Bool[Array, ""]]:
    """The step, except that a non-finite price or target leaves the state untouched."""
    accepted = jnp.isfinite(price) & jnp.isfinite(target)
    last = state.buffer[-1]
    new_state, result = step(
        model, state, jnp.where(accepted, price, last), jnp.where(accepted, target, last), freeze
    )
    kept = jax.tree.map(lambda new, old: jnp.where(accepted, new, old), new_state, state)
    return kept, result, accepted


ASSET_BLOCK = 64
"""Assets vmapped together in ``step_batch``; blocks run one after another (``lax.map``).

One ``vmap`` over every asset streams each intermediate of the step through main memory (the
CWT modulus alone is 32 x 130 doubles, 33 kB, per asset: 34 MB for 1024 assets); a block of 64
assets keeps them in cache. Measured on the 2-core CI CPU, one 1024-asset tick: 111 ms as one
vmap, 56-59 ms in blocks of 16 to 128 (``benchmarks/bench_step.py`` reports the current figure).
"""


def blockwise(step_one: Callable[..., Any], block: int = ASSET_BLOCK) -> Callable[..., Any]:
    """``vmap(step_one)`` over a leading asset axis, evaluated ``block`` assets at a time.

    Same values as the plain vmap (to rounding: XLA picks kernels by shape); any asset count
    works, a remainder block is vmapped on its own.
    """

    def batched(*per_asset):
        return jax.lax.map(lambda args: step_one(*args), per_asset, batch_size=block)

    return batched


@functools.lru_cache(maxsize=8)
def _compiled(config: PredictorConfig, learn_tau: bool):
    """The model and its jitted functions, shared by every wrapper with an equal config: a
    thousand single-asset ``UniversalPredictor``s compile once, not a thousand times."""
    model = Predictor.from_config(config, learn_tau=learn_tau)
    return (
        model,
        jax.jit(partial(_guarded_step, model)),
        jax.jit(blockwise(partial(_guarded_step, model))),
        jax.jit(partial(run, model)),
    )


class FunctionalPredictor:
    """Pure interface: states are explicit pytrees, so they can live anywhere (msgpack, a
    key-value store) and thousands of assets share one compiled program.

        fp = FunctionalPredictor(config)
        state = fp.init_state()
        state, result = fp.step(state, obs)
        states = fp.init_states(1024)
        states, results, accepted = fp.step_batch(states, prices, targets)
    """

    def __init__(self, config: PredictorConfig | None = None, *, learn_tau: bool = True):
        self.config = config or PredictorConfig()
        self.learn_tau = learn_tau
        self.model, self._traced_step, self._step_batch, self._run = _compiled(
            self.config, learn_tau
        )
        self._templates: dict[int | None, PredictorState] = {}
        self._result_template: PredictionResult | None = None
        # The single-asset step as exported by an earlier process (usp.api.programs): the same
        # program without tracing it again, when enable_compilation_cache has been called.
        # Every single-asset tick (step, UniversalPredictor.step) goes through _step.
        directory = programs.program_directory()
        self._exported = None if directory is None else programs.load_step(self, directory)
        self._step = self._traced_step if self._exported is None else self._exported

    def init_state(self, *, key: jax.Array | None = None) -> PredictorState:
        key = jax.random.key(self.config.seed) if key is None else key
        return init_state(self.model, key=key)

    def init_states(self, n_assets: int, *, key: jax.Array | None = None) -> PredictorState:
        """Independent cold states for ``n_assets`` assets, stacked on a leading axis."""
        key = jax.random.key(self.config.seed) if key is None else key
        keys = jax.random.split(key, n_assets)
        return jax.vmap(lambda k: init_state(self.model, key=k))(keys)

    def step(
        self, state: PredictorState, obs: MarketObservation, *, freeze: bool = False
    ) -> tuple[PredictorState, PredictionResult]:
        """One tick. A non-finite price or target raises ``DomainError`` (state untouched)."""
        if not (math.isfinite(obs.price) and math.isfinite(obs.target)):
            raise DomainError(f"non-finite observation at {obs.timestamp_ns}: {obs}")
        # Python floats and bools: a NumPy scalar would be a differently typed argument (a
        # second compile that no warm-up covers).
        price, target = float(obs.price), float(obs.target)
        new_state, result, _ = self._step(state, price, target, bool(freeze))
        return new_state, result

    def step_batch(
        self,
        states: PredictorState,
        prices: Float[Array, " assets"] | np.ndarray,
        targets: Float[Array, " assets"] | np.ndarray,
        freeze: Bool[Array, " assets"] | np.ndarray | None = None,
    ) -> tuple[PredictorState, PredictionResult, Bool[Array, " assets"]]:
        """One tick for every asset. An asset whose price or target is not finite keeps its
        state bit for bit and is reported in ``accepted`` as False; the others are unaffected.
        """
        return self._step_batch(*self.batch_inputs(states, prices, targets, freeze))

    def batch_inputs(self, states, prices, targets, freeze=None) -> tuple:
        """``step_batch``'s arguments as arrays of the state's dtype (``freeze``: bool), one
        entry per asset, else ``ValueError``: a wrong length would broadcast or fail deep in
        the trace, and another dtype would compile a second program."""
        n_assets = states.buffer.shape[0]
        prices = jnp.asarray(prices, dtype=states.buffer.dtype)
        targets = jnp.asarray(targets, dtype=states.buffer.dtype)
        freeze = jnp.zeros(n_assets, bool) if freeze is None else jnp.asarray(freeze, bool)
        for name, value in (("prices", prices), ("targets", targets), ("freeze", freeze)):
            if value.shape != (n_assets,):
                raise ValueError(f"{name} has shape {value.shape}, expected ({n_assets},)")
        return states, prices, targets, freeze

    def refit(self, state: PredictorState) -> PredictorState:
        """Slow path: every branch re-estimated on the state's buffer (one asset)."""
        return refit(self.model, state)

    def run(
        self, state: PredictorState, prices: np.ndarray, targets: np.ndarray | None = None
    ) -> tuple[PredictorState, PredictionResult]:
        """The compiled step scanned over a series (``targets`` default to ``prices``)."""
        prices = jnp.asarray(prices, dtype=state.buffer.dtype)
        targets = prices if targets is None else jnp.asarray(targets, dtype=prices.dtype)
        return self._run(state, prices, targets)

    # -- persistence (usp.io.snapshot) ------------------------------------------------------
    def state_template(self, n_assets: int | None = None) -> PredictorState:
        """Shapes and dtypes of a cold state (a stack of ``n_assets`` states), computed without
        allocating: every loaded state is checked leaf by leaf against it."""
        if n_assets not in self._templates:
            fresh = self.init_state if n_assets is None else partial(self.init_states, n_assets)
            self._templates[n_assets] = jax.eval_shape(fresh)
        return self._templates[n_assets]

    def result_template(self) -> PredictionResult:
        """Shapes and dtypes of one tick's result (traced, not run; read off the exported
        program when there is one)."""
        if self._result_template is None and self._exported is not None:
            self._result_template = self._exported.result_template
        if self._result_template is None:
            shapes = jax.eval_shape(self._traced_step, self.state_template(), 0.0, 0.0, False)
            self._result_template = shapes[1]
        return self._result_template

    def capture(
        self,
        state: PredictorState,
        last_result: PredictionResult | None = None,
        host: dict | None = None,
    ) -> snap.Capture:
        """Caller side of a snapshot: references to the arrays now; the device→host copy,
        encoding and writing later, on the writer's thread."""
        n_assets = int(state.buffer.shape[0]) if state.buffer.ndim == 2 else None
        return snap.capture(
            {"state": state, "last_result": last_result},
            config=self.config.to_dict(),
            learn_tau=self.learn_tau,
            n_assets=n_assets,
            has_last_result=last_result is not None,
            host=host,
        )

    def state_to_bytes(self, state: PredictorState) -> bytes:
        """A snapshot of one state (or of a stack of states) as bytes, e.g. for a key-value
        store keyed by asset id."""
        return snap.encode(self.capture(state))

    def state_from_bytes(self, data: bytes, *, source: str = "state") -> PredictorState:
        """The state in a snapshot's bytes; ``IntegrityError`` unless it verifies and was taken
        with this predictor's config."""
        return self.decode_snapshot(snap.open_snapshot(data, source), source)["state"]

    def save_state(self, path: str | Path, state: PredictorState) -> dict:
        """Write a state snapshot atomically (in this thread); returns the status dict."""
        return snap.write_snapshot(path, self.capture(state))

    def load_state(self, path: str | Path) -> PredictorState:
        """The state of a snapshot file (a ``UniversalPredictor`` snapshot works too)."""
        return self.decode_snapshot(snap.read_snapshot(path), str(path))["state"]

    def decode_snapshot(self, payload: dict, source: str) -> dict:
        """``{"state": ..., "last_result": ...}`` of a verified payload, every leaf checked
        against this predictor's templates."""
        snap.check_same_config(snap.config_from_payload(payload, source), self.config, source)
        if payload["learn_tau"] != self.learn_tau:
            raise IntegrityError(f"{source}: taken with learn_tau={payload['learn_tau']}")
        has_result = payload["has_last_result"]
        if has_result and payload["n_assets"] is not None:
            raise IntegrityError(f"{source}: a batched state with a single-asset result")
        template = {
            "state": self.state_template(payload["n_assets"]),
            "last_result": self.result_template() if has_result else None,
        }
        return snap.from_record(payload["tree"], template, source)


def _squared(x: float) -> float:
    """x², inf when it overflows (Python's ``x ** 2`` raises OverflowError instead)."""
    return x * x


LEVEL_SHIFT_TICKS = 3
"""Consecutive outliers, within the outlier bound of one another, that make a new price level."""


@dataclass
class TickGate:
    """Host-side checks of one asset's stream (API §4.2): what to drop, when to freeze.

    A tick is dropped (the predictor state is untouched) when its price or target is not
    finite, its timestamp is not after the last accepted one, or its price is more than
    ``outlier_sigma`` increment-σ away from the last accepted price: a bad print. A lasting
    move (a gap at the open, a split) also looks like that, so the ``LEVEL_SHIFT_TICKS``-th
    consecutive outlier is accepted when those outliers lie within the same bound of one
    another: the new level, not a lock-out. Weights are frozen when the tick is stale
    (latency > TTL, recovering only below ``hysteresis · TTL``) or when it arrives later than
    the Nyquist interval after the previous one.
    """

    config: PredictorConfig
    last_price: float | None = None
    last_timestamp_ns: int | None = None
    increment_var: float = 0.0
    increments_seen: int = 0
    degraded: bool = False
    min_increments: int = 20
    """No outlier test before this many increments: σ is not yet known."""
    outliers: list[float] = field(default_factory=list)
    """Prices of the outliers dropped since the last accepted tick (at most the last few)."""

    def rejection(self, obs: MarketObservation) -> str | None:
        """Why the tick must be dropped, or None."""
        price, target = float(obs.price), float(obs.target)
        if not (math.isfinite(price) and math.isfinite(target)):
            return f"non-finite price or target ({price}, {target})"
        if self.last_timestamp_ns is not None and obs.timestamp_ns <= self.last_timestamp_ns:
            kind = "duplicate" if obs.timestamp_ns == self.last_timestamp_ns else "out-of-order"
            return f"{kind} timestamp {obs.timestamp_ns} (last {self.last_timestamp_ns})"
        if self.last_price is not None and not math.isfinite(_squared(price - self.last_price)):
            return f"price {price} is beyond floating-point range of the last {self.last_price}"
        if self.is_outlier(obs) and not self.is_level_shift(price):
            bound, sigma = self.config.outlier_sigma, math.sqrt(self.increment_var)
            return f"outlier: |{price} - {self.last_price:.6g}| > {bound:g} x sigma {sigma:.3g}"
        return None

    def is_outlier(self, obs: MarketObservation) -> bool:
        """A finite price more than ``outlier_sigma`` increment-σ from the last accepted price
        (tested once σ is known: after ``min_increments`` increments)."""
        if self.last_price is None or self.increments_seen < self.min_increments:
            return False
        sigma = math.sqrt(self.increment_var)
        bound, center = self.config.outlier_sigma, self.last_price
        outside = not obs.validate_domain(bound, sigma, center)
        return sigma > 0 and math.isfinite(obs.price) and outside

    def is_level_shift(self, price: float) -> bool:
        """Whether ``price`` completes a run of ``LEVEL_SHIFT_TICKS`` consecutive outliers
        that lie within the outlier bound of one another."""
        run = [*self.outliers, price][-LEVEL_SHIFT_TICKS:]
        width = self.config.outlier_sigma * math.sqrt(self.increment_var)
        return len(run) == LEVEL_SHIFT_TICKS and max(run) - min(run) <= width

    def drop(self, obs: MarketObservation) -> None:
        """Record a dropped tick: an outlier's price is kept to recognise a new level."""
        if self.is_outlier(obs):
            self.outliers = [*self.outliers, float(obs.price)][-(LEVEL_SHIFT_TICKS - 1) :]

    def accept(self, price: float, timestamp_ns: int | None = None) -> None:
        """Record an accepted price (EWMA of squared increments for the outlier σ)."""
        if self.last_price is not None:
            increment_sq = _squared(price - self.last_price)
            alpha = max(self.config.volatility_alpha, 1.0 / (self.increments_seen + 1))
            self.increment_var = (1 - alpha) * self.increment_var + alpha * increment_sq
            self.increments_seen += 1
        self.last_price = price
        self.outliers = []
        if timestamp_ns is not None:
            self.last_timestamp_ns = timestamp_ns

    def staleness(self, latency_ns: int) -> tuple[bool, bool]:
        """(degraded now, just recovered) with hysteresis."""
        ttl = self.config.staleness_ttl_ns
        recovered = False
        if self.degraded and latency_ns < self.config.inference_recovery_hysteresis * ttl:
            self.degraded, recovered = False, True
        elif latency_ns > ttl:
            self.degraded = True
        return self.degraded, recovered

    def is_sparse(self, timestamp_ns: int) -> bool:
        if self.last_timestamp_ns is None:
            return False
        return timestamp_ns - self.last_timestamp_ns > self.config.besov_nyquist_interval_ns


@dataclass
class _FlagEdges:
    """Previous values of the flags whose rising edge emits a warning or a dump."""

    emergency: bool = False
    mode_collapse: bool = False
    kurtosis_alert: bool = False


_GATE_FIELDS: dict[str, tuple[type, ...]] = {
    "last_price": (float, type(None)),
    "last_timestamp_ns": (int, type(None)),
    "increment_var": (float,),
    "increments_seen": (int,),
    "degraded": (bool,),
    "min_increments": (int,),
    "outliers": (list,),
}
_HOST_FIELDS: dict[str, tuple[type, ...]] = {
    "gate": (dict,),
    "edges": (dict,),
    "events": (list,),
    "dumps": (list,),
    "accepted_ticks": (int,),
    "dropped_ticks": (int,),
}


def _check_gate(gate: dict, where: str) -> None:
    """Raise ``IntegrityError`` unless a restored gate's fields make sense: a checksum proves
    the bytes are the writer's, not that the writer was right, and a negative variance or a NaN
    price would break every later tick."""

    def finite(x):
        return isinstance(x, float) and math.isfinite(x)

    problems = []
    if gate["last_price"] is not None and not finite(gate["last_price"]):
        problems.append(f"last_price {gate['last_price']!r} is not finite")
    if not (finite(gate["increment_var"]) and gate["increment_var"] >= 0):
        problems.append(f"increment_var {gate['increment_var']!r} is not finite and >= 0")
    counts = ("increments_seen", "min_increments", "last_timestamp_ns")
    if any((gate[name] or 0) < 0 for name in counts):
        problems.append(f"a negative count or timestamp in {[gate[n] for n in counts]}")
    if len(gate["outliers"]) >= LEVEL_SHIFT_TICKS or not all(map(finite, gate["outliers"])):
        problems.append(f"outliers must be fewer than {LEVEL_SHIFT_TICKS} finite prices")
    if problems:
        raise IntegrityError(f"{where}: " + "; ".join(problems))


class UniversalPredictor:
    """One asset, stateful: ``fit_history`` once, then ``step`` per tick.

    ``clock`` returns the current time in ns (latency = clock() - obs.timestamp_ns); pass
    ``clock=None`` for replays of historical data, where latency is meaningless.

    Snapshots: ``save_snapshot(path)`` (non-blocking), ``UniversalPredictor.from_snapshot(path)``
    and ``load_snapshot(path)``. With ``checkpoint_every=N`` and ``checkpoint_dir``, every N-th
    accepted tick writes ``checkpoint-<ticks>.usp`` in the background, keeping the newest
    ``checkpoint_keep`` files; a checkpoint that falls due while the previous one is still being
    written is skipped (counted in ``checkpoints_skipped``), so a slow disk never queues up
    copies of the state. ``graceful_shutdown()`` waits for pending writes.
    """

    def __init__(
        self,
        config: PredictorConfig | None = None,
        *,
        key: jax.Array | None = None,
        clock: Callable[[], int] | None = time.time_ns,
        emergency_dump_dir: str | Path | None = None,
        learn_tau: bool | None = None,
        on_event: Callable[[NormalOperationRestoredEvent], None] | None = None,
        functional: FunctionalPredictor | None = None,
        checkpoint_every: int | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_keep: int = 2,
    ):
        """``functional`` shares an existing compiled predictor (and its config) instead of
        building one: many single-asset wrappers, one compile. ``learn_tau`` defaults to True;
        with ``functional``, ``config`` and ``learn_tau`` may be given only if they agree."""
        if functional is not None:
            if config is not None and config != functional.config:
                raise ValueError("config differs from the config of the functional predictor")
            if learn_tau is not None and learn_tau != functional.learn_tau:
                raise ValueError(
                    f"learn_tau={learn_tau} disagrees with the functional predictor's "
                    f"learn_tau={functional.learn_tau}"
                )
        if (checkpoint_every is None) != (checkpoint_dir is None):
            raise ValueError("checkpoint_every and checkpoint_dir go together")
        if checkpoint_every is not None and not (
            isinstance(checkpoint_every, int) and checkpoint_every >= 1
        ):
            raise ValueError(f"checkpoint_every must be a positive int, got {checkpoint_every!r}")
        if not (isinstance(checkpoint_keep, int) and checkpoint_keep >= 1):
            raise ValueError(f"checkpoint_keep must be a positive int, got {checkpoint_keep!r}")
        self.checkpoint_every = checkpoint_every
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_keep = checkpoint_keep
        self.checkpoints_skipped = 0
        self.accepted_ticks = 0
        self.dropped_ticks = 0
        self._writer: snap.SnapshotWriter | None = None
        self.functional = functional or FunctionalPredictor(
            config, learn_tau=True if learn_tau is None else learn_tau
        )
        self.config = self.functional.config
        self.state = self.functional.init_state(key=key)
        self.gate = TickGate(self.config)
        self.clock = clock
        self.emergency_dump_dir = emergency_dump_dir
        self.on_event = on_event
        self.events: list[NormalOperationRestoredEvent] = []
        self.dumps: list[Path] = []
        self.last_result: PredictionResult | None = None
        self._edges = _FlagEdges()

    def fit_history(self, history: Sequence[float] | np.ndarray) -> bool:
        """Cold start: fill the buffer, fit every branch, then run the rest of the history
        through the compiled step so weights and CUSUM settle. Returns True when the last
        Sinkhorn step converged and the CUSUM drift is below ``cusum_h``.
        """
        values = np.asarray(history, dtype=float)
        size = self.config.wtmm_buffer_size
        if values.ndim != 1 or len(values) < size:
            raise ValueError(
                f"fit_history needs at least wtmm_buffer_size = {size} values, got {len(values)}"
            )
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise DomainError(f"history has non-finite values at positions {bad[:5].tolist()}")
        with np.errstate(over="ignore"):
            huge = np.flatnonzero(~np.isfinite(np.diff(values) ** 2))
        if huge.size:
            raise DomainError(
                f"history has increments beyond floating-point range after positions "
                f"{huge[:5].tolist()}"
            )
        fp = self.functional
        # Every scan has the buffer's length, so one compiled scan serves the whole history.
        # The first len % size values only precede the buffer fill (their forecasts would be
        # the unfitted, naive ones), so starting after them loses nothing and needs no
        # tick-by-tick remainder.
        start = len(values) % size
        state, result = fp.run(self.state, values[start : start + size])
        state = fp.refit(state)
        for chunk in values[start + size :].reshape(-1, size):
            state, result = fp.run(state, chunk)
        state = fp.refit(state) if len(values) >= start + 2 * size else state
        last = jax.tree.map(lambda x: x[-1], result)
        gate = replace(self.gate)  # a copy: nothing changes unless the whole fit succeeds
        for price in values:
            gate.accept(float(price))
        self.state, self.gate, self.last_result = state, gate, last
        stable = bool(last.sinkhorn_converged) and float(last.cusum_drift) < self.config.cusum_h
        if not stable:
            logger.warning("fit_history: cold start ended without stable convergence")
        return stable

    def refit(self) -> None:
        self.state = self.functional.refit(self.state)

    def step(self, obs: MarketObservation) -> PredictionResult:
        """One tick; a dropped tick returns the last valid result and changes nothing."""
        reason = self.gate.rejection(obs)
        if reason is not None:
            logger.error("tick dropped: %s", reason)
            self.gate.drop(obs)
            self.dropped_ticks += 1
            if self.last_result is None:
                raise DomainError(f"tick dropped ({reason}) and there is no previous result")
            return self.last_result
        if self.gate.is_outlier(obs):
            logger.warning(
                "price level shift accepted: %d consecutive ticks near %g, last accepted %g",
                LEVEL_SHIFT_TICKS, float(obs.price), self.gate.last_price,
            )  # fmt: skip
        freeze = self._freeze(obs)
        self.state, result, _ = self.functional._step(
            self.state, float(obs.price), float(obs.target), bool(freeze)
        )
        # Commit the whole tick before any side channel (warnings, dumps, checkpoints) runs:
        # if one of them fails, the tick is still in the state, not half-applied.
        self.gate.accept(float(obs.price), obs.timestamp_ns)
        self.last_result = result
        self.accepted_ticks += 1
        self._raise_flags(result, obs.timestamp_ns)
        if self.checkpoint_every and self.accepted_ticks % self.checkpoint_every == 0:
            self._checkpoint()
        return result

    # -- snapshots ----------------------------------------------------------------------------
    def _host_record(self) -> dict:
        """The host-side fields a restored predictor needs, as plain values (copied now)."""
        gate = {name: getattr(self.gate, name) for name in _GATE_FIELDS}
        return {
            "gate": gate,
            "edges": asdict(self._edges),
            "events": [[e.timestamp_ns, e.latency_ns, e.threshold_ns] for e in self.events],
            "dumps": [str(path) for path in self.dumps],
            "accepted_ticks": self.accepted_ticks,
            "dropped_ticks": self.dropped_ticks,
        }

    def _capture(self) -> snap.Capture:
        return self.functional.capture(self.state, self.last_result, self._host_record())

    def _snapshot_writer(self) -> snap.SnapshotWriter:
        if self._writer is None:
            self._writer = snap.SnapshotWriter()
        return self._writer

    def save_snapshot(self, path: str | Path, *, wait: bool = False) -> Future:
        """Snapshot the whole predictor to ``path``. Only references are taken here; the
        device→host copy, encoding, SHA-256 and the atomic write run on a background thread.
        Returns a ``Future`` of the status dict (``path, ok, bytes, sha256, seconds``,
        ``error`` on failure); ``wait=True`` blocks until the file is durable."""
        future = self._snapshot_writer().submit(path, self._capture())
        if wait:
            future.result()
        return future

    def _checkpoint(self) -> None:
        writer = self._snapshot_writer()
        if writer.busy:
            self.checkpoints_skipped += 1
            return
        directory, keep = self.checkpoint_dir, self.checkpoint_keep
        writer.submit(
            snap.checkpoint_path(directory, self.accepted_ticks),
            self._capture(),
            after=lambda _: snap.prune_checkpoints(directory, keep),
        )

    def graceful_shutdown(self) -> list[dict]:
        """Wait for every pending snapshot write; returns their status dicts."""
        writer, self._writer = self._writer, None
        return [] if writer is None else writer.graceful_shutdown()

    @classmethod
    def from_snapshot(
        cls,
        path: str | Path,
        *,
        functional: FunctionalPredictor | None = None,
        **kwargs,
    ) -> UniversalPredictor:
        """A predictor restored from a snapshot file: its next predictions are bit-identical
        to those the snapshotted predictor would have made. ``kwargs`` are the constructor's
        host-side options (``clock``, ``emergency_dump_dir``, ``on_event``, checkpoints);
        ``functional`` shares a compiled predictor, whose config must be the snapshot's.
        Raises ``IntegrityError`` for a file that does not verify."""
        payload = snap.read_snapshot(path)
        if functional is None:
            config = snap.config_from_payload(payload, str(path))
            functional = FunctionalPredictor(config, learn_tau=payload["learn_tau"])
        predictor = cls(functional=functional, **kwargs)
        predictor._restore(payload, str(path))
        return predictor

    def load_snapshot(self, path: str | Path) -> None:
        """Replace this predictor's state by a snapshot's; ``IntegrityError`` (and nothing
        changed) unless the file verifies and was taken with this predictor's config."""
        self._restore(snap.read_snapshot(path), str(path))

    def _restore(self, payload: dict, source: str) -> None:
        if payload["n_assets"] is not None or payload["host"] is None:
            raise IntegrityError(f"{source}: a FunctionalPredictor state, not a predictor")
        tree = self.functional.decode_snapshot(payload, source)
        host = snap.expect_fields(payload["host"], _HOST_FIELDS, f"{source}: host")
        gate = snap.expect_fields(host["gate"], _GATE_FIELDS, f"{source}: gate")
        _check_gate(gate, f"{source}: gate")
        edges = snap.expect_fields(
            host["edges"], {f: (bool,) for f in asdict(_FlagEdges())}, f"{source}: edges"
        )
        events = [snap.expect_int_list(e, 3, f"{source}: event") for e in host["events"]]
        if not all(isinstance(d, str) for d in host["dumps"]):
            raise IntegrityError(f"{source}: dump paths must be strings")
        # Everything verified: only now is this predictor changed.
        self.state, self.last_result = tree["state"], tree["last_result"]
        self.gate = TickGate(self.config, **gate)
        self._edges = _FlagEdges(**edges)
        self.events = [NormalOperationRestoredEvent(*e) for e in events]
        self.dumps = [Path(d) for d in host["dumps"]]
        self.accepted_ticks, self.dropped_ticks = host["accepted_ticks"], host["dropped_ticks"]

    def _freeze(self, obs: MarketObservation) -> bool:
        stale = False
        if self.clock is not None:
            latency = self.clock() - obs.timestamp_ns
            was_degraded = self.gate.degraded
            stale, recovered = self.gate.staleness(latency)
            if stale and not was_degraded:
                warnings.warn(
                    f"latency {latency} ns > TTL {self.config.staleness_ttl_ns} ns: "
                    "weights frozen (degraded inference)",
                    StalenessWarning,
                    stacklevel=3,
                )
            if recovered:
                threshold = int(
                    self.config.inference_recovery_hysteresis * self.config.staleness_ttl_ns
                )
                event = NormalOperationRestoredEvent(obs.timestamp_ns, latency, threshold)
                self.events.append(event)
                logger.info("normal operation restored: %s", event)
                if self.on_event is not None:
                    try:
                        self.on_event(event)
                    except Exception:  # the caller's handler must not cost the tick
                        logger.exception("on_event handler failed for %s", event)
        sparse = self.gate.is_sparse(obs.timestamp_ns)
        if sparse:
            gap = obs.timestamp_ns - (self.gate.last_timestamp_ns or 0)
            warnings.warn(
                f"tick interval {gap} ns > Nyquist interval "
                f"{self.config.besov_nyquist_interval_ns} ns: the Hölder estimate may alias",
                FrequencyWarning,
                stacklevel=3,
            )
        return stale or sparse

    def _raise_flags(self, result: PredictionResult, timestamp_ns: int) -> None:
        """Warnings and the emergency dump on each flag's rising edge (the edges are recorded
        first: a warning turned into an error must not make the next tick warn again)."""
        emergency = bool(result.emergency_mode)
        collapse = bool(result.mode_collapse_warning)
        kurtosis = bool(result.kurtosis_alert)
        edges, self._edges = self._edges, _FlagEdges(emergency, collapse, kurtosis)
        if emergency and not edges.emergency:
            logger.error("emergency mode: Hölder exponent %.3f", float(result.holder_exponent))
            if self.emergency_dump_dir is not None:
                self._dump(result, timestamp_ns)
        if collapse and not edges.mode_collapse:
            warnings.warn(
                "DGM entropy collapsed: branch B off until refit",
                ModeDegradationAlert,
                stacklevel=3,
            )
        if kurtosis and not edges.kurtosis_alert:
            warnings.warn(
                f"error kurtosis {float(result.kurtosis):.1f} above "
                f"{self.config.kurtosis_alert_level:g} for more than "
                f"{self.config.kurtosis_alert_steps} steps",
                KurtosisOutlierWarning,
                stacklevel=3,
            )

    def _dump(self, result: PredictionResult, timestamp_ns: int) -> None:
        """The emergency dump; a failed write (a full disk) is logged, never raised: the dump
        is a diagnostic, and the tick it describes is already committed."""
        from usp.io.dump import write_emergency_dump

        try:
            path = write_emergency_dump(self.emergency_dump_dir, result, self.config, timestamp_ns)
        except OSError as error:
            logger.error("emergency dump not written: %s", error)
            return
        self.dumps.append(path)


__all__ = [
    "FunctionalPredictor",
    "TickGate",
    "UniversalPredictor",
]
