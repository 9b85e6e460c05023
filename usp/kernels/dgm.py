# GENERATED FILE - DO NOT EDIT.
# Source: notebooks/04_dgm.md (code cells tagged `export`).
# Edit the notebook, then run `make export`.

"""Branch B: the Deep Galerkin method (DGM) for backward Kolmogorov and HJB equations.

A network V(t, x) is trained so that V_t + H(t, x, V, V_x, V_xx) = 0 on [0, T] x [x_lo, x_hi],
V(T, .) = g and a boundary condition hold, by stochastic gradient descent on mean squared
residuals at random points (Sirignano and Spiliopoulos, 2018). The PDE is an argument: a
`PDEProblem` holds plain functions of (t, x, jet, args). The branch fits a linear-drift
diffusion to the buffer, solves its backward Kolmogorov equation over one sampling interval with
g(x) = x, and forecasts E[X_next | X_now = x] = V(0, x). The entropy of V over a grid of states,
against that of g, flags a collapsed network (mode collapse, ORCH-8).
"""

from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple, final

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.scipy.special import ndtri
from jaxtyping import Array, Bool, Float, Int

from usp.contracts.arrays import Flag, PRNGKey, Scalar, ScalarLike, Signal
from usp.contracts.branch import COLLAPSE_CHECK, AbstractBranch, Forecast
from usp.contracts.config import PredictorConfig
from usp.contracts.errors import DomainError


class Jet(NamedTuple):
    """V and the derivatives a second-order PDE needs, at one point (t, x)."""

    value: Scalar
    v_t: Scalar
    v_x: Scalar
    v_xx: Scalar


def jet(net: Callable[[Scalar, Scalar], Scalar], t: Scalar, x: Scalar) -> Jet:
    """(V, V_t, V_x, V_xx) at (t, x) by nested forward-mode JVPs (x and t are scalars)."""

    def value_and_slope(y):
        return jax.jvp(lambda z: net(t, z), (y,), (jnp.ones_like(y),))

    (value, v_x), (_, v_xx) = jax.jvp(value_and_slope, (x,), (jnp.ones_like(x),))
    _, v_t = jax.jvp(lambda s: net(s, x), (t,), (jnp.ones_like(t),))
    return Jet(value, v_t, v_x, v_xx)


class DGMNet(eqx.Module):
    """V(t, x): a tanh MLP on (t, x) mapped from [0, t_final] x [x_lo, x_hi] onto [-1, 1]^2.

    The layers are stored as a tuple of `eqx.nn.Linear` (arrays only, the activation is code),
    so the network is a pytree of arrays that `jax.jit`, `lax.scan` carries and msgpack accept.
    """

    layers: tuple[eqx.nn.Linear, ...]
    t_final: float = eqx.field(static=True)
    x_lo: float = eqx.field(static=True)
    x_hi: float = eqx.field(static=True)

    def __init__(
        self,
        t_final: float,
        x_lo: float,
        x_hi: float,
        *,
        width: int = 32,
        depth: int = 3,
        key: PRNGKey,
    ):
        if not (t_final > 0.0 and x_hi > x_lo and depth >= 1):
            raise ValueError(
                "DGMNet: need t_final > 0, x_hi > x_lo and depth >= 1; got "
                f"t_final={t_final}, x_lo={x_lo}, x_hi={x_hi}, depth={depth}"
            )
        sizes = [2] + [width] * depth + ["scalar"]
        keys = jax.random.split(key, depth + 1)
        # Initial weights drawn in float32 and widened: the same key then gives the same
        # network in a float32 and a float64 run (JAX's float64 draws use other bits).
        dtype = jnp.result_type(float)
        layers = (
            eqx.nn.Linear(n_in, n_out, dtype=jnp.float32, key=k)
            for n_in, n_out, k in zip(sizes[:-1], sizes[1:], keys, strict=True)
        )
        self.layers = tuple(jax.tree.map(lambda w: w.astype(dtype), layer) for layer in layers)
        self.t_final = float(t_final)
        self.x_lo = float(x_lo)
        self.x_hi = float(x_hi)

    def __call__(self, t: ScalarLike, x: ScalarLike) -> Scalar:
        s = 2.0 * jnp.asarray(t) / self.t_final - 1.0
        y = (2.0 * jnp.asarray(x) - self.x_lo - self.x_hi) / (self.x_hi - self.x_lo)
        hidden = jnp.stack([s, y])
        for layer in self.layers[:-1]:
            hidden = jnp.tanh(layer(hidden))
        return self.layers[-1](hidden)


