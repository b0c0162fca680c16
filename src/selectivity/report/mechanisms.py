"""The report's "Mechanisms" section: figures and tables of the geometry results (paper 2).

Reads the geometry frame collected once (``ctx.data.geometry``, the results of
``selectivity geometry``); without geometry results the section is left out. Statistics
(per-alpha means with bootstrap CIs, :func:`selectivity.analysis.summary.group_summary`;
Spearman correlations, :func:`selectivity.analysis.stats.spearman_ci`) are computed here
once and passed to the plot functions of :mod:`selectivity.plots.geometry`, which only
draw; every figure goes through :func:`~.section.figure_item`, so one that cannot be drawn
becomes a note.

Perturbation groups (rows' ``kind``): ``corruption`` (every corruption x severity the
geometry step measured), ``adversarial`` (FGSM and PGD at its epsilons) and, when
present, ``matched-l2`` (L2 PGD at each corruption's median input distance: a sensitivity
analysis of ours, always shown apart). Early layers are the layers the geometry step
marked (``measure == "early"``); results without that mark use the first third.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..analysis.stats import spearman_ci, summarize
from ..analysis.summary import group_summary
from ..plots.geometry import (
    plot_change_dimensionality,
    plot_dimensionality_by_layer,
    plot_dimensionality_vs_selectivity,
    plot_gradient_variability,
)
from ..plots.style import panel_figure
from .collect import FigureItem, TableItem
from .format import format_alpha, format_ci, format_p
from .section import ReportContext, Section, figure_item

__all__ = [
    "GRADIENT_LABELS",
    "MechanismStatistics",
    "PERTURBATION_GROUPS",
    "early_layer_indices",
    "mechanism_items",
    "mechanism_statistics",
    "mechanism_sections",
]

_CAPTION = (
    "From `selectivity geometry`: dimensionality of the layers' representations, its increase under "
    "corruptions and adversarial examples (perturbed minus clean dimensionality of the same images), the "
    "dimensionality of the change a(x') - a(x), and the variability of input-unit gradients (definitions: "
    "docs/geometry.md). The perturbations are those of the robustness step unless the geometry settings "
    "say otherwise."
)

#: Perturbation groups: page label -> row ``kind``.
PERTURBATION_GROUPS: dict[str, str] = {
    "corruptions": "corruption",
    "adversarial (FGSM, PGD)": "adversarial",
    "matched L2 PGD (sensitivity analysis)": "matched-l2",
}
#: Gradient measures (row ``measure``) -> page label.
GRADIENT_LABELS: dict[str, str] = {
    "grad_var_samples": "1 - mean cosine, across samples",
    "grad_var_units": "1 - mean cosine, across units",
    "grad_cv_samples": "CV of gradient norms, across samples",
    "grad_cv_units": "CV of gradient norms, across units",
    "grad_cv_samples_nonzero": "CV of norms without zero gradients, across samples",
    "grad_cv_units_nonzero": "CV of norms without zero gradients, across units",
    "grad_elem_var_samples": "element-wise variance, across samples",
    "grad_elem_var_units": "element-wise variance, across units",
    "grad_zero_fraction": "share of zero gradients (inactive units)",
}
#: Gradient measures in squared pixel-gradient units, far below 1: shown in a power of ten.
_RESCALED = ("grad_elem_var_samples", "grad_elem_var_units")
_DIM_LABELS = {
    "pca": "PCA dimensionality (95%)",
    "participation_ratio": "participation ratio",
    "increase_pca": "increase of PCA dimensionality",
    "increase_participation_ratio": "increase of participation ratio",
    "change_pca": "PCA dimensionality of the change",
}
_FORMULA_NOTE = (
    "Paper 2 says the input-unit gradient is more variable across samples and units in networks of high "
    "class selectivity, but does not give its formula; we do not know it. Every measure we compute is "
    "therefore shown, each with the sign of its correlation with class selectivity. Units whose gradient is "
    "exactly zero for an image (inactive ReLU units) are counted apart (share of zero gradients): they "
    "inflate the CVs of the norms, and the 'without zero gradients' CVs leave them out."
)
_MATCHED_NOTE = (
    "Matched L2 PGD (an L2 attack with the budget of each corruption's median input L2 distance) is a "
    "sensitivity analysis of ours, not the paper's comparison: shown apart, it does not enter the "
    "corruption-vs-adversarial rows."
)


def early_layer_indices(df: pd.DataFrame, fraction: float = 1 / 3) -> list[int]:
    """Positions of the early layers: those marked ``early`` by the geometry step, else the first ``fraction``."""
    marked = df[(df["measure"] == "early") & (df["layer_index"] >= 0)]
    if not marked.empty:
        return sorted(int(i) for i in marked.loc[marked["value"] > 0.5, "layer_index"].unique())
    idx = sorted(int(i) for i in df.loc[df["layer_index"] >= 0, "layer_index"].unique())
    return idx[: max(1, int(np.ceil(len(idx) * fraction)))] if idx else []


def _kind_rows(layered: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Rows of one perturbation group; older results named the matched attacks ``adversarial``."""
    matched = layered["perturbation"].astype(str).str.startswith("pgd-l2-match-")
    if kind == "matched-l2":
        return layered[(layered["kind"] == "matched-l2") | ((layered["kind"] == "adversarial") & matched)]
    if kind == "adversarial":
        return layered[(layered["kind"] == "adversarial") & ~matched]
    return layered[layered["kind"] == kind]


