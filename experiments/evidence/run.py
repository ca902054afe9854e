"""Chapter 8's experiments: regenerate every result file with one command.

    cd <repo> && OMP_NUM_THREADS=1 .venv/bin/python experiments/evidence/run.py --jobs 2   # everything: train what is missing, collect
    OMP_NUM_THREADS=1 .venv/bin/python experiments/evidence/run.py --collect-only           # rebuild every results*/ folder
    OMP_NUM_THREADS=1 .venv/bin/python experiments/evidence/run.py --resolution 16 --only sn-c1,bssn-c1.2   # some of one grid
    OMP_NUM_THREADS=1 .venv/bin/python experiments/evidence/run.py --long 32 --jobs 2                       # the length check
    OMP_NUM_THREADS=1 .venv/bin/python experiments/evidence/run.py --long-official 32 --jobs 2              # ... official loop
    OMP_NUM_THREADS=1 .venv/bin/python experiments/evidence/run.py --mechanism --jobs 2                     # the mechanism
    # a smoke run of any part: tiny runs into another folder (the committed results stay untouched)
    OMP_NUM_THREADS=1 .venv/bin/python experiments/evidence/run.py --mechanism --root /tmp/smoke --seeds 0 \\
        --set iterations=20 metrics_every=10 checkpoint_every=10 sample_every=10 metrics_samples=64

Five parts. Every run of every part trains with one torch thread and the pinned CPU numerics (PINNED: TrainConfig
threads=1, numerics="avx2", the same digits on any x86-64 CPU with AVX2); meta.json records the numerics fingerprint
the runs recorded (bssn_book.train.numerics_fingerprint, in each done.json; "numerics") beside the code that made the
results ("code").
1. The 16x16 grid: every configuration of GRID on 16x16 digits (runs in `runs/`, results in `results/`): ten seeds
   (0-9) for the configurations of claims 2 and 4 (SN_w, BSSN c = 1.2, BSN and the scale sweep; TEN_SEED_CLAIMS), five
   (0-4) for the rest; the 15 ring runs have no image size (kept in `runs/`, shared with the 32x32 grid).
2. The 32x32 grid: the configurations of the official setting (a), five seeds (`runs-r32/`, `results-r32/`).
3. The length check: LONG_CONFIGS (SN_w and BSSN c = 1.2) on 32x32 digits for LONG_SETS' iterations (ten times the
   grids' 500) with FID/KID every 500 iterations, five seeds (`runs-r32-long/`, `results-r32-long/`): its first 500
   iterations are the 32x32 grid's runs.
4. The length check again under the official training loop (TrainConfig loop="official": u updated once per D step
   after D's optimizer step, G reusing the last D step's z, real batches drawn with replacement, the gradient through
   the power-iteration step, u from a truncated normal with no warm-up), the same configurations, sizes, seeds and
   iterations (`runs-r32-long-official/`, `results-r32-long-official/`).
5. The mechanism experiment (issue 20, section 5; `runs-mechanism/`, `results-mechanism/`): is BSSN's effect at this
   scale the gradients' depth profile, or only the logit scale? D is positively homogeneous (LeakyReLU) with zero biases
   at initialization, so scaling every layer's weight by a multiplies D's output by a^L, and Adam's step ignores the
   gradient's scale: c may act through the loss's margin alone. MNIST 16x16, width 1/8, setting (a) (config.json),
   MECHANISM_SETS (2000 iterations, monitors every 10, FID/KID and the samples' diversity every 500), D of depth 8 (the
   official CNN) and 16 (each stride-1 3x3 conv repeated 3 times), five seeds, five arms (ARMS): SN_w; BSSN c = 1.2;
   SN_w x k, its logits multiplied by k = D_BSSN(x) / D_SN(x); SN_Conv; SN_Conv x k', k' = D_SN(x) / D_SNConv(x)
   (matched to SN_w). k and k' are measured per seed and depth at initialization on the same raw weights (same seed and
   init, the normalizations' warm-up done, eval mode, a fixed batch of real digits; `logit_ratio`), rounded to K_DIGITS
   significant digits (the same on any CPU), and recorded in `k.csv` with their spread over the batch.
   The decision rule, stated before the runs: if SN_w x k reproduces BSSN and SN_Conv x k' recovers SN_w, the
   small-scale effect is a margin effect; if the arms differ and the difference grows from depth 8 to 16, that is direct
   evidence for the depth-wise mechanism.
Training goes through `bssn-book sweep` (one sweep per configuration, `--jobs 1`, or one per seed where the seeds'
logit scales differ; `--jobs N` here runs N configurations at once), so the script is resumable: a run whose
`done.json` exists is skipped. The runs (checkpoints, logs) are not committed; the collected result files are.

Measured duration of the results committed before this version (2026-12-06, commit 6ec5014, 2-core CPU, one torch
thread per run, default numerics, 5 seeds everywhere, `run.py --resolution 16 32 --long 32 --jobs 2`; `meta.json`
records `per_run_wall_s`, `total_train_wall_s` and `timings.json` every run's):
- 16x16: 160 runs. Image runs 13-54 s each, median 18 s (n_dis = 1: 13-40 s; n_dis = 5: 32-54 s, mean 40 s; WGAN-GP:
  17-26 s); ring runs 10-14 s. 0.84 h of one core in all; 26 min of wall clock.
- 32x32: 55 image runs (setting (a); the ring runs are the 16x16 grid's), 30-44 s each, median 32 s; 0.50 h of one
  core; about 20 min of wall clock.
- length check, 32x32, 5000 iterations: 10 runs, 291-356 s each (two at a time); about 23 min of wall clock.
The whole call took 69 min (4156 s) with --jobs 2. With every run done, the script only re-collects (~20 s per grid).

ESTIMATED duration of this version (not yet measured: the regeneration replaces these lines with its measurements),
on the same 2-core machine with --jobs 2. The pinned numerics cost about 15% CPU time here (AMD EPYC, one 500-iteration
16x16 run of sn-c1: 15-16 s of CPU default, 17-18 s avx2; issue 20 measured 1.5x for a stricter pinning on another
machine). The mechanism's cost is from smoke runs of 500 iterations (2026-12-06, on a loaded machine; per run about
18 s of CPU at depth 8, 1.4x that at depth 16, SN_Conv a little more than SN_w):
- 16x16: 200 runs (40 more than before: seeds 5-9 of the 8 configurations of claims 2 and 4): about 37 min.
- 32x32: 55 image runs: about 23 min.
- length check: 10 runs: about 26 min; under the official loop: 10 runs, about 28 min.
- mechanism: 50 runs (5 arms x 2 depths x 5 seeds) of 2000 iterations, about 70 s (depth 8) to 100 s (depth 16) of
  CPU each: about 40 min.
Everything: about 2.6 h of wall clock.

Definitions (used by `collect`, stated again in the chapter):
- diverged: the run stopped on a non-finite loss (bssn-book's NonFiniteLossError) or its FID is not finite.
- collapsed: the final generator's samples have almost no diversity, i.e. the mean over pixels of the
  per-pixel standard deviation across 1000 samples is below COLLAPSE_DIVERSITY x that of the real images,
  or, for the hinge loss, D wins outright: its mean D loss over the last LAST_STEPS iterations is below
  COLLAPSE_LOSS_D (the WGAN-GP runs have no such floor and are judged by the diversity alone);
  on the ring, fewer than RING_MIN_MODES of the 8 modes covered at the end.
"""
import argparse, csv, functools, json, math, os, re, shutil, subprocess, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG, CONFIG_RING = HERE / "config.json", HERE / "config_ring.json"
OUT = HERE   # where the runs*/ and results*/ folders go (--root moves them, for smoke runs)
RUNS, RESULTS = OUT / "runs", OUT / "results"
SEEDS, SEEDS10 = (0, 1, 2, 3, 4), tuple(range(10))
TEN_SEED_CLAIMS = ("2", "4")   # the 16x16 grid's configurations of these claims get SEEDS10
# every run of every part: one torch thread (a run's trajectory depends on the count) and the pinned CPU numerics
PINNED = {"threads": 1, "numerics": "avx2"}
OVERRIDES = {}   # --set: on top of everything, in every run (smoke runs, with --root elsewhere)
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
    """One configuration of the grid: a normalization on top of the base config (or the ring config). `seeds`: those of
    the 16x16 grid (SEEDS10 for the image configurations of TEN_SEED_CLAIMS in setting (a), else SEEDS; the other grids
    take SEEDS). `sizes`: the image sizes whose grids hold it (None: every grid)."""
    name = f"{kind}-c{scale:g}" + (f"-g{gamma}" if gamma else "") + (f"-{setting}" if setting else "") \
        + ("-ring" if data == "ring" else "")
    sets = dict(SETTINGS.get(setting, {}), **({"gamma": gamma} if gamma else {}))
    ten = data == "mnist" and not setting and not gamma and set(claim.split()) & set(TEN_SEED_CLAIMS)
    return {"name": name, "kind": kind, "scale": scale, "gamma": gamma, "setting": setting or "base", "data": data,
            "sets": sets, "seeds": SEEDS10 if ten else SEEDS, "claim": claim, "sizes": list(sizes) if sizes else None}


