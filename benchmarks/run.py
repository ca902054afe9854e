"""Discriminator training step: our normalizations against torch's spectral_norm.

One step = D(real) and D(fake) on a batch of 64 images 32x32x3, hinge loss,
backward, Adam step, on the paper's CNN discriminator (`CNNDiscriminator`), at
width 1.0 and 0.25, for: no normalization, torch's
`torch.nn.utils.parametrizations.spectral_norm`, and our `sn`, `bssn`,
`strict`. Variants are timed round-robin in one process (so drift hits all of
them alike); each figure is the median over repeats, and each ratio is against
torch's SN measured in the same run, with a 95% bootstrap interval (the
repeats resampled; this machine's clock moves by several percent from one
repeat to the next, so a ratio within several percent of 1 is not resolved, and the
interval says how far; the run records that noise itself, `clock_noise`). Peak memory is measured in a fresh process
per variant (peak RSS growth over the steps on CPU, reset through
/proc/self/clear_refs; `max_memory_allocated` on CUDA).

    python benchmarks/run.py [--repeats 25 45] [--steps 3] [--widths 1.0 0.25] [--out FILE]

`--repeats` takes one count per width (or one for all): a width-0.25 step costs several times less than a
width-1.0 step, so it gets more repeats (a narrower interval for its median) at a fraction of the time; a width
without a default of its own gets width 1.0's.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bssn_book.models import CNNDiscriminator
from bssn_book.norms import apply_norm

VARIANTS = ["none", "torch_sn", "sn", "bssn", "strict"]
DEFAULT_REPEATS = {1.0: 25, 0.25: 45}   # a width-0.25 step is several times cheaper: more repeats, narrower interval
BASELINE = "torch_sn"
HERE = Path(__file__).resolve().parent


def build(variant: str, width: float, device: torch.device):
    torch.manual_seed(0)
    D = CNNDiscriminator(in_channels=3, width=width, resolution=32).to(device)
    if variant == "torch_sn":
        for m in D.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.utils.parametrizations.spectral_norm(m)
    elif variant == "strict":
        apply_norm(D, "strict", example_input=torch.zeros(1, 3, 32, 32, device=device))
    elif variant != "none":
        apply_norm(D, variant, scale=1.0)
    D.train()
    opt = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(1)
    real = torch.randn(64, 3, 32, 32, generator=g).to(device)
    fake = torch.randn(64, 3, 32, 32, generator=g).to(device)
    return D, opt, real, fake


def step(D, opt, real, fake):
    opt.zero_grad(set_to_none=True)
    loss = F.relu(1 - D(real)).mean() + F.relu(1 + D(fake)).mean()
    loss.backward()
    opt.step()
    return loss


def sync(device):
    "Wait for `device` itself (a cuda:N other than the current device included) before a clock read."
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def round_robin(calls, repeats, steps, seed=0, sync=lambda: None, warmup=2):
    """Seconds per call of every callable in `calls` ({name: fn}), `repeats` times: each repeat times `steps` calls
    of each, the names in a fresh random order (so drift and ordering effects hit all alike), after `warmup` untimed
    calls each. Returns {name: [seconds per call, one per repeat]}; `sync` waits for the device before a clock read."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times = {v: [] for v in calls}
    rng = random.Random(seed)
    for _ in range(repeats):
        for v in rng.sample(list(calls), len(calls)):
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                calls[v]()
            sync()
            times[v].append((time.perf_counter() - t0) / steps)
    return times


def time_all(width, device, repeats, steps, fn=None, seed=0):
    """Median seconds per call of `fn(*setup)` (default: one D training step) for every variant, timed by
    `round_robin`. Returns the medians, the raw times, and per variant the repeat-by-repeat ratios to torch's SN timed
    in the same repeat."""
    fn = fn or step
    setups = {v: build(v, width, device) for v in VARIANTS}
    times = round_robin({v: (lambda s=setups[v]: fn(*s)) for v in VARIANTS}, repeats, steps, seed,
                        sync=lambda: sync(device))
    ratios = {v: [a / b for a, b in zip(times[v], times[BASELINE])] for v in VARIANTS}
    return {v: statistics.median(t) for v, t in times.items()}, times, ratios


