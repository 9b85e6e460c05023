"""OPS-3/OPS-4 helpers: ``import usp`` leaves the environment alone, ``configure_numerics()`` and
the ``usp`` command apply the XLA memory defaults (a user's values win), the compilation cache
switch, compile counting, and the pytree digest used by the determinism test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from usp.api import _memory, programs
from usp.api.functional import FunctionalPredictor
from usp.api.runtime import (
    count_compilations,
    default_cache_dir,
    enable_compilation_cache,
    synthetic_walk,
    tree_digest,
    warm_up,
)
from usp.api.universal import UniversalPredictor
from usp.contracts.config import PredictorConfig
from usp.contracts.types import MarketObservation

MEMORY_VARIABLES = (*_memory.XLA_MEMORY_DEFAULTS, *_memory.DEPRECATED_ALIASES.values())
# What `import jax` itself puts into os.environ (jax/__init__.py: setdefault; cloud_tpu_init:
# set on a machine without TPU chips). The probes' environment already holds these values, so
# any difference an import leaves is usp's (or another dependency's) own.
JAX_IMPORT_ENV = {"TF_CPP_MIN_LOG_LEVEL": "1", "TPU_SKIP_MDS_QUERY": "1"}


def probe_env(**user: str) -> dict[str, str]:
    """This process's environment without any XLA memory variable, plus ``user``'s values."""
    env = {k: v for k, v in os.environ.items() if k not in MEMORY_VARIABLES}
    env.update(JAX_IMPORT_ENV)
    env["PROBE_NAMES"] = json.dumps(MEMORY_VARIABLES)
    env.update(user)
    return env


def run_probe(code: str, env: dict[str, str]) -> dict:
    """Run ``code`` in a fresh interpreter; its last stdout line is a JSON object."""
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


IMPORT_PROBE = """
import json, os
before = dict(os.environ)
import usp
after = dict(os.environ)
from usp.api import _memory
changed = {k: [before.get(k), after.get(k)] for k in sorted(before.keys() | after.keys())
           if before.get(k) != after.get(k)}
print(json.dumps({"changed": changed, "backend_started": _memory._backend_started()}))
"""


def test_import_usp_in_a_fresh_process_changes_no_environment_variable_and_starts_no_backend():
    probe = run_probe(IMPORT_PROBE, probe_env())
    # name: [before, after] for every variable `import usp` added, changed or removed.
    assert probe["changed"] == {}, f"import usp changed os.environ: {probe['changed']}"
    # `import usp` creates no array: XLA_FLAGS and memory settings made after it still apply.
    assert probe["backend_started"] is False


APPLY_PROBE = """
import json, os, warnings
import usp
names = json.loads(os.environ["PROBE_NAMES"])
unset = {n: os.environ.get(n) for n in names}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    if os.environ["PROBE_HOW"] == "configure_numerics":
        from usp.api.runtime import configure_numerics
        configure_numerics()
    else:
        from usp.cli import main
        assert main(["datasets"]) == 0
print(json.dumps({"after_import": unset, "env": {n: os.environ.get(n) for n in names},
                  "warnings": [str(w.message) for w in caught]}))
