"""OPS-1/OPS-2: the same seed and data give the same bits in two fresh processes; float32 agrees
with float64 within atol 1e-4 / rtol 1e-3; CPU agrees with GPU within atol 1e-7 / rtol 1e-6 (only
where a GPU exists). OPS-3: a second process with a warm compilation cache compiles nothing.

Each run is a fresh interpreter (``python -c WORKER``) fitting the predictor on the bundled Merton
series and running 384 held-out ticks; it prints one JSON line with SHA-256 digests of every
result leaf and of the final state. Three processes: A (float64, empty cache) and F (float32)
side by side, then B (float64, A's cache).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

FIT_LENGTH = 640
RUN_CHUNKS = 3
"""Held-out ticks run in chunks of one buffer length (128): the scan fit_history compiled."""
F32_ATOL, F32_RTOL = 1e-4, 1e-3
GPU_ATOL, GPU_RTOL = 1e-7, 1e-6

WORKER = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
from usp.api.runtime import (
    configure_numerics, count_compilations, enable_compilation_cache, tree_digest,
)
configure_numerics(x64=sys.argv[1] == "float64")
enable_compilation_cache(sys.argv[2])
from usp.api.universal import UniversalPredictor
from usp.io.data import load_series

fit_length, chunks = int(sys.argv[3]), int(sys.argv[4])
series = load_series("merton").values
with count_compilations() as count:
    predictor = UniversalPredictor(clock=None)
    predictor.fit_history(series[:fit_length])
    fp, state, results = predictor.functional, predictor.state, []
    size = fp.config.wtmm_buffer_size
    for start in range(fit_length, fit_length + chunks * size, size):
        state, result = fp.run(state, series[start : start + size])
        results.append(result)
    results = jax.tree.map(lambda *parts: jnp.concatenate(parts), *results)
    jax.block_until_ready((state, results))
print(json.dumps({
    "dtype": str(results.predicted_next.dtype),
    "results_sha256": tree_digest(results),
    "state_sha256": tree_digest(state),
    "predicted_next": np.asarray(results.predicted_next, float).tolist(),
    "weights": np.asarray(results.weights, float).tolist(),
    "compiled": count.compiled,
    "executables": count.executables,
    "cache_hits": count.cache_hits,
}))
"""


def _command(precision: str, cache: Path) -> list[str]:
    return [sys.executable, "-c", WORKER, precision, str(cache), str(FIT_LENGTH), str(RUN_CHUNKS)]


def _env(precision: str) -> dict[str, str]:
    env = dict(os.environ, JAX_ENABLE_X64="1" if precision == "float64" else "0")
    env.pop("XLA_FLAGS", None)  # one CPU device, whatever the parent runs with
    return env


def _start(precision: str, cache: Path) -> subprocess.Popen:
    return subprocess.Popen(
        _command(precision, cache),
        env=_env(precision),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen) -> dict:
    stdout, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-4000:]
    return json.loads(stdout.strip().splitlines()[-1])


def _cache_entries(cache: Path) -> set[str]:
    return {p.name for p in cache.iterdir()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    cache_64 = tmp_path_factory.mktemp("cache64")
    cache_32 = tmp_path_factory.mktemp("cache32")
    # A and F are independent: run them side by side (two cores), then B on A's cache.
    first, single = _start("float64", cache_64), _start("float32", cache_32)
    run_a, run_f = _finish(first), _finish(single)
    entries_after_a = _cache_entries(cache_64)
    run_b = _finish(_start("float64", cache_64))
    return {
        "a": run_a,
        "b": run_b,
        "f": run_f,
        "entries_after_a": entries_after_a,
        "entries_after_b": _cache_entries(cache_64),
    }


def test_two_fresh_processes_are_bit_identical(runs):
    a, b = runs["a"], runs["b"]
    assert a["dtype"] == "float64"
    assert len(a["predicted_next"]) == RUN_CHUNKS * 128
    assert a["results_sha256"] == b["results_sha256"]
    assert a["state_sha256"] == b["state_sha256"]


def test_second_process_with_the_cache_compiles_nothing(runs):
    a, b = runs["a"], runs["b"]
    # The first one compiled (its few hits are programs it compiled twice: the cache it was
    # filling served the second request).
    assert a["compiled"] > a["cache_hits"]
    assert b["compiled"] == 0, f"{b['compiled']} of {b['executables']} executables compiled"
    assert b["cache_hits"] == b["executables"] > 0
    assert runs["entries_after_b"] == runs["entries_after_a"]


def test_float32_agrees_with_float64(runs):
    f64, f32 = runs["a"], runs["f"]
    assert f32["dtype"] == "float32"
    expected = np.asarray(f64["predicted_next"])
    actual = np.asarray(f32["predicted_next"])
    excess = np.abs(actual - expected) / (F32_ATOL + F32_RTOL * np.abs(expected))
    worst = int(np.argmax(excess))
    assert np.all(excess <= 1.0), (
        f"{int(np.sum(excess > 1))} of {len(expected)} ticks outside atol {F32_ATOL} / rtol "
        f"{F32_RTOL}; worst tick {worst}: float64 {expected[worst]!r}, float32 {actual[worst]!r}"
    )


def _gpu_devices() -> list[jax.Device]:
    try:
        return jax.devices("gpu")
    except RuntimeError:
        return []


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_devices(), reason="no GPU: CPU-GPU parity needs one")
def test_cpu_and_gpu_agree():
    from usp.api.universal import UniversalPredictor
    from usp.io.data import load_series

    series = load_series("merton").values[: FIT_LENGTH + 128]

    def forecasts_on(device: jax.Device) -> np.ndarray:
        with jax.default_device(device):
            predictor = UniversalPredictor(clock=None)
            predictor.fit_history(series[:FIT_LENGTH])
            _, result = predictor.functional.run(predictor.state, series[FIT_LENGTH:])
            return np.asarray(result.predicted_next)

    cpu = forecasts_on(jax.devices("cpu")[0])
    gpu = forecasts_on(_gpu_devices()[0])
    np.testing.assert_allclose(gpu, cpu, atol=GPU_ATOL, rtol=GPU_RTOL)
