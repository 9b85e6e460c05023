"""Branch A: the CMS sampler against SciPy's levy_stable.rvs, and the branch's fit/predict cost.

    python benchmarks/bench_levy.py [--quick]

Both samplers draw 10^6 variates of S1(1.5, 0.5) in the same process; the figure is the ratio of
median times. ``speedup_ceiling_vs_scipy`` divides SciPy's time by the time to draw the uniforms
alone with threefry (the PRNG the project requires): no transform can beat that ratio.
The last line is one JSON object of all figures.
"""

from __future__ import annotations

import argparse

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import scipy.stats as st  # noqa: E402
from _timing import median_seconds, report  # noqa: E402

from usp.api import PredictorConfig  # noqa: E402
from usp.kernels.levy import LevyBranch, stable_sample, standard_stable_s1  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (CI-sized)")
    args = parser.parse_args()
    repeats_jax, repeats_scipy = (5, 3) if args.quick else (21, 7)
    n_draws = 1_000_000
    alpha, beta = 1.5, 0.5

    draw = jax.jit(lambda k: standard_stable_s1(k, alpha, beta, (n_draws,)))
    key = jax.random.key(0)
    t_jax = median_seconds(lambda: draw(key).block_until_ready(), repeats_jax)
    t_scipy = median_seconds(
        lambda: st.levy_stable.rvs(alpha, beta, size=n_draws, random_state=0), repeats_scipy
    )
    # The floor under any threefry-based sampler: just the 2 x 10^6 float64 uniforms CMS needs.
    uniforms = jax.jit(lambda k: jax.random.uniform(k, (2, n_draws)))
    t_rng = median_seconds(lambda: uniforms(key).block_until_ready(), repeats_jax)

    config = PredictorConfig()
    branch = LevyBranch.from_config(config)
    buffer = 100.0 + jnp.cumsum(
        stable_sample(jax.random.key(1), 1.6, 0.0, 0.1, 0.0, (config.wtmm_buffer_size,))
    )
    fit = jax.jit(branch.fit)
    params = fit(branch.init(key=key), buffer)
    predict = jax.jit(lambda p, b, k: branch.predict(p, b, key=k))
    t_fit = median_seconds(lambda: fit(params, buffer).law.alpha.block_until_ready(), 50)
    t_predict = median_seconds(lambda: predict(params, buffer, key).mean.block_until_ready(), 200)

    report(
        {
            "n_draws": n_draws,
            "cms_jax_ms": t_jax * 1e3,
            "cms_scipy_ms": t_scipy * 1e3,
            "cms_speedup_vs_scipy": t_scipy / t_jax,
            "threefry_uniforms_ms": t_rng * 1e3,
            "speedup_ceiling_vs_scipy": t_scipy / t_rng,
            "fit_us": t_fit * 1e6,
            "predict_us": t_predict * 1e6,
            "predict_mc_samples": branch.n_samples,
        }
    )


if __name__ == "__main__":
    main()
