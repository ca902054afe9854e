"""Chapter 9's first slice of experiments: regenerate every result file with one command.

    cd <repo> && OMP_NUM_THREADS=1 .venv/bin/python experiments/ch9/run.py            # train what is missing, then collect
    OMP_NUM_THREADS=1 .venv/bin/python experiments/ch9/run.py --collect-only           # rebuild results/ from runs/

Training goes through `bssn-book sweep` (one sweep per normalization kind and scale, `--jobs 1`), so the
script is resumable: a run whose `done.json` exists is skipped. Runs live in `experiments/ch9/runs/`
(not committed: checkpoints, logs); the collected result files in `experiments/ch9/results/` are committed.

Measured duration (2026-11-25, shared 2-core CPU, one process, OMP_NUM_THREADS=1, other engineers' jobs running):
19 runs of 500 iterations, 39-126 s each (mean 78 s, load-dependent), 1484 s = 24.7 min of training in all;
the whole script about 26 min from scratch (training plus ~20 s of collection). `results/meta.json` records
`per_run_wall_s` and `total_train_wall_s`; rerunning with every run done only re-collects (~20 s).

Definitions (used by `collect`, stated again in the chapter):
- diverged: the run stopped on a non-finite loss (bssn-book's NonFiniteLossError) or its FID is not finite.
- collapsed: the final generator's samples have almost no diversity, i.e. the mean over pixels of the
  per-pixel standard deviation across 1000 samples is below COLLAPSE_DIVERSITY x that of the real images,
  or D wins outright: the mean hinge D loss over the last LAST_STEPS iterations is below COLLAPSE_LOSS_D.
"""
import argparse, csv, json, math, os, shutil, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS, RESULTS, CONFIG = HERE / "runs", HERE / "results", HERE / "config.json"

# Priority order: the claims 1 and 2 first (sn, strict, bssn), then the unnormalized run (claim 5), then the rest.
# c = 1.2 for the scaled kinds: the smallest scale > 1 of the paper's CIFAR-10 sweep; chapter 7 predicts
# a c* a little above 2 for the paper's CNN at init.
# Last, BSSN at c = 2.2 (chapter 7's prediction) for a three-point look at claim 4 (BSN = BSSN at c = 1).
GRID = [("sn", 1.0, (0, 1, 2)), ("strict", 1.0, (0, 1, 2)), ("bssn", 1.2, (0, 1, 2)), ("none", 1.0, (0,)),
        ("ssn", 1.2, (0, 1, 2)), ("bsn", 1.0, (0, 1, 2)), ("bssn", 2.2, (0, 1, 2))]
COLLAPSE_DIVERSITY, COLLAPSE_LOSS_D, LAST_STEPS = 0.25, 0.05, 50


def group_dir(kind, scale): return RUNS / f"{kind}-c{scale:g}"
def run_name(kind, scale, seed): return f"{kind}-c{scale:g}-seed{seed}"


