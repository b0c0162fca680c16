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
* Corrupted images are either read from a directory (``corrupted``) or generated.
  A CIFAR-10-C directory (the released one, or one written by ``selectivity corrupt``)
  has rows = test-split indices. A Tiny ImageNet-C directory
  (``<corruption>/<severity>/<wnid>/*``) is mapped to the run's labels by wnid (the
  dataset's ``wnids.txt`` order) and put in the test split's order (by label, then by
  file name, as the released files keep the val images' names); it must hold the whole
  test split, class by class. Generated cells come from
  :func:`selectivity.perturb.corrupt` with ``params`` (``"auto"``: the Tiny ImageNet-C
  parameters for Tiny ImageNet runs, the CIFAR-10-C ones otherwise; see
  :func:`params_for_dataset`) and a fixed seed, in chunks of :data:`CHUNK` images seeded
  as :func:`selectivity.data.write_cifar_c` seeds its batches, on the CPU, then quantised
  to uint8 as the released files are.
  Generated cells are cached on disk under ``SWEEP/analysis/robustness_cells/<key>/``
  and reused by every run, so comparisons between alphas are paired; each run's result
  records the SHA-1 of every cell's images.
* Attacks run in eval mode on the images in [0, 1], normalised inside the attack;
  PGD starts from a random point drawn from a generator seeded with ``attack_seed``
  (the same draws for every run).
* Results go to ``RUN/robustness.json`` (atomically, with the settings); an existing
  result with the same settings is reused. While a run is evaluated, finished cells are
  kept in ``RUN/robustness.partial.json``, so a killed evaluation resumes.

The shape of every per-run analysis: :class:`RobustnessSettings` (frozen, validated on
construction), :func:`evaluate_run` (one run -> its record), :func:`sweep_robustness`
(every completed run of a sweep) and :func:`robustness_frame` (a table, read back from
the database, whose tables :data:`ROBUSTNESS_TABLES` describes).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..data import find_corrupted, load_cifar10_c, load_tiny_imagenet_c, params_for_dataset
from ..perturb import ATTACKS, CORRUPTIONS, NORMS, accuracy_under_attack, corrupt, to_uint8
from ..run.checkpoint import load_run
from ..run.files import DamagedFileError, RunFiles, SweepFiles, read_json, write_json
from ..sweep.store import AnalysisTables, Table, open_store
from .common import completed_runs, read_data_hint, select_images

__all__ = [
    "CHUNK",
    "DEFAULT_EPSILONS",
    "PARTIAL_NAME",
    "ROBUSTNESS_NAME",
    "ROBUSTNESS_TABLES",
    "RobustnessSettings",
    "corrupted_cell",
    "evaluate_run",
    "params_for_dataset",
    "parse_epsilons",
    "robustness_frame",
    "robustness_frames",
    "sweep_robustness",
]

#: Images corrupted per generator call (each chunk has its own seed, as in write_cifar_c).
CHUNK = 1000
#: Default epsilon grid in [0, 1] pixel units: 0.25/255 ... 8/255.
DEFAULT_EPSILONS: tuple[float, ...] = tuple(e / 255 for e in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0))
#: Per-run result file (relative to the run directory).
ROBUSTNESS_NAME = RunFiles.ROBUSTNESS
#: Per-run file of finished cells while an evaluation is under way.
PARTIAL_NAME = RunFiles.ROBUSTNESS_PARTIAL
#: Settings that do not change a result (left out of the comparison that reuses one).
_NOT_COMPARED = ("device", "corrupted", "cifar10_c")
#: Values of :attr:`RobustnessSettings.params`.
PARAMS = ("auto", "cifar10", "tinyimagenet")


def _run_dataset(run_dir: Path) -> str:
    """The ``dataset`` of a run's config.json (``cifar10`` when unreadable)."""
    try:
        return str(read_json(RunFiles(run_dir).config).get("dataset") or "cifar10")
    except (OSError, ValueError, AttributeError):
        return "cifar10"


@dataclass(frozen=True)
class RobustnessSettings:
    """What :func:`sweep_robustness` measures, and how; validated on construction.

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
        Corruption parameter set of the generator: ``"cifar10"``, ``"tinyimagenet"`` or
        ``"auto"`` (by each run's dataset, :func:`params_for_dataset`). Results store the
        settings as given and the set used as ``corruption_params``; a result stored with
        the set that ``"auto"`` resolves to is reused by ``"auto"``.
    corruption_seed : int
        Master seed of the generated corruptions.
    corrupted : str or None
        A CIFAR-10-C or Tiny ImageNet-C directory to read instead of generating (its
        format is recorded as ``source``).
    cifar10_c : str or None
        Older name of ``corrupted`` (either may be given).
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
    params: str = "auto"
    corruption_seed: int = 0
    corrupted: str | None = None
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
        put = functools.partial(object.__setattr__, self)  # frozen: normalised once, here
        put("corruptions", tuple(self.corruptions))
        put("severities", tuple(self.severities))
        put("attacks", tuple(self.attacks))
        put("epsilons", tuple(float(e) for e in self.epsilons))
        if self.cifar10_c is not None:
            if self.corrupted is not None and str(self.corrupted) != str(self.cifar10_c):
                raise ValueError("corrupted and cifar10_c name different directories: expected one directory")
            put("corrupted", str(self.cifar10_c))
            put("cifar10_c", None)
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
        if self.params not in PARAMS:
            raise ValueError(f"params must be one of {', '.join(PARAMS)}, got {self.params!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("corruptions", "severities", "attacks", "epsilons"):
            d[k] = list(d[k])
        d["source"] = (
            f"{self._directory_format()} directory"
            if self.corrupted
            else f"generated ({self.params}, seed {self.corruption_seed})"
        )
        return d

    def _directory_format(self) -> str:
        """``cifar10-c`` or ``tiny-imagenet-c`` (``corrupted`` when it cannot be read now)."""
        try:
            return find_corrupted(str(self.corrupted))[0]
        except (OSError, ValueError):
            return "corrupted"

    def params_for(self, dataset: str) -> str:
        """The parameter set generated for a run of ``dataset`` (``"auto"`` resolved)."""
        return params_for_dataset(dataset) if self.params == "auto" else self.params

    def matches(self, stored: Any, params: str) -> bool:
        """Whether ``stored`` (a result's ``settings``) is these settings, ``params`` used.

        Equal to :meth:`compared`, or, for ``"auto"``, to the settings with the resolved
        ``params`` (results written before ``"auto"`` existed, or with the set named).
        """
        if stored == self.compared():
            return True
        return self.params == "auto" and stored == replace(self, params=params).compared()

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
    """Corrupted versions of the chosen test images, identical for every run of a sweep.

    ``test_labels`` and ``classes`` are the whole test split's labels and class names (a
    Tiny ImageNet-C directory is checked against them and put in their order).
    """

    def __init__(
        self,
        sweep_dir: Path,
        settings: RobustnessSettings,
        params: str,
        idx: np.ndarray,
        clean: torch.Tensor,
        test_labels: torch.Tensor,
        classes: list[str],
    ):
        self.settings, self.params, self.idx, self.clean = settings, params, idx, clean
        self.test_labels, self.classes = test_labels, list(classes)
        self.format: str | None = None
        self.directory: Path | None = None
        if settings.corrupted:
            self.format, self.directory = find_corrupted(settings.corrupted)
        key = hashlib.sha1(
            repr((params, settings.corruption_seed, CHUNK, idx.tobytes().hex())).encode()
        ).hexdigest()[:16]
        self.cache_dir = SweepFiles(sweep_dir).robustness_cells / key
        self.memo: dict[tuple[str, int], torch.Tensor] = {}

    def get(self, corruption: str, severity: int) -> torch.Tensor:
        if (corruption, severity) in self.memo:
            return self.memo[(corruption, severity)]
        cell: torch.Tensor | None
        if self.format == "tiny-imagenet-c":
            cell = self._tiny_imagenet_c(corruption, severity)[torch.as_tensor(self.idx)]
        elif self.directory is not None:
            imgs, _labels = load_cifar10_c(corruption, severity, self.directory)
            where = f"{self.directory}/{corruption}.npy"
            self._check_size(imgs, where)
            if imgs.shape[0] <= int(self.idx.max()):
                raise ValueError(
                    f"{where} holds {imgs.shape[0]} images of shape "
                    f"{tuple(imgs.shape[1:])} per severity: expected the whole test split "
                    f"(> {int(self.idx.max())} images) of shape {tuple(self.clean.shape[1:])}"
                )
            cell = imgs[torch.as_tensor(self.idx)]
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
                    self.clean, corruption, severity, self.params, self.settings.corruption_seed
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
        s, d = self.settings, self.directory
        if d is None or not s.corruptions or not s.severities:
            return
        self.get(s.corruptions[0], s.severities[0])
        for name in s.corruptions:
            for sev in s.severities:
                there = (
                    (d / name / str(sev)).is_dir()
                    if self.format == "tiny-imagenet-c"
                    else (d / f"{name}.npy").is_file()
                )
                if not there:
                    self.get(name, sev)


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
        The content of ``robustness.json``: ``settings`` (as given), ``corruption_params``
        (the parameter set generated; None when read from a directory), ``n_images``, ``clean_accuracy``,
        ``corruptions`` (list of ``corruption, severity, accuracy``),
        ``mean_corruption_accuracy``, ``relative_corruption_accuracy``, ``attacks`` (list
        of ``attack, norm, epsilon, accuracy``), ``cell_sha1``, ``seconds``, ``device``.
    """
    run_dir = Path(run_dir)
    params = settings.params_for(_run_dataset(run_dir))
    out_path, part_path = RunFiles(run_dir).robustness, RunFiles(run_dir).robustness_partial
    want = settings.compared()
    old = _read_result(out_path)
    n_cells = (
        len(settings.corruptions) * len(settings.severities)
        + len(settings.attacks) * len(settings.epsilons)
        + 1
    )
    if old is not None and settings.matches(old.get("settings"), params):
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
        root = Path(sweep_dir) if sweep_dir else run_dir.parent.parent
        cells = _CellSource(root, settings, params, idx, clean, test.labels, list(test.classes))
    elif cells.params != params:
        raise ValueError(
            f"{run_dir} needs {params!r} corruptions but the sweep's first run "
            f"{cells.params!r}: expected runs of one dataset"
        )
    elif not np.array_equal(cells.idx, idx):
        raise ValueError(
            f"{run_dir} has another test split than the sweep's first run: expected the same data"
        )
    part = _read_result(part_path) or {}
    if not settings.matches(part.get("settings"), params):
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
        "corruption_params": None if settings.corrupted else params,
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
        No completed run; bad settings; a corrupted directory that does not fit the runs'
        test split (other image size, classes or number of images).
    """
    sweep_dir = Path(sweep_dir)
    settings = (settings or RobustnessSettings()).validate()
    log = log or (lambda _m: None)
    done = completed_runs(sweep_dir)
    if done.empty:
        raise ValueError(f"no completed run in {sweep_dir}: robustness needs trained checkpoints")
    if data is None:
        data = read_data_hint(sweep_dir)
    if settings.corrupted:
        find_corrupted(settings.corrupted)  # fail before any work if it is missing
    # "auto" corruption parameters: by the dataset of the first run (all must share it).
    params = settings.params_for(_run_dataset(SweepFiles(sweep_dir).run(done["run_id"].iloc[0]).root))
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
                (old := _read_result(RunFiles(run_dir).robustness))
                and settings.matches(old.get("settings"), params)
            ):
                run = load_run(run_dir, data, "cpu")
                test = run.splits.test
                idx = select_images(test.labels.numpy(), settings.n_images, settings.image_seed)
                cells = _CellSource(
                    sweep_dir,
                    settings,
                    params,
                    idx,
                    test.images[torch.as_tensor(idx)],
                    test.labels,
                    list(test.classes),
                )
                cells.check()  # a corrupted directory that does not fit fails before any run
            evaluate_run(
                run_dir, settings, cells, data, sweep_dir=sweep_dir, tick=bar.update if bar else None
            )
    finally:
        if bar is not None:
            bar.close()
    log(f"robustness of {len(done)} runs in {time.perf_counter() - t0:.0f} s")
    return robustness_frame(sweep_dir, "summary")


def robustness_frame(sweep_dir: str | os.PathLike, kind: str = "summary") -> pd.DataFrame:
    """One robustness table of a sweep's database, joined with the run's columns.

    ``kind``: ``summary`` (one row per run), ``corruptions`` (per corruption and
    severity) or ``attacks`` (per attack, norm and epsilon).
    """
    with open_store(Path(sweep_dir), log=lambda _m: None, analyses=[ROBUSTNESS_TABLES]) as store:
        return store.frame(ROBUSTNESS_TABLES, kind)


def robustness_frames(sweep_dir: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """``summary``, ``corruptions`` and ``attacks`` frames of a sweep's database (long format)."""
    with open_store(Path(sweep_dir), log=lambda _m: None, analyses=[ROBUSTNESS_TABLES]) as store:
        return {k: store.frame(ROBUSTNESS_TABLES, k) for k in ROBUSTNESS_TABLES.tables}


# --------------------------------------------------------------------------- the store's tables
def _robustness_rows(res: dict) -> dict[str, list[dict[str, Any]]]:
    """A ``robustness.json`` as rows of the three tables (``run_id`` added by the store)."""
    summary = {
        "n_images": res.get("n_images"),
        "clean_accuracy": res.get("clean_accuracy"),
        "mean_corruption_accuracy": res.get("mean_corruption_accuracy"),
        "relative_corruption_accuracy": res.get("relative_corruption_accuracy"),
        "n_corruption_cells": res.get("n_corruption_cells"),
        "settings": json.dumps(res.get("settings"), sort_keys=True),
    }
    return {
        "summary": [summary],
        "corruptions": list(res.get("corruptions") or []),
        "attacks": list(res.get("attacks") or []),
    }


_RUN_COLUMNS = ("model", "alpha", "seed", "activation", "negative_slope", "mean_selectivity")
_BY_RUN = ("r.model", "r.alpha", "r.seed", "r.run_id")

#: The three robustness tables of the sweep's database, filled from ``RUN/robustness.json``.
ROBUSTNESS_TABLES = AnalysisTables(
    name="robustness",
    tables={
        "summary": Table(
            "robustness_runs",
            (
                ("run_id", "TEXT PRIMARY KEY"),
                ("n_images", "INTEGER"),
                ("clean_accuracy", "REAL"),
                ("mean_corruption_accuracy", "REAL"),
                ("relative_corruption_accuracy", "REAL"),
                ("n_corruption_cells", "INTEGER"),
                ("settings", "TEXT"),  # JSON
            ),
            run_columns=_RUN_COLUMNS,
            order=_BY_RUN,
        ),
        "corruptions": Table(
            "robustness_corruptions",
            (("run_id", "TEXT"), ("corruption", "TEXT"), ("severity", "INTEGER"), ("accuracy", "REAL")),
            key=("run_id", "corruption", "severity"),
            run_columns=_RUN_COLUMNS,
            order=(*_BY_RUN, "t.corruption", "t.severity"),
        ),
        "attacks": Table(
            "robustness_attacks",
            (
                ("run_id", "TEXT"),
                ("attack", "TEXT"),
                ("norm", "TEXT"),
                ("epsilon", "REAL"),
                ("accuracy", "REAL"),
            ),
            key=("run_id", "attack", "norm", "epsilon"),
            run_columns=_RUN_COLUMNS,
            order=(*_BY_RUN, "t.attack", "t.epsilon"),
        ),
    },
    files=lambda run: [run.robustness] if run.robustness.exists() else [],
    read=read_json,
    rows=_robustness_rows,
)
