"""The CUSUM regime detector (usp.core.cusum): run-length theory, the spec's grace table, an
independent plain-Python reference of the full update, the Nile change point, bad input."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st
from hypothesis import given, settings
from hypothesis import strategies as hs

from usp.api import PredictorConfig
from usp.core.cusum import (
    MAX_STANDARDISED_ERROR,
    CusumDetector,
    adaptive_threshold,
    cusum_recursion,
    cusum_update,
    default_warmup,
    ewma_variance,
    grace_gate,
    init_cusum,
    sample_kurtosis,
)
from usp.io.data import load_series
from usp.reference.cusum import average_run_length, siegmund_arl, simulate_run_lengths

# --------------------------------------------------------------------------------------------
# Oracles written independently of the module


def page_arl(shift, threshold, slack, nodes=64):
    """Exact one-sided ARL from Page's integral equation, solved by Gauss-Legendre Nystrom."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    x, w = threshold * (x + 1) / 2, w * threshold / 2
    u = np.concatenate([[0.0], x])
    kernel = np.empty((nodes + 1, nodes + 1))
    kernel[:, 0] = st.norm.cdf(slack - shift - u)
    kernel[:, 1:] = w * st.norm.pdf(x[None, :] - u[:, None] + slack - shift)
    return np.linalg.solve(np.eye(nodes + 1) - kernel, np.ones(nodes + 1))[0]


class ReferenceCusum:
    """Plain-Python transcription of the chapter's equations (no JAX), one error at a time."""

    def __init__(self, h, k, alpha, grace, window, warmup, adaptive=True, level=20.0, steps=5):
        self.h, self.k, self.alpha, self.grace = h, k, alpha, grace
        self.size, self.warmup, self.adaptive = window, warmup, adaptive
        self.level, self.steps = level, steps
        self.g_plus = self.g_minus = self.var = 0.0
        self.zs: list[float] = []
        self.kurtosis, self.n, self.since, self.streak = 3.0, 0, grace, 0
        self.run_plus = self.run_minus = 0

    def update(self, e):
        if not math.isfinite(e):
            return None
        ready = self.n >= self.warmup
        z = 0.0
        if self.n > 0:
            sigma = math.sqrt(self.var)
            z = 0.0 if e == 0.0 and sigma == 0.0 else e / max(sigma, abs(e) / 1e4)
        gp, gm = self.g_plus, self.g_minus
        if ready:
            gp, gm = max(0.0, gp + z - self.k), max(0.0, gm - z - self.k)
        factor = max(1.0, 1.0 + math.log(self.kurtosis / 3.0)) if self.adaptive else 1.0
        threshold = self.h * factor
        raw = max(gp, gm) > threshold
        self.since = min(self.since + 1, self.grace)
        remaining, silenced = self.grace - self.since, self.since < self.grace
        alarm = raw and not silenced
        if ready:
            self.zs = (self.zs + [z])[-self.size :]
        filled = np.array(self.zs)
        if len(filled) >= min(30, self.size) and filled.var() > 1e-12:
            self.kurtosis = float(st.kurtosis(filled, fisher=False, bias=True))
        else:
            self.kurtosis = 3.0
        self.streak = min(self.streak + 1, self.steps + 1) if self.kurtosis > self.level else 0
        self.run_plus = self.run_plus + 1 if gp > 0 else 0
        self.run_minus = self.run_minus + 1 if gm > 0 else 0
        onset = self.run_plus if gp >= gm else self.run_minus
        weight = max(self.alpha, 1.0 / (self.n + 1))
        self.var += weight * (e * e - self.var)
        self.n += 1
        out = dict(
            alarm=alarm,
            raw_alarm=raw,
            silenced=silenced,
            grace_remaining=remaining,
            cusum_drift=max(gp, gm),
            g_plus=gp,
            g_minus=gm,
            onset_lag=onset,
            threshold=threshold,
            standardised_error=z,
            sigma=math.sqrt(self.var),
            kurtosis=self.kurtosis,
            kurtosis_alert=self.streak > self.steps,
            ready=ready,
        )
        self.g_plus, self.g_minus = (0.0, 0.0) if alarm else (gp, gm)
        if alarm:
            self.since, self.run_plus, self.run_minus = 0, 0, 0
        return out


