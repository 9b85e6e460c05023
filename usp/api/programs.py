"""Traced programs kept on disk: the single-asset step, exported with ``jax.export`` (OPS-3).

JAX's persistent compilation cache skips XLA's compilation, not Python's tracing: its key is the
traced program, so a restarted process traces the whole step again (about a second on the CI
CPU, most of a cached start) before the cache can answer. ``jax.export`` serialises the traced
program itself (StableHLO). A process that finds the step's exported program deserialises it
(milliseconds) and hands it to XLA, whose executable then comes from the compilation cache::

    from usp.api.runtime import enable_compilation_cache, warm_up

    enable_compilation_cache()      # also the directory of the exported programs
    fp = FunctionalPredictor(config)
    warm_up(fp)                     # first process: exports the step (one more trace)
    ...                             # later processes: fp.step runs the exported program

An exported program is only valid for the code and settings it was traced with, so its file name is
a digest of everything that shapes the trace: every source file of ``usp``, the versions of JAX,
jaxlib and of every library the step's code calls while it is traced (``TRACED_PACKAGES``), the
backend, the JAX settings baked into the program (x64, the default matmul precision, the PRNG), the
config, ``learn_tau``, the branches and the state's layout. Any change is a different file, never a
stale program. Results are bit-identical to the jitted step (same program, same compiler:
``tests/test_runtime.py``). Files are written atomically; one that fails to load is reported with a
warning and the step is traced as usual, and ``warm_up`` writes it again. Like JAX's compilation
cache, the directory holds programs that will be run: keep it as private as the code.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from usp.io.snapshot import write_atomic

PROGRAM_SUFFIX = ".step.jaxexport"
TRACED_PACKAGES = (
    "jax",
    "jaxlib",
    "equinox",
    "optax",
    "ott-jax",
    "signax",
    "diffrax",
    "lineax",
    "numpy",
    "scipy",
)
"""Distributions whose code runs while the step is traced, so their versions shape the program:
the branches' solvers and optimisers, and NumPy/SciPy, which compute constants and sizes at
trace time (``scipy.fft.next_fast_len`` fixes the WTMM's FFT length). All are required
dependencies. jaxtyping is not listed: its annotations (and, under the tests' import hook, its
checks) run in Python and add no operation to the program."""
TRACED_SETTINGS = (
    "jax_enable_x64",
    "jax_default_matmul_precision",
    "jax_default_prng_impl",
    "jax_threefry_partitionable",
)
"""JAX settings read while tracing and baked into the program: dtypes, the precision of every
dot and convolution, and how random bits are drawn."""

_directory: Path | None = None
_loaded: dict[Path, ExportedStep | None] = {}


def set_program_directory(directory: str | Path | None) -> None:
    """Where predictors created from now on look for (and ``warm_up`` writes) exported steps;
    ``enable_compilation_cache`` sets it to its ``programs`` subdirectory. None: nowhere."""
    global _directory
    _directory = None if directory is None else Path(directory)


def program_directory() -> Path | None:
    return _directory


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """SHA-256 over every ``usp`` source file (path and bytes, in path order)."""
    root = Path(__file__).resolve().parents[1]  # the usp package
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """The installed version of each of ``TRACED_PACKAGES`` (all required: a missing one raises
    ``importlib.metadata.PackageNotFoundError``)."""
    return {name: importlib.metadata.version(name) for name in TRACED_PACKAGES}


def program_path(directory: str | Path, fp: Any) -> Path:
    """Where ``fp``'s exported step lives in ``directory`` (a digest of what shapes its trace)."""
    identity = {
        "source": source_digest(),
        "versions": package_versions(),
        "backend": jax.default_backend(),
        # str(): the precision may be None, a string or a jax.lax.Precision.
        "settings": {name: str(getattr(jax.config, name)) for name in TRACED_SETTINGS},
        "config": fp.config.to_dict(),
        "learn_tau": fp.learn_tau,
        "branches": list(fp.branch_names),
        "state": [
            f"{leaf.dtype}{list(leaf.shape)}" for leaf in jax.tree.leaves(fp.state_template())
        ],
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
    return Path(directory) / f"{key}{PROGRAM_SUFFIX}"


def _flat_step(fp: Any) -> tuple[Callable[..., Any], list[jax.ShapeDtypeStruct]]:
    """The guarded step on flat leaves (``jax.export`` serialises no custom pytree types)."""
    from usp.api.functional import _guarded_step

    template = fp.state_template()
    state_def = jax.tree.structure(template)
    dtype = template.buffer.dtype

    def flat(*leaves):
        *state_leaves, price, target, freeze = leaves
        state = jax.tree.unflatten(state_def, state_leaves)
        return jax.tree.leaves(_guarded_step(fp.model, state, price, target, freeze))

    scalar = lambda d: jax.ShapeDtypeStruct((), d)  # noqa: E731
    specs = [jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for leaf in jax.tree.leaves(template)]
    return flat, [*specs, scalar(dtype), scalar(dtype), scalar(jnp.bool_)]


def export_step(fp: Any, directory: str | Path) -> Path:
    """Trace ``fp``'s single-asset step once more, write its exported program (replacing a
    damaged one) and read it back: the file is the one that ``load_step`` then returns.

    Raises ``RuntimeError`` if the file just written does not load.
    """
    from jax import export

    flat, specs = _flat_step(fp)
    exported = export.export(jax.jit(flat))(*specs)
    path = program_path(directory, fp)
    Path(directory).mkdir(parents=True, exist_ok=True)
    write_atomic(path, bytes(exported.serialize()))
    # Forget what an earlier load of this path gave (None for a damaged file): the file is new.
    _loaded.pop(path, None)
    try:
        _loaded[path] = _read_step(path, fp)
    except Exception as error:
        raise RuntimeError(
            f"the step exported to {path} does not load back ({error!r:.200}): the directory "
            "or this JAX cannot round-trip exported programs; predictors will trace the step"
        ) from error
    return path


class ExportedStep:
    """``_guarded_step(model, state, price, target, freeze)`` run from an exported program."""

    def __init__(self, exported: Any, fp: Any) -> None:
        self._call = jax.jit(exported.call)  # jit: the C++ fast path for each call
        self._state_def = jax.tree.structure(fp.state_template())
        self._n_state = self._state_def.num_leaves
        result_avals = exported.out_avals[self._n_state : -1]
        self.result_template = result_like(result_avals)
        self._result_def = jax.tree.structure(self.result_template)

    def __call__(self, state: Any, price: float, target: float, freeze: bool) -> tuple:
        leaves = jax.tree.leaves(state)
        # The exported program fixes its input placement: uncommitted arrays (a state just
        # loaded or initialised) would be a second signature, compiled again. Commit them.
        if not all(getattr(leaf, "committed", False) for leaf in leaves):
            leaves = jax.device_put(leaves, jax.devices()[0])
        outputs = self._call(*leaves, price, target, freeze)
        new_state = jax.tree.unflatten(self._state_def, outputs[: self._n_state])
        result = jax.tree.unflatten(self._result_def, outputs[self._n_state : -1])
        return new_state, result, outputs[-1]


def result_like(avals: Sequence[Any]) -> Any:
    """A ``PredictionResult`` of ``jax.ShapeDtypeStruct`` leaves, one per field in field
    (flattening) order, built without tracing the step."""
    from usp.contracts.types import PredictionResult

    names = list(PredictionResult.__dataclass_fields__)
    if len(names) != len(avals):
        raise ValueError(f"{len(avals)} result leaves for {len(names)} PredictionResult fields")

    def build():
        leaves = [jnp.zeros(aval.shape, aval.dtype) for aval in avals]
        return PredictionResult(**dict(zip(names, leaves, strict=True)))

    return jax.eval_shape(build)


def load_step(fp: Any, directory: str | Path) -> ExportedStep | None:
    """``fp``'s exported step from ``directory``; None if there is none (or it fails to load,
    with a warning, remembered until ``export_step`` rewrites it): the caller then traces the
    step as usual.

    Each file is loaded once per process and shared, as ``_compiled`` shares the traced step:
    a thousand predictors with one config compile it once, not a thousand times.
    """
    path = program_path(directory, fp)
    if path not in _loaded:
        if not path.is_file():
            return None  # not remembered: warm_up may write it later
        try:
            _loaded[path] = _read_step(path, fp)
        except Exception as error:  # a damaged cache file must never stop the predictor
            warnings.warn(f"ignoring exported step {path}: {error!r:.200}", stacklevel=2)
            _loaded[path] = None  # until export_step writes it again (warm_up does)
    return _loaded[path]


def _read_step(path: Path, fp: Any) -> ExportedStep:
    from jax import export

    return ExportedStep(export.deserialize(bytearray(path.read_bytes())), fp)


__all__ = [
    "PROGRAM_SUFFIX",
    "TRACED_PACKAGES",
    "TRACED_SETTINGS",
    "ExportedStep",
    "export_step",
    "load_step",
    "package_versions",
    "program_directory",
    "program_path",
    "result_like",
    "set_program_directory",
]
