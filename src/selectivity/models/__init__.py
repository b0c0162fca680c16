"""Model registry and the built-in models used by Leavitt & Morcos.

Use :func:`create` to build a model by name and :func:`list_models` to see the names:

>>> from selectivity import models
>>> net = models.create("resnet20", activation="leaky_relu", negative_slope=0.1)
>>> net.default_selectivity_layers()[:3]
['act1', 'layer1.0.act1', 'layer1.0.act2']

Built-in names: ``resnet20``, ``resnet32``, ``resnet44``, ``resnet56``, ``resnet110``
(CIFAR, 10 classes by default), ``vgg16`` (CIFAR, 10 classes), ``resnet18`` and
``resnet50`` (64x64 Tiny ImageNet, 200 classes), ``vit`` and ``vit_tiny`` (small Vision
Transformers for CIFAR-10, patch 4, GELU MLPs; their units are the MLP neurons). Every built-in model has a
``default_selectivity_layers()`` method naming the activation modules whose outputs
are the units for class selectivity.
"""

from .registry import ALLOWED_ACTIVATIONS, create, list_models, make_activation, register_model

# Imported for their side effect of registering their factories.
from .resnet_cifar import (
    BasicBlockA,
    CifarResNet,
    ShortcutA,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
    resnet110,
)
from .resnet_imagenet import BasicBlock, Bottleneck, ResNet, resnet18, resnet50
from .vgg import VGG, VGG16_CONFIG, vgg16
from .vit import ViT, vit, vit_tiny

__all__ = [
    "ALLOWED_ACTIVATIONS",
    "BasicBlock",
    "BasicBlockA",
    "Bottleneck",
    "CifarResNet",
    "ResNet",
    "ShortcutA",
    "VGG",
    "VGG16_CONFIG",
    "ViT",
    "create",
    "list_models",
    "make_activation",
    "register_model",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet50",
    "resnet56",
    "resnet110",
    "vgg16",
    "vit",
    "vit_tiny",
]
