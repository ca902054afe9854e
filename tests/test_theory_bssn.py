"BSN variance, Kaiming's gain and the best scale of chapter 7 (bssn_book.theory.bssn)."
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bssn_book.norms import apply_norm
from bssn_book.theory.bssn import (best_scale, block_log_gains, bsn_sigmas, bsn_variance, bsn_xavier_ratio, fan_out,
                                   kaiming_gain, predicted_best_scale)
from bssn_book.theory.init import normalized_conv_stack, padding_factor, signal_gradient_profile


def test_fan_out():
    assert fan_out(nn.Linear(7, 3)) == 3
    assert fan_out(nn.Conv2d(4, 6, (3, 5))) == 6 * 15
    assert fan_out(nn.Conv2d(4, 6, 3, groups=2)) == 3 * 9
    with pytest.raises(TypeError):
        fan_out(nn.ConvTranspose2d(4, 6, 3))


def test_bsn_sigmas_dense_equal_and_conv_reshapes():
    w = torch.randn(5, 9, generator=torch.Generator().manual_seed(0))
    s_out, s_in = bsn_sigmas(w)
    assert s_out == pytest.approx(s_in) == pytest.approx(float(torch.linalg.matrix_norm(w, 2)))
    k = torch.zeros(2, 3, 3, 3)
    k[0, 0] = 1.0  # one filter of ones: c_out x (c_in 9) has sigma 3; c_in x (c_out 9) too
    k[1, 1, 1, 1] = 2.0
    assert bsn_sigmas(k) == pytest.approx((3.0, 3.0))
    w = torch.randn(8, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    s_out, s_in = bsn_sigmas(w)
    assert s_out == pytest.approx(float(torch.linalg.matrix_norm(w.reshape(8, 18), 2)))
    assert s_in == pytest.approx(float(torch.linalg.matrix_norm(w.transpose(0, 1).reshape(2, 72), 2)))
    with pytest.raises(ValueError):
        bsn_sigmas(torch.ones(3))


def test_adjoint_is_conv_transpose_with_sigma_in():
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(6, 3, 3, 3, generator=gen, dtype=torch.float64)
    x = torch.randn(1, 3, 7, 7, generator=gen, dtype=torch.float64)
    y = torch.randn(1, 6, 7, 7, generator=gen, dtype=torch.float64)
    lhs = (F.conv2d(x, w, padding=1) * y).sum()
    rhs = (x * F.conv_transpose2d(y, w, padding=1)).sum()
    assert float(lhs) == pytest.approx(float(rhs))


def test_bsn_variance_formula_and_symmetry():
    assert bsn_variance(64, 64, 9) == pytest.approx(4 / (2 * (8 + 24)) ** 2)  # sigma_out = sigma_in = 8 + 3 * 8
    assert bsn_variance(16, 64, 9) == pytest.approx(bsn_variance(64, 16, 9))
    assert bsn_xavier_ratio(64, 64, 9) == pytest.approx(9 / 16)
    for c_in, c_out in [(1, 512), (3, 64), (100, 100), (512, 2)]:
        r = bsn_xavier_ratio(c_in, c_out, 9)
        assert 9 / 16 - 1e-12 <= r < 9 / 8
    assert bsn_xavier_ratio(10, 10, 1) == pytest.approx(0.25)


def test_bsn_variance_matches_apply_norm_on_random_kernels():
    torch.manual_seed(0)
    conv = nn.Conv2d(48, 96, 3, bias=False)
    apply_norm(conv, "bsn", n_power_iterations=50).train()
    conv(torch.zeros(1, 48, 3, 3))
    v = float(conv.weight.detach().double().var(correction=0))
    assert 0.98 < v / bsn_variance(48, 96, 9) < 1.08
    s_out, s_in = bsn_sigmas(conv.parametrizations.weight.original)
    assert float(conv.weight.detach().double().norm() / conv.parametrizations.weight.original.detach().double().norm()) \
        == pytest.approx(2 / (s_out + s_in), rel=2e-3)


def test_kaiming_gain_and_predicted_scale():
    assert kaiming_gain(0.0) == pytest.approx(math.sqrt(2))
    assert kaiming_gain(1.0) == pytest.approx(1.0)
    assert kaiming_gain(0.1) == pytest.approx(1.40720, abs=1e-5)
    assert predicted_best_scale(1.0, slope=0.0) == pytest.approx(math.sqrt(2))
    assert predicted_best_scale(9 / 16, slope=0.1) == pytest.approx(kaiming_gain(0.1) * 4 / 3)
    with pytest.raises(ValueError):
        predicted_best_scale(0.0)


def test_best_scale_recovers_the_zero_crossing():
    scales = [0.5, 1.0, 2.0, 4.0]
    assert best_scale(scales, [0.7 - math.log(c) for c in scales]) == pytest.approx(math.exp(0.7))
    assert best_scale(scales, [2 * (0.3 - math.log(c)) for c in scales]) == pytest.approx(math.exp(0.3))
    with pytest.raises(ValueError):
        best_scale([1.0, 1.0], [0.1, 0.2])
    with pytest.raises(ValueError):
        best_scale([1.0, 2.0], [0.1, 0.2])


def test_block_log_gains_index_blocks_both_ways():
    prof = {"forward": torch.tensor([1.0, 2.0, 8.0]), "backward": torch.tensor([1.0, 0.5, 0.05])}
    g = block_log_gains(prof)
    assert torch.allclose(g["forward"], torch.log(torch.tensor([2.0, 4.0], dtype=torch.float64)))
    # backward: the first step back traverses block 2 (gain 0.5), the second block 1 (gain 0.1)
    assert torch.allclose(g["backward"], torch.log(torch.tensor([0.1, 0.5], dtype=torch.float64)))


def test_measured_best_scale_of_bssn_is_the_prediction():
    rates = {}
    for c in [1.0, 3.0]:
        r = []
        for seed in range(2):
            model, x = normalized_conv_stack("bssn", c, depth=30, channels=32, seed=seed)
            g = block_log_gains(signal_gradient_profile(model, x, generator=torch.Generator().manual_seed(seed)))
            r.append(-float(g["backward"][3:].mean()))
        rates[c] = sum(r) / len(r)
    assert rates[3.0] == pytest.approx(rates[1.0] - math.log(3.0), abs=1e-4)  # homogeneity
    model, _ = normalized_conv_stack("bsn", depth=30, channels=32, seed=0)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    rho = sum(32 * 9 * float(m.weight.detach().double().var(correction=0)) for m in convs) / len(convs)
    c_pred = predicted_best_scale(rho, slope=0.1, pad=padding_factor(8, 8))
    c_meas = best_scale([1.0, 3.0], [rates[1.0], rates[3.0]])
    assert abs(c_meas / c_pred - 1) < 0.05


def test_best_scale_rejects_mismatched_or_nonpositive_scales():
    with pytest.raises(ValueError, match="2 scales but 1 rates"):
        best_scale([1.0, 2.0], [0.1])
    with pytest.raises(ValueError, match="positive"):
        best_scale([0.0, 1.0], [0.2, 0.1])
