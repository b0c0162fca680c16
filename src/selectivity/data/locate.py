"""Where data sets are looked for, the per-user cache, and the CIFAR-10 download.

Search order for every data set (first hit wins):

1. the explicit ``data`` argument (the CLI's ``--data``): a file or a directory;
2. the directory named by the environment variable ``SELECTIVITY_DATA``;
3. the per-user cache directory: ``SELECTIVITY_CACHE`` if set, else
   ``platformdirs.user_cache_dir("selectivity")``.

Only CIFAR-10 is downloaded (into the cache directory, md5-verified) when nothing is
found; Tiny ImageNet must be put in place by the user.

Nothing here imports torch, so the module is cheap to import in worker processes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

__all__ = [
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DATA_ENV",
    "CACHE_ENV",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "cache_dir",
    "cached_arrays",
    "download_cifar10",
    "find_cifar10",
    "find_cifar10_c",
    "find_corrupted",
    "find_tiny_imagenet",
    "find_tiny_imagenet_c",
    "source_fingerprint",
]

DATA_ENV = "SELECTIVITY_DATA"
CACHE_ENV = "SELECTIVITY_CACHE"

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"

# Known CIFAR-10 forms inside a directory, most preferred first: the canonical release
# is lossless, the JPEG copy is not; an extracted tree is preferred over its archive
# only because it saves one decompression (the decoded cache makes that moot).
_CIFAR10_CHILDREN = (
    "cifar-10-batches-py",
    CIFAR10_ARCHIVE,
    "cifar10-jpeg",
    "cifar10-jpeg.tar.gz",
    "cifar10-jpeg.tgz",
    "cifar10-jpeg.tar",
)
_TINY_CHILDREN = (
    "tiny-imagenet-200",
    "tiny-imagenet-200.zip",
    "tiny-imagenet-200.tar.gz",
    "tiny-imagenet-200.tgz",
    "tiny-imagenet-200.tar",
)

# Corrupted test sets: directories only (the releases are tar files; extract them first).
_CIFAR10_C_CHILDREN = ("CIFAR-10-C", "cifar-10-c", "cifar10-c")
_TINY_C_CHILDREN = ("Tiny-ImageNet-C", "tiny-imagenet-c", "tinyimagenet-c")

# Bump when the decoded-array layout changes so stale cache files are never read.
_CACHE_FORMAT = 1


class DatasetNotFoundError(FileNotFoundError):
    """A data set was not found (or could not be downloaded); the message says where to put it."""


class DatasetFormatError(ValueError):
    """A data set was found but its content does not have the expected layout."""


def cache_dir() -> Path:
    """Return the per-user cache directory (not created).

    Returns
    -------
    pathlib.Path
        ``$SELECTIVITY_CACHE`` if set and non-empty, else
        ``platformdirs.user_cache_dir("selectivity")``.
    """
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs  # imported lazily: only needed when no override is set

    return Path(platformdirs.user_cache_dir("selectivity"))


def _env_data_dir() -> Path | None:
    env = os.environ.get(DATA_ENV, "").strip()
    return Path(env).expanduser() if env else None


def _is_cifar_python_dir(path: Path) -> bool:
    return (path / "data_batch_1").is_file() and (path / "test_batch").is_file()


def _is_image_folder_root(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "test").is_dir()


def _is_tiny_root(path: Path) -> bool:
    return (path / "wnids.txt").is_file() and (path / "train").is_dir()


def _search_dir(directory: Path, is_root: Callable[[Path], bool], children: Iterable[str]) -> Path | None:
    """Return ``directory`` itself if it is a data root, else its first known child."""
    if is_root(directory):
        return directory
    for child in children:
        candidate = directory / child
        if candidate.is_file():
            return candidate
        if candidate.is_dir() and is_root(candidate):
            return candidate
    return None


def _cifar_is_root(path: Path) -> bool:
    return _is_cifar_python_dir(path) or _is_image_folder_root(path)


def _search_default_places(is_root, children) -> tuple[Path | None, list[Path], Path | None]:
    """Look in $SELECTIVITY_DATA, then the cache directory.

    Returns the data found (or None), the directories searched and the env directory.
    """
    searched: list[Path] = []
    env_dir = _env_data_dir()
    for directory in (env_dir, cache_dir()):
        if directory is None:
            continue
        searched.append(directory)
        if directory.is_dir():
            found = _search_dir(directory, is_root, children)
            if found is not None:
                return found, searched, env_dir
    return None, searched, env_dir


def _resolve_explicit(data: str | os.PathLike, what: str, is_root, children, expected: str) -> Path:
    path = Path(data).expanduser()
    if not path.exists():
        raise DatasetNotFoundError(
            f"{what}: the given path {str(path)!r} does not exist. Expected {expected}."
        )
    if path.is_file():
        return path
    found = _search_dir(path, is_root, children)
    if found is None:
        raise DatasetNotFoundError(
            f"{what}: the directory {str(path)!r} contains none of the known forms. Expected {expected}."
        )
    return found


_CIFAR10_EXPECTED = (
    "one of: cifar-10-python.tar.gz (the canonical release), its extracted "
    "cifar-10-batches-py/ directory, cifar10-jpeg.tar.gz or cifar10-jpeg/ (an image-folder "
    "tree with train/<class>/* and test/<class>/*), or such an image-folder root itself"
)


def find_cifar10(data: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Locate CIFAR-10, downloading the canonical release if allowed and needed.

    Parameters
    ----------
    data : str or path-like, optional
        An archive file, or a directory that is (or contains) one of the known forms:
        ``cifar-10-python.tar.gz``, ``cifar-10-batches-py/``, ``cifar10-jpeg.tar.gz``,
        ``cifar10-jpeg/``, or an image-folder root with ``train/`` and ``test/``.
        When given, nothing else is searched and nothing is downloaded.
    download : bool
        Download ``cifar-10-python.tar.gz`` into :func:`cache_dir` if no copy is found
        in ``$SELECTIVITY_DATA`` or the cache directory.

    Returns
    -------
    pathlib.Path
        The archive file or data directory to read.

    Raises
    ------
    DatasetNotFoundError
        If ``data`` does not exist or holds no known form, or nothing was found and the
        download was disabled or failed. The message names the places to put the file.
    """
    if data is not None:
        return _resolve_explicit(data, "CIFAR-10", _cifar_is_root, _CIFAR10_CHILDREN, _CIFAR10_EXPECTED)
    found, searched, env_dir = _search_default_places(_cifar_is_root, _CIFAR10_CHILDREN)
    if found is not None:
        return found
    reason = "downloading is disabled"
    if download:
        try:
            return download_cifar10(cache_dir())
        except OSError as exc:  # URLError, timeouts, md5 mismatch, full disk...
            reason = f"the download from {CIFAR10_URL} failed ({exc})"
    raise DatasetNotFoundError(
        "CIFAR-10 was not found and " + reason + ".\n"
        f"Searched: {', '.join(str(d) for d in searched)}"
        + ("" if env_dir is not None else f" (${DATA_ENV} is not set)")
        + ".\n"
        f"Fix: download {CIFAR10_URL} (md5 {CIFAR10_MD5}) and put {CIFAR10_ARCHIVE} in "
        f"{cache_dir()}, or put it (or {_CIFAR10_EXPECTED}) in a directory and set "
        f"{DATA_ENV}=<that directory>, or pass its path explicitly (data=... / --data)."
    )


