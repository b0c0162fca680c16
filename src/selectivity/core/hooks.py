"""Choosing which modules are "units" and capturing their outputs with forward hooks.

Hooks exist only inside :class:`ActivationCapture`'s ``with`` block and are removed in
``finally``, so an exception inside the block never leaves a hook behind.

A *site* is a module, what of it is recorded (its ``"output"``, or its ``"input"``:
the neuron of a gated MLP is the input of its ``down_proj``) and the layout of that
tensor (:mod:`selectivity.core.responses`). Layouts and sites are declared per layer
with a mapping from module names (or ``fnmatch`` patterns such as
``"blocks.*.mlp.act"``) to values, or for every layer with one value; a model may
declare its own with ``default_selectivity_layouts()``.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch
from torch import nn

from .responses import LAYOUTS, check_layout, check_pooling, unit_responses

__all__ = [
    "ACTIVATION_NAMES",
    "ACTIVATION_TYPES",
    "SITE_KINDS",
    "LayerSpec",
    "PerLayer",
    "Site",
    "resolve_layers",
    "resolve_sites",
    "attach_site_hooks",
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

#: Class names of activation modules of other libraries (Hugging Face ``transformers``,
#: timm, ...) that default site discovery recognises without importing them.
ACTIVATION_NAMES: frozenset[str] = frozenset(
    {
        "GELU",
        "GELUActivation",
        "NewGELUActivation",
        "FastGELUActivation",
        "QuickGELUActivation",
        "GELUTanh",
        "PytorchGELUTanh",
        "SiLU",
        "SiLUActivation",
        "Swish",
        "ReLU",
        "ReLUSquaredActivation",
        "QuickGELU",
        "GeLU",
        "Mish",
        "MishActivation",
        "StarReLU",
    }
)

#: What of a module a site records.
SITE_KINDS: tuple[str, ...] = ("output", "input")

#: Module names, module types, or a mix of both.
LayerSpec: TypeAlias = None | str | type | Sequence[str | type]
#: One value for every layer, or a mapping from module names / fnmatch patterns to values.
PerLayer: TypeAlias = None | str | Mapping[str, str]


def _is_activation(module: nn.Module) -> bool:
    return isinstance(module, ACTIVATION_TYPES) or type(module).__name__ in ACTIVATION_NAMES


def resolve_layers(model: nn.Module, layers: LayerSpec = None) -> list[str]:
    """Qualified names of the modules whose outputs count as units.

    Parameters
    ----------
    model : nn.Module
        The network.
    layers : None, str, type, or sequence of str/type
        ``None``: the model's ``default_selectivity_layers()`` if it defines one (every
        built-in model does: the activation after each conv layer), else every module
        of a type in :data:`ACTIVATION_TYPES` or whose class name is in
        :data:`ACTIVATION_NAMES` (activations of other libraries). Strings are names as
        in ``model.named_modules()`` or ``fnmatch`` patterns (``"h.*.mlp.act"``); types
        select every module of that type.

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
        found = [n for n, m in modules.items() if n and _is_activation(m)]
        if not found:
            raise ValueError(
                f"{type(model).__name__} has no module matching an activation (a type in ACTIVATION_TYPES "
                f"or a class named one of {sorted(ACTIVATION_NAMES)}); pass layers= with the module names, "
                f"patterns or types whose outputs are the units (see selectivity.sites(model, x))"
            )
        return found
    else:
        specs = [layers] if isinstance(layers, (str, type)) else list(layers)
        if not specs:
            raise ValueError("layers is empty: give module names or module types")
        what = "the given layers " + repr([s if isinstance(s, str) else s.__name__ for s in specs])

    chosen: set[str] = set()
    for spec in specs:
        if isinstance(spec, str) and _is_pattern(spec):
            matched = [n for n in modules if n and fnmatch.fnmatchcase(n, spec)]
            if not matched:
                raise ValueError(
                    f"no module of {type(model).__name__} matches the pattern {spec!r}. "
                    f"Names are those of model.named_modules()."
                )
            chosen.update(matched)
        elif isinstance(spec, str):
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


def _is_pattern(s: str) -> bool:
    return any(c in s for c in "*?[")


def per_layer_value(spec: PerLayer, name: str, default: str | None = None) -> str | None:
    """The value ``spec`` gives layer ``name``: exact name first, then the first matching pattern."""
    if spec is None:
        return default
    if isinstance(spec, str):
        return spec
    if name in spec:
        return spec[name]
    for key, value in spec.items():
        if _is_pattern(key) and fnmatch.fnmatchcase(name, key):
            return value
    return default


