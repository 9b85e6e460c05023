"""Bundled series (data/, verified against data/MANIFEST.json) and series from installed packages.

    >>> from usp.io.data import load_series, available_series
    >>> nile = load_series("nile")          # bundled, checksum-verified
    >>> sp500 = load_series("sp500")        # the arch package's copy, loaded at run time

``index_order`` and ``check_price_series`` are the input checks of ``usp backtest``/``usp tune``:
time order of the index (no repeated time stamps) and the range of a price series.

The S&P 500 and NASDAQ series ship with the ``arch`` package without a stated licence, so they
are read from the installed package, never copied into this repository.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from usp.contracts.errors import IntegrityError

PACKAGE_SERIES = {"sp500": "arch.data.sp500", "nasdaq": "arch.data.nasdaq"}

MAX_STEP_FACTOR = 1e6
"""The largest one-step move, up or down, ``check_price_series`` accepts:
``|log(x_t / x_{t-1})| <= log(MAX_STEP_FACTOR)``. No market moves a million-fold in one step,
so a larger step is a damaged value (``1e300`` or ``1e-300`` in a series near 100, a lost
exponent), not data. The rule is scale-free: a series in any unit passes or fails alike."""


@dataclass(frozen=True)
class Series:
    """A univariate series: ``index`` (time stamps, years or steps), ``values``, and metadata."""

    name: str
    index: np.ndarray
    values: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.values)


def data_dir() -> Path:
    """The bundled data folder: ``$USP_DATA_DIR`` or ``data/`` beside the package."""
    return Path(os.environ.get("USP_DATA_DIR", Path(__file__).resolve().parents[2] / "data"))


def manifest() -> dict[str, dict[str, Any]]:
    return json.loads((data_dir() / "MANIFEST.json").read_text())


def available_series() -> list[str]:
    return sorted(manifest()) + sorted(PACKAGE_SERIES)


def load_series(name: str) -> Series:
    """A bundled series (checksum-verified) or one of ``PACKAGE_SERIES``."""
    if name in PACKAGE_SERIES:
        return _load_package_series(name)
    entries = manifest()
    if name not in entries:
        raise KeyError(f"unknown series {name!r}; available: {', '.join(available_series())}")
    entry = entries[name]
    path = data_dir() / entry["file"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != entry["sha256"]:
        raise IntegrityError(f"{path}: sha256 {digest} does not match MANIFEST.json")
    index, values = read_csv_columns(path)
    return Series(name=name, index=index, values=values, metadata=entry)


def read_csv_columns(path: str | Path, column: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """First column as the index and ``column`` (default: the last) as float values.

    Raises ``ValueError`` with the file, line and column on anything it cannot read.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header or len(header) < 2:
            raise ValueError(f"{path}: expected a header with an index column and a value column")
        target = header[-1] if column is None else column
        if target not in header:
            raise ValueError(f"{path}: no column {target!r}; columns are {header}")
        col = header.index(target)
        index, values = [], []
        for line, row in enumerate(reader, start=2):
            try:
                values.append(float(row[col]))
            except (IndexError, ValueError):
                raise ValueError(
                    f"{path}:{line}: column {target!r} is not a number: {row}"
                ) from None
            index.append(row[0])
    index_array = np.array(index)
    try:
        index_array = index_array.astype(float)
    except ValueError:
        pass  # dates or labels stay strings
    return index_array, np.array(values, dtype=float)


