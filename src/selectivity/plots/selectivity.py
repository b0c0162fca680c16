"""Figures of Leavitt & Morcos, "Selectivity considered harmful", from a sweep's frames.

Every ``plot_*`` function only draws: it takes a DataFrame (the sweep's ``runs`` or
``layers`` frame, or a CCA frame), an optional matplotlib ``Axes``, draws one paper
figure panel on it and returns the ``Axes``. No file I/O and no ``pyplot`` (so
importing this module never selects a GUI backend and nothing global is touched);
when ``ax`` is None a fresh :class:`matplotlib.figure.Figure` is created. Colours,
the alpha axis and saving are :mod:`selectivity.plots.style`; the sets of figures a
sweep summary and the report draw are :mod:`selectivity.report.figures`.

Significance marks come from tests computed by the caller and passed in (``tests=``,
as scikit-learn's ``Display`` objects take precomputed values); without them the plot
runs the test itself, for interactive use.

Conventions (the paper's):

* Colour by alpha: alpha < 0 (penalise selectivity) in blues, alpha > 0 (promote) in
  reds, alpha = 0 grey; darker for larger ``|alpha|`` (log-like intensity, since alphas
  span orders of magnitude). See :func:`selectivity.plots.style.alpha_color`.
* Alpha axes are symmetric-log (``linthresh=0.1``) with plain-number tick labels, so
  -30 ... +5 and +-0.1 are all readable on one axis.
* Error bars are bootstrapped 95% CIs of the mean over seeds (percentile method,
  :func:`selectivity.analysis.stats.summarize`); a group with one seed has no bar.
* Runs-frame plots use ``status == "completed"`` rows only, and drop NaN values.
* A plot of one model refuses frames that mix models or activation settings
  (``ValueError``): pass ``model=`` or filter first, so runs are never pooled silently.
* Significance marks (accuracy plots): ``*`` p < 0.05, ``**`` p < 1e-3, ``***``
  p < 1e-6, Bonferroni-corrected; Welch t-test against alpha = 0 (Figs 2, 4) or
  Wilcoxon rank-sum promote vs penalise at equal ``|alpha|`` (Fig 5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib import ticker as mticker
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from ..analysis.stats import (
    is_baseline,
    normalise_alpha,
    rank_sum_promote_vs_penalise,
    ttests_against_baseline,
)
from ..analysis.summary import group_summary, layer_table
from .style import (
    LINTHRESH,
    MODEL_COLORS,
    PENALISE_COLOR,
    PROMOTE_COLOR,
    ZERO_COLOR,
    alpha_axis,
    alpha_palette,
    completed_runs,
    describe,
    fmt_num,
    lighten,
    new_ax,
)

__all__ = [
    "plot_selectivity_vs_alpha",
    "plot_accuracy_vs_alpha",
    "plot_promote_vs_penalise",
    "plot_layer_selectivity",
    "plot_accuracy_vs_selectivity",
    "plot_model_comparison",
    "plot_cca_distance_by_layer",
    "plot_cca_ratio",
    "plot_leaky_relu",
]

_LEGEND_FONT = 9
_NO_RUNS = "no completed runs"

# y/x labels per column; accuracies are drawn in percent.
_LABELS = {
    "mean_selectivity": "Mean class selectivity index",
    "selectivity": "Mean class selectivity index",
    "mean_selectivity_live": "Mean class selectivity index (dead units removed)",
    "selectivity_live": "Mean class selectivity index (dead units removed)",
    "test_accuracy": "Test accuracy (%)",
    "best_val_accuracy": "Validation accuracy (%)",
    "mean_precision": "Mean precision (share of top class)",
    "precision": "Mean precision (share of top class)",
    "dead_fraction": "Proportion of dead units",
}
_PERCENT = {"test_accuracy", "best_val_accuracy"}
_ALPHA_LABEL = "Regularisation scale α (symlog)"


def _label(value: str) -> str:
    return _LABELS.get(value, value.replace("_", " "))


def _scale(value: str) -> float:
    return 100.0 if value in _PERCENT else 1.0


def _finite(df: pd.DataFrame, cols) -> pd.DataFrame:
    """Rows whose ``cols`` are all finite numbers (NaN metrics, e.g. diverged, dropped)."""
    if df.empty:
        return df
    ok = np.ones(len(df), dtype=bool)
    for c in cols:
        ok &= np.isfinite(pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float))
    return df[ok]


def _require(df: pd.DataFrame, cols, what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise KeyError(f"{what}: missing column(s) {missing} (columns: {list(df.columns)})")


def _one_config(
    df: pd.DataFrame, model: str | None, what: str, allow_models: bool = False, allow_slopes: bool = False
) -> pd.DataFrame:
    """Filter by ``model``; refuse frames that would pool different models or activations."""
    if model is not None:
        _require(df, ["model"], what)
        df = df[df["model"] == model]
    if not allow_models and "model" in df.columns and df["model"].nunique() > 1:
        raise ValueError(
            f"{what}: data holds several models {sorted(df['model'].unique())}; "
            "pass model= or filter the frame (or use plot_model_comparison)"
        )
    if not allow_slopes:
        for c in ("activation", "negative_slope"):
            if c in df.columns and df[c].nunique(dropna=False) > 1:
                raise ValueError(
                    f"{what}: {c} varies within the data ({sorted(map(str, df[c].unique()))}); "
                    "filter the frame (or use plot_leaky_relu)"
                )
    return df


def _title(ax: Axes, df: pd.DataFrame, text: str, title: str | None) -> None:
    if title is None:
        prefix = describe(df)
        title = f"{prefix}: {text}" if prefix else text
    ax.set_title(title)


def _empty(ax: Axes, xlabel: str, ylabel: str, title: str, msg: str = _NO_RUNS) -> Axes:
    """Labelled panel with a message instead of data."""
    ax.text(0.5, 0.5, msg, transform=ax.transAxes, ha="center", va="center", color="0.4", fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return ax


def _jitter(ax: Axes, x, frac: float, rng: np.random.Generator) -> np.ndarray:
    """Spread points around their x in the axis' *transformed* space (symlog, log).

    The spread is ``frac`` of the smallest gap between distinct x values, so seeds do
    not overlap neighbouring alphas whatever the scale.
    """
    x = np.asarray(x, dtype=float)
    if frac <= 0 or x.size == 0:
        return x
    tr = ax.xaxis.get_transform()
    xt = tr.transform(x)
    u = np.unique(xt)
    gap = (
        float(np.diff(u).min())
        if u.size > 1
        else float(np.abs(tr.transform(np.array([LINTHRESH]))[0])) or 1.0
    )
    return tr.inverted().transform(xt + rng.uniform(-frac * gap, frac * gap, size=x.size))


def _yerr(stats: pd.DataFrame) -> np.ndarray:
    """Asymmetric error bar lengths from CI columns; no bar (0) where there is no CI."""
    low = np.nan_to_num(stats["mean"].to_numpy(float) - stats["ci_low"].to_numpy(float), nan=0.0)
    high = np.nan_to_num(stats["ci_high"].to_numpy(float) - stats["mean"].to_numpy(float), nan=0.0)
    return np.vstack([np.maximum(low, 0), np.maximum(high, 0)])


def _stats(
    df: pd.DataFrame,
    by,
    value: str,
    n_resamples: int,
    scale: float = 1.0,
    summary: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Mean and CI of ``value`` per group of ``by``, times ``scale``.

    ``summary``: the same statistics computed by the caller (:func:`group_summary` of
    ``df``: ``*by, n, mean, ci_low, ci_high, std``), used instead of bootstrapping
    again; its empty groups (``n = 0``) are left out.
    """
    if summary is not None:
        _require(summary, [*by, "n", "mean", "ci_low", "ci_high"], "precomputed summary")
        s = summary[summary["n"] > 0].reset_index(drop=True).copy()
    else:
        s = group_summary(df, list(by), value, n_resamples=n_resamples)
    for c in ("mean", "ci_low", "ci_high", "std"):
        if c in s.columns:
            s[c] = s[c].astype(float) * scale
    return s


