"""Fused sweeps (issue 12): `train_group` and `selectivity sweep --fuse R`.

Runs of a fused group write the run directories of single runs, resume, record
divergence and failures as single runs do. The tiny tests run on a random CIFAR-10
copy (``helpers.write_tiny_cifar``; 32 training images, 4 steps per epoch).
Exact comparisons with separate runs are made in float64 (the models are built in
float64 through a patched ``selectivity.training.single.create``): in float32 the rounding of two
mathematically equal computations differs by ~1e-6 relative in the first gradients, and
training on random labels at lr 0.1 amplifies that ~10x per step, so only float64 can
show "the same arithmetic" on a few steps. The float32 real-data test compares outcomes
within the seed-to-seed noise instead.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import types
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import selectivity.training.single as train_mod
from helpers import TINY as RELIABILITY_TINY
from helpers import write_tiny_cifar
from selectivity.cli import main
from selectivity.run.config import TrainConfig, make_config
from selectivity.run.files import RunBusyError, read_json, read_jsonl, run_lock
from selectivity.run.health import inspect_run_dir
from selectivity.sweep import GroupTask, SweepSpec, Task, open_store, pack_tasks, run_sweep
from selectivity.sweep.executors import RayExecutor
from selectivity.sweep.store import RECORD_NAME
from selectivity.training.fused import FusedRuns
from selectivity.training.group import (
    MemoryProbe,
    auto_group_size,
    check_fusable,
    fuse_key,
    runs_that_fit,
    train_group,
)
from selectivity.training.single import train_run

# 32 training images in batches of 8: 4 steps per epoch, 2 epochs; 30 validation, 60 test images
TINY = {**RELIABILITY_TINY, "batch_size": 8, "train_subset": 32}
TINY_SETS = [x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]
METRICS = ["status", "test_accuracy", "best_val_accuracy", "best_epoch", "mean_selectivity", "mean_precision"]


def quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return write_tiny_cifar(tmp_path_factory.mktemp("tinydata"))


def cfg64(alpha: float, seed: int, **kw) -> TrainConfig:
    # check_every=2: the divergence check also happens mid-epoch (4 steps per epoch)
    return make_config(
        None, {"model": "resnet20", **TINY, "check_every": 2, "alpha": alpha, "seed": seed, **kw}
    )


@contextlib.contextmanager
def float64_models():
    """Every model built by the training code is float64 and takes its inputs as float64.

    The loaders yield float32 batches: a single model casts them in a forward pre-hook,
    a fused group in its step (the grouped backend runs a wide copy without the hook).
    """
    real_create, real_step = train_mod.create, FusedRuns.step

    def create64(*args, **kw):
        model = real_create(*args, **kw).double()
        model.register_forward_pre_hook(lambda _m, inputs: tuple(t.double() for t in inputs))
        return model

    def step64(self, x, y, **kw):
        return real_step(self, x.double(), y, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "create", create64)
        mp.setattr(FusedRuns, "step", step64)
        yield


def params(run_dir: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return torch.load(Path(run_dir) / "checkpoints" / f"{which}.pt", weights_only=False)["model"]


def assert_close_state(a: dict, b: dict, rtol: float) -> None:
    assert list(a) == list(b)
    for k in a:
        if a[k].is_floating_point():
            scale = b[k].abs().max().clamp(min=1e-12)
            assert float((a[k] - b[k]).abs().max() / scale) <= rtol, k
        else:
            assert torch.equal(a[k], b[k]), k


def assert_close_results(a: dict, b: dict, rtol: float) -> None:
    for k in ("test_accuracy", "best_val_accuracy", "mean_selectivity", "mean_precision", "dead_fraction"):
        assert math.isclose(a[k], b[k], rel_tol=rtol, abs_tol=1e-12), (k, a[k], b[k])
    assert a["status"] == b["status"] and a["best_epoch"] == b["best_epoch"]
    assert a["layer_selectivity"].keys() == b["layer_selectivity"].keys()
    for k, v in a["layer_selectivity"].items():
        assert math.isclose(v, b["layer_selectivity"][k], rel_tol=rtol, abs_tol=1e-12), k


def same_rows(a: list[dict], b: list[dict], rtol: float) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            if k == "seconds":
                continue
            if isinstance(ra[k], float):
                assert math.isclose(ra[k], rb[k], rel_tol=rtol, abs_tol=1e-12), (k, ra[k], rb[k])
            else:
                assert ra[k] == rb[k], k


# --------------------------------------------------------------------------- float64 references
@pytest.fixture(scope="module")
def ref64(tiny_data, tmp_path_factory):
    """Runs A (alpha -1, seed 0) and B (alpha 1, seed 1): separate, and fused as one group."""
    root = tmp_path_factory.mktemp("ref64")
    cfgs = [cfg64(-1.0, 0), cfg64(1.0, 1)]
    with float64_models():
        sep = [
            train_run(c, root / f"sep{i}", data=tiny_data, progress=False, log=quiet)
            for i, c in enumerate(cfgs)
        ]
        fused = train_group(cfgs, [root / "A", root / "B"], data=tiny_data, progress=False, log=quiet)
    return root, cfgs, sep, fused


def test_fused_group_equals_separate_runs_in_float64(ref64):
    root, _, sep, fused = ref64
    for i, name in enumerate(["A", "B"]):
        assert fused[i]["status"] == "completed" == sep[i]["status"]
        assert_close_state(params(root / name), params(root / f"sep{i}"), rtol=1e-9)
        assert_close_state(params(root / name, "best"), params(root / f"sep{i}", "best"), rtol=1e-9)
        assert_close_results(fused[i], sep[i], rtol=1e-9)
        same_rows(
            read_jsonl(root / name / "metrics.jsonl"), read_jsonl(root / f"sep{i}" / "metrics.jsonl"), 1e-9
        )
        # the optimizer state in last.pt is the single run's (momentum of every parameter)
        a = torch.load(root / name / "checkpoints" / "last.pt", weights_only=False)["optimizer"]
        b = torch.load(root / f"sep{i}" / "checkpoints" / "last.pt", weights_only=False)["optimizer"]
        assert a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys()
        for j in b["state"]:
            d = (a["state"][j]["momentum_buffer"] - b["state"][j]["momentum_buffer"]).abs().max()
            assert d <= 1e-9 * b["state"][j]["momentum_buffer"].abs().max()
    # not vacuous: the two runs differ (seed, alpha, data order)
    assert (params(root / "A")["conv1.weight"] - params(root / "B")["conv1.weight"]).abs().max() > 1e-2
    meta = read_json(root / "A" / "meta.json")
    assert meta["fused_group"] == ["A", "B"] and meta["fused_group_size"] == 2
    assert meta["fused_backend"] == "loop"  # the CPU default


def test_grouped_backend_gives_the_same_runs_in_float64(ref64, tiny_data, tmp_path):
    """The GPU's default backend (grouped convolutions over the runs), here on the CPU."""
    root, cfgs, sep, _ = ref64
    dirs = [tmp_path / "A", tmp_path / "B"]
    with float64_models():
        res = train_group(cfgs, dirs, data=tiny_data, progress=False, log=quiet, backend="grouped")
    for i in range(2):
        assert_close_results(res[i], sep[i], rtol=1e-9)
        assert_close_state(params(dirs[i]), params(root / f"sep{i}"), rtol=1e-9)
    assert read_json(dirs[0] / "meta.json")["fused_backend"] == "grouped"


