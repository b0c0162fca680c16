"""The report's "Robustness" section (paper 2): tables, statistics and figures.

Statistics are computed here and passed to the plot functions of
:mod:`selectivity.plots_robustness`, which only draw. The section is an HTML fragment
(escaped text, PNGs embedded as data URIs) that :func:`selectivity.report.build_report`
puts where the template has its ``<!--robustness-->`` marker.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from ..analysis.stats import ttests_against_baseline
from ..sweep import open_store

__all__ = ["MARKER", "spearman_with_ci", "robustness_statistics", "robustness_section"]

#: Where the section goes in the rendered page.
MARKER = "<!--robustness-->"
_METRICS = ("clean_accuracy", "mean_corruption_accuracy", "relative_corruption_accuracy")


def spearman_with_ci(
    x, y, n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> dict[str, float]:
    """Spearman correlation of paired samples with a percentile bootstrap CI over pairs.

    Returns
    -------
    dict
        ``rho``, ``p``, ``ci_low``, ``ci_high``, ``n`` (NaN where fewer than 3 finite pairs).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    out = {"rho": np.nan, "p": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n": float(len(x))}
    if len(x) < 3:
        return out
    r = spearmanr(x, y)
    out["rho"], out["p"] = float(r.statistic), float(r.pvalue)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_resamples, len(x)))  # (resamples, n) pair indices
    boot = np.array([spearmanr(x[i], y[i]).statistic for i in idx], dtype=float)
    boot = boot[np.isfinite(boot)]
    if len(boot):
        a = (1 - confidence) / 2
        out["ci_low"], out["ci_high"] = (float(v) for v in np.quantile(boot, [a, 1 - a]))
    return out


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
                {"model": model, "measure": m, **spearman_with_ci(g["mean_selectivity"], g[m], n_resamples)}
            )
    return (pd.concat(tests, ignore_index=True) if tests else pd.DataFrame(), pd.DataFrame(corr))


def _png(fig, path: Path, dpi: int) -> str:
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _table(df: pd.DataFrame, title: str, csv: str) -> str:
    body = df.to_html(index=False, float_format=lambda v: f"{v:.4g}", escape=True, border=0)
    return f'<h3>{html.escape(title)}</h3><div class="tbl">{body}</div><p class="caption"><span class="file">CSV: <a href="{html.escape(csv)}">{html.escape(csv)}</a></span></p>'


def robustness_section(
    sweep_dir: str | os.PathLike, out_dir: str | os.PathLike, dpi: int = 120, n_resamples: int = 2000
) -> str:
    """HTML of the Robustness section (empty string when the sweep has no robustness results).

    Writes ``tables/robustness-*.csv`` and ``figures/robustness-*.png`` under ``out_dir``.
    """
    with open_store(Path(sweep_dir), log=lambda _m: None) as store:
        summary = store.robustness_df("summary")
        corruptions = store.robustness_df("corruptions")
        attacks = store.robustness_df("attacks")
    if summary.empty:
        return ""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plots_robustness import (
        plot_accuracy_vs_severity,
        plot_attack_accuracy_vs_epsilon,
        plot_corruption_accuracy_vs_alpha,
        plot_robustness_vs_selectivity,
    )

    out = Path(out_dir)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    tests, corr = robustness_statistics(summary, attacks, n_resamples)
    parts = [
        '<section id="robustness"><h2>Robustness (paper 2)</h2>',
        '<p class="caption">Accuracy on corrupted images (mean over corruption x severity cells) and under '
        "white-box attacks, per run; t-tests against α = 0 (Bonferroni within the negative and the positive "
        "alphas); Spearman correlation with mean class selectivity across runs (95% bootstrap CI over runs). "
        f"Settings: {html.escape(str(summary['settings'].iloc[0]))}</p>",
    ]
    shown = summary.drop(columns=["settings"])
    for name, df in (("summary", shown), ("tests", tests), ("correlations", corr)):
        if df.empty:
            continue
        csv = f"tables/robustness-{name}.csv"
        df.to_csv(out / csv, index=False)
        parts.append(_table(df, f"Robustness {name}", csv))
    figs = []
    if not corruptions.empty:
        figs.append(
            ("severity", plot_accuracy_vs_severity(corruptions).figure, "Accuracy vs corruption severity")
        )
        figs.append(
            ("alpha", plot_corruption_accuracy_vs_alpha(summary).figure, "Mean corruption accuracy vs α")
        )
        c = corr[corr["measure"] == "mean_corruption_accuracy"]
        st = c.iloc[0].to_dict() if len(c) == 1 else None
        figs.append(
            (
                "vs-selectivity",
                plot_robustness_vs_selectivity(summary, "mean_corruption_accuracy", st).figure,
                "Mean corruption accuracy vs class selectivity",
            )
        )
    for atk in sorted(set(attacks["attack"])) if not attacks.empty else []:
        figs.append(
            (atk, plot_attack_accuracy_vs_epsilon(attacks, atk).figure, f"Accuracy under {atk.upper()} vs ε")
        )
    for key, fig, title in figs:
        path = out / "figures" / f"robustness-{key}.png"
        data = _png(fig, path, dpi)
        parts.append(
            f'<figure id="robustness-{key}"><img src="data:image/png;base64,{data}" alt="{html.escape(title)}">'
            f'<figcaption>{html.escape(title)}. <span class="file">figures/{path.name}</span></figcaption></figure>'
        )
    plt.close("all")
    parts.append("</section>")
    return "\n".join(parts)
