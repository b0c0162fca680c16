"""Canonical correlation analysis and projection-weighted CCA (PWCCA).

PWCCA was introduced by Morcos, Raghu & Bengio (2018, "Insights on representational
similarity in neural networks with canonical correlation", arXiv:1806.05759) and is the
"CCA distance" of Leavitt & Morcos (paper 1, section 4.2 and appendix A.2), who used the
authors' reference code (``google/svcca``: ``pwcca.py`` ``compute_pwcca`` and
``cca_core.py`` ``get_cca_similarity``). This module is an independent PyTorch
implementation with two methods:

* ``method="svcca"`` (default of :func:`pwcca`): the number the reference computes,
  which is what paper 1 reports (details below).
* ``method="textbook"``: PWCCA as defined in Morcos et al. (canonical variates,
  centred neurons, weights from ``x``), via :func:`cca` and :func:`projection_weights`.

The two agree when the neurons have zero mean and the covariance is well conditioned
(e.g. a rotation plus noise) and differ otherwise: the reference's directions are not
the canonical variates (no ``Sxx^{-1/2}``) and carry the neuron means, so its weights
differ (measured: half the dimensions shared with shifted means, 0.55 textbook vs 0.80
svcca similarity; ReLU layers of two random ResNet20s, mean 0.29 vs 0.57; see
``benchmarks/fidelity_examples.py``).

Conventions
-----------
Activation matrices are ``(n_neurons, n_datapoints)``: one row per neuron (unit), one
column per datapoint (sample, or sample x spatial position for conv layers, see
:func:`flatten_conv_activations`). ``x`` and ``y`` must share the datapoints (same
samples, same order) but may have different numbers of neurons. Everything is
computed in float64 on the device of ``x``, whatever the input dtype. Covariances are
accumulated over chunks of datapoints (``1/(n-1)`` normalisation), so very wide inputs
(every spatial position of a conv layer) never need a float64 copy of the whole matrix.

Textbook CCA (:func:`cca`)
--------------------------
1. Centre every neuron; covariances ``Sxx, Syy, Sxy``.
2. Dead-neuron removal: a neuron whose variance is ``<= dead_tol * (largest variance in
   its layer)`` is dropped (``dead_tol`` defaults to ``eps``).
3. Rescale ``Sxx``, ``Syy`` by their largest entry (``Sxy`` by the geometric mean of
   the two) so ``eps`` is relative, and add ``eps*I``.
4. ``M = Sxx^{-1/2} Sxy Syy^{-1/2} = U diag(rho) V^T``; ``rho`` (descending, clipped to
   [0, 1]) are the ``k = min(n_x, n_y)`` canonical correlations; the canonical
   directions are ``a_i = Sxx^{-1/2} u_i`` and the variates ``h_i = a_i^T (x - mean)``.

Textbook PWCCA: ``alpha_i = sum_j |<h_i / ||h_i||, x_j>|`` over the *centred* neurons
``x_j`` of ``x``, normalised to sum 1; ``similarity = sum_i alpha_i rho_i``. Computed
from covariances (``<x_j, h_i> = (n-1) (Sxx a_i)_j``). Weights always come from ``x``;
``symmetric=True`` averages the weights of both sides. Identical inputs and inputs
related by an invertible affine map give similarity 1.

The reference's PWCCA (``method="svcca"``)
------------------------------------------
1. Covariances as above; rescale ``Sxx``, ``Syy``, ``Sxy`` by the largest entries.
2. Keep neurons whose rescaled variance is ``>= eps`` (``dead_tol`` if given; the
   reference's ``remove_small``). The reference's default ``eps`` is 0, which keeps
   every neuron, also constant ones, whose result is then ill-defined (it depends on
   rounding in ``pinv``/``eigh`` and on an arbitrary QR column), while with ``eps > 0``
   the reference fails with a shape error as soon as a neuron is removed (it adds the
   means of *all* neurons to the kept rows). Here constant neurons are always removed,
   and the kept neurons' means are added back.
3. Add ``eps*I``; ``Sxx^{-1/2}`` as the square root of ``pinv(Sxx)`` (``pinv``'s cutoff
   ``1e-15 * max|eigenvalue|``; a negative eigenvalue above it, where the reference
   would produce NaN, counts as 0).
4. Full SVD (NumPy's, as the reference: the singular vectors' signs matter in step 5
   because the means are added with a fixed sign) of ``Sxx^{-1/2} Sxy Syy^{-1/2}``;
   ``rho = |s|`` (not clipped).
5. Side with fewer kept neurons (``x`` on a tie): directions
   ``D = u^T (x - m) + m`` (rows: left singular vectors, *without* ``Sxx^{-1/2}``; mean
   of neuron ``i`` added to direction ``i``); ``Q`` of the QR decomposition of ``D^T``;
   ``alpha_i = sum_j |<Q_i, x_j>|`` over the *uncentred* kept neurons; normalise;
   ``similarity = sum_i alpha_i rho_i``. ``Q^T x^T`` is obtained from the moments
   (Cholesky of ``D D^T``), without a ``(k, n_datapoints)`` matrix. When ``y`` has
   fewer kept neurons the reference's branch projects ``x``'s activations with ``y``'s
   directions and indices (a bug, google/svcca PR #9; it fails or mixes the two
   layers); here that branch uses ``y``'s own directions, means and activations.
   ``symmetric=True`` averages the similarities of both argument orders. Result
   fields: ``method`` and ``weights_side`` say which was used.

The pair order matters for both methods (the weights come from one side). Paper 1,
appendix A.2 names the unregularised (alpha = 0) network's layer ``L_1`` first; with
equal widths the reference then takes the weights from it.

Other deliberate differences from the reference
-----------------------------------------------
Too few datapoints is an error here (the reference only asserts
``neurons < datapoints``): CCA on ``n`` datapoints with ``p`` neurons overfits and the
canonical correlations of unrelated inputs approach 1 as ``p / n`` grows. The reference
authors recommend 5-10x more datapoints than neurons; we require
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
    "PWCCA_METHODS",
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
        Projection weights ``alpha`` (sum 1) from the side ``weights_side``
        (textbook: ``x``, or with ``symmetric`` the average of both sides' weights;
        svcca: the side with fewer kept neurons, ``x`` on a tie).
    rho : Tensor, shape (k,)
        Canonical correlations, descending.
    cca : CCAResult
        The underlying CCA.
    method : {"svcca", "textbook"}
        Which computation produced the result (:func:`pwcca`).
    weights_side : {"x", "y", "both"}
        Whose neurons gave the projection weights.
    """

    similarity: float
    distance: float
    weights: Tensor
    rho: Tensor
    cca: CCAResult
    method: str = "textbook"
    weights_side: str = "x"


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


