"experiments/evidence/run.py: its grid expands into the runs `bssn-book sweep` makes, and its timing bookkeeping."
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_evidence_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def run_py():
    return load_evidence_run()


def test_grid_names_are_unique_and_match_the_sweep_run_folders(run_py):
    from bssn_book.cli import make_config, sweep_runs
    names = [g["name"] for g in run_py.GRID]
    assert len(names) == len(set(names))
    for g in run_py.GRID:
        cfg_file = run_py.CONFIG_RING if g["data"] == "ring" else run_py.CONFIG
        base = make_config(None, str(cfg_file), g["sets"]).to_dict()
        runs = sweep_runs(base, [g["kind"]], [g["scale"]], g["seeds"], None, run_py.group_dir(g))
        # resuming relies on this: run.py looks for done.json exactly where the sweep writes it
        assert [c.out_dir for _, c in runs] == [str(run_py.run_dir(g, s)) for s in g["seeds"]]
        assert all((c.gamma, c.n_dis, c.lr_d) == (g["gamma"], g["sets"].get("n_dis", c.n_dis),
                                                  g["sets"].get("lr_d", c.lr_d)) for _, c in runs)


def test_read_timings_takes_the_sweep_logs_and_keeps_the_first_measurement(run_py, tmp_path, monkeypatch):
    "The logs' first measurement wins over a stored timings.json (an earlier generation's run of the same name)."
    monkeypatch.setattr(run_py, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(run_py, "RESULTS", tmp_path / "results")
    (tmp_path / "runs").mkdir(); (tmp_path / "results").mkdir()
    g = next(g for g in run_py.GRID if g["name"] == "sn-c1-ndis5")
    (tmp_path / "runs" / "sn-c1-ndis5.sweep.log").write_text(
        "sweep: 5 runs, 1 at a time\nsn-c1-seed0: done in 115.2 s\nsn-c1-seed1: failed (exit 1) in 3.0 s\n"
        "sn-c1-seed0: skipped (done)\nsn-c1-seed1: done in 120.5 s\n")
    (tmp_path / "results" / "timings.json").write_text(json.dumps({"sn-c1-ndis5-seed0": {"wall_s": 99.0},
                                                                   "sn-c1-ndis5-seed4": {"wall_s": 77.0}}))
    t = run_py.read_timings([g])
    assert t["sn-c1-ndis5-seed0"]["wall_s"] == 115.2         # the log's first measurement, not the stored file's
    assert t["sn-c1-ndis5-seed1"]["wall_s"] == 120.5         # a failed attempt is no timing
    assert t["sn-c1-ndis5-seed4"]["wall_s"] == 77.0          # a run no log mentions keeps its stored timing
    assert json.loads((tmp_path / "results" / "timings.json").read_text()) == t


def _run_copy(tmp_path, *args):
    "run.py copied with its configs into tmp_path (its folders are its own directory's): the real results stay untouched."
    for f in ("run.py", "config.json", "config_ring.json"):
        (tmp_path / f).write_text((ROOT / "experiments/evidence" / f).read_text())
    return subprocess.run([sys.executable, str(tmp_path / "run.py"), *args], capture_output=True, text=True)


def test_unknown_configuration_is_named(tmp_path):
    p = _run_copy(tmp_path, "--only", "sn-c1,nope", "--collect-only")
    assert p.returncode == 2 and "unknown configuration(s) nope" in p.stderr


def test_another_resolution_gets_its_own_folders_and_configs(run_py):
    from bssn_book.cli import make_config, sweep_runs
    grid = run_py.at_resolution(32)
    assert run_py.RUNS.name == "runs-r32" and run_py.RESULTS.name == "results-r32"
    for g in grid:
        base = make_config(None, str(run_py.CONFIG_RING if g["data"] == "ring" else run_py.CONFIG), g["sets"]).to_dict()
        (_, c), *_ = sweep_runs(base, [g["kind"]], [g["scale"]], g["seeds"], None, run_py.group_dir(g))
        assert c.resolution == (32 if g["data"] == "mnist" else 2)
        # image runs in their own folder; the ring runs (no resolution) are shared with the base grid
        assert Path(c.out_dir).parts[-3] == ("runs-r32" if g["data"] == "mnist" else "runs")


def test_resolution_must_suit_the_cnn(tmp_path):
    p = _run_copy(tmp_path, "--resolution", "16", "20", "--collect-only")   # every size is checked before any work
    assert p.returncode == 2 and "--resolution 20" in p.stderr and "multiple of 8" in p.stderr
    assert not (tmp_path / "results-r20").exists() and not (tmp_path / "results").exists()


def test_the_grids_in_turn_each_get_their_folders(run_py):
    "One command does both committed grids; going back to the base size goes back to runs/ and results/."
    assert run_py.RESOLUTIONS == (16, 32)
    run_py.at_resolution(32)
    assert (run_py.RUNS.name, run_py.RESULTS.name) == ("runs-r32", "results-r32")
    assert run_py.at_resolution(16) is run_py.GRID
    assert (run_py.RUNS.name, run_py.RESULTS.name, run_py.GRID_SETS) == ("runs", "results", {})


def test_the_length_check_has_its_own_folders_and_only_its_configurations(run_py):
    from bssn_book.cli import make_config, sweep_runs
    grid = run_py.at_resolution(32, long=True)
    assert (run_py.RUNS.name, run_py.RESULTS.name) == ("runs-r32-long", "results-r32-long")
    assert [g["name"] for g in grid] == list(run_py.LONG_CONFIGS)   # GRID's names and order, no ring runs
    assert run_py.LONG_CONFIGS == ("sn-c1", "bssn-c1.2")             # the pair of claim 2 (SN_w, BSSN c = 1.2)
    base_cfg = json.loads(run_py.CONFIG.read_text())
    for g in grid:
        base = make_config(None, str(run_py.CONFIG), g["sets"]).to_dict()
        runs = sweep_runs(base, [g["kind"]], [g["scale"]], g["seeds"], None, run_py.group_dir(g))
        assert [c.out_dir for _, c in runs] == [str(run_py.run_dir(g, s)) for s in g["seeds"]]
        c = runs[0][1]
        assert (c.resolution, c.iterations, c.metrics_every) == (32, 5000, 500)   # ten times the grids' 500
        assert c.iterations == 10 * base_cfg["iterations"]
        # everything else is the grid's base setting, so the first 500 iterations are the 32x32 grid's runs
        assert (c.lr_d, c.n_dis, list(c.betas), c.width) == (base_cfg["lr_d"], base_cfg["n_dis"], base_cfg["betas"],
                                                             base_cfg["width"])
    run_py.at_resolution(16, long=True)   # at config.json's own size too: named by its size, covered by .gitignore
    assert (run_py.RUNS.name, run_py.RESULTS.name) == ("runs-r16-long", "results-r16-long")
    assert run_py.at_resolution(32) and run_py.RUNS.name == "runs-r32"   # and back


EVERY_PART = ["results", "results-mechanism", "results-r32", "results-r32-long", "results-r32-long-official"]


def test_what_each_option_collects(tmp_path):
    "No part named: every grid, both length checks and the mechanism experiment; some named: only those."
    made = lambda: sorted(d.name for d in tmp_path.iterdir() if d.name.startswith("results"))
    p = _run_copy(tmp_path, "--long", "32", "--long-official", "32", "--collect-only")
    assert p.returncode == 0, p.stderr
    assert made() == ["results-r32-long", "results-r32-long-official"]
    assert (tmp_path / "results-r32-long-official" / "runs.csv").exists()
    p = _run_copy(tmp_path, "--collect-only")
    assert p.returncode == 0, p.stderr
    assert made() == EVERY_PART
    p = _run_copy(tmp_path, "--long-official", "20", "--collect-only")
    assert p.returncode == 2 and "--long-official 20" in p.stderr and "multiple of 8" in p.stderr
    assert made() == EVERY_PART


def test_smoke_options_need_another_root(tmp_path):
    "--set and --seeds change what the results hold: refused unless the folders go elsewhere (--root)."
    p = _run_copy(tmp_path, "--mechanism", "--collect-only", "--set", "iterations=5")
    assert p.returncode == 2 and "give --root" in p.stderr
    p = _run_copy(tmp_path, "--mechanism", "--collect-only", "--root", str(tmp_path), "--seeds", "0")
    assert p.returncode == 2 and "give --root" in p.stderr        # run.py's own folder is no other root
    assert not any(d.name.startswith("results") for d in tmp_path.iterdir())


def test_collect_keeps_committed_results_when_the_runs_are_not_there(tmp_path):
    "A fresh clone has the results but not the run folders: --collect-only must not replace them with 'missing' rows."
    shutil.copytree(ROOT / "experiments/evidence/results-r32-long", tmp_path / "results-r32-long")
    before = {f.relative_to(tmp_path): f.read_bytes() for f in (tmp_path / "results-r32-long").rglob("*") if f.is_file()}
    import csv
    with open(tmp_path / "results-r32-long" / "runs.csv", newline="") as f:
        done = sum(r["status"] == "done" for r in csv.DictReader(f))
    assert done > 0
    p = _run_copy(tmp_path, "--long", "32", "--collect-only")
    assert p.returncode == 1 and "results-r32-long" in p.stderr and f"{done} finished runs" in p.stdout
    after = {f.relative_to(tmp_path): f.read_bytes() for f in (tmp_path / "results-r32-long").rglob("*") if f.is_file()}
    assert after == before


def test_code_version_records_commit_and_dirty_files(run_py, tmp_path, monkeypatch):
    "collect's provenance (meta.json 'code'): the commit of the checkout, its changed tracked files, or why none."
    import bssn_book
    git = lambda *a: subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *a],
                                    capture_output=True, text=True, check=True).stdout
    git("init", "-q")
    (tmp_path / "bssn_book").mkdir(); (tmp_path / "bssn_book" / "norms.py").write_text("a = 1\n")
    (tmp_path / "notes.txt").write_text("x\n")
    here = tmp_path / "experiments" / "evidence"                           # where run.py lies, with its result folders
    for f in ("results/runs.csv", "results-r32/runs.csv", "run.py"):
        (here / f).parent.mkdir(parents=True, exist_ok=True); (here / f).write_text("0\n")
    git("add", "."); git("commit", "-q", "-m", "first")
    head = git("rev-parse", "HEAD").strip()
    clean = run_py.code_version(tmp_path)
    assert clean == {"package_version": bssn_book.__version__, "commit": head, "dirty": []}
    (tmp_path / "notes.txt").write_text("y\n"); (tmp_path / "bssn_book" / "norms.py").write_text("a = 2\n")
    (tmp_path / "untracked.py").write_text("")                       # untracked files are not the code that ran
    assert run_py.code_version(tmp_path)["dirty"] == ["bssn_book/norms.py", "notes.txt"]   # library files first
    # the script's own result folders are its output, not code: rewritten results are not 'dirty'; run.py itself is
    monkeypatch.setattr(run_py, "HERE", here)
    for f in ("results/runs.csv", "results-r32/runs.csv", "run.py"):
        (here / f).write_text("1\n")
    assert run_py.code_version(tmp_path)["dirty"] == ["bssn_book/norms.py", "experiments/evidence/run.py", "notes.txt"]
    (tmp_path.parent / "not-a-checkout").mkdir(exist_ok=True)
    none = run_py.code_version(tmp_path.parent / "not-a-checkout")
    assert none["commit"] is None and none["dirty"] is None and "no commit recorded" in none["git"]