def _per_run(rows: pd.DataFrame, measure: str, layers: list[int] | None) -> pd.Series:
    """Per run: the mean of ``measure`` over the given layers (None: all) and perturbations."""
    sub = rows[rows["measure"] == measure]
    if layers is not None:
        sub = sub[sub["layer_index"].isin(layers)]
    return sub.groupby("run_id")["value"].mean()


_BY_PERTURBATION = ("increase_pca", "increase_participation_ratio", "change_pca")


def _by_perturbation(
    layered: pd.DataFrame, runs: pd.DataFrame, early: list[int]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Early-layer increase and change per perturbation (corruptions pooled by severity), by alpha.

    Per run, the mean over the early layers (and over the corruptions of one severity), then
    the mean over the runs of each alpha: (long data, display with one column per alpha).
    """
    rows = layered[
        layered["layer_index"].isin(early)
        & layered["measure"].isin(_BY_PERTURBATION)
        & layered["kind"].isin(["corruption", "adversarial", "matched-l2"])
    ]
    if rows.empty:
        return pd.DataFrame(), pd.DataFrame()
    pert = rows["perturbation"].astype(str)
    severity = pert.str.extract(r"-(\d)$", expand=False)
    group = pert.where(rows["kind"] != "corruption", "corruptions, severity " + severity.fillna("?"))
    per_run = (
        rows.assign(group=group)
        .groupby(["measure", "group", "run_id"], sort=False)["value"]
        .mean()
        .reset_index()
        .join(runs["alpha"], on="run_id")
    )
    data = (
        per_run.groupby(["measure", "group", "alpha"], sort=False)["value"]
        .agg(mean="mean", n="size")
        .reset_index()
        .rename(columns={"group": "perturbation"})
    )
    order = list(dict.fromkeys(sorted(data["perturbation"], key=lambda g: not g.startswith("corruptions"))))
    alphas = sorted(data["alpha"].unique())
    view_rows = []
    for measure in _BY_PERTURBATION:
        d = data[data["measure"] == measure]
        for g in order:
            by = d[d["perturbation"] == g].set_index("alpha")["mean"]
            if by.empty:
                continue
            fmt = "+.2f" if measure.startswith("increase") else ".2f"  # a difference, or a count
            view_rows.append(
                [_DIM_LABELS[measure], g, *(format(by[a], fmt) if a in by.index else "-" for a in alphas)]
            )
    view = pd.DataFrame(
        view_rows, columns=["measure", "perturbation", *(f"α = {format_alpha(a)}" for a in alphas)]
    )
    return data, view


def _summaries(values: pd.DataFrame, value: str, n_resamples: int) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        d = values[np.isfinite(values[value].to_numpy(dtype=float))]
        return group_summary(d, ["alpha"], value, n_resamples=n_resamples)


def _by_alpha_table(
    runs: pd.DataFrame,
    columns: dict[str, pd.Series],
    n_resamples: int,
    digits: int,
    rescale: tuple[str, ...] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per alpha, mean [95% CI] of each per-run column: (long data, display).

    ``rescale``: labels of columns that, with a mean below 0.01 in size, are shown in units
    of their smallest mean's power of ten, named in the header (``(x 1e-6)``).
    """
    long, display = [], {}
    for label, series in columns.items():
        j = runs.join(series.rename("value"), how="inner")
        if j.empty:
            continue
        s = _summaries(j, "value", n_resamples).assign(measure=label)
        long.append(s)
        # Measures far below 1 (the element-wise variances, in squared pixel-gradient
        # units) would print as zeros: shown in units of the smallest mean's power of ten.
        scale, shown = 1.0, label
        means = np.abs(s["mean"].to_numpy(dtype=float))
        means = means[np.isfinite(means) & (means > 0)]
        if label in rescale and means.size and means.min() < 0.01:
            exponent = int(np.floor(np.log10(means.min())))
            scale, shown = 10.0**-exponent, f"{label} (x 1e{exponent})"
        display[shown] = {
            r.alpha: format_ci(r.mean, r.ci_low, r.ci_high, r.n, scale, digits)
            for r in s.itertuples(index=False)
        }
    data = pd.concat(long, ignore_index=True) if long else pd.DataFrame()
    if data.empty:
        return data, pd.DataFrame()
    alphas = sorted(data["alpha"].unique())
    counts = data.groupby("alpha")["n"].max()
    view = pd.DataFrame(
        {"α": [format_alpha(a) for a in alphas], "n (runs)": [int(counts[a]) for a in alphas]}
    )
    for label, by in display.items():
        view[label] = [by.get(a, "-") for a in alphas]
    return data, view


def _sign(rho: float, low: float, high: float) -> str:
    """``+`` / ``-`` by the sign of rho; ``(CI excludes 0)`` when the CI does."""
    if not np.isfinite(rho):
        return "-"
    s = "+" if rho > 0 else "-" if rho < 0 else "0"
    if np.isfinite(low) and np.isfinite(high) and (low > 0 or high < 0):
        s += " (CI excludes 0)"
    return s


def _profile_figure(frames: list[tuple[str, pd.DataFrame]], ylabels: list[str], reference: float | None):
    """Rows = measures, columns = perturbation groups; each panel a per-layer profile by alpha."""
    n_cols = len(frames[0][1]) if frames else 1
    fig, axes = panel_figure(len(frames) * n_cols, panel=(5.0, 4.0))
    k = 0
    for r, (_measure, panels) in enumerate(frames):
        for c, (title, frame) in enumerate(panels):
            ax = axes[k]
            k += 1
            if c:
                ax.sharey(axes[k - 1 - c])
            plot_change_dimensionality(
                frame,
                ax,
                ylabel=ylabels[r] if c == 0 else None,
                title=title,
                legend=(r == 0 and c == 0),
                reference=reference,
            )
    return fig


def _group_profiles(layered: pd.DataFrame, measure: str) -> list[tuple[str, pd.DataFrame]]:
    """Per perturbation group: per run and layer, the mean of ``measure`` over the group's perturbations."""
    out = []
    for label, kind in PERTURBATION_GROUPS.items():
        rows = _kind_rows(layered, kind)
        rows = rows[rows["measure"] == measure]
        if rows.empty:
            continue
        prof = rows.groupby(["run_id", "alpha", "layer_index", "layer"], as_index=False)["value"].mean()
        out.append((label, prof))
    return out


def _gradient_figure(values: dict[str, pd.DataFrame], stats: dict[str, dict]):
    fig, axes = panel_figure(len(values), panel=(4.4, 3.6))
    for i, (ax, (measure, df)) in enumerate(zip(axes, values.items())):
        st = stats[measure]
        title = (
            f"ρ = {st['rho']:.2f} [{st['ci_low']:.2f}, {st['ci_high']:.2f}]"
            if np.isfinite(st["rho"])
            else "ρ undefined"
        )
        plot_gradient_variability(df, ax, ylabel=GRADIENT_LABELS[measure], title=title, legend=i == 0)
    return fig


@dataclass
class MechanismStatistics:
    """The Mechanisms section's statistics, computed once from the geometry frame.

    Attributes
    ----------
    early : list of int
        Positions of the early layers (:func:`early_layer_indices`).
    early_text : str
        "early layers = NAME, ..." (or "no early layers"), for captions.
    runs : pandas.DataFrame
        Index ``run_id``; columns ``alpha`` and ``mean_selectivity``.
    has_matched : bool
        Whether matched L2 PGD rows (the sensitivity analysis) are present.
    dimensionality, dimensionality_view : pandas.DataFrame
        Per alpha, mean [95% CI] over runs of the clean dimensionality (early layers and all
        layers) and of the early-layer change dimensionality of each perturbation group.
    increase : pandas.DataFrame
        Long per-alpha summaries of the early-layer increase measures (``measure`` = label).
    increase_view : pandas.DataFrame
        Display: per alpha and over all runs, mean [95% CI] of each increase measure.
    gradients, gradients_view : pandas.DataFrame
        The same for the gradient measures (layer means over all their layers).
    by_perturbation, by_perturbation_view : pandas.DataFrame
        The early-layer increase (PCA, PR) and change dimensionality per perturbation
        (corruptions pooled by severity, each attack at each epsilon): per alpha the mean
        over runs of the per-run early-layer means (``measure``, ``perturbation``, ``alpha``,
        ``mean``, ``n``), and its display (one column per alpha).
    spearman : pandas.DataFrame
        One row per per-run measure: ``measure``, ``layers``, ``rho``, ``p``, ``ci_low``,
        ``ci_high``, ``n``, ``sign``.
    points : pandas.DataFrame or None
        Per run: ``alpha``, ``mean_selectivity`` and ``value`` = early-layer clean PCA dimensionality.
    gradient_points : dict of str to pandas.DataFrame
        Per gradient measure (row ``measure``): per run ``alpha`` and ``value``.
    """

    early: list[int]
    early_text: str
    runs: pd.DataFrame
    has_matched: bool
    dimensionality: pd.DataFrame
    dimensionality_view: pd.DataFrame
    increase: pd.DataFrame
    increase_view: pd.DataFrame
    gradients: pd.DataFrame
    gradients_view: pd.DataFrame
    by_perturbation: pd.DataFrame
    by_perturbation_view: pd.DataFrame
    spearman: pd.DataFrame
    points: pd.DataFrame | None
    gradient_points: dict[str, pd.DataFrame]

    def spearman_of(self, label: str) -> dict:
        """The Spearman row of one measure label (``rho``, ``p``, ``ci_low``, ``ci_high``, ``n``)."""
        row = self.spearman[self.spearman["measure"] == label]
        if row.empty:
            raise KeyError(label)
        return row.iloc[0].to_dict()

    def spearman_view(self) -> pd.DataFrame:
        """The Spearman table as shown: measure, layers, n, rho (95% CI), p, sign."""
        corr = self.spearman
        return pd.DataFrame(
            {
                "measure": corr["measure"],
                "layers": corr["layers"],
                "n (runs)": corr["n"].astype(int),
                "Spearman ρ (95% CI)": [
                    format_ci(r.rho, r.ci_low, r.ci_high, r.n, 1.0, 2) for r in corr.itertuples(index=False)
                ],
                "p": [format_p(p) for p in corr["p"]],
                "sign": corr["sign"],
            }
        )


def mechanism_statistics(df: pd.DataFrame, n_resamples: int = 2000) -> MechanismStatistics | None:
    """Every statistic of the Mechanisms section from a geometry frame; None when it is empty.

    Parameters
    ----------
    df : pandas.DataFrame
        Geometry rows (:func:`selectivity.evaluate.geometry.geometry_frame`, as collected
        by the report): one row per run, layer, perturbation and measure.
    n_resamples : int
        Bootstrap resamples of every CI.

    Returns
    -------
    MechanismStatistics or None
    """
    if df.empty:
        return None
    layered = df[df["layer_index"] >= 0]
    early = early_layer_indices(df)
    early_names = (
        layered[layered["layer_index"].isin(early)]
        .drop_duplicates("layer_index")
        .sort_values("layer_index")["layer"]
        .tolist()
    )
    early_text = f"early layers = {', '.join(early_names)}" if early_names else "no early layers"
    runs = df.drop_duplicates("run_id").set_index("run_id")[["alpha", "mean_selectivity"]]
    has_matched = not _kind_rows(layered, "matched-l2").empty

    # Early-layer increase per alpha: corruptions, adversarial, and their difference per run.
    per_run: dict[str, pd.Series] = {}
    for measure in ("increase_pca", "increase_participation_ratio"):
        short = "PCA" if measure == "increase_pca" else "PR"
        c = _per_run(_kind_rows(layered, "corruption"), measure, early)
        a = _per_run(_kind_rows(layered, "adversarial"), measure, early)
        if not c.empty:
            per_run[f"{short} increase, corruptions"] = c
        if not a.empty:
            per_run[f"{short} increase, adversarial"] = a
        if not c.empty and not a.empty:
            per_run[f"{short}: adversarial - corruptions"] = (a - c).dropna()
        if has_matched:
            m = _per_run(_kind_rows(layered, "matched-l2"), measure, early)
            if not m.empty:
                per_run[f"{short} increase, matched L2 (sensitivity)"] = m
    increase, increase_view = pd.DataFrame(), pd.DataFrame()
    if per_run:
        increase, view = _by_alpha_table(runs, per_run, n_resamples, 2)
        all_runs = []
        for s in per_run.values():
            v = s.to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            sm = summarize(v, n_resamples=n_resamples) if v.size else {"n": 0}
            all_runs.append(
                format_ci(sm.get("mean"), sm.get("ci_low"), sm.get("ci_high"), sm.get("n", 0), 1.0, 2)
            )
        if not view.empty:
            increase_view = pd.concat(
                [view, pd.DataFrame([["all runs", len(runs), *all_runs]], columns=view.columns)],
                ignore_index=True,
            )

    clean_rows = layered[layered["kind"] == "clean"]
    dims: dict[str, pd.Series] = {
        "clean PCA, early": _per_run(clean_rows, "pca", early),
        "clean PR, early": _per_run(clean_rows, "participation_ratio", early),
        "clean PCA, all layers": _per_run(clean_rows, "pca", None),
    }
    for group, kind in PERTURBATION_GROUPS.items():
        dims[f"change PCA, early: {group}"] = _per_run(_kind_rows(layered, kind), "change_pca", early)
    dims = {k: v for k, v in dims.items() if not v.empty}
    dimensionality, dimensionality_view = (
        _by_alpha_table(runs, dims, n_resamples, 2) if dims else (pd.DataFrame(), pd.DataFrame())
    )

    # Spearman correlation of every per-run measure with mean class selectivity.
    specs: list[tuple[str, pd.Series, str]] = [
        ("clean PCA dimensionality", _per_run(clean_rows, "pca", early), "early"),
        ("clean participation ratio", _per_run(clean_rows, "participation_ratio", early), "early"),
    ]
    specs += [(label, s, "early") for label, s in per_run.items()]
    for group, kind in PERTURBATION_GROUPS.items():
        s = _per_run(_kind_rows(layered, kind), "change_pca", early)
        if not s.empty:
            specs.append((f"change PCA dimensionality, {group}", s, "early"))
    grad_runs: dict[str, pd.Series] = {}
    grad_label = {}
    for measure, glabel in GRADIENT_LABELS.items():
        s = _per_run(clean_rows, measure, None)
        if s.empty:
            continue
        grad_runs[glabel] = s
        grad_label[f"gradient: {glabel}"] = measure
        specs.append((f"gradient: {glabel}", s, "gradient layers"))
    rows = []
    points = None
    gradient_points: dict[str, pd.DataFrame] = {}
    for label, s, layers_used in specs:
        if s.empty:
            continue
        j = runs.join(s.rename("value"), how="inner")
        st = spearman_ci(j["mean_selectivity"], j["value"], n_resamples)
        rows.append(
            {
                "measure": label,
                "layers": layers_used,
                **st,
                "sign": _sign(st["rho"], st["ci_low"], st["ci_high"]),
            }
        )
        if label == "clean PCA dimensionality":
            points = j
        if label in grad_label:
            gradient_points[grad_label[label]] = j.reset_index()[["alpha", "value"]]
    spearman = pd.DataFrame(rows, columns=["measure", "layers", "rho", "p", "ci_low", "ci_high", "n", "sign"])
    gradients, gradients_view = (
        _by_alpha_table(runs, grad_runs, n_resamples, 4, rescale=tuple(GRADIENT_LABELS[m] for m in _RESCALED))
        if grad_runs
        else (pd.DataFrame(), pd.DataFrame())
    )
    by_perturbation, by_perturbation_view = _by_perturbation(layered, runs, early)
    return MechanismStatistics(
        early=early,
        early_text=early_text,
        runs=runs,
        has_matched=has_matched,
        dimensionality=dimensionality,
        dimensionality_view=dimensionality_view,
        increase=increase,
        increase_view=increase_view,
        gradients=gradients,
        gradients_view=gradients_view,
        by_perturbation=by_perturbation,
        by_perturbation_view=by_perturbation_view,
        spearman=spearman,
        points=points,
        gradient_points=gradient_points,
    )


def mechanism_items(ctx: ReportContext) -> tuple[list[TableItem], list[FigureItem], list[str]]:
    """Tables, figures and notes of the Mechanisms section; empty without geometry results."""
    df = ctx.data.geometry
    st = mechanism_statistics(df, ctx.n_resamples)
    if st is None:
        return [], [], []
    layered = df[df["layer_index"] >= 0]
    figs: list[FigureItem] = []
    tables: list[TableItem] = []
    notes: list[str] = []
    has_matched = st.has_matched
    if has_matched:
        notes.append(_MATCHED_NOTE)

    clean = layered[(layered["kind"] == "clean") & (layered["measure"] == "pca")]
    if not clean.empty:
        figs.append(
            figure_item(
                ctx,
                "mech-clean-dim",
                "Mechanisms (a)",
                "Dimensionality of the clean representation per layer",
                "PCA components for 95% of the variance of the layer's units, mean over runs "
                "per α (band ±1 SD).",
                lambda: plot_dimensionality_by_layer(clean),
                wide=False,
            )
        )

    # Increase: perturbed minus clean dimensionality of the same images, per layer.
    inc = [(m, _group_profiles(layered, m)) for m in ("increase_pca", "increase_participation_ratio")]
    inc = [(m, p) for m, p in inc if p]
    if inc:
        figs.append(
            figure_item(
                ctx,
                "mech-increase-dim",
                "Mechanisms (a)",
                "Increase of dimensionality caused by a perturbation",
                "Perturbed minus clean dimensionality of the same images per layer (top: PCA components for 95% "
                "of the variance; bottom: participation ratio), averaged over the group's perturbations: every "
                "corruption x severity (left), FGSM and PGD at every ε (middle)"
                + (
                    ", L2 PGD at each corruption's matched distance (right, sensitivity analysis)"
                    if has_matched
                    else ""
                )
                + "; mean over runs per α, band ±1 SD; dashed: no change.",
                lambda: _profile_figure(inc, [_DIM_LABELS[m] for m, _ in inc], 0.0),
                wide=True,
            )
        )

    change = _group_profiles(layered, "change_pca")
    if change:
        figs.append(
            figure_item(
                ctx,
                "mech-change-dim",
                "Mechanisms (a)",
                "Dimensionality of the change caused by a perturbation",
                "PCA dimensionality (95%) of a(x') - a(x) per layer, averaged over the group's perturbations "
                "(corruptions; FGSM and PGD"
                + ("; matched L2 PGD, sensitivity analysis" if has_matched else "")
                + "); mean over runs per α, band ±1 SD.",
                lambda: _profile_figure([("change_pca", change)], [_DIM_LABELS["change_pca"]], None),
                wide=True,
            )
        )

    if not st.dimensionality_view.empty:
        tables.append(
            TableItem(
                "mechanisms-dimensionality",
                "Dimensionality of the clean representation and of the change, by α (mean and 95% CI over runs)",
                st.dimensionality,
                display=st.dimensionality_view,
                caption=f"Per run, the mean over the early layers ({st.early_text}) or over all measured layers of "
                "the PCA dimensionality (95% of the variance) and participation ratio (PR) of the clean "
                "representation, and of the PCA dimensionality of the change a(x') - a(x), averaged over the "
                "group's perturbations. 95% percentile bootstrap CI over runs.",
            )
        )
    if not st.increase_view.empty:
        tables.append(
            TableItem(
                "mechanisms-increase",
                "Early-layer dimensionality increase by α (mean and 95% CI over runs)",
                st.increase,
                display=st.increase_view,
                caption=f"Per run, the mean over the early layers ({st.early_text}) and over the group's "
                "perturbations of the perturbed minus clean dimensionality (PCA components for 95% of the "
                "variance; participation ratio, PR). 'adversarial - corruptions' is each run's difference: "
                "above 0, adversarial examples raise early-layer dimensionality more than corruptions (the "
                "paper's claim). 95% percentile bootstrap CI over runs.",
            )
        )

    if not st.by_perturbation_view.empty:
        tables.append(
            TableItem(
                "mechanisms-by-perturbation",
                "Early-layer increase and change dimensionality per perturbation, by α (mean over runs)",
                st.by_perturbation,
                display=st.by_perturbation_view,
                caption=f"Per run, the mean over the early layers ({st.early_text}), over the corruptions of one "
                "severity for the corruption rows; then the mean over the runs of each α. The PCA count is an "
                "integer per layer, so small perturbations leave it unchanged; the participation ratio is "
                "continuous.",
            )
        )

    if st.points is not None:
        first = st.spearman_of("clean PCA dimensionality")
        points = st.points.rename(columns={"mean_selectivity": "selectivity", "value": "dimensionality"})
        figs.append(
            figure_item(
                ctx,
                "mech-dim-vs-selectivity",
                "Mechanisms (a)",
                "Early-layer dimensionality against class selectivity",
                f"One point per run: mean clean PCA dimensionality of the early layers ({st.early_text}) "
                "against the run's mean class selectivity; Spearman ρ with a 95% bootstrap CI over runs.",
                functools.partial(
                    plot_dimensionality_vs_selectivity,
                    points,
                    first["rho"],
                    (first["ci_low"], first["ci_high"]),
                    first["p"],
                ),
                wide=False,
            )
        )
    if st.gradient_points:
        grad_stats = {m: st.spearman_of(f"gradient: {GRADIENT_LABELS[m]}") for m in st.gradient_points}
        notes.append(_FORMULA_NOTE)
        figs.append(
            figure_item(
                ctx,
                "mech-grad-var",
                "Mechanisms (b)",
                "Input-unit gradient variability by α, every measure",
                "Each panel one measure (layer means over the units or images, then over the layers it was "
                "computed on); one point per run, line through the per-α means; title: Spearman ρ with mean "
                "class selectivity and its 95% bootstrap CI over runs. The paper's formula is unknown: compare "
                "the signs.",
                functools.partial(_gradient_figure, st.gradient_points, grad_stats),
                wide=True,
            )
        )
        if not st.gradients_view.empty:
            tables.append(
                TableItem(
                    "mechanisms-gradients",
                    "Input-unit gradient measures by α (mean and 95% CI over runs)",
                    st.gradients,
                    display=st.gradients_view,
                    caption="Per run, the layer means of each measure averaged over the layers it was computed "
                    "on (definitions: docs/geometry.md). The cosine measures and the 'without zero gradients' "
                    "CVs leave zero gradients out; the share of zero gradients counts them.",
                )
            )
    if not st.spearman.empty:
        tables.append(
            TableItem(
                "mechanisms-spearman",
                "Spearman correlation with mean class selectivity (per run)",
                st.spearman,
                display=st.spearman_view(),
                caption=f"Across runs of all α; {st.early_text}; the gradient measures: all layers they were "
                "computed on. 95% percentile bootstrap CI over runs; sign: of ρ, '(CI excludes 0)' when the CI "
                "does.",
            )
        )
    return tables, figs, notes


def mechanism_sections(ctx: ReportContext) -> list[Section]:
    """The Mechanisms section; none without geometry results."""
    tables, figures, notes = mechanism_items(ctx)
    if not tables and not figures:
        return []
    return [
        Section(
            id="mechanisms",
            heading="Mechanisms (dimensionality, gradient variability)",
            caption=_CAPTION,
            notes=notes,
            tables=tables,
            figures=figures,
        )
    ]
