"""Training runs: run directories, resume after a real kill, divergence, config, real data."""

import json
import signal
import subprocess
import sys
import time

import pytest

from selectivity.run.config import ConfigError, TrainConfig, list_presets, make_config
from selectivity.run.files import read_json, read_jsonl
from selectivity.training.single import load_model_from, train_run

# A small real-data run: seconds per epoch on 2 CPU cores.
TINY = dict(
    model="resnet20",
    epochs=3,
    batch_size=64,
    train_subset=256,
    eval_subset=200,
    val_size=500,
    top_n=20,
    num_threads=1,
)


def _numbers(result: dict) -> dict:
    keys = (
        "status",
        "test_accuracy",
        "best_val_accuracy",
        "best_epoch",
        "mean_selectivity",
        "mean_precision",
        "dead_fraction",
        "layer_selectivity",
        "layer_precision",
    )
    return {k: result[k] for k in keys}


# --------------------------------------------------------------------------- config
def test_paper_preset_is_the_protocol():
    cfg = make_config("paper", {"model": "resnet20"})
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay) == (200, 256, 0.1, 0.9, 1e-4)
    assert cfg.milestone_epochs() == [100, 150]
    assert cfg.lr_at(99) == pytest.approx(0.1) and cfg.lr_at(100) == pytest.approx(0.01)
    assert cfg.lr_at(150) == pytest.approx(0.001)
    assert make_config("paper", {"model": "vgg16"}).lr == 0.01
    assert not cfg.amp and cfg.val_size == 5000
    assert {"paper", "cpu-short", "smoke"} <= set(list_presets())


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match=r"unknown config key.*'weight_decy'.*did you mean weight_decay"):
        make_config(None, {"weight_decy": 0.1})
    with pytest.raises(ConfigError, match="'epochs'"):
        make_config(None, {"epochs": "ten"})
    with pytest.raises(ConfigError, match="'epochs'.*>= 1"):
        make_config(None, {"epochs": 0})
    with pytest.raises(ConfigError, match="'model'.*known models"):
        make_config(None, {"model": "resnet21"})
    with pytest.raises(ConfigError, match="'alpha'"):
        make_config(None, {"alpha": "nan"})
    with pytest.raises(ConfigError, match="unknown preset"):
        make_config("fast", {})
    cfg = make_config(
        None, {"alpha": "-1.5", "augment": "false", "train_subset": "none", "lr_milestones": "0.3,0.6"}
    )
    assert cfg.alpha == -1.5 and cfg.augment is False and cfg.train_subset is None
    assert cfg.lr_milestones == [0.3, 0.6]
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


# --------------------------------------------------------------------------- runs
def test_run_directory_describes_itself(cifar_data, tmp_path):
    cfg = make_config(None, {**TINY, "epochs": 2, "alpha": -1.0})
    res = train_run(cfg, tmp_path / "run", data=cifar_data, progress=False, log=lambda m: None)
    run = tmp_path / "run"
    assert read_json(run / "config.json") == json.loads(json.dumps(cfg.to_dict()))
    meta = read_json(run / "meta.json")
    assert meta["seed"] == 0 and meta["package_version"] and meta["torch_version"]
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert {"train_loss", "train_accuracy", "val_accuracy", "val_selectivity"} <= set(r)
    on_disk = read_json(run / "result.json")
    assert on_disk["status"] == "completed" and on_disk == json.loads(json.dumps(res))
    assert on_disk["best_val_accuracy"] == max(r["val_accuracy"] for r in rows)
    assert len(on_disk["layer_selectivity"]) == 19 == len(on_disk["layer_dead_fraction"])
    assert 0 < on_disk["mean_selectivity"] < 1 and 0 <= on_disk["test_accuracy"] <= 1
    assert on_disk["test_samples"] == 200
    # the best checkpoint rebuilds the model, loaded with weights_only=True
    model, cfg2, ckpt = load_model_from(run)
    assert cfg2 == cfg and ckpt["epoch"] == on_disk["best_epoch"]
    # started again: nothing to do, and it says so
    said = []
    again = train_run(cfg, run, data=cifar_data, progress=False, log=said.append)
    assert again == on_disk and "already finished" in said[0]
    # a different config in the same directory is refused
    with pytest.raises(ValueError, match="different config"):
        train_run(cfg.replace(alpha=1.0), run, data=cifar_data, progress=False, log=lambda m: None)


def test_kill_and_resume_gives_the_same_result(cifar_data, tmp_path):
    """SIGKILL a real `selectivity train` process mid-run, start it again, compare."""
    args = [
        "--preset",
        "smoke",
        "--model",
        "resnet20",
        "--alpha",
        "-2",
        "--seed",
        "3",
        "--epochs",
        "4",
        "--set",
        "train_subset=384",
        "--set",
        "eval_subset=200",
        "--set",
        "batch_size=64",
        "--set",
        "top_n=20",
        "--set",
        "num_threads=1",
        "--data",
        str(cifar_data),
        "--quiet",
    ]
    cmd = [sys.executable, "-m", "selectivity.cli", "train", *args]
    ref = tmp_path / "uninterrupted"
    subprocess.run(cmd + ["--out", str(ref)], check=True, capture_output=True, timeout=600)

    run = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # kill somewhere inside epoch 2 or 3: after at least one epoch was checkpointed
    while len(read_jsonl(run / "metrics.jsonl")) < 1 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.7)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    done_before = len(read_jsonl(run / "metrics.jsonl"))
    assert not (run / "result.json").exists() and 1 <= done_before < 4

    out = subprocess.run(cmd + ["--out", str(run)], check=True, capture_output=True, text=True, timeout=600)
    assert json.loads(out.stdout)["status"] == "completed"
    a, b = read_json(ref / "result.json"), read_json(run / "result.json")
    assert _numbers(a) == _numbers(b)  # identical numbers on CPU for the same seed
    rows_a, rows_b = read_jsonl(ref / "metrics.jsonl"), read_jsonl(run / "metrics.jsonl")

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert strip(rows_a) == strip(rows_b)


