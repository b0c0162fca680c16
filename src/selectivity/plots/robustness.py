"""Figures of paper 2 (robustness vs class selectivity). Plot functions only draw.

Every function takes precomputed tables (from
:meth:`selectivity.sweep.ResultsStore.robustness_df` and statistics computed by the
caller) and an optional ``ax``; none computes a statistic.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from .style import alpha_palette, new_ax

__all__ = [
    "plot_accuracy_vs_severity",
    "plot_corruption_accuracy_vs_alpha",
    "plot_attack_accuracy_vs_epsilon",
    "plot_robustness_vs_selectivity",
]


def _ax(ax: Axes | None) -> Axes:
    return new_ax(ax, figsize=(5, 3.6))


def plot_accuracy_vs_severity(corruptions: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Mean accuracy over corruptions and runs per severity, one line per alpha.

    ``corruptions``: long rows ``alpha, seed, corruption, severity, accuracy``.
    """
    ax = _ax(ax)
    colours = alpha_palette(corruptions["alpha"])
    for alpha, sub in corruptions.groupby("alpha", sort=True):
        per_run = (
            sub.groupby(["seed", "severity"])["accuracy"].mean().unstack("severity")
        )  # (seeds, severities)
        m = per_run.mean(axis=0)
        ax.plot(m.index, m.to_numpy(), "o-", color=colours[float(alpha)], label=f"α={alpha:g}")
    ax.set_xlabel("corruption severity")
    ax.set_ylabel("accuracy (mean over corruptions)")
    ax.legend(fontsize=7, ncol=2)
    return ax


def plot_corruption_accuracy_vs_alpha(
    summary: pd.DataFrame, column: str = "mean_corruption_accuracy", ax: Axes | None = None
) -> Axes:
    """Per-run ``column`` (points) and its per-alpha mean (line) against alpha."""
    ax = _ax(ax)
    ax.scatter(summary["alpha"], summary[column], s=12, color="0.5", alpha=0.7, label="runs")
    m = summary.groupby("alpha", sort=True)[column].mean()
    ax.plot(m.index, m.to_numpy(), "o-", color="C0", label="mean")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("α (regulariser strength)")
    ax.set_ylabel(column.replace("_", " "))
    ax.legend(fontsize=7)
    return ax


def plot_attack_accuracy_vs_epsilon(attacks: pd.DataFrame, attack: str, ax: Axes | None = None) -> Axes:
    """Accuracy under ``attack`` against epsilon (in 1/255 units), one line per alpha."""
    ax = _ax(ax)
    sub = attacks[attacks["attack"] == attack]
    colours = alpha_palette(sub["alpha"])
    for alpha, g in sub.groupby("alpha", sort=True):
        m = g.groupby("epsilon")["accuracy"].mean()
        ax.plot(m.index * 255, m.to_numpy(), "o-", color=colours[float(alpha)], label=f"α={alpha:g}")
    ax.set_xscale("symlog", linthresh=0.25)
    ax.set_xlabel("ε (×1/255, L-inf)" if (sub["norm"] == "linf").all() else "ε (×1/255)")
    ax.set_ylabel(f"accuracy under {attack.upper()}")
    ax.legend(fontsize=7, ncol=2)
    return ax


def plot_robustness_vs_selectivity(
    summary: pd.DataFrame, column: str, stats: Mapping[str, float] | None = None, ax: Axes | None = None
) -> Axes:
    """Per-run ``column`` against mean class selectivity, coloured by alpha.

    ``stats`` (computed by the caller): ``rho``, ``p``, ``ci_low``, ``ci_high`` of the
    Spearman correlation, shown in the title.
    """
    ax = _ax(ax)
    colours = alpha_palette(summary["alpha"])
    ax.scatter(
        summary["mean_selectivity"],
        summary[column],
        c=[colours[float(a)] for a in summary["alpha"]],
        s=18,
        edgecolors="k",
        linewidths=0.3,
    )
    ax.set_xlabel("mean class selectivity")
    ax.set_ylabel(column.replace("_", " "))
    if stats:
        ci = f" [{stats.get('ci_low', np.nan):.2f}, {stats.get('ci_high', np.nan):.2f}]"
        ax.set_title(
            f"Spearman ρ = {stats.get('rho', np.nan):.2f}{ci}, p = {stats.get('p', np.nan):.2g}", fontsize=9
        )
    return ax