def _stars(p: float) -> str:
    if not np.isfinite(p):
        return ""
    return "***" if p < 1e-6 else "**" if p < 1e-3 else "*" if p < 0.05 else ""


def _headroom(ax: Axes, frac: float = 0.07) -> None:
    """Extend the y range upwards so significance marks stay inside the axes."""
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi + frac * (hi - lo))


def _annotate_stars(ax: Axes, text: str, xy: tuple[float, float], dy: float) -> None:
    """Significance stars centred ``dy`` points above the data point ``xy``."""
    ax.annotate(
        text,
        xy,
        xytext=(0, dy),
        textcoords="offset points",
        ha="center",
        va="bottom",
        fontsize=9,
        color="0.1",
    )


def _keep_alphas(df: pd.DataFrame, alphas: Sequence[float] | None) -> pd.DataFrame:
    """Rows of ``df`` whose alpha is one of ``alphas`` (all rows when None)."""
    if alphas is None:
        return df
    keep = np.zeros(len(df), dtype=bool)
    for a in alphas:
        keep |= (normalise_alpha(df["alpha"]) == normalise_alpha(float(a))).to_numpy()
    return df[keep]


def _seed_points(ax: Axes, alphas, y, palette: dict, jitter: float, seed: int) -> None:
    """One point per run (gid ``"seeds"``), jittered on a symlog alpha axis, coloured by alpha."""
    alpha_axis(ax, alphas)
    x = _jitter(ax, alphas, jitter, np.random.default_rng(seed))
    ax.scatter(
        x, y, c=[palette[float(a)] for a in alphas], s=14, alpha=0.55, linewidths=0, zorder=3, gid="seeds"
    )


def _mean_ci_points(
    ax: Axes, stats: pd.DataFrame, palette: dict, xcol: str = "alpha", gid_prefix: str = "mean"
) -> None:
    """One marker with CI bar per alpha, coloured by alpha, over a thin grey trend line."""
    if len(stats) > 1:
        ax.plot(stats[xcol], stats["mean"], color="0.55", lw=1.0, zorder=2)
    err = _yerr(stats)
    for i, (_, r) in enumerate(stats.iterrows()):
        c = palette.get(float(r["alpha"]), ZERO_COLOR)
        cont = ax.errorbar(
            [r[xcol]],
            [r["mean"]],
            yerr=err[:, i : i + 1],
            fmt="o",
            ms=6,
            color=c,
            mec="0.15",
            mew=0.6,
            ecolor=c,
            elinewidth=1.6,
            capsize=3,
            zorder=4,
        )
        cont.lines[0].set_gid(f"{gid_prefix}:{float(r['alpha']):g}")


def _seed_legend(
    ax: Axes, n_seeds: int | None = None, loc="best", baseline: bool = False, what: str = "single runs"
) -> None:
    handles = [
        Line2D(
            [],
            [],
            ls="",
            marker="o",
            ms=4,
            color="0.5",
            alpha=0.5,
            label=what if n_seeds is None else f"{what} ({n_seeds})",
        ),
        Line2D([], [], ls="", marker="o", ms=6, color="0.5", mec="0.15", label="mean ± 95% CI"),
    ]
    if baseline:
        handles.append(Line2D([], [], ls="--", lw=1, color="0.5", label="α = 0 mean"))
    ax.legend(handles=handles, fontsize=_LEGEND_FONT, loc=loc, framealpha=0.85)


