"""Shared fixtures. Real-data tests find CIFAR-10 through $SELECTIVITY_DATA (CI sets it)."""

import os
import shutil
from pathlib import Path

import pytest

from helpers import N_TEST, TinySweep, tiny_spec, write_tiny_cifar
from selectivity.sweep import run_sweep


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped, with the reason shown, where no GPU is visible."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="CUDA not available: a `cuda`-marked test needs a GPU (benchmarks/gpu_check.py runs them there)"
    )
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cifar_data() -> Path:
    """Directory holding a CIFAR-10 copy; skips (with the reason shown) when unset."""
    d = os.environ.get("SELECTIVITY_DATA")
    if not d:
        pytest.skip("SELECTIVITY_DATA is not set: real-data test needs a CIFAR-10 copy")
    return Path(d)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Decoded-array cache for the whole session, outside the user's cache unless set."""
    if "SELECTIVITY_CACHE" not in os.environ:
        os.environ["SELECTIVITY_CACHE"] = str(tmp_path_factory.mktemp("selectivity-cache"))
    yield


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A random CIFAR-10 copy: 150 training and ``N_TEST`` test images. Read only."""
    return write_tiny_cifar(tmp_path_factory.mktemp("tinydata"), n_test=N_TEST)


@pytest.fixture(scope="session")
def tiny_sweep(tiny_data, tmp_path_factory) -> TinySweep:
    """The finished two-run sweep of ``tiny_spec()`` on ``tiny_data``, trained once a session.

    Read only: whatever changes a sweep works on a copy (``tiny_sweep_copy``, or its own
    ``shutil.copytree`` of ``tiny_sweep.path``).
    """
    out = tmp_path_factory.mktemp("tinysweep") / "sweep"
    df = run_sweep(
        tiny_spec(), out, data=str(tiny_data), progress=False, summarize=False, log=lambda _m: None
    )
    assert (df.status == "completed").all() and len(df) == 2, df[["run_id", "status", "message"]]
    return TinySweep(out, df.set_index("run_id"))


@pytest.fixture
def tiny_sweep_copy(tiny_sweep, tmp_path) -> Path:
    """This test's own copy of the shared tiny sweep, at ``tmp_path / "sweep"``."""
    return Path(shutil.copytree(tiny_sweep.path, tmp_path / "sweep"))
