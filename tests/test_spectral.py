"Power iteration, exact spectral norms and the operator norm of convolutions (bssn_book.spectral, chapter 2)."
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from bssn_book.spectral import (conv_kwargs, conv_operator_adjoint, conv_operator_matrix, conv_operator_norm,
                                conv_operator_norm_fft, conv_output_shape, conv_singular_values_fft,
                                max_patch_overlap, power_iteration, reshape_weight, spectral_norm_exact)

DTYPES = st.sampled_from([torch.float32, torch.float64])
TOL = {torch.float32: 1e-4, torch.float64: 1e-10}
FEW = settings(max_examples=25, deadline=None)
SOME = settings(max_examples=40, deadline=None)


# Offset of the power iterations' random start: seeding the global RNG with the weight generator's own seed made the
# start a copy of the weight's first draws (x0 == w for a 1x1x4x4 kernel on 1x4x4 inputs), which for a circular
# convolution can be orthogonal to the top singular vector: the iteration then found sigma_2.
START = 10_000


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _matrix_with_gap(m, n, ratio, dtype, seed):
    "A random m x n matrix whose singular values are 1, ratio, ratio^2, ... (spectral gap sigma_2/sigma_1 = ratio)."
    g = _gen(seed)
    r = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, r, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64))
    s = ratio ** torch.arange(r, dtype=torch.float64) * 3.0
    return (U * s @ V.T).to(dtype), 3.0


# power iteration on matrices

@FEW
@given(m=st.integers(1, 30), n=st.integers(1, 30), ratio=st.floats(0.1, 0.8), dtype=DTYPES, seed=st.integers(0, 9999))
def test_power_iteration_converges_to_svd(m, n, ratio, dtype, seed):
    W, sigma1 = _matrix_with_gap(m, n, ratio, dtype, seed)
    torch.manual_seed(START + seed)   # the start vector's own stream (see START)
    sigma, u, v = power_iteration(W, n_iter=80)
    exact = spectral_norm_exact(W)
    assert sigma.dtype == dtype and u.shape == (m,) and v.shape == (n,)
    assert abs(float(exact) - sigma1) < 10 * TOL[dtype] * sigma1
    assert abs(float(sigma) - float(exact)) <= 10 * TOL[dtype] * float(exact)
    assert abs(float(u.norm()) - 1) < 10 * TOL[dtype] and abs(float(v.norm()) - 1) < 10 * TOL[dtype]


@FEW
@given(m=st.integers(1, 20), n=st.integers(1, 20), k=st.integers(1, 5), seed=st.integers(0, 9999))
def test_power_iteration_is_a_lower_bound_and_resumes(m, n, k, seed):
    g = _gen(seed)
    W = torch.randn(m, n, generator=g, dtype=torch.float64)
    u0 = torch.randn(m, generator=g, dtype=torch.float64)
    s1, u1, v1 = power_iteration(W, u=u0, n_iter=k)
    s2, u2, v2 = power_iteration(W, u=u1, v=v1, n_iter=k)      # persistent vectors: resume where we stopped
    s_all, u_all, v_all = power_iteration(W, u=u0, n_iter=2 * k)
    exact = float(spectral_norm_exact(W))
    assert float(s1) <= exact * (1 + 1e-12) and float(s1) <= float(s2) * (1 + 1e-12)
    assert torch.allclose(u2, u_all) and torch.allclose(v2, v_all) and torch.allclose(s2, s_all)
    s0, u0b, v0b = power_iteration(W, u=u2, v=v2, n_iter=0)    # no iteration: just u^T W v
    assert torch.allclose(s0, u2 @ W @ v2) and torch.equal(u0b, u2)


def test_power_iteration_gradient_is_u_vT():
    torch.manual_seed(0)
    W = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    sigma, u, v = power_iteration(W, n_iter=200)
    sigma.backward()
    assert torch.allclose(W.grad, torch.outer(u, v))
    assert not u.requires_grad and not v.requires_grad


def test_power_iteration_from_v_only():
    torch.manual_seed(1)
    W = torch.randn(5, 7, dtype=torch.float64)
    _, _, v = power_iteration(W, n_iter=300)
    sigma, u, v2 = power_iteration(W, v=v, n_iter=1)
    assert math.isclose(float(sigma), float(spectral_norm_exact(W)), rel_tol=1e-9)


