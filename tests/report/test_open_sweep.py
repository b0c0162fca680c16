"""The Python route to results, used as in a notebook: ``selectivity.open_sweep`` and ``open_run``.

Works on a copy of the session's tiny two-run sweep (``tiny_sweep``), to which small
robustness, geometry and CCA records are added by hand in the documented file formats
(computing them is tested in tests/evaluate), and the per-unit records of one run,
measured here. Every frame must equal what ``selectivity results ... --format csv``
prints, and opening the sweep and reading every frame must leave the directory as it
was: the same files, each with the same modification time.
"""

from __future__ import annotations

import io
import os
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

import selectivity
from helpers import RUN_A, RUN_B
from selectivity.cli import main
from selectivity.evaluate.cca import CCA_CSV
from selectivity.evaluate.geometry import FORMAT as GEOMETRY_FORMAT
from selectivity.evaluate.geometry import GEOMETRY_NAME, GEOMETRY_TABLES
from selectivity.evaluate.robustness import ROBUSTNESS_NAME
from selectivity.run.files import read_json, write_json
from selectivity.sweep.store import LAYER_COLUMNS, RUN_COLUMNS

ROBUSTNESS = {  # one run's robustness.json, by hand
    "n_images": 40,
    "clean_accuracy": 0.25,
    "mean_corruption_accuracy": 0.2,
    "relative_corruption_accuracy": 0.8,
    "n_corruption_cells": 2,
    "settings": {"n_images": 40},
    "corruptions": [
        {"corruption": "fog", "severity": 1, "accuracy": 0.225},
        {"corruption": "fog", "severity": 3, "accuracy": 0.175},
    ],
    "attacks": [{"attack": "pgd", "norm": "linf", "epsilon": 1 / 255, "accuracy": 0.05}],
}