def _alpha_legend(ax: Axes, n_entries: int, title: str = "α", outside_above: int = 6) -> None:
    """Legend by alpha; outside the axes (right) when it would hide the data."""
    if n_entries > outside_above:
        ax.legend(
            title=title,
            fontsize=_LEGEND_FONT,
            title_fontsize=_LEGEND_FONT,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            ncol=1 if n_entries <= 14 else 2,
            borderaxespad=0.0,
            framealpha=0.85,
        )
    else:
        ax.legend(title=title, fontsize=_LEGEND_FONT, title_fontsize=_LEGEND_FONT, framealpha=0.85)


def _layer_ticks(ax: Axes, df: pd.DataFrame) -> None:
    """Layer indices on x, labelled with (the most common) layer name, rotated."""
    idx = np.sort(df["layer_index"].dropna().unique()).astype(int)
    if "layer" in df.columns:
        names = df.groupby("layer_index")["layer"].agg(lambda s: s.mode().iloc[0] if len(s.mode()) else "")
        labels = [str(names.get(i, i)) for i in idx]
    else:
        labels = [str(i) for i in idx]
    ax.set_xticks(idx)
    ax.set_xticklabels(labels, rotation=60, ha="right", rotation_mode="anchor", fontsize=9)


# ----------------------------------------------------------------------------- figures
def plot_selectivity_vs_alpha(
    runs: pd.DataFrame,
    ax: Axes | None = None,
    *,
    model: str | None = None,
    value: str = "mean_selectivity",
    n_resamples: int = 2000,
    jitter: float = 0.15,
    seed: int = 0,
    title: str | None = None,
    summary: pd.DataFrame | None = None,
) -> Axes:
    """Fig. 1b / A1b: network mean class selectivity vs alpha.

    Parameters
    ----------
    runs : pandas.DataFrame
        Runs frame (``alpha``, ``value``, ``status``); one model and activation.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on (default: a new figure).
    model : str, optional
        Keep only this model's runs.
    value : str, default "mean_selectivity"
        Column on y (e.g. ``"mean_precision"`` for Fig. A7b).
    n_resamples : int, default 2000
        Bootstrap resamples for the CIs.
    jitter : float, default 0.15
        Horizontal spread of the single runs, as a fraction of the gap between
        neighbouring alphas (on the symlog axis).
    seed : int, default 0
        Seed of the jitter.
    title : str, optional
        Panel title (default: model and figure name).
    summary : pandas.DataFrame, optional
        Per-alpha mean and CI computed by the caller
        (:func:`~selectivity.analysis.summary.group_summary` of these runs' finite
        ``value`` by ``alpha``); bootstrapped here when None.

    Returns
    -------
    matplotlib.axes.Axes
        Single runs are the scatter with gid ``"seeds"``; per-alpha means are lines
        with gid ``"mean:<alpha>"``.
    """
    ax = new_ax(ax)
    what = f"{_label(value)} vs α"
    ylabel = _label(value)
    d = _one_config(completed_runs(runs), model, "plot_selectivity_vs_alpha")
    _require(d, ["alpha", value], "plot_selectivity_vs_alpha")
    d = _finite(d, ["alpha", value])
    if d.empty:
        return _empty(ax, _ALPHA_LABEL, ylabel, title or what)
    palette = alpha_palette(d["alpha"])
    _seed_points(ax, d["alpha"], d[value].to_numpy(float), palette, jitter, seed)
    _mean_ci_points(ax, _stats(d, ["alpha"], value, n_resamples, summary=summary), palette)
    ax.set_xlabel(_ALPHA_LABEL)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    _seed_legend(ax, len(d))
    _title(ax, d, what, title)
    return ax


