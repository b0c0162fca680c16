"""Experiment trackers (``--log``): what a tracker was told is read back from its own files.

Each test trains tiny runs on the session's random CIFAR-10 copy (``tiny_data``; 32
training images in batches of 8, two epochs) with one tracker, then reads the
tracker's records with the tracker's own reader: TensorBoard's ``EventAccumulator``,
an MLflow file store through ``MlflowClient``, and the W&B offline run's transaction
log (``run-<id>.wandb``). The logged numbers must be those of the run's
``metrics.jsonl`` and ``result.json``. A tracker that fails or is missing must cost one
warning line and nothing else.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

import selectivity.training.tracking as tracking
from helpers import TINY
from selectivity.run.config import make_config
from selectivity.run.files import read_json, read_jsonl
from selectivity.training.group import train_group
from selectivity.training.single import train_run

SMALL = {**TINY, "batch_size": 8, "train_subset": 32}


def tiny_cfg(alpha: float = -1.0, seed: int = 0, **kw):
    return make_config(None, {"model": "resnet20", "alpha": alpha, "seed": seed, **SMALL, **kw})


def check_logged(run_dir: Path, epochs: dict[str, dict[int, float]], final: dict[str, float]) -> None:
    """``epochs[metric][epoch]`` and ``final[name]`` equal the run's own files."""
    rows = read_jsonl(run_dir / "metrics.jsonl")
    result = read_json(run_dir / "result.json")
    for key in ("train_loss", "val_accuracy", "val_selectivity", "lr"):
        assert epochs[key] == pytest.approx({r["epoch"]: r[key] for r in rows}, rel=1e-6), key
    assert final["test_accuracy"] == pytest.approx(result["test_accuracy"], rel=1e-6)
    assert final["mean_selectivity"] == pytest.approx(result["mean_selectivity"], rel=1e-6)
    layers = {f"selectivity/{l['layer']}": l["selectivity"] for l in result["layers"]}
    assert len(layers) == 19  # ResNet20's units
    assert {k: final[k] for k in layers} == pytest.approx(layers, rel=1e-6)


