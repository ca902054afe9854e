"""Where a normalized discriminator step spends its extra time: torch.profiler on the D step of `run.py`.

For each width and variant, `--steps` D steps (the same `run.step`: D(real), D(fake), hinge loss, backward, Adam)
run under `torch.profiler` after warm-up steps, on ONE thread (a stable breakdown; absolute times are the
profiler's, inflated by its per-operator overhead). Every operator is charged to one part of the step:

- `forward: normalization`  everything inside the parametrization's call (power iteration, sigma, W * c / sigma;
                             marked with `record_function` around each layer's ParametrizationList)
- `forward: <op>`           the network's own forward operators (convolution, activation, loss ...)
- `backward: <Node>`        one autograd node's backward (e.g. ConvolutionBackward0, or a normalization's
                             MulBackward0 / _BidirectionalScaleBackward), its operators included
- `optimizer`               Adam's step;  `zero_grad`;  `python (outside operators)`: the rest of the step
The extra cost of a variant is its per-step time per part minus the unnormalized network's; the JSON lists the
parts, the extra per part, and the parts each autograd node belongs to (the normalization's backward nodes are the
ones the unnormalized graph does not have).

    python benchmarks/profile_step.py [--widths 0.25 1.0] [--steps 5] [--variants none torch_sn sn bssn strict]
                                      [--out FILE]
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("KINETO_LOG_LEVEL", "5")   # the profiler's start/stop lines on stderr
import random
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.autograd.profiler import record_function
from torch.nn.utils import parametrize

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as bench  # noqa: E402

NORM_REGION = "normalization"
BACKWARD_PREFIX = "autograd::engine::evaluate_function: "
STEP_REGION = "d_step"   # around each profiled step: its self time is Python's outside every operator


def mark_normalization(D):
    """Wrap each parametrization list's forward (the normalized weight's computation) in record_function, so that
    the profiler charges its operators to the normalization. Returns D."""
    for m in D.modules():
        if isinstance(m, parametrize.ParametrizationList):
            inner = m.forward

            def forward(*a, _inner=inner, **k):
                with record_function(NORM_REGION):
                    return _inner(*a, **k)
            m.forward = forward
    return D


def part_of(event):
    """The part of the step an event is charged to (see the module docstring), from its chain of parents."""
    chain, e = [], event
    while e is not None:
        chain.append(e.name)
        e = e.cpu_parent
    for name in reversed(chain):   # outermost first
        if name == NORM_REGION:
            return "forward: normalization"
        if name.startswith(BACKWARD_PREFIX):
            return "backward: " + name[len(BACKWARD_PREFIX):]
        if name.startswith("Optimizer.step"):
            return "optimizer"
        if name.startswith("Optimizer.zero_grad"):
            return "zero_grad"
    names = [n for n in reversed(chain) if n != STEP_REGION]
    return "forward: " + names[0] if names else "python (outside operators)"


CACHED = "+cached"   # suffix: the same variant with each step run under torch's parametrize.cached()


def make_step(variant, width):
    """(setup, step function) of a variant: run.py's, or for "<variant>+cached" run.py's step under
    `torch.nn.utils.parametrize.cached()`: each normalized weight computed once per step (one power-iteration update
    per step, D(real) and D(fake) sharing it) instead of once per forward."""
    base = variant.removesuffix(CACHED)
    setup = bench.build(base, width, torch.device("cpu"))
    mark_normalization(setup[0])
    if variant == base:
        return setup, bench.step

    def cached_step(*s):
        with parametrize.cached():
            return bench.step(*s)
    return setup, cached_step


def _top_level_op(e):
    "An operator called by Python or by an autograd node, not from inside another operator."
    return e.name.startswith("aten::") and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))


def profile_steps(setup, steps, step=bench.step):
    """Per part of `steps` D steps on `setup` (run.build's): microseconds per step (self time summed over the part's
    events, so nothing is counted twice) and operators per step (top-level aten calls: a count the machine's noise
    does not touch); and the profiled steps' total microseconds per step."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            with record_function(STEP_REGION):
                step(*setup)
    us, ops = defaultdict(float), defaultdict(int)
    total = 0.0
    for e in prof.events():
        if e.name == STEP_REGION:
            total += e.cpu_time_total
        part = part_of(e)
        us[part] += e.self_cpu_time_total
        ops[part] += _top_level_op(e)
    return {k: v / steps for k, v in us.items()}, {k: v / steps for k, v in ops.items()}, total / steps


def wall_step_ms(width, variants, steps, repeats):
    """Median milliseconds per D step of each variant without the profiler, timed round-robin by run.py's
    `round_robin` (`repeats` repeats of `steps` steps); a sanity check of the profiled totals, not a benchmark."""
    setups = {v: make_step(v, width) for v in variants}
    times = bench.round_robin({v: (lambda s=s, fn=fn: fn(*s)) for v, (s, fn) in setups.items()}, repeats, steps)
    return {v: 1e3 * statistics.median(t) for v, t in times.items()}


