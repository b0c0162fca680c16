"""Statistics of a table of PWCCA distances (paper 1, section 4.2): pure, frames in and out.

The distances come from :func:`selectivity.evaluate.cca.sweep_cca` (one row per pair of
networks and layer); :func:`cca_summary` gives the per-layer means, the per-replicate
between/within ratios and the paired tests the report shows, :func:`cca_plot_frame` the
frame of the distance-by-layer figure.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import pandas as pd

from .stats import bonferroni, normalise_alpha, paired_test

__all__ = ["GROUP_COLS", "cca_summary", "cca_plot_frame"]

#: Columns identifying one network configuration; pairs never cross them.
GROUP_COLS = ("model", "activation", "negative_slope")


def _group_keys(df: pd.DataFrame) -> list[str]:
    return [c for c in GROUP_COLS if c in df.columns]


def cca_summary(
    df: pd.DataFrame,
    baseline: float = 0.0,
    method: Literal["ttest", "wilcoxon"] = "ttest",
    significance: float = 0.05,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per-layer means, per-replicate distance ratios and paired tests of a CCA table.

    Parameters
    ----------
    df : pandas.DataFrame
        Output of :func:`selectivity.evaluate.cca.sweep_cca`.
    baseline : float, default 0.0
        Alpha of the unregularised networks (no ratio or test for it).
    method : {"ttest", "wilcoxon"}, default "ttest"
        Paired test (:func:`selectivity.analysis.stats.paired_test`; the paper's is the
        paired t-test).
    significance : float, default 0.05
        Threshold on the Bonferroni-corrected p-value.

    Returns
    -------
    by_layer : pandas.DataFrame
        Per (setting, alpha, layer): ``distance_within`` / ``distance_between`` (means
        over pairs), ``n_within``, ``n_between``.
    ratio : pandas.DataFrame
        Per (setting, alpha != baseline, seed of alpha): mean over layers of
        ``mean(between) / mean(within)`` (the seed's pairs only), plus the two mean
        distances and ``n_layers`` (the input of :func:`selectivity.plots.selectivity.plot_cca_ratio`).
    tests : pandas.DataFrame
        Per (setting, alpha != baseline): paired test of the per-layer mean between vs
        within distances (paired by layer), ``n`` layers, ``mean_between``,
        ``mean_within``, ``ratio``, ``statistic``, ``p``, ``p_bonferroni`` (over the
        alphas of the setting), ``significant``, ``note`` (why a test is missing).
    """
    keys = _group_keys(df)
    layer_keys = [*keys, "alpha", "layer_index", "layer"]
    by_cols = [*layer_keys, "distance_within", "distance_between", "n_within", "n_between"]
    ratio_cols = [*keys, "alpha", "seed", "ratio", "distance_between", "distance_within", "n_layers"]
    test_cols = [
        *keys,
        "alpha",
        "n",
        "mean_between",
        "mean_within",
        "ratio",
        "statistic",
        "p",
        "p_bonferroni",
        "significant",
        "method",
        "note",
    ]
    if df is None or df.empty:
        return (
            pd.DataFrame(columns=by_cols),
            pd.DataFrame(columns=ratio_cols),
            pd.DataFrame(columns=test_cols),
        )
    d = df.assign(alpha=normalise_alpha(df["alpha"]))
    base = normalise_alpha(baseline)

    def mean_of(kind: str, name: str) -> pd.DataFrame:
        s = d[d["kind"] == kind].groupby(layer_keys, dropna=False)["distance"]
        return s.agg(["mean", "count"]).rename(columns={"mean": f"distance_{name}", "count": f"n_{name}"})

    by_layer = mean_of("within", "within").join(mean_of("between", "between"), how="outer").reset_index()
    for c in ("n_within", "n_between"):
        by_layer[c] = by_layer[c].fillna(0).astype(int)
    by_layer = (
        by_layer[by_cols]
        .sort_values([*keys, "alpha", "layer_index"], kind="mergesort")
        .reset_index(drop=True)
    )

    # Per replicate s of alpha: its own between pairs vs the within pairs it belongs to.
    ratio_rows = []
    nonbase = d[d["alpha"] != base]
    for key, sub in nonbase.groupby([*keys, "alpha"], sort=True, dropna=False):
        w, b = sub[sub["kind"] == "within"], sub[sub["kind"] == "between"]
        for s in sorted(set(b["seed_a"])):
            bm = b[b["seed_a"] == s].groupby("layer_index")["distance"].mean()
            wm = w[(w["seed_a"] == s) | (w["seed_b"] == s)].groupby("layer_index")["distance"].mean()
            both = pd.concat([bm.rename("b"), wm.rename("w")], axis=1).dropna()
            both = both[both["w"] > 0]  # a zero within distance has no finite ratio
            r = (both["b"] / both["w"]).mean() if len(both) else np.nan
            ratio_rows.append(
                {
                    **dict(zip([*keys, "alpha"], key)),
                    "seed": int(s),
                    "ratio": float(r),
                    "distance_between": float(bm.mean()) if len(bm) else np.nan,
                    "distance_within": float(wm.mean()) if len(wm) else np.nan,
                    "n_layers": int(len(both)),
                }
            )
    ratio = pd.DataFrame(ratio_rows, columns=ratio_cols)

    test_frames = []
    for key, sub in by_layer[by_layer["alpha"] != base].groupby(keys, sort=True, dropna=False):
        rows = []
        for alpha, s in sub.groupby("alpha", sort=True):
            ok = s.dropna(subset=["distance_within", "distance_between"])
            row = {
                **dict(zip(keys, key if isinstance(key, tuple) else (key,))),
                "alpha": alpha,
                "n": len(ok),
                "mean_between": ok["distance_between"].mean() if len(ok) else np.nan,
                "mean_within": ok["distance_within"].mean() if len(ok) else np.nan,
                "statistic": np.nan,
                "p": np.nan,
                "method": method,
                "note": "",
            }
            row["ratio"] = row["mean_between"] / row["mean_within"] if row["mean_within"] else np.nan
            if len(ok) < 2:
                row["note"] = (
                    "needs within and between distances in >= 2 layers "
                    f"(within pairs {int(s['n_within'].max())}, between pairs {int(s['n_between'].max())})"
                )
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # constant differences: NaN p
                    t = paired_test(ok["distance_between"], ok["distance_within"], method=method)
                row.update(statistic=t["statistic"], p=t["p"])
            rows.append(row)
        t = pd.DataFrame(rows)
        t["p_bonferroni"] = bonferroni(t["p"].to_numpy(float))
        t["significant"] = (t["p_bonferroni"] < significance).astype(bool)
        test_frames.append(t)
    tests = pd.concat(test_frames, ignore_index=True) if test_frames else pd.DataFrame(columns=test_cols)
    return by_layer, ratio, tests[test_cols].reset_index(drop=True)


def cca_plot_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Pair-level frame for :func:`selectivity.plots.selectivity.plot_cca_distance_by_layer`.

    One row per (pair, layer) with ``distance_within`` set for within pairs and
    ``distance_between`` for between pairs (the other NaN), so the plot's 95% CI bands
    are over pairs rather than over a single per-layer mean.
    """
    keys = _group_keys(df)
    d = df[[*keys, "alpha", "layer_index", "layer", "kind", "distance"]].copy()
    d["distance_within"] = d["distance"].where(d["kind"] == "within")
    d["distance_between"] = d["distance"].where(d["kind"] == "between")
    return d.drop(columns=["kind", "distance"]).reset_index(drop=True)
