"""Chapter 1's toy GAN: precompute the runs behind its widget (one command).

    cd <repo> && OMP_NUM_THREADS=1 .venv/bin/python experiments/toy/run.py --jobs 2

A GAN on a ring of eight Gaussians: MLP generator, MLP discriminator, the non-saturating loss, Adam.
For every normalization of D (none, SN, BSSN at several scales c), learning rate and seed it trains
one run, logs D's gradient norm, the product of its layers' spectral norms, the modes covered and the
losses every LOG_EVERY steps, keeps seed 0's samples at a few steps, and writes everything to
`results/toy.json` (the chapter reads it through `bssn_book.results.path("toy/toy.json")`).
The training code is the chapter's own (nbs/01_gan_failures.ipynb shows the same functions, and a
check there reruns the start of one run and compares it with this file).
"""
import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from bssn_book.norms import apply_norm

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# --- the toy (nbs/01_gan_failures.ipynb shows these functions) ----------------------
K, RADIUS, STD = 8, 2.0, 0.05
angles = 2 * math.pi * torch.arange(K) / K
centers = RADIUS * torch.stack([torch.cos(angles), torch.sin(angles)], 1)


def ring(n, gen):
    "n samples from the ring of K Gaussians."
    i = torch.randint(0, K, (n,), generator=gen)
    return centers[i] + STD * torch.randn(n, 2, generator=gen)


def make_gan(norm="none", c=1.0, width=64, depth=4):
    "G: 2 -> width -> width -> 2, ReLU; D: 2 -> `depth` layers of `width` -> 1."
    G = nn.Sequential(nn.Linear(2, width), nn.ReLU(),
                      nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 2))
    layers = [nn.Linear(2, width), nn.LeakyReLU(0.1)]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.LeakyReLU(0.1)]
    D = nn.Sequential(*layers, nn.Linear(width, 1))
    if norm != "none":  # "sn", or "bssn" with scale c (on a dense layer: c times SN)
        apply_norm(D, norm, scale=c)
    return G, D


def modes_covered(x, min_frac=0.02):
    "Modes with >= min_frac of the samples within 3 std; the fraction within 3 std."
    dist = torch.cdist(x, centers).min(1)
    good = dist.values < 3 * STD
    counts = torch.bincount(dist.indices[good], minlength=K)
    return int((counts >= min_frac * len(x)).sum()), float(good.float().mean())


def d_grad_norm(D, x):
    "||grad of mean D(x)|| w.r.t. D's effective weights and biases (chapter 4)."
    with parametrize.cached():  # the weights D's forward uses, normalized if D is
        params = [p for m in D if isinstance(m, nn.Linear) for p in (m.weight, m.bias)]
        grads = torch.autograd.grad(D(x).mean(), params)
    return math.sqrt(sum(float(g.pow(2).sum()) for g in grads))


def spectral_product(D):
    "Product of the spectral norms of D's effective weights."
    with torch.no_grad():
        return math.prod(float(torch.linalg.matrix_norm(m.weight, 2))
                         for m in D if isinstance(m, nn.Linear))


def snapshot(G, D, z_fixed, x_probe):
    "G's samples, the modes they cover, D's gradient norm and spectral product."
    D.eval()  # no power-iteration update while we measure
    with torch.no_grad():
        x = G(z_fixed)
    modes, good = modes_covered(x)
    row = dict(modes=modes, good=good, grad=d_grad_norm(D, x_probe),
               prod=spectral_product(D))
    D.train()
    return row, x


def train_gan(norm, c, lr, seed, steps=3000, every=50, keep=(), batch=128):
    "Non-saturating GAN, Adam(0.5, 0.999) for both; a log row every `every` steps."
    torch.manual_seed(seed)  # G's and D's initial weights
    gen = torch.Generator().manual_seed(seed)  # the data and the noise
    G, D = make_gan(norm, c)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    z_fixed, x_probe = torch.randn(500, 2, generator=gen), ring(500, gen)
    log, samples = [], {}
    for t in range(steps + 1):
        if t % every == 0:
            row, x = snapshot(G, D, z_fixed, x_probe)
            log.append(dict(step=t, **row))
            if t in keep:
                samples[t] = x
        if t == steps:
            break
        real, z = ring(batch, gen), torch.randn(batch, 2, generator=gen)
        opt_d.zero_grad()
        loss_d = F.softplus(-D(real)).mean() + F.softplus(D(G(z).detach())).mean()
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        F.softplus(-D(G(z))).mean().backward()  # non-saturating: -log s(D(G(z)))
        opt_g.step()
    return log, samples


