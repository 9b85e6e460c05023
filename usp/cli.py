"""The ``usp`` command.

    usp backtest [FILE | --dataset NAME] [--column COL] [--config FILE] [--report DIR]
                                walk-forward backtest of the predictor and its baselines:
                                metrics table, plots, report.md/.html, metrics.json
    usp tune [FILE | --dataset NAME] --trials N [--seed S] [--out FILE]
                                Optuna TPE search; writes the best config as JSON (--config)
    usp bench [--quick]         step latency and batched throughput of the installed predictor
    usp demo [--report DIR]     the backtest on the default bundled series (DEMO_DATASET)
    usp datasets                list the series usp can load

FILE is a CSV with a header: the first column is the index (time stamps, dates), the value
column is ``--column`` (default: the last one). A config FILE is JSON or TOML: a flat mapping
of ``PredictorConfig`` fields, as ``usp tune`` writes it. Compiled programs are kept in JAX's
persistent cache (``$USP_CACHE_DIR``, default ``~/.cache/usp/jax``), so a second run of the
same configuration starts without compiling (``--no-cache`` turns this off).

Errors print one line, ``usp: error: ...``, and exit with status 2. ``backtest`` and ``tune``
check their input before any work (``INPUT_RULES``, shown by ``usp backtest --help``): the
``--report`` path, then the index's time order and the series' range, then the config.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from usp.api._memory import apply_xla_memory_defaults
from usp.api.runtime import configure_numerics, enable_compilation_cache
from usp.contracts.config import PredictorConfig
from usp.contracts.errors import USPError
from usp.io.data import (
    MAX_STEP_FACTOR,
    available_series,
    check_price_series,
    index_order,
    load_series,
    read_csv_columns,
)

DEMO_DATASET = "merton"
"""The demo's series: bundled, 2000 values of a jump-diffusion with known parameters."""
DEFAULT_REPORT_DIR = "usp-report"

_STEP = f"1e{round(np.log10(MAX_STEP_FACTOR))}"
INPUT_RULES = f"""\
input checks, before any work: each failure prints one `usp: error:` line
naming the row (a CSV's line, the header being line 1), exit status 2 and no
metrics.
  index    the first column, the time stamps. Numbers and ISO 8601 dates and
           times (2024-01-31, 2024-01-31 16:00, ...T16:00+01:00) are compared:
           a repeated value is refused, naming it and its rows; rows out of
           time order (newest first, shuffled) are sorted, and a `usp:
           warning:` line says how many rows moved. Any other index is a
           label column, taken in file order, unchecked. --last N takes the
           last N rows in time order.
  values   of the rows used: finite and > 0 (branches A-C model log-prices);
           no one-step move beyond {_STEP}-fold, up or down:
           |log(x[t] / x[t-1])| <= log({_STEP}). No market moves a million-fold
           in one step, so 1e300 or 1e-300 in an ordinary series is a damaged
           value; the rule does not depend on the series' unit. No increment
           may overflow when squared (as UniversalPredictor.fit_history)."""
REPORT_RULE = """\
  --report DIR  checked first: an existing file, or a DIR whose nearest
           existing parent is a file or not writable, is refused at once."""


class CommandError(Exception):
    """A usage or input problem: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line (and main() returns 2 instead of the
    parser calling sys.exit with usage text)."""

    def error(self, message: str) -> NoReturn:
        raise CommandError(message)


# -- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesInput:
    """The values to backtest, their time stamps and a name for tables and reports."""

    name: str
    values: np.ndarray
    timestamps: np.ndarray


