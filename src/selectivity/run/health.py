"""Health of a run directory: every file checked, without changing anything.

Used by the sweep driver (to set damaged files aside before it resumes a run), by the
results database (to report damaged runs by path) and by ``selectivity train``. It sits
above :mod:`selectivity.run.config` and :mod:`selectivity.models` because it checks that a
checkpoint's parameters fit a model built from its own config.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .files import (
    BEST_KEYS,
    FINAL_STATUSES,
    LAST_KEYS,
    RESULT_STATUSES,
    CheckpointError,
    DamagedFileError,
    RunFiles,
    check_checkpoint,
    load_checkpoint,
    read_json,
    restart_hint,
)

__all__ = ["RunHealth", "inspect_run_dir"]


@dataclass
class RunHealth:
    """What the files of one run directory say, checked one by one.

    Attributes
    ----------
    root : Path
    problems : dict
        File name (``config.json``, ``checkpoints/last.pt``, ...) -> one-line reason, for
        every file that exists but cannot be used.
    config : dict or None
        The run's resolved config: from ``config.json``, else from an intact checkpoint.
    result : dict or None
        ``result.json`` when intact.
    last_epoch : int or None
        Completed epochs recorded in an intact ``last.pt``.
    """

    root: Path
    problems: dict[str, str] = field(default_factory=dict)
    config: dict | None = None
    result: dict | None = None
    last_epoch: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def status(self) -> str:
        """``damaged`` if any file is damaged, else the result's status, ``interrupted`` or ``pending``."""
        if self.problems:
            return "damaged"
        if self.result is not None:
            return str(self.result.get("status"))
        return "interrupted" if self.last_epoch is not None else "pending"

    def describe(self) -> str:
        """One line naming every damaged file and why."""
        return "; ".join(f"{self.root / name}: {why}" for name, why in self.problems.items())

    def files_to_set_aside(self) -> list[str]:
        """Files to move out of the way so that training resumes or restarts cleanly.

        Damaged files always go, and ``result.json`` with them (the run is not finished).
        If a checkpoint or the metrics history is damaged, or the config is and no intact
        ``last.pt`` tells where the run stood, the run restarts from epoch 0, so every
        checkpoint and the metrics go too; otherwise it resumes from ``last.pt``.
        """
        if self.ok:
            return []
        files = RunFiles(self.root)
        names = set(self.problems)
        training = {RunFiles.LAST, RunFiles.BEST, RunFiles.METRICS}
        restart = bool(names & training) or (RunFiles.CONFIG in names and self.last_epoch is None)
        extra = [RunFiles.RESULT]
        if restart:
            extra += [RunFiles.LAST, RunFiles.BEST, RunFiles.METRICS]
        names |= {n for n in extra if (files.root / n).exists()}
        order = [
            RunFiles.CONFIG,
            RunFiles.META,
            RunFiles.METRICS,
            RunFiles.RESULT,
            RunFiles.LAST,
            RunFiles.BEST,
        ]
        return [n for n in order if n in names]


def _model_mismatch(ckpt: dict) -> str | None:
    """Why the checkpoint's parameters do not fit a model built from its own config, or None.

    The model is built on the ``meta`` device: shapes only, no memory, milliseconds.
    """
    from ..models import create
    from .config import ConfigError, TrainConfig

    try:
        cfg = TrainConfig.from_dict(ckpt["config"])
    except (ConfigError, TypeError) as e:
        return f"its config is not valid ({e})"
    try:
        model = create(
            cfg.model,
            num_classes=ckpt["num_classes"],
            activation=cfg.activation,
            negative_slope=cfg.negative_slope,
        )
    except (ValueError, TypeError, RuntimeError) as e:
        return f"its model cannot be built ({e})"
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in ckpt["model"].items()}
    if want != have:
        diff = sorted(set(want) ^ set(have))[:3] or [k for k in want if want[k] != have.get(k)][:3]
        return f"its parameters do not fit a {cfg.model} (e.g. {diff})"
    return None


