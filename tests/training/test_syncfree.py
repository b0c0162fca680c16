"""The sync-free training step: dead-unit rules, label checks, no host reads, fast paths."""

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selectivity import SelectivityRegularizer, batch_selectivity
from selectivity.core.regularizer import layer_ids
from selectivity.data import ImageDataset
from selectivity.data.loader import BatchLoader, GroupBatchLoader
from selectivity.models.resnet_cifar import CifarResNet
from selectivity.training.fused import FusedRuns
from selectivity.training.runtime import autocast, channels_last, compile_with_fallback

Y = torch.tensor([0, 0, 1, 1])
# Layer "A": 2 units, dead on the whole minibatch.
# Layer "B": unit 0 responds (2, 4, 0, 1): class means 3, 0.5 -> (3 - 0.5)/(3 + 0.5) = 5/7;
#            unit 1 is dead.
# Layer "C": one unit (2, 5, 3, 2): class means 3.5, 2.5 -> 1/6.
A = torch.zeros(4, 2)
B = torch.tensor([[2.0, 0.0], [4.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
C = torch.tensor([[2.0], [5.0], [3.0], [2.0]])


def test_dead_rules_by_hand_with_an_all_dead_layer():
    acts = [A, B, C]
    mean, per_layer = batch_selectivity(acts, Y, 2, eps=0.0, dead="exclude")
    # exclude: A is left out of the mean over layers; B's dead unit out of B's mean
    assert per_layer.tolist() == pytest.approx([0.0, 5 / 7, 1 / 6], abs=1e-7)
    assert mean.item() == pytest.approx((5 / 7 + 1 / 6) / 2, abs=1e-7)  # 37/84, not 37/126
    mean, per_layer = batch_selectivity(acts, Y, 2, eps=0.0, dead="include")
    # include: dead units count with index 0, every layer counts
    assert per_layer.tolist() == pytest.approx([0.0, 5 / 14, 1 / 6], abs=1e-7)
    assert mean.item() == pytest.approx((0.0 + 5 / 14 + 1 / 6) / 3, abs=1e-7)  # 11/63
    # eps enters the live units' denominators under both rules
    mean, _ = batch_selectivity(acts, Y, 2, eps=0.5, dead="include")
    assert mean.item() == pytest.approx((2.5 / 4.0 / 2 + 1.0 / 6.5) / 3, abs=1e-7)


def test_dead_rules_through_the_regulariser_keep_gradients_finite():
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, -1.0]]))  # unit 1 dead on X
        net[2].weight.copy_(torch.tensor([[-1.0, -1.0]]))  # the second layer is all dead
    x = torch.tensor([[2.0, 0.0], [4.0, 1.0], [0.0, 3.0], [1.0, 1.0]])
    for dead, expected in (("exclude", 5 / 7), ("include", (5 / 14 + 0.0) / 2)):
        net.zero_grad()
        with SelectivityRegularizer(net, alpha=1.0, num_classes=2, eps=0.0, dead=dead) as reg:
            net(x)
            term = reg.selectivity(Y)
            assert term.item() == pytest.approx(expected, abs=1e-6), dead
            reg.penalty(Y).backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    with pytest.raises(ValueError, match="dead must be one of"):
        SelectivityRegularizer(net, alpha=1.0, num_classes=2, dead="ignore")


def test_label_checks_happen_once_at_load_time():
    with pytest.raises(ValueError, match=r"\[0, 2\].*\[0, 3\]"):
        ImageDataset(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 2, 3]), ["a", "b", "c"])
    acts = [torch.rand(4, 3)]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        batch_selectivity(acts, torch.tensor([0, 1, 2, 1]), 2)  # checked by default
    # unchecked: a label outside [0, C) is just an absent class (nothing read back)
    unchecked, _ = batch_selectivity(acts, torch.tensor([0, 1, 2, 1]), 2, check_labels=False)
    same, _ = batch_selectivity(acts[0][[0, 1, 3]].unsqueeze(0).unbind(0), torch.tensor([0, 1, 1]), 2)
    assert unchecked.item() == pytest.approx(same.item(), abs=1e-7)


def test_layer_ids():
    assert layer_ids([2, 1, 3]).tolist() == [0, 0, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="positive unit counts"):
        layer_ids([2, 0])


# ----------------------------------------------------------------------------- no host sync
_READBACKS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy")


@contextlib.contextmanager
def _count_readbacks(monkeypatch):
    """Count every Python-level read of a tensor value back to the host."""
    calls: list[str] = []
    for name in _READBACKS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *a, _name=name, _orig=original, **k):
            calls.append(_name)
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    try:
        yield calls
    finally:
        monkeypatch.undo()


@contextlib.contextmanager
def _cuda_sync_errors(device):
    """On CUDA, make any synchronising call raise (torch.cuda.set_sync_debug_mode)."""
    if device.type != "cuda":
        yield
        return
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


