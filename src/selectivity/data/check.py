"""Checks that data fit what a run or a checkpoint expects, and a record of where data came from.

A CIFAR-10 model has 10 outputs and sees 32x32 images; measuring it on another data
set (3 classes, 64-pixel images) would print numbers that mean nothing. These checks turn
such a mismatch into one clear error naming both sides.
"""

from __future__ import annotations

from typing import Any

from .loader import DataSplits

__all__ = ["DataMismatchError", "NOMINAL", "check_dataset", "check_data_matches_checkpoint", "data_record"]

#: What each named data set looks like: number of classes (None: any) and (C, H, W).
NOMINAL: dict[str, dict[str, Any]] = {
    "cifar10": {"num_classes": 10, "input_shape": (3, 32, 32)},
    "tiny-imagenet": {"num_classes": None, "input_shape": (3, 64, 64)},
}


class DataMismatchError(ValueError):
    """The data do not fit the configured data set or the checkpoint's model."""


def _shape(splits: DataSplits) -> tuple[int, ...]:
    return tuple(int(v) for v in splits.train.image_shape)


def check_dataset(dataset: str, splits: DataSplits) -> None:
    """Refuse data that are not what ``dataset`` names (e.g. a 3-class folder as ``cifar10``).

    Parameters
    ----------
    dataset : str
        The config's ``dataset`` field.
    splits : DataSplits

    Raises
    ------
    DataMismatchError
        CIFAR-10 data must have 10 classes and 3x32x32 images; Tiny ImageNet data
        3x64x64 images (any number of classes, so reduced copies still load).
    """
    nominal = NOMINAL.get(dataset)
    if nominal is None:
        return
    where = f"the data at {splits.source}" if splits.source else "the data"
    n = nominal["num_classes"]
    if n is not None and splits.num_classes != n:
        raise DataMismatchError(
            f"{where} have {splits.num_classes} classes ({', '.join(splits.classes[:12])}), "
            f"but dataset={dataset!r} has {n}; point --data at a {dataset} copy"
        )
    if _shape(splits) != tuple(nominal["input_shape"]):
        raise DataMismatchError(
            f"{where} hold {'x'.join(map(str, _shape(splits)))} images, but dataset={dataset!r} "
            f"has {'x'.join(map(str, nominal['input_shape']))}"
        )


def check_data_matches_checkpoint(ckpt: dict, splits: DataSplits, name: str = "the checkpoint") -> None:
    """Refuse to measure a checkpoint on data with other classes or another image size.

    Parameters
    ----------
    ckpt : dict
        A loaded checkpoint (``num_classes``, ``config``; ``classes`` and ``input_shape``
        when the run recorded them).
    splits : DataSplits
    name : str
        How the checkpoint is named in the error (its path).

    Raises
    ------
    DataMismatchError
    """
    where = f"the data at {splits.source}" if splits.source else "the data"
    n = ckpt.get("num_classes")
    if n is not None and n != splits.num_classes:
        raise DataMismatchError(
            f"{name} was trained on {n} classes, but {where} have {splits.num_classes}; "
            "give --data the data set it was trained on"
        )
    classes = ckpt.get("classes")
    if classes is not None and list(classes) != list(splits.classes):
        raise DataMismatchError(
            f"{name} was trained on classes {list(classes)[:10]}, but {where} have {splits.classes[:10]}"
        )
    shape = ckpt.get("input_shape")
    if shape is None:
        dataset = str((ckpt.get("config") or {}).get("dataset"))
        shape = NOMINAL.get(dataset, {}).get("input_shape")
    if shape is not None and tuple(shape) != _shape(splits):
        raise DataMismatchError(
            f"{name} was trained on {'x'.join(map(str, shape))} images, but {where} hold "
            f"{'x'.join(map(str, _shape(splits)))}"
        )


def data_record(splits: DataSplits) -> dict:
    """Where the data came from, for a run's ``meta.json``.

    Returns
    -------
    dict
        ``source`` (path), ``format`` (python-release, image-folder, archive),
        ``fingerprint`` (the decoded cache's key: path, sizes and times of the files),
        ``classes``, ``num_classes``, ``input_shape`` ``[C, H, W]``, split sizes and
        ``split_seed`` (the seed that drew the validation split).
    """
    from pathlib import Path

    from .locate import source_fingerprint

    src = Path(splits.source) if splits.source else None
    fmt = None
    fingerprint = None
    if src is not None and src.exists():
        if src.is_file():
            fmt = "archive"
        elif (src / "data_batch_1").exists():
            fmt = "python-release"
        else:
            fmt = "image-folder"
        try:
            fingerprint = source_fingerprint(src)
        except OSError:
            fingerprint = None
    return {
        "source": str(src) if src else None,
        "format": fmt,
        "fingerprint": fingerprint,
        "classes": list(splits.classes),
        "num_classes": splits.num_classes,
        "input_shape": list(_shape(splits)),
        "sizes": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "split_seed": splits.split_seed,  # the seed that drew the validation split
    }
