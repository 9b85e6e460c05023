"""Branch D (usp.kernels.signature): signatures against roughpy and closed forms, Chen's identity,
log-signatures in a common basis, the GCV ridge against a direct solve, the branch's
out-of-sample accuracy, its invariances and its behaviour on bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import roughpy as rp
from hypothesis import given, settings
from hypothesis import strategies as st

from usp.api import DomainError, PredictorConfig
from usp.kernels import signature as sig
from usp.reference import signature as sig_reference

KEY = jax.random.key(0)


# --- an independent truncated tensor algebra (NumPy), levels 1..D as arrays of shape (d,)*m ---


def tensor_levels(flat, dim, depth):
    sizes = [dim**m for m in range(1, depth + 1)]
    chunks = np.split(np.asarray(flat), np.cumsum(sizes)[:-1])
    return [chunk.reshape((dim,) * m) for m, chunk in enumerate(chunks, start=1)]


def flatten(levels):
    return np.concatenate([level.ravel() for level in levels])


def tensor_mul_nilpotent(a, b):
    """Product of two elements with zero scalar part, truncated at their depth."""
    out = [np.zeros_like(level) for level in a]
    for m in range(2, len(a) + 1):
        for j in range(1, m):
            out[m - 1] += np.multiply.outer(a[j - 1], b[m - j - 1])
    return out


def group_mul(a, b):
    """Product of (1 + a)(1 + b), returned without its scalar part 1."""
    cross = tensor_mul_nilpotent(a, b)
    return [x + y + z for x, y, z in zip(a, b, cross, strict=True)]


def tensor_log(levels):
    power, total = levels, [level.copy() for level in levels]
    for k in range(2, len(levels) + 1):
        power = tensor_mul_nilpotent(power, levels)
        total = [t + (-1) ** (k + 1) / k * p for t, p in zip(total, power, strict=True)]
    return total


def tensor_exp(levels):
    power, total, factorial = levels, [level.copy() for level in levels], 1.0
    for k in range(2, len(levels) + 1):
        power, factorial = tensor_mul_nilpotent(power, levels), factorial * k
        total = [t + p / factorial for t, p in zip(total, power, strict=True)]
    return total


def lyndon_words(dim, depth):
    """Duval's algorithm, independent of signax's implementation, sorted by (length, word)."""
    words, word = [], [-1]
    while word:
        word[-1] += 1
        words.append(tuple(word))
        m = len(word)
        while len(word) < depth:
            word.append(word[-m])
        while word and word[-1] == dim - 1:
            word.pop()
    return sorted(words, key=lambda w: (len(w), w))


def roughpy_stream(path, depth):
    context = rp.get_context(width=path.shape[1], depth=depth, coeffs=rp.DPReal)
    return context, rp.LieIncrementStream.from_increments(np.diff(path, axis=0), ctx=context)


def random_path(rng, length, dim):
    return rng.standard_normal((length, dim)).cumsum(axis=0) / np.sqrt(length)


# --- signatures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dim", "depth", "length"), [(2, 3, 16), (2, 6, 50), (3, 4, 33), (5, 3, 128)]
)
def test_signature_matches_roughpy(dim, depth, length):
    path = random_path(np.random.default_rng(dim * 100 + depth), length, dim)
    ours = np.asarray(sig.signature(jnp.asarray(path), depth))
    _, stream = roughpy_stream(path, depth)
    theirs = np.asarray(stream.signature())
    assert theirs[0] == 1.0  # roughpy includes the level-0 term; signax does not
    assert ours.shape == (sig_reference.signature_dimension(dim, depth),) == theirs[1:].shape
    np.testing.assert_allclose(ours, theirs[1:], rtol=0, atol=1e-12 * max(1, np.abs(theirs).max()))


def test_signature_level_ordering_two_segments_closed_form():
    # S^{ij} = a_i a_j / 2 + a_i b_j + b_i b_j / 2 for segments a then b: not symmetric in (i, j),
    # so it pins the C-order flattening; level 3 of a single segment is a⊗a⊗a / 6.
    a, b = np.array([0.3, -1.1, 0.7]), np.array([-0.4, 0.5, 2.0])
    path = jnp.asarray(np.stack([np.zeros(3), a, a + b]))
    levels = tensor_levels(sig.signature(path, 3), 3, 3)
    np.testing.assert_allclose(levels[0], a + b, rtol=0, atol=1e-15)
    expected = np.outer(a, a) / 2 + np.outer(a, b) + np.outer(b, b) / 2
    np.testing.assert_allclose(levels[1], expected, rtol=0, atol=1e-14)
    single = tensor_levels(sig.signature(jnp.asarray(np.stack([np.zeros(3), a])), 3), 3, 3)
    np.testing.assert_allclose(single[2], np.einsum("i,j,k->ijk", a, a, a) / 6, rtol=0, atol=1e-15)


def test_signature_batch_equals_per_path():
    paths = jnp.asarray(np.random.default_rng(1).standard_normal((5, 20, 2)).cumsum(axis=1))
    batched = sig.signature(paths, 4)
    for i in range(5):
        np.testing.assert_array_equal(batched[i], sig.signature(paths[i], 4))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    cut=st.sampled_from([1, 9, 30]),
    spread=st.floats(0.05, 2.0),
)
def test_chen_identity(seed, cut, spread):
    dim, depth = 3, 4
    path = np.random.default_rng(seed).standard_normal((32, dim)).cumsum(axis=0) * spread / 4
    path = jnp.asarray(path)
    whole = sig.signature(path, depth)
    first, second = sig.signature(path[: cut + 1], depth), sig.signature(path[cut:], depth)
    combined = sig_reference.signature_product(first, second, dim=dim, depth=depth)
    assert float(jnp.max(jnp.abs(whole - combined))) <= 1e-10
    # the same identity in the independent NumPy algebra
    ours = flatten(group_mul(tensor_levels(first, dim, depth), tensor_levels(second, dim, depth)))
    assert np.max(np.abs(np.asarray(whole) - ours)) <= 1e-10


# --- log-signatures in a common basis ------------------------------------------------------------


@pytest.mark.parametrize(("dim", "depth", "length"), [(2, 3, 16), (2, 6, 40), (3, 4, 24)])
def test_logsignature_agrees_with_roughpy_in_tensor_basis(dim, depth, length):
    path = random_path(np.random.default_rng(7 + dim + depth), length, dim)
    context, stream = roughpy_stream(path, depth)
    signature = np.asarray(sig.signature(jnp.asarray(path), depth))
    ours_log = tensor_log(tensor_levels(signature, dim, depth))
    # roughpy: tensor log of its signature, and its Hall-basis log-signature expanded to tensors
    np.testing.assert_allclose(
        flatten(ours_log), np.asarray(stream.signature().log())[1:], rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(
        flatten(ours_log),
        np.asarray(context.lie_to_tensor(stream.log_signature()))[1:],
        rtol=0,
        atol=1e-12,
    )
    # signax's log-signature = coefficients of log S at the Lyndon words
    signax_words = np.asarray(sig.logsignature(jnp.asarray(path), depth))
    ours_words = np.array([ours_log[len(w) - 1][w] for w in lyndon_words(dim, depth)])
    np.testing.assert_allclose(signax_words, ours_words, rtol=0, atol=1e-12)
    # exp(log S) = S
    np.testing.assert_allclose(flatten(tensor_exp(ours_log)), signature, rtol=0, atol=1e-12)


def test_logsignature_bases_really_differ():
    # Hall basis (roughpy) vs Lyndon words (signax): for d=2, D=3 the coordinate of [2,[1,2]]
    # is minus the coefficient of the word 122 - the reason comparisons go through tensors.
    path = random_path(np.random.default_rng(3), 12, 2)
    _, stream = roughpy_stream(path, 3)
    hall = np.asarray(stream.log_signature())
    words = np.asarray(sig.logsignature(jnp.asarray(path), 3))
    np.testing.assert_allclose(hall[:4], words[:4], rtol=0, atol=1e-13)
    np.testing.assert_allclose(hall[4], -words[4], rtol=0, atol=1e-13)
    assert abs(words[4]) > 1e-3


@pytest.mark.parametrize("dim", [2, 3, 4])
def test_logsignature_dimension_is_witt(dim):
    for depth in range(1, 7):
        context = rp.get_context(width=dim, depth=depth, coeffs=rp.DPReal)
        assert sig.logsignature_dimension(dim, depth) == context.lie_size(depth)
        assert sig.logsignature_dimension(dim, depth) == len(lyndon_words(dim, depth))
    assert [sig.logsignature_dimension(2, d) for d in range(1, 7)] == [2, 3, 5, 8, 14, 23]
    path = jnp.asarray(random_path(np.random.default_rng(dim), 10, dim))
    assert sig.logsignature(path, 4).shape == (sig.logsignature_dimension(dim, 4),)


def test_area_coordinate_is_levy_area_closed_form():
    windows = jnp.asarray(np.random.default_rng(5).standard_normal((100, 16)).cumsum(axis=1))
    features = sig.window_features(windows, 1.0, 3)
    assert features.shape == (100, 4)
    np.testing.assert_allclose(features[:, 0], windows[:, -1] - windows[:, 0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        features[:, 1], jax.vmap(sig_reference.levy_area)(windows), rtol=0, atol=1e-12
    )


# --- the ridge -----------------------------------------------------------------------------------


def test_ridge_gcv_matches_direct_solve():
    rng = np.random.default_rng(11)
    m, p = 112, 4
    features = rng.standard_normal((m, p)) * np.array([3.0, 0.8, 0.1, 0.8]) + 5.0
    targets = features @ np.array([0.0, -0.5, 2.0, 0.3]) + rng.standard_normal(m)
    ridge = sig.ridge_gcv(jnp.asarray(features), jnp.asarray(targets))
    design = (features - features.mean(0)) / features.std(0)
    centred = targets - targets.mean()
    scores = []
    for penalty in m * np.asarray(sig.RELATIVE_RIDGE_PENALTIES):
        hat = design @ np.linalg.solve(design.T @ design + penalty * np.eye(p), design.T)
        dof = 1 + np.trace(hat)
        rss = np.sum((centred - hat @ centred) ** 2)
        scores.append((m * rss / (m - dof) ** 2, penalty, rss, dof))
    _, best, rss, dof = min(scores)
    assert float(ridge.penalty) == pytest.approx(best, rel=1e-12)
    coefficients = np.linalg.solve(design.T @ design + best * np.eye(p), design.T @ centred)
    coefficients /= features.std(0)
    np.testing.assert_allclose(ridge.coefficients, coefficients, rtol=1e-10, atol=1e-12)
    intercept = targets.mean() - features.mean(0) @ coefficients
    assert float(ridge.intercept) == pytest.approx(intercept, rel=1e-10, abs=1e-12)
    residual_std = float(ridge.residual_std(jnp.asarray(features), jnp.asarray(targets)))
    assert residual_std == pytest.approx(math.sqrt(rss / (m - dof)), rel=1e-10)


def test_ridge_ignores_a_constant_column():
    rng = np.random.default_rng(12)
    features = np.column_stack([np.full(60, 1.0), rng.standard_normal((60, 2))])
    targets = features[:, 1] + 0.1 * rng.standard_normal(60)
    ridge = sig.ridge_gcv(jnp.asarray(features), jnp.asarray(targets))
    assert bool(jnp.all(jnp.isfinite(ridge.coefficients)))
    assert float(ridge.coefficients[0]) == 0.0
    assert float(ridge.coefficients[1]) == pytest.approx(1.0, abs=0.1)


# --- the synthetic series -----------------------------------------------------------------------


def test_path_dependent_series_follows_its_equation():
    n, w, key = 300, sig.DEFAULT_WINDOW, jax.random.key(4)
    series = np.asarray(sig_reference.path_dependent_series(n, key=key))
    noise = np.asarray(jax.random.normal(key, (n,)))
    np.testing.assert_allclose(series[:w], np.cumsum(noise[:w]), rtol=0, atol=1e-12)
    t = np.linspace(0, 1, w)
    for k in range(w - 1, n - 1, 37):
        window = series[k - w + 1 : k + 1] - series[k - w + 1]
        area = 0.5 * np.sum(t[:-1] * np.diff(window) - window[:-1] * np.diff(t))
        excursion = np.sum((window - window[-1] * t)[:-1] ** 2) / (w - 1)
        drift = -0.8 * np.tanh(area) + 0.8 * np.tanh(excursion / ((w - 1) / 6) - 1)
        assert series[k + 1] - series[k] - noise[k + 1] == pytest.approx(drift, abs=1e-10)


# --- the branch ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def branch():
    return sig.SignatureBranch.from_config(PredictorConfig())


@pytest.fixture(scope="module")
def series():
    return sig_reference.path_dependent_series(3_000, key=jax.random.key(7))


@pytest.fixture(scope="module")
def jitted_fit(branch):
    return jax.jit(branch.fit)  # one compilation shared by the traced-fit tests


@pytest.fixture(scope="module")
def fitted(branch, series):
    buffer = series[1000:1128]
    return branch.fit(branch.init(key=KEY), buffer), buffer


def test_from_config(branch):
    assert branch.depth == 3 and branch.window == sig.DEFAULT_WINDOW and branch.n_features == 4
    assert sig.SignatureBranch.from_config(PredictorConfig(log_sig_depth=5)).n_features == 13
    with pytest.raises(ValueError, match="needs a buffer of at least"):
        sig.SignatureBranch.from_config(PredictorConfig(log_sig_depth=5, wtmm_buffer_size=64))
    with pytest.raises(ValueError, match="window"):
        sig.SignatureBranch(depth=3, window=2)


def test_branch_beats_random_walk_out_of_sample(branch, series):
    backtest = sig_reference.one_step_backtest(branch, series, buffer_length=128, stride=3)
    assert backtest.mean.shape[0] == len(range(128, 3_000, 3))
    ratio = float(backtest.rmse_over_naive())
    assert ratio <= 0.98, ratio
    z = (backtest.realised - backtest.mean) / backtest.scale
    assert 0.85 < float(jnp.std(z)) < 1.2  # scale is a usable predictive standard deviation


def test_branch_does_not_beat_random_walk_on_a_random_walk(branch):
    # no structure to find: the ridge must not invent any (the ratio stays near 1)
    walk = jnp.cumsum(jax.random.normal(jax.random.key(9), (3_000,)))
    ratio = float(
        sig_reference.one_step_backtest(branch, walk, buffer_length=128, stride=3).rmse_over_naive()
    )
    assert 0.98 < ratio < 1.05, ratio


@settings(max_examples=20, deadline=None)
@given(
    shift=st.floats(-1e4, 1e4),
    magnitude=st.floats(1e-3, 1e3),
    negative=st.booleans(),
)
def test_branch_is_affine_equivariant(branch, fitted, shift, magnitude, negative):
    params, buffer = fitted
    factor = -magnitude if negative else magnitude
    base = branch.predict(params, buffer, key=KEY)
    moved = shift + factor * buffer
    moved_forecast = branch.predict(branch.fit(branch.init(key=KEY), moved), moved, key=KEY)
    # Rounding of the moved values: increments of a + c x lose about eps |a| / |c| of absolute
    # precision, i.e. up to ~1e-9 relative at |a| = 1e4, |c| = 1e-3; the bounds leave ~100x margin.
    values = abs(shift) + abs(factor) * float(jnp.max(jnp.abs(buffer)))
    assert float(moved_forecast.mean) == pytest.approx(
        shift + factor * float(base.mean), abs=1e-10 * values
    )
    assert float(moved_forecast.scale) == pytest.approx(abs(factor) * float(base.scale), rel=1e-7)


def test_untrained_and_fitted_params_have_the_same_avals(branch, fitted):
    # same shapes, dtypes and weak-type flags: lax.cond/where over them and one compilation
    params, _ = fitted
    untrained = branch.init(key=KEY)
    avals = lambda tree: [jax.typeof(leaf) for leaf in jax.tree.leaves(tree)]
    assert avals(untrained) == avals(params)


def test_fit_is_deterministic_and_jit_matches_eager(branch, fitted, jitted_fit):
    params, buffer = fitted
    again = branch.fit(branch.init(key=KEY), buffer)
    jitted = jitted_fit(branch.init(key=KEY), buffer)
    for a, b, c in zip(
        jax.tree.leaves(params), jax.tree.leaves(again), jax.tree.leaves(jitted), strict=True
    ):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-14)
    assert bool(params.fitted) and float(params.residual_std) > 0


def test_winsorised_clips_at_robust_sigmas_and_spares_gaussian_data():
    gaussian = jax.random.normal(jax.random.key(3), (20_000,))
    clipped = sig.winsorised(gaussian, 3.0)
    moved = float(jnp.mean(clipped != gaussian))
    assert 0.0015 < moved < 0.004  # 0.27% of a Gaussian lies beyond 3 sd
    spiked = gaussian.at[0].set(50.0)
    assert float(sig.winsorised(spiked, 3.0)[0]) == pytest.approx(3.0, rel=0.03)
    ties = jnp.array([1.0, 1.0, 1.0, 1.0, 9.0])  # MAD 0: nothing to scale by, left alone
    np.testing.assert_array_equal(sig.winsorised(ties, 3.0), ties)


def test_winsorised_targets_forecast_a_jump_diffusion_better(branch):
    """On a random walk with rare 15-sigma jumps, the winsorised fit's excess error over the
    optimal forecast (the last value) is well below plain least squares' on the same features."""
    keys = jax.random.split(jax.random.key(11), 3)
    n = 6_000
    jumps = 15.0 * jax.random.normal(keys[0], (n,)) * (jax.random.uniform(keys[1], (n,)) < 0.01)
    series = jnp.cumsum(jax.random.normal(keys[2], (n,)) + jumps)
    starts = np.arange(0, n - 129, 37)
    buffers = jnp.stack([series[i : i + 128] for i in starts])
    realised = series[starts + 128]

    def plain_forecast(buffer):
        scale = sig.increment_scale(buffer)
        windows, increments = sig.training_pairs(buffer, branch.window)
        ridge = sig.ridge_gcv(sig.window_features(windows, scale, branch.depth), increments / scale)
        last = sig.window_features(buffer[None, -branch.window :], scale, branch.depth)[0]
        return buffer[-1] + scale * (ridge.intercept + last @ ridge.coefficients)

    def robust_forecast(buffer):
        params = branch.fit(branch.init(key=KEY), buffer)
        return branch.predict(params, buffer, key=KEY).mean

    mse = lambda forecast: float(jnp.mean((jax.vmap(forecast)(buffers) - realised) ** 2))
    oracle = mse(lambda buffer: buffer[-1])  # zero-mean increments: the last value is optimal
    robust, plain = mse(robust_forecast) - oracle, mse(plain_forecast) - oracle
    print(f"excess MSE over the oracle: winsorised {robust:.4f}, plain {plain:.4f}")
    assert 0 < robust < 0.7 * plain


