"""Choosing which modules are "units" and capturing their outputs with forward hooks.

Hooks exist only inside :class:`ActivationCapture`'s ``with`` block and are removed in
``finally``, so an exception inside the block never leaves a hook behind.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import TypeAlias

import torch
from torch import nn

__all__ = [
    "ACTIVATION_TYPES",
    "LayerSpec",
    "resolve_layers",
    "ActivationCapture",
]

#: Module types treated as activation functions when a model declares no default sites.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ReLU6,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Softplus,
    nn.Hardswish,
)

#: Module names, module types, or a mix of both.
LayerSpec: TypeAlias = None | str | type | Sequence[str | type]


def resolve_layers(model: nn.Module, layers: LayerSpec = None) -> list[str]:
    """Qualified names of the modules whose outputs count as units.

    Parameters
    ----------
    model : nn.Module
        The network.
    layers : None, str, type, or sequence of str/type
        ``None``: the model's ``default_selectivity_layers()`` if it defines one (every
        built-in model does: the activation after each conv layer), else every module
        of a type in :data:`ACTIVATION_TYPES`. Strings are names as in
        ``model.named_modules()``; types select every module of that type.

    Returns
    -------
    list of str
        Names in the model's module order, without duplicates.

    Raises
    ------
    ValueError
        If a name does not exist or nothing matches.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modules = dict(model.named_modules())
    if layers is None:
        default = getattr(model, "default_selectivity_layers", None)
        if callable(default):
            names = list(default())
            missing = [n for n in names if n not in modules]
            if missing:
                raise ValueError(
                    f"{type(model).__name__}.default_selectivity_layers() names modules "
                    f"that do not exist: {missing}"
                )
            if not names:
                raise ValueError(f"{type(model).__name__} declares no selectivity layers")
            return names
        specs: list[str | type] = list(ACTIVATION_TYPES)
        what = "an activation module (" + ", ".join(t.__name__ for t in ACTIVATION_TYPES) + ")"
    else:
        specs = [layers] if isinstance(layers, (str, type)) else list(layers)
        if not specs:
            raise ValueError("layers is empty: give module names or module types")
        what = "the given layers " + repr([s if isinstance(s, str) else s.__name__ for s in specs])

    chosen: set[str] = set()
    for spec in specs:
        if isinstance(spec, str):
            if spec not in modules or spec == "":
                close = difflib.get_close_matches(spec, [n for n in modules if n], n=5)
                hint = f" Did you mean one of {close}?" if close else ""
                raise ValueError(
                    f"no module named {spec!r} in {type(model).__name__}.{hint} "
                    f"Names are those of model.named_modules()."
                )
            chosen.add(spec)
        elif isinstance(spec, type) and issubclass(spec, nn.Module):
            chosen.update(n for n, m in modules.items() if n and isinstance(m, spec))
        else:
            raise TypeError(f"layers must be module names (str) or nn.Module subclasses, got {spec!r}")
    names = [n for n in modules if n in chosen]  # model order
    if not names:
        raise ValueError(
            f"{type(model).__name__} has no module matching {what}; pass layers= with "
            f"module names or types whose outputs should count as units"
        )
    return names


class ActivationCapture:
    """Context manager that records the outputs of chosen modules during forward passes.

    Every output is passed through ``reduce`` (default: spatial mean of 4-D outputs,
    ``(N, C, H, W) -> (N, C)``) inside the hook, so only ``(N, U)`` tensors are kept.
    The record is cleared at the start of each forward pass of ``model`` (a forward
    pre-hook on the root module), so after ``model(x)`` it holds exactly that pass. A
    module called several times in one pass gives one entry per call, named
    ``name``, ``name#1``, ``name#2``, ...

    Parameters
    ----------
    model : nn.Module
    layers : LayerSpec
        See :func:`resolve_layers`.
    reduce : callable, optional
        Applied to each output tensor in the hook.
    detach : bool
        Detach the recorded tensors (measurement); keep their autograd graph when
        False (regulariser). Unrelated to removing the hooks, which
        :meth:`remove_hooks` (or leaving the ``with`` block) does.

    Examples
    --------
    >>> with ActivationCapture(model) as cap:  # doctest: +SKIP
    ...     model(x)
    ...     acts = cap.outputs  # {"layer1.0.act1": (N, C) tensor, ...}
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec = None,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
        detach: bool = False,
    ) -> None:
        self.model = model
        self.layer_names = resolve_layers(model, layers)
        self.reduce = reduce if reduce is not None else _spatial_mean
        self.detach = detach
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._names: list[str] = []
        self._tensors: list[torch.Tensor] = []
        self._calls: dict[str, int] = {}

    # -- hook bodies -------------------------------------------------------------
    def _reset(self, *_args: object) -> None:
        self._names.clear()
        self._tensors.clear()
        self._calls.clear()

    def _make_hook(self, name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"module {name!r} returned {type(output).__name__}; selectivity "
                    f"layers must return a single tensor"
                )
            k = self._calls.get(name, 0)
            self._calls[name] = k + 1
            t = output.detach() if self.detach else output
            self._names.append(name if k == 0 else f"{name}#{k}")
            self._tensors.append(self.reduce(t))

        return hook

    # -- context management ------------------------------------------------------
    def add_hooks(self) -> None:
        """Register the forward hooks (``with`` does it on entry)."""
        if self._handles:
            raise RuntimeError("ActivationCapture is already attached")
        modules = dict(self.model.named_modules())
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._reset))
            for name in self.layer_names:
                self._handles.append(modules[name].register_forward_hook(self._make_hook(name)))
        except BaseException:
            self.remove_hooks()
            raise

    def remove_hooks(self) -> None:
        """Remove every hook and drop the record (``with`` does it on exit)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._reset()

    def __enter__(self) -> ActivationCapture:
        self.add_hooks()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove_hooks()

    @property
    def hooked(self) -> bool:
        """Whether the hooks are registered."""
        return bool(self._handles)

    # -- access ------------------------------------------------------------------
    @property
    def outputs(self) -> dict[str, torch.Tensor]:
        """Recorded ``(N, U)`` tensors of the last forward pass, in call order."""
        return dict(zip(self._names, self._tensors))

    @property
    def names(self) -> list[str]:
        return list(self._names)

    @property
    def tensors(self) -> list[torch.Tensor]:
        return list(self._tensors)

    def clear(self) -> None:
        """Drop the recorded tensors (and with them their autograd graph)."""
        self._reset()


def _spatial_mean(t: torch.Tensor) -> torch.Tensor:
    # sum * (1/HW) rather than mean: the backward of sum is a stride-0 expand, while
    # mean's backward writes a full-size (N, C, H, W) tensor per layer (regulariser cost).
    if t.dim() == 4:
        return t.sum(dim=(2, 3)) * (1.0 / (t.shape[2] * t.shape[3]))  # (N, C, H, W) -> (N, C)
    if t.dim() == 2:
        return t
    if t.dim() == 3:
        return t.sum(dim=2) * (1.0 / t.shape[2])  # (N, C, L) -> (N, C): 1-D conv feature maps
    raise ValueError(f"cannot reduce an output of shape {tuple(t.shape)} to (N, units)")


def count_hooks(model: nn.Module) -> int:
    """Number of forward (pre-)hooks registered on ``model`` and its submodules."""
    total = 0
    for m in model.modules():
        total += len(m._forward_hooks) + len(m._forward_pre_hooks)
    return total