def test_spectral_norm_exact_matches_svdvals_and_is_differentiable():
    torch.manual_seed(2)
    W = torch.randn(5, 3, requires_grad=True)
    s = spectral_norm_exact(W)
    assert torch.allclose(s, torch.linalg.svdvals(W)[0])
    s.backward()
    U, S, Vh = torch.linalg.svd(W.detach())
    assert torch.allclose(W.grad, torch.outer(U[:, 0], Vh[0]), atol=1e-5)


# reshape_weight follows torch's spectral_norm convention

@pytest.mark.parametrize("layer,dim", [(nn.Linear(5, 3), 0), (nn.Conv2d(3, 4, (3, 2)), 0), (nn.Conv1d(2, 5, 3), 0),
                                       (nn.ConvTranspose2d(3, 4, 3), 1), (nn.Conv3d(2, 3, 2), 0),
                                       (nn.ConvTranspose1d(4, 2, 3, groups=2), 1)])
def test_reshape_weight_matches_torch_spectral_norm(layer, dim):
    torch.manual_seed(3)
    w = layer.weight.detach().clone().double()
    M = reshape_weight(w, dim)
    assert M.shape == (w.shape[dim], w.numel() // w.shape[dim])
    assert torch.equal(M, torch.movedim(w, dim, 0).reshape(w.shape[dim], -1))
    layer = layer.double()
    spectral_norm(layer, n_power_iterations=500)
    layer.train()
    _ = layer.weight  # run the power iteration
    w_bar = layer.weight.detach()
    sigma_torch = float((w / w_bar).flatten()[0])
    assert math.isclose(sigma_torch, float(spectral_norm_exact(M)), rel_tol=1e-6)


def test_reshape_weight_negative_dim():
    w = torch.randn(2, 3, 4)
    assert torch.equal(reshape_weight(w, -1), reshape_weight(w, 2))


# convolutions: the dense matrix, the adjoint, power iteration

@st.composite
def conv_cases(draw, modes=("zeros", "circular"), allow_transposed=True, max_groups=2):
    nd = draw(st.integers(1, 3))
    transposed = allow_transposed and draw(st.booleans())
    g = draw(st.integers(1, max_groups))
    cin_g, cout_g = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kmax, nmax = {1: (5, 12), 2: (4, 7), 3: (3, 4)}[nd]
    k = tuple(draw(st.integers(1, kmax)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    K = tuple(d * (kk - 1) + 1 for d, kk in zip(dilation, k))
    n = tuple(draw(st.integers(max(1, kk - 2), max(kk, nmax))) for kk in K)
    mode = "zeros" if transposed else draw(st.sampled_from(modes))
    padding = tuple(draw(st.integers(0, min(2, nn_) if mode != "zeros" else 2)) for nn_ in n)
    if transposed:  # keep the output non-empty: 2p <= K - 1
        padding = tuple(min(p, (kk - 1) // 2) for p, kk in zip(padding, K))
    else:  # keep the padded input at least as large as the kernel
        n = tuple(max(nn_, kk - 2 * p) for nn_, kk, p in zip(n, K, padding))
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=g, padding_mode=mode)
    if transposed:
        kw["transposed"] = True
        kw["output_padding"] = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
        wshape = (cin_g * g, cout_g, *k)
    else:
        wshape = (cout_g * g, cin_g, *k)
    return wshape, (cin_g * g, *n), kw


def _module(wshape, input_shape, kw, weight):
    nd = len(wshape) - 2
    if kw.get("transposed"):
        m = getattr(nn, f"ConvTranspose{nd}d")(input_shape[0], wshape[1] * kw["groups"], wshape[2:], bias=False,
                                               stride=kw["stride"], padding=kw["padding"], dilation=kw["dilation"],
                                               groups=kw["groups"], output_padding=kw["output_padding"])
    else:
        m = getattr(nn, f"Conv{nd}d")(input_shape[0], wshape[0], wshape[2:], bias=False, stride=kw["stride"],
                                      padding=kw["padding"], dilation=kw["dilation"], groups=kw["groups"],
                                      padding_mode=kw["padding_mode"])
    m = m.to(weight.dtype)
    with torch.no_grad():
        m.weight.copy_(weight)
    return m


@SOME
@given(case=conv_cases(modes=("zeros", "circular", "reflect", "replicate")), dtype=DTYPES, seed=st.integers(0, 9999))
def test_conv_operator_matrix_is_the_conv_and_its_transpose_the_adjoint(case, dtype, seed):
    wshape, ishape, kw = case
    if kw["padding_mode"] == "reflect" and any(p >= n for p, n in zip(kw["padding"], ishape[1:])):
        kw = dict(kw, padding_mode="zeros")
    g = _gen(seed)
    w = torch.randn(wshape, generator=g, dtype=torch.float64).to(dtype)
    A = conv_operator_matrix(w, ishape, **kw)
    oshape = conv_output_shape(w, ishape, **kw)
    assert A.shape == (math.prod(oshape), math.prod(ishape)) and A.dtype == dtype
    x = torch.randn(2, *ishape, generator=g, dtype=torch.float64).to(dtype)
    ref = _module(wshape, ishape, kw, w)(x)
    assert ref.shape[1:] == oshape
    tol = 1e3 * TOL[dtype] * (1 + float(A.abs().max()))
    assert torch.allclose(x.reshape(2, -1) @ A.T, ref.reshape(2, -1), atol=tol)
    y = torch.randn(2, *oshape, generator=g, dtype=torch.float64).to(dtype)
    ATy = conv_operator_adjoint(w, y, ishape, **kw)
    assert ATy.shape == (2, *ishape)
    assert torch.allclose(ATy.reshape(2, -1), y.reshape(2, -1) @ A, atol=tol)
    # <A x, y> = <x, A^T y>
    assert torch.allclose((ref * y).sum(), (x * ATy).sum(), atol=10 * tol * math.sqrt(A.numel()))
    if not kw.get("transposed") and kw["padding_mode"] == "zeros":  # A^T is torch's conv_transpose
        nd = len(wshape) - 2
        K = [d * (k - 1) + 1 for d, k in zip(kw["dilation"], wshape[2:])]
        op = [n + 2 * p - ((o - 1) * s + kk) for n, p, o, s, kk in
              zip(ishape[1:], kw["padding"], oshape[1:], kw["stride"], K)]
        ct = getattr(F, f"conv_transpose{nd}d")(y, w, stride=kw["stride"], padding=kw["padding"], output_padding=op,
                                                groups=kw["groups"], dilation=kw["dilation"])
        assert torch.allclose(ct, ATy, atol=tol)


@SOME
@given(case=conv_cases(), dtype=DTYPES, seed=st.integers(0, 9999))
def test_conv_power_iteration_matches_dense_svd(case, dtype, seed):
    wshape, ishape, kw = case
    g = _gen(seed)
    w = torch.randn(wshape, generator=g, dtype=torch.float64).to(dtype)
    exact = float(torch.linalg.matrix_norm(conv_operator_matrix(w.double(), ishape, **kw), ord=2))
    torch.manual_seed(START + seed)   # the start vector's own stream (see START)
    sigma, x = conv_operator_norm(w, ishape, n_iter=300, **kw)
    assert sigma.dtype == dtype and x.shape == ishape and abs(float(x.norm()) - 1) < 1e-3  # even for A = 0
    assert float(sigma) <= exact * (1 + 1e3 * TOL[dtype])
    assert float(sigma) >= exact * (1 - 1e-2)
    # warm start: a few more iterations from the returned vector never lose ground (up to rounding)
    sigma2, _ = conv_operator_norm(w, ishape, n_iter=3, x=x, **kw)
    assert float(sigma2) >= float(sigma) * (1 - 1e3 * TOL[dtype])


def test_conv_operator_norm_warm_start_zero_iterations_and_gradient():
    torch.manual_seed(4)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    sigma, x = conv_operator_norm(w, (3, 6, 6), padding=1, n_iter=50)
    s0, x0 = conv_operator_norm(w, (3, 6, 6), padding=1, n_iter=0, x=x)
    assert torch.allclose(s0, sigma) and torch.allclose(x0, x)
    sigma.backward()
    assert w.grad.shape == w.shape and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0
    # the gradient of ||A(w) x|| with x fixed, checked against autograd's own finite differences
    xf = x.detach()
    assert torch.autograd.gradcheck(lambda ww: conv_operator_norm(ww, (3, 6, 6), padding=1, n_iter=0, x=xf)[0],
                                    (w.detach().clone().requires_grad_(),))


# exact value for circular padding, stride 1: the FFT (Sedghi et al. 2019)

@st.composite
def circular_cases(draw):
    nd = draw(st.integers(1, 3))
    g = draw(st.integers(1, 2))
    cin_g, cout_g = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kmax, nmax = {1: (5, 12), 2: (4, 7), 3: (3, 4)}[nd]
    k = tuple(draw(st.integers(1, kmax)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    K = tuple(d * (kk - 1) + 1 for d, kk in zip(dilation, k))
    n = tuple(draw(st.integers(max(1, (kk + 1) // 2), nmax)) for kk in K)  # 'same' padding <= n
    return (cout_g * g, cin_g, *k), (cin_g * g, *n), dict(dilation=dilation, groups=g)


@SOME
@given(case=circular_cases(), dtype=DTYPES, seed=st.integers(0, 9999))
def test_fft_equals_dense_svd_for_circular_padding(case, dtype, seed):
    wshape, ishape, kw = case
    w = torch.randn(wshape, generator=_gen(seed), dtype=torch.float64).to(dtype)
    A = conv_operator_matrix(w.double(), ishape, padding="same", padding_mode="circular", **kw)
    assert A.shape[0] == A.shape[1] * wshape[0] // ishape[0]  # same spatial size
    dense = torch.linalg.svdvals(A)
    fft = conv_singular_values_fft(w, ishape, **kw)
    assert fft.dtype == dtype
    r = min(A.shape)
    tol = 1e2 * TOL[dtype] * (1 + float(dense[0]))
    assert torch.allclose(fft.double()[:r], dense[:r], atol=tol)
    assert abs(float(conv_operator_norm_fft(w, ishape, **kw)) - float(dense[0])) < tol


@FEW
@given(n=st.integers(3, 8), k=st.sampled_from([1, 3, 5]), seed=st.integers(0, 9999))
def test_fft_matches_power_iteration_2d(n, k, seed):
    w = torch.randn(3, 2, k, k, generator=_gen(seed), dtype=torch.float64)
    torch.manual_seed(START + seed)   # the start vector's own stream (see START)
    if (k - 1) // 2 > n:
        return
    sigma, _ = conv_operator_norm(w, (2, n, n), padding=(k - 1) // 2, padding_mode="circular", n_iter=300)
    exact = float(conv_operator_norm_fft(w, (2, n, n)))
    assert exact * (1 - 1e-2) <= float(sigma) <= exact * (1 + 1e-9)


# sigma_w <= sigma_conv <= sqrt(n) sigma_w

def _has_inner_patch(ishape, wshape, kw):
    "Some output position sees a patch that lies entirely inside the image (no padding)."
    for n, k, s, d, p in zip(ishape[1:], wshape[2:], kw["stride"], kw["dilation"], kw["padding"]):
        K = d * (k - 1) + 1
        o = -(-p // s)  # the first output whose window starts inside the image
        if o * s - p + K > n:
            return False
    return True


@SOME
@given(case=conv_cases(modes=("zeros",), allow_transposed=True), seed=st.integers(0, 9999))
def test_conv_norm_between_sigma_w_and_sqrt_n_sigma_w(case, seed):
    wshape, ishape, kw = case
    w = torch.randn(wshape, generator=_gen(seed), dtype=torch.float64)
    sigma_w = float(spectral_norm_exact(reshape_weight(w, 0)))  # the adjoint conv's kernel for a transposed conv
    sigma = float(torch.linalg.matrix_norm(conv_operator_matrix(w, ishape, **kw), ord=2))
    n = max_patch_overlap(wshape[2:], kw["stride"], kw["dilation"])
    assert sigma <= math.sqrt(n) * sigma_w * (1 + 1e-9)
    if not kw.get("transposed") and kw["groups"] == 1 and _has_inner_patch(ishape, wshape, kw):
        assert sigma >= sigma_w * (1 - 1e-9)


@FEW
@given(case=circular_cases(), seed=st.integers(0, 9999))
def test_circular_stride1_bounds(case, seed):
    wshape, ishape, kw = case
    if any(d * (k - 1) + 1 > n for d, k, n in zip(kw["dilation"], wshape[2:], ishape[1:])):
        return  # the kernel wraps onto itself: taps alias and the bounds are not about this operator
    w = torch.randn(wshape, generator=_gen(seed), dtype=torch.float64)
    sigma_w = float(spectral_norm_exact(reshape_weight(w)))
    sigma = float(conv_operator_norm_fft(w, ishape, **kw))
    assert sigma <= math.sqrt(math.prod(wshape[2:])) * sigma_w * (1 + 1e-9)
    if kw["groups"] == 1:
        assert sigma >= sigma_w * (1 - 1e-9)


def test_fft_norm_is_differentiable():
    "The top singular value is doubled (frequencies f and -f), yet sigma is smooth in w: check against finite differences."
    torch.manual_seed(6)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    sigma = conv_operator_norm_fft(w, (2, 5, 4))
    dense = torch.linalg.matrix_norm(conv_operator_matrix(w, (2, 5, 4), padding=1, padding_mode="circular"), ord=2)
    assert torch.allclose(sigma, dense)
    assert torch.autograd.gradcheck(lambda ww: conv_operator_norm_fft(ww, (2, 5, 4)), (w,))


def test_upper_bound_is_attained_by_a_constant_kernel():
    "A rank-one kernel that is constant in space: the constant image makes every patch align, ratio sqrt(k*k)."
    w = torch.ones(1, 1, 3, 3, dtype=torch.float64)
    sigma = float(conv_operator_norm_fft(w, (1, 8, 8)))
    assert math.isclose(sigma, 3 * float(spectral_norm_exact(reshape_weight(w))), rel_tol=1e-12)


def test_max_patch_overlap():
    assert max_patch_overlap((3, 3)) == 9
    assert max_patch_overlap((4, 4), 2) == 4
    assert max_patch_overlap((3, 3), 2) == 4
    assert max_patch_overlap(3, 2, 2) == 3     # dilation 2, stride 2: every tap lands on the same parity
    assert max_patch_overlap((5, 1), (2, 1)) == 3


# layers, dtypes, devices

@pytest.mark.parametrize("layer,shape", [
    (nn.Conv2d(3, 4, 3, stride=2, padding=1, padding_mode="circular"), (3, 7, 6)),
    (nn.Conv1d(4, 2, 4, padding="same", dilation=2, groups=2), (4, 9)),
    (nn.ConvTranspose2d(2, 3, 4, stride=2, padding=1, output_padding=1), (2, 3, 4)),
    (nn.Conv3d(2, 2, 2, padding=1, padding_mode="replicate"), (2, 3, 3, 3)),
])
def test_conv_kwargs_reproduce_the_layer(layer, shape):
    torch.manual_seed(5)
    layer = layer.double()
    kw = conv_kwargs(layer)
    A = conv_operator_matrix(layer.weight.detach(), shape, **kw)
    x = torch.randn(1, *shape, dtype=torch.float64)
    bias = layer.bias.detach().reshape(1, -1, *[1] * (len(shape) - 1))
    assert torch.allclose(A @ x.flatten(), (layer(x) - bias).flatten())
    sigma, _ = conv_operator_norm(layer.weight, shape, n_iter=300, **kw)
    assert math.isclose(float(sigma.detach()), float(torch.linalg.matrix_norm(A, 2)), rel_tol=1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda():
    w = torch.randn(4, 3, 3, 3, device="cuda")
    sigma, x = conv_operator_norm(w, (3, 8, 8), padding=1, n_iter=50)
    assert sigma.device.type == "cuda" and x.device.type == "cuda"
    assert conv_operator_norm_fft(w, (3, 8, 8)).device.type == "cuda"
    s, u, v = power_iteration(w.reshape(4, -1))
    assert u.device.type == "cuda"


# errors name the argument and the bad value

W2 = torch.randn(4, 3)
WC = torch.randn(4, 3, 3, 3)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: power_iteration(torch.randn(2, 3, 4)), ValueError, r"W must be 2-D.*\(2, 3, 4\)"),
    (lambda: power_iteration([[1.0]]), TypeError, "W must be a torch.Tensor"),
    (lambda: power_iteration(torch.ones(2, 2, dtype=torch.int64)), TypeError, "floating-point.*int64"),
    (lambda: power_iteration(W2, n_iter=0), ValueError, "n_iter must be >= 1"),
    (lambda: power_iteration(W2, n_iter=-2), ValueError, "n_iter must be >= 0, got -2"),
    (lambda: power_iteration(W2, n_iter=1.5), TypeError, "n_iter must be an int, got 1.5"),
    (lambda: power_iteration(W2, u=torch.randn(3)), ValueError, r"u must have shape \(4,\).*\(3,\)"),
    (lambda: power_iteration(W2, v=torch.randn(4)), ValueError, r"v must have shape \(3,\)"),
    (lambda: power_iteration(W2, eps=0), ValueError, "eps must be a positive number, got 0"),
    (lambda: power_iteration(torch.zeros(0, 3)), ValueError, "must not be empty"),
    (lambda: reshape_weight(W2, dim=2), ValueError, "dim must be an int.*got 2"),
    (lambda: spectral_norm_exact(WC), ValueError, r"W must be 2-D.*\(4, 3, 3, 3\)"),
    (lambda: conv_operator_norm(W2, (3, 8)), ValueError, r"weight must have 3 or 4 or 5 dimensions.*\(4, 3\)"),
    (lambda: conv_operator_norm(WC, (3, 8, 8), n_iter=0), ValueError, "n_iter must be >= 1"),
    (lambda: conv_operator_norm(WC, (2, 8, 8)), ValueError, r"input_shape=\(2, 8, 8\) has 2 channels.*expects 3"),
    (lambda: conv_operator_norm(WC, (1, 3, 8, 8)), ValueError, "no batch dimension"),
    (lambda: conv_operator_norm(WC, (3, 8, 0)), ValueError, "input_shape must be >= 1, got 0"),
    (lambda: conv_operator_norm(WC, (3, 2, 2)), ValueError, "too small"),
    (lambda: conv_operator_norm(WC, (3, 8, 8), stride=0), ValueError, "stride must be >= 1, got 0"),
    (lambda: conv_operator_norm(WC, (3, 8, 8), padding=-1), ValueError, "padding must be >= 0, got -1"),
    (lambda: conv_operator_norm(WC, (3, 8, 8), padding=(1, 1, 1)), ValueError, r"padding must be an int or a sequence of 2"),
    (lambda: conv_operator_norm(WC, (3, 8, 8), padding="full"), ValueError, "padding must be.*'full'"),
    (lambda: conv_operator_norm(WC, (3, 8, 8), padding="same", stride=2), ValueError, "padding='same' needs stride 1"),
    (lambda: conv_operator_norm(WC, (3, 8, 8), padding_mode="mirror"), ValueError, "padding_mode must be one of.*'mirror'"),
    (lambda: conv_operator_norm(WC, (3, 4, 4), padding=5, padding_mode="circular"), ValueError, "circular padding 5"),
    (lambda: conv_operator_norm(WC, (3, 8, 8), groups=2), ValueError, "groups=2 must divide|expects 6"),
    (lambda: conv_operator_norm(WC, (3, 8, 8), output_padding=1), ValueError, "output_padding is only for transposed"),
    (lambda: conv_operator_norm(WC, (4, 8, 8), transposed=True, output_padding=1), ValueError, "output_padding"),
    (lambda: conv_operator_norm(WC, (4, 8, 8), transposed=True, padding_mode="circular"), ValueError, "padding_mode='zeros'"),
    (lambda: conv_operator_norm(WC, (3, 8, 8), transposed=True), ValueError, r"transposed weight.*weight.shape\[0\]=4"),
    (lambda: conv_operator_norm(WC, (3, 8, 8), x=torch.randn(3, 7, 7)), ValueError, r"x must have shape.*\(3, 7, 7\)"),
    (lambda: conv_operator_norm_fft(WC, (2, 8, 8)), ValueError, "has 2 channels"),
    (lambda: conv_operator_matrix(WC.long(), (3, 8, 8)), TypeError, "weight must have a real floating-point dtype"),
    (lambda: conv_kwargs(nn.Linear(2, 3)), TypeError, "got Linear"),
])
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
