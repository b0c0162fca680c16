"""Reliability of the paper-2 commands (`robustness`, `geometry`, `corrupt`) and of their files.

Results are keyed by what produced them, a damaged analysis file never stops a command,
cached images are verified, nothing is written outside the sweep. One test (or a few)
per defect, on copies of the session's tiny two-run sweep (``tiny_sweep``), evaluated
once per module with cheap settings (20 images, one corruption cell, FGSM at one budget;
the geometry of one 16-channel layer on 20 images).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from helpers import N_TEST, RUN_A, RUN_B, TINY
from selectivity.cli import main
from selectivity.data import load_dataset, write_cifar_c
from selectivity.evaluate.geometry import GeometrySettings, geometry_frame, sweep_geometry
from selectivity.evaluate.robustness import RobustnessSettings, sweep_robustness
from selectivity.run.files import SweepFiles, read_json, write_json

ROB = dict(
    n_images=20,
    corruptions=("gaussian_noise",),
    severities=(1,),
    attacks=("fgsm",),
    epsilons=(4 / 255,),
    batch_size=20,
)
ROB_ARGS = [
    "--images",
    "20",
    "--corruptions",
    "gaussian_noise",
    "--severities",
    "1",
    "--attacks",
    "fgsm",
    "--epsilons",
    "4/255",
    "--batch-size",
    "20",
    "--quiet",
]
GEO = GeometrySettings(
    n_images=20,
    layers=("act1",),
    corruptions=("gaussian_noise",),
    severities=(1,),  # the robustness step's one cell
    attacks=("fgsm",),
    epsilons=(),
    match_l2=False,
    gradient_images=0,
    batch_size=20,
)
GEO_ARGS = [
    "--images",
    "20",
    "--layers",
    "act1",
    "--corruptions",
    "gaussian_noise",
    "--severities",
    "1",
    "--attacks",
    "fgsm",
    "--epsilons",
    "",
    "--no-match",
    "--gradient-images",
    "0",
    "--batch-size",
    "20",
    "--quiet",
]


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean(r, codes=(0,)) -> None:
    """Ended with one of ``codes``, no traceback; an error is exactly one ``Error:`` line."""
    assert r.exception is None or isinstance(r.exception, SystemExit), (r.exception, r.output)
    assert "Traceback" not in r.output and "Aborted!" not in r.output, r.output
    assert r.exit_code in codes, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == (0 if r.exit_code == 0 else 1), r.stderr


@pytest.fixture(scope="module")
def evaluated(tiny_sweep, tiny_data, tmp_path_factory) -> Path:
    """A copy of the shared tiny sweep with its robustness and geometry evaluated once."""
    out = Path(shutil.copytree(tiny_sweep.path, tmp_path_factory.mktemp("analysed") / "sweep"))
    sweep_robustness(out, RobustnessSettings(**ROB), str(tiny_data), progress=False)
    sweep_geometry(out, GEO, tiny_data, progress=False)
    return out


@pytest.fixture
def sweep(evaluated, tmp_path) -> Path:
    return Path(shutil.copytree(evaluated, tmp_path / "sweep"))


def _run(sweep: Path, run_id: str) -> Path:
    return sweep / "runs" / run_id


def results_of(run: Path, analysis: str = "robustness") -> dict[str, Path]:
    """Result files of one analysis of a run: ``RUN/<analysis>/<key>.json``, and
    ``RUN/<analysis>.json`` (the older layout, one result per run)."""
    found = {p.stem: p for p in (run / analysis).glob("*.json") if not p.name.endswith(".partial.json")}
    if (run / f"{analysis}.json").exists():
        found["(one per run)"] = run / f"{analysis}.json"
    return found


def _only(paths: dict) -> tuple[str, Path]:
    assert len(paths) == 1, paths
    (item,) = paths.items()
    return item


def _result(sweep: Path, run_id: str, analysis: str = "robustness") -> dict:
    """The run's only result of ``analysis``."""
    return read_json(_only(results_of(_run(sweep, run_id), analysis))[1])


def _clear(sweep: Path, analysis: str = "robustness") -> None:
    for rid in (RUN_A, RUN_B):
        for p in results_of(_run(sweep, rid), analysis).values():
            p.unlink()


