"Normalization library of chapter 3 (bssn_book.norms): semantics, gradients, state, compile, autocast, bad input."
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from bssn_book.norms import (NORM_KINDS, BidirectionalSpectralNorm, SpectralNormW, apply_norm, is_normalized,
                             remove_norm, sigmas)
from bssn_book.spectral import conv_operator_norm
from bssn_book.theory.bssn import bsn_sigmas

torch.set_num_threads(1)
KINDS_SHAPE = [dict(kind="sn"), dict(kind="ssn", scale=1.3), dict(kind="bsn"), dict(kind="bssn", scale=0.8),
               dict(kind="strict"), dict(kind="sn", gamma="shared", scale=1.2), dict(kind="bssn", gamma="per_layer")]
IDS = ["sn", "ssn", "bsn", "bssn", "strict", "sn-gamma-shared", "bssn-gamma-per-layer"]


def small_d(seed=0, c=3, res=8):
    "A small CNN discriminator in the paper's pattern (conv3x3 s1, conv4x4 s2, dense)."
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(8, 16, 4, stride=2, padding=1),
                         nn.LeakyReLU(0.1), nn.Conv2d(16, 16, 3, padding=1), nn.LeakyReLU(0.1), nn.Flatten(),
                         nn.Linear(16 * (res // 2) ** 2, 1))


def normalized_d(opts, seed=0, **kw):
    D = small_d(seed, **kw)
    opts = dict(opts)
    if opts["kind"] == "strict":
        opts["example_input"] = torch.zeros(1, 3, 8, 8)
    return apply_norm(D, **opts)


def buffers(model):
    return {k: v.clone() for k, v in model.named_buffers()}


def snapshot(model):
    "Everything apply_norm could change: state_dict values, parameter identities, parametrized layers, classes."
    lazy = nn.parameter.UninitializedParameter
    return dict(state={k: v.clone() if isinstance(v, torch.Tensor) and not isinstance(v, lazy) else v
                       for k, v in model.state_dict().items()},
                params=[(n, id(p)) for n, p in model.named_parameters()],
                parametrized=[(n, parametrize.is_parametrized(m)) for n, m in model.named_modules()],
                classes=[(n, type(m)) for n, m in model.named_modules()],
                training=[(n, m.training) for n, m in model.named_modules()])


def assert_same(a, b):
    assert a["params"] == b["params"] and a["parametrized"] == b["parametrized"]
    assert a["classes"] == b["classes"] and a["training"] == b["training"]
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        x, y = a["state"][k], b["state"][k]
        assert (x is y if isinstance(x, nn.parameter.UninitializedParameter) else
                torch.equal(x, y) if torch.is_tensor(x) else x == y), k


@pytest.mark.parametrize("opts", KINDS_SHAPE, ids=IDS)
def test_training_updates_vectors_eval_does_not(opts):
    D = normalized_d(opts)
    x = torch.randn(4, 3, 8, 8)
    before = buffers(D)
    D.train()
    D(x)
    after = buffers(D)
    assert before.keys() == after.keys() and len(before) > 0
    assert any(not torch.equal(before[k], after[k]) for k in before)
    D.eval()
    y1 = D(x)
    assert all(torch.equal(after[k], v) for k, v in buffers(D).items())
    y2 = D(x)
    assert torch.equal(y1, y2)


@pytest.mark.parametrize("opts", KINDS_SHAPE, ids=IDS)
def test_scale_invariance_and_orthogonal_gradient(opts):
    "D(c W) == D(W) for the raw weights, so <grad, W_raw> ~ 0 (the gradient flows through sigma)."
    D = normalized_d(opts).double()
    for _ in range(30):  # converge the power iteration
        D(torch.zeros(1, 3, 8, 8, dtype=torch.float64))
    D.eval()
    x = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    y = D(x)
    raws = [m.parametrizations.weight.original for m in D.modules() if is_normalized(m)]
    with torch.no_grad():
        for w in raws:
            w.mul_(3.7)
    assert torch.allclose(D(x), y, rtol=1e-9, atol=1e-9)
    D.zero_grad()
    D(x).sum().backward()
    for w in raws:
        inner = float((w.grad * w.detach()).sum())
        assert abs(inner) <= 1e-8 * w.grad.norm() * w.norm(), inner


@pytest.mark.parametrize("opts", KINDS_SHAPE, ids=IDS)
def test_state_dict_round_trip(opts):
    D = normalized_d(opts, seed=0)
    for _ in range(3):
        D(torch.randn(2, 3, 8, 8))
    sd = D.state_dict()
    fresh = normalized_d(opts, seed=1)  # a freshly normalized model with other weights and vectors
    fresh.load_state_dict(sd)
    assert all(torch.equal(v, fresh.state_dict()[k]) if torch.is_tensor(v) else v == fresh.state_dict()[k]
               for k, v in sd.items())   # tensors, and each parametrization's settings (its extra state)
    D.eval(), fresh.eval()
    x = torch.randn(3, 3, 8, 8)
    assert torch.equal(D(x), fresh(x))
    assert sigmas(D) == sigmas(fresh)
    # and into a plain model without normalization after remove_norm(leave_parametrized=False)
    plain = remove_norm(copy.deepcopy(D), leave_parametrized=False)
    assert not any(is_normalized(m) for m in plain.modules())


@pytest.mark.parametrize("opts", KINDS_SHAPE, ids=IDS)
def test_deepcopy_has_independent_vectors(opts):
    D = normalized_d(opts)
    ema = copy.deepcopy(D)
    for (k, a), (_, b) in zip(D.named_buffers(), ema.named_buffers()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr(), k
    ema_before = buffers(ema)
    D.train()
    D(torch.randn(2, 3, 8, 8))
    assert all(torch.equal(v, ema_before[k]) for k, v in ema.named_buffers())
    if opts.get("gamma") == "shared":
        gammas = {id(p) for n, p in ema.named_parameters() if "gamma" in n}
        assert len(gammas) == 1  # still one shared gamma in the copy
        assert gammas.isdisjoint({id(p) for p in D.parameters()})


@pytest.mark.parametrize("opts", KINDS_SHAPE, ids=IDS)
def test_one_graph_real_fake_and_gradient_penalty(opts):
    D = normalized_d(opts)
    D.train()
    real, fake = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8, requires_grad=True)
    loss = F.relu(1 - D(real)).mean() + F.relu(1 + D(fake)).mean()  # two accesses, two updates, one graph
    eps = torch.rand(4, 1, 1, 1)
    mix = (eps * real + (1 - eps) * fake.detach()).requires_grad_()
    (g,) = torch.autograd.grad(D(mix).sum(), mix, create_graph=True)
    gp = ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()
    (loss + 10 * gp).backward()
    raws = [m.parametrizations.weight.original for m in D.modules() if is_normalized(m)]
    assert all(w.grad is not None and torch.isfinite(w.grad).all() for w in raws)


@pytest.mark.parametrize("fused", [True, False])
def test_compile_fullgraph_no_graph_break(fused, monkeypatch):
    """One compiled model holding sn, bssn with a scale, strict and a learnable gamma: no graph break, same result;
    with every layer through the fused autograd.Functions (threshold 0) and with none (plain autograd)."""
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available in this torch build")
    import bssn_book.norms as N
    monkeypatch.setattr(N, "FUSED_BACKWARD_MIN_NUMEL", 0 if fused else 2 ** 62)
    torch._dynamo.reset()
    torch.manual_seed(0)
    D = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(8, 128, 4, stride=2, padding=1),
                      nn.LeakyReLU(0.1), nn.Conv2d(128, 128, 3, padding=1), nn.LeakyReLU(0.1), nn.Flatten(),
                      nn.Linear(128 * 4 * 4, 1))
    apply_norm(D[0], "sn")
    apply_norm(D[2], "bssn", scale=1.2)
    apply_norm(D[4], "strict", input_shape=(128, 4, 4))
    apply_norm(D[7], "sn", gamma="per_layer", scale=1.1)
    ref = copy.deepcopy(D)
    compiled = torch.compile(D, fullgraph=True, backend="aot_eager")
    x = torch.randn(4, 3, 8, 8)
    y, y_ref = compiled(x), ref(x)
    assert torch.allclose(y, y_ref, atol=1e-5)
    y.sum().backward()  # the compiled graph trains, and the vectors were updated in place as in eager mode
    y_ref.sum().backward()
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(D.buffers(), ref.buffers()))
    assert all(p.grad is not None and torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6)
               for p, q in zip(D.parameters(), ref.parameters()))


