"""Selectivity metrics: hand-computed values, invariances, streaming, bad input."""

import math

import pytest
import torch

from selectivity import (
    SelectivityAccumulator,
    class_selectivity_index,
    dead_units,
    network_selectivity,
    precision,
)

# 6 samples, 3 classes (2 each), 4 units.
LABELS = torch.tensor([0, 0, 1, 1, 2, 2])
ACTS = torch.tensor(
    [
        # u0  u1  u2  u3
        [2.0, 1.0, 0.0, 0.0],
        [4.0, 1.0, 0.0, 0.0],
        [1.0, 1.0, 0.0, 0.0],
        [1.0, 1.0, 0.0, 0.0],
        [0.0, 1.0, 5.0, 0.0],
        [0.0, 1.0, 5.0, 0.0],
    ]
)


# --------------------------------------------------------------------- hand-computed
def test_hand_computed_values():
    si = class_selectivity_index(ACTS, LABELS, num_classes=3)
    assert si.dtype == torch.float64 and si.shape == (4,)
    # u0: class means (3, 1, 0): mu_max 3, mu_rest 0.5 -> 2.5 / 3.5
    assert si[0].item() == pytest.approx(2.5 / 3.5, abs=1e-15)
    assert si[1].item() == 0.0  # same mean for every class
    assert si[2].item() == 1.0  # responds to one class only
    assert math.isnan(si[3].item())  # dead: 0/0 -> NaN, never 0 or inf


def test_spatial_mean_of_4d_input():
    # unit response = mean over H, W: put the 2-D values in one corner of a 2x2 map x4
    acts4 = torch.zeros(6, 4, 2, 2)
    acts4[:, :, 0, 0] = ACTS * 4
    si4 = class_selectivity_index(acts4, LABELS, 3)
    torch.testing.assert_close(si4, class_selectivity_index(ACTS, LABELS, 3), equal_nan=True)


def test_absent_class_is_skipped():
    # Same data with num_classes=5: classes 3 and 4 have no sample -> identical result.
    torch.testing.assert_close(
        class_selectivity_index(ACTS, LABELS, 5),
        class_selectivity_index(ACTS, LABELS, 3),
        equal_nan=True,
    )


def test_class_means_not_sums():
    # 3 samples of class 0, 1 of class 1, same response: unbalanced but not selective.
    si = class_selectivity_index(torch.ones(4, 1), torch.tensor([0, 0, 0, 1]), 2)
    assert si.item() == 0.0


def test_single_class_present_is_undefined():
    si = class_selectivity_index(torch.rand(4, 3) + 0.1, torch.zeros(4, dtype=torch.long), 10)
    assert torch.isnan(si).all()


@pytest.mark.parametrize(
    "rule,expected",
    [
        ("shift", 3.0 / 5.0),  # means (-1, 1, 3) -> (0, 2, 4): (4 - 1) / (4 + 1)
        ("clamp", 2.5 / 3.5),  # -> (0, 1, 3): (3 - 0.5) / (3 + 0.5)
        ("raw", 1.0),  # (3 - 0) / (3 + 0)
    ],
)
def test_negative_response_rules(rule, expected):
    acts = torch.tensor([[-1.0], [1.0], [3.0]])
    si = class_selectivity_index(acts, torch.tensor([0, 1, 2]), 3, negative=rule)
    assert si.item() == pytest.approx(expected, abs=1e-12)


def test_negative_rules_agree_on_nonnegative_responses():
    torch.manual_seed(0)
    acts = torch.relu(torch.randn(50, 8))
    labels = torch.randint(0, 5, (50,))
    ref = class_selectivity_index(acts, labels, 5, negative="raw")
    for rule in ("shift", "clamp"):
        torch.testing.assert_close(
            class_selectivity_index(acts, labels, 5, negative=rule), ref, equal_nan=True
        )


def test_shift_rule_stays_in_unit_interval_for_leaky_relu():
    torch.manual_seed(1)
    acts = torch.nn.functional.leaky_relu(torch.randn(200, 30) - 1.0, 0.3)
    si = class_selectivity_index(acts, torch.randint(0, 10, (200,)), 10)
    assert torch.isfinite(si).all() and (si >= 0).all() and (si <= 1).all()


