"""The results store: one SQLite database per sweep directory.

Only the sweep's driver process writes it. Each run's own directory stays the source of
truth (the driver's wall-clock time of a run is kept there too, in
``sweep_record.json``); :func:`rebuild_store` recreates the database from the run
directories alone, and :func:`open_store_checked` does so by itself when the database is
damaged.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ..analysis.stats import normalise_alpha
from ..run.files import DB_NAME, FINAL_STATUSES, RUNS_DIR, DamagedFileError, RunFiles, read_json, write_json
from ..run.health import inspect_run_dir

__all__ = [
    "open_store",
    "ResultsStore",
    "rebuild_store",
    "scan_run_dir",
    "sync_store",
    "open_store_checked",
    "write_sweep_record",
    "DB_NAME",
    "RUNS_DIR",
    "RECORD_NAME",
    "ROBUSTNESS_NAME",
    "sync_robustness",
    "GEOMETRY_NAME",
    "read_geometry_rows",
]

# DB_NAME and RUNS_DIR are defined in selectivity.run.files (re-exported here).
#: Per-run file with what only the driver knows (its wall-clock time of the run).
RECORD_NAME = "sweep_record.json"
#: Per-run robustness results (written by selectivity.evaluate.robustness).
ROBUSTNESS_NAME = "robustness.json"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


RUN_COLUMNS = [
    ("run_id", "TEXT PRIMARY KEY"),
    ("model", "TEXT"),
    ("alpha", "REAL"),
    ("seed", "INTEGER"),
    ("activation", "TEXT"),
    ("negative_slope", "REAL"),
    ("epochs", "INTEGER"),
    ("status", "TEXT"),  # one of selectivity.run.files.RUN_STATUSES
    ("message", "TEXT"),
    ("test_accuracy", "REAL"),
    ("best_val_accuracy", "REAL"),
    ("best_epoch", "INTEGER"),
    ("epochs_completed", "INTEGER"),
    ("mean_selectivity", "REAL"),  # dead units count with index 0 (paper 1, Figs 1b, A1b, 4c)
    ("mean_selectivity_live", "REAL"),  # dead units removed (paper 1, Fig. A9b)
    ("mean_precision", "REAL"),
    ("dead_fraction", "REAL"),
    ("train_seconds", "REAL"),
    ("wall_seconds", "REAL"),  # driver-side time from submission to result
    ("config", "TEXT"),  # resolved config, JSON
    ("updated", "TEXT"),
]
LAYER_COLUMNS = [
    ("run_id", "TEXT"),
    ("layer_index", "INTEGER"),
    ("layer", "TEXT"),
    ("units", "INTEGER"),
    ("selectivity", "REAL"),  # dead units count with index 0
    ("selectivity_live", "REAL"),  # dead units removed
    ("dead_fraction", "REAL"),
    ("precision", "REAL"),
]
#: Per-run file written by ``selectivity geometry`` (:mod:`selectivity.evaluate.geometry`):
#: ``{"settings": {...}, "rows": [{layer_index, layer, kind, perturbation, measure, value}]}``.
GEOMETRY_NAME = "geometry.json"
GEOMETRY_COLUMNS = [
    ("run_id", "TEXT"),
    ("layer_index", "INTEGER"),  # -1 for the input and the output, else the layer's position
    ("layer", "TEXT"),  # a module name, "input" (pixel distances) or "output" (accuracy)
    ("kind", "TEXT"),  # clean | corruption | adversarial
    ("perturbation", "TEXT"),  # e.g. clean, gaussian_noise-3, pgd-linf-4/255, pgd-l2-match-fog-3
    ("measure", "TEXT"),  # e.g. pca, participation_ratio, change_pca, l2_mean, grad_var_samples
    ("value", "REAL"),
]

# Paper 2's robustness results, one set per run (filled from RUN/robustness.json).
ROBUSTNESS_TABLES = {
    "robustness_runs": [
        ("run_id", "TEXT PRIMARY KEY"),
        ("n_images", "INTEGER"),
        ("clean_accuracy", "REAL"),
        ("mean_corruption_accuracy", "REAL"),
        ("relative_corruption_accuracy", "REAL"),
        ("n_corruption_cells", "INTEGER"),
        ("settings", "TEXT"),  # JSON
    ],
    "robustness_corruptions": [
        ("run_id", "TEXT"),
        ("corruption", "TEXT"),
        ("severity", "INTEGER"),
        ("accuracy", "REAL"),
    ],
    "robustness_attacks": [
        ("run_id", "TEXT"),
        ("attack", "TEXT"),
        ("norm", "TEXT"),
        ("epsilon", "REAL"),
        ("accuracy", "REAL"),
    ],
}
_ROBUSTNESS_KEYS = {
    "robustness_corruptions": "PRIMARY KEY (run_id, corruption, severity)",
    "robustness_attacks": "PRIMARY KEY (run_id, attack, norm, epsilon)",
}
_ROBUSTNESS_KINDS = {
    "summary": "robustness_runs",
    "corruptions": "robustness_corruptions",
    "attacks": "robustness_attacks",
}


class ResultsStore:
    """SQLite table of runs (one row each) and of their per-layer results."""

    def __init__(self, path: str | os.PathLike, wal: bool = True, check: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=30)
        try:
            self.conn.execute(f"PRAGMA journal_mode={'WAL' if wal else 'DELETE'}")
            if check:
                bad = self.conn.execute("PRAGMA quick_check").fetchall()
                if bad != [("ok",)]:
                    raise sqlite3.DatabaseError(f"quick_check: {bad[0][0]}")
            cols = ", ".join(f"{n} {t}" for n, t in RUN_COLUMNS)
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS runs ({cols})")
            lcols = ", ".join(f"{n} {t}" for n, t in LAYER_COLUMNS)
            self.conn.execute(
                f"CREATE TABLE IF NOT EXISTS layers ({lcols}, PRIMARY KEY (run_id, layer_index))"
            )
            for table, tcols in ROBUSTNESS_TABLES.items():
                spec = ", ".join(f"{n} {t}" for n, t in tcols)
                key = f", {_ROBUSTNESS_KEYS[table]}" if table in _ROBUSTNESS_KEYS else ""
                self.conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({spec}{key})")
            gcols = ", ".join(f"{n} {t}" for n, t in GEOMETRY_COLUMNS)
            self.conn.execute(
                f"CREATE TABLE IF NOT EXISTS geometry ({gcols}, PRIMARY KEY (run_id, layer, perturbation, measure))"
            )
            # which geometry.json (size, mtime) the geometry rows of a run come from
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS geometry_files (run_id TEXT PRIMARY KEY, stamp TEXT)"
            )
            have = [r[1] for r in self.conn.execute("PRAGMA table_info(runs)").fetchall()]
            if have != [n for n, _ in RUN_COLUMNS]:
                raise sqlite3.DatabaseError(f"table runs has columns {have}")
            self.conn.commit()
        except BaseException:
            self.conn.close()
            raise

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing
    def record(
        self,
        run_id: str,
        config: dict,
        result: dict | None,
        status: str | None = None,
        wall_seconds: float | None = None,
    ) -> None:
        """Insert or replace one run (and its layer rows) from its config and result."""
        result = result or {}
        status = status or result.get("status") or "pending"
        row: dict[str, Any] = {
            "run_id": run_id,
            "model": config.get("model"),
            "alpha": config.get("alpha"),
            "seed": config.get("seed"),
            "activation": config.get("activation"),
            "negative_slope": config.get("negative_slope"),
            "epochs": config.get("epochs"),
            "status": status,
            "message": result.get("message"),
            "config": json.dumps(config, sort_keys=True),
            "updated": pd.Timestamp.now(tz="UTC").isoformat(),
        }
        for k in (
            "test_accuracy",
            "best_val_accuracy",
            "best_epoch",
            "epochs_completed",
            "mean_selectivity",
            "mean_selectivity_live",
            "mean_precision",
            "dead_fraction",
            "train_seconds",
        ):
            row[k] = result.get(k)
        if wall_seconds is not None:
            row["wall_seconds"] = wall_seconds
        else:
            prev = self.conn.execute("SELECT wall_seconds FROM runs WHERE run_id=?", (run_id,)).fetchone()
            row["wall_seconds"] = prev[0] if prev else None
        names = [n for n, _ in RUN_COLUMNS]
        with self.conn:
            self.conn.execute(
                f"INSERT OR REPLACE INTO runs ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                [row.get(n) for n in names],
            )
            self.conn.execute("DELETE FROM layers WHERE run_id=?", (run_id,))
            for i, layer in enumerate(result.get("layers") or []):
                self.conn.execute(
                    "INSERT INTO layers VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run_id,
                        i,
                        layer["layer"],
                        layer.get("units"),
                        layer.get("selectivity"),
                        layer.get("selectivity_live"),
                        layer.get("dead_fraction"),
                        layer.get("precision"),
                    ),
                )

    def record_geometry(self, run_id: str, rows: list[dict], stamp: str | None = None) -> None:
        """Replace the geometry rows of one run (see :data:`GEOMETRY_COLUMNS`)."""
        names = [n for n, _ in GEOMETRY_COLUMNS]
        with self.conn:
            self.conn.execute("DELETE FROM geometry WHERE run_id=?", (run_id,))
            self.conn.executemany(
                f"INSERT OR REPLACE INTO geometry VALUES ({', '.join('?' * len(names))})",
                [[run_id, *(r.get(n) for n in names[1:])] for r in rows],
            )
            self.conn.execute("INSERT OR REPLACE INTO geometry_files VALUES (?, ?)", (run_id, stamp or ""))

    def set_status(self, run_id: str, status: str) -> None:
        with self.conn:
            self.conn.execute(
                "UPDATE runs SET status=?, updated=? WHERE run_id=?",
                (status, pd.Timestamp.now(tz="UTC").isoformat(), run_id),
            )

    # ------------------------------------------------------------------ reading
    # Alphas are normalised here, where runs are read (selectivity.analysis.normalise_alpha).
    def runs_df(self) -> pd.DataFrame:
        """One row per run (every status), ``alpha`` normalised."""
        df = pd.read_sql_query("SELECT * FROM runs ORDER BY model, alpha, seed, run_id", self.conn)
        return _normalised(df)

    def layers_df(self) -> pd.DataFrame:
        """One row per run and layer, with the run's model, alpha, seed, activation and status."""
        df = pd.read_sql_query(
            "SELECT l.*, r.model, r.alpha, r.seed, r.activation, r.negative_slope, r.status "
            "FROM layers l JOIN runs r USING (run_id) ORDER BY r.model, r.alpha, r.seed, l.layer_index",
            self.conn,
        )
        return _normalised(df)

    def record_robustness(self, run_id: str, res: dict | None) -> None:
        """Replace one run's robustness rows with ``res`` (a ``robustness.json``); None deletes them."""
        with self.conn:
            for table in ROBUSTNESS_TABLES:
                self.conn.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))
            if not res:
                return
            self.conn.execute(
                "INSERT INTO robustness_runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    res.get("n_images"),
                    res.get("clean_accuracy"),
                    res.get("mean_corruption_accuracy"),
                    res.get("relative_corruption_accuracy"),
                    res.get("n_corruption_cells"),
                    json.dumps(res.get("settings"), sort_keys=True),
                ),
            )
            self.conn.executemany(
                "INSERT OR REPLACE INTO robustness_corruptions VALUES (?, ?, ?, ?)",
                [
                    (run_id, c["corruption"], c["severity"], c["accuracy"])
                    for c in res.get("corruptions") or []
                ],
            )
            self.conn.executemany(
                "INSERT OR REPLACE INTO robustness_attacks VALUES (?, ?, ?, ?, ?)",
                [
                    (run_id, a["attack"], a["norm"], a["epsilon"], a["accuracy"])
                    for a in res.get("attacks") or []
                ],
            )

    def robustness_df(self, kind: str = "summary") -> pd.DataFrame:
        """Robustness rows joined with the run's model, alpha, seed, activation, slope and
        mean selectivity: ``kind`` is ``summary`` (one row per run), ``corruptions`` or ``attacks``."""
        if kind not in _ROBUSTNESS_KINDS:
            raise ValueError(f"kind must be one of {', '.join(_ROBUSTNESS_KINDS)}, got {kind!r}")
        table = _ROBUSTNESS_KINDS[kind]
        order = {
            "summary": "",
            "corruptions": ", t.corruption, t.severity",
            "attacks": ", t.attack, t.epsilon",
        }[kind]
        df = pd.read_sql_query(
            "SELECT r.model, r.alpha, r.seed, r.activation, r.negative_slope, r.mean_selectivity, t.* "
            f"FROM {table} t JOIN runs r USING (run_id) ORDER BY r.model, r.alpha, r.seed, r.run_id{order}",
            self.conn,
        )
        df = df.loc[:, ~df.columns.duplicated()]
        return _normalised(df)

    def geometry_df(self) -> pd.DataFrame:
        """One row per run, layer, perturbation and measure, with the run's settings and selectivity."""
        df = pd.read_sql_query(
            "SELECT g.*, r.model, r.alpha, r.seed, r.activation, r.negative_slope, r.status, "
            "r.mean_selectivity, r.test_accuracy FROM geometry g JOIN runs r USING (run_id) "
            "ORDER BY r.model, r.alpha, r.seed, g.kind, g.perturbation, g.layer_index, g.measure",
            self.conn,
        )
        return _normalised(df)

    def statuses(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT run_id, status FROM runs").fetchall())

    def delete(self, run_id: str) -> None:
        """Forget one run (e.g. its directory was archived)."""
        with self.conn:
            self.conn.execute("DELETE FROM layers WHERE run_id=?", (run_id,))
            self.conn.execute("DELETE FROM geometry WHERE run_id=?", (run_id,))
            self.conn.execute("DELETE FROM geometry_files WHERE run_id=?", (run_id,))
            self.conn.execute("DELETE FROM runs WHERE run_id=?", (run_id,))
            for table in ROBUSTNESS_TABLES:
                self.conn.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))