@pytest.mark.parametrize("kind", ["sn", "bssn", "strict"])
def test_autocast_bf16_sigma_in_float32(kind):
    D = normalized_d(dict(kind=kind))
    D.eval()
    sig = sigmas(D)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for name, m in D.named_modules():
            if is_normalized(m):
                w = m.weight
                assert w.dtype == torch.float32
                raw = m.parametrizations.weight.original
                expected = raw / sig[name]["sigma"]
                assert torch.allclose(w, expected, rtol=1e-5, atol=1e-7)
        y = D(torch.randn(2, 3, 8, 8))
    assert y.dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
@pytest.mark.parametrize("kind", NORM_KINDS)
def test_cuda(kind):
    D = small_d().cuda()
    apply_norm(D, kind, example_input=torch.zeros(1, 3, 8, 8, device="cuda") if kind == "strict" else None)
    assert all(b.is_cuda for b in D.buffers())
    x = torch.randn(4, 3, 8, 8, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        D(x).float().mean().backward()
    assert all(p.grad is not None for p in D.parameters())


def test_sn_matches_torch_spectral_norm():
    """Our SN_w is torch's spectral_norm, for Linear, Conv2d and ConvTranspose2d: from the same unconverged vectors,
    two training forwards give the same normalized weight, the same stored vectors, the same gradient w.r.t. the raw
    weight and the same second derivative (a Hessian-vector product: sigma is linear in W, both vectors constant)."""
    torch.manual_seed(0)
    for layer in [nn.Linear(7, 5), nn.Conv2d(3, 6, 3), nn.ConvTranspose2d(4, 6, 4, stride=2)]:
        layer = layer.double()
        ours, theirs = copy.deepcopy(layer), copy.deepcopy(layer)
        apply_norm(ours, "sn", n_power_iterations=1)
        spectral_norm(theirs, n_power_iterations=1, dim=1 if isinstance(layer, nn.ConvTranspose2d) else 0)
        po, pt = ours.parametrizations.weight[0], theirs.parametrizations.weight[0]
        with torch.no_grad():   # the same start, far from converged
            pt._v.copy_(F.normalize(torch.randn_like(pt._v), dim=0))
            po._v.copy_(pt._v.view_as(po._v))
        G, H = (torch.randn(layer.weight.shape, dtype=torch.float64) for _ in range(2))
        for _ in range(2):
            out = {}
            for name, m in (("ours", ours), ("theirs", theirs)):
                raw = m.parametrizations.weight.original
                w = m.weight
                (g,) = torch.autograd.grad((w * G).sum(), raw, create_graph=True)
                (hvp,) = torch.autograd.grad((g * H).sum(), raw)
                out[name] = (w.detach(), g.detach(), hvp)
            for a, b, what in zip(out["ours"], out["theirs"], ("weight", "gradient", "Hessian-vector product")):
                assert torch.allclose(a, b, atol=1e-9), (type(layer).__name__, what, float((a - b).abs().max()))
            assert torch.allclose(po._u, pt._u, atol=1e-12) and torch.allclose(po._v.flatten(), pt._v, atol=1e-12)


def test_bsn_definition_and_dense_equals_sn():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 16, 3)
    apply_norm(conv, "bssn", scale=1.5, n_power_iterations=200)
    W = conv.parametrizations.weight.original.detach()
    s1 = torch.linalg.matrix_norm(W.flatten(1), 2)
    s2 = torch.linalg.matrix_norm(W.transpose(0, 1).flatten(1), 2)
    assert torch.allclose(conv.weight, 1.5 * W / ((s1 + s2) / 2), atol=1e-5)
    est = sigmas(conv)[""]
    assert est["sigma_out"] == pytest.approx(float(s1), rel=1e-4)
    assert est["sigma_in"] == pytest.approx(float(s2), rel=1e-4)
    convt = nn.ConvTranspose2d(3, 16, 4, stride=2)
    apply_norm(convt, "bsn", n_power_iterations=200)
    convt.weight  # one training-mode access: 200 power iterations
    Wt = convt.parametrizations.weight.original.detach()
    est = sigmas(convt)[""]  # weight (c_in, c_out, k): sigma_out is the reshape with c_out first
    assert est["sigma_out"] == pytest.approx(float(torch.linalg.matrix_norm(Wt.transpose(0, 1).flatten(1), 2)), rel=1e-4)
    assert est["sigma_in"] == pytest.approx(float(torch.linalg.matrix_norm(Wt.flatten(1), 2)), rel=1e-4)
    lin_a, lin_b = nn.Linear(6, 4), None
    lin_b = copy.deepcopy(lin_a)
    apply_norm(lin_a, "bsn", n_power_iterations=100)
    apply_norm(lin_b, "sn", n_power_iterations=100)
    assert torch.allclose(lin_a.weight, lin_b.weight, atol=1e-6)