def find_tiny_imagenet(data: str | os.PathLike | None = None) -> Path:
    """Locate Tiny ImageNet (never downloaded automatically).

    Parameters
    ----------
    data : str or path-like, optional
        A ``.zip``/``.tar.gz``/``.tar`` archive of the released tree, or a directory that
        is (has ``wnids.txt`` and ``train/``) or contains ``tiny-imagenet-200/`` or
        ``tiny-imagenet-200.zip``.

    Returns
    -------
    pathlib.Path
        The archive file or data directory to read.

    Raises
    ------
    DatasetNotFoundError
        If nothing is found; the message names the places to put the data.
    """
    expected = (
        "tiny-imagenet-200.zip (or .tar.gz) or its extracted tiny-imagenet-200/ directory "
        "(wnids.txt, train/<wnid>/images/*.JPEG, val/val_annotations.txt, val/images/*.JPEG)"
    )
    if data is not None:
        return _resolve_explicit(data, "Tiny ImageNet", _is_tiny_root, _TINY_CHILDREN, expected)
    found, searched, env_dir = _search_default_places(_is_tiny_root, _TINY_CHILDREN)
    if found is not None:
        return found
    raise DatasetNotFoundError(
        "Tiny ImageNet was not found.\n"
        f"Searched: {', '.join(str(d) for d in searched)}"
        + ("" if env_dir is not None else f" (${DATA_ENV} is not set)")
        + ".\n"
        f"Fix: download {TINY_IMAGENET_URL} and put it ({expected}) in {cache_dir()}, or in a "
        f"directory named by {DATA_ENV}, or pass its path explicitly (data=... / --data)."
    )


