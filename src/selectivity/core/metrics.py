"""Pure tensor functions for class selectivity (Leavitt & Morcos, eq. 1 and 3).

Conventions used throughout
---------------------------
* ``acts`` is ``(N, U)`` (N samples, U units) or ``(N, U, H, W)``; a 4-D tensor is
  reduced to the unit's response per sample by averaging over ``H, W``. Other layouts
  (``(N, T, D)`` tokens, channels-last maps) are declared with ``layout=``; the one
  reduction rule is :func:`selectivity.core.responses.unit_responses`.
* ``labels`` is ``(N,)`` of integer class indices in ``[0, num_classes)``.
* Class-conditional statistics are accumulated in float64: the index is a ratio of
  differences of means and float32 sums over 10^4 samples lose digits that matter.

Rules the papers leave open (documented choices)
------------------------------------------------
* **Absent classes** (no sample in ``labels``) are skipped: ``mu_max`` is the largest
  mean over the classes present and ``mu_rest`` the mean of the other present classes.
  With fewer than two classes present the index is undefined (NaN).
* **Dead units** (response exactly 0 for every sample) give NaN, never 0 or inf. They
  are excluded from every mean (:func:`layer_mean`, :func:`network_selectivity`) and
  counted separately (:func:`dead_units`).
* **Negative responses** (leaky ReLU, or any signed activation) are handled by the
  ``negative`` argument:

  - ``"shift"`` (default): if a unit's smallest class mean ``m`` is negative, every
    class mean of that unit is shifted by ``-m`` before the index, so that the
    smallest becomes 0. For non-negative responses nothing changes; for signed
    responses the index stays in ``[0, 1]`` and still measures how much one class
    stands out relative to the unit's range of class means.
  - ``"clamp"``: negative class means are set to 0 ("no response").
  - ``"raw"``: the formula as written; values can leave ``[0, 1]``, and a unit whose
    denominator ``mu_max + mu_rest`` is not positive gives NaN.

  Whatever the rule, a denominator of 0 gives NaN rather than inf.
* **Ties in precision** (equal responses at the ``top_n``-th place, e.g. the many zeros
  of a sparse unit) are shared among the tied samples' classes in proportion, the
  expectation over random tie-breaking (:func:`precision`): the result does not depend
  on the order or batching of the samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from .responses import unit_responses as reduce_output

__all__ = [
    "NEGATIVE_RULES",
    "class_means",
    "class_selectivity_index",
    "selectivity_from_class_means",
    "dead_units",
    "precision",
    "layer_mean",
    "network_selectivity",
    "SelectivityAccumulator",
    "AccumulatorResult",
]

NEGATIVE_RULES = ("shift", "clamp", "raw")


# --------------------------------------------------------------------------- checks
def check_num_classes(num_classes: int) -> None:
    """Raise ValueError unless ``num_classes`` is an integer >= 2."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")


_check_num_classes = check_num_classes  # the former name, used inside this module


def _check_negative(negative: str) -> None:
    if negative not in NEGATIVE_RULES:
        raise ValueError(f"negative must be one of {NEGATIVE_RULES}, got {negative!r}")


def unit_responses(acts: torch.Tensor, layout: str | None = None) -> torch.Tensor:
    """Reduce activations to one response per sample and unit.

    The package's one rule, :func:`selectivity.core.responses.unit_responses`.

    Parameters
    ----------
    acts : torch.Tensor
        ``(N, U)`` or ``(N, U, H, W)``; other layouts (``(N, T, D)`` tokens, channels
        last) only with ``layout`` declared.
    layout : str, optional
        One of :data:`selectivity.core.responses.LAYOUTS`; None infers 2-D and 4-D and
        refuses 3-D.

    Returns
    -------
    torch.Tensor
        ``(N, U)``; the spatial mean for 4-D input.
    """
    return reduce_output(acts, layout)


def _check_labels(labels: torch.Tensor, n: int, num_classes: int) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must have shape (N,) = ({n},) to match acts, got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if n:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"labels must lie in [0, {num_classes - 1}] for num_classes={num_classes}, "
                f"got values in [{lo}, {hi}]"
            )
    return labels.long()


