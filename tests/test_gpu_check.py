"""benchmarks/gpu_check.py (`make gpu-check`): its CPU path runs end to end with tiny sizes; without a GPU it fails
with a message instead of skipping; its list of CUDA-only tests is every test that pytest skips without CUDA."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402
import run as bench  # noqa: E402

torch.set_num_threads(1)


def test_cpu_path_runs_every_part_and_writes_the_result(tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--device", "cpu", "--out", str(out)]) == 0, capsys.readouterr().err
    r = json.loads(out.read_text())
    assert r["ok"] and r["failed"] == [] and r["device"] == "cpu"
    tests = r["cuda_tests"]   # on the CPU only collected: they need a GPU
    assert tests["ok"] and tests["ran"] is False
    assert {c.split("[")[0] for c in tests["collected"]} == set(gpu_check.CUDA_TESTS)   # test_norms's: one per kind
    assert sorted(r["d_step"]) == ["bf16", "eager"]   # no torch.compile on the CPU unless asked
    for mode, rows in r["d_step"].items():
        assert [row["variant"] for row in rows] == bench.VARIANTS
        assert all(row["median_s"] > 0 and row["peak_mem_mb"] > 0 for row in rows)
        assert next(row for row in rows if row["variant"] == "torch_sn")["ratio_vs_torch_sn"] == 1.0
    t = r["train"]
    assert t["ok"] and t["preset"] == "paper-cifar10" and t["norm"] == "bssn" and t["iterations"] == 3
    assert t["it_per_s"] > 0 and t["peak_mem_mb"] > 0
    printed = capsys.readouterr().out
    assert "paper-cifar10: 3 iterations" in printed and "gpu-check: passed" in printed


def test_without_a_gpu_it_fails_with_a_message_not_a_skip(tmp_path):
    "The real command with every GPU hidden: exit 1, one clear message naming --device cpu, no result file."
    out = tmp_path / "never.json"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(out)], env=env,
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 1
    assert "no CUDA GPU is visible" in p.stderr and "--device cpu" in p.stderr
    assert not out.exists()


def test_a_failed_part_fails_the_check_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    def broken(*a, **k):
        raise RuntimeError("out of memory (made up)")
    monkeypatch.setattr(gpu_check, "train_check", broken)
    out = tmp_path / "r.json"
    assert gpu_check.main(["--device", "cpu", "--skip-tests", "--modes", "eager", "--out", str(out)]) == 1
    r = json.loads(out.read_text())
    assert r["failed"] == ["train"] and not r["ok"] and "out of memory (made up)" in r["train"]["error"]
    assert len(r["d_step"]["eager"]) == len(bench.VARIANTS)
    assert "train FAILED" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [(["--repeats", "1"], "--repeats must be at least 2"),
                                           (["--iterations", "0"], "--iterations must be at least 1"),
                                           (["--width", "0"], "--widths 0.0")])
def test_bad_sizes_are_usage_errors_before_anything_runs(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gpu_check, "part", lambda *a, **k: pytest.fail("a part ran despite a bad argument"))
    with pytest.raises(SystemExit) as e:
        gpu_check.main(["--device", "cpu", *argv, "--out", str(tmp_path / "x.json")])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_the_cuda_test_list_is_every_test_skipped_without_cuda():
    "Every test under a skipif on torch.cuda.is_available() is in CUDA_TESTS, and every entry of it exists."
    found = set()
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        text = path.read_text()
        for m in re.finditer(r"skipif\(\s*not torch\.cuda\.is_available\(\)", text):
            name = re.compile(r"^def (test_\w+)", re.M).search(text, m.end()).group(1)
            found.add(f"tests/{path.name}::{name}")
    assert found == set(gpu_check.CUDA_TESTS)


def test_the_cpu_path_never_replaces_the_gpu_result(tmp_path, monkeypatch):
    "Without --out the CPU path writes to the temporary folder, not to results/gpu_check.json (which appendix B shows)."
    monkeypatch.setattr(gpu_check, "RESULT", tmp_path / "gpu_check.json")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(gpu_check.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    assert gpu_check.main(["--device", "cpu", "--skip-tests", "--modes", "eager", "--iterations", "1"]) == 0
    assert (tmp_path / "tmp" / "gpu_check-cpu.json").exists() and not (tmp_path / "gpu_check.json").exists()


def test_one_failing_variant_keeps_the_others_rows(tmp_path, monkeypatch, capsys):
    "A variant that fails to build (e.g. strict under torch.compile) gets an error row; the mode keeps the rest."
    build = bench.build

    def build_or_fail(v, *a, **k):
        if v == "strict":
            raise RuntimeError("compile failed (made up)")
        return build(v, *a, **k)
    monkeypatch.setattr(bench, "build", build_or_fail)
    out = tmp_path / "r.json"
    assert gpu_check.main(["--device", "cpu", "--skip-tests", "--modes", "eager", "--iterations", "1",
                           "--out", str(out)]) == 1
    r = json.loads(out.read_text())
    rows = {row["variant"]: row for row in r["d_step"]["eager"]}
    assert list(rows) == bench.VARIANTS and r["failed"] == ["d_step eager"] and r["train"]["ok"]
    assert rows["strict"] == dict(variant="strict", ok=False, error="RuntimeError: compile failed (made up)")
    assert all(row["median_s"] > 0 for v, row in rows.items() if v != "strict")
    assert rows["torch_sn"]["ratio_vs_torch_sn"] == 1.0
    assert "strict: RuntimeError: compile failed (made up)" in capsys.readouterr().err


def test_a_variant_failing_while_timed_is_left_out_of_the_timing(monkeypatch):
    "bssn's step raises after its 3 warm-up steps: its row records the error; the others are timed as before."
    build, step_fn = bench.build, gpu_check.d_step_fn

    def tagged(v, *a, **k):
        D, *rest = build(v, *a, **k)
        D._variant = v
        return (D, *rest)

    def flaky(mode, D, *a):
        fn, n = step_fn(mode, D, *a), []

        def step():
            n.append(1)
            if D._variant == "bssn" and len(n) > 3:
                raise RuntimeError("late failure (made up)")
            return fn()
        return step
    monkeypatch.setattr(bench, "build", tagged)
    monkeypatch.setattr(gpu_check, "d_step_fn", flaky)
    rows = {r["variant"]: r for r in gpu_check.d_step_bench(torch.device("cpu"), "eager", 0.0625, 4, 2, 1)}
    assert rows["bssn"] == dict(variant="bssn", ok=False, error="RuntimeError while timed: late failure (made up)")
    assert all(r["median_s"] > 0 and len(r["times_s"]) == 2 for v, r in rows.items() if v != "bssn")


def test_sync_waits_for_the_device_it_is_given(monkeypatch):
    seen = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: seen.append(device))
    bench.sync(torch.device("cuda:1"))
    bench.sync(torch.device("cpu"))
    assert seen == [torch.device("cuda:1")]
