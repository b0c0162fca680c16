"""Chaos: `robustness`, `geometry` and `corrupt` killed (SIGKILL) at random moments, then rerun.

The rerun must end in exactly what an uninterrupted run writes: the same results for
every run of the session's tiny sweep (``tiny_sweep``), the same files, byte for byte,
in a `corrupt` directory, and no stray temporary files.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import RUN_A, RUN_B
from selectivity.cli import main
from selectivity.run.files import read_json

pytestmark = pytest.mark.slow

SRC = str(Path(__file__).resolve().parents[2] / "src")
ROB = [
    "--images",
    "20",
    "--corruptions",
    "gaussian_noise,contrast",
    "--severities",
    "1,3",
    "--attacks",
    "fgsm,pgd",
    "--epsilons",
    "1/255,8/255",
    "--pgd-steps",
    "2",
    "--batch-size",
    "10",
    "--quiet",
]
GEO = [
    "--images",
    "20",
    "--layers",
    "act1,layer1.0.act1",
    "--corruptions",
    "gaussian_noise,contrast",
    "--severities",
    "3",
    "--attacks",
    "pgd",
    "--epsilons",
    "2/255",
    "--pgd-steps",
    "2",
    "--gradient-images",
    "4",
    "--batch-size",
    "10",
    "--quiet",
]
CORRUPT = [
    "--images",
    "30",
    "--corruptions",
    "gaussian_noise,contrast,fog,pixelate,jpeg_compression",
    "--quiet",
]


def _start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "selectivity.cli", *map(str, args)]
    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, env=env
    )


def _kill_at_random(
    proc: subprocess.Popen, started, rng: random.Random, within: float = 1.5, timeout: float = 600
) -> bool:
    """Wait until ``started()`` (work is under way), then SIGKILL after a random delay in [0, ``within``).

    Returns whether the kill landed before the process ended by itself.
    """
    deadline = time.time() + timeout
    while not started() and proc.poll() is None:
        if time.time() > deadline:
            raise TimeoutError("the command did not start working")
        time.sleep(0.02)
    try:
        proc.wait(timeout=rng.uniform(0.0, within))
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        return True


def _results(sweep: Path, analysis: str) -> dict[str, dict]:
    """Every result of ``analysis`` in the sweep, without its timing and device."""
    out = {}
    for rid in (RUN_A, RUN_B):
        for p in sorted((sweep / "runs" / rid / analysis).glob("*.json")):
            res = read_json(p)
            out[f"{rid}/{p.name}"] = {k: v for k, v in res.items() if k not in ("seconds", "device")}
    return out


@pytest.mark.parametrize(
    ("command", "args", "progress"),
    [
        ("robustness", ROB, "robustness/*.partial.json"),
        ("geometry", GEO, "geometry/*.json"),
    ],
)
def test_killed_analysis_reruns_to_the_uninterrupted_result(
    command, args, progress, tiny_sweep, tiny_data, tmp_path
):
    ref = Path(shutil.copytree(tiny_sweep.path, tmp_path / "ref"))
    t0 = time.perf_counter()
    r = CliRunner().invoke(main, [command, str(ref), "--data", str(tiny_data), *args])
    took = time.perf_counter() - t0
    assert r.exit_code == 0, r.output
    want = _results(ref, command)
    assert len(want) == 2

    sweep = Path(shutil.copytree(tiny_sweep.path, tmp_path / "sweep"))
    rng = random.Random(22 if command == "robustness" else 23)
    kills = 0
    # kills within the time the work takes on this machine (fast or loaded alike)
    for _ in range(6):
        proc = _start(command, sweep, "--data", tiny_data, *args)
        kills += _kill_at_random(
            proc, lambda: any(sweep.glob(f"runs/*/{progress}")), rng, within=max(0.05, 0.5 * took)
        )
        if kills >= 2:
            break
    assert kills >= 1  # the test really interrupted the command
    final = _start(command, sweep, "--data", tiny_data, *args)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err.decode()
    assert _results(sweep, command) == want
    assert not list(sweep.rglob("*.partial.json"))


def test_killed_corrupt_reruns_to_the_uninterrupted_directory(tiny_data, tmp_path):
    ref = tmp_path / "ref"
    r = CliRunner().invoke(main, ["corrupt", "--data", str(tiny_data), "--out", str(ref), *CORRUPT])
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    rng = random.Random(9)
    kills = 0
    for _ in range(2):
        proc = _start("corrupt", "--data", tiny_data, "--out", out, *CORRUPT)
        kills += _kill_at_random(proc, lambda: out.exists() and any(out.iterdir()), rng)
    assert kills >= 1
    final = _start("corrupt", "--data", tiny_data, "--out", out, *CORRUPT)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err.decode()

    def files(d: Path) -> dict[str, bytes]:
        return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    assert files(out) == files(ref)  # byte for byte, no stray files
