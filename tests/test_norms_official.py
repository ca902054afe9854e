"""The official code's spectral-norm semantics as options of bssn_book.norms (issue 20, item 3).

fjxmlzn/BSN no_gamma-CNN/gan/sn.py `spectral_normed_weight`: from the stored u, v = unit(M^T u),
u' = unit(M v), sigma = u'^T M v, all differentiable; gan/op.py `conv2d` (sn_mode "BSN"): the mean
of that sigma for W (c_out x c_in*k) and for W with its channel dims swapped (c_in x c_out*k), each
with its own u; gan/gan.py: the forwards use NO_OPS (nothing stored) and
`spectral_norm_update_ops` stores u' after each D optimizer step. Every test compares with a
reference written out by hand here, in float64.
"""

import copy
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from bssn_book.norms import (
    OFFICIAL_OPTIONS,
    WARMUP_ITERATIONS,
    apply_norm,
    no_vector_updates,
    power_iteration_update,
    sigmas,
)

D64 = torch.float64


def unit(x):
    return x / torch.linalg.vector_norm(x)


def norm_of(layer):
    return layer.parametrizations.weight[0]


def raw(layer):
    return layer.parametrizations.weight.original


# ---- the layers, their matrices and their hand-written forward passes ---------------------------

LAYERS = {
    "linear": (lambda: nn.Linear(7, 5), (4, 7)),
    "conv": (lambda: nn.Conv2d(3, 6, 3, padding=1), (2, 3, 6, 6)),
    "conv_transpose": (lambda: nn.ConvTranspose2d(4, 3, 3, stride=2), (2, 4, 5, 5)),
    "embedding": (lambda: nn.Embedding(9, 5), None),
}


def make(name, kind="sn", seed=0, **opts):
    torch.manual_seed(seed)
    ctor, shape = LAYERS[name]
    layer = ctor().to(D64)
    apply_norm(layer, kind, **opts)
    if shape is None:
        x = torch.tensor([0, 3, 8, 3])
    else:
        x = torch.randn(*shape, dtype=D64)
    return layer, x


def sn_matrix(layer, w):
    "M of SN_w: the weight with the output side first (torch's convention)."
    if isinstance(layer, nn.ConvTranspose2d):
        return w.transpose(0, 1).reshape(w.shape[1], -1)
    return w.reshape(w.shape[0], -1)


def forward_with(layer, w, x, bias=None):
    "The layer's forward pass with the weight `w` (the hand reference's normalized weight)."
    if bias is None and not isinstance(layer, nn.Embedding):
        bias = layer.bias
    if isinstance(layer, nn.Linear):
        return F.linear(x, w, bias)
    if isinstance(layer, nn.Embedding):
        return F.embedding(x, w)
    if isinstance(layer, nn.ConvTranspose2d):
        return F.conv_transpose2d(x, w, bias, stride=layer.stride)
    return F.conv2d(x, w, bias, padding=layer.padding)


def official_sigma(M, u, steps=1):
    "gan/sn.py, written out: v = unit(M^T u), u' = unit(M v), sigma = u'^T M v (autograd through all)."
    for _ in range(steps):
        v = unit(M.t() @ u)
        u = unit(M @ v)
    return u @ (M @ v), u, v


def bsn_matrices(w):
    "BSN's two matrices (gan/op.py conv2d: W, and W with transpose=True): c_out x c_in*k, c_in x c_out*k."
    return w.reshape(w.shape[0], -1), w.transpose(0, 1).reshape(w.shape[1], -1)


def loss_of(y):
    return (y.pow(2) * torch.linspace(0.5, 1.5, y.numel(), dtype=y.dtype).view_as(y)).sum()


# ---- 1. the gradient through one power-iteration step ---------------------------------------------


