"""Benchmark of usp.kernels.malliavin: accuracy against Black–Scholes, variance against a
finite-difference bump, and the hot path (lax.scan) against diffrax, measured in the same run.

    python benchmarks/bench_malliavin.py --quick

Prints a human-readable report, then one JSON object of every figure as the last line:
- call_delta_abs_zscore, digital_delta_abs_zscore: |estimate − closed form| / standard error;
- stderr_ratio_fd_over_malliavin: s.e. of the central finite difference (common random numbers,
  bump fd_bump = fd_bump_relative·S0) over the s.e. of the Malliavin weight, digital delta, same
  paths; the same ratio at a ten times finer bump, and the bump a ratio of 10 needs (predicted);
- diffrax_ms, scan_euler_ms, diffrax_over_scan: median time of the augmented Euler solve on the
  same pre-drawn increments (wide grid), and the same on a long narrow grid (suffix _long);
  compile times; estimator_ms (one full `malliavin_delta` call, increments drawn inside),
  fd_estimator_ms (the finite-difference peer) and rng_ms (drawing the increments alone);
- virtual_tree_over_scan_per_path: diffrax driven by a VirtualBrownianTree, per path.
Timings are medians over interleaved repeats (alternating order) after a warm-up call.
"""

import argparse
import json
import time

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import lineax as lx  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import norm  # noqa: E402

from usp.kernels.malliavin import (  # noqa: E402
    AugmentedState,
    augmented_diffusion,
    augmented_drift,
    brownian_increments,
    initial_augmented_state,
    malliavin_delta,
    solve_augmented_diffrax,
    solve_augmented_scan,
)
from usp.reference.malliavin import finite_difference_delta  # noqa: E402

S0, STRIKE, RATE, VOL, MATURITY = 100.0, 100.0, 0.05, 0.2, 1.0
DISCOUNT = float(np.exp(-RATE * MATURITY))
D1 = (np.log(S0 / STRIKE) + (RATE + VOL**2 / 2) * MATURITY) / (VOL * np.sqrt(MATURITY))
D2 = D1 - VOL * np.sqrt(MATURITY)
CALL_DELTA = float(norm.cdf(D1))
DIGITAL_DELTA = float(DISCOUNT * norm.pdf(D2) / (S0 * VOL * np.sqrt(MATURITY)))
FD_BUMP_RELATIVE = 1e-2


def bs_drift(x):
    return RATE * x


def bs_diffusion(x):
    return VOL * x


def call_payoff(x):
    return DISCOUNT * jnp.maximum(x - STRIKE, 0.0)


def digital_payoff(x):
    return DISCOUNT * jnp.where(x > STRIKE, 1.0, 0.0)


BS = dict(drift=bs_drift, diffusion=bs_diffusion, x0=S0, maturity=MATURITY)


def accuracy(n_paths: int, n_steps: int) -> dict:
    mc = dict(key=jax.random.key(0), n_paths=n_paths, n_steps=n_steps)
    call, call_se = malliavin_delta(**BS, payoff=call_payoff, **mc)
    digital, digital_se = malliavin_delta(**BS, payoff=digital_payoff, **mc)
    fd_bump = FD_BUMP_RELATIVE * S0
    fd, fd_se = finite_difference_delta(**BS, payoff=digital_payoff, **mc, bump=fd_bump)
    _, fd_fine_se = finite_difference_delta(**BS, payoff=digital_payoff, **mc, bump=fd_bump / 10)
    # Notebook eqs (fd-variance), (bel-variance): the bump at which the s.e. ratio reaches 10.
    var_bel = DISCOUNT**2 * (norm.cdf(D2) - D2 * norm.pdf(D2)) / (VOL**2 * S0**2 * MATURITY)
    var_bel -= DIGITAL_DELTA**2
    bump_for_10 = DISCOUNT * DIGITAL_DELTA / (2 * (100 * var_bel + DIGITAL_DELTA**2))
    return {
        "n_paths": n_paths,
        "n_steps": n_steps,
        "call_delta": float(call),
        "call_delta_exact": CALL_DELTA,
        "call_delta_abs_zscore": abs(float(call) - CALL_DELTA) / float(call_se),
        "digital_delta": float(digital),
        "digital_delta_exact": DIGITAL_DELTA,
        "digital_delta_abs_zscore": abs(float(digital) - DIGITAL_DELTA) / float(digital_se),
        "digital_stderr_malliavin": float(digital_se),
        "digital_stderr_fd": float(fd_se),
        "fd_digital_abs_zscore": abs(float(fd) - DIGITAL_DELTA) / float(fd_se),
        "fd_bump": fd_bump,
        "fd_bump_relative": FD_BUMP_RELATIVE,
        "stderr_ratio_fd_over_malliavin": float(fd_se / digital_se),
        "stderr_ratio_fd_over_malliavin_bump_div_10": float(fd_fine_se / digital_se),
        "predicted_bump_relative_for_ratio_10": bump_for_10 / S0,
    }


