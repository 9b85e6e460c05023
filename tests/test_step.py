"""The predictor: the pure step's properties and the wrappers' handling of bad input.

One fitted predictor is shared by the module (fitting trains the DGM network); each test
starts from a copy of its state.
"""

import copy
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from usp import (
    DomainError,
    FrequencyWarning,
    MarketObservation,
    NormalOperationRestoredEvent,
    PredictorConfig,
    StalenessWarning,
    UniversalPredictor,
)
from usp.io.dump import read_emergency_dump

SECOND = 1_000_000_000
TICK = 10**7  # 10 ms: inside the Nyquist interval, so no FrequencyWarning
HISTORY = 100.0 + np.cumsum(np.random.default_rng(0).standard_normal(300) * 0.5)
SUM_OF_FOUR = 4 * np.finfo(float).eps
"""Rounding of a sum of four normalised weights (measured: at most 1 ulp over 384 ticks)."""


@pytest.fixture(scope="module")
def fitted():
    """A FunctionalPredictor and a UniversalPredictor fitted on 300 ticks."""
    up = UniversalPredictor(PredictorConfig(), clock=None)
    assert isinstance(up.fit_history(HISTORY), bool)
    return up


def fresh(fitted, **kwargs) -> UniversalPredictor:
    """A new wrapper on the shared compiled predictor, starting from the fitted state."""
    up = UniversalPredictor(functional=fitted.functional, **{"clock": None, **kwargs})
    up.state, up.last_result = fitted.state, fitted.last_result
    up.gate = copy.deepcopy(fitted.gate)
    return up


def _plain(leaf):
    leaf = jnp.asarray(leaf)
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    return np.asarray(leaf)


