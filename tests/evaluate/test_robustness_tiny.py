"""Paper 2 robustness of Tiny ImageNet runs: generated Tiny ImageNet-C cells and a Tiny ImageNet-C directory.

A fake Tiny ImageNet tree (4 classes, wnids.txt deliberately not sorted, 64x64 images, 3
labelled val images per class = the test split) and one ResNet18 run trained on it for
one epoch, evaluated once with generated corruptions, once per module; every test works on
a copy of the sweep (~20 s of CPU in all, most of it the ResNet18 at 64 pixels).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from helpers import TINY_WNIDS as WNIDS
from helpers import write_fake_tiny, write_tiny_c
from selectivity.cli import main
from selectivity.data import DatasetNotFoundError, find_corrupted, load_tiny_imagenet
from selectivity.evaluate.cca import select_images
from selectivity.evaluate.robustness import (
    PARTIAL_NAME,
    ROBUSTNESS_TABLES,
    RobustnessSettings,
    corrupted_cell,
    params_for_dataset,
    robustness_results,
)
from selectivity.run.files import read_json
from selectivity.sweep import SweepSpec, open_store, run_sweep

N_IMAGES = 8  # evaluated: a stratified subset, 2 per class
CORRUPTIONS = ("contrast", "brightness")  # deterministic per image: same bytes in any batch


def sha1(images: torch.Tensor) -> str:
    return hashlib.sha1(images.contiguous().numpy().tobytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return write_fake_tiny(tmp_path_factory.mktemp("tinyin"))


@pytest.fixture(scope="module")
def test_split(tiny_data):
    s = load_tiny_imagenet(tiny_data, val_size=4, split_seed=0)
    assert s.classes == WNIDS and s.test.images.shape == (12, 3, 64, 64)
    assert s.test.labels.tolist() == sorted(s.test.labels.tolist())  # grouped by class
    return s.test


@pytest.fixture(scope="module")
def evaluated(tiny_data, tmp_path_factory) -> Path:
    """A finished one-run ResNet18 sweep on the fake Tiny ImageNet, evaluated on generated cells."""
    out = tmp_path_factory.mktemp("robtiny") / "sweep"
    overrides = dict(
        dataset="tiny-imagenet", epochs=1, batch_size=16, val_size=4, top_n=2, eval_batch_size=64
    )
    spec = SweepSpec(models=["resnet18"], alphas=[0.0], seeds=[0], preset="paper", overrides=overrides)
    df = run_sweep(spec, out, data=str(tiny_data), progress=False, summarize=False, log=lambda _m: None)
    assert (df.status == "completed").all() and len(df) == 1
    r = _robustness(out, tiny_data, "--corruptions", ",".join(CORRUPTIONS))
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture
def sweep(evaluated, tmp_path) -> Path:
    dest = tmp_path / "sweep"
    shutil.copytree(evaluated, dest)
    return dest


def _run_dir(sweep: Path) -> Path:
    (run,) = [p for p in (sweep / "runs").iterdir() if p.is_dir()]
    return run


def _result(sweep: Path) -> Path:
    """The run's only robustness result (one settings evaluated)."""
    (path,) = robustness_results(_run_dir(sweep)).values()
    return path


def _robustness(sweep: Path, tiny_data: Path, *args: str):
    base = ["robustness", str(sweep), "--quiet", "--data", str(tiny_data), "--images", str(N_IMAGES)]
    return CliRunner().invoke(main, [*base, "--severities", "1", "--attacks", "none", *args])


