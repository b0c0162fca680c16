"""The sweep driver: expands the grid, skips finished runs, dispatches, records.

It draws no figure and computes no statistic: the summary table and figures of a
sweep are :func:`selectivity.report.summarize_sweep` (the CLI calls it after the sweep).

Before anything is trained, every existing run directory of the grid is checked: a run
trained with another configuration stops the sweep (nothing is counted as done that was
not trained as asked), and a damaged run file is set aside so the run resumes or restarts.
The data the runs still to train need are loaded once before any run starts, so a wrong
data path stops the sweep with one error instead of failing every run.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..run.config import ConfigError, complete_config
from ..run.files import (
    FINAL_STATUSES,
    DamagedFileError,
    RunFiles,
    SweepFiles,
    read_json,
    set_aside,
    write_json,
)
from ..run.health import RunHealth, inspect_run_dir
from ..training.tracking import missing_tracker_package, prepare_tracker
from .executors import Task, make_executor, pack_tasks
from .spec import SweepSpec
from .store import RUNS_DIR, ResultsStore, open_store, write_sweep_record

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["run_sweep", "SweepMismatchError"]


class SweepMismatchError(ConfigError):
    """Runs in the sweep directory were trained with another configuration than requested."""


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def _config_diff(old: dict, new: dict) -> dict[str, tuple]:
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def _mismatch_message(sweep_dir: Path, mismatched: list[tuple[str, dict[str, tuple]]]) -> str:
    fields: dict[str, set] = {}
    for _, diff in mismatched:
        for k, (a, b) in diff.items():
            fields.setdefault(k, set()).add(f"{a!r} -> {b!r}")
    what = "; ".join(f"{k}: {', '.join(sorted(v)[:3])}" for k, v in fields.items())
    names = [rid for rid, _ in mismatched]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"{len(names)} run(s) in {sweep_dir / RUNS_DIR} were trained with another configuration "
        f"({what}): {shown}; nothing was run. Use a new --out for the new configuration, or "
        f"--archive-mismatched to move those runs to {SweepFiles(sweep_dir).archive} and train them again"
    )


def _archive(sweep_dir: Path, run_ids: list[str], store: ResultsStore, log: Callable[[str], None]) -> Path:
    dest = SweepFiles(sweep_dir).archive / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    k = 1
    while dest.exists():
        dest = dest.with_name(dest.name.split("-")[0] + f"-{k}")
        k += 1
    dest.mkdir(parents=True)
    for rid in run_ids:
        shutil.move(str(sweep_dir / RUNS_DIR / rid), str(dest / rid))
        store.delete(rid)
    log(f"moved {len(run_ids)} run(s) trained with another configuration to {dest}")
    return dest


def _write_sweep_json(
    sweep_dir: Path, spec: SweepSpec, executor: str, data: str | None, fuse: int = 1
) -> None:
    """Record the spec being run; earlier different specs are kept under ``history``."""
    path = SweepFiles(sweep_dir).spec
    history: list = []
    try:
        old = read_json(path)
        history = list(old.get("history") or [])
        new = spec.to_dict()
        # A record written before a field existed lacks its key: not a change of the sweep.
        if old.get("spec") is not None and {**new, **old["spec"]} != new:
            history.append({k: old.get(k) for k in ("spec", "executor", "data")})
    except FileNotFoundError:
        pass
    except DamagedFileError:
        history.append({"error": "sweep.json was damaged and rewritten"})
    record: dict[str, Any] = {"spec": spec.to_dict(), "executor": executor, "data": data}
    if fuse > 1:  # how the runs were packed (each run's meta.json names its group)
        record["fuse"] = fuse
    if history:
        record["history"] = history
    write_json(path, record)


def _finished(h: RunHealth | None) -> bool:
    """Whether a run directory holds a finished run (completed or diverged) in good order."""
    return h is not None and h.ok and h.status in FINAL_STATUSES


def _check_data(cfgs: list, data: str | None) -> None:
    """Load every dataset the runs to train need, once, before any run starts.

    A wrong ``data`` then stops the sweep with one error instead of failing every run
    with it. The splits are not kept (runs in other processes load their own); a
    download, if one is needed, happens here once.
    """
    from ..data import check_dataset, load_dataset

    for cfg in {c.dataset: c for c in cfgs}.values():
        splits = load_dataset(
            cfg.dataset,
            data,
            val_size=cfg.val_size,
            split_seed=cfg.split_seed,
            val_per_class=cfg.val_per_class,
        )
        check_dataset(cfg.dataset, splits)


def _auto_fuse(cfgs: list, log: Callable[[str], None]) -> int:
    """``--fuse auto``: the smallest group size that fits, over the sweep's kinds of run."""
    from ..training.group import auto_group_size, fuse_key

    firsts = {fuse_key(c): c for c in reversed(cfgs)}  # one config per kind of run
    return min((auto_group_size(c, log=log) for c in firsts.values()), default=1)


