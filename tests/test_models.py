"""bssn_book.models: shapes, parameter counts, configuration errors, builders, normalization, benchmark contract."""
import math

import pytest
import torch
import torch.nn as nn

from bssn_book import models as M

torch.set_num_threads(1)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("res,ch", [(32, 3), (48, 3), (64, 1), (16, 3)])
def test_cnn_shapes(res, ch):
    torch.manual_seed(0)
    G = M.CNNGenerator(width=0.0625, resolution=res, channels=ch)
    D = M.CNNDiscriminator(in_channels=ch, width=0.0625, resolution=res)
    x = G(G.sample_z(3))
    assert x.shape == (3, ch, res, res) and x.abs().max() <= 1
    assert D(x).shape == (3, 1)
    assert G.z_dim == 128 and G.mg == res // 8


def test_cnn_topology_width1():
    with torch.device("meta"):
        D, G = M.CNNDiscriminator(), M.CNNGenerator()
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size[0], c.stride[0], c.out_channels, c.padding[0]) for c in convs] == [
        (3, 1, 64, 1), (4, 2, 64, 1), (3, 1, 128, 1), (4, 2, 128, 1), (3, 1, 256, 1), (4, 2, 256, 1), (3, 1, 512, 1)]
    assert D.fc.in_features == 512 * 4 * 4 and D.fc.out_features == 1
    slopes = {m.negative_slope for m in D.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.1}
    deconvs = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.kernel_size[0], c.stride[0], c.out_channels) for c in deconvs] == [
        (4, 2, 256), (4, 2, 128), (4, 2, 64), (3, 1, 3)]
    assert G.fc.in_features == 128 and G.fc.out_features == 4 * 4 * 512
    assert sum(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in G.modules()) == 4
    assert n_params(D) == 2935873  # sum (k^2 c_in + 1) c_out + 8192 + 1


