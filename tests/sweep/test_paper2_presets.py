"""Paper 2's sweep presets end to end on tiny data: training, the robustness step, the
geometry step and the summary, as ``selectivity sweep`` runs them
(:func:`selectivity.report.run_experiment`).

Each preset keeps its models, dataset and steps; the tiny overrides shrink the grid (one
alpha, one seed), the training (one epoch on a few images) and the steps' settings (one
corruption, one attack, one layer) so that ResNet18 and ResNet50 at 64 pixels take seconds.
``paper2-tiny`` reads its corruptions from a Tiny ImageNet-C directory (``--corrupted``).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from helpers import N_TEST, TINY_WNIDS, write_fake_tiny, write_tiny_c
from selectivity.data import load_tiny_imagenet
from selectivity.evaluate.geometry import GEOMETRY_TABLES, geometry_results
from selectivity.evaluate.robustness import ROBUSTNESS_TABLES, robustness_results
from selectivity.report import run_experiment
from selectivity.sweep import PAPER_ALPHAS, get_sweep_preset, list_sweep_presets, open_store

pytestmark = pytest.mark.slow  # trains a ResNet18 and a ResNet50 at 64 pixels


def quiet(_msg: str) -> None:
    pass


def tiny_steps(spec, layer_ratio: float, images: int | None = None, geometry_images: int = 80) -> None:
    """The preset's step settings, shrunk: one corruption, PGD-2 at 8/255, one geometry layer."""
    spec.robustness = {
        **spec.robustness,
        **({"n_images": images} if images else {}),
        "corruptions": ["contrast"],
        "severities": [1],
        "attacks": ["pgd"],
        "epsilons": [8 / 255],
        "pgd_steps": 2,
    }
    spec.geometry = {
        **spec.geometry,
        "n_images": geometry_images,
        "layers": ["act1"],
        "min_ratio": layer_ratio,  # the stem's 64 channels from the few test images there are (0: any)
        "corruptions": ["contrast"],
        "severities": [1],
        "attacks": ["pgd"],
        "epsilons": [4 / 255],
        "pgd_steps": 1,
        "match_l2": False,
        "gradient_images": 0,
    }


def test_presets_say_what_they_are():
    presets = list_sweep_presets()
    assert {"paper2-cifar", "paper2-tiny", "robust-training"} <= set(presets)
    cifar, tiny = get_sweep_preset("paper2-cifar"), get_sweep_preset("paper2-tiny")
    assert cifar.models == ["resnet20"] and cifar.alphas == PAPER_ALPHAS and len(cifar.seeds) == 20
    assert tiny.models == ["resnet18", "resnet50"] and tiny.alphas == PAPER_ALPHAS
    assert cifar.robustness is not None and cifar.geometry is not None
    assert tiny.robustness is not None and tiny.geometry is not None
    cfg = tiny.runs()[0].config  # the Tiny ImageNet protocol, resolved into every run
    assert (cfg.dataset, cfg.val_per_class, cfg.val_split) == ("tiny-imagenet", 50, "per-run")
    assert get_sweep_preset("paper2-cifar").runs()[0].config.val_size == 5000


def test_paper2_cifar_runs_end_to_end(tiny_data, tmp_path):
    spec = get_sweep_preset("paper2-cifar")
    spec.alphas, spec.seeds = [-1.0, 1.0], [0]
    spec.overrides = dict(epochs=1, batch_size=32, val_size=30, top_n=3, num_threads=1, eval_batch_size=64)
    tiny_steps(spec, layer_ratio=1.0)
    out = tmp_path / "sweep"
    res = run_experiment(spec, out, data=tiny_data, progress=False, log=quiet)
    df = res.runs
    assert (df.status == "completed").all() and len(df) == 2
    assert res.robustness is not None and res.geometry is not None and not res.geometry.empty
    for run in df.run_id:
        (rob_path,) = robustness_results(out / "runs" / run).values()
        rob = json.loads(rob_path.read_text())
        assert rob["settings"]["n_images"] is None and len(rob["corruptions"]) == 1
        (geo_path,) = geometry_results(out / "runs" / run).values()
        geo = json.loads(geo_path.read_text())
        assert geo["settings"]["n_images"] == 80 and geo["rows"]
    with open_store(out, analyses=[ROBUSTNESS_TABLES, GEOMETRY_TABLES]) as store:
        assert len(store.frame(ROBUSTNESS_TABLES, "summary")) == 2
        assert not store.frame(GEOMETRY_TABLES, "rows").empty
    assert (out / "summary.txt").exists()
    assert N_TEST == 80  # the geometry used the whole test split of the tiny data


def test_paper2_tiny_runs_end_to_end_with_tiny_imagenet_c(tmp_path):
    # ResNet18 and ResNet50 keep 64x64 maps in their first stage (about 2 and 4 GFLOPs per
    # image): four images each for training, validation, test, attacks and geometry.
    tree = write_fake_tiny(tmp_path / "data", n_train=3)
    test = load_tiny_imagenet(tree, val_size=4, cache=False).test
    # Tiny ImageNet-C cells of the whole test split: its images, brightened.
    cells = {("contrast", 1): (test.images.to(torch.int16) // 2 + 64).to(torch.uint8)}
    tiny_c = write_tiny_c(tmp_path / "Tiny-ImageNet-C", test.images, test.labels, cells)

    spec = get_sweep_preset("paper2-tiny")
    spec.alphas, spec.seeds = [0.0], [0]
    spec.overrides = {
        **spec.overrides,
        "epochs": 1,
        "batch_size": 4,
        "val_per_class": 2,  # the protocol's 50 per class is checked in the training tests
        "top_n": 2,
        "num_threads": 1,
        "eval_batch_size": 16,
        "eval_subset": 4,
    }
    tiny_steps(spec, layer_ratio=0.0, images=4, geometry_images=4)
    out = tmp_path / "sweep"
    res = run_experiment(spec, out, data=tree, corrupted=tiny_c, summary=False, progress=False, log=quiet)
    df = res.runs
    assert sorted(df.model) == ["resnet18", "resnet50"] and (df.status == "completed").all()
    assert res.robustness is not None and res.geometry is not None and not res.geometry.empty
    for run in df.run_id:
        cfg = json.loads((out / "runs" / run / "config.json").read_text())
        assert (cfg["dataset"], cfg["val_split"]) == ("tiny-imagenet", "per-run")
        (rob_path,) = robustness_results(out / "runs" / run).values()
        rob = json.loads(rob_path.read_text())
        assert rob["settings"]["source"] == "tiny-imagenet-c directory"
        assert rob["n_images"] == len(TINY_WNIDS) and len(rob["corruptions"]) == 1  # one image per class
    with open_store(out, analyses=[ROBUSTNESS_TABLES]) as store:
        summary = store.frame(ROBUSTNESS_TABLES, "summary")
    assert isinstance(summary, pd.DataFrame) and len(summary) == 2
