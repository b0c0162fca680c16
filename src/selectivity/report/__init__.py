"""One self-contained HTML report of a sweep: tables, statistics, every paper figure.

:func:`build_report` writes ``OUT/report.html`` (figures embedded as base64 PNG,
inline CSS, no script and no external resource, so it opens offline and can be mailed
as one file), every figure as ``OUT/figures/*.png`` and every table as
``OUT/tables/*.csv``. Its steps:

1. :func:`collect` (:mod:`.collect`) reads the sweep's stored records once: one opening
   of the results store gives the runs, the layers and the stored results of
   ``selectivity robustness`` and ``selectivity geometry``; ``sweep.json`` and each
   run's ``meta.json`` are read beside it. :func:`settings_of` splits the runs into
   settings (one model with one activation function and leaky-ReLU slope; settings are
   never pooled).
2. :func:`compute_statistics` (:mod:`.stats`) computes every paper-1 statistic once:
   the tests, and the per-alpha and per-layer bootstrap summaries that the tables and
   the figures both show.
3. The section builders listed in :data:`SECTIONS` (:mod:`.registry`) turn the data and
   the statistics into :class:`Section` objects: tables, figures (drawn by
   :mod:`selectivity.plots`, saved through :func:`figure_item`), notes and settings,
   as plain data. Each builder runs guarded: a builder that raises becomes its section
   with a note, and a figure that cannot be drawn becomes a note in its section.
4. :func:`render_html` (:mod:`.html`) renders the sections in one loop of a Jinja2
   template with autoescaping on; nothing is marked safe.

Adding a section (e.g. a gallery of units) touches two files and a test:

* a builder module, say ``report/gallery.py``::

      from .section import ReportContext, Section, figure_item

      def gallery_sections(ctx: ReportContext) -> list[Section]:
          df = ctx.data.units  # or anything in ctx.data / ctx.stats; [] leaves the section out
          fig = figure_item(ctx, "gallery-top", "Units", "Top units", "Caption.", lambda: plot_x(df))
          return [Section(id="gallery", heading="Unit gallery", caption="...", figures=[fig])]

* one line in :data:`SECTIONS` (``report/registry.py``), where the section goes on the page::

      SectionSpec("gallery", "Unit gallery", gallery_sections),

A :class:`Section` holds ``id``, ``heading``, ``caption``, ``tables``
(:class:`TableItem`: a frame written as ``tables/<id>.csv`` and, unless ``show=False``,
shown through ``display`` or the frame itself), ``figures`` (:class:`FigureItem`),
``notes``, ``settings`` (term/value pairs shown as a definition list) and
``subsections``. A builder reads :class:`ReportContext`: ``data`` (:class:`ReportData`),
``settings``, ``stats``, ``out_dir``, ``cca``, ``n_resamples``, ``dpi``, ``log``. It
computes its own statistics once and passes them to its plot functions, which only draw.
Table cells that are numbers go through :mod:`.format` (``format_ci``, ``format_p``,
``format_percent``, ``yes_no``), like every table of the report.

:mod:`.summary` writes the lighter sweep summary (``summary.csv``/``.txt`` and four
figures) that ``selectivity sweep`` and ``selectivity summarize`` produce;
:func:`run_experiment` (:mod:`.experiment`) is ``selectivity sweep`` as one call: train,
robustness, summary.

The CCA analysis (paper Fig. 3) is the one part that needs the data and the
checkpoints (:func:`selectivity.evaluate.cca.cca_or_note`); it runs only with
``cca=True`` and is replaced by a note when the data, the checkpoints or the alpha = 0
runs are missing. Any missing piece (one alpha, no baseline, every run of an alpha
failed, a figure that cannot be drawn) becomes a short note in its section, never an
exception.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ..analysis.stats import Family
from ..evaluate.cca import CCADistances, Mode, PWCCAMethod, cca_or_note
from .collect import TITLE, FigureItem, ReportData, Setting, TableItem, collect, settings_of
from .experiment import ExperimentResult, geometry_settings, robustness_settings, run_experiment
from .html import render_html
from .registry import SECTIONS
from .section import ReportContext, Section, SectionSpec, build_sections, figure_item, walk
from .stats import ReportStats, compute_statistics
from .summary import summarize_sweep

__all__ = [
    "TITLE",
    "ReportData",
    "Setting",
    "FigureItem",
    "TableItem",
    "Section",
    "SectionSpec",
    "ReportContext",
    "SECTIONS",
    "CCADistances",
    "ReportStats",
    "collect",
    "settings_of",
    "compute_statistics",
    "figure_item",
    "build_sections",
    "run_cca",
    "render_html",
    "build_report",
    "summarize_sweep",
    "ExperimentResult",
    "geometry_settings",
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
    :func:`selectivity.evaluate.cca.cca_or_note`. The dataset defaults to the one
    recorded in ``sweep.json``.
    """
    dataset = dataset if dataset is not None else data.sweep.get("data")
    settings = dict(n_images=n_images, mode=mode, max_pairs=max_pairs, min_ratio=min_ratio, method=method)
    return cca_or_note(
        data.sweep_dir, data.runs, settings, dataset, device=device, progress=progress, log=log
    )


