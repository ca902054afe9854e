"""Training-loop speed of the `quick` preset: our Trainer against a plain PyTorch loop.

One iteration = n_dis (1) discriminator steps and one generator step of the `quick` preset (the paper's CNN
at width 0.25, MNIST 16x16x1, batch 32, hinge loss, Adam). Variants, timed round-robin in one process (a fresh
random order every repeat, as in run.py):

- `ours_bssn`: `Trainer(preset("quick")).train_step()` as the preset runs it (BSSN), monitors included on the
  preset's log steps (per-layer gradient norms every `log_every` iterations);
- `ours_sn`: the same with `norm="sn"` (our SN);
- `reference`: a plain PyTorch loop written the usual way: the same generator and discriminator classes with
  `torch.nn.utils.parametrizations.spectral_norm` on every conv/dense layer of D, D called on the real and the
  fake batch separately, the same batch, optimizer and learning rates.

Each figure is the median over repeats of iterations per second; ratios are ours / reference measured in the
same run (>= 1.0 is the goal), with run.py's 95% bootstrap interval. Peak memory: growth of the peak RSS during 20 iterations after warm-up (Linux:
VmHWM reset through /proc/self/clear_refs), and the process's peak RSS, in a fresh process per variant.

    python benchmarks/train_quick.py [--repeats 40] [--steps 5] [--threads N] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from bssn_book.data import load_mnist
from bssn_book.models import CNNDiscriminator, CNNGenerator
from bssn_book.train import Trainer, preset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import bootstrap_ci, check_counts, check_setup, ratio_of_medians, round_robin, write_result  # noqa: E402  (shared with run.py)

VARIANTS = ["reference", "ours_sn", "ours_bssn"]
BASELINE = "reference"
HERE = Path(__file__).resolve().parent


class Reference:
    "The plain loop: torch's spectral_norm, D(real) and D(fake) as two calls, hinge loss, Adam."
    def __init__(self, cfg, data):
        torch.manual_seed(cfg.seed)
        self.G = CNNGenerator(z_dim=cfg.z_dim, width=cfg.width, resolution=cfg.resolution, channels=cfg.channels)
        self.D = CNNDiscriminator(in_channels=cfg.channels, width=cfg.width, resolution=cfg.resolution)
        for m in self.D.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.utils.parametrizations.spectral_norm(m)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=cfg.betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=cfg.betas)
        self.data, self.b, self.z_dim, self.n_dis = data, cfg.batch_size, cfg.z_dim, cfg.n_dis
        self.perm, self.pos = torch.randperm(len(data)), 0

    def batch(self):
        if self.pos + self.b > len(self.data):
            self.perm, self.pos = torch.randperm(len(self.data)), 0
        idx = self.perm[self.pos:self.pos + self.b]
        self.pos += self.b
        return self.data[idx]

    def train_step(self):
        for _ in range(self.n_dis):
            real = self.batch()
            with torch.no_grad():
                fake = self.G(torch.randn(self.b, self.z_dim))
            loss_d = F.relu(1 - self.D(real)).mean() + F.relu(1 + self.D(fake)).mean()
            self.opt_D.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_D.step()
        loss_g = -self.D(self.G(torch.randn(self.b, self.z_dim))).mean()
        self.opt_G.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_G.step()


def build(variant, out_dir):
    cfg = preset("quick", device="cpu", progress=False, out_dir=str(out_dir / variant))
    data = load_mnist(size=cfg.resolution)
    if variant == "reference":
        return Reference(cfg, data)
    if variant == "ours_sn":
        cfg = cfg.replace(norm="sn")
    return Trainer(cfg, data=data, resume=False)


def time_all(repeats, steps, out_dir):
    "Median iterations/s per variant and every repeat's, timed by run.py's `round_robin` (fresh random order each repeat)."
    setups = {v: build(v, out_dir) for v in VARIANTS}
    secs = round_robin({v: setups[v].train_step for v in VARIANTS}, repeats, steps, warmup=3)
    its = {v: [1 / t for t in x] for v, x in secs.items()}
    return {v: statistics.median(x) for v, x in its.items()}, its


def _status_kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def measure_memory(variant, steps, out_dir):
    """(peak RSS growth during `steps` iterations, peak RSS) in bytes, in this process.

    Linux: the peak (VmHWM) is reset after 3 warm-up iterations through /proc/self/clear_refs, so the growth
    is the training loop's own; elsewhere ru_maxrss (a lifetime peak, so the growth can read 0)."""
    s = build(variant, Path(out_dir))
    for _ in range(3):
        s.train_step()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        base = _status_kb("VmRSS")
        for _ in range(steps):
            s.train_step()
        peak = _status_kb("VmHWM")
    except OSError:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        for _ in range(steps):
            s.train_step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return peak - base, peak


def peak_memory(variant, steps, out_dir):
    "`measure_memory` in a fresh process (so variants do not share an allocator)."
    code = ("import sys; sys.path.insert(0, %r); import train_quick as b; print(*b.measure_memory(%r, %d, %r))"
            % (str(HERE), variant, steps, str(out_dir)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    growth, total = map(int, out.stdout.strip().splitlines()[-1].split())
    return growth, total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--steps", type=int, default=5, help="iterations per timed repeat")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    ap.add_argument("--out", default=str(HERE / "results" / "train_quick.json"))
    args = ap.parse_args(argv)
    check_counts(ap, repeats=args.repeats, steps=args.steps)
    check_setup(ap, args.threads, args.out)
    torch.set_num_threads(args.threads)
    import shutil
    import tempfile
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))   # the trainers' run folders, removed at the end
    load = os.getloadavg()[0]
    try:
        med, raw = time_all(args.repeats, args.steps, tmp)
        rows = []
        print(f"{'variant':10} {'it/s':>8} {'x ref':>7} {'95% interval':>16} {'peak RSS +MB':>13} {'peak RSS MB':>12}")
        for v in VARIANTS:
            growth, total = peak_memory(v, 20, tmp)
            ratio, ci = ratio_of_medians(v, BASELINE)(raw), bootstrap_ci(raw, ratio_of_medians(v, BASELINE))
            rows.append(dict(variant=v, its_per_s=med[v], ratio_vs_reference=ratio, ratio_ci95=list(ci),
                             peak_rss_growth_mb=growth / 2**20, peak_rss_mb=total / 2**20, its_per_s_all=raw[v]))
            print(f"{v:10} {med[v]:8.2f} {ratio:7.3f}   [{ci[0]:.3f}, {ci[1]:.3f}] "
                  f"{growth / 2**20:13.1f} {total / 2**20:12.1f}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cfg = preset("quick")
    write_result(
        args.out,
        what=("iterations/s of the quick preset's training loop (1 D step + 1 G step, CNN width "
              f"{cfg.width}, MNIST {cfg.resolution}x{cfg.resolution}x{cfg.channels}, batch {cfg.batch_size}, "
              "hinge, Adam): our Trainer (BSSN as the preset, and SN) vs a plain PyTorch loop with torch's "
              "spectral_norm"),
        command="python benchmarks/train_quick.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        threads=args.threads, load_average_at_start=round(load, 2), repeats=args.repeats, steps_per_repeat=args.steps,
        rows=rows)


if __name__ == "__main__":
    main()
