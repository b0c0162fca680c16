"""Paper 2's mechanisms, measured on every completed run of a sweep.

For each run (best-validation checkpoint, eval mode) and each selectivity layer, on the
SAME class-stratified subset of test images for every run:

* **clean dimensionality**: PCA dimensionality at ``share`` (default 95%) and the
  participation ratio of the layer's unit covariance
  (:mod:`selectivity.analysis.geometry`; units = channels, the spatial mean, by default,
  or every channel x position with ``units="flatten"``);
* for every perturbation the dimensionality of the **perturbed** representation
  (``pca``, ``participation_ratio``), its **increase** over the clean representation of
  the same images (``increase_pca = D(a(x')) - D(a(x))``, ``increase_participation_ratio``),
  the dimensionality of the **change** ``a(x') - a(x)`` (``change_pca``,
  ``change_participation_ratio``) and the change's mean squared size
  ``1/N sum_n ||a(x'_n) - a(x_n)||^2`` (``change_sq_norm``); on the input, the mean and
  median per-image L2 distance and the mean L-inf distance (layer ``"input"``), on the
  output the accuracy (layer ``"output"``);
* **input-unit gradient variability** (:func:`selectivity.analysis.gradients.gradient_variability`)
  on a smaller stratified subset, layer means of every measure: ``1 - mean pairwise
  cosine`` across samples and across units (``grad_var_samples``, ``grad_var_units``), the
  coefficient of variation of the gradient norms (``grad_cv_samples``, ``grad_cv_units``;
  without the zero gradients: ``grad_cv_samples_nonzero``, ``grad_cv_units_nonzero``), the
  element-wise variance (``grad_elem_var_samples``, ``grad_elem_var_units``) and the share
  of (image, unit) pairs whose gradient is exactly zero (``grad_zero_fraction``, inactive
  units, counted apart because they inflate the CVs).

The perturbations are, by default, those of the robustness step
(:meth:`GeometrySettings.matching` builds them from a
:class:`~selectivity.evaluate.robustness.RobustnessSettings`): every corruption at every
chosen severity (the same corrupted images: the robustness step's cells, generated and
cached under ``SWEEP/analysis/robustness_cells/`` or read from a CIFAR-10-C directory) and
FGSM and PGD at the robustness epsilons (the same step size, restarts and seeded random
starts). **Sensitivity analysis** (``match_l2``): for each corruption at
``match_severity`` an L2 PGD attack with ``epsilon`` = the corruption's median per-image
L2 distance on the image subset (kind ``matched-l2``, ``pgd-l2-match-<corruption>-<s>``):
corruption and attack then move the inputs by the same median Euclidean distance. Our
choice, not the paper's; it is reported apart.

**Early layers** (``early_layers``): a count (the first ``k`` measured layers), a
fraction (the first ``ceil(f * L)``, at least one; default 1/3) or layer names; stored as
rows ``measure="early"`` (1 or 0 per layer), which the report averages over.

**Estimators** (``units``): ``"channels"`` streams a float64 covariance of the channel
means per layer (memory ``O(C^2)``); ``"flatten"`` keeps the activations of every channel x
position, or of ``positions`` random positions per map, and takes the spectrum of the
``N x N`` Gram matrix (:func:`selectivity.analysis.geometry.flattened_eigenvalues`, exact
when ``N <= C*H*W``): memory ``2 x N x sum_l C_l k_l`` float32 values (clean and one
perturbation at a time).

Cost: one clean forward pass per batch, then per perturbation one forward pass (the
attacks add their steps), each feeding every layer at once. Perturbations are measured
one after the other (the clean activations of the subset are kept, ``N x sum_l C_l``), so
each perturbation's result does not depend on which others are asked for.

Results are written to ``runs/<id>/geometry/<key>.json`` (settings + flat rows; ``<key>``
is :func:`~selectivity.evaluate.common.settings_key` of the settings as resolved for the
run) and loaded into the ``geometry`` table of the sweep's database
(:data:`GEOMETRY_TABLES`), results of other settings side by side; a run with a result of
the same settings is not recomputed (``force`` recomputes). A ``runs/<id>/geometry.json``
of the older layout is read (and reused) as if keyed by its settings. A file that is not
of its schema (:func:`check_geometry`) is set aside in ``RUN/damaged/`` and the run
measured again. :func:`geometry_frame` shows one settings' rows: by default those
measured on the most runs, with the most rows.

The shape of every per-run analysis: :class:`GeometrySettings` (frozen, validated on
construction), :func:`evaluate_run` (one run -> its record), :func:`sweep_geometry`
(every completed run of a sweep) and :func:`geometry_frame` (the table, read back).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ..analysis.geometry import (
    UNIT_MODES,
    CovarianceAccumulator,
    Dimensionality,
    flattened_dimensionality,
    layer_units,
    perturbation_norms,
    required_samples,
    spatial_positions,
)
from ..analysis.gradients import gradient_variability
from ..core.hooks import ActivationCapture
from ..perturb.attacks import attack
from ..perturb.corruptions import CORRUPTIONS
from ..run.checkpoint import load_run
from ..run.files import DamagedFileError, RunFiles, SweepFiles, read_json, write_json
from ..sweep.store import AnalysisTables, Table, open_store
from .cells import CellSource, corrupted_fingerprint
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
from .robustness import DEFAULT_EPSILONS, PARAMS, RobustnessSettings, cell_source

__all__ = [
    "GEOMETRY_NAME",
    "GEOMETRY_TABLES",
    "GEOMETRY_ATTACKS",
    "GRADIENT_MEASURES",
    "GeometrySettings",
    "parse_early_layers",
    "early_layer_names",
    "check_geometry",
    "geometry_results",
    "perturbation_label",
    "evaluate_run",
    "sweep_geometry",
    "geometry_frame",
    "pick_settings",
]

#: Per-run result file (relative to the run directory).
GEOMETRY_NAME = RunFiles.GEOMETRY
#: Attacks the geometry step can perturb with (those of the paper; APGD is not measured here).
GEOMETRY_ATTACKS = ("fgsm", "pgd")
#: Version of the geometry.json layout; a change forces recomputation.
FORMAT = 2
#: Row measure of each gradient summary (:meth:`GradientVariability.summary` key -> row name).
GRADIENT_MEASURES: dict[str, str] = {
    "across_samples": "grad_var_samples",
    "across_units": "grad_var_units",
    "norm_cv_samples": "grad_cv_samples",
    "norm_cv_units": "grad_cv_units",
    "norm_cv_samples_nonzero": "grad_cv_samples_nonzero",
    "norm_cv_units_nonzero": "grad_cv_units_nonzero",
    "variance_samples": "grad_elem_var_samples",
    "variance_units": "grad_elem_var_units",
    "zero_fraction": "grad_zero_fraction",
}

EarlyLayers = int | float | tuple[str, ...]


def parse_early_layers(text: str) -> EarlyLayers:
    """``--early-layers``: ``"3"`` (a count), ``"0.5"`` or ``"1/3"`` (a fraction) or ``"a,b"`` (names).

    Raises
    ------
    ValueError
        An empty value, a count < 1, or a fraction outside (0, 1].
    """
    t = str(text).strip()
    if not t:
        raise ValueError("early layers: expected a count (3), a fraction (1/3, 0.5) or layer names (a,b)")
    if t.isdigit():
        k = int(t)
        if k < 1:
            raise ValueError(f"early layers: a count must be >= 1, got {t!r}")
        return k
    if "," not in t:
        try:
            num, _, den = t.partition("/")
            f = float(num) / float(den) if den else float(num)
        except (ValueError, ZeroDivisionError):
            f = math.nan
            if any(c.isdigit() for c in t[:1]):
                raise ValueError(
                    f"early layers: {t!r} is neither a count, a fraction in (0, 1] nor a layer name"
                ) from None
        else:
            if not (0 < f <= 1):
                raise ValueError(f"early layers: a fraction must be in (0, 1], got {t!r}")
            return f
    names = tuple(p.strip() for p in t.split(",") if p.strip())
    if not names:
        raise ValueError("early layers: expected a count (3), a fraction (1/3, 0.5) or layer names (a,b)")
    return names


def early_layer_names(layers: Sequence[str], early: EarlyLayers) -> list[str]:
    """The early layers among ``layers`` (in order): a count, a fraction or names.

    Parameters
    ----------
    layers : sequence of str
        The measured layers, input side first.
    early : int, float or tuple of str
        ``k`` (the first ``min(k, L)``), ``f`` in (0, 1] (the first ``max(1, ceil(f L))``)
        or names (each must be measured).

    Raises
    ------
    ValueError
        A name that is not a measured layer.
    """
    layers = list(layers)
    if isinstance(early, tuple):
        missing = [n for n in early if n not in layers]
        if missing:
            raise ValueError(
                f"early layer {missing[0]!r} is not a measured layer; measured: {', '.join(layers)}"
            )
        return [n for n in layers if n in early]
    if isinstance(early, int):
        return layers[: min(early, len(layers))]
    return layers[: max(1, math.ceil(len(layers) * float(early) - 1e-9))]


@dataclass(frozen=True)
class GeometrySettings:
    """What :func:`evaluate_run` computes; stored with the results (a change recomputes).

    Validated on construction (``ValueError``, one line, naming the setting). The
    perturbation fields mirror :class:`~selectivity.evaluate.robustness.RobustnessSettings`
    (:meth:`matching` copies them), so by default the geometry is measured on the
    perturbations the robustness step evaluates.

    Attributes
    ----------
    n_images : int
        Stratified test images (same for every run; fewer if the test split is smaller).
    image_seed : int
        Seed of the stratified draw (and of the spatial positions of ``positions``).
    layers : tuple of str, optional
        Module names; default the run's ``selectivity_layers`` or the model's default sites.
    early_layers : int, float or tuple of str
        Which measured layers count as early (module docstring); default the first third.
    share : float
        Variance share of the PCA dimensionality, in (0, 1].
    units : {"channels", "flatten"}
        Estimator: channel means (streamed covariance) or flattened maps (Gram matrix).
    positions : int, optional
        With ``units="flatten"``: random spatial positions kept per map (None: all).
    min_ratio : float
        Samples per unit required with ``units="channels"``
        (:func:`selectivity.analysis.geometry.required_samples`).
    corruptions : tuple of str
    severities : tuple of int
        1..5, CIFAR-10-C (or Tiny ImageNet-C) parameters.
    params : {"auto", "cifar10", "tinyimagenet"}
        Parameters of the generated corruptions (as the robustness step's).
    corruption_seed : int
    corrupted : str, optional
        A CIFAR-10-C or Tiny ImageNet-C directory to read the corrupted images from.
    attacks : tuple of str
        Subset of :data:`GEOMETRY_ATTACKS`.
    epsilons : tuple of float
        Attack budgets (pixel units, > 0).
    norm : {"linf", "l2"}
    pgd_steps, pgd_step_factor, pgd_restarts : int, float, int
        PGD iterations, step size ``pgd_step_factor * eps / pgd_steps``, random restarts.
    attack_seed : int
        Seed of the random starts (one generator per attack and epsilon).
    match_l2 : bool
        Sensitivity analysis: also L2 PGD at each corruption's median input L2 distance.
    match_severity : int
        The severity whose distances the matched attacks take.
    gradient_images : int
        Images for the gradient variability (0: skip it).
    gradient_layers : tuple of str, optional
        Layers for the gradient variability; default: all measured layers.
    batch_size : int
    """

    n_images: int = 2000
    image_seed: int = 0
    layers: tuple[str, ...] | None = None
    early_layers: EarlyLayers = 1 / 3
    share: float = 0.95
    units: str = "channels"
    positions: int | None = None
    min_ratio: float = 1.0
    corruptions: tuple[str, ...] = CORRUPTIONS
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    params: str = "auto"
    corruption_seed: int = 0
    corrupted: str | None = None
    attacks: tuple[str, ...] = GEOMETRY_ATTACKS
    epsilons: tuple[float, ...] = DEFAULT_EPSILONS
    norm: str = "linf"
    pgd_steps: int = 10
    pgd_step_factor: float = 2.5
    pgd_restarts: int = 1
    attack_seed: int = 0
    match_l2: bool = False
    match_severity: int = 3
    gradient_images: int = 64
    gradient_layers: tuple[str, ...] | None = None
    batch_size: int = 250

    def __post_init__(self) -> None:
        for name in ("layers", "corruptions", "severities", "attacks", "epsilons", "gradient_layers"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, tuple):
                object.__setattr__(self, name, tuple(v))
        if isinstance(self.early_layers, list):
            object.__setattr__(self, "early_layers", tuple(self.early_layers))
        object.__setattr__(self, "epsilons", tuple(float(e) for e in self.epsilons))
        _check(self)

    def to_dict(self) -> dict:
        """JSON-ready settings (tuples as lists)."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def matching(cls, robustness: RobustnessSettings, **overrides: Any) -> GeometrySettings:
        """The perturbations (and image subset) of a robustness evaluation, ``overrides`` on top.

        Corruptions, severities, parameters and seed, the corrupted directory, the FGSM and
        PGD attacks with their epsilons, norm, steps, step factor, restarts and seed, the
        image subset (``n_images``, ``image_seed``; the whole test split is taken as 10,000
        images at most) and the batch size (it orders the random starts) are copied.
        """
        r = robustness
        base: dict[str, Any] = dict(
            n_images=r.n_images if r.n_images is not None else 10_000,
            image_seed=r.image_seed,
            corruptions=r.corruptions,
            severities=r.severities,
            params=r.params,
            corruption_seed=r.corruption_seed,
            corrupted=r.corrupted,
            attacks=tuple(a for a in r.attacks if a in GEOMETRY_ATTACKS),
            epsilons=tuple(e for e in r.epsilons if e > 0),
            norm=r.norm,
            pgd_steps=r.pgd_steps,
            pgd_step_factor=r.pgd_step_factor,
            pgd_restarts=r.pgd_restarts,
            attack_seed=r.attack_seed,
            batch_size=r.batch_size,
        )
        known = {f.name for f in fields(cls)}
        bad = [k for k in overrides if k not in known]
        if bad:
            raise ValueError(f"unknown geometry setting {bad[0]!r}; known: {', '.join(sorted(known))}")
        return cls(**{**base, **overrides})

    def robustness_settings(self) -> RobustnessSettings:
        """The robustness settings whose corrupted cells these settings read (:class:`CellSource`)."""
        return RobustnessSettings(
            n_images=self.n_images,
            image_seed=self.image_seed,
            corruptions=self.corruptions,
            severities=self.severities,
            params=self.params,
            corruption_seed=self.corruption_seed,
            corrupted=self.corrupted,
            attacks=(),
            batch_size=self.batch_size,
        )


def _check(s: GeometrySettings) -> None:
    """Raise ``ValueError`` (one line) for settings that cannot work."""
    if isinstance(s.share, bool) or not isinstance(s.share, (int, float)) or not 0 < s.share <= 1:
        raise ValueError(f"the variance share must be in (0, 1], got {s.share!r}")
    if s.units not in UNIT_MODES:
        raise ValueError(f"units must be one of {UNIT_MODES}, got {s.units!r}")
    if s.positions is not None:
        if isinstance(s.positions, bool) or not isinstance(s.positions, int) or s.positions < 1:
            raise ValueError(f"positions must be an integer >= 1 (or None: all), got {s.positions!r}")
        if s.units != "flatten":
            raise ValueError("positions (spatial subsampling) applies to units='flatten' only")
    if s.n_images < 2:
        raise ValueError(f"the number of images must be >= 2, got {s.n_images}")
    if s.gradient_images < 0 or s.gradient_images == 1:
        raise ValueError(f"gradient images must be 0 (skip) or >= 2, got {s.gradient_images}")
    e = s.early_layers
    if isinstance(e, bool) or not isinstance(e, (int, float, tuple)):
        raise ValueError(f"early layers must be a count, a fraction or layer names, got {e!r}")
    if isinstance(e, int) and e < 1:
        raise ValueError(f"early layers: a count must be >= 1, got {e}")
    if isinstance(e, float) and not 0 < e <= 1:
        raise ValueError(f"early layers: a fraction must be in (0, 1], got {e}")
    if isinstance(e, tuple) and (not e or not all(isinstance(n, str) and n for n in e)):
        raise ValueError(f"early layers: expected layer names, got {list(e)}")
    bad = [c for c in s.corruptions if c not in CORRUPTIONS and not s.corrupted]
    if bad:
        raise ValueError(f"unknown corruption(s) {bad}; known: {', '.join(CORRUPTIONS)}")
    for sev in (*s.severities, s.match_severity):
        if isinstance(sev, bool) or not isinstance(sev, int) or not 1 <= sev <= 5:
            raise ValueError(f"severity must be an integer in 1..5, got {sev!r}")
    if s.params not in PARAMS:
        raise ValueError(f"params must be one of {', '.join(PARAMS)}, got {s.params!r}")
    bad = [a for a in s.attacks if a not in GEOMETRY_ATTACKS]
    if bad:
        raise ValueError(f"unknown geometry attack {bad[0]!r}: expected one of {', '.join(GEOMETRY_ATTACKS)}")
    if s.norm not in ("linf", "l2"):
        raise ValueError(f"norm must be one of linf, l2, got {s.norm!r}")
    if any(not (math.isfinite(e) and e > 0) for e in s.epsilons):
        raise ValueError(f"epsilons must be finite numbers > 0, got {list(s.epsilons)}")
    for name in ("pgd_steps", "pgd_restarts", "batch_size"):
        v = getattr(s, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if not (math.isfinite(s.pgd_step_factor) and s.pgd_step_factor > 0):
        raise ValueError(f"pgd_step_factor must be > 0, got {s.pgd_step_factor!r}")
    for name in ("image_seed", "corruption_seed", "attack_seed"):
        v = getattr(s, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {v!r}")


def perturbation_label(kind: str, name: str, value: float | int, norm: str = "linf") -> str:
    """Row label of a perturbation: ``gaussian_noise-3``, ``pgd-linf-4/255``, ``fgsm-linf-1/255``, ``pgd-l2-match-fog-3``.

    ``kind`` is ``"corruption"`` (``name`` a corruption, ``value`` its severity),
    ``"adversarial"`` (``name`` an attack, ``value`` its epsilon) or ``"matched-l2"``
    (``name`` the corruption label whose median distance the attack takes).
    """
    if kind == "corruption":
        return f"{name}-{int(value)}"
    if kind == "matched-l2":
        return f"pgd-l2-match-{name}"
    return f"{name}-{norm}-{round(float(value) * 255, 3):g}/255"


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


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def geometry_results(run: RunFiles | str | os.PathLike) -> dict[str, Path]:
    """The geometry result files of a run by settings key (the older layout's one included)."""
    run = run if isinstance(run, RunFiles) else RunFiles(run)
    out = run.keyed_results(RunFiles.GEOMETRY_DIR)
    if run.geometry.is_file():
        try:
            key = settings_key(expect_dict(read_json(run.geometry).get("settings"), run.geometry, "settings"))
        except (FileNotFoundError, DamagedFileError):
            key = RunFiles.GEOMETRY
        out.setdefault(key, run.geometry)
    return out


def _cached(run: RunFiles, key: str, log: Callable[[str], None]) -> dict | None:
    """The stored result of settings ``key`` in the current format (a damaged file is set aside)."""
    for path in (run.keyed(RunFiles.GEOMETRY_DIR, key), run.geometry):
        saved = read_record(path, check_geometry, run, log, "geometry")
        if saved is not None and saved["format"] == FORMAT and settings_key(saved["settings"]) == key:
            return {**saved, "settings_key": key}
    return None


class _Layers:
    """Per-layer statistics of one set of activations: a streamed covariance or the stored maps."""

    def __init__(self, layers: Sequence[str], units: str, share: float, min_ratio: float):
        self.layers, self.units, self.share, self.min_ratio = list(layers), units, share, min_ratio
        self.cov = {n: CovarianceAccumulator("channels") for n in self.layers}
        self.maps: dict[str, list[torch.Tensor]] = {n: [] for n in self.layers}

    def update(self, acts: dict[str, torch.Tensor]) -> None:
        for n in self.layers:
            if self.units == "channels":
                self.cov[n].update(acts[n])
            else:
                self.maps[n].append(acts[n])

    def stacked(self, n: str) -> torch.Tensor:
        """``(N, U)`` float32 stored maps of layer ``n`` (``units="flatten"``)."""
        return torch.cat(self.maps[n])

    def dimensionality(self, n: str) -> Dimensionality:
        if self.units == "channels":
            return self.cov[n].dimensionality(self.share, min_ratio=self.min_ratio)
        return flattened_dimensionality(self.stacked(n), self.share)


def evaluate_run(
    run_dir: str | os.PathLike,
    settings: GeometrySettings = GeometrySettings(),
    data: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    *,
    force: bool = False,
    on_batch: Callable[[], None] | None = None,
    on_images: Callable[[int, int], None] | None = None,
    cells: CellSource | None = None,
    sweep_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Compute (or reuse) the geometry of one run and write ``RUN/geometry/<key>.json``.

    Parameters
    ----------
    run_dir : path
        A completed run directory.
    settings : GeometrySettings
    data : path, optional
        Dataset location.
    device : str or torch.device
    force : bool
        Recompute even if a result of the same settings is stored.
    on_batch : callable, optional
        Called after each image batch of each pass (progress bars).
    on_images : callable, optional
        ``on_images(done, total)``: called as the work advances, in images passed through
        the network: each batch once clean and once per perturbation, and the gradient
        images once per gradient layer. ``total`` is the run's whole count.
    cells : CellSource, optional
        The corrupted images (shared by the runs of a sweep); made here when None.
    sweep_dir : path, optional
        Where generated cells are cached (default: two levels above ``run_dir``).
    log : callable, optional
        Receives one-line notes (a damaged file set aside); default: stderr.

    Returns
    -------
    dict
        ``{"format", "settings", "settings_key", "matched_l2_epsilons", "rows",
        "reused"}``; ``rows`` are dicts with ``layer_index, layer, kind, perturbation,
        measure, value``.

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
    early = early_layer_names(layers, settings.early_layers)
    grad_layers = list(settings.gradient_layers or layers) if settings.gradient_images else []
    _check_layers(model, grad_layers, cfg.model)
    labels = splits.test.labels.numpy()
    idx = select_images(labels, settings.n_images, settings.image_seed)
    rsettings = settings.robustness_settings()
    params = rsettings.params_for(cfg.dataset)
    # Stored settings: what was asked plus what it resolved to, so a reuse is exact.
    stored = {
        **settings.to_dict(),
        "layers": layers,
        "early_layer_names": early,
        "gradient_layers": grad_layers,
        "images_used": len(idx),
        "corruption_params": None if settings.corrupted else params,
    }
    dir_files: dict[str, tuple[int, int, str]] = {}
    if settings.corrupted and settings.corruptions and settings.severities:
        # a directory's content is part of the settings: another directory is another result
        fingerprint, dir_files = corrupted_fingerprint(
            settings.corrupted, settings.corruptions, settings.severities
        )
        stored["corrupted_sha1"] = fingerprint
    key = settings_key(stored)
    files = RunFiles(run_dir)
    out = files.keyed(RunFiles.GEOMETRY_DIR, key)
    if not force:
        cached = _cached(files, key, log or _stderr)
        if cached is not None:
            return {**cached, "reused": True}

    mean = torch.tensor(splits.mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    std = torch.tensor(splits.std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    images = splits.test.images[torch.as_tensor(idx)]  # (N, C, H, W) uint8
    targets = splits.test.labels[torch.as_tensor(idx)]
    units, bs, n_img = settings.units, settings.batch_size, len(idx)

    # Probe the layer outputs on 2 images: their shapes fix the units; too few images fail here.
    with torch.no_grad(), ActivationCapture(model, layers, reduce=lambda t: t.detach()) as cap:
        model(_normalise(images[:2].to(dev, torch.float32) / 255, mean, std))
        shapes = {n: tuple(cap.outputs[n].shape[1:]) for n in layers}
    if units == "channels":
        widths = {n: int(shapes[n][0]) for n in layers}
        widest = max(widths, key=lambda n: widths[n])
        need = required_samples(widths[widest], settings.min_ratio)
        if n_img < need:
            more = "" if n_img == settings.n_images else f" (the test split has only {n_img})"
            raise ValueError(
                f"too few images: layer {widest!r} has {widths[widest]} units ({units}) and needs at least "
                f"{need} images, got {n_img}{more}; use --images {need} or more"
            )
    # Spatial positions of the flattened estimator: one draw per map size (the layers of one
    # size share it), in the order of the layers, the same for every run.
    pos_gen = torch.Generator().manual_seed(settings.image_seed)
    positions: dict[tuple[int, ...], torch.Tensor] = {}
    if settings.positions is not None:
        for n in layers:
            hw = shapes[n][1:]
            if len(hw) >= 2 and hw not in positions:
                k = min(settings.positions, math.prod(hw))
                positions[hw] = spatial_positions(hw[0], math.prod(hw[1:]), k, pos_gen)

    def reduce(t: torch.Tensor) -> torch.Tensor:
        """A layer's output -> ``(B, U)``: channel means (float64) or flattened maps (float32)."""
        if units == "channels":
            return layer_units(t, "channels")
        t = t.detach()
        pos = positions.get(tuple(t.shape[2:]))
        if pos is None:
            return t.flatten(1).to(torch.float32)  # (B, C, H, W) -> (B, C*H*W)
        return t.flatten(2)[:, :, pos.to(t.device)].flatten(1).to(torch.float32)  # (B, C*k)

    def capture_pass(x01: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], int]:
        """Activations of every layer for images in [0, 1] (reduced), and the correct count."""
        with torch.no_grad(), ActivationCapture(model, layers, reduce=reduce) as cap:
            logits = model(_normalise(x01, mean, std))
            acts = {n: cap.outputs[n] for n in layers}
        return acts, int((logits.argmax(1) == y).sum())

    batches = [(s, min(s + bs, n_img)) for s in range(0, n_img, bs)]
    n_perts = len(settings.corruptions) * len(settings.severities) + len(settings.attacks) * len(
        settings.epsilons
    )
    if settings.match_l2 and settings.match_severity in settings.severities:
        n_perts += len(settings.corruptions)
    n_grad = len(select_images(labels, settings.gradient_images, settings.image_seed)) if grad_layers else 0
    total = n_img * (1 + n_perts) + n_grad * len(grad_layers)
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        if on_images is not None:
            on_images(done[0], total)

    clean = _Layers(layers, units, settings.share, settings.min_ratio)
    clean_acts: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    correct_clean = 0
    for s, e in batches:
        xb = images[s:e].to(dev, torch.float32) / 255  # (B, C, H, W) in [0, 1]
        acts, c = capture_pass(xb, targets[s:e].to(dev))
        correct_clean += c
        clean.update(acts)
        for n in layers:
            clean_acts[n].append(acts[n])
        advance(e - s)
        if on_batch is not None:
            on_batch()
    clean_dims = {n: clean.dimensionality(n) for n in layers}

    if cells is None and settings.corruptions and settings.severities:
        root = Path(sweep_dir) if sweep_dir else run_dir.parent.parent
        cells = cell_source(root, rsettings, params, idx, splits.test, dir_files)

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

    add(-1, "output", "clean", "clean", "accuracy", correct_clean / n_img)
    for li, n in enumerate(layers):
        d = clean_dims[n]
        add(li, n, "clean", "clean", "pca", d.pca)
        add(li, n, "clean", "clean", "participation_ratio", d.participation_ratio)
        add(li, n, "clean", "clean", "units", d.n_units)
        add(li, n, "clean", "clean", "early", 1.0 if n in early else 0.0)

    def measure(
        kind: str, label: str, perturb: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor], extra: dict
    ) -> torch.Tensor:
        """One perturbation over every batch: its rows; returns the per-image input L2 distances."""
        pert = _Layers(layers, units, settings.share, settings.min_ratio)
        diff = _Layers(layers, units, settings.share, settings.min_ratio)
        sq = dict.fromkeys(layers, 0.0)
        l2, linf, correct = [], [], 0
        for bi, (s, e) in enumerate(batches):
            xb = images[s:e].to(dev, torch.float32) / 255
            yb = targets[s:e].to(dev)
            xp = perturb(xb, yb, s)  # attacks need gradients: no capture hooks while perturbing
            acts, c = capture_pass(xp, yb)
            correct += c
            pert.update(acts)
            d = {
                n: acts[n].to(torch.float64 if units == "channels" else torch.float32) - clean_acts[n][bi]
                for n in layers
            }
            diff.update(d)
            for n in layers:
                sq[n] += float((d[n].to(torch.float64) ** 2).sum())
            l2.append(perturbation_norms(xb, xp, "l2").cpu())
            linf.append(perturbation_norms(xb, xp, "linf").cpu())
            advance(e - s)
            if on_batch is not None:
                on_batch()
        d2 = torch.cat(l2)
        add(-1, "input", kind, label, "l2_mean", float(d2.mean()))
        add(-1, "input", kind, label, "l2_median", float(d2.median()))
        add(-1, "input", kind, label, "linf_mean", float(torch.cat(linf).mean()))
        for k, v in extra.items():
            add(-1, "input", kind, label, k, v)
        add(-1, "output", kind, label, "accuracy", correct / n_img)
        for li, n in enumerate(layers):
            dp, dc = pert.dimensionality(n), diff.dimensionality(n)
            add(li, n, kind, label, "pca", dp.pca)
            add(li, n, kind, label, "participation_ratio", dp.participation_ratio)
            add(li, n, kind, label, "increase_pca", dp.pca - clean_dims[n].pca)
            add(
                li,
                n,
                kind,
                label,
                "increase_participation_ratio",
                dp.participation_ratio - clean_dims[n].participation_ratio,
            )
            add(li, n, kind, label, "change_pca", dc.pca)
            add(li, n, kind, label, "change_participation_ratio", dc.participation_ratio)
            add(li, n, kind, label, "change_sq_norm", sq[n] / n_img)
        return d2

    # Corruptions: the robustness step's cells (uint8, as the released files).
    matched_eps: dict[str, float] = {}
    for cname in settings.corruptions:
        for sev in settings.severities:
            assert cells is not None
            cell = cells.get(cname, sev)  # (N, C, H, W) uint8

            def corrupt_batch(
                xb: torch.Tensor, yb: torch.Tensor, s: int, cell: torch.Tensor = cell
            ) -> torch.Tensor:
                return cell[s : s + xb.shape[0]].to(dev, torch.float32) / 255

            label = perturbation_label("corruption", cname, sev)
            d2 = measure("corruption", label, corrupt_batch, {"severity": sev})
            if settings.match_l2 and sev == settings.match_severity:
                matched_eps[label] = float(d2.median())

    def attack_batches(
        name: str, eps: float, norm: str
    ) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
        g = torch.Generator(device=dev)
        g.manual_seed(settings.attack_seed)  # as the robustness step: one generator per attack and epsilon
        kw: dict[str, Any] = {"norm": norm, "mean": splits.mean, "std": splits.std}
        if name == "pgd":
            kw.update(
                steps=settings.pgd_steps,
                step_size=settings.pgd_step_factor * eps / settings.pgd_steps,
                restarts=settings.pgd_restarts,
                generator=g,
            )

        def run(xb: torch.Tensor, yb: torch.Tensor, _s: int) -> torch.Tensor:
            return attack(name, model, xb, yb, eps, **kw)

        return run

    for a in settings.attacks:
        for eps in settings.epsilons:
            label = perturbation_label("adversarial", a, eps, settings.norm)
            measure("adversarial", label, attack_batches(a, eps, settings.norm), {"epsilon": eps})
    for clabel, eps in matched_eps.items():
        label = perturbation_label("matched-l2", clabel, eps)
        measure("matched-l2", label, attack_batches("pgd", eps, "l2"), {"epsilon": eps})

    if grad_layers:
        gidx = select_images(labels, settings.gradient_images, settings.image_seed)
        xg = splits.test.images[torch.as_tensor(gidx)].to(dev, torch.float32) / 255
        where = {n: i for i, n in enumerate(layers)}
        for n in grad_layers:
            gv = gradient_variability(model, n, xg, mean=splits.mean, std=splits.std).summary()
            li = where.get(n, -1)
            for name, row_name in GRADIENT_MEASURES.items():
                add(li, n, "clean", "clean", row_name, gv[name])
            advance(xg.shape[0])

    result = {
        "format": FORMAT,
        "settings": stored,
        "settings_key": key,
        "matched_l2_epsilons": matched_eps,
        "rows": rows,
    }
    write_json(out, result)
    if files.geometry.is_file():  # the older layout's result of the same settings
        try:
            if (
                settings_key(expect_dict(read_json(files.geometry).get("settings"), files.geometry, ""))
                == key
            ):
                files.geometry.unlink(missing_ok=True)
        except (FileNotFoundError, DamagedFileError):
            pass
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

    Runs with a result of the same settings are reused; the corrupted images are made (or
    read) once for all runs. Returns :func:`geometry_frame` of the sweep afterwards (these
    settings' rows). ``log`` receives one-line messages (default: skipped runs and damaged
    files go to stderr).
    """
    note = log or _stderr
    log = log or (lambda _m: None)
    sweep_dir = Path(sweep_dir)
    if data is None:
        data = read_data_hint(sweep_dir)
    runs = completed_runs(sweep_dir, log=lambda _m: None, note=note)
    if runs.empty:
        raise ValueError(f"{sweep_dir} has no completed runs to measure")
    bar = inner = None
    if progress:
        from tqdm.auto import tqdm

        # runs outside, images inside: one run takes minutes, each image pass seconds
        bar = tqdm(total=len(runs), desc="geometry", unit="run", dynamic_ncols=True, disable=None)
    reused = 0
    key = None
    cells: CellSource | None = None

    def on_images(done: int, total: int) -> None:
        nonlocal inner
        if bar is None:
            return
        if inner is None:
            from tqdm.auto import tqdm

            inner = tqdm(total=total, unit="image", leave=False, dynamic_ncols=True, disable=None)
        inner.update(done - inner.n)

    try:
        for run_id in runs["run_id"]:
            if bar is not None:
                bar.set_postfix_str(str(run_id))
            run_dir = SweepFiles(sweep_dir).run(run_id).root
            if (
                cells is None
                and settings.corruptions
                and settings.severities
                and (force or not _is_cached(run_dir, settings))
            ):
                cells = _cells_for(run_dir, sweep_dir, settings, data)
            res = evaluate_run(
                run_dir,
                settings,
                data,
                device,
                force=force,
                on_images=on_images,
                cells=cells,
                sweep_dir=sweep_dir,
                log=note,
            )
            key = res["settings_key"]
            if inner is not None:
                inner.close()
                inner = None
            reused += bool(res["reused"])
            if bar is not None:
                bar.update(1)
    finally:
        for b in (inner, bar):
            if b is not None:
                b.close()
    log(f"geometry of {len(runs)} run(s): {len(runs) - reused} computed, {reused} reused")
    return geometry_frame(sweep_dir, key)


def _is_cached(run_dir: Path, settings: GeometrySettings) -> bool:
    """Whether the run has a result of these settings (cheap: no data read)."""
    asked = settings.to_dict()
    for path in geometry_results(run_dir).values():
        try:
            saved = read_json(path)
        except (FileNotFoundError, ValueError):
            continue
        stored = saved.get("settings") if isinstance(saved, dict) else None
        if (
            isinstance(stored, dict)
            and saved.get("format") == FORMAT
            and all(stored.get(k) == v for k, v in asked.items())
        ):
            return True
    return False


def _cells_for(run_dir: Path, sweep_dir: Path, settings: GeometrySettings, data: Any) -> CellSource:
    """The sweep's corrupted images for these settings (the robustness step's cells)."""
    run = load_run(run_dir, data, "cpu")
    test = run.splits.test
    idx = select_images(test.labels.numpy(), settings.n_images, settings.image_seed)
    files: dict[str, tuple[int, int, str]] = {}
    if settings.corrupted:
        _, files = corrupted_fingerprint(settings.corrupted, settings.corruptions, settings.severities)
    rsettings = settings.robustness_settings()
    cells = cell_source(sweep_dir, rsettings, rsettings.params_for(run.config.dataset), idx, test, files)
    cells.check()  # a corrupted directory that does not fit fails before any run
    return cells


def geometry_frame(sweep_dir: str | os.PathLike, key: str | None = None) -> pd.DataFrame:
    """The sweep's geometry rows of one settings (database, synced with the run directories), with run columns.

    ``key``: which stored settings; default: see :func:`pick_settings`.
    """
    with open_store(Path(sweep_dir), log=lambda _m: None, note=_stderr, analyses=[GEOMETRY_TABLES]) as store:
        df = store.frame(GEOMETRY_TABLES, "rows")
    return pick_settings(df, key)


def pick_settings(df: pd.DataFrame, key: str | None = None) -> pd.DataFrame:
    """The rows of one settings of the store's geometry frame (every settings side by side).

    ``key``: which settings; default: those measured on the most runs, then with the most
    rows (measures) per run, then the smallest key. ``attrs``: ``settings_key``,
    ``default_because`` and ``others`` (how many other settings have results).
    """
    why = "asked for"
    if key is None:
        per = df.groupby("settings_key").agg(runs=("run_id", "nunique"), rows=("run_id", "size"))
        per["measurements"] = per["rows"] / per["runs"].clip(lower=1)
        per["images"] = 0
        key = default_key(per.reset_index())
        why = "measured on the most runs, with the most measures"
    keys = set(df["settings_key"])
    out = df[df["settings_key"] == key].reset_index(drop=True)
    out.attrs.update(settings_key=key, default_because=why, others=len(keys - {key}))
    return out


# --------------------------------------------------------------------------- files and table
#: Kinds of row in a geometry result.
KINDS = ("clean", "corruption", "adversarial", "matched-l2")


def check_geometry(obj: Any, where: Path) -> dict:
    """A geometry result checked against its schema; :class:`DamagedFileError` otherwise.

    Rows: ``layer_index`` an integer in -1..2**31-1, ``layer``, ``perturbation`` and
    ``measure`` strings, ``kind`` one of :data:`KINDS`, ``value`` a finite number or null.
    Returns the known fields only, values as floats.
    """
    d = expect_dict(obj, where, "the file")
    out: dict[str, Any] = {
        "format": expect_int(d.get("format"), where, "format", 0, 2**31),
        "settings": expect_json(expect_dict(d.get("settings"), where, "settings"), where, "settings"),
    }
    eps = expect_dict(d.get("matched_l2_epsilons", {}), where, "matched_l2_epsilons")
    out["matched_l2_epsilons"] = {
        str(k): expect_number(v, where, f"matched_l2_epsilons.{k}", 0) for k, v in eps.items()
    }
    rows = []
    for i, r in enumerate(expect_list(d.get("rows"), where, "rows")):
        r = expect_dict(r, where, f"rows[{i}]")
        kind = expect_str(r.get("kind"), where, f"rows[{i}].kind")
        if kind not in KINDS:
            raise DamagedFileError(
                f"{where} is damaged (rows[{i}].kind is {kind!r:.40}, expected one of {KINDS})"
            )
        rows.append(
            {
                "layer_index": expect_int(
                    r.get("layer_index"), where, f"rows[{i}].layer_index", -1, 2**31 - 1
                ),
                "layer": expect_str(r.get("layer"), where, f"rows[{i}].layer"),
                "kind": kind,
                "perturbation": expect_str(r.get("perturbation"), where, f"rows[{i}].perturbation"),
                "measure": expect_str(r.get("measure"), where, f"rows[{i}].measure"),
                "value": expect_number(r.get("value"), where, f"rows[{i}].value", none=True),
            }
        )
    out["rows"] = rows
    if "settings_key" in d:
        out["settings_key"] = expect_str(d["settings_key"], where, "settings_key")
    return out


def _read_geometry(path: Path) -> dict:
    """A result file checked against :func:`check_geometry`, with its ``settings_key``."""
    rec = check_geometry(read_json(path), path)
    if path.name == RunFiles.GEOMETRY:  # the older layout: keyed by its settings
        rec["settings_key"] = settings_key(rec["settings"])
    else:
        rec["settings_key"] = path.name[: -len(RunFiles.RESULT_SUFFIX)]
    return rec


def _geometry_files(run: RunFiles) -> list[Path]:
    found = list(run.keyed_results(RunFiles.GEOMETRY_DIR).values())
    return ([run.geometry] if run.geometry.is_file() else []) + found


def _geometry_rows(record: dict) -> dict[str, list[dict[str, Any]]]:
    key = record.get("settings_key") or settings_key(record["settings"])
    return {"rows": [{**r, "settings_key": key} for r in record["rows"]]}


#: The ``geometry`` table of the sweep's database, filled from the runs' result files
#: (every settings side by side, ``settings_key`` telling them apart).
GEOMETRY_TABLES = AnalysisTables(
    name="geometry",
    tables={
        "rows": Table(
            "geometry",
            (
                ("run_id", "TEXT"),
                ("layer_index", "INTEGER"),  # -1 for the input and the output, else the layer's position
                ("layer", "TEXT"),  # a module name, "input" (pixel distances) or "output" (accuracy)
                ("kind", "TEXT"),  # clean | corruption | adversarial | matched-l2
                ("perturbation", "TEXT"),  # e.g. clean, gaussian_noise-3, pgd-linf-4/255, pgd-l2-match-fog-3
                ("measure", "TEXT"),  # e.g. pca, participation_ratio, change_pca, l2_mean, grad_var_samples
                ("value", "REAL"),
                ("settings_key", "TEXT"),
            ),
            key=("run_id", "settings_key", "layer", "perturbation", "measure"),
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
            order=(
                "r.model",
                "r.alpha",
                "r.seed",
                "t.settings_key",
                "t.kind",
                "t.perturbation",
                "t.layer_index",
                "t.measure",
            ),
        )
    },
    files=_geometry_files,
    read=_read_geometry,
    rows=_geometry_rows,
)