# Priority order. c = 1.2 for the scaled kinds: the smallest scale > 1 of the paper's CIFAR-10 sweep, fixed before
# any run. Chapter 8 computes chapter 7's c* (a per-block gain of 1 at init) for this discriminator: about 2.5.
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

# The mechanism experiment (part 5 of the docstring): per D depth, five arms. `match`: the normalization (kind, scale)
# whose logits the arm's are scaled to at initialization (logit_scale = D_match(x) / D_arm(x), per seed and depth).
MECHANISM_SETS = {"iterations": 2000, "log_every": 10, "metrics_every": 500, "sample_every": 500,
                  "checkpoint_every": 500, "keep_last": 4}   # a checkpoint per evaluation: the samples' diversity
DEPTHS = (8, 16)
ARMS = [("sn", 1.0, None), ("bssn", 1.2, None), ("sn", 1.0, ("bssn", 1.2)), ("strict", 1.0, None),
        ("strict", 1.0, ("sn", 1.0))]
ARM_LABEL = {("sn", None): "SN_w", ("bssn", None): "BSSN c=1.2", ("sn", ("bssn", 1.2)): "SN_w x k",
             ("strict", None): "SN_Conv", ("strict", ("sn", 1.0)): "SN_Conv x k'"}
K_DIGITS = 4   # significant digits of k: a last-digit difference of another CPU's kernels cannot change it


