# GENERATED FILE - DO NOT EDIT.
# Source: notebooks/10_persistence.md (code cells tagged `export`).
# Edit the notebook, then run `make export`.

"""Snapshots: a predictor's whole state in one verified, atomically written file.

See notebooks/10_persistence.md for the file layout (eq. layout), the atomic write protocol
and what each of its steps protects against, and the measured cost.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import msgpack
import numpy as np

from usp.contracts.config import SCHEMA_VERSION, PredictorConfig
from usp.contracts.errors import IntegrityError

_logger = logging.getLogger("usp")

MAGIC = b"\x89USP\r\n\x1a\n"
"""First 8 bytes of every file. The high-bit first byte catches 7-bit transfers, CR LF catches
newline translation, and ``\\x1a`` stops a Windows ``type`` (the recipe of PNG's signature)."""
SNAPSHOT_SCHEMA_VERSION = 4
"""Version of the layout and of the payload's fields; any change to either bumps it.
(2: the host record's tick gate keeps the prices of its recent outliers. 3: branches as data —
the state holds one parameter pytree per branch, in order, and one collapse streak and switch
per branch; the payload names the branches. 4: the refit policy — the state's refit clock,
the DGM's fitted domain, the result's domain flags and refit verdict.)"""
HEADER = struct.Struct("<8sIQ")
"""magic, schema_version (uint32), payload length (uint64); little-endian, 20 bytes."""
DIGEST_BYTES = 32
MAX_SNAPSHOT_BYTES = 1 << 36
"""64 GiB: a file larger than this is refused before any of it is read."""
SNAPSHOT_KIND = "usp-snapshot"


def seal(payload: dict[str, Any]) -> bytes:
    """``header ‖ msgpack(payload) ‖ SHA-256(header ‖ msgpack(payload))`` (eq. layout)."""
    body = msgpack.packb(payload, use_bin_type=True)
    head = HEADER.pack(MAGIC, SNAPSHOT_SCHEMA_VERSION, len(body))
    digest = hashlib.sha256(head)
    digest.update(body)
    return b"".join((head, body, digest.digest()))


def check_header(head: bytes, file_size: int, source: str) -> int:
    """The payload length, after the checks that need only the header and the file's size."""
    if file_size < HEADER.size + DIGEST_BYTES:
        raise IntegrityError(
            f"{source}: {file_size} bytes is shorter than a header and a digest "
            f"({HEADER.size + DIGEST_BYTES} bytes): truncated, or not a usp snapshot"
        )
    if file_size > MAX_SNAPSHOT_BYTES:
        raise IntegrityError(f"{source}: {file_size} bytes exceeds {MAX_SNAPSHOT_BYTES}")
    magic, version, length = HEADER.unpack(head[: HEADER.size])
    if magic != MAGIC:
        raise IntegrityError(f"{source}: not a usp snapshot (starts with {magic!r})")
    if version != SNAPSHOT_SCHEMA_VERSION:
        raise IntegrityError(
            f"{source}: schema_version {version}, but this usp reads version "
            f"{SNAPSHOT_SCHEMA_VERSION}; cold-start, or load it with the usp that wrote it"
        )
    held = file_size - HEADER.size - DIGEST_BYTES
    if length != held:
        raise IntegrityError(
            f"{source}: header declares a {length}-byte payload but {held} bytes follow it "
            "(truncated, or appended to)"
        )
    return length


def unpack_payload(body: bytes | memoryview, source: str) -> dict[str, Any]:
    """msgpack → dict, with every container length bounded by the body's size."""
    limit = len(body)
    try:
        payload = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            max_str_len=limit,
            max_bin_len=limit,
            max_array_len=limit,
            max_map_len=limit,
            max_ext_len=0,
        )
    except Exception as error:  # msgpack raises a zoo: ValueError, FormatError, StackError...
        raise IntegrityError(f"{source}: payload is not valid msgpack ({error!r})") from error
    if not isinstance(payload, dict):
        raise IntegrityError(f"{source}: payload is a {type(payload).__name__}, not a map")
    return payload


