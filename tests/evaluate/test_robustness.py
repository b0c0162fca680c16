"""Paper 2 robustness evaluation of a sweep: run-dir results, database, resume, CLI errors.

The session's tiny sweep (``tiny_sweep`` in conftest.py: two ResNet20 runs, two epochs on
random CIFAR-shaped images) is copied and evaluated once per module; every test works on a
copy of that.
"""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from helpers import N_TEST, TINY
from selectivity.cli import main
from selectivity.evaluate.robustness import (
    PARTIAL_NAME,
    ROBUSTNESS_NAME,
    RobustnessSettings,
    corrupted_cell,
    parse_epsilons,
    sweep_robustness,
)
from selectivity.run.files import DB_NAME, read_json, write_json
from selectivity.sweep import SweepSpec, open_store, rebuild_store

SETTINGS = dict(
    n_images=40,
    corruptions=("gaussian_noise", "contrast"),
    severities=(1, 5),
    attacks=("fgsm", "pgd"),
    epsilons=(0.0, 8 / 255),
    pgd_steps=2,
    batch_size=20,
)


@pytest.fixture(scope="module")
def evaluated(tiny_sweep, tiny_data, tmp_path_factory) -> Path:
    """A copy of the shared tiny sweep with its robustness evaluated once."""
    out = Path(shutil.copytree(tiny_sweep.path, tmp_path_factory.mktemp("rob") / "sweep"))
    sweep_robustness(out, RobustnessSettings(**SETTINGS), str(tiny_data), progress=False)
    return out


@pytest.fixture
def sweep(evaluated, tmp_path) -> Path:
    dest = tmp_path / "sweep"
    shutil.copytree(evaluated, dest)
    return dest


def _runs(sweep: Path) -> list[Path]:
    return sorted(p for p in (sweep / "runs").iterdir() if p.is_dir())


def test_results_in_run_dirs_and_database(sweep):
    runs = _runs(sweep)
    assert len(runs) == 2
    for run in runs:
        res = read_json(run / ROBUSTNESS_NAME)
        assert not (run / PARTIAL_NAME).exists()
        assert res["n_images"] == 40
        accs = [c["accuracy"] for c in res["corruptions"]]
        assert len(accs) == 4 and res["n_corruption_cells"] == 4
        assert res["mean_corruption_accuracy"] == pytest.approx(np.mean(accs))
        assert res["relative_corruption_accuracy"] == pytest.approx(np.mean(accs) / res["clean_accuracy"])
        atk = {(a["attack"], a["epsilon"]): a["accuracy"] for a in res["attacks"]}
        # epsilon 0 changes no image: accuracy under attack is the clean accuracy.
        assert atk[("fgsm", 0.0)] == pytest.approx(res["clean_accuracy"])
        assert atk[("pgd", 0.0)] == pytest.approx(res["clean_accuracy"])
        assert atk[("pgd", 8 / 255)] <= atk[("pgd", 0.0)]
        # accuracies are counts over 40 images
        for a in [*accs, *atk.values(), res["clean_accuracy"]]:
            assert a * 40 == pytest.approx(round(a * 40))
    with open_store(sweep) as store:
        summary = store.robustness_df("summary")
        corr = store.robustness_df("corruptions")
        atk = store.robustness_df("attacks")
    assert len(summary) == 2 and set(summary["alpha"]) == {-1.0, 1.0}
    assert len(corr) == 8 and set(corr["severity"]) == {1, 5}
    assert len(atk) == 8 and set(atk["norm"]) == {"linf"}
    for run in runs:
        res = read_json(run / ROBUSTNESS_NAME)
        row = summary[summary["run_id"] == run.name].iloc[0]
        assert row["clean_accuracy"] == pytest.approx(res["clean_accuracy"])
        mine = corr[corr["run_id"] == run.name]
        got = dict(zip(zip(mine["corruption"], mine["severity"]), mine["accuracy"]))
        assert got == {(c["corruption"], c["severity"]): c["accuracy"] for c in res["corruptions"]}