# --------------------------------------------------------------------------- core math
def class_means(
    acts: torch.Tensor, labels: torch.Tensor, num_classes: int, layout: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-conditional mean response of every unit.

    Parameters
    ----------
    acts : torch.Tensor
        ``(N, U)`` or ``(N, U, H, W)``.
    labels : torch.Tensor
        ``(N,)`` integer labels in ``[0, num_classes)``.
    num_classes : int
        Number of classes ``C`` (>= 2).
    layout : str, optional
        Layout of ``acts`` (:mod:`selectivity.core.responses`); needed for 3-D input.

    Returns
    -------
    means : torch.Tensor
        ``(C, U)`` float64; rows of absent classes are 0.
    counts : torch.Tensor
        ``(C,)`` int64 number of samples per class.
    """
    _check_num_classes(num_classes)
    r = unit_responses(acts, layout)
    labels = _check_labels(labels, r.shape[0], num_classes).to(r.device)
    sums = torch.zeros(num_classes, r.shape[1], dtype=torch.float64, device=r.device)
    sums.index_add_(0, labels, r.to(torch.float64))
    counts = torch.bincount(labels, minlength=num_classes)
    means = sums / counts.clamp(min=1).unsqueeze(1).to(torch.float64)
    return means, counts


def selectivity_from_class_means(
    means: torch.Tensor,
    present: torch.Tensor,
    eps: float = 0.0,
    negative: str = "shift",
) -> torch.Tensor:
    """Class selectivity index from class-conditional means (differentiable).

    ``SI = (mu_max - mu_rest) / (mu_max + mu_rest + eps)`` over the present classes.

    Parameters
    ----------
    means : torch.Tensor
        ``(C, U)`` class means (any float dtype; the result has the same dtype).
    present : torch.Tensor
        ``(C,)`` bool, classes that have at least one sample.
    eps : float
        Added to the denominator. 0 for measurement; a small positive value keeps the
        regulariser's gradient finite.
    negative : {"shift", "clamp", "raw"}
        Rule for negative class means (module docstring).

    Returns
    -------
    torch.Tensor
        ``(U,)``. NaN where fewer than two classes are present or the denominator is
        not positive (a dead unit under ReLU).
    """
    _check_negative(negative)
    if means.dim() != 2 or present.shape != means.shape[:1]:
        raise ValueError(
            f"means must be (C, U) and present (C,), got {tuple(means.shape)} and {tuple(present.shape)}"
        )
    present = present.to(device=means.device, dtype=torch.bool)
    n_present = int(present.sum())
    num_units = means.shape[1]
    if n_present < 2:
        return torch.full((num_units,), float("nan"), dtype=means.dtype, device=means.device)
    si, valid = _index_of_present_means(means[present], eps, negative)
    return torch.where(valid, si, torch.full_like(si, float("nan")))


def index_of_present_means(m: torch.Tensor, eps: float, negative: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of ``m`` (C_present >= 2, U) class means -> (si (U,) with 0 where invalid, valid (U,)).

    Shared by measurement (invalid -> NaN) and the regulariser (invalid -> left out).
    """
    if negative == "shift":
        # Shift only units whose smallest class mean is negative: non-negative units
        # are untouched, so ReLU results are identical under every rule.
        m = m - m.min(dim=0).values.clamp(max=0.0)
    elif negative == "clamp":
        m = m.clamp(min=0.0)
    mu_max = m.max(dim=0).values
    mu_rest = (m.sum(dim=0) - mu_max) / (m.shape[0] - 1)
    den = mu_max + mu_rest
    valid = den > 0
    # Double-where: the masked branch never sees 0/0, so gradients stay finite.
    safe_den = torch.where(valid, den + eps, torch.ones_like(den))
    si = torch.where(valid, (mu_max - mu_rest) / safe_den, torch.zeros_like(den))
    return si, valid


_index_of_present_means = index_of_present_means  # the former name, used inside this module


def class_selectivity_index(
    acts: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    eps: float = 0.0,
    negative: str = "shift",
    layout: str | None = None,
) -> torch.Tensor:
    """Class selectivity index of every unit (Leavitt & Morcos, eq. 1).

    ``SI_u = (mu_max - mu_rest) / (mu_max + mu_rest)`` where ``mu_max`` is the largest
    class-conditional mean response of unit ``u`` and ``mu_rest`` the mean of the
    other classes' means.

    Parameters
    ----------
    acts : torch.Tensor
        ``(N, U)`` or ``(N, U, H, W)``; 4-D input is averaged over ``H, W``.
    labels : torch.Tensor
        ``(N,)`` integer labels in ``[0, num_classes)``. Absent classes are skipped.
    num_classes : int
        Number of classes (>= 2).
    eps : float, default 0
        Added to the denominator.
    negative : {"shift", "clamp", "raw"}, default "shift"
        Rule for negative responses; see the module docstring.
    layout : str, optional
        Layout of ``acts`` (:mod:`selectivity.core.responses`): ``"tokens"`` for
        ``(N, T, D)`` (D units, mean over tokens), ``"conv"``, ``"units"``,
        ``"channels_last"``. None infers 2-D and 4-D and refuses 3-D.

    Returns
    -------
    torch.Tensor
        ``(U,)`` float64 in ``[0, 1]`` (``"shift"``/``"clamp"``). Dead units (response
        0 for every sample) and units with a zero denominator are NaN.

    Examples
    --------
    >>> acts = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    >>> class_selectivity_index(acts, torch.tensor([0, 1]), num_classes=2)
    tensor([1., 0.], dtype=torch.float64)
    """
    r = unit_responses(acts, layout)  # (N, U)
    means, counts = class_means(r, labels, num_classes)
    si = selectivity_from_class_means(means, counts > 0, eps=eps, negative=negative)
    dead = dead_units(r)
    return torch.where(dead.to(si.device), torch.full_like(si, float("nan")), si)


def dead_units(acts: torch.Tensor, layout: str | None = None) -> torch.Tensor:
    """Units whose response is exactly 0 for every sample.

    Parameters
    ----------
    acts : torch.Tensor
        ``(N, U)`` or ``(N, U, H, W)``.
    layout : str, optional
        Layout of ``acts``; needed for 3-D input.

    Returns
    -------
    torch.Tensor
        ``(U,)`` bool.
    """
    r = unit_responses(acts, layout)
    return (r == 0).all(dim=0)


def precision(
    acts: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    top_n: int | None = None,
    layout: str | None = None,
) -> torch.Tensor:
    """Precision selectivity (paper 1, A.5), with ties shared in proportion.

    For each unit take the ``top_n`` samples with the largest response; precision is
    the share of the most common class among them.

    **Ties.** When several samples share the ``top_n``-th largest response (common
    for sparse ReLU units, whose many zero responses all tie), which of them enter the
    top ``top_n`` is not defined. Instead of letting ``torch.topk`` pick (which follows
    the sample order, so the result would depend on how the data set is sorted and
    batched), the ``k`` free slots at the boundary are shared among the tied samples'
    classes in proportion to their counts: with ``a_c`` samples of class ``c`` strictly
    above the boundary value, ``t_c`` samples of class ``c`` equal to it
    (``T = sum_c t_c``) and ``k = top_n - sum_c a_c`` free slots, the class counts are
    ``a_c + k * t_c / T``, the exact expectation over a uniformly random tie-break.
    Precision is ``max_c (a_c + k t_c / T) / top_n``. Example (A.5): a unit that
    responds to 10 cat images only, on a 10-class set of 1000 images per class,
    ``top_n = 1000``: ``(10 + 990 * 990 / 9990) / 1000 = 0.1081``.

    Parameters
    ----------
    acts : torch.Tensor
        ``(N, U)`` or ``(N, U, H, W)``.
    labels : torch.Tensor
        ``(N,)`` integer labels.
    num_classes : int
        Number of classes.
    top_n : int, optional
        Samples per unit; default ``N // num_classes`` (1000 on the CIFAR-10 test set,
        the paper's choice). Clipped to ``N``.
    layout : str, optional
        Layout of ``acts``; needed for 3-D input.

    Returns
    -------
    torch.Tensor
        ``(U,)`` float64 in ``[1/num_classes, 1]``; NaN for dead units. Independent of
        the order of the samples.
    """
    _check_num_classes(num_classes)
    r = unit_responses(acts, layout)
    labels = _check_labels(labels, r.shape[0], num_classes).to(r.device)
    n = r.shape[0]
    if top_n is None:
        top_n = max(1, n // num_classes)
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    k = min(top_n, n)
    top = r.topk(k, dim=0)  # values, indices: (k, U)
    top_labels = labels[top.indices]  # (k, U)
    boundary = top.values[-1]  # (U,) k-th largest response
    all_labels = labels.unsqueeze(1).expand_as(r)  # (N, U)
    # Tied samples left out of the top k by topk's arbitrary choice, per class.
    tied_out = _class_hist(all_labels, r == boundary, num_classes) - _class_hist(
        top_labels, top.values == boundary, num_classes
    )
    result = _tie_shared_precision(top.values, top_labels, tied_out, num_classes)
    dead = dead_units(r)
    return torch.where(dead, torch.full_like(result, float("nan")), result)


def _class_hist(labels: torch.Tensor, mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(M, U) labels and bool mask -> (C, U) float64 count of masked entries per class."""
    hist = torch.zeros(num_classes, labels.shape[1], dtype=torch.float64, device=labels.device)
    return hist.scatter_add_(0, labels, mask.to(torch.float64))


def _tie_shared_precision(
    top_vals: torch.Tensor, top_labels: torch.Tensor, tied_out: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Precision with boundary ties shared in proportion (see :func:`precision`).

    top_vals, top_labels : (k, U) each unit's k largest responses (sorted descending,
    ties broken arbitrarily) and their labels; tied_out : (C, U) per-class counts of
    samples equal to the k-th value that are not among the k. Returns (U,).
    """
    k = top_vals.shape[0]
    if k == 0:
        return torch.full((top_vals.shape[1],), float("nan"), dtype=torch.float64, device=top_vals.device)
    boundary = top_vals[-1]  # (U,)
    above = _class_hist(top_labels, top_vals > boundary, num_classes)  # (C, U)
    tied = _class_hist(top_labels, top_vals == boundary, num_classes) + tied_out  # (C, U)
    free = k - above.sum(dim=0)  # (U,) slots left for the tied samples, >= 1
    # A NaN boundary (NaN response) ties with nothing: guard the division.
    total = tied.sum(dim=0).clamp(min=1.0)
    expected = above + tied * (free / total)  # (C, U) expected counts in the top k
    return expected.max(dim=0).values / k


# --------------------------------------------------------------------------- aggregation
def layer_mean(values: torch.Tensor, dead: torch.Tensor | None = None) -> float:
    """Mean over a layer's units.

    Parameters
    ----------
    values : torch.Tensor
        ``(U,)`` per-unit values; NaN marks an undefined value (a dead unit).
    dead : torch.Tensor, optional
        ``(U,)`` bool dead units. If given, dead units count with index 0 (the paper's
        main measure: the formula with a positive epsilon in the denominator gives
        ``(0 - 0) / (0 + 0 + eps) = 0``); otherwise NaN units are left out (the
        "after removing dead units" measure of paper 1, Fig. A9b).

    Returns
    -------
    float
        NaN if no unit is defined.
    """
    v = values.detach().to(torch.float64)
    if dead is not None:
        if dead.shape != v.shape:
            raise ValueError(f"dead must have shape {tuple(v.shape)}, got {tuple(dead.shape)}")
        v = torch.where(dead.to(v.device), torch.zeros_like(v), v)
    ok = ~torch.isnan(v)
    if not bool(ok.any()):
        return float("nan")
    return float(v[ok].mean())


def network_selectivity(
    per_layer: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
    dead: Mapping[str, torch.Tensor] | Sequence[torch.Tensor] | None = None,
) -> tuple[float, dict[str, float]]:
    """Network-level selectivity (paper 1, eq. 3).

    Mean over the units of each layer, then the mean over layers (layers with no
    defined unit excluded), so that wide layers do not dominate.

    Parameters
    ----------
    per_layer : mapping of name -> (U_l,) tensor, or a sequence of tensors
        Per-unit values of each layer (NaN for dead units).
    dead : mapping or sequence of (U_l,) bool tensors, optional
        Dead units of each layer, in the same form as ``per_layer``. Given: dead units
        count with index 0 (the paper's main figures, 1b and A1b). Omitted: NaN units
        are left out of their layer's mean (Fig. A9b, "after removing dead units").

    Returns
    -------
    mean : float
        Network-level mean (NaN if no layer has a defined unit).
    layer_means : dict
        Layer name (or index as string) -> layer mean.
    """
    if isinstance(per_layer, Mapping):
        keys = list(per_layer)
        names = [str(k) for k in keys]
        values = list(per_layer.values())
    else:
        values = list(per_layer)
        keys, names = list(range(len(values))), [str(i) for i in range(len(values))]
    deads: list[torch.Tensor] | None = None
    if isinstance(dead, Mapping):
        deads = [dead[k] for k in keys]
    elif dead is not None:
        deads = list(dead)
    if deads is not None and len(deads) != len(values):
        raise ValueError(f"dead has {len(deads)} layers, per_layer has {len(values)}")
    layer_means = {
        name: layer_mean(v, None if deads is None else deads[i])
        for i, (name, v) in enumerate(zip(names, values))
    }
    finite = [m for m in layer_means.values() if m == m]
    mean = sum(finite) / len(finite) if finite else float("nan")
    return mean, layer_means


# --------------------------------------------------------------------------- streaming
@dataclass
class AccumulatorResult:
    """Result of a :class:`SelectivityAccumulator`.

    Attributes
    ----------
    selectivity : torch.Tensor
        ``(U,)`` float64 class selectivity index (NaN for dead units).
    precision : torch.Tensor or None
        ``(U,)`` float64 precision, if tracked.
    dead : torch.Tensor
        ``(U,)`` bool dead units.
    class_means : torch.Tensor
        ``(C, U)`` float64.
    counts : torch.Tensor
        ``(C,)`` int64 samples per class.
    """

    selectivity: torch.Tensor
    precision: torch.Tensor | None
    dead: torch.Tensor
    class_means: torch.Tensor
    counts: torch.Tensor


class SelectivityAccumulator:
    """Streaming class selectivity, dead units and precision.

    Keeps per-class sums and counts in float64 (``O(C x U)``), a per-unit flag of
    any non-zero response (``O(U)``) and, if ``top_n`` is given, the ``top_n`` largest
    responses of each unit with their labels (``O(top_n x U)``). Memory does not
    depend on the number of samples. Feeding a dataset in any batching gives the
    same result as :func:`class_selectivity_index` / :func:`precision` on all of it,
    ties included: per unit it also keeps the per-class counts of samples tied at
    the current ``top_n``-th response (``O(C x U)``), so boundary ties are shared in
    proportion exactly as in :func:`precision`.

    Parameters
    ----------
    num_classes : int
        Number of classes (>= 2).
    top_n : int, optional
        Track precision over each unit's ``top_n`` most-activating samples.
    negative : {"shift", "clamp", "raw"}
        Rule for negative responses, as in :func:`class_selectivity_index`.
    device : torch.device, optional
        Where the state lives; default: the device of the first batch.
    """

    def __init__(
        self,
        num_classes: int,
        top_n: int | None = None,
        negative: str = "shift",
        device: torch.device | str | None = None,
    ) -> None:
        _check_num_classes(num_classes)
        _check_negative(negative)
        if top_n is not None and top_n < 1:
            raise ValueError(f"top_n must be >= 1 or None, got {top_n}")
        self.num_classes = num_classes
        self.top_n = top_n
        self.negative = negative
        self.device = torch.device(device) if device is not None else None
        self.num_units: int | None = None
        self.num_samples = 0
        self._sums: torch.Tensor | None = None
        self._counts: torch.Tensor | None = None
        self._alive: torch.Tensor | None = None
        self._top_vals: torch.Tensor | None = None
        self._top_labels: torch.Tensor | None = None
        # (C, U) per-class counts of samples equal to the current k-th largest response
        # that are not among the kept top k (ties at the boundary, see precision()).
        self._tied_out: torch.Tensor | None = None

    def _init_state(self, num_units: int, device: torch.device) -> None:
        self.num_units = num_units
        self.device = self.device or device
        d = self.device
        self._sums = torch.zeros(self.num_classes, num_units, dtype=torch.float64, device=d)
        self._counts = torch.zeros(self.num_classes, dtype=torch.int64, device=d)
        self._alive = torch.zeros(num_units, dtype=torch.bool, device=d)
        if self.top_n is not None:
            self._top_vals = torch.empty(0, num_units, dtype=torch.float64, device=d)
            self._top_labels = torch.empty(0, num_units, dtype=torch.int64, device=d)
            self._tied_out = torch.zeros(self.num_classes, num_units, dtype=torch.float64, device=d)

    @torch.no_grad()
    def update(self, acts: torch.Tensor, labels: torch.Tensor, layout: str | None = None) -> None:
        """Add a batch: ``acts`` ``(B, U)`` or ``(B, U, H, W)`` (other layouts declared), ``labels`` ``(B,)``."""
        r = unit_responses(acts.detach(), layout)
        if self.num_units is None:
            self._init_state(r.shape[1], r.device)
        elif r.shape[1] != self.num_units:
            raise ValueError(f"batch has {r.shape[1]} units but earlier batches had {self.num_units}")
        labels = _check_labels(labels, r.shape[0], self.num_classes)
        r = r.to(device=self.device, dtype=torch.float64)
        labels = labels.to(self.device)
        self._sums.index_add_(0, labels, r)
        self._counts += torch.bincount(labels, minlength=self.num_classes)
        self._alive |= (r != 0).any(dim=0)
        self.num_samples += r.shape[0]
        if self.top_n is not None:
            old_vals, old_labels, old_tied_out = self._top_state()
            vals = torch.cat([old_vals, r], dim=0)  # (k_old + B, U)
            labs = torch.cat([old_labels, labels.unsqueeze(1).expand_as(r)], dim=0)
            k = min(self.top_n, vals.shape[0])
            top = vals.topk(k, dim=0)
            top_labels = labs.gather(0, top.indices)  # (k, U)
            old_boundary = old_vals[-1] if old_vals.shape[0] else None
            boundary = top.values[-1]  # (U,) new k-th largest, never below the old one
            # Tied samples dropped in this merge, per class: all merged entries equal to
            # the boundary minus the kept ones.
            dropped = _class_hist(labs, vals == boundary, self.num_classes) - _class_hist(
                top_labels, top.values == boundary, self.num_classes
            )
            if old_boundary is not None:
                # Earlier dropped ties stay ties only if the boundary has not moved up.
                dropped += old_tied_out * (boundary == old_boundary).to(torch.float64)
            self._tied_out = dropped
            self._top_vals = top.values
            self._top_labels = top_labels

    def _top_state(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(k, U) top values, (k, U) their labels, (C, U) tied samples left out."""
        if self._top_vals is None or self._top_labels is None or self._tied_out is None:
            raise RuntimeError("SelectivityAccumulator: precision state used before initialisation")
        return self._top_vals, self._top_labels, self._tied_out

    def result(self) -> AccumulatorResult:
        """Compute the metrics over everything fed so far."""
        if self.num_units is None:
            raise RuntimeError("SelectivityAccumulator.result() called before any update()")
        means = self._sums / self._counts.clamp(min=1).unsqueeze(1).to(torch.float64)
        si = selectivity_from_class_means(means, self._counts > 0, negative=self.negative)
        dead = ~self._alive
        nan = torch.full_like(si, float("nan"))
        si = torch.where(dead, nan, si)
        prec = None
        if self.top_n is not None:
            prec = _tie_shared_precision(*self._top_state(), num_classes=self.num_classes)
            prec = torch.where(dead, nan, prec)
        return AccumulatorResult(si, prec, dead, means, self._counts.clone())
