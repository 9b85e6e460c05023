"""The JKO step and its Sinkhorn solve against POT and a plain fixed-iteration JAX loop.

    python benchmarks/bench_jko.py [--quick]

All peers solve the same 4×4 entropic problem in the same process: the weights ρ_k of one tick
against the mirror-step proposal ρ̃, discrete-metric cost, log domain. At the config's
ε = 1e-3 all start from the same closed-form potentials (the chapter's warm start) and stop at
the same marginal tolerance; POT's kernel-mode `ot.sinkhorn` cannot represent this problem
(exp(-1/ε) underflows): its marginal error is reported, not its time. A second, colder problem
(ε = 0.05, zero initial potentials) compares the solvers where both need tens of iterations.
The last line is one JSON object of all figures.
"""

from __future__ import annotations

import argparse
import warnings

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import ot  # noqa: E402
from _timing import median_seconds, report  # noqa: E402

from usp.api import PredictorConfig  # noqa: E402
from usp.core.jko import (  # noqa: E402
    SINKHORN_THRESHOLD,
    discrete_metric,
    discrete_metric_potentials,
    energy,
    entropic_transport,
    jko_step,
    mirror_step,
)

COLD_EPSILON = 0.05


def fixed_loop(n_iterations: int):
    """Plain log-domain Sinkhorn, eq. (jko-sinkhorn), for a fixed number of iterations."""

    def solve(a, b, f, g, epsilon):
        cost = discrete_metric(a.shape[0], a.dtype)

        def body(_, fg):
            f, g = fg
            g = epsilon * (jnp.log(b) - jax.nn.logsumexp((f[:, None] - cost) / epsilon, axis=0))
            f = epsilon * (jnp.log(a) - jax.nn.logsumexp((g[None, :] - cost) / epsilon, axis=1))
            return f, g

        f, g = jax.lax.fori_loop(0, n_iterations, body, (f, g))
        plan = jnp.exp((f[:, None] + g[None, :] - cost) / epsilon)
        return jnp.sum(plan * cost)

    return jax.jit(solve)


def pot_solver(a, b, epsilon, warm, max_iterations):
    cost = np.asarray(discrete_metric(4))
    a, b = np.asarray(a), np.asarray(b)

    def solve():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ot.bregman.sinkhorn_log(
                a,
                b,
                cost,
                epsilon,
                numItermax=max_iterations,
                stopThr=SINKHORN_THRESHOLD,
                warmstart=warm,
            )

    return solve, cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (CI-sized)")
    args = parser.parse_args()
    fast_repeats, slow_repeats, n_assets = (300, 30, 1024) if args.quick else (3000, 200, 8192)

    config = PredictorConfig()
    eps, tau, cap = config.epsilon, config.jko_tau, config.sinkhorn_max_iterations
    rng = np.random.default_rng(0)
    weights = jnp.asarray(rng.dirichlet(np.ones(4)))
    predictions = jnp.asarray(100.0 + rng.normal(size=4))
    target, sigma = 100.0 + float(rng.normal()), 0.8
    grad = jax.grad(energy)(weights, predictions, target, sigma=sigma, robust=False)
    proposal = mirror_step(weights, grad, tau)

    # -- the default problem: ε = 1e-3, warm start ------------------------------------------
    solve = jax.jit(lambda a, b: entropic_transport(a, b, epsilon=eps, max_iterations=cap))
    ours = solve(weights, proposal)
    t_ott = median_seconds(lambda: solve(weights, proposal).cost.block_until_ready(), fast_repeats)
    f0, g0 = discrete_metric_potentials(weights, proposal, eps)
    pot, cost = pot_solver(
        weights, proposal, eps, (np.asarray(f0) / eps, np.asarray(g0) / eps), cap
    )
    t_pot = median_seconds(pot, slow_repeats)
    pot_cost = float(np.sum(pot() * cost))
    loop = fixed_loop(int(ours.iterations))
    t_loop = median_seconds(
        lambda: loop(weights, proposal, f0, g0, eps).block_until_ready(), fast_repeats
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kernel_plan = ot.sinkhorn(np.asarray(weights), np.asarray(proposal), cost, eps)
    # with exp(-1/ε) = 0 the kernel is the identity: no plan can match both marginals
    kernel_error = float(np.abs(kernel_plan.sum(axis=0) - np.asarray(proposal)).sum())

    # -- a colder problem: ε = 0.05 from zero potentials --------------------------------------
    solve_cold = jax.jit(
        lambda a, b: entropic_transport(
            a, b, epsilon=COLD_EPSILON, max_iterations=2000, warm_start=False
        )
    )
    cold = solve_cold(weights, proposal)
    t_ott_cold = median_seconds(
        lambda: solve_cold(weights, proposal).cost.block_until_ready(), fast_repeats
    )
    pot_cold, _ = pot_solver(weights, proposal, COLD_EPSILON, None, 2000)
    t_pot_cold = median_seconds(pot_cold, max(slow_repeats // 3, 5))
    loop_cold = fixed_loop(int(cold.iterations))
    zeros = jnp.zeros(4)
    t_loop_cold = median_seconds(
        lambda: loop_cold(weights, proposal, zeros, zeros, COLD_EPSILON).block_until_ready(),
        fast_repeats,
    )

    # -- the whole step, one asset and a batch -------------------------------------------------
    step = jax.jit(lambda w, p, y: jko_step(w, p, y, tau=tau, epsilon=eps, sigma=sigma))
    t_step = median_seconds(
        lambda: step(weights, predictions, target).weights.block_until_ready(), fast_repeats
    )
    keys = jax.random.split(jax.random.key(1), 2)
    many_w = jax.random.dirichlet(keys[0], jnp.ones(4), (n_assets,))
    many_p = 100.0 + jax.random.normal(keys[1], (n_assets, 4))
    batch = jax.jit(
        jax.vmap(lambda w, p: jko_step(w, p, 100.0, tau=tau, epsilon=eps, sigma=sigma).weights)
    )
    t_batch = median_seconds(lambda: batch(many_w, many_p).block_until_ready(), 20)

    report(
        {
            "epsilon": eps,
            "jko_step_us": t_step * 1e6,
            "sinkhorn_ott_us": t_ott * 1e6,
            "sinkhorn_pot_log_us": t_pot * 1e6,
            "speedup_vs_pot": t_pot / t_ott,
            "jko_step_speedup_vs_pot_solve": t_pot / t_step,
            "fixed_loop_us": t_loop * 1e6,
            "ott_over_fixed_loop": t_ott / t_loop,
            "iterations": int(ours.iterations),
            "cost_gap_vs_pot": abs(float(ours.cost) - pot_cost),
            "pot_kernel_mode_marginal_error": kernel_error,
            "cold_epsilon": COLD_EPSILON,
            "cold_iterations": int(cold.iterations),
            "cold_sinkhorn_ott_us": t_ott_cold * 1e6,
            "cold_sinkhorn_pot_log_us": t_pot_cold * 1e6,
            "cold_speedup_vs_pot": t_pot_cold / t_ott_cold,
            "cold_fixed_loop_us": t_loop_cold * 1e6,
            "cold_ott_over_fixed_loop": t_ott_cold / t_loop_cold,
            "batch_assets": n_assets,
            "jko_step_batch_us_per_asset": t_batch / n_assets * 1e6,
        }
    )


if __name__ == "__main__":
    main()