def _devices():
    # CPU always; CUDA as a `cuda`-marked case, skipped without a GPU (the same code path, stricter check).
    return [torch.device("cpu"), pytest.param(torch.device("cuda"), marks=pytest.mark.cuda)]


def _toy(n=32, classes=10):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    return ImageDataset(images, torch.arange(n) % classes, [f"c{i}" for i in range(classes)])


@pytest.mark.parametrize("device", _devices(), ids=str)
def test_single_run_training_step_reads_nothing_back(monkeypatch, device):
    torch.manual_seed(0)
    model = CifarResNet(depth=8, num_classes=10).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loader = BatchLoader(_toy(), 8, shuffle=True, augment=True, seed=1, device=device)
    reg = SelectivityRegularizer(model, alpha=-1.0, num_classes=10, check_labels=False)
    total = torch.zeros((), device=device)

    def step(x, y):
        loss = F.cross_entropy(model(x), y) - reg.alpha * reg.selectivity(y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        reg.clear()
        return loss.detach()

    with reg:
        it = iter(loader)
        step(*next(it))  # warm-up outside the check (lazy initialisation)
        with _count_readbacks(monkeypatch) as calls, _cuda_sync_errors(device):
            for x, y in it:  # batch production + forward + regulariser + backward + SGD
                total += step(x, y)
        assert calls == []
    assert torch.isfinite(total)  # the read back happens here, once, outside the steps
    # positive control: the checked path reads the labels back, and the counter sees it
    with _count_readbacks(monkeypatch) as calls:
        batch_selectivity([torch.rand(4, 3, device=device)], torch.tensor([0, 1, 0, 1], device=device), 2)
    assert "__int__" in calls


@pytest.mark.parametrize("device", _devices(), ids=str)
def test_fused_training_step_reads_nothing_back(monkeypatch, device):
    models = []
    for s in range(3):
        torch.manual_seed(s)
        models.append(CifarResNet(depth=8, num_classes=10).to(device))
    group = FusedRuns(models, [-1.0, 0.0, 2.0], 10, lr=0.1)
    loader = GroupBatchLoader(_toy(), 8, seeds=[0, 1, 2], shuffle=True, augment=True, device=device)
    it = iter(loader)
    group.step(*next(it))  # warm-up
    acc = torch.zeros(3, device=device)
    with _count_readbacks(monkeypatch) as calls, _cuda_sync_errors(device):
        for x, y in it:
            acc += group.step(x, y).loss
    assert calls == []
    assert group.nonfinite_runs(acc) == []


# ----------------------------------------------------------------------------- fast paths
def test_compile_falls_back_cleanly_when_the_backend_fails():
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no compiler here")

    models = []
    for s in range(2):  # small, so that tracing up to the failing backend is quick
        torch.manual_seed(s)
        models.append(
            nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
        )
        models[-1](torch.zeros(1, 3, 8, 8))  # materialise the lazy layer
    loader = GroupBatchLoader(_toy(), 8, seeds=[0, 1], shuffle=True)
    batches = list(loader)
    eager = FusedRuns(models, [1.0, 0.0], 10, lr=0.1)
    fallback = FusedRuns(models, [1.0, 0.0], 10, lr=0.1)
    assert not fallback.enable_compile(*batches[0], backend=broken_backend)
    assert "no compiler here" in fallback.compile_error
    for x, y in batches:
        eager.step(x, y)
        fallback.step(x, y)
    for r in range(2):  # the failed trial step left no trace
        for k, v in eager.state_dict(r).items():
            assert torch.equal(fallback.state_dict(r)[k], v), k


def test_compile_with_fallback_restores_state_after_a_failed_trial():
    state = {"w": torch.ones(3)}

    def trial(fn):
        state["w"] += 1.0  # the step changed the state before failing
        fn(state["w"])

    def fn(w):
        raise RuntimeError("backward compile failed")

    used, why = compile_with_fallback(
        fn,
        trial,
        snapshot=lambda: state["w"].clone(),
        restore=lambda s: state.__setitem__("w", s),
        backend="eager",
    )
    assert used is fn and "backward compile failed" in why
    assert torch.equal(state["w"], torch.ones(3))


def test_bf16_autocast_and_channels_last_match_fp32_within_rounding():
    torch.manual_seed(0)
    model = CifarResNet(depth=8, num_classes=10).eval()
    x = torch.randn(16, 3, 8, 8)
    ref = model(x)
    cl = channels_last(model)
    out = cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    with autocast("cpu", True):
        low = model(x)
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max()
    with autocast("cpu", False):
        assert model(x).dtype == torch.float32
    # fused bf16 step: the selectivity term stays float32 and finite
    group = FusedRuns([CifarResNet(depth=8, num_classes=10)] * 2, [1.0, -1.0], 10, lr=0.1, amp=True)
    x2, y2 = next(iter(GroupBatchLoader(_toy(), 8, seeds=[0, 1])))
    out = group.step(x2, y2)
    assert out.selectivity.dtype == torch.float32 and torch.isfinite(out.loss).all()
    assert (out.selectivity > 0).all()
