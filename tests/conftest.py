"""Hypothesis for every test: no per-example deadline (a wall-clock limit would make a test fail on a busy machine;
speed belongs in benchmarks/), and under CI (CI=true or 1) derandomized, so a run is reproducible and a failure can
be replayed."""
import importlib.util
import os
from pathlib import Path

from hypothesis import settings

settings.register_profile("local", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI", "").lower() in ("true", "1") else "local")


def load_evidence_run(name="evidence_run"):
    "experiments/evidence/run.py as a module (it is a script, not part of the package), for the tests that check it."
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "experiments/evidence/run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
