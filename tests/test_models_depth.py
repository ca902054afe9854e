"""CNNDiscriminator(depth=...): 4r + 4 weight layers, each stride-1 3x3 convolution r times (issue 20,
item 5: the mechanism experiment at D depth 8 and 16). Depth 8 is the paper's network, bitwise."""

import pytest
import torch
from torch import nn

from bssn_book.models import CNNDiscriminator, build_discriminator
from bssn_book.norms import is_normalized, sigmas

PAPER = [(3, 1, 64), (4, 2, 64), (3, 1, 128), (4, 2, 128), (3, 1, 256), (4, 2, 256), (3, 1, 512)]


def convs(D):
    return [m for m in D.main if isinstance(m, nn.Conv2d)]


def expected(depth, width=1.0):
    "(k, s, c_in, c_out) of each convolution, written out from the rule."
    r = (depth - 4) // 4
    rows, c_in = [], 3
    for k, s, c in PAPER:
        c = max(1, round(c * width))
        for _ in range(r if s == 1 else 1):
            rows.append((k, s, c_in, c))
            c_in = c
    return rows


@pytest.mark.parametrize("depth", [8, 12, 16, 20])
def test_layer_count_and_shapes(depth):
    with torch.device("meta"):
        D = CNNDiscriminator(width=0.5, depth=depth)
    cs = convs(D)
    assert len(cs) + 1 == depth and D.depth == depth
    assert sum(isinstance(m, nn.LeakyReLU) for m in D.main) == len(cs)   # one after every conv
    got = [(m.kernel_size[0], m.stride[0], m.in_channels, m.out_channels) for m in cs]
    assert got == expected(depth, 0.5)
    assert all(m.padding == (1, 1) for m in cs)
    assert D.fc.in_features == 256 * 4 * 4   # 512 * width channels, 32 / 8 = 4 pixels a side


def test_depth_16_repeats_each_3x3_conv_three_times():
    with torch.device("meta"):
        D = CNNDiscriminator(depth=16)
    kinds = ["3" if m.kernel_size[0] == 3 else "4" for m in convs(D)]
    assert "".join(kinds) == "333" + "4" + "333" + "4" + "333" + "4" + "333"
    assert [m.out_channels for m in convs(D)] == [64] * 4 + [128] * 4 + [256] * 4 + [512] * 3


@pytest.mark.parametrize("depth", [8, 16])
def test_forward_shape_and_normalization(depth):
    torch.manual_seed(0)
    D = build_discriminator("cnn", norm="bssn", scale=1.2, width=0.125, resolution=16, depth=depth)
    y = D(torch.randn(3, 3, 16, 16))
    assert y.shape == (3, 1)
    layers = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == depth and all(map(is_normalized, layers)) and len(sigmas(D)) == depth


def test_default_is_bitwise_the_paper_network_and_its_draws():
    torch.manual_seed(1)
    a = CNNDiscriminator(width=0.25, resolution=16)
    after_a = torch.rand(4)   # the global generator after construction: the same number of draws
    torch.manual_seed(1)
    b = CNNDiscriminator(width=0.25, resolution=16, depth=8)
    after_b = torch.rand(4)
    assert torch.equal(after_a, after_b)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [(m.kernel_size[0], m.stride[0], m.out_channels) for m in convs(a)] == [
        (k, s, round(c * 0.25)) for k, s, c in PAPER]
    assert repr(a) == repr(b)
    # and through build_discriminator, normalized (vectors drawn after the weights)
    torch.manual_seed(2)
    na = build_discriminator("cnn", norm="sn", width=0.25, resolution=16)
    torch.manual_seed(2)
    nb = build_discriminator("cnn", norm="sn", width=0.25, resolution=16, depth=8)
    sa, sb = na.state_dict(), nb.state_dict()
    assert all(torch.equal(sa[k], sb[k]) if torch.is_tensor(sa[k]) else sa[k] == sb[k] for k in sa)


@pytest.mark.parametrize("bad", [0, 4, 7, 9, 10, 14, -8, 8.0, "8", True, None])
def test_bad_depths_are_refused_naming_the_allowed_values(bad):
    with pytest.raises(ValueError, match=r"depth must be one of 8, 12, 16"):
        CNNDiscriminator(depth=bad)
    with pytest.raises(ValueError, match=r"CNNDiscriminator: depth"):
        build_discriminator("cnn", norm="sn", depth=bad)


def test_build_discriminator_passes_the_official_options():
    torch.manual_seed(3)
    D = build_discriminator("cnn", norm="bsn", width=0.125, resolution=16,
                            grad_through_power_iteration=True, warmup=False)
    norm = D.main[0].parametrizations.weight[0]
    assert norm.grad_through_power_iteration and not norm.warmup
    torch.manual_seed(3)
    plain = build_discriminator("cnn", norm="bsn", width=0.125, resolution=16)
    assert "warmup" not in plain.main[0].parametrizations.weight[0].settings()