def test_interrupted_group_resumes_to_the_uninterrupted_result(ref64, tiny_data, tmp_path):
    root, cfgs, _, fused = ref64
    dirs = [tmp_path / "A", tmp_path / "B"]
    with float64_models():
        part = train_group(cfgs, dirs, data=tiny_data, progress=False, log=quiet, stop_after_epochs=1)
        assert [p["status"] for p in part] == ["interrupted", "interrupted"] and part[0]["epoch"] == 1
        assert not (dirs[0] / "result.json").exists()
        # B is resumed alone first (a single run reads a fused run's last.pt), for one more epoch...
        said: list[str] = []
        train_run(cfgs[1], dirs[1], data=tiny_data, progress=False, log=said.append, stop_after_epochs=1)
        assert any("resuming" in m and "after epoch 1/2" in m for m in said)
        # ... so the group's runs stand at different epochs: A is brought level, B is finished
        resumed = train_group(cfgs, dirs, data=tiny_data, progress=False, log=quiet)
    for i, name in enumerate(["A", "B"]):
        assert_close_results(resumed[i], fused[i], rtol=1e-9)
        assert_close_state(params(dirs[i]), params(root / name), rtol=1e-9)
        same_rows(read_jsonl(dirs[i] / "metrics.jsonl"), read_jsonl(root / name / "metrics.jsonl"), 1e-9)
    meta = read_json(dirs[0] / "meta.json")
    # the first call fused A and B; the resume trained A alone (B had finished)
    assert meta["fused_group"] == ["A", "B"] and meta["resumed_with"]["fused_group"] == ["A"]
    # finished runs are returned as they are, nothing is trained again
    again = train_group(cfgs, dirs, data=tiny_data, progress=False, log=quiet)
    assert again == [read_json(d / "result.json") for d in dirs]


