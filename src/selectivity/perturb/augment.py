"""Training-time augmentations for robustness: Gaussian noise and AugMix, batched in torch.

Images are float tensors ``(N, C, H, W)`` in ``[0, 1]`` on any device; every function
returns a new tensor of the same shape, dtype and device, in ``[0, 1]``. Every random
number comes from the ``generator`` argument (no global RNG), so an augmented batch is
a deterministic function of the images and the generator's state: seed a generator from
(seed, epoch, step) to make a training run reproducible. Draws happen on the
generator's device and are then moved to the images' device, so a CPU generator gives
the same augmentation on any device (a generator on the images' device avoids the copy
of the noise tensor in :func:`gaussian_noise`).

- :func:`gaussian_noise`: additive Gaussian noise, the standard average-case robustness
  baseline (training on noise, e.g. Ford et al. 2019, "Adversarial examples are a natural
  consequence of test error in noise"); one sigma per image drawn uniformly from a range.
- :func:`augmix`: AugMix (Hendrycks et al. 2020, "AugMix: A Simple Data Processing Method
  to Improve Robustness and Uncertainty"), following ``augment_and_mix`` of the reference
  code (google-research/augmix) with its nine operations (:data:`AUGMIX_OPS`; the four
  that overlap the corruptions -- color, contrast, brightness, sharpness -- are left out,
  as in the reference's default).
- :func:`jensen_shannon_consistency`: the Jensen-Shannon consistency loss of the AugMix
  paper between the predictions on a clean image and on two AugMix views of it; the
  reference weighs it by :data:`JSD_WEIGHT`.

The operations and their parameters follow the reference, which applies them to 8-bit
PIL images; the differences (our choices) are:

- Images stay in float between operations (the reference rounds to 8 bits after every
  operation). ``posterize`` and ``equalize`` are defined on 8-bit levels and round the
  image to the 256 levels ``round(255 x)``; ``solarize`` compares with a threshold
  halfway between two 8-bit levels, in float; ``autocontrast`` stretches in float
  without PIL's truncation to integers.
- The geometric operations use PIL's affine conventions exactly (the matrix maps output
  pixel centres to input points, in pixels from the top-left corner; shears are about
  that corner, rotations about the image centre; bilinear sampling with edge pixels
  repeated within the image, black outside it), computed with ``affine_grid`` and
  ``grid_sample`` in float, without the rounding to 8 bits.
- The translation range is a third of the image's own width (height): the reference
  uses a fixed ``IMAGE_SIZE`` (32 for CIFAR, to be changed for ImageNet).
- Every image of the batch draws its own mixing weights, chain depths, operations and
  levels, as the reference does per image; the numbers differ from numpy's.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "AUGMIX_OPS",
    "JSD_WEIGHT",
    "augmix",
    "augmix_magnitude",
    "autocontrast",
    "equalize",
    "gaussian_noise",
    "jensen_shannon_consistency",
    "posterize",
    "rotate",
    "sample_beta",
    "sample_dirichlet",
    "shear_x",
    "shear_y",
    "solarize",
    "translate_x",
    "translate_y",
]

#: The AugMix operations, in the order of the reference's ``augmentations`` list.
AUGMIX_OPS: tuple[str, ...] = (
    "autocontrast",
    "equalize",
    "posterize",
    "rotate",
    "solarize",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)

#: Weight of the Jensen-Shannon consistency term in the AugMix training loss
#: (``loss = CE(clean) + JSD_WEIGHT * jensen_shannon_consistency(...)``, reference ``cifar.py``).
JSD_WEIGHT: float = 12.0


def _check_images(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(
            f"images must be a floating-point tensor (N, C, H, W), got "
            f"{getattr(x, 'dtype', type(x).__name__)} of shape {tuple(getattr(x, 'shape', ()))}"
        )


def _per_image(value: Tensor | float, n: int, x: Tensor) -> Tensor:
    """A scalar or an ``(N,)`` tensor as an ``(N, 1, 1, 1)`` tensor on ``x``'s device."""
    t = torch.as_tensor(value, device=x.device)
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"expected a scalar or one value per image ({n},), got shape {tuple(t.shape)}")
    return t.view(n, 1, 1, 1)


def _levels(x: Tensor) -> Tensor:
    """The 8-bit levels ``round(255 x)`` of images in [0, 1], as int64."""
    return (x * 255).round().clamp(0, 255).long()


# --------------------------------------------------------------------------- noise


