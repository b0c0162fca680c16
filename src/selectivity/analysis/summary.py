"""Summary tables of a sweep: mean and bootstrapped 95% CI per (model, alpha).

Pure functions on the sweep's DataFrames (``runs``: one row per training run,
``layers``: one row per run and layer); no I/O. The text rendering and the files are
:mod:`selectivity.report.summary`.
Statistics come from :mod:`selectivity.analysis.stats` (percentile bootstrap of the
mean over seeds, the paper's A.1 protocol); nothing is re-implemented here.

Choices (documented, configurable through the arguments):

* Metrics are summarised over ``status == "completed"`` runs only; the other runs are
  counted per group (``n_failed``, ``n_diverged``, ``n_unfinished`` for pending or
  running) so that a sweep with holes says so instead of silently averaging fewer
  seeds. A frame without a ``status`` column is treated as all completed.
* ``n`` is the number of completed runs of the group. A completed run whose metric is
  NaN (e.g. a network whose units are all dead has no mean selectivity) is left out of
  that metric's mean and CI, with a ``RuntimeWarning`` naming the group.
* ``activation`` / ``negative_slope`` / ``robust`` are added to the grouping automatically when
  they vary within the frame (a leaky-ReLU sweep next to a ReLU one), so runs of
  different architectures are never pooled.
* Alpha values are normalised (:func:`selectivity.analysis.stats.normalise_alpha`,
  12 decimals) before grouping so that e.g. ``-0.1`` read back from JSON and ``-0.1``
  computed as ``-1 / 10`` form one group.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from .stats import normalise_alpha, summarize

__all__ = [
    "group_summary",
    "summary_table",
    "layer_table",
]

#: Metrics of :func:`summary_table` by default (runs-frame columns).
#: SI counts dead units with index 0 (the paper's main measure).
DEFAULT_METRICS = ("test_accuracy", "mean_selectivity")
#: Added to the default metrics when the runs frame has them: SI with dead units removed
#: (paper 1, Fig. A9b; absent from runs recorded before it existed).
OPTIONAL_METRICS = ("mean_selectivity_live",)
#: Columns added to the grouping when their values vary within the frame.
CONFIG_COLS = ("activation", "negative_slope", "robust")
_STAT_KEYS = ("mean", "ci_low", "ci_high", "std")


def _check_columns(df: pd.DataFrame, cols, what: str = "DataFrame") -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise KeyError(f"{what}: missing column(s) {missing} (columns: {list(df.columns)})")


def _with_normalised_alpha(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with :func:`~selectivity.analysis.stats.normalise_alpha` applied to ``alpha``.

    Frames from the results store are normalised already; frames built by hand may not be.
    """
    if "alpha" in df.columns and pd.api.types.is_numeric_dtype(df["alpha"]):
        df = df.assign(alpha=normalise_alpha(df["alpha"]))
    return df


def _varying_config_cols(df: pd.DataFrame, group_cols: Sequence[str]) -> list[str]:
    """Config columns (activation, negative_slope, robust) that vary and are not grouped on."""
    return [
        c for c in CONFIG_COLS if c in df.columns and c not in group_cols and df[c].nunique(dropna=False) > 1
    ]


def _sort_cols(group_cols: Sequence[str]) -> list[str]:
    """Sort order: model, then alpha, then the remaining group columns."""
    first = [c for c in ("model", "alpha") if c in group_cols]
    return first + [c for c in group_cols if c not in first]


def _key_dict(group_cols: Sequence[str], key) -> dict:
    if not isinstance(key, tuple):
        key = (key,)
    return dict(zip(group_cols, key))


def group_summary(
    df: pd.DataFrame,
    by: Sequence[str],
    value: str,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int | None = 0,
    method: Literal["percentile", "BCa", "basic"] = "percentile",
) -> pd.DataFrame:
    """Mean and bootstrap CI of ``value`` for every group of ``by``.

    Parameters
    ----------
    df : pandas.DataFrame
        Long format, one row per replicate.
    by : sequence of str
        Grouping columns (NaN keys form their own group).
    value : str
        Numeric column to summarise. NaN values are dropped silently (they are
        expected here, e.g. the selectivity of an all-dead layer); ``n`` counts the
        values used.
    confidence, n_resamples, seed, method
        Passed to :func:`selectivity.analysis.stats.summarize`.

    Returns
    -------
    pandas.DataFrame
        Columns ``*by, n, mean, ci_low, ci_high, std``, one row per group, sorted by
        ``by``. Groups with a single value have NaN CI and std; groups whose values
        are all NaN have ``n = 0`` and NaN statistics.

    Raises
    ------
    KeyError
        A named column is missing.
    """
    by = list(by)
    _check_columns(df, [*by, value])
    columns = [*by, "n", *_STAT_KEYS]
    if df.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for key, sub in df.groupby(by, sort=True, dropna=False):
        vals = pd.to_numeric(sub[value], errors="coerce").to_numpy(dtype=float)
        vals = vals[~np.isnan(vals)]
        s = summarize(vals, confidence=confidence, n_resamples=n_resamples, seed=seed, method=method)
        rows.append({**_key_dict(by, key), "n": s["n"], **{k: s[k] for k in _STAT_KEYS}})
    return pd.DataFrame(rows, columns=columns).reset_index(drop=True)


