"""compute_metrics with a user's generator (issue 13, fix 7): the shape of one z, a sampling function, the mode G is
evaluated in and the modes it gets back."""
import pytest
import torch
import torch.nn as nn

pytest.importorskip("torch_fidelity")
from bssn_book import metrics as M  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def real():
    g = torch.Generator().manual_seed(0)
    return torch.rand(64, 1, 32, 32, generator=g) * 2 - 1


def dcgan_like_g():
    "DCGAN's pattern, small: z of shape (B, 8, 1, 1) -> 4x4 -> 32x32, BatchNorm in between."
    torch.manual_seed(0)
    return nn.Sequential(nn.ConvTranspose2d(8, 16, 4, 1, 0, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.ConvTranspose2d(16, 1, 4, 8, 0, output_padding=4, bias=False), nn.Tanh())


OPTS = dict(num_samples=32, kid=False, isc=False, batch_size=16)


@pytest.mark.parametrize("start", ["train", "eval", "mixed"])
@pytest.mark.parametrize("mode", ["eval", "train", None])
def test_modes_restored_as_found(real, start, mode):
    G = dcgan_like_g()
    G.train(start != "eval")
    if start == "mixed":
        G[1].eval()
    found = [m.training for m in G.modules()]
    seen = []
    hook = G[1].register_forward_pre_hook(lambda m, a: seen.append(m.training))
    M.compute_metrics(G, real, z_dim=(8, 1, 1), generator_mode=mode, **OPTS)
    hook.remove()
    assert [m.training for m in G.modules()] == found
    expected = found[2] if mode is None else mode == "train"   # the BatchNorm's own mode (G[1] is module 2)
    assert seen and all(s == expected for s in seen)


def test_mode_changes_the_numbers_and_the_default_is_eval(real):
    G = dcgan_like_g()
    with torch.no_grad():   # BatchNorm running statistics far from the batch's, so the two modes differ
        G[1].running_mean.fill_(0.5)
    a = M.compute_metrics(G, real, z_dim=(8, 1, 1), **OPTS)
    b = M.compute_metrics(G, real, z_dim=(8, 1, 1), generator_mode="eval", **OPTS)
    c = M.compute_metrics(G, real, z_dim=(8, 1, 1), generator_mode="train", **OPTS)
    assert a == b and a["fid"] != c["fid"]


def test_flat_z_gets_an_error_that_says_what_to_pass(real):
    with pytest.raises(ValueError, match=r"z of shape \(\d+, 8\).*z_dim=\(100, 1, 1\)"):
        M.compute_metrics(dcgan_like_g(), real, z_dim=8, **OPTS)


@pytest.mark.parametrize("bad", [0, (8, 0, 1), (8, 1.5), "8", (), True])
def test_bad_z_dim_named(real, bad):
    with pytest.raises(ValueError, match="z_dim must be"):
        M.compute_metrics(dcgan_like_g(), real, z_dim=bad, **OPTS)


def test_sampling_function_seeded_and_counted(real):
    G = dcgan_like_g().eval()
    calls = []

    def sample(n):
        calls.append(n)
        return G(torch.randn(n, 8, 1, 1))

    r1 = M.compute_metrics(sample, real, **OPTS)
    r2 = M.compute_metrics(sample, real, **OPTS)
    r3 = M.compute_metrics(sample, real, seed=1, **OPTS)
    assert r1 == r2 and r1["fid"] != r3["fid"] and r1["num_generated"] == 32
    assert max(calls) <= OPTS["batch_size"] and sum(calls[:2]) == 32
    with pytest.raises(ValueError, match=r"sample\(n\)'s output must be images"):
        M.compute_metrics(lambda n: torch.zeros(n, 32, 32), real, **OPTS)


def normalized_g():
    "dcgan_like_g with a spectrally normalized first layer: BatchNorm statistics and power-iteration vectors."
    from bssn_book.norms import apply_norm
    G = dcgan_like_g()
    apply_norm(G[0], "sn")
    return G


@pytest.mark.parametrize("start", ["train", "eval"])
@pytest.mark.parametrize("mode", ["eval", "train", None])
def test_state_dict_unchanged(real, start, mode):
    "Sampling in training mode moves BatchNorm's running statistics and the vectors; compute_metrics puts them back."
    G = normalized_g().train(start == "train")
    before = {k: v.clone() if torch.is_tensor(v) else v for k, v in G.state_dict().items()}
    M.compute_metrics(G, real, z_dim=(8, 1, 1), generator_mode=mode, **OPTS)
    after = G.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) if torch.is_tensor(v) else after[k] == v for k, v in before.items())


def test_a_failed_call_leaves_the_mode(real):
    G = normalized_g().train()
    with pytest.raises(ValueError, match="at least 4"):
        M.compute_metrics(G, real, z_dim=(8, 1, 1), generator_mode="eval", num_samples=2, kid=False, isc=False)
    assert all(m.training for m in G.modules())


def test_out_of_memory_is_not_wrapped(real):
    class OOM(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 1)

        def forward(self, z):
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(torch.OutOfMemoryError, match="simulated"):
        M.compute_metrics(OOM(), real, z_dim=8, **OPTS)


def test_sampling_function_forks_every_cuda_rng(real, monkeypatch):
    "fork_rng forks every CUDA device's RNG (devices=[] left CUDA's reseeded by the torch.manual_seed inside it)."
    seen = []
    real_fork = torch.random.fork_rng

    def spy(devices=None, *a, **k):
        seen.append(list(devices))
        return real_fork([], *a, **k)   # (this machine may have no CUDA device to fork)

    monkeypatch.setattr(torch.random, "fork_rng", spy)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    M.compute_metrics(lambda n: torch.rand(n, 1, 32, 32) * 2 - 1, real, **OPTS)
    assert seen == [[0, 1]]
