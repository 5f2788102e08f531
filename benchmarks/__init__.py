"""Measurements too long for the test suite, each run from the repository root as ``python -m benchmarks.NAME``."""