def _cells(sweep: Path) -> Path:
    return sweep / "analysis" / "robustness_cells"


def _without_timing(res: dict) -> dict:
    return {k: v for k, v in res.items() if k not in ("seconds", "device")}


def _test_split(tiny_data: Path):
    return load_dataset("cifar10", str(tiny_data), val_size=0).test


def _permuted_copy(src: Path, dest: Path, perm: np.ndarray) -> Path:
    """A CIFAR-10-C directory with the rows of ``src`` in another order (images and labels alike)."""
    dest.mkdir()
    n = len(perm)
    rows = np.concatenate([s * n + perm for s in range(5)])  # the same order at every severity
    for f in src.glob("*.npy"):
        np.save(dest / f.name, np.load(f)[rows])
    return dest


# --------------------------------------------------------------------------- 1: row order
def test_a_permuted_corrupted_release_is_matched_to_the_test_split(sweep, tiny_data, tmp_path):
    test = _test_split(tiny_data)
    canon = write_cifar_c(tmp_path / "canon", test.images, test.labels, ["gaussian_noise"], seed=3)
    base = ["robustness", sweep, "--data", tiny_data, *ROB_ARGS, "--attacks", "none"]
    _clear(sweep)
    r = cli(*base, "--corrupted", canon)
    assert_clean(r)
    want = {rid: _result(sweep, rid) for rid in (RUN_A, RUN_B)}
    # The same images in another row order (the released CIFAR-10-C follows test_batch's
    # order, an image-folder copy of CIFAR-10 is sorted by class): matched by content.
    perm = np.random.default_rng(0).permutation(N_TEST)
    assert not np.array_equal(test.labels.numpy()[perm], test.labels.numpy())
    shuffled = _permuted_copy(canon, tmp_path / "shuffled", perm)
    _clear(sweep)
    r = cli(*base, "--corrupted", shuffled)
    assert_clean(r)
    for rid in (RUN_A, RUN_B):
        got = _result(sweep, rid)
        assert got["cell_sha1"] == want[rid]["cell_sha1"]  # the very same images per test index
        assert got["corruptions"] == want[rid]["corruptions"]
    # Rows that cannot be matched (every image alike): one line naming the data source needed.
    blank = _permuted_copy(canon, tmp_path / "blank", perm)
    np.save(blank / "gaussian_noise.npy", np.zeros_like(np.load(blank / "gaussian_noise.npy")))
    _clear(sweep)
    r = cli(*base, "--corrupted", blank)
    assert_clean(r, codes=(1,))
    assert "test_batch" in r.stderr and "order" in r.stderr
    # Labels outside the run's classes: refused by name.
    bad = _permuted_copy(canon, tmp_path / "bad", np.arange(N_TEST))
    labels = np.load(bad / "labels.npy")
    labels[3] = 12
    np.save(bad / "labels.npy", labels)
    r = cli(*base, "--corrupted", bad)
    assert_clean(r, codes=(1,))
    assert "labels.npy" in r.stderr and "12" in r.stderr and "0..9" in r.stderr


# --------------------------------------------------------------------------- 2: keyed results
TRIAL = ["--images", "10", "--corruptions", "fog", "--severities", "1", "--attacks", "none", "--quiet"]


