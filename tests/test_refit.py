"""The refit policy (usp.core.refit, chapter 14): the verdict's arithmetic, the branches' fitted
domains, and the predictor keeping itself fitted on a stream that moves, used as the README
shows."""

import jax.numpy as jnp
import numpy as np
import pytest

from usp import FunctionalPredictor, MarketObservation, PredictorConfig, UniversalPredictor
from usp.contracts.types import REFIT_ALARM, REFIT_DOMAIN, REFIT_SCHEDULE, refit_reasons
from usp.core.cusum import COUNT_CEILING
from usp.core.refit import (
    init_refit_clock,
    refit_verdict,
    refitted_clock,
    tick_refit_clock,
)
from usp.core.step import _used_weights
from usp.reference.streams import regime_stream

CONFIG = PredictorConfig()
NO_ERRORS = jnp.full(4, jnp.nan)
ALL_IN = jnp.ones(4, bool)
EVEN = jnp.full(4, 0.25)


def _verdict(clock, *, full=True, weights=EVEN, in_domain=ALL_IN, sigma=1.0, config=CONFIG):
    return int(
        refit_verdict(config, clock, full=full, weights=weights, in_domain=in_domain, sigma=sigma)
    )


def _ticked(n, clock=None, alarm_at=None):
    clock = init_refit_clock(4) if clock is None else clock
    for t in range(n):
        clock = tick_refit_clock(clock, NO_ERRORS, jnp.asarray(t == alarm_at), 0.1)
    return clock


def test_schedule_falls_due_at_exactly_refit_every_ticks():
    assert _verdict(_ticked(CONFIG.refit_every - 1)) == 0
    assert _verdict(_ticked(CONFIG.refit_every)) == REFIT_SCHEDULE
    off = CONFIG.replace(refit_every=0)
    assert _verdict(_ticked(10 * CONFIG.refit_every), config=off) == 0


def test_nothing_is_due_before_the_buffer_is_full():
    clock = _ticked(CONFIG.refit_every, alarm_at=0)
    assert _verdict(clock, full=False, in_domain=jnp.zeros(4, bool)) == 0


def test_an_alarm_waits_its_grace_period_and_fires_once():
    grace = CONFIG.grace_period_steps
    clock = refitted_clock(_ticked(5))
    assert _verdict(_ticked(grace, clock, alarm_at=0)) == 0  # grace - 1 ticks after the alarm
    clock = _ticked(grace + 1, clock, alarm_at=0)
    assert _verdict(clock) == REFIT_ALARM
    assert _verdict(refitted_clock(clock)) == 0  # refitted since the alarm: done


def test_domain_and_error_rules_wait_for_new_data_after_a_refit():
    grace = CONFIG.grace_period_steps
    out = ALL_IN.at[1].set(False)
    assert _verdict(_ticked(grace - 1), in_domain=out) == 0
    assert _verdict(_ticked(grace), in_domain=out) == REFIT_DOMAIN
    # A branch whose recent RMS error is 4σ: due only while it holds more than 5% weight.
    clock = _ticked(grace)
    errors = jnp.array([1.0, 4.0 / np.sqrt(0.1), 1.0, 1.0])  # one tick of EWMA with α = 0.1
    clock = tick_refit_clock(refitted_clock(clock), errors, jnp.asarray(False), 0.1)
    clock = _ticked(grace, clock)
    assert _verdict(clock) == REFIT_DOMAIN
    assert _verdict(clock, weights=jnp.array([0.34, 0.01, 0.33, 0.32])) == 0


def test_reasons_are_named_and_counters_saturate():
    assert refit_reasons(REFIT_SCHEDULE | REFIT_DOMAIN) == ("schedule", "domain")
    assert refit_reasons(0) == ()
    clock = init_refit_clock(4)
    assert int(clock.since_alarm) == COUNT_CEILING
    saturated = tick_refit_clock(clock, NO_ERRORS, jnp.asarray(False), 0.1)
    assert int(saturated.since_alarm) == COUNT_CEILING


def test_a_branch_out_of_its_domain_gets_no_weight_unless_all_are():
    weights = jnp.array([0.4, 0.3, 0.2, 0.1])
    model = FunctionalPredictor(CONFIG).model
    excluded = jnp.array([False, True, False, False])
    used = _used_weights(model, weights, jnp.asarray(False), excluded)
    np.testing.assert_allclose(used, [0.4 / 0.7, 0.0, 0.2 / 0.7, 0.1 / 0.7], rtol=1e-12)
    every = _used_weights(model, weights, jnp.asarray(False), jnp.ones(4, bool))
    np.testing.assert_allclose(every, weights)


def test_dgm_states_its_fitted_domain():
    predictor = UniversalPredictor(clock=None)
    cold = predictor.functional.model.branches[1]
    buffer = jnp.linspace(1.0, 2.0, CONFIG.wtmm_buffer_size)
    key = predictor.state.key
    assert not bool(cold.predict(predictor.state.params[1], buffer, key=key).in_domain)
    prices = 1.0 + 0.01 * np.cumsum(np.random.default_rng(0).standard_normal(256))
    predictor.fit_history(prices)
    fitted, buffer = predictor.state.params[1], predictor.state.buffer
    assert bool(cold.predict(fitted, buffer, key=key).in_domain)
    far = buffer.at[-1].set(buffer[-1] + 50 * float(jnp.std(buffer)))
    assert not bool(cold.predict(fitted, far, key=key).in_domain)


