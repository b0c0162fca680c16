"""Dimensionality measures: known ranks, hand-computed cases, invariances, streaming."""

import math

import numpy as np
import pytest
import torch

from selectivity.analysis.geometry import (
    CovarianceAccumulator,
    DifferenceAccumulator,
    change_dimensionality,
    dimensionality,
    dimensionality_increase,
    dimensionality_increase_by_layer,
    flattened_dimensionality,
    flattened_eigenvalues,
    layer_units,
    participation_ratio,
    pca_dimensionality,
    perturbation_norms,
    required_samples,
    select_positions,
    spatial_positions,
)


def orthonormal(rows, cols, seed):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=g, dtype=torch.float64))
    return q  # (rows, cols), orthonormal columns


def exact_subspace_data(n, u, scales, seed=0, offset=5.0):
    """(n, u) data whose sample covariance is exactly E diag(scales^2) E^T, rank len(scales)."""
    k = len(scales)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g, dtype=torch.float64)
    z = z - z.mean(0)
    q, _ = torch.linalg.qr(z)  # centred, orthonormal columns: q^T q = I
    latent = q * math.sqrt(n - 1) * torch.tensor(scales, dtype=torch.float64)  # covariance diag(s^2)
    e = orthonormal(u, k, seed + 1)  # embedding of the k directions in u dimensions
    return latent @ e.T + offset * torch.randn(u, generator=g, dtype=torch.float64)


# ------------------------------------------------------------------ measures
def test_hand_computed_two_by_two():
    # points (1,0), (-1,0), (0,2), (0,-2) rotated by 45 degrees; ddof=1 covariance
    # [[5/3, -1], [-1, 5/3]] (x: c, -c, -2c, 2c; y: c, -c, 2c, -2c; c^2 = 1/2), eigenvalues 8/3, 2/3.
    c = math.sqrt(0.5)
    rot = torch.tensor([[c, -c], [c, c]], dtype=torch.float64)
    pts = torch.tensor([[1.0, 0], [-1, 0], [0, 2], [0, -2]], dtype=torch.float64) @ rot.T
    acc = CovarianceAccumulator()
    acc.update(pts)
    torch.testing.assert_close(
        acc.covariance(), torch.tensor([[5 / 3, -1.0], [-1.0, 5 / 3]], dtype=torch.float64)
    )
    ev = acc.eigenvalues()
    torch.testing.assert_close(ev, torch.tensor([8 / 3, 2 / 3], dtype=torch.float64))
    assert participation_ratio(ev) == pytest.approx(100 / 68, rel=1e-12)  # (10/3)^2 / (68/9)
    assert pca_dimensionality(ev, 0.8) == 1  # 8/3 is exactly 80% of 10/3
    assert pca_dimensionality(ev, 0.81) == 2
    assert dimensionality(pts, 0.8).pca == 1


def test_known_number_of_directions_embedded_in_higher_dimension():
    for k in (1, 3, 7):
        acts = exact_subspace_data(200, 20, [1.0] * k, seed=k)
        d = dimensionality(acts)
        assert d.pca == k and d.participation_ratio == pytest.approx(k, rel=1e-9)
        assert dimensionality(acts, 1.0).pca == k  # rounding-level eigenvalues are not dimensions
        assert d.n_units == 20 and d.n_samples == 200


def test_anisotropic_hand_values():
    # variances 9, 4, 1: shares 9/14, 13/14, 1; PR = 14^2 / (81 + 16 + 1) = 196 / 98 = 2
    acts = exact_subspace_data(100, 10, [3.0, 2.0, 1.0])
    acc = CovarianceAccumulator()
    acc.update(acts)
    ev = acc.eigenvalues()
    torch.testing.assert_close(ev[:3], torch.tensor([9.0, 4.0, 1.0], dtype=torch.float64))
    assert participation_ratio(ev) == pytest.approx(2.0, rel=1e-9)
    assert [pca_dimensionality(ev, s) for s in (0.6, 0.65, 0.9, 0.93, 0.95, 1.0)] == [1, 2, 2, 3, 3, 3]


