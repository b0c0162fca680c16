"""The grouped-convolution form of R copies of one model: one module, R independent runs.

:func:`group_model` turns a model into a "wide" model that computes R copies of it at
once, each with its own weights and its own minibatch, with no mixing between copies:

- ``Conv2d(C_in, C_out, groups=g)`` becomes ``Conv2d(R*C_in, R*C_out, groups=R*g)``: the
  channels of run ``r`` are the block ``[r*C, (r+1)*C)``, and a grouped convolution
  never mixes blocks;
- ``BatchNorm1d/2d(C)`` becomes the same over ``R*C`` features: batch norm is per
  feature, so every run keeps its own statistics and running buffers;
- ``Linear(in, out)`` becomes :class:`GroupedLinear` (one batched matmul);
- the option-A shortcut :class:`~selectivity.models.ShortcutA` pads channels inside each
  run's block (:class:`GroupedShortcutA`);
- element-wise and per-channel modules (activations, pooling, dropout, flatten,
  identity, containers) are kept as they are.

Inputs are ``(B, R*C, H, W)`` (run ``r``'s image in channels ``[r*C, (r+1)*C)``),
logits ``(B, R*K)``. The wide parameters are the R single-run parameters stacked on a
new leading dimension and reshaped: a single run's ``(C_out, C_in/g, k, k)`` conv
weight stacks to ``(R, C_out, ...)``, which *is* the grouped weight
``(R*C_out, C_in/g, k, k)`` in memory, so stacked parameters can be viewed as wide
ones at no cost (:func:`wide_shape`).

Why this form: on a GPU one grouped kernel for R small networks fills the device where
R separate launches leave it idle (see ``benchmarks/bench_gpu.py``). Any module type
not listed above raises, because its arithmetic might mix runs: use the ``vmap`` or
``loop`` backend of :class:`selectivity.training.fused.FusedRuns` for such models.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .resnet_cifar import ShortcutA

__all__ = ["GroupedLinear", "GroupedShortcutA", "KEEP_AS_IS", "group_model", "groupable", "wide_shape"]

#: Module types that act per element or per channel and so are the same in the wide model.
KEEP_AS_IS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.Identity,
    nn.Dropout,
    nn.Flatten,
    nn.AvgPool2d,
    nn.MaxPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)


class GroupedLinear(nn.Module):
    """R independent linear layers on ``(B, R*in)`` inputs -> ``(B, R*out)``.

    ``weight`` is ``(R*out, in)`` (R stacked ``(out, in)`` weights), ``bias`` ``(R*out,)``.
    """

    def __init__(self, runs: int, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.runs, self.in_features, self.out_features = int(runs), int(in_features), int(out_features)
        self.weight = nn.Parameter(torch.empty(self.runs * self.out_features, self.in_features))
        self.bias = nn.Parameter(torch.empty(self.runs * self.out_features)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        r, n_in, n_out = self.runs, self.in_features, self.out_features
        xr = x.reshape(b, r, n_in).transpose(0, 1)  # (B, R*in) -> (R, B, in)
        w = self.weight.view(r, n_out, n_in).transpose(1, 2)  # (R*out, in) -> (R, in, out)
        if self.bias is None:
            out = torch.bmm(xr, w)
        else:
            out = torch.baddbmm(self.bias.view(r, 1, n_out), xr, w)  # (R, B, out)
        return out.transpose(0, 1).reshape(b, r * n_out)  # (R, B, out) -> (B, R*out)

    def extra_repr(self) -> str:
        return f"runs={self.runs}, in_features={self.in_features}, out_features={self.out_features}"


class GroupedShortcutA(nn.Module):
    """Option-A shortcut of R runs: subsample, then zero-pad channels inside each run's block."""

    def __init__(self, runs: int, shortcut: ShortcutA) -> None:
        super().__init__()
        self.runs = int(runs)
        self.stride = shortcut.stride
        self.pad_front, self.pad_back = shortcut.pad_front, shortcut.pad_back

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad_front or self.pad_back:
            b, c, h, w = x.shape
            x = x.reshape(b, self.runs, c // self.runs, h, w)  # (B, R*C, H, W) -> (B, R, C, H, W)
            x = F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))  # pads C inside each run
            x = x.reshape(b, -1, h, w)  # -> (B, R*C', H, W)
        return x