@pytest.mark.parametrize("w", [0.125, 0.3, 2.0])
def test_width_rounding(w):
    with torch.device("meta"):
        D = M.CNNDiscriminator(width=w)
    outs = [m.out_channels for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert outs == [max(1, round(c * w)) for c in (64, 64, 128, 128, 256, 256, 512)]


def test_tiny_width_at_least_one():
    D = M.CNNDiscriminator(width=1e-4, resolution=8)
    assert all(m.out_channels == 1 for m in D.modules() if isinstance(m, nn.Conv2d))
    assert D(torch.randn(2, 3, 8, 8)).shape == (2, 1)


@pytest.mark.parametrize("make,arg", [
    (lambda: M.CNNGenerator(resolution=30), "resolution"),
    (lambda: M.CNNDiscriminator(resolution=0), "resolution"),
    (lambda: M.CNNDiscriminator(resolution=32.0), "resolution"),
    (lambda: M.CNNDiscriminator(width=0), "width"),
    (lambda: M.CNNGenerator(width=-0.5), "width"),
    (lambda: M.CNNGenerator(width=float("inf")), "width"),
    (lambda: M.CNNGenerator(channels=0), "channels"),
    (lambda: M.ResNetGenerator(resolution=64), "resolution"),
    (lambda: M.ResNetDiscriminator(resolution=48), "resolution"),
    (lambda: M.ResNetDiscriminator(width=0.0), "width"),
    (lambda: M.MLPGenerator(depth=0), "depth"),
    (lambda: M.build_discriminator("vgg"), "name"),
    (lambda: M.build_generator("vgg"), "name"),
])
def test_config_errors(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()


def test_wrong_input_shape_message():
    D = M.CNNDiscriminator(width=0.0625)
    with pytest.raises(ValueError, match="expected input"):
        D(torch.zeros(1, 3, 64, 64))


def test_paper_init():
    torch.manual_seed(0)
    G, D = M.CNNGenerator(width=0.5), M.CNNDiscriminator(width=0.5)
    assert abs(G.fc.weight.std().item() - 0.02) < 1e-3
    w = D.main[6].weight
    assert w.abs().max() <= 0.04 + 1e-6 and abs(w.std().item() - 0.02 * 0.88) < 2e-3
    assert all(float(m.bias.detach().abs().max()) == 0 for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    Dt = M.CNNDiscriminator(width=0.5, init="torch")
    assert Dt.main[6].weight.abs().max() <= 1 / math.sqrt(Dt.main[6].weight[0].numel()) + 1e-6
    with pytest.raises(ValueError, match="kind"):
        M.init_weights(D, "orthogonal")


@pytest.mark.parametrize("res,w", [(32, 0.125), (128, 0.03125)])
def test_resnet_shapes_backward(res, w):
    torch.manual_seed(0)
    G, D = M.ResNetGenerator(width=w, resolution=res), M.ResNetDiscriminator(width=w, resolution=res)
    x = G(G.sample_z(2))
    assert x.shape == (2, 3, res, res)
    y = D(x)
    assert y.shape == (2, 1)
    y.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in G.parameters())


def test_resnet_structure():
    with torch.device("meta"):
        D32, D128 = M.ResNetDiscriminator(resolution=32), M.ResNetDiscriminator(resolution=128)
        G128 = M.ResNetGenerator(resolution=128)
    assert len(D32.blocks) == 4 and D32.blocks[0].first and [b.down for b in D32.blocks] == [True, True, False, False]
    assert [b.conv2.out_channels for b in D128.blocks] == [64, 128, 256, 512, 1024, 1024]
    assert [b.down for b in D128.blocks] == [True] * 5 + [False]
    assert [b.conv2.out_channels for b in G128.blocks] == [1024, 512, 256, 128, 64]


def test_mlp_and_sample_z():
    G, D = M.build_generator("mlp", z_dim=4), M.build_discriminator("mlp")
    z = G.sample_z(7)
    assert z.shape == (7, 4) and G(z).shape == (7, 2) and D(G(z)).shape == (7, 1)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(G.sample_z(5, generator=g1), G.sample_z(5, generator=g2))
    assert G.sample_z(2, device="cpu").device.type == "cpu"
    Gc = M.build_generator("cnn", width=0.0625, z_dim=32)
    assert Gc.z_dim == 32 and Gc.sample_z(3).shape == (3, 32)


def test_builders_without_norm():
    D = M.build_discriminator("cnn", width=0.0625, resolution=48, in_channels=1)
    assert isinstance(D, M.CNNDiscriminator) and D.input_shape == (1, 48, 48)
    assert M.build_discriminator("cnn", norm="none", width=0.0625).fc.out_features == 1


def test_benchmark_contract():
    D = M.CNNDiscriminator(in_channels=3, width=0.25, resolution=32)
    loss = torch.relu(1 - D(torch.randn(4, 3, 32, 32))).mean()
    loss.backward()
    assert D.main[0].weight.grad is not None


# --- normalization through bssn_book.norms (written by the norms engineer) ---

def _norms():
    import bssn_book.norms as N  # a real import: these tests must run
    return N


@pytest.mark.parametrize("kind", ["sn", "ssn", "bsn", "bssn", "strict"])
@pytest.mark.parametrize("name,kw,x_shape", [
    ("cnn", dict(width=0.0625), (2, 3, 32, 32)),
    ("resnet", dict(width=0.0625), (2, 3, 32, 32)),
    ("mlp", dict(hidden=16), (2, 2)),
])
def test_build_discriminator_norms(kind, name, kw, x_shape):
    N = _norms()
    torch.manual_seed(0)
    D = M.build_discriminator(name, norm=kind, scale=1.3, **kw)
    layers = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(N.is_normalized(m) for m in layers)
    y = D(torch.randn(*x_shape))
    y.sum().backward()
    raw = [m.parametrizations.weight.original for m in layers]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in raw)
    assert len(N.sigmas(D)) == len(layers)


def test_sn_scale_normalizes_dense_layer():
    _norms()
    torch.manual_seed(0)
    D = M.build_discriminator("mlp", norm="ssn", scale=2.0, hidden=16, n_power_iterations=1)
    D.train()
    for _ in range(50):  # power iterations converge on a fixed weight
        D(torch.zeros(1, 2))
    for m in D.modules():
        if isinstance(m, nn.Linear):
            s = torch.linalg.matrix_norm(m.weight.detach(), ord=2)
            assert abs(s.item() - 2.0) < 1e-2


def test_benchmark_apply_norm_path():
    N = _norms()
    D = M.CNNDiscriminator(in_channels=3, width=0.0625, resolution=32)
    N.apply_norm(D, "strict", example_input=torch.zeros(1, 3, 32, 32))
    assert D(torch.zeros(2, 3, 32, 32)).shape == (2, 1)


@pytest.mark.parametrize("gamma,n_gammas", [("shared", 1), ("per_layer", 8)])
def test_build_discriminator_gamma(gamma, n_gammas):
    _norms()
    D = M.build_discriminator("cnn", norm="sn", gamma=gamma, width=0.0625)
    gammas = [p for n, p in D.named_parameters() if "gamma" in n]
    assert len(gammas) == n_gammas and all(p.requires_grad for p in gammas)
    D(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in gammas)


def test_strict_example_input_made_from_model_shape():
    N = _norms()
    D = M.build_discriminator("cnn", norm="strict", in_channels=1, resolution=48, width=0.0625)
    assert D(torch.randn(2, 1, 48, 48)).shape == (2, 1)
    s = N.sigmas(D)
    assert len(s) == 8 and all(all(math.isfinite(v) and v > 0 for v in d.values()) for d in s.values())
