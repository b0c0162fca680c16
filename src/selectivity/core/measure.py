"""Streaming measurement of a model's per-unit selectivity, dead units and precision.

Batches are ``(x, y)``: ``x`` a tensor (``model(x)``) or a mapping of tensors
(``model(**x)``, a Hugging Face batch; its ``attention_mask`` is the padding mask of
token sites), ``y`` either ``(B,)`` labels (one sample per input) or ``(B, T)``
token-level labels, where every token with a label other than :data:`IGNORE_INDEX`
(-100, the Hugging Face convention) is a sample of its own.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .hooks import ActivationCapture, LayerSpec, PerLayer
from .metrics import SelectivityAccumulator, layer_mean

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["IGNORE_INDEX", "LayerReport", "SelectivityReport", "TopActivations", "measure_selectivity"]

#: Token label that marks a token as no sample (padding, sub-word continuations).
IGNORE_INDEX = -100


@dataclass
class LayerReport:
    """Per-unit values of one layer (one call of one module)."""

    name: str
    selectivity: torch.Tensor  # (U,) float64, NaN for dead units
    precision: torch.Tensor | None  # (U,) float64 or None
    dead: torch.Tensor  # (U,) bool
    class_means: torch.Tensor | None = None  # (C, U) float64 mean response per class
    top_values: torch.Tensor | None = None  # (k, U) float64 largest responses, descending
    top_samples: torch.Tensor | None = None  # (k, U) int64 their sample indices (data order)
    top_tokens: torch.Tensor | None = None  # (k, U) int64 their token positions (token labels only)

    @property
    def preferred_class(self) -> torch.Tensor | None:
        """``(U,)`` int64 class of each unit's largest class mean (None without class means)."""
        return None if self.class_means is None else self.class_means.argmax(dim=0)

    @property
    def num_units(self) -> int:
        return int(self.dead.numel())

    @property
    def mean_selectivity(self) -> float:
        """Mean index over all units, dead units counting as 0 (the paper's main measure)."""
        return layer_mean(self.selectivity, self.dead)

    @property
    def mean_selectivity_live(self) -> float:
        """Mean index over the units that are not dead (paper 1, Fig. A9b)."""
        return layer_mean(self.selectivity)

    @property
    def mean_precision(self) -> float:
        return layer_mean(self.precision) if self.precision is not None else float("nan")

    @property
    def dead_fraction(self) -> float:
        return float(self.dead.double().mean()) if self.num_units else float("nan")