def test_isotropic_participation_ratio_equals_dimension():
    # population form: exactly isotropic sample covariance
    acts = exact_subspace_data(300, 16, [2.0] * 16)
    assert dimensionality(acts).participation_ratio == pytest.approx(16, rel=1e-9)
    # sampled isotropic Gaussian: close to U for N >> U
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(40_000, 8, generator=g, dtype=torch.float64)
    pr = dimensionality(acts).participation_ratio
    assert 7.9 < pr <= 8


def test_invariant_to_rotation_and_sample_order():
    g = torch.Generator().manual_seed(3)
    acts = torch.randn(500, 12, generator=g, dtype=torch.float64) * torch.linspace(
        0.1, 3, 12, dtype=torch.float64
    )
    base = dimensionality(acts)
    rot = orthonormal(12, 12, 9)
    perm = torch.randperm(500, generator=g)
    for other in (acts @ rot, acts[perm], (acts @ rot)[perm]):
        d = dimensionality(other)
        assert d.pca == base.pca
        assert d.participation_ratio == pytest.approx(base.participation_ratio, rel=1e-10)
    assert 1 < base.pca < 12  # the check would notice a change


def test_streaming_equals_one_shot_and_numpy():
    g = torch.Generator().manual_seed(5)
    # a large common offset: naive sums of squares would lose digits, Chan's update must not
    acts = 1e6 + torch.randn(301, 6, 4, 4, generator=g, dtype=torch.float64) * torch.arange(1, 7).view(
        1, 6, 1, 1
    )
    acts = acts.float()
    acc = CovarianceAccumulator()
    for part in torch.split(acts, [1, 50, 7, 200, 43]):
        acc.update(part)
    units = layer_units(acts)  # (301, 6) spatial means
    torch.testing.assert_close(units, acts.double().mean(dim=(2, 3)))
    ref = np.cov((units - units.mean(0)).numpy(), rowvar=False)
    # (a naive float64 sum of squares at offset 1e6 would be off by ~1e-4)
    torch.testing.assert_close(acc.covariance(), torch.from_numpy(ref), rtol=1e-10, atol=1e-10)
    one = CovarianceAccumulator()
    one.update(acts)
    torch.testing.assert_close(acc.eigenvalues(), one.eigenvalues(), rtol=1e-9, atol=1e-12)
    assert acc.n == 301 and acc.num_units == 6


def test_flatten_mode_and_second_moment():
    g = torch.Generator().manual_seed(1)
    acts = torch.randn(60, 2, 3, 3, generator=g)
    acc = CovarianceAccumulator(units="flatten")
    acc.update(acts)
    assert acc.num_units == 18
    flat = acts.flatten(1).double()
    torch.testing.assert_close(acc.covariance(center=False), flat.T @ flat / 60)
    assert acc.mean_square_norm == pytest.approx(float((flat * flat).sum(1).mean()), rel=1e-12)


# ------------------------------------------------------------------ change
def test_change_dimensionality_of_low_rank_perturbation():
    g = torch.Generator().manual_seed(2)
    clean = torch.randn(400, 32, 4, 4, generator=g)
    coef = torch.randn(400, 2, generator=g)
    dirs = torch.randn(2, 32, generator=g)
    # the change moves every image along 2 channel directions, the same at every position
    change = (coef @ dirs).view(400, 32, 1, 1).expand(400, 32, 4, 4)
    pert = clean + change
    assert dimensionality(clean).pca > 25
    assert change_dimensionality(clean, pert, 1.0).pca == 2
    acc = DifferenceAccumulator()
    for i in range(0, 400, 150):
        acc.update(clean[i : i + 150], pert[i : i + 150])
    assert acc.n == 400
    torch.testing.assert_close(
        acc.eigenvalues()[:2], change_dimensionality_eigs(clean, pert), rtol=1e-6, atol=1e-8
    )


