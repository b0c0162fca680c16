"""Canonical correlation analysis and projection-weighted CCA (PWCCA).

PWCCA was introduced by Morcos, Raghu & Bengio (2018, "Insights on representational
similarity in neural networks with canonical correlation", arXiv:1806.05759) and is the
"CCA distance" of Leavitt & Morcos (paper 1, section 4.2 and appendix A.2). This module
is an independent PyTorch implementation whose semantics follow the authors' reference
code (``google/svcca``: ``cca_core.py`` and ``pwcca.py``); the deliberate differences
are listed below.

Conventions
-----------
Activation matrices are ``(n_neurons, n_datapoints)``: one row per neuron (unit), one
column per datapoint (sample, or sample x spatial position for conv layers, see
:func:`flatten_conv_activations`). ``x`` and ``y`` must share the datapoints (same
samples, same order) but may have different numbers of neurons. Everything is
computed in float64 on the device of ``x``, whatever the input dtype.

Algorithm (per call of :func:`cca`)
-----------------------------------
1. Center every neuron over the datapoints; covariances ``Sxx, Syy, Sxy`` (``1/(n-1)``
   normalisation). Accumulated over chunks of datapoints so that very wide inputs
   (e.g. every spatial position of a conv layer) never need a float64 copy of the
   whole matrix.
2. **Dead-neuron removal** (the reference's ``remove_small``): a neuron whose variance
   is ``<= dead_tol * (largest variance in its layer)`` is dropped before CCA. Such a
   neuron (e.g. a ReLU unit that never fires, common at large positive alpha) carries
   no information and would make the covariance singular. It contributes nothing to
   the projection weights either (its centered activation vector is zero), so removing
   it does not change PWCCA, it only keeps the linear algebra well-posed. ``dead_tol``
   defaults to ``eps``, as in the reference (which uses one epsilon for both).
3. Like the reference, rescale ``Sxx`` and ``Syy`` by their largest entry (and ``Sxy``
   by the geometric mean of the two) so ``eps`` is relative to the layer's scale, then
   regularise: ``Sxx + eps*I`` and ``Syy + eps*I``.
4. ``M = Sxx^{-1/2} Sxy Syy^{-1/2}`` (inverse square roots by symmetric
   eigendecomposition; eigenvalues below a pinv-like cutoff are treated as zero, like
   the reference's ``pinv``); ``M = U diag(rho) V^T``. ``rho`` (descending, clipped to
   [0, 1]) are the ``k = min(n_x, n_y)`` canonical correlations (after dead-neuron
   removal). The canonical directions of ``x`` in neuron space are
   ``a_i = Sxx^{-1/2} u_i`` and its canonical variates in datapoint space are
   ``h_i = a_i^T (x - mean)``.

PWCCA (Morcos et al. 2018, eq. for alpha_i)
-------------------------------------------
``alpha_i = sum_j |<h_i / ||h_i||, x_j>|`` with ``x_j`` the j-th *centered* neuron of
``x``; ``alpha`` is normalised to sum to 1 and ``similarity = sum_i alpha_i rho_i``;
``distance = 1 - similarity``. Identical inputs, and inputs related by any invertible
affine map (rotation, scaling, shift), give similarity 1 / distance 0.

The inner products are computed from covariances alone:
``<x_j, h_i> = (n-1) (Sxx a_i)_j`` and ``||h_i||^2 = (n-1) a_i^T Sxx a_i``, so no
``(k, n_datapoints)`` matrix of variates is ever materialised.

Differences from the reference implementation (all deliberate)
---------------------------------------------------------------
* The reference orthonormalises ``u_i^T (x - mean) + mean`` with a QR decomposition,
  i.e. it omits ``Sxx^{-1/2}`` and re-adds the neuron means, and then projects the
  *uncentered* activations. We use the canonical variates ``h_i`` themselves and the
  centered neurons, as in the paper's definition. The canonical variates are
  mutually orthogonal (exactly for ``eps -> 0`` and full-rank covariance), so
  normalising them is what the reference's QR step amounts to for the true variates.
* The reference takes the weights from whichever side has fewer (surviving) neurons
  (and its ``else`` branch is buggy, google/svcca PR #9). We always take them from
  ``x`` (so ``pwcca_similarity(x, y) != pwcca_similarity(y, x)`` in general); pass
  ``symmetric=True`` to average the two directions. When ``x`` has more neurons than
  ``y`` only the ``k = min(n_x, n_y)`` paired variates are weighted.
* Too few datapoints is an error here (the reference only asserts
  ``neurons < datapoints``): CCA on ``n`` datapoints with ``p`` neurons overfits and
  the canonical correlations of unrelated inputs approach 1 as ``p / n`` grows. The
  reference authors recommend 5-10x more datapoints than neurons; we require
  ``n_datapoints >= min_ratio * max(n_x, n_y)`` with ``min_ratio=5`` by default.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CCAResult",
    "PWCCAResult",
    "cca",
    "projection_weights",
    "pwcca",
    "pwcca_similarity",
    "pwcca_distance",
    "flatten_conv_activations",
]

_F64 = torch.float64
#: Default budget (number of float64 elements) for one chunk of centered activations.
_DEFAULT_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class CCAResult:
    """Output of :func:`cca`. All tensors are float64 (bool for masks) on ``x``'s device.

    Attributes
    ----------
    rho : Tensor, shape (k,)
        Canonical correlations, descending, in [0, 1]; ``k = min(n_x_kept, n_y_kept)``.
    x_coefs : Tensor, shape (n_x_kept, k)
        Canonical directions of ``x`` in (kept, centered) neuron space: the i-th
        canonical variate is ``x_coefs[:, i] @ (x[x_keep] - x_mean[x_keep, None])``.
        Scaled so that each variate has (approximately) unit variance.
    y_coefs : Tensor, shape (n_y_kept, k)
        Same for ``y``.
    x_keep, y_keep : Tensor, shape (n_x,), (n_y,), bool
        Neurons that survived dead-neuron removal.
    x_mean, y_mean : Tensor, shape (n_x,), (n_y,)
        Per-neuron means over datapoints (all neurons).
    sigma_xx : Tensor, shape (n_x_kept, n_x_kept)
        Unregularised covariance of the kept ``x`` neurons (original units).
    sigma_yy : Tensor, shape (n_y_kept, n_y_kept)
        Same for ``y``.
    n_datapoints : int
        Number of datapoints.
    """

    rho: Tensor
    x_coefs: Tensor
    y_coefs: Tensor
    x_keep: Tensor
    y_keep: Tensor
    x_mean: Tensor
    y_mean: Tensor
    sigma_xx: Tensor
    sigma_yy: Tensor
    n_datapoints: int

    @property
    def k(self) -> int:
        """Number of canonical correlations."""
        return int(self.rho.numel())

    def x_variates(self, x: Tensor) -> Tensor:
        """Canonical variates of ``x`` in datapoint space, shape ``(k, n_datapoints)``.

        ``x`` must be the same matrix that was passed to :func:`cca`.
        """
        x = _as_2d_tensor(x, "x").to(self.x_mean.device)
        xc = x[self.x_keep].to(_F64) - self.x_mean[self.x_keep, None]
        return self.x_coefs.T @ xc

    def y_variates(self, y: Tensor) -> Tensor:
        """Canonical variates of ``y`` in datapoint space, shape ``(k, n_datapoints)``."""
        y = _as_2d_tensor(y, "y").to(self.y_mean.device)
        yc = y[self.y_keep].to(_F64) - self.y_mean[self.y_keep, None]
        return self.y_coefs.T @ yc


@dataclass(frozen=True)
class PWCCAResult:
    """Output of :func:`pwcca`.

    Attributes
    ----------
    similarity : float
        PWCCA similarity in [0, 1] (NaN if every neuron of a side is dead).
    distance : float
        ``1 - similarity`` (the papers' "CCA distance").
    weights : Tensor, shape (k,)
        Projection weights ``alpha`` (sum 1) from ``x`` (or, if ``symmetric``, the
        average of the weights from ``x`` and from ``y``).
    rho : Tensor, shape (k,)
        Canonical correlations, descending.
    cca : CCAResult
        The underlying CCA.
    """

    similarity: float
    distance: float
    weights: Tensor
    rho: Tensor
    cca: CCAResult


# --------------------------------------------------------------------------- helpers


def _as_2d_tensor(a, name: str) -> Tensor:
    if not isinstance(a, Tensor):
        a = torch.as_tensor(np.asarray(a))
    if a.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (n_neurons, n_datapoints), got shape {tuple(a.shape)}; "
            "use flatten_conv_activations() for conv activations (N, C, H, W)"
        )
    if a.is_complex():
        raise ValueError(f"{name} must be real-valued, got dtype {a.dtype}")
    return a


def _inv_sqrt_psd(s: Tensor) -> Tensor:
    """Inverse square root of a symmetric PSD matrix, pinv-like for tiny eigenvalues.

    s : (p, p) float64 -> (p, p) float64
    """
    w, v = torch.linalg.eigh(s)  # w: (p,), v: (p, p)
    wmax = w.max().clamp_min(0.0)
    cutoff = wmax * s.shape[0] * torch.finfo(_F64).eps
    inv_sqrt = torch.where(w > cutoff, w.clamp_min(torch.finfo(_F64).tiny).rsqrt(), torch.zeros_like(w))
    return (v * inv_sqrt) @ v.T


def _covariances(x: Tensor, y: Tensor, device, max_chunk_elements: int):
    """Means and covariances in float64, accumulated over chunks of datapoints.

    x : (nx, n), y : (ny, n)  ->  mx (nx,), my (ny,), sxx (nx, nx), sxy (nx, ny), syy (ny, ny)
    """
    nx, n = x.shape
    ny = y.shape[0]
    # Two passes (means first, then centered products) for numerical accuracy.
    mx = x.sum(dim=1, dtype=_F64).to(device) / n
    my = y.sum(dim=1, dtype=_F64).to(device) / n
    sxx = torch.zeros(nx, nx, dtype=_F64, device=device)
    sxy = torch.zeros(nx, ny, dtype=_F64, device=device)
    syy = torch.zeros(ny, ny, dtype=_F64, device=device)
    chunk = max(1, int(max_chunk_elements) // max(1, nx + ny))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        xc = x[:, start:stop].to(device=device, dtype=_F64) - mx[:, None]  # (nx, c)
        yc = y[:, start:stop].to(device=device, dtype=_F64) - my[:, None]  # (ny, c)
        sxx += xc @ xc.T
        sxy += xc @ yc.T
        syy += yc @ yc.T
    denom = n - 1
    return mx, my, sxx / denom, sxy / denom, syy / denom


def _alive(var: Tensor, tol: float) -> Tensor:
    """Boolean mask of neurons whose variance exceeds ``tol`` x the layer's largest."""
    vmax = var.max() if var.numel() else torch.zeros((), dtype=var.dtype)
    if not bool(vmax > 0):
        return torch.zeros_like(var, dtype=torch.bool)
    return var > tol * vmax


# --------------------------------------------------------------------------- public API


def cca(
    x: Tensor,
    y: Tensor,
    eps: float = 1e-10,
    *,
    min_ratio: float | None = 5.0,
    dead_tol: float | None = None,
    max_chunk_elements: int = _DEFAULT_CHUNK_ELEMENTS,
) -> CCAResult:
    """Canonical correlation analysis of two activation matrices.

    Parameters
    ----------
    x : Tensor, shape (n_x, n_datapoints)
        Activations of the first layer: neurons x datapoints. Any real dtype, any
        device; computation is float64 on ``x.device`` (``y`` is moved there).
        NumPy arrays are accepted too.
    y : Tensor, shape (n_y, n_datapoints)
        Activations of the second layer, same datapoints in the same order.
    eps : float, default 1e-10
        Ridge added to the diagonal of the covariances after rescaling them by their
        largest entry (so it is relative to the layer's scale), as in the reference.
    min_ratio : float or None, default 5
        Require ``n_datapoints >= min_ratio * max(n_x, n_y)`` (counted before
        dead-neuron removal); ``None`` or 0 disables the check (not recommended).
    dead_tol : float or None, default None (= ``eps``)
        Neurons whose variance is ``<= dead_tol * max variance`` of their layer are
        removed before CCA (the reference's ``remove_small``). Neurons with exactly
        zero variance are always removed.
    max_chunk_elements : int, default 2**22
        Datapoints are processed in chunks of about this many float64 elements.

    Returns
    -------
    CCAResult
        Canonical correlations (descending) and the canonical directions of both
        sides. If every neuron of ``x`` or of ``y`` is dead, ``k == 0`` (empty ``rho``).

    Raises
    ------
    ValueError
        Wrong dimensionality, different numbers of datapoints, non-finite values, or
        too few datapoints for the number of neurons.
    """
    x = _as_2d_tensor(x, "x")
    y = _as_2d_tensor(y, "y")
    nx, n = x.shape
    ny, n_y = y.shape
    if n != n_y:
        raise ValueError(
            f"x and y must have the same number of datapoints (columns): x is {tuple(x.shape)}, "
            f"y is {tuple(y.shape)}. Both must be (n_neurons, n_datapoints) over the same samples."
        )
    if nx == 0 or ny == 0:
        raise ValueError(f"x and y need at least one neuron, got shapes {tuple(x.shape)}, {tuple(y.shape)}")
    if n < 2:
        raise ValueError(f"need at least 2 datapoints, got {n}")
    if min_ratio:
        need = int(math.ceil(min_ratio * max(nx, ny)))
        if n < need:
            raise ValueError(
                f"too few datapoints for CCA: {n} datapoints for {max(nx, ny)} neurons "
                f"(x has {nx}, y has {ny}); need at least {need} (min_ratio={min_ratio} "
                "datapoints per neuron; the reference recommends 5-10x). With too few "
                "datapoints canonical correlations are inflated towards 1. Fix: use more "
                "samples, or for conv layers flatten with mode='positions' (every spatial "
                "position is a datapoint), or lower min_ratio deliberately."
            )
    device = x.device
    if not bool(torch.isfinite(x).all()) or not bool(torch.isfinite(y).all()):
        raise ValueError("x and y must contain only finite values (found NaN or inf)")
    if dead_tol is None:
        dead_tol = eps

    mx, my, sxx, sxy, syy = _covariances(x, y, device, max_chunk_elements)
    x_keep = _alive(torch.diagonal(sxx), dead_tol)  # (nx,)
    y_keep = _alive(torch.diagonal(syy), dead_tol)  # (ny,)
    sxx = sxx[x_keep][:, x_keep]  # (px, px)
    syy = syy[y_keep][:, y_keep]  # (py, py)
    sxy = sxy[x_keep][:, y_keep]  # (px, py)
    px, py = sxx.shape[0], syy.shape[0]

    if px == 0 or py == 0:
        empty = torch.zeros(0, dtype=_F64, device=device)
        return CCAResult(
            rho=empty,
            x_coefs=torch.zeros(px, 0, dtype=_F64, device=device),
            y_coefs=torch.zeros(py, 0, dtype=_F64, device=device),
            x_keep=x_keep,
            y_keep=y_keep,
            x_mean=mx,
            y_mean=my,
            sigma_xx=sxx,
            sigma_yy=syy,
            n_datapoints=n,
        )

    # Rescale so that eps is relative to each layer's scale (as the reference does).
    xmax = sxx.abs().max()
    ymax = syy.abs().max()
    sxx_s = sxx / xmax + eps * torch.eye(px, dtype=_F64, device=device)
    syy_s = syy / ymax + eps * torch.eye(py, dtype=_F64, device=device)
    sxy_s = sxy / torch.sqrt(xmax * ymax)

    ixx = _inv_sqrt_psd(sxx_s)  # (px, px)
    iyy = _inv_sqrt_psd(syy_s)  # (py, py)
    m = ixx @ sxy_s @ iyy  # (px, py)
    u, s, vh = torch.linalg.svd(m, full_matrices=False)  # u (px, k), s (k,), vh (k, py)
    rho = s.clamp(0.0, 1.0)  # (k,), descending (SVD order)
    # Directions in original units: variates a^T (x - mean) have ~unit variance.
    x_coefs = (ixx @ u) / torch.sqrt(xmax)  # (px, k)
    y_coefs = (iyy @ vh.T) / torch.sqrt(ymax)  # (py, k)
    return CCAResult(
        rho=rho,
        x_coefs=x_coefs,
        y_coefs=y_coefs,
        x_keep=x_keep,
        y_keep=y_keep,
        x_mean=mx,
        y_mean=my,
        sigma_xx=sxx,
        sigma_yy=syy,
        n_datapoints=n,
    )


def projection_weights(result: CCAResult, side: Literal["x", "y"] = "x") -> Tensor:
    """PWCCA projection weights ``alpha`` (Morcos et al. 2018).

    ``alpha_i = sum_j |<h_i / ||h_i||, x_j>|``, normalised to sum to 1, where ``h_i``
    is the i-th canonical variate of the chosen side and ``x_j`` its j-th centered
    neuron (dead neurons contribute 0 and are skipped).

    Parameters
    ----------
    result : CCAResult
        Output of :func:`cca`.
    side : {"x", "y"}
        Whose neurons and canonical variates define the weights.

    Returns
    -------
    Tensor, shape (k,)
        Float64 weights summing to 1 (all NaN if they cannot be defined).
    """
    if side == "x":
        s, a = result.sigma_xx, result.x_coefs
    elif side == "y":
        s, a = result.sigma_yy, result.y_coefs
    else:
        raise ValueError(f"side must be 'x' or 'y', got {side!r}")
    if a.shape[1] == 0:
        return torch.zeros(0, dtype=_F64, device=a.device)
    sa = s @ a  # (p, k): (n-1)^-1 <x_j, h_i>
    var_h = torch.einsum("pk,pk->k", a, sa).clamp_min(0.0)  # (k,): ||h_i||^2 / (n-1)
    norm = torch.sqrt(var_h)
    ok = norm > torch.finfo(_F64).eps * norm.max().clamp_min(torch.finfo(_F64).tiny)
    proj = sa.abs().sum(dim=0) / torch.where(ok, norm, torch.ones_like(norm))  # (k,)
    proj = torch.where(ok, proj, torch.zeros_like(proj))
    total = proj.sum()
    if not bool(total > 0):
        return torch.full_like(proj, float("nan"))
    return proj / total


def pwcca(
    x: Tensor,
    y: Tensor,
    eps: float = 1e-10,
    *,
    symmetric: bool = False,
    min_ratio: float | None = 5.0,
    dead_tol: float | None = None,
    max_chunk_elements: int = _DEFAULT_CHUNK_ELEMENTS,
) -> PWCCAResult:
    """Projection-weighted CCA between two activation matrices, with details.

    Parameters
    ----------
    x : Tensor, shape (n_x, n_datapoints)
        Activations whose canonical variates define the projection weights.
    y : Tensor, shape (n_y, n_datapoints)
        Activations of the other layer on the same datapoints.
    eps : float, default 1e-10
        Relative covariance regularisation, see :func:`cca`.
    symmetric : bool, default False
        ``False``: weights from ``x`` (asymmetric, like the reference). ``True``:
        average the similarities obtained with weights from ``x`` and from ``y``
        (which is symmetric in ``x`` and ``y``).
    min_ratio, dead_tol, max_chunk_elements
        See :func:`cca`.

    Returns
    -------
    PWCCAResult
        ``similarity`` is NaN (with a ``RuntimeWarning``) when every neuron of ``x`` or
        of ``y`` is dead, since CCA is then undefined.
    """
    res = cca(x, y, eps, min_ratio=min_ratio, dead_tol=dead_tol, max_chunk_elements=max_chunk_elements)
    if res.k == 0:
        warnings.warn(
            "PWCCA undefined: every neuron of x or of y has (near-)zero variance; returning NaN",
            RuntimeWarning,
            stacklevel=2,
        )
        nan = float("nan")
        return PWCCAResult(nan, nan, res.rho, res.rho, res)
    w = projection_weights(res, "x")  # (k,)
    if symmetric:
        w = 0.5 * (w + projection_weights(res, "y"))
    sim = float((w * res.rho).sum().item())
    return PWCCAResult(similarity=sim, distance=1.0 - sim, weights=w, rho=res.rho, cca=res)


def pwcca_similarity(
    x: Tensor,
    y: Tensor,
    eps: float = 1e-10,
    *,
    symmetric: bool = False,
    min_ratio: float | None = 5.0,
    dead_tol: float | None = None,
) -> float:
    """PWCCA similarity ``sum_i alpha_i rho_i`` in [0, 1] (1 = affinely identical).

    Weights come from ``x`` unless ``symmetric=True``; see :func:`pwcca`.

    Parameters
    ----------
    x : Tensor, shape (n_x, n_datapoints)
    y : Tensor, shape (n_y, n_datapoints)
    eps, symmetric, min_ratio, dead_tol
        See :func:`pwcca` and :func:`cca`.

    Returns
    -------
    float
    """
    return pwcca(x, y, eps, symmetric=symmetric, min_ratio=min_ratio, dead_tol=dead_tol).similarity


def pwcca_distance(
    x: Tensor,
    y: Tensor,
    eps: float = 1e-10,
    *,
    symmetric: bool = False,
    min_ratio: float | None = 5.0,
    dead_tol: float | None = None,
) -> float:
    """PWCCA distance ``1 - pwcca_similarity(x, y)`` (the papers' "CCA distance").

    Parameters
    ----------
    x : Tensor, shape (n_x, n_datapoints)
    y : Tensor, shape (n_y, n_datapoints)
    eps, symmetric, min_ratio, dead_tol
        See :func:`pwcca` and :func:`cca`.

    Returns
    -------
    float
    """
    return pwcca(x, y, eps, symmetric=symmetric, min_ratio=min_ratio, dead_tol=dead_tol).distance


def flatten_conv_activations(
    acts: Tensor,
    mode: Literal["spatial_mean", "positions"] = "spatial_mean",
) -> Tensor:
    """Turn layer activations into a ``(n_neurons, n_datapoints)`` matrix for CCA.

    Parameters
    ----------
    acts : Tensor, shape (N, C, H, W) or (N, C, *spatial) or (N, C)
        Activations of N samples. A 2-D input (fully-connected layer) is simply
        transposed to (C, N), whatever ``mode``.
    mode : {"spatial_mean", "positions"}
        ``"spatial_mean"``: each channel's response to a sample is the mean over its
        feature map (the same per-unit response as the selectivity index), giving
        ``(C, N)``; datapoints = samples. Cheap and directly comparable across
        layers of different resolution, but needs N >= min_ratio * C samples.
        ``"positions"``: every spatial position of every sample is a datapoint,
        giving ``(C, N*H*W)`` ordered sample-major (sample n, then row, then column).
        This is the reference's recommended flattening for conv layers (a channel is a
        neuron, positions are datapoints): many more datapoints, so it passes the
        datapoint check with fewer samples, but datapoints are spatially correlated and
        both layers must have the same spatial size (H, W).

    Returns
    -------
    Tensor
        ``(C, N)`` (float64 for ``"spatial_mean"`` on >2-D input) or ``(C, N*H*W)``
        (input dtype for ``"positions"``, to avoid a float64 copy of a large matrix).
    """
    if not isinstance(acts, Tensor):
        acts = torch.as_tensor(np.asarray(acts))
    if acts.ndim == 2:
        return acts.T
    if acts.ndim < 2:
        raise ValueError(f"activations must be (N, C) or (N, C, H, W), got shape {tuple(acts.shape)}")
    n, c = acts.shape[:2]
    if mode == "spatial_mean":
        dims = tuple(range(2, acts.ndim))
        return acts.mean(dim=dims, dtype=_F64).T  # (C, N)
    if mode == "positions":
        return acts.movedim(1, 0).reshape(c, -1)  # (C, N*H*W)
    raise ValueError(f"mode must be 'spatial_mean' or 'positions', got {mode!r}")