# --------------------------------------------------------------------------------------------
# Run-length theory (ORCH-4 verification)


@pytest.mark.parametrize(
    ("shift", "threshold", "expected"),
    [(0.0, 4.0, 338.1), (1.0, 4.0, 8.34), (0.0, 5.0, 938.2), (1.0, 5.0, 10.34)],
)
def test_siegmund_formula_values(shift, threshold, expected):
    assert float(siegmund_arl(shift, threshold, 0.5)) == pytest.approx(expected, rel=1e-3)


def test_siegmund_is_continuous_at_zero_drift():
    b2 = (4.0 + 1.166) ** 2
    assert float(siegmund_arl(0.5, 4.0, 0.5)) == pytest.approx(b2, rel=1e-12)
    assert float(siegmund_arl(0.5 + 1e-5, 4.0, 0.5)) == pytest.approx(b2, rel=1e-4)
    assert float(siegmund_arl(0.5 - 1e-5, 4.0, 0.5)) == pytest.approx(b2, rel=1e-4)


def test_page_oracle_matches_published_tables():
    # Lucas & Crosier (1982): k = 0.5, h = 4 -> 336 / 8.38; h = 5 -> 930 / 10.4
    assert page_arl(0.0, 4.0, 0.5) == pytest.approx(336.0, abs=1.0)
    assert page_arl(1.0, 4.0, 0.5) == pytest.approx(8.38, abs=0.01)
    assert page_arl(0.0, 5.0, 0.5) == pytest.approx(930.0, abs=1.5)
    assert page_arl(1.0, 5.0, 0.5) == pytest.approx(10.38, abs=0.01)


N_RUNS = 10_000


@pytest.mark.parametrize("threshold", [4.0, 5.0])
@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_simulated_arl_matches_siegmund_and_page(threshold, shift):
    key = jax.random.key(int(100 * threshold + 10 * shift))
    lengths = simulate_run_lengths(
        key, shift=shift, threshold=threshold, slack=0.5, n_runs=N_RUNS, max_steps=40_000
    )
    mc, se = average_run_length(lengths)
    assert se / mc < 0.015  # Monte-Carlo error well inside the tolerance below
    assert abs(mc / float(siegmund_arl(shift, threshold, 0.5)) - 1) < 0.05  # the requirement
    assert abs(mc - page_arl(shift, threshold, 0.5)) < 4.0 * se  # and the exact value


def test_two_sided_in_control_arl_is_half():
    lengths = simulate_run_lengths(
        jax.random.key(7),
        shift=0.0,
        threshold=4.0,
        slack=0.5,
        n_runs=N_RUNS,
        max_steps=20_000,
        two_sided=True,
    )
    mc, se = average_run_length(lengths)
    assert abs(mc / (page_arl(0.0, 4.0, 0.5) / 2) - 1) < 0.05
    assert se / mc < 0.015


def test_censored_runs_are_refused():
    lengths = simulate_run_lengths(
        jax.random.key(0), shift=0.0, threshold=5.0, slack=0.5, n_runs=100, max_steps=50
    )
    assert np.any(np.asarray(lengths) == -1)
    with pytest.raises(ValueError, match="did not alarm"):
        average_run_length(lengths)
    with pytest.raises(ValueError, match="at least 2"):
        average_run_length(jnp.array([5], jnp.int32))


