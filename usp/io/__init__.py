"""Persistence and data: snapshots (msgpack + SHA-256, atomic, asynchronous), emergency dumps,
bundled series."""

from .snapshot import (
    SNAPSHOT_SCHEMA_VERSION,
    SnapshotWriter,
    latest_checkpoint,
    read_snapshot,
    write_atomic,
)

__all__ = [
    "SNAPSHOT_SCHEMA_VERSION",
    "SnapshotWriter",
    "latest_checkpoint",
    "read_snapshot",
    "write_atomic",
]
