"""Branch B (DGM): accuracy on the heat equation and on an OU forecast, and the cost of training
and of the fast path against a Crank-Nicolson finite-difference solve of the same equation.

    python benchmarks/bench_dgm.py [--quick]

Accuracy: relative L2 error of the DGM solution of the heat equation against its closed form
(target <= 0.02), and the RMSE of the branch's one-step forecast of an Ornstein-Uhlenbeck series
over the RMSE of the true conditional mean (target <= 1.05; the last-value forecast is shown for
scale). Cost, measured in this run: one Adam step of DGM training, the compile time of the
training loop, a warm refit, and `predict`; the peers are a Crank-Nicolson solve (NumPy/SciPy
banded LU, 401 points x 200 steps) of the same backward Kolmogorov equation, which is what a grid
method pays for the same V(0, .), and the closed-form AR(1) forecast. The last line is one JSON
object of all figures.
"""

from __future__ import annotations

import argparse
import math
import time

import jax

jax.config.update("jax_enable_x64", True)
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402
from _timing import median_seconds, report  # noqa: E402

from usp.api import PredictorConfig  # noqa: E402
from usp.kernels import dgm  # noqa: E402
from usp.reference import dgm as dgm_reference  # noqa: E402

HEAT_SIZE = dict(width=32, depth=3, batch_size=256, n_steps=2500)  # the notebook's CI size


def simulate_ou(n: int, *, coefficient: float, mean: float, noise: float, seed: int):
    rng = np.random.default_rng(seed)
    x = np.empty(n)
    x[0] = mean + noise / math.sqrt(1 - coefficient**2) * rng.standard_normal()
    for k in range(n - 1):
        x[k + 1] = mean + coefficient * (x[k] - mean) + noise * rng.standard_normal()
    return x


def crank_nicolson_kolmogorov(intercept, slope, volatility, half_width, n_space=401, n_time=200):
    """V_t + (a + b x) V_x + vol^2/2 V_xx = 0, V(1, x) = x, V_xx = 0 at +-half_width.

    Banded (2, 2) storage: the interior rows are tridiagonal, the two boundary rows
    V[0] - 2 V[1] + V[2] = 0 (and its mirror) reach two places off the diagonal.
    """
    x = np.linspace(-half_width, half_width, n_space)
    h, dt = x[1] - x[0], 1.0 / n_time
    drift, diffusion = intercept + slope * x[1:-1], 0.5 * volatility**2
    lower = diffusion / h**2 - drift / (2 * h)  # coefficient of V[i-1] in row i
    centre = np.full(n_space - 2, -2 * diffusion / h**2)
    upper = diffusion / h**2 + drift / (2 * h)
    banded = np.zeros((5, n_space))
    banded[2, 1:-1] = 1.0 - 0.5 * dt * centre
    banded[1, 2:] = -0.5 * dt * upper
    banded[3, :-2] = -0.5 * dt * lower
    banded[2, 0], banded[1, 1], banded[0, 2] = 1.0, -2.0, 1.0
    banded[2, -1], banded[3, -2], banded[4, -3] = 1.0, -2.0, 1.0
    v = x.copy()
    rhs = np.zeros(n_space)
    for _ in range(n_time):
        rhs[1:-1] = v[1:-1] + 0.5 * dt * (lower * v[:-2] + centre * v[1:-1] + upper * v[2:])
        v = scipy.linalg.solve_banded((2, 2), banded, rhs)
    return x, v


def heat_accuracy() -> float:
    args = dgm_reference.HeatCoefficients(sigma=1.0, width=0.5, t_final=1.0)
    problem = dgm_reference.heat_problem()
    net = dgm.DGMNet(
        1.0, -3.0, 3.0, width=HEAT_SIZE["width"], depth=HEAT_SIZE["depth"], key=jax.random.key(0)
    )
    net, _ = dgm.train_dgm(
        net,
        problem,
        args,
        key=jax.random.key(1),
        n_steps=HEAT_SIZE["n_steps"],
        batch_size=HEAT_SIZE["batch_size"],
        learning_rate=3e-3,
    )
    t, x = jnp.meshgrid(jnp.linspace(0.0, 1.0, 21), jnp.linspace(-3.0, 3.0, 61))
    exact = dgm_reference.heat_solution(t, x, args)
    return float(jnp.linalg.norm(jax.vmap(jax.vmap(net))(t, x) - exact) / jnp.linalg.norm(exact))


