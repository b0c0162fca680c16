"""Augmentations for robust training (selectivity.perturb.augment): Gaussian noise, AugMix, JSD.

Every operation is checked on a hand-made image whose answer is known, and against PIL (the
library the reference AugMix code applies its operations with) on a random 8-bit image.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats
import torch
from PIL import Image, ImageOps

from selectivity.perturb import (
    AUGMIX_OPS,
    JSD_WEIGHT,
    augmix,
    augmix_magnitude,
    autocontrast,
    equalize,
    gaussian_noise,
    jensen_shannon_consistency,
    posterize,
    rotate,
    sample_beta,
    sample_dirichlet,
    shear_x,
    shear_y,
    solarize,
    translate_x,
    translate_y,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 4, side: int = 16, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=gen(seed), dtype=dtype)


# --------------------------------------------------------------------------- Gaussian noise


def test_gaussian_noise_deterministic_shape_and_range():
    x = images()
    a = gaussian_noise(x, (0.0, 0.3), generator=gen(1))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, gaussian_noise(x, (0.0, 0.3), generator=gen(1)))
    assert not torch.equal(a, gaussian_noise(x, (0.0, 0.3), generator=gen(2)))
    assert a.min() >= 0 and a.max() <= 1 and (a == 0).any() and (a == 1).any()  # clipped
    assert torch.equal(gaussian_noise(x, (0.0, 0.0), generator=gen(1)), x)


def test_gaussian_noise_sigma_per_image_within_range():
    # Mid-grey images: sigma <= 0.08 is > 6 sigma from the clip, so the noise is seen whole.
    x = torch.full((16, 3, 64, 64), 0.5, dtype=torch.float64)
    noise = gaussian_noise(x, (0.02, 0.08), generator=gen(3)) - x
    std = noise.flatten(1).std(dim=1)  # 12288 values per image: relative error ~0.6%
    assert (std >= 0.02 * 0.97).all() and (std <= 0.08 * 1.03).all(), std
    assert std.max() - std.min() > 0.02  # one sigma per image, not one per batch
    assert noise.flatten(1).mean(dim=1).abs().max() < 0.003
    fixed = (gaussian_noise(x, (0.05, 0.05), generator=gen(4)) - x).flatten(1).std(dim=1)
    torch.testing.assert_close(fixed, torch.full_like(fixed, 0.05), rtol=0.03, atol=0)


# --------------------------------------------------------------------------- point operations


def test_solarize_inverts_at_and_above_threshold():
    x = torch.tensor([0.1, 0.5, 0.6, 0.7, 0.9]).view(1, 1, 1, 5).repeat(2, 1, 1, 1)
    out = solarize(x, torch.tensor([0.6, 0.95]))  # one threshold per image
    torch.testing.assert_close(out[0].flatten(), torch.tensor([0.1, 0.5, 0.4, 0.3, 0.1]))
    assert torch.equal(out[1], x[1])


def test_posterize_keeps_the_top_bits():
    levels = torch.tensor([255.0, 200.0, 77.0, 3.0])  # 0b11111111, 0b11001000, 0b01001101, 0b11
    x = (levels / 255).view(1, 1, 1, 4).repeat(3, 1, 1, 1)
    out = posterize(x, torch.tensor([1, 3, 4])) * 255
    assert out[0].flatten().tolist() == [128, 128, 0, 0]
    assert out[1].flatten().tolist() == [224, 192, 64, 0]
    assert out[2].flatten().tolist() == [240, 192, 64, 0]
    assert torch.equal(posterize(x, 8), x.mul(255).round().div(255))


def test_autocontrast_stretches_each_channel():
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = torch.tensor([[0.2, 0.4], [0.6, 0.3]])
    x[0, 1] = 0.7  # constant channel: unchanged
    x[0, 2] = torch.tensor([[0.0, 1.0], [0.5, 0.25]])  # already full range
    out = autocontrast(x)
    torch.testing.assert_close(out[0, 0], torch.tensor([[0.0, 0.5], [1.0, 0.25]]))
    assert torch.equal(out[0, 1:], x[0, 1:])


def test_equalize_two_and_three_level_images():
    # 32x32, half at level 51 (0.2), half at 153 (0.6): step = (1024 - 512) // 255 = 2,
    # level 51 -> (1 + 0) // 2 = 0, level 153 -> (1 + 512) // 2 = 256 -> 255.
    x = torch.full((1, 1, 32, 32), 51 / 255)
    x[..., 16:] = 153 / 255
    out = equalize(x)
    assert torch.equal(out[..., :16], torch.zeros_like(out[..., :16]))
    assert torch.equal(out[..., 16:], torch.ones_like(out[..., 16:]))
    # 512 px at level 10, 256 at 100, 256 at 200: step = (1024 - 256) // 255 = 3,
    # 10 -> 1 // 3 = 0, 100 -> (1 + 512) // 3 = 171, 200 -> (1 + 768) // 3 = 256 -> 255.
    y = torch.full((1, 1, 32, 32), 10 / 255)
    y[..., 16:24], y[..., 24:] = 100 / 255, 200 / 255
    assert (equalize(y) * 255).round().unique().tolist() == [0, 171, 255]
    # Too few pixels (step = 8 // 255 = 0) or a single level: unchanged, as in PIL.
    small = torch.full((1, 1, 4, 4), 0.2)
    small[..., 2:] = 0.6
    assert torch.equal(equalize(small), small)
    assert torch.equal(equalize(x[..., :16]), x[..., :16])


# --------------------------------------------------------------------------- geometric operations


def ramp(side: int = 8) -> torch.Tensor:
    """(1, 1, side, side) image with value (10 * row + column) / 100."""
    r = torch.arange(side, dtype=torch.float64)
    return ((10 * r[:, None] + r[None, :]) / 100).view(1, 1, side, side)


def test_translate_moves_a_pixel_by_k():
    x = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    x[:, 0, 3, 5] = 1.0
    out = translate_x(x, torch.tensor([2.0, -1.0]))  # +2: content moves left; -1: right
    assert out[0, 0, 3, 3] == pytest.approx(1.0) and out[1, 0, 3, 6] == pytest.approx(1.0)
    assert out.sum().item() == pytest.approx(2.0)
    down = translate_y(x[:1], -2.0)  # -2: content moves down
    assert down[0, 0, 5, 5] == pytest.approx(1.0) and down.sum().item() == pytest.approx(1.0)
    # what enters from beyond the border is black
    shifted = translate_x(ramp(), 3.0)
    torch.testing.assert_close(shifted[..., :5], ramp()[..., 3:])
    assert torch.equal(shifted[..., 5:], torch.zeros_like(shifted[..., 5:]))


def test_rotate_zero_is_identity_and_ninety_is_a_quarter_turn():
    x = images(2, 8, dtype=torch.float64)
    torch.testing.assert_close(rotate(x, 0.0), x, rtol=0, atol=1e-12)
    # counter-clockwise, as PIL: the top-right corner goes to the top-left
    torch.testing.assert_close(rotate(x, 90.0), torch.rot90(x, 1, dims=(2, 3)), rtol=0, atol=1e-12)
    both = rotate(x, torch.tensor([0.0, 90.0]))
    torch.testing.assert_close(both[1], torch.rot90(x[1], 1, dims=(1, 2)), rtol=0, atol=1e-12)


def test_shear_x_shifts_rows_by_shear_times_y():
    # Output (u, v) samples (u + s v, v); row i has its centre at v = i + 0.5.
    s = 4 / 7  # row 3: shift 2 pixels exactly; row 0: shift 2/7 of a pixel
    out = shear_x(ramp(), s)
    torch.testing.assert_close(out[0, 0, 3, :6], ramp()[0, 0, 3, 2:])
    torch.testing.assert_close(out[0, 0, 0, :7], ramp()[0, 0, 0, :7] + (2 / 7) / 100)
    # the transposed image sheared along y is the transpose of the above
    out_y = shear_y(ramp().transpose(2, 3), s)
    torch.testing.assert_close(out_y, out.transpose(2, 3))


# --------------------------------------------------------------------------- PIL cross-check


@pytest.fixture(scope="module")
def pil_image() -> Image.Image:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    smooth = np.stack([xx * 6, yy * 7, (xx + yy) * 3], -1)  # structure for the warps to move
    return Image.fromarray(np.clip(smooth + rng.integers(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8))


def as_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].double() / 255


def assert_pil_rounds_down(ours: torch.Tensor, pil: torch.Tensor) -> None:
    """PIL truncates float results to 8-bit levels: ours is at most one level above PIL's."""
    diff = ours - pil
    assert diff.min() > -1e-6 and diff.max() < 1 / 255 + 1e-6, (diff.min(), diff.max())