def test_corrupted_images_identical_across_runs(sweep, tiny_data):
    a, b = (read_json(r / ROBUSTNESS_NAME) for r in _runs(sweep))
    assert a["cell_sha1"] == b["cell_sha1"] and len(a["cell_sha1"]) == 4
    assert a["image_indices_sha1"] == b["image_indices_sha1"]
    # The cached cell is what corrupted_cell gives for the same images and seed.
    from selectivity.evaluate.cca import select_images
    from selectivity.run.checkpoint import load_run

    run = load_run(_runs(sweep)[0], str(tiny_data))
    idx = select_images(run.splits.test.labels.numpy(), 40, 0)
    cell = corrupted_cell(run.splits.test.images[torch.as_tensor(idx)], "gaussian_noise", 5, seed=0)
    import hashlib

    assert hashlib.sha1(cell.numpy().tobytes()).hexdigest() == a["cell_sha1"]["gaussian_noise/5"]
    other = corrupted_cell(run.splits.test.images[torch.as_tensor(idx)], "gaussian_noise", 5, seed=1)
    assert not torch.equal(cell, other)


def test_resume_reuses_results_and_partial_cells(sweep, tiny_data):
    run = _runs(sweep)[0]
    before = read_json(run / ROBUSTNESS_NAME)
    # Same settings (another device string): reused as is, not recomputed.
    mark = dict(before, seconds=-1.0)
    write_json(run / ROBUSTNESS_NAME, mark)
    sweep_robustness(sweep, RobustnessSettings(**SETTINGS, device="cpu"), str(tiny_data), progress=False)
    assert read_json(run / ROBUSTNESS_NAME)["seconds"] == -1.0
    # A killed evaluation: the partial file's finished cells are kept, the rest computed.
    (run / ROBUSTNESS_NAME).unlink()
    settings = RobustnessSettings(**SETTINGS)
    write_json(
        run / PARTIAL_NAME,
        {
            "settings": settings.compared(),
            "clean": 0.5,
            "cells": {"contrast/5": 0.125},
            "attacks": {},
            "sha1": {},
        },
    )
    sweep_robustness(sweep, settings, str(tiny_data), progress=False)
    res = read_json(run / ROBUSTNESS_NAME)
    assert res["clean_accuracy"] == 0.5
    cells = {(c["corruption"], c["severity"]): c["accuracy"] for c in res["corruptions"]}
    assert cells[("contrast", 5)] == 0.125
    assert cells[("gaussian_noise", 1)] == pytest.approx(
        {(c["corruption"], c["severity"]): c["accuracy"] for c in before["corruptions"]}[
            ("gaussian_noise", 1)
        ]
    )
    assert not (run / PARTIAL_NAME).exists()
    # Other settings: recomputed.
    other = {**SETTINGS, "severities": (2,), "corruptions": ("contrast",), "attacks": ()}
    sweep_robustness(sweep, RobustnessSettings(**other), str(tiny_data), progress=False)
    res = read_json(run / ROBUSTNESS_NAME)
    assert {c["severity"] for c in res["corruptions"]} == {2}


def test_rebuild_recreates_robustness_tables(sweep):
    with open_store(sweep) as store:
        want = {k: store.robustness_df(k) for k in ("summary", "corruptions", "attacks")}
    (sweep / DB_NAME).unlink()
    for suffix in ("-wal", "-shm"):
        Path(str(sweep / DB_NAME) + suffix).unlink(missing_ok=True)
    with rebuild_store(sweep, log=lambda _m: None) as store:
        for k, df in want.items():
            got = store.robustness_df(k)
            assert len(got) == len(df) > 0
            assert got.reset_index(drop=True).equals(df.reset_index(drop=True))
    # A deleted result disappears from the database at the next sync.
    (_runs(sweep)[0] / ROBUSTNESS_NAME).unlink()
    with open_store(sweep, log=lambda _m: None) as store:
        assert len(store.robustness_df("summary")) == 1