@pytest.mark.parametrize("name", list(LAYERS))
def test_sn_gradient_is_autograd_through_one_unrolled_step(name):
    layer, x = make(name, grad_through_power_iteration=True)
    u0 = norm_of(layer)._u.clone()
    w_ref = raw(layer).detach().clone().requires_grad_()
    M = sn_matrix(layer, w_ref)
    sigma, u1, v1 = official_sigma(M, u0)
    y_ref = forward_with(layer, w_ref / sigma, x)
    loss_of(y_ref).backward()

    y = layer(x)
    loss_of(y).backward()
    assert torch.allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    assert torch.allclose(raw(layer).grad, w_ref.grad, rtol=1e-10, atol=1e-12)
    # the step was stored: u', and v (for a transposed convolution v is kept as (c_in, k))
    assert torch.allclose(norm_of(layer)._u, u1.detach(), atol=1e-12)
    assert torch.allclose(norm_of(layer)._v.reshape(-1), v1.detach(), atol=1e-12)

    # the test can fail: holding u and v constant (the default) gives another gradient
    w_fix = raw(layer).detach().clone().requires_grad_()
    s_fix = u1.detach() @ (sn_matrix(layer, w_fix) @ v1.detach())
    loss_of(forward_with(layer, w_fix / s_fix, x)).backward()
    assert (w_fix.grad - w_ref.grad).abs().max() > 1e-6 * w_ref.grad.abs().max()


@pytest.mark.parametrize("name,numel", [("conv", None), ("conv_transpose", None), ("conv", 2**17)])
@pytest.mark.parametrize("gamma", [None, "per_layer"])
def test_bsn_gradient_is_autograd_through_both_unrolled_steps(name, numel, gamma):
    if numel is not None:   # a weight above FUSED_BACKWARD_MIN_NUMEL: no fused Function either
        torch.manual_seed(1)
        layer = nn.Conv2d(128, 128, 3, padding=1).to(D64)
        assert layer.weight.numel() >= numel
        apply_norm(layer, "bssn", scale=1.3, gamma=gamma, grad_through_power_iteration=True)
        x = torch.randn(1, 128, 4, 4, dtype=D64)
    else:
        layer, x = make(name, "bssn", scale=1.3, gamma=gamma, grad_through_power_iteration=True)
    norm = norm_of(layer)
    ua, ub = norm._u0.clone(), norm._u1.clone()
    w_ref = raw(layer).detach().clone().requires_grad_()
    g_ref = torch.tensor(1.3, dtype=D64, requires_grad=True)
    Ma, Mb = bsn_matrices(w_ref)
    sa, ua1, va1 = official_sigma(Ma, ua)
    sb, ub1, vb1 = official_sigma(Mb, ub)
    w_bar = w_ref * g_ref / ((sa + sb) / 2)
    if gamma is not None:   # the learnable gamma scales the bias too
        y_ref = forward_with(layer, w_bar, x, g_ref * layer.parametrizations.bias.original.detach())
    else:
        y_ref = forward_with(layer, w_bar, x)
    loss_of(y_ref).backward()

    y = layer(x)
    loss_of(y).backward()
    assert torch.allclose(y, y_ref, rtol=1e-11, atol=1e-12)
    assert torch.allclose(raw(layer).grad, w_ref.grad, rtol=1e-10, atol=1e-12)
    if gamma is not None:
        assert torch.allclose(norm.gamma.grad, g_ref.grad, rtol=1e-10)
    assert torch.allclose(norm._u0, ua1.detach(), atol=1e-12)
    assert torch.allclose(norm._v0.reshape(-1), va1.detach(), atol=1e-12)
    assert torch.allclose(norm._u1, ub1.detach(), atol=1e-12)
    assert torch.allclose(norm._v1.reshape(-1), vb1.detach(), atol=1e-12)


def test_two_power_iterations_are_unrolled_twice():
    layer, x = make("conv", n_power_iterations=2, grad_through_power_iteration=True)
    u0 = norm_of(layer)._u.clone()
    w_ref = raw(layer).detach().clone().requires_grad_()
    sigma, _, _ = official_sigma(sn_matrix(layer, w_ref), u0, steps=2)
    loss_of(forward_with(layer, w_ref / sigma, x)).backward()
    loss_of(layer(x)).backward()
    assert torch.allclose(raw(layer).grad, w_ref.grad, rtol=1e-10, atol=1e-12)


def test_official_mode_eval_divides_by_the_stored_pair():
    layer, x = make("conv", "bsn", grad_through_power_iteration=True)
    layer(x)   # a training access stores u', v
    layer.eval()
    norm = norm_of(layer)
    before = [b.clone() for b in layer.buffers()]
    Ma, Mb = bsn_matrices(raw(layer).detach())
    s = (norm._u0 @ Ma @ norm._v0.reshape(-1) + norm._u1 @ Mb @ norm._v1.reshape(-1)) / 2
    assert torch.allclose(layer.weight, raw(layer) / s, rtol=1e-12)
    assert abs(sigmas(layer)[""]["sigma"] / float(s) - 1) < 1e-12
    assert all(torch.equal(a, b) for a, b in zip(before, layer.buffers()))


