"""Snapshots (usp.io.snapshot): bit-exact round trips, refusal of every damaged or foreign file,
fuzzing of the loader, and SIGKILL during writes.

One predictor fitted on the bundled Merton series is shared by the module.
"""

import os
import struct
import sys
import threading
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from usp import IntegrityError, MarketObservation, PredictorConfig, UniversalPredictor
from usp.api.functional import FunctionalPredictor
from usp.api.runtime import tree_digest
from usp.io import snapshot as snap
from usp.io.data import load_series
from usp.io.dump import read_emergency_dump

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kill_writer import run_kill_trials  # noqa: E402

SERIES = load_series("merton").values
HISTORY = 200
SNAPSHOT_TICK = 40
"""Ticks stepped after fit_history before the snapshot."""
FOLLOWING = 1000
"""Predictions compared after the restore (IO-4)."""


def obs(i: int) -> MarketObservation:
    price = float(SERIES[i % len(SERIES)])
    return MarketObservation(price=price, target=price, timestamp_ns=i + 1)


def same_bits(a, b) -> bool:
    """Equal bit for bit: every leaf's dtype, shape and bytes (PRNG keys by their data)."""
    return tree_digest(a) == tree_digest(b)


def fresh(fitted, **kwargs) -> UniversalPredictor:
    """A new wrapper on the shared compiled predictor, at the fitted state and result."""
    predictor = UniversalPredictor(functional=fitted.functional, clock=None, **kwargs)
    predictor.state, predictor.last_result = fitted.state, fitted.last_result
    return predictor


def asset(states, i: int):
    """Asset ``i``'s slice of a batched state."""
    return jax.tree.map(lambda leaf: leaf[i], states)


def stack(states):
    """A batched state (leading asset axis) from single-asset states."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


@pytest.fixture(scope="module")
def fitted():
    predictor = UniversalPredictor(PredictorConfig(), clock=None)
    predictor.fit_history(SERIES[:HISTORY])
    for i in range(HISTORY, HISTORY + SNAPSHOT_TICK):
        predictor.step(obs(i))
    return predictor


@pytest.fixture(scope="module")
def sealed_state(fitted):
    """A snapshot's bytes and the state it holds (arrays are immutable: a reference suffices)."""
    return snap.encode(fitted._capture()), fitted.state


@pytest.fixture(scope="module")
def sealed(sealed_state) -> bytes:
    return sealed_state[0]


def test_round_trip_next_1000_predictions_are_bit_identical(fitted, tmp_path):
    path = tmp_path / "predictor.usp"
    status = fitted.save_snapshot(path, wait=True).result()
    assert status["ok"] and status["bytes"] == path.stat().st_size
    assert status["sha256"] == path.read_bytes()[-32:].hex()
    restored = UniversalPredictor.from_snapshot(path, clock=None)
    assert same_bits(restored.state, fitted.state)
    assert tree_digest(restored.last_result) == tree_digest(fitted.last_result)
    assert restored.gate == fitted.gate and restored._edges == fitted._edges
    ticks = range(HISTORY + SNAPSHOT_TICK, HISTORY + SNAPSHOT_TICK + FOLLOWING)
    uninterrupted = [tree_digest(fitted.step(obs(i))) for i in ticks]
    replayed = [tree_digest(restored.step(obs(i))) for i in ticks]
    pairs = zip(uninterrupted, replayed, strict=True)
    mismatches = [i for i, (a, b) in enumerate(pairs) if a != b]
    assert not mismatches, f"first mismatch at prediction {mismatches[0]}"
    assert same_bits(restored.state, fitted.state)
    # Restoring into the fitted predictor itself rewinds it to the snapshot, bit for bit.
    fitted.load_snapshot(path)
    assert tree_digest(fitted.step(obs(ticks[0]))) == uninterrupted[0]


def test_a_capture_holds_its_tick_while_the_predictor_steps_on(fitted, tmp_path):
    """The caller only takes references (IO-3): the arrays are immutable and the step never
    donates its inputs, so a capture encoded after further ticks still holds its own tick."""
    fp = fitted.functional
    predictor = fresh(fitted)
    taken, held = predictor._capture(), predictor.state
    inputs = jax.tree.leaves(held)
    for i in range(HISTORY + SNAPSHOT_TICK, HISTORY + SNAPSHOT_TICK + 5):
        predictor.step(obs(i))
    assert not any(leaf.is_deleted() for leaf in inputs), "the step donated an input buffer"
    states = stack([held] * 4)  # 4 assets: the batch size other tests compile
    batch_inputs = jax.tree.leaves(states)
    fp.step_batch(states, jnp.ones(4), jnp.ones(4))
    assert not any(leaf.is_deleted() for leaf in batch_inputs), "step_batch donated an input"
    path = tmp_path / "taken.usp"
    snap.write_atomic(path, snap.encode(taken))
    restored = UniversalPredictor.from_snapshot(path, functional=fp, clock=None)
    assert same_bits(restored.state, held) and not same_bits(restored.state, predictor.state)