def test_raw_rule_gives_nan_not_inf_for_nonpositive_denominator():
    acts = torch.tensor([[-1.0], [1.0]])  # mu_max + mu_rest = 0
    si = class_selectivity_index(acts, torch.tensor([0, 1]), 2, negative="raw")
    assert math.isnan(si.item())


def test_dead_units_and_precision_by_hand():
    assert dead_units(ACTS).tolist() == [False, False, False, True]
    p = precision(ACTS, LABELS, 3, top_n=2)
    # u0: top-2 responses 4, 2 -> both class 0 -> 1. u2: top-2 both class 2 -> 1.
    assert p[0].item() == 1.0 and p[2].item() == 1.0
    assert math.isnan(p[3].item())
    # default top_n = N // C = 2
    torch.testing.assert_close(precision(ACTS, LABELS, 3), p, equal_nan=True)
    p3 = precision(ACTS, LABELS, 3, top_n=3)
    assert p3[0].item() == pytest.approx(2 / 3)  # 4, 2 (class 0) and a 1 (class 1)


def test_precision_bounds():
    torch.manual_seed(2)
    acts = torch.rand(500, 20)
    labels = torch.randint(0, 10, (500,))
    p = precision(acts, labels, 10, top_n=50)
    assert (p >= 1 / 10).all() and (p <= 1).all()


def test_network_selectivity_eq3_excludes_nan():
    per_layer = {
        "a": torch.tensor([0.2, 0.4, float("nan")]),  # mean 0.3 over live units
        "b": torch.tensor([0.9]),
        "c": torch.tensor([float("nan"), float("nan")]),  # all dead: left out
    }
    mean, layers = network_selectivity(per_layer)
    assert layers["a"] == pytest.approx(0.3)
    assert math.isnan(layers["c"])
    assert mean == pytest.approx((0.3 + 0.9) / 2)  # not the unit-weighted 1.5 / 3
    mean2, _ = network_selectivity([torch.tensor([0.2, 0.4]), torch.tensor([0.9])])
    assert mean2 == pytest.approx(0.6)


# --------------------------------------------------------------------- invariances
def _si(a, y, c):
    return class_selectivity_index(a, y, c)


def _prec(a, y, c):
    return precision(a, y, c, top_n=10)


def _dead(a, y, c):
    return dead_units(a).double()


def _stream_si(a, y, c):
    acc = SelectivityAccumulator(c, top_n=10)
    for i in range(0, a.shape[0], 13):
        acc.update(a[i : i + 13], y[i : i + 13])
    return acc.result().selectivity


def _stream_prec(a, y, c):
    acc = SelectivityAccumulator(c, top_n=10)
    for i in range(0, a.shape[0], 13):
        acc.update(a[i : i + 13], y[i : i + 13])
    return acc.result().precision


ALL_METRICS = [_si, _prec, _dead, _stream_si, _stream_prec]
SELECTIVITY_METRICS = [_si, _prec, _stream_si, _stream_prec]


def _data(seed=0, n=120, u=7, c=4):
    g = torch.Generator().manual_seed(seed)
    acts = torch.relu(torch.randn(n, u, generator=g))  # continuous: no ties
    acts[:, 3] = 0.0  # one dead unit
    labels = torch.arange(n) % c
    return acts, labels, c


@pytest.mark.parametrize("metric", ALL_METRICS)
def test_permuting_units_permutes_output(metric):
    acts, labels, c = _data()
    perm = torch.randperm(acts.shape[1], generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        metric(acts[:, perm], labels, c), metric(acts, labels, c)[perm], equal_nan=True
    )


@pytest.mark.parametrize("metric", ALL_METRICS)
@pytest.mark.parametrize("c_scale", [0.001, 3.0, 1000.0])
def test_scaling_a_unit_changes_nothing(metric, c_scale):
    acts, labels, c = _data()
    scaled = acts.clone()
    scaled[:, 2] *= c_scale
    torch.testing.assert_close(metric(scaled, labels, c), metric(acts, labels, c), equal_nan=True)


@pytest.mark.parametrize("metric", ALL_METRICS)
def test_permuting_samples_and_renaming_classes_change_nothing(metric):
    acts, labels, c = _data()
    perm = torch.randperm(acts.shape[0], generator=torch.Generator().manual_seed(4))
    rename = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(
        metric(acts[perm], rename[labels[perm]], c), metric(acts, labels, c), equal_nan=True
    )


