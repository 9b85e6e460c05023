"""Bundled data (checksums, manifest) and the command line's error handling."""

import hashlib
import shutil

import numpy as np
import pytest

from usp.api import IntegrityError
from usp.io.data import available_series, data_dir, load_series, manifest, read_csv_columns


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
