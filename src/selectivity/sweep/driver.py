"""The sweep driver: expands the grid, skips finished runs, dispatches, records, summarises."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from ..rundir import RunFiles, read_json, write_json
from .executors import Task, make_executor
from .spec import SweepSpec
from .store import DB_NAME, RUNS_DIR, ResultsStore, scan_run_dir

__all__ = ["run_sweep", "open_store", "summarize_sweep", "FINAL_STATUSES"]

#: A run in one of these states is not run again (failed runs are retried).
FINAL_STATUSES = ("completed", "diverged")


def open_store(sweep_dir: str | os.PathLike) -> ResultsStore:
    """Open the sweep's database, syncing it with the run directories first."""
    sweep_dir = Path(sweep_dir)
    store = ResultsStore(sweep_dir / DB_NAME)
    runs = sweep_dir / RUNS_DIR
    if runs.is_dir():
        known = store.statuses()
        for d in sorted(runs.iterdir()):
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
    summarize: bool = True,
    log: Callable[[str], None] = print,
) -> pandas.DataFrame:  # noqa: F821
    """Run (or resume) a sweep into ``sweep_dir`` and return its runs table.

    Running the same sweep again skips finished runs (completed or diverged), resumes
    interrupted ones from their last epoch and retries failed ones.
    """
    spec.validate()
    sweep_dir = Path(sweep_dir)
    (sweep_dir / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    write_json(sweep_dir / "sweep.json", {"spec": spec.to_dict(), "executor": executor, "data": data})
    runs = spec.runs()
    store = open_store(sweep_dir)
    tasks = []
    skipped = 0
    for r in runs:
        rdir = sweep_dir / RUNS_DIR / r.run_id
        files = RunFiles(rdir)
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
    counts = {"done": skipped, "failed": 0, "diverged": 0}
    t0 = time.time()
    bar = None
    if progress and tasks:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(runs), initial=skipped, desc="sweep", unit="run", dynamic_ncols=True, position=0)

    def on_start(t: Task) -> None:
        started[t.run_id] = time.time()
        store.set_status(t.run_id, "running")
        _refresh()

    def _refresh() -> None:
        if bar is None:
            return
        running = [rid for rid in started if rid not in finished]
        epochs = []
        for rid in running[:3]:
            n = _epochs_done(sweep_dir / RUNS_DIR / rid)
            total = next((t.config.get("epochs") for t in tasks if t.run_id == rid), "?")
            epochs.append(f"{rid} epoch {n}/{total}")
        bar.set_postfix_str(
            f"running {len(running)}, failed {counts['failed']}, diverged {counts['diverged']}"
            + (f" | {'; '.join(epochs)}" if epochs and executor != "inprocess" else ""),
            refresh=True,
        )

    finished: set[str] = set()
    last_tick = [0.0]

    def on_tick() -> None:  # at most every 5 s: reads each running run's metrics file
        if time.time() - last_tick[0] >= 5.0:
            last_tick[0] = time.time()
            _refresh()

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
                _refresh()
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
    if summarize:
        summarize_sweep(sweep_dir, log=log)
    return df


def _epochs_done(run_dir: Path) -> int:
    p = RunFiles(run_dir).metrics
    try:
        return sum(1 for line in p.read_text().splitlines() if line.strip())
    except OSError:
        return 0


def summarize_sweep(
    sweep_dir: str | os.PathLike, log: Callable[[str], None] = print, figures: bool = True
) -> dict:
    """Write the summary table (CSV, text) and the first figures (PNG) of a sweep.

    Reads only the run records (via the database, synced from the run directories).
    """
    from ..plots import save_figure, sweep_figures
    from ..summary import format_summary, summary_table, write_summary

    sweep_dir = Path(sweep_dir)
    with open_store(sweep_dir) as store:
        runs = store.runs_df()
        layers = store.layers_df()
    out = {}
    if runs.empty:
        log("no runs recorded yet")
        return out
    out.update(write_summary(runs, sweep_dir))
    log(format_summary(summary_table(runs)))
    if figures:
        fig_dir = sweep_dir / "figures"
        for name, fig in sweep_figures(
            runs, layers[layers.status == "completed"] if not layers.empty else None
        ).items():
            path = fig_dir / f"{name}.png"
            save_figure(fig, path)
            out[name] = path
        log(f"figures in {fig_dir}")
    return out
