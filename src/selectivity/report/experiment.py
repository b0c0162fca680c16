"""A whole experiment from Python: train the sweep, evaluate its robustness, write its summary.

:func:`run_experiment` is what ``selectivity sweep`` does, as one library call:

1. check the grid, the preset's analysis settings and the data (nothing is trained when
   one is wrong);
2. train (or resume) every run (:func:`selectivity.sweep.run_sweep`);
3. evaluate the robustness of the completed runs when the sweep asks for it
   (:attr:`selectivity.sweep.SweepSpec.robustness`,
   :func:`selectivity.evaluate.robustness.sweep_robustness`), reading the corrupted
   images from a CIFAR-10-C or Tiny ImageNet-C directory when one is given;
4. measure their geometry when the sweep asks for it
   (:attr:`selectivity.sweep.SweepSpec.geometry`,
   :func:`selectivity.evaluate.geometry.sweep_geometry`);
5. write the summary table and figures (:func:`selectivity.report.summarize_sweep`).

Every step resumes: calling it again skips finished runs and reuses stored results.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..data import find_corrupted
from ..evaluate.geometry import GeometrySettings, sweep_geometry
from ..evaluate.robustness import RobustnessSettings, sweep_robustness
from ..run.config import ConfigError
from ..sweep import SweepSpec, run_sweep
from .summary import summarize_sweep

__all__ = ["ExperimentResult", "geometry_settings", "robustness_settings", "run_experiment"]


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` did.

    Attributes
    ----------
    runs : pandas.DataFrame
        The sweep's runs table after training (one row per run, ``status`` among them).
    robustness : pandas.DataFrame or None
        Per-run robustness summary (clean, mean corruption and relative corruption
        accuracy); None when the sweep asks for none, it was skipped or no run completed.
    geometry : pandas.DataFrame or None
        The geometry rows (:func:`selectivity.evaluate.geometry.geometry_frame`); None as
        for ``robustness``.
    summary : dict of str to Path
        Files written by :func:`selectivity.report.summarize_sweep` (empty when skipped).
    """

    runs: pd.DataFrame
    robustness: pd.DataFrame | None = None
    geometry: pd.DataFrame | None = None
    summary: dict[str, Path] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        """Number of failed runs."""
        return int((self.runs["status"] == "failed").sum()) if not self.runs.empty else 0


def robustness_settings(spec: SweepSpec, device: str = "auto") -> RobustnessSettings | None:
    """The sweep's robustness settings, checked; None when the sweep asks for none.

    ``device`` is used unless the settings name one.

    Raises
    ------
    ConfigError
        An unknown setting (with the closest known name) or a bad value.
    """
    if spec.robustness is None:
        return None
    _check_keys("robustness", spec.robustness, RobustnessSettings)
    try:
        return RobustnessSettings(**{"device": device, **spec.robustness})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"robustness settings of the sweep: {e}") from e


def geometry_settings(
    spec: SweepSpec, robustness: RobustnessSettings | None = None
) -> GeometrySettings | None:
    """The sweep's geometry settings, checked; None when the sweep asks for none.

    The perturbations and image subset default to those of the robustness step
    (:meth:`GeometrySettings.matching`; ``robustness`` default: the sweep's, else the
    robustness defaults); the sweep's ``geometry`` entries replace them.

    Raises
    ------
    ConfigError
        An unknown setting (with the closest known name) or a bad value.
    """
    if spec.geometry is None:
        return None
    _check_keys("geometry", spec.geometry, GeometrySettings)
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.geometry.items()}
    if robustness is None:
        robustness = robustness_settings(spec) or RobustnessSettings()
    try:
        return GeometrySettings.matching(robustness, **values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"geometry settings of the sweep: {e}") from e


def _check_keys(what: str, given: dict, cls: type) -> None:
    import difflib

    known = [f.name for f in dataclasses.fields(cls)]
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown {what} setting {key!r}{hint} in the sweep; known: {', '.join(known)}")


def run_experiment(
    spec: SweepSpec,
    sweep_dir: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    robustness: bool = True,
    geometry: bool = True,
    corrupted: str | os.PathLike | None = None,
    summary: bool = True,
    figures: bool = True,
    executor: str | None = None,
    workers: int | None = None,
    address: str | None = None,
    cpus_per_run: float = 1,
    gpus_per_run: float = 0,
    fuse: int | str = 1,
    archive_mismatched: bool = False,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] = print,
    tracker: str | None = None,
    executor_options: dict | None = None,
) -> ExperimentResult:
    """Train a sweep, evaluate its robustness and write its summary (resumable).

    Parameters
    ----------
    spec : SweepSpec
        The grid; checked, with its robustness settings, before anything is trained.
    sweep_dir : path
        Sweep directory (created).
    data : path, optional
        Dataset location (default: ``$SELECTIVITY_DATA``, the cache, a download).
    robustness : bool, default True
        Evaluate the completed runs' robustness when ``spec.robustness`` asks for it.
    geometry : bool, default True
        Measure the completed runs' geometry when ``spec.geometry`` asks for it.
    corrupted : path, optional
        A CIFAR-10-C or Tiny ImageNet-C directory the robustness step reads instead of
        generating the corruptions (``RobustnessSettings.corrupted``).
    summary, figures : bool, default True
        Write the summary table (and its figures) at the end.
    executor : str, optional
        ``"inprocess"``, ``"process"``, ``"ray"`` or ``"slurm"``; default the spec's
        suggestion, else ``"inprocess"``.
    workers : int, optional
        Parallel runs; default the spec's suggestion.
    address, cpus_per_run, gpus_per_run, fuse, archive_mismatched, progress, log, tracker, executor_options
        See :func:`selectivity.sweep.run_sweep`.
    device : str, default "auto"
        Device of the robustness evaluation, unless ``spec.robustness`` names one (the
        runs' training device is their config's).

    Returns
    -------
    ExperimentResult

    Raises
    ------
    ConfigError
        A bad grid or robustness setting (before any training), or runs in ``sweep_dir``
        trained with another configuration.
    ValueError, OSError
        Data that cannot be loaded, or a missing corrupted-images directory (before any
        training).
    """
    spec.validate()
    settings = robustness_settings(spec, device) if robustness else None
    if settings is not None and corrupted is not None:
        try:
            settings = dataclasses.replace(settings, corrupted=str(corrupted))
        except ValueError as e:
            raise ConfigError(f"robustness settings of the sweep: {e}") from e
    if settings is not None and settings.corrupted:
        find_corrupted(settings.corrupted)  # a missing directory fails before any training
    geo = geometry_settings(spec, settings) if geometry else None
    runs = run_sweep(
        spec,
        sweep_dir,
        executor=executor or spec.executor or "inprocess",
        workers=workers or spec.workers,
        data=None if data is None else str(data),
        address=address,
        cpus_per_run=cpus_per_run,
        gpus_per_run=gpus_per_run,
        progress=progress,
        log=log,
        archive_mismatched=archive_mismatched,
        fuse=fuse,
        tracker=tracker,
        executor_options=executor_options,
    )
    result = ExperimentResult(runs)
    if settings is not None and (runs["status"] == "completed").any():
        result.robustness = sweep_robustness(sweep_dir, settings, data, progress=progress, log=log)
    if geo is not None and (runs["status"] == "completed").any():
        result.geometry = sweep_geometry(sweep_dir, geo, data, progress=progress, log=log)
    if summary:
        result.summary = summarize_sweep(sweep_dir, log=log, figures=figures)
    return result