def change_dimensionality_eigs(clean, pert):
    d = (pert.double() - clean.double()).mean(dim=(2, 3))
    return torch.flip(torch.linalg.eigvalsh(torch.from_numpy(np.cov(d.numpy(), rowvar=False))), (0,))[:2]


def test_constant_shift_has_no_centred_dimension():
    g = torch.Generator().manual_seed(4)
    # quarter-integers: the shift and its removal are exact in float64
    clean = torch.randint(-50, 50, (50, 5), generator=g).double() / 4
    pert = clean + torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64)
    d = change_dimensionality(clean, pert)
    assert d.pca == 0 and d.participation_ratio == 0.0
    assert change_dimensionality(clean, pert, center=False).pca == 1
    assert change_dimensionality(clean, clean).pca == 0


def test_perturbation_norms():
    x = torch.zeros(2, 1, 2, 2)
    y = x.clone()
    y[0, 0, 0, 0], y[0, 0, 1, 1] = 0.3, -0.4
    y[1] = 0.1
    torch.testing.assert_close(perturbation_norms(x, y), torch.tensor([0.5, 0.2], dtype=torch.float64))
    torch.testing.assert_close(
        perturbation_norms(x, y, "linf"), torch.tensor([0.4, 0.1], dtype=torch.float64)
    )