def M(kind, scale, match, depth):
    "One configuration of the mechanism experiment: arm (kind, scale, match) at D depth `depth`, five seeds."
    name = f"{kind}-c{scale:g}" + (f"-x{match[0]}{match[1]:g}" if match else "") + f"-d{depth}"
    return {"name": name, "kind": kind, "scale": scale, "gamma": None, "setting": "base", "data": "mnist",
            "sets": {"d_depth": depth, **MECHANISM_SETS}, "seeds": SEEDS, "claim": "mechanism", "sizes": [16],
            "depth": depth, "match": list(match) if match else None, "arm": ARM_LABEL[(kind, match)]}


MECHANISM = [M(k, c, m, depth) for depth in DEPTHS for k, c, m in ARMS]
# where the committed results were measured (per_run_wall_s is load-dependent), per results folder
MACHINE = {name: (
    "2-core CPU (no GPU), one torch thread per run (config threads=1, OMP_NUM_THREADS=1), run.py --resolution 16 32 "
    "--long 32 --jobs 2 (two training processes at once) from 2026-12-06, in a git worktree of the commit recorded in "
    "`code`, with light work (editing, small tests) beside it")
    for name in ("results", "results-r32", "results-r32-long", "results-r32-long-official", "results-mechanism")}
COLLAPSE_DIVERSITY, COLLAPSE_LOSS_D, LAST_STEPS, RING_MIN_MODES = 0.25, 0.05, 50, 4
_lock, _rng_lock = threading.Lock(), threading.Lock()   # printing; torch's global RNG


GRID_SETS = {}   # what the current grid's image runs change in config.json; set by at_resolution
RESOLUTIONS = (16, 32)   # the committed grids: results/ (16x16) and results-r32/
# The length check: these configurations (base setting), LONG_SETS on top of the grid's, at LONG_RESOLUTIONS; the same
# under the official loop (OFFICIAL_SETS) at LONG_OFFICIAL_RESOLUTIONS. SN_w and BSSN c = 1.2, the pair of claim 2.
LONG_CONFIGS = ("sn-c1", "bssn-c1.2")
# a checkpoint per evaluation (kept): the diversity of each evaluation's samples, so that a run's failure is known at
# every evaluation, not only at the end (metrics.csv's diversity_ratio)
LONG_SETS = {"iterations": 5000, "metrics_every": 500, "checkpoint_every": 500, "keep_last": 10}
LONG_RESOLUTIONS = (32,)
OFFICIAL_SETS, LONG_OFFICIAL_RESOLUTIONS = {"loop": "official"}, (32,)


def at_resolution(res, long=False, official=False):
    """Point the script at a grid of `res` x `res` MNIST: its image runs in runs-r<res>/ and its results in
    results-r<res>/ (config.json's size: runs/ and results/), so that grids of two resolutions never mix; the ring
    runs (no resolution) stay in runs/ and are shared. With `long`, the length check at that size instead: only
    LONG_CONFIGS, with LONG_SETS, in runs-r<res>-long/ and results-r<res>-long/; with `official` too, under the
    official loop (OFFICIAL_SETS), in runs-r<res>-long-official/ and results-r<res>-long-official/. Every grid but the
    16x16 one takes five seeds. A size the CNN cannot take is a ValueError naming it. Returns that grid."""
    global RUNS, RESULTS, GRID_SETS
    from bssn_book.cli import UsageError, make_config
    from bssn_book.train import ConfigError
    extra = dict(LONG_SETS, **(OFFICIAL_SETS if official else {})) if long else {}
    try:
        make_config(None, str(CONFIG), {"resolution": res, **extra})   # the trainer's own checks
    except (ConfigError, UsageError) as e:
        raise ValueError(f"--{('long-official' if official else 'long') if long else 'resolution'} {res}: {e}") from None
    own = res != json.loads(CONFIG.read_text())["resolution"]
    sets = dict({"resolution": res} if own else {}, **extra)
    tag = (f"-r{res}-long" + ("-official" if official else "")) if long else (f"-r{res}" if own else "")
    RUNS, RESULTS, GRID_SETS = OUT / f"runs{tag}", OUT / f"results{tag}", sets
    if not sets:
        return GRID
    return [dict(g, sets=dict(g["sets"], **sets), seeds=SEEDS) if g["data"] == "mnist" else g for g in GRID
            if (g["name"] in LONG_CONFIGS if long else g["sizes"] is None or res in g["sizes"])]


def at_mechanism():
    "Point the script at the mechanism experiment (runs-mechanism/, results-mechanism/); returns its configurations."
    global RUNS, RESULTS, GRID_SETS
    RUNS, RESULTS, GRID_SETS = OUT / "runs-mechanism", OUT / "results-mechanism", dict(MECHANISM_SETS)
    return MECHANISM


def group_dir(g): return (OUT / "runs" if g["data"] == "ring" else RUNS) / g["name"]
def run_dir(g, seed): return group_dir(g) / f"{g['kind']}-c{g['scale']:g}-seed{seed}"   # the name `bssn-book sweep` gives
def run_name(g, seed): return f"{g['name']}-seed{seed}"


def run_config(g, seed):
    "The TrainConfig of run `seed` of configuration `g` as its sweep builds it (less PINNED and a matched logit scale)."
    from bssn_book.cli import make_config
    base = make_config(None, str(CONFIG_RING if g["data"] == "ring" else CONFIG), g["sets"])
    return base.replace(norm=g["kind"], scale=g["scale"], seed=seed, progress=False)


