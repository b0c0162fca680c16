"""The report's "Mechanisms" section: figures and tables of the geometry results (paper 2).

Reads the geometry frame collected once (``ctx.data.geometry``, the results of
``selectivity geometry``); without geometry results the section is left out. Statistics
(Spearman correlations, :func:`selectivity.analysis.stats.spearman_ci`) are computed here
once and passed to the plot functions of :mod:`selectivity.plots.geometry`, which only
draw; every figure goes through :func:`~.section.figure_item`, so one that cannot be drawn
becomes a note.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from ..analysis.stats import spearman_ci
from ..plots.geometry import (
    plot_change_dimensionality,
    plot_dimensionality_by_layer,
    plot_dimensionality_vs_selectivity,
    plot_gradient_variability,
)
from ..plots.style import panel_figure
from .collect import FigureItem, TableItem
from .section import ReportContext, Section, figure_item

__all__ = ["early_layer_indices", "mechanism_items", "mechanism_sections"]

_CAPTION = (
    "From `selectivity geometry`: dimensionality of the layers' representations and of the change caused "
    "by corruptions and adversarial examples, and the variability of input-unit gradients (definitions: "
    "docs/geometry.md)."
)


def early_layer_indices(df: pd.DataFrame, fraction: float = 1 / 3) -> list[int]:
    """Positions of the first ``fraction`` of the measured layers (at least one)."""
    idx = sorted(int(i) for i in df.loc[df["layer_index"] >= 0, "layer_index"].unique())
    return idx[: max(1, int(np.ceil(len(idx) * fraction)))] if idx else []


def _change_figure(frame: pd.DataFrame):
    panels = list(dict.fromkeys(frame["panel"]))
    fig, axes = panel_figure(len(panels), panel=(5.0, 4.0))
    for i, (ax, panel) in enumerate(zip(axes, panels)):
        if i:
            ax.sharey(axes[0])
        plot_change_dimensionality(
            frame[frame["panel"] == panel],
            ax,
            ylabel="dimensionality of the change" if i == 0 else None,
            title=panel,
            legend=i == 0,
        )
    return fig


def mechanism_items(ctx: ReportContext) -> tuple[list[TableItem], list[FigureItem]]:
    """Tables and figures of the Mechanisms section; ``([], [])`` without geometry results."""
    df = ctx.data.geometry
    if df.empty:
        return [], []
    layered = df[df["layer_index"] >= 0]
    early = early_layer_indices(df)
    figs: list[FigureItem] = []
    tables: list[TableItem] = []

    clean = layered[(layered["kind"] == "clean") & (layered["measure"] == "pca")]
    if not clean.empty:
        figs.append(
            figure_item(
                ctx,
                "mech-clean-dim",
                "Mechanisms (a)",
                "Dimensionality of the clean representation per layer",
                "PCA components for 95% of the variance of the layer's units, mean over runs "
                "per α (band ±1 SD).",
                lambda: plot_dimensionality_by_layer(clean),
                wide=False,
            )
        )

    change = layered[layered["measure"] == "change_pca"].copy()
    if not change.empty:
        matched = change["perturbation"].str.startswith("pgd-l2-match-")
        adv = change[(change["kind"] == "adversarial") & (matched if matched.any() else True)]
        corr = change[change["kind"] == "corruption"]
        adv_label = "adversarial (L2 PGD at matched input distance)" if matched.any() else "adversarial"
        frame = pd.concat([corr.assign(panel="corruptions"), adv.assign(panel=adv_label)])
        frame = frame.groupby(["panel", "run_id", "alpha", "layer_index", "layer"], as_index=False)[
            "value"
        ].mean()
        figs.append(
            figure_item(
                ctx,
                "mech-change-dim",
                "Mechanisms (a)",
                "Dimensionality of the change caused by a perturbation",
                "PCA dimensionality (95%) of a(x') - a(x) per layer, averaged over the corruptions (left) and "
                "over the L2 attacks matched to each corruption's median input L2 distance (right).",
                lambda: _change_figure(frame),
                wide=True,
            )
        )

    # Per run: early-layer means vs mean selectivity, Spearman with bootstrap CI.
    runs = df.drop_duplicates("run_id").set_index("run_id")[["alpha", "mean_selectivity"]]
    rows = []
    specs = [
        ("clean PCA dimensionality", "clean", "pca"),
        ("clean participation ratio", "clean", "participation_ratio"),
        ("change PCA dimensionality, corruptions", "corruption", "change_pca"),
        ("change PCA dimensionality, adversarial", "adversarial", "change_pca"),
        ("gradient variability across samples", "clean", "grad_var_samples"),
    ]
    for label, kind, measure in specs:
        sub = layered[(layered["kind"] == kind) & (layered["measure"] == measure)]
        if measure != "grad_var_samples":
            sub = sub[sub["layer_index"].isin(early)]
        per_run = sub.groupby("run_id")["value"].mean()
        if per_run.empty:
            continue
        j = runs.join(per_run.rename("value"), how="inner")
        st = spearman_ci(j["mean_selectivity"], j["value"], ctx.n_resamples)
        rows.append({"measure": label, **st})
        if measure == "pca" and kind == "clean":
            points = j.rename(columns={"mean_selectivity": "selectivity", "value": "dimensionality"})
            figs.append(
                figure_item(
                    ctx,
                    "mech-dim-vs-selectivity",
                    "Mechanisms (a)",
                    "Early-layer dimensionality against class selectivity",
                    f"One point per run: mean clean PCA dimensionality of the first {len(early)} measured layers "
                    "against the run's mean class selectivity; Spearman ρ with a 95% bootstrap CI over runs.",
                    functools.partial(
                        plot_dimensionality_vs_selectivity,
                        points,
                        st["rho"],
                        (st["ci_low"], st["ci_high"]),
                        st["p"],
                    ),
                    wide=False,
                )
            )
        if measure == "grad_var_samples":
            values = j.reset_index()[["alpha", "value"]]
            figs.append(
                figure_item(
                    ctx,
                    "mech-grad-var",
                    "Mechanisms (b)",
                    "Input-unit gradient variability by α",
                    "1 - mean pairwise cosine of the input gradients of a unit across images, averaged over "
                    "units and the measured layers; one point per run.",
                    functools.partial(plot_gradient_variability, values),
                    wide=False,
                )
            )
    if rows:
        tables.append(
            TableItem(
                "mechanisms-spearman",
                "Spearman correlation with mean class selectivity (per run)",
                pd.DataFrame(rows, columns=["measure", "rho", "p", "ci_low", "ci_high", "n"]),
                caption=f"Early layers = the first {len(early)} measured layers (the gradient measure: all layers "
                "it was computed on). ci_low/ci_high: 95% percentile bootstrap CI over runs.",
            )
        )
    return tables, figs


def mechanism_sections(ctx: ReportContext) -> list[Section]:
    """The Mechanisms section; none without geometry results."""
    tables, figures = mechanism_items(ctx)
    if not tables and not figures:
        return []
    return [
        Section(
            id="mechanisms",
            heading="Mechanisms (dimensionality, gradient variability)",
            caption=_CAPTION,
            tables=tables,
            figures=figures,
        )
    ]
