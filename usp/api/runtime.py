"""What a service does before its first tick: numerics and XLA memory settings, the persistent
compilation cache, a warm-up pass over every compiled path, and a digest of a pytree's bits
(OPS-1..4).

    from usp.api.runtime import configure_numerics, enable_compilation_cache, warm_up

    configure_numerics()                  # XLA memory defaults, float64, 'highest', threefry
    enable_compilation_cache()            # ~/.cache/usp/jax, or $USP_CACHE_DIR
    fp = FunctionalPredictor(config)
    timings = warm_up(fp, n_assets=(64, 1024))

A cold process spends most of its start-up compiling (the step, the scan, every branch's fit);
the persistent cache turns the second start into deserialisation, and the step exported by an
earlier ``warm_up`` (``usp.api.programs``) spares it the trace. ``warm_up`` then makes sure
nothing is left to compile when the first real tick arrives.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from usp.api import programs
from usp.api._memory import apply_xla_memory_defaults
from usp.api.functional import FunctionalPredictor
from usp.contracts.types import MarketObservation

CACHE_DIR_ENV = "USP_CACHE_DIR"
"""Environment variable naming the compilation cache directory (overrides the default)."""
PROGRAM_SUBDIRECTORY = "programs"
"""Subdirectory of the compilation cache that holds the exported step (usp.api.programs)."""

# jax.monitoring event names (jax 0.10): one duration event per program that became an
# executable (compiled, or loaded from the persistent cache), one event per persistent-cache hit.
_EXECUTABLE_EVENT = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


def configure_numerics(*, x64: bool = True) -> None:
    """OPS-1: float64 (``x64``), matmul precision 'highest', threefry keys; OPS-4: the XLA memory
    defaults (``usp.api._memory``: no preallocation, half the device at most, the pooling
    allocator). Call it before the first array is created; it changes process-wide settings.

    The memory defaults go into ``os.environ``, only where the user has not set them (an exported
    value wins). XLA reads them when the process creates its first GPU client, at the first JAX
    operation (not at ``import jax``), so this call must come before that; after it they reach
    only processes started later, and a ``RuntimeWarning`` says so. ``import usp`` applies
    nothing: a library import leaves its process's environment alone, and the process that owns
    the device applies them here (the ``usp`` command does in ``usp.cli.main``).

    On CPU a float64 matmul is exact whatever the precision setting; the setting matters for
    float32 on GPUs, whose default may use TF32 (10-bit mantissa) inputs. The memory settings
    change nothing on CPU.
    """
    apply_xla_memory_defaults()
    jax.config.update("jax_enable_x64", x64)
    jax.config.update("jax_default_matmul_precision", "highest")
    jax.config.update("jax_default_prng_impl", "threefry2x32")


def default_cache_dir() -> Path:
    """``$USP_CACHE_DIR``, else ``$XDG_CACHE_HOME/usp/jax``, else ``~/.cache/usp/jax``."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "usp" / "jax"


def enable_compilation_cache(
    path: str | os.PathLike[str] | None = None, *, min_compile_time_s: float = 0.0
) -> Path:
    """Turn on JAX's persistent compilation cache in ``path`` (default: ``default_cache_dir()``)
    and return the directory.

    Every executable that took at least ``min_compile_time_s`` to compile is written there, keyed
    by its program, the JAX/XLA versions, the device kind and the compile options, so a second
    process with the same code and configuration loads instead of compiling. Its ``programs``
    subdirectory holds the exported single-asset step (``usp.api.programs``, written by
    ``warm_up``), so that such a process does not trace the step either. JAX's own threshold
    (1 s) would skip the many small programs of a first tick (state initialisation, each eager
    operation), which add up to seconds; 0 caches them all (a few MB).
    """
    directory = Path(path if path is not None else default_cache_dir()).expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    current = jax.config.jax_compilation_cache_dir
    if current is not None and Path(current).resolve() != directory:
        # JAX opens the cache once per process, at the first compile after a directory is set;
        # moving it means closing the old one.
        from jax.experimental.compilation_cache import compilation_cache

        compilation_cache.reset_cache()
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
    # -1: no size floor, and JAX may not raise one for the file system.
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    # The traced step beside the compiled programs (usp.api.programs): predictors created from
    # now on skip tracing it when warm_up has exported it before.
    programs.set_program_directory(directory / PROGRAM_SUBDIRECTORY)
    return directory


@dataclass
class CompileCount:
    """What ``count_compilations`` saw: programs turned into executables, how many of them came
    from the persistent cache, and the seconds spent (compiling or loading)."""

    executables: int = 0
    cache_hits: int = 0
    seconds: float = 0.0

    @property
    def compiled(self) -> int:
        """Executables XLA actually compiled (not loaded from the persistent cache)."""
        return self.executables - self.cache_hits


@contextlib.contextmanager
def count_compilations() -> Iterator[CompileCount]:
    """Count XLA compilations inside the block (jax.monitoring listeners; process-wide)."""
    count = CompileCount()

    def on_event(event: str, **_: Any) -> None:
        if event == _CACHE_HIT_EVENT:
            count.cache_hits += 1

    def on_duration(event: str, duration: float, **_: Any) -> None:
        if event == _EXECUTABLE_EVENT:
            count.executables += 1
            count.seconds += duration

    jax.monitoring.register_event_listener(on_event)
    jax.monitoring.register_event_duration_secs_listener(on_duration)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_listener(on_event)
        jax.monitoring.unregister_event_duration_listener(on_duration)


