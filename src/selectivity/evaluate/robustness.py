"""Paper 2: average-case (corruptions) and worst-case (FGSM, PGD) robustness of a sweep.

A sweep-level analysis like :mod:`selectivity.evaluate.cca`: it loads every completed
run's best checkpoint (``checkpoints/best.pt``) and measures, on the same test images,

* the clean accuracy;
* the accuracy on every corruption x severity cell (15 x 5 = 75 by default), their mean
  (RobustBench's "mean corruption accuracy") and that mean divided by the clean accuracy;
* the accuracy under every attack x epsilon (default FGSM and PGD-10, L-infinity, epsilon
  0.25/255 ... 8/255 in [0, 1] pixel units; PGD step size ``2.5 * eps / steps``).

Choices (documented, configurable through :class:`RobustnessSettings`):

* Every network sees the SAME images: a class-stratified subset of the test split drawn
  with ``image_seed`` (``n_images=None``: the whole test split).
* Corrupted images are either read from a CIFAR-10-C directory (the released one, or one
  written by ``selectivity corrupt``; rows are test-split indices) or generated with
  :func:`selectivity.perturb.corrupt` with ``params`` (CIFAR-10-C parameters) and a fixed
  seed, in chunks of :data:`CHUNK` images seeded as :func:`selectivity.data.write_cifar_c`
  seeds its batches, on the CPU, then quantised to uint8 as the released files are.
  Generated cells are cached on disk under ``SWEEP/analysis/robustness_cells/<key>/``
  and reused by every run, so comparisons between alphas are paired; each run's result
  records the SHA-1 of every cell's images.
* Attacks run in eval mode on the images in [0, 1], normalised inside the attack;
  PGD starts from a random point drawn from a generator seeded with ``attack_seed``
  (the same draws for every run).
* Results go to ``RUN/robustness.json`` (atomically, with the settings); an existing
  result with the same settings is reused. While a run is evaluated, finished cells are
  kept in ``RUN/robustness.partial.json``, so a killed evaluation resumes.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..checkpoint import load_run
from ..data import find_cifar10_c, load_cifar10_c
from ..perturb import ATTACKS, CORRUPTIONS, NORMS, accuracy_under_attack, corrupt, to_uint8
from ..rundir import DamagedFileError, SweepFiles, read_json, write_json
from ..sweep import open_store
from ..sweep.store import ROBUSTNESS_NAME
from .cca import select_images

__all__ = [
    "CHUNK",
    "DEFAULT_EPSILONS",
    "PARTIAL_NAME",
    "ROBUSTNESS_NAME",
    "RobustnessSettings",
    "corrupted_cell",
    "evaluate_run",
    "parse_epsilons",
    "robustness_frames",
    "sweep_robustness",
]

#: Images corrupted per generator call (each chunk has its own seed, as in write_cifar_c).
CHUNK = 1000
#: Default epsilon grid in [0, 1] pixel units: 0.25/255 ... 8/255.
DEFAULT_EPSILONS: tuple[float, ...] = tuple(e / 255 for e in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0))
#: Per-run file of finished cells while an evaluation is under way.
PARTIAL_NAME = "robustness.partial.json"
#: Settings that do not change a result (left out of the comparison that reuses one).
_NOT_COMPARED = ("device", "cifar10_c")


@dataclass
class RobustnessSettings:
    """What :func:`sweep_robustness` measures, and how.

    Attributes
    ----------
    n_images : int or None
        Test images (class-stratified subset drawn with ``image_seed``); None: all.
    image_seed : int
        Seed of that subset.
    corruptions : tuple of str
        Subset of :data:`selectivity.perturb.CORRUPTIONS` (empty: no corruptions).
    severities : tuple of int
        Severities in 1..5.
    params : str
        Corruption parameter set of the generator (``"cifar10"`` or ``"tinyimagenet"``).
    corruption_seed : int
        Master seed of the generated corruptions.
    cifar10_c : str or None
        A CIFAR-10-C directory to read instead of generating (recorded as ``source``).
    attacks : tuple of str
        Keys of :data:`selectivity.perturb.ATTACKS` (empty: no attacks).
    epsilons : tuple of float
        Attack budgets in [0, 1] pixel units, each >= 0.
    norm : str
        ``"linf"`` or ``"l2"``.
    pgd_steps : int
        PGD iterations (step size ``pgd_step_factor * eps / pgd_steps``).
    pgd_step_factor : float
        See above (Madry et al.: 2.5).
    pgd_restarts : int
        PGD random restarts.
    attack_seed : int
        Seed of the PGD random starts.
    batch_size : int
        Images per forward pass / attack batch (it orders the PGD random draws, so it is
        part of the settings).
    device : str
        Where the networks run (not compared when reusing a result).
    """

    n_images: int | None = 2000
    image_seed: int = 0
    corruptions: tuple[str, ...] = CORRUPTIONS
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    params: str = "cifar10"
    corruption_seed: int = 0
    cifar10_c: str | None = None
    attacks: tuple[str, ...] = ("fgsm", "pgd")
    epsilons: tuple[float, ...] = DEFAULT_EPSILONS
    norm: str = "linf"
    pgd_steps: int = 10
    pgd_step_factor: float = 2.5
    pgd_restarts: int = 1
    attack_seed: int = 0
    batch_size: int = 250
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.corruptions = tuple(self.corruptions)
        self.severities = tuple(self.severities)
        self.attacks = tuple(self.attacks)
        self.epsilons = tuple(float(e) for e in self.epsilons)
        self.validate()

    def validate(self) -> RobustnessSettings:
        """Raise ``ValueError`` (one line, naming what was expected) on bad settings."""
        for name in self.corruptions:
            if name not in CORRUPTIONS:
                raise ValueError(f"unknown corruption {name!r}: expected one of {', '.join(CORRUPTIONS)}")
        for s in self.severities:
            if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 5:
                raise ValueError(f"severity must be an integer in 1..5, got {s!r}")
        for a in self.attacks:
            if a not in ATTACKS:
                raise ValueError(f"unknown attack {a!r}: expected one of {', '.join(ATTACKS)}")
        for e in self.epsilons:
            if not math.isfinite(e) or e < 0:
                raise ValueError(f"epsilon must be a finite number >= 0 (pixel units in [0, 1]), got {e!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.n_images is not None and self.n_images < 2:
            raise ValueError(f"n_images must be >= 2 (or None for the whole test split), got {self.n_images}")
        if self.pgd_steps < 1 or self.pgd_restarts < 1 or self.batch_size < 1:
            raise ValueError("pgd_steps, pgd_restarts and batch_size must be >= 1")
        if not math.isfinite(self.pgd_step_factor) or self.pgd_step_factor <= 0:
            raise ValueError(f"pgd_step_factor must be > 0, got {self.pgd_step_factor!r}")
        if self.params not in ("cifar10", "tinyimagenet"):
            raise ValueError(f"params must be 'cifar10' or 'tinyimagenet', got {self.params!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("corruptions", "severities", "attacks", "epsilons"):
            d[k] = list(d[k])
        d["source"] = (
            "cifar10-c directory"
            if self.cifar10_c
            else f"generated ({self.params}, seed {self.corruption_seed})"
        )
        return d

    def compared(self) -> dict[str, Any]:
        """The settings two results must share to be interchangeable."""
        return {k: v for k, v in self.to_dict().items() if k not in _NOT_COMPARED}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RobustnessSettings:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def parse_epsilons(text: str) -> tuple[float, ...]:
    """Comma-separated epsilons; ``a/b`` fractions allowed (``"0.5/255,8/255"``).

    Raises
    ------
    ValueError
        A value that is not a number, NaN, or negative.
    """
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            if "/" in part:
                num, den = part.split("/", 1)
                v = float(num) / float(den)
            else:
                v = float(part)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"epsilon {part!r} is not a number: expected e.g. 0.5/255 or 0.002") from None
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"epsilon must be a finite number >= 0 (pixel units in [0, 1]), got {part!r}")
        out.append(v)
    if not out:
        raise ValueError("no epsilon given: expected a comma-separated list such as 1/255,8/255")
    return tuple(out)


# --------------------------------------------------------------------------- images
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


def _digest(images: torch.Tensor) -> str:
    return hashlib.sha1(images.contiguous().numpy().tobytes()).hexdigest()


class _CellSource:
    """Corrupted versions of the chosen test images, identical for every run of a sweep."""

    def __init__(self, sweep_dir: Path, settings: RobustnessSettings, idx: np.ndarray, clean: torch.Tensor):
        self.settings, self.idx, self.clean = settings, idx, clean
        self.cifar10_c = find_cifar10_c(settings.cifar10_c) if settings.cifar10_c else None
        key = hashlib.sha1(
            repr((settings.params, settings.corruption_seed, CHUNK, idx.tobytes().hex())).encode()
        ).hexdigest()[:16]
        self.cache_dir = sweep_dir / "analysis" / "robustness_cells" / key
        self.memo: dict[tuple[str, int], torch.Tensor] = {}

    def get(self, corruption: str, severity: int) -> torch.Tensor:
        if (corruption, severity) in self.memo:
            return self.memo[(corruption, severity)]
        if self.cifar10_c is not None:
            imgs, _labels = load_cifar10_c(corruption, severity, self.cifar10_c)
            if imgs.shape[0] <= int(self.idx.max()) or tuple(imgs.shape[1:]) != tuple(self.clean.shape[1:]):
                raise ValueError(
                    f"{self.cifar10_c}/{corruption}.npy holds {imgs.shape[0]} images of shape "
                    f"{tuple(imgs.shape[1:])} per severity: expected the whole test split "
                    f"(> {int(self.idx.max())} images) of shape {tuple(self.clean.shape[1:])}"
                )
            cell: torch.Tensor | None = imgs[torch.as_tensor(self.idx)]
        else:
            path = self.cache_dir / f"{corruption}-{severity}.npy"
            cell = None
            if path.exists():
                try:
                    arr = np.load(path, allow_pickle=False)
                    if arr.shape == tuple(self.clean.shape) and arr.dtype == np.uint8:
                        cell = torch.from_numpy(arr)
                except (OSError, ValueError):
                    cell = None
            if cell is None:
                cell = corrupted_cell(
                    self.clean, corruption, severity, self.settings.params, self.settings.corruption_seed
                )
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
                with open(tmp, "wb") as f:
                    np.save(f, cell.numpy(), allow_pickle=False)
                os.replace(tmp, path)
        # Keep a few cells in memory: runs are evaluated one after the other.
        assert cell is not None  # set by one of the branches above
        if len(self.memo) >= 8:
            self.memo.pop(next(iter(self.memo)))
        self.memo[(corruption, severity)] = cell
        return cell


# --------------------------------------------------------------------------- one run
def _accuracy(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, mean, std, dev, bs: int
) -> float:
    m = torch.tensor(mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    correct = 0
    with torch.no_grad():
        for start in range(0, images.shape[0], bs):
            x = images[start : start + bs].to(dev, torch.float32) / 255.0
            y = labels[start : start + bs].to(dev)
            correct += int((model((x - m) / s).argmax(1) == y).sum())
    return correct / max(int(images.shape[0]), 1)


def _cell_key(corruption: str, severity: int) -> str:
    return f"{corruption}/{severity}"


def _attack_key(attack: str, norm: str, eps: float) -> str:
    return f"{attack}/{norm}/{eps!r}"


def _read_result(path: Path) -> dict | None:
    try:
        return read_json(path) if path.exists() else None
    except DamagedFileError:
        return None


def evaluate_run(
    run_dir: str | os.PathLike,
    settings: RobustnessSettings,
    cells: _CellSource | None = None,
    data: str | os.PathLike | None = None,
    *,
    sweep_dir: str | os.PathLike | None = None,
    tick: Callable[[int], None] | None = None,
) -> dict:
    """Evaluate one run and write ``RUN/robustness.json`` (reused if the settings match).

    Parameters
    ----------
    run_dir : path
        Run directory with ``checkpoints/best.pt``.
    settings : RobustnessSettings
    cells : optional
        Shared source of corrupted images (made here when None).
    data : path, optional
        Dataset location.
    sweep_dir : path, optional
        Where generated cells are cached (default: two levels above ``run_dir``).
    tick : callable, optional
        Called with the number of cells finished (a progress bar's ``update``).

    Returns
    -------
    dict
        The content of ``robustness.json``: ``settings``, ``n_images``, ``clean_accuracy``,
        ``corruptions`` (list of ``corruption, severity, accuracy``),
        ``mean_corruption_accuracy``, ``relative_corruption_accuracy``, ``attacks`` (list
        of ``attack, norm, epsilon, accuracy``), ``cell_sha1``, ``seconds``, ``device``.
    """
    run_dir = Path(run_dir)
    out_path, part_path = run_dir / ROBUSTNESS_NAME, run_dir / PARTIAL_NAME
    want = settings.compared()
    old = _read_result(out_path)
    n_cells = (
        len(settings.corruptions) * len(settings.severities)
        + len(settings.attacks) * len(settings.epsilons)
        + 1
    )
    if old is not None and old.get("settings") == want:
        if tick:
            tick(n_cells)
        return old
    t0 = time.perf_counter()
    run = load_run(run_dir, data, settings.device)
    model, splits, dev = run.model, run.splits, run.device
    test = splits.test
    idx = select_images(test.labels.numpy(), settings.n_images, settings.image_seed)
    clean, labels = test.images[torch.as_tensor(idx)], test.labels[torch.as_tensor(idx)]
    if cells is None:
        cells = _CellSource(Path(sweep_dir) if sweep_dir else run_dir.parent.parent, settings, idx, clean)
    elif not np.array_equal(cells.idx, idx):
        raise ValueError(
            f"{run_dir} has another test split than the sweep's first run: expected the same data"
        )
    part = _read_result(part_path) or {}
    if part.get("settings") != want:
        part = {"settings": want, "cells": {}, "attacks": {}, "sha1": {}}
    bs = settings.batch_size

    def save() -> None:
        write_json(part_path, part)

    if "clean" not in part:
        part["clean"] = _accuracy(model, clean, labels, splits.mean, splits.std, dev, bs)
        save()
    if tick:
        tick(1)
    for name in settings.corruptions:
        for sev in settings.severities:
            key = _cell_key(name, sev)
            if key not in part["cells"]:
                imgs = cells.get(name, sev)
                part["cells"][key] = _accuracy(model, imgs, labels, splits.mean, splits.std, dev, bs)
                part["sha1"][key] = _digest(imgs)
                save()
            if tick:
                tick(1)
    for atk in settings.attacks:
        for eps in settings.epsilons:
            key = _attack_key(atk, settings.norm, eps)
            if key not in part["attacks"]:
                kwargs: dict[str, Any] = {"norm": settings.norm}
                if atk == "pgd":
                    g = torch.Generator(device=dev)
                    g.manual_seed(int(settings.attack_seed))
                    kwargs.update(
                        steps=settings.pgd_steps,
                        step_size=settings.pgd_step_factor * eps / settings.pgd_steps,
                        restarts=settings.pgd_restarts,
                        generator=g,
                    )
                batches = (
                    (clean[s : s + bs].to(torch.float32) / 255.0, labels[s : s + bs])
                    for s in range(0, clean.shape[0], bs)
                )
                res = accuracy_under_attack(
                    model, batches, atk, [eps], mean=splits.mean, std=splits.std, device=dev, **kwargs
                )
                part["attacks"][key] = res[0].accuracy
                save()
            if tick:
                tick(1)
    clean_acc = float(part["clean"])
    corr = [
        {"corruption": n, "severity": s, "accuracy": float(part["cells"][_cell_key(n, s)])}
        for n in settings.corruptions
        for s in settings.severities
    ]
    mean_c = float(np.mean([c["accuracy"] for c in corr])) if corr else math.nan
    result = {
        "settings": want,
        "n_images": int(len(idx)),
        "clean_accuracy": clean_acc,
        "corruptions": corr,
        "n_corruption_cells": len(corr),
        "mean_corruption_accuracy": mean_c,
        "relative_corruption_accuracy": mean_c / clean_acc if clean_acc > 0 and corr else math.nan,
        "attacks": [
            {
                "attack": a,
                "norm": settings.norm,
                "epsilon": e,
                "accuracy": float(part["attacks"][_attack_key(a, settings.norm, e)]),
            }
            for a in settings.attacks
            for e in settings.epsilons
        ],
        "cell_sha1": dict(part["sha1"]),
        "image_indices_sha1": hashlib.sha1(idx.tobytes()).hexdigest(),
        "device": str(dev),
        "seconds": time.perf_counter() - t0,
    }
    write_json(out_path, result)
    part_path.unlink(missing_ok=True)
    return result


# --------------------------------------------------------------------------- the sweep
def _read_data_hint(sweep_dir: Path) -> str | None:
    try:
        return read_json(SweepFiles(sweep_dir).spec).get("data")
    except (FileNotFoundError, DamagedFileError, AttributeError):
        return None


def sweep_robustness(
    sweep_dir: str | os.PathLike,
    settings: RobustnessSettings | None = None,
    data: str | os.PathLike | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Evaluate every completed run of a sweep; results in run directories and the database.

    Parameters
    ----------
    sweep_dir : path
        Sweep directory (``runs/``, ``results.sqlite``).
    settings : RobustnessSettings, optional
        Default: :class:`RobustnessSettings` ().
    data : path, optional
        Dataset; default: the one recorded in ``sweep.json``, then the usual search.
    progress : bool, default True
        Progress bar over (run, cell).
    log : callable, optional
        Receives one-line messages.

    Returns
    -------
    pandas.DataFrame
        The per-run summary (:func:`robustness_frames` ``["summary"]``) read back from the
        database.

    Raises
    ------
    ValueError
        No completed run; bad settings; a CIFAR-10-C directory that does not fit.
    """
    sweep_dir = Path(sweep_dir)
    settings = (settings or RobustnessSettings()).validate()
    log = log or (lambda _m: None)
    with open_store(sweep_dir) as store:
        runs = store.runs_df()
    done = runs[runs["status"] == "completed"]
    if done.empty:
        raise ValueError(f"no completed run in {sweep_dir}: robustness needs trained checkpoints")
    if data is None:
        data = _read_data_hint(sweep_dir)
    if settings.cifar10_c:
        find_cifar10_c(settings.cifar10_c)  # fail before any work if it is missing
    per_run = (
        len(settings.corruptions) * len(settings.severities)
        + len(settings.attacks) * len(settings.epsilons)
        + 1
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=per_run * len(done), desc="robustness", unit="cell", dynamic_ncols=True)
    cells: _CellSource | None = None
    t0 = time.perf_counter()
    try:
        for rid in done["run_id"]:
            run_dir = SweepFiles(sweep_dir).run(rid).root
            if cells is None and not (
                (old := _read_result(run_dir / ROBUSTNESS_NAME))
                and old.get("settings") == settings.compared()
            ):
                run = load_run(run_dir, data, "cpu")
                test = run.splits.test
                idx = select_images(test.labels.numpy(), settings.n_images, settings.image_seed)
                cells = _CellSource(sweep_dir, settings, idx, test.images[torch.as_tensor(idx)])
            evaluate_run(
                run_dir, settings, cells, data, sweep_dir=sweep_dir, tick=bar.update if bar else None
            )
    finally:
        if bar is not None:
            bar.close()
    log(f"robustness of {len(done)} runs in {time.perf_counter() - t0:.0f} s")
    with open_store(sweep_dir) as store:
        return store.robustness_df("summary")


def robustness_frames(sweep_dir: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """``summary``, ``corruptions`` and ``attacks`` frames of a sweep's database (long format)."""
    with open_store(Path(sweep_dir)) as store:
        return {k: store.robustness_df(k) for k in ("summary", "corruptions", "attacks")}
