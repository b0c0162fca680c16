"""Where the runs of a sweep execute: in-process, a local process pool, Ray, or SLURM.

Every executor calls :func:`execute_run` for a task (:func:`execute_group` for a
:class:`GroupTask`, several runs trained as one fused model) and yields
``(task, result)`` per run as runs finish. Workers write only their own run directory; the driver alone writes the
results database. A per-run lock file makes sure two workers (e.g. an orphan of a
killed driver and its replacement) never train the same run at the same time, and pool
workers exit when the driver dies (see :func:`exit_with_parent`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Task",
    "GroupTask",
    "members",
    "pack_tasks",
    "execute_run",
    "execute_group",
    "execute_unit",
    "InProcessExecutor",
    "PoolExecutor",
    "RayExecutor",
    "SlurmExecutor",
    "SlurmJob",
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
    tracker: str | None = None  # experiment tracker (selectivity.training.tracking.TRACKERS)


@dataclass(frozen=True)
class GroupTask:
    """Runs to train together as one fused model (:func:`selectivity.training.group.train_group`)."""

    tasks: tuple[Task, ...]

    @property
    def run_id(self) -> str:
        """The group's name: its runs' ids joined by ``+``."""
        return "+".join(t.run_id for t in self.tasks)


def members(unit: Task | GroupTask) -> tuple[Task, ...]:
    """The runs of a task: itself, or a group's runs."""
    return unit.tasks if isinstance(unit, GroupTask) else (unit,)


def pack_tasks(tasks: Sequence[Task], fuse: int) -> list[Task | GroupTask]:
    """Pack runs that can be fused into groups of at most ``fuse`` runs, in task order.

    Runs are fusable when their configs have one :func:`selectivity.training.group.fuse_key`
    (they differ only in seed and alpha). Each group takes the next fusable runs in the
    order given (the spec's order); a group of one run stays a plain :class:`Task`.
    The result is ordered by each group's first run.

    Raises
    ------
    ValueError
        ``fuse < 1``.
    """
    if fuse < 1:
        raise ValueError(f"fuse must be an integer >= 1, got {fuse}")
    if fuse == 1:
        return list(tasks)
    from ..run.config import TrainConfig
    from ..training.group import fuse_key

    open_groups: dict[tuple, list[Task]] = {}
    groups: list[list[Task]] = []
    for t in tasks:
        key = fuse_key(TrainConfig.from_dict(t.config))
        g = open_groups.get(key)
        if g is None or len(g) >= fuse:
            g = open_groups[key] = []
            groups.append(g)
        g.append(t)
    return [g[0] if len(g) == 1 else GroupTask(tuple(g)) for g in groups]


def _failure(task: Task, e: BaseException) -> dict:
    """The result record of a run that raised."""
    return {
        "status": "failed",
        "message": f"{type(e).__name__}: {e}",
        "traceback": traceback.format_exc(),
        "model": task.config.get("model"),
        "alpha": task.config.get("alpha"),
        "seed": task.config.get("seed"),
    }


def _write_failure(task: Task, result: dict) -> None:
    """Record a failed run in its directory (best effort)."""
    from ..run.files import RunFiles, write_json

    files = RunFiles(task.run_dir)
    try:
        if not files.config.exists():  # keep the directory self-describing
            write_json(files.config, task.config)
        write_json(files.result, result)
    except OSError:
        pass


def execute_run(task: Task, progress: bool = False) -> dict:
    """Train one run (resuming if it was interrupted); never raises for a failed run.

    Returns the run's result record; a run that raised is recorded in its directory
    as ``status: failed`` with the error message, and the sweep goes on.
    """
    import torch

    from ..run.config import TrainConfig
    from ..run.files import RunFiles, run_lock
    from ..training.single import train_run

    files = RunFiles(task.run_dir)
    files.root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with run_lock(files.root, wait=True):  # blocks while another process holds this run
        try:
            cfg = TrainConfig.from_dict(task.config)
            threads = cfg.num_threads or task.threads
            if threads:
                torch.set_num_threads(threads)
            with open(files.log, "a") as logf:

                def log(msg: str) -> None:
                    logf.write(msg + "\n")
                    logf.flush()

                # lock=False: this process holds the run's lock (a second one would never be granted).
                result = train_run(
                    cfg,
                    files.root,
                    data=task.data,
                    progress=progress,
                    log=log,
                    lock=False,
                    tracker=task.tracker,
                )
        except Exception as e:  # recorded, not raised: one bad run must not stop a sweep
            result = _failure(task, e)
            _write_failure(task, result)
    result = dict(result)
    result.setdefault("wall_seconds", time.time() - t0)
    return result


