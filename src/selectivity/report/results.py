"""A sweep's results as pandas frames, and a trained run as model, config and data; read-only.

For a notebook::

    import selectivity as sel
    sw = sel.open_sweep("sweeps/quick")               # writes nothing
    sw.runs.groupby("alpha")["test_accuracy"].mean()  # one row per run
    model, config, data = sel.open_run(sw.path / "runs" / sw.runs.run_id[0])

:func:`open_sweep` reads the sweep directory and never writes to it: the results
database is copied out (opened with SQLite's read-only URI flags, so not even a
``-wal`` or ``-shm`` file appears beside it) and brought up to date from the run
directories in memory, as ``selectivity results`` does on disk. Its frames are therefore the
tables that ``selectivity results DIR --format csv`` prints, with ``model``, ``alpha``
and ``seed`` on every row. :func:`open_run` loads a run's best checkpoint, its config
and (on first use) its data set.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..run.files import DB_NAME, RUNS_DIR, DamagedFileError, RunFiles, SweepFiles, read_json, read_jsonl
from ..sweep.store import AnalysisTables, ResultsStore, sync_store

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..core.measure import SelectivityReport
    from ..data import DataSplits
    from ..run.config import TrainConfig

__all__ = [
    "SweepResults",
    "OpenedRun",
    "open_sweep",
    "open_run",
    "read_store",
    "UNITS_DIR",
    "ROBUSTNESS_KINDS",
]

#: Where per-unit records of a run are looked for: ``RUN/units/units.parquet`` or ``.csv``
#: (``selectivity measure RUN --units RUN/units`` writes them there).
UNITS_DIR = "units"
#: The robustness tables: one row per run, per corruption cell, per attack budget.
ROBUSTNESS_KINDS = ("summary", "corruptions", "attacks")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def _analyses() -> list[AnalysisTables]:
    """The per-run analyses whose tables a sweep's database holds (robustness, geometry)."""
    from ..evaluate.geometry import GEOMETRY_TABLES
    from ..evaluate.robustness import ROBUSTNESS_TABLES

    return [ROBUSTNESS_TABLES, GEOMETRY_TABLES]


def _copy_database(db: Path, to: Path, log: Callable[[str], None]) -> bool:
    """Copy the database ``db`` into the new file ``to`` without writing next to ``db``.

    A database whose write-ahead log is empty or absent holds every committed row in its
    main file: it is opened ``immutable`` (SQLite then creates no ``-wal``/``-shm`` file,
    which a plain ``mode=ro`` opening of a WAL database would). A non-empty log means a
    writer is at work: it is read with ``mode=ro`` through the writer's own ``-shm``.
    Returns False (with one line through ``log``) when ``db`` cannot be read.
    """
    if not db.exists():
        return False
    wal, shm = Path(f"{db}-wal"), Path(f"{db}-shm")
    busy = wal.exists() and wal.stat().st_size > 0
    if busy and not shm.exists():
        log(f"{db} has a write-ahead log without its index; the results are read from the run directories")
        return False
    uri = f"{db.resolve().as_uri()}?mode=ro" + ("" if busy else "&immutable=1")
    try:
        src = sqlite3.connect(uri, uri=True, timeout=30)
        dst = sqlite3.connect(to)
        try:
            src.backup(dst)
            bad = dst.execute("PRAGMA quick_check").fetchall()
            if bad != [("ok",)]:
                raise sqlite3.DatabaseError(f"quick_check: {bad[0][0]}")
        finally:
            src.close()
            dst.close()
    except sqlite3.DatabaseError as e:
        log(f"{db} cannot be read ({e}); the results are read from the run directories")
        to.unlink(missing_ok=True)
        return False
    return True