def summary_table(
    runs: pd.DataFrame,
    group_cols: Sequence[str] = ("model", "alpha"),
    n_resamples: int = 2000,
    seed: int | None = 0,
    metrics: Sequence[str] = DEFAULT_METRICS,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One row per (model, alpha): completed-run count, means and 95% CIs, failures.

    Parameters
    ----------
    runs : pandas.DataFrame
        The sweep's runs frame (one row per training run, with ``status``).
    group_cols : sequence of str, default ("model", "alpha")
        Grouping columns. ``activation`` and ``negative_slope`` are appended when
        they vary within ``runs``.
    n_resamples : int, default 2000
        Bootstrap resamples per CI.
    seed : int or None, default 0
        Bootstrap seed (tables are reproducible by default).
    metrics : sequence of str, default DEFAULT_METRICS
        (plus :data:`OPTIONAL_METRICS` present in ``runs``)
        Runs-frame columns to summarise (e.g. add ``"dead_fraction"``).
    confidence : float, default 0.95
        CI level.

    Returns
    -------
    pandas.DataFrame
        Columns: the group columns, ``n`` (completed runs), for each metric ``m``:
        ``m_mean``, ``m_ci_low``, ``m_ci_high``, ``m_std``; then ``n_failed``,
        ``n_diverged``, ``n_unfinished`` (pending or running). Sorted by model, then
        alpha, then the other group columns. Groups with no completed run appear
        with ``n = 0`` and NaN metrics. ``table.attrs`` records ``confidence`` and
        ``metrics`` for :func:`selectivity.report.summary.format_summary`.

    Raises
    ------
    KeyError
        A group or metric column is missing.
    """
    group_cols = list(group_cols)
    group_cols += _varying_config_cols(runs, group_cols)
    if tuple(metrics) == DEFAULT_METRICS:
        metrics = [*metrics, *(m for m in OPTIONAL_METRICS if m in runs.columns)]
    metrics = list(metrics)
    _check_columns(runs, [*group_cols, *metrics], "runs")
    columns = [
        *group_cols,
        "n",
        *[f"{m}_{k}" for m in metrics for k in _STAT_KEYS],
        "n_failed",
        "n_diverged",
        "n_unfinished",
    ]
    # Fresh index: a concatenation of frames may repeat labels, which breaks masking.
    runs = _with_normalised_alpha(runs).reset_index(drop=True)
    status = runs["status"] if "status" in runs.columns else pd.Series("completed", index=runs.index)
    rows = []
    if not runs.empty:
        for key, sub in runs.groupby(group_cols, sort=False, dropna=False):
            st = status.loc[sub.index]
            done = sub[st == "completed"]
            row = {**_key_dict(group_cols, key), "n": int(len(done))}
            for m in metrics:
                vals = pd.to_numeric(done[m], errors="coerce").to_numpy(dtype=float)
                nan = np.isnan(vals)
                if nan.any():
                    # Completed runs should have metrics: say which group lost values.
                    warnings.warn(
                        f"{m}: {int(nan.sum())} completed run(s) with NaN in group "
                        f"{_key_dict(group_cols, key)}; left out of the mean and CI",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                s = summarize(vals[~nan], confidence=confidence, n_resamples=n_resamples, seed=seed)
                row.update({f"{m}_{k}": s[k] for k in _STAT_KEYS})
            row["n_failed"] = int((st == "failed").sum())
            row["n_diverged"] = int((st == "diverged").sum())
            row["n_unfinished"] = int(st.isin(["pending", "running"]).sum())
            rows.append(row)
    table = pd.DataFrame(rows, columns=columns)
    if not table.empty:
        table = table.sort_values(_sort_cols(group_cols), kind="mergesort", na_position="last")
    table = table.reset_index(drop=True)
    table.attrs.update({"confidence": confidence, "metrics": metrics, "group_cols": group_cols})
    return table


def layer_table(
    layers: pd.DataFrame,
    value: str = "selectivity",
    n_resamples: int = 2000,
    seed: int | None = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per-layer mean and CI over seeds of a layer metric, per (model, alpha, layer).

    Parameters
    ----------
    layers : pandas.DataFrame
        The sweep's layers frame (one row per run and layer).
    value : str, default "selectivity"
        Layer column to summarise: ``"selectivity"``, ``"precision"`` or
        ``"dead_fraction"`` (any numeric column works). NaN values (e.g. the
        selectivity of a layer whose units are all dead) are dropped; ``n`` counts
        the seeds used.
    n_resamples, seed, confidence
        Bootstrap settings, see :func:`summary_table`.

    Returns
    -------
    pandas.DataFrame
        Columns ``model, alpha, layer_index, layer`` (plus ``activation`` /
        ``negative_slope`` when they vary), ``n``, ``{value}_mean``,
        ``{value}_ci_low``, ``{value}_ci_high``, ``{value}_std``; sorted by model,
        alpha, then layer index.
    """
    by = [c for c in ("model", "alpha", "layer_index", "layer") if c in layers.columns]
    _check_columns(layers, ["alpha", "layer_index", value], "layers")
    extra = _varying_config_cols(layers, by)
    by = by[:2] + extra + by[2:] if "model" in by else extra + by
    g = group_summary(_with_normalised_alpha(layers), by, value, confidence, n_resamples, seed)
    g = g.rename(columns={k: f"{value}_{k}" for k in _STAT_KEYS})
    # Config before alpha: each (config, alpha) block is then one line of a layer plot.
    sort = [c for c in ("model", *extra, "alpha", "layer_index") if c in g.columns]
    if not g.empty:
        g = g.sort_values(sort, kind="mergesort").reset_index(drop=True)
    g.attrs.update({"value": value, "confidence": confidence})
    return g
