"""Golden runs: retrain a few of chapter 8's committed runs and compare with the committed numbers.

Training is deterministic for a fixed thread count and fixed CPU kernels (tested below), but another CPU's
kernels round differently and GAN training amplifies a last-digit difference into another run (issue 20: same
seed, an AVX2-only machine, FID 327 against the committed 247). So there are two comparisons:

- **exact** (FID and every logged loss, as `collect` stores them: 6 significant digits), where the numerics
  fingerprint recorded with the committed results (meta.json's "numerics", a `numerics_fingerprint()`) matches
  this machine's under the same mode (`numerics_differences` is empty). It catches a change of the library that
  alters a trajectory at the last float digit; the committed results must then be regenerated with it
  (`experiments/evidence/run.py`). Set BSSN_GOLDEN_EXACT=1 to force it (on the machine that made the results).
- **tolerant** everywhere else: the first 20 iterations only, losses and mean D outputs at steps 10 and 20
  within `TOLERANCE`. Chosen from measurements on one machine (AMD EPYC, AVX-512) emulating other CPUs with
  the ISA caps of ATen, oneDNN and MKL (15 kernel variants, 12 of which change the digits: capped at AVX2,
  AVX, SSE4.1/4.2, each library alone, MKL_CBWR, issue 20's pins, oneDNN disabled) against small real
  changes: the largest kernel variant used 0.36 of the tolerance (the WGAN-GP run's loss_d at step 10,
  under issue 20's pins), while one more power iteration, lr_d x 1.01,
  beta1 0.5 -> 0.51, logits x 1.01 and the official loop exceed it in all three runs (by 1.2x to 220x).
  Changes smaller than rounding can reach by step 20 pass: lr_g x 1.01, Adam's eps x 10 (except under
  WGAN-GP), beta2 + 1e-4 (except SN). The test below shows both properties on this machine.

The result files record the code that made them (meta.json's "code", written by `run.py`'s collect); results
without that record predate it and are known not to reproduce (issue 14), so there the tests are expected
failures that are not run, until the results are regenerated.
"""
import csv
import functools
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_evidence_run

from bssn_book.train import numerics_differences, numerics_env

ROOT = Path(__file__).resolve().parents[1]
# one SN_w and one BSSN run of the 16x16 grid, and one learnable-gamma run under WGAN-GP (the gradient penalty's
# path); about 20 s each for the exact comparison, 5 s for the tolerant one
GOLDEN = ("sn-c1-seed3", "bssn-c1.2-seed3", "sn-c1-gshared-wgangp-seed3")
LOSS_COLUMNS = ("loss_d", "loss_g", "d_real", "d_fake")
# step: (atol, rtol): |new - committed| <= atol + rtol |committed| (see the module's docstring)
TOLERANCE = {10: (1e-4, 1e-4), 20: (4e-3, 4e-3)}
# one thread: the trajectory depends on the thread count (1 and 2 threads part at step 10), and the committed runs used
# one (config `threads`, set in _sweep, and the environment)
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
# another CPU, emulated: ATen's generic kernels, oneDNN at SSE4.1, MKL at SSE4.2 (x86-64 only)
OTHER_CPU = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
             "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}
X86 = platform.machine().lower() in ("x86_64", "amd64")


@functools.lru_cache(maxsize=None)
def _run_py():
    run_py = load_evidence_run("evidence_run_golden")
    run_py.at_resolution(json.loads(run_py.CONFIG.read_text())["resolution"])
    return run_py


def _stored(v):
    "A number as collect stores it in the result files."
    return float(f"{float(v):.6g}")


def _meta():
    meta = _run_py().RESULTS / "meta.json"
    return json.loads(meta.read_text()) if meta.exists() else {}


def _results_are_recorded():
    "Whether the 16x16 grid's meta.json records the code that produced it."
    return _meta().get("code", {}).get("commit") is not None


def _mode():
    "The numerics mode of the committed results: the recorded fingerprint's, else config.json's."
    recorded = _meta().get("numerics")
    if recorded:
        return recorded.get("numerics")
    return json.loads(_run_py().CONFIG.read_text()).get("numerics")


@functools.lru_cache(maxsize=None)
def fingerprint_here(mode):
    "This machine's numerics fingerprint under `mode`, one torch thread, as a golden run's process has it."
    code = ("import json, torch; from bssn_book.train import numerics_fingerprint; "
            f"print(json.dumps(numerics_fingerprint({mode!r})))")
    p = subprocess.run([sys.executable, "-c", code], env={**ENV, **numerics_env(mode)}, capture_output=True,
                       text=True, check=True)
    return json.loads(p.stdout)