def read_store(
    sweep_dir: str | os.PathLike,
    log: Callable[[str], None] = _stderr,
    analyses: list[AnalysisTables] | None = None,
) -> ResultsStore:
    """The sweep's results store in memory, up to date with its run directories; writes nothing there.

    What ``selectivity results`` reads after it syncs the database on disk: the
    database is copied (read-only, see :func:`_copy_database`) into a temporary file,
    opened and synced there as the commands do (:class:`~selectivity.sweep.store.ResultsStore`,
    :func:`~selectivity.sweep.store.sync_store`), then held in memory; the temporary file
    is removed. An unreadable database is rebuilt from the run directories alone.
    Damaged runs and copies of a run are reported through ``log``.

    Parameters
    ----------
    analyses : list of AnalysisTables, optional
        Per-run analyses to hold; default robustness and geometry.
    """
    sweep_dir = Path(sweep_dir)
    analyses = _analyses() if analyses is None else analyses
    with tempfile.TemporaryDirectory(prefix="selectivity-open-") as tmp:
        path = Path(tmp) / DB_NAME
        _copy_database(SweepFiles(sweep_dir).db, path, log)
        try:
            store = ResultsStore(path, wal=False, analyses=analyses)
            try:
                sync_store(store, sweep_dir, log=log)
            except sqlite3.DatabaseError:
                store.close()
                raise
        except sqlite3.DatabaseError as e:
            log(f"the copy of {SweepFiles(sweep_dir).db} cannot be used ({e}); read from the run directories")
            path.unlink(missing_ok=True)
            store = ResultsStore(path, wal=False, analyses=analyses)
            sync_store(store, sweep_dir, log=log)
        memory = sqlite3.connect(":memory:")
        store.conn.backup(memory)
        store.conn.close()
        store.conn = memory  # the store reads from memory; the temporary file goes
    return store


