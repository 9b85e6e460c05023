# GENERATED FILE - DO NOT EDIT.
# Source: notebooks/04_dgm.md (code cells tagged `export-reference`).
# Edit the notebook, then run `make export`.

"""Closed-form PDE problems and solutions: the oracles of notebooks/04_dgm.md.

The heat equation with a Gaussian bump, Merton's portfolio problem (a nonlinear HJB) and the
conditional mean of a linear-drift diffusion, in closed form, as ``PDEProblem`` instances for
the DGM solver of ``usp.kernels.dgm``. Teaching code: notebooks, tests and benchmarks check the
solver and the branch against it; the runtime never imports it.
"""

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float

from usp.contracts.arrays import Scalar, ScalarLike
from usp.kernels.dgm import Jet, LinearDiffusion, PDEProblem

Values = Float[Array, "..."]
"""Values of any shape: the closed forms broadcast over grids of (t, x)."""
ValuesLike = float | Values


class HeatCoefficients(NamedTuple):
    """V_t + sigma^2/2 V_xx = 0 with the Gaussian bump g(x) = exp(-x^2 / (2 width^2))."""

    sigma: ScalarLike
    width: ScalarLike
    t_final: ScalarLike


def heat_solution(t: ValuesLike, x: ValuesLike, args: HeatCoefficients) -> Values:
    """Closed form: the bump convolved with the N(0, sigma^2 (T - t)) kernel."""
    spread = args.width**2 + args.sigma**2 * (args.t_final - jnp.asarray(t))
    return jnp.sqrt(args.width**2 / spread) * jnp.exp(-(jnp.asarray(x) ** 2) / (2.0 * spread))


def heat_hamiltonian(t: Scalar, x: Scalar, jet: Jet, args: HeatCoefficients) -> Scalar:
    return 0.5 * args.sigma**2 * jet.v_xx


def heat_terminal(x: Scalar, args: HeatCoefficients) -> Scalar:
    return jnp.exp(-(x**2) / (2.0 * args.width**2))


def heat_boundary(t: Scalar, x: Scalar, jet: Jet, args: HeatCoefficients) -> Scalar:
    """Dirichlet data from the closed form on the truncated domain's edges."""
    return jet.value - heat_solution(t, x, args)


def heat_problem(t_final: float = 1.0, x_lo: float = -3.0, x_hi: float = 3.0) -> PDEProblem:
    return PDEProblem(heat_hamiltonian, heat_terminal, heat_boundary, t_final, x_lo, x_hi)


class MertonCoefficients(NamedTuple):
    """Merton's problem: rate r, stock drift mu and volatility sigma, CRRA risk aversion."""

    rate: ScalarLike
    drift: ScalarLike
    volatility: ScalarLike
    risk_aversion: ScalarLike
    t_final: ScalarLike


def merton_fraction(args: MertonCoefficients) -> Scalar:
    """Optimal constant fraction of wealth in the stock, (mu - r) / (gamma sigma^2)."""
    return jnp.asarray((args.drift - args.rate) / (args.risk_aversion * args.volatility**2))


def merton_value(t: ValuesLike, x: ValuesLike, args: MertonCoefficients) -> Values:
    """Closed-form value function x^(1-gamma)/(1-gamma) exp((1-gamma)(r + theta^2/2gamma)(T-t))."""
    gamma = args.risk_aversion
    theta = (args.drift - args.rate) / args.volatility
    growth = (1.0 - gamma) * (args.rate + theta**2 / (2.0 * gamma))
    utility = jnp.asarray(x) ** (1.0 - gamma) / (1.0 - gamma)
    return utility * jnp.exp(growth * (args.t_final - jnp.asarray(t)))


def merton_hamiltonian(
    t: Scalar, x: Scalar, jet: Jet, args: MertonCoefficients, curvature_floor: float = 1e-3
) -> Scalar:
    """sup over pi taken analytically: r x V_x - theta^2/2 V_x^2 / V_xx, with V_xx <= -floor
    (the supremum is infinite where the network is not yet concave)."""
    theta = (args.drift - args.rate) / args.volatility
    concave_v_xx = jnp.minimum(jet.v_xx, -curvature_floor)
    return args.rate * x * jet.v_x - 0.5 * theta**2 * jet.v_x**2 / concave_v_xx


def merton_terminal(x: Scalar, args: MertonCoefficients) -> Scalar:
    return x ** (1.0 - args.risk_aversion) / (1.0 - args.risk_aversion)


def merton_boundary(t: Scalar, x: Scalar, jet: Jet, args: MertonCoefficients) -> Scalar:
    return jet.value - merton_value(t, x, args)


def merton_policy(x: ValuesLike, jet: Jet, args: MertonCoefficients) -> Values:
    """The optimal fraction read from a value function's derivatives (first-order condition)."""
    return -(args.drift - args.rate) * jet.v_x / (args.volatility**2 * x * jet.v_xx)


def merton_problem(t_final: float = 1.0, x_lo: float = 0.5, x_hi: float = 2.0) -> PDEProblem:
    return PDEProblem(merton_hamiltonian, merton_terminal, merton_boundary, t_final, x_lo, x_hi)


def linear_diffusion_mean(
    diffusion: LinearDiffusion, z: ValuesLike, horizon: ScalarLike = 1.0
) -> Values:
    """E[Z_h | Z_0 = z] in closed form: the oracle for the branch's PDE."""
    growth = jnp.exp(diffusion.slope * horizon)
    small = jnp.abs(diffusion.slope) < 1e-12
    safe_slope = jnp.where(small, 1.0, diffusion.slope)
    integral = jnp.where(small, horizon, jnp.expm1(safe_slope * horizon) / safe_slope)
    return growth * jnp.asarray(z) + diffusion.intercept * integral


__all__ = [
    "HeatCoefficients",
    "MertonCoefficients",
    "Values",
    "ValuesLike",
    "heat_boundary",
    "heat_hamiltonian",
    "heat_problem",
    "heat_solution",
    "heat_terminal",
    "linear_diffusion_mean",
    "merton_boundary",
    "merton_fraction",
    "merton_hamiltonian",
    "merton_policy",
    "merton_problem",
    "merton_terminal",
    "merton_value",
]