def test_leaves_are_copied_bit_for_bit(fitted):
    """NaN payloads, -0.0 and subnormals survive: the codec copies bytes, never values."""
    odd = np.array([0x7FF8_0000_DEAD_BEEF, 0x8000_0000_0000_0000, 1], np.uint64).view(np.float64)
    fp = fitted.functional
    buffer = np.asarray(fitted.state.buffer).copy()
    buffer[:3] = odd
    state = eqx.tree_at(lambda s: s.buffer, fitted.state, jnp.asarray(buffer))
    assert np.asarray(state.buffer)[:3].view(np.uint64).tolist() == odd.view(np.uint64).tolist()
    data = fp.state_to_bytes(state)
    # The codec alone (usp.io.snapshot): a NaN price is not a sane state, so the full load
    # refuses it by name (usp.io.sense; tests/test_snapshot_sense.py).
    template = {"state": fp.state_template(), "last_result": None}
    back = snap.from_record(snap.open_snapshot(data)["tree"], template, "odd")["state"]
    assert np.asarray(back.buffer)[:3].view(np.uint64).tolist() == odd.view(np.uint64).tolist()
    assert same_bits(back, state)
    with pytest.raises(IntegrityError, match=r"\['state'\]\.buffer holds nan at index \(0,\)"):
        fp.state_from_bytes(data)


def test_batched_states_keyed_by_asset(fitted, tmp_path):
    fp = fitted.functional
    states = stack([fitted.state, fp.init_state(key=jax.random.key(1)), fitted.state])
    store = {f"asset-{i}": fp.state_to_bytes(asset(states, i)) for i in range(3)}
    restacked = stack([fp.state_from_bytes(store[f"asset-{i}"]) for i in range(3)])
    assert same_bits(restacked, states)
    fp.save_state(tmp_path / "batch.usp", states)
    assert same_bits(fp.load_state(tmp_path / "batch.usp"), states)


def test_periodic_checkpoints_keep_the_newest(fitted, tmp_path):
    predictor = UniversalPredictor(
        functional=fitted.functional, clock=None, checkpoint_every=5, checkpoint_dir=tmp_path
    )
    predictor.fit_history(SERIES[:128])
    for i in range(128, 128 + 23):
        predictor.step(obs(i))
        predictor.graceful_shutdown()  # each write finishes before the next is due
    names = sorted(p.name for p in tmp_path.glob("checkpoint-*.usp"))
    assert names == ["checkpoint-000000000015.usp", "checkpoint-000000000020.usp"]
    latest = snap.latest_checkpoint(tmp_path)
    assert latest is not None and latest.name == names[-1]
    (tmp_path / names[-1]).write_bytes(b"\x89USP garbage")
    assert snap.latest_checkpoint(tmp_path).name == names[0]  # falls back to a good one


def test_a_checkpoint_due_during_a_write_is_skipped(fitted, tmp_path, monkeypatch):
    """A slow disk must not queue copies of the state: while a write is pending, due
    checkpoints are skipped and counted."""
    release = threading.Event()
    write_atomic = snap.write_atomic

    def held_write(path, data):
        release.wait(timeout=60)
        write_atomic(path, data)

    monkeypatch.setattr(snap, "write_atomic", held_write)
    predictor = fresh(fitted, checkpoint_every=1, checkpoint_dir=tmp_path)
    for i in range(1000, 1003):
        predictor.step(obs(i))
    release.set()
    statuses = predictor.graceful_shutdown()
    assert predictor.checkpoints_skipped == 2
    assert [status["ok"] for status in statuses] == [True]
    assert [p.name for p in tmp_path.glob("checkpoint-*.usp")] == ["checkpoint-000000000001.usp"]


