"""The report's "Mechanisms" section: figures and tables of the geometry results (issue 11).

Reads the sweep's ``geometry`` table (written by ``selectivity geometry``); with no
geometry results the section is left out. Statistics are computed here and passed to
the plot functions of :mod:`selectivity.plots.geometry`, which only draw.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..evaluate.geometry import geometry_frame
from ..plots.geometry import (
    plot_change_dimensionality,
    plot_dimensionality_by_layer,
    plot_dimensionality_vs_selectivity,
    plot_gradient_variability,
)
from .collect import FigureItem, TableItem

__all__ = ["spearman_ci", "early_layer_indices", "mechanism_items"]


def spearman_ci(
    x: np.ndarray, y: np.ndarray, n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> dict[str, float]:
    """Spearman's rho of paired values with a percentile bootstrap CI over pairs.

    Returns
    -------
    dict
        ``rho, p, low, high, n`` (NaN where fewer than 3 pairs or a constant variable).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": np.nan, "p": np.nan, "low": np.nan, "high": np.nan, "n": n}
    r = sps.spearmanr(x, y)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_resamples):
        i = rng.integers(0, n, n)
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
            boots.append(sps.spearmanr(x[i], y[i]).statistic)
    a = (1 - confidence) / 2
    low, high = np.quantile(boots, [a, 1 - a]) if boots else (np.nan, np.nan)
    return {"rho": float(r.statistic), "p": float(r.pvalue), "low": float(low), "high": float(high), "n": n}


def early_layer_indices(df: pd.DataFrame, fraction: float = 1 / 3) -> list[int]:
    """Positions of the first ``fraction`` of the measured layers (at least one)."""
    idx = sorted(int(i) for i in df.loc[df["layer_index"] >= 0, "layer_index"].unique())
    return idx[: max(1, int(np.ceil(len(idx) * fraction)))] if idx else []


def _save(fig, out_dir: Path, fid: str, dpi: int) -> Path:
    path = out_dir / "figures" / f"{fid}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def mechanism_items(
    sweep_dir: str | os.PathLike, out_dir: str | os.PathLike, n_resamples: int = 2000, dpi: int = 120
) -> tuple[list[TableItem], list[FigureItem]]:
    """Tables and figures of the Mechanisms section; ``([], [])`` without geometry results."""
    df = geometry_frame(sweep_dir)
    if df.empty:
        return [], []
    out_dir = Path(out_dir)
    layered = df[df["layer_index"] >= 0]
    early = early_layer_indices(df)
    figs: list[FigureItem] = []
    tables: list[TableItem] = []

    clean = layered[(layered["kind"] == "clean") & (layered["measure"] == "pca")]
    if not clean.empty:
        share = "95%"
        figs.append(
            FigureItem(
                "mech-clean-dim",
                "Mechanisms (a)",
                "Dimensionality of the clean representation per layer",
                f"PCA components for {share} of the variance of the layer's units, mean over runs "
                "per α (band ±1 SD).",
                _save(plot_dimensionality_by_layer(clean), out_dir, "mech-clean-dim", dpi),
            )
        )

    change = layered[layered["measure"] == "change_pca"].copy()
    if not change.empty:
        matched = change["perturbation"].str.startswith("pgd-l2-match-")
        adv = change[(change["kind"] == "adversarial") & (matched if matched.any() else True)]
        corr = change[change["kind"] == "corruption"]
        adv_label = "adversarial (L2 PGD at matched input distance)" if matched.any() else "adversarial"
        frame = pd.concat([corr.assign(panel="corruptions"), adv.assign(panel=adv_label)])
        frame = frame.groupby(["panel", "run_id", "alpha", "layer_index", "layer"], as_index=False)[
            "value"
        ].mean()
        figs.append(
            FigureItem(
                "mech-change-dim",
                "Mechanisms (a)",
                "Dimensionality of the change caused by a perturbation",
                "PCA dimensionality (95%) of a(x') - a(x) per layer, averaged over the corruptions (left) and "
                "over the L2 attacks matched to each corruption's median input L2 distance (right).",
                _save(plot_change_dimensionality(frame), out_dir, "mech-change-dim", dpi),
                wide=True,
            )
        )

    # Per run: early-layer means vs mean selectivity, Spearman with bootstrap CI.
    runs = df.drop_duplicates("run_id").set_index("run_id")[["alpha", "mean_selectivity"]]
    rows = []
    specs = [
        ("clean PCA dimensionality", "clean", "pca"),
        ("clean participation ratio", "clean", "participation_ratio"),
        ("change PCA dimensionality, corruptions", "corruption", "change_pca"),
        ("change PCA dimensionality, adversarial", "adversarial", "change_pca"),
        ("gradient variability across samples", "clean", "grad_var_samples"),
    ]
    for label, kind, measure in specs:
        sub = layered[(layered["kind"] == kind) & (layered["measure"] == measure)]
        if measure != "grad_var_samples":
            sub = sub[sub["layer_index"].isin(early)]
        per_run = sub.groupby("run_id")["value"].mean()
        if per_run.empty:
            continue
        j = runs.join(per_run.rename("value"), how="inner")
        st = spearman_ci(j["mean_selectivity"], j["value"], n_resamples)
        rows.append({"measure": label, **st})
        if measure == "pca" and kind == "clean":
            figs.append(
                FigureItem(
                    "mech-dim-vs-selectivity",
                    "Mechanisms (a)",
                    "Early-layer dimensionality against class selectivity",
                    f"One point per run: mean clean PCA dimensionality of the first {len(early)} measured layers "
                    "against the run's mean class selectivity; Spearman ρ with a 95% bootstrap CI over runs.",
                    _save(
                        plot_dimensionality_vs_selectivity(
                            j.rename(columns={"mean_selectivity": "selectivity", "value": "dimensionality"}),
                            st["rho"],
                            (st["low"], st["high"]),
                            st["p"],
                        ),
                        out_dir,
                        "mech-dim-vs-selectivity",
                        dpi,
                    ),
                )
            )
        if measure == "grad_var_samples":
            figs.append(
                FigureItem(
                    "mech-grad-var",
                    "Mechanisms (b)",
                    "Input-unit gradient variability by α",
                    "1 - mean pairwise cosine of the input gradients of a unit across images, averaged over "
                    "units and the measured layers; one point per run.",
                    _save(
                        plot_gradient_variability(j.reset_index()[["alpha", "value"]]),
                        out_dir,
                        "mech-grad-var",
                        dpi,
                    ),
                )
            )
    if rows:
        tables.append(
            TableItem(
                "mechanisms-spearman",
                "Spearman correlation with mean class selectivity (per run)",
                pd.DataFrame(rows, columns=["measure", "rho", "p", "low", "high", "n"]),
                caption=f"Early layers = the first {len(early)} measured layers (the gradient measure: all layers "
                "it was computed on). low/high: 95% percentile bootstrap CI over runs.",
            )
        )
    return tables, figs
