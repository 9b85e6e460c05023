"""WTMM Hölder exponent (usp.kernels.wtmm): speed against peers, and accuracy on fBm.

    python benchmarks/bench_wtmm.py [--quick]

Peers measured in the same run:
* the gaus1 CWT of 1024 points at 40 scales, jitted JAX against ``pywt.cwt`` (its default
  ``conv`` method, the faster of its two on this size);
* maxima linking at N = 1024, our prefix-max nearest-neighbour scan against the spec's dense
  distance-matrix linking (same rule, N x N per scale), both jitted; they must agree exactly.
Also: bias of the estimate on exact fBm with H = 0.5 at N = 1024 (Davies-Harte), the latency of
one 128-sample buffer (the predictor's per-tick call) and of 256 buffers at once (vmap).
The predictor's estimator runs in float32 (chapter 1, eq. float32-error); its peer is its float64
twin: both time one buffer and 256 (in turn, ``paired_medians``), read every full 128-sample
buffer of every bundled series through ``circuit_breaker`` (``breaker_agreement_f32``: the share
of buffers where they decide alike; the acceptance is >= 0.999) and estimate H on the same fBm
buffers (``fbm128_*``).
Medians over repeats after a warm-up call; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import platform

import jax

jax.config.update("jax_enable_x64", True)
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pywt  # noqa: E402
from _timing import median_seconds, paired_medians, report  # noqa: E402

from usp.contracts.config import PredictorConfig  # noqa: E402
from usp.io.data import available_series, load_series  # noqa: E402
from usp.kernels.wtmm import (  # noqa: E402
    CWT,
    WTMMEstimator,
    circuit_breaker,
    dyadic_scales,
    holder_exponent,
    link_maxima_lines,
    modulus_maxima,
)


def fbm(n: int, hurst: float, rng: np.random.Generator) -> np.ndarray:
    """Exact fBm path of n samples (Davies-Harte circulant embedding)."""
    k = np.arange(n)
    gamma = 0.5 * (np.abs(k - 1) ** (2 * hurst) - 2 * k ** (2 * hurst) + (k + 1) ** (2 * hurst))
    eigen = np.maximum(np.fft.fft(np.concatenate([gamma, gamma[-2:0:-1]])).real, 0.0)
    z = rng.standard_normal(eigen.size) + 1j * rng.standard_normal(eigen.size)
    noise = np.fft.fft(np.sqrt(eigen / eigen.size) * z).real[: n - 1]
    return np.concatenate([[0.0], np.cumsum(noise)])


def dense_nearest_marked(marked):
    """The spec's parent search: an N x N distance matrix, argmin over marked columns."""
    n = marked.shape[0]
    position = jnp.arange(n)
    distance = jnp.abs(position[:, None] - position[None, :])
    return jnp.argmin(jnp.where(marked[None, :], distance, 2 * n), axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and paths (CI)")
    args = parser.parse_args()
    repeats = 7 if args.quick else 31
    n_fbm = 100 if args.quick else 1000
    rng = np.random.default_rng(0)
    scales = dyadic_scales()

    # CWT: 1024 points x 40 scales, pywt's defaults on both sides.
    signal = rng.standard_normal(1024).cumsum()
    transform = CWT.build(1024, scales)
    cwt = eqx.filter_jit(lambda t, x: t(x))
    x = jnp.asarray(signal)
    reference, _ = pywt.cwt(signal, scales, "gaus1")
    cwt_error = float(np.max(np.abs(np.asarray(cwt(transform, x)) - reference)))
    t_cwt = median_seconds(lambda: cwt(transform, x).block_until_ready(), 5 * repeats)
    t_pywt = median_seconds(lambda: pywt.cwt(signal, scales, "gaus1"), repeats)

    # Linking at N = 1024 on the maxima of a real fBm scalogram.
    modulus = jnp.abs(cwt(transform, jnp.asarray(fbm(1024, 0.5, rng)))) / jnp.sqrt(scales)[:, None]
    candidates = modulus_maxima(modulus)
    args_link = (modulus, candidates, jnp.asarray(scales))
    fast = jax.jit(lambda m, c, s: link_maxima_lines(m, c, s, 1.5))
    dense = jax.jit(lambda m, c, s: link_maxima_lines(m, c, s, 1.5, nearest=dense_nearest_marked))
    same = bool(jnp.array_equal(fast(*args_link).alive, dense(*args_link).alive)) and bool(
        jnp.array_equal(fast(*args_link).sup, dense(*args_link).sup)
    )
    t_fast = median_seconds(lambda: fast(*args_link).sup.block_until_ready(), 5 * repeats)
    t_dense = median_seconds(lambda: dense(*args_link).sup.block_until_ready(), repeats)

    # Accuracy: fBm with H = 0.5 at N = 1024.
    estimator_1024 = WTMMEstimator.build(1024)
    paths = jnp.asarray(np.stack([fbm(1024, 0.5, rng) for _ in range(n_fbm)]))
    batched = eqx.filter_jit(jax.vmap(holder_exponent, in_axes=(None, 0)))
    h, valid = batched(estimator_1024, paths)
    h = np.asarray(h)

    # The predictor's call: one 128-sample buffer per tick, and a batch of 256 assets.
    estimator_128 = WTMMEstimator.build(128)
    buffers = jnp.asarray(np.stack([fbm(128, 0.5, rng) for _ in range(256)]))
    single = eqx.filter_jit(holder_exponent)
    t_single = median_seconds(
        lambda: single(estimator_128, buffers[0])[0].block_until_ready(), 20 * repeats
    )
    t_batch = median_seconds(
        lambda: batched(estimator_128, buffers)[0].block_until_ready(), repeats
    )
    t_batch_1024 = median_seconds(
        lambda: batched(estimator_1024, paths[:64])[0].block_until_ready(), max(3, repeats // 2)
    )

    # The predictor's float32 estimator against its float64 twin.
    config = PredictorConfig()
    predictor_32 = WTMMEstimator.from_config(config)
    predictor_64 = WTMMEstimator.from_config(config, compute_dtype="float64")
    predictors = (predictor_32, predictor_64)
    t_single_32, t_single_64 = paired_medians(
        [lambda e=e: single(e, buffers[0])[0].block_until_ready() for e in predictors],
        20 * repeats,
    )
    t_batch_32, t_batch_64 = paired_medians(
        [lambda e=e: batched(e, buffers)[0].block_until_ready() for e in predictors], repeats
    )
    h32, h64 = (np.asarray(batched(e, buffers)[0]) for e in predictors)
    breakers = eqx.filter_jit(jax.vmap(circuit_breaker, in_axes=(None, 0)))
    agree, trips, buffers_read = 0, 0, 0
    for name in available_series():
        values = np.asarray(load_series(name).values, float)
        if values.size < 128:
            continue
        windows = jnp.asarray(np.lib.stride_tricks.sliding_window_view(values, 128))
        r32, r64 = (breakers(e, windows) for e in predictors)
        agree += int(jnp.sum(r32.trips == r64.trips))
        trips += int(jnp.sum(r64.trips))
        buffers_read += windows.shape[0]

    report(
        {
            "platform": f"{platform.machine()} {jax.default_backend()}",
            "cwt_jax_us": t_cwt * 1e6,
            "cwt_pywt_us": t_pywt * 1e6,
            "cwt_speedup_vs_pywt": t_pywt / t_cwt,
            "cwt_max_abs_error_vs_pywt": cwt_error,
            "linking_us": t_fast * 1e6,
            "linking_dense_us": t_dense * 1e6,
            "linking_speedup_vs_dense": t_dense / t_fast,
            "linking_agrees_with_dense": same,
            "fbm_paths": n_fbm,
            "fbm_h05_mean": float(h.mean()),
            "fbm_h05_sd": float(h.std()),
            "fbm_h05_abs_bias": float(abs(h.mean() - 0.5)),
            "fbm_all_valid": bool(np.all(np.asarray(valid))),
            "holder_128_us": t_single * 1e6,
            "batch256_ms": t_batch * 1e3,
            "batch256_per_series_us": t_batch / 256 * 1e6,
            "batch64_n1024_ms": t_batch_1024 * 1e3,
            "predictor_holder_128_us_f32": t_single_32 * 1e6,
            "predictor_holder_128_us_f64": t_single_64 * 1e6,
            "predictor_single_speedup_f32": t_single_64 / t_single_32,
            "predictor_batch256_ms_f32": t_batch_32 * 1e3,
            "predictor_batch256_ms_f64": t_batch_64 * 1e3,
            "predictor_batch_speedup_f32": t_batch_64 / t_batch_32,
            "fbm128_h05_mean_f32": float(h32.mean()),
            "fbm128_h05_mean_f64": float(h64.mean()),
            "fbm128_max_abs_diff_f32": float(np.max(np.abs(h32 - h64))),
            "breaker_buffers_read": buffers_read,
            "breaker_trips_f64": trips,
            "breaker_agreement_f32": agree / buffers_read,
        }
    )


if __name__ == "__main__":
    main()