def _checkpoints_written(directory, ticks, data: bytes) -> list[Path]:
    """Checkpoint files named by ``ticks``, written in that order an hour ago, 1 s apart."""
    written = time.time_ns() - 3600 * 10**9
    paths = []
    for n, tick_count in enumerate(ticks):
        path = snap.checkpoint_path(directory, tick_count)
        path.write_bytes(data)
        os.utime(path, ns=(written + n * 10**9,) * 2)
        paths.append(path)
    return paths


def test_a_cold_started_predictor_keeps_and_finds_its_new_checkpoint(fitted, sealed, tmp_path):
    """After a cold start (or a rollback) the tick count in the names starts below the old
    run's: checkpoints are ordered by when they were written, so the new one is kept, the
    oldest is pruned, and the new one is what a restart restores."""
    stale = _checkpoints_written(tmp_path, (5000, 5005), sealed)
    predictor = fresh(fitted, checkpoint_every=1, checkpoint_dir=tmp_path)
    predictor.step(obs(HISTORY + SNAPSHOT_TICK))
    [status] = predictor.graceful_shutdown()
    new = snap.checkpoint_path(tmp_path, 1)
    assert status["ok"] and status["path"] == str(new)
    assert sorted(tmp_path.glob("checkpoint-*.usp")) == [new, stale[1]]
    assert snap.latest_checkpoint(tmp_path) == new
    restored = UniversalPredictor.from_snapshot(new, functional=fitted.functional, clock=None)
    assert same_bits(restored.state, predictor.state)
    assert not same_bits(restored.state, fitted.state)


def test_pruning_goes_by_write_time_and_leaves_temporary_files_alone(sealed, tmp_path):
    in_flight = tmp_path / ".checkpoint-000000000040.usp.k3x9q1.tmp"  # another write, mid-way
    in_flight.write_bytes(sealed[:100])
    paths = _checkpoints_written(tmp_path, (30, 20, 10), sealed)  # a rollback: names go down
    removed = snap.prune_checkpoints(tmp_path, keep=2)
    assert in_flight.read_bytes() == sealed[:100]
    assert removed == [paths[0]]
    assert sorted(tmp_path.glob("checkpoint-*.usp")) == sorted(paths[1:])
    assert snap.checkpoints_newest_first(tmp_path) == [paths[2], paths[1]]
    assert snap.latest_checkpoint(tmp_path) == paths[2]
    with pytest.raises(ValueError, match="keep must be >= 1"):
        snap.prune_checkpoints(tmp_path, keep=0)


def test_a_failed_step_after_the_write_is_reported(fitted, tmp_path):
    """``ok`` means the write and its ``after`` step (checkpoint pruning) both succeeded."""
    path = tmp_path / "after.usp"

    def fail(_: Path) -> None:
        raise PermissionError("cannot delete old checkpoints")

    status = snap.write_snapshot(path, fitted._capture(), after=fail)
    assert status["ok"] is False
    assert status["error"] == "PermissionError: cannot delete old checkpoints"
    # The file itself is durable and described.
    assert status["bytes"] == path.stat().st_size
    assert status["sha256"] == path.read_bytes()[-32:].hex()


def test_emergency_dumps_share_the_container(fitted, tmp_path):
    from usp.io.dump import write_emergency_dump

    path = write_emergency_dump(tmp_path, fitted.last_result, fitted.config, 7)
    assert read_emergency_dump(path)["timestamp_ns"] == 7
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(IntegrityError, match="SHA-256"):
        read_emergency_dump(path)


FUTURE = snap.SNAPSHOT_SCHEMA_VERSION + 1
"""A schema this usp cannot know."""


def _header(data: bytes) -> tuple:
    return snap.HEADER.unpack(data[: snap.HEADER.size])


def _reseal(body: bytes, version: int = snap.SNAPSHOT_SCHEMA_VERSION) -> bytes:
    import hashlib

    head = snap.HEADER.pack(snap.MAGIC, version, len(body))
    return head + body + hashlib.sha256(head + body).digest()