def plot_accuracy_vs_alpha(
    runs: pd.DataFrame,
    ax: Axes | None = None,
    kind: str = "points",
    *,
    model: str | None = None,
    value: str = "test_accuracy",
    n_resamples: int = 2000,
    significance: bool = True,
    tests: pd.DataFrame | None = None,
    jitter: float = 0.15,
    seed: int = 0,
    title: str | None = None,
    summary: pd.DataFrame | None = None,
) -> Axes:
    """Fig. 2a / 4a (points) and 2b / 4b (violins): test accuracy (%) vs alpha.

    Parameters
    ----------
    runs : pandas.DataFrame
        Runs frame; one model and activation.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on.
    kind : {"points", "violin"}, default "points"
        ``"points"``: one jittered point per seed plus mean and 95% CI on a symlog
        alpha axis. ``"violin"``: one violin per alpha on a categorical axis (violin
        widths would be distorted on a log axis), with an inner box (quartiles,
        whiskers to 1.5 IQR, white median dot) as in the paper; an alpha with a
        single run (or identical values) is drawn as a point.
    model : str, optional
        Keep only this model's runs.
    value : str, default "test_accuracy"
        Accuracy column (drawn in percent).
    n_resamples : int, default 2000
        Bootstrap resamples.
    significance : bool, default True
        Mark alphas whose accuracy differs from alpha = 0 (Welch t-test,
        Bonferroni-corrected; needs >= 2 runs at alpha = 0).
    tests : pandas.DataFrame, optional
        Precomputed tests (:func:`~selectivity.analysis.stats.ttests_against_baseline`
        of ``value`` on these runs: columns ``group`` or ``alpha``, ``p_bonferroni``);
        computed here when None.
    jitter, seed : float, int
        Horizontal spread of single runs (``"points"``), see
        :func:`plot_selectivity_vs_alpha`.
    title : str, optional
        Panel title.
    summary : pandas.DataFrame, optional
        Per-alpha mean and CI of ``value`` (unscaled) computed by the caller, see
        :func:`plot_selectivity_vs_alpha`.

    Returns
    -------
    matplotlib.axes.Axes
        ``"points"``: scatter gid ``"seeds"``, mean lines ``"mean:<alpha>"``, the
        alpha = 0 reference line ``"baseline"``. ``"violin"``: bodies with gid
        ``"violin:<alpha>"``.
    """
    if kind not in ("points", "violin"):
        raise ValueError(f"kind must be 'points' or 'violin', got {kind!r}")
    ax = new_ax(ax)
    what = "Test accuracy vs α" if value == "test_accuracy" else f"{_label(value)} vs α"
    ylabel = _label(value)
    d = _one_config(completed_runs(runs), model, "plot_accuracy_vs_alpha")
    _require(d, ["alpha", value], "plot_accuracy_vs_alpha")
    d = _finite(d, ["alpha", value])
    if d.empty:
        return _empty(
            ax, _ALPHA_LABEL if kind == "points" else "Regularisation scale α", ylabel, title or what
        )
    scale = _scale(value)
    palette = alpha_palette(d["alpha"])
    stats = _stats(d, ["alpha"], value, n_resamples, scale, summary)
    y = d[value].to_numpy(float) * scale
    alphas = d["alpha"].to_numpy(float)

    if kind == "points":
        _seed_points(ax, alphas, y, palette, jitter, seed)
        _mean_ci_points(ax, stats, palette)
        xpos = {float(a): float(a) for a in stats["alpha"]}
        ax.set_xlabel(_ALPHA_LABEL)
    else:
        order = [float(a) for a in stats["alpha"]]
        xpos = {a: float(i) for i, a in enumerate(order)}
        groups = [y[normalise_alpha(alphas) == normalise_alpha(a)] for a in order]
        spread = [i for i, g in enumerate(groups) if g.size >= 2 and np.ptp(g) > 0]
        if spread:
            parts = ax.violinplot(
                [groups[i] for i in spread],
                positions=spread,
                widths=0.8,
                showextrema=False,
                showmeans=False,
                showmedians=False,
            )
            # matplotlib's stubs type the dict's values as Collection; "bodies" is a list.
            bodies = cast(list, parts["bodies"])
            for i, body in zip(spread, bodies):
                body.set_facecolor(palette[order[i]])
                body.set_edgecolor("0.2")
                body.set_linewidth(0.6)
                body.set_alpha(0.85)
                body.set_gid(f"violin:{order[i]:g}")
        for i, g in enumerate(groups):
            if i in spread:
                q1, med, q3 = np.percentile(g, [25, 50, 75])
                iqr = q3 - q1
                lo, hi = max(g.min(), q1 - 1.5 * iqr), min(g.max(), q3 + 1.5 * iqr)
                ax.vlines(i, lo, hi, color="0.15", lw=1.0, zorder=3)
                ax.vlines(i, q1, q3, color="0.15", lw=5, zorder=3)
                ax.scatter([i], [med], color="white", s=14, zorder=4, edgecolors="none")
            else:
                ax.scatter(
                    [i] * g.size,
                    g,
                    color=palette[order[i]],
                    s=24,
                    zorder=4,
                    edgecolors="0.15",
                    linewidths=0.6,
                    gid=f"point:{order[i]:g}",
                )
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([f"{a:g}" for a in order], rotation=45 if len(order) > 8 else 0)
        ax.set_xlim(-0.6, len(order) - 0.4)
        ax.set_xlabel("Regularisation scale α")

    base = stats[is_baseline(stats["alpha"].astype(float)).to_numpy()]
    if len(base):
        ax.axhline(
            float(base["mean"].iloc[0]),
            color="0.5",
            ls="--",
            lw=1,
            zorder=1,
            gid="baseline",
            label="α = 0 mean",
        )
    if significance and len(base) and int(base["n"].iloc[0]) >= 2 and len(stats) > 1:
        tt = tests.rename(columns={"alpha": "group"}) if tests is not None else None
        if tt is None:
            try:
                tt = ttests_against_baseline(d.assign(_v=y), "_v", "alpha")
            except ValueError:
                tt = None
        if tt is not None:
            top = {
                float(a): np.nanmax([m, h, y[normalise_alpha(alphas) == normalise_alpha(a)].max()])
                for a, m, h in zip(stats["alpha"], stats["mean"], stats["ci_high"])
            }
            keys = {normalise_alpha(k): k for k in xpos}  # precomputed tests may round alphas
            for _, r in tt.iterrows():
                s = _stars(r["p_bonferroni"])
                a = keys.get(normalise_alpha(float(r["group"])))
                if s and a is not None:
                    _annotate_stars(ax, s, (xpos[a], top[a]), 3)
            if (tt["p_bonferroni"] < 0.05).any():
                _headroom(ax)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    if kind == "points":
        _seed_legend(ax, len(d), baseline=bool(len(base)))
    _title(ax, d, what, title)
    return ax