def test_diverging_run_is_dropped_and_the_others_go_on_unchanged(ref64, tiny_data, tmp_path):
    root, cfgs, _, fused = ref64
    bad = cfg64(1e300, 2)  # alpha * SI gradients overflow: NaN within the first check
    dirs = [tmp_path / "A", tmp_path / "X", tmp_path / "B"]
    with float64_models():
        res = train_group([cfgs[0], bad, cfgs[1]], dirs, data=tiny_data, progress=False, log=quiet)
        single = train_run(bad, tmp_path / "single_X", data=tiny_data, progress=False, log=quiet)
    assert [r["status"] for r in res] == ["completed", "diverged", "completed"]
    # recorded as the same run trained alone records it
    drop = ("train_seconds",)
    assert {k: v for k, v in res[1].items() if k not in drop} == {
        k: v for k, v in single.items() if k not in drop
    }
    assert res[1]["message"].startswith("loss became nan at epoch 1, step 2")  # dropped mid-epoch
    assert read_json(dirs[1] / "result.json")["status"] == "diverged"
    assert inspect_run_dir(dirs[1]).ok
    for pos, ref in ((0, 0), (2, 1)):
        assert_close_results(res[pos], fused[ref], rtol=1e-9)
        assert_close_state(params(dirs[pos]), params(root / "AB"[ref]), rtol=1e-9)


def _written(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and p.name != ".lock")


def test_group_refuses_a_held_lock_or_another_config_and_writes_nothing(ref64, tiny_data, tmp_path):
    root, cfgs, _, _ = ref64
    dirs = [tmp_path / "A", tmp_path / "B"]
    with run_lock(dirs[1]), pytest.raises(RunBusyError, match="another process is training"):
        train_group(cfgs, dirs, data=tiny_data, progress=False, log=quiet)
    assert _written(dirs[0]) == [] and _written(dirs[1]) == []
    # B's directory holds a finished run of another config (seed 1 vs 5): refused before any write
    with pytest.raises(ValueError, match="different config"):
        train_group([cfgs[0], cfgs[1].replace(seed=5)], [dirs[0], root / "B"], data=tiny_data, log=quiet)
    assert _written(dirs[0]) == []
    with pytest.raises(ValueError, match="differ in 'epochs'"):
        train_group([cfgs[0], cfgs[1].replace(epochs=3)], dirs, data=tiny_data, log=quiet)
    with pytest.raises(ValueError, match="unknown fused backend"):
        train_group(cfgs, dirs, data=tiny_data, log=quiet, backend="fast")
    assert _written(dirs[0]) == []


