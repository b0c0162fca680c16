"""The class selectivity regulariser (Leavitt & Morcos, eq. 2).

    loss = cross_entropy - alpha * mu_SI

``mu_SI`` is computed on every minibatch from that minibatch's activations,
differentiably: per unit the index of :mod:`selectivity.core.metrics`, averaged over the
units of each layer and then over layers (eq. 3).

Minibatch rules (choices the paper leaves open)
-----------------------------------------------
* Class **means**, not sums, so unbalanced minibatches do not bias the index.
* Classes absent from the minibatch are skipped: ``mu_max`` and ``mu_rest`` use the
  classes present. With fewer than two classes present the term is 0.
* ``eps`` (default 1e-6) is added to the denominator.
* Dead units (``mu_max + mu_rest <= 0`` in the minibatch, i.e. no response under ReLU)
  follow the ``dead`` rule:

  - ``"exclude"`` (default): the unit is left out of its layer's mean; a layer with no
    live unit is left out of the mean over layers.
  - ``"include"``: the paper's formula with ``eps`` taken literally: a dead unit counts
    with index 0 in its layer's mean (``0 / eps``) and every layer counts.

  Either way a dead unit's index is a constant 0 with zero gradient: a double
  ``torch.where`` keeps NaN (and the ``1/eps`` slope of ``0 / eps``) out of the backward.
* Negative responses follow the ``negative`` rule of :mod:`selectivity.core.metrics`
  (default ``"shift"``).

No host synchronisation
-----------------------
The term is computed without reading a value back from the device: no ``int()``,
``bool()`` or ``.item()``, no boolean-mask indexing, no Python branch on a tensor value.
Absent classes and dead units are handled with masks (``torch.where``), and the layer
means come from one ``index_add`` over a layer-id vector. The one check that needs the
labels' values (range ``[0, num_classes)``) runs only with ``check_labels=True``;
training validates the labels once where the data are loaded (:class:`~selectivity.data.ImageDataset`)
and passes ``check_labels=False``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, overload

import torch
from torch import nn

from .hooks import ActivationCapture, LayerSpec, PerLayer
from .metrics import NEGATIVE_RULES
from .responses import unit_responses

__all__ = [
    "DEAD_RULES",
    "SelectivityRegularizer",
    "batch_selectivity",
    "layer_ids",
    "masked_selectivity",
]

#: How units dead in the minibatch enter the layer means (module docstring).
DEAD_RULES = ("exclude", "include")


def _check_rules(num_classes: int, negative: str, dead: str) -> None:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if negative not in NEGATIVE_RULES:
        raise ValueError(f"negative must be one of {NEGATIVE_RULES}, got {negative!r}")
    if dead not in DEAD_RULES:
        raise ValueError(f"dead must be one of {DEAD_RULES}, got {dead!r}")


def layer_ids(sizes: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Layer index of every unit when layers of ``sizes`` units are laid side by side.

    Built with fill kernels on ``device`` (no host-to-device copy, which would
    synchronise a CUDA stream).

    Parameters
    ----------
    sizes : sequence of int
        Units per layer ``(U_0, ..., U_{L-1})``.
    device : torch.device or str

    Returns
    -------
    torch.Tensor
        ``(sum(sizes),)`` int64: ``[0]*U_0 + [1]*U_1 + ...``.

    Examples
    --------
    >>> layer_ids([2, 3])
    tensor([0, 0, 1, 1, 1])
    """
    if not sizes or any(int(s) < 1 for s in sizes):
        raise ValueError(f"sizes must be a non-empty list of positive unit counts, got {list(sizes)}")
    return torch.cat([torch.full((int(s),), i, dtype=torch.long, device=device) for i, s in enumerate(sizes)])


