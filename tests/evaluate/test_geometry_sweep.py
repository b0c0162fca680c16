"""`selectivity geometry` on a tiny finished sweep.

The session's tiny two-run ResNet20 sweep (``tiny_sweep`` in conftest.py: 2 epochs on 120
random training images, 80 test images) is copied and its geometry computed once per module;
the geometry uses 3 layers, 1 corruption at 1 severity, 1 L-inf PGD budget plus the matched
L2 attack, 2 PGD steps and 8 gradient images, so it stays cheap.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from helpers import load_tool
from selectivity.cli import main
from selectivity.evaluate.geometry import (
    GEOMETRY_TABLES,
    GRADIENT_MEASURES,
    GeometrySettings,
    evaluate_run,
    geometry_results,
    pick_settings,
    sweep_geometry,
)
from selectivity.evaluate.robustness import RobustnessSettings, robustness_frame, sweep_robustness
from selectivity.run.files import read_json
from selectivity.sweep import rebuild_store

pytestmark = pytest.mark.slow  # measures the geometry of two tiny runs once per module

LAYERS = ("act1", "layer1.0.act1", "layer3.2.act2")  # 16, 16, 64 channels
# The robustness step these geometry settings match: one corruption cell, PGD-2 at 4/255.
ROBUSTNESS = RobustnessSettings(
    n_images=70,
    corruptions=("gaussian_noise",),
    severities=(3,),
    attacks=("pgd",),
    epsilons=(4 / 255,),
    pgd_steps=2,
    batch_size=70,
)
SETTINGS = GeometrySettings.matching(
    ROBUSTNESS,
    layers=LAYERS,
    match_l2=True,
    gradient_images=8,
    gradient_layers=("act1",),
)
CLI_ARGS = [
    "--images",
    "70",
    "--layers",
    ",".join(LAYERS),
    "--corruptions",
    "gaussian_noise",
    "--severities",
    "3",
    "--attacks",
    "pgd",
    "--epsilons",
    "4/255",
    "--pgd-steps",
    "2",
    "--match",
    "--gradient-images",
    "8",
    "--gradient-layers",
    "act1",
    "--batch-size",
    "70",
    "--quiet",
]
PERTURBATIONS = ("gaussian_noise-3", "pgd-linf-4/255", "pgd-l2-match-gaussian_noise-3")


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


def result_path(run: Path) -> Path:
    """The run's only geometry result (one settings measured)."""
    (path,) = geometry_results(run).values()
    return path


def _rows(run: Path) -> dict:
    saved = read_json(result_path(run))
    return {(r["layer"], r["perturbation"], r["measure"]): r["value"] for r in saved["rows"]}


