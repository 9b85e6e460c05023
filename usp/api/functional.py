"""`FunctionalPredictor`: the pure face of the step, for one asset or thousands.

States are explicit pytrees, so they can live anywhere (a snapshot file, a key-value store) and
every asset shares one compiled program. The compiled step lives in ``usp.core.step``; this
module adds the compiled-program cache, the blockwise vmap over assets and the snapshot
encoding of states (the format itself is ``usp.io.snapshot``).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from usp.api import programs
from usp.contracts.branch import AbstractBranch
from usp.contracts.config import PredictorConfig
from usp.contracts.errors import DomainError, IntegrityError
from usp.contracts.types import MarketObservation, PredictionResult
from usp.core.step import (
    Predictor,
    PredictorState,
    init_state,
    postpone_refit,
    refit,
    run,
    step,
)
from usp.io import sense
from usp.io import snapshot as snap

logger = logging.getLogger("usp")


def _guarded_step(
    model: Predictor, state: PredictorState, price, target, freeze
) -> tuple[PredictorState, PredictionResult, Bool[Array, ""]]:
    """The step, except that a price or target that is not finite and positive leaves the state
    untouched (branches A-C model log-prices: zero or a negative price is never data)."""
    accepted = jnp.isfinite(price) & jnp.isfinite(target) & (price > 0) & (target > 0)
    last = state.buffer[-1]
    new_state, result = step(
        model, state, jnp.where(accepted, price, last), jnp.where(accepted, target, last), freeze
    )
    kept = jax.tree.map(lambda new, old: jnp.where(accepted, new, old), new_state, state)
    return kept, result, accepted


def _asset(i: int, leaves: Array) -> Array:
    """Asset ``i`` of a batched leaf."""
    return leaves[i]


def _with_asset(i: int, leaves: Array, leaf: Array) -> Array:
    """A batched leaf with asset ``i`` replaced by ``leaf``."""
    return leaves.at[i].set(leaf)


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


def _compile(model: Predictor) -> tuple:
    """The model and its jitted functions: the guarded step, the blockwise batch, the scan."""
    return (
        model,
        jax.jit(partial(_guarded_step, model)),
        jax.jit(blockwise(partial(_guarded_step, model))),
        jax.jit(partial(run, model)),
    )


@functools.lru_cache(maxsize=8)
def _compiled(config: PredictorConfig, learn_tau: bool) -> tuple:
    """``_compile`` of the default branches, shared by every wrapper with an equal config: a
    thousand single-asset ``UniversalPredictor``s compile once, not a thousand times."""
    return _compile(Predictor.from_config(config, learn_tau=learn_tau))


class FunctionalPredictor:
    """Pure interface: states are explicit pytrees, so they can live anywhere (msgpack, a
    key-value store) and thousands of assets share one compiled program.

        fp = FunctionalPredictor(config)
        state = fp.init_state()
        state, result = fp.step(state, obs)
        states = fp.init_states(1024)
        states, results, accepted = fp.step_batch(states, prices, targets)
    """

    def __init__(
        self,
        config: PredictorConfig | None = None,
        *,
        branches: Sequence[AbstractBranch] | None = None,
        learn_tau: bool = True,
    ):
        """``branches``: the forecasting branches, in order (default: the spec's four, A-D, as
        ``usp.core.step.default_branches`` builds them from ``config``). Predictors with the
        default branches and equal configs share one compiled program."""
        self.config = config or PredictorConfig()
        self.learn_tau = learn_tau
        compiled = (
            _compiled(self.config, learn_tau)
            if branches is None
            else _compile(
                Predictor.from_config(self.config, branches=branches, learn_tau=learn_tau)
            )
        )
        self.model, self._traced_step, self._step_batch, self._run = compiled
        self._templates: dict[int | None, PredictorState] = {}
        self._result_template: PredictionResult | None = None
        # The single-asset step as exported by an earlier process (usp.api.programs): the same
        # program without tracing it again, when enable_compilation_cache has been called.
        # Every single-asset tick (step, UniversalPredictor.step) goes through _step. Only the
        # default branches are exported: a user's branch is code that usp's digest cannot see.
        directory = None if branches is not None else programs.program_directory()
        self._exported = None if directory is None else programs.load_step(self, directory)
        self._step = self._traced_step if self._exported is None else self._exported

    @property
    def branch_names(self) -> tuple[str, ...]:
        """The branches' names, in the order of ``weights`` and ``branch_forecasts``."""
        return self.model.branch_names

    @property
    def branch_labels(self) -> tuple[str, ...]:
        return tuple(branch.label for branch in self.model.branches)

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
        """One tick. A price or target that is not finite and positive raises ``DomainError``
        (state untouched)."""
        if not (math.isfinite(obs.price) and math.isfinite(obs.target)):
            raise DomainError(f"non-finite observation at {obs.timestamp_ns}: {obs}")
        if obs.price <= 0 or obs.target <= 0:
            raise DomainError(f"non-positive observation at {obs.timestamp_ns}: {obs}")
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
        """One tick for every asset. An asset whose price or target is not finite and positive
        keeps its state bit for bit and is reported in ``accepted`` as False; the others are
        unaffected.
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

    def postpone_refit(self, state: PredictorState) -> PredictorState:
        """A due refit that cannot run: parameters kept, the policy's clock restarted."""
        return postpone_refit(state)

    def refit_assets(
        self, states: PredictorState, refit_due: Int[Array, " assets"] | np.ndarray
    ) -> tuple[PredictorState, int]:
        """The refit policy for a batch (slow path): every asset whose verdict
        (``results.refit_due``) is not 0 is refitted; one whose buffer a branch cannot fit is
        postponed (logged). Returns the states and how many were refitted."""
        refitted = 0
        for i in np.flatnonzero(np.asarray(refit_due)).tolist():
            one = jax.tree.map(partial(_asset, i), states)
            try:
                one = refit(self.model, one)
                refitted += 1
            except ValueError as error:  # DomainError included
                logger.warning("asset %d: refit postponed: %s", i, error)
                one = postpone_refit(one)
            states = jax.tree.map(partial(_with_asset, i), states, one)
        return states, refitted

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
            branches=list(self.branch_names),
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
        against this predictor's templates, then for sense (``sense_rules``): a payload
        re-sealed with a correct checksum but a NaN, an absurd magnitude or a negative counter
        is an ``IntegrityError`` naming the leaf."""
        snap.check_same_config(snap.config_from_payload(payload, source), self.config, source)
        if payload["branches"] != list(self.branch_names):
            raise IntegrityError(
                f"{source}: taken with branches {payload['branches']!r:.200}, this predictor "
                f"has {list(self.branch_names)}"
            )
        if payload["learn_tau"] != self.learn_tau:
            raise IntegrityError(f"{source}: taken with learn_tau={payload['learn_tau']}")
        has_result = payload["has_last_result"]
        if has_result and payload["n_assets"] is not None:
            raise IntegrityError(f"{source}: a batched state with a single-asset result")
        template = {
            "state": self.state_template(payload["n_assets"]),
            "last_result": self.result_template() if has_result else None,
        }
        tree = snap.from_record(payload["tree"], template, source)
        sense.check_tree(tree, self.sense_rules, source)
        return tree

    @functools.cached_property
    def sense_rules(self) -> sense.SenseRules:
        """What a restored state (and result) must satisfy beyond its checksum: the generic rules
        of ``usp.io.sense`` (finite, bounded, non-negative integers) with this predictor's
        counters, their largest values and its price buffer. Paths are the snapshot's leaf paths
        of ``{"state": ..., "last_result": ...}``. A custom branch's parameters get the generic
        rules only: they must be finite and bounded, their integers non-negative."""
        config, state, result = self.config, "['state']", "['last_result']"
        # Non-finite by design, and nowhere else (found by listing the non-finite leaves of cold,
        # fitted and long-run states and results): a branch's scale that is not finite is
        # reported as NaN (usp.core.step._branch_forecasts); H_DGM is NaN when no branch
        # declares the collapse check or all that do are switched off (_reported_entropy); and
        # each branch declares its own (AbstractBranch.non_finite_params).
        non_finite = {
            f"{result}.branch_scales": frozenset({"nan"}),
            f"{result}.dgm_entropy": frozenset({"nan"}),
        }
        for i, branch in enumerate(self.model.branches):
            for leaf, allowed in branch.non_finite_params.items():
                non_finite[f"{state}.params[{i}]{leaf}"] = allowed
        return sense.SenseRules(
            non_finite=non_finite,
            at_most={
                # the price buffer's fill count
                f"{state}.n_filled": config.wtmm_buffer_size,
                # the kurtosis ring: the next write position, and how much of it is filled
                f"{state}.cusum.window_pos": config.kurtosis_window - 1,
                f"{state}.cusum.window_count": config.kurtosis_window,
                # saturating counters: the grace period, the kurtosis alert's streak (its
                # ceiling is one past the alert), the collapse streak (a branch is switched off,
                # and its streak reset, once the streak passes mode_collapse_steps)
                f"{state}.cusum.steps_since_alarm": config.grace_period_steps,
                f"{state}.cusum.kurtosis_streak": config.kurtosis_alert_steps + 1,
                f"{state}.collapse_streak": config.mode_collapse_steps,
            },
            positive_filled={f"{state}.buffer": f"{state}.n_filled"},
        )


__all__ = ["ASSET_BLOCK", "FunctionalPredictor", "blockwise"]