def ou_forecast(branch: dgm.DGMBranch, n_ticks: int, refit_every: int):
    """Walk forward: warm refit every `refit_every` ticks, forecast every tick."""
    ou = dict(coefficient=0.6, mean=100.0, noise=1.0)
    n = branch.entropy_points
    series = simulate_ou(n + n_ticks, seed=7, **ou)
    windows = np.lib.stride_tricks.sliding_window_view(series[:-1], n)
    targets = series[n:]
    predict = eqx.filter_jit(
        jax.vmap(lambda p, b: branch.predict(p, b, key=jax.random.key(0)).mean, (None, 0))
    )
    params = branch.init(key=jax.random.key(0))
    forecasts = []
    for block in range(0, len(targets), refit_every):
        buffers = jnp.asarray(windows[block : block + refit_every])
        params = branch.fit(params, buffers[0])
        forecasts.append(np.asarray(predict(params, buffers)))
    forecasts = np.concatenate(forecasts)
    last = windows[:, -1]
    oracle = ou["mean"] + ou["coefficient"] * (last - ou["mean"])

    def rmse(prediction):
        return float(np.sqrt(np.mean((prediction - targets) ** 2)))

    return rmse(forecasts) / rmse(oracle), rmse(last) / rmse(oracle), params, windows[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer ticks and repeats (CI-sized)")
    args = parser.parse_args()
    n_ticks, refit_every, repeats = (300, 25, 5) if args.quick else (2000, 10, 21)

    config = PredictorConfig()
    branch = dgm.DGMBranch.from_config(config)
    heat_rel_l2 = heat_accuracy()
    ratio, naive_ratio, params, buffer = ou_forecast(branch, n_ticks, refit_every)
    buffer = jnp.asarray(buffer)

    # Training cost: a fresh compile (new batch size -> new program), then steady-state calls.
    problem = dgm.kolmogorov_problem(branch.half_width)
    steps = branch.train_steps

    def train(batch_size):
        return dgm.train_dgm(
            params.net,
            problem,
            params.diffusion,
            key=jax.random.key(5),
            n_steps=steps,
            batch_size=batch_size,
            learning_rate=jnp.asarray(branch.warm_learning_rate),
        )[1].loss_terms.block_until_ready()

    start = time.perf_counter()
    train(branch.batch_size + 1)
    first_call = time.perf_counter() - start
    steady = median_seconds(lambda: train(branch.batch_size + 1), repeats)
    compile_s = first_call - steady
    train_step_ms = 1e3 * median_seconds(lambda: train(branch.batch_size), repeats) / steps
    warm_fit_s = median_seconds(
        lambda: branch.fit(params, buffer).loc.block_until_ready(), max(3, repeats // 3)
    )

    predict = jax.jit(lambda p, b: branch.predict(p, b, key=jax.random.key(0)).mean)
    predict_us = 1e6 * median_seconds(lambda: predict(params, buffer).block_until_ready(), 200)

    def closed_form(p, b):
        z = (b[-1] - p.loc) / p.scale
        return p.loc + p.scale * dgm_reference.linear_diffusion_mean(p.diffusion, z)

    closed = jax.jit(closed_form)
    closed_us = 1e6 * median_seconds(lambda: closed(params, buffer).block_until_ready(), 200)

    d = params.diffusion
    coefficients = (float(d.intercept), float(d.slope), float(d.volatility), branch.half_width)
    fd_ms = 1e3 * median_seconds(lambda: crank_nicolson_kolmogorov(*coefficients), repeats)
    fd_x, fd_v = crank_nicolson_kolmogorov(*coefficients)
    zs = jnp.linspace(-3.0, 3.0, 121)
    exact = np.asarray(dgm_reference.linear_diffusion_mean(d, zs))
    dgm_error = float(
        np.max(np.abs(np.asarray(jax.vmap(lambda z: params.net(0.0, z))(zs)) - exact))
    )
    fd_error = float(np.max(np.abs(np.interp(np.asarray(zs), fd_x, fd_v) - exact)))

    report(
        {
            "heat_rel_l2": heat_rel_l2,
            "ou_forecast_rmse_over_oracle": ratio,
            "last_value_rmse_over_oracle": naive_ratio,
            "ou_ticks": n_ticks,
            "train_step_ms": train_step_ms,
            "train_batch_size": branch.batch_size,
            "compile_s": compile_s,
            "warm_fit_s": warm_fit_s,
            "fd_solve_ms": fd_ms,
            "warm_fit_over_fd_solve": 1e3 * warm_fit_s / fd_ms,
            "predict_us": predict_us,
            "closed_form_predict_us": closed_us,
            "predict_over_closed_form": predict_us / closed_us,
            "predict_over_fd_solve": predict_us / (1e3 * fd_ms),
            "dgm_max_abs_error": dgm_error,
            "fd_max_abs_error": fd_error,
            "step_std": float(params.step_std),
        }
    )


if __name__ == "__main__":
    main()