def _stepped(predictor, prices, start):
    results = []
    for t in range(start, len(prices)):
        price = float(prices[t])
        results.append(predictor.step(MarketObservation(price, price, t * 10_000_000)))
    return results


def test_universal_predictor_refits_when_due_and_not_when_told_not_to():
    """The default config throughout: these predictors share the suite's compiled step."""
    prices = 1.0 + 0.01 * np.cumsum(np.random.default_rng(1).standard_normal(300))
    manual = UniversalPredictor(CONFIG, clock=None, auto_refit=False)
    manual.fit_history(prices[:128])
    results = _stepped(manual, prices, 128)
    assert manual.refits == 0 and any(int(r.refit_due) & REFIT_SCHEDULE for r in results)
    auto = UniversalPredictor(CONFIG, clock=None)
    auto.fit_history(prices[:128])
    auto.refits = 0
    results = _stepped(auto, prices, 128)
    assert auto.refits == sum(1 for r in results if int(r.refit_due)) >= 1
    assert int(auto.state.refit_clock.since_refit) < CONFIG.refit_every


def test_a_refit_that_cannot_run_is_postponed_and_the_tick_kept():
    """A constant buffer has no diffusion to fit (branch B refuses it): the ticks stay
    committed, the parameters stay, and the policy's clock restarts, so the next attempt
    waits for new data instead of slowing every tick."""
    size = CONFIG.wtmm_buffer_size
    predictor = UniversalPredictor(CONFIG, clock=None, auto_refit=False)
    rising = 1.0 + 0.01 * np.cumsum(np.random.default_rng(2).standard_normal(size))
    predictor.fit_history(rising)
    prices = np.concatenate([rising, np.full(size + 20, rising[-1])])
    _stepped(predictor, prices[: 2 * size], size)  # the buffer is now all flat
    predictor.auto_refit = True
    params = predictor.state.params
    results = _stepped(predictor, prices, 2 * size)
    assert predictor.accepted_ticks == size + 20
    assert int(results[0].refit_due) & REFIT_SCHEDULE  # due at once: 128 ticks since the fit
    assert predictor.refits == 0
    assert predictor.state.params[1].loc == params[1].loc
    assert int(predictor.state.refit_clock.since_refit) == 19  # restarted by the first tick's try


def test_refit_assets_refits_only_the_assets_that_are_due():
    fp = FunctionalPredictor(CONFIG)
    rng = np.random.default_rng(3)
    states = fp.init_states(3)
    for _ in range(CONFIG.wtmm_buffer_size):
        prices = 1.0 + 0.05 * rng.random(3)
        states, _, _ = fp.step_batch(states, prices, prices)
    states, refitted = fp.refit_assets(states, np.array([0, REFIT_DOMAIN, 0]))
    assert refitted == 1
    assert np.asarray(states.params[1].n_rounds).tolist() == [0, 1, 0]
    since = np.asarray(states.refit_clock.since_refit).tolist()
    assert since == [CONFIG.wtmm_buffer_size, 0, CONFIG.wtmm_buffer_size]


@pytest.fixture(scope="module")
def moving_stream_run():
    """The README's usage on a stream of three regimes (OU, a six-fold drift, Merton jumps):
    fit on the first 256 prices, then ``step`` only — no manual refit."""
    stream = regime_stream(seed=1)
    predictor = UniversalPredictor(clock=None)
    predictor.fit_history(stream.prices[:256])
    results = _stepped(predictor, stream.prices[:-1], 256)
    return stream, results, predictor


def test_blend_stays_near_the_oracle_on_a_moving_stream(moving_stream_run):
    stream, results, predictor = moving_stream_run
    realised = stream.prices[257:]
    blend = np.array([float(r.predicted_next) for r in results])

    def rmse(forecast):
        return np.sqrt(np.mean((forecast - realised) ** 2))

    oracle, random_walk = rmse(stream.oracle[256:]), rmse(stream.prices[256:-1])
    assert rmse(blend) <= 1.05 * oracle
    assert rmse(blend) <= 1.03 * random_walk
    assert predictor.refits > 0


def test_no_branch_strays_while_it_holds_weight(moving_stream_run):
    """No branch's error exceeds 3 × the oracle's on any 100-tick window in which it holds more
    than 5% of the blend's weight."""
    stream, results, _ = moving_stream_run
    realised = stream.prices[257:]
    oracle = stream.oracle[256:]
    branches = np.array([np.asarray(r.branch_forecasts) for r in results])
    weights = np.array([np.asarray(r.weights) for r in results])
    window = 100
    for k in range(branches.shape[1]):
        for start in range(len(realised) - window + 1):
            span = slice(start, start + window)
            if weights[span, k].max() <= 0.05:
                continue
            error = np.sqrt(np.mean((branches[span, k] - realised[span]) ** 2))
            best = np.sqrt(np.mean((oracle[span] - realised[span]) ** 2))
            assert error <= 3.0 * best, (k, start, error / best)