def test_tensorboard_event_file_holds_config_epochs_and_result(tmp_path, tiny_data):
    pytest.importorskip("tensorboard", reason="the tensorboard extra: pip install 'selectivity[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "r"
    train_run(tiny_cfg(), run, data=tiny_data, progress=False, log=lambda _m: None, tracker="tensorboard")
    ea = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    scalars = {tag: {e.step: e.value for e in ea.Scalars(tag)} for tag in ea.Tags()["scalars"]}
    result = read_json(run / "result.json")
    final = {k: v[result["epochs_completed"]] for k, v in scalars.items()}
    check_logged(run, scalars, final)
    config_text = ea.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| alpha | -1.0 |" in config_text and "| model | resnet20 |" in config_text
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["alpha"].number_value == -1.0 and start.hparams["status"].string_value == "completed"


def mlflow_store(tmp_path: Path, monkeypatch) -> str:
    pytest.importorskip("mlflow", reason="the mlflow extra: pip install 'selectivity[mlflow]'")
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps file stores on request
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tiny")
    return uri


def test_mlflow_file_store_holds_one_run_per_member_of_a_fused_group(tmp_path, tiny_data, monkeypatch):
    uri = mlflow_store(tmp_path, monkeypatch)
    from mlflow.tracking import MlflowClient

    dirs = [tmp_path / "runs" / "a", tmp_path / "runs" / "b"]
    cfgs = [tiny_cfg(-1.0, 0), tiny_cfg(1.0, 1)]
    results = train_group(cfgs, dirs, data=tiny_data, progress=False, log=lambda _m: None, tracker="mlflow")
    assert [r["status"] for r in results] == ["completed", "completed"]

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert sorted(by_name) == ["a", "b"]  # one tracked run per member run
    for d, cfg in zip(dirs, cfgs):
        r = by_name[d.name]
        assert r.info.status == "FINISHED" and r.data.tags["status"] == "completed"
        assert float(r.data.params["alpha"]) == cfg.alpha and r.data.params["model"] == "resnet20"
        epochs = {
            k: {m.step: m.value for m in client.get_metric_history(r.info.run_id, k)}
            for k in ("train_loss", "val_accuracy", "val_selectivity", "lr")
        }
        check_logged(d, epochs, r.data.metrics)


def test_mlflow_default_store_is_the_sweeps_database_and_a_resumed_run_goes_on(tmp_path, monkeypatch):
    """No training here: the tracker is told by hand what the trainer would tell it."""
    pytest.importorskip("mlflow", reason="the mlflow extra: pip install 'selectivity[mlflow]'")
    pytest.importorskip("sqlalchemy", reason="MLflow's SQLite store comes with the full mlflow package")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    sweep = tmp_path / "mysweep"
    run_dir = sweep / "runs" / "r0"
    run_dir.mkdir(parents=True)

    def no_warning(msg: str) -> None:
        pytest.fail(msg)

    assert tracking.prepare_tracker("mlflow", sweep, log=no_warning) == "mlflow"  # the driver, once
    config = {"alpha": -1.0, "model": "resnet20", "lr_milestones": [0.5, 0.75], "eval_subset": None}
    rows = [
        {"epoch": 1, "lr": 0.1, "train_loss": 2.5, "val_accuracy": 0.25, "train_batch_selectivity": None},
        {"epoch": 2, "lr": 0.1, "train_loss": 2.0, "val_accuracy": 0.375, "train_batch_selectivity": None},
    ]
    first = tracking.open_tracker("mlflow", run_dir, "r0", config, log=no_warning)
    first.log_epoch(rows[0])
    first.close()  # interrupted after epoch 1
    again = tracking.open_tracker("mlflow", run_dir, "r0", config, log=no_warning)  # resumed
    again.log_epoch(rows[1])
    result = {
        "status": "completed",
        "test_accuracy": 0.5,
        "epochs_completed": 2,
        "mean_selectivity": float("nan"),
    }
    again.finish({**result, "layers": [{"layer": "layer1.0.relu1", "selectivity": 0.125}]})
    again.close()

    client = MlflowClient(f"sqlite:///{sweep / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("mysweep").experiment_id])
    assert run.info.run_name == "r0" and run.info.status == "FINISHED"
    assert run.data.params["lr_milestones"] == "[0.5, 0.75]" and run.data.params["eval_subset"] == "null"
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_accuracy")}
    assert history == {1: 0.25, 2: 0.375}
    assert (
        run.data.metrics["test_accuracy"] == 0.5 and run.data.metrics["selectivity/layer1.0.relu1"] == 0.125
    )
    assert "train_batch_selectivity" not in run.data.metrics and "mean_selectivity" not in run.data.metrics


def read_wandb_log(path: Path) -> list:
    """The protobuf records of a W&B transaction log (``run-<id>.wandb``: a LevelDB-style log,
    32 KiB blocks of records with a CRC32, a length and a type: full, first, middle, last)."""
    from wandb.proto import wandb_internal_pb2

    raw = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", raw[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1)
    block, pos, chunks, records = 32768, 7, b"", []
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        crc, n, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        if kind == 0:  # zero padding up to the block's end
            pos += block - pos % block
            continue
        data = raw[pos + 7 : pos + 7 + n]
        assert zlib.crc32(data, zlib.crc32(bytes([kind]))) == crc
        pos += 7 + n
        chunks = data if kind in (1, 2) else chunks + data
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(chunks)
            records.append(rec)
    return records


def test_wandb_offline_run_holds_config_history_and_summary(tmp_path, tiny_data, monkeypatch):
    pytest.importorskip("wandb", reason="the wandb extra: pip install 'selectivity[wandb]'")
    import json

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "r"
    lines: list[str] = []
    train_run(tiny_cfg(), run, data=tiny_data, progress=False, log=lines.append, tracker="wandb")
    assert not [l for l in lines if l.startswith("warning:")]
    import wandb

    wandb.teardown()  # W&B's service process writes the log behind the run's back: wait for it to exit
    (log,) = run.glob("wandb/offline-run-*/run-*.wandb")
    config, epochs, summary = {}, {}, {}
    for rec in read_wandb_log(log):
        kind = rec.WhichOneof("record_type")
        if kind in ("run", "config"):  # the config comes with the run record, or after it
            updates = rec.run.config.update if kind == "run" else rec.config.update
            config.update({u.key: json.loads(u.value_json) for u in updates})
        elif kind == "history":
            items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
            for k, v in items.items():
                epochs.setdefault(k, {})[items["_step"]] = v
        elif kind == "summary":
            summary.update(
                {(u.key or "/".join(u.nested_key)): json.loads(u.value_json) for u in rec.summary.update}
            )
    assert config["alpha"] == -1.0 and config["model"] == "resnet20"
    check_logged(run, epochs, summary)
    assert summary["status"] == "completed"


def test_a_failing_or_missing_tracker_costs_one_line_and_not_the_run(tmp_path, tiny_data, monkeypatch):
    class Broken(tracking.NullTracker):
        def __init__(self, run_dir):
            pass

        def log_epoch(self, row):
            raise ConnectionError("server down")

    monkeypatch.setitem(tracking._IMPLEMENTATIONS, "tensorboard", Broken)
    lines: list[str] = []
    res = train_run(
        tiny_cfg(), tmp_path / "r", data=tiny_data, progress=False, log=lines.append, tracker="tensorboard"
    )
    assert res["status"] == "completed" and res["epochs_completed"] == 2
    warnings = [l for l in lines if l.startswith("warning:")]
    assert warnings == [
        "warning: --log tensorboard failed at epoch 1 (ConnectionError: server down); training goes on without it"
    ]

    # A package that is not installed: said before the first epoch, and the run trains.
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda m: None if m == "wandb" else real(m))
    lines.clear()
    res = train_run(
        tiny_cfg(), tmp_path / "s", data=tiny_data, progress=False, log=lines.append, tracker="wandb"
    )
    assert res["status"] == "completed"
    first_epoch = next(i for i, l in enumerate(lines) if l.startswith("epoch 1/"))
    warn = [i for i, l in enumerate(lines) if "pip install 'selectivity[wandb]'" in l]
    assert len(warn) == 1 and warn[0] < first_epoch
    with pytest.raises(ValueError, match="unknown tracker 'tensorbord'"):
        tracking.missing_tracker_package("tensorbord")


def test_a_sweep_reports_a_missing_tracker_once_before_training(tiny_sweep_copy, tiny_data, monkeypatch):
    from helpers import tiny_spec
    from selectivity.sweep import run_sweep

    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda m: None if m == "wandb" else real(m))
    lines: list[str] = []
    run_sweep(
        tiny_spec(), tiny_sweep_copy, data=str(tiny_data), progress=False, log=lines.append, tracker="wandb"
    )
    assert (
        lines[0]
        == "warning: --log wandb needs wandb: pip install 'selectivity[wandb]'; the sweep runs without it"
    )
    assert sum("wandb" in l for l in lines) == 1


def test_train_command_passes_log_and_keeps_its_warning_when_quiet(tmp_path, tiny_data, monkeypatch):
    from click.testing import CliRunner

    from selectivity.cli import main

    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda m: None if m == "mlflow" else real(m))
    sets = [x for k, v in SMALL.items() for x in ("--set", f"{k}={v}")]
    args = [
        "train",
        "--model",
        "resnet20",
        "--alpha",
        "1",
        "--data",
        str(tiny_data),
        "--out",
        str(tmp_path / "r"),
    ]
    r = CliRunner().invoke(main, [*args, *sets, "--log", "mlflow", "--quiet"])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert (
        lines[0]
        == "warning: --log mlflow needs mlflow: pip install 'selectivity[mlflow]'; training without it"
    )
    assert '"status": "completed"' in lines[-1] and len(lines) == 2
    r = CliRunner().invoke(main, [*args, "--log", "neptune"])
    assert r.exit_code == 2 and "'neptune' is not one of 'tensorboard', 'mlflow', 'wandb'" in r.output
