"""Same seed, same code, another CPU: one run of chapter 8's 16x16 grid under several instruction sets.

    cd <repo> && OMP_NUM_THREADS=1 .venv/bin/python experiments/evidence/cpus.py   # about 2 min on 2 cores

The golden run `sn-c1-seed3` of the 16x16 grid (SN_w, setting (a), 500 iterations, one torch thread) is trained
once per VARIANT. Each variant caps the instruction sets that ATen, oneDNN and MKL may use through their own
environment variables, which is how a run on an older or another vendor's CPU computes: the same operations, summed
in other orders, so other last digits. `native` is whatever this machine offers; `avx2` is the book's pinned mode
(`TrainConfig(numerics="avx2")`, with which every committed result of chapter 8 was made); the others emulate older
CPUs. Results: results-cpus/runs.csv (per variant: the CPU capability torch reported, the FID, the first logged
losses, the first logged step whose stored losses differ from the pinned run's) and meta.json (the code and each
run's numerics fingerprint). The runs (runs-cpus/) are not committed. Chapter 8's section "Same seed, another CPU"
reads the file.
"""
import csv, json, os, shutil, subprocess, sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS, RESULTS, CONFIG = HERE / "runs-cpus", HERE / "results-cpus", HERE / "config.json"
KIND, SCALE, SEED = "sn", 1.0, 3
VARIANTS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "avx": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX", "MKL_ENABLE_INSTRUCTIONS": "AVX"},
    "sse4.2": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
               "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}
PINNED = "avx2"   # the variant the book's results use: every other row is compared with it
LOSSES = ("loss_d", "loss_g", "d_real", "d_fake")


def stored(v):
    "A number as the result files store it (6 significant digits)."
    return float(f"{float(v):.6g}")


def train(variant):
    "One `bssn-book sweep` run of the golden configuration with the variant's caps in its environment."
    env = {k: v for k, v in os.environ.items() if k not in VARIANTS["avx2"]}
    env.update(VARIANTS[variant], OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = RUNS / variant
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-c", "import sys; from bssn_book.cli import main; sys.exit(main())", "sweep",
           "--config", str(CONFIG), "--kinds", KIND, "--scales", f"{SCALE:g}", "--seeds", str(SEED),
           "--jobs", "1", "--out", str(out), "--set", "threads=1"]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return out / f"{KIND}-c{SCALE:g}-seed{SEED}"


def read(run):
    log = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines() if l.strip()]
    done = json.loads((run / "done.json").read_text())
    return log, done


def main():
    sys.path.insert(0, str(HERE))
    from run import code_version   # the provenance record every result folder of chapter 8 carries
    RESULTS.mkdir(exist_ok=True)
    runs = {v: read(train(v)) for v in VARIANTS}
    ref = {r["step"]: r for r in runs[PINNED][0]}
    rows = []
    for v, (log, done) in runs.items():
        first = log[0]
        apart = next((r["step"] for r in log if any(stored(r[k]) != stored(ref[r["step"]][k]) for k in LOSSES)),
                     None)
        rows.append({"variant": v, "capability": done["numerics"]["cpu_capability"],
                     "env": " ".join(f"{k}={x}" for k, x in VARIANTS[v].items()) or "(none)",
                     "fid": stored(done["metrics"]["fid"]), "step": first["step"],
                     **{k: stored(first[k]) for k in LOSSES},
                     "first_step_apart_from_pinned": apart if v != PINNED else ""})
    with open(RESULTS / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader(); w.writerows(rows)
    meta = {"run": f"{KIND}-c{SCALE:g}-seed{SEED} of the 16x16 grid (config.json), threads=1",
            "variants": VARIANTS, "pinned": PINNED, "code": code_version(),
            "numerics": {v: done["numerics"] for v, (_, done) in runs.items()}}
    (RESULTS / "meta.json").write_text(json.dumps(meta, indent=1))
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
