"""Tests for the model registry and the built-in models (selectivity.models)."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from selectivity import models
from selectivity.models import registry

ACT_TYPES = (nn.ReLU, nn.LeakyReLU)


def resnet50_param_count(stem_kernel: int, num_classes: int) -> int:
    """ResNet50's parameter count, by hand from the architecture (v1.5 bottlenecks)."""

    def bn(c: int) -> int:  # weight and bias
        return 2 * c

    count = 3 * 64 * stem_kernel**2 + bn(64)  # stem conv (no bias) + BN
    in_planes = 64
    for planes, n_blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        out = 4 * planes
        for j in range(n_blocks):
            cin = in_planes if j == 0 else out
            count += cin * planes + bn(planes)  # 1x1 conv1
            count += 9 * planes * planes + bn(planes)  # 3x3 conv2
            count += planes * out + bn(out)  # 1x1 conv3
            if j == 0:  # the first block of every stage changes the shape: 1x1 projection
                count += cin * out + bn(out)
        in_planes = out
    return count + 2048 * num_classes + num_classes  # linear head


# name -> (input side, default classes, exact #params, literature range, #selectivity sites)
SPECS = {
    # He et al. 2016 / akamaster: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M.
    "resnet20": (32, 10, 269_722, (0.26e6, 0.28e6), 19),
    "resnet32": (32, 10, 464_154, (0.45e6, 0.47e6), 31),
    "resnet44": (32, 10, 658_586, (0.65e6, 0.67e6), 43),
    "resnet56": (32, 10, 853_018, (0.84e6, 0.86e6), 55),
    "resnet110": (32, 10, 1_727_962, (1.7e6, 1.75e6), 109),
    # VGG16-BN convs (14.72M) + one 512-unit FC layer with BN: ~15.0M.
    "vgg16": (32, 10, 14_991_946, (14.9e6, 15.1e6), 13),
    # torchvision's resnet18 (11.69M) with 3x3 stem and a 200-way head: ~11.3M.
    "resnet18": (64, 200, 11_271_432, (11.2e6, 11.35e6), 17),
    # torchvision's resnet50 (25.56M) with 3x3 stem and a 200-way head: ~23.9M.
    "resnet50": (64, 200, resnet50_param_count(3, 200), (23.8e6, 24.0e6), 49),
}


@functools.cache
def default_model(name: str) -> nn.Module:
    """One seeded default instance per name, shared by the read-only tests (speed)."""
    torch.manual_seed(0)
    return models.create(name)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_list_models_sorted_and_complete():
    names = models.list_models()
    assert names == sorted(names)
    assert set(SPECS) <= set(names)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_parameter_count(name):
    _, _, exact, (lo, hi), _ = SPECS[name]
    count = n_params(default_model(name))
    assert count == exact
    assert lo <= count <= hi


def test_parameter_count_other_heads():
    # Only the final linear layer depends on num_classes.
    assert n_params(models.create("resnet20", num_classes=100)) == 269_722 - 650 + 6_500
    # The ImageNet stem with 1000 classes is exactly torchvision's resnet18.
    assert n_params(models.ResNet(num_classes=1000, stem="imagenet")) == 11_689_512


def test_resnet50_parameter_count_matches_torchvision():
    # The hand formula reproduces torchvision's resnet50 (7x7 stem, 1000 classes) ...
    assert resnet50_param_count(7, 1000) == 25_557_032
    # ... and so does our model with the ImageNet stem and a 1000-way head.
    imagenet = models.ResNet((3, 4, 6, 3), num_classes=1000, stem="imagenet", block="bottleneck")
    assert n_params(imagenet) == 25_557_032
    # The 3x3 stem saves 3*64*(49-9) weights, the 200-way head 2049*800.
    assert resnet50_param_count(3, 200) == 25_557_032 - 3 * 64 * 40 - 2049 * 800


@pytest.mark.parametrize("name", sorted(SPECS))
def test_selectivity_layers_are_distinct_activation_modules(name):
    *_, n_sites = SPECS[name]
    model = default_model(name)
    layers = model.default_selectivity_layers()
    modules = dict(model.named_modules())
    assert len(layers) == n_sites
    assert len(set(layers)) == n_sites
    for layer in layers:
        assert layer in modules, layer
        assert isinstance(modules[layer], ACT_TYPES), layer
        assert modules[layer].inplace is False
    assert len({id(modules[layer]) for layer in layers}) == n_sites

    # No activation site is shared: every activation module appears under one name.
    acts = [m for m in model.modules() if isinstance(m, ACT_TYPES)]
    assert len({id(m) for m in acts}) == len(acts)
    # The only activation that is not a unit is VGG's fully-connected one.
    extra = {n for n, m in model.named_modules() if isinstance(m, ACT_TYPES)} - set(layers)
    assert extra == ({"classifier.2"} if name == "vgg16" else set())