class PDEProblem(eqx.Module):
    """V_t + hamiltonian(t, x, jet, args) = 0 on [0, t_final) x (x_lo, x_hi),
    V(t_final, x) = terminal(x, args), boundary(t, x, jet, args) = 0 at x in {x_lo, x_hi}.

    Pass module-level functions (not fresh lambdas) so compiled training is reused.
    """

    hamiltonian: Callable[..., Any]
    terminal: Callable[..., Any]
    boundary: Callable[..., Any]
    t_final: float = eqx.field(static=True)
    x_lo: float = eqx.field(static=True)
    x_hi: float = eqx.field(static=True)


def uniform_points(
    key: PRNGKey, n: int, lo: ScalarLike = 0.0, hi: ScalarLike = 1.0
) -> Float[Array, " n"]:
    """n points uniform on [lo, hi), drawn in float32 and widened, so that a float32 and a
    float64 run train on the same points (JAX's float64 draws use other bits of the key)."""
    u = jax.random.uniform(key, (n,), jnp.float32).astype(jnp.result_type(float))
    return lo + (hi - lo) * u


class LossTerms(NamedTuple):
    """Mean squared residuals of the PDE, the terminal condition and the boundary condition."""

    interior: Scalar
    terminal: Scalar
    boundary: Scalar


def dgm_loss_terms(
    net: DGMNet, problem: PDEProblem, args: Any, *, key: PRNGKey, batch_size: int
) -> LossTerms:
    """Monte-Carlo estimate of the three terms of the DGM loss at `batch_size` points each."""
    k_t, k_x, k_terminal, k_side_t, k_side = jax.random.split(key, 5)
    lo, hi, t_final = problem.x_lo, problem.x_hi, problem.t_final
    jets = jax.vmap(lambda t, x: jet(net, t, x))

    t = uniform_points(k_t, batch_size, 0.0, t_final)
    x = uniform_points(k_x, batch_size, lo, hi)
    interior = jets(t, x)
    pde = interior.v_t + jax.vmap(problem.hamiltonian, (0, 0, 0, None))(t, x, interior, args)

    x_terminal = uniform_points(k_terminal, batch_size, lo, hi)
    t_terminal = jnp.full((batch_size,), t_final)
    mismatch = jax.vmap(net)(t_terminal, x_terminal) - jax.vmap(problem.terminal, (0, None))(
        x_terminal, args
    )

    t_side = uniform_points(k_side_t, batch_size, 0.0, t_final)
    x_side = jnp.where(uniform_points(k_side, batch_size) < 0.5, lo, hi)
    side = jax.vmap(problem.boundary, (0, 0, 0, None))(t_side, x_side, jets(t_side, x_side), args)

    return LossTerms(jnp.mean(pde**2), jnp.mean(mismatch**2), jnp.mean(side**2))


def dgm_loss(
    net: DGMNet, problem: PDEProblem, args: Any, *, key: PRNGKey, batch_size: int
) -> Scalar:
    """The DGM loss: interior + terminal + boundary mean squared residuals."""
    terms = dgm_loss_terms(net, problem, args, key=key, batch_size=batch_size)
    return terms.interior + terms.terminal + terms.boundary


class TrainingHistory(NamedTuple):
    """Per-step loss terms (interior, terminal, boundary) and the optional monitor's values."""

    loss_terms: Float[Array, "steps 3"]
    monitor: Float[Array, " steps"]


