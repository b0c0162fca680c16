"""A fused group of ViTs (token sites, AdamW) against the same runs trained one by one, float64."""

import copy

import pytest
import torch
import torch.nn.functional as F

from selectivity.core.regularizer import SelectivityRegularizer
from selectivity.models.grouped import groupable
from selectivity.models.vit import ViT
from selectivity.run.config import make_config
from selectivity.training.fused import FusedRuns, pick_backend

CLASSES = 4
HP = dict(lr=0.01, weight_decay=0.05)


def _vit(seed):
    torch.manual_seed(seed)
    return ViT(num_classes=CLASSES, image_size=8, patch_size=4, dim=16, depth=2, heads=2).double()


def _batches(seed, steps, b=6):
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.rand(b, 3, 8, 8, generator=g, dtype=torch.float64),
            torch.randint(0, CLASSES, (b,), generator=g),
        )
        for _ in range(steps)
    ]


def _separate(model, alpha, batches, optimizer):
    model = copy.deepcopy(model).train()
    if optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), **HP)
    else:
        opt = torch.optim.SGD(model.parameters(), momentum=0.9, **HP)
    with SelectivityRegularizer(model, alpha, CLASSES, eps=1e-6) as reg:
        for x, y in batches:
            loss = F.cross_entropy(model(x), y) + reg.penalty(y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model, opt


def test_auto_backend_of_a_vit_is_loop_on_every_device():
    vit = _vit(0)
    assert not groupable(vit)
    assert pick_backend("auto", vit, "cpu") == "loop"
    assert pick_backend("auto", vit, "cuda") == "loop"  # not vmap: grouped refuses it
    with pytest.raises(ValueError, match="cannot widen"):
        pick_backend("grouped", vit, "cpu")


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_fused_vit_group_equals_separate_runs_float64(optimizer):
    seeds, alphas, steps = [0, 1], [-1.0, 2.0], 4
    models = [_vit(s) for s in seeds]
    per_run = [_batches(10 + s, steps) for s in seeds]
    group = FusedRuns(models, alphas, CLASSES, optimizer=optimizer, momentum=0.9, **HP)
    assert group.backend == "loop"
    assert group.layer_names == ["blocks.0.mlp.act", "blocks.1.mlp.act"]
    for t in range(steps):
        x = torch.stack([per_run[r][t][0] for r in range(2)])
        y = torch.stack([per_run[r][t][1] for r in range(2)])
        out = group.step(x, y)
    assert torch.isfinite(out.loss).all() and (out.selectivity > 0).all()
    for r in range(2):
        ref, ref_opt = _separate(models[r], alphas[r], per_run[r], optimizer)
        for k, v in ref.state_dict().items():
            a = group.state_dict(r)[k]
            assert (a - v).abs().max() <= 1e-9 * v.abs().max().clamp(min=1e-12), k
        got, want = group.optimizer_state_dict(r), ref_opt.state_dict()
        assert got["param_groups"] == want["param_groups"]
        for j, s in want["state"].items():
            assert set(got["state"][j]) == set(s)
            for key, v in s.items():
                d = (got["state"][j][key] - v).abs().max()
                assert d <= 1e-9 * v.abs().max().clamp(min=1e-12), (j, key)
        # a single run resumes from the unstacked optimiser state
        single = copy.deepcopy(ref)
        opt = (torch.optim.AdamW if optimizer == "adamw" else torch.optim.SGD)(single.parameters(), lr=0.01)
        opt.load_state_dict(got)
    # the runs really differ
    a, b = group.state_dict(0), group.state_dict(1)
    assert (a["blocks.0.mlp.fc1.weight"] - b["blocks.0.mlp.fc1.weight"]).abs().max() > 1e-3


def test_group_resumes_from_single_adamw_states_and_drops_runs():
    models = [_vit(s) for s in (3, 4, 5)]
    batches = [_batches(20 + i, 2) for i in range(3)]
    states = []
    for m, b in zip(models, batches):
        _, opt = _separate(m, 1.0, b[:1], "adamw")
        states.append(opt.state_dict())
    group = FusedRuns(models, [1.0, 1.0, 1.0], CLASSES, optimizer="adamw", optimizer_states=states, **HP)
    for j, s in states[1]["state"].items():
        torch.testing.assert_close(group.optimizer_state_dict(1)["state"][j]["exp_avg"], s["exp_avg"])
    group.drop([1])
    assert group.num_runs == 2
    for j, s in states[2]["state"].items():
        torch.testing.assert_close(group.optimizer_state_dict(1)["state"][j]["exp_avg_sq"], s["exp_avg_sq"])


def test_vit_presets_use_adamw_and_cnn_presets_keep_the_papers_sgd():
    vit = make_config("paper", {"model": "vit"})
    assert (vit.optimizer, vit.lr, vit.activation, vit.lr_schedule) == ("adamw", 1e-3, "gelu", "cosine")
    cnn = make_config("paper", {"model": "resnet20"})
    assert (cnn.optimizer, cnn.lr, cnn.momentum, cnn.weight_decay, cnn.lr_schedule, cnn.warmup) == (
        "sgd",
        0.1,
        0.9,
        1e-4,
        "step",
        0.0,
    )
    # warmup then cosine, per epoch: 10 epochs, warmup 0.2 -> 2 epochs
    cfg = make_config(None, {"epochs": 10, "lr": 1.0, "lr_schedule": "cosine", "warmup": 0.2})
    lrs = [cfg.lr_at(e) for e in range(10)]
    assert lrs[:3] == [1 / 3, 2 / 3, 1.0]
    assert lrs[2 + 4] == pytest.approx(0.5)  # half-way through the 8 cosine epochs
    assert lrs == sorted(lrs[:3]) + sorted(lrs[3:], reverse=True)
