"""The checkpoint schema and loading a trained run back: model, config and data.

One schema for both files of a run directory (``checkpoints/last.pt`` to resume,
``checkpoints/best.pt`` with the parameters of the best-validation epoch):
:func:`checkpoint_state` builds it, :func:`load_model_from` and :func:`load_run` read it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import DataSplits, load_dataset
from ..models import create
from .config import TrainConfig, resolve_device
from .files import CheckpointError, RunFiles, load_checkpoint, restart_hint

__all__ = [
    "CHECKPOINT_FORMAT",
    "checkpoint_state",
    "load_state_checked",
    "clear_data_cache",
    "load_data",
    "load_model_from",
    "LoadedRun",
    "load_run",
]

#: Version of the checkpoint schema written by :func:`checkpoint_state`.
CHECKPOINT_FORMAT = 1


def checkpoint_state(
    model: nn.Module,
    cfg: TrainConfig,
    *,
    epoch: int,
    num_classes: int,
    best_val_accuracy: float,
    best_epoch: int,
    optimizer: torch.optim.Optimizer | None = None,
    classes: list[str] | None = None,
    input_shape: list[int] | None = None,
    train_seconds: float | None = None,
) -> dict[str, Any]:
    """The dictionary saved as a checkpoint (same keys for ``last.pt`` and ``best.pt``).

    Parameters
    ----------
    model : nn.Module
        Its ``state_dict()`` is stored under ``"model"``.
    cfg : TrainConfig
        Stored as a plain dict under ``"config"``.
    epoch : int
        Number of completed epochs.
    num_classes : int
        Output classes of the model.
    best_val_accuracy, best_epoch : float, int
        Best validation accuracy so far and its (1-based) epoch; ``-1`` before any.
    optimizer : torch.optim.Optimizer, optional
        Its state is stored when given (``last.pt``: needed to resume); else None.
    classes : list of str, optional
        Class names of the dataset.
    input_shape : list of int, optional
        ``[C, H, W]`` of the training images (checked by ``measure`` against its data).
    train_seconds : float, optional
        Training time so far, summed over every call that trained the run (``last.pt``:
        a resumed run adds to it).

    Returns
    -------
    dict
        ``format, model, optimizer, config, epoch, best_val_accuracy, best_epoch,
        val_accuracy`` (equal to ``best_val_accuracy``, kept for older readers),
        ``num_classes, classes, input_shape``, and ``train_seconds`` when given.
    """
    state: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "config": cfg.to_dict(),
        "epoch": epoch,
        "best_val_accuracy": best_val_accuracy,
        "best_epoch": best_epoch,
        "val_accuracy": best_val_accuracy,
        "num_classes": num_classes,
        "classes": list(classes) if classes is not None else None,
        "input_shape": [int(v) for v in input_shape] if input_shape is not None else None,
    }
    if train_seconds is not None:
        state["train_seconds"] = float(train_seconds)
    return state


def load_state_checked(
    target: nn.Module | torch.optim.Optimizer, state: dict, path: str | os.PathLike, what: str
) -> None:
    """``target.load_state_dict(state)``; a state of another shape is a :class:`CheckpointError`.

    Parameters
    ----------
    target : nn.Module or torch.optim.Optimizer
    state : dict
        The checkpoint's ``model`` or ``optimizer`` entry.
    path : path
        The checkpoint file (named in the error, with how to restart the run).
    what : str
        What ``target`` is, e.g. ``"a resnet20"``.
    """
    try:
        target.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
        msg = " ".join(str(e).split())[:300]
        hint = restart_hint(Path(path)) or "; it belongs to another model: retrain it or pick another file"
        raise CheckpointError(f"{path} does not fit {what}: {type(e).__name__}: {msg}{hint}") from None


_DATA_CACHE: dict[tuple, DataSplits] = {}


def clear_data_cache() -> None:
    """Forget the splits :func:`load_data` keeps in memory (the next call reads them afresh)."""
    _DATA_CACHE.clear()


def load_data(cfg: TrainConfig, data: str | os.PathLike | None = None) -> DataSplits:
    """Load the configured dataset's splits (memoised per process for sweeps).

    The validation split is drawn with :meth:`TrainConfig.run_split_seed`: the same for
    every run with ``val_split="fixed"``, the run's own with ``"per-run"``.
    """
    seed = cfg.run_split_seed()
    key = (cfg.dataset, str(data) if data else None, cfg.val_size, cfg.val_per_class, seed)
    if key not in _DATA_CACHE:
        splits = load_dataset(
            cfg.dataset, data, val_size=cfg.val_size, split_seed=seed, val_per_class=cfg.val_per_class
        )
        _DATA_CACHE.clear()  # keep one dataset in memory
        _DATA_CACHE[key] = splits
    return _DATA_CACHE[key]


def load_model_from(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[nn.Module, TrainConfig, dict]:
    """Rebuild a model from a checkpoint file or a run directory (its best checkpoint).

    Returns
    -------
    model : nn.Module
    config : TrainConfig
    checkpoint : dict
    """
    p = Path(path)
    if p.is_dir():
        files = RunFiles(p)
        if files.best.exists():
            p = files.best
        elif files.last.exists():
            p = files.last
        else:
            raise FileNotFoundError(
                f"{path} is a directory without checkpoints/best.pt or checkpoints/last.pt"
            )
    elif not p.exists():
        raise FileNotFoundError(f"no such checkpoint or run directory: {path}")
    ckpt = load_checkpoint(p, map_location="cpu")
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{p} is not a selectivity checkpoint (expected keys 'model' and 'config')")
    cfg = TrainConfig.from_dict(ckpt["config"])
    model = create(
        cfg.model,
        num_classes=ckpt.get("num_classes"),
        activation=cfg.activation,
        negative_slope=cfg.negative_slope,
    )
    load_state_checked(model, ckpt["model"], p, f"a {cfg.model}")
    return model.to(device), cfg, ckpt


@dataclass
class LoadedRun:
    """A trained run ready to evaluate: model (eval mode), config, checkpoint and data."""

    model: nn.Module
    config: TrainConfig
    checkpoint: dict
    splits: DataSplits
    device: torch.device


def load_run(
    path: str | os.PathLike, data: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> LoadedRun:
    """Model (best checkpoint, eval mode), config and dataset splits of a run directory.

    Parameters
    ----------
    path : path
        Run directory or checkpoint file.
    data : path, optional
        Dataset location (see :func:`selectivity.data.load_dataset`).
    device : str or torch.device, default "cpu"
        Where the model is put (``"auto"`` allowed).
    """
    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    model, cfg, ckpt = load_model_from(path, dev)
    model.eval()
    return LoadedRun(model=model, config=cfg, checkpoint=ckpt, splits=load_data(cfg, data), device=dev)