def execute_group(group: GroupTask, progress: bool = False) -> list[dict]:
    """Train a group's runs as one fused model; never raises for a failed group.

    Each run's messages go to its own ``train.log`` (the group's to every run's). If the
    group raises (e.g. out of memory), every run without a final result is recorded as
    ``status: failed``; each keeps its last completed epoch, so the next sweep resumes it.

    Returns
    -------
    list of dict
        The result record of each run, in the group's order.
    """
    import torch

    from ..run.config import TrainConfig
    from ..run.files import FINAL_STATUSES, DamagedFileError, RunFiles, read_json, run_lock
    from ..training.group import train_group

    tasks = group.tasks
    files = [RunFiles(t.run_dir) for t in tasks]
    t0 = time.time()
    with contextlib.ExitStack() as stack:
        for f in sorted(files, key=lambda f: str(f.root)):  # one order everywhere: no deadlock
            f.root.mkdir(parents=True, exist_ok=True)
            stack.enter_context(run_lock(f.root, wait=True))
        logfiles = [stack.enter_context(open(f.log, "a")) for f in files]

        def writer(fh: Any) -> Callable[[str], None]:
            def log(msg: str) -> None:
                fh.write(msg + "\n")
                fh.flush()

            return log

        run_logs = [writer(fh) for fh in logfiles]

        def log_all(msg: str) -> None:
            for lg in run_logs:
                lg(msg)

        try:
            cfgs = [TrainConfig.from_dict(t.config) for t in tasks]
            threads = cfgs[0].num_threads or tasks[0].threads
            if threads:
                torch.set_num_threads(threads)
            log_all(f"fused group of {len(tasks)} runs: {', '.join(t.run_id for t in tasks)}")
            results = train_group(
                cfgs,
                [f.root for f in files],
                data=tasks[0].data,
                progress=progress,
                log=log_all,
                lock=False,  # held above
                run_logs=run_logs,
                tracker=tasks[0].tracker,
            )
        except Exception as e:  # recorded, not raised: one bad group must not stop a sweep
            failure = _failure(tasks[0], e)
            log_all(f"the fused group failed: {failure['message']}")
            results = []
            for t, f in zip(tasks, files):
                try:  # a run that finished before the failure keeps its result
                    res = read_json(f.result) if f.result.exists() else None
                except DamagedFileError:
                    res = None
                if res is None or res.get("status") not in FINAL_STATUSES:
                    res = {**failure, **{k: t.config.get(k) for k in ("model", "alpha", "seed")}}
                    _write_failure(t, res)
                results.append(res)
    wall = time.time() - t0
    out = []
    for res in results:
        res = dict(res)
        res.setdefault("wall_seconds", wall)
        out.append(res)
    return out


def execute_unit(unit: Task | GroupTask, progress: bool = False) -> list[dict]:
    """Results of a task's runs: :func:`execute_run` or :func:`execute_group`."""
    if isinstance(unit, GroupTask):
        return execute_group(unit, progress)
    return [execute_run(unit, progress)]


def _pool_worker(unit: Task | GroupTask) -> list[dict]:
    return execute_unit(unit, progress=False)


class InProcessExecutor:
    """Runs tasks one after another in the driver process (with per-run progress bars)."""

    name = "inprocess"

    def __init__(self, workers: int = 1, progress: bool = True, **_):
        self.workers = 1
        self.progress = progress

    def run(
        self,
        tasks: Sequence[Task | GroupTask],
        on_start: Callable[[Task], None],
        on_tick: Callable[[], None] | None = None,
    ) -> Iterator[tuple[Task, dict]]:
        for unit in tasks:
            for t in members(unit):
                on_start(t)
            yield from zip(members(unit), execute_unit(unit, progress=self.progress))

    def close(self) -> None:
        pass


