"""Start-up (OPS-3): how long a restarted service takes to its first prediction, cold and with the
persistent compilation cache, and what the first tick after the warm-up pass costs.

    python benchmarks/bench_startup.py [--quick]

A service restarts like this, in a fresh process: import usp, turn on the compilation cache,
load the asset's state from its snapshot (``FunctionalPredictor.load_state``), predict the next
tick; then ``warm_up`` the remaining compiled paths before the real stream resumes. Each figure
below is measured in its own child process, timed by this parent from ``Popen`` (interpreter
start and every import included) to the line the child prints when the event happened.

- ``cold_start_s``: start to first prediction with an empty cache directory (everything the
  first tick needs is compiled).
- ``cached_start_to_first_prediction_s``: the same with the directory the cold run filled,
  its compiled programs and the step its ``warm_up`` exported (``usp.api.programs``: no trace
  of the step either) (target <= 3 s on this CPU). ``cached_compiled``: programs it still had
  to compile (0 when the cache covers the start-up path).
- ``cache_speedup`` = cold_start_s / cached_start_to_first_prediction_s.
- ``import_floor_s`` (the peer): start to ``import usp`` done, nothing compiled; a start can get
  no faster than this. ``cached_over_floor`` = cached start / import floor.
- ``warm_up_cold_s`` / ``warm_up_cached_s``: ``warm_up`` after the first prediction (the scan
  ``fit_history`` uses, ``step_batch`` at the bucket sizes, and with the full run every branch's
  refit), without and with the cache.
- ``first_tick_ms_after_warmup``: the next real tick after warm-up (``first_tick_compiled``
  should be 0), beside ``steady_tick_ms`` (median of the following ticks).

The state restored is a cold ``init_state()`` snapshot: the compiled programs depend on shapes
and dtypes, not on values, so a fitted state starts up the same way. Medians over ``repeats``
(1 with --quick); the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import report

CHILD = """
import json, statistics, sys, time
from usp.api.runtime import (
    configure_numerics, count_compilations, enable_compilation_cache, warm_up,
)
configure_numerics()
if sys.argv[1] == "import-only":
    print("READY", flush=True)
    raise SystemExit
enable_compilation_cache(sys.argv[1])
import jax
from usp.api.functional import FunctionalPredictor
from usp.contracts.types import MarketObservation

fp = FunctionalPredictor()
price, stamp = 100.0, 1
with count_compilations() as first:
    state = fp.load_state(sys.argv[2])
    state, result = fp.step(state, MarketObservation(price, price, stamp))
    jax.block_until_ready(result.predicted_next)
print("READY", flush=True)
sizes = json.loads(sys.argv[3])
timings = warm_up(fp, n_assets=sizes, refit=sys.argv[4] == "refit")
ticks = []
with count_compilations() as after:
    for k in range(51):
        price += 0.1 * (-1) ** k
        stamp += 1
        start = time.perf_counter()
        state, result = fp.step(state, MarketObservation(price, price, stamp))
        jax.block_until_ready(result.predicted_next)
        ticks.append(time.perf_counter() - start)
print(json.dumps({
    "first_compiled": first.compiled,
    "warm_up_s": timings["total_s"],
    "warm_up_compiled": timings["compiled"],
    "first_tick_ms": 1e3 * ticks[0],
    "steady_tick_ms": 1e3 * statistics.median(ticks[1:]),
    "first_tick_compiled": after.compiled,
}))
"""


def child_env() -> dict[str, str]:
    env = dict(os.environ, JAX_ENABLE_X64="1")
    env.pop("XLA_FLAGS", None)
    return env


def timed_start(args: list[str]) -> tuple[float, dict]:
    """Seconds from Popen to the child's READY line, and the child's final JSON (if any)."""
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = None
    for line in child.stdout:
        if line.strip() == "READY":
            ready = time.perf_counter() - start
            break
    rest, errors = child.communicate(timeout=1800)
    if child.returncode != 0 or ready is None:
        raise RuntimeError(f"start-up child failed:\n{errors[-4000:]}")
    lines = rest.strip().splitlines()
    return ready, json.loads(lines[-1]) if lines else {}


def write_state(path: Path) -> None:
    """A cold state snapshot, written by a child so this process stays free of JAX."""
    code = (
        "import sys; from usp.api.functional import FunctionalPredictor; "
        "fp = FunctionalPredictor(); fp.save_state(sys.argv[1], fp.init_state())"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], env=child_env(), check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, no refit warm-up")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    sizes = [64] if args.quick else [64, 1024]
    refit = "no-refit" if args.quick else "refit"

    with tempfile.TemporaryDirectory(prefix="usp-startup-") as scratch:
        root = Path(scratch)
        snapshot = root / "state.usps"
        write_state(snapshot)
        floors, colds, cacheds, cold_runs, cached_runs = [], [], [], [], []
        for repeat in range(repeats):
            floors.append(timed_start(["import-only"])[0])
            cache = root / f"cache{repeat}"
            common = [str(snapshot), json.dumps(sizes), refit]
            seconds, run = timed_start([str(cache), *common])
            colds.append(seconds)
            cold_runs.append(run)
            seconds, run = timed_start([str(cache), *common])
            cacheds.append(seconds)
            cached_runs.append(run)
            print(
                f"[bench_startup] repeat {repeat}: cold {colds[-1]:.2f} s, "
                f"cached {cacheds[-1]:.2f} s, import floor {floors[-1]:.2f} s",
                file=sys.stderr,
                flush=True,
            )

    def median(runs: list[dict], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    cold, cached, floor = (statistics.median(v) for v in (colds, cacheds, floors))
    figures = {
        "cold_start_s": cold,
        "cached_start_to_first_prediction_s": cached,
        "cache_speedup": cold / cached,
        "import_floor_s": floor,
        "cached_over_floor": cached / floor,
        "cold_compiled": int(median(cold_runs, "first_compiled")),
        "cached_compiled": int(median(cached_runs, "first_compiled")),
        "warm_up_cold_s": median(cold_runs, "warm_up_s"),
        "warm_up_cached_s": median(cached_runs, "warm_up_s"),
        "warm_up_cached_compiled": int(median(cached_runs, "warm_up_compiled")),
        "first_tick_ms_after_warmup": median(cached_runs, "first_tick_ms"),
        "steady_tick_ms": median(cached_runs, "steady_tick_ms"),
        "first_tick_compiled": int(median(cached_runs, "first_tick_compiled")),
        "warm_up_refit": int(refit == "refit"),
        "warm_up_batch_sizes": ",".join(map(str, sizes)),
        "repeats": repeats,
        "target_cached_start_s": 3.0,
    }
    report(figures)


if __name__ == "__main__":
    main()
