"""Test-wide settings: float64, and jaxtyping shape/dtype checks on every ``usp`` module.

Every submodule is imported inside the jaxtyping import hook, so annotated functions check
their array shapes and dtypes (at trace time under jit) throughout the test suite.
"""

import importlib
import os
import pkgutil

os.environ.setdefault("JAX_ENABLE_X64", "1")

import jax  # noqa: E402
from jaxtyping import install_import_hook  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_default_matmul_precision", "highest")

with install_import_hook("usp", "beartype.beartype"):
    import usp

    for _module in pkgutil.walk_packages(usp.__path__, "usp."):
        if _module.name != "usp.cli":
            importlib.import_module(_module.name)
