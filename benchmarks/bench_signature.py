"""Benchmark of branch D (usp.kernels.signature).

Accuracy: Chen's identity and agreement with roughpy (float64); the branch's out-of-sample
one-step RMSE on the path-dependent series over the random walk's, and a ridge AR peer's.
Speed: signax (jitted) against roughpy per path, measured in the same run; the jitted branch
predict on a 128-value buffer, fit, and vmapped predict per asset. Medians over repeats after a
warm-up call. The last stdout line is one JSON object with every figure.

    python benchmarks/bench_signature.py --quick
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import roughpy as rp  # noqa: E402

from usp.api import PredictorConfig  # noqa: E402
from usp.kernels import signature as sig  # noqa: E402
from usp.reference import signature as sig_reference  # noqa: E402


def median_seconds(function, *args, repeats: int) -> float:
    jax.block_until_ready(function(*args))  # warm-up: compilation and caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def roughpy_signature(path: np.ndarray, depth: int) -> np.ndarray:
    context = rp.get_context(width=path.shape[1], depth=depth, coeffs=rp.DPReal)
    stream = rp.LieIncrementStream.from_increments(np.diff(path, axis=0), ctx=context)
    return np.asarray(stream.signature())


def chen_identity_error(rng: np.random.Generator, paths_per_case: int) -> float:
    worst = 0.0
    for dim, depth in [(2, 3), (2, 6), (3, 4), (4, 3)]:
        paths = jnp.asarray(rng.standard_normal((paths_per_case, 64, dim)).cumsum(axis=1) / 8.0)
        cut = int(rng.integers(2, 62))
        whole = sig.signature(paths, depth)
        first = sig.signature(paths[:, : cut + 1], depth)
        second = sig.signature(paths[:, cut:], depth)
        combined = jax.vmap(
            lambda a, b, d=dim, D=depth: sig_reference.signature_product(a, b, dim=d, depth=D)
        )(first, second)
        worst = max(worst, float(jnp.max(jnp.abs(whole - combined))))
    return worst


def roughpy_agreement(rng: np.random.Generator) -> float:
    worst = 0.0
    for dim, depth, length in [(2, 3, 16), (2, 5, 64), (3, 4, 40), (4, 3, 128)]:
        path = rng.standard_normal((length, dim)).cumsum(axis=0) / np.sqrt(length)
        ours = np.asarray(sig.signature(jnp.asarray(path), depth))
        theirs = roughpy_signature(path, depth)[1:]  # roughpy includes the level-0 term
        worst = max(worst, float(np.max(np.abs(ours - theirs)) / max(1.0, np.max(np.abs(theirs)))))
    return worst


def accuracy_on_path_dependent_series(quick: bool) -> dict[str, float]:
    config = PredictorConfig()
    branch = sig.SignatureBranch.from_config(config)
    length, stride = (6_000, 4) if quick else (40_000, 1)
    series = sig_reference.path_dependent_series(length, key=jax.random.key(2024))
    n = config.wtmm_buffer_size
    backtest = sig_reference.one_step_backtest(branch, series, buffer_length=n, stride=stride)
    ends = np.arange(n, length, stride)
    buffers = series[ends[:, None] - n + np.arange(n)[None, :]]

    def autoregression(buffer):
        # the linear peer: the same GCV ridge on the window's normalised increments
        scale = sig.increment_scale(buffer)
        lagged = sig.lagged_windows(jnp.diff(buffer) / scale, branch.window - 1)
        ridge = sig.ridge_gcv(lagged[:-1], lagged[1:, -1])
        return buffer[-1] + scale * (ridge.intercept + lagged[-1] @ ridge.coefficients)

    ar_mean = jax.jit(jax.vmap(autoregression))(buffers)
    naive = float(jnp.sqrt(jnp.mean((backtest.previous - backtest.realised) ** 2)))
    ar = float(jnp.sqrt(jnp.mean((ar_mean - backtest.realised) ** 2)))
    z = (backtest.realised - backtest.mean) / backtest.scale
    return {
        "branch_d_rmse_over_naive": float(backtest.rmse_over_naive()),
        "ridge_ar_rmse_over_naive": ar / naive,
        "branch_d_standardised_error_std": float(jnp.std(z)),
        "n_forecasts": int(ends.size),
    }


def speed(quick: bool) -> dict[str, float]:
    repeats = 50 if quick else 500
    rng = np.random.default_rng(1)
    figures: dict[str, float] = {}
    # per path: the branch's window (16 x 2, depth 3) and a longer multi-channel path
    for label, (length, dim, depth) in {
        "16x2_depth3": (16, 2, 3),
        "128x3_depth4": (128, 3, 4),
    }.items():
        path = rng.standard_normal((length, dim)).cumsum(axis=0)
        device_path = jnp.asarray(path)
        signax_jit = jax.jit(lambda p, D=depth: sig.signature(p, D))
        t_signax = median_seconds(signax_jit, device_path, repeats=repeats)
        t_roughpy = median_seconds(roughpy_signature, path, depth, repeats=repeats)
        figures[f"signax_us_per_path_{label}"] = t_signax * 1e6
        figures[f"roughpy_us_per_path_{label}"] = t_roughpy * 1e6
        figures[f"signature_time_ratio_vs_reference_{label}"] = t_signax / t_roughpy
    figures["signature_time_ratio_vs_reference"] = figures[
        "signature_time_ratio_vs_reference_16x2_depth3"
    ]
    # all 112 windows of a buffer at once (what fit does), per window
    windows = jnp.asarray(rng.standard_normal((112, 16, 2)).cumsum(axis=1))
    batched = jax.jit(lambda p: sig.signature(p, 3))
    figures["signax_batched_us_per_path_16x2_depth3"] = (
        median_seconds(batched, windows, repeats=repeats) / 112 * 1e6
    )

    config = PredictorConfig()
    branch = sig.SignatureBranch.from_config(config)
    series = sig_reference.path_dependent_series(4_000, key=jax.random.key(3))
    buffer = series[-config.wtmm_buffer_size :]
    params = branch.fit(branch.init(key=jax.random.key(0)), buffer)
    key = jax.random.key(1)
    predict = jax.jit(lambda p, b: branch.predict(p, b, key=key))
    figures["predict_us"] = median_seconds(predict, params, buffer, repeats=repeats) * 1e6
    figures["fit_us"] = median_seconds(jax.jit(branch.fit), params, buffer, repeats=repeats) * 1e6
    assets = 256 if quick else 4096
    starts = np.linspace(0, series.shape[0] - config.wtmm_buffer_size, assets).astype(int)
    buffers = series[starts[:, None] + np.arange(config.wtmm_buffer_size)[None, :]]
    batch_params = jax.vmap(branch.fit, in_axes=(None, 0))(params, buffers)
    predict_batch = jax.jit(jax.vmap(lambda p, b: branch.predict(p, b, key=key)))
    figures["predict_batch_us_per_asset"] = (
        median_seconds(predict_batch, batch_params, buffers, repeats=repeats) / assets * 1e6
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI size (well under a minute)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results: dict[str, object] = {
        "chen_identity_max_abs_error": chen_identity_error(rng, 8 if args.quick else 64),
        "signature_max_rel_error_vs_roughpy": roughpy_agreement(rng),
    }
    results |= accuracy_on_path_dependent_series(args.quick)
    results |= speed(args.quick)
    results |= {
        "quick": args.quick,
        "device": jax.devices()[0].device_kind,
        "machine": platform.machine(),
        "targets": {
            "chen_identity_max_abs_error": 1e-10,
            "branch_d_rmse_over_naive": 0.98,
        },
    }
    r = results
    print(f"Chen's identity, max abs error:        {r['chen_identity_max_abs_error']:.2e}")
    print(f"signax vs roughpy signatures, max rel: {r['signature_max_rel_error_vs_roughpy']:.2e}")
    print(
        f"RMSE / naive on path-dependent series: branch D {r['branch_d_rmse_over_naive']:.4f}, "
        f"ridge AR {r['ridge_ar_rmse_over_naive']:.4f} ({r['n_forecasts']} forecasts)"
    )
    for label in ("16x2_depth3", "128x3_depth4"):
        print(
            f"signature {label:>13}: signax {results[f'signax_us_per_path_{label}']:7.1f} µs, "
            f"roughpy {results[f'roughpy_us_per_path_{label}']:7.1f} µs, "
            f"ratio {results[f'signature_time_ratio_vs_reference_{label}']:.3f}"
        )
    print(
        f"branch predict {results['predict_us']:.1f} µs, fit {results['fit_us']:.1f} µs, "
        f"vmapped predict {results['predict_batch_us_per_asset']:.2f} µs/asset"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
