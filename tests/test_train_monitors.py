"""TrainConfig.logit_scale and d_depth, and the monitors grad_slope/D, logit_spread/D and
margin_frac/D, each against a reference computed by hand on a tiny trainer."""
import copy
import math

import numpy as np
import pytest
import torch
from torch.func import functional_call
from torch.nn.utils import parametrize

from bssn_book import losses
from bssn_book.train import (ARCH_FIELDS, CheckpointError, ConfigError, Trainer,
                             build_models, depth_slope, logit_monitors)
from test_train import tiny_config, tiny_data

torch.set_num_threads(1)
MONITORS = ("grad_slope/D", "logit_spread/D", "margin_frac/D")


# -- validation -------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "2", True, None])
def test_logit_scale_is_validated(bad):
    with pytest.raises(ConfigError, match="logit_scale=.* \\(allowed: a number > 0\\)"):
        tiny_config("x", logit_scale=bad).validate()


@pytest.mark.parametrize("bad", [0, 4, 9, 10, 8.0, True, "16"])
def test_d_depth_is_validated(bad):
    with pytest.raises(ConfigError, match="d_depth=.*4r \\+ 4"):
        tiny_config("x", d_depth=bad).validate()


def test_d_depth_is_for_the_cnn_only():
    cfg = tiny_config("x", dataset="ring", model="mlp", resolution=2, d_depth=8)
    with pytest.raises(ConfigError, match="d_depth=8 \\(allowed: None for model 'mlp'"):
        cfg.validate()


@pytest.mark.parametrize("depth", [8, 12, 16])
def test_d_depth_sets_the_number_of_normalized_layers(tmp_path, depth):
    _, D = build_models(tiny_config(tmp_path, d_depth=depth))
    assert sum(parametrize.is_parametrized(m, "weight") for m in D.modules()) == depth
    # the default (None) is the paper's network, 8 layers, the same as d_depth=8
    if depth == 8:
        _, D0 = build_models(tiny_config(tmp_path))
        assert all(torch.equal(a, b) for a, b in zip(D.state_dict().values(),
                                                     D0.state_dict().values())
                   if torch.is_tensor(a))


def test_a_checkpoint_of_another_depth_is_refused(tmp_path):
    assert "d_depth" in ARCH_FIELDS and "logit_scale" not in ARCH_FIELDS
    Trainer(tiny_config(tmp_path, iterations=4, d_depth=12), data=tiny_data()).fit()
    with pytest.raises(CheckpointError, match="d_depth: checkpoint 12, config 16"):
        Trainer(tiny_config(tmp_path, iterations=8, d_depth=16), data=tiny_data()).fit()


def test_default_config_has_unit_logit_scale_and_the_paper_depth():
    cfg = tiny_config("x")
    assert (cfg.logit_scale, cfg.d_depth, cfg.loop, cfg.numerics) == (1.0, None, "book",
                                                                      None)


# -- logit_scale --------------------------------------------------------------------
def first_step(tmp_path, **kw):
    "A tiny trainer, D's raw output at its first D forward, and its first step's row."
    t = Trainer(tiny_config(tmp_path, **kw), data=tiny_data())
    outs = []
    t.D_raw.register_forward_hook(lambda m, a, o: outs.append(o.detach().clone()))
    row = t.train_step()
    return t, outs, row


@pytest.mark.parametrize("loss", ["hinge", "ns", "wgan"])
def test_logit_scale_multiplies_the_logits_of_every_loss(tmp_path, loss):
    """Same init and batch: the logged D outputs are k times the unscaled ones, loss_d is
    the loss of the scaled logits, and the G step's loss is that of k times D's output."""
    k = 7.0
    _, outs1, row1 = first_step(tmp_path / "1", loss=loss)
    _, outs, row = first_step(tmp_path / "k", loss=loss, logit_scale=k)
    assert torch.equal(outs[0], outs1[0])   # D's own output is the same
    b = outs[0].shape[0] // 2
    logits = outs[0].float() * k
    assert math.isclose(row["d_real"], k * row1["d_real"], rel_tol=1e-6)
    assert math.isclose(row["d_fake"], k * row1["d_fake"], rel_tol=1e-6)
    ref = losses.d_loss(loss, logits[:b], logits[b:])
    assert math.isclose(row["loss_d"], float(ref), rel_tol=1e-6)
    g_ref = losses.g_loss(loss, outs[1].float() * k)   # outs[1]: the G step's D forward
    assert math.isclose(row["loss_g"], float(g_ref), rel_tol=1e-6)


def test_the_penalty_sees_the_scaled_d(tmp_path, monkeypatch):
    "With gp_weight, the penalty's D is D times logit_scale."
    k, calls = 3.0, []
    real_gp = losses.gradient_penalty

    def spy(D, real, fake, *a, **kw):
        calls.append((D, real))
        return real_gp(D, real, fake, *a, **kw)
    monkeypatch.setattr(losses, "gradient_penalty", spy)
    t, _, _ = first_step(tmp_path, loss="wgan", gp_weight=10.0, logit_scale=k)
    D, real = calls[0]
    t.D_raw.eval()   # two forwards, the same normalized weights
    with torch.no_grad():
        assert torch.allclose(D(real), k * t.D_raw(real), rtol=1e-6)