def profile_variants(width, variants, steps, rounds, seed=0, warmup=3):
    """`profile_steps` of every variant, `rounds` times in a fresh random order each round (the machine's drift hits
    all alike); per part the median over rounds (a part a round lacks counts 0 there), the operator counts (the same
    every round), and each round's total."""
    setups = {v: make_step(v, width) for v in variants}
    for s, fn in setups.values():
        for _ in range(warmup):
            fn(*s)
    profile_steps(*setups[variants[0]][:1], 1)   # the profiler's own first-use cost, charged to no variant
    got = {v: [] for v in variants}
    rng = random.Random(seed)
    for _ in range(rounds):
        for v in rng.sample(list(variants), len(variants)):
            got[v].append(profile_steps(setups[v][0], steps, setups[v][1]))
    out = {}
    for v, runs in got.items():
        keys = set().union(*(p for p, _, _ in runs))
        out[v] = ({k: statistics.median(p.get(k, 0.0) for p, _, _ in runs) for k in keys}, runs[0][1],
                  [t for _, _, t in runs])
    return out


def breakdown(width, variants, steps, rounds):
    """The per-part table of every variant at one width, each one's extra per part over the unnormalized network, and
    the normalization's own share: its forward region and the backward nodes the unnormalized graph does not have
    (`normalization_us`, `normalization_ops`)."""
    prof = profile_variants(width, variants, steps, rounds)
    base, base_ops, base_totals = prof["none"]
    base_total = statistics.median(base_totals)
    rows = []
    for v in variants:
        parts, ops, totals = prof[v]
        total = statistics.median(totals)
        keys = sorted(set(parts) | set(base), key=lambda k: -(parts.get(k, 0) - base.get(k, 0)))
        own = [k for k in parts if k not in base or k == "forward: " + NORM_REGION]
        rows.append(dict(variant=v, step_us=total, step_us_rounds=totals, extra_us=total - base_total,
                         normalization_us=sum(parts[k] for k in own), normalization_ops=sum(ops[k] for k in own),
                         parts_us=parts, ops_per_step=ops,
                         extra_by_part_us={k: parts.get(k, 0.0) - base.get(k, 0.0) for k in keys},
                         extra_ops_by_part={k: ops.get(k, 0) - base_ops.get(k, 0) for k in keys},
                         normalization_parts=sorted(own)))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=float, nargs="+", default=[0.25, 1.0])
    ap.add_argument("--steps", type=int, default=5, help="profiled D steps per variant (after 3 warm-up steps)")
    ap.add_argument("--rounds", type=int, default=5, help="profiled rounds (each variant once per round, "
                    "in a fresh random order); each figure is the median over rounds")
    choices = bench.VARIANTS + [v + CACHED for v in bench.VARIANTS if v != "none"]
    ap.add_argument("--variants", nargs="+", default=bench.VARIANTS + ["sn" + CACHED, "bssn" + CACHED],
                    choices=choices, metavar="VARIANT",
                    help=f"run.py's variants, or one of them with '{CACHED}': its step under parametrize.cached() "
                         f"(choices: {' '.join(choices)})")
    ap.add_argument("--wall-repeats", type=int, default=5, help="unprofiled repeats of --steps steps (0: none)")
    ap.add_argument("--out", default=str(HERE / "results" / "profile_step.json"))
    args = ap.parse_args(argv)
    if "none" not in args.variants:
        ap.error("--variants: the unnormalized network 'none' is the reference and must be included")
    bench.check_counts(ap, steps=args.steps, rounds=args.rounds)
    if args.wall_repeats < 0:
        ap.error(f"--wall-repeats must be at least 0, got {args.wall_repeats}")
    bench.check_setup(ap, 1, args.out, "cpu", args.widths)
    torch.set_num_threads(1)   # one thread: a stable breakdown (several threads add their own waits)
    widths = []
    for width in args.widths:
        rows = breakdown(width, args.variants, args.steps, args.rounds)
        wall = wall_step_ms(width, args.variants, args.steps, args.wall_repeats) if args.wall_repeats else {}
        for r in rows:
            r["wall_step_ms"] = wall.get(r["variant"])
            top = sorted(r["extra_by_part_us"].items(), key=lambda kv: -abs(kv[1]))[:4]
            print(f"width {width:4}  {r['variant']:11} step {r['step_us'] / 1e3:7.2f} ms (profiled), "
                  f"{r['wall_step_ms'] or float('nan'):7.2f} ms (not profiled); extra "
                  f"{r['extra_us'] / 1e3:+6.2f} ms, {sum(r['extra_ops_by_part'].values()):+5} ops: "
                  + ", ".join(f"{k} {x / 1e3:+.2f}" for k, x in top), flush=True)
        widths.append(dict(width=width, rows=rows))
    bench.write_result(
        args.out,
        what="one D step of benchmarks/run.py (batch 64, 32x32x3, D(real) and D(fake), hinge, backward, Adam) under "
             "torch.profiler on one thread; per part of the step, self CPU microseconds per step (the profiler's "
             "own overhead included), and the extra over the unnormalized network",
        command="python benchmarks/profile_step.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        threads=1, steps=args.steps, rounds=args.rounds, widths=widths)


if __name__ == "__main__":
    main()