def _wide(module: nn.Module, runs: int) -> nn.Module | None:
    """The wide replacement of a leaf module, or None when it is kept as is."""
    r = runs
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            raise ValueError(
                f"group_model supports Conv2d with zero padding only, got {module.padding_mode!r}"
            )
        return nn.Conv2d(
            r * module.in_channels,
            r * module.out_channels,
            module.kernel_size,  # type: ignore[arg-type]  # a tuple, accepted at run time
            module.stride,  # type: ignore[arg-type]
            module.padding,  # type: ignore[arg-type]
            module.dilation,  # type: ignore[arg-type]
            r * module.groups,
            module.bias is not None,
            device="meta",
        )
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return type(module)(
            r * module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            device="meta",
        )
    if isinstance(module, nn.Linear):
        return GroupedLinear(r, module.in_features, module.out_features, module.bias is not None).to("meta")
    if isinstance(module, ShortcutA):
        return GroupedShortcutA(r, module)
    if isinstance(module, KEEP_AS_IS):
        return None
    raise ValueError(
        f"group_model cannot widen a {type(module).__name__}: supported are Conv2d, BatchNorm1d/2d, "
        f"Linear, ShortcutA and {', '.join(t.__name__ for t in KEEP_AS_IS)}"
    )


def groupable(model: nn.Module) -> bool:
    """Whether :func:`group_model` can widen ``model`` (every leaf module is supported)."""
    try:
        for m in model.modules():
            if not list(m.children()):
                _wide(m, 1)
    except ValueError:
        return False
    return True


def group_model(model: nn.Module, runs: int) -> nn.Module:
    """The wide form of ``runs`` copies of ``model``, on the meta device (no storage).

    Parameters
    ----------
    model : nn.Module
        A single-run model built only from supported modules (see the module docstring).
        Its ``forward`` may use any per-sample code that does not index channels
        (flatten after global pooling keeps each run's features contiguous).
    runs : int
        R >= 1.

    Returns
    -------
    nn.Module
        Same class and module names as ``model``; parameters and buffers live on the
        meta device and are meant to be supplied with :func:`torch.func.functional_call`
        (views of stacked parameters, see :func:`wide_shape`). Forward hooks registered
        on ``model`` are not copied.

    Raises
    ------
    ValueError
        ``runs < 1`` or a module type that cannot be widened.
    """
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be an integer >= 1, got {runs!r}")
    for name, m in model.named_modules():
        if list(m.children()) and (list(m.parameters(recurse=False)) or list(m.buffers(recurse=False))):
            raise ValueError(
                f"group_model cannot widen module {name or '(root)'!r}: it has both children and its own "
                "parameters or buffers"
            )
    wide = copy.deepcopy(model).to("meta")
    for m in wide.modules():
        m._forward_hooks.clear()  # the caller hooks the wide model itself
        m._forward_pre_hooks.clear()
    for parent in list(wide.modules()):
        for name, child in list(parent.named_children()):
            if list(child.children()):
                continue  # containers are walked through by wide.modules()
            new = _wide(child, runs)
            if new is not None:
                new.train(child.training)
                setattr(parent, name, new)
    return wide


def wide_shape(single: torch.Size | tuple[int, ...], runs: int) -> tuple[int, ...]:
    """Shape in the wide model of a parameter or buffer of shape ``single`` in one run.

    Every wide tensor is the R stacked tensors ``(R, *single)`` with the first two
    dimensions merged; 0-d tensors (``num_batches_tracked``) stay 0-d.
    """
    single = tuple(single)
    if not single:
        return ()
    return (runs * single[0], *single[1:])