def test_collect_records_the_code_in_meta(run_py, tmp_path, monkeypatch):
    "Every collected result folder says which code made it: meta.json's 'code' is code_version()'s record."
    monkeypatch.setattr(run_py, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(run_py, "RESULTS", tmp_path / "results")
    assert run_py.collect([run_py.GRID[0]]) is True                  # its runs are 'missing', the meta is written
    meta = json.loads((tmp_path / "results" / "meta.json").read_text())
    assert meta["code"] == run_py.code_version() and meta["code"]["commit"] == subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    # no run recorded its numerics: the fingerprint a pinned run would record here, asked of a pinned child process
    from bssn_book.train import numerics_env
    assert meta["numerics"] == run_py.pinned_fingerprint() and meta["numerics_mixed"] is None
    assert (meta["numerics"]["numerics"], meta["numerics"]["threads"]) == ("avx2", 1)
    assert meta["numerics"]["env"] == numerics_env("avx2") and meta["pinned"] == run_py.PINNED


def test_meta_records_the_numerics_the_runs_recorded(run_py, tmp_path, monkeypatch):
    "meta.json's numerics: the fingerprint of the runs' done.json when they agree; when not, each with its runs."
    monkeypatch.setattr(run_py, "RUNS", tmp_path / "runs")
    g = dict(run_py.GRID[0], seeds=(0, 1, 2))
    fps = [{"numerics": "avx2", "cpu_model": "A"}, {"numerics": "avx2", "cpu_model": "A"}, {"numerics": None}]
    for seed, fp in zip(g["seeds"], fps):
        run_py.run_dir(g, seed).mkdir(parents=True)
        (run_py.run_dir(g, seed) / "done.json").write_text(json.dumps({"step": 1, "numerics": fp}))
    mixed = run_py.numerics_record([g])
    assert mixed["numerics"] is None
    assert mixed["numerics_mixed"] == [{"numerics": fps[0], "runs": ["sn-c1-seed0", "sn-c1-seed1"]},
                                       {"numerics": fps[2], "runs": ["sn-c1-seed2"]}]
    assert run_py.numerics_record([dict(g, seeds=(0, 1))]) == {"numerics": fps[0], "numerics_mixed": None}


def test_collect_records_each_runs_thread_count(run_py, tmp_path, monkeypatch):
    "runs.csv carries the torch thread count each run reports in done.json (trajectories depend on it)."
    import csv
    monkeypatch.setattr(run_py, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(run_py, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(run_py, "OUT", tmp_path)                       # the ring runs live in OUT/runs
    g = next(g for g in run_py.GRID if g["data"] == "ring" and g["kind"] == "sn")
    for seed in g["seeds"]:
        d = run_py.run_dir(g, seed); d.mkdir(parents=True)
        (d / "done.json").write_text(json.dumps({"step": 20, "threads": 1 + seed % 2,
                                                 "metrics": {"modes_covered": 8, "high_quality": 0.9}}))
        (d / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss_d": 1.0, "loss_g": 0.5, "d_real": 0.2,
                                                         "d_fake": -0.1}) + "\n" for s in (10, 20)))
    assert run_py.collect([g]) is True
    with open(tmp_path / "results" / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["threads"]) for r in rows] == [1 + s % 2 for s in g["seeds"]]