def synthetic_walk(n: int, *, seed: int = 0, start: float = 100.0, step_std: float = 0.5):
    """A seeded Gaussian random walk: data with which every branch's fit succeeds."""
    return start + np.cumsum(np.random.default_rng(seed).normal(0.0, step_std, n))


def warm_up(
    fp: FunctionalPredictor,
    *,
    n_assets: int | Sequence[int] | None = None,
    refit: bool = True,
) -> dict[str, float | int]:
    """Run every compiled path of ``fp`` once on a synthetic series, so that the first real tick
    (and the first ``fit_history``) compiles nothing. Returns wall seconds per path and compile
    counts.

    Paths, in the order a service meets them: ``run`` over one buffer length (the scan
    ``UniversalPredictor.fit_history`` uses); ``refit`` twice (every branch's fit: the first fit
    of a state trains the DGM branch long, later ones warm-start with fewer steps, two programs);
    ``step`` with Python-float prices (what ``FunctionalPredictor.step`` and
    ``UniversalPredictor.step`` pass), exported to the compilation cache's ``programs``
    directory when ``enable_compilation_cache`` was called and no loadable program is there
    (missing or damaged: a later process then skips tracing it, ``usp.api.programs``);
    ``step_batch`` at each batch size in ``n_assets`` (compile per size: give the bucket sizes
    the service pads its batches to).

    ``refit=False`` skips the branch fits (seconds of DGM training on a CPU): for a service that
    restores fitted states and refits later, off the tick path.
    """
    if n_assets is None:
        sizes: tuple[int, ...] = ()
    elif isinstance(n_assets, int):
        sizes = (n_assets,)
    else:
        sizes = tuple(n_assets)
    if any(size < 1 for size in sizes):
        raise ValueError(f"warm_up: batch sizes must be >= 1, got {sizes}")
    length = fp.config.wtmm_buffer_size
    series = synthetic_walk(2 * length + 1, seed=fp.config.seed)
    timings: dict[str, float | int] = {}
    total = time.perf_counter()
    with count_compilations() as count:
        start = time.perf_counter()
        state, result = fp.run(fp.init_state(), series[:length])
        jax.block_until_ready((state, result))
        timings["run_s"] = time.perf_counter() - start
        if refit:
            start = time.perf_counter()
            state = fp.refit(state)
            state, result = fp.run(state, series[length : 2 * length])
            state = fp.refit(state)
            jax.block_until_ready(state)
            timings["refit_s"] = time.perf_counter() - start
        # Batches start from this uncommitted state, as init_states, state_from_bytes and
        # step_batch's own outputs give them; the single-asset step below may be the exported
        # program, whose outputs are committed to the device (a batch of those, committed by
        # jax.device_put or stacked from committed states, is another program: one more compile).
        batch_state = state
        price = float(series[-1])
        start = time.perf_counter()
        state, result = fp.step(state, MarketObservation(price, price, 0))
        jax.block_until_ready(result)
        timings["step_s"] = time.perf_counter() - start
        directory = programs.program_directory()
        # Missing, or damaged (load_step warns and gives None): export it, replacing the file.
        if directory is not None and programs.load_step(fp, directory) is None:
            start = time.perf_counter()
            programs.export_step(fp, directory)  # raises if the new file does not load back
            # Run it once: its executable joins the compilation cache.
            exported = programs.load_step(fp, directory)
            assert exported is not None  # export_step read it back
            jax.block_until_ready(exported(state, price, price, False))
            timings["export_step_s"] = time.perf_counter() - start
        for size in sizes:
            states = broadcast_states(batch_state, size)
            prices = np.full(size, price)
            start = time.perf_counter()
            jax.block_until_ready(fp.step_batch(states, prices, prices))
            timings[f"step_batch_{size}_s"] = time.perf_counter() - start
    timings["total_s"] = time.perf_counter() - total
    timings["executables"] = count.executables
    timings["compiled"] = count.compiled
    timings["cache_hits"] = count.cache_hits
    return timings


def broadcast_states(state: Any, n_assets: int) -> Any:
    """One state repeated along a new leading asset axis (a batch of identical assets)."""
    return jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (n_assets, *leaf.shape)), state)


def tree_digest(tree: Any) -> str:
    """SHA-256 of a pytree: its structure, then each leaf's dtype, shape and bytes in order.

    Two pytrees have the same digest exactly when they are equal bit for bit (NaN payloads and
    signed zeros included). Typed PRNG keys are hashed through their key type (the PRNG
    implementation, e.g. ``key<fry>``) and their key data: keys of two implementations differ
    even where their data agree.
    """
    digest = hashlib.sha256(str(jax.tree.structure(tree)).encode())
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            digest.update(str(leaf.dtype).encode())
            leaf = jax.random.key_data(leaf)
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


__all__ = [
    "CACHE_DIR_ENV",
    "CompileCount",
    "broadcast_states",
    "configure_numerics",
    "count_compilations",
    "default_cache_dir",
    "enable_compilation_cache",
    "synthetic_walk",
    "tree_digest",
    "warm_up",
]