def _check_pair(x: Tensor, y: Tensor, min_ratio: float | None) -> tuple[int, int]:
    """Validate two (n_neurons, n_datapoints) matrices; return (n_x, n_datapoints)."""
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
    if not bool(torch.isfinite(x).all()) or not bool(torch.isfinite(y).all()):
        raise ValueError("x and y must contain only finite values (found NaN or inf)")
    return nx, n


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
    nx, n = _check_pair(x, y, min_ratio)
    device = x.device
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


def _inv_sqrt_pinv(s: Tensor) -> Tensor:
    """Square root of the pseudo-inverse of a symmetric matrix, as ``numpy.linalg.pinv``.

    Eigenvalues with ``|w| <= 1e-15 * max|w|`` (``pinv``'s default ``rcond``) count as 0;
    a negative eigenvalue above that cutoff (rounding error, where a square root would
    give NaN) is treated as 0 as well. s : (p, p) float64 -> (p, p) float64
    """
    w, v = torch.linalg.eigh(s)  # w: (p,), v: (p, p)
    cutoff = 1e-15 * w.abs().max()
    keep = (w.abs() > cutoff) & (w > 0)
    inv_sqrt = torch.where(keep, w.clamp_min(torch.finfo(_F64).tiny).rsqrt(), torch.zeros_like(w))
    return (v * inv_sqrt) @ v.T


