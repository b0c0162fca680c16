"""Corrupted test sets: CIFAR-10-C and Tiny ImageNet-C, read as released or generated here.

CIFAR-10-C format (Hendrycks & Dietterich's release, and what :func:`write_cifar_c` writes)::

    <corruption>.npy   (5 * N, H, W, 3) uint8: the N test images at severity 1, then 2, ... 5
    labels.npy         (5 * N,) uint8 (the N labels repeated per severity); N labels accepted too
    corruptions.json   (only in generated directories) parameters, seed, batch size

Tiny ImageNet-C format: ``<corruption>/<severity>/<wnid>/*.JPEG``.

Directories are found like CIFAR-10 (explicit path, ``$SELECTIVITY_DATA``, the cache);
see :func:`selectivity.data.locate.find_cifar10_c`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..perturb import CORRUPTIONS, corrupt, corruption_params, to_uint8
from .cifar10 import natural_key
from .locate import DatasetFormatError, cached_arrays, find_cifar10_c, find_tiny_imagenet_c

__all__ = [
    "CIFAR_C_METADATA",
    "cifar10_c_corruptions",
    "contact_sheet_images",
    "iter_cifar10_c",
    "load_cifar10_c",
    "load_tiny_imagenet_c",
    "write_cifar_c",
]

CIFAR_C_METADATA = "corruptions.json"
_LABELS = "labels.npy"
_SEVERITIES = (1, 2, 3, 4, 5)


def _check_severity(severity: int) -> None:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")


def cifar10_c_corruptions(data: str | os.PathLike | None = None) -> tuple[str, ...]:
    """Corruptions present in a CIFAR-10-C directory.

    Parameters
    ----------
    data : str or path-like, optional
        The directory (or one containing ``CIFAR-10-C/``); default: found by
        :func:`~selectivity.data.locate.find_cifar10_c`.

    Returns
    -------
    tuple of str
        The 15 standard corruptions present, in the standard order, then any others (the
        release also has speckle_noise, gaussian_blur, spatter, saturate), sorted.
    """
    directory = find_cifar10_c(data)
    present = {p.stem for p in directory.glob("*.npy") if p.name != _LABELS}
    standard = [n for n in CORRUPTIONS if n in present]
    return tuple(standard + sorted(present - set(standard)))


def _open_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetFormatError(f"cannot read {str(path)!r} as a .npy array: {exc}") from exc


def _cell_arrays(directory: Path, corruption: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Memory-mapped ``<corruption>.npy`` and ``labels.npy`` after checking them; and N."""
    path = directory / f"{corruption}.npy"
    if not path.is_file():
        available = cifar10_c_corruptions(directory)
        raise DatasetFormatError(
            f"no {corruption}.npy in {str(directory)!r}: expected one of {', '.join(available) or 'none'}"
        )
    labels_path = directory / _LABELS
    if not labels_path.is_file():
        raise DatasetFormatError(
            f"{str(directory)!r} has no {_LABELS}: expected the labels beside the images"
        )
    arr = _open_npy(path)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3 or arr.shape[0] % 5 or arr.shape[0] == 0:
        raise DatasetFormatError(
            f"{str(path)!r} has shape {arr.shape} and dtype {arr.dtype}: expected (5 * N, H, W, 3) uint8"
            " (N images at severities 1..5, severity 1 first)"
        )
    n = arr.shape[0] // 5
    labels = _open_npy(labels_path)
    if labels.ndim != 1 or labels.shape[0] not in (n, 5 * n) or labels.dtype.kind not in "iu":
        raise DatasetFormatError(
            f"{str(labels_path)!r} has shape {labels.shape} and dtype {labels.dtype}: expected ({5 * n},) or ({n},)"
            f" integers to match {path.name}"
        )
    return arr, labels, n