def test_gamma_variants():
    D = normalized_d(dict(kind="sn", gamma="shared", scale=1.5))
    gammas = [p for n, p in D.named_parameters() if "gamma" in n]
    assert len(gammas) == 1 and float(gammas[0].detach()) == 1.5
    layers = [m for m in D.modules() if is_normalized(m)]
    assert all(m.parametrizations.weight[0].gamma is gammas[0] for m in layers)
    # gamma scales the bias too: the layer is gamma * (W_bar x + b)
    m = layers[0]
    assert torch.allclose(m.bias, 1.5 * m.parametrizations.bias.original)
    D(torch.randn(2, 3, 8, 8)).sum().backward()
    assert gammas[0].grad is not None
    P = normalized_d(dict(kind="bssn", gamma="per_layer", scale=0.9))
    g = [p for n, p in P.named_parameters() if "gamma" in n]
    assert len(g) == len([m for m in P.modules() if is_normalized(m)]) and all(float(x.detach()) == pytest.approx(0.9) for x in g)
    remove_norm(P)
    assert not any(parametrize.is_parametrized(m) for m in P.modules())


def test_is_normalized_remove_and_sigmas_keys():
    D = normalized_d(dict(kind="bsn"))
    names = [n for n, m in D.named_modules() if is_normalized(m)]
    assert names == ["0", "2", "4", "7"]
    s = sigmas(D)
    assert list(s) == names and all({"sigma", "sigma_out", "sigma_in"} <= set(v) for v in s.values())
    D.eval()
    x = torch.randn(2, 3, 8, 8)
    y = D(x)
    remove_norm(D)  # leaves the normalized weights: same function
    assert not any(is_normalized(m) for m in D.modules()) and torch.allclose(D(x), y, atol=1e-6)
    assert not is_normalized(nn.ReLU())