def _body(data: bytes) -> bytes:
    return data[snap.HEADER.size : -snap.DIGEST_BYTES]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d[:-1], "declares"),
        (lambda d: d[:10], "shorter than a header"),
        (lambda d: b"", "shorter than a header"),
        (lambda d: d + b"\x00", "declares"),
        (lambda d: d[:100] + bytes([d[100] ^ 1]) + d[101:], "SHA-256"),
        (lambda d: d[:-5] + bytes([d[-5] ^ 0x80]) + d[-4:], "SHA-256"),
        (lambda d: b"PK\x03\x04" + d[4:], "not a usp snapshot"),
        (lambda d: _reseal(_body(d), version=FUTURE), f"schema_version {FUTURE}"),
        # Schema 2 (one named field per branch) before branches as data: both versions named.
        (lambda d: _reseal(_body(d), version=3), "schema_version 3, but this usp reads version 4"),
        (lambda d: d[:12] + struct.pack("<Q", 2**63) + d[20:], "declares"),
    ],
)
def test_damaged_files_raise_integrity_error(sealed, tmp_path, damage, message):
    path = tmp_path / "damaged.usp"
    path.write_bytes(damage(sealed))
    with pytest.raises(IntegrityError, match=message):
        UniversalPredictor.from_snapshot(path, clock=None)


def test_other_config_or_mode_is_refused(fitted, sealed, tmp_path):
    path = tmp_path / "s.usp"
    path.write_bytes(sealed)
    other = UniversalPredictor(PredictorConfig(seed=1), clock=None)
    before = other.state
    with pytest.raises(IntegrityError, match=r"differing fields: seed \(snapshot 0, predictor 1\)"):
        other.load_snapshot(path)
    assert other.state is before  # nothing changed
    frozen_tau = FunctionalPredictor(fitted.config, learn_tau=False)
    with pytest.raises(IntegrityError, match="learn_tau"):
        UniversalPredictor.from_snapshot(path, functional=frozen_tau, clock=None)
    fitted.functional.save_state(path, fitted.state)
    with pytest.raises(IntegrityError, match="FunctionalPredictor state"):
        fitted.load_snapshot(path)


def test_wrong_payloads_with_valid_checksums_are_refused(sealed, fitted):
    import msgpack

    payload = msgpack.unpackb(_body(sealed), raw=False)
    cases = {
        "config": {**payload, "config": {**payload["config"], "epsilon": -1.0}},
        "missing config field": {
            **payload,
            "config": {k: v for k, v in payload["config"].items() if k != "seed"},
        },
        "kind": {**payload, "kind": "usp-emergency-dump"},
        "extra field": {**payload, "pickle": b"cos\nsystem\n"},
        "leaf renamed": {
            **payload,
            "tree": {
                **payload["tree"],
                "leaves": [["x", *e[1:]] for e in payload["tree"]["leaves"]],
            },
        },
        "data short": {
            **payload,
            "tree": {**payload["tree"], "data": payload["tree"]["data"][:-1]},
        },
        "host": {**payload, "host": {**payload["host"], "gate": {"last_price": "100"}}},
    }
    # Right fields and types, values that would break every later tick.
    gate = payload["host"]["gate"]
    for field, value in [
        ("increment_var", -1.0),
        ("increment_var", float("inf")),
        ("last_price", float("nan")),
        ("increments_seen", -3),
        ("outliers", [101.0, float("nan")]),
        ("outliers", [101.0, 102.0, 103.0]),
    ]:
        host = {**payload["host"], "gate": {**gate, field: value}}
        cases[f"gate {field}={value}"] = {**payload, "host": host}
    before = fitted.state
    for name, bad in cases.items():
        data = _reseal(msgpack.packb(bad, use_bin_type=True))
        with pytest.raises(IntegrityError):
            fitted._restore(snap.open_snapshot(data, name), name)
    assert fitted.state is before


def test_huge_declared_or_actual_size_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.usp"
    with open(path, "wb") as out:  # sparse: no disk used
        out.write(snap.HEADER.pack(snap.MAGIC, snap.SNAPSHOT_SCHEMA_VERSION, 2**40))
        out.truncate(snap.MAX_SNAPSHOT_BYTES + 1)
    start = time.perf_counter()
    with pytest.raises(IntegrityError, match="exceeds"):
        snap.read_snapshot(path)
    assert time.perf_counter() - start < 0.1


MUTATION = hs.one_of(
    hs.tuples(hs.just("flip"), hs.integers(0, 2**31), hs.integers(1, 255)),
    hs.tuples(hs.just("truncate"), hs.integers(0, 2**31)),
    hs.tuples(hs.just("insert"), hs.integers(0, 2**31), hs.binary(min_size=1, max_size=16)),
    hs.tuples(hs.just("delete"), hs.integers(0, 2**31), hs.integers(1, 64)),
    hs.tuples(hs.just("length"), hs.integers(0, 2**64 - 1)),
)


