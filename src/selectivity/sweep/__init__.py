"""Sweeps of alpha x seeds x models, run in-process, on local processes or on Ray."""

from .driver import FINAL_STATUSES, open_store, run_sweep, summarize_sweep
from .executors import EXECUTORS, Task, execute_run, make_executor
from .spec import (
    PAPER_ALPHAS,
    RunSpec,
    SweepSpec,
    get_sweep_preset,
    list_sweep_presets,
    parse_floats,
    parse_seeds,
    register_sweep_preset,
)
from .store import ResultsStore, rebuild_store

__all__ = [
    "FINAL_STATUSES",
    "open_store",
    "run_sweep",
    "summarize_sweep",
    "EXECUTORS",
    "Task",
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