def write_sweep_record(run_dir: str | os.PathLike, wall_seconds: float) -> None:
    """Keep the driver's wall-clock time of a run in the run directory (survives a rebuild)."""
    write_json(Path(run_dir) / RECORD_NAME, {"wall_seconds": wall_seconds})


def _wall_seconds(run_dir: Path) -> float | None:
    try:
        v = read_json(run_dir / RECORD_NAME).get("wall_seconds")
    except (FileNotFoundError, DamagedFileError):
        return None
    return float(v) if isinstance(v, (int, float)) else None


def sync_robustness(store: ResultsStore, sweep_dir: str | os.PathLike, names: list[str]) -> None:
    """Load every run's ``robustness.json`` into the robustness tables (unreadable: no rows)."""
    sweep_dir = Path(sweep_dir)
    have = {r[0] for r in store.conn.execute("SELECT run_id FROM robustness_runs").fetchall()}
    for name in names:
        path = sweep_dir / RUNS_DIR / name / ROBUSTNESS_NAME
        if not path.exists():
            if name in have:
                store.record_robustness(name, None)
            continue
        try:
            res = read_json(path)
        except DamagedFileError:
            res = None
        store.record_robustness(name, res)


def _geometry_stamp(path: Path) -> str | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


def read_geometry_rows(run_dir: str | os.PathLike) -> list[dict] | None:
    """The rows of a run directory's ``geometry.json``, or None if it is missing or unreadable."""
    try:
        rows = read_json(Path(run_dir) / GEOMETRY_NAME).get("rows")
    except (FileNotFoundError, DamagedFileError):
        return None
    return rows if isinstance(rows, list) and all(isinstance(r, dict) for r in rows) else None


