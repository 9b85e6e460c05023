"""The ``usp`` command: one-line errors, and a backtest whose report and metrics are complete.

The backtest uses the same layout as tests/test_eval.py (default config, two folds of 32
targets after a 128-value training window), so in one pytest process the walk-forward
program compiles once for both files.
"""

import contextlib
import importlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import usp.cli
from usp.api import PredictorConfig
from usp.cli import INPUT_RULES, REPORT_RULE, load_config, main, read_series
from usp.eval.report import FIGURES, MODEL_ORDER, json_clean

TRAIN, TEST = PredictorConfig().wtmm_buffer_size, 32
LAYOUT = ["--train-size", str(TRAIN), "--test-size", str(TEST), "--no-progress", "--no-cache"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The module: ``usp.eval`` re-exports its function under the same name.
WALK_FORWARD = importlib.import_module("usp.eval.walk_forward")


def write_csv(path: Path, values, header: str = "t,price") -> Path:
    rows = "".join(f"{i},{v}\n" for i, v in enumerate(values))
    path.write_text(f"{header}\n{rows}")
    return path


def price_path(n: int, seed: int = 3) -> np.ndarray:
    return 100.0 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0.0, 0.01, n)))


def one_error_line(capsys) -> str:
    """The single stderr line of a failed command (and nothing on stdout)."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("usp: error: ")
    assert captured.out == ""
    return lines[0]


@pytest.fixture(autouse=True, scope="module")
def private_cache_dir(tmp_path_factory):
    """Every command here runs with --no-cache; should one not, its compiled programs go to a
    temporary directory, never to the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("USP_CACHE_DIR", str(tmp_path_factory.mktemp("jax-cache")))
        yield


@pytest.fixture
def series_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "gbm.csv", price_path(TRAIN + 1 + 2 * TEST))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["backtest", "missing.csv"], "missing.csv: no such file"),
        (["backtest", "--dataset", "nope"], "unknown series 'nope'; available: "),
        (["backtest"], "give a CSV FILE or --dataset NAME"),
        (["backtest", "--no-such-option"], "unrecognized arguments: --no-such-option"),
        (["tune", "--dataset", "ou"], "the following arguments are required: --trials"),
        (["tune", "--dataset", "ou", "--trials", "0"], "--trials must be at least 1"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["demo", "--dataset", "nope"], "unknown series 'nope'"),
        (["demo", "--dataset", "nile"], "walk-forward needs more than train_size + 1 = 257"),
        (["backtest", "--dataset", "ou", "--folds", "0"], "n_folds must be at least 1, got 0"),
        (["backtest", "--dataset", "ou", "--test-size", "0"], "test_size must be at least 1"),
    ],
)
def test_usage_errors_are_one_line(capsys, argv, message):
    assert main([*argv, "--no-cache"] if argv[0] in ("backtest", "demo") else argv) == 2
    assert message in one_error_line(capsys)