# --------------------------------------------------------------------------- grouping
def test_fuse_key_and_packing():
    a = make_config(None, {**TINY, "alpha": 1.0, "seed": 3})
    assert fuse_key(a) == fuse_key(a.replace(alpha=-2.0, seed=7))
    assert fuse_key(a) != fuse_key(a.replace(lr=0.05))
    with pytest.raises(ValueError, match="differ in 'lr'") as e:
        check_fusable([a, a.replace(seed=1), a.replace(lr=0.05)])
    assert "\n" not in str(e.value) and "runs 0 and 2" in str(e.value)

    def task(rid: str, cfg: TrainConfig) -> Task:
        return Task(rid, cfg.to_dict(), f"/tmp/{rid}")

    # spec order: lr 0.1 runs a, b, c; lr 0.05 runs d, e; then f at lr 0.1 again
    tasks = [
        task("a", a),
        task("d", a.replace(lr=0.05)),
        task("b", a.replace(seed=4)),
        task("e", a.replace(lr=0.05, seed=5)),
        task("c", a.replace(alpha=2.0)),
        task("f", a.replace(seed=9)),
    ]
    ids = [[t.run_id for t in (u.tasks if isinstance(u, GroupTask) else (u,))] for u in pack_tasks(tasks, 2)]
    assert ids == [["a", "b"], ["d", "e"], ["c", "f"]]
    ids3 = [[t.run_id for t in (u.tasks if isinstance(u, GroupTask) else (u,))] for u in pack_tasks(tasks, 3)]
    assert ids3 == [["a", "b", "c"], ["d", "e"], ["f"]]
    assert isinstance(pack_tasks(tasks, 3)[-1], Task)  # a group of one is a plain run
    assert pack_tasks(tasks, 1) == tasks
    with pytest.raises(ValueError, match="fuse must be"):
        pack_tasks(tasks, 0)


def test_cli_documents_and_checks_fuse(tmp_path):
    r = CliRunner().invoke(main, ["sweep", "--help"])
    assert r.exit_code == 0 and "--fuse R|auto" in r.output and "fused model" in r.output
    r = CliRunner().invoke(
        main,
        [
            "sweep",
            "--models",
            "resnet20",
            "--alphas=-1",
            "--seeds",
            "2",
            "--out",
            str(tmp_path),
            "--fuse",
            "0",
        ],
    )
    assert r.exit_code == 2 and "--fuse" in r.output and "expected an integer >= 1 or 'auto'" in r.output


def test_runs_that_fit_by_hand():
    # peaks 300 (R=1) and 500 (R=2): 200 bytes per run on a base of 100; 0.8 * 2000 = 1600 -> 7 runs
    assert runs_that_fit(300, 500, 2000, fraction=0.8) == 7
    assert runs_that_fit(300, 500, 2000, fraction=0.8, max_runs=4) == 4
    assert runs_that_fit(300, 500, 100, fraction=0.8) == 1  # nothing fits: still one run per task
    assert runs_that_fit(300, 300, 1000, fraction=1.0) == 64  # no growth measured: capped at max_runs
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        runs_that_fit(300, 500, 2000, fraction=0.0)


def test_fuse_auto_measures_groups_of_one_and_two_runs(monkeypatch):
    """The GPU path of auto_group_size, run on the CPU with a scripted memory probe."""
    steps: list[tuple[int, ...]] = []
    real_step = FusedRuns.step

    def step(self, x, y):
        steps.append(tuple(x.shape))
        return real_step(self, x, y)

    monkeypatch.setattr(FusedRuns, "step", step)
    peaks = iter([300 * 2**20, 500 * 2**20])  # 100 MiB base + 200 MiB per run
    calls: list[str] = []
    probe = MemoryProbe(
        start=lambda: calls.append("start"), peak=lambda: next(peaks), free=lambda: 2000 * 2**20
    )
    lines: list[str] = []
    cfg = TrainConfig(device="cpu", batch_size=4)
    assert auto_group_size(cfg, log=lines.append, probe=probe) == 7  # (0.8 * 2000 - 100) // 200
    assert steps == [(1, 4, 3, 32, 32), (2, 4, 3, 32, 32)] and calls == ["start", "start"]
    assert lines == ["--fuse auto: 7 runs per task (resnet20, batch 4: 200 MiB per run, 2.0 GiB free)"]


def test_fuse_auto_on_cpu_is_one_run_per_task():
    lines: list[str] = []
    cfg = TrainConfig(device="cpu")
    assert auto_group_size(cfg, log=lines.append) == 1
    assert lines == ["--fuse auto: 1 run per task on the CPU (fusing saves time only on a GPU)"]


# --------------------------------------------------------------------------- sweeps
def _sweep_args(out: Path, data: Path, fuse: int | str = 2) -> list[str]:
    return [
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
        "--fuse",
        str(fuse),
        "--no-summary",
        "--quiet",
        *TINY_SETS,
    ]


