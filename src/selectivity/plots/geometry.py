"""Figures of the geometry analysis (issue 11): functions that only draw.

Every function takes tidy frames (and, where a statistic is shown, the statistic computed
by the caller) and returns a :class:`matplotlib.figure.Figure`; nothing is computed here
beyond the means drawn.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = [
    "plot_dimensionality_by_layer",
    "plot_change_dimensionality",
    "plot_dimensionality_vs_selectivity",
    "plot_gradient_variability",
]


def _alpha_colors(alphas: list[float]) -> dict[float, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["coolwarm"]
    lim = max((abs(a) for a in alphas), default=1.0) or 1.0
    return {a: cmap(0.5 + 0.5 * a / lim) for a in alphas}


def _lines_by_alpha(ax, df: pd.DataFrame, colors: dict[float, tuple]) -> None:
    """Mean over runs per (alpha, layer) with a band of +- 1 SD; df: alpha, layer_index, value."""
    for alpha, sub in df.groupby("alpha", sort=True):
        g = sub.groupby("layer_index")["value"]
        m, s = g.mean(), g.std(ddof=1).fillna(0)
        ax.plot(m.index, m.values, "-o", ms=3, color=colors[alpha], label=f"α = {alpha:g}")
        ax.fill_between(m.index, (m - s).values, (m + s).values, color=colors[alpha], alpha=0.15, lw=0)


def plot_dimensionality_by_layer(
    df: pd.DataFrame, ylabel: str = "PCA dimensionality (95% variance)"
) -> Figure:
    """Clean dimensionality per layer, one line per alpha (mean over runs, band: ±1 SD).

    Parameters
    ----------
    df : pandas.DataFrame
        One row per run and layer: ``alpha, layer_index, layer, value``.
    ylabel : str
    """
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    colors = _alpha_colors(sorted(df["alpha"].unique()))
    _lines_by_alpha(ax, df, colors)
    names = df.drop_duplicates("layer_index").sort_values("layer_index")
    ax.set_xticks(names["layer_index"], names["layer"], rotation=90, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("layer")
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot_change_dimensionality(df: pd.DataFrame, ylabel: str = "dimensionality of the change") -> Figure:
    """Change dimensionality per layer by alpha: corruptions and adversarial side by side.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per run, layer and panel: ``panel`` (panel title, e.g. "corruptions"),
        ``alpha, layer_index, layer, value``; panels in order of first appearance share
        the y axis.
    """
    panels = list(dict.fromkeys(df["panel"]))
    fig = Figure(figsize=(5 * max(1, len(panels)), 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(panels)), sharey=True))
    colors = _alpha_colors(sorted(df["alpha"].unique()))
    names = df.drop_duplicates("layer_index").sort_values("layer_index")
    for ax, panel in zip(axes, panels):
        _lines_by_alpha(ax, df[df["panel"] == panel], colors)
        ax.set_title(panel, fontsize=9)
        ax.set_xticks(names["layer_index"], names["layer"], rotation=90, fontsize=7)
        ax.set_xlabel("layer")
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize=7, ncol=2)
    return fig


def plot_dimensionality_vs_selectivity(
    df: pd.DataFrame,
    rho: float,
    ci: tuple[float, float],
    p: float,
    xlabel: str = "mean class selectivity",
    ylabel: str = "early-layer dimensionality",
) -> Figure:
    """Per-run dimensionality against mean selectivity, with the caller's Spearman statistics.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per run: ``alpha, selectivity, dimensionality``.
    rho, ci, p
        Spearman's rho, its bootstrap CI and p-value (computed by the caller).
    """
    fig = Figure(figsize=(5.5, 4.2), layout="constrained")
    ax = fig.subplots()
    colors = _alpha_colors(sorted(df["alpha"].unique()))
    for alpha, sub in df.groupby("alpha", sort=True):
        ax.scatter(
            sub["selectivity"], sub["dimensionality"], s=18, color=colors[alpha], label=f"α = {alpha:g}"
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"Spearman ρ = {rho:.2f} [{ci[0]:.2f}, {ci[1]:.2f}], p = {p:.2g}, n = {len(df)}", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot_gradient_variability(
    df: pd.DataFrame, ylabel: str = "gradient variability across samples"
) -> Figure:
    """Input-unit gradient variability by alpha: one point per run, line through the means.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per run: ``alpha, value``.
    """
    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.subplots()
    ax.scatter(df["alpha"], df["value"], s=14, color="0.45", label="runs")
    m = df.groupby("alpha")["value"].mean()
    ax.plot(m.index, m.values, "-o", color="C3", label="mean")
    ax.set_xlabel("α (regularisation of class selectivity)")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    return fig