@dataclass
class SelectivityReport:
    """Result of :func:`measure_selectivity`."""

    layers: list[LayerReport]
    num_samples: int
    accuracy: float | None = None
    top_n: int | None = None
    extra: dict = field(default_factory=dict)
    token_level: bool = False  # samples are labelled tokens (labels (N, T))

    @staticmethod
    def _mean(values: list[float]) -> float:
        ok = [v for v in values if not math.isnan(v)]
        return sum(ok) / len(ok) if ok else float("nan")

    @property
    def mean_selectivity(self) -> float:
        """Network selectivity, eq. 3: mean over units per layer, then over layers.

        Dead units count with index 0, as in the paper's main figures (1b, A1b, 4c).
        """
        return self._mean([l.mean_selectivity for l in self.layers])

    @property
    def mean_selectivity_live(self) -> float:
        """Network selectivity after removing dead units (paper 1, Fig. A9b)."""
        return self._mean([l.mean_selectivity_live for l in self.layers])

    @property
    def mean_precision(self) -> float:
        return self._mean([l.mean_precision for l in self.layers])

    @property
    def dead_fraction(self) -> float:
        """Share of dead units over all units of all layers."""
        n = sum(l.num_units for l in self.layers)
        return sum(int(l.dead.sum()) for l in self.layers) / n if n else float("nan")

    def per_layer(self) -> list[dict]:
        """One plain dict per layer (JSON-ready)."""
        return [
            {
                "layer": l.name,
                "units": l.num_units,
                "selectivity": l.mean_selectivity,
                "selectivity_live": l.mean_selectivity_live,
                "dead_fraction": l.dead_fraction,
                "precision": l.mean_precision,
            }
            for l in self.layers
        ]

    def to_frame(self, class_names: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per unit of every layer, as a pandas DataFrame.

        Columns: ``layer``, ``unit`` (index in the layer), ``selectivity`` (NaN for dead
        units), ``precision`` (NaN when not measured), ``dead``, and, when class means
        were kept, ``preferred_class`` (index of the largest class mean),
        ``preferred_name`` and ``mean_<class>`` (mean response per class; class names
        from ``class_names``, else ``0, 1, ...``).
        """
        import numpy as np
        import pandas as pd

        parts = []
        for l in self.layers:
            u = l.num_units
            cols: dict[str, object] = {
                "layer": [l.name] * u,
                "unit": np.arange(u),
                "selectivity": l.selectivity.numpy(),
                "precision": l.precision.numpy() if l.precision is not None else np.full(u, np.nan),
                "dead": l.dead.numpy(),
            }
            if l.class_means is not None:
                c = l.class_means.shape[0]
                names = (
                    [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(c)]
                )
                if len(names) != c:
                    raise ValueError(f"{len(names)} class names for {c} classes")
                pref = l.class_means.argmax(dim=0).numpy()
                cols["preferred_class"] = pref
                cols["preferred_name"] = [names[i] for i in pref]
                for i, name in enumerate(names):
                    cols[f"mean_{name}"] = l.class_means[i].numpy()
            parts.append(pd.DataFrame(cols))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    def to_dict(self) -> dict:
        return {
            "num_samples": self.num_samples,
            "accuracy": self.accuracy,
            "top_n": self.top_n,
            "mean_selectivity": self.mean_selectivity,
            "mean_selectivity_live": self.mean_selectivity_live,
            "mean_precision": self.mean_precision,
            "dead_fraction": self.dead_fraction,
            "layers": self.per_layer(),
        }


class TopActivations:
    """Streaming top ``k`` responses of every unit with the samples they came from.

    State is ``(k, U)`` values and indices, whatever the number of samples: each batch
    is merged with the kept ``k`` by one ``topk`` (ties are broken by ``topk``'s order).

    Parameters
    ----------
    k : int
        Samples kept per unit (>= 1).
    """

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.values: torch.Tensor | None = None  # (k', U) float64, k' <= k
        self.samples: torch.Tensor | None = None  # (k', U) int64
        self.tokens: torch.Tensor | None = None  # (k', U) int64

    @torch.no_grad()
    def update(self, r: torch.Tensor, samples: torch.Tensor, tokens: torch.Tensor | None = None) -> None:
        """Add ``r`` ``(B, U)`` responses of samples ``(B,)`` (and token positions ``(B,)``)."""
        r = r.to(torch.float64)
        ids = samples.to(r.device).unsqueeze(1).expand_as(r)  # (B, U)
        tok = (tokens if tokens is not None else torch.full_like(samples, -1)).to(r.device)
        toks = tok.unsqueeze(1).expand_as(r)  # (B, U)
        if self.values is not None:
            assert self.samples is not None and self.tokens is not None
            r = torch.cat([self.values, r])  # (k' + B, U)
            ids = torch.cat([self.samples, ids])
            toks = torch.cat([self.tokens, toks])
        top = r.topk(min(self.k, r.shape[0]), dim=0)  # (k', U)
        self.values = top.values
        self.samples = ids.gather(0, top.indices)
        self.tokens = toks.gather(0, top.indices)


def _call(model: nn.Module, x: Any) -> Any:
    return model(**x) if isinstance(x, Mapping) else model(x)


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, Mapping):
        return {
            k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in x.items()
        }
    return x.to(device, non_blocking=True)


def _logits(out: Any) -> torch.Tensor | None:
    """The logits of a forward's output: the tensor itself, or ``.logits`` (Hugging Face)."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else None


@torch.no_grad()
def measure_selectivity(
    model: nn.Module,
    batches: Iterable[tuple[Any, torch.Tensor]],
    num_classes: int,
    layers: LayerSpec = None,
    top_n: int | None = 1000,
    negative: str = "shift",
    device: torch.device | str | None = None,
    progress: bool = False,
    *,
    layouts: PerLayer = None,
    sites: PerLayer = None,
    pooling: str = "mean",
    top_k: int | None = None,
) -> SelectivityReport:
    """Measure every unit's class selectivity over a dataset, streaming.

    The model runs in eval mode under ``torch.no_grad``; hooks reduce each chosen
    site's tensor to ``(B, U)`` (:mod:`selectivity.core.responses`) and a single
    :class:`SelectivityAccumulator` over all layers' units keeps per-class sums, so
    memory is ``O(classes x units)`` (plus ``O(top_n x units)`` for precision and
    ``O(top_k x units)`` for the most-activating samples), independent of the number
    of samples.

    Parameters
    ----------
    model : nn.Module
    batches : iterable of (x, y)
        ``x`` an input tensor, or a mapping of keyword inputs (``model(**x)``; its
        ``attention_mask`` masks padded tokens). ``y`` ``(B,)`` integer labels, or
        ``(B, T)`` token-level labels with ``-100`` for tokens that are no sample.
    num_classes : int
    layers : LayerSpec, optional
        Which modules are units; see :func:`selectivity.core.hooks.resolve_layers`.
    top_n : int or None, default 1000
        Samples per unit for precision (the paper's N: test images per CIFAR-10 class);
        ``None`` skips precision.
    negative : {"shift", "clamp", "raw"}
        Rule for negative responses.
    device : optional
        Device to run on; default: the model's.
    progress : bool
        Show a progress bar.
    layouts, sites : str or mapping, optional
        Per-layer layout and site kind (:func:`selectivity.core.hooks.resolve_sites`):
        ``layouts={"blocks.*.mlp.act": "tokens"}`` makes the D neurons of a
        ``(N, T, D)`` output the units; ``sites={"model.layers.*.mlp.down_proj":
        "input"}`` records a module's input.
    pooling : {"mean", "cls", "max"}
        Pooling over tokens of ``"tokens"`` sites (not used with token-level labels).
    top_k : int, optional
        Keep each unit's ``top_k`` most-activating samples (their index in the data
        order, and the token position with token-level labels).

    Returns
    -------
    SelectivityReport
        Per-layer values and the accuracy of the logits (when the output is
        ``(B, num_classes)`` logits, or ``(B, T, num_classes)`` with token labels).

    Raises
    ------
    RuntimeError
        A requested layer never ran in a forward pass (e.g. a module called
        functionally), naming it.
    """
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    it = iter(batches)
    first = next(it, None)
    if first is None:
        raise ValueError("no batches: the data iterable was empty")
    token_level = torch.as_tensor(first[1]).dim() == 2
    stream: Iterable[tuple[Any, torch.Tensor]] = itertools.chain([first], it)
    was_training = model.training
    model.eval()
    acc = SelectivityAccumulator(num_classes, top_n=top_n, negative=negative, device=device)
    tops = TopActivations(top_k) if top_k is not None else None
    names: list[str] | None = None
    sizes: list[int] = []
    correct = 0
    total = 0
    seen = 0  # inputs so far: the data-order index of the next one
    scored = True  # False once an output is not logits over num_classes
    if progress:
        from tqdm.auto import tqdm

        stream = tqdm(stream, desc="measure", unit="batch", leave=False, disable=None)
    try:
        with ActivationCapture(
            model, layers, detach=True, layouts=layouts, sites=sites, pooling=pooling, token_level=token_level
        ) as cap:
            for x, y in stream:
                x = _to(x, device)
                y = torch.as_tensor(y).to(device, non_blocking=True)
                if (y.dim() == 2) != token_level:
                    raise ValueError(f"labels changed shape between batches: {tuple(y.shape)}")
                logits = _logits(_call(model, x))
                cap.check_ran()
                if names is None:
                    names = cap.names
                    sizes = [t.shape[-1] for t in cap.tensors]
                elif cap.names != names:
                    raise RuntimeError(
                        "the set of recorded layers changed between batches "
                        f"({names} vs {cap.names}); data-dependent control flow is not supported"
                    )
                b = y.shape[0]
                order = torch.arange(seen, seen + b, device=device)  # (B,) data-order index
                if token_level:
                    keep = y != IGNORE_INDEX  # (B, T)
                    r = torch.cat(cap.tensors, dim=2)[keep]  # (B, T, U)[(B, T)] -> (M, U)
                    labels = y[keep]  # (M,)
                    if tops is not None:
                        pos = torch.arange(y.shape[1], device=device)
                        tops.update(r, order.unsqueeze(1).expand_as(y)[keep], pos.expand_as(y)[keep])
                    if (
                        scored
                        and logits is not None
                        and logits.dim() == 3
                        and logits.shape[-1] == num_classes
                    ):
                        correct += int((logits.argmax(dim=-1)[keep] == labels).sum())
                    else:
                        scored = False
                else:
                    r = torch.cat(cap.tensors, dim=1)  # (B, sum U_l)
                    labels = y
                    if tops is not None:
                        tops.update(r, order)
                    if scored and logits is not None and logits.dim() == 2 and logits.shape[1] == num_classes:
                        correct += int((logits.argmax(dim=1) == y).sum())
                    else:
                        scored = False
                acc.update(r, labels)
                total += int(labels.shape[0])
                seen += b
                cap.clear()
    finally:
        model.train(was_training)
    assert names is not None
    res = acc.result()
    n_layers = len(sizes)

    def split(t: torch.Tensor | None, dim: int = 0) -> list:
        return [None] * n_layers if t is None else [p.cpu() for p in t.split(sizes, dim=dim)]

    reports = []
    for name, si, dead, prec, means, tv, ts, tt in zip(
        names,
        split(res.selectivity),
        split(res.dead),
        split(res.precision),
        split(res.class_means, 1),
        split(tops.values if tops else None, 1),
        split(tops.samples if tops else None, 1),
        split(tops.tokens if tops and token_level else None, 1),
    ):
        reports.append(LayerReport(name, si, prec, dead, means, tv, ts, tt))
    return SelectivityReport(
        reports,
        total,
        accuracy=correct / total if (total and scored) else None,
        top_n=top_n,
        token_level=token_level,
    )
