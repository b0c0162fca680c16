"""Reliability: reruns never reuse results of another config, damaged files never stop a sweep,
user errors end in one line, killed drivers leave no workers behind (issue 9).

Everything runs on a tiny random CIFAR-10 copy written to a temporary directory (150
training images; ``tiny_data`` and the sweep ``tiny_sweep`` trained on it are shared
fixtures in conftest.py), so these tests need no real data.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from helpers import N_TEST, RUN_A, RUN_B, TINY, tiny_spec, write_image_folder, write_tiny_cifar
from selectivity.cli import main
from selectivity.data import CIFAR10_CLASSES
from selectivity.run.config import TrainConfig
from selectivity.run.files import RunFiles, read_json, run_lock, write_json
from selectivity.run.health import inspect_run_dir
from selectivity.sweep import open_store, rebuild_store, run_sweep

TINY_SETS = [x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]
METRICS = ["test_accuracy", "best_val_accuracy", "best_epoch", "mean_selectivity", "mean_precision"]
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _quiet(_msg: str) -> None:
    pass


@pytest.fixture
def sweep_copy(tiny_sweep_copy) -> Path:
    """This test's copy of the shared finished two-run sweep (``tiny_sweep``)."""
    return tiny_sweep_copy


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def assert_clean(r, codes=(0,)) -> None:
    """Ended with one of ``codes``; no traceback; an error is exactly one ``Error:`` line."""
    assert r.exception is None or isinstance(r.exception, SystemExit), (r.exception, r.output)
    assert "Traceback" not in r.output
    assert r.exit_code in codes, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == (0 if r.exit_code == 0 else 1), r.stderr


def sweep_args(out: Path, data: Path, *extra: str) -> list[str]:
    return [
        "sweep",
        "--models",
        "resnet20",
        "--alphas=-1,1",
        "--seeds",
        "1",
        "--out",
        str(out),
        "--data",
        str(data),
        "--executor",
        "inprocess",
        "--no-summary",
        "--quiet",
        *TINY_SETS,
        *extra,
    ]


def snapshot(d: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(d)): p.read_bytes()
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


# --------------------------------------------------------------------------- 1: config mismatch
@pytest.mark.parametrize("change", [["--set", "epochs=3"], ["--set", "lr=0.05"]])
def test_rerun_with_another_config_refuses_before_training(sweep_copy, tiny_data, change):
    before = snapshot(sweep_copy / "runs")
    sweep_json = (sweep_copy / "sweep.json").read_bytes()
    r = cli(*sweep_args(sweep_copy, tiny_data, *change))
    assert_clean(r, codes=(2,))
    field = change[1].split("=")[0]
    assert f"{field}:" in r.stderr and RUN_A in r.stderr and RUN_B in r.stderr
    assert "--archive-mismatched" in r.stderr and "new --out" in r.stderr
    assert snapshot(sweep_copy / "runs") == before  # nothing trained, nothing rewritten
    assert (sweep_copy / "sweep.json").read_bytes() == sweep_json
    r = CliRunner().invoke(main, ["--debug", *sweep_args(sweep_copy, tiny_data, *change)])
    assert type(r.exception).__name__ == "SweepMismatchError"  # --debug lets the traceback through


def test_runs_written_before_new_config_fields_are_still_the_same_configuration(sweep_copy, tiny_data):
    # config.json and checkpoints of runs trained before si_dead, channels_last, compile,
    # check_every, the validation protocol and robust training existed lack those keys;
    # they used the defaults, so nothing differs.
    new_fields = ("si_dead", "channels_last", "compile", "check_every", "val_per_class", "val_split")
    new_fields += tuple(
        k for k in TrainConfig().to_dict() if k == "robust" or k.startswith(("adv_", "noise_", "augmix_"))
    )
    for run in (RUN_A, RUN_B):
        p = sweep_copy / "runs" / run / "config.json"
        write_json(p, {k: v for k, v in read_json(p).items() if k not in new_fields})
        best = sweep_copy / "runs" / run / "checkpoints" / "best.pt"
        ckpt = torch.load(best, weights_only=True)
        ckpt["config"] = {k: v for k, v in ckpt["config"].items() if k not in new_fields}
        torch.save(ckpt, best)
        assert inspect_run_dir(sweep_copy / "runs" / run).ok
    before = snapshot(sweep_copy / "runs")
    r = cli(*sweep_args(sweep_copy, tiny_data))
    assert_clean(r)
    assert "2 already finished" in r.stderr + r.output
    assert snapshot(sweep_copy / "runs") == before  # nothing trained again


