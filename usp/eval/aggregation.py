"""Online aggregation of expert forecasts: the anchors the JKO blend is measured against.

Any K point forecasts of a scalar series, ``forecasts`` (T, K), and what happened, ``outcomes``
(T,), are combined online: the weight vector ``p_t`` used at step t depends on the outcomes
and forecasts of steps ``0 .. t-1`` only (and on the forecasts of step t for nothing but the
aggregated forecast ``ŷ_t = p_t · x_t``). Every rule returns an :class:`Aggregation`: the
(T, K) weights and the (T,) aggregated forecasts.

Losses. The loss of a forecast x at step t is the squared error, optionally divided by a
scale known before the step (``scale``, for instance :func:`random_walk_scale`, a lagged EWMA
of squared random-walk errors, which makes the rules' learning rates independent of the
series' units):

    ℓ_t(x) = (x − y_t)² / s_t.

The rules work on the *instantaneous regrets* r_{k,t} = ℓ̂_t − ℓ_{k,t} of the aggregate
against each expert. With ``gradient=True`` (the default, R's ``opera``: ``loss.gradient =
TRUE``) the losses are linearised at the aggregate, the gradient trick (Cesa-Bianchi & Lugosi
2006, §2.5): ℓ_{k,t} = g_t x_{k,t} with g_t = ℓ_t'(ŷ_t) = 2 (ŷ_t − y_t) / s_t, so

    r_{k,t} = g_t (ŷ_t − x_{k,t}),                                          (r-gradient)

and by convexity ℓ_t(ŷ_t) − ℓ_t(x_{k,t}) ≤ r_{k,t}: a bound on the linearised regret bounds
the real one, against each expert and against every fixed convex combination. With
``gradient=False`` the rules see the losses themselves and ℓ̂_t = p_t · ℓ_t (the mixture's
expected loss, ≥ ℓ_t(ŷ_t) by Jensen):

    r_{k,t} = p_t · ℓ_t − ℓ_{k,t}.                                          (r-loss)

In both cases Σ_k p_{k,t} r_{k,t} = 0, the identity every regret proof below rests on. The
cumulative regret is R_{k,t} = Σ_{s ≤ t} r_{k,s}.

Rules (online): :func:`equal_weights`, :func:`ewa`, :func:`fixed_share`, :func:`boa`,
:func:`ml_poly`; hindsight references (not causal, weights fitted on all T steps):
:func:`best_expert`, :func:`best_convex`. ``AGGREGATION_RULES`` names the online ones with
their defaults.

References: N. Cesa-Bianchi & G. Lugosi, *Prediction, Learning, and Games* (2006), Thms 2.2,
2.3, 5.2; M. Herbster & M. Warmuth, Tracking the best expert, *Machine Learning* 32 (1998);
O. Wintenberger, Optimal learning with Bernstein Online Aggregation, *Machine Learning* 106
(2017); P. Gaillard, G. Stoltz & T. van Erven, A second-order bound with excess losses, COLT
2014; R package ``opera`` (Gaillard & Goude), functions ``BOA``, ``MLpol``, ``ewa``,
``fixedshare``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np


class Aggregation(NamedTuple):
    """What a rule returns: ``weights[t]`` (on the simplex) made ``forecasts[t]``."""

    weights: np.ndarray
    """(T, K): the weights used at each step (row t depends on steps < t for online rules)."""
    forecasts: np.ndarray
    """(T,): the aggregated forecasts, ``(weights * forecasts).sum(axis=1)``."""


def random_walk_scale(
    outcomes: np.ndarray, previous: np.ndarray, decay: float = 0.94
) -> np.ndarray:
    """Causal loss scale: a lagged EWMA of squared random-walk errors e_u = y_u − y_{u−1}.

        s_0 = e_0²,   s_t = (1 − λ) Σ_{u<t} λ^{t−1−u} e_u² + λ^t e_0²   (t ≥ 1),

    i.e. s_{t+1} = λ s_t + (1 − λ) e_t², with λ = ``decay`` (0.94, RiskMetrics). s_t uses
    errors up to t − 1 only (s_0, which scales the first loss, uses the first error; no weight
    depends on it before step 1). A scale below 1e-12 · previous_t² (a flat start) is raised
    to it, so the losses stay finite.
    """
    outcomes = np.asarray(outcomes, dtype=float)
    previous = np.asarray(previous, dtype=float)
    errors = (outcomes - previous) ** 2
    scale = np.empty_like(errors)
    level = errors[0] if len(errors) else 0.0
    for t, e in enumerate(errors):
        scale[t] = level
        level = decay * level + (1.0 - decay) * e
    return np.maximum(scale, np.maximum(1e-12 * previous**2, 1e-300))


def _checked(
    forecasts: np.ndarray, outcomes: np.ndarray, scale: np.ndarray | float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(forecasts, dtype=float)
    y = np.asarray(outcomes, dtype=float)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"forecasts must be (T, K) and outcomes (T,); got {x.shape}, {y.shape}")
    if x.shape[1] < 1:
        raise ValueError("need at least one expert")
    s = np.ones_like(y) if scale is None else np.broadcast_to(np.asarray(scale, float), y.shape)
    if not np.all(s > 0):
        raise ValueError("scale must be positive")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("forecasts and outcomes must be finite")
    return x, y, s


def _regret(x: np.ndarray, y: float, s: float, p: np.ndarray, gradient: bool) -> np.ndarray:
    """r_{·,t} of one step (eqs. r-gradient, r-loss)."""
    pred = float(x @ p)
    if gradient:
        return 2.0 * (pred - y) / s * (pred - x)
    losses = (x - y) ** 2 / s
    return float(p @ losses) - losses


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - np.max(a))
    return e / e.sum()


def _result(weights: np.ndarray, x: np.ndarray) -> Aggregation:
    return Aggregation(weights, np.einsum("tk,tk->t", weights, x))


def equal_weights(
    forecasts: np.ndarray,
    outcomes: np.ndarray | None = None,
    *,
    scale: np.ndarray | float | None = None,
    gradient: bool = True,
) -> Aggregation:
    """p_{k,t} = 1/K: the forecast average (the other arguments are accepted and unused)."""
    x = np.asarray(forecasts, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"forecasts must be (T, K); got {x.shape}")
    return _result(np.full(x.shape, 1.0 / x.shape[1]), x)


def ewa(
    forecasts: np.ndarray,
    outcomes: np.ndarray,
    *,
    eta: float | None = None,
    anytime: bool = False,
    gradient: bool = True,
    scale: np.ndarray | float | None = None,
) -> Aggregation:
    """Exponentially weighted average (Cesa-Bianchi & Lugosi 2006, §2.1; ``opera::ewa``):

        p_{k,t} ∝ exp(η_t R_{k,t−1}) = exp(−η_t Σ_{s<t} ℓ_{k,s}) · const,

    with a fixed rate η_t = η (default sqrt(8 ln K / T)) or, ``anytime=True``, the
    horizon-free η_t = sqrt(8 ln K / t) for the t-th step (t = 1 .. T). For losses in [0, 1]
    (more generally: each step's K losses within an interval of length 1) the regret against
    the best expert is at most sqrt(T ln K / 2) with the fixed rate (Thm 2.2) and
    2 sqrt(T ln K / 2) + sqrt(ln K / 8) with the anytime one (Thm 2.3). Losses spread over a
    length B scale both by B (take η / B).
    """
    x, y, s = _checked(forecasts, outcomes, scale)
    n, k = x.shape
    log_k = math.log(k)
    fixed = math.sqrt(8.0 * log_k / n) if eta is None else float(eta)
    weights = np.empty_like(x)
    regret = np.zeros(k)
    for t in range(n):
        rate = math.sqrt(8.0 * log_k / (t + 1)) if anytime else fixed
        p = _softmax(rate * regret)
        weights[t] = p
        regret += _regret(x[t], y[t], s[t], p, gradient)
    return _result(weights, x)


def fixed_share(
    forecasts: np.ndarray,
    outcomes: np.ndarray,
    *,
    alpha: float = 0.01,
    eta: float | None = None,
    gradient: bool = True,
    scale: np.ndarray | float | None = None,
) -> Aggregation:
    """Fixed-Share (Herbster & Warmuth 1998; Cesa-Bianchi & Lugosi 2006, §5.2;
    ``opera::fixedshare``): an exponential update, then a share α of the mass spread evenly,

        v_{k,t} ∝ p_{k,t} exp(η r_{k,t}),    p_{k,t+1} = α / K + (1 − α) v_{k,t},   p_1 = 1/K,

    with η default sqrt(8 ln K / T). For losses in [0, 1] and any sequence of experts
    i_1 .. i_T with m switches (Cesa-Bianchi & Lugosi, Thm 5.2):

        Σ_t ℓ̂_t − Σ_t ℓ_{i_t,t} ≤ ((m + 1) ln K + m ln(1/α) + (T − m − 1) ln(1/(1 − α))) / η
                                  + η T / 8.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    x, y, s = _checked(forecasts, outcomes, scale)
    n, k = x.shape
    rate = math.sqrt(8.0 * math.log(k) / n) if eta is None else float(eta)
    weights = np.empty_like(x)
    p = np.full(k, 1.0 / k)
    for t in range(n):
        weights[t] = p
        v = _softmax(np.log(np.maximum(p, 1e-300)) + rate * _regret(x[t], y[t], s[t], p, gradient))
        p = alpha / k + (1.0 - alpha) * v
    return _result(weights, x)


def boa(
    forecasts: np.ndarray,
    outcomes: np.ndarray,
    *,
    eta: float | None = None,
    gradient: bool = True,
    scale: np.ndarray | float | None = None,
) -> Aggregation:
    """Bernstein Online Aggregation (Wintenberger 2017): exponential weights on the regret
    minus a second-order (Bernstein) term.

    Fixed rate (``eta`` given; uniform prior):

        p_{k,t} ∝ exp(η Σ_{s<t} (r_{k,s} − η r_{k,s}²)).

    Since exp(u − u²) ≤ 1 + u for u ≥ −1/2 and Σ_k p_{k,t} r_{k,t} = 0, the potential
    Σ_k exp(η Σ_{s≤t} (r_{k,s} − η r_{k,s}²)) / K never increases; hence, when η |r| ≤ 1/2,

        R_{k,T} ≤ ln K / η + η Σ_t r_{k,t}²   for every expert k.

    Adaptive (``eta=None``, the default): one rate per expert, as in ``opera::BOA`` (its
    gradient-trick, multiple-learning-rate version), with V_{k,t} = 2.2 Σ_{s≤t} r_{k,s}²,
    η_{k,t} = V_{k,t}^{−1/2} and the regularised regret L_{k,t} = Σ_{s≤t} (r_{k,s} −
    η_{k,s} r_{k,s}²):

        p_{k,t} ∝ η_{k,t−1} exp(η_{k,t−1} L_{k,t−1})     (experts with V_{k,t−1} > 0),

    the experts with V_{k,t−1} = 0 keeping their prior weight 1 (all of them at t = 1).
    Wintenberger's bound for this version is second order, of the form
    R_{k,T} = O(sqrt((ln K + ln ln T) Σ_t r_{k,t}²) + (ln K + ln ln T) max_t |r_{k,t}|).
    """
    x, y, s = _checked(forecasts, outcomes, scale)
    n, k = x.shape
    weights = np.empty_like(x)
    if eta is not None:
        rate = float(eta)
        regularised = np.zeros(k)
        for t in range(n):
            p = _softmax(rate * regularised)
            weights[t] = p
            r = _regret(x[t], y[t], s[t], p, gradient)
            regularised += r - rate * r**2
        return _result(weights, x)

    variance = np.zeros(k)  # V_{k,t} = 2.2 Σ r²
    regularised = np.zeros(k)  # L_{k,t}
    for t in range(n):
        w = np.ones(k)
        seen = variance > 0
        if seen.any():
            rates = 1.0 / np.sqrt(variance[seen])
            w[seen] = seen.sum() * _softmax(np.log(rates) + rates * regularised[seen])
        p = w / w.sum()
        weights[t] = p
        r = _regret(x[t], y[t], s[t], p, gradient)
        variance += 2.2 * r**2
        seen = variance > 0
        regularised[seen] += r[seen] - r[seen] ** 2 / np.sqrt(variance[seen])
    return _result(weights, x)


def ml_poly(
    forecasts: np.ndarray,
    outcomes: np.ndarray,
    *,
    prior: float = 1.0,
    gradient: bool = True,
    scale: np.ndarray | float | None = None,
) -> Aggregation:
    """ML-Poly (Gaillard, Stoltz & van Erven 2014; ``opera::MLpol``): the polynomial potential
    (exponent 2) with one adaptive rate per expert,

        p_{k,t} ∝ η_{k,t−1} (R_{k,t−1})_+,    η_{k,t} = 1 / (c + Σ_{s≤t} r_{k,s}²),

    with c = ``prior`` (1, the paper's; opera's ``MLpol`` has c = 0) and uniform weights
    while every (R_{k,t−1})_+ is zero.

    Bound (the paper's Theorem for ML-Poly, with the constant of this proof): for
    Φ_t = Σ_k η_{k,t} (R_{k,t})_+², (a + b)_+² ≤ a_+² + 2 a_+ b + b², η non-increasing and
    Σ_k η_{k,t−1} (R_{k,t−1})_+ r_{k,t} = 0 (the weights) give Φ_T ≤ Σ_t Σ_k η_{k,t−1}
    r_{k,t}². With c = 1 and |r| ≤ 1, ln(1 + A_t) − ln(1 + A_{t−1}) ≥ ln 2 · r_t² / (1 +
    A_{t−1}) for A_t = Σ_{s≤t} r_s², so Φ_T ≤ Σ_j log₂(1 + A_{j,T}) ≤ K log₂(1 + T), and

        R_{k,T} ≤ sqrt(Σ_j log₂(1 + A_{j,T}) · (1 + A_{k,T})) ≤ sqrt(K log₂(1 + T) (1 + A_{k,T})).
    """
    x, y, s = _checked(forecasts, outcomes, scale)
    n, k = x.shape
    weights = np.empty_like(x)
    regret = np.zeros(k)
    second = np.full(k, float(prior))
    for t in range(n):
        positive = np.maximum(regret, 0.0)
        mass = np.divide(positive, second, out=np.zeros(k), where=positive > 0)
        p = mass / mass.sum() if mass.sum() > 0 else np.full(k, 1.0 / k)
        weights[t] = p
        r = _regret(x[t], y[t], s[t], p, gradient)
        regret += r
        second += r**2
    return _result(weights, x)


def _squared_loss_gram(
    x: np.ndarray, y: np.ndarray, s: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Q = Eᵀ diag(1/s) E for the error matrix E = x − y: on the simplex the loss of w is
    wᵀ Q w (since Σ w = 1, x w − y = E w)."""
    errors = x - y[:, None]
    return errors.T @ (errors / s[:, None]), errors


def best_expert(
    forecasts: np.ndarray,
    outcomes: np.ndarray,
    *,
    scale: np.ndarray | float | None = None,
) -> Aggregation:
    """Hindsight: the single expert with the least total loss Σ_t ℓ_t(x_{k,t}), every step."""
    x, y, s = _checked(forecasts, outcomes, scale)
    total = (((x - y[:, None]) ** 2) / s[:, None]).sum(axis=0)
    weights = np.zeros_like(x)
    weights[:, int(np.argmin(total))] = 1.0
    return _result(weights, x)


def _simplex_projection(v: np.ndarray) -> np.ndarray:
    """Euclidean projection on the probability simplex (sort-based, Held et al. 1974)."""
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - 1.0
    rho = np.nonzero(u - cumulative / np.arange(1, len(v) + 1) > 0)[0][-1]
    return np.maximum(v - cumulative[rho] / (rho + 1.0), 0.0)


def convex_weights(
    forecasts: np.ndarray,
    outcomes: np.ndarray,
    *,
    scale: np.ndarray | float | None = None,
) -> np.ndarray:
    """The simplex-constrained least squares w* = argmin_{w ≥ 0, Σw = 1} Σ_t ℓ_t(x_t · w).

    The loss is the quadratic wᵀ Q w (``_squared_loss_gram``). Up to 12 experts it is solved
    exactly: the minimiser lies in the relative interior of some face of the simplex, where it
    solves the equality-constrained problem [2 Q_S, 1; 1ᵀ, 0] [w; λ] = [0; 1] on its support S;
    every support is tried and the best feasible solution kept. More experts: projected
    gradient (FISTA) from the best vertex, step 1 / (2 λ_max(Q)).
    """
    x, y, s = _checked(forecasts, outcomes, scale)
    k = x.shape[1]
    gram, _ = _squared_loss_gram(x, y, s)
    gram = (gram + gram.T) / 2.0
    best = np.zeros(k)
    best[int(np.argmin(np.diag(gram)))] = 1.0
    best_value = float(best @ gram @ best)
    if k <= 12:
        for size in range(2, k + 1):
            for support in itertools.combinations(range(k), size):
                idx = np.array(support)
                kkt = np.zeros((size + 1, size + 1))
                kkt[:size, :size] = 2.0 * gram[np.ix_(idx, idx)]
                kkt[:size, size] = kkt[size, :size] = 1.0
                rhs = np.zeros(size + 1)
                rhs[size] = 1.0
                solution = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:size]
                if solution.min() < -1e-12 or not np.isfinite(solution).all():
                    continue
                w = np.zeros(k)
                w[idx] = np.maximum(solution, 0.0)
                w /= w.sum()
                value = float(w @ gram @ w)
                if value < best_value:
                    best, best_value = w, value
        return best
    step = 1.0 / (2.0 * max(float(np.linalg.eigvalsh(gram)[-1]), 1e-300))
    w = z = best.copy()
    momentum = 1.0
    for _ in range(20_000):
        w_next = _simplex_projection(z - step * 2.0 * gram @ z)
        momentum_next = (1.0 + math.sqrt(1.0 + 4.0 * momentum**2)) / 2.0
        z = w_next + (momentum - 1.0) / momentum_next * (w_next - w)
        w, momentum = w_next, momentum_next
    return w if float(w @ gram @ w) < best_value else best


def best_convex(
    forecasts: np.ndarray,
    outcomes: np.ndarray,
    *,
    scale: np.ndarray | float | None = None,
) -> Aggregation:
    """Hindsight: the best fixed convex combination (:func:`convex_weights`), every step. Its
    total loss is at most the best expert's (every vertex is a candidate)."""
    x = np.asarray(forecasts, dtype=float)
    w = convex_weights(forecasts, outcomes, scale=scale)
    return _result(np.broadcast_to(w, x.shape).copy(), x)


AGGREGATION_RULES: dict[str, Callable[..., Aggregation]] = {
    "equal": equal_weights,
    "ewa": ewa,
    "boa": boa,
    "ml_poly": ml_poly,
    "fixed_share": fixed_share,
}
"""The online rules, with their defaults: name -> f(forecasts, outcomes, *, scale=...,
gradient=...). The hindsight references are ``best_expert`` and ``best_convex``."""

__all__ = [
    "AGGREGATION_RULES",
    "Aggregation",
    "best_convex",
    "best_expert",
    "boa",
    "convex_weights",
    "equal_weights",
    "ewa",
    "fixed_share",
    "ml_poly",
    "random_walk_scale",
]
