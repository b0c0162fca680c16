"""Paper 2's mechanisms, measured on every completed run of a sweep.

For each run (best-validation checkpoint, eval mode) and each selectivity layer, on the
SAME class-stratified subset of test images for every run:

* **clean dimensionality**: PCA dimensionality at ``share`` (default 95%) and the
  participation ratio of the layer's unit covariance
  (:mod:`selectivity.analysis.geometry`; units = channels, the spatial mean, by default,
  or every channel x position with ``units="flatten"``);
* for every perturbation (corruptions at one severity; PGD L-inf at a few epsilons; and,
  for matching, PGD L2 at each corruption's median input L2 distance):
  the dimensionality of the **perturbed** representation (``pca``,
  ``participation_ratio``), of the **change** ``a(x') - a(x)`` of the same images
  (``change_pca``, ``change_participation_ratio``) and the change's mean squared size
  ``1/N sum_n ||a(x'_n) - a(x_n)||^2`` (``change_sq_norm``); on the input, the mean and
  median per-image L2 distance and the mean L-inf distance (layer ``"input"``), on the
  output the accuracy (layer ``"output"``);
* **input-unit gradient variability** (:func:`selectivity.analysis.gradients.gradient_variability`)
  on a smaller stratified subset: layer means of ``V_samples``, ``V_units`` and the two
  norm CVs (``grad_var_samples``, ``grad_var_units``, ``grad_cv_samples``, ``grad_cv_units``).

Matching perturbation sizes: corruptions and L-inf attacks differ in input size, so for
each corruption an L2 PGD attack is run with ``epsilon`` = the corruption's median
per-image L2 distance on the image subset (``pgd-l2-match-<corruption>``): corruption and
attack then move the inputs by the same median Euclidean distance, and their change
dimensionalities can be compared at equal input change. Every perturbation's input
distances are recorded too, so other matchings can be made afterwards.

Cost: per batch one clean forward pass and one forward pass per perturbation, each
feeding every layer's accumulators at once (hooks reduce to ``(B, U)`` float64); the
attacks add ``steps`` forward+backward passes each. Memory ``O(U^2)`` per layer and
perturbation, whatever the number of images.

Results are written to ``runs/<id>/geometry.json`` (settings + flat rows) and loaded
into the ``geometry`` table of the sweep's database (:data:`GEOMETRY_TABLES`); a run
whose file has the same settings is not recomputed.

The shape of every per-run analysis: :class:`GeometrySettings` (frozen, validated on
construction), :func:`evaluate_run` (one run -> its record), :func:`sweep_geometry`
(every completed run of a sweep) and :func:`geometry_frame` (the table, read back).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ..analysis.geometry import (
    UNIT_MODES,
    CovarianceAccumulator,
    DifferenceAccumulator,
    layer_units,
    perturbation_norms,
    required_samples,
)
from ..analysis.gradients import gradient_variability
from ..core.hooks import ActivationCapture
from ..data import params_for_dataset
from ..perturb.attacks import pgd
from ..perturb.corruptions import CORRUPTIONS, corrupt
from ..run.checkpoint import load_run
from ..run.files import DamagedFileError, RunFiles, SweepFiles, read_json, write_json
from ..sweep.store import AnalysisTables, Table, open_store
from .common import completed_runs, read_data_hint, select_images

__all__ = [
    "GEOMETRY_NAME",
    "GEOMETRY_TABLES",
    "GeometrySettings",
    "perturbation_label",
    "evaluate_run",
    "sweep_geometry",
    "geometry_frame",
]

#: Per-run result file (relative to the run directory).
GEOMETRY_NAME = RunFiles.GEOMETRY
#: Default corruptions (one noise, one global photometric, one weather corruption).
DEFAULT_CORRUPTIONS = ("gaussian_noise", "contrast", "fog")
#: Default L-inf PGD budgets (pixel units, [0, 1] scale).
DEFAULT_EPSILONS = (1 / 255, 4 / 255)
#: Version of the geometry.json layout; a change forces recomputation.
FORMAT = 1


@dataclass(frozen=True)
class GeometrySettings:
    """What :func:`evaluate_run` computes; stored with the results (a change recomputes).

    Validated on construction (``ValueError``, one line, naming the setting).

    Attributes
    ----------
    n_images : int
        Stratified test images (same for every run; fewer if the test split is smaller).
    image_seed : int
        Seed of the stratified draw.
    layers : tuple of str, optional
        Module names; default the run's ``selectivity_layers`` or the model's default sites.
    share : float
        Variance share of the PCA dimensionality, in (0, 1].
    units : {"channels", "flatten"}
    min_ratio : float
        Samples per unit required (:func:`selectivity.analysis.geometry.required_samples`).
    corruptions : tuple of str
    severity : int
        1..5, CIFAR-10-C (or Tiny ImageNet-C) parameters.
    corruption_seed : int
    epsilons : tuple of float
        L-inf PGD budgets.
    match_l2 : bool
        Also attack with L2 PGD at each corruption's median input L2 distance.
    attack_steps : int
    attack_seed : int
    gradient_images : int
        Images for the gradient variability (0: skip it).
    gradient_layers : tuple of str, optional
        Layers for the gradient variability; default: all measured layers.
    batch_size : int
    """

    n_images: int = 2000
    image_seed: int = 0
    layers: tuple[str, ...] | None = None
    share: float = 0.95
    units: str = "channels"
    min_ratio: float = 1.0
    corruptions: tuple[str, ...] = DEFAULT_CORRUPTIONS
    severity: int = 3
    corruption_seed: int = 0
    epsilons: tuple[float, ...] = DEFAULT_EPSILONS
    match_l2: bool = True
    attack_steps: int = 10
    attack_seed: int = 0
    gradient_images: int = 64
    gradient_layers: tuple[str, ...] | None = None
    batch_size: int = 250

    def __post_init__(self) -> None:
        for name in ("layers", "corruptions", "epsilons", "gradient_layers"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, tuple):
                object.__setattr__(self, name, tuple(v))
        _check(self)

    def to_dict(self) -> dict:
        """JSON-ready settings (tuples as lists)."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _check(s: GeometrySettings) -> None:
    """Raise ``ValueError`` (one line) for settings that cannot work."""
    if isinstance(s.share, bool) or not isinstance(s.share, (int, float)) or not 0 < s.share <= 1:
        raise ValueError(f"the variance share must be in (0, 1], got {s.share!r}")
    if s.units not in UNIT_MODES:
        raise ValueError(f"units must be one of {UNIT_MODES}, got {s.units!r}")
    if s.n_images < 2:
        raise ValueError(f"the number of images must be >= 2, got {s.n_images}")
    if s.gradient_images < 0 or s.gradient_images == 1:
        raise ValueError(f"gradient images must be 0 (skip) or >= 2, got {s.gradient_images}")
    bad = [c for c in s.corruptions if c not in CORRUPTIONS]
    if bad:
        raise ValueError(f"unknown corruption(s) {bad}; known: {', '.join(CORRUPTIONS)}")
    if not 1 <= s.severity <= 5:
        raise ValueError(f"severity must be 1..5, got {s.severity}")
    if any(not (e > 0) for e in s.epsilons):
        raise ValueError(f"epsilons must be > 0, got {list(s.epsilons)}")
    if s.attack_steps < 1 or s.batch_size < 1:
        raise ValueError("attack steps and batch size must be >= 1")