class SweepResults:
    """A sweep's results, read once when opened (:func:`open_sweep`); every frame is pandas.

    Frames (each has ``model``, ``alpha`` and ``seed`` columns; ``alpha`` normalised, so
    ``-0.0`` reads ``0.0``):

    ``runs``
        One row per run: ``run_id, model, alpha, seed, activation, negative_slope,
        epochs, status, message, test_accuracy, best_val_accuracy, best_epoch,
        epochs_completed, mean_selectivity`` (dead units count 0), ``mean_selectivity_live``
        (dead units left out), ``mean_precision, dead_fraction, train_seconds,
        wall_seconds, updated``; = ``selectivity results DIR --format csv``.
    ``layers``
        One row per run and layer: ``run_id, layer_index, layer, units, selectivity,
        selectivity_live, dead_fraction, precision`` and the run's ``model, alpha,
        seed, activation, negative_slope, status``; = ``results --layers``.
    ``robustness(kind)``
        Paper 2 (``selectivity robustness``): ``"summary"`` one row per run
        (``clean_accuracy, mean_corruption_accuracy, relative_corruption_accuracy``, ...),
        ``"corruptions"`` one per corruption and severity, ``"attacks"`` one per attack,
        norm and epsilon; = ``results --robustness KIND``. Empty when not evaluated.
    ``geometry``
        One row per run, layer, perturbation and measure (``selectivity geometry``);
        = ``results --geometry``. Empty when not measured.
    ``cca``
        The PWCCA distances of ``selectivity cca`` (or ``report --cca``): one row per
        pair of runs and layer (``model, alpha, kind, seed_a, seed_b, run_a, run_b,
        layer, distance``, ...). Raises FileNotFoundError, saying how to compute them,
        when they were not computed.
    ``units``
        Per-unit values (``layer, unit, selectivity, precision, dead``, ...) of the runs
        that have them in ``RUN/units/`` (``selectivity measure RUN --units RUN/units``),
        with each run's ``run_id, model, alpha, seed``. A sweep stores per-layer means
        only: without such records it raises FileNotFoundError saying so and how to
        measure them (``open_run(RUN).measure().to_frame()``).
    ``configs``
        One row per run: ``run_id`` and every field of the run's resolved config.

    Nothing is written: the frames are computed from an in-memory copy of the
    database (:func:`read_store`); ``refresh()`` reads the sweep again. ``report(out)``
    is the one method that writes (the HTML report, as ``selectivity report`` does).
    """

    def __init__(self, path: str | os.PathLike, log: Callable[[str], None] = _stderr):
        files = SweepFiles(path)
        if not files.is_sweep_dir():
            raise FileNotFoundError(
                f"{files.root} is not a sweep directory (no {files.runs.name}/ or {files.db.name})"
            )
        self.path = files.root
        self._log = log
        self._store = read_store(self.path, log)

    # ------------------------------------------------------------------ frames
    @cached_property
    def _runs_full(self) -> pd.DataFrame:
        return self._store.runs_df()

    @cached_property
    def runs(self) -> pd.DataFrame:
        """One row per run (every status); see the class docstring for the columns."""
        return self._runs_full.drop(columns=["config"])

    @cached_property
    def layers(self) -> pd.DataFrame:
        """One row per run and layer."""
        return self._store.layers_df()

    def robustness(self, kind: str = "summary") -> pd.DataFrame:
        """Paper 2 robustness rows: ``kind`` is ``summary``, ``corruptions`` or ``attacks``."""
        if kind not in ROBUSTNESS_KINDS:
            raise ValueError(f"kind must be one of {', '.join(ROBUSTNESS_KINDS)}, got {kind!r}")
        from ..evaluate.robustness import ROBUSTNESS_TABLES

        df = self._store.frame(ROBUSTNESS_TABLES, kind)
        return df.drop(columns=["settings"]) if kind == "summary" else df

    @cached_property
    def geometry(self) -> pd.DataFrame:
        """One row per run, layer, perturbation and measure."""
        from ..evaluate.geometry import GEOMETRY_TABLES

        return self._store.frame(GEOMETRY_TABLES, "rows")

    @cached_property
    def configs(self) -> pd.DataFrame:
        """One row per run: ``run_id`` and every config field."""
        rows = [{"run_id": rid, **json.loads(c)} for rid, c in self._runs_full[["run_id", "config"]].values]
        return pd.DataFrame(rows)

    @cached_property
    def cca(self) -> pd.DataFrame:
        """PWCCA distances per pair of runs and layer (``SWEEP/analysis/cca_distances.csv``)."""
        from ..evaluate.cca import CCA_CSV

        path = self.path / CCA_CSV
        if not path.exists():
            raise FileNotFoundError(
                f"no CCA distances in {self.path}: compute them with `selectivity cca {self.path}` "
                "(or `selectivity report --cca`), which needs the checkpoints and the data"
            )
        return pd.read_csv(path)

    @cached_property
    def units(self) -> pd.DataFrame:
        """Per-unit values of the runs that recorded them, with each run's model, alpha, seed."""
        parts = []
        for row in self.runs.itertuples(index=False):
            d = SweepFiles(self.path).run(str(row.run_id)).root / UNITS_DIR
            frame = None
            if (d / "units.parquet").exists():
                frame = pd.read_parquet(d / "units.parquet")
            elif (d / "units.csv").exists():
                frame = pd.read_csv(d / "units.csv")
            if frame is not None:
                ids = {"run_id": row.run_id, "model": row.model, "alpha": row.alpha, "seed": row.seed}
                parts.append(frame.assign(**ids)[[*ids, *frame.columns]])
        if not parts:
            raise FileNotFoundError(
                f"no per-unit values are recorded in {self.path}: a sweep stores per-layer means "
                "(`.layers`). Measure a run's units with `selectivity measure RUN --units RUN/units`, "
                "or in Python: `selectivity.open_run(RUN).measure().to_frame()`"
            )
        return pd.concat(parts, ignore_index=True)

    # ------------------------------------------------------------------ other
    def open_run(self, run_id: str, data: str | os.PathLike | None = None, device: str = "cpu") -> OpenedRun:
        """:func:`open_run` of one of this sweep's runs (its data: ``data``, else the sweep's)."""
        return open_run(SweepFiles(self.path).run(run_id).root, data=data, device=device)

    def report(self, out: str | os.PathLike, **kwargs: Any) -> Path:
        """Write the HTML report to ``out`` (:func:`selectivity.report.build_report`); its path.

        As ``selectivity report`` does, this brings the sweep's database on disk up to date
        (and with ``cca=True`` stores the CCA distances under ``SWEEP/analysis/``).
        """
        from . import build_report

        return build_report(self.path, out, **kwargs)

    def refresh(self) -> SweepResults:
        """Read the sweep again (e.g. while it runs); returns self."""
        self.close()
        for name in ("_runs_full", "runs", "layers", "geometry", "configs", "cca", "units"):
            self.__dict__.pop(name, None)
        self._store = read_store(self.path, self._log)
        return self

    def close(self) -> None:
        """Free the in-memory copy of the database."""
        self._store.close()

    def __enter__(self) -> SweepResults:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        df = self.runs
        counts = ", ".join(f"{n} {s}" for s, n in df["status"].value_counts().sort_index().items())
        models = ",".join(sorted(df["model"].dropna().unique()))
        alphas = ",".join(f"{a:g}" for a in sorted(df["alpha"].dropna().unique()))
        return (
            f"<SweepResults {self.path}: {len(df)} runs ({counts or 'none'}); "
            f"models {models or '-'}; alphas {alphas or '-'}>"
        )


def open_sweep(path: str | os.PathLike, log: Callable[[str], None] = _stderr) -> SweepResults:
    """Open a sweep directory's results for reading: a :class:`SweepResults`; writes nothing.

    Parameters
    ----------
    path : path
        The sweep directory (``runs/``, ``results.sqlite``).
    log : callable
        Receives one line per damaged run directory or unreadable database (default: stderr).

    Raises
    ------
    FileNotFoundError
        ``path`` is not a sweep directory.

    Examples
    --------
    >>> sw = open_sweep("sweeps/quick")                       # doctest: +SKIP
    >>> sw.runs.groupby("alpha")["mean_selectivity"].mean()   # doctest: +SKIP
    """
    return SweepResults(path, log)