def plot_promote_vs_penalise(
    runs: pd.DataFrame,
    ax: Axes | None = None,
    *,
    model: str | None = None,
    value: str = "test_accuracy",
    n_resamples: int = 2000,
    significance: bool = True,
    tests: pd.DataFrame | None = None,
    seed: int = 0,
    title: str | None = None,
) -> Axes:
    """Fig. 5a / A6 / A11: accuracy vs ``|alpha|``, promoting (red) vs penalising (blue).

    Parameters
    ----------
    runs : pandas.DataFrame
        Runs frame; one model and activation.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on.
    model : str, optional
        Keep only this model's runs.
    value : str, default "test_accuracy"
        Column on y (accuracies in percent).
    n_resamples : int, default 2000
        Bootstrap resamples.
    significance : bool, default True
        Mark ``|alpha|`` where promote and penalise differ (Wilcoxon rank-sum,
        Bonferroni-corrected over the ``|alpha|`` present with both signs).
    tests : pandas.DataFrame, optional
        Precomputed tests (:func:`~selectivity.analysis.stats.rank_sum_promote_vs_penalise`
        of ``value`` on these runs: columns ``abs_alpha``, ``p_bonferroni``); computed
        here when None.
    seed : int, default 0
        Seed of the single-run jitter.
    title : str, optional
        Panel title.

    Returns
    -------
    matplotlib.axes.Axes
        x is ``|alpha|`` on a log axis; alpha = 0 (which a log axis cannot place) is a
        grey dashed line with its CI as a band (gid ``"baseline"``). Mean lines have
        gid ``"promote"`` / ``"penalise"``, single runs ``"seeds_promote"`` /
        ``"seeds_penalise"``.
    """
    ax = new_ax(ax)
    what = f"Promoting vs penalising selectivity: {_label(value).split(' (')[0].lower()}"
    xlabel = "|α| (regularisation scale magnitude, log)"
    ylabel = _label(value)
    d = _one_config(completed_runs(runs), model, "plot_promote_vs_penalise")
    _require(d, ["alpha", value], "plot_promote_vs_penalise")
    d = _finite(d, ["alpha", value])
    if d.empty:
        return _empty(ax, xlabel, ylabel, title or what)
    nonzero = d[~is_baseline(d["alpha"].astype(float))]
    if nonzero.empty:
        return _empty(ax, xlabel, ylabel, title or what, "no regularised runs (α ≠ 0)")
    scale = _scale(value)
    ax.set_xscale("log")
    # With one or two |alpha| values matplotlib labels minor ticks (9.2e-1, ...): hide them.
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    rng = np.random.default_rng(seed)
    tops: dict[float, float] = {}
    for sign, color, name, lab in (
        (-1, PENALISE_COLOR, "penalise", "penalise (α < 0)"),
        (1, PROMOTE_COLOR, "promote", "promote (α > 0)"),
    ):
        sub = nonzero[np.sign(nonzero["alpha"].astype(float)) == sign].assign(
            abs_alpha=lambda f: normalise_alpha(np.abs(f["alpha"].astype(float)))
        )
        if sub.empty:
            continue
        # Small opposite offsets (in log space) keep the two CIs from overlapping.
        dodge = 10 ** (0.025 * sign)
        st = _stats(sub, ["abs_alpha"], value, n_resamples, scale).rename(columns={"abs_alpha": "x"})
        xs = sub["abs_alpha"].to_numpy(float) * dodge * 10 ** rng.uniform(-0.02, 0.02, len(sub))
        ax.scatter(
            xs,
            sub[value].to_numpy(float) * scale,
            color=color,
            s=10,
            alpha=0.35,
            linewidths=0,
            zorder=2,
            gid=f"seeds_{name}",
        )
        cont = ax.errorbar(
            st["x"] * dodge,
            st["mean"],
            yerr=_yerr(st),
            fmt="-o",
            ms=5,
            lw=1.6,
            color=color,
            ecolor=color,
            capsize=3,
            zorder=4,
            label=lab,
        )
        cont.lines[0].set_gid(name)
        for x, m, h in zip(st["x"], st["mean"], st["ci_high"]):
            tops[float(x)] = float(np.nanmax([tops.get(float(x), -np.inf), m, h]))
    base = d[is_baseline(d["alpha"].astype(float))]
    if len(base):
        b = _stats(base.assign(_g=0), ["_g"], value, n_resamples, scale).iloc[0]
        ax.axhline(
            b["mean"],
            color=ZERO_COLOR,
            ls="--",
            lw=1.2,
            zorder=1,
            gid="baseline",
            label=f"α = 0 (n={int(b['n'])})",
        )
        if np.isfinite(b["ci_low"]) and np.isfinite(b["ci_high"]):
            ax.axhspan(b["ci_low"], b["ci_high"], color=ZERO_COLOR, alpha=0.15, lw=0, zorder=0)
    if significance:
        rs = tests if tests is not None else pd.DataFrame(columns=["abs_alpha", "p_bonferroni"])
        if tests is None:
            try:
                rs = rank_sum_promote_vs_penalise(nonzero.assign(_v=nonzero[value] * scale), "_v")
            except ValueError:
                pass
        for _, r in rs.iterrows():
            s = _stars(r["p_bonferroni"])
            if s:
                x = float(r["abs_alpha"])
                _annotate_stars(ax, s, (x, tops.get(x, np.nan)), 4)
        if len(rs) and (rs["p_bonferroni"] < 0.05).any():
            _headroom(ax)
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(fmt_num))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=_LEGEND_FONT, framealpha=0.85)
    _title(ax, d, what, title)
    return ax


