"""The class selectivity regulariser (Leavitt & Morcos, eq. 2).

    loss = cross_entropy - alpha * mu_SI

``mu_SI`` is computed on every minibatch from that minibatch's activations,
differentiably: per unit the index of :mod:`selectivity.metrics`, averaged over the
units of each layer and then over layers (eq. 3).

Minibatch rules (choices the paper leaves open)
-----------------------------------------------
* Class **means**, not sums, so unbalanced minibatches do not bias the index.
* Classes absent from the minibatch are skipped: ``mu_max`` and ``mu_rest`` use the
  classes present. With fewer than two classes present the term is 0.
* ``eps`` (default 1e-6) is added to the denominator.
* A unit that is dead in the minibatch (``mu_max + mu_rest == 0``) is left out of its
  layer's mean and gets zero gradient; a layer with no live unit is left out of the
  mean over layers. A double ``torch.where`` keeps NaN out of the backward pass.
* Negative responses follow the ``negative`` rule of :mod:`selectivity.metrics`
  (default ``"shift"``).
"""

from __future__ import annotations

from typing import Literal, overload

import torch
from torch import nn

from .hooks import ActivationCapture, LayerSpec
from .metrics import NEGATIVE_RULES, check_num_classes, index_of_present_means

__all__ = ["SelectivityRegularizer", "batch_selectivity"]


