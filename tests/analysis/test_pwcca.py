"""Tests of selectivity.analysis.pwcca against a slow, explicit NumPy reference."""

import numpy as np
import pytest
import torch

from selectivity.analysis import (
    cca,
    flatten_conv_activations,
    projection_weights,
    pwcca,
    pwcca_distance,
    pwcca_similarity,
)

# ----------------------------------------------------------------- slow reference


def _inv_sqrt(s):
    w, v = np.linalg.eigh(s)
    return v @ np.diag(1.0 / np.sqrt(w)) @ v.T


def reference_pwcca(x, y):
    """Textbook CCA + PWCCA, written out with explicit covariance matrices.

    x: (p, n), y: (q, n) numpy float64. Returns (rho (k,), alpha (k,), similarity).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = x.shape[1]
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    sxx = xc @ xc.T / (n - 1)
    syy = yc @ yc.T / (n - 1)
    sxy = xc @ yc.T / (n - 1)
    ixx, iyy = _inv_sqrt(sxx), _inv_sqrt(syy)
    u, s, _ = np.linalg.svd(ixx @ sxy @ iyy, full_matrices=False)
    k = s.size
    # Canonical variates of x in datapoint space, orthonormalised (reference: QR).
    h = (ixx @ u[:, :k]).T @ xc  # (k, n)
    q, _ = np.linalg.qr(h.T)  # (n, k)
    alpha = np.array([sum(abs(q[:, i] @ xc[j]) for j in range(x.shape[0])) for i in range(k)])
    alpha = alpha / alpha.sum()
    return s, alpha, float(np.sum(alpha * s))


def _rand(shape, seed):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape))


# ----------------------------------------------------------------- agreement


@pytest.mark.parametrize("p,q,n,seed", [(8, 8, 200, 0), (6, 10, 300, 1), (12, 5, 400, 2)])
def test_matches_explicit_reference(p, q, n, seed):
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((3, n))
    x = rng.standard_normal((p, 3)) @ shared + 0.8 * rng.standard_normal((p, n)) + 2.0
    y = rng.standard_normal((q, 3)) @ shared + 0.8 * rng.standard_normal((q, n)) - 1.0
    rho_ref, alpha_ref, sim_ref = reference_pwcca(x, y)

    res = cca(torch.from_numpy(x), torch.from_numpy(y))
    np.testing.assert_allclose(res.rho.numpy(), rho_ref, atol=1e-8)
    np.testing.assert_allclose(projection_weights(res, "x").numpy(), alpha_ref, atol=1e-8)
    out = pwcca(torch.from_numpy(x), torch.from_numpy(y), method="textbook")
    assert out.similarity == pytest.approx(sim_ref, abs=1e-8)
    assert out.distance == pytest.approx(1 - sim_ref, abs=1e-8)
    # Weights from y = reference with arguments swapped.
    _, alpha_y, sim_y = reference_pwcca(y, x)
    np.testing.assert_allclose(projection_weights(res, "y").numpy(), alpha_y, atol=1e-8)
    assert pwcca_similarity(torch.from_numpy(y), torch.from_numpy(x), method="textbook") == pytest.approx(
        sim_y, abs=1e-8
    )


def test_canonical_variates_are_canonical():
    x, y = _rand((5, 300), 3), _rand((7, 300), 4)
    y[:3] += x[:3]
    res = cca(x, y)
    hx, hy = res.x_variates(x), res.y_variates(y)  # (k, n)
    k = res.k
    cx = torch.corrcoef(torch.cat([hx, hy]))
    np.testing.assert_allclose(torch.diagonal(cx[:k, k:]).numpy(), res.rho.numpy(), atol=1e-8)
    # Unit variance, mutually uncorrelated.
    np.testing.assert_allclose(torch.cov(hx).numpy(), np.eye(k), atol=1e-8)
    assert torch.all(res.rho[:-1] >= res.rho[1:])


# ----------------------------------------------------------------- known cases


def test_identical_inputs():
    x = _rand((16, 200), 5)
    assert pwcca_distance(x, x, method="textbook") < 1e-6
    assert pwcca_similarity(x, x, method="textbook") == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(cca(x, x).rho.numpy(), 1.0, atol=1e-6)


def test_affine_invariance():
    x = _rand((16, 200), 6)
    q, _ = np.linalg.qr(np.random.default_rng(7).standard_normal((16, 16)))
    shift = torch.from_numpy(np.random.default_rng(8).standard_normal((16, 1))) * 10
    y = 3.5 * torch.from_numpy(q) @ x + shift
    assert pwcca_distance(x, y, method="textbook") < 1e-6
    assert pwcca_distance(y, x, method="textbook") < 1e-6
    # Any invertible linear map (not just a rotation), and per-neuron scaling.
    a = torch.from_numpy(np.random.default_rng(9).standard_normal((16, 16)))
    assert pwcca_distance(x, a @ x - 4.0, method="textbook") < 1e-6
    assert (
        pwcca_distance(x, x * torch.linspace(0.1, 10, 16, dtype=torch.float64)[:, None], method="textbook")
        < 1e-6
    )


def test_independent_inputs_far():
    # 20 neurons, 200 datapoints (10x): independent Gaussians give distance ~0.72.
    for seed in range(5):
        x, y = _rand((20, 200), 10 + seed), _rand((20, 200), 100 + seed)
        d = pwcca_distance(x, y, method="textbook")
        assert 0.5 < d < 1.0


def test_partially_shared_in_between():
    rng = np.random.default_rng(11)
    n = 400
    shared = rng.standard_normal((5, n))
    x = np.concatenate([shared, rng.standard_normal((5, n))])
    y = np.concatenate([rng.standard_normal((5, 5)) @ shared, rng.standard_normal((5, n))])
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    d_partial = pwcca_distance(x, y, method="textbook")
    d_same = pwcca_distance(x, x, method="textbook")
    d_indep = pwcca_distance(x, torch.from_numpy(rng.standard_normal((10, n))), method="textbook")
    assert d_same < 1e-6
    assert 0.1 < d_partial < d_indep - 0.1
    # Half the variance of x is shared exactly (rho = 1), half is independent.
    assert d_partial == pytest.approx(0.5 * d_indep, abs=0.15)


def test_more_shared_signal_is_closer():
    rng = np.random.default_rng(12)
    n, p = 500, 10
    z = rng.standard_normal((p, n))
    x = torch.from_numpy(z)
    dists = []
    for noise in [0.0, 0.3, 1.0, 3.0]:
        y = torch.from_numpy(rng.standard_normal((p, p)) @ z + noise * rng.standard_normal((p, n)))
        dists.append(pwcca_distance(x, y, method="textbook"))
    assert dists[0] < 1e-6
    assert all(a < b for a, b in zip(dists, dists[1:]))


def test_asymmetric_and_symmetric_option():
    rng = np.random.default_rng(13)
    n = 500
    z = rng.standard_normal((4, n))
    x = torch.from_numpy(np.concatenate([z * 5, rng.standard_normal((6, n))]))
    y = torch.from_numpy(np.concatenate([z, rng.standard_normal((2, n)) * 5]))
    sxy, syx = pwcca_similarity(x, y, method="textbook"), pwcca_similarity(y, x, method="textbook")
    assert abs(sxy - syx) > 1e-3
    sym = pwcca_similarity(x, y, symmetric=True, method="textbook")
    assert sym == pytest.approx(0.5 * (sxy + syx), abs=1e-6)
    assert pwcca_similarity(y, x, symmetric=True, method="textbook") == pytest.approx(sym, abs=1e-6)


# ----------------------------------------------------------------- edge cases and errors


def test_too_few_datapoints():
    x, y = _rand((20, 50), 14), _rand((20, 50), 15)
    with pytest.raises(ValueError, match=r"50 datapoints for 20 neurons.*at least 100.*positions"):
        pwcca_distance(x, y, method="textbook")
    # Configurable.
    pwcca_distance(x, y, min_ratio=2, method="textbook")
    x, y = _rand((20, 99), 14), _rand((10, 99), 15)
    with pytest.raises(ValueError, match="too few datapoints"):
        cca(x, y)
    cca(x[:, :99], y, min_ratio=4.95)


def test_mismatched_datapoints():
    with pytest.raises(ValueError, match="same number of datapoints"):
        cca(_rand((4, 100), 0), _rand((4, 120), 1))
    with pytest.raises(ValueError, match="2-D"):
        cca(_rand((4, 100, 2), 0), _rand((4, 100), 1))


def test_non_finite_rejected():
    x = _rand((4, 100), 0)
    x[0, 3] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        cca(x, _rand((4, 100), 1))


def test_dead_neurons_removed():
    rng = np.random.default_rng(16)
    n = 300
    z = rng.standard_normal((6, n))
    x = torch.from_numpy(z)
    y = torch.from_numpy(rng.standard_normal((6, 6)) @ z + 0.5 * rng.standard_normal((6, n)))
    base = pwcca(x, y, method="textbook")
    # Add a never-firing (all-zero) neuron and a constant one to each side.
    x_dead = torch.cat([x, torch.zeros(1, n, dtype=x.dtype), torch.full((1, n), 3.0, dtype=x.dtype)])
    y_dead = torch.cat([torch.zeros(1, n, dtype=y.dtype), y])
    res = pwcca(x_dead, y_dead, method="textbook")
    assert res.cca.x_keep.tolist() == [True] * 6 + [False, False]
    assert res.cca.y_keep.tolist() == [False] + [True] * 6
    assert res.similarity == pytest.approx(base.similarity, abs=1e-10)
    np.testing.assert_allclose(res.rho.numpy(), base.rho.numpy(), atol=1e-10)
    # All dead: undefined -> NaN with a warning.
    with pytest.warns(RuntimeWarning, match="undefined"):
        assert np.isnan(pwcca_similarity(torch.zeros(3, 50), y[:, :50], method="textbook"))


def test_near_singular_covariance():
    # Duplicated neuron -> singular covariance; eps regularisation keeps it finite.
    x = _rand((8, 400), 17)
    x_dup = torch.cat([x, x[:1]])
    d = pwcca_distance(x_dup, x, method="textbook")
    assert np.isfinite(d) and d < 1e-4
    assert np.isfinite(pwcca_distance(x, x_dup, method="textbook"))


def test_float32_computed_in_float64():
    x32 = _rand((10, 200), 18).float()
    y32 = (_rand((10, 200), 19) + _rand((10, 200), 18)).float()
    res32 = cca(x32, y32)
    res64 = cca(x32.double(), y32.double())
    assert res32.rho.dtype == torch.float64
    assert res32.x_coefs.dtype == torch.float64
    np.testing.assert_allclose(res32.rho.numpy(), res64.rho.numpy(), atol=1e-12)
    assert pwcca_similarity(x32, y32, method="textbook") == pytest.approx(
        pwcca_similarity(x32.double(), y32.double(), method="textbook"), abs=1e-12
    )
    # Identical float32 inputs still give distance ~0 (float32 precision would not).
    assert pwcca_distance(x32, x32, method="textbook") < 1e-6


def test_chunked_accumulation_matches():
    x, y = _rand((6, 1000), 20), _rand((5, 1000), 21) + _rand((5, 1000), 20)[:5]
    a = cca(x, y)
    b = cca(x, y, max_chunk_elements=37)
    np.testing.assert_allclose(a.rho.numpy(), b.rho.numpy(), atol=1e-10)


def test_numpy_input_accepted():
    x = np.random.default_rng(22).standard_normal((5, 100))
    assert pwcca_distance(x, x, method="textbook") < 1e-6


# ----------------------------------------------------------------- conv flattening


def test_flatten_conv_shapes():
    acts = torch.randn(7, 3, 4, 5)
    m = flatten_conv_activations(acts, "spatial_mean")
    assert m.shape == (3, 7) and m.dtype == torch.float64
    torch.testing.assert_close(m, acts.double().mean(dim=(2, 3)).T)
    p = flatten_conv_activations(acts, "positions")
    assert p.shape == (3, 7 * 4 * 5) and p.dtype == acts.dtype
    # Sample-major ordering: column index = ((n * H) + h) * W + w.
    assert p[2, (5 * 4 + 1) * 5 + 3] == acts[5, 2, 1, 3]
    fc = torch.randn(7, 11)
    assert flatten_conv_activations(fc).shape == (11, 7)
    with pytest.raises(ValueError, match="mode"):
        flatten_conv_activations(acts, "bogus")


def test_positions_mode_passes_datapoint_check():
    acts_x = torch.randn(10, 16, 4, 4, generator=torch.Generator().manual_seed(0))
    acts_y = torch.relu(acts_x) + 0.1 * torch.randn(10, 16, 4, 4, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="positions"):
        pwcca_distance(flatten_conv_activations(acts_x), flatten_conv_activations(acts_y), method="textbook")
    d = pwcca_distance(
        flatten_conv_activations(acts_x, "positions"),
        flatten_conv_activations(acts_y, "positions"),
        method="textbook",
    )
    assert 0.0 <= d < 0.5


@pytest.mark.cuda
def test_cuda_matches_cpu():
    x = _rand((10, 300), 23)
    y = x[:6] * 2 + _rand((6, 300), 24)
    cpu = pwcca(x, y, method="textbook")
    gpu = pwcca(x.float().cuda(), y.float().cuda(), method="textbook")
    assert gpu.rho.device.type == "cuda" and gpu.rho.dtype == torch.float64
    assert gpu.similarity == pytest.approx(
        pwcca(x.float(), y.float(), method="textbook").similarity, abs=1e-9
    )
    assert gpu.similarity == pytest.approx(cpu.similarity, abs=1e-5)


# ----------------------------------------------------------------- method="svcca"


def svcca_reference(x, y, eps=0.0):
    """Slow transcription of google/svcca's ``compute_pwcca(x, y, epsilon=eps)``.

    Written from the algorithm's description, step by step:
    1. covariance of the stacked neurons (``np.cov``: centred, 1/(n-1));
    2. divide Sxx by max|Sxx|, Syy by max|Syy|, Sxy by the square root of their product;
    3. keep neurons whose rescaled variance is >= eps (and here: > 0);
    4. add eps to the diagonals, pseudo-inverse, matrix square root by eigh;
    5. full SVD of ixx Sxy iyy; correlations |s|;
    6. side with fewer kept neurons (x on a tie): rows of u^T (x side) or vh (y side)
       applied to the centred kept neurons, plus the neurons' means (mean i onto row i);
    7. Q of the QR decomposition of those directions (datapoints x directions);
       weight_i = sum_j |<Q_i, a_j>| over the uncentred kept neurons a_j; normalise;
    8. similarity = sum_i weight_i |s_i|.
    For the y side the second input's own activations are used (the reference's
    branch projects the first input's, google/svcca PR #9).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    nx = x.shape[0]
    cov = np.cov(x, y)
    sxx, sxy, syy = cov[:nx, :nx].copy(), cov[:nx, nx:].copy(), cov[nx:, nx:].copy()
    xmax, ymax = np.max(np.abs(sxx)), np.max(np.abs(syy))
    sxx, syy, sxy = sxx / xmax, syy / ymax, sxy / np.sqrt(xmax * ymax)
    kx = (np.diag(sxx) >= eps) & (np.diag(sxx) > 0)
    ky = (np.diag(syy) >= eps) & (np.diag(syy) > 0)
    sxx, syy, sxy = sxx[kx][:, kx], syy[ky][:, ky], sxy[kx][:, ky]
    sxx = sxx + eps * np.eye(sxx.shape[0])
    syy = syy + eps * np.eye(syy.shape[0])

    def sqrtm(a):
        w, v = np.linalg.eigh(a)
        return v @ np.diag(np.sqrt(w)) @ v.T

    ixx, iyy = sqrtm(np.linalg.pinv(sxx)), sqrtm(np.linalg.pinv(syy))
    u, s, vh = np.linalg.svd(ixx @ sxy @ iyy)
    if kx.sum() <= ky.sum():
        acts, rot = x[kx], u.T
    else:
        acts, rot = y[ky], vh
    means = acts.mean(axis=1, keepdims=True)
    dirns = rot @ (acts - means) + means
    q, _ = np.linalg.qr(dirns.T)
    weights = np.array([sum(abs(q[:, i] @ acts[j]) for j in range(acts.shape[0])) for i in range(q.shape[1])])
    weights = weights / weights.sum()
    return float(np.sum(weights * np.abs(s))), weights, np.abs(s)


