"""The results store: one SQLite database per sweep directory.

Only the sweep's driver process writes it. Each run's own directory stays the source of
truth; :func:`rebuild_store` recreates the database from the run directories alone.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd

from ..analysis.stats import normalise_alpha
from ..rundir import DB_NAME, RUNS_DIR, RunFiles, SweepFiles, read_json

# DB_NAME and RUNS_DIR are defined in selectivity.rundir (re-exported here).
__all__ = ["ResultsStore", "rebuild_store", "scan_run_dir", "DB_NAME", "RUNS_DIR"]

RUN_COLUMNS = [
    ("run_id", "TEXT PRIMARY KEY"),
    ("model", "TEXT"),
    ("alpha", "REAL"),
    ("seed", "INTEGER"),
    ("activation", "TEXT"),
    ("negative_slope", "REAL"),
    ("epochs", "INTEGER"),
    ("status", "TEXT"),  # one of selectivity.rundir.RUN_STATUSES
    ("message", "TEXT"),
    ("test_accuracy", "REAL"),
    ("best_val_accuracy", "REAL"),
    ("best_epoch", "INTEGER"),
    ("epochs_completed", "INTEGER"),
    ("mean_selectivity", "REAL"),
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
    ("selectivity", "REAL"),
    ("dead_fraction", "REAL"),
    ("precision", "REAL"),
]


class ResultsStore:
    """SQLite table of runs (one row each) and of their per-layer results."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        cols = ", ".join(f"{n} {t}" for n, t in RUN_COLUMNS)
        self.conn.execute(f"CREATE TABLE IF NOT EXISTS runs ({cols})")
        lcols = ", ".join(f"{n} {t}" for n, t in LAYER_COLUMNS)
        self.conn.execute(f"CREATE TABLE IF NOT EXISTS layers ({lcols}, PRIMARY KEY (run_id, layer_index))")
        self.conn.commit()

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
                    "INSERT INTO layers VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        run_id,
                        i,
                        layer["layer"],
                        layer.get("units"),
                        layer.get("selectivity"),
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

    def statuses(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT run_id, status FROM runs").fetchall())


def _normalised(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty or "alpha" not in df.columns:
        return df
    return df.assign(alpha=normalise_alpha(df["alpha"]))


def scan_run_dir(path: str | os.PathLike) -> tuple[dict, dict | None, str]:
    """(config, result or None, status) of one run directory, from its files alone."""
    files = RunFiles(path)
    config = read_json(files.config)
    result = read_json(files.result) if files.result.exists() else None
    if result is not None:
        status = result.get("status", "failed")
    elif files.last.exists():
        status = "interrupted"
    else:
        status = "pending"
    return config, result, status


def rebuild_store(sweep_dir: str | os.PathLike) -> ResultsStore:
    """Delete and recreate the sweep's database from its run directories."""
    files = SweepFiles(sweep_dir)
    db = files.db
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(db) + suffix)
        if p.exists():
            p.unlink()
    store = ResultsStore(db)
    if files.runs.is_dir():
        for d in sorted(files.runs.iterdir()):
            if RunFiles(d).config.exists():
                config, result, status = scan_run_dir(d)
                store.record(d.name, config, result, status=status)
    return store
