"""The report's "Robust training and selectivity" section (paper 2, the reverse direction).

Paper 2's authors state that the link between selectivity and robustness runs both ways:
methods that improve robustness to natural corruptions lower class selectivity, and
methods that improve adversarial robustness raise it. A sweep over the config field
``robust`` (standard training, PGD adversarial training, Gaussian-noise augmentation,
AugMix; the ``robust-training`` preset) tests it. This section shows, per model and alpha:

- every method's network selectivity (mean over layers of the mean over units, dead
  units counted as 0) against standard training, next to its clean, corruption and
  adversarial accuracy (from ``selectivity robustness``), in one table: both arrows of
  the claim at once;
- per-layer selectivity of each method against standard training;
- the cross with the regulariser: each method at alpha != 0 against the same method at
  alpha = 0 (does regularising against selectivity undo adversarial training's gain?).

Statistics as in paper 1: 95% percentile bootstrap CIs of the mean over seeds, Student
t-tests against the reference (standard training at the same alpha; the same method at
alpha = 0 for the cross), Bonferroni-corrected within the methods of one model and alpha
(within the alphas of one sign for the cross). Computed once here, passed to the plot
functions of :mod:`selectivity.plots.robust_training`, which only draw.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..analysis.stats import summarize, ttests_against_baseline
from ..plots.robust_training import (
    plot_layer_selectivity_by_method,
    plot_measure_vs_alpha_by_method,
    plot_robustness_vs_selectivity_by_method,
)
from .collect import METHOD_LABELS, FigureItem, ReportData, TableItem, robust_methods, slug
from .format import format_alpha, format_ci, format_p
from .section import ReportContext, Section, figure_item

__all__ = [
    "EXPECTED_DIRECTION",
    "robust_frame",
    "method_statistics",
    "layer_statistics",
    "cross_statistics",
    "arrows_table",
    "robust_training_sections",
]

#: What paper 2's authors report each method does to class selectivity.
EXPECTED_DIRECTION = {"adversarial": "higher", "noise_augment": "lower", "augmix": "lower"}
#: Methods in display order; others follow.
_ORDER = list(METHOD_LABELS)
_BASE_MEASURES = ("mean_selectivity", "test_accuracy", "clean_accuracy", "mean_corruption_accuracy")
_LABELS = {
    "mean_selectivity": "class selectivity",
    "test_accuracy": "test accuracy",
    "clean_accuracy": "clean accuracy",
    "mean_corruption_accuracy": "corruption accuracy",
}
_PERCENT = {"test_accuracy", "clean_accuracy", "mean_corruption_accuracy"}

_CAPTION = (
    "Paper 2 reversed: networks trained with a robust-training method (config field `robust`) against "
    "standard training at the same α. Class selectivity: mean over layers of the mean over units (dead "
    "units as 0), on the test set. Accuracies from `selectivity robustness` (clean, mean over the "
    "corruption x severity cells, under each attack). Mean over seeds with a 95% bootstrap CI; Δ: "
    "difference to standard training; * Bonferroni-corrected Student t-test p < 0.05 (within the "
    "methods of one model and α)."
)


def _method_key(m: str) -> tuple[int, str]:
    return (_ORDER.index(m) if m in _ORDER else len(_ORDER), m)


def _attack_column(attack: str, epsilon: float) -> str:
    return f"{attack} {epsilon * 255:g}/255"


def robust_frame(data: ReportData) -> pd.DataFrame:
    """One row per completed run: its method, selectivity and accuracies.

    Columns ``run_id, model, alpha, seed, method, mean_selectivity, test_accuracy`` and,
    when ``selectivity robustness`` ran, ``clean_accuracy, mean_corruption_accuracy``
    and one ``"<attack> <eps*255>/255"`` column per attack and epsilon.
    """
    runs = data.runs
    if runs.empty:
        return pd.DataFrame()
    runs = runs.assign(method=robust_methods(runs))
    runs = runs[runs["status"] == "completed"]
    cols = ["run_id", "model", "alpha", "seed", "method", "mean_selectivity", "test_accuracy"]
    out = runs[cols].copy()
    summary = data.robustness.get("summary", pd.DataFrame())
    if not summary.empty:
        keep = ["run_id", "clean_accuracy", "mean_corruption_accuracy"]
        out = out.merge(summary[[c for c in keep if c in summary.columns]], on="run_id", how="left")
    attacks = data.robustness.get("attacks", pd.DataFrame())
    if not attacks.empty:
        for (atk, eps), g in attacks.groupby(["attack", "epsilon"], sort=True):
            col = _attack_column(str(atk), float(eps))
            out = out.merge(
                g[["run_id", "accuracy"]].rename(columns={"accuracy": col}), on="run_id", how="left"
            )
    return out.reset_index(drop=True)


def _measures(frame: pd.DataFrame) -> list[str]:
    base = [m for m in _BASE_MEASURES if m in frame.columns and frame[m].notna().any()]
    return base + [c for c in frame.columns if c.endswith("/255") and frame[c].notna().any()]


def _summary_row(values: pd.Series, n_resamples: int) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return summarize(values.dropna().to_numpy(float), n_resamples=n_resamples)


def _compare(
    frame: pd.DataFrame, value: str, group: str, baseline, family: str, n_resamples: int
) -> pd.DataFrame:
    """Per group: n, mean, CI, and the t-test against ``baseline`` (NaN where it cannot run)."""
    rows = []
    for g, sub in frame.groupby(group, sort=True):
        rows.append({group: g, **_summary_row(sub[value], n_resamples)})
    out = pd.DataFrame(rows)
    out["diff"] = np.nan
    out["p"] = np.nan
    out["p_bonferroni"] = np.nan
    out["significant"] = False
    d = frame[[group, value]].dropna()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            tests = ttests_against_baseline(d, value, group_col=group, baseline=baseline, family=family)  # type: ignore[arg-type]  # a family name
    except ValueError:  # no (or one) reference run: means and CIs only
        return out
    for t in tests.itertuples(index=False):
        m = out[group] == t.group
        out.loc[m, ["diff", "p", "p_bonferroni"]] = [t.diff, t.p, t.p_bonferroni]
        out.loc[m, "significant"] = bool(t.significant)
    return out


def method_statistics(frame: pd.DataFrame, n_resamples: int = 2000) -> pd.DataFrame:
    """Every measure of every method against standard training, per model and alpha.

    Returns
    -------
    pandas.DataFrame
        ``model, alpha, measure, method, n, mean, ci_low, ci_high, std, diff, p,
        p_bonferroni, significant`` (``diff`` and the tests against ``method == "none"``;
        NaN for standard training itself and where fewer than two standard runs exist).
    """
    parts = []
    for (model, alpha), g in frame.groupby(["model", "alpha"], sort=True):
        for m in _measures(g):
            st = _compare(g, m, "method", "none", "all", n_resamples)
            parts.append(st.assign(model=model, alpha=alpha, measure=m))
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts, ignore_index=True)
    lead = ["model", "alpha", "measure", "method"]
    out = out[lead + [c for c in out.columns if c not in lead]]
    return _sorted(out, ["model", "alpha", "measure"])


def _sorted(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    order = df["method"].map(lambda m: _method_key(str(m)))
    return (
        df.assign(_o=order)
        .sort_values([*keys, "_o"], kind="stable")
        .drop(columns="_o")
        .reset_index(drop=True)
    )


def layer_statistics(layers: pd.DataFrame, methods: pd.Series, n_resamples: int = 2000) -> pd.DataFrame:
    """Per-layer class selectivity of every method against standard training.

    Parameters
    ----------
    layers : pandas.DataFrame
        The store's layers frame (``run_id, model, alpha, layer_index, layer, selectivity, status``).
    methods : pandas.Series
        Method per run id.

    Returns
    -------
    pandas.DataFrame
        ``model, alpha, layer_index, layer, method, n, mean, ci_low, ci_high, std, diff,
        p, p_bonferroni, significant`` (tests against standard training, Bonferroni over
        the methods of one layer).
    """
    lay = layers[layers["status"] == "completed"] if "status" in layers.columns else layers
    lay = lay.assign(method=lay["run_id"].map(methods)).dropna(subset=["method"])
    parts = []
    for (model, alpha, idx, name), g in lay.groupby(["model", "alpha", "layer_index", "layer"], sort=True):
        st = _compare(g, "selectivity", "method", "none", "all", n_resamples)
        parts.append(st.assign(model=model, alpha=alpha, layer_index=idx, layer=name))
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts, ignore_index=True)
    lead = ["model", "alpha", "layer_index", "layer", "method"]
    return _sorted(out[lead + [c for c in out.columns if c not in lead]], ["model", "alpha", "layer_index"])


def cross_statistics(frame: pd.DataFrame, n_resamples: int = 2000) -> pd.DataFrame:
    """Every method at every alpha against the same method at alpha = 0 (the regulariser's cross).

    Returns
    -------
    pandas.DataFrame
        ``model, method, measure, alpha, n, mean, ci_low, ci_high, std, diff, p,
        p_bonferroni, significant`` (Bonferroni within the negative and within the
        positive alphas, as paper 1's tests against alpha = 0); empty without alpha != 0.
    """
    if frame.empty or frame["alpha"].nunique() < 2:
        return pd.DataFrame()
    parts = []
    for (model, method), g in frame.groupby(["model", "method"], sort=True):
        for m in _measures(g):
            st = _compare(g, m, "alpha", 0.0, "sign", n_resamples)
            parts.append(st.assign(model=model, method=method, measure=m))
    out = pd.concat(parts, ignore_index=True)
    lead = ["model", "method", "measure", "alpha"]
    out = out[lead + [c for c in out.columns if c not in lead]]
    return out.sort_values(["model", "measure", "alpha"], kind="stable").reset_index(drop=True)


def _cell(row: pd.Series, measure: str, show_diff: bool) -> str:
    scale, digits, suffix = (
        (100.0, 1, "%") if measure in _PERCENT or measure.endswith("/255") else (1.0, 3, "")
    )
    text = format_ci(
        row["mean"], row["ci_low"], row["ci_high"], row["n"], scale=scale, digits=digits, suffix=suffix
    )
    if show_diff and pd.notna(row["diff"]):
        star = "*" if bool(row["significant"]) else ""
        text += f" (Δ {row['diff'] * scale:+.{digits}f}{star})"
    return text


def _direction(row: pd.Series) -> str:
    if pd.isna(row["diff"]):
        return "-"
    word = "higher" if row["diff"] > 0 else "lower" if row["diff"] < 0 else "equal"
    return f"{word} ({'significant' if bool(row['significant']) else 'not significant'}, p = {format_p(row['p_bonferroni'])})"


def arrows_table(stats: pd.DataFrame, model: str, alpha: float) -> pd.DataFrame:
    """The display table of one model and alpha: selectivity and accuracies per method.

    Columns: ``method``, ``runs``, ``class selectivity`` (mean [CI] (Δ vs standard)),
    ``paper 2 expects``, ``observed`` (direction of Δ, Bonferroni-corrected test), then
    one column per accuracy measure, each ``mean [CI] (Δ)``.
    """
    s = stats[(stats["model"] == model) & np.isclose(stats["alpha"].astype(float), float(alpha))]
    rows = []
    methods = sorted(s["method"].unique(), key=lambda m: _method_key(str(m)))
    measures = list(dict.fromkeys(s["measure"]))
    for method in methods:
        sm = s[s["method"] == method].set_index("measure")
        row: dict[str, str] = {"method": METHOD_LABELS.get(str(method), str(method))}
        si = sm.loc["mean_selectivity"] if "mean_selectivity" in sm.index else None
        row["runs"] = str(int(si["n"])) if si is not None else "-"
        if si is not None:
            row["class selectivity"] = _cell(si, "mean_selectivity", True)
            row["paper 2 expects"] = EXPECTED_DIRECTION.get(
                str(method), "reference" if method == "none" else "-"
            )
            row["observed"] = _direction(si)
        for m in measures:
            if m != "mean_selectivity":
                row[_LABELS.get(m, f"{m} accuracy")] = _cell(sm.loc[m], m, True)
        rows.append(row)
    return pd.DataFrame(rows)


def _layers_display(layer_stats: pd.DataFrame) -> pd.DataFrame:
    """Layers as rows, methods as columns: ``mean [CI] (Δ vs standard)``."""
    rows = []
    for (_idx, name), g in layer_stats.groupby(["layer_index", "layer"], sort=True):
        row = {"layer": str(name)}
        for r in g.itertuples(index=False):
            row[METHOD_LABELS.get(str(r.method), str(r.method))] = _cell(
                pd.Series(r._asdict()), "selectivity", True
            )
        rows.append(row)
    return pd.DataFrame(rows)


def _cross_display(cross: pd.DataFrame) -> pd.DataFrame:
    """Rows (method, alpha), columns measures: ``mean [CI] (Δ vs the method at α = 0)``."""
    rows = []
    for (method, alpha), g in cross.groupby(["method", "alpha"], sort=True):
        row = {"method": METHOD_LABELS.get(str(method), str(method)), "α": format_alpha(alpha)}
        for r in g.itertuples(index=False):
            d = pd.Series(r._asdict())
            row[_LABELS.get(str(r.measure), f"{r.measure} accuracy")] = _cell(d, str(r.measure), True)
        rows.append(row)
    out = pd.DataFrame(rows)
    key = out["method"].map(
        lambda lbl: _method_key(next((k for k, v in METHOD_LABELS.items() if v == lbl), lbl))
    )
    return out.assign(_o=key).sort_values(["_o"], kind="stable").drop(columns="_o").reset_index(drop=True)


def _per_method(stats: pd.DataFrame, measures: Sequence[str]) -> pd.DataFrame:
    """One row per method: ``<measure>_mean/_low/_high`` for the selectivity-vs-robustness plot."""
    rows = []
    for method, g in stats.groupby("method", sort=False):
        row: dict = {"method": method}
        for m in measures:
            r = g[g["measure"] == m]
            if r.empty:
                return pd.DataFrame()
            r0 = r.iloc[0]
            key = "selectivity" if m == "mean_selectivity" else m
            row.update({f"{key}_mean": r0["mean"], f"{key}_low": r0["ci_low"], f"{key}_high": r0["ci_high"]})
        rows.append(row)
    return pd.DataFrame(rows)


def _strongest_attack(measures: Sequence[str]) -> str | None:
    """The PGD column with the largest epsilon (else any attack column)."""
    cols = [m for m in measures if m.endswith("/255")]
    if not cols:
        return None
    pgd = [c for c in cols if c.startswith("pgd ")] or cols
    return max(pgd, key=lambda c: float(c.split(" ")[1].split("/")[0]))


def robust_training_sections(ctx: ReportContext) -> list[Section]:
    """The "Robust training and selectivity" section; none unless a run used a robust-training method."""
    frame = robust_frame(ctx.data)
    if frame.empty or set(frame["method"]) <= {"none"}:
        return []
    notes = []
    if "none" not in set(frame["method"]):
        notes.append("No run with standard training (robust = none): the methods cannot be compared with it.")
    stats = method_statistics(frame, ctx.n_resamples)
    methods = robust_methods(ctx.data.runs).set_axis(ctx.data.runs["run_id"])
    layer_stats = (
        layer_statistics(ctx.data.layers, methods, ctx.n_resamples)
        if not ctx.data.layers.empty
        else pd.DataFrame()
    )
    cross = cross_statistics(frame, ctx.n_resamples)
    if "clean_accuracy" not in frame.columns:
        notes.append("No robustness results: run `selectivity robustness SWEEP` for the accuracy columns.")
    tables: list[TableItem] = [
        TableItem(
            "robust-training-runs",
            "Robust training: per run",
            frame,
            caption="One row per completed run: method, selectivity and accuracies.",
            show=False,
        ),
        TableItem(
            "robust-training-statistics",
            "Robust training: every measure against standard training",
            stats,
            caption="Long form of the tables below (bootstrap CI, Student t-test, Bonferroni).",
            show=False,
        ),
    ]
    figures: list[FigureItem] = []
    for (model, alpha), _g in stats.groupby(["model", "alpha"], sort=True):
        key = f"{slug(str(model))}-alpha{format_alpha(alpha)}"
        tables.append(
            TableItem(
                f"robust-training-{key}",
                f"Both arrows: {model}, α = {format_alpha(alpha)}",
                stats[(stats["model"] == model) & (stats["alpha"] == alpha)],
                display=arrows_table(stats, str(model), float(alpha)),
                caption=(
                    "Class selectivity and accuracies per method; Δ vs standard training, * significant. "
                    "Paper 2 expects corruption-robust methods to lower selectivity and adversarial training to raise it."
                ),
            )
        )
        ls = (
            layer_stats[(layer_stats["model"] == model) & (layer_stats["alpha"] == alpha)]
            if not layer_stats.empty
            else layer_stats
        )
        if not ls.empty:
            tables.append(
                TableItem(
                    f"robust-training-layers-{key}",
                    f"Per-layer class selectivity: {model}, α = {format_alpha(alpha)}",
                    ls,
                    display=_layers_display(ls),
                    caption="Mean over seeds [95% bootstrap CI] (Δ vs standard training, * Bonferroni over the methods of the layer).",
                )
            )
            figures.append(
                figure_item(
                    ctx,
                    f"robust-training-layers-{key}",
                    "Paper 2",
                    f"Class selectivity per layer by training method ({model}, α = {format_alpha(alpha)})",
                    "Mean over seeds with its 95% bootstrap CI band.",
                    functools.partial(plot_layer_selectivity_by_method, ls),
                )
            )
        sub = stats[(stats["model"] == model) & (stats["alpha"] == alpha)]
        measures = list(dict.fromkeys(sub["measure"]))
        for m in ("mean_corruption_accuracy", _strongest_attack(measures)):
            if m is None or m not in measures:
                continue
            pm = _per_method(sub, ["mean_selectivity", m])
            if pm.empty:
                continue
            figures.append(
                figure_item(
                    ctx,
                    f"robust-training-{slug(m)}-{key}",
                    "Paper 2",
                    f"{_LABELS.get(m, m + ' accuracy')} vs class selectivity by method ({model}, α = {format_alpha(alpha)})",
                    "Mean over seeds; error bars: 95% bootstrap CIs. Both arrows of the claim: where each method "
                    "moves selectivity, and what it buys in robustness.",
                    functools.partial(plot_robustness_vs_selectivity_by_method, pm, m),
                )
            )
    sections = []
    if not cross.empty:
        for model, g in cross.groupby("model", sort=True):
            tables.append(
                TableItem(
                    f"robust-training-cross-{slug(str(model))}",
                    f"The regulariser crossed with each method: {model}",
                    g,
                    display=_cross_display(g),
                    caption=(
                        "Each method at every α; Δ vs the same method at α = 0, * Bonferroni-corrected t-test "
                        "p < 0.05 (within the negative and within the positive alphas). A negative α under PGD "
                        "training that lowers its PGD accuracy undoes part of adversarial training's gain."
                    ),
                )
            )
            for m in (
                "mean_selectivity",
                "mean_corruption_accuracy",
                _strongest_attack(list(g["measure"].unique())),
            ):
                if m is None or m not in set(g["measure"]):
                    continue
                gm = g[g["measure"] == m]
                figures.append(
                    figure_item(
                        ctx,
                        f"robust-training-cross-{slug(m)}-{slug(str(model))}",
                        "Paper 2",
                        f"{_LABELS.get(m, m + ' accuracy')} vs α by training method ({model})",
                        "Mean over seeds with its 95% bootstrap CI band.",
                        functools.partial(
                            plot_measure_vs_alpha_by_method, gm, _LABELS.get(m, m + " accuracy")
                        ),
                    )
                )
    sections.append(
        Section(
            id="robust-training",
            heading="Robust training and selectivity",
            caption=_CAPTION,
            tables=tables,
            figures=figures,
            notes=notes,
        )
    )
    return sections