def test_predict_jit_and_vmap_match_eager(branch, series):
    buffers = jnp.stack([series[i : i + 128] for i in (200, 900, 1700)])
    params = jax.vmap(branch.fit, in_axes=(None, 0))(branch.init(key=KEY), buffers)
    batched = jax.jit(jax.vmap(lambda p, b: branch.predict(p, b, key=KEY)))(params, buffers)
    for i in range(3):
        one = jax.tree.map(lambda leaf, i=i: leaf[i], params)
        eager = branch.predict(one, buffers[i], key=KEY)
        assert float(batched.mean[i]) == pytest.approx(float(eager.mean), rel=1e-12)
        assert float(batched.scale[i]) == pytest.approx(float(eager.scale), rel=1e-12)


def test_forecast_equation(branch, fitted):
    params, buffer = fitted
    window = buffer[-branch.window :]
    path = jnp.stack(
        [jnp.linspace(0, 1, branch.window), (window - window[0]) / params.increment_scale], axis=1
    )
    features = sig.logsignature(path, branch.depth)[1:]
    expected = buffer[-1] + params.increment_scale * (
        params.intercept + features @ params.coefficients
    )
    forecast, from_model = branch.forecast_with_flag(params, buffer)
    assert bool(from_model)
    assert float(forecast.mean) == pytest.approx(float(expected), rel=1e-13)
    assert float(forecast.scale) == pytest.approx(
        float(params.increment_scale * params.residual_std), rel=1e-13
    )
    assert float(params.increment_scale) == pytest.approx(float(np.std(np.diff(buffer))), rel=1e-12)


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("corrupt", "error", "message"),
    [
        (lambda b: b.at[40].set(jnp.nan), DomainError, "non-finite value.*index 40"),
        (lambda b: b.at[-1].set(jnp.inf), DomainError, "non-finite value.*index 127"),
        (lambda b: b.at[3].set(-jnp.inf), DomainError, "non-finite"),
        (lambda b: jnp.full(128, 101.25), ValueError, "constant"),
        (lambda b: jnp.zeros(128), ValueError, "constant"),
        (lambda b: b[:35], ValueError, "too short.*at least 36"),
    ],
)
def test_fit_rejects_bad_buffers(branch, fitted, corrupt, error, message):
    params, buffer = fitted
    with pytest.raises(error, match=message):
        branch.fit(params, corrupt(buffer))