@dataclass
class OpenedRun:
    """A trained run: model (best checkpoint, eval mode), config and (loaded on first use) data.

    Unpacks as ``model, config, data``. ``result`` is ``result.json``, ``metrics`` the
    per-epoch rows of ``metrics.jsonl`` as a frame, and :meth:`measure` measures the
    model's units as training measured them at the end.
    """

    path: Path
    model: nn.Module
    config: TrainConfig
    checkpoint: dict
    device: torch.device
    data_path: str | os.PathLike | None = field(default=None, repr=False)

    @cached_property
    def data(self) -> DataSplits:
        """The run's data set splits (train, val, test), loaded on first use."""
        from ..run.checkpoint import load_data

        return load_data(self.config, self.data_path)

    def __iter__(self) -> Iterator[Any]:
        yield self.model
        yield self.config
        yield self.data

    @property
    def result(self) -> dict | None:
        """The run's ``result.json`` (None when the run has none, or it cannot be read)."""
        try:
            return read_json(RunFiles(self.path).result)
        except (FileNotFoundError, DamagedFileError):
            return None

    @property
    def metrics(self) -> pd.DataFrame:
        """One row per completed epoch (``metrics.jsonl``)."""
        return pd.DataFrame(read_jsonl(RunFiles(self.path).metrics))

    def measure(
        self,
        split: str = "test",
        top_n: int | None = None,
        subset: bool = True,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> SelectivityReport:
        """Per-unit selectivity, dead units and precision of the model on one split.

        Parameters
        ----------
        split : {"test", "val"}
        top_n : int, optional
            Samples per unit for precision; default the run's ``top_n``.
        subset : bool, default True
            Use the run's own evaluation images (its ``eval_subset``, as its stored
            results did); False: the whole split.
        batch_size : int, optional
            Default: the run's ``eval_batch_size``.
        progress : bool
            Show a progress bar.

        Returns
        -------
        SelectivityReport
            ``.to_frame()`` gives one row per unit.
        """
        from ..core.measure import measure_selectivity
        from ..data import BatchLoader
        from ..training.single import subset as eval_subset

        if split not in ("test", "val"):
            raise ValueError(f"split must be 'test' or 'val', got {split!r}")
        cfg, splits = self.config, self.data
        ds = splits.test if split == "test" else splits.val
        if subset:
            ds = eval_subset(ds, cfg.eval_subset, cfg.split_seed)
        loader = BatchLoader(
            ds, batch_size or cfg.eval_batch_size, mean=splits.mean, std=splits.std, device=self.device
        )
        return measure_selectivity(
            self.model,
            loader,
            splits.num_classes,
            layers=cfg.selectivity_layers or None,
            top_n=top_n or cfg.top_n,
            negative=cfg.negative_rule,
            device=self.device,
            progress=progress,
            pooling=cfg.token_pooling,
        )


def _sweep_data(run_dir: Path) -> str | None:
    """The data location recorded by the sweep a run directory belongs to, if it exists."""
    spec = run_dir.parent.parent / "sweep.json"
    if run_dir.parent.name != RUNS_DIR or not spec.exists():
        return None
    try:
        data = read_json(spec).get("data")
    except DamagedFileError:
        return None
    return data if isinstance(data, str) and Path(data).exists() else None


def open_run(
    path: str | os.PathLike, data: str | os.PathLike | None = None, device: str = "cpu"
) -> OpenedRun:
    """Load a trained run: an :class:`OpenedRun` (``model, config, data = open_run(RUN)``).

    Reads the run directory (or a checkpoint file) and writes nothing to it.

    Parameters
    ----------
    path : path
        A run directory (its ``checkpoints/best.pt``, else ``last.pt``) or a checkpoint file.
    data : path, optional
        Data set location; default: the one recorded by the run's sweep, then the usual
        search (``$SELECTIVITY_DATA``, the per-user cache, a download). Loaded on first use
        of ``.data``.
    device : str, default "cpu"
        Where the model is put (``"auto"`` allowed).
    """
    import torch

    from ..run.checkpoint import load_model_from
    from ..run.config import resolve_device

    p = Path(path)
    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    model, cfg, ckpt = load_model_from(p, dev)
    model.eval()
    run_dir = p if p.is_dir() else p.parent.parent
    return OpenedRun(
        path=run_dir,
        model=model,
        config=cfg,
        checkpoint=ckpt,
        device=dev,
        data_path=data if data is not None else _sweep_data(run_dir),
    )
