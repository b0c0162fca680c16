"""The grouped (wide) form of R models (selectivity.models.grouped) against R separate models."""

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from selectivity import models
from selectivity.models.grouped import GroupedLinear, group_model, groupable, wide_shape


def _wide_tensors(ms):
    """Stacked (R, ...) parameters and buffers viewed in the wide shapes."""
    params, buffers = stack_module_state(ms)
    r = len(ms)
    out = {k: v.view(wide_shape(v.shape[1:], r)) for k, v in params.items()}
    for k, v in buffers.items():
        out[k] = v[0] if v.dim() == 1 else v.view(wide_shape(v.shape[1:], r))
    return out, buffers


def _check(name, size, runs=3, batch=4, **kw):
    torch.manual_seed(0)
    ms = [models.create(name, **kw).double() for _ in range(runs)]
    for m in ms:  # non-trivial BN statistics, so eval mode is a real check
        for mod in m.modules():
            if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 1.5)
    x = torch.randn(runs, batch, 3, size, size, dtype=torch.float64)
    wide = group_model(ms[0], runs)
    xw = x.transpose(0, 1).reshape(batch, runs * 3, size, size)  # (R, B, C, H, W) -> (B, R*C, H, W)
    for mode in ("train", "eval"):
        refs = [copy.deepcopy(m).train(mode == "train") for m in ms]
        tensors, buffers = _wide_tensors(ms)
        wide.train(mode == "train")
        with torch.no_grad():
            out = functional_call(wide, tensors, (xw,)).view(batch, runs, -1).transpose(0, 1)
            ref = torch.stack([m(x[i]) for i, m in enumerate(refs)])
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
        # the running statistics each run would have after this forward
        for k, v in buffers.items():
            if v.dim() > 1 and "running" in k:
                for i, m in enumerate(refs):
                    torch.testing.assert_close(v[i], m.state_dict()[k], rtol=1e-10, atol=1e-12)


def test_resnet20_grouped_equals_separate_models():
    _check("resnet20", 8)  # option-A shortcuts with zero padding inside each run's block


def test_vgg16_grouped_equals_separate_models():
    _check("vgg16", 32, runs=2, batch=2)  # BatchNorm1d and a Linear chain


def test_resnet18_grouped_equals_separate_models():
    _check("resnet18", 16, runs=2, batch=2, num_classes=5)


def test_resnet50_grouped_equals_separate_models():
    # bottlenecks: 1x1 convs, stride on the 3x3 conv, projection shortcut in every stage
    _check("resnet50", 16, runs=2, batch=2, num_classes=5)


def test_grouped_linear_by_hand():
    lin = GroupedLinear(2, 2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, -1.0]]))  # run 0: (1, 2); run 1: (3, -1)
        lin.bias.copy_(torch.tensor([0.5, -0.5]))
    x = torch.tensor([[1.0, 1.0, 2.0, 4.0]])  # run 0 sees (1, 1), run 1 sees (2, 4)
    assert lin(x).tolist() == [[3.5, 1.5]]  # 1 + 2 + 0.5, 6 - 4 - 0.5


def test_unsupported_modules_are_refused():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU())
    assert not groupable(m)
    with pytest.raises(ValueError, match="cannot widen a GELU"):
        group_model(m, 2)
    with pytest.raises(ValueError, match="runs must be an integer >= 1"):
        group_model(nn.Linear(2, 2), 0)
    assert groupable(models.create("resnet20")) and groupable(models.create("resnet50"))
    assert wide_shape((16, 3, 3, 3), 4) == (64, 3, 3, 3) and wide_shape((), 4) == ()
