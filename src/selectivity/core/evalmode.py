"""Running a model in eval mode with frozen parameters, every flag restored afterwards.

Used by the input-gradient code (:mod:`selectivity.analysis.gradients`,
:mod:`selectivity.perturb.attacks`): gradients are taken w.r.t. the inputs only, and each
sample's gradient must be its own (batch norm on running statistics, no dropout).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["frozen_eval"]


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
