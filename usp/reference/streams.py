# GENERATED FILE - DO NOT EDIT.
# Source: notebooks/14_refit.md (code cells tagged `export-reference`).
# Edit the notebook, then run `make export`.

"""Synthetic streams with a known one-step oracle (teaching and test code; chapter 14)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class OracleStream(NamedTuple):
    """Prices y_0..y_T and the oracle's forecasts: ``oracle[t] = E[y_{t+1} | y_0..y_t]``."""

    prices: np.ndarray
    oracle: np.ndarray
    regime_starts: tuple[int, ...]


def regime_stream(
    seed: int,
    n_per_regime: int = 600,
    *,
    rise: float = 6.0,
    drift_volatility: float = 0.03,
) -> OracleStream:
    """OU price around 1 (θ = 5, σ = 0.3, Δt = 1/252), then a geometric random walk whose level
    rises ``rise``-fold at volatility ``drift_volatility`` per tick, then a Merton jump-diffusion
    (λ = 25/yr, jumps N(-0.02, 0.04²), σ = 0.15/yr, Δt = 1/252)."""
    rng = np.random.default_rng(seed)
    prices, oracle = [1.0], []

    decay = np.exp(-5.0 / 252)
    ou_sd = 0.3 * np.sqrt((1 - decay**2) / (2 * 5.0))
    for _ in range(n_per_regime):
        mean = 1.0 + (prices[-1] - 1.0) * decay
        oracle.append(mean)
        prices.append(mean + ou_sd * rng.standard_normal())

    drift = np.log(rise) / n_per_regime
    for _ in range(n_per_regime):
        oracle.append(prices[-1] * np.exp(drift + drift_volatility**2 / 2))
        prices.append(prices[-1] * np.exp(drift + drift_volatility * rng.standard_normal()))

    rate, jump_mean, jump_sd, sigma = 25 / 252, -0.02, 0.04, 0.15 / np.sqrt(252)
    compensator = rate * (np.exp(jump_mean + jump_sd**2 / 2) - 1)
    for _ in range(n_per_regime):
        oracle.append(prices[-1] * np.exp(sigma**2 / 2) * (1 + compensator))
        jumps = rng.poisson(rate)
        log_step = sigma * rng.standard_normal()
        log_step += jump_mean * jumps + jump_sd * np.sqrt(jumps) * rng.standard_normal()
        prices.append(prices[-1] * np.exp(log_step))

    starts = (0, n_per_regime, 2 * n_per_regime)
    return OracleStream(np.asarray(prices), np.asarray(oracle), starts)


__all__ = ["OracleStream", "regime_stream"]
