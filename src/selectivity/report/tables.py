"""The tables of the report's paper-1 sections, from the statistics computed once per report.

:func:`make_tables` turns :class:`~.stats.ReportStats` (computed once by
:func:`~.stats.compute_statistics`) into tables; numbers reach the page through
:mod:`.format`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..analysis.summary import layer_table, summary_table
from ..evaluate.cca import CCADistances
from .collect import META_FIELDS, ReportData, Setting, TableItem, match_setting
from .format import format_ci, format_number, format_p
from .stats import METRICS, CCAStats, ReportStats, SettingStats, compute_statistics

__all__ = ["make_tables", "setting_tables", "cca_tables", "config_tables", "provenance_tables", "all_tables"]


def _summary_display(t: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({"α": [f"{a:g}" for a in t["alpha"]], "n": t["n"].astype(int)})
    out["test accuracy (95% CI)"] = [
        format_ci(r.test_accuracy_mean, r.test_accuracy_ci_low, r.test_accuracy_ci_high, r.n, 100.0, 2, "%")
        for r in t.itertuples()
    ]
    out["mean SI (95% CI)"] = [
        format_ci(r.mean_selectivity_mean, r.mean_selectivity_ci_low, r.mean_selectivity_ci_high, r.n, 1.0, 3)
        for r in t.itertuples()
    ]
    for col, name in (("n_failed", "failed"), ("n_diverged", "diverged"), ("n_unfinished", "unfinished")):
        out[name] = t[col].astype(int)
    return out


def _metric_formatter(metric: str) -> Callable[[Any], str]:
    """Formatter of one value of ``metric`` in its display scale, digits and unit (``METRICS``)."""
    _, scale, digits, suffix = METRICS[metric]

    def v(x: Any) -> str:
        return format_number(float(x) * scale, f".{digits}f") + (suffix if np.isfinite(float(x)) else "")

    return v


def _ttest_display(t: pd.DataFrame, metric: str, test_name: str = "Student") -> pd.DataFrame:
    v = _metric_formatter(metric)
    return pd.DataFrame(
        {
            "α": [f"{a:g}" for a in t["group"]],
            "n": t["n"],
            "n (α=0)": t["n_baseline"],
            "mean": [v(x) for x in t["mean"]],
            "mean (α=0)": [v(x) for x in t["baseline_mean"]],
            "difference": [v(x) for x in t["diff"]],
            f"t ({test_name})": [format_number(x, ".3f") for x in t["statistic"]],
            "p": [format_p(x) for x in t["p"]],
            "family (m)": [f"{f} ({int(m)})" for f, m in zip(t["family"], t["m"])],
            "p (Bonferroni)": [format_p(x) for x in t["p_bonferroni"]],
            "significant": ["yes" if s else "no" for s in t["significant"]],
        }
    )


def _ranksum_display(t: pd.DataFrame, metric: str) -> pd.DataFrame:
    v = _metric_formatter(metric)
    return pd.DataFrame(
        {
            "|α|": [f"{a:g}" for a in t["abs_alpha"]],
            "n promote": t["n_promote"],
            "n penalise": t["n_penalise"],
            "mean promote": [v(x) for x in t["mean_promote"]],
            "mean penalise": [v(x) for x in t["mean_penalise"]],
            "z (rank-sum)": [format_number(x, ".3f") for x in t["statistic"]],
            "p": [format_p(x) for x in t["p"]],
            "m": [int(m) for m in t["m"]],
            "p (Bonferroni)": [format_p(x) for x in t["p_bonferroni"]],
            "significant": ["yes" if s else "no" for s in t["significant"]],
        }
    )


def _cca_tests_display(t: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "α": [f"{a:g}" for a in t["alpha"]],
            "layers": t["n"],
            "mean ρ(α, 0)": [format_number(x, ".4f") for x in t["mean_between"]],
            "mean ρ(α, α)": [format_number(x, ".4f") for x in t["mean_within"]],
            "ratio": [format_number(x, ".3f") for x in t["ratio"]],
            "t (paired)": [format_number(x, ".3f") for x in t["statistic"]],
            "p": [format_p(x) for x in t["p"]],
            "p (Bonferroni)": [format_p(x) for x in t["p_bonferroni"]],
            "significant": ["yes" if s else "no" for s in t["significant"]],
            "note": t["note"].fillna(""),
        }
    )


# --------------------------------------------------------------------------- tables
def _missing_alpha_note(s: Setting) -> str | None:
    """Alphas of the setting without any completed run (all failed, diverged or pending)."""
    bad = []
    for a, sub in s.runs.groupby("alpha", sort=True):
        if (sub["status"] == "completed").sum() == 0:
            counts = ", ".join(f"{n} {st}" for st, n in sub["status"].value_counts().sort_index().items())
            bad.append(f"α = {a:g} ({counts})")
    return (
        (
            "No completed run for " + "; ".join(bad) + ": these alphas are left out of the statistics "
            "and figures."
        )
        if bad
        else None
    )


def _ttest_item(s: Setting, metric: str, stats: SettingStats) -> TableItem:
    label = METRICS[metric][0]
    item = TableItem(
        id=f"{s.key}-ttest-{metric}",
        title=f"{s.label}: {label}, each α vs α = 0 ({stats.test_name})",
        data=pd.DataFrame(),
        caption=(
            f"Two-sided {stats.test_name} of the {label} of each α against α = 0, over completed "
            "runs (one value per seed); p-values Bonferroni-corrected within each family, whose "
            "name and size m stand beside each p: "
            + (
                "the penalising alphas (α < 0, paper Fig. 2) and the promoting alphas (α > 0, "
                "Fig. 4) are separate families, as in the paper's figures."
                if stats.family == "sign"
                else "one family of every α of both signs."
            )
        ),
    )
    t = stats.ttests.get(metric)
    if t is None:
        item.note = stats.ttest_notes.get(metric)
        return item
    item.data = t.rename(columns={"group": "alpha"}).assign(metric=metric)
    item.display = _ttest_display(t, metric, "Student" if stats.equal_var else "Welch")
    return item


def _ranksum_item(s: Setting, metric: str, stats: SettingStats) -> TableItem:
    label = METRICS[metric][0]
    item = TableItem(
        id=f"{s.key}-ranksum-{metric}",
        title=f"{s.label}: {label}, promoting vs penalising selectivity (Wilcoxon rank-sum)",
        data=pd.DataFrame(),
        caption=(
            f"Wilcoxon rank-sum test of the {label} of α > 0 against α < 0 at equal |α| "
            "(paper Fig. 5); p-values Bonferroni-corrected over the m |α| compared (one family)."
        ),
    )
    t = stats.ranksums.get(metric, pd.DataFrame())
    if t.empty:
        item.note = "No |α| was run (to completion) with both signs: nothing to compare."
        return item
    item.data = t.assign(metric=metric)
    item.display = _ranksum_display(t, metric)
    return item


def setting_tables(s: Setting, n_resamples: int, stats: SettingStats) -> list[TableItem]:
    """Summary by alpha, t-tests, rank-sum tests and (CSV only) per-layer tables of one setting."""
    items = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN metrics are counted in the table itself
        st = summary_table(s.runs, n_resamples=n_resamples)
    items.append(
        TableItem(
            id=f"{s.key}-summary",
            title=f"{s.label}: summary by α",
            data=st,
            display=_summary_display(st),
            caption=(
                "n = completed runs; mean and bootstrapped (percentile) 95% CI of the mean over seeds; "
                "test accuracy uses the parameters of the best-validation epoch; mean SI is the network "
                "class selectivity (mean over units per layer, then over layers; dead units excluded). "
                "Failed, diverged and unfinished runs are counted, not averaged."
            ),
            note=_missing_alpha_note(s),
        )
    )
    for metric in ("test_accuracy", "mean_selectivity"):
        items.append(_ttest_item(s, metric, stats))
    for metric in ("test_accuracy", "mean_selectivity"):
        items.append(_ranksum_item(s, metric, stats))
    if not s.layers.empty:
        for value in ("selectivity", "precision", "dead_fraction"):
            table = stats.layers.get(value)
            items.append(
                TableItem(
                    id=f"{s.key}-layers-{value}",
                    title=f"{s.label}: per-layer {value}",
                    data=table
                    if table is not None
                    else layer_table(s.layers, value, n_resamples=n_resamples),
                    show=False,
                )
            )
    return items


def config_tables(data: ReportData) -> list[TableItem]:
    """The sweep specification and one run's resolved configuration."""
    spec = data.sweep.get("spec", {}) if isinstance(data.sweep, dict) else {}
    rows = []
    for k, v in spec.items():
        if isinstance(v, dict):
            rows += [{"field": f"{k}.{kk}", "value": json.dumps(vv)} for kk, vv in v.items()] or [
                {"field": k, "value": "{}"}
            ]
        else:
            rows.append({"field": k, "value": json.dumps(v)})
    for k in ("executor", "data"):
        if k in data.sweep:
            rows.append({"field": k, "value": json.dumps(data.sweep[k])})
    spec_df = pd.DataFrame(rows, columns=["field", "value"])
    items = [
        TableItem(
            id="config-spec",
            title="Sweep specification (sweep.json)",
            data=spec_df,
            note=None if rows else "No sweep.json found: the sweep specification is unknown.",
        )
    ]
    configs = [json.loads(c) for c in data.runs.get("config", pd.Series(dtype=object)).dropna()]
    if configs:
        done = data.runs[data.runs["status"] == "completed"]
        first = json.loads((done if not done.empty else data.runs)["config"].iloc[0])
        keys = list(first)
        varies = {k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1}
        run_id = (done if not done.empty else data.runs)["run_id"].iloc[0]
        cfg_df = pd.DataFrame(
            {
                "field": keys,
                "value": [json.dumps(first[k]) for k in keys],
                "varies across runs": ["yes" if k in varies else "" for k in keys],
            }
        )
        items.append(
            TableItem(
                id="config-run",
                title=f"Resolved configuration of run {run_id}",
                data=cfg_df,
                caption="Every field of the run's TrainConfig; fields marked 'yes' differ "
                "between runs of the sweep (the sweep axes).",
            )
        )
    return items