def test_strict_refuses_the_gradient_option_by_name():
    with pytest.raises(ValueError, match="grad_through_power_iteration"):
        apply_norm(nn.Conv2d(3, 4, 3), "strict", input_shape=(3, 8, 8), grad_through_power_iteration=True)
    for opt in ("grad_through_power_iteration", "warmup"):
        with pytest.raises(TypeError, match=opt):
            apply_norm(nn.Linear(3, 4), "sn", **{opt: 1})
    layer = nn.Conv2d(3, 4, 3)
    before = copy.deepcopy(layer.state_dict())
    with pytest.raises(ValueError):
        apply_norm(layer, "strict", input_shape=(3, 8, 8), grad_through_power_iteration=True)
    assert not hasattr(layer, "parametrizations")   # nothing changed
    assert all(torch.equal(v, layer.state_dict()[k]) for k, v in before.items())


# ---- 2. with the options at their defaults nothing changes -----------------------------------------


def small_d():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.LeakyReLU(0.1),
        nn.Conv2d(8, 16, 4, stride=2, padding=1), nn.LeakyReLU(0.1),
        nn.ConvTranspose2d(16, 8, 3, padding=1), nn.LeakyReLU(0.1),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 1),
    )


@pytest.mark.parametrize("kind,extra", [("sn", {}), ("bssn", {"scale": 1.2}), ("strict", {}),
                                        ("ssn", {"scale": 1.2, "gamma": "per_layer"})])
def test_explicit_defaults_are_bitwise_the_default(kind, extra):
    if kind == "strict":
        extra = dict(extra, example_input=torch.zeros(1, 3, 8, 8))
    runs = []
    for opts in ({}, dict(OFFICIAL_OPTIONS)):
        torch.manual_seed(3)
        D = apply_norm(small_d(), kind, **extra, **opts)
        opt = torch.optim.Adam(D.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(4)
        for _ in range(3):
            opt.zero_grad()
            D(torch.randn(4, 3, 8, 8, generator=gen)).pow(2).mean().backward()
            opt.step()
        runs.append(D.state_dict())
    a, b = runs
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]) if not torch.is_tensor(a[k]) else torch.equal(a[k], b[k]), k
    extra_state = [v for k, v in a.items() if k.endswith("_extra_state")]
    assert extra_state and all(not set(s) & set(OFFICIAL_OPTIONS) for s in extra_state)


def test_default_start_is_the_warm_up():
    "warmup=True (the default): the vectors are WARMUP_ITERATIONS steps from a randn start, as before."
    torch.manual_seed(5)
    w = torch.randn(6, 10, dtype=D64)
    torch.manual_seed(6)
    layer = nn.Linear(10, 6).to(D64)
    with torch.no_grad():
        layer.weight.copy_(w)
    torch.manual_seed(7)
    apply_norm(layer, "sn")
    torch.manual_seed(7)
    u = F.normalize(torch.randn(6, dtype=D64), dim=0)
    for _ in range(WARMUP_ITERATIONS):
        v = F.normalize(w.t() @ u, dim=0)
        u = F.normalize(w @ v, dim=0)
    assert torch.allclose(norm_of(layer)._u, u, atol=1e-12)
    assert torch.allclose(norm_of(layer)._v, F.normalize(w.t() @ u, dim=0), atol=1e-12)


# ---- 3. no_vector_updates --------------------------------------------------------------------------


def default_sigma(M, v):
    "A default training access from the stored v: u = unit(M v), sigma = ||M^T u||."
    u = unit(M @ v)
    return torch.linalg.vector_norm(M.t() @ u)


@pytest.mark.parametrize("kind,official", [("sn", False), ("sn", True), ("bsn", False), ("bsn", True),
                                           ("strict", False)])   # strict has no official mode