def test_every_sweep_trains_with_one_torch_thread_and_pinned_numerics(run_py, tmp_path, monkeypatch):
    """A run's trajectory depends on its thread count and on the CPU's kernels: run.py pins one thread and the avx2
    numerics in every run of every part, whatever OMP_NUM_THREADS or the cores say."""
    from bssn_book.cli import build_parser, make_config, parse_sets
    seen = []
    monkeypatch.setattr(run_py, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(run_py, "OUT", tmp_path)    # the ring runs' folder
    monkeypatch.setattr(run_py.subprocess, "run", lambda cmd, **kw: seen.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    (tmp_path / "runs").mkdir()
    assert run_py.PINNED == {"threads": 1, "numerics": "avx2"}
    groups = [g for g in run_py.GRID if g["data"] == "mnist"][:2] + [g for g in run_py.GRID if g["data"] == "ring"][:1]
    groups += run_py.at_resolution(32, long=True, official=True)[:1] + [run_py.MECHANISM[0]]
    for g in groups:
        run_py.train_group(g, {"OMP_NUM_THREADS": "2"})
    assert len(seen) == len(groups)
    for g, cmd in zip(groups, seen):
        args = build_parser().parse_args(cmd[3:])
        cfg = make_config(None, args.config, parse_sets(args.set)).to_dict()
        assert (cfg["threads"], cfg["numerics"]) == (1, "avx2"), (g["name"], args.set)
        assert all(cfg[k] == (list(v) if isinstance(v, tuple) else v) for k, v in g["sets"].items())   # the rest kept


# -- the official settings (fjxmlzn/BSN: no_gamma-CNN/config.py, same_gamma-CNN/config.py, same_gamma-CNN/gan/gan.py)
def _config_of(run_py, g):
    "The TrainConfig every run of configuration `g` trains with (config.json or config_ring.json, then g's sets)."
    from bssn_book.cli import make_config
    return make_config(None, str(run_py.CONFIG_RING if g["data"] == "ring" else run_py.CONFIG), g["sets"])


def _optimizer(c): return (c.lr_g, c.lr_d, tuple(c.betas), c.n_dis)


SETTING_A = (1e-4, 1e-4, (0.5, 0.999), 1)
SETTING_B = {(g, d, (0.5, 0.999), 1) for g in (1e-4, 2e-4) for d in (1e-4, 2e-4)}   # G's and D's lr each in {1e-4, 2e-4}
SETTING_C = (1e-4, 1e-4, (0.5, 0.9), 5)


def test_the_grid_trains_under_the_official_settings(run_py):
    """config.json is setting (a); SN and BSN at scale 1 (hinge) run under each of (b)'s four lr pairs and (c), once;
    the learnable gammas (on SN_w, as same_gamma-CNN) run under (b)'s four pairs with the WGAN loss and a gradient
    penalty of weight 10 (d_gp_coe); every WGAN run has that penalty and no hinge run has one."""
    assert SETTING_A in SETTING_B
    image = [(g, _config_of(run_py, g)) for g in run_py.GRID if g["data"] == "mnist"]
    base = _config_of(run_py, run_py.GRID[0])
    assert run_py.GRID[0]["name"] == "sn-c1" and _optimizer(base) == SETTING_A
    assert (base.loss, base.gp_weight, base.batch_size) == ("hinge", 0, 64)
    for kind in ("sn", "bsn"):
        at1 = [c for g, c in image if (g["kind"], g["scale"], g["gamma"], c.loss) == (kind, 1.0, None, "hinge")]
        assert sorted(map(_optimizer, at1)) == sorted(SETTING_B | {SETTING_C}), kind   # each once
    for gamma in ("shared", "per_layer"):
        runs = [(g, c) for g, c in image if g["gamma"] == gamma]
        assert all((g["kind"], g["scale"], c.gamma, c.loss, c.gp_weight) == ("sn", 1.0, gamma, "wgan", 10)
                   for g, c in runs), gamma
        assert sorted(_optimizer(c) for _, c in runs) == sorted(SETTING_B), gamma
    for g, c in image:
        assert (c.loss == "wgan") == (c.gp_weight == 10) and c.gp_weight in (0, 10) and c.loss in ("hinge", "wgan"), g
        assert _optimizer(c) in SETTING_B | {SETTING_C}, g
        if g["claim"] not in ("3", "gamma"):      # the scale sweep, the other norms: setting (a)
            assert _optimizer(c) == SETTING_A and c.loss == "hinge", g["name"]
    ndis5 = {k: (tuple(v) if isinstance(v, list) else v) for k, v in run_py.SETTINGS["ndis5"].items()}
    assert ndis5 == {"lr_g": 1e-4, "lr_d": 1e-4, "betas": (0.5, 0.9), "n_dis": 5}     # (c), whatever config.json says


def test_the_32x32_grid_holds_setting_a_and_the_16x16_grid_everything(run_py):
    "(b), (c) and the WGAN-GP runs train at 16x16 only (sizes [16]); the 32x32 grid: the rest, ring runs included."
    assert run_py.at_resolution(16) is run_py.GRID
    r32 = run_py.at_resolution(32)
    assert [g["name"] for g in r32] == [g["name"] for g in run_py.GRID if g["sizes"] is None]
    assert {g["name"] for g in r32 if g["data"] == "ring"} == {g["name"] for g in run_py.GRID if g["data"] == "ring"}
    only16 = [g for g in run_py.GRID if g["sizes"] is not None]
    assert only16 and all(g["sizes"] == [16] and g["data"] == "mnist" for g in only16)
    assert all(_optimizer(_config_of(run_py, g)) == SETTING_A and _config_of(run_py, g).loss == "hinge"
               for g in r32 if g["data"] == "mnist")
    assert {g["claim"] for g in only16} == {"3", "gamma"}
    assert all(g["sizes"] is None for g in run_py.GRID if g["name"] in run_py.LONG_CONFIGS)
    run_py.at_resolution(16)


def _fake_run(run_py, g, seed, loss_d, fid=100.0):
    "A finished run of configuration g as `bssn-book sweep` leaves it: done.json, log.jsonl, config.json."
    d = run_py.run_dir(g, seed); d.mkdir(parents=True)
    cfg = _config_of(run_py, g)
    (d / "config.json").write_text(json.dumps(cfg.to_dict()))
    (d / "done.json").write_text(json.dumps({"step": 500, "threads": 1, "metrics": {"fid": fid}}))
    (d / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss_d": loss_d, "loss_g": 0.5, "d_real": 0.2,
                                                     "d_fake": -0.1}) + "\n" for s in range(401, 501)))
    return cfg