# ------------------------------------------------------------------ bad input
def test_required_samples_rule():
    assert required_samples(64) == 65
    assert required_samples(64, 2.0) == 129
    assert required_samples(64, 0) == 2


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dimensionality(torch.randn(10, 10)), r"need at least 11 samples for 10 units"),
        (lambda: dimensionality(torch.randn(15, 10), min_ratio=2), r"need at least 21 samples for 10 units"),
        (lambda: dimensionality(torch.randn(20, 3), share=0), r"share must be a number in \(0, 1\]"),
        (lambda: dimensionality(torch.randn(20, 3), share=1.5), r"share must be a number in \(0, 1\]"),
        (lambda: pca_dimensionality(torch.ones(3), float("nan")), r"share must be a number in \(0, 1\]"),
        (lambda: pca_dimensionality(torch.tensor([1.0, -0.5])), "eigvals must be >= 0"),
        (lambda: participation_ratio(torch.ones(2, 2)), "eigvals must be a non-empty 1-D"),
        (lambda: dimensionality(torch.randn(20, 3), units="pixels"), "units must be one of"),
        (lambda: dimensionality(torch.randn(20)), r"shape \(N, U\) or \(N, C, H, W\)"),
        (lambda: change_dimensionality(torch.randn(20, 3), torch.randn(20, 4)), "same shape"),
        (lambda: CovarianceAccumulator().eigenvalues(), "no activations were added"),
        (lambda: required_samples(3, -1), "min_ratio must be a finite number >= 0"),
    ],
)
def test_bad_input_one_line_errors(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_units_must_agree_across_batches():
    acc = CovarianceAccumulator()
    acc.update(torch.randn(5, 3))
    with pytest.raises(ValueError, match="batch has 4 units, earlier batches had 3"):
        acc.update(torch.randn(5, 4))


# ------------------------------------------------------------------ flattened maps (Gram)
def exact_spectrum(a, center=True):
    """Descending eigenvalues of the full (U, U) covariance (ddof 1) or second moment."""
    a = a.flatten(1).double()
    if center:
        a = a - a.mean(0)
    cov = a.T @ a / (a.shape[0] - 1 if center else a.shape[0])
    return torch.linalg.eigvalsh(cov).flip(0)


@pytest.mark.parametrize("n", [7, 40])  # fewer samples than units (Gram) and more (covariance)
@pytest.mark.parametrize("center", [True, False])
def test_flattened_eigenvalues_equal_the_exact_covariance_spectrum(n, center):
    g = torch.Generator().manual_seed(0)
    acts = torch.relu(torch.randn(n, 2, 3, 4, generator=g, dtype=torch.float64) + 0.5)  # U = 24
    got = flattened_eigenvalues(acts, center=center, chunk=5)  # chunks that do not divide U
    exact = exact_spectrum(acts, center)
    assert got.shape == (min(n, 24),) and got.dtype == torch.float64
    torch.testing.assert_close(got, exact[: min(n, 24)], rtol=0, atol=1e-8)
    if n < 24:
        assert exact[n:].abs().max() < 1e-8  # the rest of the spectrum is 0
    d = flattened_dimensionality(acts, 0.9, center=center)
    assert d.pca == pca_dimensionality(exact, 0.9)
    assert d.participation_ratio == pytest.approx(participation_ratio(exact), rel=1e-9)
    assert (d.n_samples, d.n_units) == (n, 24)


def test_flattened_eigenvalues_of_float32_maps_with_a_large_mean():
    # float32 input, mean far above the spread: the per-chunk float64 centring stays exact
    g = torch.Generator().manual_seed(1)
    acts = (100 + torch.randn(6, 3, 4, 4, generator=g)).float()
    torch.testing.assert_close(flattened_eigenvalues(acts), exact_spectrum(acts)[:6], rtol=0, atol=1e-8)


def test_spatial_subsampling_keeps_the_same_positions_of_every_channel():
    acts = torch.arange(2 * 3 * 2 * 3, dtype=torch.float64).reshape(2, 3, 2, 3)
    pos = torch.tensor([1, 4])  # (0, 1) and (1, 1) of the 2x3 map
    sub = select_positions(acts, pos)
    expected = torch.stack([acts[:, c].flatten(1)[:, [1, 4]] for c in range(3)], 1).flatten(1)
    torch.testing.assert_close(sub, expected)
    assert sub.shape == (2, 6)
    a = spatial_positions(8, 8, 5, torch.Generator().manual_seed(3))
    b = spatial_positions(8, 8, 5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.unique().numel() == 5 and bool((a[1:] > a[:-1]).all())
    assert int(a.max()) < 64
    big = torch.randn(9, 4, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(
        flattened_eigenvalues(big, positions=a),
        exact_spectrum(select_positions(big, a))[:9],
        rtol=0,
        atol=1e-8,
    )
    with pytest.raises(ValueError, match="k must be an integer in"):
        spatial_positions(2, 2, 5)


# ------------------------------------------------------------------ dimensionality increase
def noise_in_new_directions(n, d, k, u, s=1.0, sigma=1.0, seed=0):
    """Clean data isotropic (variance s^2) in d directions; perturbed adds isotropic noise
    (variance sigma^2) in k further orthogonal directions, exactly uncorrelated with it."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d + k, generator=g, dtype=torch.float64)
    z = z - z.mean(0)
    q, _ = torch.linalg.qr(z)  # centred orthonormal columns
    lat = q * math.sqrt(n - 1)  # covariance exactly I_(d+k)
    e = orthonormal(u, d + k, seed + 1)
    offset = torch.randn(u, generator=g, dtype=torch.float64)
    clean = s * lat[:, :d] @ e[:, :d].T + offset
    perturbed = clean + sigma * lat[:, d:] @ e[:, d:].T
    return clean, perturbed


@pytest.mark.parametrize("units", ["channels", "flatten"])
def test_increase_of_isotropic_noise_in_k_new_directions(units):
    # d = 4 directions, k = 3 new ones at the same variance: PR 4 -> 7; PCA-95 needs all
    # (ceil(.95 * 4) = 4, ceil(.95 * 7) = 7), so both measures rise by exactly k = 3.
    if units == "channels":
        clean, pert = noise_in_new_directions(60, 4, 3, 12)  # (N, U) with N > U
    else:
        clean, pert = noise_in_new_directions(20, 4, 3, 2 * 5 * 5)  # N < U = 50, as maps
        clean, pert = clean.view(20, 2, 5, 5), pert.view(20, 2, 5, 5)
    inc = dimensionality_increase(clean, pert, 0.95, units=units)
    assert (inc.clean.pca, inc.perturbed.pca, inc.pca) == (4, 7, 3)
    assert inc.clean.participation_ratio == pytest.approx(4.0, rel=1e-9)
    assert inc.participation_ratio == pytest.approx(3.0, rel=1e-9)


def test_increase_of_weaker_noise_by_hand():
    # d = 2 at variance 1, k = 2 at variance 1/4: PR = (2 + 0.5)^2 / (2 + 2/16) = 6.25 / 2.125;
    # PCA-95: cumulative shares .4, .8, .9, 1 -> 4 components
    clean, pert = noise_in_new_directions(30, 2, 2, 6, sigma=0.5)
    inc = dimensionality_increase(clean, pert, 0.95)
    assert inc.participation_ratio == pytest.approx(6.25 / 2.125 - 2.0, rel=1e-9)
    assert inc.pca == 2
    assert dimensionality_increase(clean, pert, 0.85).pca == 1  # 3 components reach 90%


def test_increase_by_layer_and_subsampled_positions():
    clean, pert = noise_in_new_directions(20, 4, 3, 2 * 5 * 5)
    maps = {"a": clean.view(20, 2, 5, 5), "b": clean.view(20, 2, 5, 5)}
    pmaps = {"a": pert.view(20, 2, 5, 5), "b": clean.view(20, 2, 5, 5)}
    res = dimensionality_increase_by_layer(maps, pmaps, units="flatten")
    assert list(res) == ["a", "b"] and res["a"].pca == 3 and res["b"].pca == 0
    assert res["b"].participation_ratio == 0.0
    # subsampled positions: the same units for clean and perturbed, reproducible
    one = dimensionality_increase(
        maps["a"],
        pmaps["a"],
        units="flatten",
        positions_per_map=10,
        generator=torch.Generator().manual_seed(0),
    )
    two = dimensionality_increase(
        maps["a"],
        pmaps["a"],
        units="flatten",
        positions_per_map=10,
        generator=torch.Generator().manual_seed(0),
    )
    assert one == two and one.clean.n_units == 20
    with pytest.raises(ValueError, match="same layers"):
        dimensionality_increase_by_layer(maps, {"a": pmaps["a"]})
    with pytest.raises(ValueError, match="same shape"):
        dimensionality_increase(maps["a"], pmaps["a"][:5])


def test_a_nearly_constant_layer_is_measured_not_refused(monkeypatch):
    """A collapsed layer (large mean, tiny variance) can leave eigenvalues of rounding size
    *relative to the samples' mean square* below 0 (seen on a quick-sweep network at
    alpha = +5: -4.2e-15 with a top eigenvalue far smaller than the mean square). They
    count as 0; a clearly negative eigenvalue is still refused."""
    g = torch.Generator().manual_seed(0)
    acts = 10.0 + 1e-4 * torch.randn(40, 8, generator=g, dtype=torch.float64)  # (N, U)
    acc = CovarianceAccumulator("channels")
    acc.update(acts)
    ev = acc.eigenvalues()
    rounding = 8 * torch.finfo(torch.float64).eps * acc.mean_square_norm  # about 1.4e-12
    assert rounding > 8 * torch.finfo(torch.float64).eps * float(ev[0]) * 1e3  # far above the old tolerance
    noisy = ev.clone()
    noisy[-1] = -0.5 * rounding
    monkeypatch.setattr(acc, "eigenvalues", lambda **_kw: noisy)
    d = acc.dimensionality(0.95)
    assert d.pca == pca_dimensionality(ev.clamp(min=0), 0.95) and d.participation_ratio > 1
    noisy[-1] = -1e3 * rounding  # not rounding: refused
    with pytest.raises(ValueError, match="eigvals must be >= 0"):
        acc.dimensionality(0.95)
