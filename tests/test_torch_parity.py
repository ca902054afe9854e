"""PyTorch's own spectral-norm tests, ported to `apply_norm` (issue 13).

Sources, in pytorch/pytorch: `test/nn/test_parametrization.py` (`test_new_spectral_norm`, `_load_state_dict`, `_dim`,
`_forward`, `_value`, and the parametrization tests that apply: pickle, deepcopy) and the behavioural parts of the
old hook-based tests in `test/test_nn.py` (`test_spectral_norm`, `_load_state_dict`, `_dim`, `_forward`, `_pickle`).
They were read and rewritten here, not copied. Every test runs with kind "torch" (torch's own
`torch.nn.utils.parametrizations.spectral_norm`) as a control, so a failure of one of our kinds is ours, not the port's.
Where this library differs on purpose, the test asserts both behaviours (torch's and our refusal).
"""
import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from bssn_book.norms import apply_norm, remove_norm

torch.set_num_threads(1)
KINDS = ["torch", "sn", "bsn", "bssn"]   # bsn/bssn on a Linear are SN (one pair of vectors), on a conv their own


def normalize(m, kind, **kw):
    "torch's spectral_norm (the control) or apply_norm."
    return spectral_norm(m, **kw) if kind == "torch" else apply_norm(m, kind, **kw)


def the_norm(m, t="weight"):
    return m.parametrizations[t][0]


def vectors(m):
    "The power-iteration state (every buffer of the parametrization)."
    return {k: b.clone() for k, b in the_norm(m).named_buffers()}


def set_vectors(m, saved):
    with torch.no_grad():
        for k, b in the_norm(m).named_buffers():
            b.copy_(saved[k])


def remove(m):
    return parametrize.remove_parametrizations(m, "weight")


# test_new_spectral_norm, first part: where things live
@pytest.mark.parametrize("kind", KINDS)
def test_structure_and_removal(kind):
    m = normalize(nn.Linear(5, 7).double(), kind)
    plist, norm = m.parametrizations.weight, the_norm(m)
    assert "original" in plist._parameters                       # the raw weight is the trainable parameter
    assert all(n in norm._buffers for n, _ in norm.named_buffers())
    assert len(norm._buffers) >= 2                               # the vectors are buffers
    assert "weight" not in m._buffers and "weight" not in m._parameters   # weight is computed
    assert plist.original.size() == m.weight.size() and plist.original.stride() == m.weight.stride()
    remove(m)
    assert not hasattr(m, "parametrizations") and "weight" in m._parameters and type(m) is nn.Linear


# test_new_spectral_norm: "we can register spectral_norm multiple times on the same parameter" - torch can; this
# library refuses a second normalization on purpose (two divisions by sigma would be a bug in a GAN), by name.
@pytest.mark.parametrize("kind", KINDS)
def test_second_normalization(kind):
    m = normalize(nn.Linear(5, 7), kind)
    if kind == "torch":
        spectral_norm(m)
        assert len(m.parametrizations.weight) == 2
    else:
        with pytest.raises(ValueError, match="already normalized.*remove_norm"):
            apply_norm(m, kind)


# test_new_spectral_norm: spectral_norm(m, "bias") on a 1-D bias - torch divides a vector by its norm, this library
# refuses a 1-D tensor on purpose (naming it); a 2-D parameter other than `weight` works in both (name=).
@pytest.mark.parametrize("kind", KINDS)
def test_other_parameter_by_name(kind):
    m = nn.Linear(5, 7)
    if kind == "torch":
        spectral_norm(m, "bias")
        assert torch.allclose(torch.linalg.vector_norm(m.bias), torch.tensor(1.0))
    else:
        with pytest.raises(ValueError, match="1-D 'bias'"):
            apply_norm(m, kind, name="bias")
    torch.manual_seed(0)   # unseeded, close top singular values left the 15-step warm-up short 1 run in 7
    holder = nn.Module()
    holder.proj = nn.Parameter(torch.randn(6, 4))
    normalize(holder, kind, name="proj")
    for _ in range(30):    # training-mode accesses: more power iterations before eval
        holder.proj
    holder.eval()
    assert torch.allclose(torch.linalg.matrix_norm(holder.proj, 2), torch.tensor(1.0), atol=1e-4)


