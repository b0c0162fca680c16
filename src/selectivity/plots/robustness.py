"""Figures of paper 2 (robustness vs class selectivity). Plot functions only draw.

Every function takes frames whose statistics were computed by the caller (per-alpha
means with their CIs, Spearman correlations) and an optional ``ax``, and returns the
``Axes`` it drew on. Colours, the alpha axis and legends are :mod:`selectivity.plots.style`'s:
one alpha has one colour in every figure of a report, alpha = 0 is grey.

Summary frames (``summary``) have one row per alpha (and x value) with the columns of
:func:`selectivity.analysis.summary.group_summary`: ``n, mean, ci_low, ci_high``.
Values are fractions; ``scale`` (default 100) draws them in percent.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from ..analysis.stats import is_baseline
from .style import ZERO_COLOR, alpha_axis, alpha_legend, alpha_palette, ci_errors, new_ax

__all__ = [
    "plot_accuracy_vs_severity",
    "plot_corruption_accuracy_vs_alpha",
    "plot_attack_accuracy_vs_epsilon",
    "plot_robustness_vs_selectivity",
]

_ALPHA_LABEL = "Regularisation scale α (symlog)"


def _require(df: pd.DataFrame, cols, what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise KeyError(f"{what}: missing column(s) {missing} (columns: {list(df.columns)})")


def _lines_with_ci(ax: Axes, summary: pd.DataFrame, x: str, scale: float, spread: float) -> int:
    """One line per alpha through the means, 95% CI bars; alphas dodged by ``spread`` in x."""
    palette = alpha_palette(summary["alpha"])
    alphas = sorted(palette)
    for i, a in enumerate(alphas):
        sub = summary[np.isclose(summary["alpha"].astype(float), a)].sort_values(x)
        # Small x offsets keep the CI bars of neighbouring alphas apart.
        dx = spread * (i - (len(alphas) - 1) / 2) / max(len(alphas) - 1, 1)
        m = sub["mean"].to_numpy(float) * scale
        err = ci_errors(m, sub["ci_low"].to_numpy(float) * scale, sub["ci_high"].to_numpy(float) * scale)
        cont = ax.errorbar(
            sub[x].to_numpy(float) + dx,
            m,
            yerr=err,
            fmt="-o",
            ms=4,
            lw=1.4,
            color=palette[a],
            ecolor=palette[a],
            elinewidth=1.0,
            capsize=2,
            label=f"{a:g}",
        )
        cont.lines[0].set_gid(f"alpha:{a:g}")
    return len(alphas)


def plot_accuracy_vs_severity(
    summary: pd.DataFrame,
    ax: Axes | None = None,
    *,
    scale: float = 100.0,
    ylabel: str = "Accuracy on corrupted images (%)",
    title: str | None = None,
) -> Axes:
    """Accuracy against corruption severity, one line per alpha with 95% CIs over runs.

    Parameters
    ----------
    summary : pandas.DataFrame
        One row per (alpha, severity): ``alpha, severity, n, mean, ci_low, ci_high``
        (e.g. each run's mean over the corruptions at that severity, summarised over
        the runs of the alpha).
    ax : matplotlib.axes.Axes, optional
        Axes to draw on (default: a new figure).
    scale : float, default 100
        Multiplier of the values (100: percent).
    ylabel, title : str
        Labels.

    Returns
    -------
    matplotlib.axes.Axes
        One line per alpha, gid ``"alpha:<alpha>"``; x ticks at the (integer) severities.
    """
    ax = new_ax(ax)
    _require(summary, ["alpha", "severity", "mean", "ci_low", "ci_high"], "plot_accuracy_vs_severity")
    sev = np.unique(summary["severity"].astype(int))
    n = _lines_with_ci(ax, summary, "severity", scale, spread=0.3)
    ax.set_xticks(sev, [str(s) for s in sev])
    ax.set_xlabel("Corruption severity")
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    alpha_legend(ax, n)
    if title:
        ax.set_title(title)
    return ax


def plot_attack_accuracy_vs_epsilon(
    summary: pd.DataFrame,
    attack: str,
    ax: Axes | None = None,
    *,
    norm: str | None = None,
    scale: float = 100.0,
    title: str | None = None,
) -> Axes:
    """Accuracy under ``attack`` against epsilon (linear axis in 1/255 units), one line per alpha.

    Parameters
    ----------
    summary : pandas.DataFrame
        One row per (alpha, epsilon) of this attack: ``alpha, epsilon, n, mean,
        ci_low, ci_high``; epsilon in pixel units of [0, 1] (drawn times 255).
    attack : str
        Attack name (axis label).
    ax : matplotlib.axes.Axes, optional
        Axes to draw on (default: a new figure).
    norm : str, optional
        Threat model shown in the x label (``"linf"`` -> L∞, ``"l2"`` -> L2).
    scale : float, default 100
        Multiplier of the accuracies (100: percent).
    title : str, optional
        Panel title.

    Returns
    -------
    matplotlib.axes.Axes
        One line per alpha, gid ``"alpha:<alpha>"``; x ticks at the epsilons.
    """
    ax = new_ax(ax)
    _require(summary, ["alpha", "epsilon", "mean", "ci_low", "ci_high"], "plot_attack_accuracy_vs_epsilon")
    d = summary.assign(eps255=summary["epsilon"].astype(float) * 255)
    eps = np.unique(np.round(d["eps255"].to_numpy(float), 9))
    span = float(eps.max() - eps.min()) if eps.size > 1 else 1.0
    n = _lines_with_ci(ax, d, "eps255", scale, spread=0.04 * span)
    ax.set_xticks(eps, [f"{e:g}" for e in eps])
    pad = 0.08 * span
    ax.set_xlim(float(eps.min()) - pad, float(eps.max()) + pad)
    threat = {"linf": ", L∞", "l2": ", L2"}.get(str(norm).lower(), "") if norm else ""
    ax.set_xlabel(f"ε (× 1/255{threat})")
    ax.set_ylabel(
        f"Accuracy under {attack.upper()} (%)" if scale == 100 else f"Accuracy under {attack.upper()}"
    )
    ax.grid(True, axis="y", alpha=0.3)
    alpha_legend(ax, n)
    if title:
        ax.set_title(title)
    return ax


def plot_corruption_accuracy_vs_alpha(
    runs: pd.DataFrame,
    summary: pd.DataFrame,
    column: str = "mean_corruption_accuracy",
    ax: Axes | None = None,
    *,
    scale: float = 100.0,
    ylabel: str | None = None,
    title: str | None = None,
) -> Axes:
    """Per-run ``column`` (points) and its per-alpha mean with 95% CI against alpha.

    Parameters
    ----------
    runs : pandas.DataFrame
        One row per run: ``alpha`` and ``column``.
    summary : pandas.DataFrame
        Per-alpha statistics of ``column``: ``alpha, n, mean, ci_low, ci_high``.
    column : str
        Per-run column drawn.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on (default: a new figure).
    scale : float, default 100
        Multiplier (100: percent).
    ylabel, title : str, optional
        Labels (default y label: the column name).

    Returns
    -------
    matplotlib.axes.Axes
        Runs: scatter gid ``"runs"``; means ``"mean:<alpha>"``; alpha = 0 mean line ``"baseline"``.
    """
    ax = new_ax(ax)
    _require(runs, ["alpha", column], "plot_corruption_accuracy_vs_alpha")
    _require(summary, ["alpha", "mean", "ci_low", "ci_high"], "plot_corruption_accuracy_vs_alpha")
    palette = alpha_palette(runs["alpha"])
    alpha_axis(ax, runs["alpha"])
    ax.scatter(
        runs["alpha"].astype(float),
        runs[column].astype(float) * scale,
        c=[palette[float(a)] for a in runs["alpha"]],
        s=14,
        alpha=0.55,
        linewidths=0,
        zorder=3,
        gid="runs",
        label="single runs",
    )
    st = summary.sort_values("alpha")
    m = st["mean"].to_numpy(float) * scale
    err = ci_errors(m, st["ci_low"].to_numpy(float) * scale, st["ci_high"].to_numpy(float) * scale)
    if len(st) > 1:
        ax.plot(st["alpha"], m, color="0.55", lw=1.0, zorder=2)
    for i, a in enumerate(st["alpha"].astype(float)):
        c = palette.get(a, ZERO_COLOR)
        cont = ax.errorbar(
            [a],
            [m[i]],
            yerr=err[:, i : i + 1],
            fmt="o",
            ms=6,
            color=c,
            mec="0.15",
            mew=0.6,
            ecolor=c,
            elinewidth=1.6,
            capsize=3,
            zorder=4,
            label="mean ± 95% CI" if i == 0 else None,
        )
        cont.lines[0].set_gid(f"mean:{a:g}")
    base = st[is_baseline(st["alpha"].astype(float)).to_numpy()]
    if len(base):
        ax.axhline(
            float(base["mean"].iloc[0]) * scale,
            color="0.5",
            ls="--",
            lw=1,
            zorder=1,
            gid="baseline",
            label="α = 0 mean",
        )
    ax.set_xlabel(_ALPHA_LABEL)
    ax.set_ylabel(ylabel or column.replace("_", " "))
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, framealpha=0.85)
    if title:
        ax.set_title(title)
    return ax


def plot_robustness_vs_selectivity(
    runs: pd.DataFrame,
    column: str,
    stats: Mapping[str, float] | None = None,
    ax: Axes | None = None,
    *,
    scale: float = 100.0,
    ylabel: str | None = None,
) -> Axes:
    """Per-run ``column`` against mean class selectivity, coloured by alpha.

    Parameters
    ----------
    runs : pandas.DataFrame
        One row per run: ``alpha, mean_selectivity`` and ``column``.
    column : str
        Per-run column on y.
    stats : mapping, optional
        Spearman correlation computed by the caller (``rho``, ``p``, ``ci_low``,
        ``ci_high``, ``n``), shown in the title.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on (default: a new figure).
    scale : float, default 100
        Multiplier of ``column`` (100: percent).
    ylabel : str, optional
        y label (default: the column name).

    Returns
    -------
    matplotlib.axes.Axes
        One scatter per alpha (gid ``"alpha:<alpha>"``), with an alpha legend.
    """
    ax = new_ax(ax)
    _require(runs, ["alpha", "mean_selectivity", column], "plot_robustness_vs_selectivity")
    palette = alpha_palette(runs["alpha"])
    for a in sorted(palette):
        sub = runs[np.isclose(runs["alpha"].astype(float), a)]
        ax.scatter(
            sub["mean_selectivity"].astype(float),
            sub[column].astype(float) * scale,
            color=palette[a],
            s=22,
            edgecolors="0.15",
            linewidths=0.4,
            zorder=3,
            label=f"{a:g}",
            gid=f"alpha:{a:g}",
        )
    ax.set_xlabel("Mean class selectivity index")
    ax.set_ylabel(ylabel or column.replace("_", " "))
    ax.grid(True, alpha=0.3)
    alpha_legend(ax, len(palette))
    if stats:
        rho, lo, hi, p = (float(stats.get(k, np.nan)) for k in ("rho", "ci_low", "ci_high", "p"))
        n = stats.get("n")
        ci = f" [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) and np.isfinite(hi) else ""
        ntext = f", n = {int(n)}" if n is not None and np.isfinite(float(n)) else ""
        ax.set_title(f"Spearman ρ = {rho:.2f}{ci}, p = {p:.2g}{ntext}", fontsize=9)
    return ax
