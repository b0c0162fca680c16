"""Paper 2: average-case (corruptions) and worst-case (FGSM, PGD) robustness of a sweep.

A sweep-level analysis like :mod:`selectivity.evaluate.cca`: it loads every completed
run's best checkpoint (``checkpoints/best.pt``) and measures, on the same test images,

* the clean accuracy;
* the accuracy on every corruption x severity cell (15 x 5 = 75 by default), their mean
  (RobustBench's "mean corruption accuracy") and that mean divided by the clean accuracy;
* the accuracy under every attack x epsilon (default FGSM and PGD-10, L-infinity, epsilon
  0.25/255 ... 8/255 in [0, 1] pixel units; PGD step size ``2.5 * eps / steps``);
* the accuracy under the APGD attacks (Croce & Hein 2020; ``apgd-ce``, ``apgd-t``,
  ``apgd-ensemble``) at :attr:`RobustnessSettings.apgd_epsilons` (default 8/255, the
  RobustBench standard) with ``apgd_steps`` iterations, ``apgd_restarts`` random restarts
  and ``apgd_target_classes`` targets. ``apgd-ensemble`` is the "AutoAttack-style" robust
  accuracy: an image counts as robust only if APGD-CE and APGD-T both fail on it (the
  per-sample minimum). APGD-CE runs once per epsilon: its own row and the ensemble's first
  stage are the same attack; the ensemble's APGD-T stage attacks only the images APGD-CE
  left correct (AutoAttack's order; a full ``apgd-t`` row, when asked for, attacks every
  correctly classified image from its own generator, and the ensemble is then the
  per-sample minimum of the two rows' verdicts).

Choices (documented, configurable through :class:`RobustnessSettings`):

* Every network sees the SAME images: a class-stratified subset of the test split drawn
  with ``image_seed`` (``n_images=None``: the whole test split).
* Corrupted images (:mod:`selectivity.evaluate.cells`) are either read from a directory
  (``corrupted``) or generated. A CIFAR-10-C directory (the released one, or one written
  by ``selectivity corrupt``) has its rows matched to the test split (below); from the release all 19 types can be read (the 15
  standard ones and speckle_noise, gaussian_blur, spatter, saturate), while the
  generator makes the 15 standard types. Each result says where its images came from
  (``corruption_source``) and gives the mean over the 15 standard types (RobustBench's,
  ``mean_corruption_accuracy_15``) and, when all 19 were evaluated, over the 19
  (``mean_corruption_accuracy_19``). A Tiny ImageNet-C directory
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
  as ``<corruption>-<severity>.<sha1>.npy`` and reused by every run, so comparisons
  between alphas are paired; a cached cell whose bytes do not hash to its name is made
  again. Each run's result records the SHA-1 of every cell's images.
* The rows of a CIFAR-10-C directory are matched to the run's test split, not assumed to
  be in its order: its labels must be the test labels in order (the release follows the
  order of CIFAR-10's ``test_batch``; ``selectivity corrupt`` writes the order of the
  data it reads), or, when they are not, each row is matched to the test image it was
  made from, by content: within each class, the nearest clean test image of its
  severity-1 image, accepted only if every row has a distinct nearest image at most half
  as far as the second nearest (the first requested corruption that satisfies this
  decides the order of all). Otherwise, and for labels outside the run's classes, the
  directory is refused before any run is evaluated. Every file read from a directory is
  hashed when the evaluation starts (the directory's content fingerprint, part of the
  settings) and checked again before a cell is used if it changed since.
* Attacks run in eval mode on the images in [0, 1], normalised inside the attack;
  PGD starts from a random point drawn from a generator seeded with ``attack_seed``
  (the same draws for every run).
* Results are keyed by their settings: ``RUN/robustness/<key>.json`` (atomically), where
  ``<key>`` is :func:`~selectivity.evaluate.common.settings_key` of the compared
  settings (:meth:`RobustnessSettings.compared`, the parameter set resolved, and the
  content fingerprint of a corrupted directory as ``corrupted_sha1``), so results of other
  settings are kept side by side. A result with the same key is reused (``force``
  recomputes). While a run is evaluated, finished cells are kept in
  ``RUN/robustness/<key>.partial.json``, so a killed evaluation resumes. Results of the
  older layout (``RUN/robustness.json``, ``RUN/robustness.partial.json``) are read and
  reused as if keyed by their settings. A file that is not of its schema
  (:func:`check_result`, :func:`check_partial`) is set aside in ``RUN/damaged/`` and the
  run evaluated again.
* The report and ``selectivity results`` show one settings' results: the sweep's
  default (:func:`robustness_frame`): those of the sweep's preset when it has some,
  else those evaluated on the most runs, with the most cells, on the most images.

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
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..analysis.robustness import EXTRA_CORRUPTIONS, STANDARD_CORRUPTIONS
from ..data import find_corrupted, params_for_dataset
from ..perturb import ATTACKS, CORRUPTIONS, NORMS, accuracy_under_attack, attack_outcome
from ..perturb.attacks import APGD_TARGET_CLASSES
from ..run.checkpoint import load_run
from ..run.files import DamagedFileError, RunFiles, SweepFiles, read_json, write_json
from ..sweep.store import AnalysisTables, Table, open_store
from .cells import CHUNK, CellSource, corrupted_cell, corrupted_fingerprint, images_sha1
from .common import (
    completed_runs,
    default_key,
    expect_dict,
    expect_int,
    expect_json,
    expect_list,
    expect_number,
    expect_str,
    read_data_hint,
    read_record,
    select_images,
    settings_key,
)

__all__ = [
    "APGD_ATTACKS",
    "CHUNK",
    "CellSource",
    "DEFAULT_APGD_EPSILONS",
    "DEFAULT_EPSILONS",
    "PARTIAL_NAME",
    "ROBUSTNESS_NAME",
    "ROBUSTNESS_TABLES",
    "RobustnessSettings",
    "check_partial",
    "cell_source",
    "check_result",
    "corrupted_cell",
    "corrupted_fingerprint",
    "evaluate_run",
    "result_key",
    "robustness_results",
    "params_for_dataset",
    "parse_epsilons",
    "apgd_accuracies",
    "robustness_frame",
    "robustness_frames",
    "pick_settings",
    "sweep_robustness",
    "sweep_robustness_settings",
]

#: Default epsilon grid in [0, 1] pixel units: 0.25/255 ... 8/255.
DEFAULT_EPSILONS: tuple[float, ...] = tuple(e / 255 for e in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0))
#: Default APGD budget: 8/255, the RobustBench L-inf standard for CIFAR-10.
DEFAULT_APGD_EPSILONS: tuple[float, ...] = (8 / 255,)
#: Attacks evaluated at :attr:`RobustnessSettings.apgd_epsilons` with the APGD settings.
APGD_ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-t", "apgd-ensemble")
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
        Keys of :data:`selectivity.perturb.ATTACKS` (empty: no attacks). FGSM and PGD run
        at ``epsilons``, the APGD attacks (:data:`APGD_ATTACKS`) at ``apgd_epsilons``.
    epsilons : tuple of float
        Budgets of FGSM and PGD in [0, 1] pixel units, each >= 0.
    norm : str
        ``"linf"`` or ``"l2"``.
    pgd_steps : int
        PGD iterations (step size ``pgd_step_factor * eps / pgd_steps``).
    pgd_step_factor : float
        See above (Madry et al.: 2.5).
    pgd_restarts : int
        PGD random restarts.
    attack_seed : int
        Seed of the random starts of PGD and APGD (one generator per attack and epsilon,
        seeded with it: the same draws for every run).
    apgd_epsilons : tuple of float or None
        Budgets of the APGD attacks (default 8/255); None: ``epsilons``.
    apgd_steps : int
        APGD iterations per run (the reference's 100).
    apgd_restarts : int
        APGD random restarts (AutoAttack's standard version: 1).
    apgd_target_classes : int
        Target classes of APGD-T (AutoAttack's standard version: 9).
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
    attacks: tuple[str, ...] = ("fgsm", "pgd", "apgd-ce", "apgd-ensemble")
    epsilons: tuple[float, ...] = DEFAULT_EPSILONS
    norm: str = "linf"
    pgd_steps: int = 10
    pgd_step_factor: float = 2.5
    pgd_restarts: int = 1
    attack_seed: int = 0
    apgd_epsilons: tuple[float, ...] | None = DEFAULT_APGD_EPSILONS
    apgd_steps: int = 100
    apgd_restarts: int = 1
    apgd_target_classes: int = APGD_TARGET_CLASSES
    batch_size: int = 250
    device: str = "cpu"

    def __post_init__(self) -> None:
        put = functools.partial(object.__setattr__, self)  # frozen: normalised once, here
        put("corruptions", tuple(self.corruptions))
        put("severities", tuple(self.severities))
        put("attacks", tuple(self.attacks))
        put("epsilons", tuple(float(e) for e in self.epsilons))
        if self.apgd_epsilons is not None:
            put("apgd_epsilons", tuple(float(e) for e in self.apgd_epsilons))
        if self.cifar10_c is not None:
            if self.corrupted is not None and str(self.corrupted) != str(self.cifar10_c):
                raise ValueError("corrupted and cifar10_c name different directories: expected one directory")
            put("corrupted", str(self.cifar10_c))
            put("cifar10_c", None)
        self.validate()

    def validate(self) -> RobustnessSettings:
        """Raise ``ValueError`` (one line, naming what was expected) on bad settings."""
        for name in self.corruptions:
            if name in EXTRA_CORRUPTIONS and not self.corrupted:
                raise ValueError(
                    f"corruption {name!r} is one of the 4 extra types of the CIFAR-10-C release: it is read "
                    "from a directory (corrupted), not generated (the generator has the 15 standard types)"
                )
            if name not in CORRUPTIONS and name not in EXTRA_CORRUPTIONS:
                raise ValueError(
                    f"unknown corruption {name!r}: expected one of {', '.join((*CORRUPTIONS, *EXTRA_CORRUPTIONS))}"
                )
        for s in self.severities:
            if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 5:
                raise ValueError(f"severity must be an integer in 1..5, got {s!r}")
        for a in self.attacks:
            if a not in ATTACKS:
                raise ValueError(f"unknown attack {a!r}: expected one of {', '.join(ATTACKS)}")
        for e in (*self.epsilons, *(self.apgd_epsilons or ())):
            if not math.isfinite(e) or e < 0:
                raise ValueError(f"epsilon must be a finite number >= 0 (pixel units in [0, 1]), got {e!r}")
        for name in ("pgd_steps", "pgd_restarts", "apgd_steps", "apgd_restarts", "apgd_target_classes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("image_seed", "attack_seed", "corruption_seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.n_images is not None and (not _is_int(self.n_images) or self.n_images < 2):
            raise ValueError(f"n_images must be >= 2 (or None for the whole test split), got {self.n_images}")
        for name in ("image_seed", "corruption_seed", "attack_seed"):
            v = getattr(self, name)
            if not _is_int(v) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        for name in ("pgd_steps", "pgd_restarts", "batch_size"):
            if not _is_int(getattr(self, name)):
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.pgd_steps < 1 or self.pgd_restarts < 1 or self.batch_size < 1:
            raise ValueError("pgd_steps, pgd_restarts and batch_size must be >= 1")
        if not math.isfinite(self.pgd_step_factor) or self.pgd_step_factor <= 0:
            raise ValueError(f"pgd_step_factor must be > 0, got {self.pgd_step_factor!r}")
        if self.params not in PARAMS:
            raise ValueError(f"params must be one of {', '.join(PARAMS)}, got {self.params!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("corruptions", "severities", "attacks", "epsilons", "apgd_epsilons"):
            d[k] = None if d[k] is None else list(d[k])
        d["source"] = (
            f"{self._directory_format()} directory"
            if self.corrupted
            else f"generated ({self.params}, seed {self.corruption_seed})"
        )
        return d

    def source_text(self, params: str) -> str:
        """Where the corrupted images of a result come from, and with which parameters (one line).

        ``params`` is the parameter set generated (``"auto"`` resolved); unused for a directory.
        """
        if self.corrupted:
            return f"read from a {self._directory_format()} directory: {self.corrupted}"
        return (
            f"generated by our batched re-implementation (procedural frost texture): {params} parameters, "
            f"seed {self.corruption_seed}, quantised to uint8"
        )

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

    def stored(self, fingerprint: str | None = None) -> dict[str, Any]:
        """The ``settings`` a result records: :meth:`compared`, and the content fingerprint
        of the corrupted directory (``corrupted_sha1``) when images are read from one."""
        d = self.compared()
        if self.corrupted:
            d["corrupted_sha1"] = fingerprint
        return d

    def attack_epsilons(self, attack: str) -> tuple[float, ...]:
        """The budgets ``attack`` is evaluated at (``apgd_epsilons`` for the APGD attacks)."""
        if attack in APGD_ATTACKS and self.apgd_epsilons is not None:
            return self.apgd_epsilons
        return self.epsilons

    def attack_cells(self) -> list[tuple[str, float]]:
        """Every (attack, epsilon) evaluated, in the order of ``attacks``."""
        return [(a, e) for a in self.attacks for e in self.attack_epsilons(a)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RobustnessSettings:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def result_key(settings: Mapping[str, Any], corruption_params: str | None) -> str:
    """The key of a result: its ``settings`` with the parameter set it used, ``source`` left out.

    ``"auto"`` and the set it resolves to give the same key (the same images).
    """
    d = {k: v for k, v in settings.items() if k != "source"}
    if corruption_params is not None:
        d["params"] = corruption_params
    return settings_key(d)


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


# --------------------------------------------------------------------------- stored results
def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def robustness_results(run: RunFiles | str | os.PathLike) -> dict[str, Path]:
    """The robustness result files of a run by settings key (the older layout's one included).

    The key of an older ``RUN/robustness.json`` is computed from its settings when it can
    be read; a damaged one is listed under ``"robustness.json"``.
    """
    run = run if isinstance(run, RunFiles) else RunFiles(run)
    out = run.keyed_results(RunFiles.ROBUSTNESS_DIR)
    if run.robustness.is_file():
        try:
            old = read_json(run.robustness)
            key = result_key(
                expect_dict(old.get("settings"), run.robustness, "settings"), old.get("corruption_params")
            )
        except (FileNotFoundError, DamagedFileError, TypeError):
            key = RunFiles.ROBUSTNESS
        out.setdefault(key, run.robustness)
    return out


def _files(run: RunFiles) -> list[Path]:
    found = list(run.keyed_results(RunFiles.ROBUSTNESS_DIR).values())
    return ([run.robustness] if run.robustness.is_file() else []) + found


def _read_stored(path: Path) -> dict:
    """A result file checked against :func:`check_result`, with its ``settings_key``."""
    rec = check_result(read_json(path), path)
    if path.name == RunFiles.ROBUSTNESS:  # the older layout: keyed by its settings
        rec["settings_key"] = result_key(rec["settings"], rec["corruption_params"])
    else:
        rec["settings_key"] = path.name[: -len(RunFiles.RESULT_SUFFIX)]
    return rec


def _find(run: RunFiles, key: str, log: Callable[[str], None]) -> dict | None:
    """The stored result of settings ``key``, checked (a damaged file is set aside)."""
    rec = read_record(run.keyed(RunFiles.ROBUSTNESS_DIR, key), check_result, run, log, "robustness")
    if rec is not None:
        return rec
    if run.robustness.is_file():  # the older layout
        old = read_record(run.robustness, check_result, run, log, "robustness")
        if old is not None and result_key(old["settings"], old["corruption_params"]) == key:
            return old
    return None


def _start_cells(run: RunFiles, key: str, params: str | None, log: Callable[[str], None]) -> dict:
    """Finished cells of an interrupted evaluation of settings ``key`` (checked), or none.

    ``params``: the parameter set generated (None for a directory), as in :func:`result_key`.
    """
    for path in (run.keyed(RunFiles.ROBUSTNESS_DIR, key, partial=True), run.robustness_partial):
        part = read_record(path, check_partial, run, log, "robustness")
        if part is not None and result_key(part["settings"], params) == key:
            return part
    return {"cells": {}, "attacks": {}, "sha1": {}}


def cell_source(
    sweep_dir: str | os.PathLike,
    settings: RobustnessSettings,
    params: str,
    idx: np.ndarray,
    test: Any,
    files: dict[str, tuple[int, int, str]],
) -> CellSource:
    """The corrupted images of ``settings`` for the chosen images of a test split."""
    return CellSource(
        sweep_dir,
        settings.corruptions,
        settings.severities,
        settings.corruption_seed,
        settings.corrupted,
        params,
        idx,
        test.images,
        test.labels,
        list(test.classes),
        files,
    )


# --------------------------------------------------------------------------- the result of one run


def apgd_accuracies(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float,
    settings: RobustnessSettings,
    attacks: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str,
) -> dict[str, float]:
    """Accuracy under the APGD attacks ``attacks`` at one epsilon, sharing the APGD-CE stage.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier in eval mode, on ``device``.
    images, labels : torch.Tensor
        ``(N, C, H, W)`` uint8 images and ``(N,)`` labels.
    epsilon : float
        Budget in [0, 1] pixel units.
    settings : RobustnessSettings
        ``norm``, ``apgd_steps``, ``apgd_restarts``, ``apgd_target_classes``,
        ``attack_seed`` and ``batch_size`` are used.
    attacks : sequence of str
        A subset of :data:`APGD_ATTACKS`.
    mean, std : sequence of float
        The normalisation the model expects.
    device : torch.device or str

    Returns
    -------
    dict of str to float
        Attack -> accuracy for every name of ``attacks``. APGD-CE draws from a generator
        seeded with ``attack_seed`` and the ensemble's APGD-T stage continues it on the
        images APGD-CE left correct (as :func:`selectivity.perturb.apgd_ensemble` does
        per batch); a full ``apgd-t`` draws from its own generator with the same seed,
        and then the ensemble is the per-sample minimum of the two verdicts.
    """
    want = set(attacks)
    kw: dict[str, Any] = dict(
        norm=settings.norm,
        steps=settings.apgd_steps,
        restarts=settings.apgd_restarts,
        mean=mean,
        std=std,
    )
    g_ce = torch.Generator(device=device)
    g_ce.manual_seed(int(settings.attack_seed))
    g_t = torch.Generator(device=device)
    g_t.manual_seed(int(settings.attack_seed))
    correct = {a: 0 for a in want}
    n = int(images.shape[0])
    for s in range(0, n, settings.batch_size):
        x = (images[s : s + settings.batch_size].to(device, torch.float32) / 255.0).contiguous()
        y = labels[s : s + settings.batch_size].to(device)
        ce = None
        if want & {"apgd-ce", "apgd-ensemble"}:
            ce = attack_outcome("apgd-ce", model, x, y, epsilon, generator=g_ce, **kw)
            if "apgd-ce" in want:
                correct["apgd-ce"] += int(ce.correct.sum())
        t_full = None
        if "apgd-t" in want:
            t_full = attack_outcome(
                "apgd-t",
                model,
                x,
                y,
                epsilon,
                n_target_classes=settings.apgd_target_classes,
                generator=g_t,
                **kw,
            )
            correct["apgd-t"] += int(t_full.correct.sum())
        if "apgd-ensemble" in want:
            assert ce is not None
            if t_full is not None:  # both verdicts are in hand: the per-sample minimum
                robust = ce.correct & t_full.correct
            else:  # AutoAttack's order: APGD-T on what APGD-CE left correct
                robust = attack_outcome(
                    "apgd-t",
                    model,
                    x,
                    y,
                    epsilon,
                    n_target_classes=settings.apgd_target_classes,
                    generator=g_ce,
                    start=ce,
                    **kw,
                ).correct
            correct["apgd-ensemble"] += int(robust.sum())
    return {a: correct[a] / max(n, 1) for a in attacks}


def evaluate_run(
    run_dir: str | os.PathLike,
    settings: RobustnessSettings,
    cells: CellSource | None = None,
    data: str | os.PathLike | None = None,
    *,
    sweep_dir: str | os.PathLike | None = None,
    tick: Callable[[int], None] | None = None,
    force: bool = False,
    fingerprint: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Evaluate one run and write ``RUN/robustness/<key>.json`` (reused if already there).

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
    force : bool
        Recompute even if a result of the same settings is stored.
    fingerprint : str, optional
        :func:`corrupted_fingerprint` of ``settings.corrupted`` (computed here when None).
    log : callable, optional
        Receives one-line notes (a damaged file set aside); default: stderr.

    Returns
    -------
    dict
        The content of the result file: ``settings`` (as given, with ``corrupted_sha1``
        for a directory), ``settings_key``, ``corruption_params`` (the parameter set
        generated; None when read from a directory), ``n_images``, ``clean_accuracy``,
        ``corruptions`` (list of ``corruption, severity, accuracy``),
        ``mean_corruption_accuracy``, ``relative_corruption_accuracy``,
        ``mean_corruption_accuracy_15``, ``mean_corruption_accuracy_19``,
        ``corruption_source``, ``attacks`` (list
        of ``attack, norm, epsilon, accuracy``), ``cell_sha1``, ``seconds``, ``device``;
        ``corrupted_rows`` says how a directory's rows were matched to the test split.
    """
    run = RunFiles(run_dir)
    log = log or _stderr
    params = settings.params_for(_run_dataset(run.root))
    files: dict[str, tuple[int, int, str]] = {}
    if settings.corrupted and fingerprint is None:
        fingerprint, files = corrupted_fingerprint(
            settings.corrupted, settings.corruptions, settings.severities
        )
    want = settings.stored(fingerprint)
    key = result_key(want, None if settings.corrupted else params)
    out_path, part_path = (
        run.keyed(RunFiles.ROBUSTNESS_DIR, key),
        run.keyed(RunFiles.ROBUSTNESS_DIR, key, True),
    )
    n_cells = len(settings.corruptions) * len(settings.severities) + len(settings.attack_cells()) + 1
    if not force:
        old = _find(run, key, log)
        if old is not None:
            if tick:
                tick(n_cells)
            return old
    t0 = time.perf_counter()
    loaded = load_run(run.root, data, settings.device)
    model, splits, dev = loaded.model, loaded.splits, loaded.device
    test = splits.test
    idx = select_images(test.labels.numpy(), settings.n_images, settings.image_seed)
    labels = test.labels[torch.as_tensor(idx)]
    if cells is None:
        root = Path(sweep_dir) if sweep_dir else run.root.parent.parent
        cells = cell_source(root, settings, params, idx, test, files)
    elif cells.params != params:
        raise ValueError(
            f"{run.root} needs {params!r} corruptions but the sweep's first run "
            f"{cells.params!r}: expected runs of one dataset"
        )
    elif not np.array_equal(cells.idx, idx):
        raise ValueError(
            f"{run.root} has another test split than the sweep's first run: expected the same data"
        )
    clean = test.images[torch.as_tensor(idx)]
    part = {} if force else _start_cells(run, key, None if settings.corrupted else params, log)
    part = {"cells": {}, "attacks": {}, "sha1": {}, **part, "settings": want}
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
            ckey = _cell_key(name, sev)
            if ckey not in part["cells"]:
                imgs = cells.get(name, sev)
                part["cells"][ckey] = _accuracy(model, imgs, labels, splits.mean, splits.std, dev, bs)
                part["sha1"][ckey] = images_sha1(imgs)
                save()
            elif ckey not in part["sha1"]:  # an older partial file: record which images it was
                part["sha1"][ckey] = images_sha1(cells.get(name, sev))
            if tick:
                tick(1)
    apgd_wanted = [a for a in settings.attacks if a in APGD_ATTACKS]
    for atk, eps in settings.attack_cells():
        akey = _attack_key(atk, settings.norm, eps)
        if akey not in part["attacks"]:
            if atk in APGD_ATTACKS:
                # every APGD row of this epsilon at once: they share the APGD-CE stage
                res_apgd = apgd_accuracies(
                    model, clean, labels, eps, settings, apgd_wanted, splits.mean, splits.std, dev
                )
                for a, acc in res_apgd.items():
                    part["attacks"][_attack_key(a, settings.norm, eps)] = acc
            else:
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
                part["attacks"][akey] = res[0].accuracy
            save()
        if tick:
            tick(1)
    clean_acc = float(part["clean"])
    corr: list[dict[str, Any]] = [
        {"corruption": n, "severity": s, "accuracy": float(part["cells"][_cell_key(n, s)])}
        for n in settings.corruptions
        for s in settings.severities
    ]
    mean_c = float(np.mean([c["accuracy"] for c in corr])) if corr else math.nan
    std_acc = [c["accuracy"] for c in corr if c["corruption"] in STANDARD_CORRUPTIONS]
    all19 = set(STANDARD_CORRUPTIONS) | set(EXTRA_CORRUPTIONS) <= {c["corruption"] for c in corr}
    result = {
        "settings": want,
        "settings_key": key,
        "corruption_params": None if settings.corrupted else params,
        "n_images": int(len(idx)),
        "clean_accuracy": clean_acc,
        "corruptions": corr,
        "n_corruption_cells": len(corr),
        "mean_corruption_accuracy": mean_c,
        "relative_corruption_accuracy": mean_c / clean_acc if clean_acc > 0 and corr else math.nan,
        # RobustBench's average (the 15 standard types) and, with the release's 4 extra types, all 19
        "mean_corruption_accuracy_15": float(np.mean(std_acc)) if std_acc else math.nan,
        "mean_corruption_accuracy_19": mean_c if all19 else math.nan,
        "corruption_source": settings.source_text(params) if corr else None,
        "attacks": [
            {
                "attack": a,
                "norm": settings.norm,
                "epsilon": e,
                "accuracy": float(part["attacks"][_attack_key(a, settings.norm, e)]),
            }
            for a, e in settings.attack_cells()
        ],
        "cell_sha1": {
            _cell_key(n, s): part["sha1"][_cell_key(n, s)]
            for n in settings.corruptions
            for s in settings.severities
        },
        "image_indices_sha1": hashlib.sha1(idx.tobytes()).hexdigest(),
        "device": str(dev),
        "seconds": time.perf_counter() - t0,
    }
    if settings.corrupted:
        result["corrupted_rows"] = cells.order or "the test split's order"
    write_json(out_path, result)
    part_path.unlink(missing_ok=True)
    _drop_older_layout(run, key, None if settings.corrupted else params)
    return result


def _drop_older_layout(run: RunFiles, key: str, params: str | None) -> None:
    """Remove the older layout's files of settings ``key`` (now stored under their key).

    ``params``: the parameter set generated (None for a directory), as in :func:`result_key`.
    """
    for path, check in ((run.robustness, check_result), (run.robustness_partial, check_partial)):
        if not path.is_file():
            continue
        try:
            rec = check(read_json(path), path)
        except (FileNotFoundError, DamagedFileError):
            continue
        used = rec["corruption_params"] if "corruption_params" in rec else params
        if result_key(rec["settings"], used) == key:
            path.unlink(missing_ok=True)


def sweep_robustness_settings(sweep_dir: str | os.PathLike) -> tuple[RobustnessSettings, str]:
    """The robustness settings a sweep was (or is to be) evaluated with, and where they came from.

    In this order: the settings stored with the sweep's robustness results (those of most
    runs), the ``robustness`` section of its ``sweep.json`` (the preset's), the defaults.
    A stored result does not keep the path of a corrupted directory (``corrupted``):
    give it again.

    Returns
    -------
    (RobustnessSettings, str)
        The settings and ``"results"``, ``"sweep.json"`` or ``"defaults"``.
    """
    sweep_dir = Path(sweep_dir)
    try:
        summary = robustness_frame(sweep_dir, "summary")
    except Exception:  # no database or no table yet: fall through to the spec
        summary = pd.DataFrame()
    if not summary.empty and "settings" in summary.columns:
        text = summary["settings"].dropna().value_counts().index
        for t in text:
            try:
                return RobustnessSettings.from_dict(json.loads(t)), "results"
            except (TypeError, ValueError):
                continue
    try:
        spec = read_json(SweepFiles(sweep_dir).spec).get("spec") or {}
        rob = spec.get("robustness")
        if isinstance(rob, dict):
            return RobustnessSettings(**rob), "sweep.json"
    except (FileNotFoundError, DamagedFileError, TypeError, ValueError, AttributeError):
        pass
    return RobustnessSettings(), "defaults"


# --------------------------------------------------------------------------- the sweep
def sweep_robustness(
    sweep_dir: str | os.PathLike,
    settings: RobustnessSettings | None = None,
    data: str | os.PathLike | None = None,
    *,
    progress: bool = True,
    force: bool = False,
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
    force : bool, default False
        Recompute runs that have a result of these settings.
    log : callable, optional
        Receives one-line messages (default: skipped runs and damaged files go to stderr).

    Returns
    -------
    pandas.DataFrame
        The per-run summary of these settings (:func:`robustness_frame`).

    Raises
    ------
    ValueError
        No completed run; bad settings; a corrupted directory that does not fit the runs'
        test split (other image size, classes, number of images or row order).
    """
    sweep_dir = Path(sweep_dir)
    settings = (settings or RobustnessSettings()).validate()
    note = log or _stderr
    log = log or (lambda _m: None)
    done = completed_runs(sweep_dir, note=note)
    if done.empty:
        raise ValueError(f"no completed run in {sweep_dir}: robustness needs trained checkpoints")
    if data is None:
        data = read_data_hint(sweep_dir)
    # the directory's content fingerprint (a missing directory fails here, before any work)
    fingerprint, files = corrupted_fingerprint(settings.corrupted, settings.corruptions, settings.severities)
    # "auto" corruption parameters: by the dataset of the first run (all must share it).
    params = settings.params_for(_run_dataset(SweepFiles(sweep_dir).run(done["run_id"].iloc[0]).root))
    key = result_key(settings.stored(fingerprint), None if settings.corrupted else params)
    per_run = len(settings.corruptions) * len(settings.severities) + len(settings.attack_cells()) + 1
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=per_run * len(done), desc="robustness", unit="cell", dynamic_ncols=True, disable=None
        )
    cells: CellSource | None = None
    t0 = time.perf_counter()
    reused = 0
    try:
        for rid in done["run_id"]:
            run = SweepFiles(sweep_dir).run(rid)
            if not force and _find(run, key, note) is not None:
                reused += 1
                if bar is not None:
                    bar.update(per_run)
                continue
            if cells is None:
                first = load_run(run.root, data, "cpu")
                test = first.splits.test
                idx = select_images(test.labels.numpy(), settings.n_images, settings.image_seed)
                cells = cell_source(sweep_dir, settings, params, idx, test, files)
                cells.check()  # a corrupted directory that does not fit fails before any run
            evaluate_run(
                run.root,
                settings,
                cells,
                data,
                sweep_dir=sweep_dir,
                tick=bar.update if bar else None,
                force=force,
                fingerprint=fingerprint,
                log=note,
            )
    finally:
        if bar is not None:
            bar.close()
    log(
        f"robustness of {len(done)} runs (settings {key}): {len(done) - reused} evaluated, {reused} reused, "
        f"in {time.perf_counter() - t0:.0f} s"
    )
    return robustness_frame(sweep_dir, "summary", key)


# --------------------------------------------------------------------------- reading back
def _spec_settings(sweep_dir: Path) -> dict[str, Any] | None:
    """The robustness settings of the sweep's spec (``sweep.json``), compared, or None."""
    try:
        spec = read_json(SweepFiles(sweep_dir).spec).get("spec")
        d = spec.get("robustness") if isinstance(spec, dict) else None
        return RobustnessSettings(**d).compared() if isinstance(d, dict) and d else None
    except (FileNotFoundError, DamagedFileError, TypeError, ValueError):
        return None


def _same_settings(stored: Any, spec: dict[str, Any]) -> bool:
    """Whether stored settings are the spec's (fingerprint and source aside; "auto" matching any set)."""
    if not isinstance(stored, dict):
        return False
    a = {k: v for k, v in stored.items() if k not in ("source", "corrupted_sha1")}
    b = {k: v for k, v in spec.items() if k != "source"}
    if b.get("params") == "auto":
        a.pop("params", None)
        b.pop("params", None)
    return a == b


def _default(sweep_dir: Path, summary: pd.DataFrame, attacks: pd.DataFrame) -> tuple[str | None, str]:
    """The key of the sweep's default settings, and why it is the default."""
    if summary.empty:
        return None, ""
    per = summary.groupby("settings_key").agg(
        runs=("run_id", "nunique"), cells=("n_corruption_cells", "max"), images=("n_images", "max")
    )
    n_atk = (
        attacks.groupby(["settings_key", "run_id"]).size().groupby("settings_key").max()
        if len(attacks)
        else None
    )
    per["measurements"] = per["cells"].fillna(0) + (
        n_atk.reindex(per.index).fillna(0) if n_atk is not None else 0
    )
    spec = _spec_settings(sweep_dir)
    preferred = None
    if spec is not None:
        for k, text in zip(summary["settings_key"], summary["settings"]):
            try:
                if _same_settings(json.loads(text), spec):
                    preferred = k
                    break
            except (TypeError, ValueError):
                continue
    key = default_key(per.reset_index(), preferred)
    why = "the sweep's preset" if key == preferred else "evaluated on the most runs, with the most cells"
    return key, why


def robustness_frame(
    sweep_dir: str | os.PathLike, kind: str = "summary", key: str | None = None
) -> pd.DataFrame:
    """One robustness table of a sweep's database for one settings, joined with the run's columns.

    Parameters
    ----------
    sweep_dir : path
    kind : {"summary", "corruptions", "attacks"}
        One row per run, per corruption and severity, or per attack, norm and epsilon.
    key : str, optional
        Which stored settings (a settings key); default: the sweep's (its preset's
        settings when they have results, else those evaluated on the most runs, with the
        most cells, on the most images).

    Returns
    -------
    pandas.DataFrame
        ``attrs``: ``settings_key``, ``settings`` (JSON), ``default_because`` (why these
        settings) and ``others`` (how many other settings have results).
    """
    if kind not in ROBUSTNESS_TABLES.tables:
        raise ValueError(f"kind must be one of {', '.join(ROBUSTNESS_TABLES.tables)}, got {kind!r}")
    return robustness_frames(sweep_dir, key)[kind]


def robustness_frames(sweep_dir: str | os.PathLike, key: str | None = None) -> dict[str, pd.DataFrame]:
    """``summary``, ``corruptions`` and ``attacks`` frames of one settings (see :func:`robustness_frame`)."""
    sweep_dir = Path(sweep_dir)
    with open_store(sweep_dir, log=lambda _m: None, note=_stderr, analyses=[ROBUSTNESS_TABLES]) as store:
        frames = {k: store.frame(ROBUSTNESS_TABLES, k) for k in ROBUSTNESS_TABLES.tables}
    return pick_settings(frames, sweep_dir, key)


def pick_settings(
    frames: Mapping[str, pd.DataFrame], sweep_dir: str | os.PathLike, key: str | None = None
) -> dict[str, pd.DataFrame]:
    """The rows of one settings of the store's robustness frames (every settings side by side).

    ``key``: which settings; default: the sweep's (see :func:`robustness_frame`). Each frame
    gets ``attrs``: ``settings_key``, ``settings``, ``default_because``, ``others``.
    """
    summary = frames["summary"]
    why = "asked for"
    if key is None:
        key, why = _default(Path(sweep_dir), summary, frames["attacks"])
    keys = set(summary["settings_key"]) if "settings_key" in summary.columns else set()
    out = {}
    for kind, df in frames.items():
        if "settings_key" in df.columns:
            df = df[df["settings_key"] == key].reset_index(drop=True)
        settings = summary.loc[summary["settings_key"] == key, "settings"] if keys else summary.iloc[:0]
        df.attrs.update(
            settings_key=key,
            settings=str(settings.iloc[0]) if len(settings) else None,
            default_because=why,
            others=len(keys - {key}),
        )
        out[kind] = df
    return out


# --------------------------------------------------------------------------- files and tables
def check_result(obj: Any, where: Path) -> dict:
    """A robustness result checked against its schema; :class:`DamagedFileError` otherwise.

    Types, ranges (accuracies in [0, 1], severities 1..5, epsilons >= 0) and finite
    numbers; returns the known fields only, numbers as floats.
    """
    d = expect_dict(obj, where, "the file")
    out: dict[str, Any] = {
        "settings": expect_json(expect_dict(d.get("settings"), where, "settings"), where, "settings"),
        "corruption_params": expect_str(d.get("corruption_params"), where, "corruption_params", none=True),
        "n_images": expect_int(d.get("n_images"), where, "n_images", 1, 2**31),
        "clean_accuracy": expect_number(d.get("clean_accuracy"), where, "clean_accuracy", 0, 1),
    }
    corr = []
    for i, c in enumerate(expect_list(d.get("corruptions"), where, "corruptions")):
        c = expect_dict(c, where, f"corruptions[{i}]")
        corr.append(
            {
                "corruption": expect_str(c.get("corruption"), where, f"corruptions[{i}].corruption"),
                "severity": expect_int(c.get("severity"), where, f"corruptions[{i}].severity", 1, 5),
                "accuracy": expect_number(c.get("accuracy"), where, f"corruptions[{i}].accuracy", 0, 1),
            }
        )
    out["corruptions"] = corr
    out["n_corruption_cells"] = expect_int(d.get("n_corruption_cells"), where, "n_corruption_cells", 0, 2**31)
    if out["n_corruption_cells"] != len(corr):
        raise DamagedFileError(
            f"{where} is damaged (n_corruption_cells is {out['n_corruption_cells']}, expected {len(corr)}, "
            "the number of corruption rows)"
        )
    out["mean_corruption_accuracy"] = expect_number(
        d.get("mean_corruption_accuracy"), where, "mean_corruption_accuracy", 0, 1, none=True
    )
    out["relative_corruption_accuracy"] = expect_number(
        d.get("relative_corruption_accuracy"), where, "relative_corruption_accuracy", 0, math.inf, none=True
    )
    for name in ("mean_corruption_accuracy_15", "mean_corruption_accuracy_19"):
        if name in d:
            out[name] = expect_number(d[name], where, name, 0, 1, none=True)
    if d.get("corruption_source") is not None:
        out["corruption_source"] = expect_str(d["corruption_source"], where, "corruption_source")
    attacks = []
    for i, a in enumerate(expect_list(d.get("attacks"), where, "attacks")):
        a = expect_dict(a, where, f"attacks[{i}]")
        attacks.append(
            {
                "attack": expect_str(a.get("attack"), where, f"attacks[{i}].attack"),
                "norm": expect_str(a.get("norm"), where, f"attacks[{i}].norm"),
                "epsilon": expect_number(a.get("epsilon"), where, f"attacks[{i}].epsilon", 0),
                "accuracy": expect_number(a.get("accuracy"), where, f"attacks[{i}].accuracy", 0, 1),
            }
        )
    out["attacks"] = attacks
    sha = expect_dict(d.get("cell_sha1", {}), where, "cell_sha1")
    out["cell_sha1"] = {str(k): expect_str(v, where, f"cell_sha1.{k}") for k, v in sha.items()}
    for name in ("settings_key", "image_indices_sha1", "device", "corrupted_rows"):
        if name in d:
            out[name] = expect_str(d[name], where, name)
    if "seconds" in d:
        out["seconds"] = expect_number(d["seconds"], where, "seconds")
    return out


def check_partial(obj: Any, where: Path) -> dict:
    """A partial file (finished cells) checked against its schema; :class:`DamagedFileError` otherwise."""
    d = expect_dict(obj, where, "the file")
    out: dict[str, Any] = {
        "settings": expect_json(expect_dict(d.get("settings"), where, "settings"), where, "settings")
    }
    if "clean" in d:
        out["clean"] = expect_number(d["clean"], where, "clean", 0, 1)
    for name in ("cells", "attacks"):
        values = expect_dict(d.get(name, {}), where, name)
        out[name] = {str(k): expect_number(v, where, f"{name}.{k}", 0, 1) for k, v in values.items()}
    sha = expect_dict(d.get("sha1", {}), where, "sha1")
    out["sha1"] = {str(k): expect_str(v, where, f"sha1.{k}") for k, v in sha.items()}
    return out


def _robustness_rows(res: dict) -> dict[str, list[dict[str, Any]]]:
    """A checked result as rows of the three tables (``run_id`` added by the store)."""
    key = res.get("settings_key") or result_key(res["settings"], res.get("corruption_params"))
    summary = {
        "n_images": res.get("n_images"),
        "clean_accuracy": res.get("clean_accuracy"),
        "mean_corruption_accuracy": res.get("mean_corruption_accuracy"),
        "relative_corruption_accuracy": res.get("relative_corruption_accuracy"),
        "mean_corruption_accuracy_15": res.get("mean_corruption_accuracy_15"),
        "mean_corruption_accuracy_19": res.get("mean_corruption_accuracy_19"),
        "n_corruption_cells": res.get("n_corruption_cells"),
        "corruption_source": res.get("corruption_source"),
        "settings": json.dumps(res.get("settings"), sort_keys=True),
        "settings_key": key,
    }
    return {
        "summary": [summary],
        "corruptions": [{**c, "settings_key": key} for c in res.get("corruptions") or []],
        "attacks": [{**a, "settings_key": key} for a in res.get("attacks") or []],
    }


_RUN_COLUMNS = ("model", "alpha", "seed", "activation", "negative_slope", "mean_selectivity")
_BY_RUN = ("r.model", "r.alpha", "r.seed", "r.run_id")

#: The three robustness tables of the sweep's database, filled from the runs' result files
#: (every settings side by side, ``settings_key`` telling them apart).
ROBUSTNESS_TABLES = AnalysisTables(
    name="robustness",
    tables={
        "summary": Table(
            "robustness_runs",
            (
                ("run_id", "TEXT"),
                ("n_images", "INTEGER"),
                ("clean_accuracy", "REAL"),
                ("mean_corruption_accuracy", "REAL"),
                ("relative_corruption_accuracy", "REAL"),
                ("mean_corruption_accuracy_15", "REAL"),  # the 15 standard types (RobustBench's mean)
                ("mean_corruption_accuracy_19", "REAL"),  # all 19 types of the release, when evaluated
                ("n_corruption_cells", "INTEGER"),
                ("corruption_source", "TEXT"),  # generated (how) or read from a directory (which)
                ("settings", "TEXT"),  # JSON
                ("settings_key", "TEXT"),
            ),
            key=("run_id", "settings_key"),
            run_columns=_RUN_COLUMNS,
            order=(*_BY_RUN, "t.settings_key"),
        ),
        "corruptions": Table(
            "robustness_corruptions",
            (
                ("run_id", "TEXT"),
                ("corruption", "TEXT"),
                ("severity", "INTEGER"),
                ("accuracy", "REAL"),
                ("settings_key", "TEXT"),
            ),
            key=("run_id", "settings_key", "corruption", "severity"),
            run_columns=_RUN_COLUMNS,
            order=(*_BY_RUN, "t.settings_key", "t.corruption", "t.severity"),
        ),
        "attacks": Table(
            "robustness_attacks",
            (
                ("run_id", "TEXT"),
                ("attack", "TEXT"),
                ("norm", "TEXT"),
                ("epsilon", "REAL"),
                ("accuracy", "REAL"),
                ("settings_key", "TEXT"),
            ),
            key=("run_id", "settings_key", "attack", "norm", "epsilon"),
            run_columns=_RUN_COLUMNS,
            order=(*_BY_RUN, "t.settings_key", "t.attack", "t.epsilon"),
        ),
    },
    files=_files,
    read=_read_stored,
    rows=_robustness_rows,
)
