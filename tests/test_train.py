"""Tests for bssn_book.train: config validation, presets, exact resume, kill -9, SIGTERM, monitors, EMA.

Tiny configurations (the paper's CNN at width 0.0625 on 16x16 random images, batch 8) keep each run
well under a second of training; the helpers here are shared by the other trainer test files."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bssn_book.train import (_read_rows, PRESETS, SETTINGS, ConfigError, TrainConfig, Trainer, list_checkpoints,
                             load_checkpoint, preset)

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
KEYS = ("loss_d", "loss_g", "d_real", "d_fake")


# -- helpers (imported by test_checkpoint, test_cli, test_train_ddp) ----------------------------------
def tiny_data(n=256, res=16, seed=0):
    "Random images in [-1, 1]: the trainer's behaviour, not the data, is under test."
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, res, res, generator=g) * 2 - 1


def tiny_config(out_dir, **kw):
    base = dict(dataset="mnist", model="cnn", width=0.0625, resolution=16, channels=1, z_dim=8, norm="sn",
                batch_size=8, iterations=12, log_every=1, checkpoint_every=4, sample_every=0, metrics_every=0,
                keep_last=3, out_dir=str(out_dir), progress=False, device="cpu", lr_g=2e-4, lr_d=2e-4)
    base.update(kw)
    return TrainConfig(**base)


def child_env():
    e = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")] + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else []))
    return e


def start(code):
    "Run `code` in a fresh Python process (this checkout's package, one thread)."
    return subprocess.Popen([PY, "-c", code], env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=str(ROOT))


def losses_of(rows):
    return [(r["step"],) + tuple(r[k] for k in KEYS) for r in rows]


def rows_of(out_dir):
    return _read_rows(Path(out_dir) / "log.jsonl")


def wait_for(pred, timeout=180.0, proc=None):   # generous: a loaded machine imports torch slowly
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred(): return True
        if proc is not None and proc.poll() is not None: return pred()
        time.sleep(0.05)
    return False


# -- configuration -------------------------------------------------------------------------------------
def test_validate_names_every_bad_field_and_allowed_values():
    with pytest.raises(ConfigError) as e:
        TrainConfig(norm="bsssn", n_dis=0, betas=(0.5, 1.5), device="gpu", loss="l2", ema=1.5,
                    batch_size=True, keep_last=0, amp="yes").validate()
    msg = str(e.value)
    for field, allowed in [("norm=", "'bssn'"), ("n_dis=", ">= 1"), ("betas=", "[0, 1)"), ("device=", "'cuda'"),
                           ("loss=", "'hinge'"), ("ema=", "(0, 1)"), ("batch_size=", ">= 1"), ("keep_last=", ">= 1"),
                           ("amp=", "True, False")]:
        assert field in msg and allowed in msg, (field, msg)


@pytest.mark.parametrize("kw, field", [
    (dict(resolution=20), "resolution"), (dict(model="resnet", resolution=64), "resolution"),
    (dict(channels=2), "channels"), (dict(dataset="cifar10"), "data_root"), (dict(model="mlp"), "mlp"),
    (dict(dataset="ring"), "ring"), (dict(amp=True, device="cpu"), "amp"), (dict(gamma="both"), "gamma"),
    (dict(width=0), "width"), (dict(lr_d=float("nan")), "lr_d"), (dict(metrics_extractor="clip"), "metrics_extractor"),
    (dict(dataset="svhn"), "dataset"), (dict(iterations=1.5), "iterations"), (dict(threads=0), "threads"),
    (dict(threads=1.5), "threads"), (dict(threads=True), "threads")])
def test_validate_single_fields(kw, field):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**kw).validate()


def test_validation_runs_before_anything_else(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(ConfigError):
        Trainer(tiny_config(out, norm="nope"))
    assert not out.exists()


def test_from_dict_rejects_unknown_fields_and_maps_none():
    with pytest.raises(ConfigError, match="unknown TrainConfig field.*'widht'"):
        TrainConfig.from_dict({"widht": 1.0})
    c = TrainConfig.from_dict({"norm": "none", "ema": "none", "betas": [0.5, 0.9]}).validate()
    assert c.norm is None and c.ema is None and c.betas == (0.5, 0.9)


def test_norm_kinds_match_the_norms_module():
    norms = pytest.importorskip("bssn_book.norms")
    from bssn_book.train import NORMS
    assert set(NORMS) - {None, "none"} == set(norms.NORM_KINDS)


def test_presets_hold_the_papers_settings():
    assert "quick" in PRESETS
    for name in PRESETS:
        preset(name)
    for name, iters in [("paper-cifar10", 400_000), ("paper-stl10", 800_000)]:
        c = preset(name)
        assert (c.loss, c.lr_g, c.lr_d, c.betas, c.n_dis, c.batch_size, c.iterations) == \
            ("hinge", 1e-4, 1e-4, (0.5, 0.999), 1, 64, iters)
    c = preset("paper-cifar10", **SETTINGS["ndis5"])
    assert (c.n_dis, c.betas) == (5, (0.5, 0.9))
    q = preset("quick")
    assert q.dataset == "mnist" and q.channels == 1 and q.resolution in (16, 32) and 0.125 <= q.width <= 0.25
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("paper-mnist")


# -- training ------------------------------------------------------------------------------------------
def test_fit_logs_monitors_samples_and_done(tmp_path):
    out = tmp_path / "run"
    r = Trainer(tiny_config(out, iterations=6, log_every=3, sample_every=3, ema=0.9), data=tiny_data()).fit()
    assert r["status"] == "done" and r["step"] == 6
    rows = rows_of(out)
    assert [x["step"] for x in rows] == [3, 6]
    row = rows[-1]
    for prefix in ("grad/D/", "grad/G/", "fan_in_var/D/", "sigma/D/"):
        assert any(k.startswith(prefix) for k in row), prefix
    assert all(torch.isfinite(torch.tensor(v)) for k, v in row.items() if isinstance(v, float))
    header = (out / "log.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["step", "loss_d", "d_real"] and len((out / "log.csv").read_text().splitlines()) == 3
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-00000003.png", "step-00000006.png"]
    assert json.loads((out / "done.json").read_text())["step"] == 6
    state = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])
    assert state["step"] == 6 and state["G_ema"] is not None
    assert set(state["rng"]) >= {"torch", "numpy", "python"} and state["config"]["out_dir"] == str(out)


def test_fit_runs_with_the_configured_threads_and_gives_the_old_count_back(tmp_path, monkeypatch):
    "threads=N: fit() runs with N torch threads (recorded in its summary and done.json), then restores the caller's."
    seen = []
    monkeypatch.setattr(Trainer, "train_step", lambda self, f=Trainer.train_step: (seen.append(torch.get_num_threads()),
                                                                                  f(self))[1])
    r = Trainer(tiny_config(tmp_path / "a", iterations=2, threads=3), data=tiny_data()).fit()
    assert seen == [3, 3] and r["threads"] == 3 and json.loads((tmp_path / "a" / "done.json").read_text())["threads"] == 3
    assert torch.get_num_threads() == 1                                     # this module's setting, given back
    seen.clear()
    r = Trainer(tiny_config(tmp_path / "b", iterations=1), data=tiny_data()).fit()   # None: default_threads()
    assert seen == [1] and r["threads"] == 1


def test_default_threads_share_the_cpus_among_torchrun_processes(monkeypatch):
    from bssn_book import train
    monkeypatch.setattr(train, "available_cpus", lambda: 8)
    monkeypatch.setattr(train.torch, "get_num_threads", lambda: 6)          # torch's own setting caps the share
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert train.default_threads() == 6
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert train.default_threads() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert train.default_threads() == 1                                     # never 0


def test_n_dis_steps_d_per_g_step(tmp_path):
    t = Trainer(tiny_config(tmp_path / "r", n_dis=3, iterations=2, log_every=1), data=tiny_data())
    t.fit()
    assert t.opt_D.state_dict()["state"][0]["step"] == 6 and t.opt_G.state_dict()["state"][0]["step"] == 2


def test_resume_equals_uninterrupted_run(tmp_path):
    data = tiny_data()
    full = Trainer(tiny_config(tmp_path / "full", ema=0.9), data=data).fit()
    Trainer(tiny_config(tmp_path / "cut", ema=0.9, iterations=7), data=data).fit()    # stops (and saves) at 7
    t = Trainer(tiny_config(tmp_path / "cut", ema=0.9), data=data)
    resumed = t.fit()
    assert str(t.resumed_from).endswith("ckpt-00000007.pt")
    a, b = losses_of(rows_of(tmp_path / "full")), losses_of(rows_of(tmp_path / "cut"))
    assert [x[0] for x in b] == list(range(1, 13))
    assert a == b                                        # bitwise on CPU
    sa = load_checkpoint(tmp_path / "full" / "checkpoints" / "ckpt-00000012.pt")
    sb = load_checkpoint(tmp_path / "cut" / "checkpoints" / "ckpt-00000012.pt")
    for k in ("G", "D", "G_ema"):
        for name in sa[k]:
            x, y = sa[k][name], sb[k][name]   # tensors, and the normalizations' settings (extra state)
            assert torch.equal(x, y) if torch.is_tensor(x) else x == y, (k, name)
    assert full["loss_d"] == resumed["loss_d"]


def test_kill_9_then_resume_finishes_like_an_uninterrupted_run(tmp_path):
    out = tmp_path / "killed"
    kw = dict(iterations=400, checkpoint_every=3, log_every=1)
    p = start(f"from test_train import tiny_config, tiny_data\nfrom bssn_book.train import Trainer\n"
              f"Trainer(tiny_config({str(out)!r}, **{kw!r}), data=tiny_data()).fit()")
    ok = wait_for(lambda: len(list_checkpoints(out / "checkpoints")) >= 2, proc=p)
    p.kill(); p.wait()
    assert ok, p.stderr.read()
    assert p.returncode == -signal.SIGKILL
    last = list_checkpoints(out / "checkpoints")[-1]
    step = load_checkpoint(last)["step"]
    assert step < 400
    kw["iterations"] = step + 5
    t = Trainer(tiny_config(out, **kw), data=tiny_data())
    r = t.fit()
    assert r["status"] == "done" and t.resumed_from is not None and r["step"] == step + 5
    ref = tmp_path / "ref"
    Trainer(tiny_config(ref, **kw), data=tiny_data()).fit()
    assert losses_of(rows_of(out)) == losses_of(rows_of(ref))


def test_sigint_in_process_finishes_the_step_and_saves(tmp_path):
    before = signal.getsignal(signal.SIGINT)   # SIG_IGN when the test run was started in the background
    out = tmp_path / "int"
    t = Trainer(tiny_config(out, iterations=50, checkpoint_every=0), data=tiny_data())
    def hook(module, args):   # the signal arrives in the middle of step 3 (during the D forward)
        if t.step == 2: os.kill(os.getpid(), signal.SIGINT)
    h = t.D_raw.register_forward_pre_hook(hook)
    r = t.fit()
    h.remove()
    assert r["status"] == "interrupted" and r["signal"] == "SIGINT" and r["step"] == 3
    assert [c.name for c in list_checkpoints(out / "checkpoints")] == ["ckpt-00000003.pt"]
    assert signal.getsignal(signal.SIGINT) is before   # our handler is removed again


def test_sigterm_finishes_the_step_saves_and_exits_cleanly(tmp_path):
    sig = signal.SIGTERM
    out = tmp_path / "sig"
    kw = dict(iterations=100000, checkpoint_every=0, log_every=1)
    p = start(f"import json, sys\nfrom test_train import tiny_config, tiny_data\nfrom bssn_book.train import Trainer\n"
              f"r = Trainer(tiny_config({str(out)!r}, **{kw!r}), data=tiny_data()).fit()\n"
              f"print(json.dumps(r))")
    assert wait_for(lambda: (out / "log.jsonl").exists() and len(rows_of(out)) >= 3, proc=p), p.stderr.read()
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 0 and "Traceback" not in stderr, stderr
    r = json.loads(stdout.strip().splitlines()[-1])
    assert r["status"] == "interrupted" and r["signal"] == sig.name
    ckpts = list_checkpoints(out / "checkpoints")
    assert [c.name for c in ckpts] == [f"ckpt-{r['step']:08d}.pt"]
    assert load_checkpoint(ckpts[-1])["step"] == r["step"] == rows_of(out)[-1]["step"]
    assert not (out / "done.json").exists()


def test_mlp_on_a_2d_mixture_with_metrics(tmp_path):
    data = torch.randn(512, 2)
    out = tmp_path / "mlp"
    cfg = tiny_config(out, dataset="ring", model="mlp", z_dim=4, width=0.25, iterations=4, log_every=2,
                      sample_every=4, metrics_every=4, metrics_samples=200)
    r = Trainer(cfg, data=data).fit()
    assert r["status"] == "done" and (out / "samples" / "step-00000004.png").exists()
    m = r["metrics"]
    assert m["step"] == 4 and m["n_modes"] == 8 and 0 <= m["modes_covered"] <= 8 and 0 <= m["high_quality"] <= 1


def test_missing_inception_weights_stop_the_run_before_training(tmp_path, monkeypatch):
    "A run that will evaluate with Inception refuses to start without the weights (not hours later)."
    from bssn_book import metrics
    monkeypatch.setattr(metrics, "inception_weights_path", lambda: tmp_path / "nowhere" / "weights.pth")
    out = tmp_path / "run"
    cfg = tiny_config(out, metrics_every=4, metrics_extractor="inception-v3-compat")
    with pytest.raises(FileNotFoundError, match="Inception weights are not available"):
        Trainer(cfg, data=tiny_data())
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())
    # no periodic metrics, or none within the run's iterations, start as before
    Trainer(tiny_config(tmp_path / "ok", metrics_every=0, metrics_extractor="inception-v3-compat"), data=tiny_data())
    Trainer(tiny_config(tmp_path / "ok2", iterations=2, metrics_every=4, metrics_extractor="inception-v3-compat"),
            data=tiny_data())


# -- WGAN-GP: gp_weight ----------------------------------------------------------------------------------
# The official learnable-gamma runs (fjxmlzn/BSN, same_gamma-CNN/config.py `d_gp_coe`: 10.0; same_gamma-CNN/gan/gan.py)
# train D on the WGAN loss plus 10 x the gradient penalty, with one power-iteration update per D step (the penalty's D
# is built with NO_OPS). TrainConfig.gp_weight is that weight; these tests hold the trainer to it.
@pytest.mark.parametrize("value", [-1.0, -1e-9, float("nan"), float("inf"), "10", True, None])
def test_gp_weight_must_be_a_number_at_least_0(value):
    with pytest.raises(ConfigError, match=r"gp_weight=.* \(allowed: a number >= 0"):
        TrainConfig(gp_weight=value).validate()


def test_gp_weight_0_and_positive_numbers_are_accepted():
    assert TrainConfig().gp_weight == 0                   # the default: no penalty
    for v in (0, 0.0, 10, 10.0, 0.5):
        assert TrainConfig(gp_weight=v).validate().gp_weight == v


def test_gp_weight_adds_ten_times_the_penalty_of_the_steps_own_interpolates(tmp_path):
    """loss="wgan", gp_weight=10: D's loss is the WGAN loss of the same batch plus 10 x the logged `gp`, and `gp` is
    the penalty recomputed here by hand: the mean of (||grad_x D(x_hat)|| - 1)^2 at x_hat = eps real + (1 - eps) fake,
    with the step's own real batch, fake batch, eps (the RNG state at the call) and normalized weights (an eval-mode
    copy of D taken at the call: after the step's one power-iteration update, no further one)."""
    import copy
    from types import SimpleNamespace
    from bssn_book import losses
    data = tiny_data()
    kw = dict(loss="wgan", iterations=1, seed=3)
    plain = Trainer(tiny_config(tmp_path / "plain", **kw), data=data).train_step()
    t = Trainer(tiny_config(tmp_path / "gp", gp_weight=10, **kw), data=data)
    seen = []
    def spy(D, real, fake, **k):
        seen.append(dict(real=real.detach().clone(), fake=fake.detach().clone(), rng=torch.get_rng_state(),
                         D=copy.deepcopy(D).eval(), training=D.training))
        return losses.gradient_penalty(D, real, fake, **k)
    t._losses = SimpleNamespace(d_loss=losses.d_loss, g_loss=losses.g_loss, gradient_penalty=spy)
    out = t.train_step()
    assert len(seen) == 1 and seen[0]["training"]                       # one D step, one penalty, D in training mode
    s = seen[0]
    real, fake = s["real"], s["fake"]
    assert real.shape == fake.shape == (8, 1, 16, 16) and real.dtype == fake.dtype == torch.float32
    assert all((data.flatten(1) == r.flatten()).all(1).any() for r in real)    # the real batch: images of the data
    assert not any((data.flatten(1) == f.flatten()).all(1).any() for f in fake)
    torch.set_rng_state(s["rng"])
    eps = torch.rand(8, 1, 1, 1)
    x = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(s["D"](x).sum(), x)
    by_hand = float(((g.flatten(1).norm(dim=1) - 1) ** 2).mean())
    assert "gp" not in plain and math.isfinite(out["gp"]) and out["gp"] > 0
    assert out["gp"] == pytest.approx(by_hand, rel=1e-5)
    assert plain["loss_d"] == pytest.approx(plain["d_fake"] - plain["d_real"], rel=1e-5, abs=1e-7)   # WGAN's D loss
    # the same batch through the same D: identical logits; D's loss differs by exactly 10 x gp
    assert (out["d_real"], out["d_fake"]) == pytest.approx((plain["d_real"], plain["d_fake"]), rel=1e-6, abs=1e-8)
    assert out["loss_d"] == pytest.approx(plain["loss_d"] + 10 * out["gp"], rel=1e-5, abs=1e-6)
    assert out["loss_d"] != pytest.approx(plain["loss_d"] + out["gp"], rel=1e-5, abs=1e-6)   # weighted, not plain