def read_series(
    file: str | None, dataset: str | None, column: str | None, last: int | None
) -> SeriesInput:
    """A CSV file or a named dataset (exactly one), optionally only its ``last`` values, checked
    before any JAX work (``INPUT_RULES``): a repeated time stamp or a value the predictor cannot
    model raises ``ValueError`` naming the row; rows out of time order are sorted, with a
    ``usp: warning:`` line on stderr."""
    if (file is None) == (dataset is None):
        raise CommandError("give a CSV FILE or --dataset NAME (one of them)")
    if dataset is not None:
        if column is not None:
            raise CommandError("--column applies to a CSV FILE, not to --dataset")
        series = load_series(dataset)
        name, index, values = dataset, series.index, series.values
        source, unit, rows = dataset, "row", np.arange(1, len(values) + 1)
    else:
        index, values = read_csv_columns(file, column)
        name = Path(file).stem
        source, unit, rows = str(file), "line", np.arange(2, len(values) + 2)  # header: line 1
    index, values = np.asarray(index), np.asarray(values, float)
    order = index_order(index)
    if order.repeated.size:
        first, *others = rows[order.repeated].tolist()
        raise CommandError(
            f"{source}: index value {_shown(index[order.repeated[0]])} is repeated, at {unit}s "
            f"{', '.join(map(str, [first, *others[:4]]))}{' ...' if len(others) > 4 else ''}; "
            "each row needs its own time stamp"
        )
    if order.moved:
        i = order.first_unsorted
        print(
            f"usp: warning: {source}: index not in time order ({_shown(index[i])} at {unit} "
            f"{rows[i]} comes after {_shown(index[i - 1])}); sorted it: {order.moved} of "
            f"{len(rows)} rows moved",
            file=sys.stderr,
        )
        index, values, rows = index[order.order], values[order.order], rows[order.order]
    if last is not None:
        if last < 2:
            raise CommandError(f"--last must be at least 2, got {last}")
        index, values, rows = index[-last:], values[-last:], rows[-last:]
    # Say so now, not after a minute of compilation (walk_forward and fit_history check too).
    check_price_series(values, source, rows, unit)
    return SeriesInput(name, values, index)


def _shown(value: Any) -> str:
    """An index value as a message shows it: numbers without a trailing .0, text quoted."""
    if isinstance(value, float | np.floating):
        return f"{float(value):.15g}"
    return repr(str(value))


def check_report_dir(path: str | Path) -> None:
    """Refuse, before any work, a ``--report`` path the report could not be written to: an
    existing file, or a folder whose nearest existing parent is not a writable folder."""
    directory = Path(path)
    if os.path.lexists(directory):
        if not directory.is_dir():
            raise CommandError(f"--report {path}: exists and is not a directory")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise CommandError(f"--report {path}: directory is not writable")
        return
    parent = directory.absolute().parent
    while not os.path.lexists(parent):
        parent = parent.parent
    if not parent.is_dir():
        raise CommandError(f"--report {path}: cannot create it, {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CommandError(f"--report {path}: cannot create it, {parent} is not writable")


def load_config(path: str | None) -> PredictorConfig:
    """``PredictorConfig()``, or the one a JSON/TOML file describes (unknown fields and bad
    values raise ``ValueError`` naming them)."""
    if path is None:
        return PredictorConfig()
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"{file}: no such config file")
    text = file.read_text()
    try:
        if file.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as err:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise CommandError(
            f"{file}: not valid {file.suffix.lstrip('.') or 'JSON'}: {err}"
        ) from None
    if not isinstance(data, dict):
        raise CommandError(f"{file}: expected a mapping of PredictorConfig fields")
    try:
        return PredictorConfig.from_dict(data)
    except (ValueError, TypeError) as err:
        raise CommandError(f"{file}: {err}") from None


def _progress_bar(description: str, unit: str, enabled: bool) -> tuple[Callable, Callable]:
    """A tqdm bar on stderr driven by ``update(done, total)``; and its ``close``."""
    from tqdm import tqdm

    # disable=None: shown on a terminal, silent when stderr is a pipe or a file (CI logs).
    bar = tqdm(desc=description, unit=unit, disable=None if enabled else True, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return update, bar.close


def _enable_cache(enabled: bool) -> None:
    if enabled:
        enable_compilation_cache()


# -- commands -------------------------------------------------------------------------------


def _walk_forward_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"train_size": args.train_size, "test_size": args.test_size, "n_folds": args.folds}


