"""Branches as data: a predictor with three of the branches, and one with five (the four plus a
local-level Kalman filter written here against the branch contract), run every path — step,
step_batch, fit_history, a snapshot round trip — and nothing in ``usp/core`` names a branch."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import ClassVar, NamedTuple, final

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from usp import (
    AbstractBranch,
    Forecast,
    FunctionalPredictor,
    IntegrityError,
    MarketObservation,
    PredictorConfig,
    UniversalPredictor,
)
from usp.api.runtime import synthetic_walk
from usp.contracts.arrays import PRNGKey, Signal
from usp.contracts.branch import EMERGENCY_FALLBACK
from usp.core.step import EMERGENCY_FLOOR, Predictor, _used_weights, default_branches

CORE = Path(__file__).resolve().parent.parent / "usp" / "core"
CONFIG = PredictorConfig()


class LocalLevelParams(NamedTuple):
    level_var: jax.Array
    """q: variance of the random-walk level's steps."""
    noise_var: jax.Array
    """r: variance of the observation noise around the level."""


@final
class LocalLevelBranch(AbstractBranch[LocalLevelParams]):
    """A fifth branch: y_t = μ_t + ε_t, μ_t = μ_{t-1} + η_t (a local-level model). ``fit``
    matches the increments' moments (Var Δy = q + 2r, Cov(Δy_t, Δy_{t-1}) = -r); ``predict``
    runs the Kalman filter over the buffer and forecasts the filtered level."""

    name: ClassVar[str] = "E"
    label: ClassVar[str] = "E local level"

    def init(self, *, key: PRNGKey) -> LocalLevelParams:
        return LocalLevelParams(jnp.asarray(1.0), jnp.asarray(1e-6))

    def fit(self, params: LocalLevelParams, buffer: Signal) -> LocalLevelParams:
        steps = jnp.diff(buffer)
        centred = steps - steps.mean()
        total = jnp.mean(centred**2)
        noise = jnp.clip(-jnp.mean(centred[1:] * centred[:-1]), 0.0, 0.49 * total)
        return LocalLevelParams(total - 2.0 * noise, noise)

    def predict(self, params: LocalLevelParams, buffer: Signal, *, key: PRNGKey) -> Forecast:
        q, r = params.level_var, params.noise_var

        def update(carry, y):
            level, var = carry
            prior = var + q
            gain = prior / (prior + r)
            return (level + gain * (y - level), (1.0 - gain) * prior), None

        (level, var), _ = jax.lax.scan(update, (buffer[0], r), buffer[1:])
        return Forecast(level, jnp.sqrt(var + q + r))


def three_branches():
    levy, _, imex, signature = default_branches(CONFIG)
    return (levy, imex, signature)


def five_branches():
    return (*default_branches(CONFIG), LocalLevelBranch())


@pytest.fixture(scope="module", params=["three", "five"])
def functional(request) -> FunctionalPredictor:
    branches = three_branches() if request.param == "three" else five_branches()
    return FunctionalPredictor(CONFIG, branches=branches)


def test_every_path_runs_with_one_weight_per_branch(functional, tmp_path):
    k = len(functional.model.branches)
    predictor = UniversalPredictor(functional=functional, clock=None)
    history = synthetic_walk(CONFIG.wtmm_buffer_size + 40, seed=3)
    predictor.fit_history(history)
    assert len(predictor.state.params) == k
    ticks = synthetic_walk(12, seed=4, start=float(history[-1]))
    for t, price in enumerate(ticks):
        result = predictor.step(MarketObservation(float(price), float(price), 10**7 * (t + 1)))
        for field in (result.weights, result.branch_forecasts, result.branch_scales):
            assert field.shape == (k,)
        assert np.isclose(float(result.weights.sum()), 1.0)
        assert np.all(np.isfinite(np.asarray(result.branch_forecasts)))
    # The fifth branch forecasts, and differs from every other branch: it is a real forecaster.
    forecasts = np.asarray(result.branch_forecasts)
    assert len(set(forecasts.round(12).tolist())) == k

    states = jax.tree.map(lambda leaf: jnp.stack([leaf] * 4), predictor.state)
    prices = np.full(4, float(ticks[-1])) * np.array([1.0, 1.001, 0.999, 1.002])
    states, batch, accepted = functional.step_batch(states, prices, prices)
    assert batch.weights.shape == (4, k) and bool(accepted.all())

    path = tmp_path / "five.usp"
    predictor.save_snapshot(path, wait=True)
    restored = UniversalPredictor.from_snapshot(path, functional=functional, clock=None)
    nxt = MarketObservation(float(ticks[-1]) + 0.1, float(ticks[-1]) + 0.1, 10**7 * 100)
    a, b = predictor.step(nxt), restored.step(nxt)
    assert np.array_equal(np.asarray(a.weights), np.asarray(b.weights))
    assert float(a.predicted_next) == float(b.predicted_next)