# test_new_spectral_norm: training behaviour, with the weight trainable or frozen
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("requires_grad", [True, False])
def test_training_moves_vectors_and_reaches_the_raw_weight(kind, requires_grad):
    torch.manual_seed(0)
    m = nn.Linear(3, 4)
    m.weight.requires_grad_(requires_grad)
    m = normalize(m, kind)
    x = torch.randn(2, 3)
    before = vectors(m)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    opt.zero_grad()
    m(x).sum().backward()
    opt.step()
    out = m(x)
    after = vectors(m)
    if requires_grad:
        assert all(not torch.equal(before[k], after[k]) for k in before)
        (g,) = torch.autograd.grad(out.sum(), m.parametrizations.weight.original)
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    else:
        assert not m.parametrizations.weight.original.requires_grad and not m.weight.requires_grad


def _double_pair(kind, make=lambda: nn.Linear(3, 4)):
    torch.manual_seed(0)
    return normalize(make().double(), kind)


# test_new_spectral_norm: backward through two forwards (real and fake batch), checked by finite differences
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layer", ["linear", "conv"])
def test_two_forwards_gradcheck(kind, layer):
    make = (lambda: nn.Linear(3, 4)) if layer == "linear" else (lambda: nn.Conv2d(2, 3, 3))
    m = _double_pair(kind, make)
    x = torch.randn(2, 3, dtype=torch.double) if layer == "linear" else torch.randn(2, 2, 5, 5, dtype=torch.double)
    saved = vectors(m)

    def fn(inp):
        set_vectors(m, saved)   # training mode moves the vectors: reset them for the finite differences
        return m(inp) + m(inp)

    fn(x.clone().requires_grad_()).sum().backward()
    assert torch.autograd.gradcheck(fn, (x.clone().requires_grad_(),), check_batched_grad=False)


# test_new_spectral_norm: removing in eval mode keeps the last output (after one and after three training forwards)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("steps", [1, 3])
def test_remove_in_eval_keeps_the_output(kind, steps):
    torch.manual_seed(0)
    m = normalize(nn.Linear(3, 4), kind)
    x = torch.randn(2, 3)
    for _ in range(steps):
        out = m(x).detach()
    m.eval()
    remove(m)
    assert torch.allclose(m(x), out, atol=1e-6)


# test_new_spectral_norm, "TEST EVAL BEHAVIOR": eval gives the last training output, repeats it, moves nothing
@pytest.mark.parametrize("kind", KINDS)
def test_eval_equals_last_training_forward(kind):
    torch.manual_seed(0)
    m = normalize(nn.Linear(3, 4), kind)
    x = torch.randn(2, 3)
    m(x)
    last = m(x).detach()
    saved = vectors(m)
    m.eval()
    out = m(x)
    assert torch.allclose(out, last, atol=1e-6) and torch.equal(out, m(x))
    assert all(torch.equal(saved[k], b) for k, b in vectors(m).items())


# test_new_spectral_norm: mixed train/eval forwards in one graph, then the gradient w.r.t. the raw weight in eval
# (gradcheck), and - issue 13, fix 1 - the second derivative w.r.t. the raw weight in eval (gradgradcheck)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layer", ["linear", "conv", "convT"])
def test_mixed_modes_and_eval_derivatives(kind, layer):
    make = {"linear": lambda: nn.Linear(3, 4), "conv": lambda: nn.Conv2d(2, 3, 3),
            "convT": lambda: nn.ConvTranspose2d(2, 3, 3)}[layer]
    m = _double_pair(kind, make)
    x = torch.randn(2, 3, dtype=torch.double) if layer == "linear" else torch.randn(2, 2, 4, 4, dtype=torch.double)
    saved = vectors(m)

    def mixed(inp):
        set_vectors(m, saved)
        outs = []
        for train in (True, False, True, False):
            m.train(train)
            outs.append(m(inp))
        return sum(outs)

    assert torch.autograd.gradcheck(mixed, (x.clone().requires_grad_(),))
    # an optimizer step first, so that the stored v is no longer W^T u / ||W^T u|| (where the old eval differed)
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    m(x).pow(2).sum().backward()
    opt.step()
    m.eval()
    norm = the_norm(m)
    w = m.parametrizations.weight.original.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(norm, (w,))
    assert torch.autograd.gradgradcheck(norm, (w,))


