"""``benchmarks/gpu_check.py`` on the CPU (``--scale smoke``): every phase runs or says why not.

The script is meant for a GPU machine lent for a few minutes; this run keeps it from
rotting between such loans: the same code paths on tiny sizes, as a subprocess with a
wall-time budget, and its JSON output checked against numbers recomputed by hand from it.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
PHASES = ["env", "tests", "bench", "sample"]
BUDGET = 90  # the script stops when its work is done; the rest is headroom for a loaded machine
# Python's own start before the script's clock starts, and the interpreter's exit.
SLACK = 15


def _run(out: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    t = time.time()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(out), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUDGET + 60,
    )
    return proc, time.time() - t


@pytest.fixture(scope="module")
def smoke(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    proc, wall = _run(out, "--budget", str(BUDGET), "--data", str(tiny_data))
    report = json.loads((out / "gpu_check.json").read_text())
    return proc, wall, report, out


def test_every_phase_runs_within_the_budget(smoke):
    proc, wall, report, out = smoke
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert wall <= BUDGET + SLACK
    assert list(report["phases"]) == PHASES
    for name, phase in report["phases"].items():
        assert phase["status"] in ("ok", "skipped"), (name, phase["status"], phase["reason"])
        if phase["status"] == "skipped":
            assert phase["reason"], name  # a skipped phase says why
        assert 0 <= phase["seconds"] <= phase.get("cap_s", 0) + 2, name
    md = (out / "gpu_check.md").read_text()
    for name in PHASES:
        assert f"| {name} | {report['phases'][name]['status']} |" in md
    assert (out / "gpu_check.log").read_text().strip()


def test_env_and_tests_phases(smoke):
    _, _, report, _ = smoke
    env = report["phases"]["env"]["result"]
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    tests = report["phases"]["tests"]
    cases = tests["result"]["tests"]
    assert len(cases) >= 7  # the cuda-marked cases of test_cuda, test_syncfree, test_pwcca
    if not torch.cuda.is_available():  # all skipped here, with the reason
        assert tests["status"] == "skipped" and "CUDA not available" in tests["reason"]
        assert {c["outcome"] for c in cases} == {"skipped"}


def test_bench_numbers_follow_from_the_measured_step_times(smoke):
    _, _, report, _ = smoke
    bench = report["phases"]["bench"]["result"]
    batch = bench["batch"]
    ok = [r for r in bench["rows"] if r["status"] == "ok"]
    single = next(r for r in ok if r["variant"] == "eager")
    assert single["runs"] == 1
    for r in ok:
        sec = r["ms_per_step"] / 1e3
        assert r["images_per_s_per_run"] == pytest.approx(batch / sec, rel=0.01)
        assert r["images_per_s"] == pytest.approx(r["runs"] * batch / sec, rel=0.01)
        if r["variant"].startswith("fused"):  # R runs fused vs R single steps one after another
            t1 = single["ms_per_step"] / 1e3
            assert r["speedup_vs_sequential"] == pytest.approx(r["runs"] * t1 / sec, rel=0.02)
    for r in bench["rows"]:
        assert r["status"] == "ok" or r["note"], r  # every row not measured says why
    # The paper preset's grid: 20 alphas x 20 seeds, 200 epochs of 50,000 - 5,000 images.
    resnet = next(p for p in bench["projection"] if p["model"] == "resnet20")
    assert (resnet["runs"], resnet["epochs"], resnet["images_per_epoch"]) == (400, 200, 45_000)
    best = max(r["images_per_s"] for r in ok if r["model"] == "resnet20" and r["variant"] != "bf16")
    assert resnet["best_images_per_s"] == best
    assert resnet["device_hours"] == pytest.approx(400 * 200 * 45_000 / best / 3600, rel=0.01)


def test_sample_trains_the_paper_alphas_as_one_group(smoke):
    _, _, report, _ = smoke
    sample = report["phases"]["sample"]
    if sample["status"] == "skipped":
        pytest.skip(f"the machine was too slow for one epoch in the smoke budget: {sample['reason']}")
    res = sample["result"]
    assert 1 <= res["epochs"] <= 2 and res["epochs"] <= res["epochs_fit"]
    assert [(r["alpha"], r["seed"]) for r in res["per_run"]] == [(-1.0, 0), (0.0, 0), (2.0, 0)]
    units = 16 + 6 * (16 + 32 + 64)  # ResNet20's ReLU sites: stem, then 3 stages x 3 blocks x 2
    for r in res["per_run"]:
        assert r["status"] == "completed" and r["epochs_completed"] == res["epochs"]
        assert 1 <= r["best_epoch"] <= res["epochs"]
        assert 0.0 <= r["test_accuracy"] <= 1.0 and 0.0 <= r["mean_selectivity"] <= 1.0
        assert r["units"] == units and 0 <= r["dead_units"] <= units
    for a in res["per_alpha"]:
        run = next(r for r in res["per_run"] if r["alpha"] == a["alpha"])
        assert a["n"] == 1 and a["test_accuracy"] == run["test_accuracy"]


def test_a_failing_phase_is_reported_and_skipped_phases_say_so(tmp_path):
    proc, wall = _run(
        tmp_path, "--budget", "20", "--skip", "tests,bench", "--data", str(tmp_path / "missing")
    )
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert wall <= 20 + SLACK
    phases = report["phases"]
    assert list(phases) == PHASES
    assert phases["tests"]["status"] == phases["bench"]["status"] == "skipped"
    assert phases["tests"]["reason"] == "--skip"
    assert phases["sample"]["status"] in ("failed", "skipped") and phases["sample"]["reason"]
    if phases["sample"]["status"] == "failed":  # the data are missing: said, and the exit status says it
        assert "missing" in phases["sample"]["reason"] and proc.returncode == 1