def test_point_operations_match_pil(pil_image):
    x = as_tensor(pil_image)
    assert torch.equal(equalize(x), as_tensor(ImageOps.equalize(pil_image)))
    for bits in (1, 3, 4):
        assert torch.equal(posterize(x, bits), as_tensor(ImageOps.posterize(pil_image, bits)))
    for t in (128, 180, 254):  # PIL's 8-bit threshold t is (t - 0.5) / 255 here
        torch.testing.assert_close(
            solarize(x, (t - 0.5) / 255), as_tensor(ImageOps.solarize(pil_image, t)), rtol=0, atol=1e-12
        )
    assert_pil_rounds_down(autocontrast(x), as_tensor(ImageOps.autocontrast(pil_image)))


@pytest.mark.parametrize(
    ("op", "value", "coeffs"),
    [
        (shear_x, 0.09, (1, 0.09, 0, 0, 1, 0)),
        (shear_x, -0.3, (1, -0.3, 0, 0, 1, 0)),
        (shear_y, 0.05, (1, 0, 0, 0.05, 1, 0)),
        (translate_x, 3.0, (1, 0, 3, 0, 1, 0)),
        (translate_y, -2.0, (1, 0, 0, 0, 1, -2)),
        (translate_x, 0.5, (1, 0, 0.5, 0, 1, 0)),
    ],
)
def test_affine_operations_match_pil(pil_image, op, value, coeffs):
    ref = pil_image.transform((32, 32), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)
    assert_pil_rounds_down(op(as_tensor(pil_image), value), as_tensor(ref))