def provenance_tables(data: ReportData) -> list[TableItem]:
    """Runs by status, the runs' recorded provenance, and the failed/diverged/damaged runs."""
    items = []
    status = (
        data.runs["status"].value_counts().rename_axis("status").reset_index(name="runs")
        if not data.runs.empty
        else pd.DataFrame(columns=["status", "runs"])
    )
    items.append(TableItem(id="prov-status", title="Runs by status", data=status))
    rows = []
    for k in META_FIELDS:
        col = data.meta[k] if k in data.meta.columns else pd.Series(dtype=object)
        counts = col.dropna().astype(str).value_counts()
        rows.append(
            {
                "field": k,
                "values seen (runs)": "; ".join(f"{v} ({n})" for v, n in counts.items()) or "-",
                "distinct": int(len(counts)),
            }
        )
    items.append(
        TableItem(
            id="prov-meta",
            title="Provenance of the runs (meta.json)",
            data=pd.DataFrame(rows, columns=["field", "values seen (runs)", "distinct"]),
            caption="Values recorded by each run when it started; several git revisions or "
            "torch versions mean the runs were not all produced by the same code.",
        )
    )
    # Damaged runs (a run file that cannot be read) are listed with the file and the reason.
    bad_status = ["failed", "diverged", "damaged"]
    bad = data.runs[data.runs["status"].isin(bad_status)] if not data.runs.empty else data.runs
    bad_df = (
        bad[["run_id", "status", "message"]].reset_index(drop=True)
        if not bad.empty
        else pd.DataFrame(columns=["run_id", "status", "message"])
    )
    items.append(
        TableItem(
            id="prov-failed",
            title="Failed, diverged and damaged runs",
            data=bad_df,
            note=None if not bad.empty else "No failed, diverged or damaged runs.",
        )
    )
    return items


