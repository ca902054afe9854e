"""Issue 13: `apply_norm` as a drop-in for torch's spectral_norm - torch checkpoints (fix 2), Embedding and `name=`
(fix 3), the warning for a normalization layer after a normalized one (fix 4), the settings in the repr and the
state_dict and strict's input size (fix 5), torch's layers in `sigmas`/`remove_norm` (fix 6), and CPU autocast."""
import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from bssn_book import norms
from bssn_book.models import CNNDiscriminator
from bssn_book.norms import apply_norm, is_normalized, remove_norm, sigmas
from bssn_book.spectral import conv_kwargs, conv_operator_norm

torch.set_num_threads(1)
LAYERS = {"linear": (lambda: nn.Linear(6, 5), (2, 6)), "conv": (lambda: nn.Conv2d(3, 4, 3), (2, 3, 6, 6)),
          "convT": (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2), (2, 3, 5, 5))}


def trained(m, x, steps=2):
    "A few optimizer steps in training mode, so the vectors and the weight have moved."
    opt = torch.optim.SGD(m.parameters(), lr=0.3)
    for _ in range(steps):
        opt.zero_grad()
        m(x).pow(2).mean().backward()
        opt.step()
    return m


# ---- fix 2: torch's checkpoints, both versions -------------------------------------------------------------------
def trained_torch_sn(layer, torch_sn):
    "An input and layer `layer` under torch's SN ('parametrized' or 'hook-based'), trained a few steps on it."
    make, shape = LAYERS[layer]
    torch.manual_seed(0)
    x = torch.randn(shape)
    ref = make()
    ref = spectral_norm(ref) if torch_sn == "parametrized" else torch.nn.utils.spectral_norm(ref)
    return x, trained(ref, x)


@pytest.mark.parametrize("layer", list(LAYERS))
@pytest.mark.parametrize("torch_sn", ["parametrized", "hook-based"])
def test_torch_checkpoint_loads_into_sn(layer, torch_sn):
    make, _ = LAYERS[layer]
    x, ref = trained_torch_sn(layer, torch_sn)
    ours = apply_norm(make(), "sn")
    ours.load_state_dict(ref.state_dict())
    ref.eval(), ours.eval()
    assert torch.allclose(ours(x), ref(x), atol=1e-6)
    assert sigmas(ours)[""]["sigma"] == pytest.approx(sigmas(ref)[""]["sigma"], rel=1e-6)


@pytest.mark.parametrize("kind", ["bsn", "bssn", "strict"])
@pytest.mark.parametrize("layer", ["conv", "convT"])
@pytest.mark.parametrize("torch_sn", ["parametrized", "hook-based"])
def test_torch_checkpoint_loads_into_the_other_kinds(kind, layer, torch_sn):
    "The raw weight loads; torch's vectors become BSN's pair for the same reshape, the rest is warmed up on that weight."
    make, shape = LAYERS[layer]
    x, ref = trained_torch_sn(layer, torch_sn)
    ours = apply_norm(make(), kind, **({"input_shape": shape[1:]} if kind == "strict" else {}))
    ours.load_state_dict(ref.state_dict())
    raw = ref.parametrizations.weight.original if torch_sn == "parametrized" else ref.weight_orig
    u = ref.parametrizations.weight[0]._u if torch_sn == "parametrized" else ref.weight_u
    norm = ours.parametrizations.weight[0]
    assert torch.equal(ours.parametrizations.weight.original, raw)
    if kind != "strict":
        mine = norm._u1 if layer == "convT" else norm._u0      # torch: dimension 1 first for ConvTranspose
        assert torch.equal(mine, u)
        other = norm._u0 if layer == "convT" else norm._u1
        assert torch.linalg.vector_norm(other) == pytest.approx(1.0, abs=1e-5)
    ours.eval()
    assert torch.isfinite(ours(x)).all()
    s = sigmas(ours)[""]["sigma"]
    if kind == "strict":   # the vector warmed up on the loaded weight: near that weight's operator norm, not above it
        exact = float(conv_operator_norm(raw.detach(), shape[1:], n_iter=500, **conv_kwargs(ours))[0])
        assert 0.9 * exact <= s <= exact * (1 + 1e-5)
    else:
        assert torch.isfinite(torch.tensor(s)) and s > 0


