"""Sense checks of restored snapshots (``usp.io.sense`` with ``FunctionalPredictor.sense_rules``,
and the host gate's ``usp.io.host_record.check_gate``).

A payload changed and re-sealed with a correct SHA-256 (a buggy writer, a store shared by
processes) passes the checksum; these tests change a real fitted predictor's snapshot in every
way the sense checks cover — NaN, ±inf and ±1e308 in every floating leaf, negative values in
every integer leaf, counters beyond their buffers, a non-positive price in the filled buffer,
absurd gate fields and timestamps — re-seal it and load it. Every case must raise
``IntegrityError`` naming the field; none may load or hang. The snapshot is built and decoded
once per module; each case mutates a copy of its bytes.
"""

from __future__ import annotations

import math
import re
import signal
import time
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from usp import FunctionalPredictor, IntegrityError, MarketObservation, UniversalPredictor
from usp.api.runtime import synthetic_walk, tree_digest
from usp.io import sense
from usp.io import snapshot as snap
from usp.io.host_record import MAX_MIN_INCREMENTS

NOW = 1_780_000_000 * 10**9
"""The restoring predictor's wall clock (ns): mid-2026."""
TICK_NS = 10_000_000
"""10 ms between ticks: below the Nyquist interval, so no tick is sparse."""
HISTORY = 600
STEPS = 12
HANG_SECONDS = 60
"""A load still running after this long has hung (one load takes milliseconds). A guard against
hangs, not a timing target: timings live in benchmarks/bench_snapshot.py."""
MIN_CASES = 2000


@dataclass(frozen=True)
class Leaf:
    """Where one leaf's elements lie in the payload's ``tree.data``."""

    path: str
    dtype: np.dtype
    size: int
    offset: int

    def values(self, data: bytes | bytearray) -> np.ndarray:
        return np.frombuffer(data, self.dtype, self.size, self.offset)


