"""The paper-1 figures: one :class:`FigureSpec` list per section, and the sweep summary's set.

Per setting the paper's Figs. 1, 2, 5, A7 and A9; per setting with CCA distances
Fig. 3; across settings Figs. A10 and A12. Significance stars, per-alpha CIs and
per-layer CIs come from the statistics computed once per report
(:func:`.stats.compute_statistics`) and are passed to the plot functions, which only draw.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..analysis.stats import is_baseline, normalise_alpha
from ..evaluate.cca import CCADistances, cca_plot_frame
from ..plots import selectivity as plots
from ..plots.selectivity import (
    plot_accuracy_vs_alpha,
    plot_layer_selectivity,
    plot_promote_vs_penalise,
    plot_selectivity_vs_alpha,
)
from ..plots.style import PANEL_SIZE, completed_runs, describe, facets, panel_figure
from .collect import FigureItem, ReportData, Setting, match_setting, slug
from .section import ReportContext, figure_item
from .stats import CCAStats, SettingStats, compute_statistics

__all__ = [
    "FigureSpec",
    "cca_figure_specs",
    "global_figure_specs",
    "has_both_signs",
    "render_spec",
    "setting_figure_specs",
    "sweep_figure_specs",
    "sweep_figures",
]

_PANEL = PANEL_SIZE
#: Per-layer figures: many x labels, so they span the whole row.
_WIDE = {"fig1a", "fig3a"}


@dataclass
class FigureSpec:
    """One figure of a set: its key, labels, and how to draw it (or why it is missing).

    ``draw`` returns a new :class:`~matplotlib.figure.Figure`; None means the figure
    is not drawn and ``note`` says why. The sweep summary and the report both compose
    lists of these.
    """

    key: str
    title: str
    draw: Callable[[], Figure] | None
    paper: str = ""
    caption: str = ""
    note: str | None = None


def _panels(n: int, size: tuple[float, float] = _PANEL) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(size[0] * n, size[1]), layout="constrained")
    return fig, [fig.add_subplot(1, n, i + 1) for i in range(n)]


def _spec(
    key: str, paper: str, title: str, caption: str, draw: Callable[[], Figure] | None, note: str | None
) -> FigureSpec:
    return FigureSpec(key=key, title=title, draw=draw, paper=paper, caption=caption, note=note)


def _paper_fig(model: str, resnet: str, vgg: str) -> str:
    m = model.lower()
    if m.startswith("resnet20"):
        return f"Fig. {resnet}"
    if m.startswith("vgg"):
        return f"Fig. {vgg}"
    return f"Fig. {resnet} / {vgg}"


def _plain_minor(ax: Axes) -> Axes:
    """No minor tick labels on x: a log axis spanning < 1 decade otherwise labels them all."""
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    return ax


def setting_figure_specs(s: Setting, n_resamples: int, stats: SettingStats | None = None) -> list[FigureSpec]:
    """The figures of one setting (Figs. 1a, 1b, 2a, 2b, 2c, 5a, A7, A9)."""
    if stats is None:
        stats = compute_statistics([s], n_resamples=n_resamples).settings[s.key]
    by, lt = stats.by_alpha, stats.layers
    acc_tt = stats.ttests.get("test_accuracy")
    if acc_tt is None:
        acc_tt = pd.DataFrame(columns=["group", "p_bonferroni"])
    acc_rs = stats.ranksums.get("test_accuracy", pd.DataFrame(columns=["abs_alpha", "p_bonferroni"]))
    nr = n_resamples
    done, lay, m = s.done, s.layers, s.model
    no_layers = "No per-layer results stored for the completed runs." if lay.empty else None
    n_alpha = done["alpha"].nunique()

    def one(fn: Callable[[Axes], object]) -> Callable[[], Figure]:
        def draw() -> Figure:
            fig, (ax,) = _panels(1)
            fn(ax)
            return fig

        return draw

    def layer_fig(value: str, size: tuple[float, float] = (7.5, 4.8)) -> Callable[[], Figure]:
        def draw() -> Figure:
            fig, (ax,) = _panels(1, size)
            plots.plot_layer_selectivity(lay, ax, value, n_resamples=nr, title=s.label, table=lt.get(value))
            return fig

        return draw

    def precision_fig() -> Figure:
        fig, (a, b) = _panels(2, (7.0, 4.6))
        plots.plot_layer_selectivity(
            lay,
            a,
            "precision",
            n_resamples=nr,
            title=f"{s.label}: precision by layer",
            table=lt.get("precision"),
        )
        plots.plot_selectivity_vs_alpha(
            done,
            b,
            value="mean_precision",
            n_resamples=nr,
            title=f"{s.label}: network precision vs α",
            summary=by.get("mean_precision"),
        )
        return fig

    def dead_fig() -> Figure:
        fig, (a, b, c) = _panels(3, (5.2, 4.4))
        plots.plot_layer_selectivity(
            lay,
            a,
            "dead_fraction",
            n_resamples=nr,
            title=f"{s.label}: dead units by layer",
            table=lt.get("dead_fraction"),
        )
        plots.plot_selectivity_vs_alpha(
            done,
            b,
            value="dead_fraction",
            n_resamples=nr,
            title=f"{s.label}: dead units vs α",
            summary=by.get("dead_fraction"),
        )
        plots.plot_selectivity_vs_alpha(
            done,
            c,
            value="mean_selectivity_live",
            n_resamples=nr,
            title=f"{s.label}: SI, dead units removed",
            summary=by.get("mean_selectivity_live"),
        )
        return fig

    specs = [
        _spec(
            "fig1a",
            _paper_fig(m, "1a", "A1a"),
            "Class selectivity by layer",
            "Mean class selectivity of the units of each layer (forward order), one line per α; error bars are "
            "95% CIs over seeds.",
            layer_fig("selectivity"),
            no_layers,
        ),
        _spec(
            "fig1b",
            _paper_fig(m, "1b", "A1b"),
            "Mean class selectivity vs α",
            "Network class selectivity index (mean over units in each layer, then over layers) of each run "
            "(small points, one per seed) and its mean with bootstrapped 95% CI per α; symmetric-log α axis.",
            one(
                lambda ax: plots.plot_selectivity_vs_alpha(
                    done, ax, n_resamples=nr, title=s.label, summary=by.get("mean_selectivity")
                )
            ),
            None,
        ),
        _spec(
            "fig2a",
            _paper_fig(m, "2a", "4a"),
            "Test accuracy vs α",
            "Test accuracy (%) of each run (one point per seed) and the mean with 95% CI per α; dashed line: "
            "α = 0 mean; stars: t-test against α = 0 (Student's unless the report says Welch), Bonferroni-corrected within the figure's family (* p < 0.05, ** p < 1e-3, "
            "*** p < 1e-6).",
            one(
                lambda ax: plots.plot_accuracy_vs_alpha(
                    done,
                    ax,
                    "points",
                    n_resamples=nr,
                    tests=acc_tt,
                    title=s.label,
                    summary=by.get("test_accuracy"),
                )
            ),
            None,
        ),
        _spec(
            "fig2b",
            _paper_fig(m, "2b", "4b"),
            "Test accuracy distributions (violins)",
            "Distribution of test accuracy over seeds per α (violin with quartile box and white median); an α "
            "with a single run or identical values is drawn as points. Stars as in the accuracy-vs-α figure.",
            one(
                lambda ax: plots.plot_accuracy_vs_alpha(
                    done,
                    ax,
                    "violin",
                    n_resamples=nr,
                    tests=acc_tt,
                    title=s.label,
                    summary=by.get("test_accuracy"),
                )
            ),
            None,
        ),
        _spec(
            "fig2c",
            _paper_fig(m, "2c", "4c"),
            "Test accuracy vs mean class selectivity",
            "Each run's test accuracy against its network class selectivity (small points) and the per-α means "
            "with 95% CIs in both directions.",
            one(
                lambda ax: plots.plot_accuracy_vs_selectivity(
                    done,
                    ax,
                    n_resamples=nr,
                    title=s.label,
                    summaries=_joint(by, done, "mean_selectivity", "test_accuracy"),
                )
            ),
            None,
        ),
    ]
    both = has_both_signs(done)
    specs.append(
        _spec(
            "fig5a",
            "Fig. 5a / A6 / A11",
            "Promoting vs penalising class selectivity",
            "Test accuracy vs |α| for α > 0 (promoting selectivity, red) and α < 0 (penalising, blue), "
            "mean and 95% CI over seeds; grey dashed line and band: α = 0. Stars: Wilcoxon rank-sum test "
            "promote vs penalise at equal |α|, Bonferroni-corrected.",
            one(
                lambda ax: _plain_minor(
                    plots.plot_promote_vs_penalise(done, ax, n_resamples=nr, tests=acc_rs, title=s.label)
                )
            )
            if both
            else None,
            None if both else "No |α| was run (to completion) with both signs.",
        )
    )
    specs.append(
        _spec(
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
        _spec(
            "figA9",
            "Fig. A9",
            "Dead units and selectivity without them",
            "(left) Proportion of dead units (zero response to every test image) per layer, one line per α; "
            "(middle) network proportion of dead units vs α; (right) network class selectivity vs α with dead "
            "units removed (Fig. A9b). Fig. 1b counts every unit, a dead unit with index 0 as the paper's "
            "formula with its epsilon gives it; this panel leaves dead units out of each layer's mean.",
            dead_fig if not lay.empty else None,
            no_layers,
        )
    )
    if done.empty:
        specs = [
            dataclasses.replace(sp, draw=None, note="No completed runs in this setting.") for sp in specs
        ]
    elif n_alpha < 2:
        note = f"Only one α ({done['alpha'].iloc[0]:g}) has completed runs: the comparison is a single group."
        specs = [dataclasses.replace(sp, caption=sp.caption + " " + note) if sp.draw else sp for sp in specs]
    return specs


def cca_figure_specs(
    s: Setting, cca: CCADistances, n_resamples: int, cca_stats: CCAStats | None = None
) -> list[FigureSpec]:
    """Fig. 3a and 3b of one setting (CCA distance by layer, distance ratio vs alpha)."""

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
    d = match_setting(cca.distances, s) if cca.distances is not None else pd.DataFrame()
    if cca.distances is None or d.empty:
        note = cca.note or "No CCA distances for this setting."
        return [
            _spec("fig3a", "Fig. 3a", "CCA distance by layer", cap_a, None, note),
            _spec("fig3b", "Fig. 3b", "CCA distance ratio vs α", cap_b, None, note),
        ]
    frame = cca_plot_frame(d)
    if cca_stats is None:
        cca_stats = compute_statistics([], cca, n_resamples=n_resamples).cca
    ratio = match_setting(cca_stats.ratio, s) if cca_stats is not None else pd.DataFrame()
    alphas = sorted(
        a
        for a in frame["alpha"].unique()
        if not is_baseline(a) and frame.loc[frame["alpha"] == a, "distance_between"].notna().any()
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
            f"{settings.get('mode')}; PWCCA method {settings.get('method', 'textbook')!r} "
            f"(pair order {settings.get('order', 'alpha-first')}), projection weights from "
            f"{settings.get('weights')}."
        )
        if settings
        else ""
    )

    def draw_a() -> Figure:
        fig, (ax,) = _panels(1, (7.5, 4.8))
        plots.plot_cca_distance_by_layer(
            frame, ax, alphas=shown or None, n_resamples=n_resamples, title=s.label
        )
        return fig

    def draw_b() -> Figure:
        fig, (ax,) = _panels(1)
        plots.plot_cca_ratio(ratio, ax, n_resamples=n_resamples, title=s.label)
        return fig

    no_between = None if alphas else "No α ≠ 0 with between pairs (α = 0 runs missing?)."
    return [
        _spec("fig3a", "Fig. 3a", "CCA distance by layer", cap_a + extra, draw_a, None),
        _spec(
            "fig3b",
            "Fig. 3b",
            "CCA distance ratio vs α",
            cap_b + extra,
            draw_b if alphas else None,
            no_between,
        ),
    ]


def global_figure_specs(data: ReportData, settings: Sequence[Setting], n_resamples: int) -> list[FigureSpec]:
    """Figures across settings: models side by side (A12), leaky-ReLU slopes (A10)."""
    nr = n_resamples
    done = data.runs[data.runs["status"] == "completed"] if not data.runs.empty else data.runs
    specs: list[FigureSpec] = []
    if done.empty:
        return specs
    # A12: models side by side, within one activation setting.
    for (act, slope), sub in done.groupby(["activation", "negative_slope"], sort=True, dropna=False):
        if sub["model"].nunique() < 2:
            continue
        tag = "" if act == "relu" else f" ({act} {float(slope):g})"

        def draw_a12(sub: pd.DataFrame = sub, tag: str = tag) -> Figure:
            fig, (a, b) = _panels(2)
            plots.plot_model_comparison(
                sub, a, "mean_selectivity", n_resamples=nr, title="Mean class selectivity" + tag
            )
            plots.plot_model_comparison(sub, b, "test_accuracy", n_resamples=nr, title="Test accuracy" + tag)
            return fig

        specs.append(
            _spec(
                f"figA12-{slug(f'{act} {slope}')}",
                "Fig. A12",
                "Model comparison" + tag,
                "Mean class selectivity (left) and test accuracy (right) vs α, one line per model, mean and "
                "95% CI over seeds (n = completed runs per model).",
                draw_a12,
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

        def draw_a10(sub: pd.DataFrame = sub, model: str = str(model)) -> Figure:
            fig, axes = _panels(3, (5.2, 4.4))
            for ax, v, t in zip(
                axes,
                ("test_accuracy", "mean_selectivity", "dead_fraction"),
                ("test accuracy", "class selectivity", "dead units"),
            ):
                plots.plot_leaky_relu(sub, ax, v, n_resamples=nr, title=f"{model}: {t}")
            return fig

        specs.append(
            _spec(
                f"figA10-{slug(str(model))}",
                "Fig. A10",
                f"{model}: leaky ReLU",
                "Test accuracy (left), mean class selectivity (middle) and proportion of dead units (right) "
                "vs α, one line per leaky-ReLU negative slope (0 = ReLU), mean and 95% CI over seeds.",
                draw_a10,
                None,
            )
        )
    return specs


def render_spec(spec: FigureSpec, prefix: str, ctx: ReportContext) -> FigureItem:
    """Draw ``spec`` into ``figures/<prefix>-<key>.png``; a failure becomes the item's note."""
    fid = f"{prefix}-{spec.key}" if prefix else spec.key
    # Multi-panel and per-layer figures (many x labels) span the whole row.
    return figure_item(
        ctx,
        fid,
        spec.paper,
        spec.title,
        spec.caption,
        spec.draw,
        note=spec.note,
        wide=True if spec.key in _WIDE else None,
    )