def index_keys(index: np.ndarray) -> np.ndarray | None:
    """Sort keys for an index as ``read_csv_columns`` or ``load_series`` returns it, or None.

    Numbers are their own keys (finite ones only). Strings that all parse as ISO 8601 dates or
    times (``datetime.fromisoformat``: ``2024-01-31``, ``2024-01-31 16:00``,
    ``2024-01-31T16:00:00+01:00``) become int64 microseconds (offsets honoured; all naive or all
    with an offset). Anything else is a label: no order to check, None.
    """
    index = np.asarray(index)
    if index.dtype.kind in "iuf":
        keys = index.astype(float)
        return keys if bool(np.all(np.isfinite(keys))) else None
    if index.dtype.kind == "M":
        return index.astype("datetime64[us]").astype(np.int64)
    try:
        stamps = [datetime.fromisoformat(str(text).strip()) for text in index]
    except ValueError:
        return None
    aware = {stamp.tzinfo is not None for stamp in stamps}
    if len(aware) > 1:
        return None  # naive and offset times do not compare
    epoch = datetime(1970, 1, 1, tzinfo=UTC if aware == {True} else None)
    micro = timedelta(microseconds=1)
    return np.array([(stamp - epoch) // micro for stamp in stamps], dtype=np.int64)


@dataclass(frozen=True)
class IndexOrder:
    """How an index's rows stand to time order (``index_order``).

    ``comparable``: the index is numbers or ISO dates (else labels: nothing below is checked).
    ``repeated``: positions of the first repeated value, every row of it (empty: none); the
    first repeated value is the one whose second row comes first. ``order``: the stable
    permutation into time order (``arange`` when the rows are in order, or for labels).
    ``first_unsorted``: the first position whose time is before the previous row's (or -1).
    """

    comparable: bool
    repeated: np.ndarray
    order: np.ndarray
    first_unsorted: int

    @property
    def moved(self) -> int:
        """How many rows sorting moves."""
        return int(np.count_nonzero(self.order != np.arange(len(self.order))))


def index_order(index: np.ndarray) -> IndexOrder:
    """Repeated values and time order of an index (see ``IndexOrder``, ``index_keys``)."""
    keys = index_keys(index)
    n = len(index)
    if keys is None:
        return IndexOrder(False, np.array([], dtype=int), np.arange(n), -1)
    order = np.argsort(keys, kind="stable")
    ranked = keys[order]
    repeats = order[1:][ranked[1:] == ranked[:-1]]  # rows whose value an earlier row has
    repeated = (
        np.flatnonzero(keys == keys[repeats.min()]) if repeats.size else np.array([], dtype=int)
    )
    backwards = np.flatnonzero(keys[1:] < keys[:-1])
    return IndexOrder(True, repeated, order, int(backwards[0]) + 1 if backwards.size else -1)


def check_price_series(
    values: np.ndarray, source: str, rows: np.ndarray | None = None, unit: str = "row"
) -> None:
    """Refuse (``ValueError`` naming the row) a series the predictor cannot model:

    - a non-finite value (NaN, inf; as ``UniversalPredictor.fit_history``);
    - a value <= 0: branches A-C model log-prices;
    - a one-step move beyond ``MAX_STEP_FACTOR``-fold, up or down (a damaged value);
    - an increment whose square overflows (as ``fit_history``: a series near 1e155 or above).

    ``rows[i]`` names value ``i`` in messages, as ``{source}, {unit} {rows[i]}`` (default:
    ``i + 1``); the first offending row of the first rule broken is named.
    """
    values = np.asarray(values, dtype=float)
    rows = np.arange(1, len(values) + 1) if rows is None else np.asarray(rows)

    def at(i: int) -> str:
        return f"{source}, {unit} {rows[i]}"

    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ValueError(
            f"{at(int(bad[0]))}: value {values[bad[0]]} is not finite "
            f"({bad.size} non-finite value(s) in all)"
        )
    bad = np.flatnonzero(values <= 0)
    if bad.size:
        raise ValueError(
            f"{at(int(bad[0]))}: value {values[bad[0]]:g} <= 0 ({bad.size} value(s) <= 0 in all); "
            "the predictor's branches model log-prices and need a positive series (shift or "
            "rescale it)"
        )
    steps = np.abs(np.diff(np.log(values)))
    bad = np.flatnonzero(steps > np.log(MAX_STEP_FACTOR))
    if bad.size:
        i = int(bad[0]) + 1
        raise ValueError(
            f"{at(i)}: {values[i]:g} after {values[i - 1]:g} ({unit} {rows[i - 1]}) is a "
            f"10^{steps[i - 1] / np.log(10):.1f}-fold move; a one-step move beyond "
            f"{MAX_STEP_FACTOR:g}-fold is a damaged value, not a price"
        )
    with np.errstate(over="ignore"):
        bad = np.flatnonzero(~np.isfinite(np.diff(values) ** 2))
    if bad.size:
        i = int(bad[0]) + 1
        raise ValueError(
            f"{at(i)}: the increment from {values[i - 1]:g} ({unit} {rows[i - 1]}) to "
            f"{values[i]:g} is beyond floating-point range (its square overflows); rescale "
            "the series"
        )


def _load_package_series(name: str) -> Series:
    import importlib

    module = importlib.import_module(PACKAGE_SERIES[name])
    frame = module.load()
    close = frame["Adj Close"].dropna()
    return Series(
        name=name,
        index=close.index.strftime("%Y-%m-%d").to_numpy(),
        values=close.to_numpy(dtype=float),
        metadata={
            "source": f"{PACKAGE_SERIES[name]} (installed arch package), Adj Close",
            "licence": "not stated by the arch package: loaded at run time, not copied",
        },
    )