def test_other_settings_are_stored_beside_the_results_not_over_them(sweep, tiny_data, tmp_path):
    full = {rid: _result(sweep, rid) for rid in (RUN_A, RUN_B)}
    r = cli("robustness", sweep, "--data", tiny_data, *TRIAL)
    assert_clean(r)
    for rid in (RUN_A, RUN_B):
        results = [read_json(p) for p in results_of(_run(sweep, rid)).values()]
        assert len(results) == 2 and full[rid] in results  # the earlier result is untouched
    # The report and `results` show the sweep's default settings (here: the fuller
    # evaluation) and say which.
    r = cli("results", sweep, "--robustness", "--format", "json")
    assert_clean(r)
    rows = json.loads(r.stdout)
    assert len(rows) == 2 and {row["n_images"] for row in rows} == {20}
    assert len({row["settings_key"] for row in rows}) == 1
    r = cli("results", sweep, "--robustness")
    assert_clean(r)
    assert "settings" in r.stderr and "1 other" in r.stderr
    page = cli("report", sweep, "--out", tmp_path / "report", "--resamples", "20")
    assert_clean(page)
    summary = pd.read_csv(tmp_path / "report" / "tables" / "robustness-summary.csv")
    assert set(summary["n_images"]) == {20}
    # The same settings again: reused, nothing recomputed; --force recomputes.
    path = next(p for p in results_of(_run(sweep, RUN_A)).values() if read_json(p)["n_images"] == 20)
    before = path.stat().st_mtime_ns
    r = cli("robustness", sweep, "--data", tiny_data, *ROB_ARGS)
    assert_clean(r)
    assert path.stat().st_mtime_ns == before
    r = cli("robustness", sweep, "--data", tiny_data, *ROB_ARGS, "--force")
    assert_clean(r)
    assert path.stat().st_mtime_ns != before
    assert _without_timing(read_json(path)) == _without_timing(full[RUN_A])
    # Two --corrupted directories with other contents are two settings, not one.
    test = _test_split(tiny_data)
    one = write_cifar_c(tmp_path / "one", test.images, test.labels, ["fog"], seed=0)
    two = write_cifar_c(tmp_path / "two", test.images, test.labels, ["fog"], seed=1)
    for d in (one, two):
        r = cli("robustness", sweep, "--data", tiny_data, *TRIAL, "--corrupted", d)
        assert_clean(r)
    read = [read_json(p) for p in results_of(_run(sweep, RUN_A)).values()]
    from_dirs = [res for res in read if res["corruption_params"] is None]
    assert len(from_dirs) == 2 and from_dirs[0]["cell_sha1"] != from_dirs[1]["cell_sha1"]


def test_results_of_the_older_layout_are_still_read(sweep, tiny_data):
    """``RUN/robustness.json`` and ``RUN/geometry.json`` as written before results were keyed."""
    for rid in (RUN_A, RUN_B):
        run = _run(sweep, rid)
        for analysis in ("robustness", "geometry"):
            _, path = _only(results_of(run, analysis))
            saved = read_json(path)
            saved.pop("settings_key", None)
            write_json(run / f"{analysis}.json", saved)
            path.unlink()
    SweepFiles(sweep).db.unlink()
    from selectivity.evaluate.robustness import robustness_frame

    assert len(robustness_frame(sweep, "summary")) == 2
    assert set(geometry_frame(sweep)["run_id"]) == {RUN_A, RUN_B}
    # The same settings: the older results are reused, not recomputed.
    old = {rid: (_run(sweep, rid) / "robustness.json").stat().st_mtime_ns for rid in (RUN_A, RUN_B)}
    for args in (["robustness", *ROB_ARGS], ["geometry", *GEO_ARGS]):
        r = cli(args[0], sweep, "--data", tiny_data, *args[1:])
        assert_clean(r)
    for rid in (RUN_A, RUN_B):
        assert list(results_of(_run(sweep, rid))) == ["(one per run)"]
        assert list(results_of(_run(sweep, rid), "geometry")) == ["(one per run)"]
        assert (_run(sweep, rid) / "robustness.json").stat().st_mtime_ns == old[rid]


# --------------------------------------------------------------------------- 3: cached cells
def test_cached_cells_are_verified_before_use(sweep, tiny_data, tmp_path):
    want = _result(sweep, RUN_A)["cell_sha1"]
    (cell,) = list(_cells(sweep).rglob("*.npy"))
    np.save(cell, 255 - np.load(cell))  # same shape and dtype, other pixels
    _clear(sweep)
    r = cli("robustness", sweep, "--data", tiny_data, *ROB_ARGS)
    assert_clean(r)
    assert _result(sweep, RUN_A)["cell_sha1"] == want
    # An empty cached cell is made again, not an EOFError.
    for p in _cells(sweep).rglob("*.npy"):
        p.write_bytes(b"")
    _clear(sweep)
    r = cli("robustness", sweep, "--data", tiny_data, *ROB_ARGS)
    assert_clean(r)
    assert _result(sweep, RUN_A)["cell_sha1"] == want
    assert all(p.stat().st_size > 0 for p in _cells(sweep).rglob("*.npy"))
    # An empty file in a --corrupted directory: refused by name, in one line.
    test = _test_split(tiny_data)
    d = write_cifar_c(tmp_path / "c10c", test.images, test.labels, ["fog"], seed=0)
    (d / "fog.npy").write_bytes(b"")
    r = cli("robustness", sweep, "--data", tiny_data, *TRIAL, "--corrupted", d)
    assert_clean(r, codes=(1,))
    assert "fog.npy" in r.stderr