def test_a_torch_checkpoint_without_its_raw_weight_says_what_to_do():
    ref = spectral_norm(nn.Conv2d(3, 4, 3))
    partial = {k: v for k, v in ref.state_dict().items() if not k.endswith("original")}
    ours = apply_norm(nn.Conv2d(3, 4, 3), "bsn")
    with pytest.raises(RuntimeError, match="without its raw weight.*load the whole layer"):
        ours.load_state_dict(partial, strict=False)


# ---- fix 3: nn.Embedding and name= -------------------------------------------------------------------------------
class ProjectionDiscriminator(nn.Module):
    "An SNGAN-style projection head, written the way users write one: D(x, y) = psi(phi(x)) + <embed(y), phi(x)>."

    def __init__(self, n_classes=10, ch=16):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, ch, 3, padding=1), nn.LeakyReLU(0.1),
                                  nn.Conv2d(ch, ch, 4, stride=2, padding=1), nn.LeakyReLU(0.1))
        self.linear = nn.Linear(ch, 1)
        self.embed = nn.Embedding(n_classes, ch)

    def forward(self, x, y):
        h = self.body(x).sum(dim=(2, 3))
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)


def torch_sn_everywhere(model):
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            spectral_norm(m)
    return model


@pytest.mark.parametrize("kind", ["sn", "ssn", "bsn", "bssn", "strict"])
def test_projection_discriminator(kind):
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    scale = 1.3 if kind in ("ssn", "bssn") else 1.0
    opts = {"example_input": (x, y)} if kind == "strict" else {}
    D = apply_norm(ProjectionDiscriminator(), kind, scale=scale, **opts)
    assert is_normalized(D.embed) and set(sigmas(D)) == {"body.0", "body.2", "linear", "embed"}
    for _ in range(30):
        D(x, y)
    D.eval()
    assert float(torch.linalg.matrix_norm(D.embed.weight.detach(), 2)) == pytest.approx(scale, rel=1e-3)
    out = D(x, y)
    out.sum().backward()
    assert D.embed.parametrizations.weight.original.grad.abs().sum() > 0


def test_projection_discriminator_matches_torch():
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    ref = torch_sn_everywhere(ProjectionDiscriminator())
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        F.relu(1 - ref(x, y)).mean().backward()
        opt.step()
    ours = apply_norm(ProjectionDiscriminator(), "sn")
    ours.load_state_dict(ref.state_dict())
    ref.eval(), ours.eval()
    assert torch.allclose(ours(x, y), ref(x, y), atol=1e-5)
    ref.train(), ours.train()
    assert torch.allclose(ours(x, y), ref(x, y), atol=1e-5)   # one more power-iteration step each, the same


class Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Parameter(torch.randn(6, 4))
        self.kernel = nn.Parameter(torch.randn(4, 3, 3, 3))
        self.bias = nn.Parameter(torch.randn(4))


@pytest.mark.parametrize("kind", ["sn", "ssn", "bsn", "bssn"])
def test_name_on_a_matrix(kind):
    torch.manual_seed(0)   # a fixed weight: an unlucky draw (close top singular values) converges slowly
    h = apply_norm(Holder(), kind, name="proj", scale=0.9)
    for _ in range(30):
        h.proj
    h.eval()
    assert float(torch.linalg.matrix_norm(h.proj.detach(), 2)) == pytest.approx(0.9, rel=1e-3)
    assert set(sigmas(h)) == {"proj"} and is_normalized(h)
    remove_norm(h)
    assert not is_normalized(h) and isinstance(h.proj, nn.Parameter)


@pytest.mark.parametrize("name, kw, match", [
    ("kernel", dict(kind="bsn"), "input side"), ("kernel", dict(kind="strict"), "'strict'"),
    ("proj", dict(kind="sn", gamma="shared"), "gamma"), ("bias", dict(kind="sn"), "1-D 'bias'"),
    ("missing", dict(kind="sn"), "no parameter 'missing'"), ("kernel.x", dict(kind="sn"), "parameter name")])
def test_name_refusals_are_clear_and_change_nothing(name, kw, match):
    h = Holder()
    before = {k: v.clone() for k, v in h.state_dict().items()}
    with pytest.raises((ValueError, TypeError), match=match):
        apply_norm(h, name=name, **kw)
    assert not is_normalized(h) and all(torch.equal(v, h.state_dict()[k]) for k, v in before.items())


