"""The GPU check (`make gpu-check`): what this CPU-only project cannot test here, in one command on one CUDA GPU.

1. The CUDA-only tests (the ones pytest skips without a GPU: `CUDA_TESTS`), none of them allowed to skip.
2. The discriminator step of `run.py` (batch 64, 32x32x3, hinge, Adam) for the unnormalized network, torch's
   spectral_norm and our sn, bssn, strict, in three modes: eager, `torch.compile`, bf16 autocast; the median time
   per step, the ratio to torch's SN in the same mode, and the peak memory of the step.
3. The `paper-cifar10` preset (the paper's CNN at full width, BSSN, batch 64) for a few hundred iterations on
   CIFAR-shaped synthetic data (made here: nothing is downloaded), through `Trainer.fit`: iterations per second
   and peak memory.
It prints each figure as it goes and writes `results/gpu_check.json` (appendix B shows it; the CPU path writes to
the temporary folder unless --out is given). It fails (exit 1, a
message) when no CUDA GPU is visible, unless `--device cpu` is given: the CPU path with tiny sizes (width 1/16,
batch 8, a few iterations, no torch.compile unless asked), which `tests/test_gpu_check.py` runs in `make test`.
Any failed part makes the exit code 1 (the others still run and are recorded). Sized to finish in under 8 minutes
on one H100 (torch.compile's compilation is most of it).

    python benchmarks/gpu_check.py [--device cuda|cpu] [--modes eager compile bf16] [--iterations N] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import run as bench  # noqa: E402

# The tests that pytest skips without CUDA (tests/test_gpu_check.py checks that this list holds every such test).
CUDA_TESTS = ["tests/test_norms.py::test_cuda", "tests/test_spectral.py::test_cuda"]
MODES = ("eager", "compile", "bf16")
RESULT = HERE / "results" / "gpu_check.json"   # beside d_step.json; appendix B shows it
# Full sizes (a CUDA GPU) and the CPU path's tiny ones.
SIZES = {"cuda": dict(width=1.0, batch=64, iterations=300, repeats=10, steps=10, modes=list(MODES)),
         "cpu": dict(width=0.0625, batch=8, iterations=3, repeats=2, steps=1, modes=["eager", "bf16"])}


class NoGPU(RuntimeError):
    "No CUDA device is visible although the check was asked to run on one."


def check_device(device):
    "The torch.device to run on; `NoGPU` with what torch reports when CUDA is asked for and not there."
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise NoGPU(f"gpu-check: no CUDA GPU is visible (torch {torch.__version__}, built with CUDA "
                    f"{torch.version.cuda or 'none'}; torch.cuda.is_available() is False; CUDA_VISIBLE_DEVICES="
                    f"{os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}). Run it on a machine with a GPU, or pass "
                    f"--device cpu for the CPU path (tiny sizes).")
    return torch.device(device)


def peak_mb(device):
    "Peak memory so far in MB: CUDA's peak allocation, or this process's peak resident set size on the CPU."
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: kB


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def cuda_tests(device, out_dir):
    """Run `CUDA_TESTS` with pytest in a fresh process (on the CPU: only collected, they need a GPU). Returns a dict
    with the counts; `ok` is False when any failed, or on CUDA when any was skipped."""
    xml = Path(out_dir) / "cuda_tests.xml"
    cmd = [sys.executable, "-m", "pytest", *CUDA_TESTS, "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"]
    if device.type != "cuda":
        cmd.append("--collect-only")
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    res = dict(command=" ".join(cmd[1:]), returncode=p.returncode, seconds=time.perf_counter() - t0)
    if device.type != "cuda":
        collected = [ln for ln in p.stdout.splitlines() if "::test_" in ln]
        every = all(any(c.startswith(t) for c in collected) for t in CUDA_TESTS)
        res.update(collected=collected, ran=False, ok=p.returncode == 0 and every,
                   note="CPU path: collected only (they need a GPU)")
    else:
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        res.update(counts, ran=True, ok=p.returncode == 0 and counts["tests"] >= len(CUDA_TESTS)
                   and counts["skipped"] == 0 and counts["failures"] == counts["errors"] == 0)
    if not res["ok"]:
        res["output_tail"] = (p.stdout + p.stderr)[-3000:]
    return res


def d_step_fn(mode, D, opt, real, fake):
    "One D step of `run.step` in `mode`: eager, bf16 autocast around the forward and the loss, or a compiled D."
    ctx = (lambda: torch.autocast(real.device.type, dtype=torch.bfloat16)) if mode == "bf16" else nullcontext

    def step():
        opt.zero_grad(set_to_none=True)
        with ctx():
            loss = F.relu(1 - D(real)).mean() + F.relu(1 + D(fake)).mean()
        loss.float().backward()
        opt.step()
        return loss
    return step


def d_step_bench(device, mode, width, batch, repeats, steps):
    """Median seconds per D step of every variant of `run.VARIANTS` in `mode`, timed round-robin (`run.round_robin`,
    after 3 untimed steps each: compilation happens there), the ratio to torch's SN, and each variant's peak memory
    over its warm-up steps: on CUDA the growth of the peak allocation over what was allocated before them
    (activations, gradients, Adam's state); on the CPU the process's peak resident set size.
    Each variant is built, warmed up and timed in its own try: one that raises gets a row {variant, ok: False, error}
    and the others keep theirs (the part then counts as failed); without torch's SN the ratios are None."""
    calls, peaks, compile_s, errors = {}, {}, {}, {}
    for v in bench.VARIANTS:
        try:
            D, opt, real, fake = bench.build(v, width, device)   # run.py's batch of 64, cut or repeated to `batch`
            real, fake = (x.repeat(-(-batch // len(x)), 1, 1, 1)[:batch] for x in (real, fake))
            if mode == "compile":
                D = torch.compile(D)
            fn = d_step_fn(mode, D, opt, real, fake)
            reset_peak(device)
            base = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
            t0 = time.perf_counter()
            for _ in range(3):
                fn()
            bench.sync(device)
        except Exception as e:   # this variant's row records it; the others still run
            errors[v] = f"{type(e).__name__}: {e}"
            continue
        compile_s[v] = time.perf_counter() - t0
        peaks[v] = peak_mb(device) - base
        calls[v] = _guarded(v, fn, errors)
    times = bench.round_robin(calls, repeats, steps, sync=lambda: bench.sync(device), warmup=0)
    times = {v: t for v, t in times.items() if v not in errors}   # a variant that raised while timed is left out
    med = {v: statistics.median(t) for v, t in times.items()}
    base_ok = bench.BASELINE in med
    rows = []
    for v in bench.VARIANTS:
        if v in errors:
            rows.append(dict(variant=v, ok=False, error=errors[v]))
            continue
        rows.append(dict(variant=v, median_s=med[v], ratio_vs_torch_sn=med[v] / med[bench.BASELINE] if base_ok else None,
                         ratio_ci95=list(bench.bootstrap_ci(times, bench.ratio_of_medians(v), n=500)) if base_ok
                         else None, peak_mem_mb=peaks[v], warmup_s=compile_s[v], times_s=times[v]))
    return rows


def _guarded(v, fn, errors):
    "`fn`, except that an exception is recorded in `errors[v]` and later calls do nothing (the timing goes on)."
    def call():
        if v in errors:
            return None
        try:
            return fn()
        except Exception as e:
            errors[v] = f"{type(e).__name__} while timed: {e}"
    return call


def synthetic_cifar(n, seed=0):
    "n CIFAR-shaped images (3 x 32 x 32) in [-1, 1]: smooth random colour fields, made here (no download)."
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    return F.interpolate(low, size=32, mode="bilinear", align_corners=False).clamp(-1, 1)


def train_check(device, width, batch, iterations, out_dir):
    """`paper-cifar10` for `iterations` iterations on synthetic data through `Trainer.fit` (no metrics, samples or
    intermediate checkpoints): iterations per second over the whole run and the peak memory."""
    from bssn_book.train import Trainer, preset
    cfg = preset("paper-cifar10", width=width, batch_size=batch, iterations=iterations, metrics_every=0,
                 sample_every=0, checkpoint_every=0, log_every=max(1, min(100, iterations)), progress=False,
                 device=str(device), out_dir=str(Path(out_dir) / "paper-cifar10"))
    data = synthetic_cifar(max(1024, 4 * batch))
    reset_peak(device)
    t = Trainer(cfg, data=data, resume=False)
    t0 = time.perf_counter()
    summary = t.fit()
    bench.sync(device)
    wall = time.perf_counter() - t0
    return dict(preset="paper-cifar10", overrides=dict(width=width, batch_size=batch, iterations=iterations),
                norm=cfg.norm, status=summary["status"], iterations=summary["step"], seconds=wall,
                it_per_s=summary["steps_per_s"], peak_mem_mb=peak_mb(device), threads=summary.get("threads"),
                loss_d=summary.get("loss_d"), loss_g=summary.get("loss_g"), ok=summary["status"] == "done")


def part(name, fn, result, failures):
    "Run one part of the check; its result or its error goes into `result[name]`; a failure is remembered."
    t0 = time.perf_counter()
    print(f"gpu-check: {name} ...", flush=True)
    try:
        out = fn()
    except Exception as e:   # the other parts still run; the exit code says it failed
        out = dict(ok=False, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-3000:])
    result[name] = out
    ok = out.get("ok", True) if isinstance(out, dict) else all(r.get("ok", True) for r in out)
    if not ok:
        failures.append(name)
        why = ("; ".join(f"{r['variant']}: {r['error']}" for r in out if not r.get("ok", True)) if isinstance(out, list)
               else out.get("error") or out.get("output_tail", ""))
        print(f"gpu-check: {name} FAILED: {why}", file=sys.stderr, flush=True)
    print(f"gpu-check: {name} done in {time.perf_counter() - t0:.1f} s", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default; fails when no GPU is visible), cuda:N, or cpu "
                    "(the CPU path, tiny sizes)")
    ap.add_argument("--modes", nargs="+", choices=MODES, help="D-step modes (default: all three on CUDA; eager and "
                    "bf16 on the CPU, where torch.compile takes minutes)")
    ap.add_argument("--width", type=float, help="network width (default 1.0 on CUDA, 1/16 on the CPU)")
    ap.add_argument("--batch", type=int, help="batch size (default 64 on CUDA, 8 on the CPU)")
    ap.add_argument("--iterations", type=int, help="paper-cifar10 iterations (default 300 on CUDA, 3 on the CPU)")
    ap.add_argument("--repeats", type=int, help="timed repeats per D-step variant (default 10 on CUDA, 2 on the CPU)")
    ap.add_argument("--steps", type=int, help="D steps per timed repeat (default 10 on CUDA, 1 on the CPU)")
    ap.add_argument("--skip-tests", action="store_true", help="leave out the CUDA-only tests")
    ap.add_argument("--out", help=f"result file (default: {RESULT} on CUDA, the CPU path's in {tempfile.gettempdir()}"
                    " so that it never replaces a GPU result)")
    args = ap.parse_args(argv)
    try:
        device = check_device(args.device)
    except NoGPU as e:
        print(e, file=sys.stderr)
        return 1
    sizes = dict(SIZES["cuda" if device.type == "cuda" else "cpu"])
    out = args.out or str(RESULT if device.type == "cuda" else Path(tempfile.gettempdir()) / "gpu_check-cpu.json")
    for k in ("modes", "width", "batch", "iterations", "repeats", "steps"):
        if getattr(args, k) is not None:
            sizes[k] = getattr(args, k)
    bench.check_counts(ap, repeats=sizes["repeats"], steps=sizes["steps"], iterations=sizes["iterations"],
                       batch=sizes["batch"])
    bench.check_setup(ap, 1, out, str(device), [sizes["width"]])
    start = time.perf_counter()
    result = dict(what="make gpu-check: the CUDA-only tests, the D step of benchmarks/run.py in eager / torch.compile "
                       "/ bf16 autocast, and the paper-cifar10 preset on synthetic CIFAR-shaped data",
                  command="python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  device=str(device), device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else
                  platform.processor() or platform.machine(), torch=torch.__version__, cuda=torch.version.cuda,
                  date=time.strftime("%Y-%m-%d"), sizes=sizes)
    failures = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        if not args.skip_tests:
            part("cuda_tests", lambda: cuda_tests(device, scratch), result, failures)
        result["d_step"] = {}
        for mode in sizes["modes"]:
            rows = part(f"d_step {mode}", lambda: d_step_bench(device, mode, sizes["width"], sizes["batch"],
                                                                sizes["repeats"], sizes["steps"]), result, failures)
            result["d_step"][mode] = result.pop(f"d_step {mode}")
            if isinstance(rows, list):
                for r in rows:
                    if not r.get("ok", True):
                        print(f"  {mode:7} {r['variant']:9} FAILED: {r['error']}", flush=True)
                        continue
                    ratio = "n/a" if r["ratio_vs_torch_sn"] is None else f"{r['ratio_vs_torch_sn']:.3f}"
                    print(f"  {mode:7} {r['variant']:9} {1e3 * r['median_s']:8.2f} ms/step  x{ratio} "
                          f"vs torch SN  peak {r['peak_mem_mb']:8.1f} MB  (warm-up {r['warmup_s']:.1f} s)", flush=True)
        tr = part("train", lambda: train_check(device, sizes["width"], sizes["batch"], sizes["iterations"], scratch),
                  result, failures)
        if tr.get("ok"):
            print(f"  paper-cifar10: {tr['iterations']} iterations, {tr['it_per_s']:.2f} it/s, peak "
                  f"{tr['peak_mem_mb']:.1f} MB", flush=True)
    result.update(seconds=time.perf_counter() - start, failed=failures, ok=not failures)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1))
    print(f"gpu-check: {'passed' if not failures else 'FAILED: ' + ', '.join(failures)} in {result['seconds']:.0f} s; "
          f"wrote {out}", flush=True)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
