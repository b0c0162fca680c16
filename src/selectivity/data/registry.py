"""The one list of datasets: name -> how to load its splits and how to find it on disk."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .cifar10 import load_cifar10
from .loader import DataSplits
from .locate import find_cifar10, find_tiny_imagenet
from .tinyimagenet import VAL_PER_CLASS, load_tiny_imagenet

__all__ = [
    "DatasetInfo",
    "DATASETS",
    "VAL_SPLITS",
    "ValidationProtocol",
    "dataset_info",
    "load_dataset",
    "locate_dataset",
    "params_for_dataset",
]

PathArg = str | os.PathLike | None

#: How a run's validation split is drawn: ``"fixed"`` (from the config's ``split_seed``,
#: the same for every run) or ``"per-run"`` (afresh for each run, from its seed too).
VAL_SPLITS = ("fixed", "per-run")


@dataclass(frozen=True)
class ValidationProtocol:
    """A dataset's validation split as its paper draws it (exactly one of the sizes is set)."""

    val_size: int | None  # validation images in total, stratified by class
    val_per_class: int | None  # validation images per class
    val_split: str  # one of VAL_SPLITS


@dataclass(frozen=True)
class DatasetInfo:
    """How to load one dataset and how to find it without downloading."""

    name: str
    description: str
    #: ``load(data, val_size=..., split_seed=..., val_per_class=...) -> DataSplits``
    load: Callable[..., DataSplits]
    #: ``locate(data) -> Path``; raises FileNotFoundError, never downloads.
    locate: Callable[[PathArg], Path]
    #: The validation split of the dataset's protocol (what a config's None fields become).
    protocol: ValidationProtocol
    #: Corruption parameter set of :func:`selectivity.perturb.corrupt` for its image size
    #: (``"cifar10"``: CIFAR-10-C's, 32 px; ``"tinyimagenet"``: Tiny ImageNet-C's, 64 px).
    corruption_params: str = "cifar10"


def _locate_cifar10(data: PathArg) -> Path:
    return find_cifar10(data, download=False)


#: Every dataset the package trains on, by the name used in ``TrainConfig.dataset``.
DATASETS: dict[str, DatasetInfo] = {
    # Paper 1 (A.1): the 45k/5k split of the 50k training images, one split for all runs.
    "cifar10": DatasetInfo(
        "cifar10",
        "CIFAR-10 (32x32, 10 classes)",
        load_cifar10,
        _locate_cifar10,
        ValidationProtocol(val_size=5000, val_per_class=None, val_split="fixed"),
    ),
    # Paper 1 (final version): 50 images per class from the training set, afresh for each run.
    "tiny-imagenet": DatasetInfo(
        "tiny-imagenet",
        "Tiny ImageNet (64x64, 200 classes)",
        load_tiny_imagenet,
        find_tiny_imagenet,
        ValidationProtocol(val_size=None, val_per_class=VAL_PER_CLASS, val_split="per-run"),
        corruption_params="tinyimagenet",
    ),
}


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry of ``name``; ValueError naming the known datasets otherwise."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


def load_dataset(
    name: str,
    data: PathArg = None,
    *,
    val_size: int | None = 5000,
    split_seed: int = 0,
    val_per_class: int | None = None,
) -> DataSplits:
    """Load the train/validation/test splits of dataset ``name`` (see :data:`DATASETS`).

    ``val_per_class`` (images per class), when given, replaces ``val_size`` (in total).
    """
    return dataset_info(name).load(
        data, val_size=val_size, split_seed=split_seed, val_per_class=val_per_class
    )


def locate_dataset(name: str, data: PathArg = None) -> Path:
    """Where dataset ``name`` is on disk (never downloads); FileNotFoundError if absent."""
    return dataset_info(name).locate(data)


def params_for_dataset(dataset: str) -> str:
    """The corruption parameter set generated for runs of ``dataset``.

    The registry's ``corruption_params`` (``"tinyimagenet"`` for ``tiny-imagenet``,
    ``"cifar10"`` for CIFAR-10); a name not in the registry: ``"tinyimagenet"`` if it
    starts with ``tiny``, else ``"cifar10"``.
    """
    info = DATASETS.get(str(dataset))
    if info is not None:
        return info.corruption_params
    return "tinyimagenet" if str(dataset).startswith("tiny") else "cifar10"
