"""The report's "Robustness" section (paper 2): tables, statistics and figures.

Statistics are computed here and passed to the plot functions of
:mod:`selectivity.plots.robustness`, which only draw. The section is plain data
(:class:`~selectivity.report.collect.TableItem` and
:class:`~selectivity.report.collect.FigureItem`, as for the Mechanisms section) that the
report's Jinja2 template renders with autoescaping; no HTML is made here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from ..analysis.stats import ttests_against_baseline
from ..sweep.store import open_store
from .collect import FigureItem, TableItem, slug

__all__ = ["spearman_with_ci", "robustness_statistics", "robustness_items"]

_METRICS = ("clean_accuracy", "mean_corruption_accuracy", "relative_corruption_accuracy")


def spearman_with_ci(
    x, y, n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> dict[str, float]:
    """Spearman correlation of paired samples with a percentile bootstrap CI over pairs.

    Returns
    -------
    dict
        ``rho``, ``p``, ``ci_low``, ``ci_high``, ``n`` (NaN where fewer than 3 finite pairs).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    out = {"rho": np.nan, "p": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n": float(len(x))}
    if len(x) < 3:
        return out
    r = spearmanr(x, y)
    out["rho"], out["p"] = float(r.statistic), float(r.pvalue)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_resamples, len(x)))  # (resamples, n) pair indices
    boot = np.array([spearmanr(x[i], y[i]).statistic for i in idx], dtype=float)
    boot = boot[np.isfinite(boot)]
    if len(boot):
        a = (1 - confidence) / 2
        out["ci_low"], out["ci_high"] = (float(v) for v in np.quantile(boot, [a, 1 - a]))
    return out


