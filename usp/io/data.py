"""Bundled series (data/, verified against data/MANIFEST.json) and series from installed packages.

    >>> from usp.io.data import load_series, available_series
    >>> nile = load_series("nile")          # bundled, checksum-verified
    >>> sp500 = load_series("sp500")        # the arch package's copy, loaded at run time

The S&P 500 and NASDAQ series ship with the ``arch`` package without a stated licence, so they
are read from the installed package, never copied into this repository.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from usp.contracts.errors import IntegrityError

PACKAGE_SERIES = {"sp500": "arch.data.sp500", "nasdaq": "arch.data.nasdaq"}


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
