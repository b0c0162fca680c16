"""CIFAR-10 from the canonical python release or from an image-folder tree.

Accepted forms (see :func:`selectivity.data.locate.find_cifar10` for where they are
looked for):

- the canonical release ``cifar-10-python.tar.gz`` or its extracted
  ``cifar-10-batches-py/`` (pickled ``data_batch_1`` .. ``data_batch_5``, ``test_batch``,
  ``batches.meta``);
- an image-folder tree ``train/<class>/*`` and ``test/<class>/*`` (any image format
  Pillow reads), as a directory or as a ``.tar.gz``/``.tgz``/``.tar``/``.zip`` of one,
  optionally nested one directory deep (``cifar10-jpeg/train/...``).

Both give the same result layout: images ``(N, 3, 32, 32)`` uint8, labels in the
canonical class order (airplane, automobile, bird, cat, deer, dog, frog, horse, ship,
truck; for image folders the sorted class directory names, which is that order), and
samples grouped by class. Within a class the canonical release keeps its batch order and
an image folder its file-name order (natural sort), so a copy written as
``<class>/NNNN.png`` in release order loads identically and a split seed selects the
same images from either.

Decoded arrays are cached (``<cache>/decoded/cifar10-*.npz``), so only the first load
decodes images.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import re
from pathlib import Path

import numpy as np
import torch

from .archive import IMAGE_EXTENSIONS, ImageDecoder, iter_files
from .loader import DataSplits, ImageDataset, make_splits
from .locate import DatasetFormatError, cached_arrays, find_cifar10

__all__ = ["CIFAR10_CLASSES", "load_cifar10", "read_cifar10", "restricted_unpickle", "read_cifar10_batch"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# Member names relative to the data root, which may sit one directory deep in an archive.
_PY_MEMBER = re.compile(r"^(?:([^/]+)/)?(data_batch_[1-5]|test_batch|batches\.meta)$")
_IMG_MEMBER = re.compile(r"^(?:([^/]+)/)?(train|test)/([^/]+)/([^/]+)$")
_PY_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")


def natural_key(name: str) -> list:
    """Sort key that orders ``img2`` before ``img10``."""
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR batches that can build numpy arrays and nothing else.

    The canonical release is a set of pickles; refusing every other global means a
    tampered file cannot run code.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # protocol-2 pickles written by Python 3 store bytes this way
    }

    def find_class(self, module: str, name: str):
        key = (module.replace("numpy._core", "numpy.core"), name)
        if key not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch file")
        if module.startswith("numpy.core"):
            # numpy 2 moved numpy.core to numpy._core (the old path warns); numpy 1 lacks _core.
            try:
                return getattr(importlib.import_module(module.replace("numpy.core", "numpy._core", 1)), name)
            except ImportError:
                pass
        return getattr(importlib.import_module(module), name)


def restricted_unpickle(payload: bytes | str, name: str) -> dict:
    """Unpickle one CIFAR-10 batch file, building numpy arrays and nothing else.

    Parameters
    ----------
    payload : bytes or str
        The file's bytes, or its path.
    name : str
        Name used in error messages (e.g. ``data_batch_1``).

    Returns
    -------
    dict
        The pickled dict with ``str`` keys (Python 2 pickles give ``bytes`` keys).

    Raises
    ------
    DatasetFormatError
        For anything that is not a pickled dict of allowed objects. Damaged or hostile
        bytes can make the pickle machine raise almost any exception (``OverflowError``,
        ``MemoryError``, ``LookupError``, ...); all of them mean the file cannot be read.
    """
    try:
        if isinstance(payload, bytes):
            obj = _NumpyOnlyUnpickler(io.BytesIO(payload), encoding="bytes").load()
        else:
            with open(payload, "rb") as f:
                obj = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except OSError as exc:
        raise DatasetFormatError(f"CIFAR-10 batch file {name!r} cannot be read: {exc}") from None
    except Exception as exc:  # see Raises: every failure of the pickle machine means a bad file
        msg = " ".join(str(exc).split())[:200]
        raise DatasetFormatError(
            f"CIFAR-10 batch file {name!r} is damaged or not a CIFAR-10 pickle ({type(exc).__name__}: {msg})"
        ) from None
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"CIFAR-10 batch file {name!r} does not hold a dict")
    out = {}
    for k, v in obj.items():
        if isinstance(k, bytes):
            k = k.decode("latin1")  # latin1 maps every byte: never fails
        out[k] = v
    return out


def read_cifar10_batch(payload: bytes | str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 batch: images ``(n, 3, 32, 32)`` uint8 and labels ``(n,)`` int64.

    Raises
    ------
    DatasetFormatError
        Unreadable file, or ``data``/``labels`` missing or of the wrong shape or type.
    """
    batch = restricted_unpickle(payload, name)
    for key in ("data", "labels"):
        if key not in batch:
            raise DatasetFormatError(
                f"CIFAR-10 batch {name!r} has no {key!r} entry (keys: {sorted(map(str, batch))[:6]})"
            )
    data = batch["data"]
    try:
        lab = np.asarray(batch["labels"])
    except Exception as exc:  # ragged or exotic objects: numpy raises several types
        raise DatasetFormatError(
            f"CIFAR-10 batch {name!r}: labels are not a list of integers ({exc})"
        ) from None
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
        or lab.ndim != 1
        or len(lab) != len(data)
        or not (lab.dtype.kind in "iu" or (lab.dtype == object and all(type(v) is int for v in lab.tolist())))
    ):
        shape = (data.shape, data.dtype) if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetFormatError(
            f"CIFAR-10 batch {name!r}: expected data (n, 3072) uint8 and n integer labels, "
            f"got {shape} and labels {lab.shape} {lab.dtype}"
        )
    try:
        labels = lab.astype(np.int64)
    except OverflowError:
        raise DatasetFormatError(f"CIFAR-10 batch {name!r}: labels out of range") from None
    return data.reshape(-1, 3, 32, 32), labels  # rows are R, G, B planes of 32x32, row-major