def batch_selectivity(
    acts: list[torch.Tensor],
    labels: torch.Tensor,
    num_classes: int,
    eps: float = 1e-6,
    negative: str = "shift",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable minibatch selectivity of several layers at once.

    Parameters
    ----------
    acts : list of torch.Tensor
        One ``(B, U_l)`` (or ``(B, U_l, H, W)``) tensor per layer.
    labels : torch.Tensor
        ``(B,)`` integer labels.
    num_classes : int
        Number of classes.
    eps : float
        Added to the denominator.
    negative : {"shift", "clamp", "raw"}
        Rule for negative class means.

    Returns
    -------
    mean : torch.Tensor
        Scalar network selectivity (eq. 3); 0 (with a graph) if undefined.
    per_layer : torch.Tensor
        ``(L,)`` layer means; NaN-free: layers with no live unit are 0 and are
        excluded from ``mean``.
    """
    check_num_classes(num_classes)
    if negative not in NEGATIVE_RULES:
        raise ValueError(f"negative must be one of {NEGATIVE_RULES}, got {negative!r}")
    if not acts:
        raise ValueError("no activations recorded: run a forward pass inside the context")
    flat = [a.mean(dim=(2, 3)) if a.dim() == 4 else a for a in acts]  # each (B, U_l)
    sizes = [f.shape[1] for f in flat]
    r = torch.cat(flat, dim=1)  # (B, U) all layers side by side: one pass of math
    if r.dtype in (torch.float16, torch.bfloat16):
        r = r.float()  # class means of mixed-precision activations are taken in float32
    b = r.shape[0]
    if labels.dim() != 1 or labels.shape[0] != b:
        raise ValueError(f"labels must have shape ({b},) to match the batch, got {tuple(labels.shape)}")
    if b and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}], got [{int(labels.min())}, {int(labels.max())}]"
        )
    labels = labels.to(r.device).long()
    onehot = torch.zeros(b, num_classes, dtype=r.dtype, device=r.device)
    onehot[torch.arange(b, device=r.device), labels] = 1.0
    counts = onehot.sum(dim=0)  # (C,)
    present = counts > 0
    n_present = int(present.sum())
    zero = r.sum() * 0.0  # keeps a graph so .backward() works even when undefined
    if n_present < 2:
        return zero, torch.zeros(len(sizes), dtype=r.dtype, device=r.device)
    onehot = onehot[:, present] / counts[present]  # (B, C_p): averaging weights
    m = onehot.t() @ r  # (C_p, U) class means
    si, live = index_of_present_means(m, eps, negative)  # (U,), dead units 0
    livef = live.to(r.dtype)
    layer_sum = torch.stack([s.sum() for s in si.split(sizes)])  # (L,)
    layer_live = torch.stack([s.sum() for s in livef.split(sizes)])  # (L,)
    has_live = layer_live > 0
    per_layer = layer_sum / layer_live.clamp(min=1.0)
    if not bool(has_live.any()):
        return zero, per_layer
    mean = per_layer[has_live].mean()
    return mean, per_layer


class SelectivityRegularizer:
    """Class selectivity regulariser for any ``nn.Module``.

    Forward hooks record the chosen layers' outputs (spatially averaged) while the
    object is used as a context manager; hooks are removed on exit, also on
    exceptions.

    Parameters
    ----------
    model : nn.Module
        The network.
    alpha : float
        Regularisation strength: < 0 penalises selectivity, > 0 promotes it.
    num_classes : int
        Number of classes.
    layers : LayerSpec, optional
        Module names or types whose outputs are the units; default: the model's
        ``default_selectivity_layers()`` (the activation after every conv layer in the
        built-in models), else every activation module.
    eps : float, default 1e-6
        Added to the index's denominator.
    negative : {"shift", "clamp", "raw"}, default "shift"
        Rule for negative responses.

    Examples
    --------
    >>> reg = SelectivityRegularizer(model, alpha=-1.0, num_classes=10)  # doctest: +SKIP
    >>> with reg:
    ...     for x, y in loader:
    ...         loss = F.cross_entropy(model(x), y) + reg.penalty(y)
    ...         loss.backward()
    """

    def __init__(
        self,
        model: nn.Module,
        alpha: float,
        num_classes: int,
        layers: LayerSpec = None,
        eps: float = 1e-6,
        negative: str = "shift",
    ) -> None:
        check_num_classes(num_classes)
        if negative not in NEGATIVE_RULES:
            raise ValueError(f"negative must be one of {NEGATIVE_RULES}, got {negative!r}")
        alpha = float(alpha)
        if alpha != alpha or alpha in (float("inf"), float("-inf")):
            raise ValueError(f"alpha must be a finite number, got {alpha}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.model = model
        self.alpha = alpha
        self.num_classes = num_classes
        self.eps = float(eps)
        self.negative = negative
        self._capture = ActivationCapture(model, layers, detach=False)
        self.layer_names = self._capture.layer_names

    # -- context management ------------------------------------------------------
    def __enter__(self) -> SelectivityRegularizer:
        self._capture.add_hooks()
        return self

    def __exit__(self, *exc) -> None:
        self._capture.remove_hooks()

    @property
    def attached(self) -> bool:
        return self._capture.hooked

    # -- the term ----------------------------------------------------------------
    def _recorded(self) -> tuple[list[str], list[torch.Tensor]]:
        if not self._capture.hooked:
            raise RuntimeError(
                "SelectivityRegularizer is not attached: use it as a context manager "
                "(`with reg: ...`) around the forward pass"
            )
        names, tensors = self._capture.names, self._capture.tensors
        if not tensors:
            raise RuntimeError(
                "no activations recorded: call the model inside `with reg:` before penalty()/selectivity()"
            )
        return names, tensors

    @overload
    def selectivity(self, labels: torch.Tensor, per_layer: Literal[False] = False) -> torch.Tensor: ...
    @overload
    def selectivity(
        self, labels: torch.Tensor, per_layer: Literal[True]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...
    def selectivity(
        self, labels: torch.Tensor, per_layer: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Differentiable mean selectivity ``mu_SI`` of the last forward pass.

        Parameters
        ----------
        labels : torch.Tensor
            ``(B,)`` labels of the minibatch.
        per_layer : bool
            Also return ``{layer name: layer mean}`` (one entry per call of a module).
        """
        names, tensors = self._recorded()
        mean, layers = batch_selectivity(
            tensors, labels, self.num_classes, eps=self.eps, negative=self.negative
        )
        if per_layer:
            return mean, dict(zip(names, layers.unbind(0)))
        return mean

    def penalty(self, labels: torch.Tensor) -> torch.Tensor:
        """The loss term ``-alpha * mu_SI`` for the last forward pass (add it to CE)."""
        if self.alpha == 0.0:
            # No graph work at alpha = 0 beyond a zero that keeps dtype/device.
            _, tensors = self._recorded()
            return tensors[0].sum() * 0.0
        return -self.alpha * self.selectivity(labels)

    def clear(self) -> None:
        """Release the recorded activations (and their graph)."""
        self._capture.clear()