def plot_layer_selectivity(
    layers: pd.DataFrame,
    ax: Axes | None = None,
    value: str = "selectivity",
    *,
    model: str | None = None,
    alphas: Sequence[float] | None = None,
    n_resamples: int = 2000,
    title: str | None = None,
    table: pd.DataFrame | None = None,
) -> Axes:
    """Fig. 1a / A1a / A7a / A8a / A9a: per-layer mean value vs layer, one line per alpha.

    Parameters
    ----------
    layers : pandas.DataFrame
        Layers frame (``alpha``, ``layer_index``, ``layer``, ``value``); one model.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on.
    value : {"selectivity", "precision", "dead_fraction"}, default "selectivity"
        Layer metric on y (label adapted). NaN values (all-dead layers) are dropped.
    model : str, optional
        Keep only this model's rows.
    alphas : sequence of float, optional
        Subset of alphas to draw (default: all).
    n_resamples : int, default 2000
        Bootstrap resamples for the error bars (95% CI over seeds).
    title : str, optional
        Panel title.
    table : pandas.DataFrame, optional
        :func:`~selectivity.analysis.summary.layer_table` of ``layers`` and ``value``
        computed by the caller; bootstrapped here when None.

    Returns
    -------
    matplotlib.axes.Axes
        One line per alpha with gid ``"alpha:<alpha>"`` and legend label ``"<alpha>"``.
    """
    ax = new_ax(ax, figsize=(7.0, 4.5))
    what = {
        "selectivity": "class selectivity by layer",
        "precision": "precision by layer",
        "dead_fraction": "dead units by layer",
    }.get(value, f"{value} by layer")
    what = what[0].upper() + what[1:]
    xlabel = "Layer (forward order)"
    ylabel = _label(value)
    d = _one_config(layers, model, "plot_layer_selectivity")
    _require(d, ["alpha", "layer_index", value], "plot_layer_selectivity")
    d = _finite(d, ["alpha", "layer_index", value])
    d = _keep_alphas(d, alphas)
    if d.empty:
        return _empty(ax, xlabel, ylabel, title or what, "no layer measurements")
    if table is None:
        table = layer_table(d, value, n_resamples=n_resamples)
    else:
        _require(table, ["alpha", "layer_index", "n"], "precomputed layer table")
        table = _keep_alphas(table[table["n"] > 0], alphas)
    palette = alpha_palette(table["alpha"])
    m, lo, hi = f"{value}_mean", f"{value}_ci_low", f"{value}_ci_high"
    for a, sub in table.groupby("alpha", sort=True):
        sub = sub.sort_values("layer_index")
        st = pd.DataFrame({"mean": sub[m], "ci_low": sub[lo], "ci_high": sub[hi]})
        c = palette[float(a)]
        cont = ax.errorbar(
            sub["layer_index"],
            sub[m],
            yerr=_yerr(st),
            fmt="-o",
            ms=3.5,
            lw=1.4,
            color=c,
            ecolor=c,
            elinewidth=1.0,
            capsize=2,
            label=f"{float(a):g}",
        )
        cont.lines[0].set_gid(f"alpha:{float(a):g}")
    _layer_ticks(ax, d)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    _alpha_legend(ax, table["alpha"].nunique())
    _title(ax, d, what, title)
    return ax