def _svcca_side_weights(rot: Tensor, cov: Tensor, mean: Tensor, n: int) -> Tensor:
    """Projection weights of the reference's QR step, computed from moments.

    The reference forms ``D = rot (A - m) + m`` (``(p, n)``: rotated centred neurons with
    the neuron means added back, mean ``i`` onto direction ``i``), takes ``Q`` of the QR
    decomposition of ``D^T`` and weights direction ``i`` by ``sum_j |<Q_i, A_j>|`` over
    the *uncentred* neurons ``A_j``. With ``G = D D^T = L L^T`` (Cholesky), ``Q = D^T L^-T``
    up to column signs, so ``Q^T A^T = L^-1 D A^T`` with
    ``D A^T = (n-1) rot S + n m m^T`` and ``G = (n-1) rot S rot^T + n m m^T``: no
    ``(p, n)`` matrix is needed. Signs of ``Q``'s columns do not matter (absolute values).

    rot : (p, p) rows are the directions; cov : (p, p) covariance S of the kept
    neurons; mean : (p,) their means; n : datapoints. Returns (p,) unnormalised weights.
    """
    rs = rot @ cov  # (p, p)
    mm = n * torch.outer(mean, mean)  # (p, p)
    gram = (n - 1) * rs @ rot.T + mm  # (p, p) D D^T
    gram = 0.5 * (gram + gram.T)
    chol, info = torch.linalg.cholesky_ex(gram)
    if int(info) != 0:
        raise np.linalg.LinAlgError(
            "method='svcca': the reference's directions (with means added back) are linearly "
            "dependent, so its QR step is not unique; use method='textbook'"
        )
    dat = (n - 1) * rs + mm  # (p, p) D A^T
    proj = torch.linalg.solve_triangular(chol, dat, upper=False)  # (p, p) Q^T A^T
    return proj.abs().sum(dim=1)