@pytest.mark.parametrize(
    ("text", "extra", "message"),
    [
        ("t,price\n0,1\n1,oops\n", [], "bad.csv:3: column 'price' is not a number"),
        ("t,price\n0,1\n", ["--column", "close"], "no column 'close'; columns are ['t', 'price']"),
        ("price\n1\n2\n", [], "expected a header with an index column and a value column"),
        ("t,price\n" + "".join(f"{i},{i}\n" for i in range(1, 51)), [], "got 50"),
        (
            "t,price\n0,1\n1,nan\n" + "".join(f"{i},1\n" for i in range(2, 300)),
            [],
            "bad.csv, line 3: value nan is not finite (1 non-finite value(s) in all)",
        ),
        ("t,price\n0,1\n1,2\n2,-0.5\n", [], "line 4: value -0.5 <= 0 (1 value(s) <= 0 in all)"),
    ],
    ids=["not-a-number", "missing-column", "no-index-column", "too-short", "nan", "negative"],
)
def test_bad_csv_is_one_line(tmp_path, capsys, text, extra, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    assert main(["backtest", str(path), *extra, "--no-cache"]) == 2
    assert message in one_error_line(capsys)


def dates(n: int) -> list[str]:
    return [str(day) for day in np.datetime64("2024-01-01") + np.arange(n)]


def write_rows(path: Path, index, values, header: str = "date,close") -> Path:
    rows = "".join(f"{i},{float(v)!r}\n" for i, v in zip(index, values, strict=True))
    path.write_text(f"{header}\n{rows}")
    return path


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if the command gets as far as JAX settings or the walk-forward: input
    errors must come first, in milliseconds."""

    def called(*args, **kwargs):
        raise AssertionError("the backtest started")

    monkeypatch.setattr(usp.cli, "configure_numerics", called)
    monkeypatch.setattr(WALK_FORWARD, "walk_forward", called)


N = TRAIN + 1 + 2 * TEST


def damaged(position: int, value: float) -> np.ndarray:
    values = price_path(N)
    values[position] = value
    return values


@pytest.mark.parametrize(
    ("index", "values", "message"),
    [
        (
            dates(N)[:5] + dates(N)[4:-1],
            price_path(N),
            "index value '2024-01-05' is repeated, at lines 6, 7; each row needs its own",
        ),
        (
            [*range(40), 7, *range(40, N - 1)],
            price_path(N),
            "index value 7 is repeated, at lines 9, 42; each row needs its own time stamp",
        ),
        (dates(N), damaged(TRAIN + 10, 1e300), f"line {TRAIN + 12}: 1e+300 after "),
        (dates(N), damaged(10, 1e300), "line 12: 1e+300 after "),
        (dates(N), damaged(TRAIN + 10, 1e-300), f"line {TRAIN + 12}: 1e-300 after "),
        (dates(N), damaged(10, 1e-300), "line 12: 1e-300 after "),
        (dates(N), damaged(N - 1, 2e8), f"line {N + 1}: 2e+08 after "),
    ],
    ids=[
        "duplicate-dates",
        "duplicate-steps",
        "1e300-test-window",
        "1e300-training-window",
        "1e-300-test-window",
        "1e-300-training-window",
        "million-fold-last",
    ],
)
def test_damaged_series_is_refused_before_any_work(
    tmp_path, capsys, no_work, index, values, message
):
    """One error line naming the row, exit 2, no metrics (no `null`): before any JAX work."""
    path = write_rows(tmp_path / "damaged.csv", index, values)
    assert main(["backtest", str(path), "--report", str(tmp_path / "r"), *LAYOUT]) == 2
    line = one_error_line(capsys)
    assert f"{path}, {message}" in line or f"{path}: {message}" in line, line
    assert "null" not in line and not (tmp_path / "r").exists()


def test_steps_within_a_million_fold_pass(tmp_path, capsys):
    """The step rule's bound itself passes; the dates' order is unchanged (no warning)."""
    values = price_path(N)
    values[10:] *= 0.9e6  # one step up almost a million-fold, then the same path
    path = write_rows(tmp_path / "ok.csv", dates(N), values)
    series = read_series(str(path), None, None, None)
    assert np.array_equal(series.values, values) and capsys.readouterr().err == ""


class _Stopped(Exception):
    """Raised by the stand-in walk-forward once it has recorded what it was given."""


@pytest.fixture
def recorded_walk_forward(monkeypatch):
    """walk_forward replaced: records its series and timestamps, then stops the command."""
    seen = {}

    def record(values, config, *, timestamps=None, **kwargs):
        seen.update(values=np.asarray(values), timestamps=np.asarray(timestamps))
        raise _Stopped

    monkeypatch.setattr(WALK_FORWARD, "walk_forward", record)
    return seen


@pytest.mark.parametrize("layout", ["reversed", "shuffled", "shuffled-steps"])
def test_unsorted_index_is_sorted_with_a_warning(tmp_path, capsys, recorded_walk_forward, layout):
    """Newest-first or shuffled rows: sorted into time order, one warning line that says how
    many rows moved; the backtest then sees the series in time order."""
    values = price_path(N)
    index = dates(N) if layout != "shuffled-steps" else list(range(N))
    perm = np.arange(N)[::-1] if layout == "reversed" else np.random.default_rng(1).permutation(N)
    path = write_rows(tmp_path / "unsorted.csv", [index[i] for i in perm], values[perm])
    with pytest.raises(_Stopped):
        main(["backtest", str(path), "--report", str(tmp_path / "r"), *LAYOUT])
    captured = capsys.readouterr()
    moved = int(np.count_nonzero(perm != np.arange(N)))
    assert moved == (N - N % 2 if layout == "reversed" else moved)  # the middle row stays
    assert captured.out == ""
    (warning,) = captured.err.strip().splitlines()
    assert warning.startswith(f"usp: warning: {path}: index not in time order (")
    assert warning.endswith(f"; sorted it: {moved} of {N} rows moved")
    np.testing.assert_array_equal(recorded_walk_forward["values"], values)
    assert list(recorded_walk_forward["timestamps"]) == index


def test_last_takes_the_latest_rows_after_sorting(tmp_path, capsys):
    values = price_path(50)
    path = write_rows(tmp_path / "newest-first.csv", dates(50)[::-1], values[::-1])
    series = read_series(str(path), None, None, 10)
    np.testing.assert_array_equal(series.values, values[-10:])
    assert list(series.timestamps) == dates(50)[-10:]
    assert "50 of 50 rows moved" in capsys.readouterr().err


def test_label_index_is_taken_in_file_order(tmp_path, capsys):
    """An index of neither numbers nor ISO dates: today's behaviour, file order, unchecked."""
    labels = ["b", "a", "a", "03/01/2024", "c"]
    path = write_rows(tmp_path / "labels.csv", labels, [1.0, 2.0, 3.0, 4.0, 5.0])
    series = read_series(str(path), None, None, None)
    assert list(series.values) == [1.0, 2.0, 3.0, 4.0, 5.0] and list(series.timestamps) == labels
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("where", ["existing-file", "under-a-file"])
def test_report_path_is_checked_before_any_work(tmp_path, capsys, series_csv, no_work, where):
    taken = tmp_path / "report.html"
    taken.write_text("not a directory")
    report = taken if where == "existing-file" else taken / "sub" / "dir"
    assert main(["backtest", str(series_csv), "--report", str(report), *LAYOUT]) == 2
    expected = (
        f"--report {report}: exists and is not a directory"
        if where == "existing-file"
        else f"--report {report}: cannot create it, {taken} is not a directory"
    )
    assert one_error_line(capsys) == f"usp: error: {expected}"
    assert main(["demo", "--report", str(report), "--no-progress", "--no-cache"]) == 2
    assert one_error_line(capsys) == f"usp: error: {expected}"
    assert taken.read_text() == "not a directory"


def test_backtest_help_documents_the_input_checks(capsys):
    with pytest.raises(SystemExit):
        main(["backtest", "--help"])
    help_text = capsys.readouterr().out
    assert INPUT_RULES in help_text and REPORT_RULE in help_text
    rules = " ".join(INPUT_RULES.split())
    for rule in ("is refused", "rows moved", "1e6-fold", "<= log(1e6)", "label", "overflow"):
        assert rule in rules, rule


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("unknown.json", '{"depth": 3}', "unknown field(s) ['depth']"),
        ("range.json", '{"cusum_h": -1.0}', "PredictorConfig.cusum_h = -1.0 is outside"),
        ("type.toml", 'wtmm_buffer_size = "big"', "wtmm_buffer_size must be int"),
        ("broken.json", '{"cusum_h": ', "broken.json: not valid json"),
        ("broken.toml", "cusum_h = = 2", "broken.toml: not valid toml"),
        ("list.json", "[1, 2]", "expected a mapping of PredictorConfig fields"),
        ("absent.json", None, "absent.json: no such config file"),
    ],
)
def test_bad_config_is_one_line(tmp_path, capsys, series_csv, name, text, message):
    config = tmp_path / name
    if text is not None:
        config.write_text(text)
    assert main(["backtest", str(series_csv), "--config", str(config), "--no-cache"]) == 2
    assert message in one_error_line(capsys)
    assert main(["bench", "--config", str(config), "--no-cache"]) == 2
    assert message in one_error_line(capsys)