def backtest_command(args: argparse.Namespace, series: SeriesInput | None = None) -> int:
    """Walk-forward backtest, metrics table on stdout, report files in ``args.report``.

    The report path, the series and the config are checked first: a bad one fails in
    milliseconds, before anything is compiled or fitted."""
    check_report_dir(args.report)
    series = series or read_series(args.file, args.dataset, args.column, args.last)
    config = load_config(args.config)
    configure_numerics()  # OPS-1 settings, before anything is traced
    from usp.eval.report import metrics_table, write_report
    from usp.eval.walk_forward import walk_forward

    _enable_cache(not args.no_cache)
    update, close = _progress_bar(f"backtest {series.name}", "step", not args.no_progress)
    try:
        backtest = walk_forward(
            series.values,
            config,
            name=series.name,
            timestamps=series.timestamps,
            progress=update,
            **_walk_forward_options(args),
        )
    finally:
        close()
    print(metrics_table(backtest))
    print(
        f"usp: {len(backtest.index)} forecasts in {backtest.seconds['usp']:.1f} s "
        "(compilation, fits and refits included)"
    )
    paths = write_report(backtest, args.report, config=config)
    print(f"report: {paths['html']} (and report.md, metrics.json, {len(paths) - 3} PNGs)")
    return 0


def tune_command(args: argparse.Namespace) -> int:
    """Optuna TPE search; the best config as JSON on stdout or in ``--out``."""
    series = read_series(args.file, args.dataset, args.column, args.last)
    base = load_config(args.config)
    if args.trials < 1:
        raise CommandError(f"--trials must be at least 1, got {args.trials}")
    configure_numerics()  # OPS-1 settings, before anything is traced
    from usp.eval.tune import tune

    _enable_cache(not args.no_cache)
    update, close = _progress_bar(f"tune {series.name}", "trial", not args.no_progress)
    try:
        result = tune(
            series.values,
            n_trials=args.trials,
            seed=args.seed,
            config=base,
            progress=update,
            **_walk_forward_options(args),
        )
    finally:
        close()
    rows = result.table()
    searched = [k for k in rows[0] if k not in ("number", "rmse", "rmse_over_naive", "seconds")]
    print(f"{series.name}: {len(rows)} trials (TPE, seed {args.seed}), best first")
    print(f"{'trial':>5} {'RMSE':>11} {'RMSE/RW':>8} {'s':>6}  " + " ".join(searched))
    for row in rows:
        shown = " ".join(f"{row[k]:.4g}" for k in searched)
        print(
            f"{row['number']:>5} {row['rmse']:>11.5g} {row['rmse_over_naive']:>8.4f} "
            f"{row['seconds']:>6.1f}  {shown}"
        )
    text = json.dumps(result.best_config.to_dict(), indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text)
        print(f"best config written to {args.out} (use it with --config)")
    else:
        print(text, end="")
    return 0


def bench_command(args: argparse.Namespace) -> int:
    """Latency and throughput of the installed predictor: a table, then one JSON line."""
    configure_numerics()  # OPS-1 settings, before anything is traced
    from usp.eval.throughput import measure_throughput, throughput_table

    config = load_config(args.config)
    _enable_cache(not args.no_cache)
    figures = measure_throughput(
        config, quick=args.quick, progress=lambda stage: print(f"... {stage}", file=sys.stderr)
    )
    print(throughput_table(figures))
    print(json.dumps(figures))
    return 0


def demo_command(args: argparse.Namespace) -> int:
    """``usp backtest --dataset DEMO_DATASET`` with the default settings."""
    check_report_dir(args.report)
    series = read_series(None, args.dataset or DEMO_DATASET, None, None)
    args.config, args.train_size, args.test_size, args.folds = None, None, None, None
    return backtest_command(args, series)


