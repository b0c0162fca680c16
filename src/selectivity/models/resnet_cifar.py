"""CIFAR ResNets of He et al. 2016 (section 4.2): resnet20/32/44/56/110.

Architecture (depth = 6n + 2):

- stem: 3x3 conv, 16 channels, stride 1 -> BN -> activation;
- three stages of ``n`` basic blocks with 16, 32 and 64 channels; the first block of
  stages 2 and 3 has stride 2;
- option-A shortcuts: parameter-free, subsample ``x[:, :, ::2, ::2]`` and zero-pad
  the new channels (He et al. use this option for the CIFAR experiments, and the
  0.27M parameter count of ResNet20 quoted by Leavitt & Morcos relies on it);
- global average pool -> linear layer to ``num_classes``.

Initialisation follows the widely used akamaster/pytorch_resnet_cifar10
re-implementation: Kaiming-normal (fan_in, ReLU gain) for conv *and* linear weights,
PyTorch defaults elsewhere (BN weight 1, bias 0; linear bias uniform). The same
initialisation is used for the leaky-ReLU variant so that the activation function is
the only thing that changes between the two.

Every activation site is a separate, non-inplace module so forward hooks can capture
it: the stem's ``act1``; in every block ``act1`` (after conv1/bn1) and ``act2``
(after the residual addition, i.e. the block output).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import make_activation, register_model, validate_model_args

__all__ = [
    "BasicBlockA",
    "CifarResNet",
    "ShortcutA",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
]


class ShortcutA(nn.Module):
    """Parameter-free option-A shortcut: spatial subsampling plus zero channel padding.

    Parameters
    ----------
    in_planes : int
        Input channels.
    planes : int
        Output channels (>= ``in_planes``); the extra channels are zeros, split
        evenly before and after the existing ones (as in akamaster's implementation).
    stride : int
        Spatial subsampling factor (1 or 2).
    """

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        if planes < in_planes:
            raise ValueError(f"option-A shortcut cannot reduce channels ({in_planes} -> {planes})")
        self.in_planes = in_planes
        self.planes = planes
        self.stride = stride
        extra = planes - in_planes
        self.pad_front = extra // 2
        self.pad_back = extra - self.pad_front

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            # (N, C, H, W) -> (N, C, ceil(H/s), ceil(W/s)); matches the stride-s conv's
            # output size for 3x3 kernels with padding 1.
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad_front or self.pad_back:
            # F.pad pads from the last dim backwards: (W, W, H, H, C, C).
            # (N, C, H, W) -> (N, planes, H, W)
            x = F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))
        return x

    def extra_repr(self) -> str:
        return f"in_planes={self.in_planes}, planes={self.planes}, stride={self.stride}"


class BasicBlockA(nn.Module):
    """Basic residual block (two 3x3 convs) with an option-A shortcut.

    ``act1`` follows conv1/bn1; ``act2`` follows the residual addition and is the
    block output. Both are selectivity sites.

    Parameters
    ----------
    in_planes : int
        Input channels.
    planes : int
        Output channels.
    stride : int, optional
        Stride of the first conv (and of the shortcut's subsampling).
    activation : {"relu", "leaky_relu"}, optional
        Nonlinearity.
    negative_slope : float, optional
        Leaky-ReLU slope.
    """

    expansion = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        activation: str = "relu",
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = make_activation(activation, negative_slope)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = self._make_shortcut(in_planes, planes, stride)
        else:
            self.shortcut = nn.Identity()
        self.act2 = make_activation(activation, negative_slope)

    @staticmethod
    def _make_shortcut(in_planes: int, planes: int, stride: int) -> nn.Module:
        """The shortcut used where the shape changes (subclasses choose another)."""
        return ShortcutA(in_planes, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs (He et al. 2016, section 4.2) with option-A shortcuts.

    Parameters
    ----------
    depth : int
        Total depth 6n + 2 (20, 32, 44, 56, 110, ...).
    num_classes : int, optional
        Output classes (>= 2).
    activation : {"relu", "leaky_relu"}, optional
        Nonlinearity at every activation site.
    negative_slope : float, optional
        Leaky-ReLU slope (>= 0), ignored for ReLU.

    Notes
    -----
    Any input size works thanks to adaptive average pooling; the model was designed
    for 32x32 (feature maps 32 -> 16 -> 8).
    """

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        activation: str = "relu",
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        validate_model_args(num_classes, activation, negative_slope)
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110...), got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.num_classes = num_classes
        self.activation = activation
        self.negative_slope = float(negative_slope)

        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.act1 = make_activation(activation, negative_slope)
        self._in_planes = 16
        self.layer1 = self._make_stage(16, n, 1, activation, negative_slope)
        self.layer2 = self._make_stage(32, n, 2, activation, negative_slope)
        self.layer3 = self._make_stage(64, n, 2, activation, negative_slope)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        self._init_weights()

    def _make_stage(
        self, planes: int, blocks: int, stride: int, activation: str, negative_slope: float
    ) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            layers.append(
                BasicBlockA(self._in_planes, planes, stride if i == 0 else 1, activation, negative_slope)
            )
            self._in_planes = planes
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # As akamaster/pytorch_resnet_cifar10 (`_weights_init`): Kaiming-normal with
        # the default fan_in / ReLU gain for conv and linear weights only.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        # (N, 64, H, W) -> (N, 64, 1, 1) -> (N, 64)
        out = torch.flatten(self.avgpool(out), 1)
        return self.fc(out)

    def default_selectivity_layers(self) -> list[str]:
        """Qualified names of the activation modules whose outputs are the units.

        Returns
        -------
        list of str
            ``"act1"`` (stem) followed, in forward order, by ``"layerS.B.act1"`` and
            ``"layerS.B.act2"`` for every block: 1 + 2 * 3n names (19 for resnet20).
        """
        names = ["act1"]
        for stage_name in ("layer1", "layer2", "layer3"):
            stage = getattr(self, stage_name)
            for i in range(len(stage)):
                names += [f"{stage_name}.{i}.act1", f"{stage_name}.{i}.act2"]
        return names


def _cifar_resnet(depth: int, num_classes: int, activation: str, negative_slope: float) -> CifarResNet:
    return CifarResNet(depth, num_classes, activation, negative_slope)


@register_model("resnet20")
def resnet20(num_classes: int = 10, activation: str = "relu", negative_slope: float = 0.01) -> CifarResNet:
    """ResNet20 for CIFAR (n = 3; 269,722 parameters with 10 classes)."""
    return _cifar_resnet(20, num_classes, activation, negative_slope)


@register_model("resnet32")
def resnet32(num_classes: int = 10, activation: str = "relu", negative_slope: float = 0.01) -> CifarResNet:
    """ResNet32 for CIFAR (n = 5). Parameters as :func:`resnet20`."""
    return _cifar_resnet(32, num_classes, activation, negative_slope)


@register_model("resnet44")
def resnet44(num_classes: int = 10, activation: str = "relu", negative_slope: float = 0.01) -> CifarResNet:
    """ResNet44 for CIFAR (n = 7). Parameters as :func:`resnet20`."""
    return _cifar_resnet(44, num_classes, activation, negative_slope)


@register_model("resnet56")
def resnet56(num_classes: int = 10, activation: str = "relu", negative_slope: float = 0.01) -> CifarResNet:
    """ResNet56 for CIFAR (n = 9). Parameters as :func:`resnet20`."""
    return _cifar_resnet(56, num_classes, activation, negative_slope)


@register_model("resnet110")
def resnet110(num_classes: int = 10, activation: str = "relu", negative_slope: float = 0.01) -> CifarResNet:
    """ResNet110 for CIFAR (n = 18). Parameters as :func:`resnet20`."""
    return _cifar_resnet(110, num_classes, activation, negative_slope)
