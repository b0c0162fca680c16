"""Streaming measurement of a model's per-unit selectivity, dead units and precision."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from .hooks import ActivationCapture, LayerSpec, PerLayer
from .metrics import SelectivityAccumulator, layer_mean

__all__ = ["LayerReport", "SelectivityReport", "measure_selectivity"]


@dataclass
class LayerReport:
    """Per-unit values of one layer (one call of one module)."""

    name: str
    selectivity: torch.Tensor  # (U,) float64, NaN for dead units
    precision: torch.Tensor | None  # (U,) float64 or None
    dead: torch.Tensor  # (U,) bool
    class_means: torch.Tensor | None = None  # (C, U) float64 mean response per class

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


@torch.no_grad()
def measure_selectivity(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
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
) -> SelectivityReport:
    """Measure every unit's class selectivity over a dataset, streaming.

    The model runs in eval mode under ``torch.no_grad``; hooks reduce each chosen
    layer's output to ``(B, U)`` and a single :class:`SelectivityAccumulator` over all
    layers' units keeps per-class sums, so memory is ``O(classes x units)`` (plus
    ``O(top_n x units)`` for precision), independent of the number of samples.

    Parameters
    ----------
    model : nn.Module
    batches : iterable of (x, y)
        ``x`` inputs, ``y`` ``(B,)`` integer labels.
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
        ``(N, T, D)`` output the units.
    pooling : {"mean", "cls", "max"}
        Pooling over tokens of ``"tokens"`` sites.

    Returns
    -------
    SelectivityReport
        Per-layer values and the test accuracy of the logits.
    """
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    acc = SelectivityAccumulator(num_classes, top_n=top_n, negative=negative, device=device)
    names: list[str] | None = None
    sizes: list[int] = []
    correct = 0
    total = 0
    scored = True  # False once an output is not (B, num_classes) logits
    it = batches
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(batches, desc="measure", unit="batch", leave=False)
    try:
        with ActivationCapture(
            model, layers, detach=True, layouts=layouts, sites=sites, pooling=pooling
        ) as cap:
            for x, y in it:
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                logits = model(x)
                cap.check_ran()
                if names is None:
                    names = cap.names
                    sizes = [t.shape[1] for t in cap.tensors]
                elif cap.names != names:
                    raise RuntimeError(
                        "the set of recorded layers changed between batches "
                        f"({names} vs {cap.names}); data-dependent control flow is not supported"
                    )
                acc.update(torch.cat(cap.tensors, dim=1), y)  # (B, sum U_l)
                if isinstance(logits, torch.Tensor) and logits.dim() == 2 and logits.shape[1] == num_classes:
                    correct += int((logits.argmax(dim=1) == y).sum())
                else:
                    scored = False
                total += int(y.shape[0])
                cap.clear()
    finally:
        model.train(was_training)
    if names is None:
        raise ValueError("no batches: the data iterable was empty")
    res = acc.result()
    reports = []
    for name, si, dead, prec, means in zip(
        names,
        res.selectivity.split(sizes),
        res.dead.split(sizes),
        res.precision.split(sizes) if res.precision is not None else [None] * len(sizes),
        res.class_means.split(sizes, dim=1),
    ):
        reports.append(
            LayerReport(name, si.cpu(), prec.cpu() if prec is not None else None, dead.cpu(), means.cpu())
        )
    return SelectivityReport(
        reports, total, accuracy=correct / total if (total and scored) else None, top_n=top_n
    )
