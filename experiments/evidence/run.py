"""Chapter 9's experiments: regenerate every result file with one command.

    cd <repo> && OMP_NUM_THREADS=1 .venv/bin/python experiments/evidence/run.py --jobs 2   # everything: train what is missing, collect
    OMP_NUM_THREADS=1 .venv/bin/python experiments/evidence/run.py --collect-only           # rebuild results/, results-r32/, results-r32-long/
    OMP_NUM_THREADS=1 .venv/bin/python experiments/evidence/run.py --resolution 16 --only sn-c1,bssn-c1.2   # some of one grid
    OMP_NUM_THREADS=1 .venv/bin/python experiments/evidence/run.py --long 32 --jobs 2                       # the length check

Two grids, 5 seeds per configuration: on 16x16 digits every configuration of GRID (runs in `runs/`, results in
`results/`), on 32x32 digits those of the official setting (a) (`runs-r32/`, `results-r32/`); the 15 ring runs have
no image size and are shared (kept in `runs/`). Then the length check: LONG_CONFIGS (SN_w and BSSN c = 1.2) on 32x32
digits for LONG_SETS' iterations (ten times the grids' 500) with FID/KID every 500 iterations, same seeds
(`runs-r32-long/`, `results-r32-long/`): its first 500 iterations are the 32x32 grid's runs.
Training goes through `bssn-book sweep` (one sweep per configuration, `--jobs 1`; `--jobs N` here runs N
configurations at once), so the script is resumable: a run whose `done.json` exists is skipped. The runs (checkpoints,
logs) are not committed; the collected result files are.

Measured duration of the committed results (2026-12-06, commit 6ec5014, 2-core CPU, one torch thread per run,
`run.py --resolution 16 32 --long 32 --jobs 2`; `meta.json` records `per_run_wall_s`, `total_train_wall_s` and
`timings.json` every run's):
- 16x16: 160 runs. Image runs 13-54 s each, median 18 s (n_dis = 1: 13-40 s; n_dis = 5: 32-54 s, mean 40 s; WGAN-GP:
  17-26 s); ring runs 10-14 s. 0.84 h of one core in all; 26 min of wall clock.
- 32x32: 55 image runs (setting (a); the ring runs are the 16x16 grid's), 30-44 s each, median 32 s; 0.50 h of one
  core; about 20 min of wall clock.
- length check, 32x32, 5000 iterations: 10 runs, 291-356 s each (two at a time); about 23 min of wall clock.
The whole call took 69 min (4156 s) with --jobs 2, light editing and tests running beside it; the runs of 2026-11-25
took 3-5 times as long on an earlier, slower machine. With every run done, the script only re-collects (~20 s per
grid). The first collect of the 32x32 grid and the length check was refused by the fresh-clone guard (the old
runs.csv held configurations the new grid dropped) and the 16x16 grid's kept the old wall times of runs of the same
name: both were fixed after that call (finished_runs, read_timings). With the stale runs.csv and timings.json removed
by hand, the same commit's script collected the length check at the end of that call and re-collected the two grids
(`--collect-only --resolution 16 32`).

Definitions (used by `collect`, stated again in the chapter):
- diverged: the run stopped on a non-finite loss (bssn-book's NonFiniteLossError) or its FID is not finite.
- collapsed: the final generator's samples have almost no diversity, i.e. the mean over pixels of the
  per-pixel standard deviation across 1000 samples is below COLLAPSE_DIVERSITY x that of the real images,
  or, for the hinge loss, D wins outright: its mean D loss over the last LAST_STEPS iterations is below
  COLLAPSE_LOSS_D (the WGAN-GP runs have no such floor and are judged by the diversity alone);
  on the ring, fewer than RING_MIN_MODES of the 8 modes covered at the end.
"""
import argparse, csv, json, math, os, re, shutil, subprocess, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS, RESULTS, CONFIG, CONFIG_RING = HERE / "runs", HERE / "results", HERE / "config.json", HERE / "config_ring.json"
SEEDS = (0, 1, 2, 3, 4)
# The official code's settings (fjxmlzn/BSN, no_gamma-CNN/config.py), on top of config.json, which is setting (a):
# lr 1e-4 for G and D, betas (0.5, 0.999), n_dis 1 (bssn_book.train.SETTINGS["ndis1"]). Setting (b): the same betas
# and n_dis, G's and D's learning rates each in {1e-4, 2e-4} (the pair 1e-4/1e-4 is (a)). Setting (c): lr 1e-4,
# betas (0.5, 0.9), n_dis 5 (SETTINGS["ndis5"]). The learnable-gamma variants (same_gamma-CNN/config.py; diff_gamma-CNN
# the same) train with the WGAN loss plus a gradient penalty of weight 10 (`d_gp_coe`) over (b)'s four pairs.
from bssn_book.train import SETTINGS as PAPER_SETTINGS, _read_rows
LR_PAIRS = {"g1e-4-d2e-4": (1e-4, 2e-4), "g2e-4-d1e-4": (2e-4, 1e-4), "g2e-4-d2e-4": (2e-4, 2e-4)}   # (b) less (a)
WGANGP = {"loss": "wgan", "gp_weight": 10.0}
SETTINGS = {**{k: {"lr_g": g, "lr_d": d} for k, (g, d) in LR_PAIRS.items()},
            "ndis5": dict(PAPER_SETTINGS["ndis5"]),
            "wgangp": dict(WGANGP),
            **{f"wgangp-{k}": dict(WGANGP, lr_g=g, lr_d=d) for k, (g, d) in LR_PAIRS.items()}}


