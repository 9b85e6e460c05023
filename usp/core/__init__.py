"""Orchestration: state pytree, the step, CUSUM, JKO/Sinkhorn, flags (generated from notebooks)."""