# --------------------------------------------------------------------------- 4-6: damaged files
def _damage(sweep: Path, run_id: str, analysis: str = "robustness", **fields) -> Path:
    _, path = _only(results_of(_run(sweep, run_id), analysis))
    write_json(path, {**read_json(path), **fields})
    return path


def _set_aside(sweep: Path, run_id: str) -> list[Path]:
    return [p for p in (_run(sweep, run_id) / "damaged").rglob("*.json")]


def test_a_robustness_file_of_wrong_types_is_set_aside_and_the_run_evaluated_again(
    sweep, tiny_data, tmp_path
):
    good_b = _result(sweep, RUN_B)
    good_a = _only(results_of(_run(sweep, RUN_A)))[1].read_bytes()
    resume = ["sweep", "--models", "resnet20", "--alphas=-1,1", "--seeds", "1", "--out", sweep]
    resume += ["--data", tiny_data, "--no-summary", "--quiet"]
    resume += [x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]
    commands = [
        resume,
        ["results", sweep, "--rebuild", "--robustness"],
        ["results", sweep, "--robustness", "attacks"],
        ["summarize", sweep, "--no-figures"],
        ["report", sweep, "--out", tmp_path / "report", "--resamples", "20"],
        ["geometry", sweep, "--data", tiny_data, *GEO_ARGS],
    ]
    for args in commands:
        path = _only(results_of(_run(sweep, RUN_A)))[1] if results_of(_run(sweep, RUN_A)) else None
        target = path or (_run(sweep, RUN_A) / "robustness.json")
        target.write_bytes(good_a)
        _damage(sweep, RUN_A, corruptions="many", clean_accuracy="0.5")
        r = cli(*args)
        assert_clean(r)
        assert _result(sweep, RUN_B) == good_b  # the other run is not affected
    assert _set_aside(sweep, RUN_A)  # set aside (kept), named in one line
    lines = [ln for ln in r.stderr.splitlines() if "damaged" in ln]
    assert all(len(ln) < 400 for ln in lines)
    # The next `robustness` evaluates the run again.
    if not results_of(_run(sweep, RUN_A)):  # the last command set it aside (geometry reads its settings)
        (_run(sweep, RUN_A) / "robustness.json").write_bytes(good_a)
    _damage(sweep, RUN_A, corruptions="many")
    r = cli("robustness", sweep, "--data", tiny_data, *ROB_ARGS)
    assert_clean(r)
    assert "damaged" in r.stderr
    assert _result(sweep, RUN_A)["corruptions"][0]["corruption"] == "gaussian_noise"


def test_a_value_sqlite_cannot_bind_leaves_the_database_alone(sweep):
    path = _damage(sweep, RUN_A, clean_accuracy={"not": "a number"})
    _, gpath = _only(results_of(_run(sweep, RUN_B), "geometry"))
    saved = read_json(gpath)
    saved["rows"][0]["value"] = {"nested": 1}
    write_json(gpath, saved)
    for _ in range(2):
        r = cli("results", sweep, "--robustness")
        assert_clean(r)
        r = cli("results", sweep, "--geometry", "--format", "csv")
        assert_clean(r)
    assert not list(sweep.glob("results.sqlite.corrupt-*"))  # never declared damaged
    assert not path.exists() and not gpath.exists()  # both set aside
    with sqlite3.connect(SweepFiles(sweep).db) as conn:
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        n = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert n == 2


