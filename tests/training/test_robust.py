"""Robust training (config field ``robust``): PGD adversarial training, Gaussian-noise
augmentation and AugMix, in single runs and fused groups, exactly resumable.

- adversarial training of a linear model: its loss and its SGD step are those of the
  closed-form worst-case loss;
- adversarial training raises PGD accuracy over standard training on real CIFAR-10
  (1000 images, one epoch; skipped without ``SELECTIVITY_DATA``);
- every method is a function of (seed, epoch, step): a run stopped after an epoch, or
  killed mid-epoch, and resumed ends with the bytes of an uninterrupted run;
- a fused group (loop backend) trains each run as the run alone does (float64).
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import TINY, write_tiny_cifar
from selectivity.core.evalmode import frozen_train
from selectivity.core.regularizer import SelectivityRegularizer
from selectivity.data.loader import BatchLoader
from selectivity.models.resnet_cifar import CifarResNet
from selectivity.perturb.attacks import accuracy_under_attack, adversarial_training_batch
from selectivity.run.checkpoint import load_run
from selectivity.run.config import ConfigError, make_config
from selectivity.run.files import RunFiles, read_json, read_jsonl
from selectivity.training.fused import FusedRuns, pick_backend
from selectivity.training.group import train_group
from selectivity.training.robust import robust_training, step_seed
from selectivity.training.single import subset, train_run, train_step

SRC = str(Path(__file__).resolve().parents[2] / "src")
METHODS = ("adversarial", "noise_augment", "augmix")


def quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_cifar(tmp_path_factory.mktemp("tinydata"))


def tiny_cfg(**kw):
    # Two PGD steps keep the adversarial runs short; the method is the same.
    return make_config(None, {"model": "resnet20", "alpha": -1.0, **TINY, "adv_steps": 2, **kw})


# --------------------------------------------------------------------------- config
def test_robust_fields_are_validated_and_recorded():
    cfg = make_config(None, {"robust": "adversarial"})
    assert (cfg.adv_epsilon, cfg.adv_step_size, cfg.adv_steps) == (8 / 255, 2 / 255, 7)
    assert cfg.adv_norm == "linf" and cfg.adv_random_start and cfg.adv_bn == "train"
    assert cfg.to_dict()["robust"] == "adversarial"
    for key, value, why in (
        ("robust", "mixup", "'robust'"),
        ("adv_steps", 0, ">= 1"),
        ("adv_norm", "l1", "'linf' or 'l2'"),
        ("adv_bn", "frozen", "'train' or 'eval'"),
        ("augmix_severity", 11, "1 to 10"),
        ("augmix_depth", 0, "-1"),
    ):
        with pytest.raises(ConfigError, match=why):
            make_config(None, {key: value})
    with pytest.raises(ConfigError, match="noise_sigma_max"):
        make_config(None, {"noise_sigma_min": 0.2, "noise_sigma_max": 0.1})


def test_step_seeds_depend_on_seed_epoch_step_and_method():
    seeds = {step_seed(s, e, t, m) for s in (0, 1) for e in (0, 1) for t in (0, 1) for m in METHODS}
    assert len(seeds) == 24 and all(0 <= s < 2**63 for s in seeds)
    assert step_seed(3, 2, 1, "augmix") == step_seed(3, 2, 1, "augmix")


def test_frozen_train_keeps_batch_statistics_and_restores_running_ones():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(3).train()
    x = torch.randn(8, 3) * 5 + 2
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    with frozen_train(bn):
        out = bn(x)
        assert not bn.weight.requires_grad
    # batch statistics were used (zero mean per feature), and nothing of the module changed
    assert out.mean(0).abs().max() < 1e-5
    assert all(torch.equal(bn.state_dict()[k], v) for k, v in before.items())
    assert bn.training and bn.weight.requires_grad


# --------------------------------------------------------------------------- closed form
def test_adversarial_training_of_a_linear_model_is_the_closed_form_worst_case():
    """Binary logistic model on normalised pixels: ``z = W (x - m) / s + b``.

    The worst case of ``CE`` over ``||d||_inf <= eps`` lowers the margin
    ``(w_y - w_o) . (x - m) / s + b_y - b_o`` by ``eps * sum_j |w_y - w_o|_j / s_c(j)``
    (every pixel moved by eps against the margin). Inputs stay eps away from 0 and 1, so
    no clipping binds, and PGD (random start, steps of eps / 2, enough to cross the ball)
    ends in that corner. By Danskin's theorem the weight gradient of the worst case is
    the gradient at the corner, so one adversarial SGD step equals one SGD step on the
    closed-form loss.
    """
    torch.manual_seed(0)
    n, c, h, w, eps = 16, 3, 2, 2, 0.05
    mean, std = (0.5, 0.4, 0.45), (0.25, 0.2, 0.3)
    x01 = 0.1 + 0.8 * torch.rand(n, c, h, w, dtype=torch.float64)  # in [0.1, 0.9]
    y = torch.randint(0, 2, (n,))
    m = torch.tensor(mean, dtype=torch.float64).view(1, c, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, c, 1, 1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 2)).double()
    ref = copy.deepcopy(model)
    cfg = make_config(
        None,
        {"robust": "adversarial", "alpha": 0.0, "adv_epsilon": eps, "adv_step_size": eps / 2, "adv_steps": 5},
    )
    robust = robust_training(cfg, mean, std, torch.device("cpu"), dtype=torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    reg = SelectivityRegularizer(model, 0.0, 2, layers=["1"])
    loss, ce, _, _ = train_step(model, opt, reg, (x01 - m) / s, y, cfg, torch.device("cpu"), robust=robust)

    # The closed form, differentiated by autograd on a copy of the initial model.
    lin = ref[1]
    wd = (lin.weight[1] - lin.weight[0]).view(1, c, h, w)  # (1, C, H, W): w_1 - w_0
    sign = 2.0 * y.double() - 1.0  # +1 for class 1, -1 for class 0
    margin = sign * (((x01 - m) / s * wd).flatten(1).sum(1) + lin.bias[1] - lin.bias[0])
    worst = F.softplus(-margin + eps * (wd.abs() / s).sum())  # (N,) worst-case CE
    assert abs(float(ce) - float(worst.mean().detach())) < 1e-10 and float(loss) == float(ce)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    worst.mean().backward()
    ref_opt.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_the_training_attack_is_pgd_and_stays_in_the_ball():
    torch.manual_seed(1)
    model = CifarResNet(depth=8, num_classes=10).train()
    x, y = torch.rand(8, 3, 8, 8), torch.randint(0, 10, (8,))
    state = copy.deepcopy(model.state_dict())
    g = torch.Generator().manual_seed(0)
    adv = adversarial_training_batch(model, x, y, 8 / 255, steps=3, step_size=2 / 255, generator=g)
    assert (adv - x).abs().max() <= 8 / 255 + 1e-7 and adv.min() >= 0 and adv.max() <= 1
    # the attack changed nothing of the model, and raised the loss (in train mode, on batch statistics)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(x), y)
    with pytest.raises(ValueError, match="bn must be one of"):
        adversarial_training_batch(model, x, y, 0.1, bn="frozen")


# --------------------------------------------------------------------------- it works
def test_adversarial_training_raises_pgd_accuracy(cifar_data, tmp_path):
    """One epoch on 1000 real CIFAR-10 images, standard vs PGD training; PGD-3 at 8/255 on 200 test images."""
    base = dict(
        model="resnet20",
        epochs=1,
        batch_size=50,
        train_subset=1000,
        eval_subset=100,
        val_size=100,
        top_n=10,
        num_threads=1,
        lr=0.05,
        eval_batch_size=200,
        adv_steps=2,
        adv_step_size=5 / 255,
    )
    acc = {}
    for method in ("none", "adversarial"):
        cfg = make_config(None, {**base, "robust": method})
        assert (
            train_run(cfg, tmp_path / method, data=cifar_data, progress=False, log=quiet)["status"]
            == "completed"
        )
        run = load_run(tmp_path / method, data=cifar_data)
        test = subset(run.splits.test, 200, 0)
        (res,) = accuracy_under_attack(
            run.model,
            [(test.images.float() / 255, test.labels)],
            "pgd",
            [8 / 255],
            mean=run.splits.mean,
            std=run.splits.std,
            steps=3,
        )
        acc[method] = res.accuracy
    # Measured: 0.015 (standard) vs 0.135 (adversarial).
    assert acc["adversarial"] > acc["none"] + 0.05, acc


# --------------------------------------------------------------------------- exact resume
def _model_bytes(run_dir: Path) -> dict[str, bytes]:
    out = {}
    for name in ("last", "best"):
        state = torch.load(RunFiles(run_dir).root / "checkpoints" / f"{name}.pt", weights_only=True)["model"]
        out.update({f"{name}/{k}": v.numpy().tobytes() for k, v in state.items()})
    return out


def _rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_jsonl(RunFiles(run_dir).metrics)]


@pytest.mark.parametrize("method", METHODS)
def test_stopped_and_resumed_run_equals_the_uninterrupted_one(method, tiny_data, tmp_path):
    cfg = tiny_cfg(robust=method, epochs=2)
    whole = train_run(cfg, tmp_path / "whole", data=tiny_data, progress=False, log=quiet)
    part = tmp_path / "part"
    assert (
        train_run(cfg, part, data=tiny_data, progress=False, log=quiet, stop_after_epochs=1)["status"]
        == "interrupted"
    )
    resumed = train_run(cfg, part, data=tiny_data, progress=False, log=quiet)
    assert _rows(part) == _rows(tmp_path / "whole") and len(_rows(part)) == 2
    assert _model_bytes(part) == _model_bytes(tmp_path / "whole")
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    # The method changed the training: a standard run's first epoch differs.
    plain = train_run(tiny_cfg(epochs=1), tmp_path / "plain", data=tiny_data, progress=False, log=quiet)
    assert plain["status"] == "completed" and _rows(tmp_path / "plain")[0] != _rows(part)[0]


@pytest.mark.slow
def test_killed_mid_epoch_and_resumed_run_equals_the_uninterrupted_one(tiny_data, tmp_path):
    """AugMix and noise draw per step: a SIGKILL in epoch 2 (or 3) and a resume lose nothing."""
    epochs = 4
    sets = {**TINY, "alpha": -1.0, "epochs": epochs, "robust": "augmix", "batch_size": 8, "lr": 0.02}
    cmd = [sys.executable, "-m", "selectivity.cli", "train", "--model", "resnet20", "--data", str(tiny_data)]
    cmd += ["--quiet", "--out", str(tmp_path / "killed")]
    cmd += [x for k, v in sets.items() if k not in ("epochs",) for x in ("--set", f"{k}={v}")]
    cmd += ["--epochs", str(epochs)]
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.time() < deadline, "the first epoch did not end"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # in the next epoch's steps (or its validation)
    proc.wait(timeout=30)
    done_before = len(read_jsonl(metrics))
    assert done_before < epochs
    cfg = make_config(None, {**sets, "model": "resnet20"})
    train_run(cfg, tmp_path / "killed", data=tiny_data, progress=False, log=quiet)
    train_run(cfg, tmp_path / "whole", data=tiny_data, progress=False, log=quiet)
    assert _rows(tmp_path / "killed") == _rows(tmp_path / "whole")
    assert _model_bytes(tmp_path / "killed") == _model_bytes(tmp_path / "whole")
    assert "resumed_with" in read_json(tmp_path / "killed" / "meta.json")


# --------------------------------------------------------------------------- fused groups
def _toy_batches(seed: int, steps: int, bs: int = 6):
    g = torch.Generator().manual_seed(99)
    from selectivity.data import ImageDataset

    ds = ImageDataset(
        torch.randint(0, 256, (36, 3, 8, 8), generator=g, dtype=torch.uint8),
        torch.randint(0, 10, (36,), generator=g),
        [f"c{i}" for i in range(10)],
    )
    loader = BatchLoader(ds, bs, shuffle=True, augment=True, seed=seed, drop_last=True, mean=MEAN, std=STD)
    out = []
    while len(out) < steps:
        out += [(x.double(), y) for x, y in loader]
    return out[:steps]


MEAN, STD = (0.5, 0.45, 0.4), (0.25, 0.25, 0.2)


@pytest.mark.parametrize("method", METHODS)
def test_fused_loop_group_trains_each_run_as_alone_float64(method):
    seeds, alphas, steps = [0, 1], [-1.0, 2.0], 3
    hp = dict(lr=0.05, momentum=0.9, weight_decay=5e-4)
    cfgs = [
        make_config(None, {"robust": method, "seed": s, "alpha": a, "adv_steps": 2})
        for s, a in zip(seeds, alphas)
    ]
    dev = torch.device("cpu")
    robust = [robust_training(c, MEAN, STD, dev, dtype=torch.float64) for c in cfgs]
    models = []
    for s in seeds:
        torch.manual_seed(s)
        models.append(CifarResNet(depth=8, num_classes=10).double())
    per_run = [_toy_batches(s, steps) for s in seeds]
    group = FusedRuns(models, alphas, 10, robust=robust, **hp)
    assert group.backend == "loop"
    for t in range(steps):
        x = torch.stack([per_run[r][t][0] for r in range(2)])
        y = torch.stack([per_run[r][t][1] for r in range(2)])
        group.step(x, y, key=(0, t))
    for r in range(2):
        model = copy.deepcopy(models[r]).train()
        opt = torch.optim.SGD(model.parameters(), **hp)
        with SelectivityRegularizer(model, alphas[r], 10, check_labels=False) as reg:
            for t, (x, y) in enumerate(per_run[r]):
                train_step(model, opt, reg, x, y, cfgs[r], dev, robust=robust[r], key=(0, t))
        for k, v in model.state_dict().items():
            a = group.state_dict(r)[k]
            if v.dtype.is_floating_point:
                assert (a - v).abs().max() <= 1e-9 * v.abs().max().clamp(min=1e-12), k
            else:
                assert torch.equal(a, v), k
    assert (group.state_dict(0)["conv1.weight"] - group.state_dict(1)["conv1.weight"]).abs().max() > 1e-3


def test_only_the_loop_backend_trains_robust_groups(tiny_data, tmp_path):
    m = CifarResNet(depth=8, num_classes=10)
    assert pick_backend("auto", m, "cuda", robust=True) == "loop"
    with pytest.raises(ValueError, match="backend 'grouped' cannot train with robust training"):
        pick_backend("grouped", m, "cpu", robust=True)
    cfgs = [tiny_cfg(robust="noise_augment", seed=s, epochs=1) for s in (0, 1)]
    dirs = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(ValueError, match="backend 'vmap' cannot train robust='noise_augment' runs"):
        train_group(cfgs, dirs, data=tiny_data, progress=False, log=quiet, backend="vmap")
    assert not dirs[0].exists()  # refused before anything was written
    res = train_group(cfgs, dirs, data=tiny_data, progress=False, log=quiet)
    assert [r["status"] for r in res] == ["completed", "completed"]
    assert read_json(dirs[0] / "meta.json")["fused_backend"] == "loop"
    # the group's runs are the single runs
    single = train_run(cfgs[1], tmp_path / "single", data=tiny_data, progress=False, log=quiet)
    assert abs(single["mean_selectivity"] - res[1]["mean_selectivity"]) < 1e-4


# --------------------------------------------------------------------------- no read-backs
@pytest.mark.parametrize("method", ["adversarial", "noise_augment"])
def test_robust_training_step_reads_nothing_back(monkeypatch, method):
    """The attack and the noise read no tensor value back to the host (AugMix's draws,
    made on the CPU, do: its Gamma sampler loops until every draw is accepted)."""
    torch.manual_seed(0)
    model = CifarResNet(depth=8, num_classes=10).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    reg = SelectivityRegularizer(model, alpha=-1.0, num_classes=10, check_labels=False)
    cfg = make_config(None, {"robust": method, "alpha": -1.0, "adv_steps": 2})
    robust = robust_training(cfg, MEAN, STD, torch.device("cpu"))
    batches = [(x.float(), y) for x, y in _toy_batches(0, 3)]
    calls: list[str] = []
    with reg:
        train_step(
            model, opt, reg, *batches[0], cfg, torch.device("cpu"), robust=robust, key=(0, 0)
        )  # warm-up
        for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy"):
            original = getattr(torch.Tensor, name)

            def counted(self, *a, _name=name, _orig=original, **k):
                calls.append(_name)
                return _orig(self, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, counted)
        for t, (x, y) in enumerate(batches[1:], start=1):
            loss, *_ = train_step(model, opt, reg, x, y, cfg, torch.device("cpu"), robust=robust, key=(0, t))
        monkeypatch.undo()
    assert calls == [] and torch.isfinite(loss)