def leaf_layout(payload: dict, tree) -> list[Leaf]:
    """Every leaf of the table but PRNG keys, with its byte offset (keys are skipped by their
    key data's size, read off the live tree)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    table = payload["tree"]["leaves"]
    assert len(table) == len(flat)
    leaves, offset = [], 0
    for (path, dtype_name, shape), (key_path, leaf) in zip(table, flat, strict=True):
        assert path == jax.tree_util.keystr(key_path)
        if dtype_name.startswith(snap.KEY_PREFIX):
            offset += jax.random.key_data(leaf).nbytes
            continue
        dtype = np.dtype(dtype_name).newbyteorder("<")
        size = math.prod(shape)
        leaves.append(Leaf(path, dtype, size, offset))
        offset += size * dtype.itemsize
    assert offset == len(payload["tree"]["data"])
    return leaves


@dataclass
class Fitted:
    predictor: UniversalPredictor
    payload: dict
    leaves: dict[str, Leaf]

    @property
    def functional(self) -> FunctionalPredictor:
        return self.predictor.functional

    def with_values(self, changes: dict[str, tuple[int, float | int]]) -> bytes:
        """The payload with ``{path: (flat index, value)}`` written into its leaves, re-sealed
        with a correct checksum."""
        data = bytearray(self.payload["tree"]["data"])
        for path, (index, value) in changes.items():
            self.leaves[path].values(data)[index] = value
        return snap.seal({**self.payload, "tree": {**self.payload["tree"], "data": bytes(data)}})

    def with_gate(self, **fields) -> bytes:
        host = self.payload["host"]
        return snap.seal({**self.payload, "host": {**host, "gate": {**host["gate"], **fields}}})

    def with_host(self, **fields) -> bytes:
        return snap.seal({**self.payload, "host": {**self.payload["host"], **fields}})


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Fitted:
    predictor = UniversalPredictor(clock=None)
    history = synthetic_walk(HISTORY)
    predictor.fit_history(history)
    ticks = synthetic_walk(STEPS, seed=1, start=float(history[-1]))
    for i, price in enumerate(ticks):
        stamp = NOW - (STEPS - i) * TICK_NS
        predictor.step(MarketObservation(float(price), float(price), stamp))
    path = tmp_path_factory.mktemp("sense") / "fitted.usp"
    assert predictor.save_snapshot(path, wait=True).result()["ok"]
    payload = snap.read_sealed(path)
    tree = {"state": predictor.state, "last_result": predictor.last_result}
    leaves = {leaf.path: leaf for leaf in leaf_layout(payload, tree)}
    fitted = Fitted(predictor, payload, leaves)
    fitted.functional.state_from_bytes(snap.seal(payload))  # templates traced: not timed
    return fitted


def restore(data: bytes, tmp_path, clock=None, functional=None) -> UniversalPredictor:
    """``UniversalPredictor.from_snapshot`` of ``data`` written to a file."""
    path = tmp_path / "case.usp"
    path.write_bytes(data)
    return UniversalPredictor.from_snapshot(path, functional=functional, clock=clock)


def _hung(signum, frame):
    raise TimeoutError(f"a load ran for more than {HANG_SECONDS} s: it hangs")


class Fuzz:
    """Runs cases: each must raise ``IntegrityError`` naming its field, and none may hang."""

    def __init__(self):
        self.cases, self.started = 0, time.perf_counter()

    def refused(self, load, data: bytes, field: str, name: str) -> None:
        previous = signal.signal(signal.SIGALRM, _hung)
        signal.alarm(HANG_SECONDS)
        try:
            load(data)
        except IntegrityError as error:
            assert field in str(error), f"{name}: the error does not name {field}: {error}"
        else:
            raise AssertionError(f"{name}: loaded silently")
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        self.cases += 1


# -- the rules themselves ---------------------------------------------------------------------


def test_the_untouched_payload_resealed_loads_bit_for_bit(fitted, tmp_path):
    data = snap.seal(fitted.payload)
    state = fitted.functional.state_from_bytes(data)
    assert tree_digest(state) == tree_digest(fitted.predictor.state)
    restored = restore(data, tmp_path, clock=lambda: NOW, functional=fitted.functional)
    assert tree_digest(restored.last_result) == tree_digest(fitted.predictor.last_result)
    assert restored.gate == fitted.predictor.gate


def test_real_states_are_far_inside_the_rules(fitted):
    """A fitted state, its result and a cold state pass; their largest magnitude is many
    orders of magnitude below the bound, and only whitelisted leaves hold non-finite values
    (the cold DGM's training loss is +inf)."""
    fp = fitted.functional
    rules = fp.sense_rules
    for tree in (
        {"state": fitted.predictor.state, "last_result": fitted.predictor.last_result},
        {"state": fp.init_state(), "last_result": None},
    ):
        leaves = sense.host_leaves(tree)
        sense.check_leaves(leaves, rules, "real")
        finite = [v[np.isfinite(v)] for v in leaves.values() if v.dtype.kind == "f"]
        largest = max(float(np.abs(v).max()) for v in finite if v.size)
        assert largest < 1e12 < sense.MAX_MAGNITUDE
        odd = {p for p, v in leaves.items() if v.dtype.kind == "f" and not np.isfinite(v).all()}
        assert odd <= set(rules.non_finite)
    assert sense.magnitude_bound(np.float64) == 1e150
    assert sense.magnitude_bound(np.float32) == 1e15


def test_the_rule_table_names_real_leaves_within_their_bounds(fitted):
    """Each bounded counter is an integer leaf of the state, and a fitted state's counters lie
    within their bounds (the fill count at its bound: the buffer is full)."""
    state = fitted.predictor.state
    leaves = sense.host_leaves({"state": state, "last_result": None})
    rules = fitted.functional.sense_rules
    for path, limit in rules.at_most.items():
        assert path in leaves and leaves[path].dtype.kind == "i"
        assert (leaves[path] <= limit).all()
    config = fitted.functional.config
    assert int(state.n_filled) == config.wtmm_buffer_size  # full: at its bound
    assert int(state.cusum.steps_since_alarm) <= config.grace_period_steps
    assert int(state.cusum.window_pos) < state.cusum.window.shape[0]


def test_legitimately_non_finite_leaves_still_load(fitted):
    """The whitelist: NaN in ``branch_scales`` and ``dgm_entropy``, +inf in the DGM's training
    loss (untrained). Those values load there; the other non-finite values and 1e308 do not.
    (A cold state's +inf loss loads in ``test_batched_states_are_checked_per_asset``; the NaN
    entropy of a predictor without the DGM in tests/test_branches_as_data.py's round trip.)"""
    fp = fitted.functional
    assert fp.sense_rules.non_finite == {
        "['last_result'].branch_scales": {"nan"},
        "['last_result'].dgm_entropy": {"nan"},
        "['state'].params[1].training_loss": {"inf"},
    }
    specials = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}
    for path, allowed in fp.sense_rules.non_finite.items():
        leaf = fitted.leaves[path]
        for name, value in specials.items():
            data = fitted.with_values({path: (leaf.size - 1, value)})
            if name in allowed:
                fp.state_from_bytes(data)  # loads
                continue
            with pytest.raises(IntegrityError, match=re.escape(path)):
                fp.state_from_bytes(data)
        with pytest.raises(IntegrityError, match=re.escape(path)):
            fp.state_from_bytes(fitted.with_values({path: (0, 1e308)}))


