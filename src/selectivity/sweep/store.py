"""The results store: one SQLite database per sweep directory.

Only the sweep's driver process writes it. Each run's own directory stays the source of
truth (the driver's wall-clock time of a run is kept there too, in
``sweep_record.json``); :func:`rebuild_store` recreates the database from the run
directories alone, and :func:`open_store_checked` does so by itself when the database is
damaged.

Per-run analyses (:mod:`selectivity.evaluate`) bring their own tables: each hands the
store an :class:`AnalysisTables` (its tables' columns and SQL types, which files of a run
directory hold its results, how to read one, and the record -> rows function). The store
only knows the generic steps: create the tables, load each run's files into them when the
files change, and read a table back joined with the run's columns.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..analysis.stats import normalise_alpha
from ..run.files import (
    DB_NAME,
    FINAL_STATUSES,
    RUNS_DIR,
    DamagedFileError,
    RunFiles,
    SweepFiles,
    read_json,
    write_json,
)
from ..run.health import inspect_run_dir

__all__ = [
    "open_store",
    "ResultsStore",
    "AnalysisTables",
    "Table",
    "rebuild_store",
    "scan_run_dir",
    "sync_store",
    "open_store_checked",
    "write_sweep_record",
    "DB_NAME",
    "RUNS_DIR",
    "RECORD_NAME",
]

# DB_NAME and RUNS_DIR are defined in selectivity.run.files (re-exported here).
#: Per-run file with what only the driver knows (its wall-clock time of the run).
RECORD_NAME = RunFiles.RECORD


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


@dataclass(frozen=True)
class Table:
    """One SQL table of a per-run analysis.

    Attributes
    ----------
    name : str
        SQL table name.
    columns : tuple of (str, str)
        Column names and SQL types; the first is ``("run_id", "TEXT")``.
    key : tuple of str
        Primary-key columns (empty: none).
    run_columns : tuple of str
        Columns of the ``runs`` table joined to every row by :meth:`ResultsStore.frame`.
    run_columns_first : bool
        Joined columns before the table's own (True) or after them.
    order : tuple of str
        ``ORDER BY`` terms, columns qualified ``r.`` (runs) or ``t.`` (this table).
    """

    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...] = ()
    run_columns: tuple[str, ...] = ("model", "alpha", "seed", "activation", "negative_slope")
    run_columns_first: bool = True
    order: tuple[str, ...] = ("r.model", "r.alpha", "r.seed", "r.run_id")

    @property
    def column_names(self) -> list[str]:
        return [n for n, _ in self.columns]

    def create_sql(self) -> str:
        cols = ", ".join(f"{n} {t}" for n, t in self.columns)
        key = f", PRIMARY KEY ({', '.join(self.key)})" if self.key else ""
        return f"CREATE TABLE IF NOT EXISTS {self.name} ({cols}{key})"


@dataclass(frozen=True)
class AnalysisTables:
    """What the store needs to hold one per-run analysis's results.

    Attributes
    ----------
    name : str
        The analysis (``"robustness"``); its bookkeeping table is ``<name>_files``.
    tables : mapping of str to Table
        Kind of rows (``"summary"``, ...) -> table.
    files : callable
        ``files(RunFiles) -> list of Path``: the run's result files (existing ones).
    read : callable
        ``read(path) -> dict``: one file's record; raises
        :class:`~selectivity.run.files.DamagedFileError` (or ``FileNotFoundError``).
    rows : callable
        ``rows(record) -> {kind: [row dict, ...]}``: rows by column name (``run_id`` is
        added by the store).
    """

    name: str
    tables: Mapping[str, Table]
    files: Callable[[RunFiles], list[Path]]
    read: Callable[[Path], dict]
    rows: Callable[[dict], Mapping[str, Sequence[Mapping[str, Any]]]]

    @property
    def files_table(self) -> str:
        return f"{self.name}_files"


class ResultsStore:
    """SQLite table of runs (one row each), of their per-layer results, and of analyses.

    Parameters
    ----------
    path : path
        The database file.
    wal : bool
        Write-ahead journal (False for a database built and then renamed).
    check : bool
        Run SQLite's ``quick_check`` first (a damaged file raises ``sqlite3.DatabaseError``).
    analyses : iterable of AnalysisTables
        Per-run analyses whose tables this store holds (created if missing; recreated,
        empty, if their columns changed: they are rebuilt from the run directories).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        wal: bool = True,
        check: bool = False,
        analyses: Iterable[AnalysisTables] = (),
    ):
        self.path = Path(path)
        self.analyses: tuple[AnalysisTables, ...] = tuple(analyses)
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
            for spec in self.analyses:
                self._create(spec)
            have = [r[1] for r in self.conn.execute("PRAGMA table_info(runs)").fetchall()]
            if have != [n for n, _ in RUN_COLUMNS]:
                raise sqlite3.DatabaseError(f"table runs has columns {have}")
            self.conn.commit()
        except BaseException:
            self.conn.close()
            raise

    def _columns(self, table: str) -> list[str]:
        return [r[1] for r in self.conn.execute(f"PRAGMA table_info({table})").fetchall()]

    def _create(self, spec: AnalysisTables) -> None:
        """Create an analysis's tables; tables of an older layout are dropped and made anew."""
        stale = any((have := self._columns(t.name)) and have != t.column_names for t in spec.tables.values())
        if stale:  # derived data: rebuilt from the run directories at the next sync
            for t in spec.tables.values():
                self.conn.execute(f"DROP TABLE IF EXISTS {t.name}")
            self.conn.execute(f"DROP TABLE IF EXISTS {spec.files_table}")
        for t in spec.tables.values():
            self.conn.execute(t.create_sql())
        # which files (names, sizes, mtimes) each run's rows come from
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {spec.files_table} (run_id TEXT PRIMARY KEY, stamp TEXT)"
        )

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

    def record_analysis(
        self,
        spec: AnalysisTables,
        run_id: str,
        rows: Mapping[str, Sequence[Mapping[str, Any]]],
        stamp: str | None,
    ) -> None:
        """Replace one run's rows of an analysis (``rows``: kind -> row dicts).

        ``stamp`` records which files the rows come from (None: record none, so the
        files are read again at the next sync).
        """
        with self.conn:
            for t in spec.tables.values():
                self.conn.execute(f"DELETE FROM {t.name} WHERE run_id=?", (run_id,))
            for kind, table in spec.tables.items():
                names = table.column_names
                self.conn.executemany(
                    f"INSERT OR REPLACE INTO {table.name} VALUES ({', '.join('?' * len(names))})",
                    [[run_id, *(r.get(n) for n in names[1:])] for r in rows.get(kind, ())],
                )
            if stamp is None:
                self.conn.execute(f"DELETE FROM {spec.files_table} WHERE run_id=?", (run_id,))
            else:
                self.conn.execute(f"INSERT OR REPLACE INTO {spec.files_table} VALUES (?, ?)", (run_id, stamp))

    def forget_analysis(self, spec: AnalysisTables, run_id: str) -> None:
        """Delete one run's rows of an analysis and the record of its files."""
        self.record_analysis(spec, run_id, {}, None)

    def frame(self, spec: AnalysisTables, kind: str) -> pd.DataFrame:
        """The rows of one table of an analysis joined with their run's columns, alpha normalised."""
        if kind not in spec.tables:
            raise ValueError(f"kind must be one of {', '.join(spec.tables)}, got {kind!r}")
        t = spec.tables[kind]
        joined = ", ".join(f"r.{c}" for c in t.run_columns)
        select = f"{joined}, t.*" if t.run_columns_first else f"t.*, {joined}"
        df = pd.read_sql_query(
            f"SELECT {select} FROM {t.name} t JOIN runs r USING (run_id) ORDER BY {', '.join(t.order)}",
            self.conn,
        )
        df = df.loc[:, ~df.columns.duplicated()]
        return _normalised(df)

    def statuses(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT run_id, status FROM runs").fetchall())

    def delete(self, run_id: str) -> None:
        """Forget one run (e.g. its directory was archived)."""
        with self.conn:
            self.conn.execute("DELETE FROM layers WHERE run_id=?", (run_id,))
            self.conn.execute("DELETE FROM runs WHERE run_id=?", (run_id,))
        for spec in self.analyses:
            self.forget_analysis(spec, run_id)


def write_sweep_record(run_dir: str | os.PathLike, wall_seconds: float) -> None:
    """Keep the driver's wall-clock time of a run in the run directory (survives a rebuild)."""
    write_json(RunFiles(run_dir).record, {"wall_seconds": wall_seconds})


def _wall_seconds(run_dir: Path) -> float | None:
    try:
        v = read_json(RunFiles(run_dir).record).get("wall_seconds")
    except (FileNotFoundError, DamagedFileError):
        return None
    return float(v) if isinstance(v, (int, float)) else None


def _stamp(root: Path, files: list[Path]) -> str:
    """Names, sizes and modification times of a run's result files (what the rows come from)."""
    parts = []
    for f in sorted(files):
        try:
            st = f.stat()
        except OSError:
            continue
        parts.append(f"{f.relative_to(root) if f.is_relative_to(root) else f}:{st.st_size}:{st.st_mtime_ns}")
    return ";".join(parts)


def sync_analysis(
    store: ResultsStore,
    spec: AnalysisTables,
    sweep_dir: str | os.PathLike,
    names: list[str],
    log: Callable[[str], None] = _stderr,
) -> None:
    """Load the result files of every run in ``names`` whose files changed since the last sync.

    Rows of runs not in ``names`` (removed, or copies left out) are deleted. A file that
    cannot be read gives no rows, and is read again at the next sync.
    """
    sweep = SweepFiles(sweep_dir)
    known = dict(store.conn.execute(f"SELECT run_id, stamp FROM {spec.files_table}").fetchall())
    for name in set(known) - set(names):
        store.forget_analysis(spec, name)
    for name in names:
        run = sweep.run(name)
        files = spec.files(run)
        stamp = _stamp(run.root, files)
        if known.get(name, "") == stamp:
            continue
        rows: dict[str, list[Mapping[str, Any]]] = {k: [] for k in spec.tables}
        whole = True
        for f in files:
            try:
                record = spec.read(f)
            except FileNotFoundError:
                whole = False
                continue
            except DamagedFileError:
                whole = False
                continue
            for kind, rs in spec.rows(record).items():
                rows[kind].extend(rs)
        store.record_analysis(spec, name, rows, stamp if whole else None)


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
        return sorted((read_json(SweepFiles(sweep_dir).spec).get("spec") or {}).get("grid") or {})
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
        if SweepFiles(sweep_dir).run(name).config.exists():
            store.delete(name)  # a duplicate left out above
    for name, config, result, status in scanned:
        if known.get(name) != status or status not in FINAL_STATUSES:
            store.record(
                name,
                config,
                result,
                status=status,
                wall_seconds=_wall_seconds(SweepFiles(sweep_dir).run(name).root),
            )
    for spec in store.analyses:
        sync_analysis(store, spec, sweep_dir, [name for name, *_ in scanned], log)


def _set_aside_db(db: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = db.with_name(f"{db.name}.corrupt-{stamp}")
    os.replace(db, target)
    for suffix in ("-wal", "-shm"):
        side = Path(str(db) + suffix)
        if side.exists():
            os.replace(side, Path(str(target) + suffix))
    return target


def open_store_checked(
    sweep_dir: str | os.PathLike,
    log: Callable[[str], None] = _stderr,
    analyses: Iterable[AnalysisTables] = (),
) -> ResultsStore:
    """Open (and sync) the sweep's database; a damaged one is set aside and rebuilt.

    The database is derived data: if SQLite cannot read it, it is renamed to
    ``results.sqlite.corrupt-<time>`` (kept for inspection), a new one is built from the
    run directories, and one line says so. ``analyses``: tables of per-run analyses to
    hold and sync (see :class:`AnalysisTables`).
    """
    sweep_dir = Path(sweep_dir)
    db = SweepFiles(sweep_dir).db
    analyses = tuple(analyses)
    try:
        store = ResultsStore(db, check=db.exists(), analyses=analyses)
    except sqlite3.DatabaseError as e:
        aside = _set_aside_db(db)
        log(f"{db} is damaged ({e}); moved it to {aside.name} and rebuilt it from the run directories")
        return rebuild_store(sweep_dir, log=log, analyses=analyses)
    try:
        sync_store(store, sweep_dir, log=log)
    except sqlite3.DatabaseError as e:
        store.close()
        aside = _set_aside_db(db)
        log(f"{db} is damaged ({e}); moved it to {aside.name} and rebuilt it from the run directories")
        return rebuild_store(sweep_dir, log=log, analyses=analyses)
    return store


def rebuild_store(
    sweep_dir: str | os.PathLike,
    log: Callable[[str], None] = _stderr,
    analyses: Iterable[AnalysisTables] = (),
) -> ResultsStore:
    """Recreate the sweep's database from its run directories.

    The new database is built beside the old one and replaces it only when every run
    directory has been scanned, so a failure half-way leaves the old database as it was.
    """
    sweep_dir = Path(sweep_dir)
    db = SweepFiles(sweep_dir).db
    analyses = tuple(analyses)
    tmp = db.with_name(f".{DB_NAME}.rebuild-{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        new = ResultsStore(tmp, wal=False, analyses=analyses)
        try:
            scanned = _scan_all(sweep_dir, log)
            for name, config, result, status in scanned:
                new.record(
                    name,
                    config,
                    result,
                    status=status,
                    wall_seconds=_wall_seconds(SweepFiles(sweep_dir).run(name).root),
                )
            for spec in new.analyses:
                sync_analysis(new, spec, sweep_dir, [name for name, *_ in scanned], log)
        finally:
            new.close()
        # Stale WAL files of the old database must not be applied to the new one.
        for suffix in ("-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        os.replace(tmp, db)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ResultsStore(db, analyses=analyses)


def open_store(
    sweep_dir: str | os.PathLike,
    log: Callable[[str], None] = _stderr,
    analyses: Iterable[AnalysisTables] = (),
) -> ResultsStore:
    """Open the sweep's database, syncing it with the run directories first.

    A damaged database is set aside and rebuilt from the run directories; damaged run
    directories and copies of a run are reported through ``log`` (see
    :func:`~selectivity.sweep.store.open_store_checked`). ``analyses``: the tables of
    per-run analyses to hold and sync as well.
    """
    return open_store_checked(sweep_dir, log=log, analyses=analyses)
