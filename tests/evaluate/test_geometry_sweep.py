"""`selectivity geometry` on a tiny finished sweep (issue 11, parts 3-4).

The session's tiny two-run ResNet20 sweep (``tiny_sweep`` in conftest.py: 2 epochs on 120
random training images, 80 test images) is copied and its geometry computed once per module;
the geometry uses 3 layers, 1 corruption, 1 L-inf budget plus the matched L2 attack, 2 PGD
steps and 8 gradient images, so it stays cheap.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from selectivity.cli import main
from selectivity.evaluate.geometry import GeometrySettings, run_geometry, sweep_geometry
from selectivity.run.files import read_json
from selectivity.sweep import rebuild_store

pytestmark = pytest.mark.slow  # measures the geometry of two tiny runs once per module

LAYERS = ("act1", "layer1.0.act1", "layer3.2.act2")  # 16, 16, 64 channels
SETTINGS = GeometrySettings(
    n_images=70,
    layers=LAYERS,
    corruptions=("gaussian_noise",),
    epsilons=(4 / 255,),
    attack_steps=2,
    gradient_images=8,
    gradient_layers=("act1",),
    batch_size=70,
)
CLI_ARGS = [
    "--images",
    "70",
    "--layers",
    ",".join(LAYERS),
    "--corruptions",
    "gaussian_noise",
    "--epsilons",
    "4/255",
    "--attack-steps",
    "2",
    "--gradient-images",
    "8",
    "--gradient-layers",
    "act1",
    "--batch-size",
    "70",
    "--quiet",
]


@pytest.fixture(scope="module")
def measured(tiny_sweep, tiny_data, tmp_path_factory) -> Path:
    """A copy of the shared tiny sweep with its geometry computed once."""
    out = Path(shutil.copytree(tiny_sweep.path, tmp_path_factory.mktemp("geom") / "sweep"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add synchronisation
    try:
        sweep_geometry(out, SETTINGS, tiny_data, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


def test_results_in_run_dirs_and_database(measured):
    runs = sorted((measured / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        saved = read_json(run / "geometry.json")
        assert saved["settings"]["layers"] == list(LAYERS) and saved["settings"]["images_used"] == 70
        rows = {(r["layer"], r["perturbation"], r["measure"]): r["value"] for r in saved["rows"]}
        for layer in LAYERS:
            units = 64 if layer.startswith("layer3") else 16
            assert rows[(layer, "clean", "units")] == units
            assert 1 <= rows[(layer, "clean", "pca")] <= units
            assert 1 <= rows[(layer, "clean", "participation_ratio")] <= units + 1e-9
            for pert in ("gaussian_noise-3", "pgd-linf-4/255", "pgd-l2-match-gaussian_noise-3"):
                assert 1 <= rows[(layer, pert, "change_pca")] <= units
                assert rows[(layer, pert, "change_sq_norm")] > 0
        # L-inf PGD stays in its ball; the matched L2 attack uses the corruption's median L2.
        assert rows[("input", "pgd-linf-4/255", "linf_mean")] <= 4 / 255 + 1e-6
        eps = rows[("input", "pgd-l2-match-gaussian_noise-3", "epsilon")]
        assert eps == pytest.approx(rows[("input", "gaussian_noise-3", "l2_median")], rel=1e-6)
        assert rows[("input", "pgd-l2-match-gaussian_noise-3", "l2_mean")] <= eps * (1 + 1e-5)
        assert 0 <= rows[("act1", "clean", "grad_var_samples")] <= 2
    with sqlite3.connect(measured / "results.sqlite") as conn:
        n_db = conn.execute("SELECT COUNT(*) FROM geometry").fetchone()[0]
    assert n_db == sum(len(read_json(r / "geometry.json")["rows"]) for r in runs)


def test_resume_reuses_and_changed_settings_recompute(measured, tiny_data, tmp_path):
    run = measured / "runs" / "resnet20_alpha-1_seed0"
    before = (run / "geometry.json").stat().st_mtime_ns
    res = run_geometry(run, SETTINGS, tiny_data)
    assert res["reused"] and (run / "geometry.json").stat().st_mtime_ns == before
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    other = GeometrySettings(
        **{**SETTINGS.__dict__, "share": 0.9, "gradient_images": 0, "epsilons": (), "match_l2": False}
    )
    res2 = run_geometry(copy, other, tiny_data)
    assert not res2["reused"] and res2["settings"]["share"] == 0.9
    assert not any(r["measure"].startswith("grad_") for r in res2["rows"])
    assert {r["perturbation"] for r in res2["rows"]} == {"clean", "gaussian_noise-3"}
    # the clean representation does not depend on the perturbations: same PCA at 0.9 <= at 0.95
    pca = {
        (r["layer"], s): r["value"]
        for s, rows in (("0.9", res2["rows"]), ("0.95", res["rows"]))
        for r in rows
        if r["perturbation"] == "clean" and r["measure"] == "pca"
    }
    assert all(pca[(layer, "0.9")] <= pca[(layer, "0.95")] for layer in LAYERS)


def test_rebuild_recreates_the_geometry_table(measured, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(measured, copy)
    (copy / "results.sqlite").unlink()
    with rebuild_store(copy, log=lambda _m: None) as store:
        df = store.geometry_df()
    assert set(df["run_id"]) == {"resnet20_alpha-1_seed0", "resnet20_alpha+1_seed0"}
    r = CliRunner().invoke(main, ["results", str(copy), "--geometry", "--format", "csv"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0].startswith("run_id,layer_index,layer,kind,perturbation,measure,value")
    assert len(r.output.splitlines()) == len(df) + 1


def test_cli_reuses(measured):
    r = CliRunner().invoke(main, ["geometry", str(measured), *CLI_ARGS])
    assert r.exit_code == 0, r.output
    assert "0 computed, 2 reused" in r.output
    assert "clean PCA dimensionality" in r.output


@pytest.mark.parametrize(
    "extra, code, text",
    [
        (["--share", "1.5"], 2, "'--share': 1.5 is not in the range 0<x<=1"),
        (["--share", "0"], 2, "'--share': 0.0 is not in the range 0<x<=1"),
        (["--layers", "act1,nope"], 1, "layer 'nope' does not exist in resnet20"),
        (["--images", "30"], 1, "needs at least 65 images, got 30"),
        (["--corruptions", "rain"], 2, "unknown corruption"),
    ],
)
def test_bad_input_is_one_line(measured, extra, code, text):
    r = CliRunner().invoke(main, ["geometry", str(measured), "--force", *CLI_ARGS, *extra])
    assert r.exit_code == code, r.output
    assert text in r.output
    assert "Traceback" not in r.output
    err = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(err) == 1


def test_report_has_the_mechanisms_section(measured, tmp_path):
    from selectivity.report import build_report

    page = build_report(measured, tmp_path / "report", n_resamples=50).read_text()
    assert 'id="mechanisms"' in page and "Mechanisms (dimensionality, gradient variability)" in page
    for fid in ("mech-clean-dim", "mech-change-dim", "mech-dim-vs-selectivity", "mech-grad-var"):
        assert f'id="{fid}"' in page
        assert (tmp_path / "report" / "figures" / f"{fid}.png").stat().st_size > 0
    assert (tmp_path / "report" / "tables" / "mechanisms-spearman.csv").exists()


def test_report_without_geometry_has_no_mechanisms_section(measured, tmp_path):
    from selectivity.report import ReportContext, ReportStats, collect
    from selectivity.report.mechanisms import mechanism_sections

    copy = tmp_path / "sweep"
    shutil.copytree(measured, copy)
    for f in (copy / "runs").glob("*/geometry.json"):
        f.unlink()
    (copy / "results.sqlite").unlink()
    data = collect(copy)
    assert data.geometry.empty and not data.runs.empty
    ctx = ReportContext(data=data, settings=[], stats=ReportStats(settings={}), out_dir=tmp_path / "report")
    assert mechanism_sections(ctx) == []
