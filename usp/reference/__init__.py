"""Teaching code: the oracles, closed forms, simulators and demonstrations of the notebooks.

Generated from the code cells tagged ``export-reference`` (front-matter key
``usp_reference_module``), one module per chapter. Notebooks, tests and benchmarks import them
to verify the runtime against; the runtime itself (``usp.kernels``, ``usp.core``, ``usp.api``,
``usp.eval``, ``usp.cli``) never does. They import ``usp.contracts``, ``usp.kernels`` and
``usp.core`` only.
"""
