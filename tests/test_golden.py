"""Golden runs: retrain a few of chapter 9's committed runs and require the committed numbers exactly.

Training is deterministic for a fixed thread count (tested below; it does depend on the count), so a change of the library that alters a training
trajectory, even at the last float digit, shows up here as a changed FID or loss; the committed results must then be
regenerated with it (`experiments/evidence/run.py`). The numbers are compared as `collect` stores them (6 significant digits).
The result files record the code that made them (meta.json's "code", written by `run.py`'s collect); results without
that record predate it and are known not to reproduce (issue 14: part of the 16x16 grid was trained by an earlier
library), so there the retraining test is an expected failure that is not run, until the results are regenerated.
"""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_evidence_run

ROOT = Path(__file__).resolve().parents[1]
# one SN_w and one BSSN run of the 16x16 grid, and one learnable-gamma run under WGAN-GP (the gradient penalty's path);
# about 20 s each
GOLDEN = ("sn-c1-seed3", "bssn-c1.2-seed3", "sn-c1-gshared-wgangp-seed3")
LOSS_COLUMNS = ("loss_d", "loss_g", "d_real", "d_fake")
# one thread: the trajectory depends on the thread count (1 and 2 threads part at step 10), and the committed runs used
# one (config `threads`, set in _sweep, and the environment)
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")


def _run_py():
    return load_evidence_run("evidence_run_golden")


def _stored(v):
    "A number as collect stores it in the result files."
    return float(f"{float(v):.6g}")


def _results_are_recorded():
    "Whether the 16x16 grid's meta.json records the code that produced it."
    run_py = _run_py()
    run_py.at_resolution(json.loads(run_py.CONFIG.read_text())["resolution"])
    meta = run_py.RESULTS / "meta.json"
    return meta.exists() and json.loads(meta.read_text()).get("code", {}).get("commit") is not None


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


def retrain_and_compare(name, run_py, out):
    """Retrain committed run `name` of the grid run_py points at into `out` and return the differences from its
    committed FID and losses (an empty list: identical as stored)."""
    grid = {g["name"]: g for g in run_py.GRID}
    config, seed = name.rsplit("-seed", 1)
    g, seed = grid[config], int(seed)
    with open(run_py.RESULTS / "runs.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["run"] == name)
    with open(run_py.RESULTS / "losses.csv", newline="") as f:
        losses = [r for r in csv.DictReader(f) if r["run"] == name]
    assert row["status"] == "done" and losses, f"{name}: no finished committed run in {run_py.RESULTS}"
    _sweep(out, g["kind"], g["scale"], seed, g["sets"], run_py.CONFIG, ENV)
    d = out / f"{g['kind']}-c{g['scale']:g}-seed{seed}"
    fid = json.loads((d / "done.json").read_text())["metrics"]["fid"]
    diffs = [] if _stored(fid) == float(row["fid"]) else [f"{name}: FID {_stored(fid)} (committed {row['fid']})"]
    new = {r["step"]: r for r in _log(d)}
    for r in losses:
        step = int(r["step"])
        for k in LOSS_COLUMNS:
            if step not in new or _stored(new[step][k]) != float(r[k]):
                diffs.append(f"{name}: step {step} {k} {_stored(new[step][k]) if step in new else 'missing'} "
                             f"(committed {r[k]})")
    return diffs


@pytest.mark.xfail(not _results_are_recorded(), run=False, strict=True,
                   reason="the committed results record no code version: they predate run.py's provenance record and "
                          "do not reproduce on today's library (issue 14); regenerate them with experiments/evidence/run.py")
@pytest.mark.parametrize("name", GOLDEN)
def test_golden_run_reproduces_the_committed_numbers(name, tmp_path):
    run_py = _run_py()
    run_py.at_resolution(json.loads(run_py.CONFIG.read_text())["resolution"])
    diffs = retrain_and_compare(name, run_py, tmp_path / "runs")
    meta = json.loads((run_py.RESULTS / "meta.json").read_text())
    assert not diffs, (f"{len(diffs)} numbers differ from the committed results (made by {meta.get('code')}); "
                       "if the change is meant, regenerate the results with experiments/evidence/run.py:\n"
                       + "\n".join(diffs[:10]))


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