def test_a_snapshot_names_its_branches(functional, tmp_path):
    """A state is restored only into a predictor with the same branches, by name."""
    other = FunctionalPredictor(CONFIG)  # the default four
    data = functional.state_to_bytes(functional.init_state())
    with pytest.raises(IntegrityError, match="branches"):
        other.state_from_bytes(data)


def test_emergency_hands_the_blend_to_the_declared_fallback():
    """The fallback is found by its role wherever it sits in the sequence."""
    levy, dgm, imex, signature = default_branches(CONFIG)
    model = Predictor.from_config(CONFIG, branches=(signature, LocalLevelBranch(), levy))
    weights = jnp.array([0.2, 0.5, 0.3])
    off = jnp.zeros(3, bool)
    used = _used_weights(model, weights, jnp.asarray(True), off)
    expected = [1.0 - 2 * EMERGENCY_FLOOR, EMERGENCY_FLOOR, EMERGENCY_FLOOR]
    np.testing.assert_allclose(np.asarray(used), expected, rtol=0, atol=1e-15)
    assert EMERGENCY_FALLBACK in signature.roles
    # Without a fallback, emergency keeps the learned weights.
    no_fallback = Predictor.from_config(CONFIG, branches=(levy, imex))
    used = _used_weights(no_fallback, jnp.array([0.4, 0.6]), jnp.asarray(True), off[:2])
    np.testing.assert_array_equal(np.asarray(used), [0.4, 0.6])


def test_a_switched_off_branch_gets_no_weight():
    model = Predictor.from_config(CONFIG, branches=five_branches())
    weights = jnp.array([0.1, 0.3, 0.2, 0.2, 0.2])
    off = jnp.array([False, True, False, False, False])
    used = np.asarray(_used_weights(model, weights, jnp.asarray(False), off))
    np.testing.assert_allclose(used, [1 / 7, 0.0, 2 / 7, 2 / 7, 2 / 7], rtol=1e-15)


def test_the_predictor_refuses_a_bad_branch_sequence():
    with pytest.raises(ValueError, match="at least one branch"):
        Predictor.from_config(CONFIG, branches=())
    with pytest.raises(ValueError, match="unique"):
        Predictor.from_config(CONFIG, branches=(LocalLevelBranch(), LocalLevelBranch()))
    with pytest.raises(TypeError, match="AbstractBranch"):
        Predictor.from_config(CONFIG, branches=(object(),))

    @final
    class Misspelt(AbstractBranch):  # a role nobody reads
        name: ClassVar[str] = "X"
        label: ClassVar[str] = "X"
        roles: ClassVar[frozenset[str]] = frozenset({"emergency-fallback"})
        init, fit, predict = LocalLevelBranch.init, LocalLevelBranch.fit, LocalLevelBranch.predict

    with pytest.raises(ValueError, match="unknown roles"):
        Predictor.from_config(CONFIG, branches=(Misspelt(),))


BRANCH_FIELDS = {"levy", "dgm", "imex", "signature"}
CONCRETE = {"LevyBranch", "DGMBranch", "IMEXBranch", "SignatureBranch"}


def core_violations(source: str, filename: str) -> list[str]:
    """Where a core module names a branch: an attribute such as ``params.dgm``, an index constant
    such as ``BRANCH_B``, or a concrete branch class outside the composition root."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in BRANCH_FIELDS:
            found.append(f"{filename}:{node.lineno} .{node.attr}")
        if isinstance(node, ast.Name) and node.id.startswith("BRANCH_"):
            found.append(f"{filename}:{node.lineno} {node.id}")
        if isinstance(node, ast.FunctionDef) and node.name != "default_branches":
            for inner in ast.walk(node):
                if isinstance(inner, ast.Name) and inner.id in CONCRETE:
                    found.append(f"{filename}:{inner.lineno} {inner.id} in {node.name}")
    return found


def test_nothing_in_core_names_a_branch():
    found = [
        v
        for path in sorted(CORE.glob("*.py"))
        for v in core_violations(path.read_text(), path.name)
    ]
    assert not found, found


def test_the_core_scan_can_fail():
    """The scan above finds what it looks for (it would have failed on the old step)."""
    old = "def step(model, state):\n    b = state.params.dgm\n    return weights[BRANCH_B]\n"
    assert len(core_violations(old, "old.py")) == 2
    assert core_violations("def f():\n    return LevyBranch()\n", "x.py") == [
        "x.py:2 LevyBranch in f"
    ]
