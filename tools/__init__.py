"""Entry scripts beside training: ``python tools/launch.py`` (ps-lite jobs) and ``python -m tools.plot_runs``."""