def G(kind, scale=1.0, gamma=None, setting=None, data="mnist", claim="", sizes=None):
    """One configuration of the grid: a normalization on top of the base config (or the ring config), five seeds.
    `sizes`: the image sizes whose grids hold it (None: every grid)."""
    name = f"{kind}-c{scale:g}" + (f"-g{gamma}" if gamma else "") + (f"-{setting}" if setting else "") \
        + ("-ring" if data == "ring" else "")
    sets = dict(SETTINGS.get(setting, {}), **({"gamma": gamma} if gamma else {}))
    return {"name": name, "kind": kind, "scale": scale, "gamma": gamma, "setting": setting or "base", "data": data,
            "sets": sets, "seeds": SEEDS, "claim": claim, "sizes": list(sizes) if sizes else None}


# Priority order. c = 1.2 for the scaled kinds: the smallest scale > 1 of the paper's CIFAR-10 sweep, fixed before
# any run. Chapter 9 computes chapter 7's c* (a per-block gain of 1 at init) for this discriminator: about 2.5.
# Setting (a) in both grids; the official (b) and (c) (SN against BSN at scale 1, as the official configs pair them)
# and the WGAN-GP runs (the learnable gammas, and SN and BSN without gamma under the same loss, our addition) in the
# 16x16 grid only.
_ONLY16 = (16,)
GRID = [G("sn", claim="1 2 5"), G("strict", claim="1 6"), G("bssn", 1.2, claim="2 4"), G("none", claim="5"),
        G("ssn", 1.2, claim="compare"), G("bsn", claim="3 4 compare"), G("bssn", 2.2, claim="4"),
        G("bssn", 0.8, claim="4"), G("bssn", 1.5, claim="4"), G("bssn", 1.8, claim="4"), G("bssn", 2.5, claim="4"),
        *[G(k, setting=s, claim="3", sizes=_ONLY16) for s in (*LR_PAIRS, "ndis5") for k in ("sn", "bsn")],
        *[G("sn", gamma=gm, setting=s, claim="gamma", sizes=_ONLY16)
          for s in ("wgangp", *[f"wgangp-{k}" for k in LR_PAIRS]) for gm in ("shared", "per_layer")],
        *[G(k, setting="wgangp", claim="gamma", sizes=_ONLY16) for k in ("sn", "bsn")],
        *[G(k, c, data="ring", claim="dense") for k, c in (("sn", 1.0), ("bssn", 1.2), ("none", 1.0))]]