def test_results_export(sweep):
    r = CliRunner().invoke(main, ["results", str(sweep), "--robustness", "corruptions", "--format", "csv"])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0].split(",")[:4] == ["model", "alpha", "seed", "activation"] and len(lines) == 9
    r = CliRunner().invoke(main, ["results", str(sweep), "--robustness", "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert len(rows) == 2 and all(math.isfinite(x["mean_corruption_accuracy"]) for x in rows)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--corruptions", "fog,rain"], "unknown corruption 'rain': expected one of"),
        (["--attacks", "cw"], "unknown attack 'cw': expected one of fgsm, pgd"),
        (["--epsilons", "-1/255"], "epsilon must be a finite number >= 0"),
        (["--epsilons", "nan"], "epsilon must be a finite number >= 0"),
        (["--severities", "0,6"], "severity must be an integer in 1..5"),
        (["--severities", "x"], "'--severities': 'x' is not an integer"),
    ],
)
def test_cli_bad_input_is_one_line(sweep, args, expected):
    r = CliRunner().invoke(main, ["robustness", str(sweep), "--quiet", *args])
    assert r.exit_code == 2
    out = r.output.strip()
    assert len(out.splitlines()) == 1 and expected in out, out


def test_cli_bad_cifar10_c_dir(sweep, tiny_data, tmp_path):
    bad = tmp_path / "c10c"
    bad.mkdir()
    np.save(bad / "labels.npy", np.zeros(5 * N_TEST, np.uint8))
    np.save(bad / "fog.npy", np.zeros((5 * N_TEST, 32, 32), np.uint8))  # no channel axis
    base = [
        "robustness",
        str(sweep),
        "--quiet",
        "--data",
        str(tiny_data),
        "--images",
        "40",
        "--attacks",
        "none",
    ]
    for run in _runs(sweep):
        (run / ROBUSTNESS_NAME).unlink()
    r = CliRunner().invoke(main, [*base, "--corruptions", "fog", "--cifar10-c", str(bad)])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
    assert "expected (5 * N, H, W, 3) uint8" in r.output
    r = CliRunner().invoke(main, [*base, "--corruptions", "frost", "--cifar10-c", str(bad)])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
    assert "no frost.npy" in r.output and "expected one of fog" in r.output
    # A well-formed directory with the wrong number of images (20 < N_TEST test images).
    np.save(bad / "fog.npy", np.zeros((5 * 20, 32, 32, 3), np.uint8))
    np.save(bad / "labels.npy", np.zeros(5 * 20, np.uint8))
    r = CliRunner().invoke(main, [*base, "--corruptions", "fog", "--cifar10-c", str(bad)])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
    assert "expected the whole test split" in r.output


def test_cli_reads_cifar10_c_directory(sweep, tiny_data, tmp_path):
    """Images read from a CIFAR-10-C directory: an all-black fog cell gives one prediction for all."""
    d = tmp_path / "c10c"
    d.mkdir()
    np.save(d / "labels.npy", np.zeros(5 * N_TEST, np.uint8))
    np.save(d / "fog.npy", np.zeros((5 * N_TEST, 32, 32, 3), np.uint8))
    for run in _runs(sweep):
        (run / ROBUSTNESS_NAME).unlink()
    args = ["robustness", str(sweep), "--quiet", "--data", str(tiny_data), "--images", "40"]
    r = CliRunner().invoke(main, [*args, "--attacks", "none", "--corruptions", "fog", "--cifar10-c", str(d)])
    assert r.exit_code == 0, r.output
    for run in _runs(sweep):
        res = read_json(run / ROBUSTNESS_NAME)
        assert res["attacks"] == [] and len(res["corruptions"]) == 5
        # every image is identical, so the accuracy is one class's share of the 40 images: 4/40
        assert {c["accuracy"] for c in res["corruptions"]} == {0.1}


