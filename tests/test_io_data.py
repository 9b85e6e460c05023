"""Bundled data (checksums, manifest), CSV errors, and the input checks of `usp backtest`."""

import hashlib
import shutil

import numpy as np
import pytest

from usp.api import IntegrityError
from usp.io.data import (
    MAX_STEP_FACTOR,
    available_series,
    check_price_series,
    data_dir,
    index_keys,
    index_order,
    load_series,
    manifest,
    read_csv_columns,
)


def test_manifest_covers_every_bundled_file():
    entries = manifest()
    csvs = {p.name for p in data_dir().glob("*.csv")}
    assert {e["file"] for e in entries.values()} == csvs
    for name, entry in entries.items():
        assert entry["source"] and entry["licence"], name
        digest = hashlib.sha256((data_dir() / entry["file"]).read_bytes()).hexdigest()
        assert digest == entry["sha256"], name


def test_synthetic_series_carry_true_parameters():
    ou = load_series("ou")
    assert ou.metadata["parameters"]["theta"] == 5.0 and len(ou) == 2000
    assert load_series("fbm_h07").metadata["parameters"]["hurst"] == 0.7
    nile = load_series("nile")
    assert nile.index[0] == 1871 and len(nile) == 100


def test_package_series_are_loaded_not_copied():
    assert "sp500" in available_series()
    assert not (data_dir() / "sp500.csv").exists()
    sp500 = load_series("sp500")
    assert len(sp500) > 5000 and np.all(np.isfinite(sp500.values))


def test_tampered_file_is_rejected(tmp_path, monkeypatch):
    shutil.copytree(data_dir(), tmp_path / "data")
    monkeypatch.setenv("USP_DATA_DIR", str(tmp_path / "data"))
    with (tmp_path / "data" / "nile.csv").open("a") as handle:
        handle.write("1971,1\n")
    with pytest.raises(IntegrityError, match="sha256"):
        load_series("nile")


def test_unknown_series_names_the_choices():
    with pytest.raises(KeyError, match="available: .*nile"):
        load_series("nope")


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("t,value\n0,1\n1,oops\n", None, r":3: column 'value' is not a number"),
        ("t,value\n0,1\n", "price", "no column 'price'"),
        ("value\n1\n", None, "expected a header"),
    ],
)
def test_csv_errors_are_clear(tmp_path, text, column, message):
    path = tmp_path / "series.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_csv_columns(path, column)


@pytest.mark.parametrize("name", available_series())
def test_bundled_series_pass_the_input_checks(name):
    """Every series is in time order without repeats; every positive one passes the range
    checks, and the others (fBm paths from 0, Gaussian regimes) fail only for being <= 0, as
    before these checks."""
    series = load_series(name)
    order = index_order(series.index)
    assert order.comparable and order.repeated.size == 0 and order.moved == 0, name
    if np.all(series.values > 0):
        check_price_series(series.values, name)
        steps = np.abs(np.diff(np.log(series.values)))
        assert steps.max() < np.log(MAX_STEP_FACTOR) / 4, name  # far inside the bound
    else:
        with pytest.raises(ValueError, match="<= 0"):
            check_price_series(series.values, name)


def test_index_keys_compare_numbers_and_iso_dates():
    np.testing.assert_array_equal(index_keys(np.array([3.0, 1.0])), [3.0, 1.0])
    days = index_keys(np.array(["2024-01-02", "2024-01-01", "2024-01-01T00:00"]))
    assert days[0] - days[1] == 86_400_000_000 and days[1] == days[2]
    offsets = index_keys(np.array(["2024-01-01T10:00+02:00", "2024-01-01T09:00+00:00"]))
    assert offsets[0] < offsets[1]  # 08:00 UTC before 09:00 UTC
    assert index_keys(np.array(["2024-01-01", "2024-01-01T10:00+02:00"])) is None  # mixed
    assert index_keys(np.array(["01/02/2024", "01/03/2024"])) is None  # not ISO: labels
    assert index_keys(np.array([1.0, np.nan])) is None


def test_index_order_finds_repeats_and_disorder():
    order = index_order(np.array([5.0, 1.0, 2.0, 1.0, 5.0]))
    # 1.0 (rows 1, 3) repeats before 5.0 does (rows 0, 4): its second row comes first
    assert order.repeated.tolist() == [1, 3] and order.first_unsorted == 1
    newest_first = index_order(np.array(["2024-01-03", "2024-01-02", "2024-01-01"]))
    assert newest_first.order.tolist() == [2, 1, 0] and newest_first.moved == 2
    assert newest_first.repeated.size == 0
    labels = index_order(np.array(["b", "a", "a"]))
    assert not labels.comparable and labels.moved == 0 and labels.repeated.size == 0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([1.0, np.inf, 2.0], "s, row 2: value inf is not finite"),
        ([1.0, 2.0, 0.0], "s, row 3: value 0 <= 0"),
        ([100.0, 1e300, 100.0], r"s, row 2: 1e\+300 after 100 \(row 1\) is a 10\^298.0-fold"),
        ([100.0, 101.0, 1e-300], r"s, row 3: 1e-300 after 101 \(row 2\) is a 10\^302.0-fold"),
        ([1.0, 1.000001e6], r"row 2: 1e\+06 after 1 \(row 1\) is a 10\^6.0-fold"),
        ([1e200, 3e200], r"row 2: the increment from 1e\+200 \(row 1\) to 3e\+200 is beyond"),
    ],
    ids=["inf", "zero", "1e300", "1e-300", "just-over-a-million-fold", "overflow"],
)
def test_price_series_range_checks(values, message):
    with pytest.raises(ValueError, match=message):
        check_price_series(np.array(values), "s")


def test_price_series_checks_name_the_given_rows():
    check_price_series(np.array([1.0, 1e6, 1.0]), "s")  # exactly a million-fold each way
    with pytest.raises(ValueError, match=r"^f.csv, line 7: value -1 <= 0"):
        check_price_series(np.array([1.0, -1.0]), "f.csv", np.array([9, 7]), "line")
