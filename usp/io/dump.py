"""Emergency dumps: a msgpack record of the tick that switched the predictor to emergency mode.

Layout: ``msgpack(payload) || sha256(msgpack(payload))`` (32 bytes), written atomically
(temporary file, fsync, ``os.replace``). Never pickle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from usp.api.config import PredictorConfig
from usp.api.errors import IntegrityError
from usp.api.types import PredictionResult

DUMP_KIND = "usp-emergency-dump"
DIGEST_BYTES = 32


def result_to_dict(result: PredictionResult) -> dict[str, Any]:
    """Plain Python values of every field, plus ``mode``."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(result):
        value = np.asarray(getattr(result, field.name))
        out[field.name] = value.tolist()
    out["mode"] = result.mode if isinstance(result.mode, str) else list(result.mode)
    return out


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_emergency_dump(
    directory: str | Path, result: PredictionResult, config: PredictorConfig, timestamp_ns: int
) -> Path:
    """Write ``emergency-<timestamp_ns>.msgpack`` and return its path."""
    payload = msgpack.packb(
        {
            "kind": DUMP_KIND,
            "schema_version": config.schema_version,
            "timestamp_ns": int(timestamp_ns),
            "config": config.to_dict(),
            "result": result_to_dict(result),
        },
        use_bin_type=True,
    )
    path = Path(directory) / f"emergency-{int(timestamp_ns)}.msgpack"
    write_atomic(path, payload + hashlib.sha256(payload).digest())
    return path


def read_emergency_dump(path: str | Path) -> dict[str, Any]:
    """Load and verify a dump; ``IntegrityError`` on a bad checksum or structure."""
    data = Path(path).read_bytes()
    if len(data) <= DIGEST_BYTES:
        raise IntegrityError(f"{path}: truncated emergency dump ({len(data)} bytes)")
    payload, digest = data[:-DIGEST_BYTES], data[-DIGEST_BYTES:]
    if hashlib.sha256(payload).digest() != digest:
        raise IntegrityError(f"{path}: emergency dump checksum mismatch")
    record = msgpack.unpackb(payload, raw=False)
    if not isinstance(record, dict) or record.get("kind") != DUMP_KIND:
        raise IntegrityError(f"{path}: not a usp emergency dump")
    return record