def test_in_process_resume_matches(cifar_data, tmp_path):
    cfg = make_config(None, {**TINY, "alpha": 1.0, "seed": 1})
    full = train_run(cfg, tmp_path / "a", data=cifar_data, progress=False, log=lambda m: None)
    part = train_run(
        cfg, tmp_path / "b", data=cifar_data, progress=False, log=lambda m: None, stop_after_epochs=1
    )
    assert part["status"] == "interrupted"
    resumed = train_run(cfg, tmp_path / "b", data=cifar_data, progress=False, log=lambda m: None)
    assert _numbers(full) == _numbers(resumed)


def test_diverging_run_is_recorded_not_a_crash(cifar_data, tmp_path):
    cfg = make_config(None, {**TINY, "epochs": 2, "alpha": 1e6, "lr": 1e10})
    said = []
    res = train_run(cfg, tmp_path / "div", data=cifar_data, progress=False, log=said.append)
    assert res["status"] == "diverged"
    on_disk = read_json(tmp_path / "div" / "result.json")
    assert on_disk["status"] == "diverged" and "loss became" in on_disk["message"]
    assert on_disk["test_accuracy"] is None
    assert any("diverged" in m for m in said)
    # started again, it stays diverged and does nothing
    assert (
        train_run(cfg, tmp_path / "div", data=cifar_data, progress=False, log=lambda m: None)["status"]
        == "diverged"
    )


@pytest.mark.slow
def test_real_data_alpha_moves_test_selectivity_both_ways(cifar_data, tmp_path):
    """A few thousand CIFAR-10 images, short ResNet20 runs, fixed seeds.

    This can fail: it asserts the direction of the regulariser's effect on the mean
    selectivity of the *test set*, measured after training.
    """
    base = dict(
        model="resnet20", epochs=2, batch_size=128, train_subset=3000, eval_subset=1000, top_n=100, seed=0
    )
    si = {}
    for alpha in (-2.0, 0.0, 2.0):
        cfg = make_config(None, {**base, "alpha": alpha})
        res = train_run(cfg, tmp_path / f"a{alpha}", data=cifar_data, progress=False, log=lambda m: None)
        assert res["status"] == "completed"
        si[alpha] = res["mean_selectivity"]
    assert si[-2.0] < si[0.0] < si[2.0], si


def _fake_tiny_imagenet(root, wnids=("n02", "n01", "n03"), per_class=12, val_per_class=4):
    """A small tree in Tiny ImageNet's released layout (64x64 JPEGs, wnids.txt order)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for k, w in enumerate(wnids):
        d = root / "train" / w / "images"
        d.mkdir(parents=True)
        for j in range(per_class):
            # class-dependent brightness so the classes are learnable at all
            img = np.clip(rng.normal(60 + 60 * k, 30, (64, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{w}_{j}.JPEG", quality=95)
    lines = []
    for j in range(val_per_class * len(wnids)):
        k = j % len(wnids)
        img = np.clip(rng.normal(60 + 60 * k, 30, (64, 64, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "val" / "images" / f"val_{j}.JPEG", quality=95)
        lines.append(f"val_{j}.JPEG\t{wnids[k]}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def test_resnet18_trains_on_tiny_imagenet_layout(tmp_path):
    from click.testing import CliRunner

    from selectivity.cli import main

    root = _fake_tiny_imagenet(tmp_path / "tiny-imagenet-200")
    out = tmp_path / "run"
    r = CliRunner().invoke(
        main,
        [
            "train",
            "--model",
            "resnet18",
            "--dataset",
            "tiny-imagenet",
            "--data",
            str(root),
            "--alpha",
            "-1",
            "--epochs",
            "2",
            "--out",
            str(out),
            "--quiet",
            "--set",
            "val_size=6",
            "--set",
            "batch_size=10",
            "--set",
            "top_n=4",
            "--set",
            "num_threads=1",
            "--set",
            "eval_batch_size=20",
        ],
    )
    assert r.exit_code == 0, r.output
    res = read_json(out / "result.json")
    assert res["status"] == "completed" and res["test_samples"] == 12
    assert len(res["layer_selectivity"]) == 17  # stem + 8 basic blocks x 2
    model, cfg, ckpt = load_model_from(out)
    assert (
        cfg.dataset == "tiny-imagenet"
        and ckpt["num_classes"] == 3
        and ckpt["classes"] == ["n02", "n01", "n03"]
    )
