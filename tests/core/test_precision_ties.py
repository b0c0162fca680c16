"""Precision with ties at the top-N boundary shared in proportion (issue 13, item 1)."""

import pytest
import torch

from selectivity.core.metrics import SelectivityAccumulator, precision


def _stream(acts, labels, c, top_n, batch):
    acc = SelectivityAccumulator(c, top_n=top_n)
    for i in range(0, acts.shape[0], batch):
        acc.update(acts[i : i + batch], labels[i : i + batch])
    return acc.result().precision


def _a5_example():
    """Paper 1, A.5: a unit responding only to ten cat images, 0 on the rest.

    CIFAR-10-like test set ordered by class (1000 images per class), cat = class 3.
    A second unit responds to every sample of class 0 (precision 1, no ties).
    """
    labels = torch.arange(10).repeat_interleave(1000)  # (10000,) sorted by class
    acts = torch.zeros(10_000, 2)
    cats = (labels == 3).nonzero().squeeze(1)
    acts[cats[:10], 0] = torch.arange(1.0, 11.0)
    acts[labels == 0, 1] = 1.0
    return acts, labels


# (10 cats above the boundary + 990 free slots shared over 9990 tied zeros, 990 of them cats) / 1000
A5_EXPECTED = (10 + 990 * 990 / 9990) / 1000


def test_a5_value_by_hand():
    assert A5_EXPECTED == pytest.approx(0.10811, abs=1e-5)


def test_a5_example_one_shot():
    acts, labels = _a5_example()
    p = precision(acts, labels, 10, top_n=1000)
    assert p[0].item() == pytest.approx(A5_EXPECTED, abs=1e-12)
    assert p[1].item() == 1.0


@pytest.mark.parametrize("batch", [1000, 250, 37])
def test_a5_example_streaming(batch):
    acts, labels = _a5_example()
    p = _stream(acts, labels, 10, 1000, batch)
    assert p[0].item() == pytest.approx(A5_EXPECTED, abs=1e-12)
    assert p[1].item() == 1.0


def test_small_case_by_hand():
    # Unit 0: responses 5 (class 0), 3 (class 1), then 1 tied by classes 0, 1, 1, 2.
    # top_n = 3: above = {0: 1, 1: 1}, 1 free slot over ties {0: 1, 1: 2, 2: 1} (4)
    # -> counts {0: 1.25, 1: 1.5, 2: 0.25} -> precision 1.5 / 3 = 0.5.
    # Unit 1: all six tied at 2 (classes 0, 1, 0, 1, 1, 2): 3 slots, counts
    # {0: 3 * 2/6, 1: 3 * 3/6, 2: 3 * 1/6} -> precision 1.5 / 3 = 0.5.
    # Unit 2: 4, 4 (classes 0, 1) tied above the boundary 1: top_n = 2 -> no free
    # slot for the value-1 samples; counts {0: 1, 1: 1} -> 0.5.
    acts = torch.tensor(
        [
            [5.0, 2.0, 4.0],
            [3.0, 2.0, 4.0],
            [1.0, 2.0, 1.0],
            [1.0, 2.0, 1.0],
            [1.0, 2.0, 1.0],
            [1.0, 2.0, 1.0],
        ]
    )
    labels = torch.tensor([0, 1, 0, 1, 1, 2])
    p = precision(acts, labels, 3, top_n=3)
    assert p[0].item() == pytest.approx(0.5)
    assert p[1].item() == pytest.approx(0.5)
    p2 = precision(acts, labels, 3, top_n=2)
    # Unit 0 top 2: 5 (class 0), 3 (class 1) -> 0.5; unit 1: 2 slots over 6 ties
    # -> class 1: 2 * 3/6 = 1 -> 0.5; unit 2: 4, 4 -> 0.5.
    assert p2.tolist() == pytest.approx([0.5, 0.5, 0.5])
    # Unit 1 with top_n = 1: 1 slot shared, class 1 gets 3/6 -> 0.5.
    assert precision(acts, labels, 3, top_n=1)[1].item() == pytest.approx(0.5)
    for batch in (1, 2, 4):
        torch.testing.assert_close(_stream(acts, labels, 3, 3, batch), p)


def _quantised(seed, n=3000, u=24, c=10):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c, (n,), generator=g)
    # Few distinct values -> many ties at every boundary; class-dependent offsets.
    raw = torch.randn(n, u, generator=g) + 0.3 * (labels.unsqueeze(1) % 3)
    acts = torch.relu(torch.round(raw * 2) / 2)
    acts[:, 0] = 0.0  # dead
    acts[:, 1] = (labels == 4).float() * (torch.rand(n, generator=g) < 0.05).float()  # very sparse
    return acts, labels


def test_permutation_invariant():
    acts, labels = _quantised(0)
    p = precision(acts, labels, 10, top_n=300)
    for seed in range(3):
        perm = torch.randperm(acts.shape[0], generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(precision(acts[perm], labels[perm], 10, top_n=300), p, equal_nan=True)
    # Sorting by class (the test-set order that biased topk) changes nothing either.
    order = labels.argsort(stable=True)
    torch.testing.assert_close(precision(acts[order], labels[order], 10, top_n=300), p, equal_nan=True)


@pytest.mark.parametrize(
    "n,top_n,batch", [(3000, 300, 3000), (3000, 300, 250), (3000, 300, 37), (300, 30, 1)]
)
def test_streaming_equals_one_shot_with_ties(n, top_n, batch):
    acts, labels = _quantised(1, n=n)
    order = labels.argsort(stable=True)
    acts, labels = acts[order], labels[order]
    expected = precision(acts, labels, 10, top_n=top_n)
    got = _stream(acts, labels, 10, top_n, batch)
    torch.testing.assert_close(got, expected, equal_nan=True, rtol=0, atol=1e-12)


def test_bounds_and_dead():
    acts, labels = _quantised(2)
    p = precision(acts, labels, 10, top_n=300)
    assert torch.isnan(p[0])
    live = p[1:]
    assert (live >= 0.1 - 1e-12).all() and (live <= 1 + 1e-12).all()


def test_matches_mean_over_random_tie_breaks():
    # The shared count is the expectation of the modal class's count only when the
    # modal class is the same for every tie-break; here class 0 dominates the
    # samples above the boundary, so the two agree up to Monte-Carlo error.
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 4, (400,), generator=g)
    acts = torch.zeros(400, 1)
    acts[(labels == 0).nonzero().squeeze(1)[:30], 0] = 1.0
    p = precision(acts, labels, 4, top_n=100).item()
    counts = []
    for s in range(200):
        perm = torch.randperm(400, generator=torch.Generator().manual_seed(s))
        top = acts[perm, 0].topk(100).indices
        counts.append((labels[perm][top] == 0).sum().item())
    assert p == pytest.approx(sum(counts) / len(counts) / 100, abs=0.01)
