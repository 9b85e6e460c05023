"""`TickGate`: the host-side checks of one asset's stream, in plain Python.

What to drop (non-finite values, out-of-order or duplicate timestamps, > 20σ outliers that are
not a new level) and when to freeze the weights (stale or sparse ticks). Plain Python on
floats, so it is tested without compiling anything; ``UniversalPredictor`` consults it before
every tick, and a snapshot carries its fields (``usp.io.host_record``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from usp.contracts.config import PredictorConfig
from usp.contracts.types import MarketObservation


def _squared(x: float) -> float:
    """x², inf when it overflows (Python's ``x ** 2`` raises OverflowError instead)."""
    return x * x


LEVEL_SHIFT_TICKS = 3
"""Consecutive outliers, within the outlier bound of one another, that make a new price level;
and consecutive clock jumps, within the timestamp horizon of one another, that make a new clock."""


@dataclass
class TickGate:
    """Host-side checks of one asset's stream (API §4.2): what to drop, when to freeze.

    A tick is dropped (the predictor state is untouched) when its price or target is not
    finite or not positive (branches A-C model log-prices; a zero or negative price is a bad
    print, never a level), its timestamp is not after the last accepted one, or its price is
    more than ``outlier_sigma`` increment-σ away from the last accepted price. A lasting move (a
    gap at the open, a split) also looks like an outlier, so the ``LEVEL_SHIFT_TICKS``-th
    consecutive outlier is accepted when those outliers lie within the same bound of one
    another: the new level, not a lock-out.

    Timestamps get the same two rules. A tick stamped more than ``timestamp_horizon_ns`` after
    the last accepted one is a clock jump (a feed's clock error, or a mistyped year): it is
    dropped, since accepting it would make every later, correct tick look out of order. A real
    gap (a long market closure) also looks like that, so the ``LEVEL_SHIFT_TICKS``-th
    consecutive jumping tick is accepted when their timestamps increase and lie within the
    horizon of one another: the clock is re-anchored. Given the caller's wall clock
    (``now_ns``), a tick more than the horizon ahead of it is refused outright.

    Weights are frozen when the tick is stale
    (latency > TTL, recovering only below ``hysteresis · TTL``) or when it arrives later than
    the Nyquist interval after the previous one.
    """

    config: PredictorConfig
    last_price: float | None = None
    last_timestamp_ns: int | None = None
    increment_var: float = 0.0
    increments_seen: int = 0
    degraded: bool = False
    min_increments: int = 20
    """No outlier test before this many increments: σ is not yet known."""
    outliers: list[float] = field(default_factory=list)
    """Prices of the outliers dropped since the last accepted tick (at most the last few)."""
    jumps: list[int] = field(default_factory=list)
    """Timestamps of the clock jumps dropped since the last accepted tick (the last few)."""

    def rejection(self, obs: MarketObservation, now_ns: int | None = None) -> str | None:
        """Why the tick must be dropped, or None. ``now_ns``: the caller's wall clock, if any."""
        price, target = obs.price, obs.target
        if not (math.isfinite(price) and math.isfinite(target)):
            return f"non-finite price or target ({price}, {target})"
        if price <= 0 or target <= 0:
            return f"non-positive price or target ({price}, {target})"
        if self.last_timestamp_ns is not None and obs.timestamp_ns <= self.last_timestamp_ns:
            kind = "duplicate" if obs.timestamp_ns == self.last_timestamp_ns else "out-of-order"
            return f"{kind} timestamp {obs.timestamp_ns} (last {self.last_timestamp_ns})"
        horizon = self.config.timestamp_horizon_ns
        if now_ns is not None and obs.timestamp_ns > now_ns + horizon:
            return f"timestamp {obs.timestamp_ns} is more than {horizon} ns ahead of the clock"
        if self.is_clock_jump(obs) and not self.is_new_clock(obs.timestamp_ns):
            return (
                f"clock jump: timestamp {obs.timestamp_ns} is more than {horizon} ns after "
                f"the last accepted {self.last_timestamp_ns}"
            )
        if self.last_price is not None and not math.isfinite(_squared(price - self.last_price)):
            return f"price {price} is beyond floating-point range of the last {self.last_price}"
        if self.is_outlier(obs) and not self.is_level_shift(price):
            bound, sigma = self.config.outlier_sigma, math.sqrt(self.increment_var)
            return f"outlier: |{price} - {self.last_price:.6g}| > {bound:g} x sigma {sigma:.3g}"
        return None

    def is_outlier(self, obs: MarketObservation) -> bool:
        """A finite price more than ``outlier_sigma`` increment-σ from the last accepted price
        (tested once σ is known: after ``min_increments`` increments)."""
        if self.last_price is None or self.increments_seen < self.min_increments:
            return False
        sigma = math.sqrt(self.increment_var)
        bound, center = self.config.outlier_sigma, self.last_price
        outside = not obs.validate_domain(bound, sigma, center)
        return sigma > 0 and math.isfinite(obs.price) and obs.price > 0 and outside

    def is_clock_jump(self, obs: MarketObservation) -> bool:
        """A tick stamped more than the horizon after the last accepted one."""
        if self.last_timestamp_ns is None:
            return False
        return obs.timestamp_ns - self.last_timestamp_ns > self.config.timestamp_horizon_ns

    def is_new_clock(self, timestamp_ns: int) -> bool:
        """Whether ``timestamp_ns`` completes a run of ``LEVEL_SHIFT_TICKS`` consecutive clock
        jumps whose timestamps increase and lie within the horizon of one another."""
        run = [*self.jumps, timestamp_ns][-LEVEL_SHIFT_TICKS:]
        increasing = all(a < b for a, b in zip(run, run[1:], strict=False))
        within = run[-1] - run[0] <= self.config.timestamp_horizon_ns
        return len(run) == LEVEL_SHIFT_TICKS and increasing and within

    def is_level_shift(self, price: float) -> bool:
        """Whether ``price`` completes a run of ``LEVEL_SHIFT_TICKS`` consecutive outliers
        that lie within the outlier bound of one another."""
        run = [*self.outliers, price][-LEVEL_SHIFT_TICKS:]
        width = self.config.outlier_sigma * math.sqrt(self.increment_var)
        return len(run) == LEVEL_SHIFT_TICKS and max(run) - min(run) <= width

    def drop(self, obs: MarketObservation, now_ns: int | None = None) -> None:
        """Record a dropped tick: an outlier's price is kept to recognise a new level, a clock
        jump's timestamp to recognise a new clock (a tick bad on other grounds counts for
        neither; a tick ahead of the wall clock ``now_ns`` never makes a clock)."""
        usable = math.isfinite(obs.price) and obs.price > 0 and math.isfinite(obs.target)
        ahead = now_ns is not None and obs.timestamp_ns > now_ns + self.config.timestamp_horizon_ns
        if usable and obs.target > 0 and not ahead and self.is_clock_jump(obs):
            self.jumps = [*self.jumps, obs.timestamp_ns][-(LEVEL_SHIFT_TICKS - 1) :]
        elif self.is_outlier(obs):
            self.outliers = [*self.outliers, float(obs.price)][-(LEVEL_SHIFT_TICKS - 1) :]

    def accept(self, price: float, timestamp_ns: int | None = None) -> None:
        """Record an accepted price (EWMA of squared increments for the outlier σ)."""
        if self.last_price is not None:
            increment_sq = _squared(price - self.last_price)
            alpha = max(self.config.volatility_alpha, 1.0 / (self.increments_seen + 1))
            self.increment_var = (1 - alpha) * self.increment_var + alpha * increment_sq
            self.increments_seen += 1
        self.last_price = price
        self.outliers = []
        self.jumps = []
        if timestamp_ns is not None:
            self.last_timestamp_ns = timestamp_ns

    def staleness(self, latency_ns: int) -> tuple[bool, bool]:
        """(degraded now, just recovered) with hysteresis."""
        ttl = self.config.staleness_ttl_ns
        recovered = False
        if self.degraded and latency_ns < self.config.inference_recovery_hysteresis * ttl:
            self.degraded, recovered = False, True
        elif latency_ns > ttl:
            self.degraded = True
        return self.degraded, recovered

    def is_sparse(self, timestamp_ns: int) -> bool:
        if self.last_timestamp_ns is None:
            return False
        return timestamp_ns - self.last_timestamp_ns > self.config.besov_nyquist_interval_ns


__all__ = ["LEVEL_SHIFT_TICKS", "TickGate"]
