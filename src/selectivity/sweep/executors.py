"""Where the runs of a sweep execute: in-process, a local process pool, or Ray.

Every executor calls :func:`execute_run` for a task and yields ``(task, result)`` as
runs finish. Workers write only their own run directory; the driver alone writes the
results database. A per-run lock file makes sure two workers (e.g. an orphan of a
killed driver and its replacement) never train the same run at the same time, and pool
workers exit when the driver dies (see :func:`exit_with_parent`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Task",
    "execute_run",
    "InProcessExecutor",
    "PoolExecutor",
    "RayExecutor",
    "make_executor",
    "exit_with_parent",
    "EXECUTORS",
]

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def exit_with_parent(parent_pid: int, poll_seconds: float = 1.0) -> None:
    """Make this (worker) process die when ``parent_pid`` dies.

    A pool worker whose driver was SIGKILLed would otherwise finish its run and then
    block forever on the dead pool's queue, holding its memory. On Linux the kernel is
    asked to SIGKILL this process when its parent exits (``prctl(PR_SET_PDEATHSIG)``);
    everywhere, a daemon thread also polls the parent pid and exits the process when
    the process is re-parented. Being killed mid-run is safe: every run file is written
    atomically and the run resumes from its last checkpoint.

    Parameters
    ----------
    parent_pid : int
        The driver's pid, as seen by the driver (``os.getpid()`` there).
    poll_seconds : float
        Period of the fallback watchdog.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still works
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll_seconds)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


@dataclass(frozen=True)
class Task:
    """One run to execute: plain data only, so it pickles to any worker."""

    run_id: str
    config: dict  # resolved TrainConfig as a dict
    run_dir: str
    data: str | None = None
    threads: int | None = None  # torch CPU threads in the worker


def execute_run(task: Task, progress: bool = False) -> dict:
    """Train one run (resuming if it was interrupted); never raises for a failed run.

    Returns the run's result record; a run that raised is recorded in its directory
    as ``status: failed`` with the error message, and the sweep goes on.
    """
    import torch

    from ..config import TrainConfig
    from ..rundir import RunFiles, run_lock, write_json
    from ..train import train_run

    files = RunFiles(task.run_dir)
    files.root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with run_lock(files.root, wait=True):  # blocks while another process holds this run
        try:
            cfg = TrainConfig.from_dict(task.config)
            threads = cfg.num_threads or task.threads
            if threads:
                torch.set_num_threads(threads)
            with open(files.root / "train.log", "a") as logf:

                def log(msg: str) -> None:
                    logf.write(msg + "\n")
                    logf.flush()

                # lock=False: this process holds the run's lock (a second one would never be granted).
                result = train_run(cfg, files.root, data=task.data, progress=progress, log=log, lock=False)
        except Exception as e:  # recorded, not raised: one bad run must not stop a sweep
            result = {
                "status": "failed",
                "message": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(),
                "model": task.config.get("model"),
                "alpha": task.config.get("alpha"),
                "seed": task.config.get("seed"),
            }
            try:
                if not files.config.exists():  # keep the directory self-describing
                    write_json(files.config, task.config)
                write_json(files.result, result)
            except OSError:
                pass
    result = dict(result)
    result.setdefault("wall_seconds", time.time() - t0)
    return result


def _pool_worker(task: Task) -> dict:
    return execute_run(task, progress=False)


class InProcessExecutor:
    """Runs tasks one after another in the driver process (with per-run progress bars)."""

    name = "inprocess"

    def __init__(self, workers: int = 1, progress: bool = True, **_):
        self.workers = 1
        self.progress = progress

    def run(
        self, tasks: list[Task], on_start: Callable[[Task], None], on_tick: Callable[[], None] | None = None
    ) -> Iterator[tuple[Task, dict]]:
        for t in tasks:
            on_start(t)
            yield t, execute_run(t, progress=self.progress)

    def close(self) -> None:
        pass