@settings(max_examples=60, deadline=None)
@given(
    # XLA's CPU backend flushes subnormals to zero; Python floats keep them.
    hs.floats(0, 50, allow_subnormal=False),
    hs.floats(0, 50, allow_subnormal=False),
    hs.floats(-100, 100, allow_subnormal=False),
    hs.floats(0, 3, allow_subnormal=False),
)
def test_recursion_is_pages(g_plus, g_minus, z, k):
    new_plus, new_minus = cusum_recursion(g_plus, g_minus, z, k)
    # Exact, up to XLA's flush of subnormal results to zero (differences below `tiny`).
    tiny = np.finfo(np.float64).tiny
    assert abs(float(new_plus) - max(0.0, g_plus + z - k)) < tiny
    assert abs(float(new_minus) - max(0.0, g_minus - z - k)) < tiny


# --------------------------------------------------------------------------------------------
# Grace period (ORCH-5): the table of API 10.5.2


@pytest.mark.parametrize("warmup", [1, 10])
def test_grace_table_of_the_spec(warmup):
    """Raw CUSUM on from t = 1; grace 20 -> alarms at t = 1 and 21; counter 0,0,19,...,1,0."""
    detector = CusumDetector(grace_period_steps=20, warmup_steps=warmup)
    # warm-up errors of 1, then errors growing tenfold: |z| >= 10 > h + k at every step
    growth = 10.0 ** jnp.arange(1.0, 26.0)
    errors = jnp.concatenate([jnp.ones(warmup), growth])
    _, out = detector.run(errors)
    offset = warmup - 1  # spec time t = 0 is the last warm-up step
    raw = np.asarray(out.raw_alarm)[offset:]
    counter = np.asarray(out.grace_remaining)[offset:]
    emitted = np.asarray(out.alarm)[offset:]
    assert not np.any(np.asarray(out.raw_alarm)[:offset])
    table = {0: (False, 0, False), 1: (True, 0, True), 21: (True, 0, True)}
    table |= {t: (True, 21 - t, False) for t in range(2, 21)}
    for t, (raw_t, counter_t, alarm_t) in table.items():
        assert (bool(raw[t]), int(counter[t]), bool(emitted[t])) == (raw_t, counter_t, alarm_t), t
    assert np.flatnonzero(emitted).tolist() == [1, 21]
    # statistics keep running in the grace period: G grows again from 0 after the reset
    g = np.asarray(out.cusum_drift)[offset:]
    assert np.all(np.diff(g[2:21]) > 0)


@settings(max_examples=50, deadline=None)
@given(hs.lists(hs.booleans(), min_size=1, max_size=80), hs.integers(0, 12))
def test_grace_gate_semantics(raw_alarms, grace):
    """Against the spec's loop: silenced while steps since the last alarm < grace."""
    steps = jnp.asarray(grace, jnp.int32)
    since, last_alarm = grace, None
    for t, raw in enumerate(raw_alarms):
        gate = grace_gate(jnp.asarray(raw), steps, grace)
        since += 1
        expected = raw and since >= grace
        assert bool(gate.alarm) == expected
        assert int(gate.grace_remaining) == max(grace - since, 0)
        if expected:
            if last_alarm is not None:
                assert t - last_alarm >= max(grace, 1)
            since, last_alarm = 0, t
        steps = gate.steps_since_alarm
        assert 0 <= int(steps) <= grace  # saturating counter


# --------------------------------------------------------------------------------------------
# The full update against the plain-Python reference


def _mixed_errors(seed, n=700):
    rng = np.random.default_rng(seed)
    errors = 0.02 * rng.standard_t(4, n)
    errors[300:] += 0.03  # a level shift
    errors[450] = 1.5  # an outlier
    errors[500:520] = 0.0  # a stuck predictor
    return errors


