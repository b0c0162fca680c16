"""How long a training run takes here: one measured step, scaled to the run's epochs.

The estimate times real training steps (:func:`selectivity.training.single.train_step`,
the regulariser attached when ``alpha != 0``) of the configured model at the configured
batch size on random images of the dataset's size, on this machine, after one warm-up
step. It leaves out data loading, augmentation, validation and the final test, so it is
a lower bound of the wall time; on a CPU those add little next to the steps.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import torch

from ..models import create
from ..run.config import TrainConfig, resolve_device
from .single import build_regularizer, train_step

__all__ = ["TRAIN_IMAGES", "TrainingEstimate", "estimate_training", "steps_per_epoch"]

#: Training images (before the validation split is taken out), side length and classes.
TRAIN_IMAGES: dict[str, tuple[int, int, int]] = {
    "cifar10": (50_000, 32, 10),
    "tiny-imagenet": (100_000, 64, 200),
}


@dataclass(frozen=True)
class TrainingEstimate:
    """A measured step and what it makes of a whole run.

    Attributes
    ----------
    step_seconds : float
        Seconds of one training step (the fastest of the timed steps).
    steps_per_epoch : int
    epochs : int
    device : str
        Where the step ran.
    """

    step_seconds: float
    steps_per_epoch: int
    epochs: int
    device: str

    @property
    def seconds(self) -> float:
        """Estimated training time of all epochs, in seconds."""
        return self.step_seconds * self.steps_per_epoch * self.epochs


def steps_per_epoch(cfg: TrainConfig) -> int:
    """Optimiser steps of one epoch of ``cfg`` (the training split after the validation split)."""
    n_train, _, classes = TRAIN_IMAGES.get(cfg.dataset, TRAIN_IMAGES["cifar10"])
    # the validation split: a total, or so many per class (the dataset's protocol)
    n_val = cfg.val_size if cfg.val_size is not None else (cfg.val_per_class or 0) * classes
    n = n_train - n_val
    if cfg.train_subset:
        n = min(n, cfg.train_subset)
    return max(1, math.ceil(n / cfg.batch_size))


def estimate_training(cfg: TrainConfig, timed_steps: int = 2) -> TrainingEstimate:
    """Time ``timed_steps`` training steps of ``cfg`` on this machine after one warm-up step.

    Parameters
    ----------
    cfg : TrainConfig
        The run's configuration (model, batch size, alpha, device, threads).
    timed_steps : int, default 2
        Steps timed after the warm-up; the fastest counts.

    Returns
    -------
    TrainingEstimate
    """
    device = resolve_device(cfg.device)
    _, side, classes = TRAIN_IMAGES.get(cfg.dataset, TRAIN_IMAGES["cifar10"])
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        g = torch.Generator().manual_seed(0)
        model = create(
            cfg.model, num_classes=classes, activation=cfg.activation, negative_slope=cfg.negative_slope
        ).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        reg = build_regularizer(cfg, model, classes)
        x = torch.rand(cfg.batch_size, 3, side, side, generator=g).to(device)
        y = torch.randint(0, classes, (cfg.batch_size,), generator=g).to(device)
        times = []
        with reg if cfg.alpha != 0 else contextlib.nullcontext():
            for i in range(1 + max(1, timed_steps)):
                t0 = time.perf_counter()
                train_step(model, opt, reg, x, y, cfg, device)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if i > 0:  # the first step warms up allocator and kernels
                    times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return TrainingEstimate(min(times), steps_per_epoch(cfg), cfg.epochs, str(device))
