"""Self-describing run directories: atomic JSON/checkpoint writes and provenance.

Layout of a run directory::

    config.json     resolved TrainConfig (every field)
    meta.json       seed, package version, git revision, torch version, device, host
    metrics.jsonl   one JSON object per completed epoch
    result.json     final record (status: one of :data:`RESULT_STATUSES`)
    checkpoints/last.pt   state to resume from (model, optimizer, epoch, best so far)
    checkpoints/best.pt   model parameters of the best-validation epoch

A sweep directory (:class:`SweepFiles`) holds ``sweep.json``, the results database
``results.sqlite`` and one run directory per run under ``runs/``.

Analysis code reads only these files, never live objects. This module is the one
definition of the file names and of the run statuses.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..version import __version__

__all__ = [
    "write_json",
    "read_json",
    "append_jsonl",
    "read_jsonl",
    "atomic_torch_save",
    "load_checkpoint",
    "git_revision",
    "provenance",
    "RunFiles",
    "SweepFiles",
    "clean_json",
    "RUNS_DIR",
    "DB_NAME",
    "FINAL_STATUSES",
    "RESULT_STATUSES",
    "RUN_STATUSES",
    "DamagedFileError",
    "CheckpointError",
    "RunBusyError",
    "LAST_KEYS",
    "BEST_KEYS",
    "check_checkpoint",
    "restart_hint",
    "set_aside",
    "run_lock",
    "file_mode",
    "merge_meta",
]

#: Folder of a sweep directory holding one run directory per run.
RUNS_DIR = "runs"
#: The sweep's results database, in the sweep directory.
DB_NAME = "results.sqlite"
#: A run in one of these states is finished: a sweep does not run it again (failed
#: runs are retried, interrupted ones resumed).
FINAL_STATUSES: tuple[str, ...] = ("completed", "diverged")
#: Statuses a ``result.json`` can hold.
RESULT_STATUSES: tuple[str, ...] = (*FINAL_STATUSES, "failed")
#: Every status of a run in the results database.
RUN_STATUSES: tuple[str, ...] = ("pending", "running", "interrupted", *RESULT_STATUSES)


class DamagedFileError(ValueError):
    """A run file exists but cannot be read (truncated, empty, garbage, wrong shape)."""


class CheckpointError(DamagedFileError):
    """A checkpoint cannot be loaded or lacks what this package writes into it."""


class RunBusyError(OSError):
    """Another process holds the run directory's lock (it is training that run now)."""


