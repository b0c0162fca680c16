"""What every per-run analysis of a sweep shares: the images, the data hint, the runs.

* :func:`select_images`: the class-stratified subset of test images every run of a sweep
  is probed with (the same labels and seed give the same subset);
* :func:`read_data_hint`: the dataset location recorded in ``sweep.json``;
* :func:`completed_runs`: the sweep's completed runs, read from its database, each
  checked to have its directory inside the sweep;
* :func:`settings_key`: the key results are stored under (``RUN/<analysis>/<key>.json``);
* the checks of the analysis files' schemas (:func:`expect_number` and its siblings)
  and :func:`read_record`, which sets a damaged file aside;
* :func:`default_key`: which of several stored settings the report shows.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data import stratified_split
from ..run.files import DamagedFileError, RunFiles, SweepFiles, read_json
from ..sweep.store import AnalysisTables, open_store, set_aside_damaged

__all__ = [
    "select_images",
    "read_data_hint",
    "completed_runs",
    "settings_key",
    "read_record",
    "default_key",
    "expect_dict",
    "expect_list",
    "expect_str",
    "expect_int",
    "expect_number",
    "expect_json",
]


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
    note: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """The sweep's runs whose status is ``completed`` and whose directory is there.

    A run id read from the database is joined to ``runs/`` only if it is one plain name
    and the directory, links resolved, lies inside the sweep; a completed run whose
    directory is gone (deleted, moved) is skipped. Each skipped run gets one line.

    Parameters
    ----------
    sweep_dir : path
        Sweep directory.
    analyses : iterable of AnalysisTables
        Tables of per-run analyses to sync while the database is open.
    log : callable
        Receives the database's one-line messages (damaged runs, copies of a run).
    note : callable, optional
        Receives the lines about skipped runs (default: ``log``).
    """
    note = note or log
    files = SweepFiles(sweep_dir)
    with open_store(files.root, log=log, analyses=analyses) as store:
        runs = store.runs_df()
    if runs.empty:
        return runs
    runs = runs[runs["status"] == "completed"]
    keep = []
    for rid in runs["run_id"]:
        try:
            root = files.run(rid).root
        except ValueError as e:
            note(f"{files.db} lists a completed run {rid!r} that is not a run id ({e}): skipped")
            keep.append(False)
            continue
        if not files.inside(root):
            note(f"{root} lies outside {files.root} (a link?): run {rid!r} skipped")
            keep.append(False)
        elif not RunFiles(root).config.exists():
            note(f"run {rid} is completed in {files.db}, but {root} is missing: skipped")
            keep.append(False)
        else:
            keep.append(True)
    return runs[np.asarray(keep, dtype=bool)]


# --------------------------------------------------------------------------- stored results
def settings_key(settings: Mapping[str, Any]) -> str:
    """The key a result is stored under: 12 hex digits of the SHA-1 of its settings as JSON.

    The settings are dumped with sorted keys and no spaces, so equal settings give equal
    keys whatever their order.
    """
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def read_record(
    path: Path,
    check: Callable[[Any, Path], dict],
    run: RunFiles,
    log: Callable[[str], None],
    command: str,
) -> dict | None:
    """A result file read and checked by ``check``; None if it is missing or damaged.

    A damaged file (not JSON, or not of its schema) is set aside in ``RUN/damaged/``
    and named in one line through ``log``; the run is then evaluated again.
    """
    try:
        return check(read_json(path), path)
    except FileNotFoundError:
        return None
    except DamagedFileError as e:
        set_aside_damaged(run, path, e, log, f"`selectivity {command}` evaluates the run again")
        return None


def default_key(sizes: pd.DataFrame, preferred: str | None = None) -> str | None:
    """Which stored settings a sweep's report and ``results`` show.

    ``preferred`` (the settings of the sweep's spec) when it has results; otherwise the
    settings evaluated on the most runs, then with the most measurements, then on the
    most images, then the smallest key.

    Parameters
    ----------
    sizes : pandas.DataFrame
        One row per key: ``settings_key``, ``runs``, ``measurements``, ``images``.
    preferred : str, optional
    """
    if sizes.empty:
        return None
    if preferred is not None and preferred in set(sizes["settings_key"]):
        return preferred
    order = sizes.sort_values(
        ["runs", "measurements", "images", "settings_key"], ascending=[False, False, False, True]
    )
    return str(order["settings_key"].iloc[0])


# --------------------------------------------------------------------------- schema checks
def _damaged(where: Path, name: str, value: Any, expected: str) -> DamagedFileError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return DamagedFileError(f"{where} is damaged ({name} is {shown}, expected {expected})")


def expect_dict(value: Any, where: Path, name: str) -> dict:
    """``value`` if it is a JSON object, else :class:`DamagedFileError` naming the file."""
    if not isinstance(value, dict):
        raise _damaged(where, name, value, "an object")
    return value


def expect_list(value: Any, where: Path, name: str) -> list:
    """``value`` if it is a JSON array."""
    if not isinstance(value, list):
        raise _damaged(where, name, value, "a list")
    return value


def expect_str(value: Any, where: Path, name: str, none: bool = False) -> str | None:
    """``value`` if it is a string (or None with ``none``)."""
    if value is None and none:
        return None
    if not isinstance(value, str):
        raise _damaged(where, name, value, "a string" + (" or null" if none else ""))
    return value


def expect_int(value: Any, where: Path, name: str, lo: int, hi: int) -> int:
    """``value`` if it is an integer (not a bool) in ``lo..hi``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _damaged(where, name, value, f"an integer in {lo}..{hi}")
    return value


def expect_number(
    value: Any,
    where: Path,
    name: str,
    lo: float = -math.inf,
    hi: float = math.inf,
    none: bool = False,
) -> float | None:
    """``value`` as a float if it is a finite number in [``lo``, ``hi``] (or None with ``none``)."""
    if value is None and none:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float
            ok = False
        else:
            ok = math.isfinite(number) and lo <= number <= hi
    if not ok:
        bounds = "a finite number" + (
            f" in [{lo:g}, {hi:g}]" if math.isfinite(lo) or math.isfinite(hi) else ""
        )
        raise _damaged(where, name, value, bounds + (" or null" if none else ""))
    return number


def expect_json(value: Any, where: Path, name: str, depth: int = 0) -> Any:
    """``value`` if it is plain JSON of finite numbers (no NaN or infinity), at most 20 levels deep."""
    if depth > 20:
        raise _damaged(where, name, "...", "at most 20 levels of nesting")
    if isinstance(value, float) and not math.isfinite(value):
        raise _damaged(where, name, value, "finite numbers")
    if isinstance(value, dict):
        for k, v in value.items():
            expect_json(v, where, f"{name}.{k}", depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            expect_json(v, where, f"{name}[{i}]", depth + 1)
    elif not (value is None or isinstance(value, (str, int, float))):
        raise _damaged(where, name, value, "JSON")
    return value