def test_collapse_uses_the_d_loss_floor_for_hinge_runs_only(run_py, tmp_path, monkeypatch):
    """A WGAN-GP run whose D loss sits far below 0 (the WGAN loss has no floor) with healthy diversity is not
    collapsed; a hinge run with D loss < COLLAPSE_LOSS_D is (D wins); either loss with too little diversity is."""
    import csv
    monkeypatch.setattr(run_py, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(run_py, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(run_py, "OUT", tmp_path)
    ratio = {0: 0.9, 1: 0.9, 2: 0.1}     # per seed: diversity of the samples relative to the real images
    monkeypatch.setattr(run_py, "sample_diversity", lambda d, cfg: (ratio[int(d.name[-1])], 1.0))
    hinge = next(g for g in run_py.GRID if g["name"] == "sn-c1")
    wgan = next(g for g in run_py.GRID if g["name"] == "sn-c1-gshared-wgangp")
    hinge, wgan = (dict(g, seeds=(0, 1, 2)) for g in (hinge, wgan))
    # hinge: seed 0 healthy, seed 1 D wins (loss_d 0.01), seed 2 low diversity; WGAN-GP: D loss -50 with seeds 0, 1
    assert _fake_run(run_py, hinge, 0, 1.2).loss == "hinge"
    _fake_run(run_py, hinge, 1, 0.5 * run_py.COLLAPSE_LOSS_D); _fake_run(run_py, hinge, 2, 1.2)
    assert _fake_run(run_py, wgan, 0, -50.0).loss == "wgan"
    _fake_run(run_py, wgan, 1, -50.0); _fake_run(run_py, wgan, 2, -50.0)
    assert run_py.collect([hinge, wgan]) is True
    with open(tmp_path / "results" / "runs.csv", newline="") as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    assert float(rows["sn-c1-gshared-wgangp-seed0"]["loss_d_tail"]) == -50.0
    assert {n: rows[n]["collapsed"] for n in rows} == {
        "sn-c1-seed0": "False", "sn-c1-seed1": "True", "sn-c1-seed2": "True",
        "sn-c1-gshared-wgangp-seed0": "False", "sn-c1-gshared-wgangp-seed1": "False",
        "sn-c1-gshared-wgangp-seed2": "True"}
    assert all(rows[n]["diverged"] == "False" for n in rows)
    meta = json.loads((tmp_path / "results" / "meta.json").read_text())
    assert "for the hinge loss" in meta["definitions"]["collapsed"]


def test_finished_runs_counts_only_the_grids_configurations(run_py, tmp_path, monkeypatch):
    "A regenerated grid that dropped configurations is collected: the old runs.csv rows of those do not count."
    monkeypatch.setattr(run_py, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(run_py, "RESULTS", tmp_path / "results")
    (tmp_path / "results").mkdir()
    g = run_py.GRID[0]
    rows = [f"{g['name']}-seed{s},{g['name']},done" for s in g["seeds"]] + [f"gone-seed{s},gone,done" for s in range(9)]
    (tmp_path / "results" / "runs.csv").write_text("run,config,status\n" + "\n".join(rows) + "\n")
    assert run_py.finished_runs([g]) == (0, len(g["seeds"]))        # the dropped configuration's 9 rows ignored
    for s in g["seeds"]:
        run_py.run_dir(g, s).mkdir(parents=True)
        (run_py.run_dir(g, s) / "done.json").write_text("{}")
    assert run_py.finished_runs([g]) == (len(g["seeds"]), len(g["seeds"]))


# -- issue 20: ten seeds for claims 2 and 4, the length check under the official loop, the mechanism experiment
def _claim4_configs(grid):
    "The configurations chapter 8's claim 4 reads (its SCALES): BSN and BSSN in setting (a), no gamma, image runs."
    return {g["name"] for g in grid if g["kind"] in ("bsn", "bssn") and g["setting"] == "base" and not g["gamma"]
            and g["data"] == "mnist"}


def test_claims_2_and_4_get_ten_seeds_at_16x16_and_the_rest_five(run_py):
    grid = run_py.at_resolution(16)
    ten = {g["name"] for g in grid if tuple(g["seeds"]) == tuple(range(10))}
    assert ten == {"sn-c1", "bssn-c1.2"} | _claim4_configs(grid)                   # claim 2's pair, claim 4's scales
    assert len(_claim4_configs(grid)) == 7                                          # BSN and six scales of BSSN
    assert all(tuple(g["seeds"]) == run_py.SEEDS == (0, 1, 2, 3, 4) for g in grid if g["name"] not in ten)
    assert sum(len(g["seeds"]) for g in grid) == 200                                # 160 + 8 x 5
    # every other grid and part: five seeds
    for grid in (run_py.at_resolution(32), run_py.at_resolution(32, long=True),
                 run_py.at_resolution(32, long=True, official=True), run_py.at_mechanism()):
        assert all(tuple(g["seeds"]) == run_py.SEEDS for g in grid), run_py.RESULTS.name
    run_py.at_resolution(16)


def test_the_official_length_check_is_the_length_check_under_the_official_loop(run_py):
    from bssn_book.cli import sweep_runs
    long = {g["name"]: _config_of(run_py, g) for g in run_py.at_resolution(32, long=True)}
    grid = run_py.at_resolution(32, long=True, official=True)
    assert (run_py.RUNS.name, run_py.RESULTS.name) == ("runs-r32-long-official", "results-r32-long-official")
    assert [g["name"] for g in grid] == list(long) == ["sn-c1", "bssn-c1.2"]
    for g in grid:
        runs = sweep_runs(_config_of(run_py, g).to_dict(), [g["kind"]], [g["scale"]], g["seeds"], None,
                          run_py.group_dir(g))
        assert [c.out_dir for _, c in runs] == [str(run_py.run_dir(g, s)) for s in g["seeds"]]
        c = runs[0][1]
        assert (c.resolution, c.iterations, c.metrics_every, c.loop) == (32, 5000, 500, "official")
        # nothing else differs from the length check under our loop
        assert _config_of(run_py, g).replace(loop="book") == long[g["name"]]
    run_py.at_resolution(16)


def test_the_mechanism_arms_and_their_configs(run_py):
    from bssn_book.cli import sweep_runs
    grid = run_py.at_mechanism()
    assert (run_py.RUNS.name, run_py.RESULTS.name) == ("runs-mechanism", "results-mechanism")
    assert len(grid) == 10 and sum(len(g["seeds"]) for g in grid) == 50            # 5 arms x depths 8, 16 x 5 seeds
    arms = {(g["kind"], g["scale"], tuple(g["match"] or ())) for g in grid}
    assert arms == {("sn", 1.0, ()), ("bssn", 1.2, ()), ("sn", 1.0, ("bssn", 1.2)), ("strict", 1.0, ()),
                    ("strict", 1.0, ("sn", 1.0))}                                 # SN_w x k and SN_Conv x k'
    assert sorted({g["depth"] for g in grid}) == [8, 16]
    base = json.loads(run_py.CONFIG.read_text())
    for g in grid:
        c = _config_of(run_py, g)
        assert _optimizer(c) == SETTING_A and (c.loss, c.gp_weight, c.loop) == ("hinge", 0, "book")   # setting (a)
        assert (c.dataset, c.resolution, c.width) == ("mnist", 16, 0.125) == (base["dataset"], base["resolution"],
                                                                                base["width"])
        assert (c.d_depth, c.iterations, c.log_every, c.metrics_every) == (g["depth"], 2000, 10, 500)
        assert c.checkpoint_every == c.metrics_every and c.keep_last >= c.iterations // c.metrics_every
        assert c.logit_scale == 1.0                       # a matched arm's k is set per seed when it trains
        runs = sweep_runs(c.to_dict(), [g["kind"]], [g["scale"]], g["seeds"], None, run_py.group_dir(g))
        assert [c.out_dir for _, c in runs] == [str(run_py.run_dir(g, s)) for s in g["seeds"]]
    names = [g["name"] for g in run_py.GRID + grid]
    assert len(names) == len(set(names))                  # --only takes the names of every part
    run_py.at_resolution(16)


def _tiny(run_py, depth, seed=0):
    "A tiny mechanism configuration: 8x8 digits, width 1/16, D depth `depth`."
    g = next(g for g in run_py.MECHANISM if g["match"] and g["kind"] == "sn")
    g = dict(g, sets=dict(g["sets"], resolution=8, width=0.0625, d_depth=depth))
    return g, run_py.run_config(g, seed)


@pytest.mark.parametrize("depth", [8, 16])
def test_k_is_the_logit_ratio_at_initialization_for_every_x(run_py, depth):
    """k = D_BSSN(x) / D_SN(x) on the same raw weights: one number for every x (zero biases, LeakyReLU), equal to the
    product of the layers' weight-norm ratios, rounded for the run; it differs per seed and grows with depth."""
    import torch
    from bssn_book.train import build_models, load_dataset
    g, cfg = _tiny(run_py, depth)
    r = run_py.logit_ratio(cfg, ("bssn", 1.2))
    assert r["spread"] < 1e-9 and math.isclose(r["k_raw"], r["k_layers"], rel_tol=1e-9)
    assert r["k"] == float(f"{r['k_raw']:.4g}") and r["k"] > 1
    # by hand, on other images than logit_ratio's batch: each one's logit ratio is k
    x = load_dataset(cfg)[-5:].double()
    D_sn, D_bssn = (build_models(cfg.replace(norm=n, scale=c))[1].eval().double() for n, c in (("sn", 1), ("bssn", 1.2)))
    with torch.no_grad():
        assert torch.allclose(D_bssn(x) / D_sn(x), torch.full((5, 1), r["k_raw"], dtype=torch.float64), rtol=1e-9)
    assert run_py.logit_ratio(run_py.run_config(g, 1), ("bssn", 1.2))["k"] != r["k"]    # per seed
    k_strict = run_py.logit_ratio(cfg.replace(norm="strict"), ("sn", 1.0))               # k' = D_SN / D_SNConv
    assert k_strict["spread"] < 1e-9 and k_strict["k"] > 1                              # SN_Conv shrinks D's logits
    if depth == 16:
        k8 = run_py.logit_ratio(_tiny(run_py, 8)[1], ("bssn", 1.2))["k"]
        assert r["k"] > k8                                                               # c^L grows with L


def test_k_is_the_same_when_train_computes_it_in_threads(run_py):
    "train() runs configurations in threads and build_models seeds torch's global RNG: k must not depend on that."
    from concurrent.futures import ThreadPoolExecutor
    cfgs = [_tiny(run_py, 8, seed)[1] for seed in (0, 1)] * 4
    with ThreadPoolExecutor(4) as pool:
        ks = list(pool.map(lambda c: run_py.logit_ratio(c, ("bssn", 1.2))["k_raw"], cfgs))
    assert ks == [run_py.logit_ratio(c, ("bssn", 1.2))["k_raw"] for c in cfgs]


def test_k_needs_zero_biases(run_py, monkeypatch):
    "The premise of one k for every x: D's biases are zero at initialization (else logit_ratio refuses)."
    import torch
    from bssn_book import train
    _, cfg = _tiny(run_py, 8)
    build = train.build_models
    def with_bias(c):
        G, D = build(c)
        with torch.no_grad():
            D.fc.bias.fill_(0.1)
        return G, D
    monkeypatch.setattr(train, "build_models", with_bias)
    with pytest.raises(AssertionError, match="nonzero biases"):
        run_py.logit_ratio(cfg, ("bssn", 1.2))


def test_matched_arms_train_each_seed_with_its_own_k(run_py, tmp_path, monkeypatch):
    "SN_w x k: one sweep per seed, each with logit_scale = that seed's k; the unmatched arms: one sweep, no scale."
    from bssn_book.cli import build_parser, make_config, parse_sets
    seen = []
    monkeypatch.setattr(run_py, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(run_py.subprocess, "run", lambda cmd, **kw: seen.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    g, _ = _tiny(run_py, 8)
    g = dict(g, seeds=(0, 1))
    run_py.train_group(g, {})
    assert len(seen) == 2
    for seed, cmd in zip(g["seeds"], seen):
        args = build_parser().parse_args(cmd[3:])
        assert args.seeds == [seed]
        cfg = make_config(None, args.config, parse_sets(args.set))
        assert cfg.logit_scale == run_py.logit_ratio(run_py.run_config(g, seed), ("bssn", 1.2))["k"]
    seen.clear()
    run_py.train_group(dict(g, match=None), {})
    assert len(seen) == 1 and "logit_scale" not in " ".join(seen[0])


def test_a_mechanism_smoke_sweep_is_collected(tmp_path):
    """run.py's own path, end to end on tiny runs: two arms at depth 8 and 16 train and collect into runs.csv,
    steps.csv (the new monitors and fan_in * Var(w_bar) per layer at every logged step), metrics.csv (FID, KID and
    the diversity at each evaluation) and k.csv; the matched arm trained with its seed's k."""
    import csv
    root = tmp_path / "smoke"
    only = "sn-c1-xbssn1.2-d8,strict-c1-d16"
    p = _run_copy(tmp_path, "--mechanism", "--root", str(root), "--seeds", "0", "--only", only, "--set",
                  "iterations=4", "log_every=2", "metrics_every=2", "checkpoint_every=2", "sample_every=4",
                  "metrics_samples=16", "batch_size=16", "width=0.0625", "resolution=8")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = root / "results-mechanism"
    read = lambda f: list(csv.DictReader(open(res / f, newline="")))
    runs = {r["config"]: r for r in read("runs.csv")}
    assert len(runs) == 10 and {c for c, r in runs.items() if r["status"] == "done"} == set(only.split(","))
    k = {(r["config"], r["seed"]): r for r in read("k.csv")}
    assert sorted(c for c, _ in k) == ["sn-c1-xbssn1.2-d16", "sn-c1-xbssn1.2-d8", "strict-c1-xsn1-d16",
                                       "strict-c1-xsn1-d8"]
    assert all(float(r["spread"]) < 1e-9 for r in k.values())
    assert float(runs["sn-c1-xbssn1.2-d8"]["logit_scale"]) == float(k[("sn-c1-xbssn1.2-d8", "0")]["k"]) > 1
    assert float(runs["strict-c1-d16"]["logit_scale"]) == 1.0
    steps = read("steps.csv")
    meta = json.loads((res / "meta.json").read_text())
    assert [len(meta["layers"][d]) for d in ("8", "16")] == [8, 16]
    for config, depth in (("sn-c1-xbssn1.2-d8", 8), ("strict-c1-d16", 16)):
        rows = [r for r in steps if r["config"] == config]
        assert [int(r["step"]) for r in rows] == [2, 4]
        for r in rows:
            for col in ("grad_slope", "logit_spread", "margin_frac", *[f"fan_in_var_{i}" for i in range(depth)]):
                assert math.isfinite(float(r[col])), (config, col)
            assert 0 <= float(r["margin_frac"]) <= 1
    metrics = [r for r in read("metrics.csv")]
    assert sorted((r["config"], int(r["step"])) for r in metrics) == [
        ("sn-c1-xbssn1.2-d8", 2), ("sn-c1-xbssn1.2-d8", 4), ("strict-c1-d16", 2), ("strict-c1-d16", 4)]
    assert all(math.isfinite(float(r[c])) for r in metrics for c in ("fid", "kid", "diversity_ratio"))
    done = json.loads((root / "runs-mechanism" / "strict-c1-d16" / "strict-c1-seed0" / "done.json").read_text())
    assert meta["numerics"] == done["numerics"] and done["numerics"]["numerics"] == "avx2"
    assert "code" in meta and meta["overrides"]["iterations"] == 4 and meta["pinned"] == {"threads": 1, "numerics": "avx2"}


@pytest.mark.parametrize("part, folder, config", [(["--long-official", "32"], "results-r32-long-official", "sn-c1"),
                                                  (["--mechanism"], "results-mechanism", "strict-c1-xsn1-d16")])
def test_the_new_parts_keep_committed_results_in_a_fresh_clone(tmp_path, part, folder, config):
    "The fresh-clone guard holds for the new parts too: no run folders, committed rows kept, exit 1 naming the folder."
    (tmp_path / folder).mkdir()
    committed = f"run,config,status\n{config}-seed0,{config},done\n"
    (tmp_path / folder / "runs.csv").write_text(committed)
    p = _run_copy(tmp_path, *part, "--collect-only")
    assert p.returncode == 1 and folder in p.stderr and "1 finished runs" in p.stdout
    assert (tmp_path / folder / "runs.csv").read_text() == committed
    assert sorted(f.name for f in (tmp_path / folder).iterdir()) == ["runs.csv"]


def test_collect_links_a_new_result_folder_from_the_package(run_py, tmp_path, monkeypatch):
    "A result folder written beside run.py gets its link in bssn_book/assets/results/evidence/ (relative); others not."
    here, links = tmp_path / "experiments" / "evidence", tmp_path / "bssn_book" / "assets" / "results" / "evidence"
    here.mkdir(parents=True); links.mkdir(parents=True)
    monkeypatch.setattr(run_py, "HERE", here)
    monkeypatch.setattr(run_py, "LINKS", links)
    monkeypatch.setattr(run_py, "RESULTS", here / "results-mechanism")
    (here / "results-mechanism").mkdir()
    run_py.link_results()
    link = links / "results-mechanism"
    assert os.readlink(link) == "../../../../experiments/evidence/results-mechanism" and link.resolve() == \
        (here / "results-mechanism").resolve()
    run_py.link_results()                                             # already there: left as it is
    monkeypatch.setattr(run_py, "RESULTS", tmp_path / "smoke" / "results-r32")
    run_py.link_results()                                             # a --root elsewhere: no link
    assert sorted(p.name for p in links.iterdir()) == ["results-mechanism"]


def test_the_length_checks_keep_a_checkpoint_per_evaluation(run_py):
    "collect reads each evaluation's samples from its checkpoint (a failure is known per evaluation, not only at the end)."
    for official in (False, True):
        for g in run_py.at_resolution(32, long=True, official=official):
            cfg = _config_of(run_py, g)
            assert cfg.checkpoint_every == cfg.metrics_every
            assert cfg.keep_last >= cfg.iterations // cfg.metrics_every