def test_partial_and_geometry_files_are_validated(sweep, tiny_data, tmp_path):
    good = _result(sweep, RUN_A)
    key, path = _only(results_of(_run(sweep, RUN_A)))
    partial = (
        path.with_name(f"{key}.partial.json")
        if key != "(one per run)"
        else path.with_name("robustness.partial.json")
    )
    # Matching settings, wrong types: no traceback, the cells computed again.
    path.unlink()
    write_json(partial, {"settings": good["settings"], "clean": "x", "cells": [], "attacks": {}, "sha1": {}})
    r = cli("robustness", sweep, "--data", tiny_data, *ROB_ARGS)
    assert_clean(r)
    assert _without_timing(_result(sweep, RUN_A)) == _without_timing(good)
    # Accuracies outside [0, 1] are never copied into the result.
    _clear(sweep)
    bad = {"gaussian_noise/1": -3.0}
    write_json(partial, {"settings": good["settings"], "clean": 7.0, "cells": bad, "attacks": {}, "sha1": {}})
    r = cli("robustness", sweep, "--data", tiny_data, *ROB_ARGS)
    assert_clean(r)
    assert _without_timing(_result(sweep, RUN_A)) == _without_timing(good)
    # A geometry row with a string value, another with an integer SQLite cannot hold.
    for rid, field, value in ((RUN_A, "value", "big"), (RUN_B, "layer_index", 10**30)):
        _, gpath = _only(results_of(_run(sweep, rid), "geometry"))
        saved = read_json(gpath)
        saved["rows"][1][field] = value
        write_json(gpath, saved)
    r = cli("report", sweep, "--out", tmp_path / "report", "--resamples", "20")
    assert_clean(r)
    r = cli("results", sweep, "--geometry")
    assert_clean(r)
    assert len(_set_aside(sweep, RUN_A)) >= 1 and len(_set_aside(sweep, RUN_B)) == 1


# --------------------------------------------------------------------------- 7: report statistics
def test_robustness_statistics_that_cannot_be_computed_are_shown_as_such():
    from selectivity.report.robustness import robustness_statistics

    summary = pd.DataFrame(
        {
            "run_id": ["a", "b", "c", "d"],
            "model": "resnet20",
            "alpha": [0.0, 1.0, 1.0, -1.0],
            "mean_selectivity": [0.1, 0.2, 0.3, 0.05],
            "clean_accuracy": [0.5, 0.4, math.nan, 0.6],
            "mean_corruption_accuracy": [0.3, 0.2, 0.25, 0.35],
            "relative_corruption_accuracy": [0.6, 0.5, 0.5, 0.58],
        }
    )
    # an attack the baseline run lacks (rows as the store gives them)
    attacks = pd.DataFrame(
        {
            "run_id": ["b", "c"],
            "model": "resnet20",
            "alpha": [1.0, 1.0],
            "attack": "pgd",
            "norm": "linf",
            "epsilon": 4 / 255,
            "accuracy": [0.1, 0.2],
        }
    )
    st = robustness_statistics(summary, pd.DataFrame(), attacks, n_resamples=20)
    tests, corr = st.tests, st.correlations
    measures = {"clean_accuracy", "mean_corruption_accuracy", "relative_corruption_accuracy", "pgd_4/255"}
    assert set(tests["measure"]) == measures and tests["p"].isna().all()
    assert tests["note"].str.contains("α = 0").all()  # why, in words
    assert set(corr["measure"]) == measures


def test_report_completes_with_a_single_baseline_run(sweep, tmp_path):
    # Run A becomes the only alpha = 0 run (one seed, as in the `medium` preset).
    cfg = _run(sweep, RUN_A) / "config.json"
    write_json(cfg, {**read_json(cfg), "alpha": 0.0})
    SweepFiles(sweep).db.unlink()
    r = cli("report", sweep, "--out", tmp_path / "report", "--resamples", "20")
    assert_clean(r)
    page = (tmp_path / "report" / "report.html").read_text()
    assert '<section id="robustness">' in page


# --------------------------------------------------------------------------- 8: missing run directory
def test_a_completed_run_whose_directory_is_gone_is_skipped(sweep, tiny_data):
    _clear(sweep)
    shutil.rmtree(_run(sweep, RUN_A))
    r = cli("robustness", sweep, "--data", tiny_data, *ROB_ARGS)
    assert_clean(r)
    assert RUN_A in r.stderr and "skipped" in r.stderr
    assert len(results_of(_run(sweep, RUN_B))) == 1
    r = cli("geometry", sweep, "--data", tiny_data, *GEO_ARGS, "--force")
    assert_clean(r)
    assert RUN_A in r.stderr and "skipped" in r.stderr