def gaussian_noise(
    x: Tensor,
    sigma_range: tuple[float, float] = (0.0, 0.1),
    *,
    generator: torch.Generator,
) -> Tensor:
    """Additive Gaussian noise with one standard deviation per image, clipped to [0, 1].

    Training on Gaussian noise is the standard average-case robustness method; drawing
    sigma per image from a range exposes the network to a spread of noise levels.

    Parameters
    ----------
    x : Tensor
        Images ``(N, C, H, W)`` in [0, 1].
    sigma_range : (float, float), optional
        ``(low, high)`` with ``0 <= low <= high``; each image's sigma is uniform in it.
    generator : torch.Generator
        Source of all random numbers (sigma, then the noise).

    Returns
    -------
    Tensor
        ``clip(x + sigma_n * z, 0, 1)`` with ``z`` standard normal, shape of ``x``.
    """
    _check_images(x)
    lo, hi = (float(s) for s in sigma_range)
    if not (0 <= lo <= hi < math.inf):
        raise ValueError(f"sigma_range must be (low, high) with 0 <= low <= high, got {sigma_range!r}")
    n, dev = x.shape[0], generator.device
    sigma = lo + (hi - lo) * torch.rand(n, generator=generator, device=dev, dtype=x.dtype)
    z = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
    return (x + sigma.to(x.device).view(n, 1, 1, 1) * z.to(x.device)).clamp(0, 1)


# --------------------------------------------------------------------------- point operations


