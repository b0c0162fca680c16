"""Sweeps of alpha x seeds x models, run in-process, on local processes or on Ray.

The grid (:mod:`.spec`), the results database (:mod:`.store`), the executors
(:mod:`.executors`) and the driver (:mod:`.driver`). No plotting and no statistics:
those read the database from above (:mod:`selectivity.report`).
"""

from ..run.files import FINAL_STATUSES
from .driver import SweepMismatchError, run_sweep
from .executors import EXECUTORS, GroupTask, Task, execute_run, exit_with_parent, make_executor, pack_tasks
from .spec import (
    PAPER_ALPHAS,
    RunSpec,
    SweepSpec,
    get_sweep_preset,
    list_sweep_presets,
    parse_floats,
    parse_grid,
    parse_seeds,
    register_sweep_preset,
    run_id,
)
from .store import ResultsStore, open_store, rebuild_store

__all__ = [
    "FINAL_STATUSES",
    "SweepMismatchError",
    "exit_with_parent",
    "parse_grid",
    "run_id",
    "open_store",
    "run_sweep",
    "EXECUTORS",
    "Task",
    "GroupTask",
    "pack_tasks",
    "execute_run",
    "make_executor",
    "PAPER_ALPHAS",
    "RunSpec",
    "SweepSpec",
    "get_sweep_preset",
    "list_sweep_presets",
    "parse_floats",
    "parse_seeds",
    "register_sweep_preset",
    "ResultsStore",
    "rebuild_store",
]
