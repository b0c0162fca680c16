"""One self-contained HTML report of a sweep: tables, statistics, every paper figure.

:func:`build_report` writes ``OUT/report.html`` (figures embedded as base64 PNG,
inline CSS, no script and no external resource, so it opens offline and can be mailed
as one file), every figure as ``OUT/figures/*.png`` and every table as
``OUT/tables/*.csv``. The package's modules are its steps:

1. :mod:`.collect`: :func:`collect` reads the sweep's stored records only (database
   synced from the run directories, ``sweep.json``, each run's ``meta.json``);
   :func:`settings_of` splits the runs into settings (one model with one activation
   function and leaky-ReLU slope; settings are never pooled).
2. :mod:`.tables`: :func:`compute_statistics` runs every test once;
   :func:`make_tables` builds the summary, test, per-layer, configuration and
   provenance tables from it.
3. :mod:`.figures`: :func:`make_figures` draws the paper's figures with
   :mod:`selectivity.plots.selectivity`, passing the same test results for the significance marks;
   :mod:`.robustness` (paper 2) and :mod:`.mechanisms` make the tables and figures of the
   Robustness and Mechanisms sections from the sweep's stored results.
4. :mod:`.html`: :func:`render_html` fills a Jinja2 template with autoescaping on; every
   section is made of the same plain table and figure items, none of HTML.

:mod:`.summary` writes the lighter sweep summary (``summary.csv``/``.txt`` and four
figures) that ``selectivity sweep`` and ``selectivity summarize`` produce;
:func:`run_experiment` (:mod:`.experiment`) is ``selectivity sweep`` as one call: train,
robustness, summary.

The CCA analysis (paper Fig. 3) is the one part that needs the data and the
checkpoints (:func:`selectivity.evaluate.cca.sweep_cca`); it runs only with
``cca=True`` and is replaced by a note when the data, the checkpoints or the alpha = 0
runs are missing. Any missing piece (one alpha, no baseline, every run of an alpha
failed, a figure that cannot be drawn) becomes a short note in its section, never an
exception.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..analysis.stats import Family
from ..evaluate.cca import CCADistances, Mode, PWCCAMethod, sweep_cca
from .collect import TITLE, FigureItem, ReportData, Setting, TableItem, collect, settings_of
from .experiment import ExperimentResult, robustness_settings, run_experiment
from .figures import make_figures
from .html import render_html
from .mechanisms import mechanism_items
from .robustness import robustness_items
from .summary import summarize_sweep
from .tables import ReportStats, compute_statistics, make_tables

__all__ = [
    "TITLE",
    "ReportData",
    "Setting",
    "FigureItem",
    "TableItem",
    "CCADistances",
    "ReportStats",
    "collect",
    "settings_of",
    "compute_statistics",
    "make_tables",
    "make_figures",
    "run_cca",
    "render_html",
    "build_report",
    "summarize_sweep",
    "ExperimentResult",
    "robustness_settings",
    "run_experiment",
]


def run_cca(
    data: ReportData,
    dataset: str | os.PathLike | None = None,
    n_images: int = 2000,
    mode: Mode = "spatial_mean",
    device: str = "cpu",
    max_pairs: int | None = None,
    min_ratio: float | None = 5.0,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    method: PWCCAMethod = "svcca",
) -> CCADistances:
    """CCA distances of a sweep for the report, or a note saying why they are missing.

    Reuses ``SWEEP/analysis/cca_distances.csv`` when it was computed with the same
    settings on the same pairs of runs (e.g. by ``selectivity cca``); see
    :func:`selectivity.evaluate.cca.sweep_cca`. The dataset defaults to the one
    recorded in ``sweep.json``.
    """
    dataset = dataset if dataset is not None else data.sweep.get("data")
    return sweep_cca(
        data.sweep_dir,
        data.runs,
        dataset,
        n_images,
        mode,
        device,
        max_pairs,
        min_ratio,
        progress,
        log,
        method,
    )


def _write_tables(tables: dict[str, list[TableItem]], out_dir: Path) -> None:
    tdir = out_dir / "tables"
    tdir.mkdir(parents=True, exist_ok=True)
    for items in tables.values():
        for t in items:
            if t.data is None or (t.data.empty and len(t.data.columns) == 0):
                continue
            t.path = tdir / f"{t.id}.csv"
            t.data.to_csv(t.path, index=False)


def build_report(
    sweep_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    cca: bool = False,
    data: str | os.PathLike | None = None,
    *,
    cca_images: int = 2000,
    cca_mode: Mode = "spatial_mean",
    cca_max_pairs: int | None = None,
    cca_min_ratio: float | None = 5.0,
    cca_method: PWCCAMethod = "svcca",
    family: Family = "sign",
    welch: bool = False,
    device: str = "cpu",
    n_resamples: int = 2000,
    dpi: int = 120,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write ``out_dir/report.html`` (self-contained), ``figures/*.png`` and ``tables/*.csv``.

    Parameters
    ----------
    sweep_dir : path
        Sweep directory.
    out_dir : path
        Output directory (created).
    cca : bool, default False
        Run the CCA analysis (paper Fig. 3); needs the data and the checkpoints.
    data : path, optional
        Dataset location for the CCA (default: the one in ``sweep.json``, then
        ``$SELECTIVITY_DATA`` / the cache; never downloaded here).
    cca_images, cca_mode, cca_max_pairs, cca_min_ratio, cca_method
        See :func:`selectivity.evaluate.cca.cca_distances`.
    family : {"sign", "all"}, default "sign"
        Bonferroni family of the t-tests against alpha = 0 (see
        :func:`selectivity.analysis.stats.ttests_against_baseline`).
    welch : bool, default False
        Welch's t-test instead of Student's.
    device : str, default "cpu"
        Device of the CCA forward passes.
    n_resamples : int, default 2000
        Bootstrap resamples per CI.
    dpi : int, default 120
        Resolution of the figures.
    progress : bool, default False
        Progress bar for the CCA pairs.
    log : callable, optional
        Receives one-line messages.

    Returns
    -------
    pathlib.Path
        The HTML file.
    """
    log = log or (lambda _m: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rd = collect(sweep_dir)
    settings = settings_of(rd)
    cca_res = None
    if cca:
        cca_res = run_cca(
            rd, data, cca_images, cca_mode, device, cca_max_pairs, cca_min_ratio, progress, log, cca_method
        )
        if cca_res.note:
            log(cca_res.note)
    # once: tables and figures share it
    stats = compute_statistics(settings, cca_res, family=family, equal_var=not welch)
    tables = make_tables(rd, settings, n_resamples, cca_res, stats)
    # Robustness (paper 2, issue 10) and Mechanisms (issue 11): only when `selectivity
    # robustness` / `selectivity geometry` have stored results.
    rob_tables, rob_figures = robustness_items(rd.sweep_dir, out_dir, n_resamples, dpi)
    if rob_tables or rob_figures:
        tables["robustness"] = rob_tables
    mech_tables, mech_figures = mechanism_items(rd.sweep_dir, out_dir, n_resamples, dpi)
    if mech_tables or mech_figures:
        tables["mechanisms"] = mech_tables
    _write_tables(tables, out_dir)
    figures = make_figures(rd, settings, out_dir, cca_res, n_resamples, dpi, log, stats)
    if rob_tables or rob_figures:
        figures["robustness"] = rob_figures
    if mech_tables or mech_figures:
        figures["mechanisms"] = mech_figures
    page = render_html(rd, settings, tables, figures, out_dir, cca_res, cca_requested=cca)
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    log(f"wrote {path}")
    return path
