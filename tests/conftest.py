"Hypothesis under CI (CI=true): derandomized, so a run is reproducible and a failure can be replayed."
import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
