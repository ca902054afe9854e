"""Tests for bssn_book.train: config validation, presets, exact resume, kill -9, SIGTERM, monitors, EMA.

Tiny configurations (the paper's CNN at width 0.0625 on 16x16 random images, batch 8) keep each run
well under a second of training; the helpers here are shared by the other trainer test files."""
import json
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
