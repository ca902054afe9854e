"""TrainConfig(loop="official"): the official training loop's five differences from ours
(fjxmlzn/BSN no_gamma-CNN/gan/gan.py `train` and `get_feed_dict`, gan/sn.py), each on a tiny
trainer against a reference computed by hand, and its exact resume.

1. u is updated n_dis times per iteration, once after each D optimizer step; no forward writes it.
2. The G step reuses the last D step's z.
3. Real batches are drawn with replacement, from a generator seeded by the run's seed.
4. sigma is differentiated through the power-iteration step (no stop_gradient).
5. u starts from a truncated normal, without warm-up.
"""
import copy

import pytest
import torch
from torch.func import functional_call
from torch.nn.utils import parametrize

from bssn_book import losses
from bssn_book.train import OFFICIAL_NORM, ConfigError, Trainer, build_models
from test_train import losses_of, rows_of, tiny_config, tiny_data

torch.set_num_threads(1)


def unit(x, eps=1e-12):
    return x / torch.linalg.vector_norm(x).clamp_min(eps)


def normalized_layers(D):
    "(layer, its normalization) for every layer of D with a normalized weight, in order."
    return [(m, m.parametrizations.weight[0]) for m in D.modules()
            if parametrize.is_parametrized(m, "weight")]


def official_trainer(tmp_path, **kw):
    return Trainer(tiny_config(tmp_path / "run", loop="official", **kw), data=tiny_data())


def test_official_loop_builds_d_with_the_official_normalization(tmp_path):
    t = official_trainer(tmp_path)
    book = Trainer(tiny_config(tmp_path / "book"), data=tiny_data())
    for _, norm in normalized_layers(t.D_raw):
        assert norm.settings()["grad_through_power_iteration"] is True
        assert norm.settings()["warmup"] is False
    for _, norm in normalized_layers(book.D_raw):
        assert "grad_through_power_iteration" not in norm.settings()
    assert OFFICIAL_NORM == {"grad_through_power_iteration": True, "warmup": False}


def test_u_starts_from_a_unit_truncated_normal_without_warm_up(tmp_path):
    """Each layer's u is the next draw of N(0, 1) truncated at +-2 (torch's global
    generator, right after D's initialization), made unit, with no power-iteration step;
    v = unit(M^T u)."""
    from bssn_book import models
    cfg = tiny_config(tmp_path, loop="official")
    _, D = build_models(cfg)
    torch.manual_seed(cfg.seed)   # build_models' draws by hand: G, D's raw weights, then u
    models.build_generator(cfg.model, z_dim=cfg.z_dim, channels=cfg.channels,
                           width=cfg.width, resolution=cfg.resolution)
    models.build_discriminator(cfg.model, in_channels=cfg.channels, width=cfg.width,
                               resolution=cfg.resolution)
    for layer, norm in normalized_layers(D):
        M = layer.parametrizations.weight.original.flatten(1)
        x = torch.nn.init.trunc_normal_(torch.empty(M.shape[0]), 0.0, 1.0, -2.0, 2.0)
        assert torch.allclose(norm._u, unit(x), atol=1e-7)
        assert torch.allclose(norm._v, unit(norm._u @ M), atol=1e-6)


@pytest.mark.parametrize("n_dis,gp_weight", [(1, 0.0), (5, 0.0), (2, 10.0)])
def test_u_is_updated_once_after_each_d_step_and_never_in_a_forward(tmp_path, n_dis,
                                                                    gp_weight):
    """Per iteration, u changes n_dis times: right after each D optimizer step, by one
    power-iteration step from the stored u with the new weights (v = unit(M^T u),
    u' = unit(M v)), computed here by hand. No forward writes it: not the D steps', not
    the penalty's, not the G step's."""
    loss = "wgan" if gp_weight else "hinge"
    t = official_trainer(tmp_path, n_dis=n_dis, gp_weight=gp_weight, loss=loss)
    layers = normalized_layers(t.D_raw)
    at_steps = []

    def after_step(opt, args, kwargs):
        at_steps.append([(m.parametrizations.weight.original.detach().clone(),
                          norm._u.clone()) for m, norm in layers])
    t.opt_D.register_step_post_hook(after_step)
    for _ in range(2):
        expected = [norm._u.clone() for _, norm in layers]
        at_steps.clear()
        t.train_step()
        assert len(at_steps) == n_dis
        for snapshot in at_steps:
            for j, (W, u_then) in enumerate(snapshot):
                # no forward of this D step (nor the penalty's) wrote u
                assert torch.equal(u_then, expected[j])
                M = W.flatten(1)
                expected[j] = unit(M @ unit(expected[j] @ M))
        for (_, norm), u in zip(layers, expected):   # the G step wrote nothing either
            assert torch.allclose(norm._u, u, atol=1e-6)


def test_book_loop_updates_u_in_every_forward(tmp_path):
    "The contrast: our loop's forwards update u (n_dis + 1 per iteration), none after a step."
    t = Trainer(tiny_config(tmp_path, n_dis=2), data=tiny_data())
    _, norm = normalized_layers(t.D_raw)[0]
    seen = []
    t.opt_D.register_step_post_hook(lambda *a: seen.append(norm._u.clone()))
    before = norm._u.clone()
    t.train_step()
    assert not torch.equal(seen[0], before)          # the D step's forward wrote it
    assert not torch.equal(norm._u, seen[-1])        # and the G step's forward


def capture_g_inputs(t):
    zs = []
    t.G_raw.register_forward_pre_hook(lambda m, args: zs.append(args[0].clone()))
    return zs