def _is_cifar10_c_root(path: Path) -> bool:
    return (path / "labels.npy").is_file() and any(
        p.suffix == ".npy" and p.name != "labels.npy" for p in path.iterdir()
    )


def _is_tiny_c_root(path: Path) -> bool:
    return any(
        child.is_dir() and any((child / str(s)).is_dir() for s in range(1, 6)) for child in path.iterdir()
    )


def _find_corrupted(data, what: str, is_root, children, expected: str) -> Path:
    found: Path | None
    if data is not None:
        found = _resolve_explicit(data, what, is_root, children, expected)
    else:
        found, searched, env_dir = _search_default_places(is_root, children)
        if found is None:
            raise DatasetNotFoundError(
                f"{what} was not found. Searched: {', '.join(str(d) for d in searched)}"
                + ("" if env_dir is not None else f" (${DATA_ENV} is not set)")
                + f". Expected {expected}, in ${DATA_ENV} or {cache_dir()}, or pass its path (--data);"
                " `selectivity corrupt` can generate a CIFAR-10-C-format directory."
            )
    if not found.is_dir():
        raise DatasetNotFoundError(f"{what}: {str(found)!r} is not a directory. Expected {expected}.")
    return found


def find_cifar10_c(data: str | os.PathLike | None = None) -> Path:
    """Locate a CIFAR-10-C directory (released or generated; never downloaded).

    Parameters
    ----------
    data : str or path-like, optional
        A directory holding ``labels.npy`` and ``<corruption>.npy`` files, or containing
        ``CIFAR-10-C/`` (also ``cifar-10-c/``, ``cifar10-c/``). Default: ``$SELECTIVITY_DATA``,
        then the cache directory.

    Returns
    -------
    pathlib.Path
        The directory holding the ``.npy`` files.

    Raises
    ------
    DatasetNotFoundError
        If no such directory is found; the message names the places searched.
    """
    expected = "a CIFAR-10-C directory (labels.npy and <corruption>.npy files) or one containing CIFAR-10-C/"
    return _find_corrupted(data, "CIFAR-10-C", _is_cifar10_c_root, _CIFAR10_C_CHILDREN, expected)


def find_tiny_imagenet_c(data: str | os.PathLike | None = None) -> Path:
    """Locate a Tiny ImageNet-C directory (``<corruption>/<severity>/<wnid>/*.JPEG``).

    Parameters
    ----------
    data : str or path-like, optional
        The directory, or one containing ``Tiny-ImageNet-C/`` (also ``tiny-imagenet-c/``).
        Default: ``$SELECTIVITY_DATA``, then the cache directory.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    DatasetNotFoundError
        If no such directory is found.
    """
    expected = "a Tiny ImageNet-C directory (<corruption>/<severity>/<wnid>/*.JPEG) or one containing Tiny-ImageNet-C/"
    return _find_corrupted(data, "Tiny ImageNet-C", _is_tiny_c_root, _TINY_C_CHILDREN, expected)


def find_corrupted(data: str | os.PathLike) -> tuple[str, Path]:
    """Locate a corrupted test set in either released format and say which.

    Parameters
    ----------
    data : str or path-like
        A CIFAR-10-C directory (``labels.npy`` and ``<corruption>.npy``), a Tiny ImageNet-C
        directory (``<corruption>/<severity>/<wnid>/*.JPEG``), or a directory containing
        one (``CIFAR-10-C/``, ``Tiny-ImageNet-C/``, ...). CIFAR-10-C is tried first.

    Returns
    -------
    format : {"cifar10-c", "tiny-imagenet-c"}
    directory : pathlib.Path

    Raises
    ------
    DatasetNotFoundError
        Neither format is found there (one line naming both).
    """
    try:
        return "cifar10-c", find_cifar10_c(data)
    except DatasetNotFoundError:
        pass
    try:
        return "tiny-imagenet-c", find_tiny_imagenet_c(data)
    except DatasetNotFoundError:
        pass
    path = Path(data).expanduser()
    what = "does not exist" if not path.exists() else "holds neither format"
    raise DatasetNotFoundError(
        f"corrupted images: {str(path)!r} {what}. Expected a CIFAR-10-C directory (labels.npy and "
        "<corruption>.npy files) or a Tiny ImageNet-C directory (<corruption>/<severity>/<wnid>/*.JPEG), "
        "or a directory containing CIFAR-10-C/ or Tiny-ImageNet-C/."
    )


