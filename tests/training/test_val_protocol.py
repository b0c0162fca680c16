"""The validation split of each dataset's protocol: CIFAR-10's fixed 45k/5k split, unchanged,
and Tiny ImageNet's 50 images per class drawn from the training set afresh for each run.

Runs train a ResNet20 (adaptive pooling: any image size) on a fake Tiny ImageNet tree of
random 64x64 JPEGs, 52 training images per class, so 50 per class go to validation.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from helpers import TINY_WNIDS, write_fake_tiny
from selectivity.data import stratified_split
from selectivity.run import checkpoint
from selectivity.run.config import ConfigError, TrainConfig, complete_config, make_config
from selectivity.run.files import RunFiles, read_json, read_jsonl
from selectivity.training.group import check_fusable, fuse_key
from selectivity.training.single import build_run, train_run

PER_CLASS = 52  # training images per class of the fake tree: 50 validation + 2 training


def quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def tiny_in(tmp_path_factory):
    return write_fake_tiny(tmp_path_factory.mktemp("tinyin"), n_train=PER_CLASS)


def tiny_cfg(**kw) -> TrainConfig:
    base = dict(
        model="resnet20",
        dataset="tiny-imagenet",
        epochs=2,
        batch_size=8,
        top_n=2,
        num_threads=1,
        eval_batch_size=100,
    )
    return make_config(None, {**base, **kw})


def digest(images: torch.Tensor) -> str:
    return hashlib.sha1(images.contiguous().numpy().tobytes()).hexdigest()


def val_split(cfg: TrainConfig, tiny_in, tmp_path) -> torch.Tensor:
    """The validation images a run of ``cfg`` gets, read afresh (the per-process cache emptied)."""
    checkpoint.clear_data_cache()
    run = build_run(cfg, RunFiles(tmp_path / "probe"), tiny_in, quiet)
    return run.splits.val.images


def test_dataset_protocols_resolve_into_the_config():
    cifar = make_config("paper", {})
    assert (cifar.val_size, cifar.val_per_class, cifar.val_split, cifar.run_split_seed()) == (
        5000,
        None,
        "fixed",
        0,
    )
    tiny = make_config("paper", {"model": "resnet18", "dataset": "tiny-imagenet"})
    assert (tiny.val_size, tiny.val_per_class, tiny.val_split) == (None, 50, "per-run")
    assert tiny.to_dict()["val_per_class"] == 50  # config.json holds the resolved values
    # Given values win over the protocol; both sizes at once are refused.
    assert make_config(None, {"dataset": "tiny-imagenet", "val_size": 30}).val_per_class is None
    assert make_config(None, {"dataset": "tiny-imagenet", "val_split": "fixed"}).run_split_seed() == 0
    with pytest.raises(ConfigError, match="'val_per_class'.*not both"):
        make_config(None, {"val_size": 10, "val_per_class": 2})
    with pytest.raises(ConfigError, match="'val_split'"):
        make_config(None, {"val_split": "sometimes"})
    # Changing the dataset of a config brings the new dataset's protocol along.
    assert cifar.replace(dataset="tiny-imagenet").val_per_class == 50
    assert tiny.replace(dataset="cifar10").val_size == 5000


def test_a_cifar10_config_and_split_are_those_of_before(tmp_path):
    # A config.json written before the protocol fields: the same configuration as today's.
    cfg = make_config("paper", {})
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("val_per_class", "val_split")}
    assert old["val_size"] == 5000 and complete_config(old) == cfg.to_dict()
    assert TrainConfig.from_dict(old) == cfg
    # An old Tiny ImageNet run (val_size given, one fixed split) stays exactly that.
    tiny_old = {**old, "dataset": "tiny-imagenet"}
    assert TrainConfig.from_dict(tiny_old).val_split == "fixed"
    # The split seed is the one every run used: the split of stratified_split(labels, 5000, seed=0).
    labels = np.repeat(np.arange(10), 5000)
    assert cfg.run_split_seed() == 0 and cfg.replace(seed=7).run_split_seed() == 0
    _, val = stratified_split(labels, val_size=cfg.val_size, seed=cfg.run_split_seed())
    np.testing.assert_array_equal(np.bincount(labels[val]), np.full(10, 500))


def test_tiny_imagenet_run_has_50_validation_images_per_class(tiny_in, tmp_path):
    cfg = tiny_cfg()
    out = tmp_path / "run"
    res = train_run(cfg, out, data=tiny_in, progress=False, log=quiet, stop_after_epochs=1)
    assert res["status"] == "interrupted"
    assert read_json(out / "config.json")["val_per_class"] == 50
    meta = read_json(out / "meta.json")
    assert meta["data"]["sizes"]["val"] == 50 * len(TINY_WNIDS)
    assert meta["data"]["sizes"]["train"] == 2 * len(TINY_WNIDS)
    val = checkpoint.load_data(cfg, tiny_in).val
    assert np.bincount(val.labels.numpy()).tolist() == [50] * len(TINY_WNIDS)


def test_per_run_split_differs_between_seeds_and_is_identical_on_resume(tiny_in, tmp_path):
    a, b = tiny_cfg(seed=0), tiny_cfg(seed=1)
    va, vb = val_split(a, tiny_in, tmp_path), val_split(b, tiny_in, tmp_path)
    assert digest(va) != digest(vb)  # each run draws its own split ...
    assert digest(val_split(a, tiny_in, tmp_path)) == digest(va)  # ... the same one every time
    fixed = [val_split(tiny_cfg(seed=s, val_split="fixed"), tiny_in, tmp_path) for s in (0, 1)]
    assert digest(fixed[0]) == digest(fixed[1])  # the fixed split is shared
    # Seeds of per-run splits choose the data, so such runs fuse only across alphas.
    assert fuse_key(a) != fuse_key(b) and fuse_key(a) == fuse_key(a.replace(alpha=1.0))
    with pytest.raises(ValueError, match="differ in 'seed'.*only alpha may differ"):
        check_fusable([a, b])

    # Killed after epoch 1 and resumed with the data read afresh: the same split, the same
    # run (10 validation images per class keep it short; still drawn per run).
    a = tiny_cfg(seed=0, val_per_class=10)
    whole = train_run(a, tmp_path / "whole", data=tiny_in, progress=False, log=quiet)
    part = tmp_path / "part"
    train_run(a, part, data=tiny_in, progress=False, log=quiet, stop_after_epochs=1)
    checkpoint.clear_data_cache()
    resumed = train_run(a, part, data=tiny_in, progress=False, log=quiet)
    meta = read_json(part / "meta.json")
    assert meta["resumed_with"]["data"]["split_seed"] == meta["data"]["split_seed"] == a.run_split_seed()
    rows_whole, rows_part = (
        read_jsonl(tmp_path / "whole" / "metrics.jsonl"),
        read_jsonl(part / "metrics.jsonl"),
    )
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in rows_whole]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in rows_part] == strip
    assert resumed["test_accuracy"] == whole["test_accuracy"]