@eqx.filter_jit
def train_dgm(
    net: DGMNet,
    problem: PDEProblem,
    args: Any,
    *,
    key: PRNGKey,
    n_steps: int,
    batch_size: int,
    learning_rate: ScalarLike,
    monitor: Callable[[DGMNet], Scalar] | None = None,
) -> tuple[DGMNet, TrainingHistory]:
    """`n_steps` Adam steps on the DGM loss, starting from `net` (a warm start when trained)."""
    schedule = optax.cosine_decay_schedule(learning_rate, n_steps, alpha=0.05)
    optimiser = optax.adam(schedule)
    trainable, static = eqx.partition(net, eqx.is_inexact_array)

    def loss(params, step_key):
        terms = dgm_loss_terms(
            eqx.combine(params, static), problem, args, key=step_key, batch_size=batch_size
        )
        return terms.interior + terms.terminal + terms.boundary, terms

    def step(carry, step_key):
        params, opt_state = carry
        (_, terms), grads = jax.value_and_grad(loss, has_aux=True)(params, step_key)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        watched = jnp.nan if monitor is None else monitor(eqx.combine(params, static))
        return (params, opt_state), (jnp.stack(terms), jnp.asarray(watched, float))

    carry = (trainable, optimiser.init(trainable))
    (trainable, _), (terms, watched) = jax.lax.scan(step, carry, jax.random.split(key, n_steps))
    return eqx.combine(trainable, static), TrainingHistory(terms, watched)


def spacing_entropy(
    values: Float[Array, " m"], *, window: int | None = None, floor: float = 0.0
) -> Scalar:
    """Differential entropy of a sample by Ebrahimi's m-spacing estimator (Vasicek corrected at
    the edges). Spacings below `floor` count as `floor` (0: a constant sample gives -inf)."""
    n = values.shape[0]
    m = int((n**0.5) + 0.5) if window is None else window
    if not 1 <= m < n / 2:
        raise ValueError(f"spacing_entropy: window {m} needs 1 <= window < n/2 = {n / 2}")
    ordered = jnp.sort(values)
    padded = jnp.concatenate([jnp.full(m, ordered[0]), ordered, jnp.full(m, ordered[-1])])
    spacing = jnp.maximum(padded[2 * m :] - padded[: -2 * m], floor)
    i = jnp.arange(1, n + 1, dtype=values.dtype)
    edge_factor = jnp.where(i <= m, 1.0 + (i - 1) / m, 2.0)
    edge_factor = jnp.where(i >= n - m + 1, 1.0 + (n - i) / m, edge_factor)
    return jnp.mean(jnp.log(n * spacing / (edge_factor * m)))


class EntropyCheck(NamedTuple):
    """H_DGM, H[g] (both in units of the spread of g) and whether H_DGM < gamma H[g]."""

    dgm_entropy: Scalar
    terminal_entropy: Scalar
    collapsed: Bool[Array, ""]


def entropy_check(
    v_values: Float[Array, " m"],
    g_values: Float[Array, " m"],
    gamma: ScalarLike,
    *,
    spacing_floor: float = 1e-9,
) -> EntropyCheck:
    """Mode-collapse check H[V] < gamma H[g], both entropies measured in units of std(g)."""
    spread = jnp.std(g_values)
    unit = jnp.where(spread > 0, spread, 1.0)
    h_v = spacing_entropy(v_values / unit, floor=spacing_floor)
    h_g = spacing_entropy(g_values / unit, floor=spacing_floor)
    return EntropyCheck(h_v, h_g, jnp.logical_not(h_v >= gamma * h_g))


class LinearDiffusion(NamedTuple):
    """dZ = (intercept + slope Z) dt + volatility dW; time in sampling intervals."""

    intercept: Scalar
    slope: Scalar
    volatility: Scalar


MIN_RESIDUAL_STD = 1e-6
"""Floor of the fitted one-step standard deviation, in units of the buffer's standard deviation."""


class AR1Fit(NamedTuple):
    """z[k+1] = intercept + coefficient z[k] + e[k], e of standard deviation residual_std."""

    intercept: Scalar
    coefficient: Scalar
    residual_std: Scalar