def bad_cases():
    conv = lambda: nn.Conv2d(3, 4, 3)  # noqa: E731
    cases = [
        ("unknown kind", lambda: small_d(), dict(kind="spectral"), ValueError, "kind must be one of"),
        ("scale zero", lambda: small_d(), dict(kind="ssn", scale=0.0), ValueError, "scale"),
        ("scale negative", lambda: small_d(), dict(kind="ssn", scale=-1), ValueError, "scale"),
        ("scale nan", lambda: small_d(), dict(kind="ssn", scale=float("nan")), ValueError, "scale"),
        ("scale inf", lambda: small_d(), dict(kind="ssn", scale=float("inf")), ValueError, "scale"),
        ("scale string", lambda: small_d(), dict(kind="ssn", scale="2"), TypeError, "scale"),
        ("scale bool", lambda: small_d(), dict(kind="ssn", scale=True), TypeError, "scale"),
        ("n_power_iterations 0", lambda: small_d(), dict(kind="sn", n_power_iterations=0), ValueError,
         "n_power_iterations"),
        ("n_power_iterations float", lambda: small_d(), dict(kind="sn", n_power_iterations=1.5), TypeError,
         "n_power_iterations"),
        ("gamma", lambda: small_d(), dict(kind="sn", gamma="global"), ValueError, "gamma"),
        ("strict without shape", lambda: small_d(), dict(kind="strict"), ValueError, "input shape of layer '0'"),
        ("strict single layer without shape", conv, dict(kind="strict"), ValueError, "input shape of the Conv2d"),
        ("strict input_shape on a model", lambda: small_d(), dict(kind="strict", input_shape=(3, 8, 8)),
         ValueError, "example_input"),
        ("strict wrong channels", conv, dict(kind="strict", input_shape=(5, 8, 8)), ValueError, "channels"),
        ("strict too small", conv, dict(kind="strict", input_shape=(3, 2, 2)), ValueError, "too small"),
        ("strict example fails", lambda: small_d(), dict(kind="strict", example_input=torch.zeros(1, 2, 8, 8)),
         ValueError, "example_input could not be run"),
        ("unsupported layer", lambda: nn.LSTM(3, 4), dict(kind="sn"), TypeError, "LSTM"),
        ("unsupported container", lambda: nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)), dict(kind="sn"), TypeError,
         "Sequential"),
        ("torch spectral_norm inside", lambda: nn.Sequential(nn.Linear(3, 3), spectral_norm(nn.Linear(3, 2))),
         dict(kind="sn"), ValueError, "layer '1'.*already"),
        ("old hook spectral_norm", lambda: nn.Sequential(nn.Linear(3, 3), nn.utils.spectral_norm(nn.Linear(3, 2))),
         dict(kind="bsn"), ValueError, "layer '1'.*spectral_norm"),
        ("already ours", lambda: nn.Sequential(nn.Linear(3, 3), apply_norm(nn.Linear(3, 2), "sn")),
         dict(kind="sn"), ValueError, "layer '1'.*already normalized.*apply_norm"),
        ("lazy layer", lambda: nn.Sequential(nn.Linear(3, 3), nn.LazyLinear(2)), dict(kind="sn"), ValueError,
         "layer '1'.*lazy"),
    ]
    return cases