#: Keys :func:`selectivity.training.single.train_run` writes into ``checkpoints/last.pt`` and reads back.
LAST_KEYS = ("model", "optimizer", "config", "epoch", "best_val_accuracy", "best_epoch", "num_classes")
#: Keys of ``checkpoints/best.pt`` (parameters of the best-validation epoch).
BEST_KEYS = ("model", "config", "epoch", "num_classes")


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def clean_json(o: Any) -> Any:
    """``o`` with every non-finite float (NaN/inf, not JSON) replaced by None, recursively."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: clean_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [clean_json(v) for v in o]
    return o


def _current_umask() -> int:
    # Linux shows the umask in /proc without changing it (os.umask is set-and-return,
    # which would race with other threads creating files).
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def file_mode() -> int:
    """Permission bits a plain ``open(path, "w")`` would give a new file (0o666 minus the umask).

    ``tempfile.mkstemp`` creates files ``0600``; the atomic writers chmod their temporary
    file to this mode so collaborators on shared storage can read results as the user's
    umask allows.
    """
    return 0o666 & ~_current_umask()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old or the new file
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically; NaN/inf become null."""
    text = json.dumps(clean_json(obj), indent=2, sort_keys=False, default=_json_default)
    _atomic_write_bytes(Path(path), (text + "\n").encode())


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON object (every JSON file of a run or sweep holds one).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    DamagedFileError
        If it is empty, truncated, not UTF-8, not JSON or not a JSON object; the message
        names the file.
    """
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DamagedFileError(f"{path} is damaged (not valid JSON: {e})") from None
    if not isinstance(obj, dict):
        raise DamagedFileError(f"{path} is damaged (expected a JSON object, found {type(obj).__name__})")
    return obj


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """Append one JSON line and fsync it."""
    line = json.dumps(clean_json(obj), default=_json_default)
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read JSON lines; a torn last line (killed mid-write) is ignored."""
    out: list[dict] = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def rewrite_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    text = "".join(json.dumps(clean_json(r), default=_json_default) + "\n" for r in rows)
    _atomic_write_bytes(Path(path), text.encode())


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, file_mode())
    os.close(fd)
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def restart_hint(path: Path) -> str:
    if path.parts[-2:] == Path(RunFiles.LAST).parts:
        run = path.parent.parent
        return (
            f"; delete it to restart the run from epoch 0 (or delete {run} to start over), "
            "or run the sweep again, which sets damaged files aside and re-runs the run"
        )
    return ""


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False) -> dict:
    """Load a checkpoint written by this package (``weights_only=True``: no code runs).

    A file named ``last.pt`` must hold every key of :data:`LAST_KEYS`, one named
    ``best.pt`` those of :data:`BEST_KEYS` (see :func:`check_checkpoint`), so a foreign or
    damaged checkpoint is a :class:`CheckpointError` naming the file, never a ``KeyError``
    later on.

    With ``mmap=True`` tensors are mapped, not read: a cheap check that the file is whole
    (a truncated zip has no central directory) and has the right keys.

    Raises
    ------
    FileNotFoundError
    CheckpointError
        Empty, truncated, not a torch file, unsafe to load, or lacking the expected keys.
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise
    except Exception as e:  # any failure of torch.load means the file cannot be used
        msg = " ".join(str(e).split())[:300]
        raise CheckpointError(
            f"cannot load checkpoint {path}: {type(e).__name__}: {msg}{restart_hint(path)}"
        ) from None
    last, best = Path(RunFiles.LAST).name, Path(RunFiles.BEST).name
    if path.name in (last, best):
        check_checkpoint(ckpt, path, LAST_KEYS if path.name == last else BEST_KEYS)
    return ckpt


def check_checkpoint(ckpt: Any, path: str | os.PathLike, keys: Iterable[str] = BEST_KEYS) -> dict:
    """Check that a loaded checkpoint has this package's layout.

    Parameters
    ----------
    ckpt : object
        What ``torch.load`` returned.
    path : path
        The file (named in the error).
    keys : iterable of str
        Keys that must be present (:data:`LAST_KEYS` or :data:`BEST_KEYS`).

    Returns
    -------
    dict
        ``ckpt`` itself.

    Raises
    ------
    CheckpointError
        Not a dict, a key missing, ``model`` not a dict of tensors, ``config`` not a dict,
        ``epoch``/``num_classes`` not positive integers.
    """
    path = Path(path)
    keys = tuple(keys)
    hint = restart_hint(path)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a selectivity checkpoint (holds {type(ckpt).__name__}){hint}")
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"{path} is not a selectivity checkpoint (missing keys {missing}; has {sorted(map(str, ckpt))[:8]}){hint}"
        )
    model = ckpt.get("model")
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise CheckpointError(f"{path}: 'model' is not a state dict of tensors{hint}")
    if "config" in ckpt and not isinstance(ckpt["config"], dict):
        raise CheckpointError(f"{path}: 'config' is not a dict{hint}")
    for k in ("epoch", "num_classes"):
        if k in ckpt and not (isinstance(ckpt[k], int) and not isinstance(ckpt[k], bool) and ckpt[k] >= 0):
            raise CheckpointError(f"{path}: {k!r} is {ckpt[k]!r}, expected a non-negative integer{hint}")
    # best.pt carries the same keys with optimizer None (one schema, selectivity.run.checkpoint).
    optim = ckpt.get("optimizer")
    needs_optim = "optimizer" in keys
    if (optim is not None or needs_optim) and not (
        isinstance(optim, dict) and {"state", "param_groups"} <= set(optim)
    ):
        raise CheckpointError(f"{path}: 'optimizer' is not an optimizer state dict{hint}")
    for k in ("best_val_accuracy", "best_epoch"):
        if k in ckpt and not isinstance(ckpt[k], (int, float)):
            raise CheckpointError(f"{path}: {k!r} is {ckpt[k]!r}, expected a number{hint}")
    return ckpt


def git_revision(path: str | os.PathLike | None = None) -> str | None:
    """The git commit of the package source (with ``-dirty``), or None outside git."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict:
    """Code and machine facts recorded with every run."""
    return {
        "package_version": __version__,
        "git_revision": git_revision(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cuda_available": torch.cuda.is_available(),
    }


class RunFiles:
    """Paths of one run directory.

    The upper-case class attributes are the file names relative to the run directory
    (the keys :class:`selectivity.run.health.RunHealth` reports problems under); the
    properties are the paths. Every module names a run's files through this class.
    """

    CONFIG = "config.json"
    META = "meta.json"
    METRICS = "metrics.jsonl"
    RESULT = "result.json"
    CHECKPOINTS = "checkpoints"
    LAST = "checkpoints/last.pt"
    BEST = "checkpoints/best.pt"
    #: The run's ``flock`` (:func:`run_lock`).
    LOCK = ".lock"
    #: Messages of the sweep's executors.
    LOG = "train.log"
    #: Folder of files set aside (:func:`set_aside`).
    DAMAGED = "damaged"
    #: What only the sweep driver knows (its wall-clock time of the run).
    RECORD = "sweep_record.json"
    #: Paper 2 robustness results (:mod:`selectivity.evaluate.robustness`).
    ROBUSTNESS = "robustness.json"
    #: Finished cells of a robustness evaluation under way.
    ROBUSTNESS_PARTIAL = "robustness.partial.json"
    #: Paper 2 dimensionality and gradient results (:mod:`selectivity.evaluate.geometry`).
    GEOMETRY = "geometry.json"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    config = property(lambda self: self.root / RunFiles.CONFIG)
    meta = property(lambda self: self.root / RunFiles.META)
    metrics = property(lambda self: self.root / RunFiles.METRICS)
    result = property(lambda self: self.root / RunFiles.RESULT)
    checkpoints = property(lambda self: self.root / RunFiles.CHECKPOINTS)
    last = property(lambda self: self.root / RunFiles.LAST)
    best = property(lambda self: self.root / RunFiles.BEST)
    lock = property(lambda self: self.root / RunFiles.LOCK)
    log = property(lambda self: self.root / RunFiles.LOG)
    damaged = property(lambda self: self.root / RunFiles.DAMAGED)
    record = property(lambda self: self.root / RunFiles.RECORD)
    robustness = property(lambda self: self.root / RunFiles.ROBUSTNESS)
    robustness_partial = property(lambda self: self.root / RunFiles.ROBUSTNESS_PARTIAL)
    geometry = property(lambda self: self.root / RunFiles.GEOMETRY)

    def is_run_dir(self) -> bool:
        return self.config.exists()


class SweepFiles:
    """Paths of one sweep directory (upper-case attributes: names relative to it)."""

    RUNS = RUNS_DIR
    DB = DB_NAME
    SPEC = "sweep.json"
    FIGURES = "figures"
    ANALYSIS = "analysis"
    #: Runs moved away by ``--archive-mismatched``.
    ARCHIVE = "archive"
    #: PWCCA distances of :mod:`selectivity.evaluate.cca` and their settings.
    CCA_CSV = "analysis/cca_distances.csv"
    CCA_SETTINGS = "analysis/cca_settings.json"
    #: Generated corrupted images shared by every run (:mod:`selectivity.evaluate.robustness`).
    ROBUSTNESS_CELLS = "analysis/robustness_cells"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    runs = property(lambda self: self.root / SweepFiles.RUNS)
    db = property(lambda self: self.root / SweepFiles.DB)
    spec = property(lambda self: self.root / SweepFiles.SPEC)
    figures = property(lambda self: self.root / SweepFiles.FIGURES)
    analysis = property(lambda self: self.root / SweepFiles.ANALYSIS)
    archive = property(lambda self: self.root / SweepFiles.ARCHIVE)
    cca_csv = property(lambda self: self.root / SweepFiles.CCA_CSV)
    cca_settings = property(lambda self: self.root / SweepFiles.CCA_SETTINGS)
    robustness_cells = property(lambda self: self.root / SweepFiles.ROBUSTNESS_CELLS)

    def run(self, run_id: str) -> RunFiles:
        """The files of run ``run_id``."""
        return RunFiles(self.root / RUNS_DIR / run_id)

    def is_sweep_dir(self) -> bool:
        return self.runs.is_dir() or self.db.exists()


def set_aside(run_dir: str | os.PathLike, names: Iterable[str]) -> Path | None:
    """Move files of a run directory into ``<run_dir>/damaged/<UTC time>/`` (kept, not deleted).

    Returns the folder they were moved to, or None if there was nothing to move.
    """
    root = Path(run_dir)
    names = [n for n in names if (root / n).exists()]
    if not names:
        return None
    dest = root / RunFiles.DAMAGED / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    k = 1
    while dest.exists():
        dest = dest.with_name(dest.name.split("-")[0] + f"-{k}")
        k += 1
    for n in names:
        target = dest / n
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(root / n), str(target))
    return dest


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, wait: bool = True) -> Iterator[None]:
    """Hold the run directory's lock (``<run_dir>/.lock``, an ``flock``) for a ``with`` block.

    Sweeps and ``selectivity train`` take the same lock, so two processes never train one
    run at once. The kernel drops the lock when its holder dies, so a killed process never
    leaves the run locked.

    Parameters
    ----------
    wait : bool
        Block until the lock is free; if False, raise :class:`RunBusyError` at once.
    """
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    with open(RunFiles(root).lock, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise RunBusyError(
                f"another process is training the run in {root} (it holds {RunFiles(root).lock}); "
                "wait for it to finish or stop it"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def merge_meta(run_dir: str | os.PathLike, extra: dict) -> None:
    """Add keys to a run's ``meta.json`` (atomically), e.g. where its data came from."""
    p = RunFiles(run_dir).meta
    try:
        meta = read_json(p)
    except (FileNotFoundError, DamagedFileError):
        meta = {}
    write_json(p, {**meta, **extra})