@dataclass(frozen=True)
class Site:
    """One recorded tensor: module ``name``, its ``"output"`` or ``"input"``, and its layout."""

    name: str
    kind: str = "output"
    layout: str | None = None

    def reduce(
        self, t: torch.Tensor, pooling: str = "mean", mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """This site's tensor as ``(N, units)`` (:func:`selectivity.core.responses.unit_responses`)."""
        return unit_responses(
            t, self.layout, pooling=pooling, mask=mask if self.layout == "tokens" else None, name=self.name
        )


def resolve_sites(
    model: nn.Module, layers: LayerSpec = None, layouts: PerLayer = None, sites: PerLayer = None
) -> list[Site]:
    """The sites of ``model``: which modules, what of them, and in which layout.

    Parameters
    ----------
    model : nn.Module
    layers : LayerSpec
        Which modules (:func:`resolve_layers`).
    layouts : str or mapping, optional
        Layout of every layer (one of :data:`~selectivity.core.responses.LAYOUTS`), or a
        mapping of module names / patterns to layouts. Layers it does not name take the
        model's ``default_selectivity_layouts()`` if it has one, else None (2-D and
        4-D inferred; 3-D refused).
    sites : str or mapping, optional
        ``"output"`` (default) or ``"input"`` for every layer, or a mapping of names /
        patterns to them.

    Returns
    -------
    list of Site
        In the model's module order.
    """
    names = resolve_layers(model, layers)
    declared = getattr(model, "default_selectivity_layouts", None)
    model_layouts: Mapping[str, str] = dict(declared()) if callable(declared) else {}
    _check_per_layer(layouts, LAYOUTS, "layouts")
    _check_per_layer(sites, SITE_KINDS, "sites")
    out = []
    for name in names:
        layout = per_layer_value(layouts, name, per_layer_value(model_layouts, name))
        check_layout(layout)
        kind = per_layer_value(sites, name, "output") or "output"
        out.append(Site(name, kind, layout))
    return out


def _check_per_layer(spec: PerLayer, allowed: tuple[str, ...], what: str) -> None:
    if spec is None:
        return
    values = [spec] if isinstance(spec, str) else list(spec.values()) if isinstance(spec, Mapping) else None
    if values is None:
        raise TypeError(f"{what} must be a string or a mapping of layer names to strings, got {spec!r}")
    for v in values:
        if v not in allowed:
            raise ValueError(f"unknown {what} value {v!r}; choose one of {', '.join(allowed)}")


def attach_site_hooks(
    model: nn.Module,
    sites: Sequence[Site],
    record: Callable[[Site, torch.Tensor], None],
) -> list[torch.utils.hooks.RemovableHandle]:
    """Hook every site of ``model``: ``record(site, tensor)`` is called with its raw tensor.

    Output sites use a forward hook, input sites a forward pre-hook (the module's first
    positional input). The caller owns the handles and removes them (in ``finally``).
    """
    modules = dict(model.named_modules())
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for site in sites:
            module = modules[site.name]
            if site.kind == "input":
                handles.append(module.register_forward_pre_hook(_input_hook(site, record), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(_output_hook(site, record)))
    except BaseException:
        for h in handles:
            h.remove()
        raise
    return handles


def _output_hook(site: Site, record: Callable[[Site, torch.Tensor], None]) -> Callable[..., None]:
    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"module {site.name!r} returned {type(output).__name__}; selectivity "
                f"layers must return a single tensor (or record their input: sites={{{site.name!r}: 'input'}})"
            )
        record(site, output)

    return hook


def _input_hook(site: Site, record: Callable[[Site, torch.Tensor], None]) -> Callable[..., None]:
    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        first = args[0] if args else next(iter(kwargs.values()), None)
        if not isinstance(first, torch.Tensor):
            raise TypeError(f"the input of module {site.name!r} is not a tensor: {type(first).__name__}")
        record(site, first)

    return hook


def never_ran_error(missing: Sequence[str]) -> RuntimeError:
    """The error for requested layers that produced nothing in a forward pass."""
    names = ", ".join(repr(n) for n in missing)
    return RuntimeError(
        f"layer {names} never ran in the forward pass: modules called functionally "
        f"(e.g. F.gelu instead of an nn.GELU module) have no hook; choose modules that run "
        f"(see selectivity.sites(model, x))"
    )


class ActivationCapture:
    """Context manager that records the chosen sites' tensors during forward passes.

    Every recorded tensor is reduced to ``(N, U)`` inside the hook, so only small
    tensors are kept: by ``reduce`` if given, else by the site's layout
    (:func:`selectivity.core.responses.unit_responses`; 4-D conv maps -> spatial mean,
    ``(N, T, D)`` tokens -> D units pooled over tokens). The record is cleared at the
    start of each forward pass of ``model`` (a forward pre-hook on the root module),
    so after ``model(x)`` it holds exactly that pass. A module called several times in
    one pass gives one entry per call, named ``name``, ``name#1``, ``name#2``, ...

    Parameters
    ----------
    model : nn.Module
    layers : LayerSpec
        See :func:`resolve_layers`.
    reduce : callable, optional
        Applied to each raw tensor in the hook instead of the layout rule.
    detach : bool
        Detach the recorded tensors (measurement); keep their autograd graph when
        False (regulariser). Unrelated to removing the hooks, which
        :meth:`remove_hooks` (or leaving the ``with`` block) does.
    layouts, sites : str or mapping, optional
        Per-layer layout and site kind (:func:`resolve_sites`).
    pooling : {"mean", "cls", "max"}
        Pooling over tokens of ``"tokens"`` sites.
    token_level : bool
        Keep ``"tokens"`` sites unpooled, ``(N, T, D)`` (token-level labels); other
        layouts are then refused.
    mask_kwarg : str or None, default "attention_mask"
        A keyword argument of the model's forward taken as the padding mask ``(N, T)``
        (1 = real token) of each pass; :attr:`mask`, when set, takes precedence.

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
        *,
        layouts: PerLayer = None,
        sites: PerLayer = None,
        pooling: str = "mean",
        token_level: bool = False,
        mask_kwarg: str | None = "attention_mask",
    ) -> None:
        check_pooling(pooling)
        self.model = model
        self.sites = resolve_sites(model, layers, layouts, sites)
        self.layer_names = [s.name for s in self.sites]
        self.reduce = reduce
        self.detach = detach
        self.pooling = pooling
        self.token_level = bool(token_level)
        self.mask_kwarg = mask_kwarg
        #: Padding mask ``(N, T)`` for the next passes (None: from ``mask_kwarg``, else none).
        self.mask: torch.Tensor | None = None
        self._pass_mask: torch.Tensor | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._names: list[str] = []
        self._tensors: list[torch.Tensor] = []
        self._calls: dict[str, int] = {}

    # -- hook bodies -------------------------------------------------------------
    def _reset(self, *_args: object) -> None:
        self._names.clear()
        self._tensors.clear()
        self._calls.clear()

    def _start_pass(self, _module: nn.Module, _args: object, kwargs: dict[str, Any]) -> None:
        self._reset()
        found = kwargs.get(self.mask_kwarg) if self.mask_kwarg else None
        self._pass_mask = self.mask if self.mask is not None else found

    def _record(self, site: Site, t: torch.Tensor) -> None:
        k = self._calls.get(site.name, 0)
        self._calls[site.name] = k + 1
        if self.detach:
            t = t.detach()
        if self.reduce is not None:
            r = self.reduce(t)
        elif self.token_level:
            r = self._tokens(site, t)  # (N, T, D) kept: each labelled token is a sample
        else:
            r = site.reduce(t, self.pooling, self._pass_mask)
        self._names.append(site.name if k == 0 else f"{site.name}#{k}")
        self._tensors.append(r)

    @staticmethod
    def _tokens(site: Site, t: torch.Tensor) -> torch.Tensor:
        if site.layout != "tokens" or t.dim() != 3:
            raise ValueError(
                f"token-level labels (N, T) need token layers, but layer {site.name!r} has layout "
                f"{site.layout!r} and output {tuple(t.shape)}; declare layouts={{{site.name!r}: 'tokens'}} "
                f"or use (N,) labels"
            )
        return t

    # -- context management ------------------------------------------------------
    def add_hooks(self) -> None:
        """Register the forward hooks (``with`` does it on entry)."""
        if self._handles:
            raise RuntimeError("ActivationCapture is already attached")
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._start_pass, with_kwargs=True))
            self._handles.extend(attach_site_hooks(self.model, self.sites, self._record))
        except BaseException:
            self.remove_hooks()
            raise

    def remove_hooks(self) -> None:
        """Remove every hook and drop the record (``with`` does it on exit)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._reset()
        self._pass_mask = None

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

    def missing(self) -> list[str]:
        """Requested layers that recorded nothing in the last forward pass."""
        return [n for n in self.layer_names if n not in self._calls]

    def check_ran(self) -> None:
        """Raise if a requested layer recorded nothing in the last forward pass (naming it)."""
        missing = self.missing()
        if missing:
            raise never_ran_error(missing)

    def clear(self) -> None:
        """Drop the recorded tensors (and with them their autograd graph)."""
        self._reset()


def count_hooks(model: nn.Module) -> int:
    """Number of forward (pre-)hooks registered on ``model`` and its submodules."""
    total = 0
    for m in model.modules():
        total += len(m._forward_hooks) + len(m._forward_pre_hooks)
    return total
