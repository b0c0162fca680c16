"""The corrupted images a robustness evaluation uses: generated and cached, or read from a directory.

Every run of a sweep sees the same corrupted images: generated cells are made on the CPU
from a fixed seed (:func:`corrupted_cell`) and cached under
``SWEEP/analysis/robustness_cells/<key>/<corruption>-<severity>.<sha1>.npy``, where a file
is used only if its bytes hash to its name (otherwise it is made again); cells read from a
CIFAR-10-C or Tiny ImageNet-C directory are checked against the run's test split and put
in its order (:class:`CellSource`), and the directory's files are fingerprinted by
content (:func:`corrupted_fingerprint`). See :mod:`selectivity.evaluate.robustness`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..data import find_corrupted, load_cifar10_c, load_tiny_imagenet_c
from ..perturb import CORRUPTIONS, corrupt, to_uint8
from ..run.files import SweepFiles, file_mode

__all__ = ["CHUNK", "CellSource", "corrupted_cell", "corrupted_fingerprint", "images_sha1"]

#: Images corrupted per generator call (each chunk has its own seed, as in write_cifar_c).
CHUNK = 1000


def _chunk_seed(seed: int, corruption: str, severity: int, start: int) -> int:
    """Independent 63-bit seed per chunk, derived as write_cifar_c derives its batch seeds."""
    key = CORRUPTIONS.index(corruption)
    state = np.random.SeedSequence([int(seed), key, int(severity), int(start)]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def corrupted_cell(
    images: torch.Tensor, corruption: str, severity: int, params: str = "cifar10", seed: int = 0
) -> torch.Tensor:
    """Corrupt a set of clean images deterministically, on the CPU, quantised to uint8.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, 3, H, W)`` uint8 clean images.
    corruption, severity, params
        See :func:`selectivity.perturb.corrupt`.
    seed : int
        Master seed; chunk ``k`` of :data:`CHUNK` images draws from its own generator.

    Returns
    -------
    torch.Tensor
        ``(N, 3, H, W)`` uint8; the same inputs give the same bytes.
    """
    out = torch.empty_like(images)
    for start in range(0, images.shape[0], CHUNK):
        x = images[start : start + CHUNK].to(torch.float32) / 255.0
        g = torch.Generator()
        g.manual_seed(_chunk_seed(seed, corruption, severity, start))
        out[start : start + CHUNK] = to_uint8(corrupt(x, corruption, severity, params=params, generator=g))
    return out


def images_sha1(images: torch.Tensor | np.ndarray) -> str:
    """SHA-1 of an image array's bytes (C order): what a result records per cell."""
    arr = images.contiguous().numpy() if isinstance(images, torch.Tensor) else np.ascontiguousarray(images)
    return hashlib.sha1(arr.tobytes()).hexdigest()


def _file_sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _directory_files(
    fmt: str, directory: Path, corruptions: Sequence[str], severities: Sequence[int]
) -> list[Path]:
    """The files of a corrupted directory that the cells read (those present)."""
    if fmt == "tiny-imagenet-c":
        return sorted(
            f
            for name in corruptions
            for sev in severities
            if (directory / name / str(sev)).is_dir()
            for f in (directory / name / str(sev)).rglob("*")
            if f.is_file()
        )
    names = ["labels", *corruptions]
    return [directory / f"{n}.npy" for n in names if (directory / f"{n}.npy").is_file()]


def corrupted_fingerprint(
    corrupted: str | os.PathLike | None, corruptions: Sequence[str], severities: Sequence[int]
) -> tuple[str | None, dict[str, tuple[int, int, str]]]:
    """The content fingerprint of the files of a corrupted directory that the cells read.

    Parameters
    ----------
    corrupted : path or None
        A CIFAR-10-C or Tiny ImageNet-C directory (None: generated cells, no fingerprint).
    corruptions, severities
        The cells read.

    Returns
    -------
    fingerprint : str or None
        SHA-1 over the relative name, size and SHA-1 of every file read (None without a
        directory). Two directories holding the same bytes have the same fingerprint,
        wherever they are.
    files : dict
        Relative name -> (size, modification time in ns, SHA-1) when hashed.
    """
    if not corrupted:
        return None, {}
    fmt, directory = find_corrupted(corrupted)
    files: dict[str, tuple[int, int, str]] = {}
    h = hashlib.sha1()
    for f in _directory_files(fmt, directory, corruptions, severities):
        rel = str(f.relative_to(directory))
        size, mtime = _stat(f)
        digest = _file_sha1(f)
        files[rel] = (size, mtime, digest)
        h.update(f"{rel}\0{size}\0{digest}\n".encode())
    return h.hexdigest(), files


