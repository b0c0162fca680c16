"""Figures of the geometry analysis (paper 2 mechanisms): functions that only draw.

Every function takes tidy frames (and, where a statistic is shown, the statistic computed
by the caller) and an optional ``ax``, and returns the ``Axes`` it drew on; nothing is
computed here beyond the means drawn. Colours and the alpha axis are
:mod:`selectivity.plots.style`'s, so one alpha has one colour in every figure.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.axes import Axes

from .style import alpha_axis, alpha_palette, new_ax

__all__ = [
    "plot_dimensionality_by_layer",
    "plot_change_dimensionality",
    "plot_dimensionality_vs_selectivity",
    "plot_gradient_variability",
]


def _lines_by_alpha(ax: Axes, df: pd.DataFrame, colors: dict[float, tuple]) -> None:
    """Mean over runs per (alpha, layer) with a band of +- 1 SD; df: alpha, layer_index, value."""
    for alpha, sub in df.groupby("alpha", sort=True):
        g = sub.groupby("layer_index")["value"]
        m, s = g.mean(), g.std(ddof=1).fillna(0)
        c = colors[float(alpha)]
        ax.plot(m.index, m.values, "-o", ms=3, color=c, label=f"α = {alpha:g}")
        ax.fill_between(m.index, (m - s).values, (m + s).values, color=c, alpha=0.15, lw=0)


def _layer_names(ax: Axes, df: pd.DataFrame) -> None:
    names = df.drop_duplicates("layer_index").sort_values("layer_index")
    ax.set_xticks(names["layer_index"], names["layer"], rotation=90, fontsize=7)
    ax.set_xlabel("layer")


def plot_dimensionality_by_layer(
    df: pd.DataFrame, ax: Axes | None = None, ylabel: str = "PCA dimensionality (95% variance)"
) -> Axes:
    """Clean dimensionality per layer, one line per alpha (mean over runs, band: ±1 SD).

    Parameters
    ----------
    df : pandas.DataFrame
        One row per run and layer: ``alpha, layer_index, layer, value``.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on (default: a new figure).
    ylabel : str

    Returns
    -------
    matplotlib.axes.Axes
    """
    ax = new_ax(ax, figsize=(7, 4))
    _lines_by_alpha(ax, df, alpha_palette(df["alpha"]))
    _layer_names(ax, df)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, ncol=2)
    return ax


def plot_change_dimensionality(
    df: pd.DataFrame,
    ax: Axes | None = None,
    ylabel: str | None = "dimensionality of the change",
    title: str | None = None,
    legend: bool = True,
) -> Axes:
    """Change dimensionality per layer by alpha (one panel: corruptions or adversarial).

    Parameters
    ----------
    df : pandas.DataFrame
        One row per run and layer: ``alpha, layer_index, layer, value``.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on (default: a new figure).
    ylabel : str or None
        y label (None: none, for a panel beside another that shares its y axis).
    title : str, optional
        Panel title (e.g. "corruptions").
    legend : bool, default True
        Draw the alpha legend.

    Returns
    -------
    matplotlib.axes.Axes
    """
    ax = new_ax(ax, figsize=(5, 4))
    _lines_by_alpha(ax, df, alpha_palette(df["alpha"]))
    _layer_names(ax, df)
    if title:
        ax.set_title(title, fontsize=9)
    if ylabel:
        ax.set_ylabel(ylabel)
    if legend:
        ax.legend(fontsize=7, ncol=2)
    return ax


def plot_dimensionality_vs_selectivity(
    df: pd.DataFrame,
    rho: float,
    ci: tuple[float, float],
    p: float,
    ax: Axes | None = None,
    xlabel: str = "mean class selectivity",
    ylabel: str = "early-layer dimensionality",
) -> Axes:
    """Per-run dimensionality against mean selectivity, with the caller's Spearman statistics.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per run: ``alpha, selectivity, dimensionality``.
    rho, ci, p
        Spearman's rho, its bootstrap CI and p-value (computed by the caller).
    ax : matplotlib.axes.Axes, optional
        Axes to draw on (default: a new figure).

    Returns
    -------
    matplotlib.axes.Axes
    """
    ax = new_ax(ax, figsize=(5.5, 4.2))
    colors = alpha_palette(df["alpha"])
    for alpha, sub in df.groupby("alpha", sort=True):
        ax.scatter(
            sub["selectivity"],
            sub["dimensionality"],
            s=18,
            color=colors[float(alpha)],
            edgecolors="0.15",
            linewidths=0.3,
            label=f"α = {alpha:g}",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"Spearman ρ = {rho:.2f} [{ci[0]:.2f}, {ci[1]:.2f}], p = {p:.2g}, n = {len(df)}", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return ax


def plot_gradient_variability(
    df: pd.DataFrame, ax: Axes | None = None, ylabel: str = "gradient variability across samples"
) -> Axes:
    """Input-unit gradient variability by alpha: one point per run, line through the means.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per run: ``alpha, value``.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on (default: a new figure).

    Returns
    -------
    matplotlib.axes.Axes
    """
    ax = new_ax(ax, figsize=(5.5, 4))
    colors = alpha_palette(df["alpha"])
    alpha_axis(ax, df["alpha"])
    ax.scatter(df["alpha"], df["value"], s=14, c=[colors[float(a)] for a in df["alpha"]], label="runs")
    m = df.groupby("alpha")["value"].mean()
    ax.plot(m.index, m.values, "-", color="0.45", lw=1, zorder=1, label="mean")
    ax.set_xlabel("α (regularisation of class selectivity)")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    return ax