def test_settings_choose_parameters_by_dataset():
    assert (
        params_for_dataset("tiny-imagenet") == "tinyimagenet" and params_for_dataset("cifar10") == "cifar10"
    )
    auto = RobustnessSettings(corruptions=("fog",), attacks=())
    assert auto.params == "auto"
    assert auto.params_for("tiny-imagenet") == "tinyimagenet" and auto.params_for("cifar10") == "cifar10"
    fixed = RobustnessSettings(corruptions=("fog",), attacks=(), params="cifar10")
    assert fixed.params_for("tiny-imagenet") == "cifar10"  # an explicit choice is kept
    # "auto" reuses a result stored with the set it resolves to, and only that one
    named = RobustnessSettings(corruptions=("fog",), attacks=(), params="tinyimagenet").compared()
    assert auto.matches(auto.compared(), "tinyimagenet") and auto.matches(named, "tinyimagenet")
    assert not auto.matches(named, "cifar10") and not fixed.matches(auto.compared(), "cifar10")
    # the older name of `corrupted`
    assert RobustnessSettings(cifar10_c="/x", attacks=()).corrupted == "/x"
    with pytest.raises(ValueError, match="different directories"):
        RobustnessSettings(cifar10_c="/x", corrupted="/y")
    with pytest.raises(ValueError, match="params must be one of auto, cifar10, tinyimagenet"):
        RobustnessSettings(params="imagenet")


def test_find_corrupted_tells_the_formats_apart(tmp_path):
    c10 = tmp_path / "c10c"
    c10.mkdir()
    np.save(c10 / "labels.npy", np.zeros(5, np.uint8))
    np.save(c10 / "fog.npy", np.zeros((5, 32, 32, 3), np.uint8))
    (tmp_path / "tic" / "Tiny-ImageNet-C" / "fog" / "1" / "n01").mkdir(parents=True)
    assert find_corrupted(c10) == ("cifar10-c", c10)
    assert find_corrupted(tmp_path / "tic") == ("tiny-imagenet-c", tmp_path / "tic" / "Tiny-ImageNet-C")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="holds neither format") as e:
        find_corrupted(tmp_path / "empty")
    assert "\n" not in str(e.value)


def test_generated_cells_use_tiny_imagenet_parameters(sweep, test_split):
    res = read_json(_result(sweep))
    assert res["settings"]["params"] == "auto" and res["corruption_params"] == "tinyimagenet"
    assert res["n_images"] == N_IMAGES and len(res["corruptions"]) == len(CORRUPTIONS)
    idx = select_images(test_split.labels.numpy(), N_IMAGES, 0)
    clean = test_split.images[torch.as_tensor(idx)]
    for name in CORRUPTIONS:
        want = sha1(corrupted_cell(clean, name, 1, params="tinyimagenet"))
        assert res["cell_sha1"][f"{name}/1"] == want
        # the CIFAR-10-C parameters would have given other images (contrast .75 vs .4, ...)
        assert sha1(corrupted_cell(clean, name, 1, params="cifar10")) != want
    for c in res["corruptions"]:
        assert c["accuracy"] * N_IMAGES == pytest.approx(round(c["accuracy"] * N_IMAGES))
    with open_store(sweep, analyses=[ROBUSTNESS_TABLES]) as store:
        summary = store.frame(ROBUSTNESS_TABLES, "summary")
    assert len(summary) == 1 and summary["model"].iloc[0] == "resnet18"
    assert summary["mean_corruption_accuracy"].iloc[0] == pytest.approx(
        np.mean([c["accuracy"] for c in res["corruptions"]])
    )


