"Monitors and SN training dynamics of chapter 6 (bssn_book.theory.dynamics)."
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from bssn_book.theory.dynamics import effective_weight, fan_in, fan_in_variance, grad_norms, raw_weight


def test_fan_in_of_layers():
    assert fan_in(nn.Linear(7, 3)) == 7
    assert fan_in(nn.Conv2d(6, 4, (3, 5), groups=2)) == 3 * 15
    assert fan_in(nn.ConvTranspose2d(4, 8, 4, stride=2)) == 4 * 16
    with pytest.raises(TypeError, match="ReLU"):
        fan_in(nn.ReLU())


def test_fan_in_variance_exact_on_constructed_weights():
    lin = nn.Linear(4, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1., -1., 1., -1.], [2., -2., 2., -2.]]))  # mean 0, E[w^2] = 2.5
    assert fan_in_variance(lin)[""] == pytest.approx(4 * 2.5)
    conv = nn.Conv2d(2, 3, 3)
    with torch.no_grad():
        conv.weight.fill_(0.5)
    assert fan_in_variance(conv)[""] == 0.0


def test_lecun_init_gives_one():
    torch.manual_seed(0)
    conv = nn.Conv2d(128, 64, 3)
    nn.init.normal_(conv.weight, std=1 / math.sqrt(128 * 9))
    assert fan_in_variance(conv)[""] == pytest.approx(1.0, abs=0.02)


def test_fan_in_variance_uses_effective_weight_and_does_not_update_power_iteration():
    torch.manual_seed(0)
    lin = spectral_norm(nn.Linear(30, 20))
    u = lin.parametrizations.weight[0]._u.clone()
    w_bar = lin.weight.detach().clone()  # train mode: one power-iteration step
    u = lin.parametrizations.weight[0]._u.clone()
    v = fan_in_variance(lin)[""]
    assert torch.equal(u, lin.parametrizations.weight[0]._u)  # the monitor changed no state
    assert lin.parametrizations.weight.training  # and left the mode as it was
    assert v == pytest.approx(30 * effective_weight(lin).double().var(correction=0).item())
    assert v == pytest.approx(30 * w_bar.double().var(correction=0).item(), rel=1e-3)


def test_grad_norms_match_manual_norms_raw_and_plain():
    torch.manual_seed(0)
    net = nn.Sequential(spectral_norm(nn.Conv2d(1, 3, 3)), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 1))
    assert grad_norms(net) == {}  # before backward: no gradients
    net(torch.randn(2, 1, 6, 6)).sum().backward()
    g = grad_norms(net)
    assert g["0"] == pytest.approx(net[0].parametrizations.weight.original.grad.norm().item())
    assert g["3"] == pytest.approx(net[3].weight.grad.norm().item())
    assert raw_weight(net[0]) is net[0].parametrizations.weight.original


def test_sn_gradient_orthogonal_and_sgd_norm_identity():
    torch.manual_seed(0)
    net = nn.Sequential(spectral_norm(nn.Linear(3, 16)), nn.Tanh(), spectral_norm(nn.Linear(16, 1))).double()
    raw = [m.parametrizations.weight.original for m in (net[0], net[2])]
    opt = torch.optim.SGD(raw, lr=0.7)
    x, y = torch.randn(32, 3, dtype=torch.float64), torch.randn(32, 1, dtype=torch.float64)
    for _ in range(20):
        opt.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        before = [w.detach().pow(2).sum().item() for w in raw]
        for w in raw:
            assert abs((w.grad * w).sum().item()) < 1e-12 * w.grad.norm().item() * w.norm().item() + 1e-15
        opt.step()
        for w, b in zip(raw, before):
            assert w.detach().pow(2).sum().item() == pytest.approx(b + 0.49 * w.grad.pow(2).sum().item(), rel=1e-13)


def test_bad_input():
    with pytest.raises(TypeError, match="Module"):
        grad_norms([nn.Linear(2, 2)])
    p = nn.Linear(2, 2)
    class Double(nn.Module):
        def forward(self, w): return 2 * w
    parametrize.register_parametrization(p, "weight", Double())
    assert fan_in_variance(p)[""] == pytest.approx(2 * 4 * p.parametrizations.weight.original.detach().double().var(correction=0).item())


def test_effective_weight_names_a_layer_without_weight():
    with pytest.raises(TypeError, match="ReLU has no weight tensor"):
        effective_weight(nn.ReLU())
