"""Public contracts: PredictorConfig validation, MarketObservation, PredictionResult, errors."""

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs
from jaxtyping import TypeCheckError

import usp
from usp.api import (
    DomainError,
    IntegrityError,
    MarketObservation,
    PredictionResult,
    PredictorConfig,
    StalenessWarning,
    USPError,
    USPWarning,
)

SPEC_DEFAULTS = {
    "schema_version": "1.0",
    "epsilon": 1e-3,
    "learning_rate": 0.01,
    "log_sig_depth": 3,
    "wtmm_buffer_size": 128,
    "besov_cone_c": 1.5,
    "cusum_h": 5.0,
    "cusum_k": 0.5,
    "grace_period_steps": 20,
    "volatility_alpha": 0.1,
    "staleness_ttl_ns": 500_000_000,
    "besov_nyquist_interval_ns": 100_000_000,
    "inference_recovery_hysteresis": 0.8,
}


def test_config_defaults_are_the_specs():
    config = PredictorConfig()
    for name, value in SPEC_DEFAULTS.items():
        assert getattr(config, name) == value, name
    assert config.kurtosis_window == 252
    # Deliberate departure, calibrated on the WTMM estimator at N = 128 (see the docstring).
    assert config.holder_threshold == 0.15


def test_config_is_frozen_and_hashable():
    config = PredictorConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epsilon = 1.0  # type: ignore[misc]
    assert hash(config) == hash(PredictorConfig())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epsilon", 0.0),
        ("epsilon", -1e-3),
        ("epsilon", math.nan),
        ("learning_rate", math.inf),
        ("log_sig_depth", 0),
        ("log_sig_depth", 2.5),
        ("wtmm_buffer_size", 100),
        ("wtmm_buffer_size", 32),
        ("wtmm_buffer_size", True),
        ("holder_threshold", 1.0),
        ("cusum_h", 0.0),
        ("cusum_k", -0.1),
        ("grace_period_steps", -1),
        ("volatility_alpha", 0.0),
        ("volatility_alpha", 1.5),
        ("staleness_ttl_ns", 0),
        ("besov_nyquist_interval_ns", -5),
        ("inference_recovery_hysteresis", 1.2),
        ("kurtosis_window", 4),
        ("schema_version", ""),
        ("jko_tau", "0.5"),
    ],
)
def test_invalid_config_raises_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"PredictorConfig\.{field}\b"):
        PredictorConfig(**{field: value})


def test_config_replace_and_dict_round_trip():
    config = PredictorConfig().replace(cusum_h=4.0)
    assert config.cusum_h == 4.0
    assert PredictorConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown field"):
        PredictorConfig.from_dict({"not_a_field": 1})
    with pytest.raises(ValueError, match=r"PredictorConfig\.cusum_h"):
        config.replace(cusum_h=-1.0)


@given(
    hs.floats(allow_nan=True, allow_infinity=True),
    hs.floats(min_value=0.1, max_value=10.0),
    hs.floats(min_value=-1e3, max_value=1e3),
)
def test_validate_domain(price, sigma, center):
    obs = MarketObservation(price=price, target=0.0, timestamp_ns=1)
    inside = obs.validate_domain(sigma_bound=20.0, sigma_val=sigma, center=center)
    assert inside == (math.isfinite(price) and abs(price - center) <= 20.0 * sigma)


def test_observation_requires_integer_timestamp():
    with pytest.raises(TypeError, match="timestamp_ns"):
        MarketObservation(price=1.0, target=1.0, timestamp_ns=1.5)  # type: ignore[arg-type]
    MarketObservation(price=1.0, target=1.0, timestamp_ns=np.int64(3))


def _result(batch=(), **flags):
    f = lambda v=0.0: jnp.full(batch, v)  # noqa: E731
    b = lambda name: jnp.full(batch, flags.get(name, False))  # noqa: E731
    return PredictionResult(
        predicted_next=f(1.0),
        holder_exponent=f(0.5),
        cusum_drift=f(),
        distance_to_collapse=f(5.0),
        free_energy=f(),
        kurtosis=f(3.0),
        dgm_entropy=f(),
        adaptive_threshold=f(5.0),
        weights=jnp.full((*batch, 4), 0.25),
        branch_forecasts=jnp.full((*batch, 4), 1.0),
        branch_scales=jnp.full((*batch, 4), 0.5),
        predictive_scale=f(0.1),
        sinkhorn_converged=b("sinkhorn_converged"),
        degraded_inference_mode=b("degraded_inference_mode"),
        emergency_mode=b("emergency_mode"),
        regime_change_detected=b("regime_change_detected"),
        mode_collapse_warning=b("mode_collapse_warning"),
        robust_mode=b("robust_mode"),
        kurtosis_alert=b("kurtosis_alert"),
        branch_in_domain=jnp.ones((*batch, 4), bool),
        refit_due=jnp.zeros(batch, jnp.int32),
    )


def test_prediction_result_has_every_spec_field_and_mode():
    names = {f.name for f in dataclasses.fields(PredictionResult)}
    spec = {
        "predicted_next", "holder_exponent", "cusum_drift", "distance_to_collapse",
        "free_energy", "kurtosis", "dgm_entropy", "adaptive_threshold", "weights",
        "sinkhorn_converged", "degraded_inference_mode", "emergency_mode",
        "regime_change_detected", "mode_collapse_warning",
    }  # fmt: skip
    assert spec <= names
    assert _result().mode == "Standard"
    assert _result(robust_mode=True).mode == "Robust"
    assert _result(robust_mode=True, emergency_mode=True).mode == "Emergency"
    assert list(_result((3,), emergency_mode=True).mode) == ["Emergency"] * 3


def test_prediction_result_shapes_are_checked():
    with pytest.raises(TypeCheckError):
        PredictionResult(**{**_fields(_result()), "weights": jnp.ones(3)})


def _fields(result):
    return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}


def test_error_hierarchy():
    assert issubclass(DomainError, ValueError) and issubclass(DomainError, USPError)
    assert issubclass(IntegrityError, USPError)
    assert issubclass(StalenessWarning, USPWarning) and issubclass(USPWarning, UserWarning)


def test_top_level_api_is_the_api_layers():
    """usp re-exports the public contracts of usp.api, the same objects, and nothing else."""
    assert set(usp.__all__) <= set(usp.api.__all__)
    for name in usp.__all__:
        assert getattr(usp, name) is getattr(usp.api, name), name
    assert {"FunctionalPredictor", "UniversalPredictor", "PredictorConfig"} <= set(usp.__all__)
