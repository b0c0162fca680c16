"""VGG16 with batch norm for 32x32 inputs, as used by Leavitt & Morcos (paper 1, A.1).

Feature extractor: configuration D of Simonyan & Zisserman,
``64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M``,
each number a 3x3 conv (padding 1, with bias as in torchvision's ``vgg16_bn``, although
BN makes it redundant) -> BatchNorm2d -> activation, each ``M`` a 2x2 max-pool with
stride 2. A 32x32 input leaves a 512x1x1 feature map after the five pools.

Classifier -- our reading of "the two 4096-unit fully-connected layers are replaced by
one 512-unit layer": ``Linear(512, 512) -> BatchNorm1d(512) -> activation ->
Linear(512, num_classes)``. The hidden layer gets batch norm like every conv layer;
there is no dropout (the paper mentions none). An ``AdaptiveAvgPool2d(1)`` before the
classifier is the identity for 32x32 inputs and lets larger inputs work too.

Selectivity sites: the 13 activations after the conv layers (``features.<i>``). The
fully-connected layer's activation (``classifier.2``) is *not* included, because the
paper counts convolutional layers.

Initialisation (the paper does not specify one): as torchvision's VGG, i.e.
Kaiming-normal (fan_out, ReLU gain) for convs, BN weight 1 / bias 0, and N(0, 0.01)
weights with zero bias for linear layers. The same is used for leaky ReLU.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .registry import make_activation, register_model, validate_model_args

__all__ = ["VGG", "VGG16_CONFIG", "vgg16"]

#: Channel configuration of VGG16 ("D"); "M" is a 2x2 max-pool.
VGG16_CONFIG: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


class VGG(nn.Module):
    """VGG with batch norm and a single 512-unit hidden FC layer.

    Parameters
    ----------
    config : sequence of int or "M", optional
        Conv widths and max-pools; defaults to VGG16.
    num_classes : int, optional
        Output classes (>= 2).
    activation : {"relu", "leaky_relu"}, optional
        Nonlinearity at every activation site.
    negative_slope : float, optional
        Leaky-ReLU slope (>= 0), ignored for ReLU.
    hidden : int, optional
        Width of the single hidden FC layer.

    Notes
    -----
    Inputs must be at least 2**(number of pools) pixels on a side (32 for VGG16).
    """

    def __init__(
        self,
        config: tuple[int | str, ...] = VGG16_CONFIG,
        num_classes: int = 10,
        activation: str = "relu",
        negative_slope: float = 0.01,
        hidden: int = 512,
    ) -> None:
        super().__init__()
        validate_model_args(num_classes, activation, negative_slope)
        self.num_classes = num_classes
        self.activation = activation
        self.negative_slope = float(negative_slope)

        layers: list[nn.Module] = []
        self._conv_act_names: list[str] = []
        in_ch = 3
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"config entries must be positive ints or 'M', got {v!r}")
            layers += [
                nn.Conv2d(in_ch, v, kernel_size=3, padding=1),
                nn.BatchNorm2d(v),
                make_activation(activation, negative_slope),
            ]
            self._conv_act_names.append(f"features.{len(layers) - 1}")
            in_ch = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(in_ch, hidden),
            nn.BatchNorm1d(hidden),
            make_activation(activation, negative_slope),
            nn.Linear(hidden, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's VGG initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.features(x)
        # (N, 512, H', W') -> (N, 512, 1, 1) -> (N, 512)
        out = torch.flatten(self.avgpool(out), 1)
        return self.classifier(out)

    def default_selectivity_layers(self) -> list[str]:
        """Qualified names of the activations after each conv layer, in forward order.

        Returns
        -------
        list of str
            ``"features.<i>"`` names, 13 for VGG16. The FC layer's activation is
            excluded.
        """
        return list(self._conv_act_names)


@register_model("vgg16")
def vgg16(num_classes: int = 10, activation: str = "relu", negative_slope: float = 0.01) -> VGG:
    """VGG16-BN for CIFAR with one 512-unit hidden FC layer (14,991,946 parameters, 10 classes)."""
    return VGG(VGG16_CONFIG, num_classes, activation, negative_slope)
