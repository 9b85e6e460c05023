"""Evaluation: walk-forward validation, baselines, tuning, reports."""
