"""Branch C: the IMEX PIDE solver against Merton's price and a NumPy/SciPy twin, Anderson vs
Picard, and the branch's one-step forecast against the oracle.

    python benchmarks/bench_imex.py [--quick]

The peer is the same scheme written with numpy.fft and scipy.linalg.solve_banded, timed in the
same process on the same grid (n = 1025 nodes, 200 steps); ``speedup_vs_numpy`` is the ratio of
median times. The full-grid Merton error (n = 4097, 3200 steps) is computed without --quick
only. The last line is one JSON object of all figures.
"""

from __future__ import annotations

import argparse

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402
import scipy.stats as st  # noqa: E402
from _timing import median_seconds, report  # noqa: E402

from usp.kernels.imex import (  # noqa: E402
    IMEXBranch,
    LogPriceGrid,
    MertonModel,
    solve_pide,
)
from usp.reference.imex import (  # noqa: E402
    CallPayoff,
    exponential_moment,
    merton_call_price,
    simulate_merton,
)

SPOT = STRIKE = 100.0
MATURITY, RATE, VOL, INTENSITY, JUMP_MEAN, JUMP_STD = 0.25, 0.05, 0.15, 0.1, -0.9, 0.45
HALF_WIDTH = 2.0
QUICK_GRID, FULL_GRID = (1025, 200), (4097, 3200)
MERTON = MertonModel(RATE, VOL, INTENSITY, JUMP_MEAN, JUMP_STD, RATE)
CALL = CallPayoff(STRIKE, RATE)


def jax_call_price(size, n_steps, *, model=MERTON, implicit_jumps=False, memory=5):
    grid = LogPriceGrid(jnp.log(STRIKE), HALF_WIDTH, size)
    solution = solve_pide(
        model, grid, CALL, MATURITY, n_steps, implicit_jumps=implicit_jumps, memory=memory
    )
    return solution


def numpy_call_price(size, n_steps):
    """The same IMEX scheme (eq. imex-step of notebooks/05_imex.md) in NumPy/SciPy."""
    h = 2 * HALF_WIDTH / (size - 1)
    x = np.log(STRIKE) + h * (np.arange(size) - (size - 1) / 2)
    ghosts = h * np.arange(1, size)
    left, right = x[0] - ghosts[::-1], x[-1] + ghosts
    steps = np.arange(-(size - 1), size)
    offsets = h * steps
    masses = INTENSITY * (
        st.norm.cdf((offsets + h / 2 - JUMP_MEAN) / JUMP_STD)
        - st.norm.cdf((offsets - h / 2 - JUMP_MEAN) / JUMP_STD)
    )
    fft_size = 1 << int(np.ceil(np.log2(3 * size - 2)))
    flipped = np.zeros(fft_size)
    flipped[steps % fft_size] = masses[::-1]
    spectrum = np.fft.rfft(flipped)
    intensity, compensator = masses.sum(), np.sum(masses * np.expm1(offsets))
    dt = MATURITY / n_steps
    a = 0.5 * VOL**2 / h**2
    c = (RATE - 0.5 * VOL**2 - compensator) / (2 * h)
    banded = np.empty((3, size))
    banded[0] = -dt * (a + c)  # super-diagonal (first entry unused)
    banded[1] = 1 + dt * (2 * a + RATE + intensity)
    banded[2] = -dt * (a - c)  # sub-diagonal (last entry unused)

    def far_field(tau, nodes):
        return np.maximum(np.exp(nodes) - STRIKE * np.exp(-RATE * tau), 0.0)

    values = np.maximum(np.exp(x) - STRIKE, 0.0)
    for step in range(n_steps):
        tau = step * dt
        extended = np.concatenate([far_field(tau, left), values, far_field(tau, right)])
        jumps = np.fft.irfft(np.fft.rfft(extended, fft_size) * spectrum, fft_size)[
            size - 1 : 2 * size - 1
        ]
        rhs = values + dt * jumps
        rhs[0] += dt * (a - c) * far_field(tau + dt, x[0] - h)
        rhs[-1] += dt * (a + c) * far_field(tau + dt, x[-1] + h)
        values = scipy.linalg.solve_banded((1, 1), banded, rhs)
    return np.interp(np.log(SPOT), x, values)