def test_name_kernel_with_sn_matches_torch():
    torch.manual_seed(0)
    h, ref = Holder(), None
    ref = copy.deepcopy(h)
    spectral_norm(ref, "kernel")
    apply_norm(h, "sn", name="kernel")
    h.load_state_dict(ref.state_dict())
    h.eval(), ref.eval()
    assert torch.allclose(h.kernel, ref.kernel, atol=1e-6)


# ---- fix 4: a BatchNorm (or GroupNorm/LayerNorm/InstanceNorm) after a normalized layer ----------------------------
def dcgan_d(norm_layer=nn.BatchNorm2d):
    "pytorch/examples' DCGAN discriminator pattern, at 16x16: conv, LeakyReLU, (conv, norm, LeakyReLU) x2, conv."
    return nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
                         nn.Conv2d(8, 16, 4, 2, 1, bias=False), norm_layer(16), nn.LeakyReLU(0.2),
                         nn.Conv2d(16, 32, 4, 2, 1, bias=False), norm_layer(32), nn.LeakyReLU(0.2),
                         nn.Conv2d(32, 1, 2, 1, 0, bias=False), nn.Flatten())


@pytest.mark.parametrize("norm_layer", [nn.BatchNorm2d, lambda c: nn.GroupNorm(4, c), nn.InstanceNorm2d])
def test_warning_names_the_layers_whose_scale_is_cancelled(norm_layer):
    torch.manual_seed(0)
    D = dcgan_d(norm_layer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_norm(D, "bssn", scale=1.2)
    mine = [w for w in caught if "divides their scale out" in str(w.message)]
    assert len(mine) == 1                                       # once, for all the layers
    msg = str(mine[0].message)
    # the first conv has no bias: its scale passes the LeakyReLU and the bias-free second conv to the norm layer
    assert "'0' -> '3'" in msg and "'2' -> '3'" in msg and "'5' -> '6'" in msg and "'8'" not in msg
    # and it is true: the scale, and so the divisor, of each such layer does not reach the output
    x = torch.randn(8, 3, 16, 16)
    D.eval() if norm_layer is not nn.BatchNorm2d else D.train()
    for i in (0, 2, 5):
        with torch.no_grad():
            y0 = D(x)
            D[i].parametrizations.weight[0].scale *= 100.0
            y1 = D(x)
            D[i].parametrizations.weight[0].scale /= 100.0
        assert torch.allclose(y0, y1, rtol=1e-2, atol=1e-4), i      # x100 on the layer, < 1% on the output (BN's eps)
    with torch.no_grad():                                           # where nothing divides the scale out, it acts
        y0 = D(x)
        D[8].parametrizations.weight[0].scale *= 100.0
        y1 = D(x)
    assert torch.allclose(y1, 100 * y0, rtol=1e-2, atol=1e-4)


def test_no_warning_where_a_bias_stops_the_scale():
    "A bias between the normalized layer and the norm layer: f(a x) != a f(x), the layer's scale acts."
    D = nn.Sequential(nn.Conv2d(3, 8, 3, bias=True), nn.LeakyReLU(0.2), nn.Conv2d(8, 8, 3, bias=False),
                      nn.BatchNorm2d(8))   # conv '2' has no bias: only '0''s own bias stops its scale
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_norm(D, "sn")                     # the whole Sequential: the check sees the chain
    mine = [str(w.message) for w in caught if "divides their scale out" in str(w.message)]
    assert len(mine) == 1
    assert "'2' -> '3'" in mine[0] and "'0'" not in mine[0]   # conv '2' is directly before the BatchNorm; '0''s bias stops it


def test_warning_through_a_relu_and_not_for_the_papers_discriminator():
    D = nn.Sequential(nn.Linear(4, 8, bias=False), nn.ReLU(), nn.LayerNorm(8), nn.Linear(8, 1))
    with pytest.warns(UserWarning, match=r"'0' -> '2' \(LayerNorm\)"):
        apply_norm(D, "sn")
    D = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.LayerNorm(8), nn.Linear(8, 1))   # a bias: ReLU(a z + b) != a ReLU(z + b/a)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply_norm(D, "sn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply_norm(CNNDiscriminator(width=0.25, resolution=16), "bssn", scale=1.2)   # no normalization layers


