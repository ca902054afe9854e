"Random matrices, initialization variances and signal-propagation probes of chapter 5 (bssn_book.theory.init)."
import math

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from bssn_book.theory.init import (bai_yin_prediction, decay_rate, init_variance, normalized_conv_stack, padding_factor,
                                   plain_conv_stack,
                                   predicted_decay_rate, random_sigma_max, signal_gradient_profile, sn_fan_in_variance,
                                   tracy_widom_prediction)


def test_random_sigma_max_shape_scale_and_determinism():
    s1 = random_sigma_max(20, 30, s=2.0, trials=5, generator=torch.Generator().manual_seed(0))
    s2 = random_sigma_max(20, 30, s=1.0, trials=5, generator=torch.Generator().manual_seed(0))
    assert s1.shape == (5,)
    assert torch.allclose(s1, 2 * s2)


def test_bai_yin_ratio_below_one_and_approaches_it():
    gen = torch.Generator().manual_seed(1)
    small = float(random_sigma_max(10, 10, trials=50, generator=gen).mean()) / bai_yin_prediction(10, 10)
    large = float(random_sigma_max(200, 200, trials=4, generator=gen).mean()) / bai_yin_prediction(200, 200)
    assert small < large < 1
    assert large > 0.97 and small < 0.92
    assert bai_yin_prediction(4, 9, s=0.5) == pytest.approx(2.5)


@pytest.mark.parametrize("m,n", [(16, 16), (32, 288), (100, 50)])
def test_tracy_widom_prediction_matches_the_mean(m, n):
    sig = random_sigma_max(m, n, s=3.0, trials=60, generator=torch.Generator().manual_seed(m + n))
    se = float(sig.std()) / math.sqrt(60)
    assert abs(float(sig.mean()) - tracy_widom_prediction(m, n, s=3.0)) < 3 * se + 0.003 * bai_yin_prediction(m, n, 3.0)
    assert tracy_widom_prediction(m, n) < bai_yin_prediction(m, n)
    assert tracy_widom_prediction(m, n) == pytest.approx(tracy_widom_prediction(n, m))


def test_init_variances():
    assert init_variance("lecun", 50) == pytest.approx(0.02)
    assert init_variance("xavier", 30, 70) == pytest.approx(0.02)
    assert init_variance("kaiming", 100) == pytest.approx(0.02)
    assert init_variance("kaiming", 100, slope=0.1) == pytest.approx(2 / 101)
    with pytest.raises(ValueError):
        init_variance("xavier", 10)
    with pytest.raises(ValueError):
        init_variance("orthogonal", 10)


def test_sn_fan_in_variance_is_nine_sixteenths_for_square_3x3_and_matches_torch_sn():
    assert sn_fan_in_variance(64, 64 * 9) == pytest.approx(9 / 16)
    torch.manual_seed(0)
    conv = spectral_norm(nn.Conv2d(64, 64, 3), n_power_iterations=50)
    conv.eval()
    w = conv.weight.detach().double()
    measured = 64 * 9 * float(w.var(correction=0))
    finite = sn_fan_in_variance(64, 576) / (tracy_widom_prediction(64, 576) / bai_yin_prediction(64, 576)) ** 2
    assert abs(measured - finite) / finite < 0.05


def test_plain_conv_stack_structure_and_lecun_init():
    net = plain_conv_stack(3, [4, 8, 8, 2], kernel=3, slope=0.2, generator=torch.Generator().manual_seed(0))
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    assert len(net) == 6 and [c.out_channels for c in convs] == [8, 8, 2]
    assert all(c.bias is None and c.padding == (1, 1) for c in convs)
    assert isinstance(net[1], nn.LeakyReLU) and net[1].negative_slope == 0.2
    assert net(torch.zeros(1, 4, 5, 5)).shape == (1, 2, 5, 5)
    big = plain_conv_stack(1, 128, generator=torch.Generator().manual_seed(0))
    assert 128 * 9 * float(big[0].weight.detach().var()) == pytest.approx(1.0, abs=0.03)
    with pytest.raises(ValueError):
        plain_conv_stack(2, [4, 4])
    with pytest.raises(ValueError):
        plain_conv_stack(2, 4, kernel=2)