def unseal(data: bytes, *, source: str = "snapshot") -> dict[str, Any]:
    """Check the layout of eq. layout in order — sizes, magic, version, digest — then decode."""
    view = memoryview(data)
    length = check_header(view[: HEADER.size].tobytes(), len(view), source)
    if hashlib.sha256(view[:-DIGEST_BYTES]).digest() != view[-DIGEST_BYTES:]:
        raise IntegrityError(f"{source}: SHA-256 mismatch: the file is corrupted or was altered")
    payload = unpack_payload(view[HEADER.size : HEADER.size + length], source)
    if payload.get("schema_version") != SNAPSHOT_SCHEMA_VERSION:
        raise IntegrityError(f"{source}: payload schema_version disagrees with the header")
    return payload


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable: the entry itself lives in the directory."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_atomic(path: str | Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` so that a crash at any instant leaves the old file or the
    new one, never a mixture: temp file in the same directory, write, flush, fsync,
    ``os.replace``, fsync of the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


KEY_PREFIX = "key:"
"""Table dtype of a typed PRNG key: ``key:<impl>``; its bytes are ``jax.random.key_data``."""


def _is_key(leaf: Any) -> bool:
    return jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _leaf_bytes(leaf: jax.Array) -> jax.Array:
    """The leaf's memory as bytes, bit for bit (NaN payloads, -0.0, subnormals)."""
    if _is_key(leaf):
        leaf = jax.random.key_data(leaf)
    if leaf.dtype == jnp.bool_:
        return leaf.astype(jnp.uint8).ravel()  # bitcast refuses bool; 0/1 either way
    raw = jax.lax.bitcast_convert_type(leaf, jnp.uint8)  # (..., itemsize) for wide types
    if sys.byteorder == "big" and raw.ndim > leaf.ndim:  # the file is little-endian
        raw = raw[..., ::-1]
    return raw.ravel()


@jax.jit
def _gather_bytes(leaves: list[jax.Array]) -> jax.Array:
    """Every leaf in one byte vector: one device→host copy instead of one per leaf."""
    parts = [_leaf_bytes(leaf) for leaf in leaves]
    return jnp.concatenate(parts) if parts else jnp.zeros(0, jnp.uint8)


def _dtype_name(leaf: jax.Array) -> str:
    if _is_key(leaf):
        return KEY_PREFIX + str(jax.random.key_impl(leaf))
    return jnp.dtype(leaf.dtype).name


def leaf_table(tree: Any) -> list[list[Any]]:
    """``[path, dtype, shape]`` of every leaf, in flattening order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [
        [jax.tree_util.keystr(path), _dtype_name(leaf), list(leaf.shape)] for path, leaf in flat
    ]


@dataclass(frozen=True)
class HostTree:
    """A pytree copied to host memory: its leaf table and the bytes of all its leaves."""

    table: list[list[Any]]
    data: np.ndarray

    def record(self) -> dict[str, Any]:
        return {"leaves": self.table, "data": self.data.tobytes()}


_TABLES: dict[Any, list[list[Any]]] = {}


def to_host(tree: Any) -> HostTree:
    """Copy a pytree of arrays to host memory, blocking until it is computed (worker side)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    signature = (treedef, tuple((leaf.shape, leaf.dtype) for leaf in leaves))
    table = _TABLES.get(signature)
    if table is None:  # paths depend only on the structure: computed once per layout
        if len(_TABLES) > 32:
            _TABLES.clear()
        table = _TABLES[signature] = leaf_table(tree)
    return HostTree(table, np.asarray(_gather_bytes(leaves)))


def _malformed(source: str, what: str) -> IntegrityError:
    return IntegrityError(f"{source}: {what}")