@pytest.mark.parametrize("n_dis", [1, 3])
def test_g_step_reuses_the_last_d_steps_z(tmp_path, n_dis):
    t = official_trainer(tmp_path, n_dis=n_dis)
    zs = capture_g_inputs(t)
    t.train_step()
    assert len(zs) == n_dis + 1 and torch.equal(zs[-1], zs[-2])
    assert all(not torch.equal(zs[i], zs[i + 1]) for i in range(n_dis - 1))
    book = Trainer(tiny_config(tmp_path / "book", n_dis=n_dis), data=tiny_data())
    zs = capture_g_inputs(book)
    book.train_step()
    assert len(zs) == n_dis + 1 and not torch.equal(zs[-1], zs[-2])


def test_real_batches_are_drawn_with_replacement_from_the_seeded_generator(tmp_path):
    """The real half of D's input at every D step is data[idx] with idx the next
    torch.randint(N, (b,)) of a generator seeded with seed + 2 (rank 0)."""
    data = tiny_data(n=16)
    t = Trainer(tiny_config(tmp_path, loop="official", n_dis=2, seed=5), data=data)
    b = t.batch
    seen = []
    t.D_raw.register_forward_pre_hook(lambda m, args: seen.append(args[0][:b].clone()))
    for _ in range(6):
        t.train_step()
    # per iteration: two D forwards, then the G step's
    d_steps = [x for i, x in enumerate(seen) if i % 3 != 2]
    assert len(d_steps) == 12
    g = torch.Generator().manual_seed(5 + 2)
    draws = [torch.randint(len(data), (b,), generator=g) for _ in range(12)]
    for real, idx in zip(d_steps, draws):
        assert torch.equal(real, data[idx])
    # with replacement: an index can repeat within a batch (never within the book's)
    assert any(len(set(i.tolist())) < b for i in draws)


def reference_d_grads(D_state, D_book_plain, x, loss, logit_scale=1.0):
    """Gradient of D's loss w.r.t. each raw weight with sigma computed by hand through one
    unrolled power-iteration step from the stored u (the official gan/sn.py), autograd
    all the way; returns (grads of the graph through the step, grads with u, v held
    constant)."""
    out = []
    for through in (True, False):
        params = {k: v.detach().clone().requires_grad_(not k.endswith(("._u", "._v")))
                  for k, v in D_state.items() if not k.endswith("_extra_state")}
        weights = {}
        for k, W in params.items():
            if not k.endswith("parametrizations.weight.original"):
                continue
            prefix = k[:-len("parametrizations.weight.original")]
            u = params[prefix + "parametrizations.weight.0._u"]
            M = W.flatten(1)
            v = unit(u @ M)
            if not through:
                v = v.detach()
            Mv = M @ v
            u2 = unit(Mv) if through else unit(Mv).detach()
            sigma = u2 @ Mv
            weights[prefix + "weight"] = W / sigma
        plain = {k: v for k, v in params.items() if "parametrizations" not in k}
        plain.update(weights)
        logits = functional_call(D_book_plain, plain, (x,)).float() * logit_scale
        b = x.shape[0] // 2
        L = losses.d_loss(loss, logits[:b], logits[b:])
        L.backward()
        out.append({k: v.grad.clone() for k, v in params.items() if v.grad is not None})
    return out


@pytest.mark.parametrize("logit_scale", [1.0, 3.0])
def test_d_gradient_is_autograd_through_one_unrolled_power_iteration(tmp_path,
                                                                     logit_scale):
    t = official_trainer(tmp_path, logit_scale=logit_scale)
    state = copy.deepcopy(t.D_raw.state_dict())
    plain = build_models(t.config.replace(norm=None, loop="book"))[1]
    inputs, grads = [], {}
    t.D_raw.register_forward_pre_hook(lambda m, args: inputs.append(args[0].clone()))

    def before_step(opt, args, kwargs):
        grads.update({k: p.grad.clone() for k, p in t.D_raw.named_parameters()})
    t.opt_D.register_step_pre_hook(before_step)
    t.train_step()
    through, held = reference_d_grads(state, plain, inputs[0], t.config.loss,
                                      logit_scale)
    assert set(through) == set(grads)
    differs = 0
    for k, g in grads.items():
        scale = through[k].abs().max()
        assert torch.allclose(g, through[k], rtol=1e-4, atol=1e-6 * scale), k
        differs += bool((through[k] - held[k]).abs().max() > 1e-3 * scale)
    assert differs > 0   # the reference could tell the two gradients apart


@pytest.mark.parametrize("extra", [dict(n_dis=2), dict(loss="wgan", gp_weight=10.0)])
def test_official_loop_resumes_exactly(tmp_path, extra):
    "Stopped at step 8 and resumed: the losses of the uninterrupted run, bit for bit."
    data = tiny_data()
    kw = dict(loop="official", logit_scale=2.0, **extra)
    Trainer(tiny_config(tmp_path / "full", **kw), data=data).fit()
    Trainer(tiny_config(tmp_path / "cut", iterations=8, **kw), data=data).fit()
    resumed = Trainer(tiny_config(tmp_path / "cut", **kw), data=data)
    resumed.fit()
    assert resumed.resumed_from.name == "ckpt-00000008.pt"
    assert losses_of(rows_of(tmp_path / "full")) == losses_of(rows_of(tmp_path / "cut"))


def test_a_checkpoint_of_the_other_loop_is_refused(tmp_path):
    from bssn_book.train import CheckpointError
    Trainer(tiny_config(tmp_path, iterations=4), data=tiny_data()).fit()
    with pytest.raises(CheckpointError, match="loop: checkpoint 'book', config 'official'"):
        Trainer(tiny_config(tmp_path, iterations=8, loop="official"), data=tiny_data()).fit()


def test_loop_is_validated():
    with pytest.raises(ConfigError, match="loop='tf1' \\(allowed: 'book', 'official'\\)"):
        tiny_config("x", loop="tf1").validate()