def plot_accuracy_vs_selectivity(
    runs: pd.DataFrame,
    ax: Axes | None = None,
    *,
    model: str | None = None,
    x: str = "mean_selectivity",
    y: str = "test_accuracy",
    n_resamples: int = 2000,
    title: str | None = None,
    summaries: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> Axes:
    """Fig. 2c / 4c / 5b / A9c: test accuracy vs mean class selectivity.

    Parameters
    ----------
    runs : pandas.DataFrame
        Runs frame; one model and activation.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on.
    model : str, optional
        Keep only this model's runs.
    x, y : str
        Columns on the axes (default mean selectivity, test accuracy in percent).
    n_resamples : int, default 2000
        Bootstrap resamples for the per-alpha CIs (both directions).
    title : str, optional
        Panel title.
    summaries : (pandas.DataFrame, pandas.DataFrame), optional
        Per-alpha mean and CI of ``x`` and of ``y`` (unscaled) computed by the caller
        over the runs where both are finite; bootstrapped here when None.

    Returns
    -------
    matplotlib.axes.Axes
        Runs are the scatter with gid ``"runs"``; per-alpha means (with x and y CIs)
        are lines with gid ``"mean:<alpha>"`` and legend label ``"<alpha>"``.
    """
    ax = new_ax(ax)
    what = f"{_label(y).split(' (')[0]} vs {_label(x).split(' (')[0].lower()}"
    d = _one_config(completed_runs(runs), model, "plot_accuracy_vs_selectivity")
    _require(d, ["alpha", x, y], "plot_accuracy_vs_selectivity")
    d = _finite(d, ["alpha", x, y])
    if d.empty:
        return _empty(ax, _label(x), _label(y), title or what)
    sx, sy = _scale(x), _scale(y)
    palette = alpha_palette(d["alpha"])
    ax.scatter(
        d[x].to_numpy(float) * sx,
        d[y].to_numpy(float) * sy,
        c=[palette[float(a)] for a in d["alpha"]],
        s=14,
        alpha=0.45,
        linewidths=0,
        zorder=2,
        gid="runs",
    )
    sum_x, sum_y = summaries if summaries is not None else (None, None)
    stx = _stats(d, ["alpha"], x, n_resamples, sx, sum_x)
    sty = _stats(d, ["alpha"], y, n_resamples, sy, sum_y)
    ex, ey = _yerr(stx), _yerr(sty)
    for i, a in enumerate(stx["alpha"].astype(float)):
        c = palette[a]
        cont = ax.errorbar(
            [stx["mean"].iloc[i]],
            [sty["mean"].iloc[i]],
            xerr=ex[:, i : i + 1],
            yerr=ey[:, i : i + 1],
            fmt="o",
            ms=7,
            color=c,
            mec="0.15",
            mew=0.6,
            ecolor=c,
            elinewidth=1.4,
            capsize=2.5,
            zorder=4,
            label=f"{a:g}",
        )
        cont.lines[0].set_gid(f"mean:{a:g}")
    ax.set_xlabel(_label(x))
    ax.set_ylabel(_label(y))
    ax.grid(True, alpha=0.3)
    _alpha_legend(ax, len(stx))
    _title(ax, d, what, title)
    return ax


def plot_model_comparison(
    runs: pd.DataFrame,
    ax: Axes | None = None,
    value: str = "mean_selectivity",
    *,
    n_resamples: int = 2000,
    title: str | None = None,
) -> Axes:
    """Fig. A12: ``value`` vs alpha, one line per model (ResNet20 cyan, VGG16 orange).

    Parameters
    ----------
    runs : pandas.DataFrame
        Runs frame with a ``model`` column; one activation setting.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on.
    value : str, default "mean_selectivity"
        Column on y (``"test_accuracy"`` for A12a, drawn in percent).
    n_resamples : int, default 2000
        Bootstrap resamples.
    title : str, optional
        Panel title.

    Returns
    -------
    matplotlib.axes.Axes
        One line per model, gid ``"model:<name>"``.
    """
    ax = new_ax(ax)
    what = f"{_label(value).split(' (')[0]} vs α by model"
    d = _one_config(completed_runs(runs), None, "plot_model_comparison", allow_models=True)
    _require(d, ["alpha", "model", value], "plot_model_comparison")
    d = _finite(d, ["alpha", value])
    if d.empty:
        return _empty(ax, _ALPHA_LABEL, _label(value), title or what)
    alpha_axis(ax, d["alpha"])
    # Unknown models: tab10 without blue and orange (blue would read as "penalise").
    fallback = iter([tuple(c) for c in colormaps["tab10"](np.arange(2, 10))])
    for name, sub in d.groupby("model", sort=True):
        color = MODEL_COLORS.get(str(name).lower()) or next(fallback, "0.3")
        st = _stats(sub, ["alpha"], value, n_resamples, _scale(value))
        cont = ax.errorbar(
            st["alpha"],
            st["mean"],
            yerr=_yerr(st),
            fmt="-o",
            ms=5,
            lw=1.6,
            color=color,
            capsize=3,
            label=f"{name} (n={len(sub)})",
        )
        cont.lines[0].set_gid(f"model:{name}")
    ax.set_xlabel(_ALPHA_LABEL)
    ax.set_ylabel(_label(value))
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(title="model", fontsize=_LEGEND_FONT, title_fontsize=_LEGEND_FONT, framealpha=0.85)
    _title(ax, d.drop(columns=["model"]), what, title)
    return ax


def plot_cca_distance_by_layer(
    df: pd.DataFrame,
    ax: Axes | None = None,
    *,
    model: str | None = None,
    alphas: Sequence[float] | None = None,
    n_resamples: int = 2000,
    title: str | None = None,
) -> Axes:
    """Fig. 3a: CCA distance by layer, within replicates vs against alpha = 0.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per network pair and layer with ``alpha``, ``layer_index``, ``layer``,
        ``distance_within`` (distance between two replicates of this alpha) and
        ``distance_between`` (distance between a network of this alpha and one of
        alpha = 0). Either may be NaN (190 within vs 400 between pairs for 20 seeds).
    ax : matplotlib.axes.Axes, optional
        Axes to draw on.
    model : str, optional
        Keep only this model's rows (if ``df`` has a ``model`` column).
    alphas : sequence of float, optional
        Alphas to draw (default: all; the paper shows alpha = -10).
    n_resamples : int, default 2000
        Bootstrap resamples for the shaded 95% CI bands.
    title : str, optional
        Panel title.

    Returns
    -------
    matplotlib.axes.Axes
        Per alpha: solid line ``"between:<alpha>"`` (rho(alpha, 0), alpha's colour)
        and dashed lighter line ``"within:<alpha>"`` (rho(alpha, alpha)).
    """
    ax = new_ax(ax, figsize=(7.0, 4.5))
    what = "CCA distance by layer"
    xlabel = "Layer (forward order)"
    ylabel = "CCA distance ρ (1 − PWCCA similarity)"
    d = _one_config(df, model, "plot_cca_distance_by_layer")
    _require(d, ["alpha", "layer_index", "distance_within", "distance_between"], "plot_cca_distance_by_layer")
    d = _finite(d, ["alpha", "layer_index"])
    d = _keep_alphas(d, alphas)
    if d.empty or d[["distance_within", "distance_between"]].notna().to_numpy().sum() == 0:
        return _empty(ax, xlabel, ylabel, title or what, "no CCA distances")
    palette = alpha_palette(d["alpha"])
    n_lines = 0
    for a, sub in d.groupby("alpha", sort=True):
        a = float(a)
        for col, kind, ls, color, lab in (
            ("distance_between", "between", "-", palette[a], f"ρ(α={a:g}, α=0)"),
            ("distance_within", "within", "--", lighten(palette[a], 0.45), f"ρ(α={a:g}, α={a:g})"),
        ):
            st = _stats(sub, ["layer_index"], col, n_resamples)
            st = st[st["n"] > 0]
            if st.empty:
                continue
            (line,) = ax.plot(
                st["layer_index"],
                st["mean"],
                ls=ls,
                marker="o",
                ms=3.5,
                lw=1.6,
                color=color,
                label=lab,
                zorder=3,
            )
            line.set_gid(f"{kind}:{a:g}")
            ax.fill_between(
                st["layer_index"].to_numpy(float),
                st["ci_low"].to_numpy(float),
                st["ci_high"].to_numpy(float),
                color=color,
                alpha=0.2,
                lw=0,
                zorder=2,
            )
            n_lines += 1
    _layer_ticks(ax, d)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    _alpha_legend(ax, n_lines, title="network pair", outside_above=2)
    _title(ax, d, what, title)
    return ax


def plot_cca_ratio(
    df: pd.DataFrame,
    ax: Axes | None = None,
    *,
    model: str | None = None,
    unit_cols: Sequence[str] | None = None,
    n_resamples: int = 2000,
    jitter: float = 0.15,
    seed: int = 0,
    title: str | None = None,
) -> Axes:
    """Fig. 3b: CCA distance ratio rho(alpha, 0) / rho(alpha, alpha) vs alpha.

    Parameters
    ----------
    df : pandas.DataFrame
        ``alpha`` and ``ratio``; one row per replicate (ratio already averaged over
        layers, as in the paper), or several rows per replicate with ``unit_cols``.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on.
    model : str, optional
        Keep only this model's rows.
    unit_cols : sequence of str, optional
        If given (e.g. ``("seed",)``), ratios are first averaged within each
        (alpha, *unit_cols) so each replicate counts once (e.g. over layers).
    n_resamples : int, default 2000
        Bootstrap resamples.
    jitter, seed : float, int
        Spread of the single values, see :func:`plot_selectivity_vs_alpha`.
    title : str, optional
        Panel title.

    Returns
    -------
    matplotlib.axes.Axes
        Single values: scatter gid ``"seeds"``; means ``"mean:<alpha>"``; ratio = 1
        reference line gid ``"unity"``.
    """
    ax = new_ax(ax)
    what = "CCA distance ratio vs α"
    ylabel = "CCA distance ratio ρ(α, 0) / ρ(α, α)"
    d = _one_config(df, model, "plot_cca_ratio")
    _require(d, ["alpha", "ratio", *(unit_cols or ())], "plot_cca_ratio")
    d = _finite(d, ["alpha", "ratio"])
    if unit_cols and not d.empty:
        d = d.groupby(["alpha", *unit_cols], as_index=False)["ratio"].mean()
    if d.empty:
        return _empty(ax, _ALPHA_LABEL, ylabel, title or what, "no CCA ratios")
    palette = alpha_palette(d["alpha"])
    _seed_points(ax, d["alpha"], d["ratio"].to_numpy(float), palette, jitter, seed)
    _mean_ci_points(ax, _stats(d, ["alpha"], "ratio", n_resamples), palette)
    ax.axhline(1.0, color="0.5", ls="--", lw=1, zorder=1, gid="unity")
    ax.set_xlabel(_ALPHA_LABEL)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    _seed_legend(ax, len(d), what="replicates")
    _title(ax, d, what, title)
    return ax


def plot_leaky_relu(
    runs: pd.DataFrame,
    ax: Axes | None = None,
    value: str = "test_accuracy",
    *,
    model: str | None = None,
    n_resamples: int = 2000,
    title: str | None = None,
) -> Axes:
    """Fig. A10: ``value`` vs alpha, one line per leaky-ReLU negative slope.

    Parameters
    ----------
    runs : pandas.DataFrame
        Runs frame with ``negative_slope``; one model. A NaN slope (plain ReLU) is
        drawn as slope 0.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on.
    value : str, default "test_accuracy"
        Column on y (accuracies in percent; ``"mean_selectivity"`` for A10b,
        ``"dead_fraction"`` to show leaky ReLU removing dead units).
    model : str, optional
        Keep only this model's runs.
    n_resamples : int, default 2000
        Bootstrap resamples.
    title : str, optional
        Panel title.

    Returns
    -------
    matplotlib.axes.Axes
        One line per slope (sequential reds, darker = larger slope), gid
        ``"slope:<slope>"``.
    """
    ax = new_ax(ax)
    what = f"{_label(value).split(' (')[0]} vs α by leaky-ReLU slope"
    d = _one_config(completed_runs(runs), model, "plot_leaky_relu", allow_slopes=True)
    _require(d, ["alpha", "negative_slope", value], "plot_leaky_relu")
    d = _finite(
        d.assign(negative_slope=pd.to_numeric(d["negative_slope"], errors="coerce").fillna(0.0)),
        ["alpha", value],
    )
    if d.empty:
        return _empty(ax, _ALPHA_LABEL, _label(value), title or what)
    alpha_axis(ax, d["alpha"])
    slopes = np.sort(d["negative_slope"].unique())
    cmap = colormaps["Reds"]
    for i, (s, sub) in enumerate(d.groupby("negative_slope", sort=True)):
        color = cmap(0.7 if len(slopes) == 1 else 0.35 + 0.6 * i / (len(slopes) - 1))
        st = _stats(sub, ["alpha"], value, n_resamples, _scale(value))
        lab = f"{float(s):g}" + (" (ReLU)" if float(s) == 0 else "")
        cont = ax.errorbar(
            st["alpha"], st["mean"], yerr=_yerr(st), fmt="-o", ms=5, lw=1.6, color=color, capsize=3, label=lab
        )
        cont.lines[0].set_gid(f"slope:{float(s):g}")
    ax.set_xlabel(_ALPHA_LABEL)
    ax.set_ylabel(_label(value))
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(title="negative slope", fontsize=_LEGEND_FONT, title_fontsize=_LEGEND_FONT, framealpha=0.85)
    _title(ax, d.drop(columns=["activation", "negative_slope"], errors="ignore"), what, title)
    return ax