def _pwcca_svcca(
    x: Tensor,
    y: Tensor,
    eps: float,
    min_ratio: float | None,
    dead_tol: float | None,
    max_chunk_elements: int,
) -> PWCCAResult:
    """PWCCA as ``google/svcca``'s ``compute_pwcca`` computes it (module docstring)."""
    x = _as_2d_tensor(x, "x")
    y = _as_2d_tensor(y, "y")
    nx, n = _check_pair(x, y, min_ratio)
    device = x.device
    if dead_tol is None:
        dead_tol = eps
    mx, my, sxx, sxy, syy = _covariances(x, y, device, max_chunk_elements)
    # The reference rescales by the largest |entry| first, then keeps neurons whose
    # rescaled variance is >= eps; exactly constant neurons are always dropped here.
    xmax = sxx.abs().max()
    ymax = syy.abs().max()
    vx, vy = torch.diagonal(sxx), torch.diagonal(syy)
    x_keep = (vx > 0) & (vx >= dead_tol * xmax)  # (nx,)
    y_keep = (vy > 0) & (vy >= dead_tol * ymax)  # (ny,)
    sxx, syy, sxy = sxx[x_keep][:, x_keep], syy[y_keep][:, y_keep], sxy[x_keep][:, y_keep]
    px, py = sxx.shape[0], syy.shape[0]
    empty = torch.zeros(0, dtype=_F64, device=device)
    if px == 0 or py == 0:
        warnings.warn(
            "PWCCA undefined: every neuron of x or of y has (near-)zero variance; returning NaN",
            RuntimeWarning,
            stacklevel=3,
        )
        res = CCAResult(
            empty,
            torch.zeros(px, 0, dtype=_F64, device=device),
            torch.zeros(py, 0, dtype=_F64, device=device),
            x_keep,
            y_keep,
            mx,
            my,
            sxx,
            syy,
            n,
        )
        nan = float("nan")
        return PWCCAResult(nan, nan, empty, empty, res, method="svcca", weights_side="x")
    ixx = _inv_sqrt_pinv(sxx / xmax + eps * torch.eye(px, dtype=_F64, device=device))  # (px, px)
    iyy = _inv_sqrt_pinv(syy / ymax + eps * torch.eye(py, dtype=_F64, device=device))  # (py, py)
    arr = ixx @ (sxy / torch.sqrt(xmax * ymax)) @ iyy  # (px, py)
    # numpy's SVD, as in the reference: the directions' signs matter below (the means
    # are added back with a fixed sign), so we use the same LAPACK routine and sign
    # convention rather than torch's (which may differ, e.g. on CUDA).
    u_np, s_np, vh_np = np.linalg.svd(arr.cpu().numpy(), full_matrices=True)
    u = torch.from_numpy(u_np).to(device)  # (px, px)
    vh = torch.from_numpy(vh_np).to(device)  # (py, py)
    rho = torch.from_numpy(np.abs(s_np)).to(device)  # (k,), k = min(px, py)
    k = rho.numel()
    if px <= py:
        side = "x"
        w = _svcca_side_weights(u.T, sxx, mx[x_keep], n)  # (px,) = (k,)
    else:
        # The reference's branch for a second input with fewer neurons projects the
        # first input's activations (google/svcca PR #9); we use the second input's
        # own directions, means and activations, as that branch intends.
        side = "y"
        w = _svcca_side_weights(vh, syy, my[y_keep], n)  # (py,) = (k,)
    w = w / w.sum()
    res = CCAResult(
        rho=rho,
        x_coefs=(ixx @ u[:, :k]) / torch.sqrt(xmax),
        y_coefs=(iyy @ vh[:k].T) / torch.sqrt(ymax),
        x_keep=x_keep,
        y_keep=y_keep,
        x_mean=mx,
        y_mean=my,
        sigma_xx=sxx,
        sigma_yy=syy,
        n_datapoints=n,
    )
    sim = float((w * rho).sum().item())
    return PWCCAResult(sim, 1.0 - sim, w, rho, res, method="svcca", weights_side=side)


PWCCA_METHODS = ("svcca", "textbook")

#: Default ``eps`` per method: the reference's ``compute_pwcca`` default (0) for
#: ``"svcca"``, a tiny relative ridge for ``"textbook"``.
_DEFAULT_EPS = {"svcca": 0.0, "textbook": 1e-10}


