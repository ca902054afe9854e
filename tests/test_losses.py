"""bssn_book.losses: values, gradients, saturation, gradient penalty (double backward, normalized D)."""
import math

import pytest
import torch
import torch.nn as nn

from bssn_book import losses as L
from bssn_book.models import build_discriminator

torch.set_num_threads(1)


def test_hinge_zero_when_margins_hold():
    r, f = torch.tensor([1.0, 3.0]).requires_grad_(), torch.tensor([-1.0, -4.0]).requires_grad_()
    loss = L.d_loss("hinge", r, f)
    loss.backward()
    assert loss.item() == 0 and r.grad.abs().sum() == 0 and f.grad.abs().sum() == 0
    assert math.isclose(L.d_loss("hinge", torch.tensor([0.0]), torch.tensor([0.0])).item(), 2.0)


def test_shapes_n_by_1_and_flat_agree():
    torch.manual_seed(0)
    r, f = torch.randn(8, 1), torch.randn(8, 1)
    for k in L.LOSS_KINDS:
        assert torch.allclose(L.d_loss(k, r, f), L.d_loss(k, r.view(-1), f.view(-1)))
        assert torch.allclose(L.g_loss(k, f), L.g_loss(k, f.view(-1)))
        assert L.d_loss(k, r, f).dim() == 0


def test_ns_matches_bce_and_is_stable():
    torch.manual_seed(0)
    r, f = torch.randn(50), torch.randn(50)
    bce = nn.functional.binary_cross_entropy_with_logits
    ref = bce(r, torch.ones_like(r)) + bce(f, torch.zeros_like(f))
    assert torch.allclose(L.d_loss("ns", r, f), ref, atol=1e-6)
    assert torch.allclose(L.d_loss("minimax", r, f), ref, atol=1e-6)
    assert torch.allclose(L.g_loss("ns", f), bce(f, torch.ones_like(f)), atol=1e-6)
    extreme = torch.tensor([-500.0, 500.0])
    assert all(math.isfinite(L.d_loss(k, extreme, extreme).item()) for k in L.LOSS_KINDS)


def test_wgan():
    r, f = torch.tensor([2.0, 4.0]), torch.tensor([1.0, -1.0])
    assert L.d_loss("wgan", r, f).item() == pytest.approx(0.0 - 3.0)
    assert L.g_loss("wgan", f).item() == pytest.approx(0.0)
    assert L.g_loss("hinge", f).item() == pytest.approx(0.0)


def test_saturation():
    l = torch.tensor([-30.0]).requires_grad_()
    L.g_loss("minimax", l).backward()
    assert abs(l.grad.item()) < 1e-12
    l = torch.tensor([-30.0]).requires_grad_()
    L.g_loss("ns", l).backward()
    assert l.grad.item() == pytest.approx(-1.0)


@pytest.mark.parametrize("fn,args", [(L.d_loss, (torch.zeros(1), torch.zeros(1))), (L.g_loss, (torch.zeros(1),))])
def test_unknown_kind(fn, args):
    with pytest.raises(ValueError) as e:
        fn("lsgan", *args)
    assert all(k in str(e.value) for k in ("hinge", "ns", "wgan"))


def test_gp_linear_unit_norm_zero_and_gradient():
    torch.manual_seed(0)
    lin = nn.Linear(7, 1)
    with torch.no_grad():
        lin.weight.div_(lin.weight.norm())
    x, y = torch.randn(10, 7), torch.randn(10, 7)
    assert L.gradient_penalty(lin, x, y).item() < 1e-10
    with torch.no_grad():
        lin.weight.mul_(3.0)
    gp = L.gradient_penalty(lin, x, y)
    gp.backward()
    w = lin.weight.detach()
    assert gp.item() == pytest.approx(4.0, rel=1e-5)
    assert torch.allclose(lin.weight.grad, 2 * (w.norm() - 1) * w / w.norm(), atol=1e-5)
    assert L.gradient_penalty(lin, x, y, center=0.0).item() == pytest.approx(9.0, rel=1e-5)


def test_gp_images_seeded_and_shape_check():
    torch.manual_seed(0)
    D = build_discriminator("cnn", width=0.0625)
    real, fake = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32, requires_grad=True)
    a = L.gradient_penalty(D, real, fake, generator=torch.Generator().manual_seed(0))
    b = L.gradient_penalty(D, real, fake, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    a.backward()
    assert fake.grad is None  # fake is detached inside
    # every weight gets a penalty gradient (the last bias does not enter the input gradient)
    assert all(m.weight.grad is not None for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert D.fc.bias.grad is None
    with pytest.raises(ValueError, match="same shape"):
        L.gradient_penalty(D, real, fake[:2])


@pytest.mark.parametrize("kind", ["sn", "bssn"])
def test_gp_through_normalized_discriminator(kind):
    torch.manual_seed(0)
    D = build_discriminator("cnn", norm=kind, scale=1.0, width=0.0625)
    real, fake = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    gp = L.gradient_penalty(D, real, fake)
    gp.backward()
    raw = [m.parametrizations.weight.original for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in raw)
