# GENERATED FILE - DO NOT EDIT.
# Source: notebooks/06_signatures.md (code cells tagged `export`).
# Edit the notebook, then run `make export`.

"""Branch D: log-signatures of lagged windows, ridge regression on the next increment.

Signatures and log-signatures of the time-augmented path (signax), the ridge with a GCV-chosen
penalty, and `SignatureBranch`, the branch of DESIGN §6. Only the parts of signax 0.2.1 that work
on current JAX are used: ``signature``/``logsignature`` with ``num_chunks=1`` and
``signature_combine``. ``num_chunks > 1`` and ``multi_signature_combine`` call ``jax.tree_map``,
which JAX removed.
"""

from __future__ import annotations

from typing import ClassVar, final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import signax
from jaxtyping import Array, Bool, Float

from usp.contracts import AbstractBranch, DomainError, Forecast, PredictorConfig
from usp.contracts.arrays import Flag, PRNGKey, Scalar, Signal
from usp.contracts.branch import EMERGENCY_FALLBACK

DEFAULT_WINDOW = 16
"""Values per lagged window (static): w in the chapter's equations."""

RELATIVE_RIDGE_PENALTIES = tuple(10.0 ** (k / 2) for k in range(-10, 3))
"""GCV grid of ridge penalties, in units of the number of training windows m."""

MIN_WINDOWS_PER_FEATURE = 4
"""fit needs at least this many training windows per coefficient (intercept included)."""

WINSOR_LIMIT = 3.0
"""c of eq. (winsor): targets are clipped this many robust standard deviations from their median."""

PATH_DIM = 2  # channels of the time-augmented path: (time, value)


def _mobius(n: int) -> int:
    result, factor = 1, 2
    while factor * factor <= n:
        if n % factor == 0:
            n //= factor
            if n % factor == 0:
                return 0
            result = -result
        factor += 1
    return -result if n > 1 else result