@pytest.mark.parametrize("adaptive", [True, False])
def test_update_matches_plain_python_reference(adaptive):
    detector = CusumDetector(
        threshold=4.0,
        slack=0.5,
        volatility_alpha=0.1,
        grace_period_steps=15,
        kurtosis_window=60,
        kurtosis_alert_level=6.0,
        kurtosis_alert_steps=3,
        warmup_steps=10,
        adaptive=adaptive,
    )
    errors = _mixed_errors(1)
    _, out = detector.run(jnp.asarray(errors))
    reference = ReferenceCusum(4.0, 0.5, 0.1, 15, 60, 10, adaptive=adaptive, level=6.0, steps=3)
    expected = [reference.update(float(e)) for e in errors]
    alarms = 0
    for name in expected[0]:
        ours = np.asarray(getattr(out, name))
        theirs = np.array([row[name] for row in expected])
        if ours.dtype == bool or np.issubdtype(ours.dtype, np.integer):
            assert np.array_equal(ours, theirs.astype(ours.dtype)), name
        else:
            np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12, err_msg=name)
        alarms = int(np.sum(np.asarray(out.alarm)))
    assert alarms >= 2  # the sequence exercises alarms, grace and resets
    assert np.any(np.asarray(out.kurtosis_alert))


def test_predictive_standardisation_and_warmup():
    detector = CusumDetector(warmup_steps=3)
    _, out = detector.run(jnp.array([2.0, -1.0, 4.0, 3.0]))
    # z_t = e_t / sigma_{t-1}; sigma^2 is the running mean of squares over the first 1/alpha
    z_expected = [0.0, -1.0 / 2.0, 4.0 / math.sqrt(2.5), 3.0 / math.sqrt(7.0)]
    assert np.allclose(out.standardised_error, z_expected, rtol=1e-14)
    assert np.allclose(out.sigma**2, [4.0, 2.5, 7.0, 7.5], rtol=1e-14)
    assert np.asarray(out.ready).tolist() == [False, False, False, True]
    # only the 4th error is accumulated: G+ = z - k
    assert np.allclose(out.cusum_drift, [0.0, 0.0, 0.0, z_expected[3] - 0.5], rtol=1e-14)


def test_default_warmup_from_alpha():
    assert default_warmup(0.1) == 10
    assert default_warmup(0.3) == 4
    assert default_warmup(1.0) == 1
    assert CusumDetector.from_config(PredictorConfig(volatility_alpha=0.05)).warmup_steps == 20


def test_ewma_weights():
    var = jnp.asarray(0.0)
    for n, e in enumerate([1.0, 3.0]):
        var = ewma_variance(var, jnp.asarray(e), jnp.asarray(n), 0.1)
    assert float(var) == pytest.approx(5.0)  # mean of 1 and 9
    decayed = ewma_variance(jnp.asarray(5.0), jnp.asarray(0.0), jnp.asarray(50), 0.1)
    assert float(decayed) == pytest.approx(4.5, rel=1e-15)


# --------------------------------------------------------------------------------------------
# Kurtosis and the adaptive threshold


def test_kurtosis_matches_scipy_on_a_partly_filled_ring():
    window = jax.random.t(jax.random.key(1), 5.0, (252,))
    for count in (30, 100, 252):
        expected = st.kurtosis(np.asarray(window[:count]), fisher=False, bias=True)
        assert float(sample_kurtosis(window, count)) == pytest.approx(expected, rel=1e-12)
    assert float(sample_kurtosis(window, 29)) == 3.0
    assert float(sample_kurtosis(jnp.full((252,), 0.7), 252)) == 3.0  # constant window


def test_gaussian_reference_is_three_for_signed_and_387_for_absolute_errors():
    z = jax.random.normal(jax.random.key(2), (400_000,))
    assert float(sample_kurtosis(z, z.shape[0])) == pytest.approx(3.0, abs=0.05)
    theory = (3 - 4 / np.pi - 12 / np.pi**2) / (1 - 2 / np.pi) ** 2
    assert theory == pytest.approx(3.8692, abs=1e-4)
    assert float(sample_kurtosis(jnp.abs(z), z.shape[0])) == pytest.approx(theory, abs=0.05)


def test_detector_in_control_kurtosis_is_near_three():
    detector = CusumDetector.from_config(PredictorConfig())
    errors = 0.01 * jax.random.normal(jax.random.key(3), (4, 1500))
    _, out = jax.vmap(detector.run)(errors)
    late = np.asarray(out.kurtosis)[:, 300:]
    # sample kurtosis of 252 Gaussian-ish values: mean ~3, sd ~0.3 (t-like z adds a little)
    assert 2.7 < late.mean() < 3.5
    assert np.median(np.asarray(out.threshold)[:, 300:]) < 1.1 * detector.threshold


