"""The report's "Robustness" section (paper 2): tables, statistics and figures.

Reads the robustness frames collected once (``ctx.data.robustness``). Statistics are
computed here once (:func:`robustness_statistics`: per-alpha means with bootstrap CIs,
t-tests against alpha = 0, Spearman correlations with class selectivity) and passed to
the tables and to the plot functions of :mod:`selectivity.plots.robustness`, which only
draw. Tables are formatted like paper 1's (:mod:`.format`: percentages, yes/no, CIs); the
section is plain data (:class:`~.section.Section`) that the report's template renders
with autoescaping.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..analysis.stats import spearman_ci, ttests_against_baseline
from ..analysis.summary import group_summary
from ..plots.robustness import (
    plot_accuracy_vs_severity,
    plot_attack_accuracy_vs_epsilon,
    plot_corruption_accuracy_vs_alpha,
    plot_robustness_vs_selectivity,
)
from ..plots.style import PANEL_SIZE, describe
from .collect import FigureItem, TableItem, slug
from .format import format_alpha, format_ci, format_p, format_percent, ttest_display, value_formatter
from .section import ReportContext, Section, figure_item, small_sample_note

__all__ = ["RobustnessStats", "robustness_statistics", "robustness_items", "robustness_sections"]

#: Per-run measures of the summary frame, with their labels on the page.
MEASURES = {
    "clean_accuracy": "clean accuracy",
    "mean_corruption_accuracy": "corruption accuracy",
    "relative_corruption_accuracy": "relative corruption accuracy",
}
#: Columns that tell settings (model, activation) apart; never pooled.
_SETTING_COLS = ("model", "activation", "negative_slope")

_CAPTION = (
    "From `selectivity robustness`: accuracy on corrupted images (mean over the corruption x severity "
    "cells), relative corruption accuracy (that mean divided by the run's clean accuracy on the same "
    "images) and accuracy under white-box attacks, per run. Means over runs with 95% percentile "
    "bootstrap CIs; t-tests against α = 0, Bonferroni-corrected within the negative and within the "
    "positive alphas; Spearman correlation with mean class selectivity across runs (95% bootstrap CI "
    "over runs)."
)


def _attack_column(attack: str, eps: float) -> str:
    return f"{attack}_{eps * 255:g}/255"


def _attack_label(attack: str, eps: float) -> str:
    return f"{attack.upper()} ε = {eps * 255:g}/255"


@dataclass
class RobustnessStats:
    """Every statistic of the Robustness section, computed once.

    Attributes
    ----------
    per_run : pandas.DataFrame
        One row per run: the summary frame with one column per (attack, epsilon)
        (``"<attack>_<eps x 255>/255"``).
    labels : dict
        Page label of each measure column of ``per_run``.
    by_alpha : pandas.DataFrame
        Long: setting columns, ``alpha, measure, n, mean, ci_low, ci_high, std``.
    severity : pandas.DataFrame
        Per (setting, kind, alpha, severity), ``kind`` "absolute" (mean accuracy over the
        corruptions of each run) or "relative" (divided by the run's clean accuracy),
        summarised over runs.
    attacks : pandas.DataFrame
        Per (setting, attack, norm, alpha, epsilon), accuracy summarised over runs.
    tests : pandas.DataFrame
        :func:`~selectivity.analysis.stats.ttests_against_baseline` rows with ``model``
        and ``measure`` columns.
    correlations : pandas.DataFrame
        ``model, measure, rho, p, ci_low, ci_high, n`` against mean class selectivity.
    """

    per_run: pd.DataFrame
    labels: dict[str, str]
    by_alpha: pd.DataFrame
    severity: pd.DataFrame = field(default_factory=pd.DataFrame)
    attacks: pd.DataFrame = field(default_factory=pd.DataFrame)
    tests: pd.DataFrame = field(default_factory=pd.DataFrame)
    correlations: pd.DataFrame = field(default_factory=pd.DataFrame)


def _setting_cols(df: pd.DataFrame) -> list[str]:
    return [c for c in _SETTING_COLS if c in df.columns]


def _summaries(df: pd.DataFrame, by: list[str], value: str, n_resamples: int) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        d = df[np.isfinite(pd.to_numeric(df[value], errors="coerce").to_numpy(dtype=float))]
        return group_summary(d, by, value, n_resamples=n_resamples)


def robustness_statistics(
    summary: pd.DataFrame, corruptions: pd.DataFrame, attacks: pd.DataFrame, n_resamples: int = 2000
) -> RobustnessStats:
    """Per-alpha summaries, t-tests against alpha = 0 and Spearman correlations, computed once.

    Parameters
    ----------
    summary, corruptions, attacks : pandas.DataFrame
        The store's robustness frames (one row per run; per run, corruption and
        severity; per run, attack and epsilon).
    n_resamples : int, default 2000
        Bootstrap resamples of every CI.
    """
    per_run = summary.copy()
    labels = dict(MEASURES)
    for (atk, eps), g in attacks.groupby(["attack", "epsilon"]) if not attacks.empty else []:
        col = _attack_column(str(atk), float(eps))
        labels[col] = _attack_label(str(atk), float(eps))
        per_run = per_run.merge(
            g[["run_id", "accuracy"]].rename(columns={"accuracy": col}), on="run_id", how="left"
        )
    measures = [c for c in labels if c in per_run.columns]
    keys = _setting_cols(per_run)
    by_alpha = pd.concat(
        [_summaries(per_run, [*keys, "alpha"], m, n_resamples).assign(measure=m) for m in measures],
        ignore_index=True,
    )
    tests, corr = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for model, g in per_run.groupby("model", sort=True):
            for m in measures:
                if 0.0 in set(g["alpha"]) and g["alpha"].nunique() > 1:
                    t = ttests_against_baseline(g, m, family="sign")
                    tests.append(t.assign(model=model, measure=m))
                corr.append(
                    {"model": model, "measure": m, **spearman_ci(g["mean_selectivity"], g[m], n_resamples)}
                )
    out = RobustnessStats(
        per_run=per_run,
        labels={m: labels[m] for m in measures},
        by_alpha=by_alpha,
        tests=pd.concat(tests, ignore_index=True) if tests else pd.DataFrame(),
        correlations=pd.DataFrame(corr),
    )
    if not corruptions.empty:
        ckeys = _setting_cols(corruptions)
        sev = corruptions.groupby([*ckeys, "run_id", "alpha", "severity"], as_index=False, dropna=False)[
            "accuracy"
        ].mean()  # (runs x severities): each run's mean over the corruptions
        sev = sev.merge(summary[["run_id", "clean_accuracy"]], on="run_id", how="left")
        sev["relative"] = sev["accuracy"] / sev["clean_accuracy"]
        out.severity = pd.concat(
            [
                _summaries(sev, [*ckeys, "alpha", "severity"], "accuracy", n_resamples).assign(
                    kind="absolute"
                ),
                _summaries(sev, [*ckeys, "alpha", "severity"], "relative", n_resamples).assign(
                    kind="relative"
                ),
            ],
            ignore_index=True,
        )
    if not attacks.empty:
        akeys = _setting_cols(attacks)
        out.attacks = _summaries(
            attacks, [*akeys, "attack", "norm", "alpha", "epsilon"], "accuracy", n_resamples
        )
    return out


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


def _varying(df: pd.DataFrame, cols: list[str]) -> list[str]:
    """The columns of ``cols`` whose value differs between rows (only those are shown)."""
    return [c for c in cols if c in df.columns and df[c].astype(str).nunique(dropna=False) > 1]


def _setting_label(row: Any, cols: list[str]) -> str:
    return describe(pd.DataFrame([{c: row[c] for c in cols}])) if cols else ""


# --------------------------------------------------------------------------- tables
def _by_alpha_display(st: RobustnessStats, measures: list[str]) -> pd.DataFrame:
    """One row per (setting, alpha), one "mean [CI]" column per measure, in percent."""
    d = st.by_alpha[st.by_alpha["measure"].isin(measures)]
    keys = _setting_cols(d)
    shown = _varying(d, keys)
    rows = []
    for _key, g in d.groupby([*keys, "alpha"], sort=True, dropna=False):
        first = g.iloc[0]
        row: dict[str, Any] = {}
        if shown:
            row["setting"] = _setting_label(first, keys)
        row["α"] = format_alpha(first["alpha"])
        row["n"] = int(g["n"].max())
        for m in measures:
            r = g[g["measure"] == m]
            row[st.labels[m]] = (
                format_ci(
                    r["mean"].iloc[0],
                    r["ci_low"].iloc[0],
                    r["ci_high"].iloc[0],
                    r["n"].iloc[0],
                    100.0,
                    2,
                    "%",
                )
                if len(r)
                else "-"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def _per_run_display(st: RobustnessStats) -> pd.DataFrame:
    """Per run: id, alpha, seed, selectivity and every measure in percent; only varying setting columns."""
    d = st.per_run.sort_values([*_setting_cols(st.per_run), "alpha", "seed", "run_id"])
    out = pd.DataFrame({"run": d["run_id"].astype(str)})
    for c in _varying(d, _setting_cols(d)):
        out[c.replace("_", " ")] = d[c].astype(str).to_numpy()
    out["α"] = [format_alpha(a) for a in d["alpha"]]
    out["seed"] = d["seed"].to_numpy()
    out["mean SI"] = [f"{v:.3f}" if np.isfinite(v) else "-" for v in d["mean_selectivity"].astype(float)]
    for m, label in st.labels.items():
        out[label] = [format_percent(v) for v in d[m]]
    if "n_images" in d.columns and d["n_images"].nunique() > 1:
        out["images"] = d["n_images"].to_numpy()
    return out


def _tests_display(st: RobustnessStats) -> pd.DataFrame:
    t = st.tests
    view = ttest_display(t, value_formatter(100.0, 2, "%"))
    view.insert(0, "measure", [st.labels.get(m, m) for m in t["measure"]])
    if t["model"].nunique() > 1:
        view.insert(0, "model", t["model"].astype(str).to_numpy())
    return view


def _correlations_display(st: RobustnessStats) -> pd.DataFrame:
    c = st.correlations
    view = pd.DataFrame(
        {
            "measure": [st.labels.get(m, m) for m in c["measure"]],
            "n (runs)": c["n"].astype(int).to_numpy(),
            "Spearman ρ (95% CI)": [
                format_ci(r.rho, r.ci_low, r.ci_high, r.n, 1.0, 2) for r in c.itertuples(index=False)
            ],
            "p": [format_p(p) for p in c["p"]],
        }
    )
    if c["model"].nunique() > 1:
        view.insert(0, "model", c["model"].astype(str).to_numpy())
    return view


def _settings_items(settings: str) -> list[tuple[str, str]]:
    """The evaluation settings (JSON) as term/value pairs; epsilons in 1/255 units."""
    try:
        parsed = json.loads(settings)
    except (TypeError, ValueError):
        return [("settings", str(settings))]
    if not isinstance(parsed, dict):
        return [("settings", str(settings))]

    def text(key: str, v: Any) -> str:
        if isinstance(v, (list, tuple)):
            return ", ".join(text(key, x) for x in v) or "none"
        if isinstance(v, float) and "eps" in key:
            return f"{v * 255:g}/255"
        if isinstance(v, float):
            return f"{v:g}"
        if isinstance(v, dict):
            return "; ".join(f"{k}: {text(str(k), x)}" for k, x in v.items()) or "none"
        return "none" if v is None else str(v)

    return [(str(k).replace("_", " "), text(str(k), v)) for k, v in parsed.items()]


# --------------------------------------------------------------------------- figures
def _facets(frames: list[pd.DataFrame]) -> list[tuple[str, list[pd.DataFrame]]]:
    """Per setting (model, activation), the rows of each frame; one facet when there is one setting."""
    keys = _setting_cols(frames[0])
    if not keys or frames[0].empty:
        return [("", frames)]
    out = []
    for key, g in frames[0].groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        subs = []
        for f in frames:
            m = np.ones(len(f), dtype=bool)
            for c, v in zip(keys, key):
                if c in f.columns:
                    m &= (f[c].isna() if pd.isna(v) else f[c] == v).to_numpy()
            subs.append(f[m])
        out.append((describe(g) if len(keys) else "", subs))
    return out


def _grid(n_rows: int, n_cols: int) -> tuple[Figure, list[list[Axes]]]:
    w, h = PANEL_SIZE
    fig = Figure(figsize=(w * n_cols, h * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    return fig, [list(row) for row in axes]


def _title(prefix: str, text: str) -> str:
    return f"{prefix}: {text}" if prefix else text


def _severity_figure(st: RobustnessStats) -> Figure:
    facets = _facets([st.severity])
    fig, axes = _grid(len(facets), 2)
    for row, (label, (sev,)) in zip(axes, facets):
        plot_accuracy_vs_severity(sev[sev["kind"] == "absolute"], row[0], title=_title(label, "absolute"))
        plot_accuracy_vs_severity(
            sev[sev["kind"] == "relative"],
            row[1],
            ylabel="Relative accuracy (% of clean accuracy)",
            title=_title(label, "relative to clean accuracy"),
        )
    return fig


def _alpha_figure(st: RobustnessStats) -> Figure:
    ba = st.by_alpha
    facets = _facets([st.per_run, ba])
    fig, axes = _grid(len(facets), 2)
    for row, (label, (runs, summ)) in zip(axes, facets):
        for ax, m, ylabel in (
            (row[0], "mean_corruption_accuracy", "Corruption accuracy (%)"),
            (row[1], "relative_corruption_accuracy", "Relative corruption accuracy (% of clean)"),
        ):
            plot_corruption_accuracy_vs_alpha(
                runs, summ[summ["measure"] == m], m, ax, ylabel=ylabel, title=_title(label, MEASURES[m])
            )
    return fig


def _selectivity_figure(st: RobustnessStats) -> Figure:
    corr = st.correlations
    facets = _facets([st.per_run])
    fig, axes = _grid(len(facets), 2)
    for row, (_label, (runs,)) in zip(axes, facets):
        model = runs["model"].iloc[0] if "model" in runs.columns and len(runs) else None
        for ax, m, ylabel in (
            (row[0], "mean_corruption_accuracy", "Corruption accuracy (%)"),
            (row[1], "relative_corruption_accuracy", "Relative corruption accuracy (% of clean)"),
        ):
            c = corr[(corr["measure"] == m) & (corr["model"] == model)] if not corr.empty else corr
            plot_robustness_vs_selectivity(
                runs, m, c.iloc[0].to_dict() if len(c) == 1 else None, ax, ylabel=ylabel
            )
    return fig


def _attack_figure(st: RobustnessStats, attack: str) -> Figure:
    a = st.attacks[st.attacks["attack"].astype(str) == attack]
    facets = _facets([a])
    fig, axes = _grid(len(facets), 1)
    for row, (label, (sub,)) in zip(axes, facets):
        norms = sorted(set(sub["norm"].astype(str)))
        plot_attack_accuracy_vs_epsilon(
            sub, attack, row[0], norm=norms[0] if len(norms) == 1 else None, title=label or None
        )
    return fig


# --------------------------------------------------------------------------- section
def robustness_items(
    ctx: ReportContext,
) -> tuple[list[TableItem], list[FigureItem], list[str], list[tuple[str, str]]]:
    """Tables, figures, notes and settings of the Robustness section (empty without results).

    Only plain data: the tables' frames (written as ``tables/robustness-*.csv``) with
    their page views, and the figures' PNG files (``figures/robustness-*.png``).
    """
    frames = ctx.data.robustness
    empty = pd.DataFrame()
    summary = frames.get("summary", empty)
    corruptions = frames.get("corruptions", empty)
    attacks = frames.get("attacks", empty)
    if summary.empty:
        return [], [], [], []
    st = robustness_statistics(summary, corruptions, attacks, ctx.n_resamples)
    settings = [str(s) for s in summary["settings"].dropna().unique()]
    notes = []
    if len(settings) > 1:
        notes.append(
            f"The runs were evaluated with {len(settings)} different settings (the settings column of "
            "`selectivity results SWEEP --robustness`): their results are not comparable."
        )
    counts = st.per_run.groupby([*_setting_cols(st.per_run), "alpha"], dropna=False).size()
    note = small_sample_note(counts.to_numpy())
    if note:
        notes.append(note)
    corruption_measures = [m for m in MEASURES if m in st.labels]
    attack_measures = [m for m in st.labels if m not in MEASURES]
    by_alpha = st.by_alpha
    tables = [
        TableItem(
            "robustness-by-alpha",
            "Robustness by α (mean and 95% CI over runs)",
            by_alpha[by_alpha["measure"].isin(corruption_measures)],
            display=_by_alpha_display(st, corruption_measures),
            caption="Clean accuracy and accuracy on corrupted images (mean over the corruption x severity "
            "cells) on the same test images; relative = corrupted / clean accuracy of each run. n = runs.",
        )
    ]
    if attack_measures:
        tables.append(
            TableItem(
                "robustness-attacks-by-alpha",
                "Accuracy under attack by α (mean and 95% CI over runs)",
                by_alpha[by_alpha["measure"].isin(attack_measures)],
                display=_by_alpha_display(st, attack_measures),
                caption="White-box attacks at each ε (pixel values in [0, 1], ε in units of 1/255). n = runs.",
            )
        )
    if not st.tests.empty:
        tables.append(
            TableItem(
                "robustness-tests",
                "Each α against α = 0 (Student t-test)",
                st.tests,
                display=_tests_display(st),
                caption="Two-sided Student t-test of each measure at each α against α = 0, over runs; p-values "
                "Bonferroni-corrected within each family (the penalising and the promoting alphas, as in "
                "paper 1), whose name and size m stand beside each p. Means and differences in %.",
            )
        )
    if not st.correlations.empty:
        tables.append(
            TableItem(
                "robustness-correlations",
                "Spearman correlation with mean class selectivity (per run)",
                st.correlations,
                display=_correlations_display(st),
                caption="Across the runs of all α: ρ with a 95% percentile bootstrap CI over runs. "
                "The absolute and the relative corruption accuracy can disagree: the absolute one "
                "includes the effect of α on clean accuracy.",
            )
        )
    tables.append(
        TableItem(
            "robustness-summary",
            "Robustness per run",
            summary.drop(columns=["settings"]),
            display=_per_run_display(st),
            caption="Accuracies in %; mean SI = the run's mean class selectivity.",
        )
    )
    figs: list[FigureItem] = []

    def fig(fid: str, title: str, caption: str, draw: Callable[[], Any]) -> FigureItem:
        return figure_item(ctx, fid, "Paper 2", title, caption, draw)

    n_text = "error bars: 95% percentile bootstrap CI over runs"
    if not corruptions.empty:
        figs.append(
            fig(
                "robustness-severity",
                "Accuracy vs corruption severity",
                "Each run's mean accuracy over the corruptions at each severity (left), and the same divided "
                f"by its clean accuracy (right); mean over the runs of each α, {n_text}. α colours as in "
                "every figure (blue < 0, grey = 0, red > 0).",
                lambda: _severity_figure(st),
            )
        )
        figs.append(
            fig(
                "robustness-alpha",
                "Corruption accuracy vs α",
                "Mean over the corruption x severity cells (left) and relative to clean accuracy (right): one "
                f"point per run, mean per α, {n_text}; dashed: α = 0 mean.",
                lambda: _alpha_figure(st),
            )
        )
        figs.append(
            fig(
                "robustness-vs-selectivity",
                "Corruption accuracy vs class selectivity",
                "One point per run, absolute (left) and relative to clean accuracy (right); Spearman ρ with a "
                "95% bootstrap CI over runs in each title.",
                lambda: _selectivity_figure(st),
            )
        )
    names = sorted(str(a) for a in set(attacks["attack"])) if not attacks.empty else []
    for atk, key in _unique_keys(names).items():
        figs.append(
            fig(
                f"robustness-{key}",
                f"Accuracy under {atk.upper()} vs ε",
                f"ε in units of 1/255 of the [0, 1] pixel range (linear axis); mean over the runs of each α, {n_text}.",
                functools.partial(_attack_figure, st, atk),
            )
        )
    items = _settings_items(settings[0]) if len(settings) == 1 else []
    return tables, figs, notes, items


def robustness_sections(ctx: ReportContext) -> list[Section]:
    """The Robustness section; none without results of ``selectivity robustness``."""
    tables, figures, notes, settings = robustness_items(ctx)
    if not tables and not figures:
        return []
    return [
        Section(
            id="robustness",
            heading="Robustness (paper 2)",
            caption=_CAPTION,
            notes=notes,
            settings=settings,
            tables=tables,
            figures=figures,
        )
    ]
