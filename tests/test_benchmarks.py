"benchmarks/run.py: its command line refuses counts it cannot compute medians and IQRs from, before any timing."
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import run as bench  # noqa: E402


@pytest.fixture(autouse=True)
def keep_thread_count(monkeypatch):
    "main() sets torch's thread count for the whole process; here it must not (later tests compare float results)."
    monkeypatch.setattr(bench.torch, "set_num_threads", lambda n: None)


@pytest.mark.parametrize("argv, message", [
    (["--repeats", "1"], "--repeats must be at least 2, got 1"),
    (["--repeats", "15", "1"], "--repeats must be at least 2, got 1"),
    (["--repeats", "3", "4", "5"], "--repeats takes one count or one per width (2), got 3"),
    (["--widths", "0.5", "--repeats", "3", "4"], "--repeats takes one count or one per width (1), got 2"),
    (["--norm-repeats", "1"], "--norm-repeats must be at least 2, got 1"),
    (["--steps", "0"], "--steps must be at least 1, got 0"),
    (["--widths", "0.5", "0.5"], "--widths: each width once, got 0.5 0.5"),
])
def test_bad_counts_are_usage_errors(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(bench, "time_all", lambda *a, **k: pytest.fail("timing started despite a bad count"))
    with pytest.raises(SystemExit) as e:
        bench.main(argv + ["--out", "/nonexistent/never-written.json"])
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("argv, expected", [
    ([], {1.0: 15, 0.25: 45}), (["--widths", "0.25", "1.0"], {0.25: 45, 1.0: 15}), (["--widths", "0.5"], {0.5: 15}),
    (["--repeats", "7"], {1.0: 7, 0.25: 7}), (["--repeats", "3", "4"], {1.0: 3, 0.25: 4}),
])
def test_repeats_per_width(argv, expected, monkeypatch, tmp_path):
    "Each width gets its own count, by width (not by position) when defaulted; the result file records them."
    seen = {}

    def fake_time_all(width, device, repeats, steps, fn=None, seed=0):
        if fn is None:   # the D step (fn=weights_step: the normalization-only timing, its own count)
            seen[width] = repeats
        return ({v: 1.0 + i for i, v in enumerate(bench.VARIANTS)}, {v: [1.0] * repeats for v in bench.VARIANTS},
                {v: [1.0] * repeats for v in bench.VARIANTS})

    monkeypatch.setattr(bench, "time_all", fake_time_all)
    monkeypatch.setattr(bench, "peak_memory", lambda *a, **k: 0)
    bench.main(argv + ["--out", str(tmp_path / "out.json")])
    assert {float(w): n for w, n in json.loads((tmp_path / "out.json").read_text())["repeats"].items()} == expected
    assert seen == expected


def test_round_robin_times_every_call_in_a_fresh_order_each_repeat():
    "The shared timing loop: warm-up calls untimed, `steps` calls per repeat, the order reshuffled every repeat."
    log = []
    calls = {name: (lambda n=name: log.append(n)) for name in "abcd"}
    times = bench.round_robin(calls, repeats=6, steps=3, seed=1, warmup=2)
    assert log[:8] == [n for n in "abcd" for _ in range(2)]                        # warm-up, in order
    timed = log[8:]
    assert len(timed) == 6 * 4 * 3 and all(len(times[n]) == 6 for n in "abcd")
    orders = [tuple(timed[i:i + 12:3]) for i in range(0, len(timed), 12)]         # each repeat: 4 names x 3 calls
    assert all(sorted(o) == list("abcd") for o in orders) and len(set(orders)) > 1
    assert all(t >= 0 for x in times.values() for t in x)