def robustness_statistics(
    summary: pd.DataFrame, attacks: pd.DataFrame, n_resamples: int = 2000
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """t-tests against alpha = 0 (families by sign of alpha) and Spearman correlations.

    Returns
    -------
    tests : pandas.DataFrame
        :func:`~selectivity.analysis.stats.ttests_against_baseline` rows with a ``measure``
        column, per model.
    correlations : pandas.DataFrame
        ``model, measure, rho, p, ci_low, ci_high, n`` against mean class selectivity.
    """
    per_run = summary.copy()
    for (atk, eps), g in attacks.groupby(["attack", "epsilon"]):
        per_run = per_run.merge(
            g[["run_id", "accuracy"]].rename(columns={"accuracy": f"{atk}_{eps * 255:g}/255"}),
            on="run_id",
            how="left",
        )
    measures = [c for c in per_run.columns if c in _METRICS or "/255" in c]
    tests, corr = [], []
    for model, g in per_run.groupby("model", sort=True):
        for m in measures:
            if 0.0 in set(g["alpha"]) and g["alpha"].nunique() > 1:
                t = ttests_against_baseline(g, m, family="sign")
                tests.append(t.assign(model=model, measure=m))
            corr.append(
                {"model": model, "measure": m, **spearman_with_ci(g["mean_selectivity"], g[m], n_resamples)}
            )
    return (pd.concat(tests, ignore_index=True) if tests else pd.DataFrame(), pd.DataFrame(corr))


def _figure(
    fid: str, title: str, caption: str, draw: Callable[[], Any], out_dir: Path, dpi: int
) -> FigureItem:
    """Draw and save one figure; a failure becomes the item's note (never an exception)."""
    import matplotlib.pyplot as plt

    from ..plots.style import save_figure

    item = FigureItem(id=fid, paper="Paper 2", title=title, caption=caption)
    try:
        ax = draw()
        item.path = save_figure(ax, out_dir / "figures" / f"{fid}.png", dpi=dpi)
        plt.close(ax.figure)
    except Exception as e:  # a figure that cannot be drawn is a note in the section
        item.note = f"This figure could not be drawn: {type(e).__name__}: {e}"
    return item


def _unique_keys(names: list[str]) -> dict[str, str]:
    """File- and id-safe key per name (attack names come from run directories)."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        key, n = slug(name), 1
        while key in used:
            n += 1
            key = f"{slug(name)}-{n}"
        used.add(key)
        out[name] = key
    return out


def robustness_items(
    sweep_dir: str | os.PathLike, out_dir: str | os.PathLike, n_resamples: int = 2000, dpi: int = 120
) -> tuple[list[TableItem], list[FigureItem]]:
    """Tables and figures of the Robustness section; ``([], [])`` without robustness results.

    Only plain data: the tables' frames (written as ``tables/robustness-*.csv`` by the
    report) and the figures' PNG files (``figures/robustness-*.png``, written here), with
    titles, captions and notes as text. The template renders them with autoescaping, like
    every other section.

    Parameters
    ----------
    sweep_dir : path
        Sweep directory (its database holds the results of ``selectivity robustness``).
    out_dir : path
        The report's output directory.
    n_resamples : int, default 2000
        Bootstrap resamples of each Spearman CI.
    dpi : int, default 120
        Resolution of the figures.

    Returns
    -------
    tables : list of TableItem
        ``robustness-summary``, ``robustness-tests``, ``robustness-correlations`` (those
        with rows).
    figures : list of FigureItem
    """
    with open_store(Path(sweep_dir), log=lambda _m: None) as store:
        summary = store.robustness_df("summary")
        corruptions = store.robustness_df("corruptions")
        attacks = store.robustness_df("attacks")
    if summary.empty:
        return [], []
    import matplotlib

    matplotlib.use("Agg")

    from ..plots.robustness import (
        plot_accuracy_vs_severity,
        plot_attack_accuracy_vs_epsilon,
        plot_corruption_accuracy_vs_alpha,
        plot_robustness_vs_selectivity,
    )

    out = Path(out_dir)
    tests, corr = robustness_statistics(summary, attacks, n_resamples)
    settings = [str(s) for s in summary["settings"].dropna().unique()]
    note = (
        f"The runs were evaluated with {len(settings)} different settings (the settings column of "
        "`selectivity results SWEEP --robustness`): their results are not comparable."
        if len(settings) > 1
        else None
    )
    tables = [
        TableItem(
            "robustness-summary",
            "Robustness summary (per run)",
            summary.drop(columns=["settings"]),
            caption=f"Settings: {settings[0]}" if len(settings) == 1 else "",
            note=note,
        )
    ]
    if not tests.empty:
        tables.append(
            TableItem(
                "robustness-tests",
                "t-tests against α = 0",
                tests,
                caption="Bonferroni within the negative and within the positive alphas.",
            )
        )
    if not corr.empty:
        tables.append(
            TableItem(
                "robustness-correlations",
                "Spearman correlation with mean class selectivity (per run)",
                corr,
                caption="ci_low/ci_high: 95% percentile bootstrap CI over runs.",
            )
        )
    figs: list[FigureItem] = []
    if not corruptions.empty:
        figs.append(
            _figure(
                "robustness-severity",
                "Accuracy vs corruption severity",
                "Mean over the corruptions per severity, per α.",
                lambda: plot_accuracy_vs_severity(corruptions),
                out,
                dpi,
            )
        )
        figs.append(
            _figure(
                "robustness-alpha",
                "Mean corruption accuracy vs α",
                "Mean over the corruption x severity cells, one point per run.",
                lambda: plot_corruption_accuracy_vs_alpha(summary),
                out,
                dpi,
            )
        )
        c = corr[corr["measure"] == "mean_corruption_accuracy"] if not corr.empty else corr
        st = c.iloc[0].to_dict() if len(c) == 1 else None
        figs.append(
            _figure(
                "robustness-vs-selectivity",
                "Mean corruption accuracy vs class selectivity",
                "One point per run; Spearman ρ with a 95% bootstrap CI over runs.",
                lambda: plot_robustness_vs_selectivity(summary, "mean_corruption_accuracy", st),
                out,
                dpi,
            )
        )
    names = sorted(str(a) for a in set(attacks["attack"])) if not attacks.empty else []
    for atk, key in _unique_keys(names).items():
        figs.append(
            _figure(
                f"robustness-{key}",
                f"Accuracy under {atk.upper()} vs ε",
                "ε in [0, 1] pixel units, per α.",
                functools.partial(plot_attack_accuracy_vs_epsilon, attacks, atk),
                out,
                dpi,
            )
        )
    return tables, figs