# ---- fix 5: the settings in the repr and in the state_dict; strict's input size -----------------------------------
def test_settings_in_repr_and_state_dict():
    D = apply_norm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 1)), "strict",
                   scale=1.2, n_power_iterations=2, example_input=torch.zeros(1, 3, 8, 8))
    r = repr(D)
    assert "kind='strict', scale=1.2, n_power_iterations=2, input_shape=(3, 8, 8)" in r
    assert D.state_dict()["0.parametrizations.weight.0._extra_state"] == dict(
        kind="strict", scale=1.2, n_power_iterations=2, input_shape=(3, 8, 8))


@pytest.mark.parametrize("saved, loaded", [
    (dict(kind="bssn", scale=1.2), dict(kind="bssn", scale=2.0)),
    (dict(kind="sn"), dict(kind="bsn")),
    (dict(kind="sn", n_power_iterations=1), dict(kind="sn", n_power_iterations=3)),
    (dict(kind="strict", example_input=torch.zeros(1, 3, 8, 8)), dict(kind="strict", example_input=torch.zeros(1, 3, 16, 16)))])
def test_other_settings_refused_on_load_naming_both(saved, loaded):
    make = lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.LeakyReLU(0.1), nn.Conv2d(4, 1, 3))
    a, b = apply_norm(make(), **saved), apply_norm(make(), **loaded)
    with pytest.raises(RuntimeError) as err:
        b.load_state_dict(a.state_dict())
    msg = str(err.value)
    sa, sb = a[0].parametrizations.weight[0].settings(), b[0].parametrizations.weight[0].settings()
    assert "'0.parametrizations.weight.0'" in msg and str(sa) in msg and str(sb) in msg


@pytest.mark.parametrize("strict", [True, False])
def test_a_refused_checkpoint_loads_nothing(strict):
    "The settings are checked before the first tensor is copied (torch's load_state_dict copies, then reports)."
    make = lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.LeakyReLU(0.1), nn.Conv2d(4, 1, 3))
    torch.manual_seed(0)
    a = apply_norm(make(), "bssn", scale=1.2)
    b = apply_norm(make(), "bssn", scale=2.0)
    before = {k: v.clone() for k, v in b.state_dict().items() if torch.is_tensor(v)}
    with pytest.raises(RuntimeError, match="nothing was loaded"):
        b.load_state_dict(a.state_dict(), strict=strict)
    after = b.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_same_settings_load_and_checkpoints_without_settings_still_load():
    torch.manual_seed(0)   # (an unseeded draw once put an output near 0, where a relative tolerance alone fails)
    make = lambda: nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.LeakyReLU(0.1), nn.Conv2d(4, 1, 3, bias=False))
    a, b = apply_norm(make(), "ssn", scale=1.2), apply_norm(make(), "sn", scale=1.2)   # 'ssn' is 'sn' with a scale
    b.load_state_dict(a.state_dict())
    old = {k: v for k, v in a.state_dict().items() if not k.endswith("_extra_state")}   # before fix 5, or torch's
    c = apply_norm(make(), "ssn", scale=2.0)
    c.load_state_dict(old)
    x = torch.randn(2, 3, 8, 8)
    a.eval(), c.eval()
    assert torch.allclose(c(x), a(x) * (2.0 / 1.2) ** 2, rtol=1e-5, atol=1e-5)   # two layers, each scaled by 2.0 not 1.2
    dense_sn = apply_norm(nn.Linear(3, 2), "sn")                      # on a matrix every kind is SN_w
    apply_norm(nn.Linear(3, 2), "bsn").load_state_dict(dense_sn.state_dict())