def _spec() -> SweepSpec:
    return SweepSpec(
        models=["resnet20"], alphas=[-1.0, 1.0], seeds=[0, 1], preset="paper", overrides=dict(TINY)
    )


def _per_run(df):
    return df.set_index("run_id")[METRICS].sort_index()


@pytest.fixture(scope="module")
def fused_sweep(tiny_data, tmp_path_factory):
    """`selectivity sweep --fuse 2` over 4 runs: 2 groups (alpha -1 and alpha 1, two seeds each)."""
    out = tmp_path_factory.mktemp("fused") / "sweep"
    r = CliRunner().invoke(main, _sweep_args(out, tiny_data))
    assert r.exit_code == 0, r.output
    assert "4 to run (inprocess executor, 2 tasks of at most 2 fused runs)" in r.output
    with open_store(out, log=quiet) as store:
        df = store.runs_df()
    return out, df


def test_fuse_auto_sweep_on_cpu_trains_one_run_per_task(tiny_data, tmp_path, fused_sweep):
    out = tmp_path / "auto"
    r = CliRunner().invoke(main, _sweep_args(out, tiny_data, fuse="auto"))
    assert r.exit_code == 0, r.output
    assert "--fuse auto: 1 run per task on the CPU" in r.output
    assert "4 to run (inprocess executor)" in r.output  # no fused tasks
    assert "fuse" not in read_json(out / "sweep.json")
    meta = read_json(out / "runs" / "resnet20_alpha-1_seed0" / "meta.json")
    assert "fused_group" not in meta
    with open_store(out, log=quiet) as store:
        df = store.runs_df()
    assert len(df) == 4 and (df.status == "completed").all()
    # one run per task gives the numbers of the fused sweep (the CPU loop backend is exact)
    ref = fused_sweep[1]
    numbers = [m for m in METRICS if m != "status"]
    np.testing.assert_allclose(
        _per_run(df)[numbers].to_numpy(float), _per_run(ref)[numbers].to_numpy(float), rtol=1e-5, atol=1e-6
    )


def _files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


def test_fused_sweep_writes_single_run_directories(fused_sweep, tiny_data, tmp_path):
    out, df = fused_sweep
    assert len(df) == 4 and (df.status == "completed").all()
    assert df[METRICS].notna().all().all()
    single = tmp_path / "single"
    cfg = make_config("paper", {**TINY, "model": "resnet20", "alpha": -1.0, "seed": 0})
    train_run(cfg, single, data=tiny_data, progress=False, log=quiet)
    groups = {}
    for rid in df.run_id:
        d = out / "runs" / rid
        h = inspect_run_dir(d)
        assert h.ok and h.status == "completed", h.describe()
        # the same files; the sweep adds its record and the worker's log to every run directory
        assert sorted(set(_files(d)) - {RECORD_NAME, "train.log"}) == _files(single)
        assert read_json(d / "config.json").keys() == read_json(single / "config.json").keys()
        assert read_json(d / "result.json").keys() == read_json(single / "result.json").keys()
        meta = read_json(d / "meta.json")
        assert set(meta) - set(read_json(single / "meta.json")) == {
            "fused_group",
            "fused_group_size",
            "fused_backend",
        }
        groups[rid] = meta["fused_group"]
        rows, ref_rows = read_jsonl(d / "metrics.jsonl"), read_jsonl(single / "metrics.jsonl")
        assert len(rows) == len(ref_rows) == 2 and all(r.keys() == ref_rows[0].keys() for r in rows)
        for which in ("last", "best"):
            a = torch.load(d / "checkpoints" / f"{which}.pt", weights_only=False)
            b = torch.load(single / "checkpoints" / f"{which}.pt", weights_only=False)
            assert a.keys() == b.keys() and a["model"].keys() == b["model"].keys()
            assert (a["optimizer"] is None) == (b["optimizer"] is None)
        # a fused run can be measured like any run: its best.pt loads into a model
        model, loaded_cfg, _ = train_mod.load_model_from(d)
        assert loaded_cfg == TrainConfig.from_dict(read_json(d / "config.json"))
    # spec order (alpha, then seed): each alpha's two seeds form a group
    assert groups["resnet20_alpha-1_seed0"] == ["resnet20_alpha-1_seed0", "resnet20_alpha-1_seed1"]
    assert groups["resnet20_alpha+1_seed1"] == ["resnet20_alpha+1_seed0", "resnet20_alpha+1_seed1"]
    assert read_json(out / "sweep.json")["fuse"] == 2