def test_batched_states_are_checked_per_asset(fitted):
    """A leading asset axis: one bad asset is refused by the leaf's name, good batches load."""
    fp = fitted.functional
    good = fitted.predictor.state
    states = jax.tree.map(lambda *xs: jnp.stack(xs), good, good, fp.init_state())
    assert tree_digest(fp.state_from_bytes(fp.state_to_bytes(states))) == tree_digest(states)
    cases = {
        "['state'].cusum.kurtosis": (lambda s: s.cusum.kurtosis, (1,), jnp.nan),
        "['state'].cusum.n_obs": (lambda s: s.cusum.n_obs, (2,), -1),
        "['state'].collapse_streak": (lambda s: s.collapse_streak, (1, 0), 10**6),
        "['state'].buffer": (lambda s: s.buffer, (1, -1), -3.0),
    }
    for path, (where, index, value) in cases.items():
        broken = eqx.tree_at(where, states, where(states).at[index].set(value))
        with pytest.raises(IntegrityError, match=re.escape(path)):
            fp.state_from_bytes(fp.state_to_bytes(broken))
    # The third asset is cold: zeros in its buffer are the unfilled part, not prices.
    assert int(states.n_filled[2]) == 0


# -- the fuzz ---------------------------------------------------------------------------------

BAD_FLOATS = (
    *(np.uint64(bits).view(np.float64) for bits in (
        0x7FF8_0000_0000_0000,  # NaN
        0xFFF8_0000_0000_0000,  # -NaN
        0x7FF0_0000_0000_0001,  # a signalling NaN
    )),
    np.inf, -np.inf, 1e308, -1e308, np.finfo(np.float64).max, 1.5e150, -1e200,
)  # fmt: skip
"""Not finite, or beyond the magnitude bound 1e150."""


def random_bad_floats(rng: np.random.Generator) -> tuple[float, ...]:
    """Seeded: two NaNs with random payloads and signs, three random magnitudes beyond the bound
    (either sign)."""
    nans = [
        np.uint64(0x7FF8_0000_0000_0000 | int(rng.integers(1, 2**51)) | int(sign) << 63).view(
            np.float64
        )
        for sign in rng.integers(2, size=2)
    ]
    huge = rng.choice([-1.0, 1.0], size=3) * 10 ** rng.uniform(150.01, 308, size=3)
    return (*nans, *huge.tolist())


NOT_PRICES = (0.0, -0.0, -1.0, -100.0, -5e-324)
"""Finite and small, but no price: zero or negative, in the filled part of the buffer."""


def positions(leaf: Leaf, rng: np.random.Generator) -> list[int]:
    """The first and last element and up to four seeded random ones (distinct)."""
    return sorted({0, leaf.size - 1, *rng.integers(leaf.size, size=4).tolist()})


def state_cases(fitted: Fitted, rng: np.random.Generator):
    """(name, bytes, field) of every leaf-level case."""
    rules = fitted.functional.sense_rules
    for path, leaf in fitted.leaves.items():
        kind = leaf.dtype.kind
        if kind == "f":
            for index in positions(leaf, rng):
                bad = (*BAD_FLOATS, *random_bad_floats(rng))
                for name in rules.non_finite.get(path, ()):  # allowed there: not a case
                    bad = tuple(v for v in bad if not sense.NON_FINITE[name](v))
                for value in bad:
                    yield f"{path}[{index}]={value}", {path: (index, value)}, path
        elif kind == "i":
            negative = (-1, -(2**31), -int(rng.integers(2, 2**31)))
            for index in positions(leaf, rng):
                for value in negative:
                    yield f"{path}[{index}]={value}", {path: (index, value)}, path
            if path in rules.at_most:
                limit = rules.at_most[path]
                beyond = (limit + 1, limit + int(rng.integers(2, 10**6)), 2**31 - 1)
                for index in positions(leaf, rng):
                    for value in beyond:
                        yield f"{path}[{index}]={value} > {limit}", {path: (index, value)}, path
    for buffer, count in rules.positive_filled.items():
        leaf = fitted.leaves[buffer]
        filled = int(fitted.leaves[count].values(fitted.payload["tree"]["data"])[0])
        assert filled == leaf.size  # a fitted state: the whole buffer is filled
        for index in positions(leaf, rng):
            for value in NOT_PRICES:
                yield f"{buffer}[{index}]={value}", {buffer: (index, value)}, buffer