# where the committed results were measured (per_run_wall_s is load-dependent), per results folder
MACHINE = {name: (
    "2-core CPU (no GPU), one torch thread per run (config threads=1, OMP_NUM_THREADS=1), run.py --resolution 16 32 "
    "--long 32 --jobs 2 (two training processes at once) from 2026-12-06, in a git worktree of the commit recorded in "
    "`code`, with light work (editing, small tests) beside it")
    for name in ("results", "results-r32", "results-r32-long")}
COLLAPSE_DIVERSITY, COLLAPSE_LOSS_D, LAST_STEPS, RING_MIN_MODES = 0.25, 0.05, 50, 4
_lock = threading.Lock()


GRID_SETS = {}   # what the current grid's image runs change in config.json; set by at_resolution
RESOLUTIONS = (16, 32)   # the committed grids: results/ (16x16) and results-r32/
# The length check: these configurations (base setting), LONG_SETS on top of the grid's, at LONG_RESOLUTIONS.
# SN_w and BSSN c = 1.2, the pair of claim 2, in GRID's order.
LONG_CONFIGS = ("sn-c1", "bssn-c1.2")
LONG_SETS, LONG_RESOLUTIONS = {"iterations": 5000, "metrics_every": 500}, (32,)


def at_resolution(res, long=False):
    """Point the script at a grid of `res` x `res` MNIST: its image runs in runs-r<res>/ and its results in
    results-r<res>/ (config.json's size: runs/ and results/), so that grids of two resolutions never mix; the ring
    runs (no resolution) stay in runs/ and are shared. With `long`, the length check at that size instead: only
    LONG_CONFIGS, with LONG_SETS, in runs-r<res>-long/ and results-r<res>-long/. A size the CNN cannot take is a
    ValueError naming it. Returns that grid."""
    global RUNS, RESULTS, GRID_SETS
    from bssn_book.cli import UsageError, make_config
    from bssn_book.train import ConfigError
    try:
        make_config(None, str(CONFIG), {"resolution": res, **(LONG_SETS if long else {})})   # the trainer's own checks
    except (ConfigError, UsageError) as e:
        raise ValueError(f"--{'long' if long else 'resolution'} {res}: {e}") from None
    own = res != json.loads(CONFIG.read_text())["resolution"]
    sets = dict({"resolution": res} if own else {}, **(LONG_SETS if long else {}))
    tag = f"-r{res}-long" if long else (f"-r{res}" if own else "")
    RUNS, RESULTS, GRID_SETS = HERE / f"runs{tag}", HERE / f"results{tag}", sets
    if not sets:
        return GRID
    return [dict(g, sets=dict(g["sets"], **sets)) if g["data"] == "mnist" else g for g in GRID
            if (g["name"] in LONG_CONFIGS if long else g["sizes"] is None or res in g["sizes"])]


def group_dir(g): return (HERE / "runs" if g["data"] == "ring" else RUNS) / g["name"]
def run_dir(g, seed): return group_dir(g) / f"{g['kind']}-c{g['scale']:g}-seed{seed}"   # the name `bssn-book sweep` gives
def run_name(g, seed): return f"{g['name']}-seed{seed}"


def train_group(g, env):
    "One `bssn-book sweep` over the configuration's seeds; its output is appended to <name>.sweep.log (timings)."
    out = group_dir(g)
    cmd = [sys.executable, "-c", "import sys; from bssn_book.cli import main; sys.exit(main())", "sweep",
           "--config", str(CONFIG_RING if g["data"] == "ring" else CONFIG), "--kinds", g["kind"],
           "--scales", f"{g['scale']:g}", "--seeds", ",".join(map(str, g["seeds"])), "--jobs", "1", "--out", str(out)]
    # one torch thread per run, whatever the machine or OMP_NUM_THREADS says: a run's trajectory depends on it
    sets = dict(g["sets"], threads=1)
    cmd += ["--set", *[f"{k}={json.dumps(list(v)) if isinstance(v, (list, tuple)) else v}" for k, v in sets.items()]]
    with _lock: print(" ".join(cmd[3:]), flush=True)
    with open(out.parent / f"{g['name']}.sweep.log", "a") as f:
        rc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    with _lock: print(f"sweep {g['name']}: exit {rc}", flush=True)


