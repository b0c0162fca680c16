"""Figures of paper 2's robustness summaries (curves per corruption, per-run measures by alpha).

Plot functions only draw: every function takes frames whose statistics the caller
computed (per-alpha means with their 95% CIs: the columns of
:func:`selectivity.analysis.summary.group_summary`, ``n, mean, ci_low, ci_high``) and an
optional ``ax``, and returns the ``Axes`` it drew on. Colours and the alpha axis are
:mod:`selectivity.plots.style`'s, so one alpha has one colour in every figure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from .style import alpha_axis, alpha_palette, new_ax

__all__ = ["plot_severity_curves", "plot_runs_by_alpha"]


def plot_severity_curves(
    summary: pd.DataFrame,
    ax: Axes | None = None,
    *,
    scale: float = 100.0,
    ylabel: str | None = "Accuracy (%)",
    title: str | None = None,
    legend: bool = True,
) -> Axes:
    """Accuracy against severity, one line per alpha through the means, 95% CI bars.

    Parameters
    ----------
    summary : pandas.DataFrame
        One row per (alpha, severity): ``alpha, severity, mean, ci_low, ci_high``.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on (default: a new figure).
    scale : float, default 100
        Multiplier of the values (100: percent).
    ylabel, title : str, optional
    legend : bool, default True

    Returns
    -------
    matplotlib.axes.Axes
    """
    ax = new_ax(ax, figsize=(4.2, 3.4))
    palette = alpha_palette(summary["alpha"])
    alphas = sorted(palette)
    for i, a in enumerate(alphas):
        sub = summary[np.isclose(summary["alpha"].astype(float), a)].sort_values("severity")
        dx = 0.3 * (i - (len(alphas) - 1) / 2) / max(len(alphas) - 1, 1)  # keep CI bars apart
        m = sub["mean"].to_numpy(float) * scale
        lo = sub["ci_low"].to_numpy(float) * scale
        hi = sub["ci_high"].to_numpy(float) * scale
        err = np.vstack([np.nan_to_num(m - lo, nan=0.0), np.nan_to_num(hi - m, nan=0.0)]).clip(min=0)
        ax.errorbar(
            sub["severity"].to_numpy(float) + dx,
            m,
            yerr=err,
            fmt="-o",
            ms=3,
            lw=1.2,
            color=palette[a],
            elinewidth=0.8,
            capsize=2,
            label=f"α = {a:g}",
        )
    sev = np.unique(summary["severity"].astype(int))
    ax.set_xticks(sev, [str(s) for s in sev])
    ax.set_xlabel("severity")
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    if legend:
        ax.legend(fontsize=6, ncol=2)
    return ax


def plot_runs_by_alpha(
    runs: pd.DataFrame,
    summary: pd.DataFrame,
    ax: Axes | None = None,
    *,
    scale: float = 1.0,
    ylabel: str = "",
    title: str | None = None,
    reference: float | None = None,
) -> Axes:
    """One point per run against alpha, the per-alpha means with 95% CI bars.

    Parameters
    ----------
    runs : pandas.DataFrame
        One row per run: ``alpha, value``.
    summary : pandas.DataFrame
        One row per alpha: ``alpha, mean, ci_low, ci_high``.
    ax : matplotlib.axes.Axes, optional
    scale : float
        Multiplier of the values.
    ylabel, title : str
    reference : float, optional
        A dashed horizontal line (e.g. 1 for a corruption error relative to alpha = 0).

    Returns
    -------
    matplotlib.axes.Axes
    """
    ax = new_ax(ax, figsize=(4.6, 3.6))
    palette = alpha_palette(runs["alpha"])
    alpha_axis(ax, runs["alpha"])
    if reference is not None:
        ax.axhline(reference * scale, color="0.5", lw=0.8, ls="--", zorder=0)
    ax.scatter(
        runs["alpha"],
        runs["value"].to_numpy(float) * scale,
        s=14,
        c=[palette[float(a)] for a in runs["alpha"]],
        zorder=2,
    )
    s = summary.sort_values("alpha")
    m = s["mean"].to_numpy(float) * scale
    err = np.vstack(
        [
            np.nan_to_num(m - s["ci_low"].to_numpy(float) * scale, nan=0.0),
            np.nan_to_num(s["ci_high"].to_numpy(float) * scale - m, nan=0.0),
        ]
    ).clip(min=0)
    ax.errorbar(s["alpha"], m, yerr=err, fmt="-", color="0.45", lw=1, capsize=2, zorder=1)
    ax.set_xlabel("α (regularisation of class selectivity)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    return ax
