"""Fused training of R runs (selectivity.training.fused) against the same runs trained one by one."""

import copy

import pytest
import torch
import torch.nn.functional as F

from selectivity.core.regularizer import SelectivityRegularizer
from selectivity.data import ImageDataset
from selectivity.data.loader import BatchLoader, GroupBatchLoader
from selectivity.models.resnet_cifar import CifarResNet
from selectivity.training.fused import FusedRuns
from selectivity.training.runtime import keep_freed_memory

NUM_CLASSES = 10
HP = dict(lr=0.05, momentum=0.9, weight_decay=5e-4)


def _data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    return ImageDataset(images, labels, [f"c{i}" for i in range(NUM_CLASSES)], "toy")


def _model(seed):
    torch.manual_seed(seed)
    return CifarResNet(depth=8, num_classes=NUM_CLASSES).double()  # tiny ResNet: 7 selectivity sites


def _separate(model, alpha, batches):
    """The single-run reference: the regulariser's hooks, mean CE, torch SGD."""
    model = copy.deepcopy(model).train()
    opt = torch.optim.SGD(model.parameters(), **HP)
    with SelectivityRegularizer(model, alpha, NUM_CLASSES, eps=1e-6) as reg:
        for x, y in batches:
            loss = F.cross_entropy(model(x), y) + reg.penalty(y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model, opt


def _assert_same_state(actual, expected, rtol=1e-9):
    assert list(actual) == list(expected)  # same keys in the same order
    for k, v in expected.items():
        a = actual[k]
        assert a.dtype == v.dtype and a.shape == v.shape, k
        if v.dtype.is_floating_point:
            scale = v.abs().max().clamp(min=1e-12)
            assert ((a - v).abs().max() / scale) <= rtol, (k, ((a - v).abs().max() / scale).item())
        else:
            assert torch.equal(a, v), k


def _batches(ds, seed, steps, bs=6):
    loader = BatchLoader(ds, bs, shuffle=True, augment=True, seed=seed, drop_last=True)
    out = []
    while len(out) < steps:
        out += [(x.double(), y) for x, y in loader]
    return out[:steps]


BACKENDS = ["grouped", "loop", "vmap"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_three_fused_runs_equal_three_separate_runs_float64(backend):
    ds = _data()
    seeds, alphas = [0, 1, 2], [-1.0, 0.0, 2.0]
    models = [_model(s) for s in seeds]
    steps = 20
    per_run = [_batches(ds, s, steps) for s in seeds]  # each run its own batch order
    group = FusedRuns(models, alphas, NUM_CLASSES, backend=backend, **HP)
    assert group.backend == backend
    for t in range(steps):
        x = torch.stack([per_run[r][t][0] for r in range(3)])  # (R, B, C, H, W)
        y = torch.stack([per_run[r][t][1] for r in range(3)])  # (R, B)
        out = group.step(x, y)
    assert out.loss.shape == (3,) and torch.isfinite(out.loss).all()
    for r in range(3):
        ref, ref_opt = _separate(models[r], alphas[r], per_run[r])
        _assert_same_state(group.state_dict(r), ref.state_dict())  # params and BN buffers
        mom = group.optimizer_state_dict(r)
        ref_mom = ref_opt.state_dict()
        assert mom["param_groups"] == ref_mom["param_groups"]
        for j, s in ref_mom["state"].items():
            d = (mom["state"][j]["momentum_buffer"] - s["momentum_buffer"]).abs().max()
            assert d <= 1e-9 * s["momentum_buffer"].abs().max().clamp(min=1e-12)
        # the unstacked state loads into a fresh model as a normal checkpoint would
        fresh = _model(99)
        fresh.load_state_dict(group.state_dict(r))
        _assert_same_state(group.model(r).state_dict(), ref.state_dict())
    # the runs really differ (different seeds, alphas and orders): not a vacuous match
    assert (group.state_dict(0)["conv1.weight"] - group.state_dict(2)["conv1.weight"]).abs().max() > 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropping_a_diverged_run_leaves_the_others_exact(backend):
    ds = _data(seed=1)
    seeds, alphas = [3, 4, 5], [1.0, -1.0, 0.5]
    models = [_model(s) for s in seeds]
    steps = 16
    per_run = [_batches(ds, s, steps) for s in seeds]
    group = FusedRuns(models, alphas, NUM_CLASSES, run_ids=["a", "b", "c"], backend=backend, **HP)
    live = [0, 1, 2]  # runs (indices into seeds) still in the group
    acc = torch.zeros(3, dtype=torch.float64)
    for t in range(steps):
        if t == 5:  # run "b" blows up: NaN in one of its weights
            with torch.no_grad():
                group.params["layer1.0.conv1.weight"][1, 0, 0, 0, 0] = float("nan")
        x = torch.stack([per_run[r][t][0] for r in live])
        y = torch.stack([per_run[r][t][1] for r in live])
        acc = acc + group.step(x, y).loss
        if t % 4 == 3:  # the loop checks every K = 4 steps
            bad = group.nonfinite_runs(acc)
            if bad:
                assert bad == [1] and t == 7
                group.drop(bad)
                live = [live[i] for i in range(len(live)) if i not in bad]
                acc = acc[[i for i in range(acc.shape[0]) if i not in bad]]
    assert group.run_ids == ["a", "c"] and live == [0, 2]
    assert torch.isfinite(acc).all()
    for pos, r in enumerate(live):
        ref, _ = _separate(models[r], alphas[r], per_run[r])
        _assert_same_state(group.state_dict(pos), ref.state_dict())


def test_group_loader_gives_each_run_its_single_run_batches():
    ds = _data(n=40)
    common = dict(shuffle=True, augment=True, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    group = GroupBatchLoader(ds, 16, seeds=[3, 7, 11], **common)
    group.set_epoch(2)
    singles = [BatchLoader(ds, 16, seed=s, **common) for s in (3, 7, 11)]
    for s in singles:
        s.set_epoch(2)
    n = 0
    for (x, y), *per in zip(group, *singles):
        assert x.shape[:2] == (3, y.shape[1])
        for r, (xs, ys) in enumerate(per):
            assert torch.equal(x[r], xs) and torch.equal(y[r], ys)
        n += 1
    assert n == 3  # 16 + 16 + 8
    group.keep([0, 2])
    group.set_epoch(2)
    for s in singles:
        s.set_epoch(2)
    (x, _), (x2, _) = next(iter(group)), next(iter(singles[2]))
    assert x.shape[0] == 2 and torch.equal(x[1], x2) and not torch.equal(x[0], x2)


def test_group_checks_its_inputs():
    m = _model(0)
    with pytest.raises(ValueError, match="one alpha per model"):
        FusedRuns([m, m], [1.0], NUM_CLASSES, lr=0.1)
    with pytest.raises(ValueError, match="share a class"):
        FusedRuns([m, torch.nn.Linear(2, 2).double()], [0.0, 0.0], NUM_CLASSES, lr=0.1)
    with pytest.raises(ValueError, match="shapes"):
        FusedRuns([m, CifarResNet(depth=8, num_classes=3).double()], [0.0, 0.0], NUM_CLASSES, lr=0.1)
    group = FusedRuns([m, m], [1.0, 0.0], NUM_CLASSES, lr=0.1)
    with pytest.raises(ValueError, match=r"\(R, B\)"):
        group.step(torch.zeros(3, 2, 3, 8, 8, dtype=torch.float64), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="every run"):
        group.drop([0, 1])
    with pytest.raises(ValueError, match="unknown fused backend 'fast'"):
        FusedRuns([m, m], [1.0, 0.0], NUM_CLASSES, lr=0.1, backend="fast")
    odd = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GELU())
    with pytest.raises(ValueError, match="cannot widen a Sequential"):
        FusedRuns([odd, odd], [0.0, 0.0], NUM_CLASSES, lr=0.1, backend="grouped")
    assert FusedRuns([odd, odd], [0.0, 0.0], NUM_CLASSES, lr=0.1).backend == "loop"  # auto on CPU


def test_keep_freed_memory_is_applied_on_linux_glibc():
    import platform
    import sys

    on_glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is on_glibc
