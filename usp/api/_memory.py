"""XLA memory settings applied before JAX starts a backend (OPS-4, DESIGN §8.7).

Applied by ``usp.api.runtime.configure_numerics()`` and by the ``usp`` command
(``usp.cli.main``), never by ``import usp``: importing a library does not change its process's
environment. XLA reads these variables once, when a process creates its first GPU client (the
first JAX operation, not ``import jax``), so they must be in ``os.environ`` by then; the process
that owns the device (a service, the CLI, a notebook) applies them at its start. They change
nothing on CPU. Standard library only: applying them reads nothing from JAX and starts no
backend.

Each is set only where the user has not set it: a value the user exported wins.

``XLA_PYTHON_CLIENT_PREALLOCATE=false``
    JAX's default grabs 75% of the GPU at the first operation. The predictor's working set is
    small (a state is a few kB per asset; a 1024-asset tick needs a few MB of temporaries), so
    preallocating only keeps other processes, a second service or a notebook, off the device.
    The allocator grows on demand instead. (TensorFlow's ``TF_FORCE_GPU_ALLOW_GROWTH`` does
    nothing to JAX; neither does a "pool" of pre-allocated ``jnp.zeros``: JAX arrays are
    immutable and their buffers are not reused by later computations.)

``XLA_CLIENT_MEM_FRACTION=0.5``
    With preallocation off, this is the ceiling of the allocator's pool: half the device, so two
    services can share one GPU and a runaway batch fails with an out-of-memory error instead of
    starving its neighbour. jaxlib 0.10 reads ``XLA_CLIENT_MEM_FRACTION`` and still accepts the
    deprecated ``XLA_PYTHON_CLIENT_MEM_FRACTION``, but raises if both are set, so the default is
    added only when the user has set neither.

``XLA_PYTHON_CLIENT_ALLOCATOR=bfc``
    The best-fit-with-coalescing pool (jaxlib's default, named so that the choice is visible):
    freed buffers are reused, which keeps per-tick allocation off the CUDA driver. ``platform``
    (allocate and free every buffer) returns memory to the device but is slow; use it only to
    find the minimal footprint or to debug an out-of-memory error.
"""

from __future__ import annotations

import os
import sys
import warnings

XLA_MEMORY_DEFAULTS: dict[str, str] = {
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
    "XLA_CLIENT_MEM_FRACTION": "0.5",
    "XLA_PYTHON_CLIENT_ALLOCATOR": "bfc",
}
DEPRECATED_ALIASES = {"XLA_CLIENT_MEM_FRACTION": "XLA_PYTHON_CLIENT_MEM_FRACTION"}


def apply_xla_memory_defaults() -> dict[str, str]:
    """Put ``XLA_MEMORY_DEFAULTS`` into ``os.environ`` where the user has not set them.

    Returns the variables this call set (empty when the user set them all). Warns when a JAX
    backend is already running: the settings then only reach processes started later.
    """
    applied = {}
    for name, value in XLA_MEMORY_DEFAULTS.items():
        alias = DEPRECATED_ALIASES.get(name)
        if name in os.environ or (alias is not None and alias in os.environ):
            continue
        os.environ[name] = value
        applied[name] = value
    if applied and _backend_started():
        warnings.warn(
            "JAX had started a backend before usp applied its XLA memory settings; "
            f"{sorted(applied)} apply only to new processes",
            RuntimeWarning,
            stacklevel=2,
        )
    return applied


def _backend_started() -> bool:
    """Whether this process has already created a JAX backend (read without importing JAX)."""
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None))