def test_archive_mismatched_moves_old_runs_and_trains_the_new_config(sweep_copy, tiny_data):
    old_cfg = read_json(sweep_copy / "runs" / RUN_A / "config.json")
    spec = tiny_spec(alphas=[-1.0], overrides={**TINY, "epochs": 3})
    df = run_sweep(
        spec,
        sweep_copy,
        data=str(tiny_data),
        progress=False,
        summarize=False,
        log=_quiet,
        archive_mismatched=True,
    )
    (archived,) = list((sweep_copy / "archive").glob(f"*/{RUN_A}"))
    assert read_json(archived / "config.json") == old_cfg
    res = read_json(sweep_copy / "runs" / RUN_A / "result.json")
    assert res["status"] == "completed" and res["epochs_completed"] == 3
    assert df.set_index("run_id").loc[RUN_A, "epochs"] == 3
    sj = read_json(sweep_copy / "sweep.json")
    assert sj["spec"]["overrides"]["epochs"] == 3 and sj["history"][0]["spec"]["overrides"]["epochs"] == 2


# --------------------------------------------------------------------------- 2: damaged run files
FILES = [
    "config.json",
    "meta.json",
    "metrics.jsonl",
    "result.json",
    "checkpoints/last.pt",
    "checkpoints/best.pt",
]
MODES = ["truncate", "empty", "garbage"]