def all_tables(data: ReportData, n_resamples: int = 2000) -> list[TableItem]:
    """Every run, the summary of all settings and every per-layer record (CSV only)."""
    runs_csv = data.runs.drop(columns=["config"], errors="ignore")
    out = [TableItem(id="runs", title="All runs", data=runs_csv, show=False)]
    if not data.runs.empty:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out.append(
                TableItem(
                    id="summary",
                    title="Summary of all settings",
                    data=summary_table(data.runs, n_resamples=n_resamples),
                    show=False,
                )
            )
    if not data.layers.empty:
        out.append(TableItem(id="layers", title="All per-layer results", data=data.layers, show=False))
    return out


def make_tables(
    data: ReportData,
    settings: Sequence[Setting],
    n_resamples: int = 2000,
    cca: CCADistances | None = None,
    stats: ReportStats | None = None,
) -> dict[str, list[TableItem]]:
    """Every paper-1 table of the report, grouped by section key.

    Parameters
    ----------
    data : ReportData
    settings : sequence of Setting
    n_resamples : int, default 2000
        Bootstrap resamples per CI.
    cca : CCADistances, optional
        Adds the CCA tables (distances, per-layer means, ratios, tests).
    stats : ReportStats, optional
        Output of :func:`~.stats.compute_statistics` (computed here when not given).

    Returns
    -------
    dict
        ``{setting.key: [...], "cca": [...], "config": [...], "provenance": [...], "all": [...]}``.
    """
    stats = stats if stats is not None else compute_statistics(settings, cca, n_resamples=n_resamples)
    out: dict[str, list[TableItem]] = {}
    for s in settings:
        out[s.key] = setting_tables(s, n_resamples, stats.settings[s.key])
    out["all"] = all_tables(data, n_resamples)
    out["cca"] = cca_tables(cca, stats.cca, settings) if cca is not None else []
    out["config"] = config_tables(data)
    out["provenance"] = provenance_tables(data)
    return out


