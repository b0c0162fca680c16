"""Safe reading and extraction of data archives, and parallel image decoding.

Archives (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``, ``.zip``) are read
member by member straight into memory by :func:`iter_files`, so the 60k small files of an
image-folder data set never have to be written to disk; :func:`safe_extract` is there for
users who want a tree on disk. Both refuse archives with members that would land outside
the target directory (absolute paths, ``..``, links pointing outside, device files), and
both turn a corrupt or truncated archive into a :class:`CorruptArchiveError` naming the
file instead of a raw ``tarfile``/``zlib`` traceback.

Nothing here imports torch: decoding workers only need numpy and Pillow.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import posixpath
import re
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .locate import DatasetFormatError

__all__ = [
    "ArchiveError",
    "CorruptArchiveError",
    "IMAGE_EXTENSIONS",
    "ImageDecoder",
    "UnsafeArchiveError",
    "decode_image",
    "iter_files",
    "safe_extract",
]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)

_DRIVE = re.compile(r"^[A-Za-z]:")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# Errors tarfile/zipfile/gzip raise on damaged input; all become CorruptArchiveError.
_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError)


class ArchiveError(ValueError):
    """Base class of archive problems."""


class UnsafeArchiveError(ArchiveError):
    """An archive member would be written outside the target directory."""


class CorruptArchiveError(ArchiveError):
    """An archive cannot be read (corrupt, truncated, or not an archive)."""


def _is_zip(path: Path) -> bool:
    if path.name.lower().endswith(".zip"):
        return True
    if path.name.lower().endswith(_TAR_SUFFIXES):
        return False
    return zipfile.is_zipfile(path)


def _escapes(name: str) -> bool:
    """True if the archive-relative path ``name`` is absolute or climbs out with ``..``."""
    # A drive letter ("C:...") is absolute on Windows.
    if not name or name.startswith(("/", "\\")) or _DRIVE.match(name):
        return True
    norm = posixpath.normpath(name.replace("\\", "/"))
    return norm == ".." or norm.startswith("../") or posixpath.isabs(norm)


def _check_tar_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse a tar member that could write outside the extraction directory."""
    where = f"unsafe member {member.name!r} in archive {str(archive)!r}"
    if _escapes(member.name):
        raise UnsafeArchiveError(f"{where}: its path is absolute or leaves the target directory")
    if member.issym():
        # A symlink's target is relative to the directory holding the link.
        target = posixpath.join(posixpath.dirname(member.name), member.linkname)
        if posixpath.isabs(member.linkname) or _escapes(target):
            raise UnsafeArchiveError(
                f"{where}: symlink to {member.linkname!r} points outside the target directory"
            )
    elif member.islnk():
        # A hard link's target is relative to the archive root.
        if _escapes(member.linkname):
            raise UnsafeArchiveError(
                f"{where}: hard link to {member.linkname!r} points outside the target directory"
            )
    elif not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"{where}: device files and FIFOs are not allowed")


def _check_zip_member(info: zipfile.ZipInfo, archive: Path) -> None:
    if _escapes(info.filename):
        raise UnsafeArchiveError(
            f"unsafe member {info.filename!r} in archive {str(archive)!r}: "
            "its path is absolute or leaves the target directory"
        )


