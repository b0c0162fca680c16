"""Input-unit gradients: closed-form networks, a naive per-unit loop, variability formulas."""

import math

import pytest
import torch
from torch import nn

from selectivity.analysis.gradients import gradient_variability, input_unit_gradients

NAN = float("nan")


def linear_net(weight, bias=None, relu=False):
    u, d = weight.shape
    lin = nn.Linear(d, u, bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    layers = [nn.Flatten(), lin] + ([nn.ReLU()] if relu else []) + [nn.Linear(u, 2)]
    return nn.Sequential(*layers)


# ------------------------------------------------------------------ closed form
def test_linear_layer_gradients_are_weight_rows():
    w = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]])
    net = linear_net(w)
    x = torch.randn(5, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    g = input_unit_gradients(net, "1", x, unit_chunk=2)
    assert g.shape == (5, 3, 1, 2, 2)
    torch.testing.assert_close(g, w.view(1, 3, 1, 2, 2).expand(5, 3, 1, 2, 2))

    v = gradient_variability(net, "1", x, unit_chunk=2)
    # the same gradient for every image: no variability across samples
    torch.testing.assert_close(v.across_samples, torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(v.norm_cv_samples, torch.zeros(3, dtype=torch.float64), atol=1e-7, rtol=0)
    # across units: cosines 0, 1/sqrt2, 1/sqrt2; norms 1, 1, sqrt2
    across = 1 - (2 / math.sqrt(2)) / 3
    m = (2 + math.sqrt(2)) / 3
    cv = math.sqrt(4 / 3 - m * m) / m
    torch.testing.assert_close(v.across_units, torch.full((5,), across, dtype=torch.float64))
    torch.testing.assert_close(v.norm_cv_units, torch.full((5,), cv, dtype=torch.float64))
    assert v.zero_gradients.tolist() == [0, 0, 0]
    assert v.summary()["across_units"] == pytest.approx(across)
    # element-wise variance: none across images; across units the rows (1,0,0,0), (0,1,0,0),
    # (1,1,0,0) vary in pixels 0 and 1 by 2/9 each -> (2/9 + 2/9) / 4 pixels = 1/9
    torch.testing.assert_close(v.variance_samples, torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(v.variance_units, torch.full((5,), 1 / 9, dtype=torch.float64))
    assert v.zero_units.tolist() == [0] * 5
    torch.testing.assert_close(v.norm_cv_units_nonzero, v.norm_cv_units)  # no zero gradient at all
    assert v.summary()["zero_fraction"] == 0.0


def test_relu_gating_switches_gradients_off():
    net = linear_net(torch.eye(2), bias=torch.zeros(2), relu=True)
    x = torch.tensor([[1.0, 1], [1, -1], [-1, 1], [2, 3], [-1, -1]])
    g = input_unit_gradients(net, "2", x)
    on = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1], [0, 0]], dtype=torch.float32)  # (N, U)
    torch.testing.assert_close(g, on.unsqueeze(2) * torch.eye(2).unsqueeze(0))
    v = gradient_variability(net, net[2], x)
    # each unit: 3 identical non-zero gradients out of 5 -> cosine variability 0;
    # norms 1,1,0,1,0 -> CV = sqrt(p (1 - p)) / p with p = 3/5
    torch.testing.assert_close(v.across_samples, torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
    assert v.zero_gradients.tolist() == [2, 2]
    cv = math.sqrt(0.6 * 0.4) / 0.6
    torch.testing.assert_close(v.norm_cv_samples, torch.tensor([cv, cv], dtype=torch.float64))
    # per image: orthogonal gradients -> 1; a single or no live unit -> NaN
    torch.testing.assert_close(
        v.across_units, torch.tensor([1.0, NAN, NAN, 1.0, NAN], dtype=torch.float64), equal_nan=True
    )
    torch.testing.assert_close(
        v.norm_cv_units, torch.tensor([0.0, 1.0, 1.0, 0.0, NAN], dtype=torch.float64), equal_nan=True
    )
    # inactive units per image, and the CVs without them: the live norms are all 1
    assert v.zero_units.tolist() == [0, 1, 1, 0, 2]
    torch.testing.assert_close(v.norm_cv_samples_nonzero, torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(
        v.norm_cv_units_nonzero, torch.tensor([0.0, NAN, NAN, 0.0, NAN], dtype=torch.float64), equal_nan=True
    )
    # element-wise variance across images, unit 0: pixel 0 is 1,1,0,1,0 (variance .6 * .4),
    # pixel 1 is always 0 -> .24 / 2 pixels; across units, image 0: e0 and e1 -> (.25 + .25) / 2,
    # images 1 and 2: one live unit -> .25 / 2, image 4: nothing live -> 0
    torch.testing.assert_close(v.variance_samples, torch.tensor([0.12, 0.12], dtype=torch.float64))
    torch.testing.assert_close(
        v.variance_units, torch.tensor([0.25, 0.125, 0.125, 0.25, 0.0], dtype=torch.float64)
    )
    summary = v.summary()
    assert summary["zero_fraction"] == pytest.approx(4 / 10)
    assert summary["norm_cv_units_nonzero"] == pytest.approx(0.0)  # NaNs skipped
    assert summary["variance_units"] == pytest.approx(0.75 / 5)


def test_gradients_through_normalisation_are_in_pixel_space():
    w = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    net = linear_net(w)
    std = (0.5, 0.25, 2.0)
    x = torch.rand(6, 3, 1, 1)
    g = input_unit_gradients(net, "1", x, mean=(0.1, 0.2, 0.3), std=std)
    expected = (w / torch.tensor(std)).view(1, 4, 3, 1, 1).expand(6, 4, 3, 1, 1)
    torch.testing.assert_close(g, expected)


# ------------------------------------------------------------------ naive reference
def conv_net():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 5, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    )
    with torch.no_grad():
        net.train()
        for _ in range(3):
            net(torch.rand(16, 3, 6, 6))
    return net


def naive_gradients(net, layer, x, mean, std):
    """One forward and one backward per image and per unit."""
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    out = torch.zeros(x.shape[0], 5, *x.shape[1:])
    net.eval()
    for n in range(x.shape[0]):
        for j in range(5):
            xi = x[n : n + 1].clone().requires_grad_(True)
            acts: dict = {}
            h = layer.register_forward_hook(lambda _m, _i, o, acts=acts: acts.setdefault("a", o))
            net((xi - m) / s)
            h.remove()
            (g,) = torch.autograd.grad(acts["a"][0, j].mean(), xi)
            out[n, j] = g[0]
    return out


def pairwise_variability(vectors):
    """1 - mean off-diagonal cosine over the non-zero vectors of (M, D), explicitly."""
    norms = vectors.norm(dim=1)
    v = vectors[norms > 0]
    if v.shape[0] < 2:
        return NAN
    u = v / v.norm(dim=1, keepdim=True)
    cos = u @ u.T
    k = v.shape[0]
    return 1 - float((cos.sum() - cos.diagonal().sum()) / (k * (k - 1)))


def population_cv(values):
    m = values.mean()
    return float(values.std(unbiased=False) / m) if m > 0 else NAN


def test_batched_gradients_equal_naive_loop_and_variability_formulas():
    net = conv_net()
    net.train()  # the function must switch to eval and back
    x = torch.rand(7, 3, 6, 6, generator=torch.Generator().manual_seed(3))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.3, 0.25)
    ref = naive_gradients(net, net[4], x, mean, std).double()
    net.train()
    g = input_unit_gradients(net, "4", x, mean=mean, std=std, unit_chunk=3)
    torch.testing.assert_close(g.double(), ref, rtol=1e-5, atol=1e-7)
    g1 = input_unit_gradients(net, "4", x, mean=mean, std=std)  # default: one backward per unit
    torch.testing.assert_close(g1.double(), ref, rtol=1e-5, atol=1e-7)
    assert net.training and all(p.grad is None and p.requires_grad for p in net.parameters())

    # streaming over uneven batches and unit chunks equals the explicit pairwise formulas
    v = gradient_variability(net, "4", [x[:3], x[3:]], mean=mean, std=std, unit_chunk=2)
    flat = ref.flatten(2)  # (N, U, D)
    exp_samples = [pairwise_variability(flat[:, j]) for j in range(5)]
    exp_units = [pairwise_variability(flat[n]) for n in range(7)]
    exp_cv_s = [population_cv(flat[:, j].norm(dim=1)) for j in range(5)]
    exp_cv_u = [population_cv(flat[n].norm(dim=1)) for n in range(7)]
    kw = {"rtol": 1e-5, "atol": 1e-7, "equal_nan": True}
    torch.testing.assert_close(v.across_samples, torch.tensor(exp_samples, dtype=torch.float64), **kw)
    torch.testing.assert_close(v.across_units, torch.tensor(exp_units, dtype=torch.float64), **kw)
    torch.testing.assert_close(v.norm_cv_samples, torch.tensor(exp_cv_s, dtype=torch.float64), **kw)
    torch.testing.assert_close(v.norm_cv_units, torch.tensor(exp_cv_u, dtype=torch.float64), **kw)
    assert v.zero_gradients.tolist() == [int((flat[:, j].norm(dim=1) == 0).sum()) for j in range(5)]
    assert torch.isfinite(v.across_samples).all() and (v.across_samples > 0).all()  # not trivially 0
    # the new measures against their explicit definitions
    exp_var_s = [float(flat[:, j].var(dim=0, unbiased=False).mean()) for j in range(5)]
    exp_var_u = [float(flat[n].var(dim=0, unbiased=False).mean()) for n in range(7)]
    torch.testing.assert_close(v.variance_samples, torch.tensor(exp_var_s, dtype=torch.float64), **kw)
    torch.testing.assert_close(v.variance_units, torch.tensor(exp_var_u, dtype=torch.float64), **kw)
    live = flat.norm(dim=2) > 0  # (N, U)
    assert v.zero_units.tolist() == (~live).sum(1).tolist()
    assert (~live).any()  # ReLU switched some units off: the zero-excluded CVs differ

    def cv_live(norms):
        norms = norms[norms > 0]
        return population_cv(norms) if norms.numel() >= 2 else NAN

    exp_cv_s_nz = [cv_live(flat[:, j].norm(dim=1)) for j in range(5)]
    exp_cv_u_nz = [cv_live(flat[n].norm(dim=1)) for n in range(7)]
    torch.testing.assert_close(
        v.norm_cv_samples_nonzero, torch.tensor(exp_cv_s_nz, dtype=torch.float64), **kw
    )
    torch.testing.assert_close(v.norm_cv_units_nonzero, torch.tensor(exp_cv_u_nz, dtype=torch.float64), **kw)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda n, x: input_unit_gradients(n, "layer9", x), r"layer 'layer9' does not exist"),
        (lambda n, x: gradient_variability(n, nn.ReLU(), x), "layer must be a submodule of model"),
        (lambda n, x: gradient_variability(n, "2", x, unit_chunk=0), "unit_chunk must be an integer >= 1"),
        (lambda n, x: gradient_variability(n, "2", []), "no images were given"),
        (
            lambda n, x: input_unit_gradients(n, "2", x, mean=(0.5,) * 3),
            "mean and std must be given together",
        ),
    ],
)
def test_bad_input_one_line_errors(call, match):
    net = conv_net()
    x = torch.rand(2, 3, 6, 6)
    with pytest.raises(ValueError, match=match) as info:
        call(net, x)
    assert "\n" not in str(info.value)
