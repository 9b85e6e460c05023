"""Snapshots: what they cost the tick loop, the writer and a restart; and whether a kill loses one.

    python benchmarks/bench_snapshot.py [--quick]

Figures (float64, default ``PredictorConfig``; the predictor is stepped through the bundled
Merton series from a cold state, without ``fit_history``, which leaves the step's cost unchanged):

- ``hot_path_p99_added_ms``: p99 of ``UniversalPredictor.step`` with a non-blocking checkpoint
  every ``checkpoint_every`` accepted ticks, minus the p99 without, in the same run (the two
  predictors share one compiled step and are stepped alternately, tick by tick, so both see the
  same machine noise). ``checkpoint_every`` is small enough that snapshot ticks are more than 1 %
  of all ticks: the p99 includes them. ``snapshot_tick_added_median_ms``: median step time on
  snapshot ticks minus the median on the others. Target: hot_path_p99_added_ms <= 0.2.
- ``save_ms``: the caller's share of one snapshot: references to the state's and last result's
  arrays (immutable, never donated) and a copy of the host fields.
- ``copy_ms``: the worker's device→host copy of those arrays, one transfer (``to_host``). Peer:
  ``device_get_ms``, ``jax.device_get`` of the same leaves one by one;
  ``copy_speedup_vs_device_get`` = device_get_ms / copy_ms.
- ``write_ms``: the worker's whole share: the copy, msgpack encoding, SHA-256, temp file, fsync,
  ``os.replace``, fsync of the directory. ``encode_ms``: copy, encoding and hashing. Peer:
  ``savez_ms``, ``np.savez`` of the same leaves into memory (no checksum, no config);
  ``encode_vs_savez`` = savez_ms / encode_ms (above 1: ours is faster).
- ``load_verify_ms``: ``UniversalPredictor.load_snapshot``: read, size and header checks,
  SHA-256, bounded msgpack decode, every leaf checked against the template, host fields.
- ``snapshot_bytes``; ``savez_bytes`` for the same leaves.
- ``kill_trials`` / ``kill_trials_lost``: a child rewriting the snapshot with ``write_atomic`` is
  SIGKILLed at a random instant; a trial is lost when the file does not verify or is neither
  snapshot. Target 0. ``naive_kill_trials_lost``: the same with an in-place writer (control).

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _timing import median_seconds, report  # noqa: E402

from usp import IntegrityError, MarketObservation, PredictorConfig, UniversalPredictor  # noqa: E402
from usp.io import snapshot as snap  # noqa: E402
from usp.io.data import load_series  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from kill_writer import run_kill_trials  # noqa: E402

SERIES = load_series("merton").values
WARM_TICKS = 160


def tick(i: int) -> MarketObservation:
    price = float(SERIES[i % len(SERIES)])
    return MarketObservation(price=price, target=price, timestamp_ns=i + 1)


def hot_path(
    ticks: int, every: int, directory: Path
) -> tuple[dict[str, float], UniversalPredictor]:
    plain = UniversalPredictor(PredictorConfig(), clock=None)
    saving = UniversalPredictor(
        functional=plain.functional, clock=None, checkpoint_every=every, checkpoint_dir=directory
    )
    for i in range(WARM_TICKS):
        plain.step(tick(i))
        saving.step(tick(i))
    saving.graceful_shutdown()
    saving.accepted_ticks = 0  # count checkpoints from here
    without, with_snapshots, snapshot_tick = [], [], []
    for i in range(WARM_TICKS, WARM_TICKS + ticks):
        order = (plain, saving) if i % 2 else (saving, plain)
        for predictor in order:
            start = time.perf_counter()
            predictor.step(tick(i)).predicted_next.block_until_ready()
            elapsed = time.perf_counter() - start
            if predictor is plain:
                without.append(elapsed)
            else:
                with_snapshots.append(elapsed)
                snapshot_tick.append(saving.accepted_ticks % every == 0)
    statuses = saving.graceful_shutdown()
    assert all(s["ok"] for s in statuses), statuses
    without_ms, with_ms = 1e3 * np.array(without), 1e3 * np.array(with_snapshots)
    marked = np.array(snapshot_tick)
    p99_without, p99_with = (float(np.quantile(ms, 0.99)) for ms in (without_ms, with_ms))
    return {
        "checkpoint_every": every,
        "hot_path_ticks": ticks,
        "step_p99_without_ms": p99_without,
        "step_p99_with_ms": p99_with,
        "hot_path_p99_added_ms": p99_with - p99_without,
        "snapshot_tick_added_median_ms": float(
            np.median(with_ms[marked]) - np.median(with_ms[~marked])
        ),
        "checkpoints_skipped": saving.checkpoints_skipped,
    }, plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 20 if args.quick else 100
    workdir = Path(tempfile.mkdtemp(prefix="bench-snapshot-"))

    figures, predictor = hot_path(1500 if args.quick else 10_000, 25, workdir / "checkpoints")
    fp = predictor.functional
    path = workdir / "predictor.usp"
    capture = predictor._capture()
    tree = {"state": predictor.state, "last_result": predictor.last_result}
    leaves = jax.tree.leaves(tree)
    host_leaves = [np.asarray(jax.random.key_data(x) if snap._is_key(x) else x) for x in leaves]

    save = median_seconds(predictor._capture, repeats)
    copy = median_seconds(lambda: snap.to_host(tree), repeats)
    device_get = median_seconds(lambda: jax.device_get(leaves), repeats)
    write = median_seconds(lambda: snap.write_snapshot(path, capture), repeats)
    encode = median_seconds(lambda: snap.encode(capture), repeats)
    buffer = io.BytesIO()

    def savez() -> None:
        buffer.seek(0)
        buffer.truncate()
        np.savez(buffer, *host_leaves)

    savez_seconds = median_seconds(savez, repeats)
    restored = UniversalPredictor(functional=fp, clock=None)
    load = median_seconds(lambda: restored.load_snapshot(path), repeats)
    assert restored.state.ticks == predictor.state.ticks

    batch = jax.tree.map(lambda *xs: jnp.stack(xs), *([predictor.state] * 32))
    blobs = [path.read_bytes(), fp.state_to_bytes(batch)]

    def read_back(target: Path) -> bytes:
        data = snap.read_verified_bytes(target)
        snap.open_snapshot(data, str(target))
        return data

    atomic = run_kill_trials("atomic", workdir / "atomic", blobs, read_back, (IntegrityError,))
    naive = run_kill_trials("naive", workdir / "naive", blobs, read_back, (IntegrityError,))
    figures.update(
        save_ms=1e3 * save,
        device_get_ms=1e3 * device_get,
        copy_ms=1e3 * copy,
        copy_speedup_vs_device_get=device_get / copy,
        write_ms=1e3 * write,
        encode_ms=1e3 * encode,
        savez_ms=1e3 * savez_seconds,
        encode_vs_savez=savez_seconds / encode,
        load_verify_ms=1e3 * load,
        snapshot_bytes=path.stat().st_size,
        savez_bytes=buffer.getbuffer().nbytes,
        kill_trials=atomic["trials"],
        kill_trials_lost=atomic["lost"],
        naive_kill_trials=naive["trials"],
        naive_kill_trials_lost=naive["lost"],
        device=str(jax.devices()[0].platform),
    )
    report(figures)


if __name__ == "__main__":
    main()