# --------------------------------------------------------------------------- 9-10: corrupt
def test_corrupt_removes_stale_parts_and_holds_a_lock(tiny_data, tmp_path):
    out = tmp_path / "c10c"
    out.mkdir()
    stale = out / ".fog-abc123.npy.part"
    stale.write_bytes(b"\0" * 1000)
    args = ["corrupt", "--data", tiny_data, "--out", out, "--images", "4", "--quiet"]
    r = cli(*args, "--corruptions", "fog")
    assert_clean(r)
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]
    # A second process writing the same directory: refused in one line, nothing written.
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with open(out / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = cli(*args, "--corruptions", "contrast", "--seed", "1")
    assert_clean(r, codes=(1,))
    assert ".lock" in r.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_a_negative_seed_is_refused_before_any_work(sweep, tiny_data, tmp_path):
    _clear(sweep)
    r = cli("robustness", sweep, "--data", tiny_data, *ROB_ARGS, "--seed", "-1")
    assert_clean(r, codes=(2,))
    assert "--seed" in r.stderr
    assert not list(sweep.rglob("*partial.json"))
    out = tmp_path / "c10c"
    r = cli("corrupt", "--data", tiny_data, "--out", out, "--images", "4", "--seed", "-1", "--quiet")
    assert_clean(r, codes=(2,))
    assert "--seed" in r.stderr and not out.exists()
    for field in ("corruption_seed", "attack_seed", "image_seed"):
        with pytest.raises(ValueError, match=field):
            RobustnessSettings(**{field: -1})
    test = _test_split(tiny_data)
    with pytest.raises(ValueError, match="seed"):
        write_cifar_c(tmp_path / "lib", test.images[:4], test.labels[:4], ["fog"], seed=-1)
    assert not (tmp_path / "lib").exists()


# --------------------------------------------------------------------------- 11: paths
def test_a_run_id_naming_a_place_outside_the_sweep_is_refused(sweep, tiny_data, tmp_path):
    victim = tmp_path / "outside" / "victim"
    shutil.copytree(_run(sweep, RUN_A), victim)
    for analysis in ("robustness", "geometry"):
        for p in results_of(victim, analysis).values():
            p.unlink()
    (
        victim / "config.json"
    ).unlink()  # not a run directory to the sync: its row stays; the checkpoint remains
    before = sorted(str(p.relative_to(victim)) for p in victim.rglob("*"))
    bad_id = "../../outside/victim"
    assert (sweep / "runs" / bad_id).resolve() == victim.resolve()
    with sqlite3.connect(SweepFiles(sweep).db) as conn:
        row = conn.execute("SELECT * FROM runs WHERE run_id=?", (RUN_A,)).fetchone()
        conn.execute(f"INSERT INTO runs VALUES ({','.join('?' * len(row))})", (bad_id, *row[1:]))
    said = []
    for args in (["robustness", *ROB_ARGS], ["geometry", *GEO_ARGS, "--force"]):
        r = cli(args[0], sweep, "--data", tiny_data, *args[1:])
        assert_clean(r)
        said.append(r.stderr)
    assert sorted(str(p.relative_to(victim)) for p in victim.rglob("*")) == before  # nothing written there
    assert all(bad_id in text for text in said)  # the stored id is named, not followed


def test_the_cell_cache_never_follows_a_planted_link(sweep, tiny_data, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (key_dir,) = [p for p in _cells(sweep).iterdir() if p.is_dir()]
    shutil.rmtree(key_dir)
    key_dir.mkdir()
    # the temporary name the cache used, .<cell>.npy.<pid>.part (this process evaluates)
    os.symlink(victim, key_dir / f".gaussian_noise-1.npy.{os.getpid()}.part")
    _clear(sweep)
    sweep_robustness(sweep, RobustnessSettings(**ROB), str(tiny_data), progress=False)
    assert victim.read_text() == "precious"
    cached = [p for p in key_dir.iterdir() if p.name.endswith(".npy")]
    assert cached and not any(p.is_symlink() for p in cached)
    digest = hashlib.sha1(np.load(cached[0]).tobytes()).hexdigest()
    assert digest == _result(sweep, RUN_A)["cell_sha1"]["gaussian_noise/1"]