def test_results_in_run_dirs_and_database(measured):
    runs = sorted((measured / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        saved = read_json(result_path(run))
        assert saved["settings"]["layers"] == list(LAYERS) and saved["settings"]["images_used"] == 70
        kinds = {r["perturbation"]: r["kind"] for r in saved["rows"]}
        assert (
            kinds["pgd-l2-match-gaussian_noise-3"] == "matched-l2"
            and kinds["pgd-linf-4/255"] == "adversarial"
        )
        rows = _rows(run)
        for layer in LAYERS:
            units = 64 if layer.startswith("layer3") else 16
            assert rows[(layer, "clean", "units")] == units
            assert 1 <= rows[(layer, "clean", "pca")] <= units
            assert 1 <= rows[(layer, "clean", "participation_ratio")] <= units + 1e-9
            for pert in PERTURBATIONS:
                assert 1 <= rows[(layer, pert, "change_pca")] <= units
                assert rows[(layer, pert, "change_sq_norm")] > 0
                # the increase is the perturbed minus the clean dimensionality of the same images
                for m in ("pca", "participation_ratio"):
                    assert rows[(layer, pert, f"increase_{m}")] == pytest.approx(
                        rows[(layer, pert, m)] - rows[(layer, "clean", m)], abs=1e-12
                    )
        # early layers: the first third of the 3 measured layers, the first one
        assert [rows[(layer, "clean", "early")] for layer in LAYERS] == [1.0, 0.0, 0.0]
        assert saved["settings"]["early_layer_names"] == ["act1"]
        # L-inf PGD stays in its ball; the matched L2 attack uses the corruption's median L2.
        assert rows[("input", "pgd-linf-4/255", "linf_mean")] <= 4 / 255 + 1e-6
        eps = rows[("input", "pgd-l2-match-gaussian_noise-3", "epsilon")]
        assert eps == pytest.approx(rows[("input", "gaussian_noise-3", "l2_median")], rel=1e-6)
        assert rows[("input", "pgd-l2-match-gaussian_noise-3", "l2_mean")] <= eps * (1 + 1e-5)
        # every gradient measure, the zero gradients counted apart
        for m in GRADIENT_MEASURES.values():
            assert ("act1", "clean", m) in rows, m
        assert 0 <= rows[("act1", "clean", "grad_var_samples")] <= 2
        assert 0 <= rows[("act1", "clean", "grad_zero_fraction")] <= 1
        assert rows[("act1", "clean", "grad_elem_var_samples")] >= 0
    with sqlite3.connect(measured / "results.sqlite") as conn:
        n_db = conn.execute("SELECT COUNT(*) FROM geometry").fetchone()[0]
    assert n_db == sum(len(read_json(result_path(r))["rows"]) for r in runs)


def test_the_perturbations_are_the_robustness_steps(measured, tiny_data, tmp_path):
    """Same corrupted images and the same PGD examples: the accuracies agree exactly."""
    copy = Path(shutil.copytree(measured, tmp_path / "sweep"))
    sweep_robustness(copy, ROBUSTNESS, str(tiny_data), progress=False)
    cells = robustness_frame(copy, "corruptions").set_index("run_id")
    attacks = robustness_frame(copy, "attacks").set_index("run_id")
    summary = robustness_frame(copy, "summary").set_index("run_id")
    for run in sorted((copy / "runs").iterdir()):
        rows = _rows(run)
        assert rows[("output", "clean", "accuracy")] == summary.loc[run.name, "clean_accuracy"]
        assert rows[("output", "gaussian_noise-3", "accuracy")] == cells.loc[run.name, "accuracy"]
        assert rows[("output", "pgd-linf-4/255", "accuracy")] == attacks.loc[run.name, "accuracy"]


def test_flattened_estimator_with_spatial_subsampling(measured, tiny_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(measured / "runs" / "resnet20_alpha-1_seed0", run)
    s = GeometrySettings.matching(
        ROBUSTNESS,
        layers=("act1", "layer3.2.act2"),
        units="flatten",
        positions=4,
        attacks=(),
        gradient_images=0,
    )
    res = evaluate_run(run, s, tiny_data)
    rows = {(r["layer"], r["perturbation"], r["measure"]): r["value"] for r in res["rows"]}
    # 4 positions of every channel: 16 x 4 and 64 x 4 units; at most N - 1 = 69 dimensions
    assert rows[("act1", "clean", "units")] == 64 and rows[("layer3.2.act2", "clean", "units")] == 256
    for layer in ("act1", "layer3.2.act2"):
        for pert in ("clean", "gaussian_noise-3"):
            assert 1 <= rows[(layer, pert, "pca")] <= min(69, rows[(layer, "clean", "units")])


def test_resume_reuses_and_changed_settings_recompute(measured, tiny_data, tmp_path):
    run = measured / "runs" / "resnet20_alpha-1_seed0"
    before = result_path(run).stat().st_mtime_ns
    res = evaluate_run(run, SETTINGS, tiny_data)
    assert res["reused"] and result_path(run).stat().st_mtime_ns == before
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    other = GeometrySettings(
        **{**SETTINGS.__dict__, "share": 0.9, "gradient_images": 0, "epsilons": (), "match_l2": False}
    )
    res2 = evaluate_run(copy, other, tiny_data)
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
    with rebuild_store(copy, log=lambda _m: None, analyses=[GEOMETRY_TABLES]) as store:
        df = store.frame(GEOMETRY_TABLES, "rows")
    assert set(df["run_id"]) == {"resnet20_alpha-1_seed0", "resnet20_alpha+1_seed0"}
    r = CliRunner().invoke(main, ["results", str(copy), "--geometry", "--format", "csv"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0].startswith("run_id,layer_index,layer,kind,perturbation,measure,value")
    assert len(r.output.splitlines()) == len(pick_settings(df)) + 1  # the default settings' rows


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
        (["--early-layers", "0"], 2, "a count must be >= 1"),
        (["--early-layers", "nope"], 1, "early layer 'nope' is not a measured layer"),
        (["--positions", "4"], 2, "applies to units='flatten' only"),
        (["--attacks", "apgd-ce"], 2, "unknown attack 'apgd-ce'"),
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
    for fid in (
        "mech-clean-dim",
        "mech-increase-dim",
        "mech-change-dim",
        "mech-dim-vs-selectivity",
        "mech-grad-var",
    ):
        assert f'id="{fid}"' in page
        assert (tmp_path / "report" / "figures" / f"{fid}.png").stat().st_size > 0
    assert (tmp_path / "report" / "tables" / "mechanisms-spearman.csv").exists()


def test_report_without_geometry_has_no_mechanisms_section(measured, tmp_path):
    from selectivity.report import ReportContext, ReportStats, collect
    from selectivity.report.mechanisms import mechanism_sections

    copy = tmp_path / "sweep"
    shutil.copytree(measured, copy)
    for f in (copy / "runs").glob("*/geometry/*.json"):
        f.unlink()
    (copy / "results.sqlite").unlink()
    data = collect(copy)
    assert data.geometry.empty and not data.runs.empty
    ctx = ReportContext(data=data, settings=[], stats=ReportStats(settings={}), out_dir=tmp_path / "report")
    assert mechanism_sections(ctx) == []


def test_reproduction_tables_mechanisms_block_from_the_stored_rows(measured, tmp_path):
    tables = load_tool("reproduction_tables")
    doc = tmp_path / "doc.md"
    doc.write_text("Prose.\n\n<!-- generated: mechanisms from geo -->\n<!-- end generated -->\n")
    before = {str(p): p.stat().st_mtime_ns for p in measured.rglob("*")}
    assert tables.main(["--sweep", f"geo={measured}", "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert {str(p): p.stat().st_mtime_ns for p in measured.rglob("*")} == before  # only read
    settings = text.split("\n\n")[1]
    for says in (
        "70 test images (seed 0)",
        "3 layers, units = channels",
        "1 corruption cells (1 corruptions at severities 3",
        "1 attacks (pgd at 4/255; PGD 2 steps",
        "matched L2 PGD on",
        "8 gradient images over 1 layers",
    ):
        assert says in settings, says
    assert "Early layers: act1." in text
    # the increase over all runs: the mean of the stored act1 rows, computed here
    stored = [_rows(run) for run in sorted((measured / "runs").iterdir())]
    for label, pert in (("corruptions", "gaussian_noise-3"), ("adversarial", "pgd-linf-4/255")):
        mean = sum(r[("act1", pert, "increase_pca")] for r in stored) / len(stored)
        (line,) = [ln for ln in text.splitlines() if ln.startswith("| all runs |")]
        header = next(ln for ln in text.splitlines() if ln.startswith("| α |") and "increase" in ln)
        cells = dict(zip(header.strip("|").split(" | "), line.strip("|").split(" | ")))
        assert cells[f"PCA increase, {label}"].strip().startswith(f"{mean:.2f}"), (label, cells)
    assert "Spearman correlation with mean class selectivity:" in text
    assert tables.main(["--sweep", f"geo={measured}", "--doc", str(doc), "--check"]) == 0