@settings(max_examples=50, deadline=None)
@given(hs.floats(0.01, 1e4), hs.floats(0.1, 20))
def test_adaptive_threshold_floor_and_monotone(kurtosis, h):
    value = float(adaptive_threshold(h, kurtosis))
    assert value >= h * (1 - 1e-12)  # never below h, even for kappa < 3/e
    assert value == pytest.approx(h * max(1.0, 1.0 + math.log(kurtosis / 3.0)), rel=1e-12)
    assert float(adaptive_threshold(h, kurtosis * 1.5)) >= value


def test_threshold_is_fixed_when_not_adaptive():
    errors = _mixed_errors(2)
    _, out = CusumDetector(adaptive=False).run(jnp.asarray(errors))
    assert np.all(np.asarray(out.threshold) == 5.0)
    _, out = CusumDetector(adaptive=True).run(jnp.asarray(errors))
    assert np.asarray(out.threshold).max() > 5.0


def test_kurtosis_alert_after_more_than_alert_steps():
    detector = CusumDetector(
        kurtosis_window=40, kurtosis_alert_level=10.0, kurtosis_alert_steps=5, warmup_steps=5
    )
    rng = np.random.default_rng(4)
    errors = np.concatenate([rng.standard_normal(45), [1e3], rng.standard_normal(60)])
    _, out = detector.run(jnp.asarray(errors))
    high = np.asarray(out.kurtosis) > 10.0
    alert = np.asarray(out.kurtosis_alert)
    first_high = int(np.argmax(high))
    assert first_high == 45 and high[45:85].all() and not high[85:].any()
    assert not alert[: first_high + 5].any()  # 5 consecutive high steps: not yet
    assert alert[first_high + 5 : 85].all()  # the 6th: alert
    assert not alert[85:].any()  # the outlier left the window


def test_onset_estimate_dates_a_shift():
    rng = np.random.default_rng(5)
    errors = rng.standard_normal(400)
    errors[250:] += 3.0
    # h = 8: in-control ARL in the tens of thousands, so no false alarm interferes
    _, out = CusumDetector(threshold=8.0).run(jnp.asarray(errors))
    alarms = np.flatnonzero(np.asarray(out.alarm))
    t = int(alarms[0])
    onset = t - int(out.onset_lag[t]) + 1
    assert 250 <= t <= 260 and abs(onset - 250) <= 2


# --------------------------------------------------------------------------------------------
# The Nile


def nile_alarm():
    nile = load_series("nile")
    flow, years = np.asarray(nile.values), nile.index.astype(int)
    forecasts = np.array([flow[: min(t, 20)].mean() for t in range(1, len(flow))])
    _, out = CusumDetector.from_config(PredictorConfig()).run(jnp.asarray(flow[1:] - forecasts))
    first = int(np.argmax(np.asarray(out.alarm)))
    onset = years[1:][first] - int(out.onset_lag[first]) + 1
    return years[1:][first], onset, nile.metadata["parameters"]["change_point_year"]


def test_nile_change_point():
    alarm_year, onset_year, change_year = nile_alarm()
    assert change_year == 1898
    # alarm on the 1st..4th year of the new regime (Siegmund delay for the 1.5 sd shift: 5.5)
    assert 1899 <= alarm_year <= 1902
    assert onset_year == change_year + 1  # the first low year, 1899


# --------------------------------------------------------------------------------------------
# Bad input, compilation, gradients