# -- parser ---------------------------------------------------------------------------------


def _add_series_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", metavar="FILE", help="CSV: index column, values")
    parser.add_argument("--dataset", metavar="NAME", help="a series from `usp datasets`")
    parser.add_argument("--column", metavar="COL", help="value column of FILE (default: last)")
    parser.add_argument("--last", type=int, metavar="N", help="use only the last N values")
    parser.add_argument("--config", metavar="FILE", help="PredictorConfig as JSON or TOML")
    parser.add_argument("--train-size", type=int, metavar="N", help="values per training window")
    parser.add_argument("--test-size", type=int, metavar="N", help="targets per fold")
    parser.add_argument("--folds", type=int, metavar="N", help="number of folds")


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--no-cache", action="store_true", help="do not use the persistent compilation cache"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="usp", description="Universal Stochastic Predictor")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    backtest = sub.add_parser(
        "backtest",
        help="walk-forward backtest and report",
        description="Walk-forward backtest of the predictor and its baselines: metrics table, "
        "plots, report.md/.html, metrics.json.",
        epilog=f"{INPUT_RULES}\n{REPORT_RULE}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_series_arguments(backtest)
    backtest.add_argument(
        "--report",
        default=DEFAULT_REPORT_DIR,
        metavar="DIR",
        help=f"report directory, created if absent (default: {DEFAULT_REPORT_DIR})",
    )
    _add_run_arguments(backtest)

    tune = sub.add_parser(
        "tune",
        help="Optuna TPE search over the predictor's config",
        epilog=INPUT_RULES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_series_arguments(tune)
    tune.add_argument("--trials", type=int, required=True, metavar="N")
    tune.add_argument("--seed", type=int, default=0, metavar="S")
    tune.add_argument("--out", metavar="FILE", help="write the best config here (JSON)")
    _add_run_arguments(tune)

    bench = sub.add_parser("bench", help="step latency and batched throughput")
    bench.add_argument("--quick", action="store_true", help="fewer ticks, one batch size")
    bench.add_argument("--config", metavar="FILE", help="PredictorConfig as JSON or TOML")
    _add_run_arguments(bench)

    demo = sub.add_parser("demo", help=f"backtest of the bundled {DEMO_DATASET!r} series")
    demo.add_argument("--dataset", metavar="NAME", help=f"default: {DEMO_DATASET}")
    demo.add_argument("--report", default=DEFAULT_REPORT_DIR, metavar="DIR")
    _add_run_arguments(demo)

    sub.add_parser("datasets", help="list the series usp can load")
    return parser


COMMANDS = {
    "backtest": backtest_command,
    "tune": tune_command,
    "bench": bench_command,
    "demo": demo_command,
}


def _one_line(err: BaseException) -> str:
    # KeyError's str() adds quotes around its message; newlines would break the one-line rule.
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(str(message).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``usp`` command; 0 on success, 2 (and one ``usp: error:`` line) on failure.

    The command owns its process, so it applies the XLA memory defaults first
    (``usp.api._memory``; a value the user exported wins). XLA reads them when the process
    creates its first GPU client, at the first JAX operation, so they must be in ``os.environ``
    before then. ``import usp`` sets nothing, and ``demo`` reads its series before the
    ``configure_numerics()`` call of the backtest it runs, so they go in here, before any
    command does anything.
    """
    apply_xla_memory_defaults()
    command = "this command"
    try:
        args = build_parser().parse_args(argv)
        command = f"`usp {args.command}`"
        if args.command == "datasets":
            print("\n".join(available_series()))
            return 0
        return COMMANDS[args.command](args)
    except (CommandError, USPError, ValueError, KeyError, OSError) as err:
        print(f"usp: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except ImportError as err:  # an optional dependency (arch for GARCH, optuna for tune)
        print(f"usp: error: {_one_line(err)}; install it to use {command}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
