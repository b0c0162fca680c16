"""Summary tables and figures on a synthetic sweep (no training, a few seconds)."""

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from selectivity import plots
from selectivity.analysis.summary import group_summary, layer_table, summary_table
from selectivity.plots import style as plots_style
from selectivity.report import figures as report_figures
from selectivity.report.summary import format_summary, write_summary

ALPHAS = [-10.0, -1.0, -0.1, 0.0, 0.1, 1.0, 5.0]
MODELS = ["resnet20", "vgg16"]
SEEDS = [0, 1, 2]
LAYER_NAMES = ["act", "layer1.0.act1", "layer1.0.act2", "layer2.0.act1"]
NRES = 200  # bootstrap resamples: enough for the tests, fast


def _make_runs() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for model in MODELS:
        for a in ALPHAS:
            for s in SEEDS:
                acc = 0.91 - 0.002 * abs(a) * (1 if a < 0 else 10) + rng.normal(0, 0.003)
                si = float(np.clip(0.22 * np.exp(0.3 * a) + rng.normal(0, 0.01), 0.001, 0.99))
                rows.append(
                    dict(
                        run_id=f"{model}_a{a:g}_s{s}",
                        model=model,
                        alpha=a,
                        seed=s,
                        status="completed",
                        message=None,
                        test_accuracy=acc,
                        best_val_accuracy=acc + 0.01,
                        best_epoch=150,
                        mean_selectivity=si,
                        mean_precision=0.3,
                        dead_fraction=0.01,
                        train_seconds=10.0,
                        epochs=200,
                        activation="relu",
                        negative_slope=0.0,
                    )
                )
    runs = pd.DataFrame(rows)
    metric_cols = [
        "test_accuracy",
        "best_val_accuracy",
        "best_epoch",
        "mean_selectivity",
        "mean_precision",
        "dead_fraction",
    ]
    extra = []
    for status, a in (("failed", -1.0), ("diverged", 5.0)):
        r = runs[(runs.model == "resnet20") & (runs.alpha == a)].iloc[0].copy()
        r["run_id"], r["seed"], r["status"], r["message"] = f"x_{status}", 99, status, status
        r[metric_cols] = np.nan
        extra.append(r)
    return pd.concat([runs, pd.DataFrame(extra)], ignore_index=True)


