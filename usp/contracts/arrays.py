"""jaxtyping aliases shared by every layer (one place, as Equinox and Diffrax do).

Shapes: ``k`` is the number of branches, ``n`` a buffer length, ``m`` a Monte-Carlo sample
count, ``s`` a number of wavelet scales, ``q`` a number of quantile levels.
Tests run with the jaxtyping import hook, so every annotated function in ``usp`` has its shapes
and dtypes checked at test time.
"""

from jaxtyping import Array, Bool, Float, Int, Key, Shaped

Scalar = Float[Array, ""]
"""A 0-d float array (a traced scalar)."""
ScalarLike = float | Scalar
Signal = Float[Array, " n"]
"""A 1-d buffer of observations, oldest first."""
Samples = Float[Array, " m"]
Quantiles = Float[Array, " q"]
Weights = Float[Array, " k"]
"""Branch weights on the simplex, one per branch, in the predictor's branch order."""
BranchValues = Float[Array, " k"]
"""One value per branch (forecasts, scales), in the predictor's branch order."""
BranchFlags = Bool[Array, " k"]
BranchCounts = Int[Array, " k"]
Flag = Bool[Array, ""]
Count = Int[Array, ""]
PRNGKey = Key[Array, ""] | Shaped[Array, " 2"]
"""A typed key (``jax.random.key``) or a raw threefry key (``jax.random.PRNGKey``)."""

__all__ = [
    "Array",
    "BranchCounts",
    "BranchFlags",
    "BranchValues",
    "Count",
    "Flag",
    "PRNGKey",
    "Quantiles",
    "Samples",
    "Scalar",
    "ScalarLike",
    "Signal",
    "Weights",
]
