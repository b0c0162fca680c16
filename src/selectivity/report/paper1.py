"""Section builders of the paper-1 part of the report (each ``build(ctx) -> list[Section]``).

* :func:`setting_sections`: one section per setting (model x activation): summary,
  statistics and the paper's Figs. 1, 2, 5, A7, A9.
* :func:`across_sections`: Figs. A10 and A12, comparing settings.
* :func:`cca_sections`: representation similarity (Fig. 3), when asked for.
* :func:`configuration_sections`, :func:`provenance_sections`: what was run, by which code.

Tables come from :mod:`.tables`, figures from :mod:`.figures`; both read the statistics
computed once (``ctx.stats``).
"""

from __future__ import annotations

from .figures import cca_figure_specs, global_figure_specs, render_spec, setting_figure_specs
from .section import ReportContext, Section
from .tables import all_tables, cca_tables, config_tables, provenance_tables, setting_tables

__all__ = [
    "setting_sections",
    "across_sections",
    "cca_sections",
    "configuration_sections",
    "provenance_sections",
]

_CCA_CAPTION = (
    "PWCCA distances between networks, layer by layer (paper section 4.2): if the regulariser only "
    "rotated selectivity off the unit axes, ρ(α, 0) would equal the replicate baseline ρ(α, α)."
)


def setting_sections(ctx: ReportContext) -> list[Section]:
    """One section per setting: summary by alpha, tests and the per-setting paper figures."""
    if not ctx.settings:
        return [Section(id="no-runs", heading="Results", notes=["The sweep has no recorded runs yet."])]
    out = []
    for s in ctx.settings:
        st = ctx.stats.settings[s.key]
        tables = setting_tables(s, ctx.n_resamples, st)
        summary = [t for t in tables if t.id == f"{s.key}-summary"]
        statistics = [t for t in tables if t.id != f"{s.key}-summary"]
        figures = [render_spec(sp, s.key, ctx) for sp in setting_figure_specs(s, ctx.n_resamples, st)]
        out.append(
            Section(
                id=f"setting-{s.key}",
                heading=f"Setting: {s.label}",
                subsections=[
                    Section(id=f"{s.key}-summary-section", heading="Summary", tables=summary),
                    Section(id=f"{s.key}-statistics-section", heading="Statistics", tables=statistics),
                    Section(id=f"{s.key}-figures-section", heading="Figures", figures=figures),
                ],
            )
        )
    return out


def across_sections(ctx: ReportContext) -> list[Section]:
    """Figures across settings (models side by side, leaky-ReLU slopes); none: no section."""
    figs = [render_spec(sp, "", ctx) for sp in global_figure_specs(ctx.data, ctx.settings, ctx.n_resamples)]
    return [Section(id="across", heading="Across settings", figures=figs)] if figs else []


def cca_sections(ctx: ReportContext) -> list[Section]:
    """Representation similarity (Fig. 3), per setting; only when the CCA was asked for."""
    if not ctx.cca_requested:
        return []
    cca = ctx.cca
    tables = cca_tables(cca, ctx.stats.cca, ctx.settings) if cca is not None else []
    subs = []
    for s in ctx.settings:
        figs = (
            [render_spec(sp, s.key, ctx) for sp in cca_figure_specs(s, cca, ctx.n_resamples, ctx.stats.cca)]
            if cca is not None
            else []
        )
        subs.append(
            Section(
                id=f"{s.key}-cca",
                heading=s.label,
                tables=[t for t in tables if t.id == f"{s.key}-cca-tests"],
                figures=figs,
            )
        )
    return [
        Section(
            id="cca",
            heading="Representation similarity (CCA, paper Fig. 3)",
            caption=_CCA_CAPTION,
            notes=[cca.note] if cca is not None and cca.note else [],
            tables=[t for t in tables if not t.show],
            subsections=subs,
        )
    ]


def configuration_sections(ctx: ReportContext) -> list[Section]:
    """The sweep specification and one run's resolved configuration."""
    return [Section(id="configuration", heading="Configuration", tables=config_tables(ctx.data))]


def provenance_sections(ctx: ReportContext) -> list[Section]:
    """Runs by status, recorded provenance, failed runs; every run and layer record (CSV only)."""
    return [
        Section(
            id="provenance",
            heading="Provenance",
            tables=[*provenance_tables(ctx.data), *all_tables(ctx.data, ctx.n_resamples)],
        )
    ]