def _decode_leaf(
    entry: Any, name: str, like: Any, data: bytes, offset: int, source: str
) -> tuple[jax.Array, int]:
    """One leaf, checked against its template ``like`` (an array or ``ShapeDtypeStruct``)."""
    if not (
        isinstance(entry, list)
        and len(entry) == 3
        and isinstance(entry[0], str)
        and isinstance(entry[1], str)
        and isinstance(entry[2], list)
    ):
        raise _malformed(source, f"malformed table entry where {name} was expected")
    path, dtype_name, shape = entry
    if path != name:
        raise _malformed(source, f"leaf {path!r:.80} where {name!r} was expected (other layout)")
    if shape != list(like.shape):
        raise _malformed(source, f"{name} has shape {shape!s:.80}, expected {list(like.shape)}")
    is_key = _is_key(like)
    raw_like = jax.eval_shape(jax.random.key_data, like) if is_key else like
    if is_key != dtype_name.startswith(KEY_PREFIX) or (
        not is_key and dtype_name != jnp.dtype(like.dtype).name
    ):
        raise _malformed(source, f"{name} has dtype {dtype_name!r:.40}, expected {like.dtype}")
    dtype = np.dtype(raw_like.dtype).newbyteorder("<")
    count = math.prod(raw_like.shape)
    end = offset + count * dtype.itemsize
    if end > len(data):
        raise _malformed(source, f"the data ends inside {name}")
    raw = np.frombuffer(data, np.uint8, end - offset, offset)
    if dtype == np.bool_ and raw.size and raw.max() > 1:
        raise _malformed(source, f"{name}: a boolean byte is neither 0 nor 1")
    value = raw.view(dtype).reshape(raw_like.shape)
    if not is_key:
        return jnp.asarray(value, dtype=like.dtype), end
    try:
        key = jax.random.wrap_key_data(value, impl=dtype_name[len(KEY_PREFIX) :])
    except Exception as error:  # an unknown implementation name, or data of the wrong size
        raise _malformed(source, f"{name}: not a valid PRNG key ({error!r:.80})") from error
    if key.dtype != like.dtype:
        raise _malformed(source, f"{name} is a {key.dtype} key, expected {like.dtype}")
    return key, end


def from_record(record: Any, template: Any, source: str) -> Any:
    """Rebuild a pytree shaped like ``template`` from a record of :meth:`HostTree.record`.

    Paths, dtypes, shapes and byte counts must all match the template, leaf by leaf: the
    structure comes from the code, never from the file.
    """
    if not (isinstance(record, dict) and set(record) == {"leaves", "data"}):
        raise _malformed(source, "the tree record is not a {leaves, data} map")
    table, data = record["leaves"], record["data"]
    if not (isinstance(table, list) and isinstance(data, bytes)):
        raise _malformed(source, "the tree record's leaves or data have the wrong type")
    expected, treedef = jax.tree_util.tree_flatten_with_path(template)
    if len(table) != len(expected):
        raise _malformed(source, f"{len(table)} leaves, expected {len(expected)} (other layout)")
    leaves, offset = [], 0
    for entry, (path, like) in zip(table, expected, strict=True):
        leaf, offset = _decode_leaf(entry, jax.tree_util.keystr(path), like, data, offset, source)
        leaves.append(leaf)
    if offset != len(data):
        raise _malformed(source, f"{len(data) - offset} bytes of data after the last leaf")
    return jax.tree_util.tree_unflatten(treedef, leaves)


@dataclass(frozen=True)
class Capture:
    """What a snapshot holds, taken on the caller's thread in microseconds: references to the
    state's (immutable) arrays and copies of the host-side values. A worker copies the arrays
    to host memory, encodes and writes them while the caller steps on."""

    meta: dict[str, Any]
    """Plain values (config, host-side fields, counters): msgpack-able as they are."""
    tree: Any
    """The pytree of arrays, as the step returned it (never donated, so never invalidated)."""


def capture(tree: Any, **meta: Any) -> Capture:
    """Caller side: hold ``tree`` and stamp the creation time; nothing is copied or waited for."""
    return Capture({"created_ns": time.time_ns(), **meta}, tree)


def encode(snapshot: Capture) -> bytes:
    """Worker side: the device→host copy, then the payload of eq. payload, sealed."""
    payload = {
        "kind": SNAPSHOT_KIND,
        "schema_version": SNAPSHOT_SCHEMA_VERSION,
        **snapshot.meta,
        "tree": to_host(snapshot.tree).record(),
    }
    return seal(payload)


