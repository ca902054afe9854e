"""Hypothesis for every test: no per-example deadline (a wall-clock limit would make a test fail on a busy machine;
speed belongs in benchmarks/), and under CI (CI=true or 1) derandomized, so a run is reproducible and a failure can
be replayed."""
import os

from hypothesis import settings

settings.register_profile("local", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI", "").lower() in ("true", "1") else "local")