def interleaved_medians(calls: dict, repeats: int) -> tuple[dict, dict]:
    """Median ms per call and first-call (compile) ms.

    Repeats are interleaved, in alternating order, so that load drifts on a shared machine and
    any effect of running after the other call hit every contender alike.
    """
    compile_ms, times = {}, {name: [] for name in calls}
    for name, call in calls.items():
        start = time.perf_counter()
        jax.block_until_ready(call())
        compile_ms[name] = 1e3 * (time.perf_counter() - start)
    names = list(calls)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            jax.block_until_ready(calls[name]())
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}, compile_ms


def solver_timings(n_paths: int, n_steps: int, repeats: int) -> tuple[dict, dict]:
    """The two solvers on the same pre-drawn increments; then the full estimators and the RNG."""
    increments = brownian_increments(jax.random.key(1), n_paths, n_steps, MATURITY)
    scan = jax.jit(lambda inc: solve_augmented_scan(bs_drift, bs_diffusion, S0, MATURITY, inc))
    via_diffrax = jax.jit(
        lambda inc: solve_augmented_diffrax(bs_drift, bs_diffusion, S0, MATURITY, inc)
    )
    medians, compile_ms = interleaved_medians(
        {"scan": lambda: scan(increments), "diffrax": lambda: via_diffrax(increments)},
        2 * repeats,
    )
    mc = dict(key=jax.random.key(1), n_paths=n_paths, n_steps=n_steps)
    draw = jax.jit(lambda key: brownian_increments(key, n_paths, n_steps, MATURITY))
    whole, _ = interleaved_medians(
        {
            "estimator": lambda: malliavin_delta(**BS, payoff=digital_payoff, **mc),
            "fd": lambda: finite_difference_delta(**BS, payoff=digital_payoff, **mc, bump=1.0),
            "rng": lambda: draw(jax.random.key(1)),
        },
        repeats,
    )
    return medians | whole, compile_ms