def test_failed_group_leaves_every_run_resumable(fused_sweep, tiny_data, tmp_path):
    ref_out, ref = fused_sweep
    calls: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    real_step = FusedRuns.step

    def failing_step(self, x, y, **kw):
        calls[self] = calls.get(self, 0) + 1
        if calls[self] == 5:  # the first step of epoch 2 (4 steps per epoch)
            raise RuntimeError("CUDA out of memory (simulated)")
        return real_step(self, x, y, **kw)

    out = tmp_path / "sweep"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FusedRuns, "step", failing_step)
        df = run_sweep(_spec(), out, data=str(tiny_data), progress=False, log=quiet, fuse=2)
    assert (df.status == "failed").all() and len(df) == 4
    for rid in df.run_id:
        res = read_json(out / "runs" / rid / "result.json")
        assert res["status"] == "failed" and "out of memory" in res["message"]
        last = torch.load(out / "runs" / rid / "checkpoints" / "last.pt", weights_only=False)
        assert last["epoch"] == 1 and len(read_jsonl(out / "runs" / rid / "metrics.jsonl")) == 1
        assert "the fused group failed" in (out / "runs" / rid / "train.log").read_text()
    said: list[str] = []
    df2 = run_sweep(_spec(), out, data=str(tiny_data), progress=False, log=said.append, fuse=2)
    assert any("4 to run" in m and "2 tasks" in m for m in said)
    # resumed fused again, with the same group: the very same numbers as the uninterrupted sweep
    assert _per_run(df2).equals(_per_run(ref))
    for rid in df2.run_id:
        assert_close_state(params(out / "runs" / rid), params(ref_out / "runs" / rid), rtol=0.0)
        meta = read_json(out / "runs" / rid / "meta.json")
        assert meta["resumed_with"]["fused_group_size"] == 2


class _FakeRay(types.ModuleType):
    """Enough of Ray to count remote calls; a remote call runs its function in-process."""

    def __init__(self) -> None:
        super().__init__("ray")
        self.calls: list = []
        self._up = False

    def is_initialized(self) -> bool:
        return self._up

    def init(self, **_kw) -> None:
        self._up = True

    def shutdown(self) -> None:
        self._up = False

    def remote(self, **_resources):
        fake = self

        def wrap(fn):
            class Remote:
                def remote(self, arg) -> int:
                    fake.calls.append((fn, arg))
                    return len(fake.calls) - 1  # the object ref: an index into calls

            return Remote()

        return wrap

    def wait(self, refs, num_returns=1, timeout=None):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref: int):
        fn, arg = self.calls[ref]
        return fn(arg)

    def cancel(self, ref, force=False) -> None:
        pass


def test_ray_executor_submits_one_task_per_group(fused_sweep, monkeypatch):
    out, ref = fused_sweep
    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    spec_runs = _spec().runs()
    tasks = [Task(r.run_id, r.config.to_dict(), str(out / "runs" / r.run_id)) for r in spec_runs]
    started: list[str] = []
    ex = RayExecutor(workers=2)
    got = list(ex.run(pack_tasks(tasks, 2), lambda t: started.append(t.run_id)))
    assert len(fake.calls) == 2 and all(isinstance(a, GroupTask) and len(a.tasks) == 2 for _, a in fake.calls)
    assert sorted(started) == sorted(t.run_id for t in tasks)
    # the runs are finished, so each group returns its runs' recorded results
    assert {t.run_id: r["test_accuracy"] for t, r in got} == dict(zip(ref.run_id, ref.test_accuracy))
    assert not fake.is_initialized()  # the instance it started is shut down


