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
from usp.io.sense import MAX_MAGNITUDE
from usp.io.snapshot import expect_fields, expect_int_list

GATE_FIELDS: dict[str, tuple[type, ...]] = {
    "last_price": (float, type(None)),
    "last_timestamp_ns": (int, type(None)),
    "increment_var": (float,),
    "increments_seen": (int,),
    "degraded": (bool,),
    "min_increments": (int,),
    "outliers": (list,),
    "jumps": (list,),
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


MAX_MIN_INCREMENTS = 10_000
"""The most increments a restored gate may wait for before its first outlier test.
``TickGate`` uses a fixed 20 (σ is unknown before); a larger value switches the outlier test off
for that many ticks, and 10¹² switches it off for good."""
INT64_END = 1 << 63
"""Counts and timestamps are int64 quantities (ns since the epoch reach 2⁶³ in 2262); msgpack
also carries integers up to 2⁶⁴ − 1, which no sane writer produced."""


def read_host_record(
    record: Any,
    source: str,
    *,
    max_outliers: int,
    now_ns: int | None = None,
    horizon_ns: int | None = None,
) -> dict[str, Any]:
    """``record`` checked field by field, the gate for sense too; else ``IntegrityError``.

    ``max_outliers`` is the most outliers a gate can hold between two accepted ticks (one fewer
    than the ticks that make a level shift). ``now_ns``, the restoring predictor's clock (None
    for one without a clock), and ``horizon_ns``, its ``timestamp_horizon_ns``, bound the
    gate's timestamps (:func:`check_gate`). Events come back as lists of three integers.
    """
    host = expect_fields(record, HOST_FIELDS, f"{source}: host")
    gate = expect_fields(host["gate"], GATE_FIELDS, f"{source}: gate")
    check_gate(
        gate, f"{source}: gate", max_outliers=max_outliers, now_ns=now_ns, horizon_ns=horizon_ns
    )
    expect_fields(host["edges"], EDGE_FIELDS, f"{source}: edges")
    for event in host["events"]:
        expect_int_list(event, 3, f"{source}: event")
    if not all(isinstance(d, str) for d in host["dumps"]):
        raise IntegrityError(f"{source}: dump paths must be strings")
    for name in ("accepted_ticks", "dropped_ticks"):
        if not 0 <= host[name] < INT64_END:
            raise IntegrityError(f"{source}: host.{name} = {host[name]} is not in [0, 2**63)")
    return host


def _timestamp_problem(stamp: Any, latest: int | None) -> str | None:
    """Why ``stamp`` is no timestamp a sane clock wrote, or None."""
    if isinstance(stamp, bool) or not isinstance(stamp, int):
        return f"{stamp!r:.40} is not an integer"
    if not 0 <= stamp < INT64_END:
        return f"{stamp} is outside the int64 range of ns since the epoch [0, 2**63)"
    if latest is not None and stamp > latest:
        return f"{stamp} is more than the horizon ahead of the restoring clock (at most {latest})"
    return None


def check_gate(
    gate: dict[str, Any],
    where: str,
    *,
    max_outliers: int,
    now_ns: int | None = None,
    horizon_ns: int | None = None,
) -> None:
    """Raise ``IntegrityError`` unless a restored gate's fields make sense: a checksum proves
    the bytes are the writer's, not that the writer was right, and a negative variance or a NaN
    price would break every later tick. Each problem names its field.

    - ``last_price`` and the ``outliers``: positive (the gate refuses a price that is not) and
      at most ``MAX_MAGNITUDE`` (1e150, the bound of every floating leaf of the state,
      ``usp.io.sense``): the square of a price, and of the difference of two, stays finite;
    - ``increment_var``: in [0, ``MAX_MAGNITUDE``], like the state's own error variance;
    - ``increments_seen`` in [0, 2⁶³); ``min_increments`` in [0, ``MAX_MIN_INCREMENTS``];
    - ``last_timestamp_ns`` and the ``jumps``: integers in [0, 2⁶³), and, given the restoring
      clock ``now_ns`` and the horizon ``horizon_ns``, at most ``now_ns + horizon_ns``: the gate
      accepts no tick more than the horizon ahead of its clock, so a later stamp (2⁶⁴ − 1, a
      mistyped year) would make every correct tick after the restore look out of order.
    """

    def finite(x):
        return isinstance(x, float) and math.isfinite(x)

    def price(x):
        return finite(x) and 0.0 < x <= MAX_MAGNITUDE

    latest = None if now_ns is None or horizon_ns is None else now_ns + horizon_ns
    problems = []
    if gate["last_price"] is not None and not price(gate["last_price"]):
        problems.append(
            f"last_price {gate['last_price']!r} is not a positive price of at most "
            f"{MAX_MAGNITUDE:.0e}"
        )
    if not (finite(gate["increment_var"]) and 0.0 <= gate["increment_var"] <= MAX_MAGNITUDE):
        problems.append(
            f"increment_var {gate['increment_var']!r} is not in [0, {MAX_MAGNITUDE:.0e}]"
        )
    if not 0 <= gate["increments_seen"] < INT64_END:
        problems.append(f"increments_seen {gate['increments_seen']} is not in [0, 2**63)")
    if not 0 <= gate["min_increments"] <= MAX_MIN_INCREMENTS:
        problems.append(
            f"min_increments {gate['min_increments']} is not in [0, {MAX_MIN_INCREMENTS}]"
        )
    if gate["last_timestamp_ns"] is not None:
        problem = _timestamp_problem(gate["last_timestamp_ns"], latest)
        if problem is not None:
            problems.append(f"last_timestamp_ns {problem}")
    if len(gate["outliers"]) > max_outliers or not all(map(price, gate["outliers"])):
        problems.append(
            f"outliers {gate['outliers']!r:.120} are not at most {max_outliers} positive prices "
            f"of at most {MAX_MAGNITUDE:.0e}"
        )
    jumps = gate["jumps"]
    if len(jumps) > max_outliers:
        problems.append(f"jumps holds {len(jumps)} timestamps, at most {max_outliers}")
    for stamp in jumps:
        problem = _timestamp_problem(stamp, latest)
        if problem is not None:
            problems.append(f"jumps: {problem}")
            break
    if problems:
        raise IntegrityError(f"{where}: " + "; ".join(problems))


__all__ = [
    "EDGE_FIELDS",
    "GATE_FIELDS",
    "HOST_FIELDS",
    "INT64_END",
    "MAX_MIN_INCREMENTS",
    "check_gate",
    "read_host_record",
]
