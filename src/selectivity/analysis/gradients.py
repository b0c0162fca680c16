"""Input-unit gradients and their variability across samples and across units.

Definitions (see ``docs/geometry.md``)
--------------------------------------
For a layer with ``U`` units (channels) and an image ``x_n``, the response of unit ``j``
is its spatially averaged activation ``r_j(x_n)`` and its input gradient is
``g_nj = d r_j(x_n) / d x_n`` (a vector of ``D = C * H * W`` pixels; with ``mean``/``std``
given, the gradient is taken in [0, 1] pixel space through the normalisation).

With ``cos(a, b) = a.b / (||a|| ||b||)`` and ``ghat = g / ||g||``:

* **Across samples** (one value per unit ``j``), over the ``N_j`` images whose gradient
  is not exactly zero:
  ``V_samples(j) = 1 - mean_{n != m} cos(g_nj, g_mj)
                 = 1 - (||sum_n ghat_nj||^2 - N_j) / (N_j (N_j - 1))``.
* **Across units** (one value per image ``n``), over the ``U_n`` units with a non-zero
  gradient: ``V_units(n) = 1 - mean_{j != k} cos(g_nj, g_nk)`` (same identity).
* **Norm variability**: coefficient of variation ``std / mean`` (population std) of the
  gradient norms ``||g_nj||``, across samples (per unit) and across units (per image);
  zero gradients count here (their norm is a real 0). The ``*_nonzero`` variants leave
  the zero gradients out (the spread of the norms of the active units alone); NaN with
  fewer than two non-zero gradients.
* **Element-wise variance** (population, ``ddof=0``), averaged over the ``D`` pixels:
  ``Var_samples(j) = 1/D sum_d Var_n(g_njd) = 1/D (1/N sum_n ||g_nj||^2 - ||1/N sum_n g_nj||^2)``
  per unit, and ``Var_units(n) = 1/D sum_d Var_j(g_njd)`` per image, zero gradients
  included. Unlike the cosine and CV measures it keeps the gradients' scale.

A zero gradient (a ReLU unit switched off at every position for that image) has no
direction, so it is left out of the cosine measures and counted, per unit in
``zero_gradients`` (images) and per image in ``zero_units`` (units); with fewer than two
non-zero gradients the cosine measure is NaN.

Computation: one forward pass to the layer (the rest of the network is skipped), then
for each unit one backward pass that yields that unit's gradient for every image of
the batch at once (a one-hot cotangent over units), never one backward per unit per
image. With ``unit_chunk=K > 1`` the gradients of ``K`` units come from one batched
backward (``torch.autograd.grad(..., is_grads_batched=True)``, i.e. ``vmap`` over
one-hot cotangents); on a 2-core CPU that was slower than ``K = 1``. The model is in eval mode
(each image's gradient is its own) and its flags are restored afterwards; no
parameter gradient is created.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from selectivity.core.evalmode import frozen_eval

__all__ = [
    "GradientVariability",
    "input_unit_gradients",
    "gradient_variability",
]


@dataclass(frozen=True)
class GradientVariability:
    """Variability of the input-unit gradients of one layer.

    Attributes
    ----------
    across_samples : Tensor
        ``(U,)`` float64, ``1 - mean pairwise cosine`` across images, per unit.
    across_units : Tensor
        ``(N,)`` float64, ``1 - mean pairwise cosine`` across units, per image.
    norm_cv_samples : Tensor
        ``(U,)`` float64, coefficient of variation of gradient norms across images.
    norm_cv_units : Tensor
        ``(N,)`` float64, coefficient of variation of gradient norms across units.
    zero_gradients : Tensor
        ``(U,)`` int64, images whose gradient for the unit is exactly zero.
    zero_units : Tensor
        ``(N,)`` int64, units whose gradient for the image is exactly zero (inactive units).
    norm_cv_samples_nonzero : Tensor
        ``(U,)`` float64, as ``norm_cv_samples`` over the images with a non-zero gradient.
    norm_cv_units_nonzero : Tensor
        ``(N,)`` float64, as ``norm_cv_units`` over the units with a non-zero gradient.
    variance_samples : Tensor
        ``(U,)`` float64, element-wise variance across images averaged over pixels.
    variance_units : Tensor
        ``(N,)`` float64, element-wise variance across units averaged over pixels.
    """

    across_samples: Tensor
    across_units: Tensor
    norm_cv_samples: Tensor
    norm_cv_units: Tensor
    zero_gradients: Tensor
    zero_units: Tensor
    norm_cv_samples_nonzero: Tensor
    norm_cv_units_nonzero: Tensor
    variance_samples: Tensor
    variance_units: Tensor

    def summary(self) -> dict[str, float]:
        """Layer-level means (NaN entries skipped) of the measures, and the zero-gradient share.

        ``zero_fraction`` is the share of (image, unit) pairs whose gradient is zero.
        """
        n_pairs = self.zero_units.numel() * self.zero_gradients.numel()
        return {
            "across_samples": float(torch.nanmean(self.across_samples)),
            "across_units": float(torch.nanmean(self.across_units)),
            "norm_cv_samples": float(torch.nanmean(self.norm_cv_samples)),
            "norm_cv_units": float(torch.nanmean(self.norm_cv_units)),
            "norm_cv_samples_nonzero": float(torch.nanmean(self.norm_cv_samples_nonzero)),
            "norm_cv_units_nonzero": float(torch.nanmean(self.norm_cv_units_nonzero)),
            "variance_samples": float(torch.nanmean(self.variance_samples)),
            "variance_units": float(torch.nanmean(self.variance_units)),
            "zero_fraction": float(self.zero_gradients.sum()) / n_pairs if n_pairs else math.nan,
        }


class _StopForward(Exception):
    """Raised by the capture hook once the layer's output is in hand."""