def perturbation_label(kind: str, name: str, value: float | int) -> str:
    """Row label of a perturbation: ``gaussian_noise-3``, ``pgd-linf-4/255``, ``pgd-l2-match-fog-3``."""
    if kind == "corruption":
        return f"{name}-{int(value)}"
    if name == "linf":
        return f"pgd-linf-{round(float(value) * 255, 3):g}/255"
    return f"pgd-l2-match-{name}"


def _default_layers(model: nn.Module) -> list[str]:
    fn = getattr(model, "default_selectivity_layers", None)
    return list(fn()) if callable(fn) else []


def _check_layers(model: nn.Module, layers: Sequence[str], model_name: str) -> None:
    modules = dict(model.named_modules())
    missing = [n for n in layers if n not in modules]
    if missing:
        sites: list[str] = list(_default_layers(model))
        raise ValueError(
            f"layer {missing[0]!r} does not exist in {model_name}; "
            f"its selectivity layers are: {', '.join(sites) or '(none)'}"
        )


def _normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x - mean) / std


def _read_cached(path: Path, settings: dict) -> dict | None:
    try:
        saved = read_json(path)
    except (FileNotFoundError, ValueError):
        return None
    if saved.get("format") != FORMAT or saved.get("settings") != settings:
        return None
    return saved