def weights_step(D, opt, real, fake):
    """The normalization alone: every layer's (normalized) weight computed, as in a training forward (power iteration
    included), then the backward of <weight, G> for fixed random G. The same for every variant except the
    parametrization, so differences are the cost of the normalization (forward and backward)."""
    layers = [m for m in D.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    if not hasattr(D, "_bench_g"):
        g = torch.Generator().manual_seed(2)
        D._bench_g = [torch.randn(m.weight.shape, generator=g).to(real.device) for m in layers]
    loss = sum((m.weight * gm).sum() for m, gm in zip(layers, D._bench_g))
    loss.backward()
    for m in layers:
        for prm in m.parameters():
            prm.grad = None
    return loss


def bootstrap_ci(times, stat, n=2000, level=0.95, seed=0):
    """Percentile-bootstrap interval (`level`) of `stat(times)`, times = {name: [one value per repeat]}: `n` times, the
    repeats are drawn with replacement, the same draw for every name (one repeat timed all of them, in one stretch
    of the machine's speed), and `stat` is recomputed on the drawn repeats."""
    counts = {v: len(t) for v, t in times.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"bootstrap_ci: every name needs the same number of repeats, got {counts}")
    k = next(iter(counts.values()))
    rng = random.Random(seed)
    draws = sorted(stat({v: [t[i] for i in idx] for v, t in times.items()})
                   for idx in ([rng.randrange(k) for _ in range(k)] for _ in range(n)))
    tail = (1 - level) / 2
    return draws[round(tail * (n - 1))], draws[round((1 - tail) * (n - 1))]


def bootstrap_settings():
    "bootstrap_ci's draw count and level, which every interval of a run uses: recorded in the result file (Appendix B prints them)."
    params = inspect.signature(bootstrap_ci).parameters
    return {k: params[k].default for k in ("n", "level")}


def ratio_of_medians(v, base=BASELINE):
    return lambda t: statistics.median(t[v]) / statistics.median(t[base])


def overhead_ratio(v, base=BASELINE, zero="none"):
    """(median(v) - median(zero)) / (median(base) - median(zero)): the normalization's own cost against torch's;
    inf where torch's cost does not show above the unnormalized variant's (a device too fast to time it)."""
    def stat(t):
        z = statistics.median(t[zero])
        d = statistics.median(t[base]) - z
        return (statistics.median(t[v]) - z) / d if d > 0 else math.inf
    return stat


CLOCK = dict(repeats=40, n=1024, calls=10)   # clock_noise's defaults, also named in the result file


def clock_noise(device, repeats=CLOCK["repeats"], n=CLOCK["n"], calls=CLOCK["calls"]):
    """The machine's own timing noise, with nothing of this library involved: seconds for `calls` back-to-back
    n x n float32 matrix products, `repeats` times."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(device), torch.randn(n, n, generator=g).to(device)
    for _ in range(3):
        a @ b
    out = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            a @ b
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def check_counts(ap, **counts):
    """`ap.error` (exit 2, before any timing) unless every count is at least 2 for repeats (a median and an interval
    need two) and 1 otherwise; `counts`: {flag name: value or list of values}."""
    for flag, values in counts.items():
        low = 2 if "repeats" in flag else 1
        worst = min(values) if isinstance(values, (list, tuple)) else values
        if worst < low:
            ap.error(f"--{flag.replace('_', '-')} must be at least {low}, got {worst}")


def check_setup(ap, threads, out, device=None, widths=()):
    """`ap.error` (exit 2, before any timing) for a thread count below 1, a width the CNN refuses, a device torch
    cannot use here, or an --out that is a folder or cannot be created: all of them used to fail after minutes of
    timing, or at the final write with every measurement lost."""
    if threads < 1:
        ap.error(f"--threads must be at least 1, got {threads}")
    for w in widths:
        try:
            CNNDiscriminator(in_channels=3, width=w, resolution=32)
        except ValueError as e:
            ap.error(f"--widths {w}: {e}")
    if device is not None:
        try:
            torch.zeros(1, device=device)
        except (RuntimeError, AssertionError) as e:
            ap.error(f"--device {device}: {e}")
    out = Path(out)
    if out.is_dir():
        ap.error(f"--out {out} is a folder; give a file name")
    parent = next(p for p in [out.parent, *out.parent.parents] if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        ap.error(f"--out {out}: cannot be created ({parent} is not a writable folder)")


def write_result(out, **fields):
    """Write one benchmark's result to `out` as JSON, with what every result records about where it ran (torch
    version, machine, date); returns the dict written."""
    result = dict(fields, torch=torch.__version__, machine=f"{platform.machine()}, {os.cpu_count()} cores",
                  date=time.strftime("%Y-%m-%d"))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1))
    print("wrote", out)
    return result


def iqr(x):
    q = statistics.quantiles(x, n=4)
    return q[2] - q[0]


_PEAK_CODE = """
import sys, torch
sys.path.insert(0, {here!r})
import run as b

def status(key):  # kB -> bytes, from /proc/self/status
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

dev = torch.device({device!r})
s = b.build({variant!r}, {width!r}, dev)
if dev.type == "cuda":
    torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak RSS (VmHWM) to the current RSS
        f.write("5")
    base = status("VmRSS")
for _ in range({steps}):
    b.step(*s)
peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else status("VmHWM")
print(peak - base)
"""


def peak_memory(variant, width, device, steps):
    """Bytes of peak memory growth over `steps` steps, in a fresh process, measured from after the model
    is built: CUDA's peak allocation, or on CPU the peak resident set size (Linux: VmHWM, reset through
    /proc/self/clear_refs just before the first step; includes Adam's state and the activations)."""
    code = _PEAK_CODE.format(here=str(HERE), device=str(device), variant=variant, width=width, steps=steps)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, nargs="+", default=None,
                    help="timed repeats of the D step: one count for all widths or one per width (default: 25, "
                         "and 45 at width 0.25)")
    ap.add_argument("--steps", type=int, default=3, help="steps per timed repeat")
    ap.add_argument("--norm-repeats", type=int, default=30, help="repeats of the normalization-only timing")
    ap.add_argument("--norm-steps", type=int, default=10, help="calls per normalization-only repeat")
    ap.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.25])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(HERE / "results" / "d_step.json"))
    args = ap.parse_args(argv)
    if len(set(args.widths)) != len(args.widths):
        ap.error(f"--widths: each width once, got {' '.join(map(str, args.widths))}")
    if args.repeats is None:
        repeats = {w: DEFAULT_REPEATS.get(w, DEFAULT_REPEATS[1.0]) for w in args.widths}
    elif len(args.repeats) in (1, len(args.widths)):
        repeats = dict(zip(args.widths, args.repeats * len(args.widths) if len(args.repeats) == 1 else args.repeats))
    else:
        ap.error(f"--repeats takes one count or one per width ({len(args.widths)}), got {len(args.repeats)}")
    check_counts(ap, repeats=list(repeats.values()), norm_repeats=args.norm_repeats, steps=args.steps,
                 norm_steps=args.norm_steps)
    check_setup(ap, args.threads, args.out, args.device, args.widths)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clock = clock_noise(device)
    clock_what = (f"seconds for {CLOCK['calls']} back-to-back products of two {CLOCK['n']}x{CLOCK['n']} float32 "
                  f"matrices, per repeat ({CLOCK['repeats']} repeats): the machine's own timing noise")
    print(f"clock: {clock_what}: median {1e3 * statistics.median(clock):.1f} ms, IQR "
          f"{iqr(clock) / statistics.median(clock):.1%} of it, range {1e3 * min(clock):.1f}-{1e3 * max(clock):.1f} ms",
          flush=True)
    rows, norm_rows = [], []
    for width in args.widths:
        med, raw, ratios = time_all(width, device, repeats[width], args.steps)
        for v in VARIANTS:
            mem = peak_memory(v, width, device, steps=3)
            ratio, ci = ratio_of_medians(v)(raw), bootstrap_ci(raw, ratio_of_medians(v))
            rows.append(dict(width=width, variant=v, repeats=repeats[width], median_s=med[v], iqr_s=iqr(raw[v]),
                             ratio_vs_torch_sn=ratio, ratio_ci95=list(ci),
                             paired_ratio_median=statistics.median(ratios[v]), paired_ratio_iqr=iqr(ratios[v]),
                             peak_mem_mb=mem / 2**20, times_s=raw[v]))
            print(f"width {width:4}  {v:9}  median {1e3 * med[v]:8.1f} ms  "
                  f"x{ratio:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] vs torch SN (paired "
                  f"{statistics.median(ratios[v]):.3f}, IQR {iqr(ratios[v]):.3f})  peak +{mem / 2**20:7.1f} MB", flush=True)
        nmed, nraw, _ = time_all(width, device, args.norm_repeats, args.norm_steps, fn=weights_step)
        base = nmed["none"]
        for v in VARIANTS:
            over = nmed[v] - base
            ratio = overhead_ratio(v)(nraw) if v != "none" else None
            ci = bootstrap_ci(nraw, overhead_ratio(v)) if v != "none" else None
            norm_rows.append(dict(width=width, variant=v, median_s=nmed[v], overhead_s=over,
                                  overhead_ratio_vs_torch_sn=ratio, overhead_ratio_ci95=list(ci) if ci else None,
                                  times_s=nraw[v]))
            print(f"width {width:4}  {v:9}  weights fwd+bwd {1e3 * nmed[v]:7.2f} ms  normalization "
                  f"{1e3 * over:6.2f} ms" + (f"  x{ratio:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] vs torch SN" if ci else ""),
                  flush=True)
    write_result(
        args.out,
        what="paper CNN discriminator training step, batch 64, 32x32x3, hinge loss, Adam",
        command="make bench  (python benchmarks/run.py " + " ".join(argv or sys.argv[1:]) + ")",
        device=str(device), threads=args.threads, repeats={str(w): n for w, n in repeats.items()},
        steps_per_repeat=args.steps, rows=rows,
        bootstrap=bootstrap_settings(),
        clock=dict(what=clock_what, median_s=statistics.median(clock), iqr_s=iqr(clock), times_s=clock),
        normalization_only=dict(what="all layers' weights computed (power iteration included) and the backward of "
                                     "<weight, G>: the normalization's own cost; overhead = time - the unnormalized "
                                     "variant's", repeats=args.norm_repeats, steps_per_repeat=args.norm_steps,
                                rows=norm_rows))


if __name__ == "__main__":
    main()
