"""Every statistic of the paper-1 part of a report, computed once per report.

:func:`compute_statistics` runs the tests (t-tests against alpha = 0, promote-vs-penalise
rank-sum tests, the CCA summary) and the bootstrap summaries the figures draw (per-alpha
means and CIs of each run metric, per-layer means and CIs); :mod:`.tables` turns them
into tables and :mod:`.figures` passes the same frames to the plot functions, so a
p-value in a table and the star on a figure, or a CI in a table and the error bar on
a figure, come from one computation.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..analysis.stats import Family, is_baseline, rank_sum_promote_vs_penalise, ttests_against_baseline
from ..analysis.summary import group_summary, layer_table
from ..evaluate.cca import CCADistances, cca_summary
from .collect import Setting

__all__ = [
    "METRICS",
    "RUN_VALUES",
    "LAYER_VALUES",
    "SettingStats",
    "CCAStats",
    "ReportStats",
    "compute_statistics",
]

#: Metrics tested per setting: column -> (label, scale, digits, suffix).
METRICS: dict[str, tuple[str, float, int, str]] = {
    "test_accuracy": ("test accuracy", 100.0, 2, "%"),
    "mean_selectivity": ("mean class selectivity", 1.0, 4, ""),
}
#: Run metrics summarised per alpha for the figures (runs-frame columns).
RUN_VALUES = ("test_accuracy", "mean_selectivity", "mean_precision", "dead_fraction", "mean_selectivity_live")
#: Layer metrics summarised per (alpha, layer) for the tables and figures.
LAYER_VALUES = ("selectivity", "precision", "dead_fraction")


@dataclass
class SettingStats:
    """Statistics of one setting.

    ``ttests[m]`` is the output of :func:`~selectivity.analysis.stats.ttests_against_baseline`
    (``None`` when not computed, with the reason in ``ttest_notes[m]``); ``ranksums[m]``
    the output of :func:`~selectivity.analysis.stats.rank_sum_promote_vs_penalise`
    (empty when no ``|alpha|`` has both signs). ``by_alpha[v]`` is
    :func:`~selectivity.analysis.summary.group_summary` of the completed runs' finite
    values of ``v`` by alpha (``alpha, n, mean, ci_low, ci_high, std``), for each
    :data:`RUN_VALUES` column the runs have; ``layers[v]`` is
    :func:`~selectivity.analysis.summary.layer_table` of each :data:`LAYER_VALUES`
    column (absent without per-layer results).
    """

    ttests: dict[str, pd.DataFrame | None] = field(default_factory=dict)
    ttest_notes: dict[str, str | None] = field(default_factory=dict)
    ranksums: dict[str, pd.DataFrame] = field(default_factory=dict)
    by_alpha: dict[str, pd.DataFrame] = field(default_factory=dict)
    layers: dict[str, pd.DataFrame] = field(default_factory=dict)
    family: Family = "sign"  # Bonferroni family of the t-tests (analysis.stats.FAMILIES)
    equal_var: bool = True  # Student's t-test (True) or Welch's (False)

    @property
    def test_name(self) -> str:
        return "Student t-test" if self.equal_var else "Welch t-test"


@dataclass
class CCAStats:
    """The three frames of :func:`selectivity.evaluate.cca.cca_summary`."""

    by_layer: pd.DataFrame
    ratio: pd.DataFrame
    tests: pd.DataFrame


@dataclass
class ReportStats:
    """Every statistic of a report: per setting key, and the CCA summary (or None)."""

    settings: dict[str, SettingStats]
    cca: CCAStats | None = None


def _finite(df: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    ok = np.ones(len(df), dtype=bool)
    for c in cols:
        ok &= np.isfinite(pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float))
    return df[ok]


def _setting_stats(
    s: Setting, family: Family = "sign", equal_var: bool = True, n_resamples: int = 2000
) -> SettingStats:
    out = SettingStats(family=family, equal_var=equal_var)
    for metric in METRICS:
        d = s.done[["alpha", metric]].dropna()
        alphas = sorted(d["alpha"].unique())
        out.ttests[metric], out.ttest_notes[metric] = None, None
        if not is_baseline(np.asarray(alphas, dtype=float)).any():
            out.ttest_notes[metric] = "No completed α = 0 runs: there is no baseline to test against."
        elif len(alphas) < 2:
            out.ttest_notes[metric] = "Only one α has completed runs: nothing to compare with α = 0."
        else:
            try:
                with warnings.catch_warnings():
                    # near-identical values: scipy precision warning
                    warnings.simplefilter("ignore", RuntimeWarning)
                    out.ttests[metric] = ttests_against_baseline(
                        d, metric, "alpha", baseline=0.0, equal_var=equal_var, family=family
                    )
            except ValueError as e:
                out.ttest_notes[metric] = f"Not computed: {e}."
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out.ranksums[metric] = rank_sum_promote_vs_penalise(d, metric) if not d.empty else pd.DataFrame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for v in RUN_VALUES:
            if v in s.done.columns:
                d = _finite(s.done, ["alpha", v])
                out.by_alpha[v] = group_summary(d, ["alpha"], v, n_resamples=n_resamples)
        if not s.layers.empty:
            for v in LAYER_VALUES:
                if v in s.layers.columns:
                    out.layers[v] = layer_table(s.layers, v, n_resamples=n_resamples)
    return out


def compute_statistics(
    settings: Sequence[Setting],
    cca: CCADistances | None = None,
    *,
    family: Family = "sign",
    equal_var: bool = True,
    n_resamples: int = 2000,
) -> ReportStats:
    """Every statistic of the report's paper-1 sections, computed once.

    Parameters
    ----------
    settings : sequence of Setting
        The sweep's settings (model, activation, slope).
    cca : CCADistances, optional
        CCA distances, summarised with their paired tests.
    family : {"sign", "all"}, default "sign"
        Bonferroni family of the t-tests against alpha = 0: one per paper figure
        (penalising alphas, Fig. 2; promoting alphas, Fig. 4), or every alpha together.
    equal_var : bool, default True
        Student's t-test (the paper's "t-test"); False for Welch's.
    n_resamples : int, default 2000
        Bootstrap resamples of every CI (per-alpha and per-layer summaries).
    """
    cca_stats = None
    if cca is not None and cca.distances is not None and not cca.distances.empty:
        cca_stats = CCAStats(*cca_summary(cca.distances))
    return ReportStats(
        settings={s.key: _setting_stats(s, family, equal_var, n_resamples) for s in settings}, cca=cca_stats
    )
