"""Dead units counted as the paper counts them (main figures) and removed (Fig. A9b)."""

import math

import pytest
import torch
from torch import nn

from selectivity import layer_mean, measure_selectivity, network_selectivity


def test_layer_mean_by_hand():
    si = torch.tensor([0.5, float("nan"), 0.3], dtype=torch.float64)
    dead = torch.tensor([False, True, False])
    assert layer_mean(si) == pytest.approx(0.4)  # dead unit removed
    assert layer_mean(si, dead) == pytest.approx(0.8 / 3)  # dead unit counts with index 0


def test_network_selectivity_with_an_all_dead_layer():
    l1 = torch.tensor([0.5, float("nan"), 0.3], dtype=torch.float64)
    l2 = torch.tensor([float("nan"), float("nan")], dtype=torch.float64)
    d1, d2 = torch.tensor([False, True, False]), torch.tensor([True, True])
    live, per_live = network_selectivity({"a": l1, "b": l2})
    paper, per_paper = network_selectivity({"a": l1, "b": l2}, dead={"a": d1, "b": d2})
    assert live == pytest.approx(0.4) and math.isnan(per_live["b"])  # layer b left out
    assert per_paper["b"] == 0.0
    assert paper == pytest.approx((0.8 / 3 + 0.0) / 2)  # layer b counts with 0
    seq, _ = network_selectivity([l1, l2], dead=[d1, d2])
    assert seq == pytest.approx(paper)
    with pytest.raises(ValueError, match="layers"):
        network_selectivity([l1, l2], dead=[d1])


def test_measure_reports_both_measures_on_a_hand_weighted_network():
    # 2 inputs -> 3 ReLU units: u0 = x0, u1 = x1, u2 = -(x0 + x1) (dead for x >= 0).
    lin = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    net = nn.Sequential(lin, nn.ReLU())
    x = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([0, 0, 1, 1])
    rep = measure_selectivity(net, [(x, y)], num_classes=2, layers=[nn.ReLU], top_n=None)
    # u0: class means (2, 0.5) -> 1.5 / 2.5 = 0.6; u1: (0, 1) -> 1; u2: dead.
    layer = rep.layers[0]
    assert layer.dead.tolist() == [False, False, True]
    assert layer.mean_selectivity_live == pytest.approx((0.6 + 1.0) / 2)
    assert layer.mean_selectivity == pytest.approx((0.6 + 1.0 + 0.0) / 3)
    assert rep.mean_selectivity == pytest.approx(1.6 / 3)
    assert rep.mean_selectivity_live == pytest.approx(0.8)
    d = rep.to_dict()
    assert d["mean_selectivity"] == pytest.approx(1.6 / 3) and d["mean_selectivity_live"] == pytest.approx(
        0.8
    )
    assert d["layers"][0]["selectivity_live"] == pytest.approx(0.8)