@pytest.mark.parametrize("kw", [dict(norm="sn"), dict(norm="bssn", scale=1.2), dict(norm="sn", gamma="shared")],
                         ids=["sn", "bssn", "sn-gamma-shared"])
def test_gp_runs_each_layers_power_iteration_once_per_d_step(tmp_path, kw):
    """With the penalty, D's second forward (on the interpolates) reuses the step's normalized weights: every
    normalized layer's parametrization runs forward (in training mode: one power-iteration update) once per D step plus
    once for the G step, as without the penalty. Two steps at n_dis = 2: 2 x (2 + 1) calls per layer, not 2 x (4 + 1)."""
    counts = {}
    for gp in (0, 10):
        t = Trainer(tiny_config(tmp_path / f"gp{gp}", loss="wgan", gp_weight=gp, n_dis=2, iterations=2, **kw),
                    data=tiny_data())
        mods = {n: m for n, m in t.D_raw.named_modules() if n.endswith("parametrizations.weight.0")}
        assert len(mods) == 8                                            # 7 convolutions and the last linear layer
        calls = {n: [] for n in mods}
        hooks = [m.register_forward_hook(lambda mod, a, o, n=n: calls[n].append(mod.training)) for n, m in mods.items()]
        rows = [t.train_step() for _ in range(2)]
        for h in hooks: h.remove()
        assert all(all(v) for v in calls.values())                        # every call in training mode: u updated
        counts[gp] = {n: len(v) for n, v in calls.items()}
        assert ("gp" in rows[-1]) == bool(gp)
    assert counts[10] == counts[0] == {n: 2 * (2 + 1) for n in counts[0]}


