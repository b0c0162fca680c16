"""A small Vision Transformer for 32x32 images (CIFAR-10): patch 4, GELU MLPs.

The layout follows timm's ``VisionTransformer`` (pre-norm blocks, a class token,
learned position embeddings, module names ``blocks.{i}.attn``, ``blocks.{i}.mlp.fc1``,
``blocks.{i}.mlp.act``, ``blocks.{i}.mlp.fc2``), so the selectivity sites and presets
are the same as for a timm ViT.

Units. The selectivity sites are the MLP activations ``blocks.{i}.mlp.act``, whose
output is ``(N, T, D_mlp)``: the units are the ``D_mlp`` neurons, pooled over the
``T = 65`` tokens (64 patches and the class token) by the measurement's token pooling
(mean by default). The model declares that layout
(:meth:`ViT.default_selectivity_layouts`), so no ``layouts=`` is needed.

GELU is signed: its responses go down to about -0.17. Class means of a unit can
therefore be slightly negative; they go through the documented negative rule of
:mod:`selectivity.core.metrics` (``negative_rule``, default ``"shift"``: a unit whose
smallest class mean is negative has all its class means shifted so that it is 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import make_activation, register_model

__all__ = ["ViT", "vit", "vit_tiny"]


class Attention(nn.Module):
    """Multi-head self-attention (one qkv projection, scaled dot product)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        qkv = self.qkv(x).view(n, t, 3, self.heads, d // self.heads)  # (N, T, 3D) -> (N, T, 3, H, D/H)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, H, T, D/H)
        out = F.scaled_dot_product_attention(q, k, v)  # (N, H, T, D/H)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))  # -> (N, T, D)


class Mlp(nn.Module):
    """``fc1 -> act -> fc2``; ``act``'s output is the selectivity site."""

    def __init__(self, dim: int, hidden: int, act: nn.Module) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, hidden: int, act: nn.Module) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Vision Transformer: patch embedding, class token, ``depth`` blocks, linear head on the class token.

    Parameters
    ----------
    num_classes : int
    image_size, patch_size : int
        Input side (pixels) and patch side; ``(image_size / patch_size)^2`` patches.
    dim, depth, heads : int
        Token width, number of blocks, attention heads.
    mlp_ratio : float
        MLP width as a multiple of ``dim`` (the number of units per site).
    activation, negative_slope
        MLP nonlinearity (:func:`selectivity.models.make_activation`).
    """

    def __init__(
        self,
        num_classes: int = 10,
        image_size: int = 32,
        patch_size: int = 4,
        dim: int = 192,
        depth: int = 6,
        heads: int = 3,
        mlp_ratio: float = 2.0,
        activation: str = "gelu",
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        num_patches = (image_size // patch_size) ** 2
        hidden = int(dim * mlp_ratio)
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.blocks = nn.ModuleList(
            Block(dim, heads, hidden, make_activation(activation, negative_slope)) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, D, h, w) -> (N, h*w, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (N, 1, D)
        x = torch.cat([cls, x], dim=1) + self.pos_embed  # (N, T, D), T = h*w + 1
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))  # class token -> (N, K)

    def default_selectivity_layers(self) -> list[str]:
        """The MLP activations ``blocks.{i}.mlp.act``: units are the MLP neurons."""
        return [f"blocks.{i}.mlp.act" for i in range(len(self.blocks))]

    def default_selectivity_layouts(self) -> dict[str, str]:
        """Every MLP activation is a ``(N, T, D)`` token sequence of D units."""
        return {"blocks.*.mlp.act": "tokens"}


@register_model("vit")
def vit(num_classes: int = 10, activation: str = "gelu", negative_slope: float = 0.01) -> ViT:
    """ViT for CIFAR-10: patch 4, width 192, 6 blocks, 3 heads, MLP 384 (1.8M parameters)."""
    return ViT(num_classes=num_classes, activation=activation, negative_slope=negative_slope)


@register_model("vit_tiny")
def vit_tiny(num_classes: int = 10, activation: str = "gelu", negative_slope: float = 0.01) -> ViT:
    """Smaller ViT for CPU sweeps: patch 4, width 128, 4 blocks, 4 heads, MLP 256 (0.55M parameters)."""
    return ViT(
        num_classes=num_classes,
        dim=128,
        depth=4,
        heads=4,
        activation=activation,
        negative_slope=negative_slope,
    )
