"""One self-contained HTML report of a sweep: tables, statistics, every paper figure.

:func:`build_report` writes ``OUT/report.html`` (figures embedded as base64 PNG,
inline CSS, no script and no external resource, so it opens offline and can be mailed
as one file), every figure as ``OUT/figures/*.png`` and every table as
``OUT/tables/*.csv``. It composes four steps:

1. :func:`collect` reads the sweep's stored records only (database synced from the run
   directories, ``sweep.json``, each run's ``meta.json``); nothing is trained or
   measured.
2. :func:`make_tables` computes the summary table, t-tests against alpha = 0,
   promote-vs-penalise rank-sum tests, per-layer tables and the configuration and
   provenance tables.
3. :func:`make_figures` draws the paper's figures with :mod:`selectivity.plots`.
4. :func:`render_html` assembles the page.

The CCA analysis (paper Fig. 3) is the one part that needs the data and the
checkpoints (:func:`selectivity.analysis.cca_analysis.cca_distances`); it runs only with
``cca=True`` and is replaced by a note when the data, the checkpoints or the alpha = 0
runs are missing. Any missing piece (one alpha, no baseline, every run of an alpha
failed, a figure that cannot be drawn) becomes a short note in its section, never an
exception.

Everything is grouped by *setting*: one model with one activation function (and
leaky-ReLU slope); runs of different settings are never pooled.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import plots
from .analysis.stats import rank_sum_promote_vs_penalise, ttests_against_baseline
from .summary import layer_table, summary_table

__all__ = [
    "ReportData",
    "Setting",
    "FigureItem",
    "TableItem",
    "CCAResult",
    "collect",
    "settings_of",
    "make_tables",
    "make_figures",
    "run_cca",
    "render_html",
    "build_report",
]

#: Title of the HTML page (also its first heading).
TITLE = "Class selectivity sweep report"
#: Fields of each run's meta.json summarised under "Provenance".
META_FIELDS = (
    "package_version",
    "git_revision",
    "torch_version",
    "python_version",
    "hostname",
    "platform",
    "device",
    "cuda_available",
)
_PANEL = plots.PANEL_SIZE
_WIDE = {"fig1a", "fig3a"}


# --------------------------------------------------------------------------- data model
@dataclass
class ReportData:
    """Everything the report shows that comes from stored records.

    Attributes
    ----------
    sweep_dir : Path
    runs : pandas.DataFrame
        The store's runs frame (every status; ``config`` JSON kept).
    layers : pandas.DataFrame
        The store's layers frame.
    sweep : dict
        Content of ``sweep.json`` (``{}`` when missing).
    meta : pandas.DataFrame
        One row per run directory with a ``meta.json``: ``run_id`` + :data:`META_FIELDS`.
    generated : str
        Generation time, UTC, ISO 8601.
    generator : dict
        Provenance of the code writing the report.
    """

    sweep_dir: Path
    runs: pd.DataFrame
    layers: pd.DataFrame
    sweep: dict
    meta: pd.DataFrame
    generated: str
    generator: dict


@dataclass
class Setting:
    """Runs of one model with one activation setting (never pooled with others)."""

    key: str  # file- and id-safe slug
    label: str  # human-readable, e.g. "resnet20" or "resnet20, leaky_relu slope 0.1"
    model: str
    runs: pd.DataFrame  # every status
    layers: pd.DataFrame  # completed runs only

    @property
    def done(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "completed"]


@dataclass
class FigureItem:
    """One figure: its file and caption, or a note saying why it is missing."""

    id: str
    paper: str  # e.g. "Fig. 1b"
    title: str
    caption: str = ""
    path: Path | None = None
    note: str | None = None
    wide: bool = False  # multi-panel: spans the whole row of the figure grid


@dataclass
class TableItem:
    """One table: the raw frame (written as CSV) and a display frame (shown in HTML)."""

    id: str
    title: str
    data: pd.DataFrame
    display: pd.DataFrame | None = None
    caption: str = ""
    path: Path | None = None
    note: str | None = None
    show: bool = True  # False: CSV only (listed, not rendered)


@dataclass
class CCAResult:
    """Output of :func:`run_cca`: the distances table, or why there is none."""

    distances: pd.DataFrame | None = None
    note: str | None = None
    settings: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- collect
def collect(sweep_dir: str | os.PathLike) -> ReportData:
    """Read a sweep's stored records (database, ``sweep.json``, ``meta.json`` files).

    Parameters
    ----------
    sweep_dir : path
        Sweep directory.

    Returns
    -------
    ReportData
    """
    from .rundir import provenance, read_json
    from .sweep import open_store
    from .sweep.store import RUNS_DIR

    sweep_dir = Path(sweep_dir)
    with open_store(sweep_dir) as store:
        runs = store.runs_df()
        layers = store.layers_df()
    runs = runs.assign(alpha=np.round(runs["alpha"].astype(float), 12)) if not runs.empty else runs
    layers = layers.assign(alpha=np.round(layers["alpha"].astype(float), 12)) if not layers.empty else layers
    sweep = {}
    if (sweep_dir / "sweep.json").exists():
        try:
            sweep = read_json(sweep_dir / "sweep.json")
        except (OSError, ValueError) as e:
            sweep = {"error": f"cannot read sweep.json: {e}"}
    metas = []
    for rid in runs["run_id"] if not runs.empty else []:
        p = sweep_dir / RUNS_DIR / rid / "meta.json"
        try:
            m = read_json(p) if p.exists() else {}
        except (OSError, ValueError):
            m = {}
        metas.append({"run_id": rid, **{k: m.get(k) for k in META_FIELDS}})
    meta = pd.DataFrame(metas, columns=["run_id", *META_FIELDS])
    gen = provenance()
    return ReportData(
        sweep_dir=sweep_dir,
        runs=runs,
        layers=layers,
        sweep=sweep,
        meta=meta,
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        generator={k: gen.get(k) for k in ("package_version", "git_revision", "torch_version", "hostname")},
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "all"


def _same(col: pd.Series, value) -> np.ndarray:
    """Element-wise equality that treats NaN as equal to NaN."""
    if pd.isna(value):
        return col.isna().to_numpy()
    return (col == value).to_numpy()


def settings_of(data: ReportData) -> list[Setting]:
    """Split the runs into settings: model x activation (x slope for leaky ReLU)."""
    runs = data.runs
    if runs.empty:
        return []
    cols = ["model", "activation", "negative_slope"]
    many_acts = runs["activation"].nunique(dropna=False) > 1
    out = []
    # Per model: plain ReLU first, then other activations by slope.
    keys = sorted(
        runs.groupby(cols, sort=False, dropna=False).groups,
        key=lambda k: (str(k[0]), k[1] != "relu", str(k[1]), float(k[2]) if pd.notna(k[2]) else -1.0),
    )
    for key in keys:
        model, act, slope = key
        sub = runs[
            (runs["model"] == model)
            & (runs["activation"].astype(str) == str(act))
            & _same(runs["negative_slope"], slope)
        ]
        label = str(model)
        if act == "leaky_relu":
            label += f", leaky_relu slope {float(slope):g}"
        elif many_acts or (act not in ("relu", None) and not pd.isna(act)):
            label += f", {act}"
        lay = data.layers
        if not lay.empty:
            lay = lay[lay["run_id"].isin(sub["run_id"]) & (lay["status"] == "completed")]
        out.append(
            Setting(
                key=_slug(label),
                label=label,
                model=str(model),
                runs=sub.reset_index(drop=True),
                layers=lay.reset_index(drop=True),
            )
        )
    # Labels could collide for odd grids (e.g. relu runs with different ignored slopes).
    seen: dict[str, int] = {}
    for s in out:
        n = seen.get(s.key, 0)
        seen[s.key] = n + 1
        if n:
            s.key, s.label = f"{s.key}-{n}", f"{s.label} (#{n + 1})"
    return out


# --------------------------------------------------------------------------- formatting
def _f(v, fmt: str) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "-" if v is None else str(v)
    return "-" if not np.isfinite(x) else format(x, fmt)


def _ci(mean, low, high, n, scale: float, digits: int, suffix: str = "") -> str:
    """``"91.23% [90.91, 91.52]"``; ``"-"`` without data, no bracket without a CI."""
    if not n or not np.isfinite(float(mean)):
        return "-"
    text = f"{float(mean) * scale:.{digits}f}{suffix}"
    if np.isfinite(float(low)) and np.isfinite(float(high)):
        text += f" [{float(low) * scale:.{digits}f}, {float(high) * scale:.{digits}f}]"
    return text


def _p(v) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "-"
    if not np.isfinite(x):
        return "-"
    return f"{x:.3g}" if x >= 1e-3 else f"{x:.2e}"


_METRIC = {  # column -> (label, scale, digits, suffix)
    "test_accuracy": ("test accuracy", 100.0, 2, "%"),
    "mean_selectivity": ("mean class selectivity", 1.0, 4, ""),
}


def _summary_display(t: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({"α": [f"{a:g}" for a in t["alpha"]], "n": t["n"].astype(int)})
    out["test accuracy (95% CI)"] = [
        _ci(r.test_accuracy_mean, r.test_accuracy_ci_low, r.test_accuracy_ci_high, r.n, 100.0, 2, "%")
        for r in t.itertuples()
    ]
    out["mean SI (95% CI)"] = [
        _ci(r.mean_selectivity_mean, r.mean_selectivity_ci_low, r.mean_selectivity_ci_high, r.n, 1.0, 3)
        for r in t.itertuples()
    ]
    for col, name in (("n_failed", "failed"), ("n_diverged", "diverged"), ("n_unfinished", "unfinished")):
        out[name] = t[col].astype(int)
    return out


def _ttest_display(t: pd.DataFrame, metric: str) -> pd.DataFrame:
    _, scale, digits, suffix = _METRIC[metric]
    v = lambda x: _f(float(x) * scale, f".{digits}f") + (suffix if np.isfinite(float(x)) else "")  # noqa: E731
    return pd.DataFrame(
        {
            "α": [f"{a:g}" for a in t["group"]],
            "n": t["n"],
            "n (α=0)": t["n_baseline"],
            "mean": [v(x) for x in t["mean"]],
            "mean (α=0)": [v(x) for x in t["baseline_mean"]],
            "difference": [v(x) for x in t["diff"]],
            "t (Welch)": [_f(x, ".3f") for x in t["statistic"]],
            "p": [_p(x) for x in t["p"]],
            "p (Bonferroni)": [_p(x) for x in t["p_bonferroni"]],
            "significant": ["yes" if s else "no" for s in t["significant"]],
        }
    )


def _ranksum_display(t: pd.DataFrame, metric: str) -> pd.DataFrame:
    _, scale, digits, suffix = _METRIC[metric]
    v = lambda x: _f(float(x) * scale, f".{digits}f") + (suffix if np.isfinite(float(x)) else "")  # noqa: E731
    return pd.DataFrame(
        {
            "|α|": [f"{a:g}" for a in t["abs_alpha"]],
            "n promote": t["n_promote"],
            "n penalise": t["n_penalise"],
            "mean promote": [v(x) for x in t["mean_promote"]],
            "mean penalise": [v(x) for x in t["mean_penalise"]],
            "z (rank-sum)": [_f(x, ".3f") for x in t["statistic"]],
            "p": [_p(x) for x in t["p"]],
            "p (Bonferroni)": [_p(x) for x in t["p_bonferroni"]],
            "significant": ["yes" if s else "no" for s in t["significant"]],
        }
    )


def _cca_tests_display(t: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "α": [f"{a:g}" for a in t["alpha"]],
            "layers": t["n"],
            "mean ρ(α, 0)": [_f(x, ".4f") for x in t["mean_between"]],
            "mean ρ(α, α)": [_f(x, ".4f") for x in t["mean_within"]],
            "ratio": [_f(x, ".3f") for x in t["ratio"]],
            "t (paired)": [_f(x, ".3f") for x in t["statistic"]],
            "p": [_p(x) for x in t["p"]],
            "p (Bonferroni)": [_p(x) for x in t["p_bonferroni"]],
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


def _ttest_item(s: Setting, metric: str) -> TableItem:
    label = _METRIC[metric][0]
    item = TableItem(
        id=f"{s.key}-ttest-{metric}",
        title=f"{s.label}: {label}, each α vs α = 0 (Welch t-test)",
        data=pd.DataFrame(),
        caption=(
            f"Two-sided Welch t-test of the {label} of each α against α = 0, over completed "
            "runs (one value per seed); p-values Bonferroni-corrected over the alphas tested."
        ),
    )
    d = s.done[["alpha", metric]].dropna()
    alphas = sorted(d["alpha"].unique())
    if not any(abs(a) < 1e-12 for a in alphas):
        item.note = "No completed α = 0 runs: there is no baseline to test against."
        return item
    if len(alphas) < 2:
        item.note = "Only one α has completed runs: nothing to compare with α = 0."
        return item
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # near-identical values: scipy precision warning
            t = ttests_against_baseline(d, metric, "alpha", baseline=0.0)
    except ValueError as e:
        item.note = f"Not computed: {e}."
        return item
    item.data = t.rename(columns={"group": "alpha"}).assign(metric=metric)
    item.display = _ttest_display(t, metric)
    return item


def _ranksum_item(s: Setting, metric: str) -> TableItem:
    label = _METRIC[metric][0]
    item = TableItem(
        id=f"{s.key}-ranksum-{metric}",
        title=f"{s.label}: {label}, promoting vs penalising selectivity (Wilcoxon rank-sum)",
        data=pd.DataFrame(),
        caption=(
            f"Wilcoxon rank-sum test of the {label} of α > 0 against α < 0 at equal |α| "
            "(paper Fig. 5); p-values Bonferroni-corrected over the |α| compared."
        ),
    )
    d = s.done[["alpha", metric]].dropna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t = rank_sum_promote_vs_penalise(d, metric) if not d.empty else pd.DataFrame()
    if t.empty:
        item.note = "No |α| was run (to completion) with both signs: nothing to compare."
        return item
    item.data = t.assign(metric=metric)
    item.display = _ranksum_display(t, metric)
    return item


def _setting_tables(s: Setting, n_resamples: int) -> list[TableItem]:
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
        items.append(_ttest_item(s, metric))
    for metric in ("test_accuracy", "mean_selectivity"):
        items.append(_ranksum_item(s, metric))
    if not s.layers.empty:
        for value in ("selectivity", "precision", "dead_fraction"):
            items.append(
                TableItem(
                    id=f"{s.key}-layers-{value}",
                    title=f"{s.label}: per-layer {value}",
                    data=layer_table(s.layers, value, n_resamples=n_resamples),
                    show=False,
                )
            )
    return items


def _config_tables(data: ReportData) -> list[TableItem]:
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


def _provenance_tables(data: ReportData) -> list[TableItem]:
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
    bad = data.runs[data.runs["status"].isin(["failed", "diverged"])] if not data.runs.empty else data.runs
    bad_df = (
        bad[["run_id", "status", "message"]].reset_index(drop=True)
        if not bad.empty
        else pd.DataFrame(columns=["run_id", "status", "message"])
    )
    items.append(
        TableItem(
            id="prov-failed",
            title="Failed and diverged runs",
            data=bad_df,
            note=None if not bad.empty else "No failed or diverged runs.",
        )
    )
    return items


def make_tables(
    data: ReportData, settings: Sequence[Setting], n_resamples: int = 2000, cca: CCAResult | None = None
) -> dict[str, list[TableItem]]:
    """Every table of the report, grouped by section key.

    Parameters
    ----------
    data : ReportData
    settings : sequence of Setting
    n_resamples : int, default 2000
        Bootstrap resamples per CI.
    cca : CCAResult, optional
        Adds the CCA tables (distances, per-layer means, ratios, tests).

    Returns
    -------
    dict
        ``{setting.key: [...], "cca": [...], "config": [...], "provenance": [...], "all": [...]}``.
    """
    out: dict[str, list[TableItem]] = {}
    for s in settings:
        out[s.key] = _setting_tables(s, n_resamples)
    runs_csv = data.runs.drop(columns=["config"], errors="ignore")
    out["all"] = [TableItem(id="runs", title="All runs", data=runs_csv, show=False)]
    if not data.runs.empty:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out["all"].append(
                TableItem(
                    id="summary",
                    title="Summary of all settings",
                    data=summary_table(data.runs, n_resamples=n_resamples),
                    show=False,
                )
            )
    if not data.layers.empty:
        out["all"].append(TableItem(id="layers", title="All per-layer results", data=data.layers, show=False))
    out["cca"] = _cca_tables(cca, settings) if cca is not None else []
    out["config"] = _config_tables(data)
    out["provenance"] = _provenance_tables(data)
    return out


def _cca_tables(cca: CCAResult, settings: Sequence[Setting]) -> list[TableItem]:
    from .analysis.cca_analysis import cca_summary

    if cca.distances is None or cca.distances.empty:
        return []
    by_layer, ratio, tests = cca_summary(cca.distances)
    items = [
        TableItem(
            id="cca-distances", title="CCA distances per pair and layer", data=cca.distances, show=False
        ),
        TableItem(id="cca-by-layer", title="Mean CCA distance per α and layer", data=by_layer, show=False),
        TableItem(id="cca-ratio", title="CCA distance ratio per replicate", data=ratio, show=False),
    ]
    for s in settings:
        t = _match_setting(tests, s)
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


def _match_setting(df: pd.DataFrame, s: Setting) -> pd.DataFrame:
    """Rows of a CCA frame belonging to setting ``s`` (same model, activation, slope)."""
    if df.empty:
        return df
    r = s.runs.iloc[0]
    m = (df["model"] == r["model"]) & (df["activation"].astype(str) == str(r["activation"]))
    m &= np.isclose(
        pd.to_numeric(df["negative_slope"], errors="coerce").fillna(-1).to_numpy(float),
        float(r["negative_slope"]) if pd.notna(r["negative_slope"]) else -1,
    )
    return df[m]


# --------------------------------------------------------------------------- figures
def _panels(n: int, size=_PANEL) -> tuple[Figure, list]:
    fig = Figure(figsize=(size[0] * n, size[1]), layout="constrained")
    return fig, [fig.add_subplot(1, n, i + 1) for i in range(n)]


def _paper_fig(model: str, resnet: str, vgg: str) -> str:
    m = model.lower()
    if m.startswith("resnet20"):
        return f"Fig. {resnet}"
    if m.startswith("vgg"):
        return f"Fig. {vgg}"
    return f"Fig. {resnet} / {vgg}"


def _has_both_signs(runs: pd.DataFrame) -> bool:
    a = runs["alpha"].to_numpy(float)
    return bool(np.intersect1d(np.round(np.abs(a[a > 0]), 12), np.round(np.abs(a[a < 0]), 12)).size)


def _plain_minor(ax):
    """No minor tick labels on x: a log axis spanning < 1 decade otherwise labels them all."""
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    return ax


def _setting_figure_specs(s: Setting, n_resamples: int) -> list[tuple]:
    """(key, paper label, title, caption, draw or None, note) for one setting."""
    nr = n_resamples
    done, lay, m = s.done, s.layers, s.model
    no_layers = "No per-layer results stored for the completed runs." if lay.empty else None
    n_alpha = done["alpha"].nunique()

    def one(fn):
        def draw():
            fig, (ax,) = _panels(1)
            fn(ax)
            return fig

        return draw

    def layer_fig(value, size=(7.5, 4.8)):
        def draw():
            fig, (ax,) = _panels(1, size)
            plots.plot_layer_selectivity(lay, ax, value, n_resamples=nr, title=s.label)
            return fig

        return draw

    def precision_fig():
        fig, (a, b) = _panels(2, (7.0, 4.6))
        plots.plot_layer_selectivity(
            lay, a, "precision", n_resamples=nr, title=f"{s.label}: precision by layer"
        )
        plots.plot_selectivity_vs_alpha(
            done, b, value="mean_precision", n_resamples=nr, title=f"{s.label}: network precision vs α"
        )
        return fig

    def dead_fig():
        fig, (a, b, c) = _panels(3, (5.2, 4.4))
        plots.plot_layer_selectivity(
            lay, a, "dead_fraction", n_resamples=nr, title=f"{s.label}: dead units by layer"
        )
        plots.plot_selectivity_vs_alpha(
            done, b, value="dead_fraction", n_resamples=nr, title=f"{s.label}: dead units vs α"
        )
        plots.plot_selectivity_vs_alpha(done, c, n_resamples=nr, title=f"{s.label}: SI, dead units excluded")
        return fig

    specs = [
        (
            "fig1a",
            _paper_fig(m, "1a", "A1a"),
            "Class selectivity by layer",
            "Mean class selectivity of the units of each layer (forward order), one line per α; error bars are "
            "95% CIs over seeds.",
            layer_fig("selectivity"),
            no_layers,
        ),
        (
            "fig1b",
            _paper_fig(m, "1b", "A1b"),
            "Mean class selectivity vs α",
            "Network class selectivity index (mean over units in each layer, then over layers) of each run "
            "(small points, one per seed) and its mean with bootstrapped 95% CI per α; symmetric-log α axis.",
            one(lambda ax: plots.plot_selectivity_vs_alpha(done, ax, n_resamples=nr, title=s.label)),
            None,
        ),
        (
            "fig2a",
            _paper_fig(m, "2a", "4a"),
            "Test accuracy vs α",
            "Test accuracy (%) of each run (one point per seed) and the mean with 95% CI per α; dashed line: "
            "α = 0 mean; stars: Welch t-test against α = 0, Bonferroni-corrected (* p < 0.05, ** p < 1e-3, "
            "*** p < 1e-6).",
            one(lambda ax: plots.plot_accuracy_vs_alpha(done, ax, "points", n_resamples=nr, title=s.label)),
            None,
        ),
        (
            "fig2b",
            _paper_fig(m, "2b", "4b"),
            "Test accuracy distributions (violins)",
            "Distribution of test accuracy over seeds per α (violin with quartile box and white median); an α "
            "with a single run or identical values is drawn as points. Stars as in the accuracy-vs-α figure.",
            one(lambda ax: plots.plot_accuracy_vs_alpha(done, ax, "violin", n_resamples=nr, title=s.label)),
            None,
        ),
        (
            "fig2c",
            _paper_fig(m, "2c", "4c"),
            "Test accuracy vs mean class selectivity",
            "Each run's test accuracy against its network class selectivity (small points) and the per-α means "
            "with 95% CIs in both directions.",
            one(lambda ax: plots.plot_accuracy_vs_selectivity(done, ax, n_resamples=nr, title=s.label)),
            None,
        ),
    ]
    both = _has_both_signs(done)
    specs.append(
        (
            "fig5a",
            "Fig. 5a / A6 / A11",
            "Promoting vs penalising class selectivity",
            "Test accuracy vs |α| for α > 0 (promoting selectivity, red) and α < 0 (penalising, blue), "
            "mean and 95% CI over seeds; grey dashed line and band: α = 0. Stars: Wilcoxon rank-sum test "
            "promote vs penalise at equal |α|, Bonferroni-corrected.",
            one(
                lambda ax: _plain_minor(
                    plots.plot_promote_vs_penalise(done, ax, n_resamples=nr, title=s.label)
                )
            )
            if both
            else None,
            None if both else "No |α| was run (to completion) with both signs.",
        )
    )
    specs.append(
        (
            "figA7",
            "Fig. A7 / A8",
            "Precision",
            "(left) Mean precision of the units of each layer (share of the most common class among each unit's "
            "top-N most-activating test images; chance = 1/classes), one line per α, 95% CIs over seeds; "
            "(right) network mean precision vs α.",
            precision_fig if not lay.empty else None,
            no_layers,
        )
    )
    specs.append(
        (
            "figA9",
            "Fig. A9",
            "Dead units and selectivity without them",
            "(left) Proportion of dead units (zero response to every test image) per layer, one line per α; "
            "(middle) network proportion of dead units vs α; (right) network class selectivity vs α with dead "
            "units removed. The stored selectivity values already exclude dead units (their index is 0/0), so "
            "the right panel is the same measurement as Fig. 1b, shown next to the dead-unit counts.",
            dead_fig if not lay.empty else None,
            no_layers,
        )
    )
    if done.empty:
        specs = [(k, p, t, c, None, "No completed runs in this setting.") for k, p, t, c, _, _ in specs]
    elif n_alpha < 2:
        note = f"Only one α ({done['alpha'].iloc[0]:g}) has completed runs: the comparison is a single group."
        specs = [(k, p, t, c + " " + note if d else c, d, n) for k, p, t, c, d, n in specs]
    return specs


def _cca_figure_specs(s: Setting, cca: CCAResult, n_resamples: int) -> list[tuple]:
    from .analysis.cca_analysis import cca_plot_frame, cca_summary

    cap_a = (
        "Mean PWCCA distance ρ (1 − PWCCA similarity) by layer between pairs of replicates of the same "
        "α (ρ(α, α), dashed, lighter) and between a replicate of α and one of α = 0 (ρ(α, 0), solid); "
        "shaded: 95% CI over pairs."
    )
    cap_a += (
        " Between pairs include pairs of equal seeds, which in these sweeps share the initialisation "
        "and batch order (as in the paper's 20 x 20 pairs; `selectivity cca --exclude-same-seed` drops them)."
    )
    cap_b = (
        "CCA distance ratio ρ(α, 0) / ρ(α, α) per replicate of α (averaged over layers; each replicate's "
        "own pairs), with mean and 95% CI per α; dashed line: ratio 1 (what a pure rotation of the "
        "representation would give)."
    )
    d = _match_setting(cca.distances, s) if cca.distances is not None else pd.DataFrame()
    if cca.distances is None or d.empty:
        note = cca.note or "No CCA distances for this setting."
        return [
            ("fig3a", "Fig. 3a", "CCA distance by layer", cap_a, None, note),
            ("fig3b", "Fig. 3b", "CCA distance ratio vs α", cap_b, None, note),
        ]
    frame = cca_plot_frame(d)
    _, ratio, _ = cca_summary(d)
    alphas = sorted(
        a
        for a in frame["alpha"].unique()
        if abs(a) > 1e-12 and frame.loc[frame["alpha"] == a, "distance_between"].notna().any()
    )
    # The paper shows alpha = -10 only; more than a few pairs of lines are unreadable.
    shown = [-10.0] if -10.0 in alphas else sorted(alphas, key=lambda a: (-abs(a), a))[:3]
    cap_a += (
        " α shown: "
        + (", ".join(f"{a:g}" for a in sorted(shown)) or "none")
        + " (every α is in tables/cca-by-layer.csv)."
    )
    settings = cca.settings
    extra = (
        (
            f" Activations of {settings.get('n_images')} fixed test images, conv maps flattened by "
            f"{settings.get('mode')}; PWCCA weights from the {settings.get('weights')}."
        )
        if settings
        else ""
    )

    def draw_a():
        fig, (ax,) = _panels(1, (7.5, 4.8))
        plots.plot_cca_distance_by_layer(
            frame, ax, alphas=shown or None, n_resamples=n_resamples, title=s.label
        )
        return fig

    def draw_b():
        fig, (ax,) = _panels(1)
        plots.plot_cca_ratio(ratio, ax, n_resamples=n_resamples, title=s.label)
        return fig

    no_between = None if alphas else "No α ≠ 0 with between pairs (α = 0 runs missing?)."
    return [
        ("fig3a", "Fig. 3a", "CCA distance by layer", cap_a + extra, draw_a, None),
        (
            "fig3b",
            "Fig. 3b",
            "CCA distance ratio vs α",
            cap_b + extra,
            draw_b if alphas else None,
            no_between,
        ),
    ]


def _global_figure_specs(data: ReportData, settings: Sequence[Setting], n_resamples: int) -> list[tuple]:
    nr = n_resamples
    done = data.runs[data.runs["status"] == "completed"] if not data.runs.empty else data.runs
    specs = []
    if done.empty:
        return specs
    # A12: models side by side, within one activation setting.
    for (act, slope), sub in done.groupby(["activation", "negative_slope"], sort=True, dropna=False):
        if sub["model"].nunique() < 2:
            continue
        tag = "" if act == "relu" else f" ({act} {float(slope):g})"

        def draw(sub=sub, tag=tag):
            fig, (a, b) = _panels(2)
            plots.plot_model_comparison(
                sub, a, "mean_selectivity", n_resamples=nr, title="Mean class selectivity" + tag
            )
            plots.plot_model_comparison(sub, b, "test_accuracy", n_resamples=nr, title="Test accuracy" + tag)
            return fig

        specs.append(
            (
                f"figA12-{_slug(f'{act} {slope}')}",
                "Fig. A12",
                "Model comparison" + tag,
                "Mean class selectivity (left) and test accuracy (right) vs α, one line per model, mean and "
                "95% CI over seeds (n = completed runs per model).",
                draw,
                None,
            )
        )
    # A10: leaky-ReLU slopes of one model (ReLU runs drawn as slope 0).
    for model, sub in done.groupby("model", sort=True):
        eff = np.where(
            sub["activation"] == "relu", 0.0, pd.to_numeric(sub["negative_slope"], errors="coerce")
        )
        if len(np.unique(eff)) < 2:
            continue
        sub = sub.assign(negative_slope=eff)

        def draw(sub=sub, model=model):
            fig, axes = _panels(3, (5.2, 4.4))
            for ax, v, t in zip(
                axes,
                ("test_accuracy", "mean_selectivity", "dead_fraction"),
                ("test accuracy", "class selectivity", "dead units"),
            ):
                plots.plot_leaky_relu(sub, ax, v, n_resamples=nr, title=f"{model}: {t}")
            return fig

        specs.append(
            (
                f"figA10-{_slug(str(model))}",
                "Fig. A10",
                f"{model}: leaky ReLU",
                "Test accuracy (left), mean class selectivity (middle) and proportion of dead units (right) "
                "vs α, one line per leaky-ReLU negative slope (0 = ReLU), mean and 95% CI over seeds.",
                draw,
                None,
            )
        )
    return specs


def _render_spec(spec: tuple, prefix: str, fig_dir: Path, dpi: int, log) -> FigureItem:
    key, paper, title, caption, draw, note = spec
    fid = f"{prefix}-{key}" if prefix else key
    item = FigureItem(id=fid, paper=paper, title=title, caption=caption, note=note)
    if draw is None:
        return item
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fig = draw()
        # Multi-panel and per-layer figures (many x labels) span the whole row.
        item.wide = fig.get_figwidth() > 1.5 * _PANEL[0] or key in _WIDE
        item.path = plots.save_figure(fig, fig_dir / f"{fid}.png", dpi=dpi)
    except Exception as e:
        item.note = f"This figure could not be drawn: {type(e).__name__}: {e}"
        log(f"figure {fid}: {item.note}")
    return item


def make_figures(
    data: ReportData,
    settings: Sequence[Setting],
    out_dir: str | os.PathLike,
    cca: CCAResult | None = None,
    n_resamples: int = 2000,
    dpi: int = 120,
    log: Callable[[str], None] | None = None,
) -> dict[str, list[FigureItem]]:
    """Draw and save every figure (``out_dir/figures/<id>.png``).

    Returns
    -------
    dict
        ``{setting.key: [...], "cca:<setting.key>": [...], "global": [...]}``; an item
        with ``path=None`` carries a ``note`` saying why it is missing.
    """
    log = log or (lambda _m: None)
    fig_dir = Path(out_dir) / "figures"
    out: dict[str, list[FigureItem]] = {}
    for s in settings:
        out[s.key] = [
            _render_spec(sp, s.key, fig_dir, dpi, log) for sp in _setting_figure_specs(s, n_resamples)
        ]
        if cca is not None:
            out[f"cca:{s.key}"] = [
                _render_spec(sp, s.key, fig_dir, dpi, log) for sp in _cca_figure_specs(s, cca, n_resamples)
            ]
    out["global"] = [
        _render_spec(sp, "", fig_dir, dpi, log) for sp in _global_figure_specs(data, settings, n_resamples)
    ]
    return out


# --------------------------------------------------------------------------- CCA
def run_cca(
    data: ReportData,
    dataset: str | os.PathLike | None = None,
    n_images: int = 2000,
    mode: str = "spatial_mean",
    device: str = "cpu",
    max_pairs: int | None = None,
    min_ratio: float | None = 5.0,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> CCAResult:
    """CCA distances of a sweep for the report, or a note saying why they are missing.

    Reuses ``SWEEP/analysis/cca_distances.csv`` when it was computed with the same
    settings on the same pairs of runs (e.g. by ``selectivity cca``).
    """
    from .analysis.cca_analysis import CCA_CSV, cca_distances, plan_pairs

    log = log or (lambda _m: None)
    done = data.runs[data.runs["status"] == "completed"] if not data.runs.empty else data.runs
    if done.empty:
        return CCAResult(note="CCA skipped: no completed runs.")
    if not np.isclose(done["alpha"].to_numpy(float), 0.0).any():
        return CCAResult(
            note="CCA skipped: no completed α = 0 runs, so there are no unregularised networks "
            "to compare with (the between-distances ρ(α, 0) need them)."
        )
    dataset = dataset if dataset is not None else data.sweep.get("data")
    try:
        _locate_data(done, dataset)
    except (FileNotFoundError, ValueError) as e:
        return CCAResult(note=f"CCA skipped: the dataset was not found ({e}). Pass --data PATH.")
    settings = dict(n_images=n_images, mode=mode, max_pairs=max_pairs, min_ratio=min_ratio)
    cached = _cached_cca(data, settings, plan_pairs(data.runs, 0.0, max_pairs))
    if cached is not None:
        log(f"reusing {data.sweep_dir / CCA_CSV}")
        return CCAResult(distances=cached, settings={**settings, **cached.attrs})
    try:
        df = cca_distances(
            data.sweep_dir,
            dataset,
            n_images=n_images,
            mode=mode,
            max_pairs=max_pairs,
            device=device,
            progress=progress,
            min_ratio=min_ratio,
            log=log,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        return CCAResult(note=f"CCA not computed: {e}")
    return CCAResult(distances=df, settings=dict(df.attrs))


def _locate_data(done: pd.DataFrame, dataset) -> None:
    """Raise FileNotFoundError when the runs' dataset cannot be found (never downloads)."""
    from .data.locate import find_cifar10, find_tiny_imagenet

    cfg = json.loads(done["config"].iloc[0]) if "config" in done.columns else {}
    if cfg.get("dataset", "cifar10") == "cifar10":
        find_cifar10(dataset, download=False)
    else:
        find_tiny_imagenet(dataset)