def _save_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` atomically: a new temporary file (``mkstemp``, never a link) renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".npy.part")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _nearest_rows(
    corrupted: torch.Tensor, labels: torch.Tensor, clean: torch.Tensor, clean_labels: torch.Tensor
) -> np.ndarray | None:
    """The clean image each corrupted image was made from, if that is unambiguous.

    Within each class, every corrupted image ``(N, 3, H, W)`` is matched to its nearest
    clean image (Euclidean); accepted only if the matching is one-to-one and each nearest
    image is at most half as far as the second nearest (a mild corruption keeps an image
    far closer to its source than to any other image).

    Returns
    -------
    numpy.ndarray or None
        ``rows[i]``: the corrupted image of clean image ``i``; None when ambiguous.
    """
    n = len(clean_labels)
    if len(labels) != n:
        return None
    rows = np.full(n, -1, dtype=np.int64)
    for c in torch.unique(clean_labels).tolist():
        a_idx = torch.nonzero(labels == c).flatten()
        b_idx = torch.nonzero(clean_labels == c).flatten()
        if len(a_idx) != len(b_idx):
            return None
        a = corrupted[a_idx].reshape(len(a_idx), -1).to(torch.float64)  # (m, D)
        b = clean[b_idx].reshape(len(b_idx), -1).to(torch.float64)  # (m, D)
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T  # (m, m) squared distances
        d2 = d2.clamp_min(0)
        nearest = d2.argmin(1)
        if len(set(nearest.tolist())) != len(a_idx):
            return None
        if len(b_idx) > 1:
            two = torch.topk(d2, 2, dim=1, largest=False).values  # (m, 2), ascending
            if not bool((two[:, 0] <= 0.25 * two[:, 1]).all()):  # distance <= half the second's
                return None
        rows[b_idx[nearest].numpy()] = a_idx.numpy()
    return rows if (rows >= 0).all() else None


class CellSource:
    """Corrupted versions of the chosen test images, identical for every run of a sweep.

    Parameters
    ----------
    sweep_dir : path
        Where generated cells are cached (``analysis/robustness_cells/``).
    corruptions, severities : sequences
        The cells that will be asked for (a directory is checked for them).
    seed : int
        Master seed of generated cells.
    corrupted : path or None
        A CIFAR-10-C or Tiny ImageNet-C directory to read instead of generating.
    params : str
        Corruption parameter set of generated cells.
    idx : numpy.ndarray
        Test-split indices of the chosen images.
    test_images, test_labels, classes
        The whole test split's images, labels and class names (a corrupted directory is
        checked against them and put in their order).
    files : dict, optional
        The directory's files as hashed by :func:`corrupted_fingerprint` (checked again
        before use when they changed since).
    """

    def __init__(
        self,
        sweep_dir: str | os.PathLike,
        corruptions: Sequence[str],
        severities: Sequence[int],
        seed: int,
        corrupted: str | os.PathLike | None,
        params: str,
        idx: np.ndarray,
        test_images: torch.Tensor,
        test_labels: torch.Tensor,
        classes: list[str],
        files: dict[str, tuple[int, int, str]] | None = None,
    ):
        self.corruptions, self.severities, self.seed = tuple(corruptions), tuple(severities), int(seed)
        self.params, self.idx = params, idx
        self.clean = test_images[torch.as_tensor(idx)]
        self.test_images, self.test_labels, self.classes = test_images, test_labels, list(classes)
        self.files = dict(files or {})
        self.format: str | None = None
        self.directory: Path | None = None
        self.rows: np.ndarray | None = None  # release row of each test image (CIFAR-10-C)
        self.order: str | None = None  # how the rows were matched, in words
        if corrupted:
            self.format, self.directory = find_corrupted(corrupted)
        key = hashlib.sha1(repr((params, self.seed, CHUNK, idx.tobytes().hex())).encode()).hexdigest()[:16]
        self.cache_dir = SweepFiles(sweep_dir).robustness_cells / key
        self.memo: dict[tuple[str, int], torch.Tensor] = {}

    def get(self, corruption: str, severity: int) -> torch.Tensor:
        if (corruption, severity) in self.memo:
            return self.memo[(corruption, severity)]
        cell: torch.Tensor
        if self.format == "tiny-imagenet-c":
            cell = self._tiny_imagenet_c(corruption, severity)[torch.as_tensor(self.idx)]
        elif self.directory is not None:
            imgs, labels = self._cifar_c(corruption, severity)
            rows = self._row_order(corruption, severity, imgs, labels)
            cell = imgs[torch.as_tensor(rows[self.idx])]
        else:
            cell = self._generated(corruption, severity)
        # Keep a few cells in memory: runs are evaluated one after the other.
        if len(self.memo) >= 8:
            self.memo.pop(next(iter(self.memo)))
        self.memo[(corruption, severity)] = cell
        return cell

    # ------------------------------------------------------------------ generated cells
    def _generated(self, corruption: str, severity: int) -> torch.Tensor:
        """A generated cell from the cache if its bytes hash to its name, else made (and cached)."""
        stem = f"{corruption}-{severity}"
        for path in sorted(self.cache_dir.glob(f"{stem}.*.npy")):
            digest = path.name[len(stem) + 1 : -len(".npy")]
            try:
                if path.is_symlink():
                    raise ValueError("a link")
                arr = np.load(path, allow_pickle=False)
                ok = (
                    arr.shape == tuple(self.clean.shape)
                    and arr.dtype == np.uint8
                    and images_sha1(arr) == digest
                )
            except (OSError, ValueError, EOFError):
                ok = False
            if ok:
                return torch.from_numpy(arr)
            path.unlink(missing_ok=True)  # damaged or stale: made again below
        cell = corrupted_cell(self.clean, corruption, severity, self.params, self.seed)
        _save_npy(self.cache_dir / f"{stem}.{images_sha1(cell)}.npy", cell.numpy())
        (self.cache_dir / f"{stem}.npy").unlink(missing_ok=True)  # the older name, unverifiable
        return cell

    # ------------------------------------------------------------------ directories
    def _verified(self, path: Path) -> None:
        """Refuse a directory file that changed since it was hashed (its SHA-1 differs)."""
        assert self.directory is not None
        rel = str(path.relative_to(self.directory))
        if rel not in self.files:
            return
        size, mtime, digest = self.files[rel]
        try:
            now = _stat(path)
        except OSError:
            now = (-1, -1)
        if now == (size, mtime):
            return
        if not path.is_file() or _file_sha1(path) != digest:
            raise ValueError(
                f"{path} changed while the runs were evaluated (its SHA-1 is not the one recorded when the "
                "evaluation started): expected the directory unchanged; run `selectivity robustness` again"
            )
        self.files[rel] = (*now, digest)

    def _cifar_c(self, corruption: str, severity: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One cell of a CIFAR-10-C directory (its rows), checked: size, file hashes, label range."""
        assert self.directory is not None
        for name in ("labels", corruption):
            self._verified(self.directory / f"{name}.npy")
        imgs, labels = load_cifar10_c(corruption, severity, self.directory)
        where = f"{self.directory}/{corruption}.npy"
        self._check_size(imgs, where)
        n_test, n_classes = len(self.test_labels), len(self.classes)
        if imgs.shape[0] != n_test:
            raise ValueError(
                f"{where} holds {imgs.shape[0]} images of shape {tuple(imgs.shape[1:])} per severity: "
                f"expected the whole test split ({n_test} images) of shape {tuple(self.clean.shape[1:])}"
            )
        bad = torch.nonzero((labels < 0) | (labels >= n_classes)).flatten()
        if len(bad):
            row = int(bad[0])
            raise ValueError(
                f"{self.directory}/labels.npy holds label {int(labels[row])} (row {row} of severity {severity}): "
                f"expected labels 0..{n_classes - 1}, the run's {n_classes} classes"
            )
        return imgs, labels

    def _row_order(
        self, corruption: str, severity: int, imgs: torch.Tensor, labels: torch.Tensor
    ) -> np.ndarray:
        """The directory's row of each test image, established once (see the module docstring)."""
        test = self.test_labels.to(torch.int64)
        if self.rows is None:
            if torch.equal(labels, test):
                self.rows, self.order = np.arange(len(test), dtype=np.int64), "the test split's order"
            else:
                self.rows, self.order = self._match_by_content(labels), None
        rows = self.rows
        if not torch.equal(labels[torch.as_tensor(rows)], test):
            raise ValueError(
                f"{self.directory}/labels.npy: the rows of severity {severity} are in another order than "
                "those of severity 1: expected the same order at every severity"
            )
        return rows

    def _match_by_content(self, labels: torch.Tensor) -> np.ndarray:
        """Rows matched to the test images by their severity-1 images (nearest, within a class)."""
        assert self.directory is not None
        test = self.test_labels.to(torch.int64)
        k = int(torch.nonzero(labels != test)[0]) if len(labels) == len(test) else 0
        for name in self.corruptions:
            if not (self.directory / f"{name}.npy").is_file():
                continue
            self._verified(self.directory / f"{name}.npy")
            sev1, lab1 = load_cifar10_c(name, 1, self.directory)
            rows = _nearest_rows(sev1, lab1, self.test_images, test)
            if rows is not None:
                self.order = f"matched to the test images by content ({name}, severity 1)"
                return rows
        raise ValueError(
            f"{self.directory}: its rows are not in the order of the run's test split (labels.npy differs "
            f"from the test labels at row {k}), and its severity-1 images cannot be matched to the test "
            "images unambiguously: expected the release's order to be that of the data the runs were "
            "trained on, i.e. CIFAR-10's test_batch (train on the CIFAR-10 python release, "
            "cifar-10-batches-py), or a directory that `selectivity corrupt` wrote from the runs' data"
        )

    def _check_size(self, imgs: torch.Tensor, where: str) -> None:
        if tuple(imgs.shape[1:]) != tuple(self.clean.shape[1:]):
            raise ValueError(
                f"{where} holds images of shape {tuple(imgs.shape[1:])}: expected "
                f"{tuple(self.clean.shape[1:])}, the shape of the run's test images"
            )

    def _tiny_imagenet_c(self, corruption: str, severity: int) -> torch.Tensor:
        """One cell of a Tiny ImageNet-C directory, ``(N_test, 3, H, W)`` in test-split order."""
        assert self.directory is not None
        where = f"{self.directory}/{corruption}/{severity}"
        cell_dir = self.directory / corruption / str(severity)
        for rel in [r for r in self.files if Path(r).parts[:2] == (corruption, str(severity))]:
            self._verified(self.directory / rel)
        if cell_dir.is_dir() and self.files:
            now = {str(f.relative_to(self.directory)) for f in cell_dir.rglob("*") if f.is_file()}
            if now != {r for r in self.files if Path(r).parts[:2] == (corruption, str(severity))}:
                raise ValueError(
                    f"{where} changed while the runs were evaluated (files added or removed): expected the "
                    "directory unchanged; run `selectivity robustness` again"
                )
        try:
            imgs, labels, _ = load_tiny_imagenet_c(corruption, severity, self.directory, classes=self.classes)
        except ValueError as e:
            if "not in classes" not in str(e):
                raise
            raise ValueError(
                f"{e}: expected class directories named by the run's classes "
                f"({', '.join(self.classes[:3])}{', ...' if len(self.classes) > 3 else ''})"
            ) from None
        self._check_size(imgs, where)
        # The loader reads class directories in name order; the test split is grouped by
        # label (wnids.txt order), each class in file-name order, as the loader reads a class.
        order = torch.argsort(labels, stable=True)
        imgs, labels = imgs[order], labels[order]
        if not torch.equal(labels, self.test_labels.to(labels.dtype)):
            n = len(self.classes)
            have = torch.bincount(labels, minlength=n)
            want = torch.bincount(self.test_labels.to(torch.int64), minlength=n)
            if bool((have == want).all()):  # same counts, but the test split is not grouped by class
                raise ValueError(
                    f"{where} cannot be matched to the run's test split: expected a test split grouped "
                    "by class, as Tiny ImageNet's is"
                )
            k = int(torch.nonzero(have != want)[0])
            raise ValueError(
                f"{where} holds {int(have[k])} images of class {self.classes[k]} and {len(labels)} in all: "
                f"expected the whole test split, {int(want[k])} of that class and {len(self.test_labels)} in all"
            )
        return imgs

    def check(self) -> None:
        """Check a corrupted directory now, so a bad one fails before any run is evaluated.

        Reads the first cell (image size, classes, number of images) and looks for the
        files of every other cell; a missing one is read, to raise the loader's error.
        """
        d = self.directory
        if d is None or not self.corruptions or not self.severities:
            return
        self.get(self.corruptions[0], self.severities[0])
        for name in self.corruptions:
            for sev in self.severities:
                there = (
                    (d / name / str(sev)).is_dir()
                    if self.format == "tiny-imagenet-c"
                    else (d / f"{name}.npy").is_file()
                )
                if not there:
                    self.get(name, sev)