def test_no_vector_updates_writes_nothing_and_gives_the_hand_sigma(kind, official):
    opts = dict(grad_through_power_iteration=True) if official else {}
    if kind == "strict":
        opts["input_shape"] = (3, 6, 6)
    layer, x = make("conv", kind, **opts)
    norm = norm_of(layer)
    before = {k: b.clone() for k, b in layer.named_buffers()}
    w = raw(layer).detach()
    if kind == "sn":
        M = sn_matrix(layer, w)
        want = official_sigma(M, norm._u)[0] if official else default_sigma(M, norm._v)
    elif kind == "bsn":
        Ma, Mb = bsn_matrices(w)
        if official:
            want = (official_sigma(Ma, norm._u0)[0] + official_sigma(Mb, norm._u1)[0]) / 2
        else:
            want = (default_sigma(Ma, norm._v0) + default_sigma(Mb, norm._v1.reshape(-1))) / 2
    else:   # one step x <- unit(A^T A x), sigma = ||A x||
        A = lambda z: F.conv2d(z, w, padding=1)
        At = lambda z: F.conv_transpose2d(z, w, padding=1)
        want = torch.linalg.vector_norm(A(unit(At(A(norm._x)))))
    with no_vector_updates(layer) as inside:
        assert inside is layer
        for _ in range(3):
            y = layer(x)
            assert torch.allclose(norm.sigma(raw(layer)), want, rtol=1e-12)
            assert torch.allclose(layer.weight, w / want, rtol=1e-12)
        y.sum().backward()   # a backward after the forwards: nothing was changed in place
        assert all(torch.equal(b, before[k]) for k, b in layer.named_buffers())
    layer(x)   # outside again: the training access writes
    assert any(not torch.equal(b, before[k]) for k, b in layer.named_buffers())


def test_no_vector_updates_nests_and_restores_and_searches_wrappers():
    torch.manual_seed(8)
    D = apply_norm(nn.Sequential(nn.Sequential(nn.Linear(4, 4)), small_d()[:2]), "sn")
    norms = [m.parametrizations.weight[0] for m in D.modules() if hasattr(m, "parametrizations")]
    assert len(norms) == 2
    wrapped = torch.compile(D)   # not run: the wrapper holds the model as a submodule
    with no_vector_updates(wrapped):
        assert not any(n.update_vectors for n in norms)
        with no_vector_updates(D[0]):
            assert not any(n.update_vectors for n in norms)
        assert not any(n.update_vectors for n in norms)
    assert all(n.update_vectors for n in norms)
    with pytest.raises(RuntimeError):
        with no_vector_updates(D):
            raise RuntimeError("boom")
    assert all(n.update_vectors for n in norms)   # restored after an error too
    with pytest.raises(TypeError, match="no_vector_updates"):
        with no_vector_updates(object()):
            pass
    assert power_iteration_update(nn.Linear(3, 3)) == 0   # nothing normalized: nothing to do


def test_ddp_wrapped_model_is_searched_through():
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{os.path.join(tmp, 'pg')}", rank=0, world_size=1)
        try:
            torch.manual_seed(9)
            D = apply_norm(small_d(), "bsn", grad_through_power_iteration=True)
            ddp = nn.parallel.DistributedDataParallel(D)
            x = torch.randn(2, 3, 8, 8)
            before = {k: b.clone() for k, b in D.named_buffers()}
            with no_vector_updates(ddp):
                ddp(x).sum().backward()
            assert all(torch.equal(b, before[k]) for k, b in D.named_buffers())
            ref = copy.deepcopy(D)
            assert power_iteration_update(ddp) == 4
            power_iteration_update(ref)
            assert all(torch.equal(a, b) for a, b in zip(D.buffers(), ref.buffers()))
            assert any(not torch.equal(b, before[k]) for k, b in D.named_buffers())
        finally:
            dist.destroy_process_group()


# ---- 4. power_iteration_update ---------------------------------------------------------------------


@pytest.mark.parametrize("official", [False, True])
@pytest.mark.parametrize("name", ["linear", "conv", "conv_transpose", "embedding"])
def test_power_iteration_update_stores_one_hand_step_sn(name, official):
    layer, x = make(name, grad_through_power_iteration=official)
    layer.eval()   # any mode
    norm = norm_of(layer)
    with torch.no_grad():
        raw(layer).mul_(1.1).add_(0.05)   # as after an optimizer step: the vectors are stale
    M = sn_matrix(layer, raw(layer).detach())
    if official:   # from u: v = unit(M^T u), u' = unit(M v)
        v = unit(M.t() @ norm._u)
        u = unit(M @ v)
    else:          # from v: u' = unit(M v), v' = unit(M^T u')
        u = unit(M @ norm._v.reshape(-1))
        v = unit(M.t() @ u)
    with no_vector_updates(layer):   # writes inside it too
        assert power_iteration_update(layer) == 1
    assert torch.allclose(norm._u, u, atol=1e-12)
    assert torch.allclose(norm._v.reshape(-1), v, atol=1e-12)
    assert not raw(layer).requires_grad or raw(layer).grad is None