def test_gp_weight_0_gives_the_trajectory_of_a_config_without_the_field(tmp_path):
    "A config that never names gp_weight (e.g. an older config.json) and one with gp_weight=0: the same losses."
    data = tiny_data()
    base = tiny_config(tmp_path / "old", loss="wgan", iterations=4, checkpoint_every=0).to_dict()
    del base["gp_weight"]
    Trainer(TrainConfig.from_dict(base), data=data).fit()
    Trainer(tiny_config(tmp_path / "zero", loss="wgan", iterations=4, checkpoint_every=0, gp_weight=0.0),
            data=data).fit()
    Trainer(tiny_config(tmp_path / "ten", loss="wgan", iterations=4, checkpoint_every=0, gp_weight=10.0),
            data=data).fit()
    old, zero, ten = (rows_of(tmp_path / n) for n in ("old", "zero", "ten"))
    assert [r["step"] for r in old] == [1, 2, 3, 4]
    assert losses_of(old) == losses_of(zero)                                # bitwise on CPU
    assert losses_of(ten) != losses_of(zero)                                 # the comparison can tell them apart
    assert not any("gp" in r for r in old + zero) and all(math.isfinite(r["gp"]) for r in ten)


def test_cli_set_gp_weight_reaches_the_config(tmp_path, capsys):
    "`bssn-book train/sweep --set loss=wgan gp_weight=10`: the runs' config.json hold it and their logs have `gp`."
    from bssn_book import cli
    tiny = ["width=0.0625", "z_dim=8", "batch_size=8", "log_every=1", "sample_every=0", "metrics_every=0",
            "checkpoint_every=0", "progress=false", "iterations=2", "loss=wgan", "gp_weight=10"]
    c = cli.make_config("quick", sets=cli.parse_sets(tiny))
    assert (c.loss, c.gp_weight) == ("wgan", 10)
    out = tmp_path / "run"
    assert cli.main(["train", "--preset", "quick", "--set", *tiny, f"out_dir={out}"]) == 0, capsys.readouterr().err
    sw = tmp_path / "sweep"
    assert cli.main(["sweep", "--kinds", "sn", "--scales", "1", "--seeds", "0", "--out", str(sw),
                     "--set", *tiny, "gamma=shared"]) == 0, capsys.readouterr().err
    for d in (out, sw / "sn-c1-seed0"):
        cfg = json.loads((d / "config.json").read_text())
        assert (cfg["loss"], cfg["gp_weight"], cfg["gamma"]) == ("wgan", 10, None if d == out else "shared"), d
        assert [r["step"] for r in rows_of(d)] == [1, 2] and all(math.isfinite(r["gp"]) for r in rows_of(d)), d
    capsys.readouterr()
    assert cli.main(["train", "--set", "gp_weight=-1"]) == 2
    err = capsys.readouterr().err
    assert "gp_weight=-1 (allowed: a number >= 0" in err and len(err.strip().splitlines()) == 1, err


def test_resume_with_the_gradient_penalty_equals_uninterrupted_run(tmp_path):
    "The penalty's eps comes from torch's RNG, which the checkpoint holds: a resumed WGAN-GP run is the same run."
    data, kw = tiny_data(), dict(loss="wgan", gp_weight=10, gamma="shared", checkpoint_every=3)
    Trainer(tiny_config(tmp_path / "full", iterations=8, **kw), data=data).fit()
    Trainer(tiny_config(tmp_path / "cut", iterations=5, **kw), data=data).fit()          # saves at 5
    t = Trainer(tiny_config(tmp_path / "cut", iterations=8, **kw), data=data)
    t.fit()
    assert str(t.resumed_from).endswith("ckpt-00000005.pt")
    full, cut = rows_of(tmp_path / "full"), rows_of(tmp_path / "cut")
    assert [r["step"] for r in cut] == list(range(1, 9))
    assert [(r["step"], r["loss_d"], r["gp"], r["loss_g"]) for r in full] == \
        [(r["step"], r["loss_d"], r["gp"], r["loss_g"]) for r in cut]                     # bitwise on CPU