def _exact_differences():
    "Why the exact comparison does not apply here ([]: it does)."
    if os.environ.get("BSSN_GOLDEN_EXACT") == "1":
        return []
    return numerics_differences(_meta().get("numerics"), fingerprint_here(_mode()))


def _sweep(out, kind, scale, seed, sets, config, env):
    "One `bssn-book sweep` run, pinned to one torch thread (the sweep would otherwise give it a share of the CPUs)."
    sets = dict(sets, threads=1)
    cmd = [sys.executable, "-c", "import sys; from bssn_book.cli import main; sys.exit(main())", "sweep", "--config",
           str(config), "--kinds", kind, "--scales", f"{scale:g}", "--seeds", str(seed), "--jobs", "1", "--out", str(out)]
    if sets:
        cmd += ["--set", *[f"{k}={json.dumps(list(v)) if isinstance(v, (list, tuple)) else v}" for k, v in sets.items()]]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]


def _log(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]


def committed(name, run_py):
    "The committed runs.csv row and losses.csv rows of run `name`."
    with open(run_py.RESULTS / "runs.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["run"] == name)
    with open(run_py.RESULTS / "losses.csv", newline="") as f:
        losses = [r for r in csv.DictReader(f) if r["run"] == name]
    assert row["status"] == "done" and losses, f"{name}: no finished committed run in {run_py.RESULTS}"
    return row, losses


def retrain(name, run_py, out, sets=None, env=ENV):
    """Retrain committed run `name` of the grid run_py points at into `out` and return its folder: the grid's
    settings, one thread, the committed results' numerics mode, then `sets`."""
    grid = {g["name"]: g for g in run_py.GRID}
    config, seed = name.rsplit("-seed", 1)
    g = grid[config]
    sets = {**g["sets"], "numerics": _mode(), **(sets or {})}
    _sweep(out, g["kind"], g["scale"], int(seed), sets, run_py.CONFIG, env)
    return out / f"{g['kind']}-c{g['scale']:g}-seed{seed}"


def exact_differences(name, new_rows, committed_losses, steps=None, fid=None, committed_row=None):
    "The numbers that differ from the committed ones as stored ([]: identical), at `steps` (None: all)."
    new = {r["step"]: r for r in new_rows}
    diffs = []
    if fid is not None and _stored(fid) != float(committed_row["fid"]):
        diffs.append(f"{name}: FID {_stored(fid)} (committed {committed_row['fid']})")
    for r in committed_losses:
        step = int(r["step"])
        if steps is not None and step not in steps:
            continue
        for k in LOSS_COLUMNS:
            if step not in new or _stored(new[step][k]) != float(r[k]):
                diffs.append(f"{name}: step {step} {k} {_stored(new[step][k]) if step in new else 'missing'} "
                             f"(committed {r[k]})")
    return diffs


def tolerant_differences(name, new_rows, committed_losses):
    "The numbers of the steps of TOLERANCE that differ from the committed ones by more than it ([]: none)."
    new = {r["step"]: r for r in new_rows}
    diffs = []
    for r in committed_losses:
        step = int(r["step"])
        if step not in TOLERANCE:
            continue
        atol, rtol = TOLERANCE[step]
        for k in LOSS_COLUMNS:
            want = float(r[k])
            got = new.get(step, {}).get(k)
            if got is None or not abs(got - want) <= atol + rtol * abs(want):
                diffs.append(f"{name}: step {step} {k} {got} (committed {r[k]}, tolerance {atol} + {rtol} x |value|)")
    assert len({int(r["step"]) for r in committed_losses} & set(TOLERANCE)) == len(TOLERANCE)
    return diffs


def retrain_and_compare(name, run_py, out):
    """Retrain committed run `name` into `out` and return the differences from its committed FID and losses (an
    empty list: identical as stored)."""
    row, losses = committed(name, run_py)
    d = retrain(name, run_py, out)
    fid = json.loads((d / "done.json").read_text())["metrics"]["fid"]
    return exact_differences(name, _log(d), losses, fid=fid, committed_row=row)


FIRST_STEPS = {"iterations": max(TOLERANCE), "metrics_every": 0, "sample_every": 0}
NOT_RECORDED = pytest.mark.xfail(
    not _results_are_recorded(), run=False, strict=True,
    reason="the committed results record no code version: they predate run.py's provenance record and do not "
           "reproduce on today's library (issue 14); regenerate them with experiments/evidence/run.py")


@NOT_RECORDED
@pytest.mark.parametrize("name", GOLDEN)
def test_golden_run_reproduces_the_committed_numbers(name, tmp_path):
    "Exact, where the numerics fingerprint recorded with the results is this machine's under the same mode."
    why = _exact_differences()
    if why:
        pytest.skip("exact comparison not applicable (the first steps are compared with tolerance instead): the "
                    "results' numerics fingerprint (meta.json 'numerics') differs from this machine's: "
                    + "; ".join(why))
    run_py = _run_py()
    diffs = retrain_and_compare(name, run_py, tmp_path / "runs")
    assert not diffs, (f"{len(diffs)} numbers differ from the committed results (made by {_meta().get('code')}); "
                       "if the change is meant, regenerate the results with experiments/evidence/run.py:\n"
                       + "\n".join(diffs[:10]))


@NOT_RECORDED
@pytest.mark.parametrize("name", GOLDEN)
def test_golden_run_first_steps_within_tolerance(name, tmp_path):
    "Elsewhere: the first 20 iterations, steps 10 and 20 within TOLERANCE of the committed numbers."
    if not _exact_differences():
        pytest.skip("the exact comparison applies here (test_golden_run_reproduces_the_committed_numbers)")
    run_py = _run_py()
    _, losses = committed(name, run_py)
    diffs = tolerant_differences(name, _log(retrain(name, run_py, tmp_path / "runs", FIRST_STEPS)), losses)
    assert not diffs, (f"{len(diffs)} numbers of the first steps differ from the committed results by more than "
                       "cross-CPU rounding does; if the change is meant, regenerate the results with "
                       "experiments/evidence/run.py:\n" + "\n".join(diffs))


@NOT_RECORDED
@pytest.mark.skipif(not X86, reason="the other CPU is emulated with x86 ISA caps")
def test_tolerance_passes_another_cpu_and_fails_a_real_change(tmp_path):
    """Both properties of the tolerant comparison, on sn-c1-seed3: another CPU (emulated: ATen, oneDNN and MKL
    capped at SSE) passes it and fails the exact one; a 1% larger D learning rate and the official loop fail it."""
    name, run_py = "sn-c1-seed3", _run_py()
    _, losses = committed(name, run_py)
    steps = set(TOLERANCE)
    other = _log(retrain(name, run_py, tmp_path / "other", dict(FIRST_STEPS, numerics=None), {**ENV, **OTHER_CPU}))
    assert exact_differences(name, other, losses, steps), "the emulated CPU gave the committed digits"
    assert tolerant_differences(name, other, losses) == []
    grid = {g["name"]: g for g in run_py.GRID}
    lr_d = json.loads(run_py.CONFIG.read_text())["lr_d"]
    assert "lr_d" not in grid["sn-c1"]["sets"]
    for i, change in enumerate(({"lr_d": lr_d * 1.01}, {"loop": "official"})):
        rows = _log(retrain(name, run_py, tmp_path / f"change{i}", dict(FIRST_STEPS, **change)))
        assert tolerant_differences(name, rows, losses), f"{change} passed the tolerant comparison"


@pytest.mark.parametrize("mode", [None, pytest.param("avx2", marks=pytest.mark.skipif(
    not X86, reason="numerics='avx2' needs an x86-64 CPU"))])
def test_exact_comparison_applies_only_where_the_recorded_fingerprint_matches(mode, monkeypatch):
    """The switch between the two comparisons: results recorded here under `mode` are compared exactly; results
    whose fingerprint differs in any field, or that record none, with tolerance."""
    monkeypatch.delenv("BSSN_GOLDEN_EXACT", raising=False)
    here = fingerprint_here(mode)
    assert here["numerics"] == mode and here["threads"] == 1
    for recorded, exact in [(here, True), (dict(here, cpu_capability="AVX512_VNNI"), False),
                            (dict(here, torch="0.0"), False), (None, False)]:
        monkeypatch.setattr(sys.modules[__name__], "_meta", lambda: {"numerics": recorded})
        assert (_exact_differences() == []) == exact, recorded


def test_training_is_deterministic_for_a_thread_count(tmp_path):
    "The premise of the golden runs: the same command twice gives the same trajectory (30 iterations, one thread)."
    run_py = _run_py()
    sets = {"iterations": 30, "metrics_every": 0, "sample_every": 0}
    logs = []
    for i in range(2):
        _sweep(tmp_path / f"r{i}", "sn", 1.0, 3, sets, run_py.CONFIG, ENV)
        logs.append([{k: v for k, v in r.items() if k != "time_s"} for r in _log(tmp_path / f"r{i}" / "sn-c1-seed3")])
    assert len(logs[0]) == 3 and logs[0] == logs[1]
    done = json.loads((tmp_path / "r0" / "sn-c1-seed3" / "done.json").read_text())
    assert done.get("threads", 1) == 1                       # the run used the one thread it was given
    assert done["numerics"]["threads"] == 1                  # and the fingerprint it recorded says so