@pytest.mark.parametrize("degrees", [7.0, -9.0, 29.0])
def test_rotate_matches_pil(pil_image, degrees):
    ref = as_tensor(pil_image.rotate(degrees, resample=Image.Resampling.BILINEAR))
    assert_pil_rounds_down(rotate(as_tensor(pil_image), degrees), ref)


# --------------------------------------------------------------------------- AugMix


def test_augmix_magnitudes_by_hand():
    level = torch.tensor([2.5])
    expect = {
        "autocontrast": 0.0,
        "equalize": 0.0,
        "posterize": 4 - math.floor(2.5 * 4 / 10),  # 3 bits
        "rotate": 7.0,  # int(2.5 * 30 / 10)
        "solarize": (256 - 64 - 0.5) / 255,  # PIL threshold 256 - int(2.5 * 256 / 10)
        "shear_x": 0.075,
        "shear_y": 0.075,
        "translate_x": 2.0,  # int(2.5 * (32 / 3) / 10) = int(2.67)
        "translate_y": 5.0,  # int(2.5 * (64 / 3) / 10) = int(5.33)
    }
    assert set(expect) == set(AUGMIX_OPS) and len(AUGMIX_OPS) == 9
    for op, value in expect.items():
        assert augmix_magnitude(op, level, height=64, width=32).item() == pytest.approx(value), op
    with pytest.raises(ValueError, match="unknown AugMix operation 'contrast'"):
        augmix_magnitude("contrast", level, 32, 32)


def test_augmix_deterministic_shape_and_range():
    x = images(6, 16)
    a = augmix(x, generator=gen(5))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, augmix(x, generator=gen(5)))
    assert not torch.equal(a, augmix(x, generator=gen(6)))
    assert not torch.allclose(a, x, atol=1e-3)
    g = gen(5)
    view1, view2 = augmix(x, generator=g), augmix(x, generator=g)  # the two JSD views differ
    assert torch.equal(view1, a) and not torch.equal(view1, view2)
    x64 = x.double()
    out64 = augmix(x64, severity=10, width=1, depth=2, alpha=0.5, generator=gen(5))
    assert out64.dtype == torch.float64 and 0 <= out64.min() and out64.max() <= 1


def test_augmix_treats_every_image_on_its_own():
    # The draws do not depend on the pixels and an image never sees another one.
    x, y = images(4, 16, seed=1), images(4, 16, seed=2)
    y[0] = x[0]
    assert torch.equal(augmix(x, generator=gen(7))[0], augmix(y, generator=gen(7))[0])
    black = torch.zeros(3, 3, 16, 16)  # a fixed point of all nine operations
    assert torch.equal(augmix(black, generator=gen(7)), black)


def test_augmix_bad_arguments():
    x = images(2, 8)
    for kwargs, match in [
        ({"severity": 0}, "severity"),
        ({"severity": 11}, "severity"),
        ({"width": 0}, "width"),
        ({"depth": 0}, "depth"),
        ({"depth": -2}, "depth"),
        ({"alpha": 0.0}, "alpha"),
    ]:
        with pytest.raises(ValueError, match=match):
            augmix(x, generator=gen(), **kwargs)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        augmix(x[0], generator=gen())
    with pytest.raises(ValueError, match="sigma_range"):
        gaussian_noise(x, (0.2, 0.1), generator=gen())