def forecast_ratio(n_paths, length, window=128):
    """RMSE of the branch's one-step forecasts over the oracle's, on simulated Merton paths."""
    truth = MertonModel(0.002, 0.01, 0.05, -0.03, 0.04)
    branch = IMEXBranch()
    keys = jax.random.split(jax.random.key(5), n_paths)
    paths = jax.jit(jax.vmap(lambda k: simulate_merton(truth, length, key=k)))(keys)
    starts = np.arange(length + 1 - window)
    windows = paths[:, starts[:, None] + np.arange(window)].reshape(-1, window)
    targets = paths[:, window:].reshape(-1)
    params = jax.jit(jax.vmap(branch.solve_moments))(windows)
    predict = jax.jit(jax.vmap(lambda p, b: branch.predict(p, b, key=jax.random.key(0))))
    forecasts = predict(params, windows)
    last = windows[:, -1]
    oracle = last * exponential_moment(truth, 1.0, 1.0)
    rmse = lambda e: float(jnp.sqrt(jnp.mean(jnp.square(e))))
    return (
        rmse(targets - forecasts.mean) / rmse(targets - oracle),
        rmse(targets - last) / rmse(targets - oracle),
        int(targets.size),
        bool(jnp.all(params.valid)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized grids and fewer repeats")
    args = parser.parse_args()
    repeats = 5 if args.quick else 15
    closed_form = float(merton_call_price(SPOT, STRIKE, MATURITY, MERTON))
    figures: dict[str, float | int | str | bool] = {"merton_closed_form": closed_form}

    # Accuracy against Merton's series.
    size, n_steps = QUICK_GRID
    quick = jax_call_price(size, n_steps)
    quick_price = float(quick.at(jnp.log(SPOT)))
    figures["merton_call_abs_error"] = abs(quick_price - closed_form)
    figures["quick_grid"] = f"n={size}, steps={n_steps}"
    if args.quick:
        figures["merton_call_abs_error_full"] = figures["merton_call_abs_error"]
        figures["merton_call_abs_error_full_note"] = (
            f"--quick: the quick-grid error; run without --quick for n={FULL_GRID[0]}, "
            f"steps={FULL_GRID[1]}"
        )
    else:
        full = jax_call_price(*FULL_GRID)
        figures["merton_call_abs_error_full"] = abs(float(full.at(jnp.log(SPOT))) - closed_form)
        figures["full_grid"] = f"n={FULL_GRID[0]}, steps={FULL_GRID[1]}"

    # Speed against the NumPy/SciPy twin of the same scheme, on the quick grid.
    numpy_price = numpy_call_price(size, n_steps)
    figures["jax_vs_numpy_price_difference"] = abs(quick_price - numpy_price)
    t_jax = median_seconds(
        lambda: jax_call_price(size, n_steps).values.block_until_ready(), repeats
    )
    t_numpy = median_seconds(lambda: numpy_call_price(size, n_steps), max(3, repeats // 3))
    figures["jax_solve_ms"] = 1e3 * t_jax
    figures["numpy_solve_ms"] = 1e3 * t_numpy
    figures["speedup_vs_numpy"] = t_numpy / t_jax

    # Anderson vs Picard on the fully implicit step where it matters: lambda dtau = 5.
    stiff = MertonModel(RATE, VOL, 20.0, JUMP_MEAN, JUMP_STD, RATE)
    picard = jax_call_price(size, 1, model=stiff, implicit_jumps=True, memory=0)
    anderson = jax_call_price(size, 1, model=stiff, implicit_jumps=True, memory=5)
    figures["fixed_point_case"] = "implicit jumps, lambda=20, one step dtau=0.25, n=1025"
    figures["picard_iters"] = int(picard.iterations)
    figures["anderson_iters"] = int(anderson.iterations)
    figures["anderson_picard_max_difference"] = float(
        jnp.max(jnp.abs(anderson.values - picard.values))
    )
    figures["picard_ms"] = 1e3 * median_seconds(
        lambda: jax_call_price(
            size, 1, model=stiff, implicit_jumps=True, memory=0
        ).values.block_until_ready(),
        repeats,
    )
    figures["anderson_ms"] = 1e3 * median_seconds(
        lambda: jax_call_price(
            size, 1, model=stiff, implicit_jumps=True, memory=5
        ).values.block_until_ready(),
        repeats,
    )
    # The spec's parameters (lambda dtau = 1.25e-4 per step): both need a handful per step.
    spec_picard = jax_call_price(size, n_steps, implicit_jumps=True, memory=0)
    spec_anderson = jax_call_price(size, n_steps, implicit_jumps=True, memory=5)
    figures["picard_iters_spec_case_total"] = int(spec_picard.iterations)
    figures["anderson_iters_spec_case_total"] = int(spec_anderson.iterations)

    # The branch: one-step forecasts against the oracle E[S_{t+1} | S_t].
    ratio, naive_ratio, count, all_valid = forecast_ratio(*((4, 600) if args.quick else (16, 1200)))
    figures["merton_forecast_rmse_over_oracle"] = ratio
    figures["naive_forecast_rmse_over_oracle"] = naive_ratio
    figures["forecasts"] = count
    figures["all_fits_valid"] = all_valid
    branch = IMEXBranch()
    buffer = simulate_merton(
        MertonModel(0.002, 0.01, 0.05, -0.03, 0.04), 127, key=jax.random.key(1)
    )
    params = branch.fit(branch.init(key=jax.random.key(0)), buffer)
    predict = jax.jit(lambda p, b: branch.predict(p, b, key=jax.random.key(0)))
    figures["branch_fit_ms"] = 1e3 * median_seconds(
        lambda: jax.block_until_ready(branch.fit(params, buffer)), repeats
    )
    figures["branch_predict_us"] = 1e6 * median_seconds(
        lambda: jax.block_until_ready(predict(params, buffer)), repeats
    )
    report(figures)


if __name__ == "__main__":
    main()
