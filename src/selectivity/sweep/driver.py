"""The sweep driver: expands the grid, skips finished runs, dispatches, records.

It draws no figure and computes no statistic: the summary table and figures of a
sweep are :func:`selectivity.report.summarize_sweep` (the CLI calls it after the sweep).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..rundir import FINAL_STATUSES, RunFiles, SweepFiles, read_json, write_json
from .executors import Task, make_executor
from .spec import SweepSpec
from .store import ResultsStore, scan_run_dir

if TYPE_CHECKING:
    import pandas as pd

# FINAL_STATUSES is defined in selectivity.rundir (re-exported here).
__all__ = ["run_sweep", "open_store", "FINAL_STATUSES"]


def open_store(sweep_dir: str | os.PathLike) -> ResultsStore:
    """Open the sweep's database, syncing it with the run directories first."""
    files = SweepFiles(sweep_dir)
    store = ResultsStore(files.db)
    if files.runs.is_dir():
        known = store.statuses()
        for d in sorted(files.runs.iterdir()):
            if not RunFiles(d).config.exists():
                continue
            config, result, status = scan_run_dir(d)
            if known.get(d.name) != status or status not in FINAL_STATUSES:
                store.record(d.name, config, result, status=status)
    return store


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
) -> pd.DataFrame:
    """Run (or resume) a sweep into ``sweep_dir`` and return its runs table.

    Running the same sweep again skips finished runs (completed or diverged), resumes
    interrupted ones from their last epoch and retries failed ones.

    ``summarize`` is accepted for compatibility and must be False: the summary table
    and figures are written by :func:`selectivity.report.summarize_sweep`, which the
    ``selectivity sweep`` command calls after this function.
    """
    if summarize:
        raise ValueError(
            "run_sweep no longer writes the summary; call "
            "selectivity.report.summarize_sweep(sweep_dir) after it"
        )
    spec.validate()
    sweep_dir = Path(sweep_dir)
    sfiles = SweepFiles(sweep_dir)
    sfiles.runs.mkdir(parents=True, exist_ok=True)
    write_json(sfiles.spec, {"spec": spec.to_dict(), "executor": executor, "data": data})
    runs = spec.runs()
    store = open_store(sweep_dir)
    tasks = []
    skipped = 0
    for r in runs:
        files = sfiles.run(r.run_id)
        rdir = files.root
        if files.result.exists() and read_json(files.result).get("status") in FINAL_STATUSES:
            skipped += 1
            continue
        cfgd = r.config.to_dict()
        if files.config.exists():
            config, result, status = scan_run_dir(rdir)
            store.record(r.run_id, config, result, status=status)
        else:
            store.record(r.run_id, cfgd, None, status="pending")
        threads = None if cfgd.get("num_threads") else max(1, int(cpus_per_run))
        tasks.append(Task(r.run_id, cfgd, str(rdir), data, threads if executor != "inprocess" else None))
    log(
        f"sweep {sweep_dir}: {len(runs)} runs, {skipped} already finished, {len(tasks)} to run "
        f"({executor} executor)"
    )

    ex = make_executor(
        executor,
        workers=workers,
        address=address,
        cpus_per_run=cpus_per_run,
        gpus_per_run=gpus_per_run,
        progress=progress,
    )
    started: dict[str, float] = {}
    finished: set[str] = set()
    counts = {"done": skipped, "failed": 0, "diverged": 0}
    t0 = time.time()
    bar = None
    if progress and tasks:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(runs), initial=skipped, desc="sweep", unit="run", dynamic_ncols=True, position=0)

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
        for t, res in ex.run(tasks, on_start, on_tick):
            finished.add(t.run_id)
            status = res.get("status", "failed")
            wall = time.time() - started.get(t.run_id, time.time())
            files = RunFiles(t.run_dir)
            config = read_json(files.config) if files.config.exists() else t.config
            store.record(t.run_id, config, res, status=status, wall_seconds=wall)
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
