"""The evaluation steps a sweep spec names, run after its training: robustness, then geometry.

``selectivity sweep`` calls :func:`run_steps` once the runs are trained; it is the same
code a script uses after :func:`selectivity.sweep.run_sweep`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..sweep.spec import SweepSpec
from .geometry import GeometrySettings, sweep_geometry
from .robustness import RobustnessSettings, sweep_robustness

__all__ = ["run_steps"]


def _tuples(d: dict) -> dict:
    """Settings with list values as tuples (the settings classes' field types)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def run_steps(
    sweep_dir: str | os.PathLike,
    spec: SweepSpec,
    data: str | os.PathLike | None = None,
    *,
    corrupted: str | os.PathLike | None = None,
    robustness: bool = True,
    geometry: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Run the spec's robustness and geometry steps on the sweep's completed runs.

    Parameters
    ----------
    sweep_dir : path
        The sweep directory.
    spec : SweepSpec
        Its ``robustness`` and ``geometry`` settings (None: that step is not run).
    data : path, optional
        Dataset location (default: the one recorded in ``sweep.json``).
    corrupted : path, optional
        A CIFAR-10-C or Tiny ImageNet-C directory the robustness step reads instead of
        generating the corruptions (``RobustnessSettings.corrupted``).
    robustness, geometry : bool
        False skips that step even when the spec names it.
    progress : bool
        Progress bars.
    log : callable
        Receives one-line messages.

    Returns
    -------
    list of str
        The steps that ran, in order.

    Raises
    ------
    ValueError
        Settings the step refuses (one line, naming what was expected).
    """
    done = []
    if spec.robustness is not None and robustness:
        settings = _tuples(dict(spec.robustness))
        if corrupted is not None:
            settings["corrupted"] = str(Path(corrupted))
        sweep_robustness(sweep_dir, RobustnessSettings(**settings), data, progress=progress, log=log)
        done.append("robustness")
    if spec.geometry is not None and geometry:
        sweep_geometry(
            sweep_dir, GeometrySettings(**_tuples(dict(spec.geometry))), data, progress=progress, log=log
        )
        done.append("geometry")
    return done