def _write_tables(sections: Sequence[Section], out_dir: Path) -> None:
    tdir = out_dir / "tables"
    tdir.mkdir(parents=True, exist_ok=True)
    for sec in walk(sections):
        for t in sec.tables:
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
    gallery: bool = False,
    gallery_layers: Sequence[str] | None = None,
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
        See :class:`selectivity.evaluate.cca.CCASettings`.
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
    gallery : bool, default False
        Add the unit gallery: one run's most and least selective units with their top 9
        test images (needs the data and the checkpoint; the run is the first completed
        run at alpha = 0, else the first completed run).
    gallery_layers : sequence of str, optional
        The gallery's layers (default: first, middle and last site).

    Returns
    -------
    pathlib.Path
        The HTML file.
    """
    log = log or (lambda _m: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"report of {sweep_dir}: reading the sweep's records")
    rd = collect(sweep_dir)
    settings = settings_of(rd)
    log(f"{len(rd.runs)} runs in {len(settings)} setting(s)")
    cca_res = None
    if cca:
        log("CCA: activations of every completed run on the probe images (checkpoints and data)")
        cca_res = run_cca(
            rd, data, cca_images, cca_mode, device, cca_max_pairs, cca_min_ratio, progress, log, cca_method
        )
        if cca_res.note:
            log(cca_res.note)
    gallery_data, gallery_run = (None, None)
    if gallery:
        gallery_data, gallery_run = _gallery(rd, data, gallery_layers, device, log)
    # once: every section's tables and figures read it
    log(f"statistics: tests against alpha = 0 and bootstrap CIs ({n_resamples} resamples)")
    stats = compute_statistics(settings, cca_res, family=family, equal_var=not welch, n_resamples=n_resamples)
    ctx = ReportContext(
        data=rd,
        settings=settings,
        stats=stats,
        out_dir=out_dir,
        cca=cca_res,
        cca_requested=cca,
        n_resamples=n_resamples,
        dpi=dpi,
        log=log,
        gallery=gallery_data,
        gallery_run=gallery_run,
    )
    sections = build_sections(ctx, SECTIONS)
    log("writing the tables and the page")
    _write_tables(sections, out_dir)
    page = render_html(rd, settings, sections, out_dir)
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    log(f"wrote {path}")
    return path


def _gallery(
    rd: ReportData,
    data: str | os.PathLike | None,
    layers: Sequence[str] | None,
    device: str,
    log: Callable[[str], None],
) -> tuple[dict | None, str | None]:
    """The gallery's run (first completed at alpha = 0, else first completed) and its data."""
    from ..evaluate.units import run_gallery
    from ..run.files import SweepFiles

    runs = rd.runs
    done = runs[runs.status == "completed"] if "status" in runs else runs.iloc[0:0]
    if done.empty:
        log("unit gallery: no completed run")
        return None, None
    base = done[done.alpha == 0.0] if "alpha" in done else done.iloc[0:0]
    run_id = str((base if not base.empty else done).sort_values("run_id").run_id.iloc[0])
    data = data or rd.sweep.get("data")
    try:
        return run_gallery(SweepFiles(rd.sweep_dir).run(run_id).root, data, layers, device=device), run_id
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        log(f"unit gallery left out: {e}")
        return None, None
