"""Scale-out (X-2): step_batch with the asset axis sharded over forced CPU devices, against the
unsharded step_batch in the same process.

    python benchmarks/bench_sharding.py [--quick] [--devices 8]

The process forces ``--devices`` host devices (``XLA_FLAGS=--xla_force_host_platform_device_count``
is set before JAX starts). Both runs get the same states (full random-walk buffers, cold branch
parameters) and the same prices. Figures:

- ``sharded_matches_unsharded``: 1 when every leaf of every tick's results, and the final states,
  are equal bit for bit (SHA-256 over all leaves), else 0. Expect 0 on CPU: XLA's CPU backend
  picks kernels (the order of a sum) by block shape, and a program partitioned over several
  devices is simplified by a different pass pipeline, so the last bits may differ.
  ``max_gap_results`` / ``max_gap_state``: the largest change of a result (state) leaf over its
  largest entry. Rounding-level differences stay at rounding level except where the algorithm
  amplifies them: the learned JKO time step log τ takes an Adam step on a gradient that is often
  a near-cancellation, so its last bits can move its fifth digit. ``max_gap_results_f32``: the
  same for the result leaves computed in float32 (``FLOAT32_LEAVES``: the Hölder exponent).
- ``sharded_speedup``: unsharded / sharded median wall time of one ``step_batch`` tick over
  ``assets`` assets (after a warm-up tick, ``block_until_ready``).
- ``unsharded_tick_ms`` / ``sharded_tick_ms``, ``asset_steps_per_s_sharded``.

Forced host devices are a testing device, not extra hardware: they split the same CPU cores
(here 2, shared), so on this machine a speedup at or below 1 is expected; the figure measures the
partitioning overhead. On a multi-GPU host the same program runs one shard per GPU. The last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 assets, 5 timed ticks")
    parser.add_argument("--devices", type=int, default=8, help="forced host devices")
    return parser.parse_args()


ARGS = parse() if __name__ == "__main__" else None
if ARGS is not None:
    # XLA reads the flag when the CPU backend starts: before the first JAX operation.
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = (
        f"{flags} --xla_force_host_platform_device_count={ARGS.devices}".strip()
    )

import equinox as eqx  # noqa: E402
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _timing import median_seconds, report  # noqa: E402

from usp.api.functional import FunctionalPredictor  # noqa: E402
from usp.api.runtime import tree_digest  # noqa: E402
from usp.api.sharding import asset_mesh, shard_states, sharded_step_batch  # noqa: E402


def batch(fp: FunctionalPredictor, n_assets: int, n_ticks: int, seed: int = 3):
    """States with full, distinct random-walk buffers, and ``n_ticks`` rows of prices."""
    size = fp.config.wtmm_buffer_size
    rng = np.random.default_rng(seed)
    walks = 100.0 + np.cumsum(rng.normal(0.0, 0.5, (n_assets, size + n_ticks)), axis=1)
    states = eqx.tree_at(
        lambda s: (s.buffer, s.n_filled),
        fp.init_states(n_assets),
        (jnp.asarray(walks[:, :size]), jnp.full(n_assets, size, jnp.int32)),
    )
    return states, walks[:, size:].T.copy()


def run(step, states, prices):
    results = []
    for tick in prices:
        states, result, accepted = step(states, tick, tick)
        results.append((result, accepted))
    return jax.block_until_ready((states, results))


FLOAT32_LEAVES = ("holder_exponent",)
"""Leaves computed in float32 (chapter 1, eq. float32-error): their rounding is float32's, so
their gap is reported on its own (``*_f32``) instead of hiding every float64 leaf's."""


def normwise_gap(want, got, *, float32: bool = False) -> float:
    """Largest |got - want| of a floating leaf over its largest |want| (inf if NaNs differ), over
    the leaves computed in float64 or, with ``float32=True``, over those in FLOAT32_LEAVES."""
    gaps = [(0.0, "")]
    leaves = jax.tree_util.tree_leaves_with_path(want)
    for (path, a), b in zip(leaves, jax.tree.leaves(got), strict=True):
        name = jax.tree_util.keystr(path)
        if not jnp.issubdtype(a.dtype, jnp.floating):
            continue
        if any(leaf in name for leaf in FLOAT32_LEAVES) != float32:
            continue
        if not np.array_equal(np.isnan(a), np.isnan(b)):
            return float("inf")
        scale = max(float(np.nanmax(np.abs(a), initial=0.0)), np.finfo(float).tiny)
        gap = float(np.nanmax(np.abs(b - a), initial=0.0)) / scale
        gaps.append((gap, name))
    gap, where = max(gaps)
    print(f"[bench_sharding] largest normwise gap {gap:.3g} at {where}", file=sys.stderr)
    return gap


def main(args: argparse.Namespace) -> None:
    n_assets = 64 if args.quick else 1024
    n_ticks = 6 if args.quick else 20
    devices = jax.devices()
    if len(devices) != args.devices:
        sys.exit(f"expected {args.devices} devices, JAX has {len(devices)}: was JAX started early?")
    if n_assets % len(devices):
        sys.exit(f"{n_assets} assets do not split over {len(devices)} devices")
    fp = FunctionalPredictor()
    states, prices = batch(fp, n_assets, n_ticks)
    mesh = asset_mesh(devices)
    sharded_states = shard_states(states, mesh)
    sharded = sharded_step_batch(fp, mesh)

    reference = run(fp.step_batch, states, prices)
    split = run(sharded, sharded_states, prices)
    reference, split = jax.device_get(reference), jax.device_get(split)
    matches = tree_digest(reference) == tree_digest(split)
    state_gap = normwise_gap(reference[0], split[0])
    result_gap = normwise_gap(reference[1], split[1])
    result_gap_f32 = normwise_gap(reference[1], split[1], float32=True)

    tick = prices[0]
    unsharded_s = median_seconds(
        lambda: jax.block_until_ready(fp.step_batch(states, tick, tick)), repeats=n_ticks - 1
    )
    sharded_s = median_seconds(
        lambda: jax.block_until_ready(sharded(sharded_states, tick, tick)), repeats=n_ticks - 1
    )
    report(
        {
            "sharded_matches_unsharded": int(matches),
            "max_gap_results": result_gap,
            "max_gap_state": state_gap,
            "max_gap_results_f32": result_gap_f32,
            "sharded_speedup": unsharded_s / sharded_s,
            "unsharded_tick_ms": 1e3 * unsharded_s,
            "sharded_tick_ms": 1e3 * sharded_s,
            "asset_steps_per_s_sharded": n_assets / sharded_s,
            "devices": len(devices),
            "assets": n_assets,
            "ticks_compared": n_ticks,
            "cpu_cores": os.cpu_count(),
        }
    )


if __name__ == "__main__":
    main(ARGS)