class PoolExecutor:
    """A pool of local worker processes (spawned, so CUDA and threads start clean)."""

    name = "process"

    def __init__(self, workers: int | None = None, **_):
        self.workers = workers or max(1, (os.cpu_count() or 1))
        self._pool: ProcessPoolExecutor | None = None

    def run(
        self,
        tasks: Sequence[Task | GroupTask],
        on_start: Callable[[Task], None],
        on_tick: Callable[[], None] | None = None,
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
                    for m in members(t):
                        on_start(m)
                    running[self._pool.submit(_pool_worker, t)] = t
                done, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
                if on_tick is not None:
                    on_tick()
                broken = False
                for fut in done:
                    t = running.pop(fut)
                    try:
                        results = fut.result()
                    except BrokenProcessPool as e:
                        # A worker died (killed, out of memory): the pool is unusable. The
                        # runs resume from their last checkpoints once; a second death fails them.
                        broken = True
                        retries[t.run_id] = retries.get(t.run_id, 0) + 1
                        if retries[t.run_id] <= 1:
                            pending.insert(0, t)
                        else:
                            for m in members(t):
                                yield m, {"status": "failed", "message": f"worker process died twice: {e}"}
                    else:
                        yield from zip(members(t), results)
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
    """Runs each task (a run, or a fused group of runs) as a Ray task with its CPU/GPU requirements.

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
        self,
        tasks: Sequence[Task | GroupTask],
        on_start: Callable[[Task], None],
        on_tick: Callable[[], None] | None = None,
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
        for t in tasks:  # one Ray task per run, or per fused group
            for m in members(t):
                on_start(m)  # Ray queues tasks until resources free up
            refs[remote.remote(t)] = t
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
                if on_tick is not None:
                    on_tick()
                for ref in done:
                    t = refs.pop(ref)
                    try:
                        results = ray.get(ref)
                    except Exception as e:  # worker died
                        msg = f"Ray task failed: {type(e).__name__}: {e}"
                        results = [{"status": "failed", "message": msg} for _ in members(t)]
                    yield from zip(members(t), results)
        finally:
            for ref in refs:
                ray.cancel(ref, force=True)
            self.close()

    def close(self) -> None:
        if self._started_here:
            import ray

            ray.shutdown()
            self._started_here = False


class SlurmJob:
    """What one SLURM job runs: one task (a run, or a fused group), like a pool worker.

    Checkpointable in submitit's sense: when SLURM preempts the job or its time runs out,
    submitit calls :meth:`checkpoint` and requeues the same task, which resumes each run
    from its last completed epoch (a run's lock dies with the process holding it).
    """

    def __call__(self, unit: Task | GroupTask) -> list[dict]:
        return execute_unit(unit, progress=False)

    def checkpoint(self, unit: Task | GroupTask) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, unit)


class SlurmExecutor:
    """Each task (a run, or a fused group of runs) is one SLURM job, all of them one job array.

    Submitted through submitit (``pip install 'selectivity[slurm]'``) from the machine
    where ``sbatch`` works (a login node); run directories must be on storage the
    compute nodes share. submitit's files (job scripts, pickles, each job's stdout and
    stderr) go to ``SWEEP/slurm/``. A job that fails or is cancelled fails its runs; the
    next ``selectivity sweep`` with the same arguments resumes them, and a job that
    SLURM preempts or times out is requeued by submitit and resumes (:class:`SlurmJob`).

    Parameters
    ----------
    workers : int, optional
        At most this many jobs of the array run at once (``--array=...%workers``).
    sweep_dir : path
        The sweep directory (submitit's folder is ``sweep_dir/slurm``).
    cpus_per_run, gpus_per_run : float
        CPUs and GPUs of each job (GPUs: a whole number).
    partition : str, optional
        SLURM partition.
    time_min : int
        Time limit of each job, in minutes.
    mem_gb : float, optional
        Memory of each job.
    additional : dict, optional
        More ``#SBATCH --key=value`` lines (e.g. ``{"account": "lab", "qos": "high"}``).
    cluster : {"slurm", "local"}
        ``"local"``: submitit's local executor (tests; no scheduler, every job at once).
    poll_seconds : float
        How often the jobs' states are read.
    """

    name = "slurm"

    def __init__(
        self,
        workers: int | None = None,
        sweep_dir: str | os.PathLike | None = None,
        cpus_per_run: float = 1,
        gpus_per_run: float = 0,
        partition: str | None = None,
        time_min: int = 24 * 60,
        mem_gb: float | None = None,
        additional: dict | None = None,
        cluster: str = "slurm",
        poll_seconds: float = 5.0,
        **_,
    ):
        try:
            import submitit  # noqa: F401
        except ImportError as e:
            raise RuntimeError("the SLURM executor needs submitit: pip install 'selectivity[slurm]'") from e
        if cluster not in ("slurm", "local"):
            raise ValueError(f"cluster must be 'slurm' or 'local', got {cluster!r}")
        if cluster == "slurm":
            import shutil

            if shutil.which("sbatch") is None:
                raise RuntimeError(
                    "--executor slurm submits with SLURM's sbatch, which is not on this machine's PATH: "
                    "run the sweep on the cluster's login node"
                )
        if sweep_dir is None:
            raise ValueError("the SLURM executor needs the sweep directory (its jobs' files go there)")
        if float(gpus_per_run) != int(gpus_per_run) or gpus_per_run < 0:
            raise ValueError(
                f"--gpus-per-run must be a whole number with --executor slurm, got {gpus_per_run:g}"
            )
        if time_min < 1:
            raise ValueError(f"the SLURM time limit must be >= 1 minute, got {time_min}")
        self.workers = workers
        self.folder = Path(sweep_dir) / "slurm"
        self.cluster = cluster
        self.poll_seconds = poll_seconds
        self.params: dict[str, Any] = {
            "timeout_min": int(time_min),
            "cpus_per_task": max(1, math.ceil(cpus_per_run)),
            "gpus_per_node": int(gpus_per_run),
            "tasks_per_node": 1,
            "nodes": 1,
            "name": f"selectivity-{Path(sweep_dir).name}",
            "mem_gb": mem_gb,
            "slurm_partition": partition,
            "slurm_array_parallelism": workers,
            "slurm_additional_parameters": dict(additional) if additional else None,
        }
        self._jobs: list = []

    def run(
        self,
        tasks: Sequence[Task | GroupTask],
        on_start: Callable[[Task], None],
        on_tick: Callable[[], None] | None = None,
    ) -> Iterator[tuple[Task, dict]]:
        import submitit

        if not tasks:
            return
        ex = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        ex.update_parameters(**self.params)
        job_fn = SlurmJob()
        with ex.batch():  # one job array: one element per run or fused group
            jobs = [ex.submit(job_fn, t) for t in tasks]
        self._jobs = list(zip(jobs, tasks))
        for t in tasks:
            for m in members(t):
                on_start(m)  # queued: SLURM starts them as resources free up
        pending = list(self._jobs)
        try:
            while pending:
                still = []
                for job, t in pending:
                    if not job.done():
                        still.append((job, t))
                        continue
                    try:
                        results = job.result()
                    except Exception as e:  # failed, cancelled, killed by SLURM
                        msg = " ".join(f"SLURM job {job.job_id} failed: {type(e).__name__}: {e}".split())
                        results = [{"status": "failed", "message": msg[:1000]} for _ in members(t)]
                    yield from zip(members(t), results)
                pending = still
                if on_tick is not None:
                    on_tick()
                if pending:
                    time.sleep(self.poll_seconds)
        finally:
            self.close()

    def close(self) -> None:
        """Cancel the jobs still queued or running (the driver was stopped); they resume on a rerun."""
        for job, _ in self._jobs:
            try:
                if not job.done():
                    job.cancel(check=False)
            except Exception:
                pass
        self._jobs = []


EXECUTORS = {
    "inprocess": InProcessExecutor,
    "process": PoolExecutor,
    "ray": RayExecutor,
    "slurm": SlurmExecutor,
}


def make_executor(name: str, **kw):
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
    return EXECUTORS[name](**kw)
