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

import json
import math
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from .version import __version__

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


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


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


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint written by this package (``weights_only=True``: no code runs)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # pragma: no cover - message depends on torch version
        raise ValueError(f"cannot load checkpoint {path}: {e}") from e


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
    """Paths of one run directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    config = property(lambda self: self.root / "config.json")
    meta = property(lambda self: self.root / "meta.json")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    result = property(lambda self: self.root / "result.json")
    checkpoints = property(lambda self: self.root / "checkpoints")
    last = property(lambda self: self.root / "checkpoints" / "last.pt")
    best = property(lambda self: self.root / "checkpoints" / "best.pt")

    def is_run_dir(self) -> bool:
        return self.config.exists()


class SweepFiles:
    """Paths of one sweep directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    runs = property(lambda self: self.root / RUNS_DIR)
    db = property(lambda self: self.root / DB_NAME)
    spec = property(lambda self: self.root / "sweep.json")
    figures = property(lambda self: self.root / "figures")
    analysis = property(lambda self: self.root / "analysis")

    def run(self, run_id: str) -> RunFiles:
        """The files of run ``run_id``."""
        return RunFiles(self.root / RUNS_DIR / run_id)

    def is_sweep_dir(self) -> bool:
        return self.runs.is_dir() or self.db.exists()