def damage(path: Path, mode: str) -> None:
    data = path.read_bytes()
    if mode == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif mode == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(random.Random(0).randbytes(max(64, len(data) // 3)))


@pytest.mark.parametrize("name", FILES)
def test_each_damaged_file_is_named_and_other_runs_stay(sweep_copy, tiny_data, name):
    other = snapshot(sweep_copy / "runs" / RUN_B)
    for mode in MODES:
        path = sweep_copy / "runs" / RUN_A / name
        pristine = path.read_bytes()
        damage(path, mode)
        h = inspect_run_dir(sweep_copy / "runs" / RUN_A)
        assert name in h.problems, (mode, h.problems)
        r = cli("results", str(sweep_copy), "--format", "csv")
        assert_clean(r)
        if not name.startswith("checkpoints/"):  # results read the JSON files, not the checkpoints
            assert "damaged" in r.stdout and str(path) in r.stderr
        r = cli("results", str(sweep_copy), "--rebuild")
        assert_clean(r)
        if name.startswith("checkpoints/") or name == "config.json":
            r = cli("measure", str(sweep_copy / "runs" / RUN_A), "--data", str(tiny_data), "--json")
            if name == "checkpoints/best.pt":
                assert_clean(r, codes=(1,))
                assert "best.pt" in r.stderr
            else:  # measure needs only best.pt
                assert_clean(r)
        path.write_bytes(pristine)
    assert snapshot(sweep_copy / "runs" / RUN_B) == other


@pytest.mark.slow
def test_report_ends_cleanly_with_every_file_of_a_run_damaged(sweep_copy, tmp_path):
    for i, name in enumerate(FILES):
        damage(sweep_copy / "runs" / RUN_A / name, MODES[i % 3])
    other = snapshot(sweep_copy / "runs" / RUN_B)
    r = cli("report", str(sweep_copy), "--out", str(tmp_path / "rep"), "--resamples", "20")
    assert_clean(r)
    assert (tmp_path / "rep" / "report.html").exists()
    assert snapshot(sweep_copy / "runs" / RUN_B) == other


@pytest.mark.slow
@pytest.mark.parametrize("i,name", list(enumerate(FILES)))
def test_sweep_sets_damaged_files_aside_and_reruns_to_the_same_result(
    tiny_sweep, sweep_copy, tiny_data, i, name
):
    ref = tiny_sweep.runs
    other = snapshot(sweep_copy / "runs" / RUN_B)
    damage(sweep_copy / "runs" / RUN_A / name, MODES[i % 3])
    r = cli(*sweep_args(sweep_copy, tiny_data))
    assert_clean(r)
    assert "set aside" in r.stderr and name in r.stderr
    assert list((sweep_copy / "runs" / RUN_A / "damaged").glob(f"*/{name}"))
    assert inspect_run_dir(sweep_copy / "runs" / RUN_A).ok
    with open_store(sweep_copy) as store:
        df = store.runs_df().set_index("run_id")
    assert (df.status == "completed").all()
    assert df.loc[RUN_A, METRICS].equals(ref.loc[RUN_A, METRICS])
    assert snapshot(sweep_copy / "runs" / RUN_B) == other


def test_rebuild_builds_beside_the_old_database_and_swaps_only_when_complete(sweep_copy, monkeypatch):
    from selectivity.sweep import store as store_mod

    db = sweep_copy / "results.sqlite"
    with open_store(sweep_copy):
        pass
    before = db.read_bytes()
    calls = []
    real = store_mod.scan_run_dir

    def failing_scan(path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk went away (test)")
        return real(path)

    monkeypatch.setattr(store_mod, "scan_run_dir", failing_scan)
    with pytest.raises(OSError, match="disk went away"):
        rebuild_store(sweep_copy)
    assert db.read_bytes() == before  # the old database is untouched
    assert sorted(p.name for p in sweep_copy.iterdir() if "rebuild" in p.name) == []


# --------------------------------------------------------------------------- 3: damaged database
@pytest.mark.parametrize("how", ["garbage", "truncate"])
def test_damaged_database_is_set_aside_and_rebuilt_without_loss(sweep_copy, how):
    with open_store(sweep_copy) as store:
        before = store.runs_df().set_index("run_id")
    assert before["wall_seconds"].notna().all()
    db = sweep_copy / "results.sqlite"
    for side in ("results.sqlite-wal", "results.sqlite-shm"):
        (sweep_copy / side).unlink(missing_ok=True)
    if how == "garbage":
        db.write_bytes(b"this is not a database" * 100)
    else:
        db.write_bytes(db.read_bytes()[:3000])
    r = cli("results", str(sweep_copy), "--format", "json")
    assert_clean(r)
    notes = [line for line in r.stderr.splitlines() if "results.sqlite" in line]
    assert len(notes) == 1 and "rebuilt" in notes[0]
    assert list(sweep_copy.glob("results.sqlite.corrupt-*"))
    after = {d["run_id"]: d for d in json.loads(r.stdout)}
    for rid in before.index:
        assert after[rid]["wall_seconds"] == pytest.approx(before.loc[rid, "wall_seconds"])
        assert after[rid]["test_accuracy"] == pytest.approx(before.loc[rid, "test_accuracy"])
    db.write_bytes(b"\0" * 5000)
    r = cli("summarize", str(sweep_copy), "--no-figures")
    assert_clean(r)


# --------------------------------------------------------------------------- 4: data vs checkpoint
def test_measure_refuses_data_of_another_shape(sweep_copy, tmp_path):
    three = write_image_folder(tmp_path / "three", ["a", "b", "c"], size=32, train_per_class=12)
    big = write_image_folder(tmp_path / "big", list(CIFAR10_CLASSES), size=64, train_per_class=4)
    run = sweep_copy / "runs" / RUN_A
    r = cli("measure", str(run), "--data", str(three))
    assert_clean(r, codes=(1,))
    assert "10 classes" in r.stderr and "have 3" in r.stderr
    r = cli("measure", str(run / "checkpoints" / "best.pt"), "--data", str(big))
    assert_clean(r, codes=(1,))
    assert "3x32x32" in r.stderr and "3x64x64" in r.stderr


def test_train_refuses_a_folder_with_other_classes_and_writes_nothing(tmp_path):
    three = write_image_folder(tmp_path / "three", ["a", "b", "c"], size=32, train_per_class=12)
    out = tmp_path / "run"
    r = cli("train", "--preset", "smoke", "--data", str(three), "--out", str(out), "--quiet", *TINY_SETS)
    assert_clean(r, codes=(1,))
    assert "3 classes" in r.stderr and "cifar10" in r.stderr
    assert not RunFiles(out).config.exists()


def test_meta_records_the_data(tiny_sweep, tiny_data):
    out = tiny_sweep.path
    meta = read_json(out / "runs" / RUN_A / "meta.json")
    data = meta["data"]
    assert data["classes"] == list(CIFAR10_CLASSES) and data["input_shape"] == [3, 32, 32]
    assert data["format"] == "python-release" and str(tiny_data) in data["source"]
    assert data["sizes"] == {"train": 120, "val": 30, "test": N_TEST} and len(data["fingerprint"]) == 64


# --------------------------------------------------------------------------- 5: one-line errors
def test_cuda_without_a_gpu_is_one_line(tmp_path, tiny_data, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ["train", "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--quiet", *TINY_SETS]
    r = cli(*args, "--set", "device=cuda")
    assert_clean(r, codes=(1,))
    assert "CUDA is not available" in r.stderr and not (tmp_path / "run" / "config.json").exists()
    r = cli(*args, "--set", "device=cudaXYZ")
    assert_clean(r, codes=(2,))
    assert "'device'" in r.stderr


@pytest.mark.parametrize("content", ["foreign", "empty"])
def test_foreign_or_empty_last_checkpoint_says_how_to_restart(sweep_copy, tiny_data, content):
    run = sweep_copy / "runs" / RUN_A
    (run / "result.json").unlink()  # an interrupted run
    if content == "foreign":
        torch.save({"weights": torch.zeros(3), "step": 7}, run / "checkpoints" / "last.pt")
    else:
        (run / "checkpoints" / "last.pt").write_bytes(b"")
    r = cli("train", "--alpha", "-1", "--data", str(tiny_data), "--out", str(run), "--quiet", *TINY_SETS)
    assert_clean(r, codes=(1,))
    assert "last.pt" in r.stderr and "train it again" in r.stderr


def test_cifar_batch_without_labels_is_one_line(tmp_path):
    data = write_tiny_cifar(tmp_path / "d")
    batch = data / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(pickle.dumps({b"data": np.zeros((30, 3072), np.uint8)}, protocol=2))
    r = cli("train", "--data", str(data), "--out", str(tmp_path / "run"), "--quiet", *TINY_SETS)
    assert_clean(r, codes=(1,))
    assert "data_batch_2" in r.stderr and "'labels'" in r.stderr


# --------------------------------------------------------------------------- 8: one run, one trainer
def test_train_takes_the_run_lock(tmp_path, tiny_data):
    out = tmp_path / "run"
    with run_lock(out):
        r = cli("train", "--data", str(tiny_data), "--out", str(out), "--quiet", *TINY_SETS)
    assert_clean(r, codes=(1,))
    assert "another process is training" in r.stderr
    assert not RunFiles(out).config.exists()


def test_failed_start_leaves_nothing_that_blocks_the_corrected_rerun(tmp_path, tiny_data):
    out = tmp_path / "run"
    r = cli("train", "--data", str(tmp_path / "nope"), "--out", str(out), "--quiet", *TINY_SETS)
    assert_clean(r, codes=(1,))
    assert not RunFiles(out).config.exists()
    r = cli("train", "--data", str(tiny_data), "--out", str(out), "--quiet", *TINY_SETS, "--set", "lr=0.05")
    assert_clean(r)
    assert read_json(RunFiles(out).result)["status"] == "completed"


# --------------------------------------------------------------------------- 9: ids, copies, modes
def test_run_ids_of_close_alphas_are_distinct(tmp_path):
    r = cli(
        "sweep",
        "--models",
        "resnet20",
        "--alphas=0.1,0.1000001",
        "--seeds",
        "1",
        "--out",
        str(tmp_path / "s"),
        "--dry-run",
    )
    assert_clean(r)
    ids = [line.split("\t")[0] for line in r.stdout.splitlines()]
    assert ids == ["resnet20_alpha+0.1_seed0", "resnet20_alpha+0.1000001_seed0"]


def test_a_copied_run_directory_is_counted_once(sweep_copy):
    shutil.copytree(sweep_copy / "runs" / RUN_A, sweep_copy / "runs" / f"{RUN_A} copy")
    r = cli("results", str(sweep_copy), "--format", "json")
    assert_clean(r)
    assert sorted(d["run_id"] for d in json.loads(r.stdout)) == sorted([RUN_A, RUN_B])
    assert "same config" in r.stderr and f"{RUN_A} copy" in r.stderr


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_files_follow_the_umask(tmp_path, umask, mode):
    from selectivity.run.files import atomic_torch_save

    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        atomic_torch_save({"x": torch.zeros(1)}, tmp_path / "b.pt")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "b.pt").stat().st_mode & 0o777 == mode


# --------------------------------------------------------------------------- 7 + chaos: kills
def _live_in_group(pgid: int) -> list[int]:
    """Pids of processes (not zombies) in process group ``pgid``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not pred():
        if time.time() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def _driver(out: Path, data: Path, epochs: int, alphas: str = "-1,1") -> subprocess.Popen:
    sets = [x for k, v in {**TINY, "epochs": epochs}.items() for x in ("--set", f"{k}={v}")]
    cmd = [sys.executable, "-m", "selectivity.cli", "sweep", "--models", "resnet20", f"--alphas={alphas}"]
    cmd += ["--seeds", "1", "--out", str(out), "--data", str(data), "--executor", "process", "--workers", "2"]
    cmd += ["--no-summary", "--quiet", *sets]
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, env=env
    )


def _epoch_since(out: Path, t: float) -> bool:
    """Some run finished an epoch (wrote a metrics row) after time ``t``."""
    return any(p.stat().st_mtime > t for p in out.glob("runs/*/metrics.jsonl"))


def _training(out: Path) -> bool:
    return (
        any((d / "metrics.jsonl").exists() for d in (out / "runs").glob("*"))
        if (out / "runs").exists()
        else False
    )


@pytest.mark.slow
def test_pool_workers_exit_when_the_driver_is_killed(tmp_path, tiny_data):
    out = tmp_path / "sweep"
    proc = _driver(out, tiny_data, epochs=200, alphas="-1")
    _wait(lambda: _training(out), 60, "training did not start")
    assert len(_live_in_group(proc.pid)) >= 2  # the driver and its worker
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    # Before the fix the worker went on training its 200 epochs (and then hung).
    _wait(lambda: not _live_in_group(proc.pid), 15, "the worker outlived its driver")


@pytest.mark.slow
def test_chaos_kills_of_driver_and_workers_end_in_the_reference_result(tiny_data, tmp_path):
    epochs = 4  # long enough that a kill soon after the first epoch lands mid-run
    ref = run_sweep(
        tiny_spec(overrides={**TINY, "epochs": epochs}),
        tmp_path / "ref",
        data=str(tiny_data),
        progress=False,
        summarize=False,
        log=_quiet,
    ).set_index("run_id")
    out = tmp_path / "sweep"
    rng = random.Random(9)
    groups = []
    kills_mid_run = 0
    for round_ in range(2):
        t_start = time.time()
        proc = _driver(out, tiny_data, epochs)
        groups.append(proc.pid)
        try:  # wait until this driver's workers train, then kill at a random moment
            _wait(lambda t=t_start, p=proc: _epoch_since(out, t) or p.poll() is not None, 120, "no training")
            # kill at a random moment soon after the first epoch (a late kill on a fast
            # machine would find every run finished and test nothing)
            proc.wait(timeout=rng.uniform(0.0, 0.5))
        except subprocess.TimeoutExpired:
            if round_ == 1:  # kill a worker first, then the driver
                workers = [p for p in _live_in_group(proc.pid) if p != proc.pid]
                if workers:
                    os.kill(workers[0], signal.SIGKILL)
                    time.sleep(rng.uniform(0.5, 2.0))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            kills_mid_run += any(
                (d / "metrics.jsonl").exists() and not (d / "result.json").exists()
                for d in (out / "runs").glob("*")
            )
    assert kills_mid_run >= 1  # the test really interrupted training
    final = _driver(out, tiny_data, epochs)
    groups.append(final.pid)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err.decode()
    with open_store(out) as store:
        df = store.runs_df().set_index("run_id")
    assert (df.status == "completed").all() and sorted(df.index) == sorted(ref.index)
    assert df[METRICS].sort_index().equals(ref[METRICS].sort_index())
    for rid in df.index:
        log = (out / "runs" / rid / "train.log").read_text()
        assert log.count("done:") == 1, rid  # finished exactly once
        assert len((out / "runs" / rid / "metrics.jsonl").read_text().splitlines()) == epochs
    for pgid in groups:
        _wait(lambda pgid=pgid: not _live_in_group(pgid), 15, f"processes of driver {pgid} left behind")
