"""Shared fixtures. Real-data tests find CIFAR-10 through $SELECTIVITY_DATA (CI sets it)."""

import os
from pathlib import Path

import pytest


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
