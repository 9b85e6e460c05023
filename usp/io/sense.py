"""Sense checks of restored states: the checksum proves the bytes are the writer's, these that
the writer was sane.

A snapshot's SHA-256 (``usp.io.snapshot``) shows that its bytes are the ones the writer sealed:
untruncated, unflipped. It cannot show that the writer was right. A buggy writer, or a store
shared by processes that re-seals what it changed, gives a file that verifies and holds a NaN,
a value at the edge of floating-point range or a negative counter. Restored, such a value may
sit in the state for good while the forecasts stay finite, or turn the state non-finite within
a few ticks. :func:`check_tree` refuses it, leaf by leaf, with an ``IntegrityError`` that names
the leaf by its path (``['state'].cusum.n_obs``). The rules, for every leaf:

1. **floating leaves are finite**, except for the non-finite values the caller allows in a few
   named leaves, those that hold them by design (a NaN that reports "undefined", an +inf that
   marks "not trained yet"); any other non-finite value there is refused too;
2. **floating leaves are bounded**, |x| ≤ :func:`magnitude_bound` (10¹⁵⁰ in float64, 10¹⁵ in
   float32): the square of such a value, the product of two and sums of up to 10⁸ such products
   stay finite, so no variance, kurtosis or squared error the step forms overflows. Real states
   hold prices, their variances, network weights and log-weights, hundreds of orders of
   magnitude inside it;
3. **signed integer leaves are non-negative** (each is a count, a position or a step count) and
   at most the bound the caller gives for it: a fill count at most its buffer's length, a ring
   index below its ring's length, a saturating counter at most its ceiling;
4. **the filled part of a price buffer is positive**: the last ``n`` entries along its last axis,
   ``n`` the value of the leaf that counts them.

Booleans are checked by the decoder (each byte 0 or 1); PRNG keys and unsigned integers are raw
bits with no sense to check. Rules name leaves by their ``jax.tree_util.keystr`` path, the path
of the snapshot's leaf table, so this module needs nothing from ``usp.core``: the predictor's
own table (its counters, their bounds, its buffer) is built by ``FunctionalPredictor``. A
leading asset axis (a batch of states) changes no path, and every rule applies element-wise.
The checks are NumPy passes over the host copies of the leaves: well under a millisecond per
asset.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from usp.contracts.errors import IntegrityError


@functools.cache
def magnitude_bound(dtype: Any) -> float:
    """The largest sensible |x| of a floating dtype: 10^(⌊log₁₀ √max⌋ − 4).

    1e150 for float64 (√max ≈ 1.3e154), 1e15 for float32 (√max ≈ 1.8e19): squares and products
    of two such values are below max / 10⁸, so sums of up to 10⁸ of them stay finite.
    """
    largest = float(np.finfo(dtype).max)
    return 10.0 ** (math.floor(math.log10(math.sqrt(largest))) - 4)


MAX_MAGNITUDE = magnitude_bound(np.float64)
"""1e150: :func:`magnitude_bound` of float64, also the bound of the host record's prices and
variances (``usp.io.host_record``)."""


@dataclass(frozen=True)
class SenseRules:
    """What the generic rules need to know of one kind of tree, by leaf path."""

    non_finite: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Floating leaves that hold non-finite values by design → which (``NON_FINITE`` names);
    every other value of theirs obeys the rules."""
    at_most: Mapping[str, int] = field(default_factory=dict)
    """Signed integer leaves and their largest sensible value."""
    positive_filled: Mapping[str, str] = field(default_factory=dict)
    """A buffer leaf → the integer leaf counting its filled entries (the last ones along its
    last axis); those entries must be positive. The count should have an ``at_most`` bound."""


NON_FINITE = {"nan": np.isnan, "inf": np.isposinf, "-inf": np.isneginf}
"""The names of the non-finite values ``SenseRules.non_finite`` may allow, and their tests."""


def _is_key(leaf: Any) -> bool:
    return jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def host_leaves(tree: Any) -> dict[str, np.ndarray]:
    """``{path: host array}`` of every leaf but PRNG keys, copied in one ``device_get``."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    named = [(jax.tree_util.keystr(path), leaf) for path, leaf in flat if not _is_key(leaf)]
    arrays = jax.device_get([leaf for _, leaf in named])
    return {path: np.asarray(array) for (path, _), array in zip(named, arrays, strict=True)}


def _first_index(bad: np.ndarray | np.bool_) -> tuple[int, ...]:
    """The index of the first True (``()`` for a scalar: NumPy reduces 0-d masks to scalars)."""
    return tuple(int(i) for i in np.argwhere(bad)[0])


def _first(bad: np.ndarray | np.bool_, value: np.ndarray) -> str:
    """The first offending value and, for an array, its index."""
    index = _first_index(bad)
    return f"{value[index].item()!r}" + (f" at index {index}" if index else "")


def leaf_problem(path: str, value: np.ndarray, rules: SenseRules) -> str | None:
    """What is wrong with one leaf under rules 1-3, or None."""
    kind = value.dtype.kind
    if kind == "f":
        bound = magnitude_bound(value.dtype)
        bad = ~(np.abs(value) <= bound)  # NaN and ±inf compare False: one pass for all three
        if not bad.any():
            return None
        allowed = sorted(rules.non_finite.get(path, ()))
        for name in allowed:
            bad &= ~NON_FINITE[name](value)
        if not bad.any():
            return None
        if np.isfinite(value[bad]).all():
            return f"holds {_first(bad, value)}, beyond the sensible magnitude {bound:.0e}"
        bad &= ~np.isfinite(value)
        return f"holds {_first(bad, value)}; it must be {' or '.join(['finite', *allowed])}"
    if kind == "i":
        negative = value < 0
        if negative.any():
            return f"holds {_first(negative, value)}; a count or position is never negative"
        limit = rules.at_most.get(path)
        if limit is not None:
            over = value > limit
            if over.any():
                return f"holds {_first(over, value)}, beyond its largest sensible value {limit}"
    return None


def check_leaves(leaves: Mapping[str, np.ndarray], rules: SenseRules, source: str) -> None:
    """Rules 1-4 on ``{path: host array}``; ``IntegrityError`` naming the first bad leaf."""
    named = [*rules.at_most, *rules.positive_filled, *rules.positive_filled.values()]
    missing = [path for path in named if path not in leaves]
    if missing:  # a rule table that no longer matches the layout: a bug, not a bad file
        raise ValueError(f"sense rules name leaves the tree does not have: {missing}")
    for path, value in leaves.items():
        problem = leaf_problem(path, value, rules)
        if problem is not None:
            raise IntegrityError(f"{source}: {path} {problem}")
    for path, count_path in rules.positive_filled.items():
        buffer, count = leaves[path], leaves[count_path]
        length = buffer.shape[-1]
        filled = np.arange(length) >= length - count[..., None]
        bad = filled & ~(buffer > 0)
        if bad.any():
            n = count[_first_index(bad)[:-1]].item()
            raise IntegrityError(
                f"{source}: {path} holds {_first(bad, buffer)} in its filled part (the last "
                f"{n} entries, {count_path}): a price must be positive"
            )


def check_tree(tree: Any, rules: SenseRules, source: str) -> None:
    """:func:`check_leaves` of a pytree (one state, a batch, or a state with its result)."""
    check_leaves(host_leaves(tree), rules, source)


__all__ = [
    "MAX_MAGNITUDE",
    "NON_FINITE",
    "SenseRules",
    "check_leaves",
    "check_tree",
    "host_leaves",
    "leaf_problem",
    "magnitude_bound",
]