def same_state(a, b) -> bool:
    return all(
        np.array_equal(_plain(x), _plain(y), equal_nan=True)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def obs(price, t, target=None):
    return MarketObservation(
        price=price, target=price if target is None else target, timestamp_ns=t
    )


def jump_ticks(up: UniversalPredictor) -> list:
    """A 40-unit jump (about 80 increment-σ: emergency mode), then 7 small moves; the outlier
    gate is switched off so that the jump reaches the step."""
    up.gate.min_increments = 10**9
    price, results = up.gate.last_price, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in range(8):
            price += 40.0 if t == 0 else 0.1
            results.append(up.step(obs(price, (20 + t) * TICK)))
    return results


def test_short_or_bad_history_is_refused():
    up = UniversalPredictor(clock=None)
    with pytest.raises(ValueError, match="wtmm_buffer_size = 128"):
        up.fit_history(HISTORY[:127])
    bad = HISTORY.copy()
    bad[5] = np.nan
    with pytest.raises(DomainError, match="positions \\[5\\]"):
        up.fit_history(bad)


@pytest.mark.parametrize("price", [np.nan, np.inf, -np.inf])
def test_non_finite_tick_is_dropped_and_state_untouched(fitted, price, caplog):
    up = fresh(fitted)
    before, last = up.state, up.last_result
    assert up.step(obs(price, 10 * SECOND)) is last
    assert same_state(up.state, before)
    assert "non-finite" in caplog.text


def test_outlier_beyond_20_sigma_is_dropped(fitted, caplog):
    up = fresh(fitted)
    before = up.state
    sigma = np.sqrt(up.gate.increment_var)
    last_price = up.gate.last_price
    assert up.step(obs(last_price + 25 * sigma, 10 * SECOND)) is up.last_result
    assert same_state(up.state, before) and "outlier" in caplog.text
    accepted = up.step(obs(last_price + 3 * sigma, 11 * SECOND))
    assert accepted is up.last_result and not same_state(up.state, before)


def test_a_lasting_jump_is_a_new_level_not_a_lock_out(fitted, caplog):
    """Three consecutive > 20σ ticks that agree within 20σ: the first two are dropped, the
    third is accepted, and the stream goes on at the new level."""
    up = fresh(fitted)
    sigma = np.sqrt(up.gate.increment_var)
    level = up.gate.last_price - 60 * sigma
    before, last = up.state, up.last_result
    for second in (10, 11):
        assert up.step(obs(level + (second - 10) * sigma, second * TICK)) is last
    assert same_state(up.state, before) and up.dropped_ticks == 2
    third = up.step(obs(level - 0.5 * sigma, 12 * TICK))
    assert third is not last and not same_state(up.state, before)
    assert "level shift accepted" in caplog.text and up.gate.outliers == []
    after = up.step(obs(level - 0.3 * sigma, 13 * TICK))
    assert after is not third and up.accepted_ticks == 2


def test_scattered_outliers_stay_dropped(fitted):
    """Outliers that disagree with one another (bad prints both ways) never make a level."""
    up = fresh(fitted)
    sigma, price = np.sqrt(up.gate.increment_var), up.gate.last_price
    before = up.state
    for second in range(10, 20):
        up.step(obs(price + (50 if second % 2 else -50) * sigma, second * TICK))
    assert same_state(up.state, before) and up.dropped_ticks == 10


def test_a_price_beyond_floating_point_range_is_dropped(fitted, caplog):
    up = fresh(fitted)
    up.gate.min_increments = 10**9  # no outlier test: the overflow check alone must catch it
    before = up.state
    assert up.step(obs(1e200, 10 * SECOND)) is up.last_result
    assert same_state(up.state, before) and "beyond floating-point range" in caplog.text
    history = HISTORY.copy()
    history[200] = 1e200
    with pytest.raises(DomainError, match="beyond floating-point range after positions \\[199"):
        up.fit_history(history)
    assert same_state(up.state, before)


def test_a_failed_emergency_dump_keeps_the_tick(fitted, tmp_path, caplog):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    up = fresh(fitted, emergency_dump_dir=blocked)
    jump_ticks(up)
    assert up.accepted_ticks == 8 and up.dumps == []
    assert "emergency dump not written" in caplog.text


def test_config_and_functional_must_agree(fitted):
    with pytest.raises(ValueError, match="config differs"):
        UniversalPredictor(PredictorConfig(seed=1), functional=fitted.functional)
    with pytest.raises(ValueError, match="learn_tau=False disagrees"):
        UniversalPredictor(learn_tau=False, functional=fitted.functional)
    UniversalPredictor(PredictorConfig(), learn_tau=True, functional=fitted.functional)


def test_step_batch_checks_its_inputs(fitted):
    fp = fitted.functional
    states = jax.tree.map(lambda x: jnp.stack([x] * 4), fitted.state)  # 4: compiled already
    prices = np.full(4, HISTORY[-1])
    mask = np.array([True, False, False, True])
    _, as_bool, _ = fp.step_batch(states, prices, prices, mask)
    _, as_int, _ = fp.step_batch(states, prices, prices, mask.astype(int))
    _, as_float, _ = fp.step_batch(states, prices, prices, mask.astype(float))
    assert as_int.degraded_inference_mode.dtype == bool
    for other in (as_int, as_float):
        assert same_state(other, as_bool)
    with pytest.raises(ValueError, match="prices has shape \\(2,\\), expected \\(4,\\)"):
        fp.step_batch(states, prices[:2], prices)


@pytest.mark.parametrize(("second", "kind"), [(10, "duplicate"), (9, "out-of-order")])
def test_duplicate_and_out_of_order_timestamps_are_dropped(fitted, second, kind, caplog):
    up = fresh(fitted)
    up.step(obs(HISTORY[-1], 10 * SECOND))
    before, last = up.state, up.last_result
    assert up.step(obs(HISTORY[-1] + 0.1, second * SECOND)) is last
    assert same_state(up.state, before) and kind in caplog.text


@pytest.mark.parametrize("bad", [-50.0, 0.0])
def test_non_positive_prices_are_dropped_never_a_level(fitted, bad, caplog):
    """Three consecutive -50.0 (or 0.0) ticks: each is dropped, none counts as an outlier,
    so no level shift can make them the price."""
    up = fresh(fitted)
    before, last = up.state, up.last_result
    for second in (10, 11, 12):
        assert up.step(obs(bad, second * TICK)) is last
    assert same_state(up.state, before) and up.dropped_ticks == 3
    assert up.gate.outliers == [] and "non-positive" in caplog.text
    with pytest.raises(DomainError, match="non-positive"):
        fitted.functional.step(fitted.state, obs(bad, 1))
    states = jax.tree.map(lambda x: jnp.stack([x] * 4), fitted.state)
    prices = np.array([HISTORY[-1], bad, HISTORY[-1], HISTORY[-1]])
    kept, _, accepted = fitted.functional.step_batch(states, prices, prices)
    assert accepted.tolist() == [True, False, True, True]
    assert same_state(jax.tree.map(lambda x: x[1], kept), fitted.state)


def test_a_small_negative_tick_on_a_low_priced_series_is_dropped(fitted, caplog):
    """Last price 0.28, σ 0.02: -0.01 is within 20σ of the last price, and still no price."""
    up = fresh(fitted)
    up.gate.last_price, up.gate.increment_var = 0.28, 0.02**2
    before, last = up.state, up.last_result
    assert up.step(obs(-0.01, 10 * TICK)) is last
    assert same_state(up.state, before) and "non-positive" in caplog.text


def test_a_tick_a_year_ahead_is_dropped_and_the_stream_goes_on(fitted, caplog):
    up = fresh(fitted)
    up.step(obs(HISTORY[-1], 10 * TICK))
    before, last = up.state, up.last_result
    year = 365 * 86_400 * SECOND
    assert up.step(obs(HISTORY[-1] + 0.1, 10 * TICK + year)) is last
    assert same_state(up.state, before) and "clock jump" in caplog.text
    for t in range(11, 61):  # the 50 normal ticks that follow are all accepted
        up.step(obs(HISTORY[-1] + 0.01 * (t % 3), t * TICK))
    assert up.accepted_ticks == 51 and up.dropped_ticks == 1


def test_a_lasting_clock_jump_re_anchors_the_clock(fitted, caplog):
    """Three consecutive ticks past the horizon, increasing and within it of one another: the
    first two are dropped, the third is accepted, and the stream goes on from there."""
    up = fresh(fitted)
    up.step(obs(HISTORY[-1], 10 * TICK))
    gap = up.config.timestamp_horizon_ns + SECOND
    before, last = up.state, up.last_result
    for k in (1, 2):
        assert up.step(obs(HISTORY[-1], 10 * TICK + gap + k * TICK)) is last
    assert same_state(up.state, before) and len(up.gate.jumps) == 2
    third = up.step(obs(HISTORY[-1], 10 * TICK + gap + 3 * TICK))
    assert third is not last and "clock re-anchored" in caplog.text and up.gate.jumps == []
    assert up.step(obs(HISTORY[-1], 10 * TICK + gap + 4 * TICK)) is not third


def test_jumps_that_disagree_do_not_re_anchor(fitted):
    """Jumps more than the horizon apart (or not increasing) are bad prints, not a new clock."""
    up = fresh(fitted)
    up.step(obs(HISTORY[-1], 10 * TICK))
    horizon = up.config.timestamp_horizon_ns
    for k in (1, 3, 2, 5, 4):
        up.step(obs(HISTORY[-1], 10 * TICK + k * 2 * horizon))
    assert up.dropped_ticks == 5 and up.accepted_ticks == 1


def test_a_tick_ahead_of_the_wall_clock_is_refused(fitted, caplog):
    now = 10**18
    up = fresh(fitted, clock=lambda: now)
    before = up.state
    assert up.step(obs(HISTORY[-1], now + 2 * up.config.timestamp_horizon_ns)) is up.last_result
    assert same_state(up.state, before) and "ahead of the clock" in caplog.text


@pytest.mark.parametrize("bad", [None, "100.0", True, [1.0]])
def test_an_observation_must_hold_numbers(bad):
    with pytest.raises(TypeError, match="price must be a real number"):
        MarketObservation(price=bad, target=1.0, timestamp_ns=1)
    with pytest.raises(TypeError, match="target must be a real number"):
        MarketObservation(price=1.0, target=bad, timestamp_ns=1)
    assert MarketObservation(price=np.float32(2), target=3, timestamp_ns=1).target == 3.0


def test_functional_step_raises_on_non_finite(fitted):
    fp = fitted.functional
    with pytest.raises(DomainError):
        fp.step(fitted.state, obs(np.nan, 1))


def test_batch_with_one_bad_asset_affects_only_it(fitted):
    fp = fitted.functional
    states = jax.tree.map(lambda x: jnp.stack([x] * 4), fitted.state)  # 4: as the test below
    good = HISTORY[-1] + np.array([0.2, -0.1, 0.0, 0.3])
    bad = good.copy()
    bad[1] = np.nan
    new_good, res_good, acc_good = fp.step_batch(states, good, good)
    new_bad, res_bad, acc_bad = fp.step_batch(states, bad, bad)
    assert acc_good.all() and acc_bad.tolist() == [True, False, True, True]
    for i in (0, 2, 3):
        pick = lambda tree, i=i: jax.tree.map(lambda x: x[i], tree)  # noqa: E731
        assert same_state(pick(new_bad), pick(new_good))
        assert float(res_bad.predicted_next[i]) == float(res_good.predicted_next[i])
    assert same_state(jax.tree.map(lambda x: x[1], new_bad), fitted.state)


def test_batch_equals_per_asset_loop(fitted):
    """vmap changes no asset's result beyond floating-point reassociation.

    Not bit for bit, which XLA's CPU backend cannot give: it compiles each shape on its own, and
    long sums, matrix products, the vector width (AVX-512 for a block, 256-bit for one asset) and
    the fusion around an operation all change its rounding. Even a sequential ``lax.map`` of the
    unbatched step is not bit-identical to the single-asset program (chapter 9 has the evidence).
    The results differ in the last bits (≤ 2 ulp on the forecast); the tolerance is 1e-13
    relative and every flag must agree. The Hölder exponent is computed in float32 (chapter 1,
    eq. float32-error), so its tolerance is a few float32 ulps.
    """
    fp = fitted.functional
    scales = np.array([1.0, 1.001, 0.999, 1.002])
    states = jax.tree.map(lambda x: jnp.stack([x] * len(scales)), fitted.state)
    singles = [fitted.state] * len(scales)
    for t in range(5):
        prices = (HISTORY[-1] + 0.3 * t) * scales
        states, batch, _ = fp.step_batch(states, prices, prices)
        for i, p in enumerate(prices):
            singles[i], single = fp.step(singles[i], obs(float(p), t + 1))
            for name in ("predicted_next", "weights", "cusum_drift"):
                np.testing.assert_allclose(
                    getattr(single, name), getattr(batch, name)[i], rtol=1e-13, atol=1e-300
                )
            np.testing.assert_allclose(
                single.holder_exponent,
                batch.holder_exponent[i],
                rtol=fp.model.wtmm.rounding_rtol,
                atol=0.0,
            )
            for flag in ("emergency_mode", "regime_change_detected", "robust_mode"):
                assert bool(getattr(single, flag)) == bool(getattr(batch, flag)[i])


def test_no_look_ahead(fitted):
    """Changing observations after t changes no result at or before t."""
    fp = fitted.functional
    rng = np.random.default_rng(1)
    # 128 ticks: the length fit_history compiled the scan for
    path = HISTORY[-1] + np.cumsum(rng.standard_normal(128) * 0.5)
    altered = path.copy()
    altered[100:] += rng.standard_normal(28) * 5.0
    _, original = fp.run(fitted.state, path)
    _, changed = fp.run(fitted.state, altered)
    for a, b in zip(jax.tree.leaves(original), jax.tree.leaves(changed), strict=True):
        np.testing.assert_array_equal(_plain(a)[:100], _plain(b)[:100])
    assert not np.array_equal(original.predicted_next[100:], changed.predicted_next[100:])


@settings(max_examples=10, deadline=None)
@given(hs.lists(hs.floats(-3.0, 3.0), min_size=5, max_size=5), hs.booleans())
def test_weights_stay_on_the_simplex(fitted, moves, freeze):
    fp = fitted.functional
    prices = fitted.gate.last_price + np.cumsum(moves)
    state = fitted.state
    for p in prices:
        state, result, _ = fp._step(state, p, p, freeze)
        w = np.asarray(result.weights)
        assert np.all(w >= 0) and abs(w.sum() - 1.0) <= SUM_OF_FOUR
        assert np.isfinite(float(result.predicted_next))


def test_frozen_weights_do_not_move(fitted):
    fp = fitted.functional
    state, _, _ = fp._step(fitted.state, HISTORY[-1] + 2.0, HISTORY[-1] + 2.0, True)
    np.testing.assert_array_equal(state.weights, fitted.state.weights)
    state, _, _ = fp._step(fitted.state, HISTORY[-1] + 2.0, HISTORY[-1] + 2.0, False)
    assert not np.array_equal(state.weights, fitted.state.weights)


@pytest.mark.filterwarnings("ignore::usp.FrequencyWarning")  # its ticks are seconds apart
def test_staleness_freezes_and_recovery_emits_event(fitted):
    now = [100 * SECOND]
    events = []
    up = fresh(fitted, clock=lambda: now[0], on_event=events.append)
    ttl = up.config.staleness_ttl_ns
    with pytest.warns(StalenessWarning):
        up.step(obs(HISTORY[-1], now[0] - 2 * ttl))
    assert up.gate.degraded
    weights = np.asarray(up.state.weights)
    up.step(obs(HISTORY[-1] + 0.1, now[0] - ttl + 1))  # below TTL, above hysteresis: still frozen
    np.testing.assert_array_equal(up.state.weights, weights)
    assert up.gate.degraded and not events
    now[0] += SECOND
    up.step(obs(HISTORY[-1] + 0.2, now[0] - ttl // 10))
    assert not up.gate.degraded
    assert len(events) == 1 and isinstance(events[0], NormalOperationRestoredEvent)


def test_sparse_ticks_warn_and_freeze(fitted):
    up = fresh(fitted)
    up.step(obs(HISTORY[-1], 10 * SECOND))
    weights = np.asarray(up.state.weights)
    with pytest.warns(FrequencyWarning, match="Nyquist"):
        result = up.step(obs(HISTORY[-1] + 0.1, 11 * SECOND))
    assert bool(result.degraded_inference_mode)
    np.testing.assert_array_equal(up.state.weights, weights)


def test_emergency_on_a_jump_writes_a_dump(fitted, tmp_path):
    up = fresh(fitted, emergency_dump_dir=tmp_path)
    results = jump_ticks(up)
    assert any(bool(r.emergency_mode) for r in results)
    emergency = next(r for r in results if bool(r.emergency_mode))
    assert emergency.mode == "Emergency" and float(emergency.weights[3]) > 0.999
    (dump,) = up.dumps
    record = read_emergency_dump(dump)
    assert record["result"]["emergency_mode"] is True


def test_result_has_every_field_and_is_finite(fitted):
    result = fitted.last_result
    assert (
        0.0 <= float(result.weights.min()) and abs(float(result.weights.sum()) - 1) <= SUM_OF_FOUR
    )
    for name in (
        "predicted_next",
        "holder_exponent",
        "cusum_drift",
        "kurtosis",
        "adaptive_threshold",
    ):
        assert np.isfinite(float(getattr(result, name))), name
    assert result.mode in ("Standard", "Robust", "Emergency")
