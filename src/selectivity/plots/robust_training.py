"""Figures of robust training vs class selectivity (paper 2, the reverse direction). Plot functions only draw.

Every function takes per-method summaries computed by the caller (means with their
bootstrap CIs, see :mod:`selectivity.report.robust_training`) and an optional ``ax``;
none computes a statistic.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.axes import Axes

from .style import new_ax

__all__ = [
    "METHOD_COLORS",
    "METHOD_NAMES",
    "plot_layer_selectivity_by_method",
    "plot_robustness_vs_selectivity_by_method",
    "plot_measure_vs_alpha_by_method",
]

#: Short names of the robust-training methods (config field ``robust``).
METHOD_NAMES = {"none": "standard", "adversarial": "PGD", "noise_augment": "noise", "augmix": "AugMix"}
#: One colour per method: standard grey, the adversarial method red, the average-case ones blue/green.
METHOD_COLORS = {"none": "0.35", "adversarial": "tab:red", "noise_augment": "tab:blue", "augmix": "tab:green"}


def _name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def _color(method: str, i: int) -> str:
    return METHOD_COLORS.get(method, f"C{i % 10}")


def plot_layer_selectivity_by_method(layers: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Mean class selectivity per layer, one line (with its CI band) per training method.

    Parameters
    ----------
    layers : pandas.DataFrame
        One row per method and layer: ``method, layer_index, layer, mean, ci_low, ci_high``.
    ax : Axes, optional
    """
    ax = new_ax(ax, figsize=(7, 3.8))
    for i, (method, g) in enumerate(layers.groupby("method", sort=False)):
        g = g.sort_values("layer_index")
        c = _color(str(method), i)
        ax.plot(g["layer_index"], g["mean"], "o-", ms=3, color=c, label=_name(str(method)))
        ax.fill_between(g["layer_index"], g["ci_low"], g["ci_high"], color=c, alpha=0.2, lw=0)
    names = layers.drop_duplicates("layer_index").sort_values("layer_index")
    ax.set_xticks(names["layer_index"], names["layer"], rotation=90, fontsize=6)
    ax.set_xlabel("layer")
    ax.set_ylabel("mean class selectivity")
    ax.legend(fontsize=7)
    return ax


def plot_robustness_vs_selectivity_by_method(
    summary: pd.DataFrame, measure: str, ax: Axes | None = None
) -> Axes:
    """Each method's mean ``measure`` against its mean class selectivity, 95% CIs as error bars.

    Parameters
    ----------
    summary : pandas.DataFrame
        One row per method: ``method``, ``selectivity_mean``, ``selectivity_low``,
        ``selectivity_high`` and ``<measure>_mean``, ``<measure>_low``, ``<measure>_high``.
    measure : str
        E.g. ``"mean_corruption_accuracy"`` or ``"pgd 8/255"``.
    ax : Axes, optional
    """
    ax = new_ax(ax, figsize=(4.5, 3.6))
    for i, row in enumerate(summary.itertuples(index=False)):
        r = row._asdict()
        x, y = r["selectivity_mean"], r[f"{measure}_mean"]
        xerr = [[x - r["selectivity_low"]], [r["selectivity_high"] - x]]
        yerr = [[y - r[f"{measure}_low"]], [r[f"{measure}_high"] - y]]
        ax.errorbar(
            [x],
            [y],
            xerr=xerr,
            yerr=yerr,
            fmt="o",
            color=_color(str(r["method"]), i),
            label=_name(str(r["method"])),
        )
    ax.set_xlabel("mean class selectivity")
    ax.set_ylabel(measure.replace("_", " "))
    ax.legend(fontsize=7)
    return ax


def plot_measure_vs_alpha_by_method(summary: pd.DataFrame, ylabel: str, ax: Axes | None = None) -> Axes:
    """A measure against the regulariser's alpha, one line per training method, CI bands.

    Parameters
    ----------
    summary : pandas.DataFrame
        One row per method and alpha: ``method, alpha, mean, ci_low, ci_high``.
    ylabel : str
    ax : Axes, optional
    """
    ax = new_ax(ax, figsize=(4.5, 3.6))
    for i, (method, g) in enumerate(summary.groupby("method", sort=False)):
        g = g.sort_values("alpha")
        c = _color(str(method), i)
        ax.plot(g["alpha"], g["mean"], "o-", color=c, label=_name(str(method)))
        ax.fill_between(g["alpha"], g["ci_low"], g["ci_high"], color=c, alpha=0.2, lw=0)
    ax.set_xlabel("α (regulariser strength)")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    return ax
