"""What every per-run analysis of a sweep shares: the images, the data hint, the runs.

* :func:`select_images`: the class-stratified subset of test images every run of a sweep
  is probed with (the same labels and seed give the same subset);
* :func:`read_data_hint`: the dataset location recorded in ``sweep.json``;
* :func:`completed_runs`: the sweep's completed runs, read from its database.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import stratified_split
from ..run.files import DamagedFileError, SweepFiles, read_json
from ..sweep.store import AnalysisTables, open_store

__all__ = ["select_images", "read_data_hint", "completed_runs"]


def select_images(labels, n_images: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of a class-stratified subset of ``n_images`` samples.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
        Labels of the test split.
    n_images : int or None
        Subset size; ``None`` or ``>= N`` selects every sample.
    seed : int, default 0
        Seed of the stratified draw; the same labels and seed give the same subset, so
        every run of a sweep is probed with identical images.

    Returns
    -------
    numpy.ndarray
        Sorted int64 indices.
    """
    labels = np.asarray(labels)
    if n_images is None or n_images >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    if n_images < 2:
        raise ValueError(f"n_images must be >= 2, got {n_images}")
    _, keep = stratified_split(labels, val_size=int(n_images), seed=seed)
    return np.sort(np.asarray(keep, dtype=np.int64))


def read_data_hint(sweep_dir: str | os.PathLike) -> str | None:
    """The ``data`` location recorded in the sweep's ``sweep.json`` (None if absent or unreadable)."""
    try:
        data = read_json(SweepFiles(sweep_dir).spec).get("data")
    except (FileNotFoundError, DamagedFileError):
        return None
    return data if isinstance(data, str) else None


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def completed_runs(
    sweep_dir: str | os.PathLike,
    *,
    analyses: Iterable[AnalysisTables] = (),
    log: Callable[[str], None] = _stderr,
) -> pd.DataFrame:
    """The sweep's runs whose status is ``completed`` (the runs frame of its database).

    Parameters
    ----------
    sweep_dir : path
        Sweep directory.
    analyses : iterable of AnalysisTables
        Tables of per-run analyses to sync while the database is open.
    log : callable
        Receives the database's one-line messages (damaged runs, copies of a run).
    """
    with open_store(Path(sweep_dir), log=log, analyses=analyses) as store:
        runs = store.runs_df()
    return runs[runs["status"] == "completed"] if not runs.empty else runs