def cca_tables(cca: CCADistances, cca_stats: CCAStats | None, settings: Sequence[Setting]) -> list[TableItem]:
    """The CCA distances (CSV only) and, per setting, the paired tests of Fig. 3."""
    if cca.distances is None or cca.distances.empty or cca_stats is None:
        return []
    by_layer, ratio, tests = cca_stats.by_layer, cca_stats.ratio, cca_stats.tests
    items = [
        TableItem(
            id="cca-distances", title="CCA distances per pair and layer", data=cca.distances, show=False
        ),
        TableItem(id="cca-by-layer", title="Mean CCA distance per α and layer", data=by_layer, show=False),
        TableItem(id="cca-ratio", title="CCA distance ratio per replicate", data=ratio, show=False),
    ]
    for s in settings:
        t = match_setting(tests, s)
        if t.empty:
            continue
        items.append(
            TableItem(
                id=f"{s.key}-cca-tests",
                title=f"{s.label}: ρ(α, 0) vs ρ(α, α), paired by layer",
                data=t,
                display=_cca_tests_display(t),
                caption=(
                    "Paired t-test (two-sided) of the mean between-distance ρ(α, 0) against the mean "
                    "within-distance ρ(α, α) over layers (paper section 4.2); ratio = mean ρ(α, 0) / mean "
                    "ρ(α, α); p-values Bonferroni-corrected over the alphas."
                ),
            )
        )
    return items
