"""The host-side part of a ``UniversalPredictor`` snapshot: the record's schema and its checks.

A ``UniversalPredictor`` keeps, beside the state pytree, a few plain values on the host: its
tick gate (last accepted price and timestamp, the outlier statistics), the previous values of
the flags that warn on a rising edge, the events and dumps it has emitted, and its tick
counters. They travel in the snapshot payload's ``host`` map, next to the state tree; this
module says what that map must hold and refuses one that does not make sense.
"""

from __future__ import annotations

import math
from typing import Any

from usp.contracts.errors import IntegrityError
from usp.io.snapshot import expect_fields, expect_int_list

GATE_FIELDS: dict[str, tuple[type, ...]] = {
    "last_price": (float, type(None)),
    "last_timestamp_ns": (int, type(None)),
    "increment_var": (float,),
    "increments_seen": (int,),
    "degraded": (bool,),
    "min_increments": (int,),
    "outliers": (list,),
}
"""The tick gate's fields (``usp.api.gate.TickGate``) and their types."""
EDGE_FIELDS: dict[str, tuple[type, ...]] = {
    "emergency": (bool,),
    "mode_collapse": (bool,),
    "kurtosis_alert": (bool,),
}
"""The previous values of the flags whose rising edge warns or dumps."""
HOST_FIELDS: dict[str, tuple[type, ...]] = {
    "gate": (dict,),
    "edges": (dict,),
    "events": (list,),
    "dumps": (list,),
    "accepted_ticks": (int,),
    "dropped_ticks": (int,),
}


def read_host_record(record: Any, source: str, *, max_outliers: int) -> dict[str, Any]:
    """``record`` checked field by field, the gate for sense too; else ``IntegrityError``.

    ``max_outliers`` is the most outliers a gate can hold between two accepted ticks (one fewer
    than the ticks that make a level shift). Events come back as lists of three integers.
    """
    host = expect_fields(record, HOST_FIELDS, f"{source}: host")
    gate = expect_fields(host["gate"], GATE_FIELDS, f"{source}: gate")
    check_gate(gate, f"{source}: gate", max_outliers=max_outliers)
    expect_fields(host["edges"], EDGE_FIELDS, f"{source}: edges")
    for event in host["events"]:
        expect_int_list(event, 3, f"{source}: event")
    if not all(isinstance(d, str) for d in host["dumps"]):
        raise IntegrityError(f"{source}: dump paths must be strings")
    return host


def check_gate(gate: dict[str, Any], where: str, *, max_outliers: int) -> None:
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
    if len(gate["outliers"]) > max_outliers or not all(map(finite, gate["outliers"])):
        problems.append(f"outliers must be at most {max_outliers} finite prices")
    if problems:
        raise IntegrityError(f"{where}: " + "; ".join(problems))


__all__ = ["EDGE_FIELDS", "GATE_FIELDS", "HOST_FIELDS", "check_gate", "read_host_record"]