def _sync_geometry(store: ResultsStore, sweep_dir: Path, names: list[str]) -> None:
    """Load each run's ``geometry.json`` whose (size, mtime) changed since it was last loaded."""
    known = dict(store.conn.execute("SELECT run_id, stamp FROM geometry_files").fetchall())
    for name in names:
        path = sweep_dir / RUNS_DIR / name / GEOMETRY_NAME
        stamp = _geometry_stamp(path)
        if stamp is None or known.get(name) == stamp:
            continue
        rows = read_geometry_rows(path.parent)
        if rows is not None:
            store.record_geometry(name, rows, stamp)


def _normalised(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty or "alpha" not in df.columns:
        return df
    return df.assign(alpha=normalise_alpha(df["alpha"]))


def scan_run_dir(path: str | os.PathLike) -> tuple[dict, dict | None, str]:
    """(config, result or None, status) of one run directory, from its JSON files alone.

    A damaged file gives status ``damaged`` with the reason in ``result["message"]``
    (naming the file); the config is then ``{}`` if ``config.json`` itself is damaged.
    Checkpoints are not opened here (that is the sweep driver's job before it runs).
    """
    h = inspect_run_dir(path, checkpoints=False)
    if not h.ok:
        return h.config or {}, {"status": "damaged", "message": h.describe()}, "damaged"
    return h.config or {}, h.result, h.status


def _run_dirs(sweep_dir: Path) -> list[Path]:
    runs = sweep_dir / RUNS_DIR
    if not runs.is_dir():
        return []
    return [d for d in sorted(runs.iterdir()) if d.is_dir() and RunFiles(d).config.exists()]


def _grid_keys(sweep_dir: Path) -> list[str]:
    try:
        return sorted((read_json(sweep_dir / "sweep.json").get("spec") or {}).get("grid") or {})
    except (FileNotFoundError, DamagedFileError, AttributeError):
        return []


def _scan_all(sweep_dir: Path, log: Callable[[str], None]) -> list[tuple[str, dict, dict | None, str]]:
    """Scan every run directory; report damaged ones and drop copies of another run.

    A copied run directory (``runs/X copy``) holds the same config as ``runs/X`` and would
    count twice in every statistic: of runs with equal configs, the one whose name is the
    id the sweep gives that config is kept, the others are reported and left out.
    """
    from ..run.config import ConfigError, TrainConfig
    from .spec import run_id

    keys = _grid_keys(sweep_dir)
    scanned = []
    by_config: dict[str, list[int]] = {}
    for d in _run_dirs(sweep_dir):
        config, result, status = scan_run_dir(d)
        if status == "damaged":
            log(f"damaged run (treated as not finished): {result['message'] if result else d}")
        scanned.append((d.name, config, result, status))
        if config:
            by_config.setdefault(json.dumps(config, sort_keys=True), []).append(len(scanned) - 1)
    drop: set[int] = set()
    for idxs in by_config.values():
        if len(idxs) < 2:
            continue
        names = [scanned[i][0] for i in idxs]
        try:
            want = run_id(TrainConfig.from_dict(scanned[idxs[0]][1]), keys)
        except ConfigError:
            want = None
        keep = names.index(want) if want in names else 0
        for j, i in enumerate(idxs):
            if j != keep:
                drop.add(i)
                log(
                    f"{sweep_dir / RUNS_DIR / scanned[i][0]} holds the same config as "
                    f"{sweep_dir / RUNS_DIR / names[keep]} (a copy?): left out of the results"
                )
    return [s for i, s in enumerate(scanned) if i not in drop]


def sync_store(
    store: ResultsStore, sweep_dir: str | os.PathLike, log: Callable[[str], None] = _stderr
) -> None:
    """Bring the database in line with the run directories (the source of truth)."""
    sweep_dir = Path(sweep_dir)
    known = store.statuses()
    scanned = _scan_all(sweep_dir, log)
    present = {name for name, *_ in scanned}
    for name in set(known) - present:
        if (sweep_dir / RUNS_DIR / name).is_dir() and (sweep_dir / RUNS_DIR / name / "config.json").exists():
            store.delete(name)  # a duplicate left out above
    for name, config, result, status in scanned:
        if known.get(name) != status or status not in FINAL_STATUSES:
            store.record(
                name, config, result, status=status, wall_seconds=_wall_seconds(sweep_dir / RUNS_DIR / name)
            )
    sync_robustness(store, sweep_dir, [name for name, *_ in scanned])
    _sync_geometry(store, sweep_dir, [name for name, *_ in scanned])


def _set_aside_db(db: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = db.with_name(f"{db.name}.corrupt-{stamp}")
    os.replace(db, target)
    for suffix in ("-wal", "-shm"):
        side = Path(str(db) + suffix)
        if side.exists():
            os.replace(side, Path(str(target) + suffix))
    return target


def open_store_checked(sweep_dir: str | os.PathLike, log: Callable[[str], None] = _stderr) -> ResultsStore:
    """Open (and sync) the sweep's database; a damaged one is set aside and rebuilt.

    The database is derived data: if SQLite cannot read it, it is renamed to
    ``results.sqlite.corrupt-<time>`` (kept for inspection), a new one is built from the
    run directories, and one line says so.
    """
    sweep_dir = Path(sweep_dir)
    db = sweep_dir / DB_NAME
    try:
        store = ResultsStore(db, check=db.exists())
    except sqlite3.DatabaseError as e:
        aside = _set_aside_db(db)
        log(f"{db} is damaged ({e}); moved it to {aside.name} and rebuilt it from the run directories")
        return rebuild_store(sweep_dir, log=log)
    try:
        sync_store(store, sweep_dir, log=log)
    except sqlite3.DatabaseError as e:
        store.close()
        aside = _set_aside_db(db)
        log(f"{db} is damaged ({e}); moved it to {aside.name} and rebuilt it from the run directories")
        return rebuild_store(sweep_dir, log=log)
    return store


def rebuild_store(sweep_dir: str | os.PathLike, log: Callable[[str], None] = _stderr) -> ResultsStore:
    """Recreate the sweep's database from its run directories.

    The new database is built beside the old one and replaces it only when every run
    directory has been scanned, so a failure half-way leaves the old database as it was.
    """
    sweep_dir = Path(sweep_dir)
    db = sweep_dir / DB_NAME
    tmp = db.with_name(f".{DB_NAME}.rebuild-{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        new = ResultsStore(tmp, wal=False)
        try:
            scanned = _scan_all(sweep_dir, log)
            for name, config, result, status in scanned:
                new.record(
                    name,
                    config,
                    result,
                    status=status,
                    wall_seconds=_wall_seconds(sweep_dir / RUNS_DIR / name),
                )
            sync_robustness(new, sweep_dir, [name for name, *_ in scanned])
            _sync_geometry(new, sweep_dir, [name for name, *_ in scanned])
        finally:
            new.close()
        # Stale WAL files of the old database must not be applied to the new one.
        for suffix in ("-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        os.replace(tmp, db)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ResultsStore(db)


def open_store(sweep_dir: str | os.PathLike, log: Callable[[str], None] = _stderr) -> ResultsStore:
    """Open the sweep's database, syncing it with the run directories first.

    A damaged database is set aside and rebuilt from the run directories; damaged run
    directories and copies of a run are reported through ``log`` (see
    :func:`~selectivity.sweep.store.open_store_checked`).
    """
    return open_store_checked(sweep_dir, log=log)