@pytest.mark.parametrize("name", sorted(SPECS))
def test_forward_shape_and_sites_fire_once_in_forward_order(name):
    side, classes, *_ = SPECS[name]
    torch.manual_seed(0)
    model = default_model(name)
    layers = model.default_selectivity_layers()
    modules = dict(model.named_modules())
    fired: list[str] = []
    shapes: dict[str, torch.Size] = {}

    def make_hook(layer):
        def hook(_module, _inp, out):
            fired.append(layer)
            shapes[layer] = out.shape

        return hook

    handles = [modules[layer].register_forward_hook(make_hook(layer)) for layer in layers]
    try:
        with torch.no_grad():
            out = model(torch.randn(2, 3, side, side))
    finally:
        for h in handles:
            h.remove()
    assert out.shape == (2, classes)
    assert model.num_classes == classes
    assert fired == layers  # each exactly once, in the declared (forward) order
    for layer in layers:
        assert len(shapes[layer]) == 4 and shapes[layer][0] == 2, (layer, shapes[layer])


def test_cifar_resnet_site_names_and_widths():
    model = default_model("resnet20")
    layers = model.default_selectivity_layers()
    assert layers[:3] == ["act1", "layer1.0.act1", "layer1.0.act2"]
    assert layers[-1] == "layer3.2.act2"
    assert model.fc.out_features == 10 and model.fc.in_features == 64


@pytest.mark.parametrize("name", sorted(SPECS))
def test_leaky_relu_everywhere(name):
    model = models.create(name, activation="leaky_relu", negative_slope=0.2)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    leaky = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    n_sites = SPECS[name][-1]
    assert len(leaky) == n_sites + (1 if name == "vgg16" else 0)
    assert all(m.negative_slope == 0.2 and m.inplace is False for m in leaky)
    modules = dict(model.named_modules())
    assert all(isinstance(modules[n], nn.LeakyReLU) for n in model.default_selectivity_layers())


def test_relu_default_has_no_leaky():
    model = default_model("resnet20")
    assert not any(isinstance(m, nn.LeakyReLU) for m in model.modules())


def test_leaky_relu_slope_zero_allowed():
    model = models.create("resnet20", activation="leaky_relu", negative_slope=0.0)
    assert all(m.negative_slope == 0.0 for m in model.modules() if isinstance(m, nn.LeakyReLU))


@torch.no_grad()
def test_custom_num_classes():
    torch.manual_seed(0)
    assert models.create("vgg16", num_classes=100)(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    assert models.create("resnet18", num_classes=10)(torch.randn(2, 3, 64, 64)).shape == (2, 10)


@torch.no_grad()
def test_arbitrary_input_sizes():
    torch.manual_seed(0)
    assert default_model("resnet20")(torch.randn(2, 3, 40, 40)).shape == (2, 10)
    assert default_model("vgg16")(torch.randn(2, 3, 48, 48)).shape == (2, 10)
    assert default_model("resnet18")(torch.randn(2, 3, 32, 32)).shape == (2, 200)
    imagenet = models.ResNet(stem="imagenet").eval()
    assert imagenet(torch.randn(1, 3, 64, 64)).shape == (1, 200)


def test_deterministic_with_seed():
    torch.manual_seed(123)
    a = models.create("resnet20")
    torch.manual_seed(123)
    b = models.create("resnet20")
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_option_a_shortcut_is_parameter_free_and_zero_pads():
    sc = models.ShortcutA(16, 32, stride=2)
    assert n_params(sc) == 0
    x = torch.randn(2, 16, 8, 8)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert torch.all(y[:, :8] == 0) and torch.all(y[:, 24:] == 0)


def test_resnet18_projection_shortcuts():
    model = default_model("resnet18")
    assert isinstance(model.layer1[0].shortcut, nn.Identity)
    for stage in (model.layer2, model.layer3, model.layer4):
        conv, bn = stage[0].shortcut
        assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (2, 2)
        assert isinstance(bn, nn.BatchNorm2d)
        assert isinstance(stage[1].shortcut, nn.Identity)
    assert model.conv1.kernel_size == (3, 3) and isinstance(model.maxpool, nn.Identity)


def test_resnet50_bottlenecks_stride_on_3x3_and_projections():
    model = default_model("resnet50")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3, model.layer4)] == [3, 4, 6, 3]
    for stage, planes, stride in ((model.layer1, 64, 1), (model.layer2, 128, 2), (model.layer3, 256, 2)):
        first = stage[0]
        assert isinstance(first, models.Bottleneck)
        assert first.conv1.kernel_size == (1, 1) and first.conv1.stride == (1, 1)  # v1.5: not here
        assert first.conv2.kernel_size == (3, 3) and first.conv2.stride == (stride, stride)
        assert first.conv3.kernel_size == (1, 1) and first.conv3.out_channels == 4 * planes
        conv, bn = first.shortcut  # every stage's first block changes channels (64 -> 256 too)
        assert conv.kernel_size == (1, 1) and conv.stride == (stride, stride)
        assert conv.out_channels == 4 * planes and bn.num_features == 4 * planes
        assert all(isinstance(b.shortcut, nn.Identity) for b in stage[1:])
    assert model.fc.in_features == 2048 and model.fc.out_features == 200
    # Same init conventions as ResNet18: BN weight 1 / bias 0 everywhere (no zero-init of bn3).
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in bns)
    # Kaiming-normal fan_out: std sqrt(2 / (C_out * k * k)) for the largest conv.
    w = model.layer4[0].conv2.weight  # (512, 512, 3, 3)
    assert abs(w.std().item() / (2 / (512 * 9)) ** 0.5 - 1) < 0.02