def test_profile_of_a_linear_orthogonal_stack_is_flat():
    # slope 1 and circular padding with an orthogonal 1x1 kernel: an isometry, every magnitude is exactly 1
    net = plain_conv_stack(6, 8, kernel=1, slope=1.0)
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Conv2d):
                nn.init.orthogonal_(m.weight.view(8, 8))
    p = signal_gradient_profile(net, torch.randn(3, 8, 4, 4), generator=torch.Generator().manual_seed(0))
    assert p["forward"].shape == (7,) and p["backward"].shape == (7,)
    assert torch.allclose(p["forward"], torch.ones(7, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(p["backward"], torch.ones(7, dtype=torch.float64), atol=1e-5)


def test_profile_scales_exactly_with_a_homogeneous_factor():
    net = plain_conv_stack(5, 6, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 6, 6, 6, generator=torch.Generator().manual_seed(1))
    p1 = signal_gradient_profile(net, x, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Conv2d):
                m.weight *= 2
    p2 = signal_gradient_profile(net, x, generator=torch.Generator().manual_seed(2))
    l = torch.arange(6, dtype=torch.float64)
    assert torch.allclose(p2["forward"], p1["forward"] * 2 ** l, rtol=1e-4)
    assert torch.allclose(p2["backward"], p1["backward"] * 2 ** l, rtol=1e-4)
    r1, r2 = decay_rate(p1, start=0), decay_rate(p2, start=0)
    assert r2["forward"] == pytest.approx(r1["forward"] - math.log(2), abs=1e-4)


def test_decay_rate_of_an_exact_exponential():
    l = torch.arange(20, dtype=torch.float64)
    prof = {"forward": torch.exp(-0.3 * l), "backward": 5 * torch.exp(0.1 * l)}
    r = decay_rate(prof, start=3)
    assert r["forward"] == pytest.approx(0.3) and r["backward"] == pytest.approx(-0.1)
    with pytest.raises(ValueError):
        decay_rate(prof, start=19)


def test_padding_factor():
    assert padding_factor(8, 8) == pytest.approx(((1 + 2 * math.cos(math.pi / 9)) / 3) ** 2)
    assert padding_factor(1000, 1000) == pytest.approx(1.0, abs=1e-4)
    assert padding_factor(3, 3, kernel=1) == 1.0
    # top eigenvalue of the tap-count operator, by brute force
    H = 6
    T = torch.eye(H, dtype=torch.float64) + torch.diag(torch.ones(H - 1, dtype=torch.float64), 1) \
        + torch.diag(torch.ones(H - 1, dtype=torch.float64), -1)
    assert float(torch.linalg.eigvalsh(T).max()) / 3 == pytest.approx(math.sqrt(padding_factor(H, H)))


def test_predicted_decay_rate_values():
    assert predicted_decay_rate(1.0, slope=0.1) == pytest.approx(0.5 * math.log(2 / 1.01))
    assert predicted_decay_rate(2 / 1.01, slope=0.1) == pytest.approx(0.0, abs=1e-12)  # Kaiming
    assert predicted_decay_rate(9 / 16, slope=0.1, sigma_ratio=1.5) == pytest.approx(
        predicted_decay_rate(9 / 16, slope=0.1) + math.log(1.5))
    assert predicted_decay_rate(1.0, slope=0.1, scale=3.0) == pytest.approx(predicted_decay_rate(1.0, slope=0.1) - math.log(3))


def test_measured_rate_of_a_lecun_stack_matches_the_prediction():
    rates = []
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        net = plain_conv_stack(30, 32, padding_mode="circular", generator=gen)
        x = torch.randn(2, 32, 8, 8, generator=gen)
        rates.append(decay_rate(signal_gradient_profile(net, x, generator=gen)))
    pred = predicted_decay_rate(1.0, slope=0.1)  # circular padding: lambda_pad = 1
    back = sum(r["backward"] for r in rates) / 3
    fwd = sum(r["forward"] for r in rates) / 3
    assert abs(back - pred) < 0.03
    assert -0.02 < fwd - pred < 0.07


def test_normalized_conv_stack_kinds_and_scale():
    net, x = normalized_conv_stack("sn", scale=1.5, depth=4, channels=8, size=6, batch=2, seed=3)
    assert not net.training and x.shape == (2, 8, 6, 6)
    for m in net:
        if isinstance(m, nn.Conv2d):
            assert float(torch.linalg.matrix_norm(m.weight.detach().double().flatten(1), 2)) == pytest.approx(1.5, rel=1e-3)
    raw, _ = normalized_conv_stack("none", scale=2.0, depth=4, channels=8, size=6, batch=2, seed=3)
    ref = plain_conv_stack(4, 8, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(raw[0].weight, 2 * ref[0].weight)
    bsn, _ = normalized_conv_stack("bsn", depth=2, channels=[4, 16, 4], size=6, seed=0)
    w = bsn[0].weight.detach().double()
    s1 = torch.linalg.matrix_norm(w.flatten(1), 2)
    s2 = torch.linalg.matrix_norm(w.transpose(0, 1).flatten(1), 2)
    assert float((s1 + s2) / 2) == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize("m, n", [(5, 0), (0, 5), (1, 1)])
def test_tracy_widom_prediction_rejects_degenerate_sizes(m, n):
    with pytest.raises(ValueError, match="tracy_widom_prediction needs"):
        tracy_widom_prediction(m, n)