def train(grid, jobs=1):
    RUNS.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ); env.setdefault("OMP_NUM_THREADS", "1")
    todo = [g for g in grid if not all((run_dir(g, s) / "done.json").exists() for s in g["seeds"])]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(lambda g: train_group(g, env), todo))


def _diversity(x):
    "Mean over pixels of the per-pixel standard deviation across a batch of images."
    return float(x.float().std(dim=0).mean())


def sample_diversity(run_dir, cfg_dict, n=1000):
    "Diversity of 1000 samples of the final generator (checkpoint) and of as many real images."
    import torch
    from bssn_book.train import TrainConfig, build_models, list_checkpoints, load_checkpoint, load_dataset
    ck = list_checkpoints(run_dir / "checkpoints")
    if not ck: return float("nan"), float("nan")
    state = load_checkpoint(ck[-1])
    cfg = TrainConfig.from_dict({**cfg_dict, "progress": False}).validate()
    G, _ = build_models(cfg)
    G.load_state_dict(state["G"]); G.eval()
    with torch.no_grad():
        x = G(torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(123)))
    real = load_dataset(cfg)
    idx = torch.randperm(len(real), generator=torch.Generator().manual_seed(123))[:n]
    return _diversity(x), _diversity(real[idx])


def layer_order(keys):
    "D's layers in forward order: main.0, main.2, ..., fc."
    names = sorted({k.split("/")[2] for k in keys if k.startswith("grad/D/")},
                   key=lambda s: (s == "fc", int(s.split(".")[1]) if s.startswith("main.") else 0))
    return names


def read_timings(grid):
    """Wall time of every run that trained: the sweeps' own logs (`<configuration>.sweep.log`, appended by every sweep:
    "<run>: done in <s> s"; a run keeps its first measurement there), then the sweep summaries, then the stored
    `timings.json` for runs that neither mentions (their run folders gone). The logs win over the stored file: they
    belong to the run folders being collected, while the file may hold an earlier generation's runs of the same
    name (a regeneration from scratch)."""
    tpath = RESULTS / "timings.json"
    stored = json.loads(tpath.read_text()) if tpath.exists() else {}
    timings = {}
    for g in grid:
        log = group_dir(g).parent / f"{g['name']}.sweep.log"
        for line in (log.read_text().splitlines() if log.exists() else []):
            m = re.match(r"^\S+-seed(\d+): done in ([0-9.]+) s$", line.strip())
            if m: timings.setdefault(run_name(g, int(m[1])), {"wall_s": float(m[2]), "status": "done"})
        summary = group_dir(g) / "summary.json"
        for r in (json.loads(summary.read_text()) if summary.exists() else []):
            if r["status"] == "done" and r.get("time_s"):   # failed attempts and skipped runs are no timing
                timings.setdefault(run_name(g, r["seed"]), {"wall_s": r["time_s"], "status": "done"})
    for name, t in stored.items():
        timings.setdefault(name, t)
    tpath.write_text(json.dumps(timings, indent=1, sort_keys=True))
    return timings


def finished_runs(grid):
    """How many of the grid's runs have finished in the run folders (done.json), and how many finished runs of the
    grid's configurations results/runs.csv holds (rows of configurations the grid no longer has do not count)."""
    have = sum((run_dir(g, s) / "done.json").exists() for g in grid for s in g["seeds"])
    old = RESULTS / "runs.csv"
    if not old.exists():
        return have, 0
    names = {g["name"] for g in grid}
    with open(old, newline="") as f:
        return have, sum(r.get("status") == "done" and r.get("config") in names for r in csv.DictReader(f))


