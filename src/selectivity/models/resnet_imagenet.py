"""ResNet18 and ResNet50 for 64x64 Tiny ImageNet inputs (200 classes by default).

ResNet18 is the Tiny ImageNet model of Leavitt & Morcos (paper 1, final version);
ResNet50 is the deeper model of paper 2's robustness experiments.

Architectures (He et al. 2016), four stages with 64, 128, 256 and 512 base channels,
stride 2 at the first block of stages 2-4, projection shortcuts (1x1 conv stride s + BN,
"option B") wherever the shape changes, identity otherwise, global average pool, linear
layer to ``num_classes`` (default 200):

- ResNet18: basic blocks (two 3x3 convs) ``[2, 2, 2, 2]``, 512 features before the head.
- ResNet50: bottleneck blocks ``[3, 4, 6, 3]`` -- 1x1 conv to the base width, 3x3 conv,
  1x1 conv to 4x the base width (expansion 4, 2048 features before the head). The
  stride sits on the 3x3 conv, as in torchvision's "ResNet v1.5" (the original paper
  strides the first 1x1 conv).

Stem (the paper does not specify it):

- ``stem="small"`` (default, used by the registry): 3x3 conv, 64 channels, stride 1,
  BN, activation, **no max-pool**. This is the usual Tiny ImageNet adaptation; with
  a 64x64 input the stages see 64, 32, 16 and 8 pixel feature maps.
- ``stem="imagenet"``: the original 7x7 conv stride 2 + BN + activation + 3x3 max-pool
  stride 2 (64x64 input -> 16x16 in stage 1).

Initialisation as torchvision's ResNet: Kaiming-normal (fan_out, ReLU gain) for convs,
BN weight 1 / bias 0, PyTorch's default for the final linear layer, no zero-init of
the last BN in each block. The same is used for the leaky-ReLU variant.

Selectivity sites: the stem's ``act1``, then

- ResNet18, in every basic block: ``act1`` (after conv1/bn1) and ``act2`` (after the
  residual addition): 1 + 8 * 2 = 17 sites;
- ResNet50, in every bottleneck block: ``act1`` (after conv1/bn1), ``act2`` (after
  conv2/bn2) and ``act3`` (after the residual addition): 1 + 16 * 3 = 49 sites.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from .registry import make_activation, register_model, validate_model_args
from .resnet_cifar import BasicBlockA

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet50"]

_STEMS = ("small", "imagenet")
_BLOCKS = ("basic", "bottleneck")


class BasicBlock(BasicBlockA):
    """Basic residual block with a projection shortcut (1x1 conv + BN) when the shape changes.

    Same layout and selectivity sites as :class:`~selectivity.models.resnet_cifar.BasicBlockA`
    (``act1`` after conv1/bn1, ``act2`` after the residual addition); only the shortcut differs.
    """

    #: Names of the block's selectivity sites, in forward order.
    sites: ClassVar[tuple[str, ...]] = ("act1", "act2")

    @staticmethod
    def _make_shortcut(in_planes: int, planes: int, stride: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes),
        )


class Bottleneck(nn.Module):
    """Bottleneck residual block (1x1, 3x3, 1x1 convs; expansion 4), torchvision's v1.5 layout.

    ``act1`` follows conv1/bn1, ``act2`` follows conv2/bn2 and ``act3`` the residual
    addition (the block output); all three are selectivity sites. The stride is on the
    3x3 conv (``conv2``); the shortcut is a 1x1 conv stride s + BN when the shape changes.

    Parameters
    ----------
    in_planes : int
        Input channels.
    planes : int
        Base width: conv1 and conv2 have ``planes`` channels, the output ``4 * planes``.
    stride : int, optional
        Stride of conv2 and of the shortcut.
    activation : {"relu", "leaky_relu"}, optional
        Nonlinearity.
    negative_slope : float, optional
        Leaky-ReLU slope.
    """

    expansion = 4
    #: Names of the block's selectivity sites, in forward order.
    sites: ClassVar[tuple[str, ...]] = ("act1", "act2", "act3")

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        activation: str = "relu",
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = make_activation(activation, negative_slope)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = make_activation(activation, negative_slope)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        if stride != 1 or in_planes != out_planes:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )
        else:
            self.shortcut = nn.Identity()
        self.act3 = make_activation(activation, negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act3(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with basic or bottleneck blocks for small ImageNet-like inputs (e.g. 64x64).

    Parameters
    ----------
    blocks : sequence of int, optional
        Blocks per stage; ``(2, 2, 2, 2)`` with basic blocks is ResNet18, ``(3, 4, 6, 3)``
        with bottleneck blocks ResNet50.
    num_classes : int, optional
        Output classes (>= 2); 200 for Tiny ImageNet.
    activation : {"relu", "leaky_relu"}, optional
        Nonlinearity at every activation site.
    negative_slope : float, optional
        Leaky-ReLU slope (>= 0), ignored for ReLU.
    stem : {"small", "imagenet"}, optional
        ``"small"``: 3x3 conv stride 1, no max-pool (default). ``"imagenet"``: 7x7
        conv stride 2 followed by a 3x3 stride-2 max-pool.
    widths : sequence of int, optional
        Base channels per stage (a bottleneck stage outputs 4x as many).
    block : {"basic", "bottleneck"}, optional
        Residual block type: :class:`BasicBlock` or :class:`Bottleneck`.

    Notes
    -----
    Adaptive average pooling makes any input size large enough for the strides work.
    """

    def __init__(
        self,
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        num_classes: int = 200,
        activation: str = "relu",
        negative_slope: float = 0.01,
        stem: str = "small",
        widths: tuple[int, ...] = (64, 128, 256, 512),
        block: str = "basic",
    ) -> None:
        super().__init__()
        validate_model_args(num_classes, activation, negative_slope)
        if stem not in _STEMS:
            raise ValueError(f"unknown stem {stem!r}; allowed: {', '.join(_STEMS)}")
        if block not in _BLOCKS:
            raise ValueError(f"unknown block {block!r}; allowed: {', '.join(_BLOCKS)}")
        if len(blocks) != len(widths) or not blocks or min(blocks) < 1:
            raise ValueError(
                f"blocks and widths must be non-empty, equally long, with >= 1 block per "
                f"stage; got blocks={blocks!r}, widths={widths!r}"
            )
        self.num_classes = num_classes
        self.activation = activation
        self.negative_slope = float(negative_slope)
        self.stem = stem
        self.block = block
        block_type: type[BasicBlock] | type[Bottleneck] = BasicBlock if block == "basic" else Bottleneck
        self._block_sites = block_type.sites

        if stem == "small":
            self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = make_activation(activation, negative_slope)

        in_planes = widths[0]
        self._stage_names: list[str] = []
        for i, (n, w) in enumerate(zip(blocks, widths)):
            stride = 1 if i == 0 else 2
            out_planes = w * block_type.expansion
            stage = nn.Sequential(
                *[
                    block_type(
                        in_planes if j == 0 else out_planes,
                        w,
                        stride if j == 0 else 1,
                        activation,
                        negative_slope,
                    )
                    for j in range(n)
                ]
            )
            in_planes = out_planes
            name = f"layer{i + 1}"
            self.add_module(name, stage)
            self._stage_names.append(name)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's ResNet initialisation (zero_init_residual=False).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for name in self._stage_names:
            out = getattr(self, name)(out)
        # (N, F, H', W') -> (N, F, 1, 1) -> (N, F); F = 512 (ResNet18) or 2048 (ResNet50)
        out = torch.flatten(self.avgpool(out), 1)
        return self.fc(out)

    def default_selectivity_layers(self) -> list[str]:
        """Qualified names of the activation modules whose outputs are the units.

        Returns
        -------
        list of str
            ``"act1"`` (stem), then for every block in forward order ``"layerS.B.act1"``
            and ``"layerS.B.act2"`` (basic blocks; 17 for ResNet18), plus ``"layerS.B.act3"``
            (bottleneck blocks; 49 for ResNet50).
        """
        names = ["act1"]
        for stage_name in self._stage_names:
            for j in range(len(getattr(self, stage_name))):
                names += [f"{stage_name}.{j}.{site}" for site in self._block_sites]
        return names


@register_model("resnet18")
def resnet18(num_classes: int = 200, activation: str = "relu", negative_slope: float = 0.01) -> ResNet:
    """ResNet18 for 64x64 Tiny ImageNet: 3x3 stride-1 stem, no max-pool (11,271,432 parameters, 200 classes)."""
    return ResNet((2, 2, 2, 2), num_classes, activation, negative_slope, stem="small")


@register_model("resnet50")
def resnet50(num_classes: int = 200, activation: str = "relu", negative_slope: float = 0.01) -> ResNet:
    """ResNet50 (v1.5 bottlenecks) for 64x64 Tiny ImageNet: 3x3 stride-1 stem, no max-pool (23,910,152 parameters, 200 classes)."""
    return ResNet((3, 4, 6, 3), num_classes, activation, negative_slope, stem="small", block="bottleneck")