@pytest.mark.parametrize("official", [False, True])
def test_power_iteration_update_stores_one_hand_step_bsn_and_strict(official):
    layer, _ = make("conv", "bssn", scale=1.2, grad_through_power_iteration=official)
    norm = norm_of(layer)
    Ma, Mb = bsn_matrices(raw(layer).detach())
    pairs = []
    for M, u, v in ((Ma, norm._u0, norm._v0.reshape(-1)), (Mb, norm._u1, norm._v1.reshape(-1))):
        if official:
            v = unit(M.t() @ u)
            pairs.append((unit(M @ v), v))
        else:
            u = unit(M @ v)
            pairs.append((u, unit(M.t() @ u)))
    assert power_iteration_update(layer) == 1
    assert torch.allclose(norm._u0, pairs[0][0], atol=1e-12)
    assert torch.allclose(norm._v0.reshape(-1), pairs[0][1], atol=1e-12)
    assert torch.allclose(norm._u1, pairs[1][0], atol=1e-12)
    assert torch.allclose(norm._v1.reshape(-1), pairs[1][1], atol=1e-12)
    if official:
        return
    layer, _ = make("conv", "strict", input_shape=(3, 6, 6))
    norm, w = norm_of(layer), raw(layer).detach()
    x = unit(F.conv_transpose2d(F.conv2d(norm._x, w, padding=1), w, padding=1))
    power_iteration_update(layer)
    assert torch.allclose(norm._x, x, atol=1e-12)


def test_official_loop_order_matches_the_hand_loop():
    """The official D step, on one Linear layer: forwards under NO_OPS from the stored u, the
    optimizer step, then the update op from the stored u with the new weight."""
    layer, x = make("linear", grad_through_power_iteration=True)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    w = raw(layer).detach().clone()
    u = norm_of(layer)._u.clone()
    b = layer.bias.detach().clone()
    for _ in range(3):
        with no_vector_updates(layer):
            opt.zero_grad()
            loss_of(layer(x)).backward()
            opt.step()
        power_iteration_update(layer)
        w_ref = w.clone().requires_grad_()
        b_ref = b.clone().requires_grad_()
        sigma, _, _ = official_sigma(w_ref, u)
        loss_of(F.linear(x, w_ref / sigma, b_ref)).backward()
        with torch.no_grad():
            w, b = w - 0.1 * w_ref.grad, b - 0.1 * b_ref.grad
            u = official_sigma(w, u)[1]
    assert torch.allclose(raw(layer), w, rtol=1e-11, atol=1e-13)
    assert torch.allclose(norm_of(layer)._u, u, atol=1e-12)


# ---- 5. warmup=False: the official start ------------------------------------------------------------


def trunc_draw(n, dtype=D64):
    return nn.init.trunc_normal_(torch.empty(n, dtype=dtype), 0.0, 1.0, -2.0, 2.0)


def test_no_warmup_start_is_the_seeded_truncated_normal_draw():
    torch.manual_seed(10)
    model = nn.Sequential(nn.Linear(7, 5), nn.Conv2d(3, 6, 3), nn.ConvTranspose2d(4, 3, 3)).to(D64)
    weights = [raw_w.detach().clone() for raw_w in (model[0].weight, model[1].weight, model[2].weight)]
    torch.manual_seed(11)
    apply_norm(model[:2], "sn", warmup=False)
    apply_norm(model[2], "bsn", warmup=False)
    torch.manual_seed(11)   # the same draws, in module order (BSN: u0, then u1)
    draws = [trunc_draw(5), trunc_draw(6), trunc_draw(4), trunc_draw(3)]
    mats = [weights[0], weights[1].reshape(6, -1), *bsn_matrices(weights[2])]
    stored = [(norm_of(model[0])._u, norm_of(model[0])._v), (norm_of(model[1])._u, norm_of(model[1])._v),
              (norm_of(model[2])._u0, norm_of(model[2])._v0), (norm_of(model[2])._u1, norm_of(model[2])._v1)]
    for d, M, (u, v) in zip(draws, mats, stored):
        assert d.abs().max() <= 2
        assert torch.equal(u, unit(d))   # no power-iteration step: the draw itself, made unit
        assert torch.allclose(v.reshape(-1), unit(M.t() @ unit(d)), atol=1e-12)
    # the first official access from that u is the official first step (no warm-up before it)
    x = torch.randn(3, 7, dtype=D64)
    m = copy.deepcopy(model[0])
    apply_norm(lin := nn.Linear(7, 5).to(D64), "sn", warmup=False, grad_through_power_iteration=True)
    with torch.no_grad():
        raw(lin).copy_(raw(m))
        lin.bias.copy_(m.bias)
        norm_of(lin)._u.copy_(norm_of(m)._u)
    sigma = official_sigma(raw(m).detach(), unit(draws[0]))[0]
    assert torch.allclose(lin(x), F.linear(x, raw(m).detach() / sigma, m.bias), rtol=1e-12)