def test_non_finite_error_is_rejected_without_touching_the_state():
    detector = CusumDetector.from_config(PredictorConfig())
    state, _ = detector.run(jnp.asarray(_mixed_errors(3)[:320]))
    for bad in (jnp.nan, jnp.inf, -jnp.inf):
        new_state, out = detector.update(state, bad)
        pairs = zip(jax.tree.leaves(new_state), jax.tree.leaves(state), strict=True)
        assert all(np.array_equal(a, b) for a, b in pairs)
        assert not bool(out.valid) and not bool(out.alarm) and not bool(out.raw_alarm)
        assert np.isfinite(float(out.cusum_drift)) and np.isfinite(float(out.sigma))
        assert float(out.kurtosis) == float(state.kurtosis)


def test_zero_volatility_gives_finite_clipped_z():
    detector = CusumDetector(warmup_steps=1)
    errors = jnp.concatenate([jnp.zeros(12), jnp.array([1e-3, 0.0])])
    _, out = detector.run(errors)
    z = np.asarray(out.standardised_error)
    assert np.all(z[:12] == 0.0) and z[12] == pytest.approx(MAX_STANDARDISED_ERROR, rel=1e-12)
    assert bool(out.alarm[12])  # something changed after a run of exact zeros
    leaves = [np.asarray(x, float) for x in jax.tree.leaves(out)]
    assert all(np.all(np.isfinite(x)) for x in leaves)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("threshold", 0.0),
        ("threshold", math.inf),
        ("slack", -0.1),
        ("volatility_alpha", 0.0),
        ("volatility_alpha", 1.5),
        ("grace_period_steps", -1),
        ("kurtosis_window", 0),
        ("warmup_steps", 0),
        ("min_kurtosis_samples", 500),
    ],
)
def test_bad_hyperparameters_raise(field, value):
    with pytest.raises(ValueError, match=field):
        CusumDetector(**{field: value})


def test_config_entry_points_jit_and_vmap():
    config = PredictorConfig(cusum_h=4.0, grace_period_steps=5)
    errors = 0.5 * jax.random.normal(jax.random.key(6), (40, 8)) + jnp.linspace(0, 2, 40)[:, None]
    step = jax.jit(jax.vmap(lambda s, e: cusum_update(s, e, config)))
    states = jax.vmap(lambda _: init_cusum(config))(jnp.arange(8))
    drifts = []
    for row in errors:
        states, out = step(states, row)
        drifts.append(out.cusum_drift)
    single = jax.jit(cusum_update, static_argnames="config")
    state = init_cusum(config)
    for t in range(40):
        state, one = single(state, errors[t, 3], config=config)
        assert float(one.cusum_drift) == pytest.approx(float(drifts[t][3]), rel=1e-12, abs=1e-15)
    assert init_cusum(config).window.shape == (config.kurtosis_window,)
    assert init_cusum(config, jnp.float32).g_plus.dtype == jnp.float32


def test_no_gradient_flows_through_the_detector():
    detector = CusumDetector.from_config(PredictorConfig())
    errors = jax.random.normal(jax.random.key(7), (60,)) + jnp.linspace(0.0, 3.0, 60)

    def total(errs):
        state, out = detector.run(errs)
        floats = [x for x in jax.tree.leaves((state, out)) if jnp.issubdtype(x.dtype, jnp.floating)]
        return sum(jnp.sum(x) for x in floats)

    assert np.all(np.asarray(jax.grad(total)(errors)) == 0.0)
    # the quantities do depend on the errors: without the stop the gradient is not zero
    slope = jax.grad(lambda e: ewma_variance(jnp.asarray(1.0), e, jnp.asarray(50), 0.1))(2.0)
    assert float(slope) == pytest.approx(0.4, rel=1e-12)


def test_counters_saturate_instead_of_overflowing():
    detector = CusumDetector(warmup_steps=1)
    biggest = np.iinfo(np.int32).max
    state = eqx.tree_at(lambda s: s.n_obs, detector.init(), jnp.asarray(biggest, jnp.int32))
    for _ in range(3):  # zero errors on a zero volatility: z = 0, no alarm
        state, _ = detector.update(state, 0.0)
    assert int(state.n_obs) == biggest
    assert int(state.steps_since_alarm) == detector.grace_period_steps