GATE_CASES: list[tuple[str, dict, str]] = [
    *[
        (f"last_price={v}", {"last_price": v}, "last_price")
        for v in (-100.0, 0.0, -0.0, 1e308, 1.5e150, -1e308, math.nan, math.inf, -math.inf)
    ],
    *[
        (f"increment_var={v}", {"increment_var": v}, "increment_var")
        for v in (1e300, 1e151, -1.0, -1e-300, math.nan, math.inf)
    ],
    *[
        (f"min_increments={v}", {"min_increments": v}, "min_increments")
        for v in (10**12, MAX_MIN_INCREMENTS + 1, 2**63 - 1, -1)
    ],
    *[
        (f"increments_seen={v}", {"increments_seen": v}, "increments_seen")
        for v in (-1, -(2**63), 2**63, 2**64 - 1)
    ],
    *[
        (f"last_timestamp_ns={v}", {"last_timestamp_ns": v}, "last_timestamp_ns")
        for v in (2**64 - 1, 2**63, -1, -(2**63))
    ],
    *[
        (f"outliers={v}", {"outliers": v}, "outliers")
        for v in ([-5.0], [0.0], [1e308], [100.0, math.nan], [100.0, 101.0, 102.0])
    ],
    *[
        (f"jumps={v}", {"jumps": v}, "jumps")
        for v in ([2**64 - 1], [2**63], [-5], [NOW, NOW + 1, NOW + 2], [True], [1.5])
    ],
]
"""Absurd gate fields, refused whatever the restoring clock."""


def clock_cases(horizon: int) -> list[tuple[str, dict, str]]:
    """Timestamps beyond the horizon of the restoring clock ``NOW``."""
    far = (NOW + horizon + 1, NOW + 10 * horizon, NOW + 100 * 365 * 86_400 * 10**9)
    return [
        *[(f"last_timestamp_ns=now+{v - NOW}", {"last_timestamp_ns": v}, "last_timestamp_ns")
          for v in far],
        *[(f"jumps=[now+{v - NOW}]", {"jumps": [v]}, "jumps") for v in far],
    ]  # fmt: skip


def test_resealed_nonsense_is_refused_by_name(fitted, tmp_path):
    """At least 2,000 re-sealed payloads, each refused with the field's name, none silently
    loaded, none slow."""
    fp = fitted.functional
    fuzz = Fuzz()
    rng = np.random.default_rng(20261207)
    for name, changes, field in state_cases(fitted, rng):
        fuzz.refused(fp.state_from_bytes, fitted.with_values(changes), field, name)
    state_level = fuzz.cases
    predictor = UniversalPredictor(functional=fp, clock=lambda: NOW)
    before = predictor.state

    def load(data: bytes) -> None:
        predictor._restore(snap.open_snapshot(data, "fuzz"), "fuzz")

    horizon = fp.config.timestamp_horizon_ns
    for name, fields, field in GATE_CASES + clock_cases(horizon):
        fuzz.refused(load, fitted.with_gate(**fields), field, name)
    for name in ("accepted_ticks", "dropped_ticks"):
        for value in (-1, 2**63):
            fuzz.refused(load, fitted.with_host(**{name: value}), name, f"{name}={value}")
    assert predictor.state is before  # nothing was restored by a refused load
    # A few through the public path, from files.
    for name, fields, field in clock_cases(horizon)[:2] + GATE_CASES[:3]:
        fuzz.refused(
            lambda d: restore(d, tmp_path, clock=lambda: NOW, functional=fp),
            fitted.with_gate(**fields),
            field,
            name,
        )
    elapsed = time.perf_counter() - fuzz.started
    print(f"{fuzz.cases} cases ({state_level} leaf-level), {elapsed:.1f} s")
    assert fuzz.cases >= MIN_CASES, fuzz.cases


def test_timestamps_are_bounded_by_the_restoring_clock_only(fitted, tmp_path):
    """A stamp at the horizon loads; beyond it loads only into a replay (no clock)."""
    fp = fitted.functional
    horizon = fp.config.timestamp_horizon_ns
    at_horizon = fitted.with_gate(last_timestamp_ns=NOW + horizon, jumps=[NOW + horizon])
    restored = restore(at_horizon, tmp_path, clock=lambda: NOW, functional=fp)
    assert restored.gate.last_timestamp_ns == NOW + horizon
    beyond = fitted.with_gate(last_timestamp_ns=NOW + horizon + 1)
    with pytest.raises(IntegrityError, match="last_timestamp_ns"):
        restore(beyond, tmp_path, clock=lambda: NOW, functional=fp)
    replay = restore(beyond, tmp_path, clock=None, functional=fp)
    assert replay.gate.last_timestamp_ns == NOW + horizon + 1
