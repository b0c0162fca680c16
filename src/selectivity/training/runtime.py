"""Runtime helpers shared by single runs and fused groups: bf16 autocast, channels_last,
``torch.compile`` with a safe fallback, and the CPU allocator setting.

Machinery, not models: nothing here knows about selectivity. Kept apart from
:mod:`selectivity.training.fused` so that the single-run trainer does not import the
fused model.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["autocast", "channels_last", "compile_with_fallback", "keep_freed_memory"]


def autocast(device: torch.device | str, enabled: bool, dtype: torch.dtype = torch.bfloat16):
    """bf16 autocast on CUDA *or* CPU when ``enabled``, else a null context.

    Selectivity class means stay float32 under autocast (see
    :func:`selectivity.core.regularizer.masked_selectivity`).
    """
    dev = torch.device(device)
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=dtype)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>


def keep_freed_memory(mmap_threshold: int = 32 * 2**20, trim_threshold: int = 2**30) -> bool:
    """Ask glibc's ``malloc`` to keep freed memory for reuse instead of giving it back to the OS.

    On the CPU every training step frees and reallocates megabytes of activations. By
    default glibc serves large blocks with ``mmap`` and returns freed memory to the OS,
    so the next step takes fresh pages and pays a page fault per 4 KiB, inside the
    convolution that first writes them. Raising the mmap threshold (to glibc's maximum,
    32 MiB) and the trim threshold keeps those pages in the process. Measured on the
    2-core CPU with ResNet20 at batch 32 (``benchmarks/bench_gpu.py``): a single step
    about 10% faster, and the extra cost of a fused group over its runs gone (it came
    from the group's larger peak memory). Process-wide; no effect on any number computed.

    Returns
    -------
    bool
        True when applied (Linux with glibc), False where there is nothing to tune.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold))
        )
    except (OSError, AttributeError):  # another C library: leave its defaults
        return False


def channels_last(model: nn.Module) -> nn.Module:
    """Convert ``model``'s 4-D parameters and buffers to ``channels_last`` in place.

    Inputs should be converted with ``x.contiguous(memory_format=torch.channels_last)``.
    For single runs only: a fused group's inputs are 5-D ``(R, B, C, H, W)``.
    """
    return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stubs lack memory_format


def compile_with_fallback(
    fn: Callable[..., Any],
    trial: Callable[[Callable[..., Any]], None],
    snapshot: Callable[[], Any],
    restore: Callable[[Any], None],
    **compile_kwargs: Any,
) -> tuple[Callable[..., Any], str | None]:
    """``torch.compile(fn)`` if a trial step with it succeeds, else ``fn``, with no side effect.

    Compilation errors surface lazily (at the first forward, or at the first backward for
    the backward graph), possibly after a step has changed parameters or batch-norm
    statistics. So the state is saved with ``snapshot()``, one complete trial step
    ``trial(compiled)`` is run, and ``restore(saved)`` undoes it whatever happened.

    Parameters
    ----------
    fn : callable
        The function to compile (e.g. a loss function called by the step).
    trial : callable
        Runs one full step using the given function (forward, backward, optimizer step).
    snapshot, restore : callable
        Save and restore everything a step mutates.
    **compile_kwargs
        Passed to :func:`torch.compile`.

    Returns
    -------
    fn_to_use : callable
        The compiled function, or ``fn`` when compiling failed.
    reason : str or None
        Why compiling failed (one line), None on success.
    """
    saved = snapshot()
    try:
        compiled = torch.compile(fn, **compile_kwargs)
        trial(compiled)
    except Exception as e:  # any compiler/backend failure: fall back to eager
        restore(saved)
        msg = " ".join(str(e).split())  # one line
        return fn, f"{type(e).__name__}: {msg}"[:400]
    restore(saved)
    return compiled, None
