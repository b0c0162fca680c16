"""Where the units of a model are: candidate sites on a probe input, and presets for families.

:func:`sites` runs one forward pass with a hook on every leaf module and lists, grouped
by layer (block), each module's type and its input and output shapes, marking the
activation modules that default discovery picks. :data:`FAMILY_PRESETS` are plain
module-name patterns (``fnmatch``) with the layout and site kind of common model
families; :func:`family_preset` returns them as keyword arguments of
:func:`~selectivity.core.measure.measure_selectivity` and
:class:`~selectivity.core.regularizer.SelectivityRegularizer`. No family's library is
imported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .hooks import ACTIVATION_NAMES, ACTIVATION_TYPES

__all__ = ["FAMILY_PRESETS", "SiteInfo", "SitePreset", "family_preset", "format_sites", "sites"]


@dataclass(frozen=True)
class SitePreset:
    """Module-name patterns of a model family's units, their layout and site kind."""

    layers: list[str]
    layouts: dict[str, str] = field(default_factory=dict)
    sites: dict[str, str] = field(default_factory=dict)
    note: str = ""

    def kwargs(self) -> dict[str, Any]:
        """``layers=``, ``layouts=``, ``sites=`` for measurement and the regulariser."""
        return {
            "layers": list(self.layers),
            "layouts": dict(self.layouts) or None,
            "sites": dict(self.sites) or None,
        }


_HF_INTERMEDIATE = "*encoder.layer.*.intermediate.intermediate_act_fn"
_HF_VIT5 = "*layers.*.mlp.activation_fn"  # ViTForImageClassification of transformers >= 5

#: Units of common families: the MLP neurons of transformers, the conv activations of ResNets.
FAMILY_PRESETS: dict[str, SitePreset] = {
    "hf-bert": SitePreset(
        [_HF_INTERMEDIATE],
        {_HF_INTERMEDIATE: "tokens"},
        note="Hugging Face BERT / RoBERTa: the intermediate (MLP) activation of every layer",
    ),
    "hf-vit": SitePreset(
        [_HF_INTERMEDIATE, _HF_VIT5],
        {_HF_INTERMEDIATE: "tokens", _HF_VIT5: "tokens"},
        note="Hugging Face ViT: the MLP activation of every layer (names of transformers 4 and 5)",
    ),
    "gpt2": SitePreset(
        ["*h.*.mlp.act"],
        {"*h.*.mlp.act": "tokens"},
        note="Hugging Face GPT-2 (GPT2Model, GPT2LMHeadModel): the MLP activation of every block",
    ),
    "llama": SitePreset(
        ["*layers.*.mlp.down_proj"],
        {"*layers.*.mlp.down_proj": "tokens"},
        {"*layers.*.mlp.down_proj": "input"},
        note="Llama / Mistral: the input of down_proj, act(gate_proj(x)) * up_proj(x) (the SwiGLU neuron)",
    ),
    "timm-vit": SitePreset(
        ["blocks.*.mlp.act"],
        {"blocks.*.mlp.act": "tokens"},
        note="timm VisionTransformer (and the built-in vit): the MLP activation of every block",
    ),
    "timm-resnet": SitePreset(
        ["act1", "layer*.*.act*"],
        {"act1": "conv", "layer*.*.act*": "conv"},
        note="timm ResNet: the stem activation and every activation inside the residual blocks",
    ),
}


def family_preset(name: str) -> dict[str, Any]:
    """Keyword arguments (``layers``, ``layouts``, ``sites``) of a family preset.

    Examples
    --------
    >>> rep = measure_selectivity(model, batches, 2, **family_preset("gpt2"))  # doctest: +SKIP
    """
    if name not in FAMILY_PRESETS:
        raise ValueError(f"unknown family preset {name!r}; known: {', '.join(sorted(FAMILY_PRESETS))}")
    return FAMILY_PRESETS[name].kwargs()


@dataclass(frozen=True)
class SiteInfo:
    """One candidate site: a leaf module, its type, input and output shapes on the probe."""

    name: str
    type: str
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    activation: bool


def _group(name: str) -> str:
    """The layer (block) a module belongs to: its name up to the last numeric component inside it."""
    parts = name.split(".")
    for i in range(len(parts) - 2, -1, -1):  # a numeric last component is the module itself
        if re.fullmatch(r"\d+", parts[i]):
            return ".".join(parts[: i + 1])
    return ""


@torch.no_grad()
def sites(model: nn.Module, probe_input: Any) -> dict[str, list[SiteInfo]]:
    """Candidate selectivity sites of ``model``, grouped by layer, with shapes on a probe input.

    Parameters
    ----------
    model : nn.Module
    probe_input : tensor or mapping
        One small batch: ``model(probe_input)``, or ``model(**probe_input)`` for a
        mapping (a tokenizer's output).

    Returns
    -------
    dict
        Layer (the module name up to its last numeric component, e.g. ``"blocks.3"``;
        ``""`` for modules outside numbered blocks) -> the :class:`SiteInfo` of its leaf
        modules in call order. Modules that did not run are left out.
    """
    found: dict[str, SiteInfo] = {}
    handles = []

    def shape(t: Any) -> tuple[int, ...] | None:
        if isinstance(t, (tuple, list)) and t:
            t = t[0]
        return tuple(t.shape) if isinstance(t, torch.Tensor) else None

    def make(name: str, module: nn.Module):
        def hook(_m: nn.Module, inputs: tuple, output: Any) -> None:
            if name not in found:
                is_act = isinstance(module, ACTIVATION_TYPES) or type(module).__name__ in ACTIVATION_NAMES
                found[name] = SiteInfo(name, type(module).__name__, shape(inputs), shape(output), is_act)

        return hook

    was_training = model.training
    model.eval()
    try:
        for name, module in model.named_modules():
            if name and not list(module.children()):
                handles.append(module.register_forward_hook(make(name, module)))
        if isinstance(probe_input, Mapping):
            model(**probe_input)
        else:
            model(probe_input)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    grouped: dict[str, list[SiteInfo]] = {}
    for info in found.values():
        grouped.setdefault(_group(info.name), []).append(info)
    return grouped


def format_sites(table: Mapping[str, list[SiteInfo]]) -> str:
    """:func:`sites`' result as text, one module a line, activations marked ``*``."""
    lines = []
    for layer, infos in table.items():
        lines.append(f"[{layer or '(top level)'}]")
        for i in infos:
            mark = "*" if i.activation else " "
            lines.append(f" {mark} {i.name:<48} {i.type:<24} in {i.input_shape} -> out {i.output_shape}")
    return "\n".join(lines)
