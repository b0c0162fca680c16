"""The sweep summary: ``summary.csv``/``summary.txt`` and the standard figures as PNG.

The table itself is :func:`selectivity.analysis.summary.summary_table` (pure); this
module renders it as text and writes the files.

Written by ``selectivity summarize`` and, after the runs, by ``selectivity sweep``.
Reads only the run records (the database, synced from the run directories); the
figure set is :func:`selectivity.report.figures.sweep_figure_specs`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ..analysis.summary import summary_table
from ..evaluate.robustness import robustness_frame
from ..plots.style import save_figure
from ..run.files import SweepFiles
from ..sweep.store import open_store
from .collect import robust_methods
from .figures import sweep_figure_specs
from .format import format_alpha, format_ci

__all__ = ["format_robustness", "format_summary", "summarize_sweep", "write_summary"]

#: Below this many runs per group a CI or a test says little (at n = 2 the percentile
#: CI is the range of the two values).
FEW_RUNS = 3
FEW_RUNS_NOTE = (
    f"fewer than {FEW_RUNS} runs in a group: its CI (at n = 2 the range of the two values) and "
    "any test are not meaningful; add seeds for statistics."
)


def summarize_sweep(
    sweep_dir: str | os.PathLike, log: Callable[[str], None] = print, figures: bool = True
) -> dict[str, Path]:
    """Write the summary table (CSV, text) and the first figures (PNG) of a sweep.

    The table goes to ``log`` too, followed by the robustness headline
    (:func:`format_robustness`) when the sweep has robustness results.

    Parameters
    ----------
    sweep_dir : path
        Sweep directory.
    log : callable, default print
        Receives the formatted table and one-line messages.
    figures : bool, default True
        Also draw ``SWEEP/figures/<key>.png``.

    Returns
    -------
    dict of str to Path
        ``"csv"``, ``"txt"`` and one entry per figure key; empty when no run is recorded.
    """
    files = SweepFiles(sweep_dir)
    with open_store(files.root) as store:
        runs = store.runs_df()
        layers = store.layers_df()
    if not runs.empty and "config" in runs.columns:
        # the robust-training method: a grid column of its own (grouped on when it varies)
        runs = runs.assign(robust=robust_methods(runs))
    out: dict[str, Path] = {}
    if runs.empty:
        log("no runs recorded yet")
        return out
    out.update(write_summary(runs, files.root))
    log(format_summary(summary_table(runs)))
    robustness = robustness_frame(files.root, "summary")
    if not robustness.empty:
        attacks = robustness_frame(files.root, "attacks")
        if "robust" in runs.columns:
            method = runs[["run_id", "robust"]]
            robustness = robustness.merge(method, on="run_id", how="left")
            attacks = attacks.merge(method, on="run_id", how="left") if not attacks.empty else attacks
        log(format_robustness(robustness, attacks))
    if figures:
        completed = layers[layers.status == "completed"] if not layers.empty else None
        for spec in sweep_figure_specs(runs, completed):
            if spec.draw is not None:
                out[spec.key] = save_figure(spec.draw(), files.figures / f"{spec.key}.png")
        log(f"figures in {files.figures}")
    return out


def format_summary(table: pd.DataFrame) -> str:
    """Fixed-width text rendering of :func:`summary_table`.

    Accuracy is shown as a percentage with its CI (``"91.23% [90.91, 91.52]"``, the
    report's :func:`~selectivity.report.format.format_ci`), mean
    class selectivity to three decimals (``"0.221 [0.215, 0.228]"``), in the spirit of
    airbench's ``"94.01% (n=200)"`` reporting. Groups with one completed run show no
    CI; groups with none show ``-``.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`summary_table`.

    Returns
    -------
    str
        Header line, separator, one line per group, and a footnote saying what ``n``
        and the CI are. Ends without a newline.
    """
    conf = table.attrs.get("confidence", 0.95)
    ci_name = f"{conf * 100:g}% CI"
    group_cols = table.attrs.get("group_cols") or [
        c for c in ("model", "activation", "negative_slope", "alpha") if c in table.columns
    ]
    headers: list[str] = []
    cells: list[list[str]] = [[] for _ in range(len(table))]
    right: list[bool] = []

    def add(header: str, values, align_right: bool) -> None:
        headers.append(header)
        right.append(align_right)
        for i, v in enumerate(values):
            cells[i].append(v)

    for c in group_cols:
        if c == "alpha":
            add("alpha", [format_alpha(v) for v in table[c]], True)
        elif c == "negative_slope":
            add("slope", [format_alpha(v) for v in table[c]], True)
        else:
            add(c, [str(v) for v in table[c]], False)
    add("n", [str(int(v)) for v in table["n"]], True)
    known = {
        "test_accuracy": (f"test acc ({ci_name})", 100.0, 2, "%"),
        "best_val_accuracy": (f"val acc ({ci_name})", 100.0, 2, "%"),
        "mean_selectivity": (f"SI ({ci_name})", 1.0, 3, ""),
        "mean_selectivity_live": (f"SI live ({ci_name})", 1.0, 3, ""),
        "mean_precision": (f"precision ({ci_name})", 1.0, 3, ""),
        "dead_fraction": (f"dead ({ci_name})", 1.0, 3, ""),
    }
    metrics = table.attrs.get("metrics") or [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]
    for m in metrics:
        header, scale, digits, suffix = known.get(m, (f"{m} ({ci_name})", 1.0, 3, ""))
        add(
            header,
            [
                format_ci(r[f"{m}_mean"], r[f"{m}_ci_low"], r[f"{m}_ci_high"], r["n"], scale, digits, suffix)
                for _, r in table.iterrows()
            ],
            False,
        )
    for col, header in (("n_failed", "failed"), ("n_diverged", "diverged"), ("n_unfinished", "unfinished")):
        # Only show the unfinished column when something is still pending: less noise.
        if col in table.columns and (col != "n_unfinished" or table[col].sum() > 0):
            add(header, [str(int(v)) for v in table[col]], True)

    widths = [max([len(h), *(len(row[j]) for row in cells)]) for j, h in enumerate(headers)]

    def line(values) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    if cells:
        out += [line(row) for row in cells]
    else:
        out.append("(no runs)")
    out.append(
        f"n = completed runs; {ci_name} = bootstrap (percentile) CI of the mean over seeds; "
        "failed/diverged runs are counted, not averaged."
    )
    if len(table) and ((table["n"] > 1) & (table["n"] < FEW_RUNS)).any():
        out.append(FEW_RUNS_NOTE)
    return "\n".join(out)


def _eps_label(eps: float) -> str:
    return f"{round(float(eps) * 255, 3):g}/255"


def format_robustness(summary: pd.DataFrame, attacks: pd.DataFrame | None = None) -> str:
    """The robustness headline of a sweep: per model and alpha, mean over its runs.

    Clean accuracy, mean corruption accuracy, relative corruption accuracy (corruption /
    clean) and, per attack, the accuracy at its largest epsilon.

    Parameters
    ----------
    summary : pandas.DataFrame
        One row per run: ``model, alpha, n_images, clean_accuracy,
        mean_corruption_accuracy, relative_corruption_accuracy`` (the database's
        robustness summary).
    attacks : pandas.DataFrame, optional
        Long rows ``run_id, model, alpha, attack, norm, epsilon, accuracy``.

    Returns
    -------
    str
        A title line, a header and one line per group (no trailing newline).
    """
    keys = [
        k
        for k in ("model", "alpha", "robust")
        if k in summary.columns and (k == "alpha" or summary[k].nunique() > 1)
    ]
    g = summary.groupby(keys, sort=True)
    table = g[["clean_accuracy", "mean_corruption_accuracy", "relative_corruption_accuracy"]].mean()
    table["n"] = g.size()
    headers = [*keys, "n", "clean", "corruptions", "relative"]
    columns = {}
    if attacks is not None and not attacks.empty:
        for (atk, norm), rows in attacks.groupby(["attack", "norm"], sort=True):
            eps = rows["epsilon"].max()
            name = f"{atk} {_eps_label(eps) if norm == 'linf' else f'{eps:g}'}"
            columns[name] = rows[rows["epsilon"] == eps].groupby(keys)["accuracy"].mean()
            headers.append(name)

    def pct(v) -> str:
        return "-" if pd.isna(v) else f"{100 * v:.1f}%"

    lines = []
    for idx, r in table.iterrows():
        idx = idx if isinstance(idx, tuple) else (idx,)
        cells = [f"{v:g}" if isinstance(v, float) else str(v) for v in idx]
        cells += [str(int(r["n"])), pct(r["clean_accuracy"]), pct(r["mean_corruption_accuracy"])]
        rel = r["relative_corruption_accuracy"]
        cells.append("-" if pd.isna(rel) else f"{rel:.2f}")
        cells += [pct(col.get(idx if len(idx) > 1 else idx[0])) for col in columns.values()]
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(headers)]
    n_img = sorted({int(v) for v in summary.get("n_images", pd.Series(dtype=float)).dropna()})
    images = f", {'/'.join(map(str, n_img))} test images" if n_img else ""
    out = [
        f"robustness ({len(summary)} runs{images}; mean over the runs of each group; "
        "relative = corruptions / clean; attacks at their largest epsilon):",
        "  ".join(h.rjust(w) for h, w in zip(headers, widths)),
    ]
    out += ["  ".join(c.rjust(w) for c, w in zip(cells, widths)) for cells in lines]
    if ((table["n"] > 1) & (table["n"] < FEW_RUNS)).any():
        out.append(FEW_RUNS_NOTE)
    return "\n".join(out)


def write_summary(runs: pd.DataFrame, out_dir, **kwargs) -> dict[str, Path]:
    """Write ``summary.csv`` (full table) and ``summary.txt`` (formatted) to ``out_dir``.

    Parameters
    ----------
    runs : pandas.DataFrame
        The sweep's runs frame.
    out_dir : str or path-like
        Directory; created if missing.
    **kwargs
        Passed to :func:`summary_table`.

    Returns
    -------
    dict
        ``{"csv": Path, "txt": Path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = summary_table(runs, **kwargs)
    paths = {"csv": out / "summary.csv", "txt": out / "summary.txt"}
    table.to_csv(paths["csv"], index=False)
    paths["txt"].write_text(format_summary(table) + "\n", encoding="utf-8")
    return paths