@pytest.mark.parametrize("alpha", [0.5, 1.0, 3.0])
def test_beta_and_dirichlet_samplers_have_the_right_law(alpha):
    b = sample_beta(alpha, alpha, (4000,), generator=gen(8))
    assert scipy.stats.kstest(b.numpy(), scipy.stats.beta(alpha, alpha).cdf).pvalue > 0.01
    d = sample_dirichlet(alpha, (4000,), 3, generator=gen(9))
    torch.testing.assert_close(d.sum(1), torch.ones(4000, dtype=torch.float64))
    # a Dirichlet(a, a, a) marginal is Beta(a, 2a)
    assert scipy.stats.kstest(d[:, 0].numpy(), scipy.stats.beta(alpha, 2 * alpha).cdf).pvalue > 0.01
    assert torch.equal(b, sample_beta(alpha, alpha, (4000,), generator=gen(8)))


def test_tiny_concentration_does_not_underflow():
    d = sample_dirichlet(0.01, (100,), 3, generator=gen(10))
    assert torch.isfinite(d).all()
    torch.testing.assert_close(d.sum(1), torch.ones(100, dtype=torch.float64))


# --------------------------------------------------------------------------- Jensen-Shannon loss


def test_jsd_zero_for_identical_logits_and_symmetric():
    z = torch.randn(5, 10, generator=gen(11), dtype=torch.float64)
    assert jensen_shannon_consistency(z, z, z).abs().item() < 1e-12
    a, b, c = (torch.randn(5, 10, generator=gen(s), dtype=torch.float64) for s in (12, 13, 14))
    ref = jensen_shannon_consistency(a, b, c)
    assert ref.dim() == 0 and ref > 0
    for perm in itertools.permutations((a, b, c)):
        torch.testing.assert_close(jensen_shannon_consistency(*perm), ref)


def test_jsd_two_class_by_hand():
    # softmax: clean (1/2, 1/2), aug1 (3/4, 1/4), aug2 (1/4, 3/4); mixture (1/2, 1/2)
    clean = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    aug1 = torch.tensor([[math.log(3), 0.0]], dtype=torch.float64)
    aug2 = torch.tensor([[0.0, math.log(3)]], dtype=torch.float64)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # KL((3/4, 1/4) || (1/2, 1/2))
    expected = (0 + kl + kl) / 3  # 0.0872...
    assert jensen_shannon_consistency(clean, aug1, aug2).item() == pytest.approx(expected, rel=1e-12)
    # batchmean: a batch of two copies has the same loss
    two = [torch.cat([t, t]) for t in (clean, aug1, aug2)]
    assert jensen_shannon_consistency(*two).item() == pytest.approx(expected, rel=1e-12)
    assert JSD_WEIGHT == 12.0


def test_jsd_is_differentiable():
    logits = [
        torch.randn(3, 4, generator=gen(s), dtype=torch.float64, requires_grad=True) for s in (15, 16, 17)
    ]
    assert torch.autograd.gradcheck(jensen_shannon_consistency, logits)
    jensen_shannon_consistency(*logits).backward()
    assert all(z.grad is not None and z.grad.abs().sum() > 0 for z in logits)
    with pytest.raises(ValueError, match="one shape"):
        jensen_shannon_consistency(logits[0], logits[1], logits[2][:, :3])


def test_jsd_gradient_is_finite_when_a_probability_underflows():
    # float32 softmax of (0, 200) is exactly (0, 1): the reference's kl_div(log M, p) then
    # differentiates 0 * log 0 into NaN; the value is the same either way.
    clean = torch.tensor([[0.0, 200.0]], requires_grad=True)
    aug1 = torch.tensor([[0.0, 0.0]], requires_grad=True)
    aug2 = torch.tensor([[0.0, 200.0]], requires_grad=True)
    loss = jensen_shannon_consistency(clean, aug1, aug2)
    # mixture (1/6, 5/6): KL((1/2, 1/2) || M) / 3, the two saturated views add (almost) 2 * log(6/5) / 3
    m = torch.tensor([1 / 6, 5 / 6], dtype=torch.float64)
    expected = (0.5 * torch.log(0.5 / m)).sum() / 3 + 2 * torch.log(1 / m[1]) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert all(torch.isfinite(z.grad).all() for z in (clean, aug1, aug2))