def _corrupt(archive: Path, exc: BaseException) -> CorruptArchiveError:
    return CorruptArchiveError(
        f"cannot read archive {str(archive)!r}: it is corrupt, truncated or not a tar/zip archive "
        f"({type(exc).__name__}: {exc}). Delete it and download or copy it again."
    )


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a tar or zip archive into ``dest``, refusing unsafe members.

    Every member is checked before anything is written (absolute paths, ``..``
    components, symlinks or hard links resolving outside ``dest``, device files); tar
    extraction additionally uses ``filter="data"`` where the running Python has it.

    Parameters
    ----------
    archive : str or path-like
        ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz`` or ``.zip`` file.
    dest : str or path-like
        Target directory (created if needed).

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    UnsafeArchiveError
        (a ``ValueError``) if any member would escape ``dest``; nothing is extracted.
    CorruptArchiveError
        (a ``ValueError``) if the archive cannot be read; the message names the file.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"archive {str(archive)!r} does not exist")
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        if _is_zip(archive):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                for info in infos:
                    _check_zip_member(info, archive)
                    _check_inside(root, info.filename, archive)
                zf.extractall(dest)
            return dest
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()  # reads the whole index: a truncated file fails here
            for member in members:
                _check_tar_member(member, archive)
                _check_inside(root, member.name, archive)
            if hasattr(tarfile, "data_filter"):  # Python >= 3.12, 3.11.4, 3.10.12, ...
                try:
                    tf.extractall(dest, members=members, filter="data")
                except tarfile.FilterError as exc:
                    raise UnsafeArchiveError(f"unsafe member in archive {str(archive)!r}: {exc}") from exc
            else:
                tf.extractall(dest, members=members)
    except ArchiveError:
        raise
    except _READ_ERRORS as exc:
        raise _corrupt(archive, exc) from exc
    return dest


def _check_inside(root: Path, name: str, archive: Path) -> None:
    # Filesystem check on top of the lexical one: catches symlinks already present in dest.
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        raise UnsafeArchiveError(
            f"unsafe member {name!r} in archive {str(archive)!r}: it resolves to {str(target)!r}, "
            f"outside {str(root)!r}"
        )


def iter_files(source: str | os.PathLike, select: Callable[[str], bool]) -> Iterator[tuple[str, bytes | str]]:
    """Yield the selected regular files of a directory or archive.

    Parameters
    ----------
    source : str or path-like
        A directory, or a tar/zip archive. Archives are read sequentially in one pass
        (fast for ``.tar.gz``) and validated like :func:`safe_extract` would.
    select : callable
        Called with each file's ``/``-separated path relative to ``source`` (for archives:
        the member name); only files for which it returns True are read.

    Yields
    ------
    name : str
        The relative path.
    payload : bytes or str
        The file's content for archive members, its absolute path for directories (the
        reader, possibly a worker process, opens it).

    Raises
    ------
    UnsafeArchiveError, CorruptArchiveError
        As for :func:`safe_extract`.
    """
    source = Path(source)
    if source.is_dir():
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames.sort()
            rel_dir = Path(dirpath).relative_to(source).as_posix()
            for fname in sorted(filenames):
                name = fname if rel_dir == "." else f"{rel_dir}/{fname}"
                if select(name):
                    yield name, os.path.join(dirpath, fname)
        return
    if not source.is_file():
        raise FileNotFoundError(f"{str(source)!r} does not exist")
    if _is_zip(source):
        yield from _iter_zip(source, select)
    else:
        yield from _iter_tar(source, select)