def run_sweep(
    spec: SweepSpec,
    sweep_dir: str | os.PathLike,
    executor: str = "inprocess",
    workers: int | None = None,
    data: str | None = None,
    address: str | None = None,
    cpus_per_run: float = 1,
    gpus_per_run: float = 0,
    progress: bool = True,
    summarize: bool = False,
    log: Callable[[str], None] = print,
    archive_mismatched: bool = False,
    fuse: int | str = 1,
    tracker: str | None = None,
    executor_options: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Run (or resume) a sweep into ``sweep_dir`` and return its runs table.

    Running the same sweep again skips finished runs (completed or diverged), resumes
    interrupted ones from their last epoch and retries failed ones.

    ``summarize`` is accepted for compatibility and must be False: the summary table
    and figures are written by :func:`selectivity.report.summarize_sweep`, which the
    ``selectivity sweep`` command calls after this function.
    A run directory whose config differs from the requested one stops the sweep with a
    :class:`SweepMismatchError` before anything is trained or ``sweep.json`` is written,
    unless ``archive_mismatched`` moves those runs to ``<sweep_dir>/archive/<time>/``.
    Damaged run files are moved to ``<run>/damaged/<time>/`` and the run resumes or
    restarts (see :meth:`selectivity.run.health.RunHealth.files_to_set_aside`).

    ``fuse`` > 1 packs the runs to train into groups of at most ``fuse`` runs that differ
    only in seed and alpha (:func:`~selectivity.sweep.executors.pack_tasks`, in spec
    order); each group is one task of the executor (one process, one Ray task), trained
    as one fused model (:func:`selectivity.training.group.train_group`). Every run still
    has its own directory and database row, and a rerun resumes each run. ``fuse="auto"``
    measures on this process's device how many runs fit in memory
    (:func:`selectivity.training.group.auto_group_size`; 1 on a CPU).

    ``tracker`` (``"tensorboard"``, ``"mlflow"`` or ``"wandb"``) logs every run to that
    experiment tracker, one tracked run per run, fused or not
    (:mod:`selectivity.training.tracking`); a missing package is reported once here,
    before any training, and the sweep runs without it.

    ``executor_options`` go to the executor as keywords (``slurm``: ``partition``,
    ``time_min``, ``mem_gb``, ``additional``; see
    :class:`~selectivity.sweep.executors.SlurmExecutor`).
    """
    if summarize:
        raise ValueError(
            "run_sweep no longer writes the summary; call "
            "selectivity.report.summarize_sweep(sweep_dir) after it"
        )
    spec.validate()
    missing_tracker_package(tracker)  # a ValueError for an unknown name, before anything is written
    if fuse != "auto" and (isinstance(fuse, bool) or not isinstance(fuse, int) or fuse < 1):
        raise ValueError(f"fuse must be an integer >= 1 or 'auto', got {fuse!r}")
    sweep_dir = Path(sweep_dir)
    # The executor checks what it needs (Ray, submitit and sbatch, GPU counts) before anything is written.
    ex = make_executor(
        executor,
        workers=workers,
        address=address,
        cpus_per_run=cpus_per_run,
        gpus_per_run=gpus_per_run,
        progress=progress,
        sweep_dir=sweep_dir,
        **(executor_options or {}),
    )
    sfiles = SweepFiles(sweep_dir)
    runs = spec.runs()
    health: dict[str, RunHealth] = {}
    mismatched = []
    for r in runs:
        rdir = sweep_dir / RUNS_DIR / r.run_id
        if not rdir.is_dir():
            continue
        h = inspect_run_dir(rdir)
        health[r.run_id] = h
        want = r.config.to_dict()
        # A run written before a config field existed lacks its key: it used the default.
        if h.config is not None and complete_config(h.config) != want:
            mismatched.append((r.run_id, _config_diff(complete_config(h.config), want)))
    if mismatched and not archive_mismatched:
        raise SweepMismatchError(_mismatch_message(sweep_dir, mismatched))
    for rid, _ in mismatched:
        health.pop(rid, None)
    if executor != "ray":  # Ray workers may see paths this machine does not
        _check_data([r.config for r in runs if not _finished(health.get(r.run_id))], data)
    sfiles.runs.mkdir(parents=True, exist_ok=True)
    store = open_store(sweep_dir, log=log)
    if mismatched:
        _archive(sweep_dir, [rid for rid, _ in mismatched], store, log)
    tracker = prepare_tracker(tracker, sweep_dir, log)  # once, before any run trains
    if fuse == "auto":
        fuse = _auto_fuse([r.config for r in runs], log)
    assert isinstance(fuse, int)
    _write_sweep_json(sweep_dir, spec, executor, data, fuse)
    tasks = []
    skipped = 0
    for r in runs:
        files = sfiles.run(r.run_id)
        rdir = files.root
        hr = health.get(r.run_id)
        if hr is not None and not hr.ok:
            moved = set_aside(rdir, hr.files_to_set_aside())
            log(f"damaged run files set aside in {moved}, the run is trained again: {hr.describe()}")
            hr = inspect_run_dir(rdir)
        if _finished(hr):
            skipped += 1
            continue
        cfgd = r.config.to_dict()
        if hr is not None and files.config.exists():
            store.record(r.run_id, hr.config or cfgd, hr.result, status=hr.status)
        else:
            store.record(r.run_id, cfgd, None, status="pending")
        threads = None if cfgd.get("num_threads") else max(1, int(cpus_per_run))
        threads = threads if executor != "inprocess" else None
        tasks.append(Task(r.run_id, cfgd, str(rdir), data, threads, tracker))
    units = pack_tasks(tasks, fuse)
    fused = f", {len(units)} tasks of at most {fuse} fused runs" if fuse > 1 else ""
    log(
        f"sweep {sweep_dir}: {len(runs)} runs, {skipped} already finished, {len(tasks)} to run "
        f"({executor} executor{fused})"
    )

    started: dict[str, float] = {}
    finished: set[str] = set()
    counts = {"done": skipped, "failed": 0, "diverged": 0}
    t0 = time.time()
    bar = None
    if progress and tasks:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(runs),
            initial=skipped,
            desc="sweep",
            unit="run",
            dynamic_ncols=True,
            position=0,
            disable=None,
        )

    def refresh() -> None:
        if bar is None:
            return
        running = [rid for rid in started if rid not in finished]
        epochs = []
        for rid in running[:3]:
            n = _epochs_done(sfiles.run(rid).root)
            total = next((t.config.get("epochs") for t in tasks if t.run_id == rid), "?")
            epochs.append(f"{rid} epoch {n}/{total}")
        bar.set_postfix_str(
            f"running {len(running)}, failed {counts['failed']}, diverged {counts['diverged']}"
            + (f" | {'; '.join(epochs)}" if epochs and executor != "inprocess" else ""),
            refresh=True,
        )

    def on_start(t: Task) -> None:
        started[t.run_id] = time.time()
        store.set_status(t.run_id, "running")
        refresh()

    last_tick = [0.0]

    def on_tick() -> None:  # at most every 5 s: reads each running run's metrics file
        if time.time() - last_tick[0] >= 5.0:
            last_tick[0] = time.time()
            refresh()

    try:
        for t, res in ex.run(units, on_start, on_tick):
            finished.add(t.run_id)
            status = res.get("status", "failed")
            wall = time.time() - started.get(t.run_id, time.time())
            try:
                write_sweep_record(t.run_dir, wall)
            except OSError as e:
                log(f"cannot write the sweep record of {t.run_id}: {e}")
            store.record(t.run_id, t.config, res, status=status, wall_seconds=wall)
            counts["done"] += 1
            if status == "failed":
                counts["failed"] += 1
                log(f"run {t.run_id} failed: {res.get('message')}")
            elif status == "diverged":
                counts["diverged"] += 1
                log(f"run {t.run_id} diverged: {res.get('message')}")
            if bar is not None:
                bar.update(1)
                refresh()
    finally:
        if bar is not None:
            bar.close()
        ex.close()
    df = store.runs_df()
    store.close()
    log(
        f"sweep finished in {time.time() - t0:.0f} s: {int((df.status == 'completed').sum())} completed, "
        f"{int((df.status == 'diverged').sum())} diverged, {int((df.status == 'failed').sum())} failed"
    )
    return df


def _epochs_done(run_dir: Path) -> int:
    p = RunFiles(run_dir).metrics
    try:
        return sum(1 for line in p.read_text().splitlines() if line.strip())
    except OSError:
        return 0