def test_parse_epsilons():
    assert parse_epsilons("0.5/255, 2/255,0.01") == pytest.approx((0.5 / 255, 2 / 255, 0.01))
    with pytest.raises(ValueError, match="not a number"):
        parse_epsilons("1/0")


def test_database_schema_has_robustness_tables(tmp_path):
    from selectivity.sweep import ResultsStore

    with ResultsStore(tmp_path / DB_NAME):
        pass
    con = sqlite3.connect(tmp_path / DB_NAME)
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    con.close()
    assert {"robustness_runs", "robustness_corruptions", "robustness_attacks"} <= names


def test_cli_corrupt_writes_cifar_c_and_contact_sheet(tiny_data, tmp_path):
    out = tmp_path / "c10c"
    args = ["corrupt", "--data", str(tiny_data), "--out", str(out), "--images", "4", "--quiet"]
    r = CliRunner().invoke(main, [*args, "--corruptions", "gaussian_noise,contrast"])
    assert r.exit_code == 0, r.output
    arr = np.load(out / "contrast.npy")
    assert arr.shape == (20, 32, 32, 3) and arr.dtype == np.uint8
    assert (out / "contact_sheet.png").stat().st_size > 0
    r = CliRunner().invoke(main, [*args, "--corruptions", "rain"])
    assert (
        r.exit_code == 2
        and len(r.output.strip().splitlines()) == 1
        and "unknown corruption 'rain'" in r.output
    )


def test_report_has_robustness_section(sweep, tmp_path):
    from selectivity.report import build_report

    page = build_report(sweep, tmp_path / "out", n_resamples=50).read_text()
    assert '<section id="robustness">' in page and "<!--robustness-->" not in page
    assert (tmp_path / "out" / "tables" / "robustness-summary.csv").exists()
    for key in ("severity", "alpha", "vs-selectivity", "fgsm", "pgd"):
        assert (tmp_path / "out" / "figures" / f"robustness-{key}.png").exists()
    # Without robustness results: no section.
    for run in _runs(sweep):
        (run / ROBUSTNESS_NAME).unlink()
    page = build_report(sweep, tmp_path / "out2", n_resamples=50).read_text()
    assert 'id="robustness"' not in page


def test_sweep_command_runs_the_presets_robustness(sweep, tiny_data):
    """`selectivity sweep` with a preset that has robustness settings evaluates after training."""
    from selectivity.sweep import register_sweep_preset

    @register_sweep_preset("test-robustness")
    def _preset() -> SweepSpec:
        """Test preset: the tiny sweep of this module with robustness settings."""
        return SweepSpec(
            models=["resnet20"],
            alphas=[-1.0, 1.0],
            seeds=[0],
            preset="paper",
            overrides=dict(TINY),
            robustness={**SETTINGS, "severities": [3], "corruptions": ["fog"], "attacks": []},
        )

    for run in _runs(sweep):
        (run / ROBUSTNESS_NAME).unlink()
    args = ["sweep", "--preset", "test-robustness", "--out", str(sweep), "--data", str(tiny_data)]
    r = CliRunner().invoke(main, [*args, "--quiet", "--no-summary"])
    assert r.exit_code == 0, r.output
    for run in _runs(sweep):
        res = read_json(run / ROBUSTNESS_NAME)
        assert [(c["corruption"], c["severity"]) for c in res["corruptions"]] == [("fog", 3)]
    for run in _runs(sweep):
        (run / ROBUSTNESS_NAME).unlink()
    r = CliRunner().invoke(main, [*args, "--quiet", "--no-summary", "--no-robustness"])
    assert r.exit_code == 0, r.output
    assert not any((run / ROBUSTNESS_NAME).exists() for run in _runs(sweep))