def _cached_cca(data: ReportData, settings: dict, pairs: pd.DataFrame) -> pd.DataFrame | None:
    from .analysis.cca_analysis import _SETTINGS_JSON, CCA_CSV

    csv, js = data.sweep_dir / CCA_CSV, data.sweep_dir / _SETTINGS_JSON
    if not (csv.exists() and js.exists()):
        return None
    try:
        saved = json.loads(js.read_text())
        if any(saved.get(k) != v for k, v in settings.items()) or saved.get("symmetric"):
            return None
        df = pd.read_csv(csv)
    except (OSError, ValueError):
        return None
    have = set(map(tuple, df[["run_a", "run_b"]].drop_duplicates().to_numpy()))
    want = set(map(tuple, pairs[["run_a", "run_b"]].to_numpy()))
    if have != want:
        return None
    df.attrs.update(saved)
    return df


# --------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2430;
background:#fafbfc;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 32px 64px}
h1{font-size:1.7em;margin:0.2em 0}h2{border-bottom:2px solid #d5dbe3;padding-bottom:4px;margin-top:2.2em}
h3{margin-top:1.6em;color:#2a3a52}h4{margin:1.2em 0 0.4em}
.meta{color:#5a6575;font-size:0.92em}
nav{background:#fff;border:1px solid #e1e5eb;border-radius:6px;padding:10px 18px;margin:18px 0}
nav ul{margin:4px 0;padding-left:20px}nav a{color:#2358a6;text-decoration:none}
table{border-collapse:collapse;font-size:0.86em;background:#fff;margin:4px 0 6px}
th,td{border:1px solid #dfe3e8;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#eef1f5;font-weight:600}
td:first-child,th:first-child{text-align:left}
td.text{text-align:left;max-width:620px;overflow-wrap:anywhere}
.tbl{overflow-x:auto}
.caption{color:#4a5566;font-size:0.88em;margin:2px 0 12px;max-width:1000px}
.note{background:#fff8e1;border-left:4px solid #f0b429;padding:6px 12px;margin:8px 0;font-size:0.92em}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:16px;align-items:start}
figure{background:#fff;border:1px solid #e1e5eb;border-radius:6px;margin:0;padding:12px}
figure.wide{grid-column:1/-1}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:0.88em;color:#3a4555;margin-top:8px}
figcaption b{color:#1d2430}
.file{color:#8a94a3;font-family:ui-monospace,monospace;font-size:0.9em}
.files{columns:2;font-family:ui-monospace,monospace;font-size:0.85em}
"""


def _e(text) -> str:
    return html.escape("" if text is None else str(text), quote=True)


_NUMERIC = re.compile(r"^[-+]?(\d|\.\d|inf|nan)")


def _table_html(df: pd.DataFrame) -> str:
    if df is None or df.empty:
        return ""
    head = "".join(f"<th>{_e(c)}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            s = (
                "-"
                if v is None or (isinstance(v, float) and not np.isfinite(v))
                else (format(v, ".4g") if isinstance(v, (float, np.floating)) else str(v))
            )
            cls = "" if isinstance(v, (int, float, np.number)) or _NUMERIC.match(s) else ' class="text"'
            cells.append(f"<td{cls}>{_e(s)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<div class="tbl"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
    )


def _table_block(t: TableItem, out_dir: Path) -> str:
    parts = [f'<div class="table-block" id="{_e(t.id)}"><h4>{_e(t.title)}</h4>']
    if t.note:
        parts.append(f'<p class="note">{_e(t.note)}</p>')
    shown = t.display if t.display is not None else t.data
    if shown is not None and not shown.empty:
        parts.append(_table_html(shown))
    if t.path is not None:
        rel = t.path.relative_to(out_dir).as_posix()
        parts.append(
            f'<p class="caption">{_e(t.caption)}{" " if t.caption else ""}'
            f'<span class="file">CSV: <a href="{_e(rel)}">{_e(rel)}</a></span></p>'
        )
    elif t.caption:
        parts.append(f'<p class="caption">{_e(t.caption)}</p>')
    parts.append("</div>")
    return "".join(parts)


def _figure_block(f: FigureItem, out_dir: Path) -> str:
    head = f"<b>{_e(f.paper)}</b> &mdash; {_e(f.title)}."
    if f.path is None:
        return (
            f'<figure id="{_e(f.id)}"><figcaption>{head} {_e(f.caption)}</figcaption>'
            f'<p class="note">{_e(f.note or "Not drawn.")}</p></figure>'
        )
    b64 = base64.b64encode(Path(f.path).read_bytes()).decode("ascii")
    rel = Path(f.path).relative_to(out_dir).as_posix()
    note = f'<p class="note">{_e(f.note)}</p>' if f.note else ""
    cls = ' class="wide"' if f.wide else ""
    return (
        f'<figure id="{_e(f.id)}"{cls}><img src="data:image/png;base64,{b64}" alt="{_e(f.paper)}: {_e(f.title)}">'
        f'<figcaption>{head} {_e(f.caption)} <span class="file">{_e(rel)}</span></figcaption>{note}</figure>'
    )


def _figure_grid(items: Sequence[FigureItem], out_dir: Path) -> str:
    return '<div class="figs">' + "".join(_figure_block(f, out_dir) for f in items) + "</div>"


def _overview(data: ReportData, settings: Sequence[Setting]) -> str:
    n = len(data.runs)
    status = data.runs["status"].value_counts().to_dict() if n else {}
    spec = data.sweep.get("spec", {}) if isinstance(data.sweep, dict) else {}
    items = [
        f"Sweep directory: <code>{_e(data.sweep_dir.resolve())}</code>",
        f"Runs: {n} (" + (", ".join(f"{v} {k}" for k, v in sorted(status.items())) or "none") + ")",
        "Settings: " + (", ".join(_e(s.label) for s in settings) or "none"),
    ]
    if spec:
        items.append(
            f"Training preset: {_e(spec.get('preset'))}; overrides: {_e(json.dumps(spec.get('overrides', {})))}"
        )
    return "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def render_html(
    data: ReportData,
    settings: Sequence[Setting],
    tables: dict[str, list[TableItem]],
    figures: dict[str, list[FigureItem]],
    out_dir: str | os.PathLike,
    cca: CCAResult | None = None,
    cca_requested: bool = False,
) -> str:
    """The report page as one HTML string (images inline, no external resource)."""
    out_dir = Path(out_dir)
    sec: list[tuple[str, str, str]] = []  # (id, heading, body)
    if not settings:
        sec.append(("no-runs", "Results", '<p class="note">The sweep has no recorded runs yet.</p>'))
    for s in settings:
        tb = {t.id.rsplit(f"{s.key}-", 1)[-1]: t for t in tables.get(s.key, [])}
        body = ["<h3>Summary</h3>", _table_block(tb["summary"], out_dir) if "summary" in tb else ""]
        body.append("<h3>Statistics</h3>")
        body += [_table_block(t, out_dir) for k, t in tb.items() if k != "summary" and t.show]
        body.append("<h3>Figures</h3>")
        body.append(_figure_grid(figures.get(s.key, []), out_dir))
        sec.append((f"setting-{s.key}", f"Setting: {s.label}", "".join(body)))
    glob = figures.get("global", [])
    if glob:
        sec.append(("across", "Across settings", _figure_grid(glob, out_dir)))
    if cca_requested:
        sec.append(
            (
                "cca",
                "Representation similarity (CCA, paper Fig. 3)",
                _cca_section(settings, tables, figures, cca, out_dir),
            )
        )
    sec.append(
        (
            "configuration",
            "Configuration",
            "".join(_table_block(t, out_dir) for t in tables.get("config", [])),
        )
    )
    prov = [_table_block(t, out_dir) for t in tables.get("provenance", [])]
    gen = data.generator
    prov.append(
        f'<p class="meta">Report generated {_e(data.generated)} by selectivity {_e(gen.get("package_version"))}'
        f" (git {_e(gen.get('git_revision') or 'unknown')}, torch {_e(gen.get('torch_version'))}, host "
        f"{_e(gen.get('hostname'))}).</p>"
    )
    sec.append(("provenance", "Provenance", "".join(prov)))
    sec.append(("files", "Files", _files_list(tables, figures, out_dir)))

    nav = "".join(f'<li><a href="#{_e(i)}">{_e(h)}</a></li>' for i, h, _ in sec)
    body = "".join(f'<section id="{_e(i)}"><h2>{_e(h)}</h2>{b}</section>' for i, h, b in sec)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(TITLE)}: {_e(data.sweep_dir.name)}</title><style>{_CSS}</style></head><body><main>"
        f'<h1>{_e(TITLE)}</h1><p class="meta">Sweep <code>{_e(data.sweep_dir.name)}</code> &middot; generated '
        f"{_e(data.generated)}</p>{_overview(data, settings)}<nav><b>Contents</b><ul>{nav}</ul></nav>{body}"
        "</main></body></html>\n"
    )


def _cca_section(settings, tables, figures, cca: CCAResult | None, out_dir: Path) -> str:
    parts = [
        '<p class="caption">PWCCA distances between networks, layer by layer (paper section 4.2): if '
        "the regulariser only rotated selectivity off the unit axes, ρ(α, 0) would equal the replicate "
        "baseline ρ(α, α).</p>"
    ]
    if cca is not None and cca.note:
        parts.append(f'<p class="note">{_e(cca.note)}</p>')
    for s in settings:
        parts.append(f"<h3>{_e(s.label)}</h3>")
        parts += [_table_block(t, out_dir) for t in tables.get("cca", []) if t.id == f"{s.key}-cca-tests"]
        parts.append(_figure_grid(figures.get(f"cca:{s.key}", []), out_dir))
    return "".join(parts)


def _files_list(tables, figures, out_dir: Path) -> str:
    paths = sorted(
        {t.path.relative_to(out_dir).as_posix() for ts in tables.values() for t in ts if t.path}
        | {Path(f.path).relative_to(out_dir).as_posix() for fs in figures.values() for f in fs if f.path}
    )
    return (
        '<p class="caption">Every table as CSV and every figure as PNG, next to this file:</p><ul class="files">'
        + "".join(f'<li><a href="{_e(p)}">{_e(p)}</a></li>' for p in paths)
        + "</ul>"
    )


# --------------------------------------------------------------------------- entry point
def _write_tables(tables: dict[str, list[TableItem]], out_dir: Path) -> None:
    tdir = out_dir / "tables"
    tdir.mkdir(parents=True, exist_ok=True)
    for items in tables.values():
        for t in items:
            if t.data is None or (t.data.empty and len(t.data.columns) == 0):
                continue
            t.path = tdir / f"{t.id}.csv"
            t.data.to_csv(t.path, index=False)


def build_report(
    sweep_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    cca: bool = False,
    data: str | os.PathLike | None = None,
    *,
    cca_images: int = 2000,
    cca_mode: str = "spatial_mean",
    cca_max_pairs: int | None = None,
    cca_min_ratio: float | None = 5.0,
    device: str = "cpu",
    n_resamples: int = 2000,
    dpi: int = 120,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write ``out_dir/report.html`` (self-contained), ``figures/*.png`` and ``tables/*.csv``.

    Parameters
    ----------
    sweep_dir : path
        Sweep directory.
    out_dir : path
        Output directory (created).
    cca : bool, default False
        Run the CCA analysis (paper Fig. 3); needs the data and the checkpoints.
    data : path, optional
        Dataset location for the CCA (default: the one in ``sweep.json``, then
        ``$SELECTIVITY_DATA`` / the cache; never downloaded here).
    cca_images, cca_mode, cca_max_pairs, cca_min_ratio
        See :func:`selectivity.analysis.cca_analysis.cca_distances`.
    device : str, default "cpu"
        Device of the CCA forward passes.
    n_resamples : int, default 2000
        Bootstrap resamples per CI.
    dpi : int, default 120
        Resolution of the figures.
    progress : bool, default False
        Progress bar for the CCA pairs.
    log : callable, optional
        Receives one-line messages.

    Returns
    -------
    pathlib.Path
        The HTML file.
    """
    log = log or (lambda _m: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rd = collect(sweep_dir)
    settings = settings_of(rd)
    cca_res = None
    if cca:
        cca_res = run_cca(rd, data, cca_images, cca_mode, device, cca_max_pairs, cca_min_ratio, progress, log)
        if cca_res.note:
            log(cca_res.note)
    tables = make_tables(rd, settings, n_resamples, cca_res)
    _write_tables(tables, out_dir)
    figures = make_figures(rd, settings, out_dir, cca_res, n_resamples, dpi, log)
    page = render_html(rd, settings, tables, figures, out_dir, cca_res, cca_requested=cca)
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    log(f"wrote {path}")
    return path