def logsignature_dimension(dim: int, depth: int) -> int:
    """Number of Lyndon words of length <= depth over dim letters (Witt's formula)."""
    return sum(
        sum(_mobius(level // j) * dim**j for j in range(1, level + 1) if level % j == 0) // level
        for level in range(1, depth + 1)
    )


def time_augmented_path(
    values: Float[Array, " w"], increment_scale: Scalar | float
) -> Float[Array, "w 2"]:
    """Eq. (time augmentation): channel 0 is time on [0, 1], channel 1 the normalised values."""
    time = jnp.linspace(0.0, 1.0, values.shape[0], dtype=values.dtype)
    return jnp.stack([time, (values - values[0]) / increment_scale], axis=-1)


def signature(path: Float[Array, "*batch length dim"], depth: int) -> Float[Array, "*batch f"]:
    """Truncated signature, levels 1..depth flattened (the level-0 term 1 is implicit)."""
    return signax.signature(path, depth, flatten=True, num_chunks=1)


def logsignature(path: Float[Array, "*batch length dim"], depth: int) -> Float[Array, "*batch f"]:
    """Log-signature as the coefficients of log S at the Lyndon words, by level then word."""
    return signax.logsignature(path, depth, num_chunks=1, flatten=True)


def lagged_windows(buffer: Float[Array, " n"], window: int) -> Float[Array, "k w"]:
    """All n - window + 1 windows of consecutive values, oldest first."""
    starts = np.arange(buffer.shape[0] - window + 1)
    return buffer[starts[:, None] + np.arange(window)[None, :]]


def training_pairs(
    buffer: Float[Array, " n"], window: int
) -> tuple[Float[Array, "m w"], Float[Array, " m"]]:
    """Windows that have a successor, and the increment that follows each (raw units)."""
    increments = jnp.diff(buffer)
    return lagged_windows(buffer, window)[:-1], increments[window - 1 :]


def window_features(
    windows: Float[Array, "k w"], increment_scale: Scalar | float, depth: int
) -> Float[Array, "k p"]:
    """Log-signatures of the time-augmented windows, without the time coordinate (eq. pairs)."""
    paths = jax.vmap(time_augmented_path, in_axes=(0, None))(windows, increment_scale)
    # Coordinate 0 is the Lyndon word "time": the window's duration, 1 for every window.
    return logsignature(paths, depth)[:, 1:]


def increment_scale(buffer: Float[Array, " n"]) -> Scalar:
    """Standard deviation of the buffer's increments: the unit of the normalised path."""
    return jnp.std(jnp.diff(buffer))


def buffer_is_usable(buffer: Float[Array, " n"]) -> Flag:
    """Finite, with increments above rounding noise of the level (else nothing to learn)."""
    finite = jnp.all(jnp.isfinite(buffer))
    scale = increment_scale(jnp.where(finite, buffer, 0.0))
    noise_floor = 64 * jnp.finfo(buffer.dtype).eps * jnp.max(jnp.abs(buffer))
    return finite & (scale > noise_floor)


class RidgeFit(eqx.Module):
    """Ridge regression y ≈ intercept + features @ coefficients, penalty chosen by GCV."""

    coefficients: Float[Array, " p"]
    intercept: Scalar
    penalty: Scalar
    """The chosen λ (in the units of the standardised design)."""
    effective_parameters: Scalar
    """tr H at the chosen λ, intercept included (eq. ridge)."""

    def residual_std(self, features: Float[Array, "m p"], targets: Float[Array, " m"]) -> Scalar:
        """sqrt(RSS / (m − tr H)) of ``targets`` under this fit: the fitted targets, or others
        on the same features (the raw targets of a fit on winsorised ones)."""
        residuals = targets - self.intercept - features @ self.coefficients
        return jnp.sqrt(jnp.sum(residuals**2) / (targets.shape[0] - self.effective_parameters))


def ridge_gcv(
    features: Float[Array, "m p"],
    targets: Float[Array, " m"],
    relative_penalties: tuple[float, ...] = RELATIVE_RIDGE_PENALTIES,
) -> RidgeFit:
    """Eq. (ridge) on standardised features; λ = m·grid value minimising eq. (GCV)."""
    m = features.shape[0]
    mean_x = features.mean(axis=0)
    std_x = features.std(axis=0)
    std_x = jnp.where(std_x > 0, std_x, 1.0)  # a constant column is all zeros once centred
    design = (features - mean_x) / std_x
    mean_y = targets.mean()
    centred_y = targets - mean_y
    u, s, vt = jnp.linalg.svd(design, full_matrices=False)
    projected_y = u.T @ centred_y
    penalties = m * jnp.asarray(relative_penalties, dtype=features.dtype)
    shrinkage = s**2 / (s**2 + penalties[:, None])  # one row per penalty
    fitted = (shrinkage * projected_y) @ u.T
    rss = jnp.sum((centred_y - fitted) ** 2, axis=1)
    hat_trace = 1.0 + shrinkage.sum(axis=1)
    gcv = m * rss / (m - hat_trace) ** 2
    best = jnp.argmin(gcv)
    standardised_coefficients = vt.T @ (s / (s**2 + penalties[best]) * projected_y)
    coefficients = standardised_coefficients / std_x
    return RidgeFit(
        coefficients=coefficients,
        intercept=mean_y - mean_x @ coefficients,
        effective_parameters=hat_trace[best],
        penalty=penalties[best],
    )


class SignatureParams(eqx.Module):
    """Learned state of branch D; every leaf is an array, so it can be vmapped and snapshotted."""

    coefficients: Float[Array, " p"]
    intercept: Scalar
    increment_scale: Scalar
    """σ: the raw-unit size of one normalised increment."""
    residual_std: Scalar
    """s_res: the normalised one-step residual standard deviation."""
    penalty: Scalar
    fitted: Bool[Array, ""]


def last_finite_value(buffer: Float[Array, " n"]) -> Scalar:
    """The most recent finite entry; NaN if there is none."""
    positions = jnp.where(jnp.isfinite(buffer), jnp.arange(buffer.shape[0]), -1)
    newest = jnp.max(positions)
    return jnp.where(newest >= 0, buffer[jnp.maximum(newest, 0)], jnp.nan)


def finite_increment_std(buffer: Float[Array, " n"]) -> Scalar:
    """Standard deviation of the finite increments (NaN if there are none)."""
    increments = jnp.diff(buffer)
    finite = jnp.isfinite(increments)
    count = finite.sum()
    mean = jnp.where(finite, increments, 0.0).sum() / count
    return jnp.sqrt(jnp.where(finite, (increments - mean) ** 2, 0.0).sum() / count)


@final
class SignatureBranch(AbstractBranch[SignatureParams]):
    """Branch D (DESIGN §6): ridge regression of the next increment on log-signatures of the
    time-augmented lagged windows of the buffer. The emergency fallback: the spec hands it the
    blend while the circuit breaker is tripped."""

    name: ClassVar[str] = "D"
    label: ClassVar[str] = "D signature"
    roles: ClassVar[frozenset[str]] = frozenset({EMERGENCY_FALLBACK})
    depth: int = eqx.field(static=True)
    window: int = eqx.field(static=True, default=DEFAULT_WINDOW)
    relative_penalties: tuple[float, ...] = eqx.field(static=True, default=RELATIVE_RIDGE_PENALTIES)

    def __check_init__(self):
        if not 1 <= self.depth <= 6:
            raise ValueError(f"SignatureBranch.depth must be in 1..6, got {self.depth}")
        if self.window < 3:
            raise ValueError(f"SignatureBranch.window must be >= 3, got {self.window}")

    @classmethod
    def from_config(cls, config: PredictorConfig) -> SignatureBranch:
        branch = cls(depth=config.log_sig_depth)
        if config.wtmm_buffer_size < branch.min_buffer_length:
            raise ValueError(
                f"branch D at log_sig_depth={config.log_sig_depth} needs a buffer of at least "
                f"{branch.min_buffer_length} values, got wtmm_buffer_size={config.wtmm_buffer_size}"
            )
        return branch

    @property
    def n_features(self) -> int:
        """Regression features: the log-signature coordinates less the time coordinate."""
        return logsignature_dimension(PATH_DIM, self.depth) - 1

    @property
    def min_buffer_length(self) -> int:
        return self.window + MIN_WINDOWS_PER_FEATURE * (self.n_features + 1)

    def init(self, *, key: PRNGKey) -> SignatureParams:
        del key  # deterministic branch: the untrained forecast is the random walk
        # Strongly typed leaves (not weak Python-scalar types), so untrained and fitted
        # parameters have identical avals: one compilation serves both.
        return SignatureParams(
            coefficients=jnp.zeros(self.n_features),
            intercept=jnp.zeros(()),
            increment_scale=jnp.ones(()),
            residual_std=jnp.ones(()),
            penalty=jnp.zeros(()),
            fitted=jnp.zeros((), dtype=bool),
        )

    def check_fit_shape(self, shape: tuple[int, ...]) -> None:
        """Static checks of fit's input (valid under jit too: shapes are static)."""
        if len(shape) != 1:
            raise ValueError(f"branch D fit: buffer must be 1-d, got shape {shape}")
        if shape[0] < self.min_buffer_length:
            raise ValueError(
                f"branch D fit: buffer of {shape[0]} values is too short; depth "
                f"{self.depth} with window {self.window} needs at least {self.min_buffer_length}"
            )

    def check_fit_values(self, buffer: np.ndarray) -> None:
        """Host-side checks of fit's values; raise a clear error naming what is wrong."""
        bad = np.flatnonzero(~np.isfinite(buffer))
        if bad.size:
            raise DomainError(
                f"branch D fit: buffer has {bad.size} non-finite value(s), first at index {bad[0]}"
            )
        if not bool(buffer_is_usable(jnp.asarray(buffer))):
            raise ValueError(
                "branch D fit: buffer is constant (increments at rounding level); "
                "there is no path to learn from"
            )

    def fit(self, params: SignatureParams, buffer: Signal) -> SignatureParams:
        """Slow path. Concrete input is checked on the host (errors); under jit/vmap an unusable
        buffer leaves ``params`` unchanged instead. A too-short buffer always raises."""
        self.check_fit_shape(buffer.shape)
        if not isinstance(buffer, jax.core.Tracer):
            self.check_fit_values(np.asarray(buffer))
        return _fit_signature_branch(self, params, buffer)

    def forecast_with_flag(self, params: SignatureParams, buffer: Signal) -> tuple[Forecast, Flag]:
        """Eq. (forecast), and whether the fitted model made it (False: random-walk fallback)."""
        if buffer.shape[0] < self.window:
            raise ValueError(
                f"branch D predict: buffer of {buffer.shape[0]} values is shorter than the "
                f"window ({self.window})"
            )
        last_window = buffer[-self.window :]
        window_is_finite = jnp.all(jnp.isfinite(last_window))
        # Keep NaN out of the unused side of the `where`s below (and out of its gradients).
        safe_window = jnp.where(window_is_finite, last_window, 0.0)
        features = window_features(safe_window[None], params.increment_scale, self.depth)[0]
        predicted_increment = params.intercept + features @ params.coefficients
        model_mean = safe_window[-1] + params.increment_scale * predicted_increment
        model_scale = params.increment_scale * params.residual_std
        fallback_scale = jnp.where(
            params.fitted, params.increment_scale, finite_increment_std(buffer)
        )
        use_model = window_is_finite & params.fitted
        mean = jnp.where(use_model, model_mean, last_finite_value(buffer))
        scale = jnp.where(use_model, model_scale, fallback_scale)
        return Forecast(mean=mean, scale=scale), use_model

    def predict(self, params: SignatureParams, buffer: Signal, *, key: PRNGKey) -> Forecast:
        """Fast path: jit-able and vmap-able; ``key`` is unused (the branch is deterministic)."""
        del key
        return self.forecast_with_flag(params, buffer)[0]


def winsorised(values: Float[Array, " m"], limit: float) -> Float[Array, " m"]:
    """Eq. (winsor): ``values`` clipped ``limit`` robust standard deviations (1.4826 MAD) from
    their median; unchanged when the MAD is 0 (more than half the values equal)."""
    centre = jnp.median(values)
    spread = 1.4826 * jnp.median(jnp.abs(values - centre))
    reach = jnp.where(spread > 0, limit * spread, jnp.inf)
    return jnp.clip(values, centre - reach, centre + reach)


@eqx.filter_jit
def _fit_signature_branch(
    branch: SignatureBranch, params: SignatureParams, buffer: Signal
) -> SignatureParams:
    usable = buffer_is_usable(buffer)
    # Fit on a harmless series when the buffer is unusable, so no NaN reaches the SVD; the
    # result is then discarded by the final `where`.
    alternating = (jnp.arange(buffer.shape[0]) % 2).astype(buffer.dtype)
    safe_buffer = jnp.where(usable, buffer, alternating)
    scale = increment_scale(safe_buffer)
    windows, increments = training_pairs(safe_buffer, branch.window)
    features = window_features(windows, scale, branch.depth)
    targets = increments / scale
    ridge = ridge_gcv(features, winsorised(targets, WINSOR_LIMIT), branch.relative_penalties)
    fitted = SignatureParams(
        coefficients=ridge.coefficients,
        intercept=ridge.intercept,
        increment_scale=scale,
        # From the raw targets: the jumps are part of the forecast's error.
        residual_std=ridge.residual_std(features, targets),
        penalty=ridge.penalty,
        fitted=jnp.ones((), dtype=bool),
    )
    return jax.tree.map(lambda new, old: jnp.where(usable, new, old), fitted, params)


__all__ = [
    "DEFAULT_WINDOW",
    "MIN_WINDOWS_PER_FEATURE",
    "PATH_DIM",
    "RELATIVE_RIDGE_PENALTIES",
    "WINSOR_LIMIT",
    "RidgeFit",
    "SignatureBranch",
    "SignatureParams",
    "buffer_is_usable",
    "finite_increment_std",
    "increment_scale",
    "lagged_windows",
    "last_finite_value",
    "logsignature",
    "logsignature_dimension",
    "ridge_gcv",
    "signature",
    "time_augmented_path",
    "training_pairs",
    "window_features",
    "winsorised",
]