def _group_by_class(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(labels, kind="stable")  # stable: keeps release order within a class
    return images[order], labels[order]


def _decode_python_release(files: dict[str, bytes | str], source: Path) -> dict[str, np.ndarray]:
    missing = [b for b in _PY_BATCHES if b not in files]
    if missing:
        raise DatasetFormatError(f"CIFAR-10 release at {str(source)!r} lacks {', '.join(missing)}")
    out: dict[str, np.ndarray] = {}
    for split, batch_names in (("train", _PY_BATCHES[:5]), ("test", _PY_BATCHES[5:])):
        images, labels = [], []
        for bname in batch_names:
            data, lab = read_cifar10_batch(files[bname], bname)
            images.append(data)
            labels.append(lab)
        imgs, labs = _group_by_class(np.concatenate(images), np.concatenate(labels))
        out[f"{split}_images"], out[f"{split}_labels"] = np.ascontiguousarray(imgs), labs
    classes = list(CIFAR10_CLASSES)
    if "batches.meta" in files:
        meta = restricted_unpickle(files["batches.meta"], "batches.meta")
        names = meta.get("label_names")
        if names is not None:
            try:
                classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
            except (TypeError, UnicodeDecodeError) as exc:
                raise DatasetFormatError(
                    f"batches.meta in {str(source)!r}: bad label_names ({exc})"
                ) from None
    for split in ("train", "test"):
        labs = out[f"{split}_labels"]
        if labs.size and (labs.min() < 0 or labs.max() >= len(classes)):
            raise DatasetFormatError(f"CIFAR-10 {split} labels in {str(source)!r} leave [0, {len(classes)})")
    out["classes"] = np.array(classes)
    return out


def _image_folder_arrays(
    entries: list[tuple[str, str, str]], images: np.ndarray, source: Path
) -> dict[str, np.ndarray]:
    """Order decoded images by (split, class, file name) and label them by sorted class name."""
    train_classes = sorted({cls for split, cls, _ in entries if split == "train"})
    test_classes = sorted({cls for split, cls, _ in entries if split == "test"})
    if not train_classes or not test_classes:
        raise DatasetFormatError(
            f"image folder {str(source)!r} needs both train/<class>/ and test/<class>/ images"
        )
    if train_classes != test_classes:
        raise DatasetFormatError(
            f"image folder {str(source)!r}: train classes {train_classes} differ from test classes {test_classes}"
        )
    index = {cls: i for i, cls in enumerate(train_classes)}
    out: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        rows = [i for i, e in enumerate(entries) if e[0] == split]
        rows.sort(key=lambda i: (index[entries[i][1]], natural_key(entries[i][2])))
        rows_a = np.asarray(rows, dtype=np.int64)
        # (n, H, W, C) -> (n, C, H, W)
        out[f"{split}_images"] = np.ascontiguousarray(images[rows_a].transpose(0, 3, 1, 2))
        out[f"{split}_labels"] = np.asarray([index[entries[i][1]] for i in rows], dtype=np.int64)
    out["classes"] = np.array(train_classes)
    return out


def _decode_cifar10(source: Path, workers: int | None) -> dict[str, np.ndarray]:
    """Read every CIFAR-10 file under ``source`` in one pass and decode it."""

    def select(name: str) -> bool:
        return bool(_PY_MEMBER.match(name)) or (bool(_IMG_MEMBER.match(name)) and _is_image_name(name))

    py_files: dict[str, bytes | str] = {}
    entries: list[tuple[str, str, str]] = []  # (split, class, file name), in decoder order
    roots: set[str] = set()
    with ImageDecoder(workers=workers) as decoder:
        for name, payload in iter_files(source, select):
            m = _PY_MEMBER.match(name)
            if m:
                roots.add(m.group(1) or "")
                py_files[m.group(2)] = payload
                continue
            m = _IMG_MEMBER.match(name)
            assert m is not None  # `select` admits only python-release and image members
            roots.add(m.group(1) or "")
            entries.append((m.group(2), m.group(3), m.group(4)))
            decoder.add(name, payload)
        if len(roots) > 1:
            raise DatasetFormatError(
                f"{str(source)!r} holds CIFAR-10 files under several roots: {sorted(roots)}"
            )
        if py_files:  # the canonical release wins if both are present
            decoder.close()
            return _decode_python_release(py_files, source)
        if not entries:
            raise DatasetFormatError(
                f"{str(source)!r} holds neither the CIFAR-10 python batches nor an image folder "
                "(train/<class>/*, test/<class>/*)"
            )
        _, images = decoder.finish()
    return _image_folder_arrays(entries, images, source)


def read_cifar10(
    data: str | os.PathLike, cache: bool = True, workers: int | None = None
) -> tuple[ImageDataset, ImageDataset]:
    """Read the full CIFAR-10 training and test sets from one source.

    Parameters
    ----------
    data : str or path-like
        Any form accepted by :func:`~selectivity.data.locate.find_cifar10` (nothing is
        downloaded here).
    cache : bool
        Use and fill the decoded-array cache (see
        :func:`~selectivity.data.locate.cached_arrays`).
    workers : int, optional
        Decoding processes for image folders; default: all available CPUs.

    Returns
    -------
    train, test : ImageDataset
        ``cifar10-trainfull`` (50,000 images for the real data) and ``cifar10-test``
        (10,000); images ``(N, 3, 32, 32)`` uint8, grouped by class.

    Raises
    ------
    DatasetNotFoundError, DatasetFormatError, CorruptArchiveError, UnsafeArchiveError
    """
    source = find_cifar10(data, download=False)
    arrays = cached_arrays("cifar10", source, lambda: _decode_cifar10(source, workers), cache=cache)
    classes = [str(c) for c in arrays["classes"].tolist()]
    train = ImageDataset(
        torch.from_numpy(arrays["train_images"]),
        torch.from_numpy(arrays["train_labels"]),
        classes,
        "cifar10-trainfull",
    )
    test = ImageDataset(
        torch.from_numpy(arrays["test_images"]),
        torch.from_numpy(arrays["test_labels"]),
        classes,
        "cifar10-test",
    )
    return train, test


def load_cifar10(
    data: str | os.PathLike | None = None,
    val_size: int | None = 5000,
    split_seed: int = 0,
    download: bool = True,
    cache: bool = True,
    workers: int | None = None,
    val_per_class: int | None = None,
) -> DataSplits:
    """Load CIFAR-10 as train / validation / test splits (45k / 5k / 10k by default).

    Parameters
    ----------
    data : str or path-like, optional
        Where the data are; default: ``$SELECTIVITY_DATA``, then the cache directory,
        then a download (see :func:`~selectivity.data.locate.find_cifar10`).
    val_size : int
        Validation images carved out of the 50k training set, stratified by class
        (500 per class for 5000).
    split_seed : int
        Seed of the validation split; recorded in :attr:`DataSplits.split_seed`.
    val_per_class : int, optional
        Validation images per class instead of ``val_size`` in total.
    download : bool
        Allow downloading the canonical release if no copy is found.
    cache : bool
        Use the decoded-array cache.
    workers : int, optional
        Decoding processes (image folders only).

    Returns
    -------
    DataSplits
        ``mean``/``std`` are per-channel statistics of the training split (0-1 scale).
    """
    source = find_cifar10(data, download=download)
    train_full, test = read_cifar10(source, cache=cache, workers=workers)
    return make_splits(
        train_full, test, val_size, split_seed, "cifar10", source=str(source), val_per_class=val_per_class
    )
