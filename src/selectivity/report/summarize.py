"""The sweep summary: ``summary.csv``/``summary.txt`` and the standard figures as PNG.

Written by ``selectivity summarize`` and, after the runs, by ``selectivity sweep``.
Reads only the run records (the database, synced from the run directories); the
figure set is :func:`selectivity.plots.sweep_figure_specs`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..plots import save_figure, sweep_figure_specs
from ..rundir import SweepFiles
from ..summary import format_summary, summary_table, write_summary
from ..sweep import open_store

__all__ = ["summarize_sweep"]


def summarize_sweep(
    sweep_dir: str | os.PathLike, log: Callable[[str], None] = print, figures: bool = True
) -> dict[str, Path]:
    """Write the summary table (CSV, text) and the first figures (PNG) of a sweep.

    Parameters
    ----------
    sweep_dir : path
        Sweep directory.
    log : callable, default print
        Receives the formatted table and one-line messages.
    figures : bool, default True
        Also draw ``SWEEP/figures/<key>.png``.

    Returns
    -------
    dict of str to Path
        ``"csv"``, ``"txt"`` and one entry per figure key; empty when no run is recorded.
    """
    files = SweepFiles(sweep_dir)
    with open_store(files.root) as store:
        runs = store.runs_df()
        layers = store.layers_df()
    out: dict[str, Path] = {}
    if runs.empty:
        log("no runs recorded yet")
        return out
    out.update(write_summary(runs, files.root))
    log(format_summary(summary_table(runs)))
    if figures:
        completed = layers[layers.status == "completed"] if not layers.empty else None
        for spec in sweep_figure_specs(runs, completed):
            if spec.draw is not None:
                out[spec.key] = save_figure(spec.draw(), files.figures / f"{spec.key}.png")
        log(f"figures in {files.figures}")
    return out