def _make_layers(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in runs[runs.status == "completed"].iterrows():
        for i, name in enumerate(LAYER_NAMES):
            rows.append(
                dict(
                    run_id=r.run_id,
                    model=r.model,
                    alpha=r.alpha,
                    seed=r.seed,
                    activation="relu",
                    negative_slope=0.0,
                    layer=name,
                    layer_index=i,
                    units=16 * (i + 1),
                    selectivity=r.mean_selectivity * (0.5 + 0.3 * i),
                    dead_fraction=0.01 * i,
                    precision=0.2 + 0.05 * i,
                )
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def runs():
    return _make_runs()


@pytest.fixture(scope="module")
def layers(runs):
    return _make_layers(runs)


@pytest.fixture(scope="module")
def one(runs):
    return runs[runs.model == "resnet20"]


def _rgba(c):
    return np.asarray(c, dtype=float).ravel()[:4]


def _by_gid(ax, gid):
    found = [a for a in [*ax.lines, *ax.collections] if a.get_gid() == gid]
    assert found, f"no artist with gid {gid!r}: {[a.get_gid() for a in [*ax.lines, *ax.collections]]}"
    return found[0]


def _check_axes(ax):
    assert isinstance(ax, Axes)
    assert ax.get_xlabel().strip() and ax.get_ylabel().strip()
    assert ax.get_title().strip()


def _check_scatter_signs(coll):
    """Points at alpha < 0 are blue-ish, at alpha > 0 red-ish (x is jittered: alpha = 0
    points may sit at +-0.02, the smallest |alpha| used is 0.1)."""
    x = coll.get_offsets()[:, 0]
    fc = coll.get_facecolors()
    assert len(fc) == len(x)
    neg, pos = x < -0.05, x > 0.05
    assert neg.any() and pos.any()
    assert np.all(fc[neg, 2] > fc[neg, 0])
    assert np.all(fc[pos, 0] > fc[pos, 2])


# ----------------------------------------------------------------------------- summary
def test_summary_table_counts_and_means(runs):
    t = summary_table(runs, n_resamples=NRES)
    done = runs[runs.status == "completed"]
    ref = (
        done.groupby(["model", "alpha"])
        .agg(n=("seed", "size"), acc=("test_accuracy", "mean"), si=("mean_selectivity", "mean"))
        .reset_index()
    )
    assert len(t) == len(ref) == len(MODELS) * len(ALPHAS)
    m = t.merge(ref, on=["model", "alpha"])
    np.testing.assert_array_equal(m["n_x"].to_numpy(), m["n_y"].to_numpy())
    np.testing.assert_allclose(t["test_accuracy_mean"], ref["acc"])
    np.testing.assert_allclose(t["mean_selectivity_mean"], ref["si"])
    for m_ in ("test_accuracy", "mean_selectivity"):
        assert np.all(t[f"{m_}_ci_low"] <= t[f"{m_}_mean"] + 1e-12)
        assert np.all(t[f"{m_}_ci_high"] >= t[f"{m_}_mean"] - 1e-12)
    # Sorted by model then alpha.
    assert list(t["model"]) == sorted(t["model"])
    for _, sub in t.groupby("model"):
        assert list(sub["alpha"]) == sorted(sub["alpha"])
    # Failures counted where they happened, nowhere else.
    row = lambda a: t[(t.model == "resnet20") & (t.alpha == a)].iloc[0]  # noqa: E731
    assert row(-1.0)["n_failed"] == 1 and row(-1.0)["n_diverged"] == 0
    assert row(5.0)["n_diverged"] == 1 and row(5.0)["n_failed"] == 0
    assert t["n_failed"].sum() == 1 and t["n_diverged"].sum() == 1


def test_summary_table_adds_varying_config_and_handles_edge_cases(runs):
    leaky = runs[runs.model == "resnet20"].assign(activation="leaky_relu", negative_slope=0.1)
    t = summary_table(pd.concat([runs, leaky]), n_resamples=NRES)
    assert {"activation", "negative_slope"} <= set(t.columns)
    assert len(t) == 3 * len(ALPHAS)
    # One seed: no CI; group with only failed runs: n = 0, NaN metrics.
    single = runs[(runs.seed == 0) | (runs.status != "completed")]
    only_failed = pd.DataFrame([{**runs.iloc[-2].to_dict(), "alpha": 42.0}])
    t1 = summary_table(pd.concat([single, only_failed]), n_resamples=NRES)
    assert (t1.loc[t1.alpha != 42, "n"] == 1).all()
    assert t1.loc[t1.alpha != 42, "test_accuracy_ci_low"].isna().all()
    r42 = t1[t1.alpha == 42].iloc[0]
    assert r42["n"] == 0 and np.isnan(r42["test_accuracy_mean"]) and r42["n_failed"] == 1
    assert "-" in format_summary(t1)
    # Empty frame.
    t0 = summary_table(runs.iloc[:0])
    assert t0.empty and "n" in t0.columns
    assert "no runs" in format_summary(t0)


def test_format_summary_and_write(runs, tmp_path):
    t = summary_table(runs, n_resamples=NRES)
    text = format_summary(t)
    lines = text.splitlines()
    assert "%" in text and "n" in lines[0].split() and "alpha" in lines[0]
    assert len(lines) == len(t) + 3  # header, rule, rows, footnote
    r = t.iloc[0]
    assert f"{r.test_accuracy_mean * 100:.2f}%" in text
    assert f"{r.mean_selectivity_mean:.3f}" in text
    assert " 3 " in lines[2]  # n = 3 seeds
    paths = write_summary(runs, tmp_path / "out", n_resamples=NRES)
    back = pd.read_csv(paths["csv"])
    assert len(back) == len(t)
    assert paths["txt"].read_text().startswith(lines[0])


def test_layer_table(layers):
    lt = layer_table(layers, n_resamples=NRES)
    ref = layers.groupby(["model", "alpha", "layer_index", "layer"])["selectivity"].mean().reset_index()
    assert len(lt) == len(ref)
    np.testing.assert_allclose(lt["selectivity_mean"], ref["selectivity"])
    assert (lt["n"] == 3).all()
    assert np.all(lt["selectivity_ci_low"] <= lt["selectivity_mean"] + 1e-12)
    # All-dead layer (NaN selectivity) is dropped from its mean.
    d = layers.copy()
    d.loc[d.index[0], "selectivity"] = np.nan
    lt2 = layer_table(d, n_resamples=NRES)
    assert lt2["n"].min() == 2
    g = group_summary(layers, ["model"], "dead_fraction", n_resamples=NRES)
    assert list(g.columns) == ["model", "n", "mean", "ci_low", "ci_high", "std"]


# ----------------------------------------------------------------------------- colours
def test_alpha_colours():
    blue, red, grey = plots.alpha_color(-1), plots.alpha_color(1), plots.alpha_color(0)
    assert blue[2] > blue[0] and red[0] > red[2]
    assert grey[0] == grey[1] == grey[2]
    # Darker (lower luminance) for larger |alpha|.
    lum = lambda c: 0.3 * c[0] + 0.59 * c[1] + 0.11 * c[2]  # noqa: E731
    assert lum(plots.alpha_color(-10)) < lum(plots.alpha_color(-0.1))
    assert lum(plots.alpha_color(5, max_abs=5)) < lum(plots.alpha_color(0.1, max_abs=5))
    pal = plots.alpha_palette(ALPHAS + [np.nan, 1.0])
    assert list(pal) == ALPHAS
    assert pal[5.0] == plots.alpha_color(5.0, max_abs=10)
    with pytest.raises(ValueError):
        plots.alpha_color(np.nan)


def _gui_state_uses(path: Path) -> list[str]:
    """Imports of pyplot and calls of matplotlib.use / switch_backend in one source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if "pyplot" in (node.module or "") or "pyplot" in [a.name for a in node.names]:
                found.append(f"{path.name}:{node.lineno} imports pyplot")
        elif isinstance(node, ast.Import):
            found += [f"{path.name}:{node.lineno} imports {a.name}" for a in node.names if "pyplot" in a.name]
        elif isinstance(node, ast.Attribute) and node.attr in ("use", "switch_backend"):
            if isinstance(node.value, ast.Name) and node.value.id in ("matplotlib", "mpl"):
                found.append(f"{path.name}:{node.lineno} calls matplotlib.{node.attr}")
    return found


def test_no_module_touches_pyplot_or_the_backend():
    # Static check of every module of the package (a subprocess import costs seconds of
    # torch import): no pyplot, no matplotlib.use, so a library call never picks a GUI
    # backend or leaves figures in pyplot's global registry.
    root = Path(plots.__file__).parents[1]
    files = sorted(root.rglob("*.py"))
    assert len(files) > 50 and Path(plots_style.__file__) in files  # the whole package is scanned
    found = [hit for f in files for hit in _gui_state_uses(f)]
    assert found == []


def test_the_gui_state_check_finds_each_form(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "import matplotlib\nimport matplotlib.pyplot as plt\nfrom matplotlib import pyplot\nmatplotlib.use('Agg')\n"
    )
    assert [h.split(" ", 1)[1] for h in _gui_state_uses(src)] == [
        "imports matplotlib.pyplot",
        "imports pyplot",
        "calls matplotlib.use",
    ]


# ----------------------------------------------------------------------------- plots
def _plot_calls(runs, layers, one):
    """(name, callable(data, ax), data, gid of a coloured-by-alpha scatter or None)."""
    lay1 = layers[layers.model == "resnet20"]
    cca = pd.DataFrame(
        [
            dict(
                alpha=a,
                layer_index=i,
                layer=n,
                distance_within=0.1 + 0.01 * i + 0.01 * k,
                distance_between=0.2 + 0.05 * abs(a) + 0.01 * k,
            )
            for a in (-10.0, -1.0, 1.0)
            for i, n in enumerate(LAYER_NAMES)
            for k in range(3)
        ]
    )
    ratio = pd.DataFrame(
        [
            dict(alpha=a, seed=k, ratio=1.5 + 0.1 * abs(a) + 0.05 * k)
            for a in (-10.0, -1.0, -0.1, 0.1, 1.0)
            for k in range(3)
        ]
    )
    leaky = pd.concat(
        [
            one.assign(activation="relu", negative_slope=0.0),
            one.assign(activation="leaky_relu", negative_slope=0.1),
            one.assign(activation="leaky_relu", negative_slope=0.5),
        ]
    )
    kw = dict(n_resamples=NRES)
    return [
        ("selectivity_vs_alpha", lambda d, ax: plots.plot_selectivity_vs_alpha(d, ax, **kw), one, "seeds"),
        ("accuracy_points", lambda d, ax: plots.plot_accuracy_vs_alpha(d, ax, **kw), one, "seeds"),
        (
            "accuracy_violin",
            lambda d, ax: plots.plot_accuracy_vs_alpha(d, ax, kind="violin", **kw),
            one,
            None,
        ),
        ("promote_vs_penalise", lambda d, ax: plots.plot_promote_vs_penalise(d, ax, **kw), one, None),
        ("layer_selectivity", lambda d, ax: plots.plot_layer_selectivity(d, ax, **kw), lay1, None),
        (
            "layer_precision",
            lambda d, ax: plots.plot_layer_selectivity(d, ax, value="precision", **kw),
            lay1,
            None,
        ),
        (
            "layer_dead",
            lambda d, ax: plots.plot_layer_selectivity(d, ax, value="dead_fraction", **kw),
            lay1,
            None,
        ),
        ("accuracy_vs_selectivity", lambda d, ax: plots.plot_accuracy_vs_selectivity(d, ax, **kw), one, None),
        ("model_comparison", lambda d, ax: plots.plot_model_comparison(d, ax, **kw), runs, None),
        ("cca_distance", lambda d, ax: plots.plot_cca_distance_by_layer(d, ax, **kw), cca, None),
        ("cca_ratio", lambda d, ax: plots.plot_cca_ratio(d, ax, **kw), ratio, "seeds"),
        ("leaky_relu", lambda d, ax: plots.plot_leaky_relu(d, ax, **kw), leaky, None),
    ]


@pytest.fixture(scope="module")
def calls(runs, layers, one):
    return _plot_calls(runs, layers, one)


def test_every_plot_returns_labelled_axes_on_given_and_new_ax(calls):
    for name, fn, data, gid in calls:
        ax = fn(data, None)
        _check_axes(ax)
        fig = Figure()
        given = fig.add_subplot()
        assert fn(data, given) is given, name
        if gid is not None:
            _check_scatter_signs(_by_gid(given, gid))


def test_every_plot_handles_empty_frames(calls):
    for name, fn, data, _ in calls:
        ax = fn(data.iloc[:0], None)
        assert isinstance(ax, Axes), name
        assert ax.get_xlabel() and ax.get_ylabel(), name
        assert any(t.get_text() for t in ax.texts), name


def test_runs_plots_ignore_non_completed_and_nan(one):
    # Only failed/diverged runs -> the "no completed runs" panel.
    bad = one[one.status != "completed"]
    ax = plots.plot_selectivity_vs_alpha(bad)
    assert "no completed runs" in [t.get_text() for t in ax.texts]
    # A completed run with NaN selectivity is dropped, not plotted.
    d = one.copy()
    d.loc[d.index[0], "mean_selectivity"] = np.nan
    ax = plots.plot_selectivity_vs_alpha(d, n_resamples=NRES)
    assert len(_by_gid(ax, "seeds").get_offsets()) == (one.status == "completed").sum() - 1


def test_alpha_colours_of_line_artists(one, layers):
    ax = plots.plot_selectivity_vs_alpha(one, n_resamples=NRES)
    for a, is_blue in ((-10, True), (5, False)):
        c = _rgba(_by_gid(ax, f"mean:{a:g}").get_color())
        assert (c[2] > c[0]) == is_blue
    ax = plots.plot_layer_selectivity(layers[layers.model == "vgg16"], n_resamples=NRES)
    assert _rgba(_by_gid(ax, "alpha:-1").get_color())[2] > _rgba(_by_gid(ax, "alpha:-1").get_color())[0]
    assert _rgba(_by_gid(ax, "alpha:1").get_color())[0] > _rgba(_by_gid(ax, "alpha:1").get_color())[2]
    assert len([t for t in ax.get_xticklabels() if t.get_text() in LAYER_NAMES]) == len(LAYER_NAMES)
    ax = plots.plot_promote_vs_penalise(one, n_resamples=NRES)
    pen, pro = _rgba(_by_gid(ax, "penalise").get_color()), _rgba(_by_gid(ax, "promote").get_color())
    assert pen[2] > pen[0] and pro[0] > pro[2]
    assert ax.get_xscale() == "log"
    _by_gid(ax, "baseline")
    ax = plots.plot_accuracy_vs_alpha(one, kind="violin", n_resamples=NRES)
    v_neg, v_pos = _by_gid(ax, "violin:-10"), _by_gid(ax, "violin:5")
    assert v_neg.get_facecolor()[0][2] > v_neg.get_facecolor()[0][0]
    assert v_pos.get_facecolor()[0][0] > v_pos.get_facecolor()[0][2]
    ax = plots.plot_accuracy_vs_selectivity(one, n_resamples=NRES)
    _check_scatter_signs_by_alpha(ax, one)


def _check_scatter_signs_by_alpha(ax, one):
    coll = _by_gid(ax, "runs")
    done = one[one.status == "completed"]
    fc = coll.get_facecolors()
    a = done["alpha"].to_numpy()
    assert np.all(fc[a < 0, 2] > fc[a < 0, 0]) and np.all(fc[a > 0, 0] > fc[a > 0, 2])


def test_alpha_axis_is_symlog_with_plain_labels(one):
    ax = plots.plot_accuracy_vs_alpha(one, n_resamples=NRES)
    assert ax.get_xscale() == "symlog"
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert "-10" in labels and "0" in labels and "1" in labels


def test_single_seed_and_single_alpha(one):
    single = one[(one.seed == 0) & (one.status == "completed")]
    for fn in (
        plots.plot_selectivity_vs_alpha,
        plots.plot_accuracy_vs_alpha,
        plots.plot_promote_vs_penalise,
        plots.plot_accuracy_vs_selectivity,
    ):
        _check_axes(fn(single, n_resamples=NRES))
    _check_axes(plots.plot_accuracy_vs_alpha(single, kind="violin", n_resamples=NRES))
    zero = one[one.alpha == 0]
    _check_axes(plots.plot_selectivity_vs_alpha(zero, n_resamples=NRES))
    _check_axes(plots.plot_accuracy_vs_alpha(zero, kind="violin", n_resamples=NRES))
    ax = plots.plot_promote_vs_penalise(zero, n_resamples=NRES)
    assert any("α ≠ 0" in t.get_text() for t in ax.texts)


def test_mixed_models_are_refused_unless_selected(runs):
    with pytest.raises(ValueError, match="model"):
        plots.plot_selectivity_vs_alpha(runs)
    _check_axes(plots.plot_selectivity_vs_alpha(runs, model="vgg16", n_resamples=NRES))


def test_save_figure_writes_png(one, tmp_path):
    ax = plots.plot_accuracy_vs_alpha(one, n_resamples=NRES)
    p = plots.save_figure(ax, tmp_path / "sub" / "acc.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    p2 = plots.save_figure(ax.get_figure(), tmp_path / "noext")
    assert p2.suffix == ".png" and p2.read_bytes()[:4] == b"\x89PNG"


def test_sweep_figures(runs, layers, tmp_path):
    figs = report_figures.sweep_figures(runs, layers, n_resamples=NRES)
    assert set(figs) == {
        "selectivity_vs_alpha",
        "accuracy_vs_alpha",
        "promote_vs_penalise",
        "layer_selectivity",
    }
    for f in figs.values():
        assert isinstance(f, Figure)
        assert len(f.axes) >= len(MODELS)
    assert [ax.get_title() for ax in figs["accuracy_vs_alpha"].axes][:2] == MODELS
    # Only penalising alphas: no promote-vs-penalise figure.
    neg = runs[runs.alpha <= 0]
    assert set(report_figures.sweep_figures(neg, n_resamples=NRES)) == {
        "selectivity_vs_alpha",
        "accuracy_vs_alpha",
    }
    # Empty sweep still gives labelled panels.
    empty = report_figures.sweep_figures(runs.iloc[:0], n_resamples=NRES)
    assert set(empty) == {"selectivity_vs_alpha", "accuracy_vs_alpha"}
    plots.save_figure(figs["accuracy_vs_alpha"], tmp_path / "acc.png")
