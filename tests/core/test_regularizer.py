"""SelectivityRegularizer and ActivationCapture: hand-computed term, gradients, hooks."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selectivity import (
    ActivationCapture,
    SelectivityRegularizer,
    batch_selectivity,
    class_selectivity_index,
    measure_selectivity,
)
from selectivity.core.hooks import count_hooks


def hand_net() -> nn.Module:
    """x (2) -> identity -> ReLU (units a) -> sum -> ReLU (unit b) -> head."""
    net = nn.Sequential(
        nn.Linear(2, 2, bias=False),
        nn.ReLU(),
        nn.Linear(2, 1, bias=False),
        nn.ReLU(),
        nn.Linear(1, 2),
    )
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(2))
        net[2].weight.copy_(torch.tensor([[1.0, 1.0]]))
    return net


X = torch.tensor([[2.0, 0.0], [4.0, 1.0], [0.0, 3.0], [1.0, 1.0]])
Y = torch.tensor([0, 0, 1, 1])
# By hand: first ReLU = X.
#   unit a0: class means 3, 0.5 -> (3 - 0.5)/(3 + 0.5) = 5/7
#   unit a1: class means 0.5, 2 -> (2 - 0.5)/(2 + 0.5) = 3/5
#   layer 1 mean = (5/7 + 3/5) / 2 = 23/35
# second ReLU = row sums (2, 5, 3, 2): class means 3.5, 2.5 -> 1/6
# network mean (eq. 3) = (23/35 + 1/6) / 2
HAND_LAYER1 = 23 / 35
HAND_LAYER2 = 1 / 6
HAND_MEAN = (HAND_LAYER1 + HAND_LAYER2) / 2


def test_hand_weighted_network_term():
    net = hand_net()
    with SelectivityRegularizer(net, alpha=-2.0, num_classes=2, layers=[nn.ReLU], eps=0.0) as reg:
        net(X)
        mean, layers = reg.selectivity(Y, per_layer=True)
        assert list(layers) == ["1", "3"]
        assert layers["1"].item() == pytest.approx(HAND_LAYER1, abs=1e-7)
        assert layers["3"].item() == pytest.approx(HAND_LAYER2, abs=1e-7)
        assert mean.item() == pytest.approx(HAND_MEAN, abs=1e-7)
        # penalty = -alpha * mean = +2 * mean
        assert reg.penalty(Y).item() == pytest.approx(2 * HAND_MEAN, abs=1e-6)


def test_eps_is_in_the_denominator():
    net = hand_net()
    with SelectivityRegularizer(net, alpha=1.0, num_classes=2, layers="3", eps=0.5) as reg:
        net(X)
        # unit b: (3.5 - 2.5) / (3.5 + 2.5 + 0.5)
        assert reg.selectivity(Y).item() == pytest.approx(1.0 / 6.5, abs=1e-7)


def test_minibatch_term_matches_the_measurement_function():
    torch.manual_seed(0)
    acts = [torch.relu(torch.randn(64, 5, 4, 4)), torch.relu(torch.randn(64, 9))]
    labels = torch.randint(0, 10, (64,))
    mean, per_layer = batch_selectivity(acts, labels, 10, eps=0.0)
    for a, v in zip(acts, per_layer):
        ref = class_selectivity_index(a, labels, 10)
        assert v.item() == pytest.approx(ref[~torch.isnan(ref)].mean().item(), abs=1e-6)
    assert mean.item() == pytest.approx(per_layer.mean().item(), abs=1e-7)


def test_gradcheck_float64():
    torch.manual_seed(1)
    # strictly positive, continuous inputs: away from ReLU kinks and ties in the max
    a1 = (torch.rand(12, 3, 2, 2, dtype=torch.float64) + 0.1).requires_grad_()
    a2 = (torch.rand(12, 4, dtype=torch.float64) + 0.1).requires_grad_()
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 0])  # unbalanced, class 3 absent
    for rule in ("shift", "clamp", "raw"):

        def fn(x1, x2, rule=rule):
            return batch_selectivity([x1, x2], labels, 4, negative=rule)[0]

        assert torch.autograd.gradcheck(fn, (a1, a2))


def test_gradcheck_through_a_model():
    torch.manual_seed(2)
    net = nn.Sequential(
        nn.Linear(3, 5), nn.Softplus(), nn.Linear(5, 4), nn.Softplus(), nn.Linear(4, 3)
    ).double()
    x = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    with SelectivityRegularizer(net, alpha=0.7, num_classes=3) as reg:  # default: activation types
        assert reg.layer_names == ["1", "3"]

        def term(inp):
            net(inp)
            return reg.penalty(y)

        assert torch.autograd.gradcheck(term, (x,))


def test_gradient_reaches_parameters_and_has_the_right_sign():
    net = hand_net()
    params = [net[0].weight, net[2].weight]
    with SelectivityRegularizer(net, alpha=1.0, num_classes=2, layers=[nn.ReLU]) as reg:
        net(X)
        before = reg.selectivity(Y).item()
        reg.penalty(Y).backward()
    for p in params:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # alpha > 0 promotes selectivity: one gradient-descent step on the term raises it
    with torch.no_grad():
        for p in params:
            p -= 0.01 * p.grad
    with SelectivityRegularizer(net, alpha=1.0, num_classes=2, layers=[nn.ReLU]) as reg:
        net(X)
        assert reg.selectivity(Y).item() > before


def test_dead_units_keep_term_and_gradient_finite():
    net = hand_net()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, -1.0]]))  # unit a1 dead on X
    with SelectivityRegularizer(net, alpha=-1.0, num_classes=2, layers=[nn.ReLU], eps=0.0) as reg:
        net(X)
        mean, layers = reg.selectivity(Y, per_layer=True)
        assert layers["1"].item() == pytest.approx(5 / 7, abs=1e-6)  # dead a1 left out
        reg.penalty(Y).backward()
    for p in net.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()

    # every unit dead: term 0, gradient finite (zero)
    net.zero_grad()
    with torch.no_grad():
        net[0].weight.fill_(-1.0)
    with SelectivityRegularizer(net, alpha=-1.0, num_classes=2, layers=[nn.ReLU], eps=0.0) as reg:
        net(X)
        term = reg.penalty(Y)
        assert term.item() == 0.0
        term.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())


def test_missing_classes():
    net = hand_net()
    with SelectivityRegularizer(net, alpha=-1.0, num_classes=10, layers=[nn.ReLU], eps=0.0) as reg:
        net(X)
        # labels 3 and 7 of 10: absent classes are skipped -> same as 2-class labels
        assert reg.selectivity(torch.tensor([3, 3, 7, 7])).item() == pytest.approx(HAND_MEAN, abs=1e-7)
        # one class only: undefined -> 0, still differentiable
        t = reg.penalty(torch.tensor([4, 4, 4, 4]))
        assert t.item() == 0.0
        t.backward()


class TwiceNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 4)
        self.act = nn.ReLU()  # one module, two call sites
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.act(self.fc2(self.act(self.fc1(x)))))


def test_module_called_twice_counts_as_two_layers():
    torch.manual_seed(3)
    net = TwiceNet()
    x = torch.randn(16, 3)
    y = torch.arange(16) % 2
    with SelectivityRegularizer(net, alpha=1.0, num_classes=2, layers="act") as reg:
        net(x)
        _, layers = reg.selectivity(y, per_layer=True)
        assert list(layers) == ["act", "act#1"]
        net(x)  # a new forward pass replaces the record instead of appending to it
        _, layers = reg.selectivity(y, per_layer=True)
        assert list(layers) == ["act", "act#1"]


def test_no_hook_survives_an_exception():
    net = TwiceNet()
    before = count_hooks(net)
    reg = SelectivityRegularizer(net, alpha=1.0, num_classes=2)
    with pytest.raises(ZeroDivisionError):
        with reg:
            assert count_hooks(net) > before
            net(torch.randn(2, 3))
            raise ZeroDivisionError("raised inside the block")
    assert count_hooks(net) == before and not reg.attached

    with pytest.raises(KeyError):
        with ActivationCapture(net, layers=[nn.ReLU]):
            raise KeyError("boom")
    assert count_hooks(net) == before

    def bad_batches():
        yield torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
        raise OSError("disk gone")

    with pytest.raises(OSError):
        measure_selectivity(net, bad_batches(), num_classes=2, top_n=2)
    assert count_hooks(net) == before

    # an error in the hook itself (wrong labels) also leaves nothing behind
    with pytest.raises(ValueError):
        with reg:
            net(torch.randn(4, 3))
            reg.penalty(torch.tensor([0, 5, 0, 1]))
    assert count_hooks(net) == before


def test_penalty_outside_context_is_a_clear_error():
    net = hand_net()
    reg = SelectivityRegularizer(net, alpha=1.0, num_classes=2)
    with pytest.raises(RuntimeError, match="context manager"):
        reg.penalty(Y)
    with reg:
        with pytest.raises(RuntimeError, match="no activations recorded"):
            reg.penalty(Y)


def test_bad_configuration_errors():
    net = hand_net()
    with pytest.raises(ValueError, match="no module named 'relu1'"):
        SelectivityRegularizer(net, alpha=1.0, num_classes=2, layers="relu1")
    with pytest.raises(ValueError, match="no module matching"):
        SelectivityRegularizer(nn.Sequential(nn.Linear(2, 2)), alpha=1.0, num_classes=2)
    with pytest.raises(ValueError, match="no module matching"):
        SelectivityRegularizer(net, alpha=1.0, num_classes=2, layers=[nn.Conv2d])
    with pytest.raises(ValueError, match=">= 2"):
        SelectivityRegularizer(net, alpha=1.0, num_classes=1)
    with pytest.raises(ValueError, match="finite"):
        SelectivityRegularizer(net, alpha=float("nan"), num_classes=2)
    with SelectivityRegularizer(net, alpha=1.0, num_classes=2) as reg:
        net(X)
        with pytest.raises(ValueError, match=r"shape \(4,\)"):
            reg.penalty(torch.tensor([0, 1]))
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            reg.penalty(torch.tensor([0, 1, 2, 1]))


def test_training_with_the_regulariser_moves_selectivity_both_ways():
    """A small model on separable data: alpha < 0 ends less selective than alpha > 0."""
    g = torch.Generator().manual_seed(4)
    n, c = 512, 4
    y = torch.arange(n) % c
    centers = torch.randn(c, 8, generator=g) * 2
    x = centers[y] + torch.randn(n, 8, generator=g)
    results = {}
    for alpha in (-5.0, 0.0, 5.0):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, c))
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        with SelectivityRegularizer(net, alpha=alpha, num_classes=c) as reg:
            for _step in range(150):
                idx = torch.randint(0, n, (128,), generator=g)
                loss = F.cross_entropy(net(x[idx]), y[idx]) + reg.penalty(y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        rep = measure_selectivity(net, [(x, y)], num_classes=c, top_n=None)
        results[alpha] = rep.mean_selectivity
    assert results[-5.0] < results[0.0] < results[5.0], results


def test_measure_selectivity_matches_one_shot():
    torch.manual_seed(5)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)
    )
    x = torch.randn(90, 3, 7, 7)
    y = torch.arange(90) % 3
    net(x[:1])  # materialise the lazy layer
    rep = measure_selectivity(net, [(x[i : i + 16], y[i : i + 16]) for i in range(0, 90, 16)], 3, top_n=30)
    assert net.training  # train mode restored after the eval pass
    with ActivationCapture(net, detach=True) as cap:
        net.eval()
        net(x)
        full = cap.outputs
    assert [l.name for l in rep.layers] == ["1", "3"]
    for layer in rep.layers:
        torch.testing.assert_close(
            layer.selectivity, class_selectivity_index(full[layer.name], y, 3), equal_nan=True
        )
    assert rep.num_samples == 90 and 0.0 <= rep.accuracy <= 1.0
    assert not math.isnan(rep.mean_selectivity)