@pytest.mark.parametrize("metric", SELECTIVITY_METRICS)
def test_unit_responding_to_one_class_only_gives_one(metric):
    acts, labels, c = _data()
    acts[:, 0] = torch.where(labels == 2, torch.rand(acts.shape[0]) + 0.5, torch.zeros(()))
    assert metric(acts, labels, c)[0].item() == pytest.approx(1.0)


@pytest.mark.parametrize("metric", [_si, _stream_si])
def test_equal_class_means_give_zero(metric):
    acts, labels, c = _data()
    # every class gets the same multiset of responses -> identical class means
    acts[:, 1] = torch.tensor([1.0, 2.0, 7.0])[torch.arange(acts.shape[0]) // c % 3]
    assert metric(acts, labels, c)[1].item() == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------- streaming
def test_streaming_equals_one_shot_with_uneven_batches():
    g = torch.Generator().manual_seed(5)
    n, u, c = 1000, 33, 10
    acts = torch.relu(torch.randn(n, u, 3, 3, generator=g) + 0.3)
    acts[:, 5] = 0.0  # dead
    labels = torch.randint(0, c, (n,), generator=g)
    acc = SelectivityAccumulator(c, top_n=100)
    bounds = [0, 1, 8, 250, 251, 600, 977, n]  # batches of 1, 7, 242, 1, 349, 377, 23
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        acc.update(acts[lo:hi], labels[lo:hi])
    res = acc.result()
    torch.testing.assert_close(res.selectivity, class_selectivity_index(acts, labels, c), equal_nan=True)
    torch.testing.assert_close(res.precision, precision(acts, labels, c, top_n=100), equal_nan=True)
    assert res.dead.tolist() == dead_units(acts).tolist()
    assert acc.num_samples == n and int(res.counts.sum()) == n


def test_streaming_memory_does_not_grow_with_samples():
    acc = SelectivityAccumulator(10, top_n=20)

    def state_numel():
        return sum(t.numel() for t in (acc._sums, acc._counts, acc._alive, acc._top_vals, acc._top_labels))

    acc.update(torch.rand(64, 16), torch.randint(0, 10, (64,)))
    first = state_numel()
    for _ in range(20):
        acc.update(torch.rand(64, 16), torch.randint(0, 10, (64,)))
    assert state_numel() == first == 10 * 16 + 10 + 16 + 2 * 20 * 16


def test_accumulator_errors():
    acc = SelectivityAccumulator(3)
    with pytest.raises(RuntimeError, match="before any update"):
        acc.result()
    acc.update(torch.rand(4, 5), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="5"):
        acc.update(torch.rand(4, 6), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        acc.update(torch.rand(2, 5), torch.tensor([0, 3]))


# --------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "acts,labels,c,match",
    [
        (torch.rand(4, 3, 2), torch.tensor([0, 1, 0, 1]), 2, r"\(N, U\) or \(N, U, H, W\)"),
        (torch.rand(4), torch.tensor([0, 1, 0, 1]), 2, r"\(N, U\) or \(N, U, H, W\)"),
        (torch.rand(4, 3), torch.tensor([0, 1, 0]), 2, r"shape \(N,\) = \(4,\)"),
        (torch.rand(4, 3), torch.tensor([[0, 1, 0, 1]]), 2, r"shape \(N,\)"),
        (torch.rand(4, 3), torch.tensor([0, 1, 2, 1]), 2, r"\[0, 1\].*\[0, 2\]"),
        (torch.rand(4, 3), torch.tensor([0, -1, 0, 1]), 2, r"\[0, 1\]"),
        (torch.rand(4, 3), torch.tensor([0.0, 1.0, 0.0, 1.0]), 2, "integer"),
        (torch.rand(4, 3), torch.tensor([0, 0, 0, 0]), 1, ">= 2"),
    ],
)
def test_bad_input_raises_clear_error(acts, labels, c, match):
    for fn in (class_selectivity_index, precision):
        with pytest.raises(ValueError, match=match):
            fn(acts, labels, c)


def test_bad_rule_and_top_n():
    with pytest.raises(ValueError, match="shift"):
        class_selectivity_index(torch.rand(2, 2), torch.tensor([0, 1]), 2, negative="abs")
    with pytest.raises(ValueError, match="top_n"):
        precision(torch.rand(2, 2), torch.tensor([0, 1]), 2, top_n=0)
    with pytest.raises(ValueError, match="top_n"):
        SelectivityAccumulator(2, top_n=0)