def test_strict_refuses_another_input_size():
    D = apply_norm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.LeakyReLU(0.1), nn.Conv2d(4, 1, 3)), "strict",
                   example_input=torch.zeros(1, 3, 8, 8))
    D(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(3, 8, 8\).*got \(3, 16, 16\)"):
        D(torch.randn(2, 3, 16, 16))
    remove_norm(D)
    assert D(torch.randn(2, 3, 16, 16)).shape == (2, 1, 12, 12)   # the check leaves with the normalization


# ---- fix 6: torch's spectral_norm in sigmas and remove_norm -------------------------------------------------------
@pytest.mark.parametrize("torch_sn", ["parametrized", "hook-based"])
@pytest.mark.parametrize("leave", [True, False])
def test_sigmas_and_remove_norm_on_torch_layers(torch_sn, leave):
    torch.manual_seed(0)
    sn = spectral_norm if torch_sn == "parametrized" else torch.nn.utils.spectral_norm
    D = nn.Sequential(sn(nn.Conv2d(3, 4, 3)), nn.LeakyReLU(0.1), sn(nn.ConvTranspose2d(4, 2, 3)))
    x = torch.randn(2, 3, 6, 6)
    trained(D, x)
    D.eval()
    D(x)   # the hook-based version computes its weight attribute in a forward pass
    s = sigmas(D)
    assert set(s) == {"0", "2"}
    for i in (0, 2):   # the divisor torch uses in eval: W_sn = W / sigma
        raw = D[i].parametrizations.weight.original if torch_sn == "parametrized" else D[i].weight_orig
        assert torch.allclose(D[i].weight, raw / s[str(i)]["sigma"], atol=1e-6)
        raw = raw.detach().clone()
    y = D(x)
    remove_norm(D, leave_parametrized=leave)
    assert sigmas(D) == {} and all(type(m) in (nn.Conv2d, nn.LeakyReLU, nn.ConvTranspose2d) for m in D)
    assert not hasattr(D[0], "weight_orig") and isinstance(D[2].weight, nn.Parameter)
    if leave:
        assert torch.allclose(D(x), y, atol=1e-6)
    else:
        assert torch.equal(D[2].weight, raw)


# ---- CPU autocast (bfloat16): a training step --------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sn", "bssn", "strict"])
@pytest.mark.parametrize("fused", [False, True])
def test_training_step_under_cpu_bf16_autocast(kind, fused, monkeypatch):
    if fused:   # the fused backwards of large weights, on this small model
        monkeypatch.setattr(norms, "FUSED_BACKWARD_MIN_NUMEL", 1)
    torch.manual_seed(0)
    opts = {"example_input": torch.zeros(1, 3, 16, 16)} if kind == "strict" else {}
    D = apply_norm(CNNDiscriminator(width=0.25, resolution=16), kind, scale=1.2, **opts)
    ref = copy.deepcopy(D)
    real, fake = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.relu(1 - D(real)).mean() + F.relu(1 + D(fake)).mean()
    assert loss.dtype == torch.float32 or loss.dtype == torch.bfloat16
    loss.float().backward()
    ref_loss = F.relu(1 - ref(real)).mean() + F.relu(1 + ref(fake)).mean()
    ref_loss.backward()
    for (n, p), q in zip(D.named_parameters(), ref.parameters()):
        assert p.dtype == torch.float32 and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), n
    for a, b in zip(D.buffers(), ref.buffers()):   # the power iteration ran in float32, as without autocast
        assert a.dtype == torch.float32 and torch.allclose(a, b, atol=1e-5)
    assert float(loss) == pytest.approx(float(ref_loss), abs=0.05)   # bfloat16 convolutions: close, not equal


def test_strict_settings_through_json_still_load():
    "A checkpoint whose settings went through JSON (input_shape a list, not a tuple) loads into the same model."
    import json
    make = lambda: apply_norm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.LeakyReLU(0.1), nn.Conv2d(4, 1, 3)), "strict",
                              example_input=torch.zeros(1, 3, 8, 8))
    torch.manual_seed(0)
    a, b = make(), make()
    sd = a.state_dict()
    for k in [k for k in sd if k.endswith("_extra_state")]:
        sd[k] = json.loads(json.dumps(sd[k]))
        assert isinstance(sd[k]["input_shape"], list)
    b.load_state_dict(sd)
    assert all(torch.equal(b.state_dict()[k], v) for k, v in a.state_dict().items() if torch.is_tensor(v))
    sd["0.parametrizations.weight.0._extra_state"]["input_shape"] = [3, 16, 16]   # another size is still refused
    with pytest.raises(RuntimeError, match="nothing was loaded"):
        make().load_state_dict(sd)