def _iter_tar(archive: Path, select: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    try:
        # Stream mode: strictly sequential, no seeks back into the compressed stream.
        with tarfile.open(archive, "r|*") as tf:
            for member in tf:
                _check_tar_member(member, archive)
                if member.isfile() and select(member.name):
                    f = tf.extractfile(member)
                    if f is None:  # isfile() members always have a file object
                        raise EOFError(f"member {member.name!r} cannot be read")
                    data = f.read()
                    if len(data) != member.size:
                        raise EOFError(f"member {member.name!r} is truncated")
                    yield member.name, data
    except ArchiveError:
        raise
    except _READ_ERRORS as exc:
        raise _corrupt(archive, exc) from exc


def _iter_zip(archive: Path, select: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:  # check all first: refuse before yielding anything
                _check_zip_member(info, archive)
            for info in infos:
                if not info.is_dir() and select(info.filename):
                    yield info.filename, zf.read(info)
    except ArchiveError:
        raise
    except _READ_ERRORS as exc:
        raise _corrupt(archive, exc) from exc


# ----------------------------------------------------------------------------------------
# Image decoding


def decode_image(payload: bytes | str, name: str = "", size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one image file to an RGB uint8 array.

    Parameters
    ----------
    payload : bytes or str
        Encoded file content, or a path to read.
    name : str
        Used in error messages.
    size : (int, int), optional
        Required ``(height, width)``.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8; grey, palette and RGBA images are converted to RGB.

    Raises
    ------
    DatasetFormatError
        If the file cannot be decoded or has the wrong size.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(payload) if isinstance(payload, bytes) else payload) as im:
            if im.mode != "RGB":
                im = im.convert("RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise DatasetFormatError(f"cannot decode image {name or payload!r}: {exc}") from None
    if size is not None and arr.shape[:2] != tuple(size):
        raise DatasetFormatError(
            f"image {name!r} is {arr.shape[0]}x{arr.shape[1]}, expected {size[0]}x{size[1]}"
        )
    return arr


def _decode_chunk(items: list[tuple[str, bytes | str]], size: tuple[int, int] | None) -> np.ndarray:
    """Worker: decode a list of (name, payload) into one (n, H, W, 3) array."""
    first = decode_image(items[0][1], items[0][0], size)
    size = first.shape[:2]  # all images of one data set must share the first one's size
    out = np.empty((len(items), *first.shape), dtype=np.uint8)
    out[0] = first
    for i, (name, payload) in enumerate(items[1:], start=1):
        out[i] = decode_image(payload, name, size)
    return out


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _mp_context():
    # fork starts workers in milliseconds without re-importing torch; the workers only run
    # Pillow/numpy, so the usual fork-after-threads caveats (OpenMP) do not apply. Elsewhere
    # (macOS, Windows) fork is unsafe or absent and spawn is used.
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


class ImageDecoder:
    """Decode many images, in worker processes when there are enough of them.

    Feed ``(name, payload)`` pairs with :meth:`add` while reading an archive (decoding
    overlaps with reading), then call :meth:`finish`. Use as a context manager so worker
    processes are always shut down.

    Parameters
    ----------
    size : (int, int), optional
        Required ``(height, width)``; default: that of the first image.
    workers : int, optional
        Worker processes; default: the CPUs available. ``1`` decodes in-process.
    chunk_size : int
        Images per task; fewer images than this in total are decoded in-process.
    """

    def __init__(
        self, size: tuple[int, int] | None = None, workers: int | None = None, chunk_size: int = 1024
    ):
        self.size: tuple[int, int] | None = None if size is None else (int(size[0]), int(size[1]))
        self.workers = _default_workers() if workers is None else max(1, int(workers))
        self.chunk_size = max(1, int(chunk_size))
        self._names: list[str] = []
        self._pending: list[tuple[str, bytes | str]] = []
        self._parts: list[Future | np.ndarray] = []
        self._pool: ProcessPoolExecutor | None = None

    def add(self, name: str, payload: bytes | str) -> None:
        """Queue one image (``payload``: encoded bytes or a file path)."""
        self._names.append(name)
        self._pending.append((name, payload))
        if len(self._pending) >= self.chunk_size:
            self._submit()

    def _submit(self) -> None:
        items, self._pending = self._pending, []
        if self.workers > 1:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.workers, mp_context=_mp_context())
            self._parts.append(self._pool.submit(_decode_chunk, items, self.size))
        else:
            self._parts.append(_decode_chunk(items, self.size))

    def finish(self) -> tuple[list[str], np.ndarray]:
        """Wait for all images.

        Returns
        -------
        names : list of str
            In the order they were added.
        images : numpy.ndarray
            ``(N, H, W, 3)`` uint8, row ``i`` decoded from ``names[i]``.
        """
        if self._pending:
            if self._pool is None:  # too few images to be worth worker processes
                items, self._pending = self._pending, []
                self._parts.append(_decode_chunk(items, self.size))
            else:
                self._submit()
        try:
            parts = [p.result() if isinstance(p, Future) else p for p in self._parts]
        finally:
            self.close()
        if not parts:
            raise DatasetFormatError("no images found")
        shapes = {p.shape[1:] for p in parts}
        if len(shapes) > 1:
            raise DatasetFormatError(f"images have different sizes: {sorted(shapes)}")
        names = self._names
        self._names, self._parts = [], []
        return names, np.concatenate(parts) if len(parts) > 1 else parts[0]

    def close(self) -> None:
        """Shut the worker processes down (cancels pending work)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> ImageDecoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
