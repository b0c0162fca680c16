"""The report's "Robustness" section (paper 2): tables, statistics and figures.

Reads the robustness frames collected once (``ctx.data.robustness``). Statistics are
computed here once and passed to the plot functions of
:mod:`selectivity.plots.robustness`, which only draw. The section is plain data
(:class:`~.section.Section`) that the report's template renders with autoescaping; no
HTML is made here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pandas as pd

from ..analysis.stats import spearman_ci, ttests_against_baseline
from ..plots.robustness import (
    plot_accuracy_vs_severity,
    plot_attack_accuracy_vs_epsilon,
    plot_corruption_accuracy_vs_alpha,
    plot_robustness_vs_selectivity,
)
from .collect import FigureItem, TableItem, slug
from .section import ReportContext, Section, figure_item

__all__ = ["robustness_statistics", "robustness_items", "robustness_sections"]

_CAPTION = (
    "From `selectivity robustness`: accuracy on corrupted images (mean over corruption x severity cells) "
    "and under white-box attacks, per run; t-tests against α = 0 (Bonferroni within the negative and the "
    "positive alphas); Spearman correlation with mean class selectivity across runs (95% bootstrap CI over "
    "runs)."
)

_METRICS = ("clean_accuracy", "mean_corruption_accuracy", "relative_corruption_accuracy")


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
                {"model": model, "measure": m, **spearman_ci(g["mean_selectivity"], g[m], n_resamples)}
            )
    return (pd.concat(tests, ignore_index=True) if tests else pd.DataFrame(), pd.DataFrame(corr))


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


def robustness_items(ctx: ReportContext) -> tuple[list[TableItem], list[FigureItem]]:
    """Tables and figures of the Robustness section; ``([], [])`` without robustness results.

    Only plain data: the tables' frames (written as ``tables/robustness-*.csv`` by the
    report) and the figures' PNG files (``figures/robustness-*.png``), with titles,
    captions and notes as text. Reads the robustness frames collected once
    (``ctx.data.robustness``).

    Returns
    -------
    tables : list of TableItem
        ``robustness-summary``, ``robustness-tests``, ``robustness-correlations`` (those
        with rows).
    figures : list of FigureItem
    """
    frames = ctx.data.robustness
    empty = pd.DataFrame()
    summary = frames.get("summary", empty)
    corruptions = frames.get("corruptions", empty)
    attacks = frames.get("attacks", empty)
    if summary.empty:
        return [], []
    tests, corr = robustness_statistics(summary, attacks, ctx.n_resamples)
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

    def fig(fid: str, title: str, caption: str, draw: Callable[[], Any]) -> FigureItem:
        return figure_item(ctx, fid, "Paper 2", title, caption, draw, wide=False)

    if not corruptions.empty:
        figs.append(
            fig(
                "robustness-severity",
                "Accuracy vs corruption severity",
                "Mean over the corruptions per severity, per α.",
                lambda: plot_accuracy_vs_severity(corruptions),
            )
        )
        figs.append(
            fig(
                "robustness-alpha",
                "Mean corruption accuracy vs α",
                "Mean over the corruption x severity cells, one point per run.",
                lambda: plot_corruption_accuracy_vs_alpha(summary),
            )
        )
        c = corr[corr["measure"] == "mean_corruption_accuracy"] if not corr.empty else corr
        st = c.iloc[0].to_dict() if len(c) == 1 else None
        figs.append(
            fig(
                "robustness-vs-selectivity",
                "Mean corruption accuracy vs class selectivity",
                "One point per run; Spearman ρ with a 95% bootstrap CI over runs.",
                lambda: plot_robustness_vs_selectivity(summary, "mean_corruption_accuracy", st),
            )
        )
    names = sorted(str(a) for a in set(attacks["attack"])) if not attacks.empty else []
    for atk, key in _unique_keys(names).items():
        figs.append(
            fig(
                f"robustness-{key}",
                f"Accuracy under {atk.upper()} vs ε",
                "ε in [0, 1] pixel units, per α.",
                functools.partial(plot_attack_accuracy_vs_epsilon, attacks, atk),
            )
        )
    return tables, figs


def robustness_sections(ctx: ReportContext) -> list[Section]:
    """The Robustness section; none without results of ``selectivity robustness``."""
    tables, figures = robustness_items(ctx)
    if not tables and not figures:
        return []
    return [
        Section(
            id="robustness",
            heading="Robustness (paper 2)",
            caption=_CAPTION,
            tables=tables,
            figures=figures,
        )
    ]