def virtual_tree_ms(n_paths: int, n_steps: int) -> float:
    """The rejected option: per-path diffrax solves driven by a VirtualBrownianTree."""
    dt = MATURITY / n_steps

    def one_path(key):
        tree = diffrax.VirtualBrownianTree(0.0, MATURITY, tol=dt / 8, shape=(1,), key=key)
        terms = diffrax.MultiTerm(
            diffrax.ODETerm(lambda t, z, args: augmented_drift(bs_drift, bs_diffusion, z)),
            diffrax.ControlTerm(
                lambda t, z, args: lx.DiagonalLinearOperator(
                    augmented_diffusion(bs_drift, bs_diffusion, z)
                ),
                lambda t0, t1: AugmentedState(*(tree.evaluate(t0, t1),) * 3),
            ),
        )
        solution = diffrax.diffeqsolve(
            terms,
            diffrax.Euler(),
            0.0,
            MATURITY,
            dt,
            initial_augmented_state(S0, 1),
            saveat=diffrax.SaveAt(t1=True),
            max_steps=n_steps + 1,
        )
        return solution.ys.state[0, 0]

    keys = jax.random.split(jax.random.key(2), n_paths)
    solve = jax.jit(jax.vmap(one_path))
    medians, _ = interleaved_medians({"tree": lambda: solve(keys)}, repeats=3)
    return medians["tree"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    args = parser.parse_args()
    if args.quick:
        acc_paths, wide, long, repeats, tree_paths = 200_000, (100_000, 50), (1_000, 1_000), 15, 500
    else:
        acc_paths, wide, long, repeats, tree_paths = (
            1_000_000,
            (400_000, 100),
            (2_000, 4_000),
            21,
            2_000,
        )

    figures = {"device": str(jax.devices()[0]), "quick": args.quick}
    figures.update(accuracy(acc_paths, 50))
    wide_ms, wide_compile = solver_timings(*wide, repeats)
    long_ms, long_compile = solver_timings(*long, repeats)
    tree_ms = virtual_tree_ms(tree_paths, wide[1])
    figures.update(
        {
            "timing_wide_grid": list(wide),
            "scan_euler_ms": wide_ms["scan"],
            "diffrax_ms": wide_ms["diffrax"],
            "diffrax_over_scan": wide_ms["diffrax"] / wide_ms["scan"],
            "estimator_ms": wide_ms["estimator"],
            "fd_estimator_ms": wide_ms["fd"],
            "rng_ms": wide_ms["rng"],
            "timing_long_grid": list(long),
            "scan_euler_ms_long": long_ms["scan"],
            "diffrax_ms_long": long_ms["diffrax"],
            "diffrax_over_scan_long": long_ms["diffrax"] / long_ms["scan"],
            "scan_compile_ms": wide_compile["scan"],
            "diffrax_compile_ms": wide_compile["diffrax"],
            "virtual_tree_ms": tree_ms,
            "virtual_tree_paths": tree_paths,
            "virtual_tree_over_scan_per_path": (tree_ms / tree_paths) / (wide_ms["scan"] / wide[0]),
        }
    )

    print(f"device: {figures['device']}")
    print(
        f"call delta    {figures['call_delta']:.5f} vs {CALL_DELTA:.5f}"
        f"   |z| = {figures['call_delta_abs_zscore']:.2f}"
    )
    print(
        f"digital delta {figures['digital_delta']:.6f} vs {DIGITAL_DELTA:.6f}"
        f"   |z| = {figures['digital_delta_abs_zscore']:.2f}"
    )
    print(
        f"digital s.e.: FD (h = {figures['fd_bump']:g} = 1e-2·S0, CRN) / Malliavin = "
        f"{figures['stderr_ratio_fd_over_malliavin']:.2f}; at h/10: "
        f"{figures['stderr_ratio_fd_over_malliavin_bump_div_10']:.2f}; ratio 10 needs "
        f"h <= {figures['predicted_bump_relative_for_ratio_10']:.1e}·S0"
    )
    for label, grid, ms in [("wide", wide, wide_ms), ("long", long, long_ms)]:
        print(
            f"{label} grid {grid[0]:,} paths × {grid[1]:,} steps: scan {ms['scan']:.2f} ms, "
            f"diffrax {ms['diffrax']:.2f} ms, diffrax/scan {ms['diffrax'] / ms['scan']:.2f}"
        )
    print(
        f"full estimator {wide_ms['estimator']:.1f} ms, drawing ΔW alone {wide_ms['rng']:.1f} ms;"
        f" finite-difference peer {wide_ms['fd']:.1f} ms"
    )
    print(
        f"compile: scan {wide_compile['scan']:.0f} ms, diffrax {wide_compile['diffrax']:.0f} ms; "
        f"VirtualBrownianTree {figures['virtual_tree_over_scan_per_path']:.0f}× scan per path"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
