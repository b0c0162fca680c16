"""``--executor slurm`` through submitit, run by submitit's local executor (no scheduler here).

The tiny sweep (``tiny_spec()`` on ``tiny_data``, as the session's ``tiny_sweep``, which
the in-process executor trained) is run again with one submitit job per run: every
number must be the in-process one. A second call submits nothing (both runs are
finished); a fused sweep is one job for its group.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import RUN_A, RUN_B, tiny_spec
from selectivity.run.files import read_json, read_jsonl
from selectivity.sweep import run_sweep
from selectivity.sweep.executors import SlurmExecutor

METRICS = ["status", "test_accuracy", "best_val_accuracy", "best_epoch", "mean_selectivity", "mean_precision"]
LOCAL = {"cluster": "local", "time_min": 10, "poll_seconds": 0.5}


def jobs(sweep: Path) -> list[str]:
    """The job folders under ``SWEEP/slurm/`` (``%j`` holds submitit's pickles before submission)."""
    d = sweep / "slurm"
    return sorted(p.name for p in d.iterdir() if p.is_dir() and p.name != "%j") if d.is_dir() else []


def test_slurm_jobs_give_the_in_process_results_and_resume(tiny_sweep, tiny_data, tmp_path):
    pytest.importorskip("submitit", reason="the slurm extra: pip install 'selectivity[slurm]'")
    out = tmp_path / "sweep"
    lines: list[str] = []
    kw = dict(data=str(tiny_data), progress=False, log=lines.append, executor_options=LOCAL)
    df = run_sweep(tiny_spec(), out, executor="slurm", workers=2, **kw)
    ref = tiny_sweep.runs
    got = df.set_index("run_id")
    assert got.loc[[RUN_A, RUN_B], METRICS].equals(ref.loc[[RUN_A, RUN_B], METRICS])
    assert len(jobs(out)) == 2  # one job per run
    for rid in (RUN_A, RUN_B):  # each job trained its run in its own process, logging to the run
        assert "done: test_acc" in (out / "runs" / rid / "train.log").read_text()
    assert read_json(out / "sweep.json")["executor"] == "slurm"

    lines.clear()
    again = run_sweep(tiny_spec(), out, executor="slurm", workers=2, **kw)
    assert any("2 already finished, 0 to run" in l for l in lines)
    assert len(jobs(out)) == 2  # nothing submitted
    assert again.set_index("run_id").loc[[RUN_A, RUN_B], METRICS].equals(got.loc[[RUN_A, RUN_B], METRICS])


def test_a_fused_group_is_one_job_and_each_run_is_tracked(tiny_data, tmp_path):
    pytest.importorskip("submitit", reason="the slurm extra: pip install 'selectivity[slurm]'")
    pytest.importorskip("tensorboard", reason="the tensorboard extra: pip install 'selectivity[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "sweep"
    df = run_sweep(
        tiny_spec(),
        out,
        executor="slurm",
        fuse=2,
        data=str(tiny_data),
        progress=False,
        log=lambda _m: None,
        executor_options=LOCAL,
        tracker="tensorboard",
    )
    assert (df.status == "completed").all() and len(df) == 2
    assert len(jobs(out)) == 1
    assert read_json(out / "runs" / RUN_A / "meta.json")["fused_group"] == [RUN_A, RUN_B]
    for rid in (RUN_A, RUN_B):  # the job told the tracker about each member run, in its own directory
        ea = EventAccumulator(str(out / "runs" / rid / "tensorboard"))
        ea.Reload()
        rows = read_jsonl(out / "runs" / rid / "metrics.jsonl")
        logged = {e.step: e.value for e in ea.Scalars("val_accuracy")}
        assert logged == pytest.approx({r["epoch"]: r["val_accuracy"] for r in rows})
        assert ea.Scalars("test_accuracy")[0].value == pytest.approx(
            df.set_index("run_id").test_accuracy[rid]
        )


def test_the_command_line_checks_slurm_before_writing(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from selectivity.cli import main

    out = tmp_path / "sweep"
    args = ["sweep", "--models", "resnet20", "--alphas=1", "--seeds", "1", "--out", str(out), "--quiet"]
    r = CliRunner().invoke(main, [*args, "--executor", "slurm", "--slurm-set", "account"])
    assert r.exit_code == 2 and "--slurm-set takes KEY=VALUE, got 'account'" in r.output
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    r = CliRunner().invoke(main, [*args, "--executor", "slurm", "--slurm-partition", "gpu"])
    assert r.exit_code == 1 and ("sbatch" in r.output or "needs submitit" in r.output), r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not out.exists()  # nothing written


def test_slurm_options_are_checked(tmp_path):
    pytest.importorskip("submitit", reason="the slurm extra: pip install 'selectivity[slurm]'")
    with pytest.raises(ValueError, match="whole number"):
        SlurmExecutor(sweep_dir=tmp_path, gpus_per_run=0.5, cluster="local")
    with pytest.raises(ValueError, match=">= 1 minute"):
        SlurmExecutor(sweep_dir=tmp_path, time_min=0, cluster="local")
    ex = SlurmExecutor(
        workers=4,
        sweep_dir=tmp_path,
        cpus_per_run=2.5,
        gpus_per_run=1,
        partition="gpu",
        time_min=90,
        additional={"account": "lab"},
        cluster="local",
    )
    assert ex.folder == tmp_path / "slurm"
    assert ex.params["cpus_per_task"] == 3 and ex.params["gpus_per_node"] == 1
    assert ex.params["slurm_array_parallelism"] == 4 and ex.params["slurm_partition"] == "gpu"
    assert ex.params["timeout_min"] == 90 and ex.params["slurm_additional_parameters"] == {"account": "lab"}