# -- monitors ---------------------------------------------------------------------
def test_monitors_are_logged_every_log_every_steps_only(tmp_path):
    t = Trainer(tiny_config(tmp_path, iterations=6, log_every=3), data=tiny_data())
    rows = [t.train_step() for _ in range(6)]
    for s, row in enumerate(rows, 1):
        assert all((k in row) == (s % 3 == 0) for k in MONITORS), (s, list(row))


def effective_weight_grads(D_state, D_plain_like, norm_D, x, loss, k):
    """Gradient norms w.r.t. the effective weights, by an independent route: the
    normalized weights of the step (one training-mode access of a copy of D in its
    state before the step), made leaves of an unnormalized copy, autograd through it."""
    D = copy.deepcopy(norm_D)
    D.load_state_dict(D_state)
    D.train()
    names = [n for n, m in D.named_modules() if parametrize.is_parametrized(m, "weight")]
    with torch.no_grad():
        weights = {f"{n}.weight": dict(D.named_modules())[n].weight.clone() for n in names}
    leaves = {n: w.requires_grad_(True) for n, w in weights.items()}
    params = {k_: v for k_, v in D_state.items() if "parametrizations" not in k_}
    params.update(leaves)
    logits = functional_call(D_plain_like, params, (x,)).float() * k
    b = x.shape[0] // 2
    losses.d_loss(loss, logits[:b], logits[b:]).backward()
    return [float(leaves[f"{n}.weight"].grad.norm()) for n in names]


@pytest.mark.parametrize("kw", [dict(), dict(logit_scale=40.0, norm="bssn", scale=1.2),
                                dict(d_depth=16), dict(loop="official", n_dis=2)])
def test_monitors_equal_a_hand_computation(tmp_path, kw):
    t = Trainer(tiny_config(tmp_path, log_every=1, **kw), data=tiny_data())
    plain = build_models(t.config.replace(norm=None, loop="book"))[1]
    for _ in range(3):   # a few steps first, so that the logits spread
        t.train_step()
    states, inputs, outs = [], [], []

    def before(m, args):
        inputs.append(args[0].clone())
        states.append(copy.deepcopy(m.state_dict()))
    t.D_raw.register_forward_pre_hook(before)
    t.D_raw.register_forward_hook(lambda m, a, o: outs.append(o.detach().clone()))
    row = t.train_step()
    last = t.config.n_dis - 1   # the last D step's forward
    x, state, out = inputs[last], states[last], outs[last]
    k = t.config.logit_scale
    b = x.shape[0] // 2
    ref = effective_weight_grads(state, plain, t.D_raw, x, t.config.loss, k)
    assert len(ref) == (t.config.d_depth or 8)
    slope = np.polyfit(np.arange(len(ref)), np.log10(ref), 1)[0]
    assert math.isclose(row["grad_slope/D"], slope, rel_tol=1e-4, abs_tol=1e-6)
    logits = out.float() * k
    assert math.isclose(row["logit_spread/D"], float(logits.std()), rel_tol=1e-6)
    inside = int((logits[:b] < 1).sum() + (logits[b:] > -1).sum())
    assert row["margin_frac/D"] == inside / (2 * b)
    if k > 1:   # the large scale pushes logits out of the margin: a non-trivial fraction
        assert 0 < row["margin_frac/D"] < 1


def test_grad_slope_without_normalization_uses_the_raw_weights(tmp_path):
    t = Trainer(tiny_config(tmp_path, norm=None, log_every=1), data=tiny_data())
    grads = {}
    t.opt_D.register_step_pre_hook(lambda opt, a, kw: grads.update(
        {n: p.grad.norm().item() for n, p in t.D_raw.named_parameters()
         if n.endswith("weight")}))
    row = t.train_step()
    ref = [grads[f"{n}.weight"] for n, m in t.D_raw.named_modules()
           if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert math.isclose(row["grad_slope/D"], depth_slope(ref), rel_tol=1e-9)


def test_depth_slope_and_logit_monitors_on_known_values():
    assert math.isclose(depth_slope([1, 10, 100, 1000]), 1.0)
    assert math.isclose(depth_slope([8, 4, 2]), -math.log10(2))
    assert math.isnan(depth_slope([1.0])) and math.isnan(depth_slope([1.0, 0.0]))
    m = logit_monitors(torch.tensor([[2.0], [0.5]]), torch.tensor([[-3.0], [0.0]]))
    assert m["margin_frac/D"] == 0.5   # 0.5 < 1 (real) and 0 > -1 (fake) are inside
    assert math.isclose(m["logit_spread/D"], float(torch.tensor([2, .5, -3, 0]).std()))