def fit_ar1(z: Signal, *, bounds: tuple[float, float] = (0.01, 1.2)) -> AR1Fit:
    """Least squares of each value on the previous one, the coefficient clipped to `bounds`
    (the intercept and residual spread are re-fitted at the clipped coefficient)."""
    before, after = z[:-1], z[1:]
    centred = before - jnp.mean(before)
    spread = jnp.sum(centred**2)
    # All but the last value equal: no slope to estimate; assume a random walk (phi = 1).
    slope = jnp.sum(centred * (after - jnp.mean(after))) / jnp.where(spread > 0, spread, 1.0)
    coefficient = jnp.clip(jnp.where(spread > 0, slope, 1.0), *bounds)
    intercept = jnp.mean(after) - coefficient * jnp.mean(before)
    residuals = after - intercept - coefficient * before
    residual_std = jnp.sqrt(jnp.sum(residuals**2) / (residuals.shape[0] - 2))
    # A buffer the AR(1) fits exactly (a straight line) must still get a positive scale.
    return AR1Fit(intercept, coefficient, jnp.maximum(residual_std, MIN_RESIDUAL_STD))


def _log_over_linear(phi: Scalar) -> Scalar:
    """log(phi) / (phi - 1), continuous at phi = 1 (series 1 - u/2 + u^2/3 with u = phi - 1)."""
    u = phi - 1.0
    near_one = jnp.abs(u) < 1e-6
    safe_u = jnp.where(near_one, 1.0, u)
    return jnp.where(near_one, 1.0 - u / 2.0 + u**2 / 3.0, jnp.log1p(safe_u) / safe_u)


def linear_diffusion_from_ar1(fit: AR1Fit) -> LinearDiffusion:
    """The linear-drift diffusion whose one-step transition is exactly the fitted AR(1)."""
    ratio = _log_over_linear(fit.coefficient)
    variance = fit.residual_std**2 * ratio * 2.0 / (fit.coefficient + 1.0)
    return LinearDiffusion(fit.intercept * ratio, jnp.log(fit.coefficient), jnp.sqrt(variance))


def kolmogorov_hamiltonian(t: Scalar, x: Scalar, jet: Jet, args: LinearDiffusion) -> Scalar:
    """Generator of the diffusion applied to V: b(x) V_x + sigma^2/2 V_xx."""
    return (args.intercept + args.slope * x) * jet.v_x + 0.5 * args.volatility**2 * jet.v_xx


def identity_terminal(x: Scalar, args: Any) -> Scalar:
    """g(x) = x: V(0, x) is then the conditional mean of the state one horizon ahead."""
    return x


def linear_growth_boundary(t: Scalar, x: Scalar, jet: Jet, args: Any) -> Scalar:
    """V_xx = 0 at the edges: a linear payoff keeps the value asymptotically linear."""
    return jet.v_xx


def kolmogorov_problem(half_width: float = 5.0) -> PDEProblem:
    """Backward Kolmogorov equation over one sampling interval on [-half_width, half_width]."""
    return PDEProblem(
        kolmogorov_hamiltonian,
        identity_terminal,
        linear_growth_boundary,
        1.0,
        -half_width,
        half_width,
    )


DOMAIN_MARGIN = 0.25
"""The fitted domain is the fitted buffer's z-range widened by this fraction of it each side."""


class DGMParams(eqx.Module):
    """State of branch B. Units: z = (x - loc) / scale; time in sampling intervals."""

    net: DGMNet
    loc: Scalar
    scale: Scalar
    z_low: Scalar
    z_high: Scalar
    """The fitted domain [z_low, z_high] (empty, z_low > z_high, before the first fit)."""
    diffusion: LinearDiffusion
    step_std: Scalar
    entropy: EntropyCheck
    training_loss: Scalar
    n_rounds: Int[Array, ""]
    key: Array


def _raw_key(key: PRNGKey) -> Array:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