def pwcca(
    x: Tensor,
    y: Tensor,
    eps: float | None = None,
    *,
    method: str = "svcca",
    symmetric: bool = False,
    min_ratio: float | None = 5.0,
    dead_tol: float | None = None,
    max_chunk_elements: int = _DEFAULT_CHUNK_ELEMENTS,
) -> PWCCAResult:
    """Projection-weighted CCA between two activation matrices, with details.

    Parameters
    ----------
    x : Tensor, shape (n_x, n_datapoints)
        Activations of the first layer (the first argument of the reference's
        ``compute_pwcca``).
    y : Tensor, shape (n_y, n_datapoints)
        Activations of the other layer on the same datapoints.
    eps : float, optional
        Relative covariance regularisation and (unless ``dead_tol`` is given) the
        relative variance below which a neuron is removed. Default: 0 for
        ``"svcca"`` (the reference's default), 1e-10 for ``"textbook"``.
    method : {"svcca", "textbook"}, default "svcca"
        ``"svcca"``: as the reference ``google/svcca`` computes it (what paper 1
        used): weights from the side with fewer kept neurons, directions from the
        SVD's singular vectors with the neuron means added back, projected onto the
        uncentred activations. ``"textbook"``: the definition of Morcos et al.
        (canonical variates and centred neurons), weights from ``x``. See the module
        docstring.
    symmetric : bool, default False
        ``True``: symmetric in ``x`` and ``y``. ``"textbook"``: average the weights
        from ``x`` and from ``y``; ``"svcca"``: average the similarities of both
        argument orders (``weights`` is then the average of the two weight vectors).
    min_ratio, dead_tol, max_chunk_elements
        See :func:`cca`.

    Returns
    -------
    PWCCAResult
        ``similarity`` is NaN (with a ``RuntimeWarning``) when every neuron of ``x`` or
        of ``y`` is dead, since CCA is then undefined.
    """
    if method not in PWCCA_METHODS:
        raise ValueError(f"method must be one of {PWCCA_METHODS}, got {method!r}")
    if eps is None:
        eps = _DEFAULT_EPS[method]
    if method == "svcca":
        res_xy = _pwcca_svcca(x, y, eps, min_ratio, dead_tol, max_chunk_elements)
        if not symmetric:
            return res_xy
        # Both argument orders, averaged (with equal widths: weights from each side).
        res_yx = _pwcca_svcca(y, x, eps, min_ratio, dead_tol, max_chunk_elements)
        sim = 0.5 * (res_xy.similarity + res_yx.similarity)
        w = 0.5 * (res_xy.weights + res_yx.weights)
        return PWCCAResult(sim, 1.0 - sim, w, res_xy.rho, res_xy.cca, method="svcca", weights_side="both")
    res = cca(x, y, eps, min_ratio=min_ratio, dead_tol=dead_tol, max_chunk_elements=max_chunk_elements)
    side = "both" if symmetric else "x"
    if res.k == 0:
        warnings.warn(
            "PWCCA undefined: every neuron of x or of y has (near-)zero variance; returning NaN",
            RuntimeWarning,
            stacklevel=2,
        )
        nan = float("nan")
        return PWCCAResult(nan, nan, res.rho, res.rho, res, method="textbook", weights_side=side)
    w = projection_weights(res, "x")  # (k,)
    if symmetric:
        w = 0.5 * (w + projection_weights(res, "y"))
    sim = float((w * res.rho).sum().item())
    return PWCCAResult(sim, 1.0 - sim, w, res.rho, res, method="textbook", weights_side=side)


def pwcca_similarity(
    x: Tensor,
    y: Tensor,
    eps: float | None = None,
    *,
    method: str = "svcca",
    symmetric: bool = False,
    min_ratio: float | None = 5.0,
    dead_tol: float | None = None,
) -> float:
    """PWCCA similarity ``sum_i alpha_i rho_i`` (1 = affinely identical).

    Parameters
    ----------
    x : Tensor, shape (n_x, n_datapoints)
    y : Tensor, shape (n_y, n_datapoints)
    eps, method, symmetric, min_ratio, dead_tol
        See :func:`pwcca` and :func:`cca`.

    Returns
    -------
    float
    """
    return pwcca(
        x, y, eps, method=method, symmetric=symmetric, min_ratio=min_ratio, dead_tol=dead_tol
    ).similarity


def pwcca_distance(
    x: Tensor,
    y: Tensor,
    eps: float | None = None,
    *,
    method: str = "svcca",
    symmetric: bool = False,
    min_ratio: float | None = 5.0,
    dead_tol: float | None = None,
) -> float:
    """PWCCA distance ``1 - pwcca_similarity(x, y)`` (the papers' "CCA distance").

    Parameters
    ----------
    x : Tensor, shape (n_x, n_datapoints)
    y : Tensor, shape (n_y, n_datapoints)
    eps, method, symmetric, min_ratio, dead_tol
        See :func:`pwcca` and :func:`cca`.

    Returns
    -------
    float
    """
    return pwcca(
        x, y, eps, method=method, symmetric=symmetric, min_ratio=min_ratio, dead_tol=dead_tol
    ).distance


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