# issue 13, fix 1: after an optimizer step, with identical weights and vectors, eval outputs equal torch's
@pytest.mark.parametrize("kind", ["sn", "ssn"])
@pytest.mark.parametrize("layer", ["linear", "conv", "convT"])
def test_eval_output_equals_torch_after_a_step(kind, layer):
    make = {"linear": lambda: nn.Linear(6, 5), "conv": lambda: nn.Conv2d(3, 4, 3),
            "convT": lambda: nn.ConvTranspose2d(3, 4, 3)}[layer]
    torch.manual_seed(0)
    ref = spectral_norm(make().double())
    ours = apply_norm(make().double(), kind)   # scale 1: "ssn" with the default scale is "sn"
    x = torch.randn(2, 6, dtype=torch.double) if layer == "linear" else torch.randn(2, 3, 6, 6, dtype=torch.double)
    opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    ref(x).pow(2).sum().backward()
    opt.step()
    ours.load_state_dict(ref.state_dict())     # torch's checkpoint, vectors included (fix 2 for ConvTranspose)
    ref.eval(), ours.eval()
    assert torch.allclose(ours(x), ref(x), rtol=1e-12, atol=1e-12)


# test_new_spectral_norm_load_state_dict (and test_nn's test_spectral_norm_load_state_dict): keys, non-strict loading
# of partial state, re-wrapping, and the same outputs in eval/train/train/eval after loading
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("activate_times", [0, 3])
def test_load_state_dict(kind, activate_times):
    torch.manual_seed(0)
    x = torch.randn(2, 3)
    m = normalize(nn.Linear(3, 5), kind)
    for _ in range(activate_times):
        m(x)
    state = copy.deepcopy(m.state_dict())
    extra = set() if kind == "torch" else {"parametrizations.weight.0._extra_state"}   # our settings (fix 5)
    assert set(state) == {"parametrizations.weight.original", "bias", "parametrizations.weight.0._u",
                          "parametrizations.weight.0._v"} | extra
    partial = copy.deepcopy(state)
    partial["nonsense"] = "nonsense"
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "nonsense"'):
        m.load_state_dict(partial, strict=True)
    m.load_state_dict(partial, strict=False)
    for k in ["parametrizations.weight.original", "parametrizations.weight.0._u", "parametrizations.weight.0._v",
              *extra, "bias"]:
        del partial[k]
        m.load_state_dict(partial, strict=False)

    def outputs(m):
        with torch.no_grad():
            res = []
            for train in (False, True, True, False):
                m.train(train)
                res.append(m(x))
            return res

    m = normalize(remove(m), kind)   # re-wrapping does not matter
    m.load_state_dict(state)
    expected = outputs(m)
    m = normalize(remove(m), kind)
    m.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(expected, outputs(m)))


# test_new_spectral_norm_dim (and test_nn's test_spectral_norm_dim): a transposed convolution is reshaped with its
# output channels first; the vector over them has c_out entries
@pytest.mark.parametrize("kind", KINDS)
def test_transposed_convolution_dim(kind):
    m = normalize(nn.ConvTranspose2d(3, 4, (5, 6)), kind)
    m(torch.randn(2, 3, 10, 12))
    u = the_norm(m)._u1 if kind in ("bsn", "bssn") else the_norm(m)._u   # BSN's pair 1: dimension 1 first
    assert u.shape == m.parametrizations.weight.original[0, :, 0, 0].shape


# test_new_spectral_norm_forward (and test_nn's test_spectral_norm_forward): the output by hand, from the stored v
@pytest.mark.parametrize("kind", KINDS)
def test_forward_by_hand(kind):
    torch.manual_seed(0)
    x = torch.randn(3, 5)
    m = normalize(nn.Linear(5, 7), kind)
    w = m.parametrizations.weight.original.detach()
    v = the_norm(m)._v
    u = F.normalize(w @ v, dim=0, eps=1e-12)
    v = F.normalize(w.t() @ u, dim=0, eps=1e-12)
    expected = F.linear(x, w / torch.dot(u, w @ v), m.bias)
    assert torch.allclose(m(x), expected, atol=1e-6)


# test_new_spectral_norm_value: a diagonal weight is divided by its largest entry (real dtypes; torch also takes
# complex weights, this library refuses them on purpose: the paper's networks are real)
@pytest.mark.parametrize("kind", KINDS)
def test_value_on_a_diagonal_matrix(kind):
    torch.manual_seed(0)
    m = nn.Linear(2, 2)
    with torch.no_grad():
        m.weight = nn.Parameter(torch.diag(torch.diagonal(m.weight)))
    d = torch.diagonal(m.weight).detach().clone()
    normalize(m, kind)
    assert torch.allclose(m.weight.detach(), torch.diag(d / d.abs().max()), atol=1e-6)
    c = nn.Linear(2, 2, dtype=torch.cfloat)
    if kind == "torch":
        spectral_norm(c)
    else:
        with pytest.raises((TypeError, ValueError), match="complex|real"):
            apply_norm(c, kind)