def _md5(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download_cifar10(
    directory: str | os.PathLike, url: str | None = None, md5: str | None = None, timeout: float = 60.0
) -> Path:
    """Download the canonical CIFAR-10 release into ``directory`` and verify its md5.

    Parameters
    ----------
    directory : str or path-like
        Target directory (created if needed).
    url, md5 : str, optional
        Override the source (defaults: :data:`CIFAR10_URL`, :data:`CIFAR10_MD5`); for tests
        and mirrors.
    timeout : float
        Socket timeout in seconds.

    Returns
    -------
    pathlib.Path
        ``directory / "cifar-10-python.tar.gz"``.

    Raises
    ------
    OSError
        On network errors or an md5 mismatch; no partial file is left behind.
    """
    url = CIFAR10_URL if url is None else url
    md5 = CIFAR10_MD5 if md5 is None else md5
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / CIFAR10_ARCHIVE
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".download-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, length=1 << 20)
        got = _md5(Path(tmp))
        if got != md5:
            raise OSError(f"md5 mismatch for {url}: got {got}, expected {md5}")
        os.replace(tmp, target)  # atomic: a crash never leaves a half-written archive
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def source_fingerprint(path: str | os.PathLike) -> str:
    """Cheap identity of a data source, used as the decoded-cache key.

    A file is identified by its resolved path, size and modification time; a directory by
    the same triple for every file below it (a walk, no reads), so edits invalidate the
    cache without hashing gigabytes.

    Parameters
    ----------
    path : str or path-like
        Archive file or data directory.

    Returns
    -------
    str
        A hex digest.
    """
    path = Path(path).resolve()
    h = hashlib.sha256(f"v{_CACHE_FORMAT}\0{path}\0".encode())
    if path.is_file():
        st = path.stat()
        h.update(f"{st.st_size}\0{st.st_mtime_ns}".encode())
    else:
        entries = []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for name in filenames:
                full = os.path.join(dirpath, name)
                st = os.stat(full)
                entries.append(f"{os.path.relpath(full, path)}\0{st.st_size}\0{st.st_mtime_ns}")
        entries.sort()
        h.update("\n".join(entries).encode())
    return h.hexdigest()


def cached_arrays(
    kind: str, source: str | os.PathLike, build: Callable[[], dict[str, np.ndarray]], cache: bool = True
) -> dict[str, np.ndarray]:
    """Return decoded arrays for ``source``, building and caching them on first use.

    The cache file is ``<cache_dir>/decoded/<kind>-<fingerprint>.npz`` (uncompressed, so a
    load is a plain read). It is written to a temporary file and then ``os.replace``-d, so
    concurrent or interrupted runs never see a partial file.

    Parameters
    ----------
    kind : str
        Short name of the decoder (part of the file name).
    source : str or path-like
        The data source; see :func:`source_fingerprint`.
    build : callable
        Returns the arrays (plain numpy, no object dtypes) when there is no cache hit.
    cache : bool
        If False, always build and never write.

    Returns
    -------
    dict of str to numpy.ndarray
    """
    if not cache:
        return build()
    target = cache_dir() / "decoded" / f"{kind}-{source_fingerprint(source)[:24]}.npz"
    if target.is_file():
        try:
            with np.load(target, allow_pickle=False) as npz:
                return {key: npz[key] for key in npz.files}
        except Exception as exc:  # unreadable cache: rebuild rather than fail
            warnings.warn(f"ignoring unreadable cache file {target}: {exc}", stacklevel=2)
    arrays = build()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".npz.part")
        try:
            with os.fdopen(fd, "wb") as f:
                savez: Callable[..., None] = np.savez  # mypy: **arrays is not `allow_pickle`
                savez(f, **arrays)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache holds nothing private
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:  # read-only or full cache dir: the data is still usable
        warnings.warn(f"could not write cache file {target}: {exc}", stacklevel=2)
    return arrays