def test_resnet50_sgd_step_on_64px_batch():
    torch.manual_seed(0)
    model = models.create("resnet50", num_classes=200)
    x, y = torch.rand(2, 3, 64, 64), torch.tensor([3, 117])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.fc.weight.detach().clone(), model.conv1.weight.detach().clone()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss) and model.conv1.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(model.fc.weight, before[0]) and not torch.equal(model.conv1.weight, before[1])


# ---------------------------------------------------------------- bad input


def test_unknown_model_lists_available():
    with pytest.raises(ValueError, match="available models: .*resnet20"):
        models.create("resnet21")


@pytest.mark.parametrize("activation", ["tanh", "ReLU", ""])
def test_bad_activation(activation):
    with pytest.raises(ValueError, match="allowed: relu, leaky_relu"):
        models.create("resnet20", activation=activation)


@pytest.mark.parametrize("slope", [-0.1, float("nan")])
def test_bad_negative_slope(slope):
    with pytest.raises(ValueError, match="negative_slope must be"):
        models.create("resnet20", activation="leaky_relu", negative_slope=slope)


@pytest.mark.parametrize("num_classes", [1, 0, -3, 2.5, True])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes must be"):
        models.create("resnet20", num_classes=num_classes)


def test_bad_constructor_args():
    with pytest.raises(ValueError, match="6n \\+ 2"):
        models.CifarResNet(depth=21)
    with pytest.raises(ValueError, match="allowed: small, imagenet"):
        models.ResNet(stem="cifar")
    with pytest.raises(ValueError, match="allowed: basic, bottleneck"):
        models.ResNet(block="preact")
    with pytest.raises(ValueError, match="allowed: relu, leaky_relu"):
        models.VGG(activation="tanh")
    with pytest.raises(ValueError, match="num_classes must be"):
        models.resnet18(num_classes=1)


# ---------------------------------------------------------------- registry


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry, so tests can register without leaking names."""
    monkeypatch.setattr(registry, "_MODEL_REGISTRY", dict(registry._MODEL_REGISTRY))
    return registry._MODEL_REGISTRY


def test_register_model_and_create(scratch_registry):
    @models.register_model("tiny_test_net")
    def tiny(num_classes=7, activation="relu", negative_slope=0.01):
        return nn.Sequential(
            nn.Flatten(), models.make_activation(activation, negative_slope), nn.Linear(12, num_classes)
        )

    assert "tiny_test_net" in models.list_models()
    assert models.create("tiny_test_net")[2].out_features == 7
    net = models.create("tiny_test_net", num_classes=3, activation="leaky_relu", negative_slope=0.3)
    assert net[2].out_features == 3 and net[1].negative_slope == 0.3


def test_register_duplicate_name_rejected(scratch_registry):
    with pytest.raises(ValueError, match="already registered"):

        @models.register_model("resnet20")
        def other(num_classes=10, activation="relu", negative_slope=0.01):
            return nn.Linear(1, num_classes)


def test_register_empty_name_rejected():
    with pytest.raises(ValueError, match="non-empty"):
        models.register_model("")