def test_no_warmup_strict_start_and_the_default_is_warmed_up():
    torch.manual_seed(12)
    conv = nn.Conv2d(3, 4, 3).to(D64)
    torch.manual_seed(13)
    apply_norm(conv, "strict", input_shape=(3, 5, 5), warmup=False)
    torch.manual_seed(13)
    assert torch.equal(norm_of(conv)._x, unit(trunc_draw(75)).view(1, 3, 5, 5))
    torch.manual_seed(12)
    warm = apply_norm(nn.Conv2d(3, 4, 3).to(D64), "sn")
    torch.manual_seed(12)
    cold = apply_norm(nn.Conv2d(3, 4, 3).to(D64), "sn", warmup=False)
    s_exact = torch.linalg.matrix_norm(raw(warm).detach().reshape(4, -1), 2)
    warm.eval(), cold.eval()
    err = [abs(sigmas(m)[""]["sigma"] / float(s_exact) - 1) for m in (warm, cold)]
    assert err[0] < 1e-3 < 1e-2 < err[1]   # 15 warm-up steps come close; a random start does not


# ---- 6. the settings in checkpoints ------------------------------------------------------------------


def built(**opts):
    torch.manual_seed(14)
    return apply_norm(small_d(), "bssn", scale=1.2, **opts)


def test_settings_round_trip_and_refuse_a_mismatch():
    official = dict(grad_through_power_iteration=True, warmup=False)
    a = built(**official)
    a(torch.randn(2, 3, 8, 8))
    sd = a.state_dict()
    saved = sd["0.parametrizations.weight.0._extra_state"]
    assert saved == {"kind": "bssn", "scale": 1.2, "n_power_iterations": 1, **official}
    assert "grad_through_power_iteration=True" in repr(norm_of(a[0]))
    b = built(**official)
    b.load_state_dict(sd)
    assert all(torch.equal(x, y) for x, y in zip(a.buffers(), b.buffers()))
    for other in ({}, {"grad_through_power_iteration": True}, {"warmup": False}):
        c = built(**other)
        before = [t.clone() for t in c.state_dict().values() if torch.is_tensor(t)]
        with pytest.raises(RuntimeError, match="nothing was loaded") as e:
            c.load_state_dict(sd)
        missing = set(official) - set(other)
        assert all(k in str(e.value) for k in missing)
        after = [t for t in c.state_dict().values() if torch.is_tensor(t)]
        assert all(torch.equal(x, y) for x, y in zip(before, after))
    # the other way: a default checkpoint into an official model is refused as well
    with pytest.raises(RuntimeError, match="grad_through_power_iteration"):
        built(**official).load_state_dict(built().state_dict())
    # one layer on its own (its parametrization's check, not the model's)
    la = apply_norm(nn.Linear(3, 4), "sn", grad_through_power_iteration=True)
    with pytest.raises(RuntimeError, match="grad_through_power_iteration"):
        apply_norm(nn.Linear(3, 4), "sn").load_state_dict(la.state_dict())


def test_old_checkpoints_load_with_the_defaults():
    old = built().state_dict()
    for k in [k for k in old if k.endswith("_extra_state")]:   # saved before the options existed
        assert not set(old[k]) & set(OFFICIAL_OPTIONS)
        old[k] = {"kind": "bssn", "scale": 1.2, "n_power_iterations": 1}
    built().load_state_dict(old)
    written = dict(old)   # the defaults written out explicitly mean the same
    for k in [k for k in written if k.endswith("_extra_state")]:
        written[k] = {**written[k], **OFFICIAL_OPTIONS}
    built().load_state_dict(written)
    with pytest.raises(RuntimeError, match="grad_through_power_iteration"):
        built(grad_through_power_iteration=True).load_state_dict(old)