def _joint(
    by_alpha: dict[str, pd.DataFrame], done: pd.DataFrame, x: str, y: str
) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The precomputed per-alpha summaries of ``x`` and ``y`` when they cover the same runs.

    A plot of ``y`` against ``x`` averages the runs where both are finite; the summaries
    of each column alone cover the same runs unless one is missing somewhere.
    """
    if x not in by_alpha or y not in by_alpha or done.empty:
        return None
    vals = done[[x, y]].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(vals)
    return (by_alpha[x], by_alpha[y]) if (ok[:, 0] == ok[:, 1]).all() else None


def has_both_signs(runs: pd.DataFrame) -> bool:
    """Whether some ``|alpha|`` was run with both signs (Fig. 5 has something to compare)."""
    a = normalise_alpha(runs["alpha"].to_numpy(float)) if "alpha" in runs.columns else np.array([])
    a = a[np.isfinite(a)]
    return bool(np.intersect1d(np.abs(a[a > 0]), np.abs(a[a < 0])).size)


def sweep_figure_specs(
    runs: pd.DataFrame,
    layers: pd.DataFrame | None = None,
    *,
    n_resamples: int = 2000,
) -> list[FigureSpec]:
    """The standard figures of a sweep, one panel per model (see :func:`sweep_figures`)."""
    done = completed_runs(runs)
    by_model = facets(done)

    def faceted(
        suptitle: str, draw_one: Callable[[pd.DataFrame, Axes], object], sets: list, panel=PANEL_SIZE
    ) -> Callable[[], Figure]:
        def draw() -> Figure:
            fig, axes = panel_figure(len(sets), panel=panel)
            for (_, sub), ax in zip(sets, axes):
                draw_one(sub, ax)
            fig.suptitle(suptitle)
            return fig

        return draw

    nr = n_resamples
    specs = [
        FigureSpec(
            "selectivity_vs_alpha",
            "Mean class selectivity vs regularisation scale",
            faceted(
                "Mean class selectivity vs regularisation scale",
                lambda d, ax: plot_selectivity_vs_alpha(d, ax, n_resamples=nr, title=facet_title(d)),
                by_model,
            ),
            paper="Fig. 1b",
        ),
        FigureSpec(
            "accuracy_vs_alpha",
            "Test accuracy vs regularisation scale",
            faceted(
                "Test accuracy vs regularisation scale",
                lambda d, ax: plot_accuracy_vs_alpha(d, ax, n_resamples=nr, title=facet_title(d)),
                by_model,
            ),
            paper="Fig. 2a",
        ),
    ]
    if has_both_signs(done):
        specs.append(
            FigureSpec(
                "promote_vs_penalise",
                "Promoting vs penalising class selectivity",
                faceted(
                    "Promoting vs penalising class selectivity",
                    lambda d, ax: plot_promote_vs_penalise(d, ax, n_resamples=nr, title=facet_title(d)),
                    by_model,
                ),
                paper="Fig. 5a",
            )
        )
    if layers is not None:
        title = "Mean class selectivity by layer (95% CI over seeds)"
        specs.append(
            FigureSpec(
                "layer_selectivity",
                title,
                faceted(
                    title,
                    lambda d, ax: plot_layer_selectivity(d, ax, n_resamples=nr, title=facet_title(d)),
                    facets(layers),
                    panel=(7.5, 4.8),
                ),
                paper="Fig. 1a",
            )
        )
    return specs


def sweep_figures(
    runs: pd.DataFrame,
    layers: pd.DataFrame | None = None,
    *,
    n_resamples: int = 2000,
) -> dict[str, Figure]:
    """The standard figures of a sweep, one panel per model.

    Parameters
    ----------
    runs : pandas.DataFrame
        Runs frame (all statuses; completed runs are plotted).
    layers : pandas.DataFrame, optional
        Layers frame; adds ``"layer_selectivity"``.
    n_resamples : int, default 2000
        Bootstrap resamples for every CI.

    Returns
    -------
    dict of str to matplotlib.figure.Figure
        ``"selectivity_vs_alpha"`` (Fig. 1b), ``"accuracy_vs_alpha"`` (Fig. 2a/4a),
        ``"promote_vs_penalise"`` (Fig. 5a; only when some ``|alpha|`` was run with
        both signs), ``"layer_selectivity"`` (Fig. 1a; only with ``layers``). Each
        figure has one panel per model (and per activation setting when several are
        present), at most three per row. Nothing is saved: see :func:`save_figure`.
    """
    return {
        spec.key: spec.draw()
        for spec in sweep_figure_specs(runs, layers, n_resamples=n_resamples)
        if spec.draw is not None
    }


def facet_title(df: pd.DataFrame) -> str:
    return describe(df) or "all runs"