def test_config_files_map_to_predictor_config(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("cusum_h = 4.0\nlog_sig_depth = 2\n")
    assert load_config(str(toml)) == PredictorConfig(cusum_h=4.0, log_sig_depth=2)
    as_json = tmp_path / "c.json"
    as_json.write_text(json.dumps(PredictorConfig(jko_tau=0.25).to_dict()))
    assert load_config(str(as_json)) == PredictorConfig(jko_tau=0.25)
    assert load_config(None) == PredictorConfig()


def test_json_clean_makes_strict_json():
    clean = json_clean({"a": np.float64("nan"), "b": [np.inf, np.int64(3)], "c": np.bool_(True)})
    assert clean == {"a": None, "b": [None, 3], "c": True}
    json.dumps(clean, allow_nan=False)


@pytest.fixture(scope="module")
def backtest_run(tmp_path_factory):
    """`usp tune --trials 1` on a CSV series (its first trial is the base config, enqueued),
    then `usp backtest --config` with the JSON it wrote: stdout of both, the report folder."""
    directory = tmp_path_factory.mktemp("cli")
    path = write_csv(directory / "gbm.csv", price_path(TRAIN + 1 + 2 * TEST))
    tuned, report = directory / "tuned.json", directory / "report"
    # capsys is function-scoped; the commands run once per module.
    with contextlib.redirect_stdout(io.StringIO()) as tune_out:
        assert main(["tune", str(path), "--trials", "1", "--out", str(tuned), *LAYOUT]) == 0
    argv = ["backtest", str(path), "--config", str(tuned), "--report", str(report), *LAYOUT]
    with contextlib.redirect_stdout(io.StringIO()) as backtest_out:
        code = main(argv)
    return code, backtest_out.getvalue(), report, tune_out.getvalue(), tuned


def test_backtest_prints_the_metrics_table(backtest_run):
    code, out, *_ = backtest_run
    assert code == 0
    assert f"gbm: {2 * TEST} one-step forecasts, no look-ahead" in out
    for label in ("usp (blend)", "random walk", "EWMA", "AR(1)", "AR-GARCH", "A Lévy", "D sig"):
        assert label in out
    assert "usp interval coverage (nominal → observed): 50% →" in out


def test_backtest_writes_a_complete_report(backtest_run):
    _, _, report, *_ = backtest_run
    for name in FIGURES:
        png = report / f"{name}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5_000, name
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["name"] == "gbm" and metrics["forecasts"] == 2 * TEST
    assert metrics["first_index"] == TRAIN + 1 and metrics["last_index"] == TRAIN + 2 * TEST
    assert set(metrics["metrics"]) == {*MODEL_ORDER, "A", "B", "C", "D"}
    usp = metrics["metrics"]["usp"]
    for key in ("rmse", "mae", "rmse_over_naive", "directional_accuracy", "coverage_90"):
        assert isinstance(usp[key], float), key
    assert metrics["metrics"]["naive"]["rmse_over_naive"] == 1.0
    assert 0.0 <= usp["coverage_50"] <= usp["coverage_90"] <= 1.0
    assert metrics["config"] == PredictorConfig().to_dict()
    assert {"emergency_mode_share", "regime_changes"} <= set(metrics["flags"])
    markdown = (report / "report.md").read_text()
    assert all(f"({name}.png)" in markdown for name in FIGURES)
    assert "| usp (blend) |" in markdown
    page = (report / "report.html").read_text()
    assert page.count("src='data:image/png;base64,iVBOR") == len(FIGURES)  # self-contained
    assert "<th>usp (blend)</th>" in page


def test_tuned_config_round_trips_through_backtest(backtest_run):
    """The JSON `usp tune` writes is a config `--config` reads; the backtest run with it
    scores the usp forecasts exactly as the tuning trial did."""
    _, _, report, tune_out, tuned = backtest_run
    assert "gbm: 1 trials (TPE, seed 0), best first" in tune_out
    assert load_config(str(tuned)) == PredictorConfig()
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["config"] == json.loads(tuned.read_text())
    trial_rmse = float(tune_out.splitlines()[2].split()[1])
    assert trial_rmse == pytest.approx(metrics["metrics"]["usp"]["rmse"], rel=1e-4)  # 5 digits


def test_console_script_reports_errors_in_one_line(tmp_path):
    """The installed `usp` entry point (a fresh process): exit status 2, one stderr line."""
    script = Path(sys.executable).with_name("usp")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "usp.cli"]
    done = subprocess.run(
        [*command, "backtest", str(tmp_path / "absent.csv")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"usp: error: {tmp_path / 'absent.csv'}: no such file"
    ]
    listed = subprocess.run([*command, "datasets"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and {"nile", "ou", "sp500"} <= set(listed.stdout.split())


def test_missing_optional_dependency_is_one_line(monkeypatch, capsys, series_csv):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` now raises ImportError
    assert main(["tune", str(series_csv), "--trials", "1", *LAYOUT]) == 2
    assert "install it to use `usp tune`" in one_error_line(capsys)
