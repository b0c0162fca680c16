"""A report section as data, what a section builder receives, and the guards.

A section builder is a function ``build(ctx: ReportContext) -> list[Section]``: it reads
the data collected once (``ctx.data``) and the statistics computed once (``ctx.stats``),
draws its figures with :func:`figure_item` and returns plain data. It makes no HTML
and opens no file of the sweep. The registry (:data:`selectivity.report.registry.SECTIONS`)
lists the builders in page order; :func:`build_sections` runs each one guarded, so a
builder that raises becomes a section holding a note, and :func:`figure_item` turns a
figure that cannot be drawn into a note in its section.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..evaluate.cca import CCADistances
from ..plots.style import PANEL_SIZE, save_figure
from .collect import FigureItem, ReportData, Setting, TableItem
from .stats import ReportStats

__all__ = [
    "Section",
    "ReportContext",
    "SectionSpec",
    "figure_item",
    "build_sections",
    "walk",
]


@dataclass
class Section:
    """One section of the report page: plain data that the template renders in one loop.

    Attributes
    ----------
    id : str
        HTML id (an anchor of the table of contents); unique on the page.
    heading : str
        Heading text (``<h2>``; ``<h3>`` for a subsection).
    caption : str
        Text under the heading (what the section shows, where it comes from).
    tables : list of TableItem
        Tables, in order; every one with data is also written as ``tables/<id>.csv``
        (``show=False``: the CSV only).
    figures : list of FigureItem
        Figures (already saved by :func:`figure_item`), shown in a grid after the tables.
    notes : list of str
        Highlighted remarks (missing data, caveats), shown under the caption.
    subsections : list of Section
        Nested sections, rendered after this one's own items.
    settings : list of (str, str)
        ``(term, value)`` pairs shown as a definition list (e.g. an analysis' settings).
    """

    id: str
    heading: str
    caption: str = ""
    tables: list[TableItem] = field(default_factory=list)
    figures: list[FigureItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    subsections: list[Section] = field(default_factory=list)
    settings: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class ReportContext:
    """What every section builder receives: the data and statistics, computed once.

    Attributes
    ----------
    data : ReportData
        Everything read from the sweep (:func:`~selectivity.report.collect.collect`).
    settings : list of Setting
        The runs split by model and activation setting.
    stats : ReportStats
        Tests and bootstrap summaries of the paper-1 sections.
    out_dir : Path
        The report's directory (figures go to ``out_dir/figures``).
    cca : CCADistances or None
        CCA distances when the report was asked for them.
    cca_requested : bool
        Whether the CCA analysis was asked for.
    n_resamples : int
        Bootstrap resamples of every CI.
    dpi : int
        Resolution of the figures.
    log : callable
        Receives one-line messages.
    """

    data: ReportData
    settings: list[Setting]
    stats: ReportStats
    out_dir: Path
    cca: CCADistances | None = None
    cca_requested: bool = False
    n_resamples: int = 2000
    dpi: int = 120
    log: Callable[[str], None] = lambda _m: None

    @property
    def figures_dir(self) -> Path:
        return self.out_dir / "figures"


@dataclass(frozen=True)
class SectionSpec:
    """One entry of the section registry: the builder, and the heading of its failure note."""

    id: str
    heading: str
    build: Callable[[ReportContext], list[Section]]


def figure_item(
    ctx: ReportContext,
    fid: str,
    paper: str,
    title: str,
    caption: str,
    draw: Callable[[], Axes | Figure] | None,
    *,
    note: str | None = None,
    wide: bool | None = None,
) -> FigureItem:
    """Draw one figure and save it as ``figures/<fid>.png``; a failure becomes the item's note.

    Parameters
    ----------
    ctx : ReportContext
    fid : str
        Figure id (file name and HTML id).
    paper, title, caption : str
        Label (e.g. "Fig. 2a", "Paper 2"), title and caption.
    draw : callable or None
        Returns the Axes (or Figure) it drew on; None: not drawn, ``note`` says why.
    note : str, optional
        Note shown with the figure (why it is missing when ``draw`` is None).
    wide : bool, optional
        Span the whole row of the figure grid; default: when the figure is wider than
        1.5 standard panels.
    """

    item = FigureItem(id=fid, paper=paper, title=title, caption=caption, note=note)
    if draw is None:
        return item
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            drawn = draw()
        fig = drawn if isinstance(drawn, Figure) else drawn.figure
        if not isinstance(fig, Figure):
            raise TypeError(f"expected a Figure or an Axes of one, got {type(drawn).__name__}")
        item.wide = fig.get_figwidth() > 1.5 * PANEL_SIZE[0] if wide is None else wide
        item.path = save_figure(fig, ctx.figures_dir / f"{fid}.png", dpi=ctx.dpi)
    except Exception as e:  # a figure that cannot be drawn is a note in its section
        item.path = None
        item.note = f"This figure could not be drawn: {type(e).__name__}: {e}"
        ctx.log(f"figure {fid}: {item.note}")
    return item


def build_sections(ctx: ReportContext, specs: Sequence[SectionSpec]) -> list[Section]:
    """Run every builder of ``specs`` in order; one that raises becomes a section with a note."""
    out: list[Section] = []
    for spec in specs:
        try:
            out.extend(spec.build(ctx))
        except Exception as e:  # one broken section must not take the report down
            note = f"This section could not be built: {type(e).__name__}: {e}"
            ctx.log(f"section {spec.id}: {note}")
            out.append(Section(id=spec.id, heading=spec.heading, notes=[note]))
    return out


def walk(sections: Sequence[Section]) -> Iterator[Section]:
    """Every section and subsection, depth first, in page order."""
    for s in sections:
        yield s
        yield from walk(s.subsections)