_DATA = {}   # MNIST per resolution, loaded once for logit_ratio


def logit_ratio(cfg, match, n=64):
    """D_match(x) / D(x) at initialization, D the discriminator of TrainConfig `cfg` and D_match the one with
    normalization match = (kind, scale), both built by `build_models` from cfg's seed (so the same raw weights: checked),
    the normalizations' warm-up done, in eval mode and float64, on a fixed batch of n real images (drawn with seed
    123). D has zero biases at initialization and LeakyReLU activations, so it is positively homogeneous in each
    layer's weight and the ratio is one number for every x. Returns the ratio's median over the batch (`k_raw`), `k`
    (rounded to K_DIGITS significant digits: what the run uses), its relative spread over the batch (max - min) /
    |median|, and `k_layers`: the product over layers of ||W_match||_F / ||W||_F of the weights the layers use, the
    same number from the weights alone."""
    with _rng_lock:   # build_models seeds torch's global RNG: two threads of train() must not interleave here
        return _logit_ratio(cfg, match, n)


def _logit_ratio(cfg, match, n):
    import torch
    from bssn_book.train import build_models, load_dataset
    cfgs = [cfg.replace(norm=match[0], scale=match[1]), cfg]
    Ds = [build_models(c)[1].eval().double() for c in cfgs]   # float64: the spread is the premise's, not rounding's
    layers = [[m for m in D.modules() if hasattr(m, "parametrizations")] for D in Ds]
    assert len(layers[0]) == len(layers[1]) > 0, "both discriminators have their layers normalized"
    for a, b in zip(*layers):
        if not torch.equal(a.parametrizations.weight.original, b.parametrizations.weight.original):
            raise AssertionError("the two discriminators start from different raw weights")
    if any(m.bias is not None and bool(m.bias.abs().max() > 0) for m in layers[1]):
        raise AssertionError("D has nonzero biases at initialization: the ratio would depend on x")
    data = _DATA.get(cfg.resolution)
    if data is None:
        data = _DATA[cfg.resolution] = load_dataset(cfg)
    x = data[torch.randperm(len(data), generator=torch.Generator().manual_seed(123))[:n]]
    with torch.no_grad():
        num, den = (D(x.double()).flatten() for D in Ds)
        ratio = num / den
        k_layers = math.prod(float(a.weight.norm() / b.weight.norm()) for a, b in zip(*layers))
    k_raw = float(ratio.median())
    return {"k": float(f"{k_raw:.{K_DIGITS}g}"), "k_raw": k_raw, "k_layers": k_layers,
            "spread": float((ratio.max() - ratio.min()) / abs(k_raw)), "n_x": n}


def logit_scales(g):
    "Per seed, the logit scale of configuration g's runs: 1 without a match, else logit_ratio's rounded k."
    if not g.get("match"):
        return {s: 1.0 for s in g["seeds"]}
    return {s: logit_ratio(run_config(g, s), g["match"])["k"] for s in g["seeds"]}


def _sweep_command(g, seeds, sets):
    cmd = [sys.executable, "-c", "import sys; from bssn_book.cli import main; sys.exit(main())", "sweep",
           "--config", str(CONFIG_RING if g["data"] == "ring" else CONFIG), "--kinds", g["kind"],
           "--scales", f"{g['scale']:g}", "--seeds", ",".join(map(str, seeds)), "--jobs", "1", "--out", str(group_dir(g))]
    return cmd + ["--set", *[f"{k}={json.dumps(list(v)) if isinstance(v, (list, tuple)) else v}" for k, v in sets.items()]]


def train_group(g, env):
    """`bssn-book sweep` over the configuration's seeds (one sweep per seed where their logit scales differ, the
    mechanism's matched arms); the output is appended to <name>.sweep.log (timings)."""
    # one torch thread and the pinned numerics per run, whatever the machine or OMP_NUM_THREADS says: a run's
    # trajectory depends on both
    sets = {**g["sets"], **PINNED, **OVERRIDES}
    batches = [(g["seeds"], sets)] if not g.get("match") else \
        [((s,), dict(sets, logit_scale=k)) for s, k in logit_scales(g).items()]
    for seeds, run_sets in batches:
        cmd = _sweep_command(g, seeds, run_sets)
        with _lock: print(" ".join(cmd[3:]), flush=True)
        group_dir(g).mkdir(parents=True, exist_ok=True)
        with open(group_dir(g).parent / f"{g['name']}.sweep.log", "a") as f:
            rc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
        with _lock: print(f"sweep {g['name']} (seeds {','.join(map(str, seeds))}): exit {rc}", flush=True)


def train(grid, jobs=1):
    RUNS.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ); env.setdefault("OMP_NUM_THREADS", "1")
    todo = [g for g in grid if not all((run_dir(g, s) / "done.json").exists() for s in g["seeds"])]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(lambda g: train_group(g, env), todo))


def _diversity(x):
    "Mean over pixels of the per-pixel standard deviation across a batch of images."
    return float(x.float().std(dim=0).mean())


def sample_diversity(run_dir, cfg_dict, n=1000, checkpoint=None):
    "Diversity of 1000 samples of the generator of `checkpoint` (default: the last) and of as many real images."
    import torch
    from bssn_book.train import TrainConfig, build_models, list_checkpoints, load_checkpoint, load_dataset
    ck = [checkpoint] if checkpoint is not None else list_checkpoints(run_dir / "checkpoints")
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