def test_fit_shape_check_names_the_problem(branch):
    # a 2-d buffer is stopped by the jaxtyping annotation under the test hook; the branch's own
    # check (what users without the hook get) says what is wrong
    with pytest.raises(ValueError, match="1-d"):
        branch.check_fit_shape((2, 64))


def test_fit_accepts_minimum_length(branch, fitted):
    params, buffer = fitted
    assert bool(branch.fit(branch.init(key=KEY), buffer[-36:]).fitted)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda b: b.at[50].set(jnp.nan),
        lambda b: b.at[-1].set(jnp.inf),
        lambda b: jnp.full_like(b, 3.0),
    ],
)
def test_traced_fit_keeps_params_on_bad_buffers(branch, fitted, jitted_fit, corrupt):
    params, buffer = fitted
    kept = jitted_fit(params, corrupt(buffer))
    for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
    fresh = jitted_fit(branch.init(key=KEY), corrupt(buffer))
    assert not bool(fresh.fitted)


def test_traced_fit_still_rejects_short_buffers(branch, fitted):
    params, buffer = fitted
    with pytest.raises(ValueError, match="too short"):
        jax.jit(branch.fit)(params, buffer[:20])


def test_predict_falls_back_to_last_finite_value(branch, fitted):
    params, buffer = fitted
    gap = buffer.at[-3].set(jnp.nan)
    forecast, from_model = branch.forecast_with_flag(params, gap)
    assert not bool(from_model)
    assert float(forecast.mean) == float(buffer[-1])
    assert float(forecast.scale) == float(params.increment_scale)
    last_missing = buffer.at[-1].set(jnp.inf).at[-2].set(jnp.nan)
    forecast, from_model = branch.forecast_with_flag(params, last_missing)
    assert not bool(from_model) and float(forecast.mean) == float(buffer[-3])
    # predict itself is total: finite output, same numbers
    assert float(branch.predict(params, last_missing, key=KEY).mean) == float(buffer[-3])