"""


@pytest.mark.parametrize("how", ["configure_numerics", "cli"])
def test_the_process_entry_points_apply_the_memory_defaults_and_keep_the_users_values(how):
    env = probe_env(XLA_PYTHON_CLIENT_PREALLOCATE="true", PROBE_HOW=how)  # the user's own choice
    probe = run_probe(APPLY_PROBE, env)
    assert probe["after_import"] == {
        **dict.fromkeys(MEMORY_VARIABLES),
        "XLA_PYTHON_CLIENT_PREALLOCATE": "true",
    }
    assert probe["env"] == {
        "XLA_PYTHON_CLIENT_PREALLOCATE": "true",
        "XLA_CLIENT_MEM_FRACTION": "0.5",
        "XLA_PYTHON_CLIENT_ALLOCATOR": "bfc",
        "XLA_PYTHON_CLIENT_MEM_FRACTION": None,
    }
    assert probe["warnings"] == []  # applied before JAX started a backend


@pytest.fixture
def clean_memory_env(monkeypatch):
    for name in MEMORY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_memory, "_backend_started", lambda: False)
    return monkeypatch


def test_defaults_fill_only_what_is_unset(clean_memory_env):
    clean_memory_env.setenv("XLA_PYTHON_CLIENT_ALLOCATOR", "platform")
    applied = _memory.apply_xla_memory_defaults()
    assert applied == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "XLA_CLIENT_MEM_FRACTION": "0.5"}
    assert os.environ["XLA_PYTHON_CLIENT_ALLOCATOR"] == "platform"
    assert _memory.apply_xla_memory_defaults() == {}  # idempotent


def test_the_deprecated_fraction_name_blocks_the_new_default(clean_memory_env):
    # jaxlib raises when both names are set, so the user's old name must stop the default.
    clean_memory_env.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.3")
    applied = _memory.apply_xla_memory_defaults()
    assert "XLA_CLIENT_MEM_FRACTION" not in applied
    assert "XLA_CLIENT_MEM_FRACTION" not in os.environ


def test_late_settings_warn(clean_memory_env):
    clean_memory_env.setattr(_memory, "_backend_started", lambda: True)
    with pytest.warns(RuntimeWarning, match="apply only to new processes"):
        _memory.apply_xla_memory_defaults()


def test_cache_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("USP_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("USP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "usp" / "jax"


def test_enable_compilation_cache_writes_compiled_programs(tmp_path):
    from jax.experimental.compilation_cache import compilation_cache

    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    saved = {name: getattr(jax.config, name) for name in names}
    try:
        directory = enable_compilation_cache(tmp_path / "cache")
        assert directory == (tmp_path / "cache").resolve() and directory.is_dir()
        assert jax.config.jax_compilation_cache_dir == str(directory)
        with count_compilations() as count:
            jax.jit(lambda x: jnp.sin(x) * 3.0 + 1.0)(jnp.arange(7.0)).block_until_ready()
        assert count.compiled >= 1
        assert any(directory.iterdir())
    finally:
        for name, value in saved.items():
            jax.config.update(name, value)
        compilation_cache.reset_cache()
        programs.set_program_directory(None)


def test_count_compilations_sees_a_compile_and_then_none():
    fn = jax.jit(lambda x: jnp.cos(x) - 2.0 * x)
    with count_compilations() as first:
        fn(jnp.ones(5)).block_until_ready()
    with count_compilations() as second:
        fn(jnp.ones(5)).block_until_ready()
    assert first.compiled >= 1 and first.seconds > 0
    assert second.executables == 0 and second.compiled == 0


def test_tree_digest_sees_every_bit_dtype_and_key():
    tree = {"x": jnp.linspace(0.0, 1.0, 5), "n": jnp.arange(3), "key": jax.random.key(0)}
    assert tree_digest(tree) == tree_digest(jax.tree.map(lambda leaf: leaf, tree))
    nudged = dict(tree, x=tree["x"].at[2].set(np.nextafter(0.5, 1.0)))
    assert tree_digest(nudged) != tree_digest(tree)
    assert tree_digest(dict(tree, key=jax.random.key(1))) != tree_digest(tree)
    assert tree_digest(dict(tree, n=tree["n"].astype(jnp.int16))) != tree_digest(tree)
    assert tree_digest(jnp.asarray(-0.0)) != tree_digest(jnp.asarray(0.0))


def test_tree_digest_tells_key_implementations_apart():
    """rbg and unsafe_rbg keys both hold four uint32 words: equal data, different keys."""
    data = jnp.arange(4, dtype=jnp.uint32)
    rbg = jax.random.wrap_key_data(data, impl="rbg")
    unsafe = jax.random.wrap_key_data(data, impl="unsafe_rbg")
    assert np.array_equal(jax.random.key_data(rbg), jax.random.key_data(unsafe))
    assert tree_digest(rbg) != tree_digest(unsafe)
    assert tree_digest(rbg) == tree_digest(jax.random.wrap_key_data(data, impl="rbg"))


def test_warm_up_refuses_empty_batches():
    with pytest.raises(ValueError, match="batch sizes must be >= 1"):
        warm_up(FunctionalPredictor(), n_assets=(64, 0))


# -- the exported step (usp.api.programs) ------------------------------------------------------


@pytest.fixture
def program_directory(tmp_path):
    programs.set_program_directory(tmp_path / "programs")
    yield tmp_path / "programs"
    programs.set_program_directory(None)


def test_the_exported_step_is_the_jitted_step_bit_for_bit(program_directory):
    traced = FunctionalPredictor()
    assert traced._step is traced._traced_step  # nothing exported yet: the step is traced
    path = programs.export_step(traced, program_directory)
    assert path.is_file() and path == programs.program_path(program_directory, traced)
    loaded = FunctionalPredictor()
    assert loaded._exported is not None and loaded._step is loaded._exported
    # Loaded once per process and shared, as the traced step is; UniversalPredictor uses it too.
    assert UniversalPredictor(clock=None).functional._step is loaded._exported
    assert jax.tree.structure(loaded.result_template()) == jax.tree.structure(
        traced.result_template()
    )
    assert [(x.shape, x.dtype) for x in jax.tree.leaves(loaded.result_template())] == [
        (x.shape, x.dtype) for x in jax.tree.leaves(traced.result_template())
    ]
    prices = synthetic_walk(160, seed=4)
    state, _ = traced.run(traced.init_state(), prices[:128])
    jitted, exported = state, state
    for price in prices[128:]:
        price = float(price)
        jitted, jitted_result, _ = traced._step(jitted, price, price, False)
        exported, exported_result, _ = loaded._exported(exported, price, price, False)
        assert tree_digest(exported_result) == tree_digest(jitted_result)
    assert tree_digest(exported) == tree_digest(jitted)


def test_the_program_file_is_named_by_what_shapes_the_trace(program_directory, monkeypatch):
    default = programs.program_path(program_directory, FunctionalPredictor())
    assert programs.program_path(program_directory, FunctionalPredictor()) == default
    other = FunctionalPredictor(PredictorConfig(cusum_h=4.0))
    assert programs.program_path(program_directory, other) != default
    untaught = FunctionalPredictor(learn_tau=False)
    assert programs.program_path(program_directory, untaught) != default
    # The matmul precision is baked into every dot of the program (conftest sets 'highest').
    fp = FunctionalPredictor()
    with jax.default_matmul_precision("bfloat16"):
        assert programs.program_path(program_directory, fp) != default
    assert programs.program_path(program_directory, fp) == default
    # So are the libraries the step calls while it is traced.
    assert {"equinox", "optax", "ott-jax", "signax", "diffrax"} <= set(programs.TRACED_PACKAGES)
    versions = programs.package_versions()
    monkeypatch.setattr(programs, "package_versions", lambda: {**versions, "optax": "0.0.1"})
    assert programs.program_path(program_directory, fp) != default


def _damaged_program(directory):
    """A predictor whose exported-step file is garbage (it warned, and traces the step)."""
    path = programs.program_path(directory, FunctionalPredictor())
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a StableHLO program")
    with pytest.warns(UserWarning, match="ignoring exported step"):
        fp = FunctionalPredictor()
    return fp, path


def test_a_damaged_program_is_ignored_with_a_warning(program_directory):
    fp, _ = _damaged_program(program_directory)
    assert fp._exported is None and fp._step is fp._traced_step


def test_warm_up_replaces_a_damaged_program(program_directory):
    fp, path = _damaged_program(program_directory)
    timings = warm_up(fp, n_assets=3, refit=False)
    assert "export_step_s" in timings
    # Its promise: the first real tick, alone or in a batch of a warmed size, compiles nothing.
    state, states = fp.init_state(), fp.init_states(3)
    with count_compilations() as count:
        fp.step(state, MarketObservation(100.0, 100.0, 1))
        fp.step_batch(states, np.full(3, 100.0), np.full(3, 100.0))
    assert count.executables == 0
    assert path.read_bytes() != b"not a StableHLO program"
    repaired = FunctionalPredictor()
    assert repaired._exported is not None and repaired._step is repaired._exported


def test_export_step_forgets_a_damaged_load_and_reads_its_file_back(program_directory, monkeypatch):
    fp, path = _damaged_program(program_directory)
    assert programs.export_step(fp, program_directory) == path
    assert isinstance(programs.load_step(fp, program_directory), programs.ExportedStep)

    # A file that does not load right after it was written is an error, not a silent None.
    def unreadable(*_):
        raise ValueError("deserialisation failed")

    monkeypatch.setattr(programs, "_read_step", unreadable)
    with pytest.raises(RuntimeError, match="does not load back.*deserialisation failed"):
        programs.export_step(fp, program_directory)