def inspect_run_dir(
    path: str | os.PathLike, checkpoints: bool = True, check_models: bool = True
) -> RunHealth:
    """Check every file of a run directory without changing anything.

    Parameters
    ----------
    path : path
        The run directory.
    checkpoints : bool
        Open the checkpoints (memory-mapped, so cheap); if False only the JSON files are
        read and checkpoints are taken as they are.
    check_models : bool
        Also check that each checkpoint's parameters fit a model built from its config
        (shapes only, on the ``meta`` device).

    Returns
    -------
    RunHealth
    """
    from .config import ConfigError, TrainConfig, complete_config

    files = RunFiles(path)
    h = RunHealth(files.root)

    def problem(name: str, why: str) -> None:
        h.problems[name] = " ".join(why.split())[:400]

    if files.config.exists():
        try:
            cfgd = read_json(files.config)
            TrainConfig.from_dict(cfgd)
            h.config = cfgd
        except DamagedFileError as e:
            problem(RunFiles.CONFIG, str(e).split(" is damaged ", 1)[-1])
        except (ConfigError, TypeError) as e:
            problem(RunFiles.CONFIG, f"not a valid config ({e})")
    if files.meta.exists():
        try:
            read_json(files.meta)
        except DamagedFileError as e:
            problem(RunFiles.META, str(e).split(" is damaged ", 1)[-1])
    if files.result.exists():
        try:
            res = read_json(files.result)
            if res.get("status") not in RESULT_STATUSES:
                raise DamagedFileError(f"status {res.get('status')!r} is not one of {RESULT_STATUSES}")
            if res["status"] == "completed":
                for k in ("test_accuracy", "mean_selectivity", "epochs_completed"):
                    if not isinstance(res.get(k), (int, float)) and res.get(k) is not None:
                        raise DamagedFileError(f"{k} is {res.get(k)!r}, expected a number")
                if not isinstance(res.get("layers", []), list):
                    raise DamagedFileError("'layers' is not a list")
            h.result = res
        except DamagedFileError as e:
            problem(RunFiles.RESULT, str(e).split(" is damaged ", 1)[-1])
    for name, p, keys in (
        (RunFiles.LAST, files.last, LAST_KEYS),
        (RunFiles.BEST, files.best, BEST_KEYS),
    ):
        if not p.exists():
            continue
        if not checkpoints:
            if name == RunFiles.LAST:
                h.last_epoch = -1  # present, not opened
            continue
        try:
            ckpt = load_checkpoint(p, mmap=True)
            check_checkpoint(ckpt, p, keys)
        except CheckpointError as e:
            why = str(e).split(restart_hint(p))[0] if restart_hint(p) else str(e)
            problem(name, why.replace(f"{p}: ", "").replace(f"{p} ", ""))
            continue
        # Missing keys take their defaults: a resumed run's config.json may name fields that
        # did not exist when its older checkpoint was written.
        have, saved = (
            complete_config(h.config) if h.config is not None else None,
            complete_config(ckpt["config"]),
        )
        if have is not None and saved != have:
            diff = sorted(k for k in set(have) | set(saved) if have.get(k) != saved.get(k))
            problem(name, f"belongs to another configuration than config.json (fields {diff})")
            continue
        if check_models:
            mismatch = _model_mismatch(ckpt)
            if mismatch:
                problem(name, mismatch)
                continue
        if h.config is None:  # config.json missing or damaged: the checkpoint says which run this is
            h.config = ckpt["config"]
        if name == RunFiles.LAST:
            h.last_epoch = int(ckpt["epoch"])
    if files.metrics.exists():
        try:
            text = files.metrics.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            problem(RunFiles.METRICS, "not UTF-8 text")
        else:
            lines = [line for line in text.split("\n")]
            torn_ok = not text.endswith("\n")  # the last line may be torn by a kill
            rows = 0
            for i, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
                        raise ValueError("not an epoch record")
                    rows += 1
                except (ValueError, RecursionError):
                    if torn_ok and i == len(lines) - 1:
                        break
                    problem(RunFiles.METRICS, f"line {i + 1} is not an epoch record")
                    break
            if RunFiles.METRICS not in h.problems:
                need = max(h.last_epoch or 0, 0)
                if h.result is not None and h.result.get("status") in FINAL_STATUSES:
                    need = max(need, int(h.result.get("epochs_completed") or 0))
                if rows < need:
                    problem(RunFiles.METRICS, f"holds {rows} epochs, the run completed {need}")
    return h