@pytest.mark.slow
def test_real_ray_fused_sweep_gives_the_same_results(fused_sweep, tiny_data, tmp_path):
    import ray

    _, ref = fused_sweep
    df = run_sweep(
        _spec(),
        tmp_path / "sweep",
        executor="ray",
        workers=2,
        data=str(tiny_data),
        progress=False,
        log=quiet,
        fuse=2,
    )
    assert not ray.is_initialized()
    assert _per_run(df).equals(_per_run(ref))
    meta = read_json(tmp_path / "sweep" / "runs" / "resnet20_alpha+1_seed0" / "meta.json")
    assert meta["fused_group"] == ["resnet20_alpha+1_seed0", "resnet20_alpha+1_seed1"]


@pytest.mark.slow
def test_process_pool_fused_sweep_gives_the_same_results(fused_sweep, tiny_data, tmp_path):
    _, ref = fused_sweep
    out = tmp_path / "sweep"
    df = run_sweep(
        _spec(), out, executor="process", workers=2, data=str(tiny_data), progress=False, log=quiet, fuse=2
    )
    assert _per_run(df).equals(_per_run(ref))
    assert read_json(out / "runs" / "resnet20_alpha-1_seed1" / "meta.json")["fused_group_size"] == 2


# --------------------------------------------------------------------------- real data, float32
@pytest.mark.slow
def test_real_data_fused_runs_match_separate_runs_within_seed_noise(tmp_path):
    """ResNet20 on 768 real CIFAR-10 images, 2 epochs, float32: 3 seeds fused vs separate.

    The group uses the grouped backend (grouped convolutions over the runs, the GPU's
    default): its float32 rounding differs from a single run's (the CPU's default loop
    backend repeats the single run's operations and would agree exactly). Fused and
    separate runs of one seed start from the same weights and see the same batches;
    training amplifies the rounding differences, so at worst the two end as two
    samples of the run's outcome distribution, no further apart than runs of different
    seeds. The tolerance is therefore measured here: 3 x the seed-to-seed standard
    deviation (pooled over the separate and the fused runs), and for the accuracy at
    least 3 x the binomial standard deviation of the difference of two accuracies on
    the same n test images, sqrt(2 p (1 - p) / n) (in case the seeds happen to agree).
    ~40 s on 2 cores once CIFAR-10 is decoded (other tests of the session decode it).
    """
    data = os.environ.get("SELECTIVITY_DATA")
    assert data, "SELECTIVITY_DATA is not set: this test needs a CIFAR-10 copy (see tests/conftest.py)"
    base = dict(
        model="resnet20",
        epochs=2,
        batch_size=64,
        train_subset=768,
        val_size=500,
        eval_subset=500,
        top_n=20,
        lr=0.1,
        alpha=0.5,
        num_threads=1,
    )
    cfgs = [make_config(None, {**base, "seed": s}) for s in (0, 1, 2)]
    sep = [
        train_run(c, tmp_path / f"sep{i}", data=data, progress=False, log=quiet) for i, c in enumerate(cfgs)
    ]
    dirs = [tmp_path / f"f{i}" for i in range(3)]
    fused = train_group(cfgs, dirs, data=data, progress=False, log=quiet, backend="grouped")
    assert all(r["status"] == "completed" for r in sep + fused)
    assert read_json(dirs[0] / "meta.json")["fused_backend"] == "grouped"
    # not vacuous: the grouped float32 runs are not bit-for-bit the separate ones
    assert any(
        not torch.equal(params(d)["conv1.weight"], params(tmp_path / f"sep{i}")["conv1.weight"])
        for i, d in enumerate(dirs)
    )

    def pooled_sd(key: str) -> float:
        a = np.array([r[key] for r in sep])
        b = np.array([r[key] for r in fused])
        return float(np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2))

    p = float(np.mean([r["test_accuracy"] for r in sep]))
    n = sep[0]["test_samples"]
    tol_acc = 3 * max(pooled_sd("test_accuracy"), math.sqrt(2 * p * (1 - p) / n))
    tol_si = 3 * pooled_sd("mean_selectivity")
    for s, f in zip(sep, fused):
        assert abs(f["test_accuracy"] - s["test_accuracy"]) <= tol_acc, (
            f["test_accuracy"],
            s["test_accuracy"],
            tol_acc,
        )
        assert abs(f["mean_selectivity"] - s["mean_selectivity"]) <= tol_si, (
            f["mean_selectivity"],
            s["mean_selectivity"],
            tol_si,
        )