def checkpoint_diversity(d, cfg):
    "{step: diversity ratio of the samples of that step's generator} for every checkpoint kept in run folder d."
    from bssn_book.train import list_checkpoints
    out = {}
    for ck in list_checkpoints(d / "checkpoints"):
        div_g, div_r = sample_diversity(d, cfg, checkpoint=ck)
        out[int(re.search(r"(\d+)", ck.stem)[1])] = div_g / div_r   # ckpt-<step>.pt
    return out


def layer_order(keys):
    "D's layers in forward order: main.0, main.2, ..., main.10, ..., fc (the numbers compared as numbers)."
    names = {k.split("/")[2] for k in keys if k.startswith("grad/D/")}
    natural = lambda s: [int(p) if p.isdigit() else p for p in s.split(".")]
    return sorted(names, key=lambda s: (s == "fc", natural(s)))


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


@functools.lru_cache(maxsize=None)
def _pinned_fingerprint():
    return json.dumps(pinned_fingerprint())


def pinned_fingerprint():
    """The numerics fingerprint (bssn_book.train.numerics_fingerprint) a run under PINNED records on this machine: asked
    of a child process started with the mode's environment and PINNED's thread count (the variables are read when
    torch loads)."""
    from bssn_book.train import numerics_env
    n = str(PINNED["threads"])
    env = dict(os.environ, **numerics_env(PINNED["numerics"]), OMP_NUM_THREADS=n, MKL_NUM_THREADS=n)
    code = (f"import json, torch; torch.set_num_threads({n}); from bssn_book.train import numerics_fingerprint; "
            f"print(json.dumps(numerics_fingerprint({PINNED['numerics']!r})))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def numerics_record(grid):
    """meta.json's "numerics" and "numerics_mixed": the fingerprint every finished run of `grid` recorded in its
    done.json, when they agree (mixed: None); the fingerprint of `pinned_fingerprint()` when no run recorded one; and
    the distinct fingerprints with their runs when they do not agree (a grid trained in parts on unlike machines)."""
    seen = {}
    for g in grid:
        for s in g["seeds"]:
            done = run_dir(g, s) / "done.json"
            fp = json.loads(done.read_text()).get("numerics") if done.exists() else None
            if fp is not None:
                seen.setdefault(json.dumps(fp, sort_keys=True), []).append(run_name(g, s))
    if not seen:
        return {"numerics": json.loads(_pinned_fingerprint()), "numerics_mixed": None}   # asked once per call
    if len(seen) == 1:
        return {"numerics": json.loads(next(iter(seen))), "numerics_mixed": None}
    return {"numerics": None, "numerics_mixed": [{"numerics": json.loads(k), "runs": v} for k, v in seen.items()]}


def _fresh_clone_guard(grid):
    "False (with a message) when the run folders hold fewer finished runs than the committed runs.csv: keep it."
    have, kept = finished_runs(grid)
    if have < kept:
        print(f"collect: {RESULTS.name}/ left as it is: its runs.csv has {kept} finished runs, {RUNS.name}/ only {have} "
              f"(train them first: run.py without --collect-only)")
        return False
    return True


def run_row(g, seed, timings):
    """One run's row of runs.csv (status, final metrics, the tails of the losses, diverged and collapsed) and its log
    rows; the diversity of the final samples for a finished image run. (None, []) for the log of a missing run."""
    name, d = run_name(g, seed), run_dir(g, seed)
    row = {"run": name, "config": g["name"], "kind": g["kind"], "scale": g["scale"], "gamma": g["gamma"] or "",
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
        row.update(status=status, step=max([r["step"] for r in log], default=0))
    else:
        row.update(status="missing")
        return row, []
    tail = [r for r in log if r["step"] > (row["step"] or 0) - LAST_STEPS]
    row["loss_d_tail"] = sum(r["loss_d"] for r in tail) / len(tail) if tail else None
    row["loss_g_tail"] = sum(r["loss_g"] for r in tail) / len(tail) if tail else None
    row["d_gap_tail"] = sum(r["d_real"] - r["d_fake"] for r in tail) / len(tail) if tail else None
    if row["status"] == "done" and g["data"] == "ring":
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
    else:
        row["diverged"] = row["status"] == "diverged"
        row["collapsed"] = None
    row["wall_s"] = timings.get(name, {}).get("wall_s")
    return row, log


def copy_samples(g, seed, earlier=True):
    "The chapter shows seed 0 of each configuration: its last sample grid (and its earlier ones) into samples/."
    png = sorted((run_dir(g, seed) / "samples").glob("step-*.png"))
    if png and seed == 0:
        shutil.copy(png[-1], RESULTS / "samples" / f"{run_name(g, seed)}.png")
        for png_ in png[:-1] if earlier else []:
            shutil.copy(png_, RESULTS / "samples" / f"{run_name(g, seed)}-{png_.stem}.png")


def write_csv(name, rows, digits=6):
    "rows (dicts) as RESULTS/name, floats to `digits` significant digits; no file for no rows."
    (RESULTS / name).unlink(missing_ok=True)
    if not rows: return   # e.g. mixture.csv of the length check, which has no ring runs
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(RESULTS / name, "w", newline="") as f:
        w = csv.DictWriter(f, keys); w.writeheader()
        w.writerows({k: (float(f"{v:.{digits}g}") if isinstance(v, float) else v) for k, v in r.items()} for r in rows)


def wall_summary(runs):
    walls = [r["wall_s"] for r in runs if r.get("wall_s")]
    return ({"mean": sum(walls) / len(walls) if walls else None, "min": min(walls, default=None),
             "max": max(walls, default=None), "n": len(walls)}, sum(walls))


COLLAPSED = (f"diversity_ratio < {COLLAPSE_DIVERSITY} (per-pixel std across 1000 samples, averaged over pixels, "
             f"relative to real images) or, for the hinge loss, mean D loss over the last {LAST_STEPS} iterations < "
             f"{COLLAPSE_LOSS_D}; ring runs: fewer than {RING_MIN_MODES} of the 8 modes covered")


def provenance(grid, runs):
    "meta.json's common part: timings, machine, the runs' numerics, the code, the date."
    per_run, total = wall_summary(runs)
    return {"per_run_wall_s": per_run, "total_train_wall_s": total, "machine": MACHINE.get(RESULTS.name, "not recorded"),
            "pinned": PINNED, "overrides": OVERRIDES, **numerics_record(grid), "code": code_version(),
            "collected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


LINKS = HERE.parents[1] / "bssn_book" / "assets" / "results" / "evidence"   # the package's links to the result folders


def link_results():
    """Link RESULTS from the package (bssn_book/assets/results/evidence/<name>, relative, so that the wheel ships it
    and bssn_book.results.path finds it) when it is a result folder of this checkout's experiments/evidence/ and the
    link is missing; a --root elsewhere gets no link."""
    link = LINKS / RESULTS.name
    if RESULTS.parent.resolve() != HERE or not LINKS.is_dir() or link.is_symlink():
        return
    link.symlink_to(os.path.relpath(RESULTS, LINKS))
    print(f"linked {link} -> {os.readlink(link)} (commit it with the results)")


def collect(grid):
    """Rebuild RESULTS from the run folders. The run folders are not committed: a grid whose folders hold fewer finished
    runs than its committed runs.csv (a fresh clone, say) keeps its results untouched, with a message; returns False."""
    if not _fresh_clone_guard(grid):
        return False
    RESULTS.mkdir(parents=True, exist_ok=True)
    base = {**json.loads(CONFIG.read_text()), **GRID_SETS, **OVERRIDES}
    timings = read_timings(grid)
    runs, monitors, losses, mixture, metrics = [], [], [], [], []
    shutil.rmtree(RESULTS / "samples", ignore_errors=True)
    (RESULTS / "samples").mkdir()
    for g in grid:
        kind, scale, ring = g["kind"], g["scale"], g["data"] == "ring"
        for seed in g["seeds"]:
            row, log = run_row(g, seed, timings)
            runs.append(row)
            name, d = row["run"], run_dir(g, seed)
            if row["status"] == "missing":
                continue
            if row["status"] == "done" and not ring:
                copy_samples(g, seed)
            if ring:
                for r in _read_rows(d / "metrics.jsonl"):
                    mixture.append({"run": name, "config": g["name"], "seed": seed, **r})
                continue
            # FID/KID/IS every metrics_every iterations; where a checkpoint of that step is kept (the length check),
            # the diversity of its samples too
            diversity = checkpoint_diversity(d, json.loads((d / "config.json").read_text())) \
                if GRID_SETS.get("checkpoint_every") == GRID_SETS.get("metrics_every") else {}
            for r in _read_rows(d / "metrics.jsonl"):
                metrics.append({"run": name, "config": g["name"], "kind": kind, "seed": seed, **r,
                                **({"diversity_ratio": diversity.get(r["step"])} if diversity else {})})
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

    write_csv("runs.csv", runs); write_csv("monitors.csv", monitors); write_csv("losses.csv", losses)
    write_csv("mixture.csv", mixture); write_csv("metrics.csv", metrics)
    meta = {"config": base, "config_ring": json.loads(CONFIG_RING.read_text()), "settings": SETTINGS,
            "grid": [{k: (list(v) if k == "seeds" else v) for k, v in g.items()} for g in grid],
            "definitions": {"diverged": "stopped on a non-finite loss, or FID not finite",
                            "collapsed": COLLAPSED,
                            "diversity_ratio": "metrics.csv, where a checkpoint of the step was kept (the length "
                                               "check): as runs.csv's, for the generator of that step",
                            "grad_normalized": "||dL/dW_raw|| * sigma / |c|: the norm of the gradient w.r.t. the "
                                               "normalized weight c W/sigma, projected orthogonally to W (c: the "
                                               "constant scale, or the learnable gamma logged at that step)"},
            "metrics": f"FID/KID/IS with bssn_book.metrics' offline MNIST extractor, {base['metrics_samples']} generated "
                       f"vs {base['metrics_samples']} real images, every {base['metrics_every']} iterations "
                       f"(metrics.csv) and at the last (runs.csv)",
            **provenance(grid, runs)}
    (RESULTS / "meta.json").write_text(json.dumps(meta, indent=1))
    link_results()
    print(f"collected {len(runs)} runs ({sum(r['status'] == 'done' for r in runs)} done) into {RESULTS}")
    return True


# the mechanism's monitors, logged by the trainer every log_every steps (bssn_book.train), and their columns here
MECHANISM_MONITORS = {"grad_slope": "grad_slope/D", "logit_spread": "logit_spread/D", "margin_frac": "margin_frac/D"}


def mechanism_ks(grid):
    "k.csv's rows: per depth and seed, k = D_BSSN/D_SN and k' = D_SN/D_SNConv at initialization (logit_ratio)."
    rows = []
    for g in grid:
        if not g.get("match"):
            continue
        for seed in g["seeds"]:
            r = logit_ratio(run_config(g, seed), g["match"])
            rows.append({"config": g["name"], "arm": g["arm"], "depth": g["depth"], "seed": seed,
                         "numerator": f"{g['match'][0]}-c{g['match'][1]:g}", "denominator": f"{g['kind']}-c{g['scale']:g}",
                         **r})
    return rows


def collect_mechanism(grid):
    """Rebuild results-mechanism/ from the run folders (the fresh-clone guard as `collect`): runs.csv (one row per run,
    as the grids', with arm, depth and the logit scale it trained with), steps.csv (per run and logged step: the losses,
    MECHANISM_MONITORS and fan_in * Var(w_bar) per layer, `fan_in_var_<i>` for the i-th layer of D in forward order),
    metrics.csv (per run and evaluation: FID, KID and the diversity of the samples of that step's checkpoint) and
    k.csv (mechanism_ks). A finished run's logit scale must be the k computed here (else AssertionError)."""
    if not _fresh_clone_guard(grid):
        return False
    RESULTS.mkdir(parents=True, exist_ok=True)
    timings = read_timings(grid)
    ks = mechanism_ks(grid)
    k_of = {(r["config"], r["seed"]): r["k"] for r in ks}
    runs, steps, metrics, layers_of = [], [], [], {}
    shutil.rmtree(RESULTS / "samples", ignore_errors=True)
    (RESULTS / "samples").mkdir()
    for g in grid:
        ids = {"config": g["name"], "arm": g["arm"], "depth": g["depth"]}
        for seed in g["seeds"]:
            row, log = run_row(g, seed, timings)
            d = run_dir(g, seed)
            cfg = json.loads((d / "config.json").read_text()) if (d / "config.json").exists() else {}
            row = {**row, **ids, "logit_scale": cfg.get("logit_scale")}
            if row["logit_scale"] is not None and g.get("match") and row["logit_scale"] != k_of[(g["name"], seed)]:
                raise ValueError(f"{row['run']} trained with logit_scale {row['logit_scale']}, but k is "
                                 f"{k_of[(g['name'], seed)]} now: the initialization changed; retrain it")
            runs.append(row)
            if row["status"] == "missing":
                continue
            if row["status"] == "done":
                copy_samples(g, seed, earlier=False)   # the last only: the wheel carries every result file
            layers = layer_order(log[0].keys()) if log else []
            layers_of.setdefault(g["depth"], layers)
            for r in log:
                steps.append({"run": row["run"], **ids, "seed": seed, "step": r["step"],
                              **{k: r.get(k) for k in ("loss_d", "loss_g", "d_real", "d_fake")},
                              **{k: r.get(key) for k, key in MECHANISM_MONITORS.items()},
                              **{f"fan_in_var_{i}": r.get(f"fan_in_var/D/{layer}") for i, layer in enumerate(layers)}})
            diversity = checkpoint_diversity(d, cfg)
            for r in _read_rows(d / "metrics.jsonl"):
                metrics.append({"run": row["run"], **ids, "seed": seed, "step": r["step"], "fid": r.get("fid"),
                                "kid": r.get("kid"), "diversity_ratio": diversity.get(r["step"])})
    write_csv("runs.csv", runs); write_csv("steps.csv", steps, digits=5); write_csv("metrics.csv", metrics)
    write_csv("k.csv", ks)
    base = {**json.loads(CONFIG.read_text()), **GRID_SETS, **OVERRIDES}
    meta = {"config": base, "depths": list(DEPTHS), "arms": [{"kind": k, "scale": c, "match": m,
                                                              "label": ARM_LABEL[(k, m)]} for k, c, m in ARMS],
            "grid": [{k: (list(v) if k == "seeds" else v) for k, v in g.items()} for g in grid],
            "layers": {str(depth): names for depth, names in layers_of.items()},
            "decision_rule": "stated before the runs: if SN_w x k reproduces BSSN and SN_Conv x k' recovers SN_w, the "
                             "small-scale effect is a margin effect; if the arms differ and the difference grows "
                             "from depth 8 to 16, that is direct evidence for the depth-wise mechanism",
            "definitions": {"diverged": "stopped on a non-finite loss, or FID not finite", "collapsed": COLLAPSED,
                            "k": "D_BSSN(x) / D_SN(x) (k) or D_SN(x) / D_SNConv(x) (k') at initialization, same seed "
                                 "and raw weights, eval mode after the normalizations' warm-up, median over 64 real "
                                 f"images (k_raw), rounded to {K_DIGITS} significant digits (k: the run's logit_scale); "
                                 "spread: (max - min) / |median| over the images; k_layers: the product over layers "
                                 "of ||W_match|| / ||W||",
                            "fan_in_var_<i>": "fan_in * Var(w_bar) of D's i-th layer (meta's layers[depth][i])",
                            **{col: f"the trainer's {key} monitor (bssn_book.train)"
                               for col, key in MECHANISM_MONITORS.items()},
                            "diversity_ratio": "as runs.csv's, for the generator of that step's checkpoint"},
            "metrics": f"FID/KID with bssn_book.metrics' offline MNIST extractor, {base['metrics_samples']} generated vs "
                       f"{base['metrics_samples']} real images, every {base['metrics_every']} iterations (metrics.csv)",
            **provenance(grid, runs)}
    (RESULTS / "meta.json").write_text(json.dumps(meta, indent=1))
    link_results()
    print(f"collected {len(runs)} runs ({sum(r['status'] == 'done' for r in runs)} done) into {RESULTS}")
    return True


def parts(a):
    """The parts the options name, in order, each as (label, function pointing the script at it and returning its
    grid, its collect). With none of --resolution, --long, --long-official, --mechanism: everything."""
    if a.resolution is None and a.long is None and a.long_official is None and not a.mechanism:
        a.resolution, a.long = list(RESOLUTIONS), list(LONG_RESOLUTIONS)
        a.long_official, a.mechanism = list(LONG_OFFICIAL_RESOLUTIONS), True
    out = [(f"--resolution {r}", lambda r=r: at_resolution(r), collect) for r in a.resolution or []]
    out += [(f"--long {r}", lambda r=r: at_resolution(r, long=True), collect) for r in a.long or []]
    out += [(f"--long-official {r}", lambda r=r: at_resolution(r, long=True, official=True), collect)
            for r in a.long_official or []]
    out += [("--mechanism", at_mechanism, collect_mechanism)] if a.mechanism else []
    return out


def narrowed(grid, seeds=None):
    "The grid with OVERRIDES in every configuration's sets and, with `seeds`, only those of its seeds."
    return [dict(g, sets=dict(g["sets"], **OVERRIDES),
                 seeds=tuple(s for s in g["seeds"] if seeds is None or s in seeds)) for g in grid]


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--collect-only", action="store_true", help="only rebuild the result folders from the run folders (no training)")
    p.add_argument("--only", help="comma list of configuration names (e.g. sn-c1,bssn-c1.2): train only these")
    p.add_argument("--jobs", type=int, default=1, help="configurations trained at once (one core each; default 1)")
    p.add_argument("--resolution", type=int, nargs="*",
                   help=f"MNIST size(s) of the image runs, one grid each, in turn; config.json's size (16) uses runs/ "
                        "and results/, another size N runs-rN/ and results-rN/. With none of --resolution, --long, "
                        f"--long-official, --mechanism: {list(RESOLUTIONS)} (the two committed grids), the length checks "
                        "and the mechanism experiment; with some of them, only what they name")
    p.add_argument("--long", type=int, nargs="*",
                   help=f"size(s) of the length check ({', '.join(LONG_CONFIGS)} with {LONG_SETS}), in runs-rN-long/ "
                        f"and results-rN-long/, after the grids (by default: {list(LONG_RESOLUTIONS)})")
    p.add_argument("--long-official", type=int, nargs="*",
                   help=f"size(s) of the length check under the official loop ({OFFICIAL_SETS}), in "
                        f"runs-rN-long-official/ and results-rN-long-official/ (by default: {list(LONG_OFFICIAL_RESOLUTIONS)})")
    p.add_argument("--mechanism", action="store_true",
                   help="the mechanism experiment (runs-mechanism/, results-mechanism/), last")
    p.add_argument("--root", type=Path, help="put the runs*/ and results*/ folders here instead of beside run.py "
                                             "(smoke runs; needed with --set and --seeds)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides for every run of every part named (e.g. iterations=20): smoke runs only")
    p.add_argument("--seeds", help="comma list: train and collect only these seeds (smoke runs only)")
    a = p.parse_args()
    from bssn_book.cli import UsageError, parse_sets
    try:
        OVERRIDES.update(parse_sets(a.set))
    except UsageError as e:
        p.error(str(e))
    seeds = [int(s) for s in a.seeds.split(",")] if a.seeds else None
    if (OVERRIDES or seeds is not None) and (a.root is None or a.root.resolve() == HERE):
        p.error("--set and --seeds change what the committed results hold: give --root with another folder")
    if a.root is not None:
        OUT = a.root.resolve()
        OUT.mkdir(parents=True, exist_ok=True)
    todo = parts(a)
    try:
        for _, point, _ in todo:   # every part checked before anything trains
            point()
    except ValueError as e:
        p.error(str(e))
    names = [g["name"] for g in GRID + MECHANISM]
    only = a.only.split(",") if a.only else names
    unknown = sorted(set(only) - set(names))
    if unknown: p.error(f"--only: unknown configuration(s) {', '.join(unknown)} (known: {', '.join(names)})")
    if a.jobs < 1: p.error(f"--jobs must be >= 1, got {a.jobs}")
    t0, left = time.perf_counter(), []
    for label, point, collect_part in todo:
        grid = narrowed(point(), seeds)
        if not a.collect_only:
            train([g for g in grid if g["name"] in only], a.jobs)
        left.extend([] if collect_part(grid) else [RESULTS.name])
    print(f"run.py: {time.perf_counter() - t0:.0f} s")
    if left:
        sys.exit(f"run.py: not collected (fewer finished runs than committed): {', '.join(left)}")