@pytest.mark.parametrize("case", bad_cases(), ids=lambda c: c[0])
def test_bad_input_leaves_module_unchanged(case):
    _, make, opts, exc, match = case
    module = make()
    module.train()
    before = snapshot(module)
    with pytest.raises(exc, match=match):
        apply_norm(module, **opts)
    assert_same(before, snapshot(module))


def test_not_a_module():
    with pytest.raises(TypeError, match="nn.Module"):
        apply_norm(torch.zeros(3, 3), "sn")


# property tests: after enough power iterations the normalized weight has exactly the target norm
from hypothesis import HealthCheck, assume, given, settings, strategies as st  # noqa: E402

from bssn_book.spectral import conv_operator_matrix, conv_output_shape  # noqa: E402

LAYER_KINDS = ["linear", "conv1d", "conv2d", "convT1d", "convT2d"]


@st.composite
def layer_cases(draw):
    lk = draw(st.sampled_from(LAYER_KINDS))
    c_in, c_out = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    kind = draw(st.sampled_from(["sn", "ssn", "bsn", "bssn", "strict"]))
    scale = draw(st.sampled_from([1.0, 0.7, 1.6, 3.0])) if kind in ("ssn", "bssn", "strict") else 1.0
    seed = draw(st.integers(0, 2 ** 16))
    if lk == "linear":
        return dict(lk=lk, args=(c_in, c_out), kw={}, shape=None, dtype=dtype, kind=kind, scale=scale, seed=seed)
    nd = 1 if lk.endswith("1d") else 2
    k = draw(st.integers(1, 4))
    s = draw(st.integers(1, 3))
    p = draw(st.integers(0, 2))
    size = tuple(draw(st.integers(3, 7)) for _ in range(nd))
    kw = dict(stride=s, padding=p)
    if lk.startswith("convT"):
        kw["output_padding"] = draw(st.integers(0, s - 1))
    elif p > 0:
        kw["padding_mode"] = draw(st.sampled_from(["zeros", "circular", "reflect", "replicate"]))
    return dict(lk=lk, args=(c_in, c_out, k), kw=kw, shape=(c_in, *size), dtype=dtype, kind=kind, scale=scale,
                seed=seed)


