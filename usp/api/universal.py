"""`UniversalPredictor`: one asset, stateful, over the same compiled step.

It adds what must stay on the host: the tick gate (``usp.api.gate``), clocks, the warnings,
events and emergency dumps of the spec's API §11, and snapshots of the whole predictor (the
state through ``FunctionalPredictor``, the host fields through ``usp.io.host_record``).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import jax
import numpy as np

from usp.api.functional import FunctionalPredictor
from usp.api.gate import LEVEL_SHIFT_TICKS, TickGate
from usp.contracts.branch import AbstractBranch
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
from usp.contracts.types import MarketObservation, PredictionResult, refit_reasons
from usp.io import snapshot as snap
from usp.io.host_record import GATE_FIELDS, read_host_record

logger = logging.getLogger("usp")


@dataclass
class _FlagEdges:
    """Previous values of the flags whose rising edge emits a warning or a dump."""

    emergency: bool = False
    mode_collapse: bool = False
    kurtosis_alert: bool = False


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

    The predictor keeps itself fitted: when a tick's ``refit_due`` is set (the refit policy of
    ``usp.core.refit``: every ``refit_every`` ticks, after a regime alarm's grace period, or when
    a branch leaves its fitted domain), ``step`` refits the branches on the buffer after the
    tick is committed. That tick's call is slower (a refit costs tenths of a second); counts and
    time are in ``refits`` and ``refit_seconds``. ``auto_refit=False`` leaves refits to the
    caller (``refit()``).
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
        branches: Sequence[AbstractBranch] | None = None,
        checkpoint_every: int | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_keep: int = 2,
        auto_refit: bool = True,
    ):
        """``functional`` shares an existing compiled predictor (and its config) instead of
        building one: many single-asset wrappers, one compile. ``learn_tau`` defaults to True;
        with ``functional``, ``config`` and ``learn_tau`` may be given only if they agree.
        ``branches`` replaces the spec's four forecasting branches (see ``FunctionalPredictor``);
        with ``functional``, pass the branches to it instead."""
        if functional is not None:
            if branches is not None:
                raise ValueError("pass branches to the functional predictor, not beside it")
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
        self.auto_refit = auto_refit
        self.refits = 0
        self.refit_seconds = 0.0
        self.accepted_ticks = 0
        self.dropped_ticks = 0
        self._writer: snap.SnapshotWriter | None = None
        self.functional = functional or FunctionalPredictor(
            config, branches=branches, learn_tau=True if learn_tau is None else learn_tau
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
        bad = np.flatnonzero(values <= 0)
        if bad.size:  # branches A-C model log-prices; the tick gate drops such prices too
            raise DomainError(f"history has non-positive values at positions {bad[:5].tolist()}")
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
        """Refit every branch on the buffer now (the slow path; needs a full buffer)."""
        started = time.perf_counter()
        self.state = self.functional.refit(self.state)
        self.refits += 1
        self.refit_seconds += time.perf_counter() - started

    def _policy_refit(self, verdict: int) -> None:
        """The refit the policy asked for; a buffer a branch cannot fit postpones it (logged),
        and the tick it follows stays committed."""
        reasons = ", ".join(refit_reasons(verdict))
        try:
            self.refit()
        except ValueError as error:  # DomainError included
            logger.warning("refit (%s) postponed: %s", reasons, error)
            self.state = self.functional.postpone_refit(self.state)
            return
        logger.info("refitted (%s) after %d accepted ticks", reasons, self.accepted_ticks)

    def step(self, obs: MarketObservation) -> PredictionResult:
        """One tick; a dropped tick returns the last valid result and changes nothing."""
        now = None if self.clock is None else self.clock()
        reason = self.gate.rejection(obs, now)
        if reason is not None:
            logger.error("tick dropped: %s", reason)
            self.gate.drop(obs, now)
            self.dropped_ticks += 1
            if self.last_result is None:
                raise DomainError(f"tick dropped ({reason}) and there is no previous result")
            return self.last_result
        if self.gate.is_outlier(obs):
            logger.warning(
                "price level shift accepted: %d consecutive ticks near %g, last accepted %g",
                LEVEL_SHIFT_TICKS, float(obs.price), self.gate.last_price,
            )  # fmt: skip
        if self.gate.is_clock_jump(obs):
            logger.warning(
                "clock re-anchored: %d consecutive ticks from %d, last accepted %d",
                LEVEL_SHIFT_TICKS, obs.timestamp_ns, self.gate.last_timestamp_ns,
            )  # fmt: skip
        freeze = self._freeze(obs, now)
        self.state, result, _ = self.functional._step(
            self.state, float(obs.price), float(obs.target), bool(freeze)
        )
        # Commit the whole tick before any side channel (warnings, dumps, checkpoints) runs:
        # if one of them fails, the tick is still in the state, not half-applied.
        self.gate.accept(float(obs.price), obs.timestamp_ns)
        self.last_result = result
        self.accepted_ticks += 1
        if self.auto_refit and int(result.refit_due):
            self._policy_refit(int(result.refit_due))
        self._raise_flags(result, obs.timestamp_ns)
        if self.checkpoint_every and self.accepted_ticks % self.checkpoint_every == 0:
            self._checkpoint()
        return result

    # -- snapshots ----------------------------------------------------------------------------
    def _host_record(self) -> dict:
        """The host-side fields a restored predictor needs, as plain values (copied now)."""
        gate = {name: getattr(self.gate, name) for name in GATE_FIELDS}
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
        tree = self.functional.decode_snapshot(payload, source)  # checked for sense too
        # The gate's timestamps may not lie beyond the horizon of this predictor's clock (a
        # replay, without a clock, bounds them by the int64 range only).
        host = read_host_record(
            payload["host"],
            source,
            max_outliers=LEVEL_SHIFT_TICKS - 1,
            now_ns=None if self.clock is None else self.clock(),
            horizon_ns=self.config.timestamp_horizon_ns,
        )
        # Everything verified: only now is this predictor changed.
        self.state, self.last_result = tree["state"], tree["last_result"]
        self.gate = TickGate(self.config, **host["gate"])
        self._edges = _FlagEdges(**host["edges"])
        self.events = [NormalOperationRestoredEvent(*e) for e in host["events"]]
        self.dumps = [Path(d) for d in host["dumps"]]
        self.accepted_ticks, self.dropped_ticks = host["accepted_ticks"], host["dropped_ticks"]

    def _freeze(self, obs: MarketObservation, now: int | None) -> bool:
        stale = False
        if now is not None:
            latency = now - obs.timestamp_ns
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
                "mode collapse: a branch's entropy check failed while it held weight (the DGM by "
                "default); it is off until refit",
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


__all__ = ["UniversalPredictor"]