@final
class DGMBranch(AbstractBranch[DGMParams]):
    """Branch B: forecast = V(0, x_now), V solving the fitted diffusion's Kolmogorov equation."""

    name: ClassVar[str] = "B"
    label: ClassVar[str] = "B DGM"
    roles: ClassVar[frozenset[str]] = frozenset({COLLAPSE_CHECK})
    non_finite_params: ClassVar[dict[str, frozenset[str]]] = {".training_loss": frozenset({"inf"})}
    """The loss is +inf until the first training round (``init``)."""
    entropy_gamma: float = eqx.field(static=True, default=0.5)
    width: int = eqx.field(static=True, default=32)
    depth: int = eqx.field(static=True, default=3)
    half_width: float = eqx.field(static=True, default=5.0)
    batch_size: int = eqx.field(static=True, default=256)
    train_steps: int = eqx.field(static=True, default=300)
    long_steps: int = eqx.field(static=True, default=1500)
    learning_rate: float = eqx.field(static=True, default=3e-3)
    warm_learning_rate: float = eqx.field(static=True, default=1e-3)
    loss_tolerance: float = eqx.field(static=True, default=1e-3)
    max_extra_rounds: int = eqx.field(static=True, default=3)
    min_length: int = eqx.field(static=True, default=16)
    entropy_points: int = eqx.field(static=True, default=128)

    @classmethod
    def from_config(cls, config: PredictorConfig, **overrides: Any) -> "DGMBranch":
        """gamma from `dgm_entropy_gamma`, one entropy point per buffer slot; other fields are
        the branch's own hyper-parameters (keyword overrides)."""
        fields = {"entropy_gamma": config.dgm_entropy_gamma}
        fields["entropy_points"] = config.wtmm_buffer_size
        return cls(**{**fields, **overrides})

    def init(self, *, key: PRNGKey) -> DGMParams:
        """An untrained network (finite, meaningless forecasts) with the martingale dynamics."""
        net_key, train_key = jax.random.split(key)
        net = DGMNet(
            1.0, -self.half_width, self.half_width, width=self.width, depth=self.depth, key=net_key
        )
        # Explicit dtypes: weakly typed leaves would change type at the first fit and make
        # every compiled function taking the state compile a second time.
        one, zero = jnp.ones(()), jnp.zeros(())
        return DGMParams(
            net=net,
            loc=zero,
            scale=one,
            z_low=one,
            z_high=-one,
            diffusion=LinearDiffusion(zero, zero, one),
            step_std=one,
            entropy=self.entropy(net),
            training_loss=jnp.full((), jnp.inf, one.dtype),
            n_rounds=jnp.zeros((), jnp.int32),
            key=_raw_key(train_key),
        )

    def validate(self, buffer: Signal) -> None:
        """Raise on a buffer no diffusion can be fitted to (slow path only)."""
        n = buffer.shape[0]
        if n < self.min_length:
            raise ValueError(f"DGMBranch.fit: need at least {self.min_length} values, got {n}")
        finite = jnp.isfinite(buffer)
        if not bool(jnp.all(finite)):
            bad = int(jnp.sum(~finite))
            first = int(jnp.argmin(finite))
            raise DomainError(f"DGMBranch.fit: {bad} non-finite value(s), first at index {first}")
        spread, level = float(jnp.std(buffer)), float(jnp.max(jnp.abs(buffer)))
        if spread <= 1e-12 * max(level, 1.0):
            raise ValueError(
                f"DGMBranch.fit: the buffer is constant (std {spread:.3g}); no diffusion to fit"
            )

    def fit(self, params: DGMParams, buffer: Signal) -> DGMParams:
        """Fit the diffusion to the buffer, then (warm-)train V on its Kolmogorov equation."""
        self.validate(buffer)
        params = self.train(params, buffer, long=int(params.n_rounds) == 0)
        for _ in range(self.max_extra_rounds):
            if float(params.training_loss) <= self.loss_tolerance:
                break
            params = self.train(params, buffer, long=True)
        return params

    @eqx.filter_jit
    def train(self, params: DGMParams, buffer: Signal, *, long: bool = False) -> DGMParams:
        """One training round without host-side checks: pure, jit- and vmap-able (`long` is
        static: `long_steps` at `learning_rate`, else `train_steps` at `warm_learning_rate`)."""
        loc, scale = jnp.mean(buffer), jnp.std(buffer)
        z = (buffer - loc) / scale
        reach = DOMAIN_MARGIN * (jnp.max(z) - jnp.min(z))
        ar1 = fit_ar1(z)
        diffusion = linear_diffusion_from_ar1(ar1)
        key, train_key = jax.random.split(params.key)
        n_steps = self.long_steps if long else self.train_steps
        net, history = train_dgm(
            params.net,
            kolmogorov_problem(self.half_width),
            diffusion,
            key=train_key,
            n_steps=n_steps,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate if long else self.warm_learning_rate,
        )
        # The loss at the end of the round, averaged over its last steps' fresh random points.
        final_loss = jnp.mean(jnp.sum(history.loss_terms[-max(n_steps // 10, 1) :], axis=1))
        return DGMParams(
            net=net,
            loc=loc,
            scale=scale,
            z_low=jnp.min(z) - reach,
            z_high=jnp.max(z) + reach,
            diffusion=diffusion,
            step_std=ar1.residual_std,
            entropy=self.entropy(net),
            training_loss=final_loss,
            n_rounds=params.n_rounds + 1,
            key=key,
        )

    def predict(self, params: DGMParams, buffer: Signal, *, key: PRNGKey) -> Forecast:
        """V(0, z_now) mapped back to price units; linear beyond the PDE's domain (V_xx = 0
        there); the last value before the first fit. A non-finite last value gives a NaN
        forecast. In the fitted domain when z_now lies in [z_low, z_high]: the diffusion was
        fitted to levels, and its mean reversion pulls toward a mean that a price far outside
        them has left."""
        del key  # a conditional expectation: nothing to sample
        z = (buffer[-1] - params.loc) / params.scale
        edge = jnp.clip(z, -self.half_width, self.half_width)
        value, slope = jax.jvp(lambda y: params.net(0.0, y), (edge,), (jnp.ones_like(edge),))
        v = value + slope * (z - edge)
        in_domain = (z >= params.z_low) & (z <= params.z_high)
        # Untrained (no fit yet): the last value, like every other unfitted branch, and out of
        # the (empty) domain; an untrained network's value is noise a blend must not score.
        mean = jnp.where(params.n_rounds > 0, params.loc + params.scale * v, buffer[-1])
        return Forecast(mean, params.scale * params.step_std, in_domain)

    def entropy(self, net_or_params: DGMNet | DGMParams) -> EntropyCheck:
        """Entropy check of V(0, .) against g on the standard-normal quantile grid."""
        net = net_or_params.net if isinstance(net_or_params, DGMParams) else net_or_params
        levels = (jnp.arange(self.entropy_points) + 0.5) / self.entropy_points
        states = ndtri(levels)
        values = jax.vmap(lambda z: net(0.0, z))(states)
        return entropy_check(values, states, self.entropy_gamma)

    def collapse_check(self, params: DGMParams) -> tuple[Scalar, Flag]:
        """The predictor's mode-collapse check (role ``COLLAPSE_CHECK``): the entropy check of
        the last fit, H_DGM and whether H_DGM < γ·H[g]."""
        return params.entropy.dgm_entropy, params.entropy.collapsed


__all__ = [
    "DOMAIN_MARGIN",
    "MIN_RESIDUAL_STD",
    "AR1Fit",
    "DGMBranch",
    "DGMNet",
    "DGMParams",
    "EntropyCheck",
    "Jet",
    "LinearDiffusion",
    "LossTerms",
    "PDEProblem",
    "TrainingHistory",
    "dgm_loss",
    "dgm_loss_terms",
    "entropy_check",
    "fit_ar1",
    "identity_terminal",
    "jet",
    "kolmogorov_hamiltonian",
    "kolmogorov_problem",
    "linear_diffusion_from_ar1",
    "linear_growth_boundary",
    "spacing_entropy",
    "train_dgm",
    "uniform_points",
]
