"The gradient bound of chapter 4 holds on random networks and inputs (bssn_book.theory.bounds)."
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from bssn_book.spectral import conv_operator_matrix
from bssn_book.theory.bounds import (conv_patch_count, gradient_bound, layer_operator_norm,
                                     measured_gradients)


def _mlp(depth, width, in_dim, slope=0.1):
    layers, d = [], in_dim
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.LeakyReLU(slope)]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, 1))


def _cnn(depth, width, k, s):
    layers, c = [], 1
    for _ in range(depth):
        layers += [nn.Conv2d(c, width, k, stride=s, padding=k // 2), nn.ReLU()]
        c = width
    n = nn.Sequential(*layers, nn.Flatten())(torch.zeros(1, 1, 8, 8)).shape[1]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(n, 1))


def _check(model, x, conv="exact"):
    for g, b in zip(measured_gradients(model, x), gradient_bound(model, x, conv=conv)):
        assert g["grad"] <= b["bound"] * (1 + 1e-6)
        assert g["bias_grad"] <= b["bias_bound"] * (1 + 1e-6)


@settings(max_examples=25, deadline=None)
@given(depth=st.integers(1, 6), width=st.integers(1, 12), scale=st.floats(0.1, 3.0),
       seed=st.integers(0, 10_000), sn=st.booleans())
def test_bound_holds_on_random_mlps(depth, width, scale, seed, sn):
    torch.manual_seed(seed)
    model = _mlp(depth, width, 3)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.mul_(scale); m.bias.normal_(0, scale)
    if sn:
        for m in model:
            if isinstance(m, nn.Linear):
                spectral_norm(m)
    _check(model, torch.randn(8, 3) * scale)


@settings(max_examples=12, deadline=None)
@given(depth=st.integers(1, 3), width=st.integers(1, 4), k=st.integers(1, 4), s=st.integers(1, 2),
       seed=st.integers(0, 10_000), sn=st.booleans())
def test_bound_holds_on_random_cnns(depth, width, k, s, seed, sn):
    torch.manual_seed(seed)
    model = _cnn(depth, width, k, s)
    if sn:
        for m in model:
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                spectral_norm(m)
    x = torch.randn(4, 1, 8, 8)
    _check(model, x)
    _check(model, x, conv="sn_w")


def test_linear_rank_one_network_attains_the_bound():
    u = [torch.nn.functional.normalize(torch.randn(5), dim=0) for _ in range(3)] + [torch.ones(1)]
    model = nn.Sequential(nn.Linear(5, 5, bias=False), nn.Identity(), nn.Linear(5, 5, bias=False),
                          nn.Identity(), nn.Linear(5, 1, bias=False))
    with torch.no_grad():
        for i, m in enumerate([model[0], model[2], model[4]]):
            m.weight.copy_(torch.outer(u[i + 1], u[i]))
    x = 2.0 * u[0][None]
    for g, b in zip(measured_gradients(model, x), gradient_bound(model, x)):
        assert g["grad"] == pytest.approx(b["bound"], rel=1e-5)


def test_conv_norm_between_sigma_w_and_sqrt_n_sigma_w():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    rho = layer_operator_norm(conv, (2, 6, 6))
    sw = float(torch.linalg.matrix_norm(conv.weight.detach().flatten(1).double(), 2))
    assert sw * (1 - 1e-6) <= rho <= math.sqrt(conv_patch_count(conv)) * sw
    mat = conv_operator_matrix(conv.weight.detach(), (2, 6, 6), padding=1)
    x = torch.randn(1, 2, 6, 6)
    assert torch.allclose(mat @ x.flatten(), nn.functional.conv2d(x, conv.weight, padding=1).flatten(), atol=1e-5)


def test_bad_input():
    with pytest.raises(TypeError, match="Sequential"):
        gradient_bound(nn.Linear(2, 1), torch.randn(1, 2))
    with pytest.raises(TypeError, match="layer 1"):
        gradient_bound(nn.Sequential(nn.Linear(2, 2), nn.Sigmoid(), nn.Linear(2, 1)), torch.randn(1, 2))
    with pytest.raises(ValueError, match="conv"):
        layer_operator_norm(nn.Conv2d(1, 1, 3), (1, 4, 4), conv="bogus")


@settings(max_examples=15, deadline=None)
@given(depth=st.integers(1, 4), width=st.integers(1, 10), log_scale=st.floats(-2, 2), seed=st.integers(0, 10_000))
def test_raw_gradient_bound_holds_for_sn(depth, width, log_scale, seed):
    from bssn_book.theory.bounds import measured_raw_gradients, raw_gradient_bound
    torch.manual_seed(seed)
    model = _mlp(depth, width, 3)
    for m in model:
        if isinstance(m, nn.Linear):
            spectral_norm(m)
            with torch.no_grad():
                m.parametrizations.weight.original.mul_(10 ** log_scale)
    model.eval()
    x = torch.randn(8, 3)
    for g, b in zip(measured_raw_gradients(model, x), raw_gradient_bound(model, x)):
        assert g["grad"] <= b["raw_bound"] * (1 + 1e-6)


def test_measured_raw_gradients_checks_the_model_like_the_bounds():
    from bssn_book.theory.bounds import measured_raw_gradients
    with pytest.raises(TypeError, match="expected an nn.Sequential, got Linear"):
        measured_raw_gradients(nn.Linear(2, 2), torch.randn(1, 2))
    with pytest.raises(TypeError, match="layer 1: BatchNorm1d is not supported"):
        measured_raw_gradients(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), torch.randn(3, 2))


def test_bounds_refuse_a_padding_mode_the_patch_count_does_not_cover():
    from bssn_book.theory.bounds import gradient_bound
    model = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), nn.ReLU())
    with pytest.raises(ValueError, match="layer 0: padding_mode='reflect'"):
        gradient_bound(model, torch.randn(1, 2, 6, 6))


def test_hessian_bound_needs_a_weight_layer():
    from bssn_book.theory.bounds import hessian_bound
    with pytest.raises(ValueError, match="no Linear or Conv2d"):
        hessian_bound(nn.Sequential(nn.Tanh()), torch.randn(3, 1))


def test_measured_hessian_norms_refuses_a_large_layer():
    from bssn_book.theory.bounds import measured_hessian_norms
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
    assert len(measured_hessian_norms(model, torch.randn(2, 4), max_weights=12)) == 2  # 12 weights: allowed
    with pytest.raises(ValueError, match=r"layer 0 \(Linear\) has 12 weights, above max_weights=11"):
        measured_hessian_norms(model, torch.randn(2, 4), max_weights=11)
    big = nn.Sequential(nn.Linear(100, 41), nn.Tanh(), nn.Linear(41, 1))  # 4100 weights > the default 4096
    with pytest.raises(ValueError, match="layer 0"):
        measured_hessian_norms(big, torch.randn(2, 100))
