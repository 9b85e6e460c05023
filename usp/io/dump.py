"""Emergency dumps: a msgpack record of the tick that switched the predictor to emergency mode.

Same container as snapshots (``usp.io.snapshot``: magic, schema version, length, msgpack
payload, SHA-256 trailer), written by the same atomic ``write_atomic``. Never pickle.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from usp.contracts.config import PredictorConfig
from usp.contracts.errors import IntegrityError
from usp.contracts.types import PredictionResult
from usp.io.snapshot import SNAPSHOT_SCHEMA_VERSION, read_sealed, seal, write_atomic

DUMP_KIND = "usp-emergency-dump"


def result_to_dict(result: PredictionResult) -> dict[str, Any]:
    """Plain Python values of every field, plus ``mode``."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(result):
        value = np.asarray(getattr(result, field.name))
        out[field.name] = value.tolist()
    out["mode"] = result.mode if isinstance(result.mode, str) else list(result.mode)
    return out


def write_emergency_dump(
    directory: str | Path, result: PredictionResult, config: PredictorConfig, timestamp_ns: int
) -> Path:
    """Write ``emergency-<timestamp_ns>.msgpack`` and return its path."""
    record = {
        "kind": DUMP_KIND,
        "schema_version": SNAPSHOT_SCHEMA_VERSION,
        "timestamp_ns": int(timestamp_ns),
        "config": config.to_dict(),
        "result": result_to_dict(result),
    }
    path = Path(directory) / f"emergency-{int(timestamp_ns)}.msgpack"
    write_atomic(path, seal(record))
    return path


def read_emergency_dump(path: str | Path) -> dict[str, Any]:
    """Load and verify a dump; ``IntegrityError`` on a bad checksum or structure."""
    record = read_sealed(path)
    if record.get("kind") != DUMP_KIND:
        raise IntegrityError(f"{path}: not a usp emergency dump")
    return record
