"""Paper-2 plot functions: they draw what the caller computed, in the shared style (no training)."""

import numpy as np
import pandas as pd
import pytest
from matplotlib import colors as mcolors

from selectivity.plots.geometry import (
    plot_change_dimensionality,
    plot_dimensionality_by_layer,
    plot_dimensionality_vs_selectivity,
    plot_gradient_variability,
)
from selectivity.plots.robustness import (
    plot_accuracy_vs_severity,
    plot_attack_accuracy_vs_epsilon,
    plot_corruption_accuracy_vs_alpha,
    plot_robustness_vs_selectivity,
)
from selectivity.plots.style import ZERO_COLOR, alpha_palette


def _summary(x: str, xs, alphas=(-2.0, 0.0, 5.0)) -> pd.DataFrame:
    """Hand-made per-alpha statistics: mean 0.5 + 0.01 * alpha - 0.05 * i, CI +- 0.02, n = 3."""
    rows = [
        dict(
            alpha=a,
            **{x: v},
            n=3,
            mean=0.5 + 0.01 * a - 0.05 * i,
            ci_low=0.48 + 0.01 * a - 0.05 * i,
            ci_high=0.52 + 0.01 * a - 0.05 * i,
        )
        for a in alphas
        for i, v in enumerate(xs)
    ]
    return pd.DataFrame(rows)


def _line(ax, alpha):
    (line,) = [ln for ln in ax.get_lines() if ln.get_gid() == f"alpha:{alpha:g}"]
    return line


def test_severity_lines_are_the_given_means_in_percent_with_integer_ticks():
    s = _summary("severity", [1, 3, 5])
    ax = plot_accuracy_vs_severity(s)
    assert list(ax.get_xticks()) == [1, 3, 5] and [t.get_text() for t in ax.get_xticklabels()] == [
        "1",
        "3",
        "5",
    ]
    line = _line(ax, 0.0)
    np.testing.assert_allclose(line.get_ydata(), [50.0, 45.0, 40.0])  # 0.5, 0.45, 0.40 in percent
    assert mcolors.to_rgba(line.get_color()) == ZERO_COLOR  # alpha = 0: grey, visible on white
    assert mcolors.to_rgba(_line(ax, 5.0).get_color()) == alpha_palette([-2.0, 0.0, 5.0])[5.0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["-2", "0", "5"]
    assert ax.get_legend().get_title().get_text() == "α"


def test_epsilon_axis_is_linear_in_units_of_one_255th():
    s = _summary("epsilon", [1 / 255, 4 / 255, 8 / 255])
    ax = plot_attack_accuracy_vs_epsilon(s, "pgd", norm="linf")
    assert ax.get_xscale() == "linear"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "4", "8"]
    assert "1/255" in ax.get_xlabel() and "L∞" in ax.get_xlabel() and "PGD" in ax.get_ylabel()
    x = _line(ax, 0.0).get_xdata()
    assert np.allclose(x, [1, 4, 8], atol=0.2)  # alphas are dodged by a few percent of the span only


def test_alpha_plot_draws_runs_means_and_cis():
    runs = pd.DataFrame(dict(alpha=[-2.0, -2.0, 0.0, 0.0, 5.0, 5.0], acc=[0.4, 0.42, 0.5, 0.52, 0.3, 0.36]))
    summ = pd.DataFrame(
        dict(
            alpha=[-2.0, 0.0, 5.0],
            n=2,
            mean=[0.41, 0.51, 0.33],
            ci_low=[0.4, 0.5, 0.3],
            ci_high=[0.42, 0.52, 0.36],
        )
    )
    ax = plot_corruption_accuracy_vs_alpha(runs, summ, "acc")
    assert ax.get_xscale() == "symlog"
    (runs_pts,) = [c for c in ax.collections if c.get_gid() == "runs"]
    np.testing.assert_allclose(runs_pts.get_offsets()[:, 1], runs["acc"] * 100)
    means = {
        ln.get_gid(): ln.get_ydata()[0] for ln in ax.get_lines() if str(ln.get_gid()).startswith("mean:")
    }
    assert means == pytest.approx({"mean:-2": 41.0, "mean:0": 51.0, "mean:5": 33.0})
    (base,) = [ln for ln in ax.get_lines() if ln.get_gid() == "baseline"]
    assert base.get_ydata()[0] == pytest.approx(51.0)


def test_selectivity_scatter_is_coloured_by_alpha_and_titled_with_the_given_rho():
    runs = pd.DataFrame(dict(alpha=[-2.0, 0.0, 5.0], mean_selectivity=[0.1, 0.2, 0.3], rel=[0.9, 0.8, 0.7]))
    ax = plot_robustness_vs_selectivity(
        runs, "rel", {"rho": -1.0, "ci_low": -1.0, "ci_high": -0.5, "p": 0.0, "n": 3}
    )
    pal = alpha_palette(runs["alpha"])
    for a in (-2.0, 0.0, 5.0):
        (pts,) = [c for c in ax.collections if c.get_gid() == f"alpha:{a:g}"]
        assert tuple(pts.get_facecolor()[0]) == pytest.approx(pal[a])
    assert ax.get_title() == "Spearman ρ = -1.00 [-1.00, -0.50], p = 0, n = 3"


def test_geometry_plots_take_an_axes_and_return_it():
    from selectivity.plots.style import new_ax

    layers = pd.DataFrame(
        [
            dict(alpha=a, layer_index=i, layer=f"l{i}", value=float(i + a))
            for a in (-1.0, 0.0)
            for i in range(3)
            for _ in range(2)
        ]
    )
    for draw in (plot_dimensionality_by_layer, plot_change_dimensionality):
        ax = new_ax(None)
        assert draw(layers, ax) is ax
        assert (
            mcolors.to_rgba(ax.get_lines()[1].get_color()) == ZERO_COLOR
        )  # alpha = 0: the grey of every figure
    pts = pd.DataFrame(
        dict(alpha=[-1.0, 0.0, 1.0], selectivity=[0.1, 0.2, 0.3], dimensionality=[5.0, 4.0, 3.0])
    )
    ax = plot_dimensionality_vs_selectivity(pts, -1.0, (-1.0, -1.0), 0.0)
    assert ax.get_title().startswith("Spearman ρ = -1.00 [-1.00, -1.00]")
    ax = plot_gradient_variability(pd.DataFrame(dict(alpha=[-1.0, 0.0, 1.0], value=[0.2, 0.3, 0.4])))
    assert ax.get_xscale() == "symlog"