def load_cifar10_c(
    corruption: str, severity: int, data: str | os.PathLike | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one (corruption, severity) cell of a CIFAR-10-C directory.

    Parameters
    ----------
    corruption : str
        A corruption whose ``<corruption>.npy`` is in the directory (see
        :func:`cifar10_c_corruptions`).
    severity : int
        1..5.
    data : str or path-like, optional
        The directory; default: found by :func:`~selectivity.data.locate.find_cifar10_c`.

    Returns
    -------
    images : torch.Tensor
        ``(N, 3, H, W)`` uint8 (N = 10,000 for the release).
    labels : torch.Tensor
        ``(N,)`` int64.

    Raises
    ------
    DatasetNotFoundError
        No directory found.
    DatasetFormatError
        Missing file for the corruption, missing ``labels.npy``, wrong shapes or dtype.
    ValueError
        Severity outside 1..5.
    """
    _check_severity(severity)
    arr, labels, n = _cell_arrays(find_cifar10_c(data), corruption)
    block = np.asarray(arr[(severity - 1) * n : severity * n])  # (N, H, W, 3), read from the mmap
    lab = labels[(severity - 1) * n : severity * n] if labels.shape[0] == 5 * n else labels
    images = torch.from_numpy(np.ascontiguousarray(block.transpose(0, 3, 1, 2)))
    return images, torch.from_numpy(np.asarray(lab, dtype=np.int64))


def iter_cifar10_c(
    data: str | os.PathLike | None = None,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = _SEVERITIES,
) -> Iterator[tuple[str, int, torch.Tensor, torch.Tensor]]:
    """Yield ``(corruption, severity, images, labels)`` for every cell, corruption-major.

    Parameters
    ----------
    data : str or path-like, optional
        The directory; default: found by :func:`~selectivity.data.locate.find_cifar10_c`.
    corruptions : sequence of str, optional
        Default: the 15 standard corruptions; each must be present.
    severities : sequence of int
        Default 1..5.

    Yields
    ------
    tuple
        As :func:`load_cifar10_c` returns, prefixed by the cell.
    """
    directory = find_cifar10_c(data)
    for name in CORRUPTIONS if corruptions is None else corruptions:
        for severity in severities:
            images, labels = load_cifar10_c(name, severity, directory)
            yield name, severity, images, labels


def load_tiny_imagenet_c(
    corruption: str,
    severity: int,
    data: str | os.PathLike | None = None,
    classes: Sequence[str] | None = None,
    cache: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Read one (corruption, severity) cell of Tiny ImageNet-C.

    Parameters
    ----------
    corruption : str
        Directory name under the root, e.g. ``"gaussian_noise"``.
    severity : int
        1..5.
    data : str or path-like, optional
        The root; default: found by :func:`~selectivity.data.locate.find_tiny_imagenet_c`.
    classes : sequence of str, optional
        The wnids in label order (pass Tiny ImageNet's ``classes`` so labels agree with the
        trained networks); default: the sorted wnid directories.
    cache : bool
        Use and fill the decoded-array cache.

    Returns
    -------
    images : torch.Tensor
        ``(N, 3, H, W)`` uint8 (64x64 for the release); greyscale files become RGB.
    labels : torch.Tensor
        ``(N,)`` int64 indices into ``classes``.
    classes : list of str

    Raises
    ------
    DatasetFormatError
        Missing ``<corruption>/<severity>/``, a wnid not in ``classes``, no images, or
        images of different sizes.
    """
    _check_severity(severity)
    root = find_tiny_imagenet_c(data)
    cell = root / corruption / str(severity)
    if not cell.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DatasetFormatError(
            f"no {corruption}/{severity}/ under {str(root)!r}: expected <corruption>/<severity>/<wnid>/*.JPEG"
            f" with a corruption among {', '.join(present) or 'none'}"
        )
    wnids = sorted(p.name for p in cell.iterdir() if p.is_dir())
    names = list(classes) if classes is not None else wnids
    index = {w: i for i, w in enumerate(names)}
    unknown = [w for w in wnids if w not in index]
    if unknown:
        raise DatasetFormatError(
            f"{str(cell)!r} has class directories not in classes: {', '.join(unknown[:5])}"
        )

    def build() -> dict[str, np.ndarray]:
        # Cached per directory, so it holds each image's folder, not a label: the labels
        # depend on `classes`, which the cache key does not see.
        images, folders = [], []
        for k, wnid in enumerate(wnids):
            files = sorted(
                (p for p in (cell / wnid).iterdir() if p.is_file()), key=lambda p: natural_key(p.name)
            )
            for f in files:
                with Image.open(f) as im:
                    images.append(np.asarray(im.convert("RGB")))
                folders.append(k)
        if not images:
            raise DatasetFormatError(f"no images under {str(cell)!r}: expected <wnid>/*.JPEG")
        if len({im.shape for im in images}) != 1:
            raise DatasetFormatError(f"images under {str(cell)!r} differ in size: expected one size (64x64)")
        return {
            "images": np.stack(images),
            "folders": np.asarray(folders, dtype=np.int64),
            "wnids": np.array(wnids),
        }

    arrays = cached_arrays(f"tinyimagenet-c-{corruption}-{severity}-folders", cell, build, cache=cache)
    folder_label = np.asarray([index[str(w)] for w in arrays["wnids"].tolist()], dtype=np.int64)
    images_t = torch.from_numpy(np.ascontiguousarray(arrays["images"].transpose(0, 3, 1, 2)))
    return images_t, torch.from_numpy(folder_label[arrays["folders"]]), names


def _cell_seed(seed: int, corruption: str, severity: int, start: int) -> int:
    """Independent 63-bit seed per (seed, corruption, severity, first image of the batch)."""
    key = CORRUPTIONS.index(corruption)  # by standard position: a subset writes the same arrays
    state = np.random.SeedSequence([int(seed), key, int(severity), int(start)]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def _atomic_save(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".npy.part")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_cifar_c(
    out_dir: str | os.PathLike,
    images: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | Sequence[int],
    corruptions: Sequence[str] = CORRUPTIONS,
    params: str | Mapping[str, Sequence[Any]] = "cifar10",
    seed: int = 0,
    batch_size: int = 1000,
    progress: Callable[[str, int], None] | None = None,
    device: str | torch.device = "cpu",
) -> Path:
    """Generate corrupted copies of a test set and write them in the CIFAR-10-C format.

    For each corruption writes ``<corruption>.npy`` ``(5 * N, H, W, 3)`` uint8 (severity 1
    first), then ``labels.npy`` ``(5 * N,)`` uint8 and ``corruptions.json`` (parameters,
    seed, batch size, library versions). Files are written atomically, so an interrupted
    run leaves only complete files. Corrupted floats are quantised with
    :func:`selectivity.perturb.to_uint8` (truncation, as the reference).

    Parameters
    ----------
    out_dir : str or path-like
        Created if missing; existing files of the same names are replaced.
    images : torch.Tensor or numpy.ndarray
        ``(N, 3, H, W)`` uint8 clean images.
    labels : array-like
        ``(N,)`` integer labels in 0..255.
    corruptions : sequence of str
        Subset of :data:`~selectivity.perturb.CORRUPTIONS` (default all 15).
    params : str or mapping
        ``"cifar10"``, ``"tinyimagenet"`` or a custom table (see
        :func:`selectivity.perturb.corrupt`).
    seed : int
        Master seed; each (corruption, severity, batch) draws from its own generator
        seeded from it, so a subset of corruptions gives the same arrays as the full set.
        Results depend on ``batch_size`` (recorded) and on the device.
    batch_size : int
        Images corrupted per call.
    progress : callable, optional
        Called as ``progress(corruption, severity)`` after each cell.
    device : str or torch.device
        Where to compute.

    Returns
    -------
    pathlib.Path
        ``out_dir``.

    Raises
    ------
    ValueError
        Images not ``(N, 3, H, W)`` uint8, labels not ``(N,)`` integers in 0..255, an
        unknown corruption or parameter set, ``batch_size < 1``.
    """
    imgs = torch.as_tensor(images)
    if imgs.dtype != torch.uint8 or imgs.ndim != 4 or imgs.shape[1] != 3 or imgs.shape[0] == 0:
        raise ValueError(
            f"images must be (N, 3, H, W) uint8 with N > 0, got shape {tuple(imgs.shape)} and dtype {imgs.dtype}"
        )
    lab = np.asarray(torch.as_tensor(labels).cpu().numpy())
    if lab.shape != (imgs.shape[0],) or lab.dtype.kind not in "iu" or lab.min() < 0 or lab.max() > 255:
        raise ValueError(
            f"labels must be ({imgs.shape[0]},) integers in 0..255, got shape {lab.shape}, dtype {lab.dtype}"
        )
    names = list(corruptions)
    for name in names:
        corruption_params(name, params)  # validates the name and the table entry
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n, _, h, w = imgs.shape
    dev = torch.device(device)
    for name in names:
        cells = np.empty((5 * n, h, w, 3), dtype=np.uint8)
        for severity in _SEVERITIES:
            for start in range(0, n, batch_size):
                batch = imgs[start : start + batch_size].to(dev, torch.float32) / 255.0
                gen = torch.Generator(device=dev)
                gen.manual_seed(_cell_seed(seed, name, severity, start))
                result = to_uint8(corrupt(batch, name, severity, params=params, generator=gen))
                rows = slice((severity - 1) * n + start, (severity - 1) * n + start + batch.shape[0])
                cells[rows] = result.permute(0, 2, 3, 1).cpu().numpy()
            if progress is not None:
                progress(name, severity)
        _atomic_save(out / f"{name}.npy", cells)
    _atomic_save(out / _LABELS, np.tile(lab.astype(np.uint8), 5))
    meta = {
        "format": "CIFAR-10-C: <corruption>.npy (5*N, H, W, 3) uint8, severity 1 first; labels.npy (5*N,)",
        "generator": "selectivity.perturb.corruptions",
        "params": params if isinstance(params, str) else {k: list(v) for k, v in params.items()},
        "parameters": {
            name: [list(p) if isinstance(p, tuple) else p for p in corruption_params(name, params)]
            for name in names
        },
        "corruptions": names,
        "severities": list(_SEVERITIES),
        "seed": int(seed),
        "seed_derivation": "numpy SeedSequence([seed, index in CORRUPTIONS, severity, first image of batch])",
        "batch_size": int(batch_size),
        "device": str(dev),
        "n_images": int(n),
        "image_size": [int(h), int(w)],
        "quantisation": "floor(255 * x + 1e-3), as the reference's np.uint8(255 * x)",
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".corruptions-", suffix=".json.part")
    with os.fdopen(fd, "w") as f:
        json.dump(meta, f, indent=2)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out / CIFAR_C_METADATA)
    return out


def contact_sheet_images(
    data: str | os.PathLike | None = None, index: int = 0, corruptions: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """One test image at every (corruption, severity) of a CIFAR-10-C directory.

    Parameters
    ----------
    data : str or path-like, optional
        The directory; default: found by :func:`~selectivity.data.locate.find_cifar10_c`.
    index : int
        Which test image.
    corruptions : sequence of str, optional
        Default: those present, standard ones first.

    Returns
    -------
    images : numpy.ndarray
        ``(C, 5, H, W, 3)`` uint8, for :func:`selectivity.plots.perturb.draw_corruption_grid`.
    names : list of str
        The C corruptions.
    """
    directory = find_cifar10_c(data)
    names = list(cifar10_c_corruptions(directory) if corruptions is None else corruptions)
    rows = []
    for name in names:
        arr, _, n = _cell_arrays(directory, name)
        if not 0 <= index < n:
            raise ValueError(f"index must be in 0..{n - 1}, got {index}")
        rows.append(np.stack([np.asarray(arr[s * n + index]) for s in range(5)]))
    return np.stack(rows), names
