"""Running a model with frozen parameters, every flag restored afterwards.

Used by the input-gradient code (:mod:`selectivity.analysis.gradients`,
:mod:`selectivity.perturb.attacks`): gradients are taken w.r.t. the inputs only.
:func:`frozen_eval` also puts the model in eval mode, so each sample's gradient is its
own (batch norm on running statistics, no dropout); :func:`frozen_train` keeps the
modules' modes (batch norm on the batch's statistics, as adversarial training generates
its attacks) and puts the buffers (batch-norm running statistics) back on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["frozen_eval", "frozen_train"]


@contextmanager
def frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients inside; every flag restored on exit.

    Inside the block every module of ``model`` is in eval mode, every parameter has
    ``requires_grad=False`` (so no ``.grad`` is created or changed) and autograd is
    enabled (input gradients work even under an outer ``torch.no_grad()``). On exit,
    also by an exception, each module's ``training`` flag and each parameter's
    ``requires_grad`` flag are set back to what they were.

    Parameters
    ----------
    model : nn.Module
        The network; changed in place inside the block only.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        with torch.enable_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)


@contextmanager
def frozen_train(model: nn.Module) -> Iterator[None]:
    """No parameter gradients inside, modes unchanged, buffers restored on exit.

    Inside the block every parameter has ``requires_grad=False`` and autograd is enabled,
    as in :func:`frozen_eval`, but every module keeps its ``training`` flag: a model in
    train mode normalises with each batch's own statistics. Forward passes inside update
    batch-norm running statistics as usual; on exit, also by an exception, every buffer
    is copied back (in place) to its value at entry, and every ``requires_grad`` flag
    is restored. So the block changes nothing of the model.

    Parameters
    ----------
    model : nn.Module
        The network; its buffers may be views of other storage (they are restored in place).
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        with torch.enable_grad():
            yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)
        for p, flag in flags:
            p.requires_grad_(flag)