def make_layer(case):
    torch.manual_seed(case["seed"])
    cls = dict(linear=nn.Linear, conv1d=nn.Conv1d, conv2d=nn.Conv2d, convT1d=nn.ConvTranspose1d,
               convT2d=nn.ConvTranspose2d)[case["lk"]]
    return cls(*case["args"], **case["kw"]).to(case["dtype"])


def gap(M):
    """s1/s2 - 1 for the top two singular values of M: an unconverged power iteration's estimate lies between them,
    so the normalized norm is within this of the scale (seed 268's ConvTranspose1d has s1/s2 - 1 = 3e-4)."""
    s = torch.linalg.svdvals(M)
    return float(s[0] / s[1]) - 1 if len(s) > 1 and s[1] > 0 else 0.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer_cases())
def test_normalized_norm_equals_scale(case):
    layer = make_layer(case)
    transposed = case["lk"].startswith("convT")
    if case["shape"] is not None:
        try:
            conv_output_shape(layer.weight, case["shape"], stride=layer.stride, padding=layer.padding,
                              padding_mode=layer.padding_mode, transposed=transposed,
                              output_padding=layer.output_padding)
        except ValueError:
            assume(False)
    opts = dict(scale=case["scale"], n_power_iterations=3000)   # near-equal top singular values converge slowly
    if case["kind"] == "strict" and case["shape"] is not None:
        opts["input_shape"] = case["shape"]
    apply_norm(layer, case["kind"], **opts)
    layer.weight  # one training-mode access: 3000 power iterations
    layer.eval()
    Wb = layer.weight.detach().double()
    tol = 2e-3 if case["dtype"] == torch.float32 else 1e-5
    if case["kind"] == "strict" and case["shape"] is not None:
        A = conv_operator_matrix(Wb, case["shape"], stride=layer.stride, padding=layer.padding,
                                 padding_mode=layer.padding_mode, transposed=transposed,
                                 output_padding=layer.output_padding)
        norm = torch.linalg.matrix_norm(A, 2)
        tol = max(tol, gap(A))
    else:
        out_first = Wb.transpose(0, 1) if transposed else Wb          # torch's SN_w convention
        s_out = torch.linalg.matrix_norm(out_first.flatten(1), 2)
        s_in = torch.linalg.matrix_norm(out_first.transpose(0, 1).flatten(1), 2)
        norm = (s_out + s_in) / 2 if case["kind"] in ("bsn", "bssn") else s_out
        tol = max(tol, gap(out_first.flatten(1)), gap(out_first.transpose(0, 1).flatten(1)))
    assert float(norm) == pytest.approx(case["scale"], rel=tol), case


@pytest.mark.parametrize("kind", ["sn", "bsn", "strict"])
def test_n_power_iterations_per_access(kind):
    "One access with n_power_iterations=3 equals three accesses with 1 (the same steps from the same vectors)."
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1).double()
    kw = dict(input_shape=(4, 7, 7)) if kind == "strict" else {}
    torch.manual_seed(1)
    a = apply_norm(copy.deepcopy(conv), kind, n_power_iterations=3, **kw)
    torch.manual_seed(1)
    b = apply_norm(copy.deepcopy(conv), kind, n_power_iterations=1, **kw)
    a.weight
    for _ in range(3):
        b.weight
    for (k, x), (_, y) in zip(a.named_buffers(), b.named_buffers()):
        assert torch.allclose(x, y, atol=1e-12), k


def test_strict_layer_called_with_two_shapes():
    conv = nn.Conv2d(3, 3, 3, padding=1)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            return self.conv(x).mean() + self.conv(x[:, :, ::2, ::2]).mean()

    model = Twice()
    before = snapshot(model)
    with pytest.raises(ValueError, match="layer 'conv'.*different shapes"):
        apply_norm(model, "strict", example_input=torch.zeros(1, 3, 8, 8))
    assert_same(before, snapshot(model))