def train(grid):
    RESULTS.mkdir(parents=True, exist_ok=True)
    tpath = RESULTS / "timings.json"
    timings = json.loads(tpath.read_text()) if tpath.exists() else {}
    env = dict(os.environ); env.setdefault("OMP_NUM_THREADS", "1")
    for kind, scale, seeds in grid:
        out = group_dir(kind, scale)
        cmd = [sys.executable, "-c", "import sys; from bssn_book.cli import main; sys.exit(main())", "sweep",
               "--config", str(CONFIG), "--kinds", kind, "--scales", f"{scale:g}", "--seeds", ",".join(map(str, seeds)),
               "--jobs", "1", "--out", str(out)]
        print(" ".join(cmd[3:]), flush=True)
        rc = subprocess.run(cmd, env=env).returncode
        print(f"sweep {kind} c={scale:g}: exit {rc}", flush=True)
        summary = out / "summary.json"
        if summary.exists():
            for r in json.loads(summary.read_text()):
                if not str(r["status"]).startswith("skipped") and r.get("time_s"):
                    timings[r["run"]] = {"wall_s": r["time_s"], "status": r["status"],
                                         "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        tpath.write_text(json.dumps(timings, indent=1, sort_keys=True))


def _rows(path):
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


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


def read_timings():
    "Wall time of every run that actually trained (sweep summaries; skipped runs keep their first measurement)."
    tpath = RESULTS / "timings.json"
    timings = json.loads(tpath.read_text()) if tpath.exists() else {}
    for summary in sorted(RUNS.glob("*/summary.json")):
        for r in json.loads(summary.read_text()):
            if not str(r["status"]).startswith("skipped") and r.get("time_s") and r["run"] not in timings:
                timings[r["run"]] = {"wall_s": r["time_s"], "status": r["status"]}
    tpath.write_text(json.dumps(timings, indent=1, sort_keys=True))
    return timings


def collect(grid):
    RESULTS.mkdir(parents=True, exist_ok=True)
    base = json.loads(CONFIG.read_text())
    timings = read_timings()
    runs, monitors, losses = [], [], []
    (RESULTS / "samples").mkdir(exist_ok=True)
    for kind, scale, seeds in grid:
        for seed in seeds:
            name = run_name(kind, scale, seed)
            d = group_dir(kind, scale) / name
            row = {"run": name, "kind": kind, "scale": scale, "seed": seed}
            done = d / "done.json"
            log = _rows(d / "log.jsonl")
            if done.exists():
                s = json.loads(done.read_text())
                m = s.get("metrics") or {}
                row.update(status="done", step=s["step"], fid=m.get("fid"), kid=m.get("kid"), inception_score=m.get("is"),
                           steps_per_s=s.get("steps_per_s"))
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
            if row["status"] == "done":
                cfg = json.loads((d / "config.json").read_text())
                div_g, div_r = sample_diversity(d, cfg)
                row.update(diversity_fake=div_g, diversity_real=div_r, diversity_ratio=div_g / div_r)
                fid_ok = row["fid"] is not None and math.isfinite(row["fid"])
                row["diverged"] = not fid_ok
                row["collapsed"] = bool(row["diversity_ratio"] < COLLAPSE_DIVERSITY or
                                        (row["loss_d_tail"] is not None and row["loss_d_tail"] < COLLAPSE_LOSS_D))
                png = sorted((d / "samples").glob("step-*.png"))
                if png: shutil.copy(png[-1], RESULTS / "samples" / f"{name}.png")
            else:
                row["diverged"] = row["status"] == "diverged"
                row["collapsed"] = None
            row["wall_s"] = timings.get(name, {}).get("wall_s")
            runs.append(row)
            layers = layer_order(log[0].keys()) if log else []
            for r in log:
                losses.append({"run": name, "kind": kind, "scale": scale, "seed": seed, "step": r["step"],
                               **{k: r.get(k) for k in ("loss_d", "loss_g", "d_real", "d_fake")}})
                for i, layer in enumerate(layers):
                    g = r.get(f"grad/D/{layer}")
                    if g is None: continue
                    sig = r.get(f"sigma/D/{layer}/sigma")
                    # gradient w.r.t. the normalized weight c W / sigma, projected: ||dL/dW_raw|| * sigma / c
                    gbar = g if kind == "none" else (g * sig / scale if sig is not None else None)
                    monitors.append({"run": name, "kind": kind, "scale": scale, "seed": seed, "step": r["step"],
                                     "layer": layer, "layer_index": i, "grad_raw": g, "grad_normalized": gbar,
                                     "sigma": sig, "fan_in_var": r.get(f"fan_in_var/D/{layer}")})

    def write(name, rows):
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(RESULTS / name, "w", newline="") as f:
            w = csv.DictWriter(f, keys); w.writeheader()
            w.writerows({k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    write("runs.csv", runs); write("monitors.csv", monitors); write("losses.csv", losses)
    walls = [r["wall_s"] for r in runs if r.get("wall_s")]
    meta = {"config": base, "grid": [{"kind": k, "scale": c, "seeds": list(s)} for k, c, s in grid],
            "definitions": {"diverged": "stopped on a non-finite loss, or FID not finite",
                            "collapsed": f"diversity_ratio < {COLLAPSE_DIVERSITY} (per-pixel std across 1000 samples, "
                                         f"averaged over pixels, relative to real images) or mean hinge D loss over the "
                                         f"last {LAST_STEPS} iterations < {COLLAPSE_LOSS_D}",
                            "grad_normalized": "||dL/dW_raw|| * sigma / c: the norm of the gradient w.r.t. the "
                                               "normalized weight c W/sigma, projected orthogonally to W"},
            "metrics": f"FID/KID/IS with bssn_book.metrics' offline MNIST extractor, {base['metrics_samples']} generated "
                       f"vs {base['metrics_samples']} real images, at the last iteration",
            "per_run_wall_s": {"mean": sum(walls) / len(walls) if walls else None,
                               "min": min(walls, default=None), "max": max(walls, default=None), "n": len(walls)},
            "total_train_wall_s": sum(walls),
            "machine": "shared 2-core CPU, one training process, OMP_NUM_THREADS=1, other engineers' jobs running",
            "collected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (RESULTS / "meta.json").write_text(json.dumps(meta, indent=1))
    print(f"collected {len(runs)} runs ({sum(r['status'] == 'done' for r in runs)} done) into {RESULTS}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--collect-only", action="store_true", help="only rebuild results/ from runs/")
    p.add_argument("--kinds", help="comma list: train only these kinds of the grid (default: all, in priority order)")
    a = p.parse_args()
    grid = [g for g in GRID if not a.kinds or g[0] in a.kinds.split(",")]
    t0 = time.perf_counter()
    if not a.collect_only:
        train(grid)
    collect(GRID)
    print(f"run.py: {time.perf_counter() - t0:.0f} s")
