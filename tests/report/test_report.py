"""The sweep report (HTML, figures, tables) and the CCA analysis, on a tiny real sweep.

One sweep of 6 one-epoch ResNet20 runs (alpha -1, 0, +1 x seeds 0, 1; 128 training
images) is trained once per module; everything else reads it. About 40 s on 2 cores.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from scipy import stats as sps

from selectivity.cli import main
from selectivity.evaluate.cca import (
    CCA_CSV,
    CCASettings,
    cca_plot_frame,
    cca_summary,
    check_datapoints,
    gather_activations,
    layer_distances,
    plan_pairs,
    select_images,
    sweep_cca,
)
from selectivity.report import TITLE, build_report
from selectivity.run.files import read_json, write_json
from selectivity.sweep import SweepSpec, open_store, run_sweep

TINY = dict(epochs=1, batch_size=64, train_subset=128, eval_subset=100, val_size=500, top_n=10, num_threads=1)
N_IMAGES = 400  # >= 5 x 64 channels (the widest ResNet20 layer) with spatial_mean
N_LAYERS = 19  # ResNet20 selectivity sites: stem + 2 per block x 9 blocks
SETTING_FIGS = ["fig1a", "fig1b", "fig2a", "fig2b", "fig2c", "fig5a", "figA7", "figA9"]
CCA_FIGS = ["fig3a", "fig3b"]
PAPER_LABELS = [
    "Fig. 1a",
    "Fig. 1b",
    "Fig. 2a",
    "Fig. 2b",
    "Fig. 2c",
    "Fig. 5a",
    "Fig. A7",
    "Fig. A9",
    "Fig. 3a",
    "Fig. 3b",
]


def _quiet(_msg):
    pass


@pytest.fixture(scope="module")
def sweep(cifar_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "sweep"
    spec = SweepSpec(
        models=["resnet20"], alphas=[-1.0, 0.0, 1.0], seeds=[0, 1], preset="paper", overrides=dict(TINY)
    )
    df = run_sweep(
        spec, out, executor="inprocess", data=str(cifar_data), progress=False, summarize=False, log=_quiet
    )
    assert (df.status == "completed").all(), df[["run_id", "status", "message"]]
    return out


@pytest.fixture(scope="module")
def cca_df(sweep, cifar_data) -> pd.DataFrame:
    return sweep_cca(sweep, CCASettings(n_images=N_IMAGES), cifar_data, progress=False)


@pytest.fixture(scope="module")
def report_dir(sweep, cifar_data, cca_df, tmp_path_factory) -> Path:
    """The report made through the CLI (reuses the CCA table written by ``cca_df``)."""
    out = tmp_path_factory.mktemp("report-out")
    r = CliRunner().invoke(
        main,
        [
            "report",
            str(sweep),
            "--out",
            str(out),
            "--cca",
            "--data",
            str(cifar_data),
            "--cca-images",
            str(N_IMAGES),
            "--resamples",
            "200",
        ],
    )
    assert r.exit_code == 0, r.output
    assert str(out / "report.html") in r.output
    return out


@pytest.fixture(scope="module")
def page(report_dir) -> str:
    return (report_dir / "report.html").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- report
def test_report_has_every_figure_embedded_and_saved(report_dir, page):
    imgs = re.findall(r"<img [^>]*src=\"([^\"]+)\"", page)
    expected = [f"resnet20-{k}" for k in SETTING_FIGS + CCA_FIGS]
    assert len(imgs) == len(expected)  # one model, one activation: no A10 / A12
    assert all(src.startswith("data:image/png;base64,") for src in imgs)
    for fid in expected:
        assert f'<figure id="{fid}"' in page, fid
        png = report_dir / "figures" / f"{fid}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    for label in PAPER_LABELS:
        assert f"<b>{label}" in page, label
    assert (
        "counts every unit" in page and "dead units removed (Fig. A9b)" in page
    )  # A9 caption: both SI measures
    assert "tables/cca-by-layer.csv" in page and (report_dir / "tables" / "cca-by-layer.csv").exists()
    assert "figA12" not in page and "figA10" not in page


def test_report_tables_match_the_store(sweep, report_dir, page):
    with open_store(sweep) as store:
        runs = store.runs_df()
    for a, sub in runs.groupby("alpha"):
        assert f"{sub.test_accuracy.mean() * 100:.2f}%" in page, a
        assert f"{sub.mean_selectivity.mean():.3f} [" in page, a
    for header in (
        "test accuracy (95% CI)",
        "mean SI (95% CI)",
        "t (Student)",
        "family (m)",
        "p (Bonferroni)",
        "z (rank-sum)",
        "mean ρ(α, 0)",
    ):
        assert f"<th>{header}</th>" in page, header
    summary = pd.read_csv(report_dir / "tables" / "resnet20-summary.csv")
    assert summary["n"].tolist() == [2, 2, 2] and summary["alpha"].tolist() == [-1.0, 0.0, 1.0]
    tt = pd.read_csv(report_dir / "tables" / "resnet20-ttest-mean_selectivity.csv")
    base = runs[runs.alpha == 0].mean_selectivity
    for _, row in tt.iterrows():
        vals = runs[runs.alpha == row["alpha"]].mean_selectivity
        ref = sps.ttest_ind(vals, base)  # Student's t-test, the paper's "t-test"
        assert row["n"] == 2 and row["statistic"] == pytest.approx(ref.statistic)
        # alpha = -1 (Fig. 2) and alpha = +1 (Fig. 4) are separate families of one test each
        assert row["family"] == ("penalise" if row["alpha"] < 0 else "promote") and row["m"] == 1
        assert row["p_bonferroni"] == pytest.approx(min(1.0, ref.pvalue))
    rs = pd.read_csv(report_dir / "tables" / "resnet20-ranksum-test_accuracy.csv")
    assert rs["abs_alpha"].tolist() == [1.0]
    for name in (
        "summary",
        "runs",
        "layers",
        "config-spec",
        "config-run",
        "prov-meta",
        "prov-status",
        "resnet20-layers-selectivity",
        "resnet20-layers-precision",
        "resnet20-layers-dead_fraction",
        "resnet20-ttest-test_accuracy",
        "resnet20-ranksum-mean_selectivity",
        "cca-distances",
        "cca-by-layer",
        "cca-ratio",
        "resnet20-cca-tests",
    ):
        df = pd.read_csv(report_dir / "tables" / f"{name}.csv")
        assert len(df.columns) > 1, name


def test_report_config_and_provenance(sweep, page):
    meta = read_json(sweep / "runs" / "resnet20_alpha0_seed0" / "meta.json")
    assert "Sweep specification (sweep.json)" in page and "overrides.train_subset" in page
    assert "Resolved configuration of run" in page and "negative_rule" in page
    assert str(meta["git_revision"] or "") in page and meta["torch_version"] in page
    assert "Runs by status" in page and "No failed, diverged or damaged runs." in page
    assert "Report generated" in page
    assert f"<title>{TITLE}" in page


def test_report_is_self_contained(page):
    refs = re.findall(r"(?:src|href)\s*=\s*[\"']?([^\"' >]+)", page, flags=re.I)
    assert refs and not [r for r in refs if re.match(r"(https?:)?//", r)]
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page


def test_report_notes_missing_pieces(sweep, cifar_data, tmp_path):
    """No alpha = 0, every run of alpha = +1 failed, one alpha left: notes, not exceptions."""
    d = tmp_path / "holes"
    for run in (sweep / "runs").iterdir():
        if "alpha0_" not in run.name:
            shutil.copytree(run, d / "runs" / run.name, ignore=shutil.ignore_patterns("last.pt"))
    shutil.copy(sweep / "sweep.json", d / "sweep.json")
    for seed in (0, 1):
        res = d / "runs" / f"resnet20_alpha+1_seed{seed}" / "result.json"
        write_json(
            res, {**read_json(res), "status": "failed", "message": "RuntimeError: out of memory (test)"}
        )
    out = build_report(d, tmp_path / "out", cca=True, data=cifar_data, cca_images=N_IMAGES, n_resamples=50)
    html = out.read_text(encoding="utf-8")
    assert "No completed run for α = 1 (2 failed)" in html
    assert "No completed α = 0 runs: there is no baseline" in html
    assert "CCA skipped: no completed α = 0 runs" in html
    assert "No |α| was run (to completion) with both signs" in html
    assert "RuntimeError: out of memory (test)" in html  # the failed runs' messages
    assert '<figure id="resnet20-fig1b"><img' in html  # the remaining alpha is still drawn


def test_report_on_empty_sweep(tmp_path):
    (tmp_path / "runs").mkdir()
    html = build_report(tmp_path, tmp_path / "out").read_text(encoding="utf-8")
    assert "The sweep has no recorded runs yet." in html


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)"
)
def test_report_renders_in_headless_chromium(report_dir):
    cmd = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--dump-dom",
        (report_dir / "report.html").as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    assert TITLE in dom and "Fig. 3b" in dom


# --------------------------------------------------------------------------- CCA
def test_cca_pairs_and_distances(sweep, cca_df):
    assert (sweep / CCA_CSV).exists()
    d = cca_df
    assert d["distance"].between(0.0, 1.0).all()
    assert set(d["layer_index"]) == set(range(N_LAYERS)) and (d["datapoints"] == N_IMAGES).all()
    per_pair = d.groupby(["alpha", "kind"])[["run_a", "run_b"]].apply(lambda g: len(g.drop_duplicates()))
    assert per_pair.to_dict() == {
        (-1.0, "between"): 4,
        (-1.0, "within"): 1,
        (0.0, "within"): 1,
        (1.0, "between"): 4,
        (1.0, "within"): 1,
    }
    w = d[d.kind == "within"]
    assert (w.seed_a < w.seed_b).all()
    b = d[d.kind == "between"]
    assert b.run_b.str.contains("alpha0_").all() and not b.run_a.str.contains("alpha0_").any()
    # The plan agrees, and caps / same-seed exclusion shrink it as documented.
    with open_store(sweep) as store:
        runs = store.runs_df()
    assert len(plan_pairs(runs)) == 11
    assert len(plan_pairs(runs, max_pairs=2)) == 2 + 1 + 2 + 1 + 1
    assert len(plan_pairs(runs, exclude_same_seed=True)) == 11 - 4


def test_cca_summary_tables(cca_df):
    by_layer, ratio, tests = cca_summary(cca_df)
    assert len(by_layer) == 3 * N_LAYERS
    assert by_layer.loc[by_layer.alpha == 0, "distance_between"].isna().all()
    assert (by_layer.loc[by_layer.alpha != 0, "n_between"] == 4).all()
    assert sorted(zip(ratio.alpha, ratio.seed)) == [(-1.0, 0), (-1.0, 1), (1.0, 0), (1.0, 1)]
    assert np.isfinite(ratio["ratio"]).all() and (ratio["n_layers"] == N_LAYERS).all()
    assert tests["alpha"].tolist() == [-1.0, 1.0] and (tests["n"] == N_LAYERS).all()
    assert np.isfinite(tests["p"]).all() and (tests["p_bonferroni"] == np.minimum(2 * tests["p"], 1)).all()
    frame = cca_plot_frame(cca_df)
    assert frame["distance_within"].notna().sum() == 3 * N_LAYERS
    assert frame["distance_between"].notna().sum() == 8 * N_LAYERS


def test_identical_activations_have_zero_distance(sweep, cifar_data):
    run = sweep / "runs" / "resnet20_alpha-1_seed0"
    acts = gather_activations(run, N_IMAGES, cifar_data)
    assert len(acts) == N_LAYERS and all(a.dtype == torch.float64 for a in acts.values())
    assert acts["act1"].shape == (16, N_IMAGES) and acts["layer3.2.act2"].shape == (64, N_IMAGES)
    dist = layer_distances(acts, acts)
    assert max(dist.values()) < 1e-6
    # Same indices from the same seed: every run sees the same images.
    labels = np.repeat(np.arange(10), 100)
    assert np.array_equal(select_images(labels, 50, 3), select_images(labels, 50, 3))
    assert np.bincount(labels[select_images(labels, 50, 3)]).tolist() == [5] * 10


def test_too_few_datapoints_is_refused(sweep, cifar_data):
    acts = {"a": torch.zeros(64, 100, dtype=torch.float64), "b": torch.zeros(16, 100, dtype=torch.float64)}
    with pytest.raises(ValueError, match="--mode positions"):
        check_datapoints(acts, 5.0, "spatial_mean", 100)
    check_datapoints(acts, 1.0)  # 100 >= 64: fine
    r = CliRunner().invoke(main, ["cca", str(sweep), "--data", str(cifar_data), "--images", "100", "--quiet"])
    assert r.exit_code != 0 and "too few datapoints" in r.output and "320" in r.output


def test_cca_report_frame_feeds_the_plots(cca_df):
    from selectivity.plots.selectivity import plot_cca_distance_by_layer, plot_cca_ratio

    _, ratio, _ = cca_summary(cca_df)
    ax = plot_cca_distance_by_layer(cca_plot_frame(cca_df), n_resamples=50)
    assert {ln.get_gid() for ln in ax.get_lines()} >= {"between:-1", "within:-1", "between:1", "within:1"}
    ax = plot_cca_ratio(ratio, n_resamples=50)
    assert any(ln.get_gid() == "mean:-1" for ln in ax.get_lines())
    json.dumps(cca_df.attrs)  # settings are plain JSON


# --------------------------------------------------------------------------- synthetic records
def _fake_sweep(root: Path) -> Path:
    """Run directories without checkpoints: two models, and leaky-ReLU slopes for resnet20."""
    from selectivity.run.config import make_config

    rng = np.random.default_rng(0)
    settings = [("resnet20", "relu", 0.01), ("vgg16", "relu", 0.01), ("resnet20", "leaky_relu", 0.3)]
    for model, act, slope in settings:
        for alpha in (-1.0, 0.0, 1.0):
            for seed in (0, 1, 2):
                cfg = make_config(
                    "paper",
                    dict(model=model, alpha=alpha, seed=seed, activation=act, negative_slope=slope, epochs=1),
                )
                rid = f"{model}_{act}{slope:g}_alpha{alpha:+g}_seed{seed}"
                layers = [
                    dict(
                        layer=f"l{i}",
                        units=16,
                        selectivity=float(rng.uniform(0.1, 0.3)),
                        dead_fraction=0.0,
                        precision=0.3,
                    )
                    for i in range(4)
                ]
                write_json(root / "runs" / rid / "config.json", cfg.to_dict())
                write_json(
                    root / "runs" / rid / "meta.json",
                    {
                        "seed": seed,
                        "package_version": "0.1.0",
                        "git_revision": f"rev{seed % 2}",
                        "hostname": "h",
                    },
                )
                write_json(
                    root / "runs" / rid / "result.json",
                    dict(
                        status="completed",
                        test_accuracy=float(0.9 - 0.01 * alpha + rng.normal(0, 0.01)),
                        mean_selectivity=float(np.mean([l["selectivity"] for l in layers])),
                        mean_precision=0.3,
                        dead_fraction=0.0,
                        best_val_accuracy=0.9,
                        best_epoch=1,
                        epochs_completed=1,
                        layers=layers,
                    ),
                )
    return root


def test_report_compares_models_and_slopes(tmp_path):
    sweep = _fake_sweep(tmp_path / "fake")
    out = build_report(sweep, tmp_path / "out", n_resamples=50, dpi=40)
    html = out.read_text(encoding="utf-8")
    for key in ("resnet20-relu", "vgg16-relu", "resnet20-leaky-relu-slope-0.3"):
        assert f'id="setting-{key}"' in html and f'<figure id="{key}-fig2a"><img' in html, key
    assert '<figure id="figA12-relu-0.01" class="wide"><img' in html and "<b>Fig. A12" in html
    assert '<figure id="figA10-resnet20" class="wide"><img' in html and "<b>Fig. A10" in html
    order = [
        html.index(f'id="setting-{k}"')
        for k in ("resnet20-relu", "resnet20-leaky-relu-slope-0.3", "vgg16-relu")
    ]
    assert order == sorted(order)  # per model, plain ReLU first
    assert "rev0 (" in html and "rev1 (" in html  # two git revisions seen across runs
    assert "<b>Fig. 4a" in html  # VGG16's accuracy figure is paper Fig. 4
    assert len(re.findall(r"<img ", html)) == 3 * len(SETTING_FIGS) + 2