@pytest.mark.parametrize("mode", ["circular", "reflect", "replicate"])
def test_strict_other_padding_modes(mode):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=1, padding=1, padding_mode=mode).double()
    apply_norm(conv, "strict", scale=1.5, n_power_iterations=500, input_shape=(2, 5, 6))
    conv.weight
    conv.eval()
    A = conv_operator_matrix(conv.weight.detach(), (2, 5, 6), padding=1, padding_mode=mode)
    assert float(torch.linalg.matrix_norm(A, 2)) == pytest.approx(1.5, rel=1e-6)
    conv.train()
    conv(torch.randn(2, 2, 5, 6, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(conv.parametrizations.weight.original.grad).all()


@pytest.mark.parametrize("kind, gamma", [("sn", None), ("bssn", None), ("strict", None), ("bssn", "shared"),
                                         ("bssn", "per_layer"), ("sn", "shared")])
@pytest.mark.parametrize("penalty", ["none", "input", "weights"])
def test_fused_scaling_matches_plain_autograd(kind, gamma, penalty, monkeypatch):
    """The fused autograd.Functions (`_MulScalar`; `_BidirectionalScale` for bsn/bssn) give the gradients of plain
    autograd, for the raw weights, biases and a learnable gamma: without a penalty and with a penalty on the input
    gradient (both through the Functions' first-order backward), and with a penalty on the parameter gradients
    (the backward itself differentiated: `_BidirectionalScale`'s create_graph branch, which recomputes sigma)."""
    import bssn_book.norms as N

    def grads(min_numel):
        monkeypatch.setattr(N, "FUSED_BACKWARD_MIN_NUMEL", min_numel)
        D = normalized_d(dict(kind=kind, scale=1.3, **({"gamma": gamma} if gamma else {}))).double()
        real = torch.randn(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        params = list(D.parameters())
        loss = F.relu(1 - D(real)).mean() + F.relu(1 + D(2 * real)).mean()
        if penalty == "input":
            x = real.clone().requires_grad_()
            (g,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
            loss = loss + (g.norm() - 1) ** 2
        elif penalty == "weights":
            loss = loss + sum((g ** 2).sum() for g in torch.autograd.grad(loss, params, create_graph=True))
        return torch.autograd.grad(loss, params)

    fused, plain = grads(0), grads(2 ** 62)
    assert len(fused) == len(plain) > 0
    for a, b in zip(fused, plain):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("min_numel", [0, 2 ** 62])
def test_eval_forward_then_training_forward_then_one_backward(min_numel, monkeypatch):
    "An eval-mode output kept across a training step (which updates the vectors in place) still backpropagates."
    import bssn_book.norms as N
    monkeypatch.setattr(N, "FUSED_BACKWARD_MIN_NUMEL", min_numel)
    for kind in ("sn", "bssn", "strict"):
        torch.manual_seed(0)
        conv = nn.Conv2d(4, 6, 3)
        apply_norm(conv, kind, **({"input_shape": (4, 8, 8)} if kind == "strict" else {}))
        x = torch.randn(2, 4, 8, 8)
        conv.eval(); a = conv(x).sum()
        conv.train(); b = conv(x).sum()
        (a + b).backward()
        assert torch.isfinite(conv.parametrizations.weight.original.grad).all(), kind


def test_bidirectional_fused_backward_takes_a_non_contiguous_gradient(monkeypatch):
    "The gradient reaching `_BidirectionalScale` may be any layout (here a transposed view); the result is the same."
    import bssn_book.norms as N

    def grad(min_numel, transpose):
        monkeypatch.setattr(N, "FUSED_BACKWARD_MIN_NUMEL", min_numel)
        conv = apply_norm(nn.Conv2d(4, 6, 3), "bssn", scale=1.2).double()
        G = torch.randn(3, 3, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        G = G.permute(3, 2, 0, 1) if transpose else G.permute(3, 2, 0, 1).contiguous()
        assert G.is_contiguous() != transpose
        (conv.weight * G).sum().backward()
        return conv.parametrizations.weight.original.grad

    torch.manual_seed(0)
    ref = grad(2 ** 62, False)
    for transpose in (False, True):
        torch.manual_seed(0)
        assert torch.allclose(grad(0, transpose), ref, rtol=1e-10, atol=1e-13)


def test_remove_norm_and_sigmas_name_a_non_module():
    with pytest.raises(TypeError, match="remove_norm: module must be a torch.nn.Module, got NoneType"):
        remove_norm(None)
    with pytest.raises(TypeError, match="sigmas: model must be a torch.nn.Module, got list"):
        sigmas([1])


def test_spectral_norm_w_names_a_dim_it_cannot_take():
    "(Weights it cannot normalize: `test_one_weight_check_for_the_parametrizations_and_the_theory`.)"
    with pytest.raises(ValueError, match=r"SpectralNormW: dim must be 0 .* got 2"):
        SpectralNormW(torch.randn(3, 4), dim=2)
    with pytest.raises(ValueError, match=r"BidirectionalSpectralNorm: the weight must have at least 2 dimensions, "
                                         r"got shape \(\)"):
        BidirectionalSpectralNorm(torch.tensor(1.0))


@pytest.mark.parametrize("input_shape, match", [
    ((3, 8), r"OperatorNorm: input_shape must be a sequence \(C, \*spatial\) of 3 ints"),
    ((5, 8, 8), r"OperatorNorm: input_shape=\(5, 8, 8\) has 5 channels but the weight"),
    ((3, 2, 2), r"OperatorNorm: input_shape=\(3, 2, 2\) is too small"),
    ("abc", r"OperatorNorm: input_shape must be a sequence"),
])
def test_operator_norm_used_directly_names_a_bad_input_shape(input_shape, match):
    "OperatorNorm built by hand (not through apply_norm) checks its input shape as apply_norm does."
    from bssn_book.norms import OperatorNorm
    with pytest.raises(ValueError, match=match):
        OperatorNorm(torch.randn(4, 3, 3, 3), input_shape)


@pytest.mark.parametrize("who, make", [("SpectralNormW", SpectralNormW),
                                       ("BidirectionalSpectralNorm", BidirectionalSpectralNorm),
                                       ("bsn_sigmas", bsn_sigmas)])
def test_one_weight_check_for_the_parametrizations_and_the_theory(who, make):
    "Every entry point that takes the spectral norm of a weight refuses the same things with the same words."
    with pytest.raises(TypeError, match=f"{who}.*must be a torch.Tensor, got list"):
        make([[1.0, 2.0]])
    with pytest.raises(TypeError, match=f"{who}.*real floating-point dtype, got torch.int64"):
        make(torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=fr"{who}.*at least 2 dimensions, got shape \(5,\)"):
        make(torch.randn(5))
    with pytest.raises(ValueError, match=fr"{who}.*must not be empty, got shape \(0, 3\)"):
        make(torch.randn(0, 3))


@pytest.mark.parametrize("bad, err", [(0, ValueError), (-2, ValueError), (1.7, TypeError), (True, TypeError)])
def test_a_parametrization_built_directly_checks_its_power_iterations(bad, err):
    "0 or -2 used to run one step (or crash in BSN), 1.7 became 1: the class itself now refuses them, by name."
    from bssn_book.norms import BidirectionalSpectralNorm, SpectralNormW
    for cls, w in [(SpectralNormW, torch.randn(4, 6)), (BidirectionalSpectralNorm, torch.randn(4, 3, 3, 3))]:
        with pytest.raises(err, match=f"{cls.__name__}: n_power_iterations"):
            cls(w, n_power_iterations=bad)


def test_sn_w_along_dim_1_of_a_dense_weight_and_bsn_refusing_one():
    "SN_w's swapped direction on a 2-D weight is the same spectral norm; BSN needs a convolution's weight."
    from bssn_book.norms import BidirectionalSpectralNorm, SpectralNormW
    w = torch.randn(4, 6, dtype=torch.float64)
    p = SpectralNormW(w, dim=1).train()
    for _ in range(30):
        s = p.sigma(w)
    assert torch.allclose(s, torch.linalg.matrix_norm(w, 2), rtol=1e-6)
    with pytest.raises(ValueError, match=r"BidirectionalSpectralNorm: a convolution's weight .* shape \(4, 6\)"):
        BidirectionalSpectralNorm(w)