# --- end of the toy ---------------------------------------------------------------------

# --- the grid ---------------------------------------------------------------------------
NORMS = {"none": [1.0], "sn": [1.0], "bssn": [0.5, 1.5, 3.0]}   # (normalization, its scales c)
LRS = [3e-4, 1e-3, 3e-3, 1e-2]
SEEDS = [0, 1, 2, 3, 4]
STEPS, EVERY = 3000, 50
KEEP = (500, 1500, 3000)        # steps at which seed 0's samples are kept
COMMAND = "OMP_NUM_THREADS=1 python experiments/toy/run.py --jobs 2"


def grid(lrs=None, seeds=None):
    "Every (norm, c, lr, seed) of the grid."
    return [(norm, c, lr, seed) for norm, cs in NORMS.items() for c in cs
            for lr in (lrs or LRS) for seed in (seeds or SEEDS)]


def _round(v, digits=6):
    return float(f"{v:.{digits}g}")


def one_run(args):
    "Train one run of the grid in this process (one torch thread) and return its record."
    norm, c, lr, seed, steps = args
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    keep = tuple(s for s in KEEP if s <= steps) if seed == SEEDS[0] else ()
    log, samples = train_gan(norm, c, lr, seed, steps=steps, every=EVERY, keep=keep)
    cols = {k: [r[k] if k in ("step", "modes") else _round(r[k]) for r in log] for k in log[0]}
    return {"norm": norm, "c": c, "lr": lr, "seed": seed, "log": cols,
            "samples": {str(s): [[round(float(a), 3) for a in p] for p in x.tolist()]
                        for s, x in samples.items()},
            "wall_s": round(time.perf_counter() - t0, 2)}


def code_version():
    "The commit and whether the files this result depends on differ from it."
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, check=True,
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", str(HERE / "run.py"),
                                "bssn_book"], cwd=HERE.parents[1], check=True,
                               capture_output=True, text=True).stdout.split("\n")
        return {"commit": commit, "dirty": [l[3:] for l in dirty if l.strip()]}
    except (OSError, subprocess.CalledProcessError) as e:
        return {"commit": None, "error": str(e)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once (one core each)")
    p.add_argument("--steps", type=int, default=STEPS, help="training steps per run (tests: fewer)")
    p.add_argument("--lrs", type=float, nargs="*", help="only these learning rates (tests)")
    p.add_argument("--seeds", type=int, nargs="*", help="only these seeds (tests)")
    p.add_argument("--out", type=Path, default=RESULTS / "toy.json", help="the result file")
    args = p.parse_args(argv)
    todo = [(*g, args.steps) for g in grid(args.lrs, args.seeds)]
    t0 = time.perf_counter()
    runs = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for i, r in enumerate(pool.map(one_run, todo) if args.jobs > 1 else map(one_run, todo)):
            runs.append(r)
            print(f"[{i + 1}/{len(todo)}] {r['norm']} c={r['c']:g} lr={r['lr']:g} seed={r['seed']}: "
                  f"{r['log']['modes'][-1]} modes at the end, {r['wall_s']:.1f} s", flush=True)
    meta = {"command": COMMAND, "ring": {"K": K, "radius": RADIUS, "std": STD},
            "gan": {"width": 64, "depth": 4, "z_dim": 2, "batch": 128, "betas": [0.5, 0.999],
                    "loss": "non-saturating", "activation_d": "leaky ReLU 0.1"},
            "steps": args.steps, "every": EVERY, "keep": [s for s in KEEP if s <= args.steps],
            "samples_of_seed": SEEDS[0], "n_probe": 500, "norms": NORMS,
            "lrs": args.lrs or LRS, "seeds": args.seeds or SEEDS,
            "modes_rule": "a mode is covered when at least 2% of the 500 samples of the fixed "
                          "noise lie within 3 std of its center",
            "torch": torch.__version__, "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, one torch thread per run, "
                       f"{args.jobs} run(s) at once",
            "code": code_version(), "total_wall_s": round(time.perf_counter() - t0, 1),
            "run_wall_s": round(sum(r["wall_s"] for r in runs), 1),
            "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "runs": runs}, separators=(",", ":")) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB) in {meta['total_wall_s']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