def _resolve_layer(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError("layer must be a submodule of model (or the name of one)")
        return layer
    modules = dict(model.named_modules())
    if not isinstance(layer, str) or layer not in modules:
        names = [n for n in modules if n][:5]
        raise ValueError(
            f"layer {layer!r} does not exist; expected a name from model.named_modules(), e.g. {names}"
        )
    return modules[layer]


def _layer_responses(
    model: nn.Module,
    module: nn.Module,
    x: Tensor,
    mean: Sequence[float] | Tensor | None,
    std: Sequence[float] | Tensor | None,
) -> Tensor:
    """``(B, U)`` spatially averaged output of ``module``'s first call; forward stops there."""
    captured: list[Tensor] = []

    def hook(_m: nn.Module, _inp: object, out: object) -> None:
        if not isinstance(out, Tensor) or out.dim() < 2:
            raise ValueError("the layer's output must be a tensor of shape (N, U) or (N, C, H, W)")
        captured.append(out)
        raise _StopForward

    inp = x
    if mean is not None or std is not None:
        if mean is None or std is None or x.dim() != 4:
            raise ValueError("mean and std must be given together, for images of shape (N, C, H, W)")
        c = x.shape[1]
        m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
        s = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
        if m.numel() != c or s.numel() != c:
            raise ValueError(f"mean and std must hold {c} values (one per channel)")
        inp = (x - m) / s
    handle = module.register_forward_hook(hook)
    try:
        model(inp)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise ValueError("the layer was not called in the model's forward pass")
    out = captured[0]
    return out if out.dim() == 2 else out.flatten(2).mean(2)  # (B, C, H, W) -> (B, C)


def _check_chunk(unit_chunk: int | None) -> None:
    if unit_chunk is not None and (
        isinstance(unit_chunk, bool) or not isinstance(unit_chunk, int) or unit_chunk < 1
    ):
        raise ValueError(f"unit_chunk must be an integer >= 1 or None, got {unit_chunk!r}")


def _gradient_chunks(
    model: nn.Module,
    module: nn.Module,
    x: Tensor,
    mean: Sequence[float] | Tensor | None,
    std: Sequence[float] | Tensor | None,
    unit_chunk: int | None,
) -> Iterator[tuple[int, int, Tensor]]:
    """Yield ``(first_unit, U, grads)`` with ``grads`` of shape ``(K, B, *x.shape[1:])``."""
    x = x.detach().requires_grad_(True)
    r = _layer_responses(model, module, x, mean, std)  # (B, U)
    u = r.shape[1]
    k = u if unit_chunk is None else min(unit_chunk, u)
    eye = torch.eye(u, dtype=r.dtype, device=r.device)
    for start in range(0, u, k):
        stop = min(start + k, u)
        # one-hot cotangents: (K, B, U) selecting unit start + i for every image
        last = stop == u
        if stop - start == 1:
            # a plain backward over the whole batch: no vmap overhead (fastest on CPU)
            (g,) = torch.autograd.grad(r, x, grad_outputs=eye[start].expand_as(r), retain_graph=not last)
            yield start, u, g.unsqueeze(0)
            continue
        cot = eye[start:stop, None, :].expand(stop - start, r.shape[0], u)
        (g,) = torch.autograd.grad(r, x, grad_outputs=cot, is_grads_batched=True, retain_graph=not last)
        yield start, u, g


def input_unit_gradients(
    model: nn.Module,
    layer: str | nn.Module,
    x: Tensor,
    *,
    mean: Sequence[float] | Tensor | None = None,
    std: Sequence[float] | Tensor | None = None,
    unit_chunk: int | None = 1,
) -> Tensor:
    """Gradient of every unit's spatially averaged activation w.r.t. every input image.

    Parameters
    ----------
    model : nn.Module
        The network.
    layer : str or nn.Module
        The layer (a name from ``model.named_modules()`` or the module itself); its
        first call in the forward pass is used.
    x : Tensor
        ``(B, C, H, W)`` (or ``(B, ...)``) inputs.
    mean, std : sequence of float or Tensor, optional
        Per-channel normalisation applied inside; gradients are then w.r.t. ``x``
        before normalisation.
    unit_chunk : int or None
        Units per backward pass. 1 (default): one plain backward per unit, over all
        images of the batch at once. ``K > 1``: the gradients of ``K`` units in one
        ``vmap``-batched backward (memory ~ ``K * B`` images' backward; measured slower
        on a 2-core CPU, meant for GPUs with small batches). None: all units at once.

    Returns
    -------
    Tensor
        ``(B, U, C, H, W)`` (``(B, U, *x.shape[1:])``) gradients, detached.
    """
    module = _resolve_layer(model, layer)
    _check_chunk(unit_chunk)
    parts = []
    with frozen_eval(model):
        for _, _, g in _gradient_chunks(model, module, x, mean, std, unit_chunk):
            parts.append(g.detach())
    return torch.cat(parts).transpose(0, 1)  # (U, B, ...) -> (B, U, ...)


def _cosine_variability(sum_unit: Tensor, count: Tensor) -> Tensor:
    """``1 - (||sum ghat||^2 - c) / (c (c - 1))``; NaN where ``c < 2``."""
    c = count.to(torch.float64)
    mean_cos = ((sum_unit * sum_unit).sum(-1) - c) / (c * (c - 1))
    return torch.where(count >= 2, 1 - mean_cos, torch.full_like(c, math.nan))


def _cv(s1: Tensor, s2: Tensor, n: int | Tensor) -> Tensor:
    """Coefficient of variation from sums of x and x^2 over n values (population std)."""
    m = s1 / n
    var = (s2 / n - m * m).clamp_min(0)
    return torch.where(m > 0, var.sqrt() / m, torch.full_like(m, math.nan))


def _cv_nonzero(s1: Tensor, s2: Tensor, count: Tensor) -> Tensor:
    """:func:`_cv` over the ``count`` non-zero values (zeros add nothing to the sums); NaN below 2."""
    cv = _cv(s1, s2, count.clamp_min(1))
    return torch.where(count >= 2, cv, torch.full_like(cv, math.nan))


def _elementwise_variance(raw_sum: Tensor, sq_norm_sum: Tensor, n: int) -> Tensor:
    """``1/D sum_d Var(x_d)`` of ``n`` vectors from their sum ``(..., D)`` and summed squared norms."""
    d = raw_sum.shape[-1]
    mean_sq = (raw_sum * raw_sum).sum(-1) / (n * n)  # ||mean vector||^2
    return (sq_norm_sum / n - mean_sq).clamp_min(0) / d


def gradient_variability(
    model: nn.Module,
    layer: str | nn.Module,
    batches: Tensor | Iterable[Tensor],
    *,
    mean: Sequence[float] | Tensor | None = None,
    std: Sequence[float] | Tensor | None = None,
    unit_chunk: int | None = 1,
    device: torch.device | str | None = None,
) -> GradientVariability:
    """Variability of input-unit gradients across images and across units (streaming).

    Parameters
    ----------
    model : nn.Module
        The network.
    layer : str or nn.Module
        The layer whose channels are the units (name from ``model.named_modules()``).
    batches : Tensor or iterable of Tensor
        ``(B, C, H, W)`` images (a single tensor, or batches of them; an iterable of
        ``(x, y)`` pairs is accepted too, labels ignored).
    mean, std : sequence of float or Tensor, optional
        Normalisation applied inside, so gradients are in pixel space.
    unit_chunk : int or None
        Units per batched backward; see :func:`input_unit_gradients`.
    device : torch.device or str, optional
        Where batches are moved; default: the model's device.

    Returns
    -------
    GradientVariability
        Per-unit and per-image measures; see the module docstring for the formulas.

    Raises
    ------
    ValueError
        Unknown layer, no images, bad ``unit_chunk``.
    """
    module = _resolve_layer(model, layer)
    _check_chunk(unit_chunk)
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    if isinstance(batches, Tensor):
        batches = [batches]
    dir_sum: Tensor | None = None  # (U, D) sum of unit gradient directions over images
    raw_sum: Tensor | None = None  # (U, D) sum of unit gradients over images
    nonzero: Tensor | None = None  # (U,) images with a non-zero gradient
    norm_s1: Tensor | None = None  # (U,) sum of norms over images
    norm_s2: Tensor | None = None  # (U,) sum of squared norms
    per_image_var: list[Tensor] = []
    per_image_cv: list[Tensor] = []
    per_image_cv_nz: list[Tensor] = []
    per_image_elem_var: list[Tensor] = []
    per_image_zero: list[Tensor] = []
    n_images = 0
    with frozen_eval(model):
        for batch in batches:
            xb = batch[0] if isinstance(batch, (tuple, list)) else batch
            xb = xb.to(device)
            b = xb.shape[0]
            if b == 0:
                continue
            img_dir: Tensor | None = None  # (B, D) sum over units of directions
            img_raw: Tensor | None = None  # (B, D) sum over units of gradients
            img_nonzero = torch.zeros(b, dtype=torch.int64, device=xb.device)
            img_s1 = torch.zeros(b, dtype=torch.float64, device=xb.device)
            img_s2 = torch.zeros(b, dtype=torch.float64, device=xb.device)
            n_units = 0
            for start, u_total, g in _gradient_chunks(model, module, xb, mean, std, unit_chunk):
                k = g.shape[0]
                g = g.detach().flatten(2).to(torch.float64)  # (K, B, ...) -> (K, B, D)
                norms = g.norm(dim=2)  # (K, B)
                dirs = g / norms.clamp_min(torch.finfo(torch.float64).tiny).unsqueeze(2)  # zero stays zero
                is_nz = norms > 0
                if dir_sum is None:
                    # sized at the first chunk, once U is known from the layer's output
                    d = g.shape[2]
                    dir_sum = torch.zeros(u_total, d, dtype=torch.float64, device=xb.device)
                    raw_sum = torch.zeros(u_total, d, dtype=torch.float64, device=xb.device)
                    nonzero = torch.zeros(u_total, dtype=torch.int64, device=xb.device)
                    norm_s1 = torch.zeros(u_total, dtype=torch.float64, device=xb.device)
                    norm_s2 = torch.zeros(u_total, dtype=torch.float64, device=xb.device)
                assert nonzero is not None and norm_s1 is not None and norm_s2 is not None
                assert raw_sum is not None
                dir_sum[start : start + k] += dirs.sum(1)
                raw_sum[start : start + k] += g.sum(1)
                nonzero[start : start + k] += is_nz.sum(1)
                norm_s1[start : start + k] += norms.sum(1)
                norm_s2[start : start + k] += (norms * norms).sum(1)
                img_dir = dirs.sum(0) if img_dir is None else img_dir + dirs.sum(0)
                img_raw = g.sum(0) if img_raw is None else img_raw + g.sum(0)
                img_nonzero += is_nz.sum(0)
                img_s1 += norms.sum(0)
                img_s2 += (norms * norms).sum(0)
                n_units += k
            assert img_dir is not None and img_raw is not None
            per_image_var.append(_cosine_variability(img_dir, img_nonzero))
            per_image_cv.append(_cv(img_s1, img_s2, n_units))
            per_image_cv_nz.append(_cv_nonzero(img_s1, img_s2, img_nonzero))
            per_image_elem_var.append(_elementwise_variance(img_raw, img_s2, n_units))
            per_image_zero.append(n_units - img_nonzero)
            n_images += b
    if dir_sum is None or raw_sum is None or nonzero is None or norm_s1 is None or norm_s2 is None:
        raise ValueError("no images were given: batches must hold at least one image")
    return GradientVariability(
        across_samples=_cosine_variability(dir_sum, nonzero),
        across_units=torch.cat(per_image_var),
        norm_cv_samples=_cv(norm_s1, norm_s2, n_images),
        norm_cv_units=torch.cat(per_image_cv),
        zero_gradients=n_images - nonzero,
        zero_units=torch.cat(per_image_zero),
        norm_cv_samples_nonzero=_cv_nonzero(norm_s1, norm_s2, nonzero),
        norm_cv_units_nonzero=torch.cat(per_image_cv_nz),
        variance_samples=_elementwise_variance(raw_sum, norm_s2, n_images),
        variance_units=torch.cat(per_image_elem_var),
    )
