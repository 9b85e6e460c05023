# GENERATED FILE - DO NOT EDIT.
# Source: notebooks/05_imex.md (code cells tagged `export`).
# Edit the notebook, then run `make export`.

"""Branch C: a first-order IMEX scheme for the Merton jump-diffusion PIDE.

The jump integral is an FFT correlation with Lévy compensation on a padded grid, the local
part (diffusion, drift, discounting, jump outflow) is implicit through a Thomas solve, and the
fully implicit variant is a fixed-point problem solved by Anderson acceleration. The branch fits
a Merton model to the buffer and solves the PIDE one step ahead for the first two moments of the
next price. Derivations: notebooks/05_imex.md.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import ClassVar, NamedTuple, final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm
from jaxtyping import Array, Bool, Complex, Float, Int

from usp.contracts import AbstractBranch, Forecast, PredictorConfig
from usp.contracts.arrays import PRNGKey, Scalar, ScalarLike, Signal


class MertonModel(eqx.Module):
    """Merton (1976) jump-diffusion of the log-price X = log S.

    ``growth_rate`` is mu in E[S_t] = S_0 exp(mu t) (the risk-free rate when pricing, the
    expected return when forecasting); jumps of X arrive at rate ``jump_intensity`` with
    N(``jump_mean``, ``jump_std``**2) sizes; ``discount_rate`` is r in the PIDE's -r u.
    """

    growth_rate: ScalarLike
    volatility: ScalarLike
    jump_intensity: ScalarLike
    jump_mean: ScalarLike
    jump_std: ScalarLike
    discount_rate: ScalarLike = 0.0


class LogPriceGrid(eqx.Module):
    """``size`` equally spaced log-prices centred on ``centre``, spanning +- ``half_width``.

    An odd ``size`` puts ``centre`` on a node (where we put a call's strike).
    """

    centre: ScalarLike
    half_width: ScalarLike
    size: int = eqx.field(static=True)

    @property
    def spacing(self) -> Scalar:
        return 2.0 * jnp.asarray(self.half_width) / (self.size - 1)

    def nodes(self) -> Float[Array, " grid"]:
        return self.centre + self.spacing * (jnp.arange(self.size) - 0.5 * (self.size - 1))

    def ghost_nodes(self) -> tuple[Float[Array, " ghost"], Float[Array, " ghost"]]:
        """The size-1 nodes beyond each end that a jump from inside the grid can reach."""
        offsets = self.spacing * jnp.arange(1, self.size)
        nodes = self.nodes()
        return nodes[0] - offsets[::-1], nodes[-1] + offsets


class AbstractPayoff(eqx.Module):
    """Terminal values g(x) of the backward PIDE, and its values off the grid."""

    @abc.abstractmethod
    def terminal(self, x: Float[Array, " k"]) -> Float[Array, " k"]:
        """g(x), the value at time to maturity 0."""

    @abc.abstractmethod
    def far_field(self, tau: ScalarLike, x: Float[Array, " k"]) -> Float[Array, " k"]:
        """The value assumed at nodes outside the grid, at time to maturity tau."""


class ExponentialPayoff(AbstractPayoff):
    """g(x) = e^{p x}: the price (p = 1) or its square (p = 2); far field: g, frozen."""

    power: ScalarLike

    def terminal(self, x: Float[Array, " k"]) -> Float[Array, " k"]:
        return jnp.exp(self.power * x)

    def far_field(self, tau: ScalarLike, x: Float[Array, " k"]) -> Float[Array, " k"]:
        del tau  # frozen: only ghost nodes see it, and they are far from the centre
        return jnp.exp(self.power * x)


class JumpKernel(eqx.Module):
    """The discrete Lévy measure nu_k on offsets k h, |k| <= n - 1, ready for FFT correlation."""

    masses: Float[Array, " offsets"]
    spectrum: Complex[Array, " spectrum"]
    intensity: Scalar
    compensator: Scalar
    fft_size: int = eqx.field(static=True)


def jump_kernel(model: MertonModel, grid: LogPriceGrid) -> JumpKernel:
    """Cell masses of nu (eq. jump-sum), their total lambda_hat and sum nu_k (e^{y_k} - 1)."""
    n, h = grid.size, grid.spacing
    steps = jnp.arange(-(n - 1), n)
    offsets = h * steps
    upper = norm.cdf((offsets + 0.5 * h - model.jump_mean) / model.jump_std)
    lower = norm.cdf((offsets - 0.5 * h - model.jump_mean) / model.jump_std)
    masses = model.jump_intensity * (upper - lower)
    # Correlation = convolution with the flipped kernel: nu_{-m} stored at index m mod P, and
    # P >= 3n - 2 so the circular convolution equals the linear one where we read it.
    fft_size = 1 << math.ceil(math.log2(3 * n - 2))
    flipped = jnp.zeros(fft_size).at[steps % fft_size].set(masses[::-1])
    return JumpKernel(
        masses=masses,
        spectrum=jnp.fft.rfft(flipped),
        intensity=jnp.sum(masses),
        compensator=jnp.sum(masses * jnp.expm1(offsets)),
        fft_size=fft_size,
    )


def extend_with_far_field(
    values: Float[Array, " grid"], grid: LogPriceGrid, payoff: AbstractPayoff, tau: ScalarLike
) -> Float[Array, " extended"]:
    """u on the 3n - 2 nodes x_{-(n-1)}, ..., x_{2n-2}: the grid plus far field either side."""
    left, right = grid.ghost_nodes()
    return jnp.concatenate([payoff.far_field(tau, left), values, payoff.far_field(tau, right)])


def jump_correlation(extended: Float[Array, " extended"], kernel: JumpKernel) -> Float[Array, " n"]:
    """(C u)_i = sum_k nu_k u_{i+k} at the n grid nodes (eq. jump-fft)."""
    n = (extended.shape[0] + 2) // 3
    size = kernel.fft_size
    full = jnp.fft.irfft(jnp.fft.rfft(extended, size) * kernel.spectrum, size)
    return full[n - 1 : 2 * n - 1]


class TridiagonalFactor(eqx.Module):
    """Thomas factorisation of a tridiagonal matrix: sub-diagonal, 1/pivots, reduced super."""

    lower: Float[Array, " n"]
    inverse_pivot: Float[Array, " n"]
    reduced_upper: Float[Array, " n"]


def thomas_factor(
    lower: Float[Array, " n"], diagonal: Float[Array, " n"], upper: Float[Array, " n"]
) -> TridiagonalFactor:
    """Eliminate the sub-diagonal (no pivoting: needs diagonal dominance). lower[0] and
    upper[-1] are ignored."""

    def eliminate(previous_reduced_upper, row):
        low, diag, up = row
        pivot = diag - low * previous_reduced_upper
        return up / pivot, (1.0 / pivot, up / pivot)

    rows = (lower.at[0].set(0.0), diagonal, upper.at[-1].set(0.0))
    _, (inverse_pivot, reduced_upper) = jax.lax.scan(eliminate, jnp.zeros(()), rows)
    return TridiagonalFactor(rows[0], inverse_pivot, reduced_upper)


def thomas_solve(
    factor: TridiagonalFactor, rhs: Float[Array, " n *batch"]
) -> Float[Array, " n *batch"]:
    """Forward substitution then back substitution (eq. thomas), O(n)."""

    def forward(previous, row):
        low, inverse_pivot, r = row
        y = (r - low * previous) * inverse_pivot
        return y, y

    def backward(following, row):
        reduced_upper, y = row
        solution = y - reduced_upper * following
        return solution, solution

    zero = jnp.zeros_like(rhs[0])
    _, y = jax.lax.scan(forward, zero, (factor.lower, factor.inverse_pivot, rhs))
    _, solution = jax.lax.scan(backward, zero, (factor.reduced_upper, y), reverse=True)
    return solution


class ImplicitOperator(eqx.Module):
    """M = I - dt A factorised, and the weights dt (a -+ c) of the two ghost nodes."""

    factor: TridiagonalFactor
    left_ghost_weight: Scalar
    right_ghost_weight: Scalar


def implicit_operator(
    model: MertonModel, kernel: JumpKernel, grid: LogPriceGrid, dt: ScalarLike
) -> ImplicitOperator:
    """M for diffusion, compensated drift, discounting and jump outflow (eq. local-operator)."""
    h = grid.spacing
    a = 0.5 * jnp.square(model.volatility) / jnp.square(h)
    drift = model.growth_rate - 0.5 * jnp.square(model.volatility) - kernel.compensator
    c = drift / (2.0 * h)
    ones = jnp.ones(grid.size)
    lower = -dt * (a - c) * ones
    upper = -dt * (a + c) * ones
    diagonal = (1.0 + dt * (2.0 * a + model.discount_rate + kernel.intensity)) * ones
    factor = thomas_factor(lower, diagonal, upper)
    return ImplicitOperator(factor, dt * (a - c), dt * (a + c))


def add_boundary_terms(
    rhs: Float[Array, " grid"],
    operator: ImplicitOperator,
    grid: LogPriceGrid,
    payoff: AbstractPayoff,
    tau: ScalarLike,
) -> Float[Array, " grid"]:
    """dt beta: the far-field values at the ghost nodes x_{-1}, x_n enter the end rows."""
    ends = grid.nodes()[jnp.array([0, -1])] + grid.spacing * jnp.array([-1.0, 1.0])
    ghost = payoff.far_field(tau, ends)
    rhs = rhs.at[0].add(operator.left_ghost_weight * ghost[0])
    return rhs.at[-1].add(operator.right_ghost_weight * ghost[1])


def imex_step(
    values: Float[Array, " grid"],
    tau: ScalarLike,
    dt: ScalarLike,
    grid: LogPriceGrid,
    kernel: JumpKernel,
    operator: ImplicitOperator,
    payoff: AbstractPayoff,
) -> Float[Array, " grid"]:
    """u^n at time to maturity tau -> u^{n+1} at tau + dt (eq. imex-step): jumps explicit."""
    jumps = jump_correlation(extend_with_far_field(values, grid, payoff, tau), kernel)
    rhs = add_boundary_terms(values + dt * jumps, operator, grid, payoff, tau + dt)
    return thomas_solve(operator.factor, rhs)


class FixedPointResult(NamedTuple):
    """The last image G(x_k), the number of G evaluations, max|G(x_k) - x_k|, and whether
    that met the tolerance."""

    value: Float[Array, " n"]
    iterations: Int[Array, ""]
    residual: Scalar
    converged: Bool[Array, ""]


def _converged(residual, image, rtol, atol):
    size = jnp.max(jnp.abs(residual))
    return size, size <= atol + rtol * jnp.max(jnp.abs(image))


def picard_solve(
    operator: Callable[[Float[Array, " n"]], Float[Array, " n"]],
    initial: Float[Array, " n"],
    *,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_iter: int = 500,
) -> FixedPointResult:
    """x_{k+1} = G(x_k) until max|G(x) - x| <= atol + rtol max|G(x)|."""

    def keep_going(state):
        iteration, _, _, done = state
        return ~done & (iteration < max_iter)

    def step(state):
        iteration, x, _, _ = state
        image = operator(x)
        size, done = _converged(image - x, image, rtol, atol)
        return iteration + 1, image, size, done

    start = (jnp.asarray(0, jnp.int32), initial, jnp.asarray(jnp.inf), jnp.asarray(False))
    iterations, value, residual, converged = jax.lax.while_loop(keep_going, step, start)
    return FixedPointResult(value, iterations, residual, converged)


def anderson_solve(
    operator: Callable[[Float[Array, " n"]], Float[Array, " n"]],
    initial: Float[Array, " n"],
    *,
    memory: int = 5,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_iter: int = 500,
) -> FixedPointResult:
    """Anderson acceleration (eq. anderson-update) with ``memory`` differences in a ring buffer."""

    def keep_going(state):
        iteration, *_, done = state
        return ~done & (iteration < max_iter)

    def step(state):
        iteration, x, last_image, last_residual, image_diffs, residual_diffs, _, _ = state
        image = operator(x)
        residual = image - x
        size, done = _converged(residual, image, rtol, atol)
        # Column order does not matter to the least-squares problem: overwrite the oldest slot.
        slot = (iteration - 1) % memory
        has_history = iteration > 0
        residual_diffs = jnp.where(
            has_history, residual_diffs.at[slot].set(residual - last_residual), residual_diffs
        )
        image_diffs = jnp.where(
            has_history, image_diffs.at[slot].set(image - last_image), image_diffs
        )
        # SVD least squares: zero (empty) columns get zero weight, collinear ones stay harmless.
        gamma = jnp.linalg.lstsq(residual_diffs.T, residual)[0]
        x_next = image - image_diffs.T @ gamma
        return iteration + 1, x_next, image, residual, image_diffs, residual_diffs, size, done

    history = jnp.zeros((memory, initial.shape[0]), initial.dtype)
    start = (
        jnp.asarray(0, jnp.int32),
        initial,
        initial,
        jnp.zeros_like(initial),
        history,
        history,
        jnp.asarray(jnp.inf),
        jnp.asarray(False),
    )
    iterations, _, value, _, _, _, residual, converged = jax.lax.while_loop(keep_going, step, start)
    return FixedPointResult(value, iterations, residual, converged)


def implicit_jump_step(
    values: Float[Array, " grid"],
    tau: ScalarLike,
    dt: ScalarLike,
    grid: LogPriceGrid,
    kernel: JumpKernel,
    operator: ImplicitOperator,
    payoff: AbstractPayoff,
    *,
    memory: int = 5,
    rtol: float = 1e-10,
    max_iter: int = 500,
) -> FixedPointResult:
    """Implicit Euler with the jumps implicit too: solve u = G(u) (eq. fixed-point)."""
    known = add_boundary_terms(values, operator, grid, payoff, tau + dt)

    def picard_map(guess):
        extended = extend_with_far_field(guess, grid, payoff, tau + dt)
        return thomas_solve(operator.factor, known + dt * jump_correlation(extended, kernel))

    start = imex_step(values, tau, dt, grid, kernel, operator, payoff)
    if memory == 0:
        return picard_solve(picard_map, start, rtol=rtol, max_iter=max_iter)
    return anderson_solve(picard_map, start, memory=memory, rtol=rtol, max_iter=max_iter)


class PIDESolution(eqx.Module):
    """u(maturity, x) on the grid nodes; fixed-point iterations summed over steps (0 for IMEX)."""

    nodes: Float[Array, " grid"]
    values: Float[Array, " grid"]
    iterations: Int[Array, ""]
    converged: Bool[Array, ""]

    def at(self, x: ScalarLike) -> Scalar:
        """Linear interpolation of the solution at log-price x."""
        return jnp.interp(x, self.nodes, self.values)


def solve_pide(
    model: MertonModel,
    grid: LogPriceGrid,
    payoff: AbstractPayoff,
    maturity: ScalarLike,
    n_steps: int | Int[Array, ""],
    *,
    implicit_jumps: bool = False,
    memory: int = 5,
    rtol: float = 1e-10,
    max_iter: int = 500,
) -> PIDESolution:
    """March the backward PIDE (eq. pide) from g to time to maturity ``maturity``.

    IMEX steps (eq. imex-step) by default; with ``implicit_jumps`` fully implicit steps whose
    fixed point is found by Anderson acceleration (``memory`` > 0) or Picard (``memory`` = 0).
    """
    # filter_jit would treat Python floats as compile-time constants and recompile for every
    # new parameter value: make every float leaf an array first.
    model, grid, payoff = jax.tree.map(jnp.asarray, (model, grid, payoff))
    return _march(
        model, grid, payoff, jnp.asarray(maturity), n_steps, implicit_jumps, memory, rtol, max_iter
    )


@eqx.filter_jit
def _march(model, grid, payoff, maturity, n_steps, implicit_jumps, memory, rtol, max_iter):
    """solve_pide's compiled body: factor once, then n_steps steps from the terminal values."""
    dt = maturity / n_steps
    kernel = jump_kernel(model, grid)
    operator = implicit_operator(model, kernel, grid, dt)

    def march(step, carry):
        values, iterations, converged = carry
        tau = step * dt
        if implicit_jumps:
            result = implicit_jump_step(
                values,
                tau,
                dt,
                grid,
                kernel,
                operator,
                payoff,
                memory=memory,
                rtol=rtol,
                max_iter=max_iter,
            )
            return result.value, iterations + result.iterations, converged & result.converged
        return imex_step(values, tau, dt, grid, kernel, operator, payoff), iterations, converged

    start = (payoff.terminal(grid.nodes()), jnp.asarray(0, jnp.int32), jnp.asarray(True))
    values, iterations, converged = jax.lax.fori_loop(0, n_steps, march, start)
    return PIDESolution(grid.nodes(), values, iterations, converged)


class MertonEstimate(NamedTuple):
    """A fitted model (discount rate 0, one buffer step = one unit of time), the number of
    returns flagged as jumps, and whether the buffer could be fitted at all."""

    model: MertonModel
    jump_count: Int[Array, ""]
    valid: Bool[Array, ""]


def _weighted_mean(values, weights):
    return jnp.sum(weights * values) / jnp.maximum(jnp.sum(weights), 1.0)


def _weighted_variance(values, weights):
    """Unbiased weighted-count variance; 0 when fewer than two values carry weight."""
    centred = values - _weighted_mean(values, weights)
    return jnp.sum(weights * jnp.square(centred)) / jnp.maximum(jnp.sum(weights) - 1.0, 1.0)


def estimate_merton(prices: Signal, *, jump_threshold: float = 4.0) -> MertonEstimate:
    """Threshold split of log-returns into jumps and diffusion (eq. threshold), then moments."""
    positive = jnp.all(jnp.isfinite(prices) & (prices > 0))
    log_returns = jnp.diff(jnp.log(jnp.where(positive, prices, 1.0)))
    centre = jnp.median(log_returns)
    mad_scale = 1.4826 * jnp.median(jnp.abs(log_returns - centre))
    # Stale prices can make the MAD zero while the returns still vary: fall back to the std.
    scale = jnp.where(mad_scale > 0, mad_scale, jnp.std(log_returns))
    is_jump = jnp.abs(log_returns - centre) > jump_threshold * scale
    jump_weight = is_jump.astype(log_returns.dtype)
    diffusion_weight = 1.0 - jump_weight
    jump_count = jnp.sum(is_jump).astype(jnp.int32)

    diffusion_mean = _weighted_mean(log_returns, diffusion_weight)
    diffusion_variance = _weighted_variance(log_returns, diffusion_weight)
    jump_sizes = log_returns - diffusion_mean
    jump_mean = _weighted_mean(jump_sizes, jump_weight)
    jump_variance = jnp.where(
        jump_count > 1,
        jnp.maximum(
            _weighted_variance(jump_sizes, jump_weight) - diffusion_variance, diffusion_variance
        ),
        diffusion_variance,
    )
    intensity = jnp.sum(jump_weight) / log_returns.shape[0]
    kappa = jnp.expm1(jump_mean + 0.5 * jump_variance)
    growth = (
        jnp.mean(log_returns) - intensity * jump_mean + 0.5 * diffusion_variance + intensity * kappa
    )
    model = MertonModel(
        growth_rate=growth,
        volatility=jnp.sqrt(diffusion_variance),
        jump_intensity=intensity,
        jump_mean=jump_mean,
        jump_std=jnp.sqrt(jump_variance),
        discount_rate=jnp.zeros(()),
    )
    valid = positive & (diffusion_variance > 0)
    return MertonEstimate(model, jump_count, valid)


def check_price_buffer(buffer: np.ndarray, min_returns: int) -> None:
    """Raise ``ValueError`` saying what is wrong with a buffer the branch cannot fit."""
    if buffer.ndim != 1:
        raise ValueError(f"IMEX branch: the buffer must be 1-d, got shape {buffer.shape}")
    if buffer.shape[0] < min_returns + 1:
        raise ValueError(
            f"IMEX branch: {buffer.shape[0]} prices give {buffer.shape[0] - 1} returns; "
            f"fitting needs at least {min_returns}"
        )
    bad = np.flatnonzero(~np.isfinite(buffer))
    if bad.size:
        raise ValueError(
            f"IMEX branch: {bad.size} non-finite value(s) in the buffer, first at index {bad[0]}"
        )
    bad = np.flatnonzero(buffer <= 0)
    if bad.size:
        raise ValueError(
            f"IMEX branch: {bad.size} non-positive value(s) in the buffer, first at index "
            f"{bad[0]} ({buffer[bad[0]]!r}); the branch models log-prices and needs strictly "
            "positive prices (shift or rescale the series, or leave this branch out for it)"
        )
    if np.ptp(buffer) == 0:
        raise ValueError("IMEX branch: the buffer is constant; there is no volatility to fit")


class IMEXParams(eqx.Module):
    """The fitted model and the PIDE solutions u_1, u_2 on the grid (eq. forecast)."""

    model: MertonModel
    nodes: Float[Array, " grid"]
    first_moment: Float[Array, " grid"]
    second_moment: Float[Array, " grid"]
    valid: Bool[Array, ""]


@final
class IMEXBranch(AbstractBranch[IMEXParams]):
    """Branch C: forecast E[S_{t+1} | S_t] and its sd from the one-step PIDE of a fitted Merton
    model. Static hyper-parameters: the grid size (odd), IMEX time steps per buffer step, the
    jump threshold c of eq. threshold, the grid half-width in fitted standard deviations, and
    whether the jumps are implicit (Anderson with ``anderson_memory``)."""

    name: ClassVar[str] = "C"
    label: ClassVar[str] = "C IMEX"
    grid_size: int = eqx.field(default=257, static=True)
    time_steps: int = eqx.field(default=32, static=True)
    jump_threshold: float = eqx.field(default=4.0, static=True)
    width_in_sds: float = eqx.field(default=8.0, static=True)
    implicit_jumps: bool = eqx.field(default=False, static=True)
    anderson_memory: int = eqx.field(default=5, static=True)
    min_returns: int = eqx.field(default=16, static=True)

    @classmethod
    def from_config(cls, config: PredictorConfig) -> IMEXBranch:
        """PredictorConfig has no IMEX fields yet; the buffer size only bounds ``min_returns``."""
        return cls(min_returns=min(16, config.wtmm_buffer_size - 1))

    def init(self, *, key: PRNGKey) -> IMEXParams:
        del key  # nothing random: unfitted params simply make predict fall back
        zeros = jnp.zeros(self.grid_size)
        scalar = jnp.zeros(())
        model = MertonModel(scalar, scalar, scalar, scalar, scalar, scalar)
        return IMEXParams(model, zeros, zeros, zeros, jnp.asarray(False))

    def fit(self, params: IMEXParams, buffer: Signal) -> IMEXParams:
        del params  # the fit uses only the buffer
        if not isinstance(buffer, jax.core.Tracer):
            check_price_buffer(np.asarray(buffer), self.min_returns)
        return _solve_moments_jit(self, buffer)

    def solve_moments(self, buffer: Signal) -> IMEXParams:
        """The slow path without host checks (jit/vmap-able): estimate, grid around log S_t,
        one-step PIDE for p = 1, 2."""
        fitted = estimate_merton(buffer, jump_threshold=self.jump_threshold)
        # An unfittable buffer (traced, so it could not raise) is solved with a harmless
        # stand-in model, so no NaN reaches the solver's loops; the flag marks the result.
        stand_in = MertonModel(0.0, 0.01, 0.0, 0.0, 0.01, 0.0)
        model = jax.tree.map(
            lambda estimate, safe: jnp.where(fitted.valid, estimate, safe), fitted.model, stand_in
        )
        jump_reach = jnp.where(
            model.jump_intensity > 0,
            jnp.abs(model.jump_mean) + self.width_in_sds * model.jump_std,
            0.0,
        )
        half_width = self.width_in_sds * model.volatility + jump_reach
        centre = jnp.log(jnp.where(fitted.valid, buffer[-1], 1.0))
        grid = LogPriceGrid(centre, half_width, self.grid_size)

        def moment(power):
            solution = solve_pide(
                model,
                grid,
                ExponentialPayoff(power),
                1.0,
                self.time_steps,
                implicit_jumps=self.implicit_jumps,
                memory=self.anderson_memory,
            )
            return solution.values

        first, second = jax.vmap(moment)(jnp.array([1.0, 2.0]))
        finite = jnp.all(jnp.isfinite(first)) & jnp.all(jnp.isfinite(second))
        return IMEXParams(fitted.model, grid.nodes(), first, second, fitted.valid & finite)

    def predict(self, params: IMEXParams, buffer: Signal, *, key: PRNGKey) -> Forecast:
        del key  # the forecast is a deterministic interpolation
        last = buffer[-1]
        usable = params.valid & jnp.isfinite(last) & (last > 0)
        log_price = jnp.log(jnp.where(usable, last, 1.0))
        # Interpolate the smooth ratios u_p e^{-p x} on the central half of the grid only.
        quarter = (params.nodes.shape[0] - 1) // 4
        inside = jnp.clip(log_price, params.nodes[quarter], params.nodes[-1 - quarter])
        growth = jnp.interp(inside, params.nodes, params.first_moment * jnp.exp(-params.nodes))
        second = jnp.interp(
            inside, params.nodes, params.second_moment * jnp.exp(-2.0 * params.nodes)
        )
        mean = last * growth
        sd = jnp.abs(last) * jnp.sqrt(jnp.maximum(second - jnp.square(growth), 0.0))
        random_walk_sd = jnp.std(jnp.diff(buffer))
        return Forecast(jnp.where(usable, mean, last), jnp.where(usable, sd, random_walk_sd))


_solve_moments_jit = eqx.filter_jit(IMEXBranch.solve_moments)


__all__ = [
    "AbstractPayoff",
    "ExponentialPayoff",
    "FixedPointResult",
    "IMEXBranch",
    "IMEXParams",
    "ImplicitOperator",
    "JumpKernel",
    "LogPriceGrid",
    "MertonEstimate",
    "MertonModel",
    "PIDESolution",
    "TridiagonalFactor",
    "add_boundary_terms",
    "anderson_solve",
    "check_price_buffer",
    "estimate_merton",
    "extend_with_far_field",
    "imex_step",
    "implicit_jump_step",
    "implicit_operator",
    "jump_correlation",
    "jump_kernel",
    "picard_solve",
    "solve_pide",
    "thomas_factor",
    "thomas_solve",
]
