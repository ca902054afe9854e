"""The cost of the reproducible-numerics mode: training time with numerics="avx2" against the machine's own kernels.

`TrainConfig(numerics="avx2")` caps ATen, oneDNN and MKL at AVX2 (bssn_book.train.NUMERICS) so that every x86-64
CPU with AVX2 computes the same digits; on a CPU with wider vectors (AVX-512) that can cost speed. The variables
are read when torch loads, so each measurement is a fresh process: per repeat, one process per variant (in a
fresh random order), each training the same short run and timing its training steps (after `warmup` untimed
steps; process start and imports are not timed):

- `native`: numerics=None, this machine's fastest kernels;
- `avx2`: numerics="avx2", started with `numerics_env("avx2")`.

The default run is the golden runs' setting (chapter 8's 16x16 grid: the paper's CNN at width 1/8, MNIST 16x16,
batch 64, SN, hinge, Adam), one torch thread. Figures: the median over repeats of seconds per iteration per
variant, and the ratio avx2 / native of the medians with run.py's 95% bootstrap interval (repeats resampled
together, each repeat timed both variants in one stretch of the machine's speed).

    python benchmarks/numerics_cost.py [--repeats 7] [--iterations 100] [--threads 1] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

from bssn_book.train import numerics_env

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import bootstrap_ci, check_counts, check_setup, ratio_of_medians, write_result  # noqa: E402

HERE = Path(__file__).resolve().parent
VARIANTS = {"native": None, "avx2": "avx2"}   # variant: numerics mode
BASELINE = "native"
# the golden runs' setting (experiments/evidence/config.json), trained for --iterations
RUN = dict(dataset="mnist", model="cnn", resolution=16, channels=1, width=0.125, z_dim=128, norm="sn",
           loss="hinge", n_dis=1, lr_g=1e-4, lr_d=1e-4, betas=[0.5, 0.999], batch_size=64, log_every=10,
           sample_every=0, metrics_every=0, checkpoint_every=0, device="cpu", progress=False)

CHILD = """
import json, sys, tempfile, time
import torch
from bssn_book.train import Trainer, TrainConfig
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
cfg = TrainConfig.from_dict(dict(spec["run"], out_dir=tempfile.mkdtemp(), threads=spec["threads"],
                                 iterations=spec["warmup"] + spec["iterations"], numerics=spec["numerics"]))
t = Trainer(cfg, resume=False)
for _ in range(spec["warmup"]):
    t.train_step()
t0 = time.perf_counter()
for _ in range(spec["iterations"]):
    t.train_step()
dt = time.perf_counter() - t0
print(json.dumps({"s_per_it": dt / spec["iterations"], "capability": torch.backends.cpu.get_cpu_capability()}))
"""


def time_one(numerics, run, iterations, warmup, threads):
    "(seconds per training iteration, ATen's CPU capability) of one fresh process under `numerics`."
    env = {k: v for k, v in os.environ.items() if k not in numerics_env("avx2")}
    env.update(numerics_env(numerics), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    spec = dict(run=run, iterations=iterations, warmup=warmup, threads=threads, numerics=numerics)
    p = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], env=env, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"the {numerics or 'native'} run failed: {p.stderr.strip()[-2000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return r["s_per_it"], r["capability"]


def time_all(repeats, iterations, warmup, threads, run, seed=0):
    """{variant: [seconds per iteration, one per repeat]} and {variant: ATen's capability}; each repeat runs every
    variant once, in a fresh random order."""
    rng = random.Random(seed)
    times, caps = {v: [] for v in VARIANTS}, {}
    for _ in range(repeats):
        for v in rng.sample(list(VARIANTS), len(VARIANTS)):
            s, caps[v] = time_one(VARIANTS[v], run, iterations, warmup, threads)
            times[v].append(s)
    return times, caps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="processes per variant")
    ap.add_argument("--iterations", type=int, default=100, help="timed training iterations per process")
    ap.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--width", type=float, default=RUN["width"])
    ap.add_argument("--batch-size", type=int, default=RUN["batch_size"])
    ap.add_argument("--out", default=str(HERE / "results" / "numerics_cost.json"))
    args = ap.parse_args(argv)
    check_counts(ap, repeats=args.repeats, iterations=args.iterations)
    check_setup(ap, args.threads, args.out, widths=[args.width])
    if args.warmup < 0:
        ap.error(f"--warmup must be at least 0, got {args.warmup}")
    if args.batch_size < 1:
        ap.error(f"--batch-size must be at least 1, got {args.batch_size}")
    run = dict(RUN, width=args.width, batch_size=args.batch_size)
    load = os.getloadavg()[0]
    times, caps = time_all(args.repeats, args.iterations, args.warmup, args.threads, run)
    ratio = ratio_of_medians("avx2", BASELINE)(times)
    lo, hi = bootstrap_ci(times, ratio_of_medians("avx2", BASELINE))
    rows = [dict(variant=v, numerics=VARIANTS[v], cpu_capability=caps[v], s_per_it=statistics.median(times[v]),
                 s_per_it_all=times[v]) for v in VARIANTS]
    for r in rows:
        print(f"{r['variant']:7} {r['cpu_capability']:8} {r['s_per_it'] * 1e3:8.2f} ms/it")
    print(f"avx2 / native: {ratio:.3f} [{lo:.3f}, {hi:.3f}]")
    return write_result(
        args.out,
        what=("seconds per training iteration with numerics='avx2' (ATen, oneDNN, MKL capped at AVX2) and with "
              "this machine's own kernels, each in a fresh process; the paper's CNN at width "
              f"{run['width']}, MNIST 16x16, batch {run['batch_size']}, SN, hinge, Adam"),
        command="python benchmarks/numerics_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        threads=args.threads, load_average_at_start=round(load, 2), repeats=args.repeats,
        iterations=args.iterations, warmup=args.warmup, run=run, rows=rows, ratio_avx2_vs_native=ratio,
        ratio_ci95=[lo, hi])


if __name__ == "__main__":
    main()
