"""Tiny ImageNet (200 classes, 64x64) in its released layout.

The released tree (``tiny-imagenet-200/``, or a ``.zip``/``.tar.gz`` of it)::

    wnids.txt                          one wnid per line; this order is the label order
    train/<wnid>/images/*.JPEG         500 per class
    val/val_annotations.txt            file name <TAB> wnid <TAB> bounding box...
    val/images/*.JPEG                  50 per class
    test/images/*.JPEG                 unlabelled: ignored

The official validation set has labels and becomes our *test* set; our validation set is
drawn from the training images, 50 per class by default (paper 1's protocol: 10,000, the
size of the test set). Some images are greyscale and are converted to RGB. Decoded arrays are
cached like CIFAR-10's.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from .archive import IMAGE_EXTENSIONS, ImageDecoder, iter_files
from .cifar10 import natural_key
from .loader import DataSplits, ImageDataset, make_splits
from .locate import DatasetFormatError, cached_arrays, find_tiny_imagenet

__all__ = ["VAL_PER_CLASS", "load_tiny_imagenet", "read_tiny_imagenet"]

#: Validation images per class drawn from the training set (paper 1's Tiny ImageNet protocol).
VAL_PER_CLASS = 50

# Paths relative to the data root, which may sit one directory deep in an archive.
_WNIDS = re.compile(r"^(?:([^/]+)/)?wnids\.txt$")
_VAL_ANN = re.compile(r"^(?:([^/]+)/)?val/val_annotations\.txt$")
_TRAIN_IMG = re.compile(r"^(?:([^/]+)/)?train/([^/]+)/images/([^/]+)$")
_VAL_IMG = re.compile(r"^(?:([^/]+)/)?val/images/([^/]+)$")


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _text(payload: bytes | str) -> str:
    if isinstance(payload, bytes):
        return payload.decode("utf-8")
    return Path(payload).read_text(encoding="utf-8")


def _decode_tiny(source: Path, workers: int | None) -> dict[str, np.ndarray]:
    def select(name: str) -> bool:
        if _WNIDS.match(name) or _VAL_ANN.match(name):
            return True
        return bool(_TRAIN_IMG.match(name) or _VAL_IMG.match(name)) and _is_image_name(name)

    wnids_text = ann_text = None
    entries: list[tuple[str, str | None, str]] = []  # (split, wnid or None for val, file name)
    roots: set[str] = set()
    with ImageDecoder(workers=workers) as decoder:
        for name, payload in iter_files(source, select):
            if m := _WNIDS.match(name):
                wnids_text = _text(payload)
            elif m := _VAL_ANN.match(name):
                ann_text = _text(payload)
            elif m := _TRAIN_IMG.match(name):
                entries.append(("train", m.group(2), m.group(3)))
                decoder.add(name, payload)
            else:
                m = _VAL_IMG.match(name)
                assert m is not None  # `select` admits only these four kinds of member
                entries.append(("test", None, m.group(2)))
                decoder.add(name, payload)
            roots.add(m.group(1) or "")
        if len(roots) > 1:
            raise DatasetFormatError(
                f"{str(source)!r} holds Tiny ImageNet files under several roots: {sorted(roots)}"
            )
        if wnids_text is None:
            raise DatasetFormatError(f"{str(source)!r} has no wnids.txt: not a Tiny ImageNet tree")
        if ann_text is None:
            raise DatasetFormatError(f"{str(source)!r} has no val/val_annotations.txt")
        _, images = decoder.finish()

    wnids = [line.strip() for line in wnids_text.splitlines() if line.strip()]
    if len(set(wnids)) != len(wnids):
        raise DatasetFormatError(f"wnids.txt in {str(source)!r} lists a wnid twice")
    index = {w: i for i, w in enumerate(wnids)}
    val_wnid: dict[str, str] = {}
    for line in ann_text.splitlines():
        if line.strip():
            fields = line.split("\t")
            val_wnid[fields[0].strip()] = fields[1].strip()

    labels = np.empty(len(entries), dtype=np.int64)
    for i, (split, wnid, fname) in enumerate(entries):
        if split == "test":
            wnid = val_wnid.get(fname)
            if wnid is None:
                raise DatasetFormatError(
                    f"val image {fname!r} has no line in val_annotations.txt ({str(source)!r})"
                )
        if wnid not in index:
            raise DatasetFormatError(f"{split} image {fname!r} has wnid {wnid!r}, which wnids.txt lacks")
        labels[i] = index[wnid]
    n_val = sum(1 for e in entries if e[0] == "test")
    if n_val != len(val_wnid):
        raise DatasetFormatError(
            f"val_annotations.txt lists {len(val_wnid)} images but val/images holds {n_val} ({str(source)!r})"
        )

    out: dict[str, np.ndarray] = {"classes": np.array(wnids)}
    for split in ("train", "test"):
        rows = [i for i, e in enumerate(entries) if e[0] == split]
        if not rows:
            raise DatasetFormatError(f"{str(source)!r} has no {'val' if split == 'test' else split} images")
        rows.sort(key=lambda i: (labels[i], natural_key(entries[i][2])))  # grouped by class
        rows_a = np.asarray(rows, dtype=np.int64)
        out[f"{split}_images"] = np.ascontiguousarray(images[rows_a].transpose(0, 3, 1, 2))  # NHWC -> NCHW
        out[f"{split}_labels"] = labels[rows_a]
    return out


def read_tiny_imagenet(
    data: str | os.PathLike | None = None, cache: bool = True, workers: int | None = None
) -> tuple[ImageDataset, ImageDataset]:
    """Read the Tiny ImageNet training set and the official (labelled) validation set.

    Parameters
    ----------
    data : str or path-like, optional
        Tree or archive; default: found by
        :func:`~selectivity.data.locate.find_tiny_imagenet`.
    cache : bool
        Use and fill the decoded-array cache.
    workers : int, optional
        Decoding processes; default: all available CPUs.

    Returns
    -------
    train, test : ImageDataset
        ``tinyimagenet-trainfull`` and ``tinyimagenet-test`` (the official val set);
        images ``(N, 3, 64, 64)`` uint8; ``classes`` are the wnids in wnids.txt order.
    """
    source = find_tiny_imagenet(data)
    arrays = cached_arrays("tinyimagenet", source, lambda: _decode_tiny(source, workers), cache=cache)
    classes = [str(c) for c in arrays["classes"].tolist()]
    train = ImageDataset(
        torch.from_numpy(arrays["train_images"]),
        torch.from_numpy(arrays["train_labels"]),
        classes,
        "tinyimagenet-trainfull",
    )
    test = ImageDataset(
        torch.from_numpy(arrays["test_images"]),
        torch.from_numpy(arrays["test_labels"]),
        classes,
        "tinyimagenet-test",
    )
    return train, test


def load_tiny_imagenet(
    data: str | os.PathLike | None = None,
    val_size: int | None = None,
    split_seed: int = 0,
    cache: bool = True,
    workers: int | None = None,
    val_per_class: int | None = None,
) -> DataSplits:
    """Load Tiny ImageNet as train / validation / test splits.

    Parameters
    ----------
    data : str or path-like, optional
        The ``tiny-imagenet-200`` directory, an archive of it, or a directory containing
        either; default: ``$SELECTIVITY_DATA``, then the cache directory.
    val_size : int, optional
        Validation images carved out of the training set in total, stratified by class.
    split_seed : int
        Seed of the validation split; recorded in :attr:`DataSplits.split_seed`.
    val_per_class : int, optional
        Validation images per class; when neither this nor ``val_size`` is given, 50
        (:data:`VAL_PER_CLASS`, paper 1's protocol: 10,000 images, the test set's size).
    cache : bool
        Use the decoded-array cache.
    workers : int, optional
        Decoding processes.

    Returns
    -------
    DataSplits
        ``test`` is the official validation set.
    """
    source = find_tiny_imagenet(data)
    train_full, test = read_tiny_imagenet(source, cache=cache, workers=workers)
    if val_size is None and val_per_class is None:
        val_per_class = VAL_PER_CLASS
    return make_splits(
        train_full,
        test,
        val_size,
        split_seed,
        "tinyimagenet",
        source=str(source),
        val_per_class=val_per_class,
    )