def code_version(root=None):
    """The code that collected (and, when run.py trained in the same call, trained) the results: the package version,
    the git commit of the checkout and whether its tracked files differ from that commit (`dirty`: the changed paths,
    library files first; this script's own result folders, results*/ beside it, are its output, not code, and are left
    out). Without git or outside a checkout the commit is None and `git` says why."""
    import bssn_book
    root = Path(root) if root is not None else HERE   # git finds the checkout above it
    out = {"package_version": bssn_book.__version__, "commit": None, "dirty": None}
    try:
        git = lambda *a: subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True, check=True).stdout
        out["commit"] = git("rev-parse", "HEAD").strip()
        top = Path(git("rev-parse", "--show-toplevel").strip()).resolve()
        try:
            results = HERE.resolve().relative_to(top).as_posix() + "/results"   # results/, results-r32/, ...
        except ValueError:   # this script lies outside that checkout
            results = None
        changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
        changed = [f for f in changed if results is None or not f.startswith(results)]
        out["dirty"] = sorted(changed, key=lambda f: (not f.startswith("bssn_book/"), f))
    except (OSError, subprocess.CalledProcessError) as e:
        out["git"] = f"no commit recorded: {getattr(e, 'stderr', None) or e}".strip()
    return out


def collect(grid):
    """Rebuild RESULTS from the run folders. The run folders are not committed: a grid whose folders hold fewer finished
    runs than its committed runs.csv (a fresh clone, say) keeps its results untouched, with a message; returns False."""
    have, kept = finished_runs(grid)
    if have < kept:
        print(f"collect: {RESULTS.name}/ left as it is: its runs.csv has {kept} finished runs, {RUNS.name}/ only {have} "
              f"(train them first: run.py without --collect-only)")
        return False
    RESULTS.mkdir(parents=True, exist_ok=True)
    base = dict(json.loads(CONFIG.read_text()), **GRID_SETS)
    timings = read_timings(grid)
    runs, monitors, losses, mixture, metrics = [], [], [], [], []
    shutil.rmtree(RESULTS / "samples", ignore_errors=True)
    (RESULTS / "samples").mkdir()
    for g in grid:
        kind, scale, ring = g["kind"], g["scale"], g["data"] == "ring"
        for seed in g["seeds"]:
            name, d = run_name(g, seed), run_dir(g, seed)
            row = {"run": name, "config": g["name"], "kind": kind, "scale": scale, "gamma": g["gamma"] or "",
                   "setting": g["setting"], "data": g["data"], "seed": seed}
            done = d / "done.json"
            log = _read_rows(d / "log.jsonl")
            if done.exists():
                s = json.loads(done.read_text())
                m = s.get("metrics") or {}
                row.update(status="done", step=s["step"], fid=m.get("fid"), kid=m.get("kid"), inception_score=m.get("is"),
                           modes_covered=m.get("modes_covered"), high_quality=m.get("high_quality"),
                           steps_per_s=s.get("steps_per_s"),
                           threads=s.get("threads"))   # torch threads the run used: trajectories depend on it
            elif (d / "train.log").exists():
                text = (d / "train.log").read_text()
                status = "diverged" if "non-finite" in text else ("failed" if "error" in text.lower() else "incomplete")
                row.update(status=status,
                           step=max([r["step"] for r in log], default=0))
            else:
                row.update(status="missing")
                runs.append(row); continue
            tail = [r for r in log if r["step"] > (row["step"] or 0) - LAST_STEPS]
            row["loss_d_tail"] = sum(r["loss_d"] for r in tail) / len(tail) if tail else None
            row["loss_g_tail"] = sum(r["loss_g"] for r in tail) / len(tail) if tail else None
            row["d_gap_tail"] = sum(r["d_real"] - r["d_fake"] for r in tail) / len(tail) if tail else None
            if row["status"] == "done" and ring:
                tails = [row[k] for k in ("loss_d_tail", "loss_g_tail")]
                row["diverged"] = None if None in tails else not all(map(math.isfinite, tails))
                row["collapsed"] = None if row["modes_covered"] is None else bool(row["modes_covered"] < RING_MIN_MODES)
            elif row["status"] == "done":
                cfg = json.loads((d / "config.json").read_text())
                div_g, div_r = sample_diversity(d, cfg)
                row.update(diversity_fake=div_g, diversity_real=div_r, diversity_ratio=div_g / div_r)
                fid_ok = row["fid"] is not None and math.isfinite(row["fid"])
                row["diverged"] = not fid_ok
                hinge = cfg.get("loss", "hinge") == "hinge"   # only the hinge D loss has a floor that means "D wins"
                row["collapsed"] = bool(row["diversity_ratio"] < COLLAPSE_DIVERSITY or
                                        (hinge and row["loss_d_tail"] is not None and row["loss_d_tail"] < COLLAPSE_LOSS_D))
                png = sorted((d / "samples").glob("step-*.png"))
                if png and seed == 0:   # the chapter shows seed 0 of each configuration (and its earlier samples)
                    shutil.copy(png[-1], RESULTS / "samples" / f"{name}.png")
                    for earlier in png[:-1]:
                        shutil.copy(earlier, RESULTS / "samples" / f"{name}-{earlier.stem}.png")
            else:
                row["diverged"] = row["status"] == "diverged"
                row["collapsed"] = None
            row["wall_s"] = timings.get(name, {}).get("wall_s")
            runs.append(row)
            if ring:
                for r in _read_rows(d / "metrics.jsonl"):
                    mixture.append({"run": name, "config": g["name"], "seed": seed, **r})
                continue
            for r in _read_rows(d / "metrics.jsonl"):   # FID/KID/IS every metrics_every iterations
                metrics.append({"run": name, "config": g["name"], "kind": kind, "seed": seed, **r})
            layers = layer_order(log[0].keys()) if log else []
            for r in log:
                losses.append({"run": name, "config": g["name"], "seed": seed, "step": r["step"],
                               **{k: r.get(k) for k in ("loss_d", "loss_g", "d_real", "d_fake")}})
                for i, layer in enumerate(layers):
                    gr = r.get(f"grad/D/{layer}")
                    if gr is None: continue
                    sig = r.get(f"sigma/D/{layer}/sigma")
                    mult = r.get(f"sigma/D/{layer}/gamma", scale)   # the learnable gamma where there is one, else c
                    # gradient w.r.t. the normalized weight c W / sigma, projected: ||dL/dW_raw|| * sigma / c
                    gbar = gr if kind == "none" else (gr * sig / abs(mult) if sig is not None else None)
                    monitors.append({"run": name, "config": g["name"], "kind": kind, "seed": seed, "step": r["step"],
                                     "layer": layer, "layer_index": i, "grad_raw": gr, "grad_normalized": gbar,
                                     "sigma": sig, "multiplier": mult if kind != "none" else None,
                                     "fan_in_var": r.get(f"fan_in_var/D/{layer}")})

    def write(name, rows):
        (RESULTS / name).unlink(missing_ok=True)
        if not rows: return   # e.g. mixture.csv of the length check, which has no ring runs
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(RESULTS / name, "w", newline="") as f:
            w = csv.DictWriter(f, keys); w.writeheader()
            w.writerows({k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    write("runs.csv", runs); write("monitors.csv", monitors); write("losses.csv", losses)
    write("mixture.csv", mixture); write("metrics.csv", metrics)
    walls = [r["wall_s"] for r in runs if r.get("wall_s")]
    meta = {"config": base, "config_ring": json.loads(CONFIG_RING.read_text()), "settings": SETTINGS,
            "grid": [{k: (list(v) if k == "seeds" else v) for k, v in g.items()} for g in grid],
            "definitions": {"diverged": "stopped on a non-finite loss, or FID not finite",
                            "collapsed": f"diversity_ratio < {COLLAPSE_DIVERSITY} (per-pixel std across 1000 samples, "
                                         f"averaged over pixels, relative to real images) or, for the hinge loss, mean D "
                                         f"loss over the last {LAST_STEPS} iterations < {COLLAPSE_LOSS_D}; ring runs: fewer than "
                                         f"{RING_MIN_MODES} of the 8 modes covered",
                            "grad_normalized": "||dL/dW_raw|| * sigma / |c|: the norm of the gradient w.r.t. the "
                                               "normalized weight c W/sigma, projected orthogonally to W (c: the "
                                               "constant scale, or the learnable gamma logged at that step)"},
            "metrics": f"FID/KID/IS with bssn_book.metrics' offline MNIST extractor, {base['metrics_samples']} generated "
                       f"vs {base['metrics_samples']} real images, every {base['metrics_every']} iterations "
                       f"(metrics.csv) and at the last (runs.csv)",
            "per_run_wall_s": {"mean": sum(walls) / len(walls) if walls else None,
                               "min": min(walls, default=None), "max": max(walls, default=None), "n": len(walls)},
            "total_train_wall_s": sum(walls),
            "machine": MACHINE.get(RESULTS.name, "not recorded"),
            "code": code_version(),
            "collected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (RESULTS / "meta.json").write_text(json.dumps(meta, indent=1))
    print(f"collected {len(runs)} runs ({sum(r['status'] == 'done' for r in runs)} done) into {RESULTS}")
    return True


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--collect-only", action="store_true", help="only rebuild the result folders from the run folders (no training)")
    p.add_argument("--only", help="comma list of configuration names (e.g. sn-c1,bssn-c1.2): train only these")
    p.add_argument("--jobs", type=int, default=1, help="configurations trained at once (one core each; default 1)")
    p.add_argument("--resolution", type=int, nargs="*",
                   help=f"MNIST size(s) of the image runs, one grid each, in turn; config.json's size (16) uses runs/ "
                        "and results/, another size N runs-rN/ and results-rN/. With neither --resolution nor --long: "
                        f"{list(RESOLUTIONS)} (the two committed grids) and the length check; with only one of them, "
                        "only what it names")
    p.add_argument("--long", type=int, nargs="*",
                   help=f"size(s) of the length check ({', '.join(LONG_CONFIGS)} with {LONG_SETS}), in runs-rN-long/ "
                        f"and results-rN-long/, after the grids (with neither option: {list(LONG_RESOLUTIONS)})")
    a = p.parse_args()
    if a.resolution is None and a.long is None:   # with neither option: everything the chapter reads
        a.resolution, a.long = list(RESOLUTIONS), list(LONG_RESOLUTIONS)
    a.resolution, a.long = a.resolution or [], a.long or []   # with one of them: only what it names
    try:
        for res in a.resolution:   # every size checked before anything trains
            at_resolution(res)
        for res in a.long:
            at_resolution(res, long=True)
    except ValueError as e:
        p.error(str(e))
    names = [g["name"] for g in GRID]
    only = a.only.split(",") if a.only else names
    unknown = sorted(set(only) - set(names))
    if unknown: p.error(f"--only: unknown configuration(s) {', '.join(unknown)} (known: {', '.join(names)})")
    if a.jobs < 1: p.error(f"--jobs must be >= 1, got {a.jobs}")
    t0, left = time.perf_counter(), []
    for res, long in [(r, False) for r in a.resolution] + [(r, True) for r in a.long]:
        grid = at_resolution(res, long)
        if not a.collect_only:
            train([g for g in grid if g["name"] in only], a.jobs)
        left.extend([] if collect(grid) else [RESULTS.name])
    print(f"run.py: {time.perf_counter() - t0:.0f} s")
    if left:
        sys.exit(f"run.py: not collected (fewer finished runs than committed): {', '.join(left)}")
