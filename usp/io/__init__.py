"""Persistence and data: snapshots, sanitisation, bundled series."""