class PoolExecutor:
    """A pool of local worker processes (spawned, so CUDA and threads start clean)."""

    name = "process"

    def __init__(self, workers: int | None = None, **_):
        self.workers = workers or max(1, (os.cpu_count() or 1))
        self._pool: ProcessPoolExecutor | None = None

    def run(
        self, tasks: list[Task], on_start: Callable[[Task], None], on_tick: Callable[[], None] | None = None
    ) -> Iterator[tuple[Task, dict]]:
        import multiprocessing as mp
        from concurrent.futures.process import BrokenProcessPool

        def new_pool():
            return ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=mp.get_context("spawn"),
                initializer=exit_with_parent,
                initargs=(os.getpid(),),
            )

        self._pool = new_pool()
        pending = list(tasks)
        running: dict = {}
        retries: dict[str, int] = {}
        try:
            while pending or running:
                while pending and len(running) < self.workers:
                    t = pending.pop(0)
                    on_start(t)
                    running[self._pool.submit(_pool_worker, t)] = t
                done, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
                if on_tick is not None:
                    on_tick()
                broken = False
                for fut in done:
                    t = running.pop(fut)
                    try:
                        yield t, fut.result()
                    except BrokenProcessPool as e:
                        # A worker died (killed, out of memory): the pool is unusable. The
                        # run resumes from its last checkpoint once; a second death fails it.
                        broken = True
                        retries[t.run_id] = retries.get(t.run_id, 0) + 1
                        if retries[t.run_id] <= 1:
                            pending.insert(0, t)
                        else:
                            yield t, {"status": "failed", "message": f"worker process died twice: {e}"}
                if broken:
                    for fut, t in list(running.items()):  # siblings died with the pool
                        running.pop(fut)
                        pending.insert(0, t)
                    self._pool.shutdown(wait=True, cancel_futures=True)
                    self._pool = new_pool()
        finally:
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class RayExecutor:
    """Runs each task as a Ray task with its CPU/GPU requirements.

    Connects to a running cluster with ``address`` (e.g. ``"auto"`` or
    ``"ray://head:10001"``), or starts a local Ray instance when ``address`` is None.
    Run directories must be on storage every node can reach (a shared file system).
    """

    name = "ray"

    def __init__(
        self,
        workers: int | None = None,
        address: str | None = None,
        cpus_per_run: float = 1,
        gpus_per_run: float = 0,
        **_,
    ):
        try:
            import ray  # noqa: F401
        except ImportError as e:
            raise RuntimeError("the Ray executor needs Ray: pip install 'selectivity[ray]'") from e
        self.address = address
        self.workers = workers
        self.cpus_per_run = cpus_per_run
        self.gpus_per_run = gpus_per_run
        self._started_here = False

    def run(
        self, tasks: list[Task], on_start: Callable[[Task], None], on_tick: Callable[[], None] | None = None
    ) -> Iterator[tuple[Task, dict]]:
        import ray

        if not ray.is_initialized():
            kw: dict[str, Any] = dict(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
            if self.address:
                ray.init(address=self.address, **kw)
            else:
                ray.init(num_cpus=self.workers or os.cpu_count(), **kw)
                self._started_here = True
        remote = ray.remote(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run, max_retries=0)(
            _pool_worker
        )
        refs = {}
        for t in tasks:
            on_start(t)  # Ray queues tasks until resources free up
            refs[remote.remote(t)] = t
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
                if on_tick is not None:
                    on_tick()
                for ref in done:
                    t = refs.pop(ref)
                    try:
                        res = ray.get(ref)
                    except Exception as e:  # worker died
                        res = {"status": "failed", "message": f"Ray task failed: {type(e).__name__}: {e}"}
                    yield t, res
        finally:
            for ref in refs:
                ray.cancel(ref, force=True)
            self.close()

    def close(self) -> None:
        if self._started_here:
            import ray

            ray.shutdown()
            self._started_here = False


EXECUTORS = {"inprocess": InProcessExecutor, "process": PoolExecutor, "ray": RayExecutor}


def make_executor(name: str, **kw):
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
    return EXECUTORS[name](**kw)