def evaluate_run(
    run_dir: str | os.PathLike,
    settings: GeometrySettings = GeometrySettings(),
    data: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    *,
    force: bool = False,
    on_batch: Callable[[], None] | None = None,
) -> dict:
    """Compute (or reuse) the geometry of one run and write ``run_dir/geometry.json``.

    Parameters
    ----------
    run_dir : path
        A completed run directory.
    settings : GeometrySettings
    data : path, optional
        Dataset location.
    device : str or torch.device
    force : bool
        Recompute even if ``geometry.json`` holds the same settings.
    on_batch : callable, optional
        Called after each image batch (progress bars).

    Returns
    -------
    dict
        ``{"format", "settings", "rows", "reused"}``; ``rows`` are dicts with
        ``layer_index, layer, kind, perturbation, measure, value``.

    Raises
    ------
    ValueError
        Bad settings, a layer that does not exist, too few images for a layer's units
        (the message says how many are needed).
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir, data, device)
    model, cfg, splits, dev = run.model, run.config, run.splits, run.device
    layers = list(settings.layers or cfg.selectivity_layers or _default_layers(model))
    _check_layers(model, layers, cfg.model)
    grad_layers = list(settings.gradient_layers or layers) if settings.gradient_images else []
    _check_layers(model, grad_layers, cfg.model)
    labels = splits.test.labels.numpy()
    idx = select_images(labels, settings.n_images, settings.image_seed)
    # Stored settings: what was asked plus what it resolved to, so a reuse is exact.
    stored = {**settings.to_dict(), "layers": layers, "gradient_layers": grad_layers, "images_used": len(idx)}
    out = RunFiles(run_dir).geometry
    if not force:
        cached = _read_cached(out, stored)
        if cached is not None:
            return {**cached, "reused": True}

    mean = torch.tensor(splits.mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    std = torch.tensor(splits.std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    images = splits.test.images[torch.as_tensor(idx)]  # (N, C, H, W) uint8
    targets = splits.test.labels[torch.as_tensor(idx)]
    params = params_for_dataset(cfg.dataset)
    units = settings.units

    # Probe the layer widths on 2 images: refuse too few images before any real work.
    with torch.no_grad(), ActivationCapture(model, layers, reduce=lambda t: layer_units(t, units)) as cap:
        model(_normalise(images[:2].to(dev, torch.float32) / 255, mean, std))
        widths = {n: int(cap.outputs[n].shape[1]) for n in layers}
    widest = max(widths, key=lambda n: widths[n])
    need = required_samples(widths[widest], settings.min_ratio)
    if len(idx) < need:
        more = "" if len(idx) == settings.n_images else f" (the test split has only {len(idx)})"
        raise ValueError(
            f"too few images: layer {widest!r} has {widths[widest]} units ({units}) and needs at least "
            f"{need} images, got {len(idx)}{more}; use --images {need} or more"
        )

    # Corruptions are model-independent; their median L2 sets the matched L2 attacks.
    corr_gens = {}
    for c in settings.corruptions:
        g = torch.Generator(device=dev)
        g.manual_seed(settings.corruption_seed)
        corr_gens[c] = g
    perts: list[tuple[str, str, str, float | int]] = [
        ("corruption", perturbation_label("corruption", c, settings.severity), c, settings.severity)
        for c in settings.corruptions
    ]
    perts += [
        ("adversarial", perturbation_label("adversarial", "linf", e), "linf", e) for e in settings.epsilons
    ]
    matched_eps: dict[str, float] = {}
    if settings.match_l2 and settings.corruptions:
        norms: dict[str, list[torch.Tensor]] = {c: [] for c in settings.corruptions}
        probe_gens = {}
        for c in settings.corruptions:
            g = torch.Generator(device=dev)
            g.manual_seed(settings.corruption_seed)
            probe_gens[c] = g
        for i in range(0, len(idx), settings.batch_size):
            xb = images[i : i + settings.batch_size].to(dev, torch.float32) / 255
            for c in settings.corruptions:
                xc = corrupt(xb, c, settings.severity, params=params, generator=probe_gens[c])
                norms[c].append(perturbation_norms(xb, xc, "l2").cpu())
        for c in settings.corruptions:
            label = perturbation_label("corruption", c, settings.severity)
            matched_eps[label] = float(torch.cat(norms[c]).median())
            perts.append(
                ("adversarial", perturbation_label("adversarial", label, 0), "l2", matched_eps[label])
            )

    clean = {n: CovarianceAccumulator(units) for n in layers}
    pert_acc = {(p[1], n): CovarianceAccumulator(units) for p in perts for n in layers}
    diff_acc = {(p[1], n): DifferenceAccumulator(units) for p in perts for n in layers}
    l2: dict[str, list[torch.Tensor]] = {p[1]: [] for p in perts}
    linf: dict[str, list[torch.Tensor]] = {p[1]: [] for p in perts}
    correct: dict[str, int] = {"clean": 0, **{p[1]: 0 for p in perts}}
    atk_gen = torch.Generator(device=dev)
    atk_gen.manual_seed(settings.attack_seed)

    for i in range(0, len(idx), settings.batch_size):
        xb = images[i : i + settings.batch_size].to(dev, torch.float32) / 255  # (B, C, H, W) in [0, 1]
        yb = targets[i : i + settings.batch_size].to(dev)
        # All perturbed inputs first (attacks need gradients; no capture hooks active then).
        xs: dict[str, torch.Tensor] = {}
        for kind, label, name, value in perts:
            if kind == "corruption":
                xs[label] = corrupt(xb, name, int(value), params=params, generator=corr_gens[name])
            else:
                xs[label] = pgd(
                    model,
                    xb,
                    yb,
                    float(value),
                    norm=name,
                    steps=settings.attack_steps,
                    mean=splits.mean,
                    std=splits.std,
                    generator=atk_gen,
                )
        with torch.no_grad(), ActivationCapture(model, layers, reduce=lambda t: layer_units(t, units)) as cap:
            logits = model(_normalise(xb, mean, std))
            correct["clean"] += int((logits.argmax(1) == yb).sum())
            a = dict(cap.outputs)  # layer -> (B, U) float64
            for n in layers:
                clean[n].update(a[n])
            for _, label, _, _ in perts:
                logits = model(_normalise(xs[label], mean, std))
                correct[label] += int((logits.argmax(1) == yb).sum())
                b = cap.outputs
                for n in layers:
                    pert_acc[(label, n)].update(b[n])
                    diff_acc[(label, n)].update(a[n], b[n])
                l2[label].append(perturbation_norms(xb, xs[label], "l2").cpu())
                linf[label].append(perturbation_norms(xb, xs[label], "linf").cpu())
        if on_batch is not None:
            on_batch()

    share, ratio = settings.share, settings.min_ratio
    rows: list[dict] = []

    def add(li: int, layer: str, kind: str, pert: str, measure: str, value: float) -> None:
        rows.append(
            {
                "layer_index": li,
                "layer": layer,
                "kind": kind,
                "perturbation": pert,
                "measure": measure,
                "value": float(value),
            }
        )

    n_img = len(idx)
    add(-1, "output", "clean", "clean", "accuracy", correct["clean"] / n_img)
    for li, n in enumerate(layers):
        d = clean[n].dimensionality(share, min_ratio=ratio)
        add(li, n, "clean", "clean", "pca", d.pca)
        add(li, n, "clean", "clean", "participation_ratio", d.participation_ratio)
        add(li, n, "clean", "clean", "units", d.n_units)
    for kind, label, _, value in perts:
        d2 = torch.cat(l2[label])
        add(-1, "input", kind, label, "l2_mean", float(d2.mean()))
        add(-1, "input", kind, label, "l2_median", float(d2.median()))
        add(-1, "input", kind, label, "linf_mean", float(torch.cat(linf[label]).mean()))
        if kind == "adversarial":
            add(-1, "input", kind, label, "epsilon", float(value))
        add(-1, "output", kind, label, "accuracy", correct[label] / n_img)
        for li, n in enumerate(layers):
            dp = pert_acc[(label, n)].dimensionality(share, min_ratio=ratio)
            dc = diff_acc[(label, n)].dimensionality(share, min_ratio=ratio)
            add(li, n, kind, label, "pca", dp.pca)
            add(li, n, kind, label, "participation_ratio", dp.participation_ratio)
            add(li, n, kind, label, "change_pca", dc.pca)
            add(li, n, kind, label, "change_participation_ratio", dc.participation_ratio)
            add(
                li,
                n,
                kind,
                label,
                "change_sq_norm",
                diff_acc[(label, n)].covariance_accumulator.mean_square_norm,
            )

    if grad_layers:
        gidx = select_images(labels, settings.gradient_images, settings.image_seed)
        xg = splits.test.images[torch.as_tensor(gidx)].to(dev, torch.float32) / 255
        positions = {n: i for i, n in enumerate(layers)}
        for n in grad_layers:
            gv = gradient_variability(model, n, xg, mean=splits.mean, std=splits.std).summary()
            li = positions.get(n, -1)
            add(li, n, "clean", "clean", "grad_var_samples", gv["across_samples"])
            add(li, n, "clean", "clean", "grad_var_units", gv["across_units"])
            add(li, n, "clean", "clean", "grad_cv_samples", gv["norm_cv_samples"])
            add(li, n, "clean", "clean", "grad_cv_units", gv["norm_cv_units"])

    result = {"format": FORMAT, "settings": stored, "matched_l2_epsilons": matched_eps, "rows": rows}
    write_json(out, result)
    return {**result, "reused": False}


def sweep_geometry(
    sweep_dir: str | os.PathLike,
    settings: GeometrySettings = GeometrySettings(),
    data: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    *,
    progress: bool = True,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Geometry of every completed run of a sweep; results in run dirs and the database.

    Runs whose ``geometry.json`` holds the same settings are reused. Returns
    :func:`geometry_frame` of the sweep afterwards.
    """
    log = log or (lambda _m: None)
    sweep_dir = Path(sweep_dir)
    if data is None:
        data = read_data_hint(sweep_dir)
    runs = completed_runs(sweep_dir, log=lambda _m: None)
    if runs.empty:
        raise ValueError(f"{sweep_dir} has no completed runs to measure")
    batches = -(-settings.n_images // settings.batch_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(runs) * batches, desc="geometry", unit="batch", dynamic_ncols=True)
    reused = 0
    try:
        for run_id in runs["run_id"]:
            if bar is not None:
                bar.set_postfix_str(str(run_id))
            res = evaluate_run(
                SweepFiles(sweep_dir).run(run_id).root,
                settings,
                data,
                device,
                force=force,
                on_batch=(lambda: bar.update(1)) if bar is not None else None,
            )
            if res["reused"]:
                reused += 1
                if bar is not None:
                    bar.update(batches)
    finally:
        if bar is not None:
            bar.close()
    log(f"geometry of {len(runs)} run(s): {len(runs) - reused} computed, {reused} reused")
    return geometry_frame(sweep_dir)


def geometry_frame(sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """The sweep's geometry table (database, synced with the run directories), with run columns."""
    with open_store(Path(sweep_dir), log=lambda _m: None, analyses=[GEOMETRY_TABLES]) as store:
        return store.frame(GEOMETRY_TABLES, "rows")


# --------------------------------------------------------------------------- the store's table
def _read_geometry(path: Path) -> dict:
    """A ``geometry.json``; ``DamagedFileError`` unless its ``rows`` are a list of objects."""
    saved = read_json(path)
    rows = saved.get("rows")
    if not (isinstance(rows, list) and all(isinstance(r, dict) for r in rows)):
        raise DamagedFileError(f"{path} is damaged (expected 'rows', a list of objects)")
    return saved


def _geometry_rows(record: dict) -> dict[str, list[dict[str, Any]]]:
    return {"rows": list(record["rows"])}


#: The ``geometry`` table of the sweep's database, filled from ``RUN/geometry.json``.
GEOMETRY_TABLES = AnalysisTables(
    name="geometry",
    tables={
        "rows": Table(
            "geometry",
            (
                ("run_id", "TEXT"),
                ("layer_index", "INTEGER"),  # -1 for the input and the output, else the layer's position
                ("layer", "TEXT"),  # a module name, "input" (pixel distances) or "output" (accuracy)
                ("kind", "TEXT"),  # clean | corruption | adversarial
                ("perturbation", "TEXT"),  # e.g. clean, gaussian_noise-3, pgd-linf-4/255, pgd-l2-match-fog-3
                ("measure", "TEXT"),  # e.g. pca, participation_ratio, change_pca, l2_mean, grad_var_samples
                ("value", "REAL"),
            ),
            key=("run_id", "layer", "perturbation", "measure"),
            run_columns=(
                "model",
                "alpha",
                "seed",
                "activation",
                "negative_slope",
                "status",
                "mean_selectivity",
                "test_accuracy",
            ),
            run_columns_first=False,
            order=("r.model", "r.alpha", "r.seed", "t.kind", "t.perturbation", "t.layer_index", "t.measure"),
        )
    },
    files=lambda run: [run.geometry] if run.geometry.exists() else [],
    read=_read_geometry,
    rows=_geometry_rows,
)