def test_predict_ignores_nan_outside_the_last_window(branch, fitted):
    params, buffer = fitted
    clean, _ = branch.forecast_with_flag(params, buffer)
    old_gap, from_model = branch.forecast_with_flag(params, buffer.at[5].set(jnp.nan))
    assert bool(from_model) and float(old_gap.mean) == float(clean.mean)


def test_predict_on_all_nan_buffer_is_nan_and_flagged(branch, fitted):
    params, _ = fitted
    forecast, from_model = branch.forecast_with_flag(params, jnp.full(128, jnp.nan))
    assert not bool(from_model) and math.isnan(float(forecast.mean))


def test_predict_on_constant_buffer_is_finite(branch, fitted):
    params, _ = fitted
    flat = jnp.full(128, 50.0)
    forecast, from_model = branch.forecast_with_flag(params, flat)
    assert bool(from_model)
    # zero increments: all features vanish and only the intercept moves the mean
    expected = 50.0 + float(params.increment_scale * params.intercept)
    assert float(forecast.mean) == pytest.approx(expected, rel=1e-13)
    assert math.isfinite(float(forecast.scale)) and float(forecast.scale) > 0


def test_untrained_params_forecast_the_random_walk(branch, fitted):
    _, buffer = fitted
    params = branch.init(key=KEY)
    forecast, from_model = branch.forecast_with_flag(params, buffer)
    assert not bool(from_model)
    assert float(forecast.mean) == float(buffer[-1])
    assert float(forecast.scale) == pytest.approx(float(np.std(np.diff(buffer))), rel=1e-12)


def test_predict_rejects_buffer_shorter_than_window(branch, fitted):
    params, buffer = fitted
    with pytest.raises(ValueError, match="shorter than the window"):
        branch.predict(params, buffer[:10], key=KEY)