def autocontrast(x: Tensor) -> Tensor:
    """Stretch every channel of every image linearly so that its minimum is 0 and maximum 1.

    As PIL's ``ImageOps.autocontrast`` (no cutoff), in float: a constant channel is left
    unchanged. ``x`` is ``(N, C, H, W)`` in [0, 1]; returns the same shape.
    """
    _check_images(x)
    lo = x.amin(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
    span = x.amax(dim=(2, 3), keepdim=True) - lo
    flat = span <= 0
    stretched = (x - lo) / torch.where(flat, torch.ones_like(span), span)
    return torch.where(flat, x, stretched).clamp(0, 1)


def equalize(x: Tensor) -> Tensor:
    """Histogram equalisation of every channel of every image, as PIL's ``ImageOps.equalize``.

    On the 8-bit levels ``v = round(255 x)`` with per-channel histogram ``h``:
    ``step = (H*W - h[top]) // 255`` where ``top`` is the highest occupied level, and
    level ``v`` maps to ``min(255, (step // 2 + sum(h[:v])) // step) / 255``. A channel
    with ``step == 0`` (a single level, or too few pixels) is left unchanged, as in PIL.

    Parameters
    ----------
    x : Tensor
        Images ``(N, C, H, W)`` in [0, 1].

    Returns
    -------
    Tensor
        Equalised images, shape of ``x``.
    """
    _check_images(x)
    n, c, h, w = x.shape
    v = _levels(x).reshape(n * c, h * w)  # (N, C, H, W) -> (N*C, H*W)
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=x.device).scatter_add_(1, v, torch.ones_like(v))
    top = 255 - (hist.flip(1) > 0).long().argmax(1)  # highest occupied level, (N*C,)
    step = (h * w - hist.gather(1, top[:, None])) // 255  # (N*C, 1)
    below = hist.cumsum(1) - hist  # pixels strictly below each level
    lut = ((step // 2 + below) // step.clamp(min=1)).clamp(max=255)  # (N*C, 256)
    out = lut.gather(1, v).to(x.dtype) / 255
    out = torch.where(step > 0, out, x.reshape(n * c, h * w))
    return out.view(n, c, h, w)


def posterize(x: Tensor, bits: Tensor | int) -> Tensor:
    """Keep the ``bits`` most significant bits of every 8-bit level, as PIL's ``ImageOps.posterize``.

    Parameters
    ----------
    x : Tensor
        Images ``(N, C, H, W)`` in [0, 1]; rounded to the levels ``round(255 x)``.
    bits : int or Tensor
        Bits kept, 0-8: one for the batch or one per image ``(N,)``.

    Returns
    -------
    Tensor
        ``(round(255 x) & ~(2**(8 - bits) - 1)) / 255``, shape of ``x``.
    """
    _check_images(x)
    b = _per_image(bits, x.shape[0], x).long()
    if bool(((b < 0) | (b > 8)).any()):
        raise ValueError("posterize keeps 0 to 8 bits")
    mask = 256 - torch.pow(2, 8 - b)  # (N, 1, 1, 1): the top `bits` bits set
    return (_levels(x) & mask).to(x.dtype) / 255


def solarize(x: Tensor, threshold: Tensor | float) -> Tensor:
    """Invert every value at or above ``threshold``: ``1 - x`` where ``x >= threshold``.

    PIL's ``ImageOps.solarize(img, t)`` on 8-bit levels inverts the levels ``>= t``; on
    images on the 8-bit grid that is ``threshold = (t - 0.5) / 255`` here (halfway
    between two levels, so that rounding in ``x`` cannot flip the comparison).
    ``threshold`` is one float for the batch or one per image ``(N,)``; ``x`` is
    ``(N, C, H, W)`` in [0, 1]. Returns the shape of ``x``.
    """
    _check_images(x)
    t = _per_image(threshold, x.shape[0], x).to(x.dtype)
    return torch.where(x >= t, 1 - x, x)


# --------------------------------------------------------------------------- geometric operations


def _affine(x: Tensor, coeffs: Tensor) -> Tensor:
    """PIL's ``Image.transform(size, AFFINE, (a, b, c, d, e, f), BILINEAR)`` per image.

    ``coeffs`` is ``(N, 6)``: output point ``(u, v)`` (pixels from the top-left corner,
    pixel centres at ``i + 0.5``) samples the input at ``(a u + b v + c, d u + e v + f)``.
    Points outside the image are black; inside, bilinear with edge pixels repeated.
    """
    n, c, h, w = x.shape
    a, b, c0, d, e, f = coeffs.to(torch.float64).unbind(1)
    # Pixels -> normalised coordinates of affine_grid (align_corners=False): u = (x_n + 1) w / 2.
    theta = torch.stack(
        [
            torch.stack([a, b * h / w, a + b * h / w + 2 * c0 / w - 1], 1),
            torch.stack([d * w / h, e, d * w / h + e + 2 * f / h - 1], 1),
        ],
        1,
    )  # (N, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), [n, c, h, w], align_corners=False)  # (N, H, W, 2)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    inside = ((grid >= -1) & (grid < 1)).all(dim=3)  # PIL: 0 <= u < W and 0 <= v < H
    return out * inside[:, None].to(x.dtype)


def _coeffs(x: Tensor, values: Tensor | float) -> Tensor:
    """One float64 value per image, ``(N,)``, on ``x``'s device."""
    return _per_image(values, x.shape[0], x).view(-1).to(torch.float64)


def _geometry(op: str, value: Tensor, height: int, width: int) -> Tensor:
    """PIL affine coefficients ``(n, 6)`` of a geometric operation with one value per image ``(n,)``."""
    one, zero = torch.ones_like(value), torch.zeros_like(value)
    if op == "rotate":
        t = -torch.deg2rad(value)  # PIL's matrix maps output to input: angle negated
        cos, sin = torch.cos(t), torch.sin(t)
        cx, cy = width / 2, height / 2  # PIL rotates about the image centre
        cols = [cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy]
    elif op == "shear_x":
        cols = [one, value, zero, zero, one, zero]
    elif op == "shear_y":
        cols = [one, zero, zero, value, one, zero]
    elif op == "translate_x":
        cols = [one, zero, value, zero, one, zero]
    elif op == "translate_y":
        cols = [one, zero, zero, zero, one, value]
    else:
        raise ValueError(f"not a geometric operation: {op!r}")
    return torch.stack(cols, 1)


def rotate(x: Tensor, degrees: Tensor | float) -> Tensor:
    """Rotate counter-clockwise by ``degrees`` about the image centre, as PIL's ``Image.rotate``.

    Bilinear, same size, black where the rotated image does not reach. ``degrees`` is
    one angle or one per image ``(N,)``; ``x`` is ``(N, C, H, W)``.
    """
    _check_images(x)
    return _affine(x, _geometry("rotate", _coeffs(x, degrees), *x.shape[2:]))


def shear_x(x: Tensor, shear: Tensor | float) -> Tensor:
    """Horizontal shear about the top-left corner: output ``(u, v)`` samples ``(u + shear * v, v)``.

    As the reference's PIL transform ``(1, shear, 0, 0, 1, 0)``; ``shear`` is one value
    or one per image ``(N,)``.
    """
    _check_images(x)
    return _affine(x, _geometry("shear_x", _coeffs(x, shear), *x.shape[2:]))


def shear_y(x: Tensor, shear: Tensor | float) -> Tensor:
    """Vertical shear about the top-left corner: output ``(u, v)`` samples ``(u, v + shear * u)``.

    As the reference's PIL transform ``(1, 0, 0, shear, 1, 0)``; ``shear`` is one value or
    one per image ``(N,)``.
    """
    _check_images(x)
    return _affine(x, _geometry("shear_y", _coeffs(x, shear), *x.shape[2:]))


def translate_x(x: Tensor, pixels: Tensor | float) -> Tensor:
    """Shift horizontally: output column ``u`` shows input column ``u + pixels`` (black beyond).

    Positive ``pixels`` moves the content left (the reference's PIL transform
    ``(1, 0, pixels, 0, 1, 0)``); one value or one per image ``(N,)``.
    """
    _check_images(x)
    return _affine(x, _geometry("translate_x", _coeffs(x, pixels), *x.shape[2:]))


def translate_y(x: Tensor, pixels: Tensor | float) -> Tensor:
    """Shift vertically: output row ``v`` shows input row ``v + pixels`` (black beyond).

    Positive ``pixels`` moves the content up (PIL transform ``(1, 0, 0, 0, 1, pixels)``);
    one value or one per image ``(N,)``.
    """
    _check_images(x)
    return _affine(x, _geometry("translate_y", _coeffs(x, pixels), *x.shape[2:]))


# --------------------------------------------------------------------------- AugMix


def augmix_magnitude(op: str, level: Tensor, height: int, width: int) -> Tensor:
    """The reference's parameter of operation ``op`` at ``level`` (before the random sign).

    With the reference's ``int_parameter(l, m) = int(l * m / 10)`` and
    ``float_parameter(l, m) = l * m / 10``:

    - ``posterize``: bits kept ``4 - int_parameter(level, 4)``;
    - ``rotate``: degrees ``int_parameter(level, 30)``;
    - ``solarize``: PIL's 8-bit threshold ``t = 256 - int_parameter(level, 256)`` as the
      float threshold ``(t - 0.5) / 255`` of :func:`solarize`;
    - ``shear_x``, ``shear_y``: ``float_parameter(level, 0.3)``;
    - ``translate_x`` (``translate_y``): pixels ``int_parameter(level, width / 3)``
      (``height / 3``);
    - ``autocontrast``, ``equalize``: no parameter (zeros).

    Parameters
    ----------
    op : str
        One of :data:`AUGMIX_OPS`.
    level : Tensor
        Levels (AugMix draws them uniformly in ``[0.1, severity)``), any shape.
    height, width : int
        Image size (used by the translations).

    Returns
    -------
    Tensor
        float64, shape of ``level``.
    """
    lv = level.to(torch.float64)

    def int_parameter(maxval: float) -> Tensor:
        return torch.floor(lv * maxval / 10)  # int() of a positive number

    if op in ("autocontrast", "equalize"):
        return torch.zeros_like(lv)
    if op == "posterize":
        return 4 - int_parameter(4)
    if op == "rotate":
        return int_parameter(30)
    if op == "solarize":
        return (256 - int_parameter(256) - 0.5) / 255
    if op in ("shear_x", "shear_y"):
        return lv * 0.3 / 10
    if op == "translate_x":
        return int_parameter(width / 3)
    if op == "translate_y":
        return int_parameter(height / 3)
    raise ValueError(f"unknown AugMix operation {op!r}; allowed: {', '.join(AUGMIX_OPS)}")


#: The point operations of AugMix, applied one at a time; the geometric ones (all the
#: others) are applied together, as one affine warp with per-image coefficients.
_POINT_OPS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "autocontrast": lambda x, _m: autocontrast(x),
    "equalize": lambda x, _m: equalize(x),
    "posterize": posterize,
    "solarize": solarize,
}


def _log_gamma_sample(concentration: float, size: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Logs of Gamma(concentration, 1) draws, float64 on the generator's device.

    Marsaglia & Tsang (2000) rejection sampling; for concentration < 1 the draw of
    Gamma(a + 1) is multiplied by ``U ** (1 / a)`` (added in log space, so tiny
    concentrations do not underflow).
    """
    dev = generator.device
    a = concentration + 1 if concentration < 1 else concentration
    d = a - 1 / 3
    c = 1 / math.sqrt(9 * d)
    out = torch.zeros(size, dtype=torch.float64, device=dev)
    pending = torch.ones(size, dtype=torch.bool, device=dev)
    while bool(pending.any()):
        z = torch.randn(size, generator=generator, dtype=torch.float64, device=dev)
        u = torch.rand(size, generator=generator, dtype=torch.float64, device=dev)
        v = (1 + c * z) ** 3
        log_v = torch.log(v.clamp(min=1e-300))
        accept = pending & (v > 0) & (torch.log(u) < 0.5 * z**2 + d - d * v + d * log_v)
        out = torch.where(accept, math.log(d) + log_v, out)
        pending &= ~accept
    if concentration < 1:
        u = torch.rand(size, generator=generator, dtype=torch.float64, device=dev)
        out = out + torch.log(u) / concentration
    return out


def _check_concentration(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def sample_dirichlet(
    concentration: float, size: tuple[int, ...], k: int, *, generator: torch.Generator
) -> Tensor:
    """Draws of the symmetric Dirichlet(concentration, ..., concentration) over ``k`` parts.

    Parameters
    ----------
    concentration : float
        > 0.
    size : tuple of int
        Batch shape of the draws.
    k : int
        Number of parts (>= 1).
    generator : torch.Generator
        Source of the random numbers; the draws live on its device.

    Returns
    -------
    Tensor
        float64 ``(*size, k)``, non-negative, summing to 1 over the last dimension.
    """
    a = _check_concentration("concentration", concentration)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    # Normalised Gamma(a) draws; softmax of their logs is the same, without underflow.
    return torch.softmax(_log_gamma_sample(a, (*size, int(k)), generator), dim=-1)


def sample_beta(a: float, b: float, size: tuple[int, ...], *, generator: torch.Generator) -> Tensor:
    """Draws of Beta(a, b) as ``G_a / (G_a + G_b)`` of Gamma draws; float64 ``size`` on the generator's device."""
    a = _check_concentration("a", a)
    b = _check_concentration("b", b)
    log_ga = _log_gamma_sample(a, size, generator)
    log_gb = _log_gamma_sample(b, size, generator)
    return torch.sigmoid(log_ga - log_gb)


def augmix(
    x: Tensor,
    severity: float = 3,
    width: int = 3,
    depth: int = -1,
    alpha: float = 1.0,
    *,
    generator: torch.Generator,
) -> Tensor:
    """AugMix: a convex mix of the image and ``width`` chains of random operations.

    Per image, as ``augment_and_mix`` of the reference: mixing weights
    ``w ~ Dirichlet(alpha, ..., alpha)`` over the chains, skip weight
    ``m ~ Beta(alpha, alpha)``; chain ``i`` applies ``depth`` operations (or 1-3,
    uniformly, when ``depth`` is -1), each chosen uniformly from :data:`AUGMIX_OPS` with a
    level uniform in ``[0.1, severity)`` (:func:`augmix_magnitude`) and, for the
    geometric ones, a random sign; the result is
    ``(1 - m) * x + m * sum_i w_i * chain_i(x)``. The reference mixes normalised images,
    which is the same since the weights are convex and normalisation is affine.

    Parameters
    ----------
    x : Tensor
        Images ``(N, C, H, W)`` in [0, 1].
    severity : float, optional
        Operation severity, 1 to 10 (reference default 3).
    width : int, optional
        Number of chains (>= 1).
    depth : int, optional
        Operations per chain (>= 1), or -1 for a random depth 1-3 per image and chain.
    alpha : float, optional
        Concentration of the Dirichlet and Beta distributions (> 0).
    generator : torch.Generator
        Source of all random numbers, all drawn before any image is touched.

    Returns
    -------
    Tensor
        The mixed images, shape, dtype and device of ``x``, in [0, 1].
    """
    _check_images(x)
    if isinstance(severity, bool) or not isinstance(severity, numbers.Real) or not 1 <= severity <= 10:
        raise ValueError(f"severity must be a number from 1 to 10, got {severity!r}")
    if isinstance(width, bool) or not isinstance(width, numbers.Integral) or width < 1:
        raise ValueError(f"width must be an integer >= 1, got {width!r}")
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or not (depth == -1 or depth >= 1):
        raise ValueError(f"depth must be -1 (random 1-3) or an integer >= 1, got {depth!r}")
    alpha = _check_concentration("alpha", alpha)
    n, _, h, w = x.shape
    g, dev = generator, generator.device
    width, depth = int(width), int(depth)
    max_depth = depth if depth > 0 else 3

    # Every draw up front, in fixed shapes: the result depends on (x, generator state) only.
    weights = sample_dirichlet(alpha, (n,), width, generator=g)  # (N, width)
    skip = sample_beta(alpha, alpha, (n,), generator=g)  # (N,)
    if depth > 0:
        depths = torch.full((width, n), depth, device=dev)
    else:
        depths = torch.randint(1, 4, (width, n), generator=g, device=dev)
    ops = torch.randint(0, len(AUGMIX_OPS), (width, max_depth, n), generator=g, device=dev)
    levels = 0.1 + (float(severity) - 0.1) * torch.rand(
        (width, max_depth, n), generator=g, dtype=torch.float64, device=dev
    )
    negate = torch.rand((width, max_depth, n), generator=g, dtype=torch.float64, device=dev) > 0.5

    mix = torch.zeros_like(x)
    for i in range(width):
        chain = x.clone()
        for j in range(max_depth):
            active = depths[i] > j  # (N,): chains shorter than j + 1 are done
            geo_idx, geo_coeffs = [], []
            for k, op in enumerate(AUGMIX_OPS):
                idx = torch.nonzero(active & (ops[i, j] == k)).view(-1)
                if idx.numel() == 0:
                    continue
                mag = augmix_magnitude(op, levels[i, j, idx], h, w)
                if op in _POINT_OPS:
                    idx_x = idx.to(x.device)
                    chain.index_copy_(
                        0, idx_x, _POINT_OPS[op](chain.index_select(0, idx_x), mag.to(x.device))
                    )
                else:
                    mag = torch.where(negate[i, j, idx], -mag, mag)
                    geo_idx.append(idx)
                    geo_coeffs.append(_geometry(op, mag, h, w))
            if geo_idx:  # the images of this step's five geometric operations in one warp
                idx_x = torch.cat(geo_idx).to(x.device)
                warped = _affine(chain.index_select(0, idx_x), torch.cat(geo_coeffs).to(x.device))
                chain.index_copy_(0, idx_x, warped)
        mix += weights[:, i].to(x.device, x.dtype).view(n, 1, 1, 1) * chain
    m = skip.to(x.device, x.dtype).view(n, 1, 1, 1)
    return ((1 - m) * x + m * mix).clamp(0, 1)


# --------------------------------------------------------------------------- consistency loss


def jensen_shannon_consistency(logits_clean: Tensor, logits_aug1: Tensor, logits_aug2: Tensor) -> Tensor:
    """Jensen-Shannon divergence between the predictions on a clean image and two AugMix views.

    As the reference (``cifar.py``): with ``p_j = softmax(logits_j)`` and the mixture
    ``M = clamp((p_clean + p_aug1 + p_aug2) / 3, 1e-7, 1)``, the loss is
    ``(KL(p_clean || M) + KL(p_aug1 || M) + KL(p_aug2 || M)) / 3``, each KL summed over
    classes and averaged over the batch. The training loss adds it with weight
    :data:`JSD_WEIGHT`.

    Parameters
    ----------
    logits_clean, logits_aug1, logits_aug2 : Tensor
        Logits ``(N, K)`` of the same images, clean and under two augmentations.

    Returns
    -------
    Tensor
        Scalar, >= 0 (up to the clamp), differentiable in all three inputs.
    """
    if not (logits_clean.shape == logits_aug1.shape == logits_aug2.shape) or logits_clean.dim() != 2:
        raise ValueError(
            "logits must be three (N, K) tensors of one shape, got "
            f"{tuple(logits_clean.shape)}, {tuple(logits_aug1.shape)}, {tuple(logits_aug2.shape)}"
        )
    log_probs = [F.log_softmax(z, dim=1) for z in (logits_clean, logits_aug1, logits_aug2)]
    probs = [lp.exp() for lp in log_probs]
    # Clamped as the reference, so that the KL terms stay finite.
    log_mixture = torch.clamp((probs[0] + probs[1] + probs[2]) / 3, 1e-7, 1).log()
    # KL(p || M) from log p (log_target): the reference's value, but a probability that
    # underflows to 0 contributes 0 to the gradient instead of 0 * log 0 = NaN.
    kl = [F.kl_div(log_mixture, lp, reduction="batchmean", log_target=True) for lp in log_probs]
    return (kl[0] + kl[1] + kl[2]) / 3
