"""Command-line options and timing helpers shared by the benchmark scripts.

The scripts run as ``PYTHONPATH=src python benchmarks/<name>.py``: Python puts this
folder first on ``sys.path``, so ``import benchutil`` finds this file.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

THREADS_HELP = "torch threads (1 gives stable timings on a shared machine)"
CLOCK_HELP = "cpu: process CPU time (with --threads 1, immune to other jobs on a shared machine)"


def make_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser whose ``--help`` shows the script's docstring ``doc`` as written."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_device(ap: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--device``; by default ``cuda`` when a GPU is visible, else ``cpu``."""
    ap.add_argument("--device", default=default or ("cuda" if torch.cuda.is_available() else "cpu"))


def add_repeats(ap: argparse.ArgumentParser, default: int, help: str | None = None) -> None:
    """``--repeats``: timed rounds, of which the median is reported."""
    ap.add_argument("--repeats", type=int, default=default, help=help)


def add_threads(ap: argparse.ArgumentParser, default: int | None = None, help: str = THREADS_HELP) -> None:
    """``--threads``: torch's intra-op threads (see :func:`apply_threads`)."""
    ap.add_argument("--threads", type=int, default=default, help=help)


def add_timing_options(ap: argparse.ArgumentParser, repeats: int) -> None:
    """``--repeats``, ``--threads`` and ``--clock {wall,cpu}`` (see :func:`start_timing`)."""
    add_repeats(ap, repeats)
    add_threads(ap)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help=CLOCK_HELP)


def apply_threads(args: argparse.Namespace) -> None:
    """Set torch's thread count from ``--threads`` when one was given (0 or unset: torch's default)."""
    if args.threads:
        torch.set_num_threads(args.threads)


def start_timing(args: argparse.Namespace) -> Callable[[], float]:
    """Apply ``--threads``; return the clock ``--clock`` names (process CPU time or wall time)."""
    apply_threads(args)
    return time.process_time if args.clock == "cpu" else time.perf_counter


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work on ``device`` (nothing to wait for on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fns: dict[str, Callable[[], object]], repeats: int, clock: Callable[[], float]) -> dict[str, float]:
    """Median seconds of each function over ``repeats`` rounds, alternating the order every round.

    Alternating makes drifts in machine speed hit every function alike.
    """
    out: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            t = clock()
            fns[name]()
            out[name].append(clock() - t)
    return {k: statistics.median(v) for k, v in out.items()}