def masked_selectivity(
    r: torch.Tensor,
    labels: torch.Tensor,
    ids: torch.Tensor,
    num_layers: int,
    num_classes: int,
    eps: float = 1e-6,
    negative: str = "shift",
    dead: str = "exclude",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minibatch selectivity of several independent runs, without host synchronisation.

    The shared core of :func:`batch_selectivity` (one run) and of fused training
    (:mod:`selectivity.training.fused`, R runs). Arguments are not validated beyond shapes known
    on the host: labels must already lie in ``[0, num_classes)``.

    Parameters
    ----------
    r : torch.Tensor
        ``(R, B, U)`` unit responses: R runs, B samples per run, all layers' units side
        by side (float32 or float64; half precision is promoted to float32).
    labels : torch.Tensor
        ``(R, B)`` integer labels of each run's minibatch.
    ids : torch.Tensor
        ``(U,)`` int64 layer index of every unit (:func:`layer_ids`).
    num_layers : int
        ``L``, the number of layers (``ids.max() + 1``).
    num_classes : int
        Number of classes ``C``.
    eps : float
        Added to the denominator.
    negative : {"shift", "clamp", "raw"}
        Rule for negative class means.
    dead : {"exclude", "include"}
        Rule for dead units (module docstring).

    Returns
    -------
    mean : torch.Tensor
        ``(R,)`` network selectivity (eq. 3) of each run; 0 where undefined.
    per_layer : torch.Tensor
        ``(R, L)`` layer means; 0 for a layer without live units.
    """
    if r.dtype in (torch.float16, torch.bfloat16):
        r = r.float()  # class means of mixed-precision activations are taken in float32
    dt, dev = r.dtype, r.device
    classes = torch.arange(num_classes, device=dev)
    onehot = (labels.to(dev).unsqueeze(-1) == classes).to(dt)  # (R, B, C)
    counts = onehot.sum(dim=1)  # (R, C)
    present = (counts > 0).unsqueeze(-1)  # (R, C, 1)
    n_present = present.sum(dim=1)  # (R, 1) int64
    weights = onehot / counts.clamp(min=1.0).unsqueeze(1)  # (R, B, C): averaging weights
    m = weights.transpose(1, 2) @ r  # (R, C, U) class means; rows of absent classes are 0
    if negative == "shift":
        # Shift only units whose smallest present class mean is negative (as in metrics).
        lo = (
            torch.where(present, m, torch.full_like(m, float("inf"))).min(dim=1, keepdim=True).values
        )  # (R, 1, U)
        m = m - lo.clamp(max=0.0)
    elif negative == "clamp":
        m = m.clamp(min=0.0)
    defined = n_present >= 2  # (R, 1): fewer than two classes -> the term is 0
    mu_max = torch.where(present, m, torch.full_like(m, float("-inf"))).max(dim=1).values  # (R, U)
    mu_max = torch.where(defined, mu_max, torch.zeros_like(mu_max))  # finite where undefined
    total = torch.where(present, m, torch.zeros_like(m)).sum(dim=1)  # (R, U) over present classes
    mu_rest = (total - mu_max) / (n_present - 1).clamp(min=1).to(dt)
    den = mu_max + mu_rest
    live = (den > 0) & defined  # (R, U)
    # Double-where: the masked branch never sees 0/0, so gradients stay finite.
    safe_den = torch.where(live, den + eps, torch.ones_like(den))
    si = torch.where(live, (mu_max - mu_rest) / safe_den, torch.zeros_like(den))  # (R, U)
    nr = si.shape[0]
    layer_sum = si.new_zeros(nr, num_layers).index_add(1, ids, si)  # (R, L)
    layer_live = si.new_zeros(nr, num_layers).index_add(1, ids, live.to(dt))  # (R, L)
    if dead == "exclude":
        per_layer = layer_sum / layer_live.clamp(min=1.0)
        has_live = (layer_live > 0).to(dt)
        mean = (per_layer * has_live).sum(dim=1) / has_live.sum(dim=1).clamp(min=1.0)
    else:
        units = si.new_zeros(nr, num_layers).index_add(1, ids, torch.ones_like(si))  # (R, L)
        per_layer = layer_sum / units
        mean = per_layer.mean(dim=1)
    return mean, per_layer


def batch_selectivity(
    acts: list[torch.Tensor],
    labels: torch.Tensor,
    num_classes: int,
    eps: float = 1e-6,
    negative: str = "shift",
    dead: str = "exclude",
    check_labels: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable minibatch selectivity of several layers at once.

    Parameters
    ----------
    acts : list of torch.Tensor
        One ``(B, U_l)`` (or ``(B, U_l, H, W)``) tensor per layer; other layouts
        (``(B, T, D)`` tokens) reduced first with
        :func:`selectivity.core.responses.unit_responses`.
    labels : torch.Tensor
        ``(B,)`` integer labels.
    num_classes : int
        Number of classes.
    eps : float
        Added to the denominator.
    negative : {"shift", "clamp", "raw"}
        Rule for negative class means.
    dead : {"exclude", "include"}
        Rule for units dead in the minibatch (module docstring).
    check_labels : bool, default True
        Check that the labels lie in ``[0, num_classes)``. This reads two values back
        from the device (a host synchronisation on a GPU); training checks the labels
        once when the data are loaded and passes False. Unchecked out-of-range labels
        are silently treated as absent classes.

    Returns
    -------
    mean : torch.Tensor
        Scalar network selectivity (eq. 3); 0 (with a graph) if undefined.
    per_layer : torch.Tensor
        ``(L,)`` layer means; NaN-free: under ``dead="exclude"`` layers with no live
        unit are 0 and are excluded from ``mean``.
    """
    _check_rules(num_classes, negative, dead)
    r, sizes = _responses(acts, labels, num_classes, check_labels)
    ids = layer_ids(sizes, r.device)
    mean, per_layer = masked_selectivity(
        r.unsqueeze(0), labels.unsqueeze(0), ids, len(sizes), num_classes, eps, negative, dead
    )  # (1,), (1, L)
    return mean[0], per_layer[0]


def _responses(
    acts: list[torch.Tensor], labels: torch.Tensor, num_classes: int, check_labels: bool
) -> tuple[torch.Tensor, list[int]]:
    """Checked ``(B, U)`` responses of all layers side by side, and the layer sizes."""
    if not acts:
        raise ValueError("no activations recorded: run a forward pass inside the context")
    flat = [unit_responses(a) for a in acts]  # each (B, U_l); the one reduction rule
    sizes = [f.shape[1] for f in flat]
    r = torch.cat(flat, dim=1)  # (B, U) all layers side by side: one pass of math
    b = r.shape[0]
    if labels.dim() != 1 or labels.shape[0] != b:
        raise ValueError(f"labels must have shape ({b},) to match the batch, got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if check_labels and b:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes - 1}], got [{lo}, {hi}]")
    return r, sizes


class SelectivityRegularizer:
    """Class selectivity regulariser for any ``nn.Module``.

    Forward hooks record the chosen layers' outputs (reduced to ``(B, units)`` by
    their layout: spatial mean of conv maps, pooled tokens of ``(B, T, D)`` outputs
    with D units) while the object is used as a context manager; hooks are removed on
    exit, also on exceptions.

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
    dead : {"exclude", "include"}, default "exclude"
        Rule for units dead in the minibatch (module docstring).
    check_labels : bool, default True
        Check every minibatch's labels against ``num_classes`` (one host
        synchronisation per step on a GPU). Training passes False: its labels were
        checked once when the data were loaded, which keeps the step sync-free.
    layouts, sites : str or mapping, optional
        Per-layer layout and site kind (:func:`selectivity.core.hooks.resolve_sites`).
    pooling : {"mean", "cls", "max"}, default "mean"
        Pooling over tokens of ``"tokens"`` sites; a padding mask passed to the model
        as ``attention_mask=`` (or set on :attr:`mask`) restricts it to real tokens.

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
        dead: str = "exclude",
        check_labels: bool = True,
        *,
        layouts: PerLayer = None,
        sites: PerLayer = None,
        pooling: str = "mean",
    ) -> None:
        _check_rules(num_classes, negative, dead)
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
        self.dead = dead
        self.check_labels = bool(check_labels)
        self._ids: dict[tuple[tuple[int, ...], torch.device], torch.Tensor] = {}
        self._capture = ActivationCapture(
            model, layers, detach=False, layouts=layouts, sites=sites, pooling=pooling
        )
        self.layer_names = self._capture.layer_names
        self.sites = self._capture.sites

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
        self._capture.check_ran()
        return names, tensors

    @property
    def mask(self) -> torch.Tensor | None:
        """Padding mask ``(B, T)`` for token sites of the next passes (None: ``attention_mask=``)."""
        return self._capture.mask

    @mask.setter
    def mask(self, value: torch.Tensor | None) -> None:
        self._capture.mask = value

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
        r, sizes = _responses(tensors, labels, self.num_classes, self.check_labels)
        key = (tuple(sizes), r.device)
        if key not in self._ids:  # built once: the step itself creates no index tensors
            self._ids[key] = layer_ids(sizes, r.device)
        means, per = masked_selectivity(
            r.unsqueeze(0),
            labels.unsqueeze(0),
            self._ids[key],
            len(sizes),
            self.num_classes,
            self.eps,
            self.negative,
            self.dead,
        )  # (1,), (1, L)
        mean, layers = means[0], per[0]
        if per_layer:
            return mean, dict(zip(names, layers.unbind(0)))
        return mean

    def penalty(self, labels: torch.Tensor) -> torch.Tensor:
        """The loss term ``-alpha * mu_SI`` for the last forward pass (add it to CE)."""
        if self.alpha == 0.0:
            # No graph work at alpha = 0 beyond a zero that keeps dtype/device.
            _, tensors = self._recorded()
            return tensors[0].sum() * 0.0
        mean = self.selectivity(labels)
        assert isinstance(mean, torch.Tensor)  # per_layer=False: a tensor, not a tuple
        return -self.alpha * mean

    def clear(self) -> None:
        """Release the recorded activations (and their graph)."""
        self._capture.clear()