def test_tiny_imagenet_c_directory_matches_the_generated_cells(sweep, tiny_data, test_split, tmp_path):
    """The same corrupted images read from a Tiny ImageNet-C tree give byte-identical cells.

    The tree holds the whole test split's cells (generated here image by image as the
    evaluation generates them), one folder per wnid; wnids.txt is not in folder order, so
    the cells only match if folders are mapped to the run's labels by wnid. A third cell
    is all black: every image is then the same, so the accuracy is one class's share (1/4).
    """
    generated = read_json(_result(sweep))
    cells = {(n, 1): corrupted_cell(test_split.images, n, 1, params="tinyimagenet") for n in CORRUPTIONS}
    cells[("fog", 1)] = torch.zeros_like(test_split.images)
    tic = write_tiny_c(tmp_path / "Tiny-ImageNet-C", test_split.images, test_split.labels, cells)
    _result(sweep).unlink()
    r = _robustness(
        sweep, tiny_data, "--corruptions", ",".join((*CORRUPTIONS, "fog")), "--corrupted", str(tic)
    )
    assert r.exit_code == 0, r.output
    res = read_json(_result(sweep))
    assert res["settings"]["source"] == "tiny-imagenet-c directory" and res["corruption_params"] is None
    for name in CORRUPTIONS:
        assert res["cell_sha1"][f"{name}/1"] == generated["cell_sha1"][f"{name}/1"]
    acc = {c["corruption"]: c["accuracy"] for c in res["corruptions"]}
    assert acc == {c["corruption"]: c["accuracy"] for c in generated["corruptions"]} | {"fog": 0.25}
    assert res["cell_sha1"]["fog/1"] == sha1(torch.zeros((N_IMAGES, 3, 64, 64), dtype=torch.uint8))
    assert res["clean_accuracy"] == generated["clean_accuracy"]
    with open_store(sweep, analyses=[ROBUSTNESS_TABLES]) as store:
        rows = store.frame(ROBUSTNESS_TABLES, "corruptions")
    assert dict(zip(rows["corruption"], rows["accuracy"])) == acc


def _one_line_error(r, expected: str) -> None:
    out = r.output.strip()
    assert r.exit_code == 1 and len(out.splitlines()) == 1, out
    assert expected in out, out


def test_directories_that_do_not_fit_the_run(sweep, tiny_data, test_split, tmp_path):
    black = {("fog", 1): torch.zeros_like(test_split.images)}
    # a class folder that is not one of the run's wnids
    extra = write_tiny_c(tmp_path / "extra", test_split.images, test_split.labels, black)
    (extra / "fog" / "1" / "n9999").mkdir()
    shutil.copy(next((extra / "fog" / "1" / "n0100").iterdir()), extra / "fog" / "1" / "n9999" / "x.png")
    r = _robustness(sweep, tiny_data, "--corruptions", "fog", "--corrupted", str(extra))
    _one_line_error(r, "class directories not in classes: n9999")
    assert "expected class directories named by the run's classes (n0300, n0100, n0400, ...)" in r.output
    # one image of a class missing: not the whole test split
    short = write_tiny_c(tmp_path / "short", test_split.images, test_split.labels, black)
    next((short / "fog" / "1" / "n0400").iterdir()).unlink()
    r = _robustness(sweep, tiny_data, "--corruptions", "fog", "--corrupted", str(short))
    _one_line_error(r, "holds 2 images of class n0400 and 11 in all: expected the whole test split, 3")
    # a corruption the directory lacks (found before any run is evaluated)
    full = write_tiny_c(tmp_path / "full", test_split.images, test_split.labels, black)
    r = _robustness(sweep, tiny_data, "--corruptions", "fog,snow", "--corrupted", str(full))
    _one_line_error(r, "no snow/1/ under")
    assert "with a corruption among fog" in r.output
    # a CIFAR-10-C directory (32 pixels) given to a 64-pixel run
    c10 = tmp_path / "c10c"
    c10.mkdir()
    np.save(c10 / "labels.npy", np.zeros(5 * 12, np.uint8))
    np.save(c10 / "fog.npy", np.zeros((5 * 12, 32, 32, 3), np.uint8))
    r = _robustness(sweep, tiny_data, "--corruptions", "fog", "--corrupted", str(c10))
    _one_line_error(r, "holds images of shape (3, 32, 32): expected (3, 64, 64), the shape of the run's")
    # the failed attempts evaluated nothing: the earlier result stands, no partial file
    assert read_json(_result(sweep))["settings"]["source"] == "generated (auto, seed 0)"
    assert not [*_run_dir(sweep).glob(PARTIAL_NAME), *_run_dir(sweep).glob("robustness/*.partial.json")]