def _svcca_cases():
    rng = np.random.default_rng(42)
    n = 600
    cases = {}
    # rotation plus noise
    x = rng.standard_normal((8, n))
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    cases["rotation_noise"] = (x, q @ x + 0.3 * rng.standard_normal((8, n)))
    # half the dimensions shared, means shifted
    shared = rng.standard_normal((4, n))
    x = np.vstack([shared, rng.standard_normal((4, n))]) + rng.uniform(1, 5, (8, 1))
    y = np.vstack([shared + 0.2 * rng.standard_normal((4, n)), rng.standard_normal((4, n))]) - 3.0
    cases["half_shared_shifted"] = (x, y)
    # ReLU layers of two different random maps of the same inputs, different widths
    z = rng.standard_normal((10, n))
    x = np.maximum(rng.standard_normal((12, 10)) @ z + 0.5, 0)
    y = np.maximum(rng.standard_normal((7, 10)) @ z - 0.2, 0)
    cases["relu_x_wider"] = (x, y)  # y has fewer neurons: weights from y
    cases["relu_y_wider"] = (y, x)
    return cases


@pytest.mark.parametrize("name", ["rotation_noise", "half_shared_shifted", "relu_x_wider", "relu_y_wider"])
def test_svcca_matches_reference_transcription(name):
    x, y = _svcca_cases()[name]
    sim_ref, w_ref, rho_ref = svcca_reference(x, y)
    out = pwcca(torch.from_numpy(x), torch.from_numpy(y))  # default method is "svcca"
    assert out.method == "svcca"
    assert out.weights_side == ("y" if y.shape[0] < x.shape[0] else "x")
    np.testing.assert_allclose(out.rho.numpy(), rho_ref, atol=1e-6)
    np.testing.assert_allclose(out.weights.numpy(), w_ref, atol=1e-6)
    assert out.similarity == pytest.approx(sim_ref, abs=1e-6)
    assert pwcca_distance(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(1 - sim_ref, abs=1e-6)
    # A small ridge (and the removal threshold that goes with it) changes little here.
    sim_eps, _, _ = svcca_reference(x, y, eps=1e-10)
    assert pwcca_similarity(torch.from_numpy(x), torch.from_numpy(y), 1e-10) == pytest.approx(
        sim_eps, abs=1e-6
    )


def test_svcca_differs_from_textbook_on_shifted_means():
    x, y = _svcca_cases()["half_shared_shifted"]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    sv = pwcca_similarity(xt, yt, method="svcca")
    tb = pwcca_similarity(xt, yt, method="textbook")
    assert abs(sv - tb) > 0.01  # the means added back change the weights


def test_svcca_identical_inputs_give_one():
    rng = np.random.default_rng(7)
    x = np.maximum(rng.standard_normal((9, 400)) + 0.3, 0)
    xt = torch.from_numpy(x)
    assert pwcca_similarity(xt, xt) == pytest.approx(1.0, abs=1e-6)
    assert pwcca_distance(xt, 3.0 * xt + 1.0) == pytest.approx(0.0, abs=1e-6)


def test_svcca_constant_neuron_dropped():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 300))
    y = x[:4] + 0.5 * rng.standard_normal((4, 300))
    x_dead = np.vstack([x, np.zeros((1, 300))])
    res = pwcca(torch.from_numpy(x_dead), torch.from_numpy(y))
    assert res.cca.x_keep.tolist() == [True] * 6 + [False]
    assert res.similarity == pytest.approx(svcca_reference(x, y)[0], abs=1e-6)


def test_svcca_symmetric_averages_both_orders():
    x, y = _svcca_cases()["half_shared_shifted"]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    both = 0.5 * (svcca_reference(x, y)[0] + svcca_reference(y, x)[0])
    res = pwcca(xt, yt, symmetric=True)
    assert res.weights_side == "both"
    assert res.similarity == pytest.approx(both, abs=1e-6)
    assert pwcca_similarity(yt, xt, symmetric=True) == pytest.approx(both, abs=1e-6)


def test_unknown_method_rejected():
    x = _rand((4, 100), 0)
    with pytest.raises(ValueError, match="method must be one of"):
        pwcca(x, x, method="cca")
