"""Dimensionality of a layer's representation and of the change a perturbation causes.

Definitions (see ``docs/geometry.md`` for the full statement)
-------------------------------------------------------------
Activations of one layer over ``N`` images are reduced to ``(N, U)``: by default one
value per channel (the spatial mean over ``H, W``, the same unit as the class
selectivity index), or with ``units="flatten"`` one value per channel and position
(``U = C * H * W``). Let ``l_1 >= ... >= l_U >= 0`` be the eigenvalues of the sample
covariance ``S = 1/(N-1) sum_n (a_n - abar)(a_n - abar)^T`` (``ddof=1``; the second
moment ``1/N sum_n a_n a_n^T`` with ``center=False``).

* **PCA dimensionality** at share ``s`` in (0, 1]:
  ``D_s = min { k : sum_{i<=k} l_i >= s * sum_i l_i }`` (default ``s = 0.95``).
* **Participation ratio**: ``PR = (sum_i l_i)^2 / sum_i l_i^2``; between 1 and the rank,
  ``U`` for isotropic data, no threshold.
* **Dimensionality of the change** caused by a perturbation: the same measures on the
  differences ``d_n = a(x'_n) - a(x_n)`` of the perturbed and clean activations of the
  same images (:class:`DifferenceAccumulator`).

Sample-size rule: the covariance of ``U`` units has full rank only when ``N >= U + 1``.
Eigenvalues are refused below ``N >= ceil(min_ratio * U) + 1`` samples (``min_ratio=1``
by default; raise it for a better-conditioned estimate; ``min_ratio=0`` only asks for 2
samples and then measures at most ``N - 1`` dimensions).

Everything is accumulated in float64 with Chan et al.'s pairwise update of mean and
centred scatter matrix, so memory is ``O(U^2)`` whatever ``N``; eigenvalues are computed
with ``torch.linalg.eigvalsh`` on the accumulator's device (CPU or GPU) or one given.

* **Dimensionality increase** caused by a perturbation (:func:`dimensionality_increase`):
  the measures of the perturbed activations minus those of the clean activations of the
  same images, ``D_s(a(x')) - D_s(a(x))`` and ``PR(a(x')) - PR(a(x))``, per layer.

Flattened maps with more units than samples (:func:`flattened_eigenvalues`)
--------------------------------------------------------------------------
With ``U = C * H * W`` units per image the ``U x U`` covariance does not fit in memory
for early layers (``U = 16384`` for a 16-channel 32x32 map: 2 GiB in float64), and with
``N <= U`` images it has at most ``N - 1`` non-zero eigenvalues anyway. These equal the
non-zero eigenvalues of the ``N x N`` Gram matrix ``G = A_c A_c^T`` of the centred
``(N, U)`` activations ``A_c``, divided by ``N - 1`` (``A_c^T A_c`` and ``A_c A_c^T`` share
their non-zero eigenvalues), so ``O(N^2 + N U)`` memory suffices: the estimate is the exact
covariance spectrum, not an approximation. The measures then see at most ``N - 1``
dimensions (compare layers and networks at the same ``N``). Optionally only ``k``
random spatial positions of each map are kept (the same positions for every channel and
image, drawn once with a ``torch.Generator``): ``U = C * k``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "UNIT_MODES",
    "Dimensionality",
    "CovarianceAccumulator",
    "DifferenceAccumulator",
    "layer_units",
    "required_samples",
    "pca_dimensionality",
    "participation_ratio",
    "dimensionality_from_eigenvalues",
    "dimensionality",
    "change_dimensionality",
    "perturbation_norms",
    "DimensionalityIncrease",
    "dimensionality_increase",
    "dimensionality_increase_by_layer",
    "spatial_positions",
    "select_positions",
    "flattened_eigenvalues",
    "flattened_dimensionality",
]

#: How a layer's output becomes units: ``"channels"`` (spatial mean) or ``"flatten"``.
UNIT_MODES = ("channels", "flatten")

# A share reached up to this relative rounding counts as reached (eigvalsh rounding).
_SHARE_SLACK = 1e-12


@dataclass(frozen=True)
class Dimensionality:
    """Both dimensionality measures of one set of activations.

    Attributes
    ----------
    pca : int
        Principal components needed to explain ``share`` of the variance.
    participation_ratio : float
        ``(sum l)^2 / sum l^2``.
    share : float
        The variance share used for ``pca``.
    n_samples : int
    n_units : int
    """

    pca: int
    participation_ratio: float
    share: float
    n_samples: int
    n_units: int


# --------------------------------------------------------------------------- checks
def _check_share(share: float) -> float:
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
        raise ValueError(f"share must be a number in (0, 1], got {share!r}")
    return float(share)


def _check_units(units: str) -> str:
    if units not in UNIT_MODES:
        raise ValueError(f"units must be one of {UNIT_MODES}, got {units!r}")
    return units


def required_samples(num_units: int, min_ratio: float = 1.0) -> int:
    """Fewest samples accepted for ``num_units`` units: ``ceil(min_ratio * U) + 1``, at least 2.

    Parameters
    ----------
    num_units : int
        ``U``.
    min_ratio : float
        Samples required per unit (>= 0); 1 gives the full-rank minimum ``U + 1``.

    Returns
    -------
    int
    """
    if isinstance(min_ratio, bool) or not isinstance(min_ratio, (int, float)) or not min_ratio >= 0:
        raise ValueError(f"min_ratio must be a finite number >= 0, got {min_ratio!r}")
    if not math.isfinite(min_ratio):
        raise ValueError(f"min_ratio must be a finite number >= 0, got {min_ratio!r}")
    return max(2, math.ceil(min_ratio * num_units) + 1)


def layer_units(acts: Tensor, units: str = "channels") -> Tensor:
    """Reduce one layer's activations to ``(N, U)`` float64 unit responses.

    Parameters
    ----------
    acts : Tensor
        ``(N, U)`` or ``(N, C, *spatial)`` (e.g. ``(N, C, H, W)``).
    units : {"channels", "flatten"}
        ``"channels"``: the spatial mean of each channel (``U = C``); ``"flatten"``: every
        channel x position is a unit (``U = C * H * W``). Irrelevant for 2-D input.

    Returns
    -------
    Tensor
        ``(N, U)`` float64.
    """
    _check_units(units)
    if not isinstance(acts, Tensor) or acts.dim() < 2:
        raise ValueError("activations must be a tensor of shape (N, U) or (N, C, H, W)")
    if acts.dim() == 2:
        return acts.to(torch.float64)
    if units == "flatten":
        return acts.flatten(1).to(torch.float64)  # (N, C, H, W) -> (N, C*H*W)
    # (N, C, H, W) -> (N, C), summed in float64 without a float64 copy of the input
    return acts.mean(dim=tuple(range(2, acts.dim())), dtype=torch.float64)


# --------------------------------------------------------------------------- measures
def _clean_eigenvalues(eigvals: Tensor, rtol: float | None) -> Tensor:
    """Validated, descending float64 eigenvalues with rounding-level ones set to 0."""
    ev = torch.as_tensor(eigvals)
    if ev.dim() != 1 or ev.numel() == 0 or not ev.is_floating_point():
        raise ValueError("eigvals must be a non-empty 1-D floating-point tensor (covariance eigenvalues)")
    ev = ev.to(torch.float64)
    if not bool(torch.isfinite(ev).all()):
        raise ValueError("eigvals must be finite")
    ev = torch.sort(ev, descending=True).values
    top = float(ev[0].abs())
    tol = (ev.numel() * torch.finfo(torch.float64).eps if rtol is None else float(rtol)) * top
    if float(ev[-1]) < -tol:
        raise ValueError(f"eigvals must be >= 0 (a covariance's), got {float(ev[-1]):.3g}")
    return torch.where(ev.abs() <= tol, torch.zeros_like(ev), ev)


def pca_dimensionality(eigvals: Tensor, share: float = 0.95, *, rtol: float | None = None) -> int:
    """Number of principal components needed to explain ``share`` of the variance.

    ``D_s = min { k : sum_{i<=k} l_i >= s * sum_i l_i }`` over eigenvalues sorted in
    decreasing order.

    Parameters
    ----------
    eigvals : Tensor
        ``(U,)`` covariance eigenvalues, any order.
    share : float
        Variance share in (0, 1].
    rtol : float, optional
        Eigenvalues with ``|l| <= rtol * max |l|`` count as 0 (so ``share=1`` gives the
        rank); default ``U * eps(float64)``, as ``matrix_rank``.

    Returns
    -------
    int
        ``D_s`` in ``[1, U]``; 0 when every eigenvalue is 0 (no variance at all).
    """
    s = _check_share(share)
    ev = _clean_eigenvalues(eigvals, rtol)
    total = float(ev.sum())
    if total == 0:
        return 0
    cum = torch.cumsum(ev, 0)
    reached = cum >= s * total * (1 - _SHARE_SLACK)
    return int(torch.nonzero(reached)[0, 0]) + 1


def participation_ratio(eigvals: Tensor, *, rtol: float | None = None) -> float:
    """Participation ratio ``(sum_i l_i)^2 / sum_i l_i^2`` of covariance eigenvalues.

    Parameters
    ----------
    eigvals : Tensor
        ``(U,)`` covariance eigenvalues (>= 0), any order.
    rtol : float, optional
        As :func:`pca_dimensionality`: eigenvalues within ``rtol * max |l|`` of 0 count as 0.

    Returns
    -------
    float
        In ``[1, U]``: 1 for one direction, ``U`` for isotropic variance; 0 when every
        eigenvalue is 0.
    """
    ev = _clean_eigenvalues(eigvals, rtol=rtol)
    sq = float((ev * ev).sum())
    return float(ev.sum()) ** 2 / sq if sq > 0 else 0.0


# --------------------------------------------------------------------------- streaming
class CovarianceAccumulator:
    """Streaming float64 mean and covariance of ``(N, U)`` unit responses.

    Memory is ``O(U^2)`` whatever the number of samples; batches are merged with the
    pairwise update of Chan, Golub & LeVeque (accurate when the mean is large).

    Parameters
    ----------
    units : {"channels", "flatten"}
        How 4-D activations become units; see :func:`layer_units`.
    device : torch.device or str, optional
        Where the sums live; default: the device of the first batch.

    Examples
    --------
    >>> acc = CovarianceAccumulator()
    >>> for batch in batches:          # doctest: +SKIP
    ...     acc.update(layer_output)   # (B, C, H, W)
    >>> acc.dimensionality(share=0.95)  # doctest: +SKIP
    """

    def __init__(self, units: str = "channels", device: torch.device | str | None = None) -> None:
        self.units = _check_units(units)
        self.device = None if device is None else torch.device(device)
        self.n = 0
        self._mean: Tensor | None = None  # (U,)
        self._scatter: Tensor | None = None  # (U, U): sum (a - mean)(a - mean)^T

    @property
    def num_units(self) -> int | None:
        """``U``, or None before the first batch."""
        return None if self._mean is None else int(self._mean.numel())

    def update(self, acts: Tensor) -> None:
        """Add a batch of activations, ``(B, U)`` or ``(B, C, H, W)``."""
        self._add(layer_units(acts, self.units))

    def _add(self, a: Tensor) -> None:
        # a: (B, U) float64
        if self.device is None:
            self.device = a.device
        a = a.to(self.device)
        b = a.shape[0]
        if b == 0:
            return
        if self._mean is not None and a.shape[1] != self._mean.numel():
            raise ValueError(f"batch has {a.shape[1]} units, earlier batches had {self._mean.numel()}")
        mb = a.mean(0)
        centred = a - mb
        sb = centred.T @ centred
        if self._mean is None or self._scatter is None:
            self._mean, self._scatter, self.n = mb, sb, b
            return
        delta = mb - self._mean
        n = self.n + b
        self._mean = self._mean + delta * (b / n)
        self._scatter = self._scatter + sb + torch.outer(delta, delta) * (self.n * b / n)
        self.n = n

    def _require(self, min_ratio: float) -> tuple[Tensor, Tensor]:
        if self._mean is None or self._scatter is None:
            raise ValueError("no activations were added: call update() with at least one batch first")
        need = required_samples(int(self._mean.numel()), min_ratio)
        if self.n < need:
            raise ValueError(
                f"need at least {need} samples for {self._mean.numel()} units "
                f"(N >= ceil({min_ratio:g} * U) + 1), got {self.n}"
            )
        return self._mean, self._scatter

    @property
    def mean(self) -> Tensor:
        """``(U,)`` float64 mean response."""
        if self._mean is None:
            raise ValueError("no activations were added: call update() with at least one batch first")
        return self._mean

    @property
    def mean_square_norm(self) -> float:
        """``1/N sum_n ||a_n||^2``: the average squared length of the samples."""
        m, s = self._require(0.0)
        return float(torch.trace(s) / self.n + m @ m)

    def covariance(self, *, center: bool = True, ddof: int = 1, min_ratio: float = 1.0) -> Tensor:
        """``(U, U)`` float64 covariance (``center=True``, divided by ``N - ddof``) or second moment.

        Raises
        ------
        ValueError
            Fewer than :func:`required_samples` samples.
        """
        m, s = self._require(min_ratio)
        if center:
            return s / (self.n - ddof)
        return s / self.n + torch.outer(m, m)

    def eigenvalues(
        self,
        *,
        center: bool = True,
        ddof: int = 1,
        min_ratio: float = 1.0,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """``(U,)`` float64 eigenvalues of :meth:`covariance`, in decreasing order.

        Parameters
        ----------
        center, ddof, min_ratio
            As :meth:`covariance`.
        device : torch.device or str, optional
            Where ``eigvalsh`` runs (e.g. ``"cuda"`` for large ``U``); default: the
            accumulator's device. The result is returned on that device.
        """
        cov = self.covariance(center=center, ddof=ddof, min_ratio=min_ratio)
        if device is not None:
            cov = cov.to(device)
        return torch.flip(torch.linalg.eigvalsh(cov), (0,))

    def dimensionality(
        self, share: float = 0.95, *, center: bool = True, min_ratio: float = 1.0
    ) -> Dimensionality:
        """Both measures of the accumulated samples; see :func:`dimensionality_from_eigenvalues`."""
        _check_share(share)
        ev = self.eigenvalues(center=center, min_ratio=min_ratio)
        # The streamed scatter rounds relative to the samples' second moment, not to the
        # covariance's largest eigenvalue: a nearly constant layer (large mean, tiny
        # variance) leaves negative eigenvalues of order eps * mean square. Those count as 0.
        top = float(ev.abs().max())
        scale = max(top, self.mean_square_norm)
        rtol = ev.numel() * torch.finfo(torch.float64).eps * scale / top if top > 0 else None
        return dimensionality_from_eigenvalues(ev, share, n_samples=self.n, rtol=rtol)


class DifferenceAccumulator:
    """Streaming covariance of the change ``a(x') - a(x)`` caused by a perturbation.

    Parameters
    ----------
    units : {"channels", "flatten"}
        As :class:`CovarianceAccumulator`.
    device : torch.device or str, optional
        As :class:`CovarianceAccumulator`.

    Notes
    -----
    The difference is taken on the full activation map before the spatial mean (the same
    result by linearity; a float32 difference of nearby values is exact). Use
    :attr:`covariance_accumulator` for the eigenvalues, ``mean`` and ``mean_square_norm``
    (the mean squared size of the change, for matching perturbations).
    """

    def __init__(self, units: str = "channels", device: torch.device | str | None = None) -> None:
        self.covariance_accumulator = CovarianceAccumulator(units, device)

    @property
    def n(self) -> int:
        """Number of image pairs added."""
        return self.covariance_accumulator.n

    def update(self, clean: Tensor, perturbed: Tensor) -> None:
        """Add the activations of the same images, clean and perturbed (same shape)."""
        if (
            not isinstance(clean, Tensor)
            or not isinstance(perturbed, Tensor)
            or clean.shape != perturbed.shape
        ):
            raise ValueError(
                "clean and perturbed activations must be tensors of the same shape (the same images), "
                f"got {tuple(getattr(clean, 'shape', ()))} and {tuple(getattr(perturbed, 'shape', ()))}"
            )
        self.covariance_accumulator.update(perturbed - clean)

    def eigenvalues(
        self,
        *,
        center: bool = True,
        ddof: int = 1,
        min_ratio: float = 1.0,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Eigenvalues of the change's covariance; see :meth:`CovarianceAccumulator.eigenvalues`."""
        return self.covariance_accumulator.eigenvalues(
            center=center, ddof=ddof, min_ratio=min_ratio, device=device
        )

    def dimensionality(
        self, share: float = 0.95, *, center: bool = True, min_ratio: float = 1.0
    ) -> Dimensionality:
        """Both measures of the change; see :meth:`CovarianceAccumulator.dimensionality`."""
        return self.covariance_accumulator.dimensionality(share, center=center, min_ratio=min_ratio)


# --------------------------------------------------------------------------- one-shot
def dimensionality_from_eigenvalues(
    eigvals: Tensor, share: float = 0.95, *, n_samples: int = 0, rtol: float | None = None
) -> Dimensionality:
    """Both measures from covariance eigenvalues.

    Parameters
    ----------
    eigvals : Tensor
        ``(U,)`` covariance eigenvalues.
    share : float
        Variance share in (0, 1] for the PCA measure.
    n_samples : int
        Recorded in the result only.
    rtol : float, optional
        Eigenvalues within ``rtol * max |l|`` of 0 count as 0 (see :func:`pca_dimensionality`).

    Returns
    -------
    Dimensionality
    """
    return Dimensionality(
        pca=pca_dimensionality(eigvals, share, rtol=rtol),
        participation_ratio=participation_ratio(eigvals, rtol=rtol),
        share=float(share),
        n_samples=int(n_samples),
        n_units=int(torch.as_tensor(eigvals).numel()),
    )


def dimensionality(
    acts: Tensor,
    share: float = 0.95,
    *,
    units: str = "channels",
    center: bool = True,
    min_ratio: float = 1.0,
) -> Dimensionality:
    """Dimensionality of one layer's activations over ``N`` images, in one call.

    Parameters
    ----------
    acts : Tensor
        ``(N, U)`` or ``(N, C, H, W)``.
    share : float
        Variance share in (0, 1] for the PCA measure (default 0.95).
    units : {"channels", "flatten"}
        See :func:`layer_units`.
    center : bool
        Covariance (True) or uncentred second moment (False).
    min_ratio : float
        Sample-size rule, see :func:`required_samples`.

    Returns
    -------
    Dimensionality

    Raises
    ------
    ValueError
        Share outside (0, 1], too few samples for the units (the message says how many
        are needed), malformed activations.
    """
    _check_share(share)
    acc = CovarianceAccumulator(units)
    acc.update(acts)
    return acc.dimensionality(share, center=center, min_ratio=min_ratio)


def change_dimensionality(
    clean: Tensor,
    perturbed: Tensor,
    share: float = 0.95,
    *,
    units: str = "channels",
    center: bool = True,
    min_ratio: float = 1.0,
) -> Dimensionality:
    """Dimensionality of ``perturbed - clean`` activations of the same images.

    Parameters are those of :func:`dimensionality`; ``clean`` and ``perturbed`` have the
    same shape ``(N, U)`` or ``(N, C, H, W)``.
    """
    _check_share(share)
    acc = DifferenceAccumulator(units)
    acc.update(clean, perturbed)
    return acc.dimensionality(share, center=center, min_ratio=min_ratio)


def perturbation_norms(clean: Tensor, perturbed: Tensor, norm: str = "l2") -> Tensor:
    """Per-image size of an input perturbation, for matching corruptions and attacks.

    Parameters
    ----------
    clean, perturbed : Tensor
        ``(N, ...)`` images of the same shape (pixel space).
    norm : {"l2", "linf"}
        Euclidean norm of the whole image difference or its largest absolute pixel change.

    Returns
    -------
    Tensor
        ``(N,)`` float64.
    """
    if norm not in ("l2", "linf"):
        raise ValueError(f"norm must be one of ('l2', 'linf'), got {norm!r}")
    if not isinstance(clean, Tensor) or not isinstance(perturbed, Tensor) or clean.shape != perturbed.shape:
        raise ValueError("clean and perturbed must be tensors of the same shape (N, ...)")
    d = (perturbed.to(torch.float64) - clean.to(torch.float64)).flatten(1)  # (N, D)
    return d.norm(dim=1) if norm == "l2" else d.abs().amax(dim=1)


# --------------------------------------------------------------------------- increase
@dataclass(frozen=True)
class DimensionalityIncrease:
    """Dimensionality of perturbed and clean activations of the same images, and the increase.

    Attributes
    ----------
    clean : Dimensionality
    perturbed : Dimensionality
    """

    clean: Dimensionality
    perturbed: Dimensionality

    @property
    def pca(self) -> int:
        """``D_s(perturbed) - D_s(clean)``."""
        return self.perturbed.pca - self.clean.pca

    @property
    def participation_ratio(self) -> float:
        """``PR(perturbed) - PR(clean)``."""
        return self.perturbed.participation_ratio - self.clean.participation_ratio


def spatial_positions(height: int, width: int, k: int, generator: torch.Generator | None = None) -> Tensor:
    """``k`` distinct random positions of an ``height x width`` map, as sorted flat indices.

    Parameters
    ----------
    height, width : int
        Map size.
    k : int
        Positions to keep, ``1 <= k <= height * width``.
    generator : torch.Generator, optional
        Source of the draw (CPU), for reproducibility.

    Returns
    -------
    Tensor
        ``(k,)`` int64 indices into the flattened ``H * W`` positions, increasing.
    """
    hw = int(height) * int(width)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= hw:
        raise ValueError(
            f"k must be an integer in [1, {hw}] (positions of a {height}x{width} map), got {k!r}"
        )
    return torch.randperm(hw, generator=generator)[:k].sort().values


def select_positions(acts: Tensor, positions: Tensor) -> Tensor:
    """Keep the given spatial positions of every channel: ``(N, C, H, W)`` -> ``(N, C * k)``.

    Parameters
    ----------
    acts : Tensor
        ``(N, C, H, W)`` (or ``(N, C, *spatial)``) activations.
    positions : Tensor
        ``(k,)`` flat indices into the spatial positions (:func:`spatial_positions`).

    Returns
    -------
    Tensor
        ``(N, C * k)``, channel-major (channel 0's ``k`` positions first), input dtype.
    """
    if not isinstance(acts, Tensor) or acts.dim() < 3:
        raise ValueError("activations must be a tensor of shape (N, C, H, W) to subsample positions")
    idx = torch.as_tensor(positions, dtype=torch.int64, device=acts.device).reshape(-1)
    hw = math.prod(acts.shape[2:])
    if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= hw:
        raise ValueError(f"positions must be indices in [0, {hw}) of the flattened spatial map")
    return acts.flatten(2)[:, :, idx].flatten(1)  # (N, C, H*W) -> (N, C, k) -> (N, C*k)


def flattened_eigenvalues(
    acts: Tensor,
    *,
    positions: Tensor | None = None,
    center: bool = True,
    ddof: int = 1,
    chunk: int = 4096,
) -> Tensor:
    """Covariance eigenvalues of flattened maps, via the ``N x N`` Gram matrix when ``N <= U``.

    Parameters
    ----------
    acts : Tensor
        ``(N, C, H, W)`` (flattened to ``U = C * H * W`` units) or ``(N, U)``.
    positions : Tensor, optional
        Keep only these spatial positions of every channel (:func:`select_positions`).
    center : bool
        Covariance (divided by ``N - ddof``) or, if False, the second moment (divided by ``N``).
    ddof : int
        As :meth:`CovarianceAccumulator.covariance`.
    chunk : int
        Units converted to float64 at a time when forming the Gram matrix (memory).

    Returns
    -------
    Tensor
        ``(min(N, U),)`` float64 eigenvalues in decreasing order: every eigenvalue of the
        ``U x U`` covariance that can be non-zero (the others are exactly 0).

    Raises
    ------
    ValueError
        Fewer than 2 samples, malformed activations.
    """
    if not isinstance(acts, Tensor) or acts.dim() < 2:
        raise ValueError("activations must be a tensor of shape (N, U) or (N, C, H, W)")
    a = acts.flatten(1) if positions is None else select_positions(acts, positions)  # (N, U)
    n, u = a.shape
    if n < 2:
        raise ValueError(f"need at least 2 samples, got {n}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
    denom = (n - ddof) if center else n
    if n > u:  # the U x U covariance is the smaller matrix
        acc = CovarianceAccumulator("flatten")
        acc.update(a)
        return acc.eigenvalues(center=center, ddof=ddof, min_ratio=0.0)
    gram = torch.zeros(n, n, dtype=torch.float64, device=a.device)
    for start in range(0, u, chunk):
        block = a[:, start : start + chunk].to(torch.float64)  # (N, chunk)
        if center:
            block = block - block.mean(0)  # centring per unit is exact chunk by chunk
        gram += block @ block.T
    return torch.flip(torch.linalg.eigvalsh(gram), (0,)) / denom


def flattened_dimensionality(
    acts: Tensor,
    share: float = 0.95,
    *,
    positions: Tensor | None = None,
    center: bool = True,
) -> Dimensionality:
    """Both measures of flattened maps from :func:`flattened_eigenvalues` (any ``N >= 2``).

    Parameters
    ----------
    acts : Tensor
        ``(N, C, H, W)`` or ``(N, U)``.
    share : float
        Variance share in (0, 1] for the PCA measure.
    positions : Tensor, optional
        Spatial positions kept (:func:`spatial_positions`).
    center : bool
        Covariance or second moment.

    Returns
    -------
    Dimensionality
        ``n_units`` is ``U`` (after subsampling); the PCA count is at most ``min(N - 1, U)``.
    """
    _check_share(share)
    ev = flattened_eigenvalues(acts, positions=positions, center=center)
    u = (
        acts.flatten(1).shape[1]
        if positions is None
        else acts.shape[1] * int(torch.as_tensor(positions).numel())
    )
    return Dimensionality(
        pca=pca_dimensionality(ev, share),
        participation_ratio=participation_ratio(ev),
        share=float(share),
        n_samples=int(acts.shape[0]),
        n_units=int(u),
    )


def dimensionality_increase(
    clean: Tensor,
    perturbed: Tensor,
    share: float = 0.95,
    *,
    units: str = "channels",
    center: bool = True,
    min_ratio: float = 1.0,
    positions_per_map: int | None = None,
    generator: torch.Generator | None = None,
) -> DimensionalityIncrease:
    """Dimensionality of perturbed minus clean activations of the same images (both measures).

    Parameters
    ----------
    clean, perturbed : Tensor
        ``(N, U)`` or ``(N, C, H, W)`` activations of one layer, same shape.
    share : float
        Variance share in (0, 1] for the PCA measure.
    units : {"channels", "flatten"}
        ``"channels"``: spatial means, covariance with the sample-size rule ``min_ratio``
        (:func:`dimensionality`). ``"flatten"``: every channel x position, through
        :func:`flattened_dimensionality` (Gram matrix, any ``N >= 2``; ``min_ratio`` unused).
    center : bool
        Covariance (True) or second moment.
    min_ratio : float
        Sample-size rule for ``units="channels"``.
    positions_per_map : int, optional
        With ``units="flatten"``: keep ``k`` random positions per map, the same for clean
        and perturbed (:func:`spatial_positions`).
    generator : torch.Generator, optional
        Source of the position draw.

    Returns
    -------
    DimensionalityIncrease
        ``.pca`` and ``.participation_ratio`` are the increases.
    """
    _check_share(share)
    _check_units(units)
    if not isinstance(clean, Tensor) or not isinstance(perturbed, Tensor) or clean.shape != perturbed.shape:
        raise ValueError(
            "clean and perturbed activations must be tensors of the same shape (the same images)"
        )
    if units == "channels":
        if positions_per_map is not None:
            raise ValueError("positions_per_map applies to units='flatten' only")
        return DimensionalityIncrease(
            dimensionality(clean, share, units=units, center=center, min_ratio=min_ratio),
            dimensionality(perturbed, share, units=units, center=center, min_ratio=min_ratio),
        )
    positions = None
    if positions_per_map is not None:
        if clean.dim() < 3:
            raise ValueError("positions_per_map needs activations of shape (N, C, H, W)")
        positions = spatial_positions(
            clean.shape[2], math.prod(clean.shape[3:]), positions_per_map, generator
        )
    return DimensionalityIncrease(
        flattened_dimensionality(clean, share, positions=positions, center=center),
        flattened_dimensionality(perturbed, share, positions=positions, center=center),
    )


def dimensionality_increase_by_layer(
    clean: Mapping[str, Tensor],
    perturbed: Mapping[str, Tensor],
    share: float = 0.95,
    *,
    units: str = "channels",
    center: bool = True,
    min_ratio: float = 1.0,
    positions_per_map: int | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, DimensionalityIncrease]:
    """:func:`dimensionality_increase` for every layer of ``clean`` (same keys in ``perturbed``).

    Parameters
    ----------
    clean, perturbed : mapping of str to Tensor
        Layer name -> activations of the same images.
    share, units, center, min_ratio, positions_per_map, generator
        As :func:`dimensionality_increase`; with a generator the layers draw their
        positions one after another, in the order of ``clean``.

    Returns
    -------
    dict of str to DimensionalityIncrease
        In the order of ``clean``.
    """
    if set(clean) != set(perturbed):
        raise ValueError(
            f"clean and perturbed must name the same layers, got {sorted(clean)} and {sorted(perturbed)}"
        )
    return {
        name: dimensionality_increase(
            clean[name],
            perturbed[name],
            share,
            units=units,
            center=center,
            min_ratio=min_ratio,
            positions_per_map=positions_per_map,
            generator=generator,
        )
        for name in clean
    }