def expect_fields(record: Any, spec: dict[str, tuple[type, ...]], where: str) -> dict[str, Any]:
    """``record`` as a map with exactly the fields of ``spec``, each of an allowed type."""
    if not isinstance(record, dict) or set(record) != set(spec):
        found = sorted(map(str, record)) if isinstance(record, dict) else type(record).__name__
        raise IntegrityError(f"{where}: expected fields {sorted(spec)}, found {found!s:.200}")
    for name, types in spec.items():
        value = record[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            allowed = " or ".join(t.__name__ for t in types)
            raise IntegrityError(f"{where}.{name}: expected {allowed}, found {value!r:.80}")
    return record


def expect_int_list(value: Any, length: int, where: str) -> list[int]:
    """A list of ``length`` integers (not booleans)."""
    if not (
        isinstance(value, list)
        and len(value) == length
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise IntegrityError(f"{where}: expected {length} integers, found {value!r:.80}")
    return value


def config_from_payload(payload: dict[str, Any], source: str) -> PredictorConfig:
    """The recorded config, validated; every field must be present (no silent defaults)."""
    record = payload.get("config")
    names = {f.name for f in dataclasses.fields(PredictorConfig)}
    if not isinstance(record, dict) or set(record) != names:
        raise IntegrityError(f"{source}: the config record does not have PredictorConfig's fields")
    try:
        config = PredictorConfig.from_dict(record)
    except (TypeError, ValueError) as error:
        raise IntegrityError(f"{source}: invalid config ({error})") from error
    if config.schema_version != SCHEMA_VERSION:
        raise IntegrityError(
            f"{source}: config schema_version {config.schema_version!r}, this usp uses "
            f"{SCHEMA_VERSION!r}"
        )
    return config


def check_same_config(recorded: PredictorConfig, config: PredictorConfig, source: str) -> None:
    """Refuse to restore a state into a predictor built from another config."""
    if recorded != config:
        differ = [
            f"{f.name} (snapshot {getattr(recorded, f.name)!r}, predictor "
            f"{getattr(config, f.name)!r})"
            for f in dataclasses.fields(PredictorConfig)
            if getattr(recorded, f.name) != getattr(config, f.name)
        ]
        raise IntegrityError(
            f"{source}: taken with another config; differing fields: {', '.join(differ)}"
        )


PAYLOAD_FIELDS: dict[str, tuple[type, ...]] = {
    "kind": (str,),
    "schema_version": (int,),
    "created_ns": (int,),
    "config": (dict,),
    "branches": (list,),
    "learn_tau": (bool,),
    "n_assets": (int, type(None)),
    "has_last_result": (bool,),
    "host": (dict, type(None)),
    "tree": (dict,),
}
"""The payload of eq. payload; ``branches`` names the predictor's branches in order (a state is
restored only into a predictor with the same ones); ``host`` holds a ``UniversalPredictor``'s
host-side fields (``usp.io.host_record``)."""
MAX_ASSETS = 1 << 31


def open_snapshot(data: bytes, source: str = "snapshot") -> dict[str, Any]:
    """Verify a snapshot's bytes and return its payload with its top-level fields checked."""
    payload = unseal(data, source=source)
    if payload.get("kind") != SNAPSHOT_KIND:
        raise IntegrityError(f"{source}: a {payload.get('kind')!r:.40} file, not a snapshot")
    expect_fields(payload, PAYLOAD_FIELDS, source)
    n_assets = payload["n_assets"]
    if n_assets is not None and not 1 <= n_assets <= MAX_ASSETS:
        raise IntegrityError(f"{source}: n_assets = {n_assets} is out of range")
    return payload


def read_verified_bytes(path: str | Path) -> bytes:
    """A file's bytes, its size and header checked before the rest is read: a file that is
    (or claims to be) absurdly large costs nothing. Unreadable files raise ``IntegrityError``."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(HEADER.size)
            check_header(head, size, source)
            rest = handle.read(size - HEADER.size + 1)  # one byte more: growth is caught
    except OSError as error:
        raise IntegrityError(f"{source}: cannot read ({error})") from error
    return head + rest


def read_sealed(path: str | Path) -> dict[str, Any]:
    """The verified payload of any sealed file (snapshot or emergency dump)."""
    return unseal(read_verified_bytes(path), source=str(path))


def read_snapshot(path: str | Path) -> dict[str, Any]:
    """:func:`open_snapshot` of a file."""
    return open_snapshot(read_verified_bytes(path), str(path))


def write_snapshot(
    path: str | Path, snapshot: Capture, after: Callable[[Path], None] | None = None
) -> dict[str, Any]:
    """Encode, hash and atomically write; report the outcome as a status dict, never raise.

    ``after(path)`` runs once the file is durable (checkpoint pruning uses it). ``ok`` is True
    only when the write and ``after`` both succeeded; ``bytes`` and ``sha256`` are set as soon
    as the file is durable, so a failed ``after`` reads ``ok=False`` with them set and ``error``.
    """
    start = time.perf_counter()
    status: dict[str, Any] = {"path": str(path), "ok": False, "bytes": 0, "sha256": None}
    try:
        data = encode(snapshot)
        write_atomic(path, data)
        status.update(bytes=len(data), sha256=data[-DIGEST_BYTES:].hex())
        if after is not None:
            after(Path(path))
        status["ok"] = True
    except Exception as error:  # a full disk must not kill the worker or the caller
        status["error"] = f"{type(error).__name__}: {error}"
        _logger.error("snapshot %s failed: %s", path, status["error"])
    status["seconds"] = time.perf_counter() - start
    return status


class SnapshotWriter:
    """Encodes, hashes and writes snapshots on one background thread, in submission order.

    ``submit`` returns at once with a ``Future`` whose result is the status dict of
    :func:`write_snapshot`: ``path, ok, bytes, sha256, seconds`` (and ``error`` when the write
    or the ``after`` step failed).
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usp-snapshot")
        self._futures: list[Future] = []

    def submit(
        self, path: str | Path, snapshot: Capture, after: Callable[[Path], None] | None = None
    ) -> Future:
        future = self._executor.submit(write_snapshot, Path(path), snapshot, after)
        self._futures = [f for f in self._futures if not f.done()] + [future]
        return future

    @property
    def busy(self) -> bool:
        """A write is queued or running."""
        return any(not f.done() for f in self._futures)

    def graceful_shutdown(self) -> list[dict[str, Any]]:
        """Wait for every pending write, stop the thread, return the pending writes' statuses."""
        pending, self._futures = self._futures, []
        self._executor.shutdown(wait=True)
        return [f.result() for f in pending]


CHECKPOINT_PATTERN = "checkpoint-*.usp"


def checkpoint_path(directory: str | Path, ticks: int) -> Path:
    """``checkpoint-<ticks, 12 digits>.usp``; see :func:`checkpoints_newest_first` for why the
    name does not say which checkpoint is the newest."""
    return Path(directory) / f"checkpoint-{ticks:012d}.usp"


def checkpoints_newest_first(directory: str | Path) -> list[Path]:
    """The checkpoints in ``directory``, the most recently written first.

    By modification time, not by name (the tick count restarts after a cold start and goes
    back after a rollback), nor by the payload's ``created_ns``: that would mean reading and
    verifying every file on every prune, and a damaged file has no time one can trust, while
    ``st_mtime_ns`` costs one ``stat`` and exists for every file. Equal times (a file system
    with a coarse clock) fall back to the name, which orders the checkpoints of one run.
    """
    found = []
    for path in Path(directory).glob(CHECKPOINT_PATTERN):
        try:
            found.append((path.stat().st_mtime_ns, path.name, path))
        except FileNotFoundError:  # removed since the glob
            continue
    return [path for _, _, path in sorted(found, reverse=True)]


def prune_checkpoints(directory: str | Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` most recently written checkpoints; returns what it deleted.
    Temporary files are left alone: one may be another write in flight."""
    if keep < 1:
        raise ValueError(f"prune_checkpoints: keep must be >= 1, got {keep}")
    removed = checkpoints_newest_first(directory)[keep:]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The most recently written checkpoint in ``directory`` that verifies, or None. A corrupted
    newest file (bit rot, a disk that lied about fsync) falls back to the one before it."""
    for path in checkpoints_newest_first(directory):
        try:
            read_snapshot(path)
        except IntegrityError as error:
            _logger.warning("skipping checkpoint %s: %s", path, error)
            continue
        return path
    return None


__all__ = [
    "CHECKPOINT_PATTERN",
    "DIGEST_BYTES",
    "HEADER",
    "KEY_PREFIX",
    "MAGIC",
    "MAX_ASSETS",
    "MAX_SNAPSHOT_BYTES",
    "PAYLOAD_FIELDS",
    "SNAPSHOT_KIND",
    "SNAPSHOT_SCHEMA_VERSION",
    "Capture",
    "HostTree",
    "SnapshotWriter",
    "capture",
    "check_header",
    "check_same_config",
    "checkpoint_path",
    "checkpoints_newest_first",
    "config_from_payload",
    "encode",
    "expect_fields",
    "expect_int_list",
    "from_record",
    "fsync_directory",
    "latest_checkpoint",
    "leaf_table",
    "open_snapshot",
    "prune_checkpoints",
    "read_sealed",
    "read_snapshot",
    "read_verified_bytes",
    "seal",
    "to_host",
    "unpack_payload",
    "unseal",
    "write_atomic",
    "write_snapshot",
]