# test_nn's test_spectral_norm_pickle / test_parametrization's pickle tests: a parametrized module is not picklable
# (torch says to save the state_dict); test_weight_norm_deepcopy's pattern: a deepcopy computes the same
@pytest.mark.parametrize("kind", KINDS)
def test_pickle_refused_deepcopy_works(kind):
    m = normalize(nn.Linear(5, 7), kind)
    with pytest.raises(RuntimeError, match="state_dict"):
        pickle.dumps(m)
    m2 = copy.deepcopy(m)
    x = torch.randn(3, 5)
    m.eval(), m2.eval()
    assert torch.equal(m(x), m2(x))


# the further torch behaviours the issue lists: parametrize.cached(), .double(), swapping module parameters on
# conversion, a module used twice in one graph, and an EMA by AveragedModel(use_buffers=True)
@pytest.mark.parametrize("kind", KINDS)
def test_cached_double_swap_and_ema(kind):
    torch.manual_seed(0)
    m = normalize(nn.Conv2d(2, 3, 3), kind)
    x = torch.randn(2, 2, 5, 5)
    with parametrize.cached():
        y = m(x) + m(x)           # one weight computation: one power-iteration step
    assert torch.isfinite(y).all()
    del y                         # a live graph would hold the parameters (torch's tests do the same before a swap)
    m.double()
    assert the_norm(m)._buffers and all(b.dtype == torch.double for b in the_norm(m).buffers())
    with torch.no_grad():
        assert m(x.double()).dtype == torch.double
    old = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        m.float()
        assert m(x).dtype == torch.float32
    finally:
        torch.__future__.set_swap_module_params_on_conversion(old)
    ema = torch.optim.swa_utils.AveragedModel(m, use_buffers=True)
    ema.update_parameters(m)
    ema.eval(), m.eval()
    assert torch.allclose(ema(x), m(x), atol=1e-6)


# the library's own removal works on torch's layers too (fix 6): the control's remove_norm is torch's
@pytest.mark.parametrize("kind", KINDS)
def test_remove_norm_leaves_a_plain_layer(kind):
    m = normalize(nn.Linear(3, 4), kind)
    m.eval()
    x = torch.randn(2, 3)
    out = m(x)
    remove_norm(m)
    assert type(m) is nn.Linear and torch.allclose(m(x), out, atol=1e-6)


# issue 13, fix 1: the warm-up ends as torch's does, with v = M^T u / ||M^T u|| for each reshape M, so that eval
# right after normalizing divides by u^T M v = ||M^T u||
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layer", ["linear", "conv", "convT"])
def test_warm_up_ends_with_v_from_u(kind, layer):
    make = {"linear": lambda: nn.Linear(6, 5), "conv": lambda: nn.Conv2d(3, 4, 3),
            "convT": lambda: nn.ConvTranspose2d(3, 4, 3)}[layer]
    torch.manual_seed(0)
    m = normalize(make().double(), kind)
    w, norm = m.parametrizations.weight.original.detach(), the_norm(m)
    out_first = w.transpose(0, 1) if layer == "convT" else w            # torch's reshape for SN_w
    if kind in ("bsn", "bssn") and layer != "linear":
        pairs = [(norm._u0, norm._v0, w.flatten(1)), (norm._u1, norm._v1, w.transpose(0, 1).flatten(1))]
    else:
        pairs = [(norm._u, norm._v, out_first.flatten(1))]
    for u, v, M in pairs:
        assert torch.allclose(v.reshape(-1), F.normalize(M.t() @ u, dim=0), atol=1e-12)


# issue 13 review: loading is one-way - our state_dict holds the settings (`_extra_state`), which torch's SN refuses;
# without them it loads into torch's SN for a Linear/Conv2d, and the two compute the same
@pytest.mark.parametrize("layer", ["linear", "conv"])
def test_our_state_dict_into_torch_after_dropping_the_settings(layer):
    make, x = {"linear": (lambda: nn.Linear(6, 5), torch.randn(2, 6)),
               "conv": (lambda: nn.Conv2d(3, 4, 3), torch.randn(2, 3, 6, 6))}[layer]
    torch.manual_seed(0)
    ours, ref = apply_norm(make(), "sn"), spectral_norm(make())
    ours(x)
    sd = ours.state_dict()
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*_extra_state"):
        ref.load_state_dict(sd)
    ref.load_state_dict({k: v for k, v in sd.items() if not k.endswith("_extra_state")})
    ours.eval(), ref.eval()
    assert torch.allclose(ref(x), ours(x), atol=1e-6)