def snapshot(root: Path) -> dict[str, int]:
    """Every file and folder under ``root`` with its modification time (ns)."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def cli_csv(*args: str) -> str:
    r = CliRunner().invoke(main, ["results", *args, "--format", "csv"])
    assert r.exit_code == 0, r.output
    return r.output


@pytest.fixture(scope="module")
def sweep(tiny_sweep, tmp_path_factory) -> Path:
    """A copy of the tiny sweep with robustness, geometry, CCA and per-unit records."""
    import shutil

    out = Path(shutil.copytree(tiny_sweep.path, tmp_path_factory.mktemp("opensweep") / "sweep"))
    write_json(out / "runs" / RUN_A / ROBUSTNESS_NAME, ROBUSTNESS)
    for rid, v in ((RUN_A, 3.0), (RUN_B, 5.0)):
        rows = [
            {"layer_index": 0, "layer": "relu", "kind": "clean", "perturbation": "clean"}
            | {"measure": "pca", "value": v},
            {"layer_index": -1, "layer": "output", "kind": "clean", "perturbation": "clean"}
            | {"measure": "accuracy", "value": v / 10},
        ]
        write_json(
            out / "runs" / rid / GEOMETRY_NAME, {"format": GEOMETRY_FORMAT, "settings": {}, "rows": rows}
        )
    (out / CCA_CSV).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {"model": ["resnet20"], "alpha": [1.0], "kind": ["between"], "seed_a": [0], "seed_b": [0]}
        | {"run_a": [RUN_B], "run_b": [RUN_A], "layer_index": [0], "layer": ["relu"], "distance": [0.25]}
    ).to_csv(out / CCA_CSV, index=False)
    return out


def test_a_notebook_reads_the_same_tables_as_the_cli_and_writes_nothing(sweep, tiny_data):
    # The per-unit records of one run: measured through open_run, written where .units looks.
    run = selectivity.open_run(sweep / "runs" / RUN_A, data=tiny_data)
    units = run.measure().to_frame()
    (sweep / "runs" / RUN_A / "units").mkdir()
    units.to_csv(sweep / "runs" / RUN_A / "units" / "units.csv", index=False)

    # What the command line prints (it brings the database on disk up to date first).
    expected = {
        "runs": cli_csv(str(sweep)),
        "layers": cli_csv(str(sweep), "--per-layer"),
        "geometry": cli_csv(str(sweep), "--geometry"),
        **{kind: cli_csv(str(sweep), "--robustness", kind) for kind in ("summary", "corruptions", "attacks")},
    }
    before = snapshot(sweep)

    sw = selectivity.open_sweep(sweep)
    frames = {
        "runs": sw.runs,
        "layers": sw.layers,
        "geometry": sw.geometry,
        **{kind: sw.robustness(kind) for kind in ("summary", "corruptions", "attacks")},
    }
    for name, frame in frames.items():
        assert frame.to_csv(index=False) == expected[name], name
        assert {"model", "alpha", "seed"} <= set(frame.columns), name

    # The documented columns.
    assert list(sw.runs.columns) == [n for n, _ in RUN_COLUMNS if n != "config"]
    assert set(sw.layers.columns) == {n for n, _ in LAYER_COLUMNS} | {
        "model",
        "alpha",
        "seed",
        "activation",
        "negative_slope",
        "status",
    }
    assert set(GEOMETRY_TABLES.tables["rows"].column_names) <= set(sw.geometry.columns)
    assert sorted(sw.runs.run_id) == sorted([RUN_A, RUN_B]) and set(sw.runs.alpha) == {-1.0, 1.0}
    assert sw.robustness().set_index("run_id").loc[RUN_A, "clean_accuracy"] == 0.25
    assert len(sw.robustness("corruptions")) == 2 and sw.robustness("attacks").epsilon.tolist() == [1 / 255]
    pca = sw.geometry[sw.geometry.measure == "pca"].set_index("run_id")["value"]
    assert pca.to_dict() == {RUN_A: 3.0, RUN_B: 5.0}
    assert sw.cca.distance.tolist() == [0.25] and {"seed_a", "seed_b", "alpha"} <= set(sw.cca.columns)
    assert set(sw.configs.columns) >= {"run_id", "model", "alpha", "seed", "lr", "epochs"}

    # Per-unit values: the recorded run's, with its model, alpha and seed; equal to its layer means.
    u = sw.units
    assert set(u.run_id) == {RUN_A} and (u.alpha == -1.0).all() and (u.model == "resnet20").all()
    layer_si = u.assign(si=u.selectivity.fillna(0.0)).groupby("layer", sort=False).si.mean()
    stored = sw.layers[sw.layers.run_id == RUN_A].set_index("layer").selectivity
    pd.testing.assert_series_equal(layer_si, stored.loc[layer_si.index], check_names=False, atol=1e-12)
    assert "RUNS" not in repr(sw) and "2 runs (2 completed)" in repr(sw)
    sw.close()

    assert snapshot(sweep) == before  # no file added, removed or touched


def test_results_exports_parquet_equal_to_the_frames(tiny_sweep_copy, tmp_path, monkeypatch):
    pytest.importorskip("pyarrow", reason="the parquet extra: pip install 'selectivity[parquet]'")
    sweep = tiny_sweep_copy
    sw = selectivity.open_sweep(sweep)
    for args, frame in (([], sw.runs), (["--per-layer"], sw.layers)):
        out = tmp_path / f"table{len(args)}.parquet"
        r = CliRunner().invoke(main, ["results", str(sweep), *args, "--format", "parquet", "-o", str(out)])
        assert r.exit_code == 0 and r.output == "", r.output
        pd.testing.assert_frame_equal(pd.read_parquet(out), frame)
    # To standard output (a pipe), as bytes: the same table.
    r = CliRunner().invoke(main, ["results", str(sweep), "--format", "parquet"])
    assert r.exit_code == 0
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(r.stdout_bytes)), sw.runs)
    # Without pyarrow: one line naming the extra.
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a)
    )
    r = CliRunner().invoke(main, ["results", str(sweep), "--format", "parquet", "-o", str(tmp_path / "x")])
    assert r.exit_code == 1
    assert r.output.strip() == "Error: --format parquet needs pyarrow: pip install 'selectivity[parquet]'"


def test_open_run_gives_model_config_and_data(tiny_sweep, tiny_data):
    before = snapshot(tiny_sweep.path)
    model, config, data = selectivity.open_run(tiny_sweep.path / "runs" / RUN_B, data=tiny_data)
    assert config.alpha == 1.0 and not model.training
    run = selectivity.open_run(tiny_sweep.path / "runs" / RUN_B, data=tiny_data)
    rep = run.measure()
    # The run's own evaluation images and measurement: the stored test numbers come back.
    stored = read_json(tiny_sweep.path / "runs" / RUN_B / "result.json")
    assert rep.num_samples == stored["test_samples"] == len(data.test)
    assert rep.mean_selectivity == pytest.approx(stored["mean_selectivity"], abs=1e-9)
    assert rep.accuracy == pytest.approx(stored["test_accuracy"], abs=1e-12)
    assert len(run.metrics) == config.epochs and run.result["status"] == "completed"
    frame = rep.to_frame(class_names=list(data.classes))
    assert len(frame) == sum(l.num_units for l in rep.layers)
    assert {"layer", "unit", "selectivity", "precision", "dead", "preferred_class", "mean_cat"} <= set(
        frame.columns
    )
    assert snapshot(tiny_sweep.path) == before


def test_to_frame_by_hand():
    """Two units, two classes: values, preferred class and class means as computed by hand."""
    from selectivity.core.measure import LayerReport, SelectivityReport

    means = torch.tensor([[3.0, 0.0], [1.0, 0.0]], dtype=torch.float64)  # (C, U): unit 1 is dead
    layer = LayerReport(
        "conv",
        selectivity=torch.tensor([0.5, float("nan")], dtype=torch.float64),  # (3 - 1) / (3 + 1)
        precision=None,
        dead=torch.tensor([False, True]),
        class_means=means,
    )
    df = SelectivityReport([layer], num_samples=4).to_frame(class_names=["a", "b"])
    assert df.unit.tolist() == [0, 1] and df.dead.tolist() == [False, True]
    assert df.selectivity[0] == 0.5 and pd.isna(df.selectivity[1]) and df.precision.isna().all()
    assert (
        df.preferred_name[0] == "a" and df.mean_a.tolist() == [3.0, 0.0] and df.mean_b.tolist() == [1.0, 0.0]
    )
    with pytest.raises(ValueError, match="3 class names for 2 classes"):
        SelectivityReport([layer], num_samples=4).to_frame(class_names=["a", "b", "c"])


def test_a_database_in_use_or_missing_is_read_without_writing(tiny_sweep_copy):
    sweep = tiny_sweep_copy
    ref = selectivity.open_sweep(sweep).runs
    # A writer holds the database open with unsaved pages in its write-ahead log.
    writer = sqlite3.connect(sweep / "results.sqlite")
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("UPDATE runs SET message='from the writer' WHERE run_id=?", (RUN_A,))
        writer.commit()
        assert os.path.getsize(f"{sweep}/results.sqlite-wal") > 0
        before = snapshot(sweep)
        seen = selectivity.open_sweep(sweep).runs.set_index("run_id")
        assert seen.loc[RUN_A, "message"] == "from the writer"  # read through the log
        assert snapshot(sweep) == before
    finally:
        writer.close()
    # No database at all: the frames come from the run directories, and none is created.
    for p in sweep.glob("results.sqlite*"):
        p.unlink()
    before = snapshot(sweep)
    rebuilt = selectivity.open_sweep(sweep).runs
    cols = [c for c in ref.columns if c != "updated"]  # when each row was last written
    pd.testing.assert_frame_equal(rebuilt[cols], ref[cols])
    assert snapshot(sweep) == before
    # A damaged one: said in one line, read from the run directories, left as it is.
    (sweep / "results.sqlite").write_bytes(b"not a database" * 100)
    before = snapshot(sweep)
    lines: list[str] = []
    again = selectivity.open_sweep(sweep, log=lines.append).runs
    pd.testing.assert_frame_equal(again[cols], ref[cols])
    assert len(lines) == 1 and "cannot be read" in lines[0]
    assert snapshot(sweep) == before


def test_report_writes_the_html_report(tiny_sweep_copy, tmp_path):
    sw = selectivity.open_sweep(tiny_sweep_copy)
    path = sw.report(tmp_path / "report")
    assert path == tmp_path / "report" / "report.html" and "resnet20" in path.read_text()


def test_errors_explain_what_is_missing(tiny_sweep, tmp_path):
    sw = selectivity.open_sweep(tiny_sweep.path)
    with pytest.raises(FileNotFoundError, match="selectivity cca"):
        _ = sw.cca
    with pytest.raises(FileNotFoundError, match="per-layer means"):
        _ = sw.units
    with pytest.raises(ValueError, match="summary, corruptions, attacks"):
        sw.robustness("cells")
    with pytest.raises(FileNotFoundError, match="not a sweep directory"):
        selectivity.open_sweep(tmp_path)
    assert sw.robustness().empty and sw.geometry.empty  # not evaluated: empty frames, with columns
    assert "clean_accuracy" in sw.robustness().columns
    assert io.StringIO(sw.runs.to_csv(index=False)).readline().startswith("run_id,model,alpha,seed")