def mutate(data: bytes, mutation: tuple) -> bytes:
    kind, *args = mutation
    if kind == "length":
        return data[:12] + struct.pack("<Q", args[0]) + data[20:]
    at = args[0] % (len(data) + 1)
    if kind == "flip" and data:
        at = min(at, len(data) - 1)
        return data[:at] + bytes([data[at] ^ args[1]]) + data[at + 1 :]
    if kind == "truncate":
        return data[:at]
    if kind == "insert":
        return data[:at] + args[1] + data[at:]
    if kind == "delete":
        return data[:at] + data[at + args[1] :]
    return data


class Loader:
    """The whole load path of ``from_snapshot`` on bytes, with the slowest call timed."""

    def __init__(self, predictor):
        self.predictor, self.slowest = predictor, 0.0

    def __call__(self, data: bytes) -> None:
        start = time.perf_counter()
        try:
            self.predictor._restore(snap.open_snapshot(data, "fuzz"), "fuzz")
        finally:
            self.slowest = max(self.slowest, time.perf_counter() - start)


@pytest.fixture(scope="module")
def loader(fitted, sealed):
    load = Loader(UniversalPredictor(functional=fitted.functional, clock=None))
    load(sealed)  # first load traces the templates: not part of the bound
    load.slowest = 0.0
    return load


def random_mutation(rng: np.random.Generator) -> tuple:
    """One of the mutations of ``MUTATION``, drawn by a seeded generator (fast: no shrinking)."""
    kind = ("flip", "truncate", "insert", "delete", "length")[rng.integers(5)]
    at = int(rng.integers(2**31))
    if kind == "flip":
        return (kind, at, int(rng.integers(1, 256)))
    if kind == "insert":
        return (kind, at, rng.bytes(int(rng.integers(1, 17))))
    if kind == "delete":
        return (kind, at, int(rng.integers(1, 65)))
    if kind == "length":  # near the true length as often as absurd
        return (kind, int(rng.integers(2**64, dtype=np.uint64)) if rng.random() < 0.5 else at)
    return (kind, at)


FUZZ_CASES = 5000


def test_fuzzed_files_load_exactly_or_raise_integrity_error(sealed_state, loader):
    """5,000 seeded corruptions (1-3 byte flips, truncations, insertions, deletions, length-field
    rewrites): each file loads exactly (only when the bytes are unchanged) or raises
    ``IntegrityError``; any other exception fails the test; the slowest load is bounded."""
    sealed, state = sealed_state
    rng = np.random.default_rng(20240601)
    outcomes = {"exact": 0, "refused": 0}
    for _ in range(FUZZ_CASES):
        data = sealed
        for _ in range(int(rng.integers(1, 4))):
            data = mutate(data, random_mutation(rng))
        if data == sealed:
            loader(data)
            assert same_bits(loader.predictor.state, state)
            outcomes["exact"] += 1
            continue
        with pytest.raises(IntegrityError):
            loader(data)
        outcomes["refused"] += 1
    assert outcomes["refused"] >= FUZZ_CASES - 50, outcomes
    assert loader.slowest < 1.0


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutations=hs.lists(MUTATION.filter(lambda m: m[0] != "length"), min_size=1, max_size=3))
def test_resealed_payload_mutations_never_escape_as_other_errors(sealed, loader, mutations):
    """A payload altered *before* sealing (a buggy or hostile writer) passes the checksum; the
    structural checks must still turn every inconsistency into ``IntegrityError``."""
    body = _body(sealed)
    for mutation in mutations:
        body = mutate(body, mutation)
    try:
        loader(_reseal(body))
    except IntegrityError:
        pass
    assert loader.slowest < 1.0


def test_kill_during_write_never_loses_the_snapshot(fitted, tmp_path):
    """SIGKILL a child rewriting a snapshot with ``write_atomic``: the file at the path always
    verifies and is the old or the new snapshot. The naive in-place writer is the control."""
    fp = fitted.functional
    blobs = [snap.encode(fitted._capture()), fp.state_to_bytes(stack([fitted.state] * 16))]

    def read(path: Path) -> bytes:
        data = snap.read_verified_bytes(path)
        snap.open_snapshot(data, str(path))
        return data

    atomic = run_kill_trials("atomic", tmp_path / "atomic", blobs, read, (IntegrityError,))
    assert atomic["trials"] == 50 and atomic["lost"] == 0, atomic
    naive = run_kill_trials(
        "naive", tmp_path / "naive", blobs, read, (IntegrityError,), trials=10, seed=1
    )
    assert naive["lost"] >= 1, naive  # the experiment can detect a torn file
