"""Sweeps: executors agree, kill/resume, failures recorded, database rebuilt from run dirs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selectivity.report import summarize_sweep
from selectivity.run.config import ConfigError
from selectivity.run.files import read_json
from selectivity.sweep import SweepSpec, open_store, parse_seeds, rebuild_store, run_sweep

# Very short real-data runs: 1 epoch over 128 images, 100-image evaluation.
TINY = dict(epochs=1, batch_size=64, train_subset=128, eval_subset=100, val_size=500, top_n=10, num_threads=1)
METRICS = [
    "test_accuracy",
    "best_val_accuracy",
    "best_epoch",
    "mean_selectivity",
    "mean_precision",
    "dead_fraction",
]


def tiny_spec(**kw) -> SweepSpec:
    spec = SweepSpec(
        models=["resnet20"], alphas=[-1.0, 1.0], seeds=[0, 1], preset="paper", overrides=dict(TINY)
    )
    for k, v in kw.items():
        setattr(spec, k, v)
    return spec


def _per_run(df):
    return df.set_index("run_id")[["status", *METRICS]].sort_index()


def _quiet(_msg):
    pass


def _done_lines(run_dir: Path) -> int:
    """How many times a run reached its end (a run trained twice would say 'done:' twice)."""
    log = run_dir / "train.log"
    return sum(1 for line in log.read_text().splitlines() if line.startswith("done:")) if log.exists() else 0


# --------------------------------------------------------------------------- spec
def test_spec_expansion_and_parsing():
    spec = tiny_spec(grid={"negative_slope": [0.1, 0.3]}, overrides={**TINY, "activation": "leaky_relu"})
    runs = spec.runs()
    assert len(runs) == 2 * 2 * 2
    ids = [r.run_id for r in runs]
    assert len(set(ids)) == len(ids)
    assert "resnet20_alpha-1_seed0_negative_slope0.1" in ids
    assert all(r.config.train_subset == 128 and r.config.lr == 0.1 for r in runs)
    assert (
        parse_seeds("3") == [0, 1, 2]
        and parse_seeds("0,4,9") == [0, 4, 9]
        and parse_seeds("10-12") == [10, 11, 12]
    )
    with pytest.raises(ConfigError, match="seeds"):
        parse_seeds("three")
    with pytest.raises(ConfigError, match="unknown config key"):
        tiny_spec(overrides={"epochz": 1}).validate()
    with pytest.raises(ConfigError, match="sweep axis"):
        tiny_spec(overrides={"alpha": 1.0}).validate()


def test_cli_rejects_bad_sweep_options(tmp_path):
    from click.testing import CliRunner

    from selectivity.cli import main

    r = CliRunner().invoke(
        main, ["sweep", "--models", "resnet20", "--alphas=-1,x", "--seeds", "2", "--out", str(tmp_path)]
    )
    assert r.exit_code == 2 and "invalid alphas" in r.output
    r = CliRunner().invoke(main, ["sweep", "--preset", "quick", "--set", "lr=fast", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "'lr'" in r.output
    r = CliRunner().invoke(main, ["sweep", "--preset", "nope", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "unknown sweep preset" in r.output
    r = CliRunner().invoke(main, ["sweep", "--models", "resnet20", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--alphas" in r.output


# --------------------------------------------------------------------------- executors
@pytest.fixture(scope="module")
def reference_sweep(cifar_data, tmp_path_factory):
    """The tiny sweep run in-process: the reference every other way must match."""
    out = tmp_path_factory.mktemp("ref") / "sweep"
    df = run_sweep(
        tiny_spec(),
        out,
        executor="inprocess",
        data=str(cifar_data),
        progress=False,
        log=_quiet,
    )
    summarize_sweep(out, log=_quiet)  # what `selectivity sweep` does after the runs
    return out, df


def test_inprocess_sweep_records_everything(reference_sweep):
    out, df = reference_sweep
    assert len(df) == 4 and (df.status == "completed").all()
    assert df[METRICS].notna().all().all()
    with open_store(out) as store:
        layers = store.layers_df()
    assert len(layers) == 4 * 19
    assert (out / "summary.csv").exists() and (out / "figures" / "selectivity_vs_alpha.png").exists()
    for rid in df.run_id:
        assert _done_lines(out / "runs" / rid) == 1


def test_process_pool_gives_the_same_results(reference_sweep, cifar_data, tmp_path):
    _, ref = reference_sweep
    df = run_sweep(
        tiny_spec(),
        tmp_path / "sweep",
        executor="process",
        workers=2,
        data=str(cifar_data),
        progress=False,
        summarize=False,
        log=_quiet,
    )
    assert _per_run(df).equals(_per_run(ref))


@pytest.mark.slow
def test_ray_gives_the_same_results(reference_sweep, cifar_data, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'selectivity[ray]'")
    _, ref = reference_sweep
    df = run_sweep(
        tiny_spec(),
        tmp_path / "sweep",
        executor="ray",
        workers=2,
        data=str(cifar_data),
        progress=False,
        summarize=False,
        log=_quiet,
    )
    assert not ray.is_initialized()  # the local instance it started is shut down
    assert _per_run(df).equals(_per_run(ref))


# --------------------------------------------------------------------------- faults
def _sweep_cmd(out: Path, data: Path, executor: str = "process") -> list[str]:
    sets = [x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]
    return [
        sys.executable,
        "-m",
        "selectivity.cli",
        "sweep",
        "--models",
        "resnet20",
        "--alphas=-1,1",
        "--seeds",
        "2",
        "--out",
        str(out),
        "--data",
        str(data),
        "--executor",
        executor,
        "--workers",
        "2",
        "--no-summary",
        "--quiet",
        *sets,
    ]


def _wait_for(pred, timeout=300.0):
    deadline = time.time() + timeout
    while not pred():
        if time.time() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def test_killed_driver_then_rerun_finishes_every_run_once(reference_sweep, cifar_data, tmp_path):
    _, ref = reference_sweep
    out = tmp_path / "sweep"
    cmd = _sweep_cmd(out, cifar_data)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # kill the driver (a real SIGKILL) once some run has started training
    _wait_for(
        lambda: (
            any(
                (d / "metrics.jsonl").exists() or (d / "train.log").exists() for d in (out / "runs").glob("*")
            )
            if (out / "runs").exists()
            else False
        )
    )
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    finished_before = sum((d / "result.json").exists() for d in (out / "runs").glob("*"))
    assert finished_before < 4
    subprocess.run(cmd, check=True, timeout=600, capture_output=True)
    with open_store(out) as store:
        df = store.runs_df()
    assert len(df) == 4 and (df.status == "completed").all()
    assert _per_run(df).equals(_per_run(ref))
    for rid in df.run_id:
        assert _done_lines(out / "runs" / rid) == 1, rid  # none trained to the end twice
    os.killpg(proc.pid, signal.SIGKILL) if _alive_group(proc.pid) else None


def _alive_group(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_killed_worker_is_resumed(reference_sweep, cifar_data, tmp_path):
    _, ref = reference_sweep
    out = tmp_path / "sweep"
    proc = subprocess.Popen(
        _sweep_cmd(out, cifar_data), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    _wait_for(
        lambda: (
            any((d / "train.log").exists() for d in (out / "runs").glob("*"))
            if (out / "runs").exists()
            else False
        )
    )
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    workers = []
    for c in children:  # the spawn workers (skip the resource tracker)
        cmdline = Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        if "spawn_main" in cmdline and "resource_tracker" not in cmdline:
            workers.append(int(c))
    assert workers, children
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    with open_store(out) as store:
        df = store.runs_df()
    assert (df.status == "completed").all() and len(df) == 4
    assert _per_run(df).equals(_per_run(ref))
    for rid in df.run_id:
        assert _done_lines(out / "runs" / rid) == 1, rid


def test_failing_and_diverging_runs_are_recorded_and_the_sweep_goes_on(cifar_data, tmp_path):
    # cuda:99 does not exist anywhere: those runs fail; alpha=1e38 overflows: diverges.
    spec = tiny_spec(alphas=[0.0, 1e38], seeds=[0], grid={"device": ["cpu", "cuda:99"]})
    df = run_sweep(
        spec,
        tmp_path / "sweep",
        executor="inprocess",
        data=str(cifar_data),
        progress=False,
        log=_quiet,
    )
    summarize_sweep(tmp_path / "sweep", log=_quiet)  # failed and diverged runs are counted
    by = df.set_index("run_id")
    assert by.loc["resnet20_alpha0_seed0_devicecpu", "status"] == "completed"
    assert by.loc["resnet20_alpha+1e+38_seed0_devicecpu", "status"] == "diverged"
    for rid in ("resnet20_alpha0_seed0_devicecuda-99", "resnet20_alpha+1e+38_seed0_devicecuda-99"):
        assert by.loc[rid, "status"] == "failed"
        assert "cuda:99" in by.loc[rid, "message"] or "CUDA" in by.loc[rid, "message"]
        assert read_json(tmp_path / "sweep" / "runs" / rid / "result.json")["status"] == "failed"
    assert "loss became" in by.loc["resnet20_alpha+1e+38_seed0_devicecpu", "message"]


def test_database_can_be_deleted_and_rebuilt(reference_sweep, tmp_path):
    import shutil

    out, ref = reference_sweep
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with open_store(copy) as store:
        before_runs, before_layers = store.runs_df(), store.layers_df()
    for p in copy.glob("results.sqlite*"):
        p.unlink()
    with rebuild_store(copy) as store:
        after_runs, after_layers = store.runs_df(), store.layers_df()
    cols = ["run_id", "model", "alpha", "seed", "status", *METRICS, "config"]
    assert after_runs[cols].equals(before_runs[cols])
    assert after_layers.drop(columns=[]).equals(before_layers)


def test_results_cli_exports_csv_and_json(reference_sweep):
    import io

    import pandas as pd
    from click.testing import CliRunner

    from selectivity.cli import main

    out, ref = reference_sweep
    r = CliRunner().invoke(main, ["results", str(out), "--format", "csv"])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(io.StringIO(r.output))
    assert len(df) == 4 and set(METRICS) <= set(df.columns)
    r = CliRunner().invoke(main, ["results", str(out), "--format", "json", "--per-layer"])
    assert r.exit_code == 0 and len(json.loads(r.output)) == 4 * 19
    r = CliRunner().invoke(main, ["results", str(out)])
    assert r.exit_code == 0 and "resnet20_alpha-1_seed0" in r.output
    r = CliRunner().invoke(main, ["summarize", str(out), "--no-figures"])
    assert r.exit_code == 0 and "resnet20" in r.output


def test_dry_run_lists_the_paper_grid_without_running(tmp_path):
    from click.testing import CliRunner

    from selectivity.cli import main

    r = CliRunner().invoke(main, ["sweep", "--preset", "paper", "--out", str(tmp_path / "p"), "--dry-run"])
    assert r.exit_code == 0, r.output
    lines = [l for l in r.output.splitlines() if "\t" in l]
    assert len(lines) == 2 * 20 * 20  # ResNet20 and VGG16, 20 alphas, 20 seeds
    assert "resnet20_alpha-30_seed19\tto run" in lines and "vgg16_alpha+5_seed0\tto run" in lines
    assert not (tmp_path / "p").exists()
