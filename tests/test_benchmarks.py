"benchmarks/run.py: its command line refuses counts it cannot compute medians and IQRs from, before any timing."
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import run as bench  # noqa: E402


@pytest.mark.parametrize("argv, message", [
    (["--repeats", "1"], "--repeats must be at least 2, got 1"),
    (["--repeats", "15", "1"], "--repeats must be at least 2, got 1"),
    (["--repeats", "3", "4", "5"], "--repeats takes one count or one per width (2), got 3"),
    (["--widths", "0.5", "--repeats", "3", "4"], "--repeats takes one count or one per width (1), got 2"),
    (["--norm-repeats", "1"], "--norm-repeats must be at least 2, got 1"),
    (["--steps", "0"], "--steps must be at least 1, got 0"),
])
def test_bad_counts_are_usage_errors(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(bench, "time_all", lambda *a, **k: pytest.fail("timing started despite a bad count"))
    with pytest.raises(SystemExit) as e:
        bench.main(argv + ["--out", "/nonexistent/never-written.json"])
    assert e.value.code == 2 and message in capsys.readouterr().err
