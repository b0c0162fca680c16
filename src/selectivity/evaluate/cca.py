"""Paper 1, section 4.2: is class selectivity suppressed or only rotated off-axis?

A sweep-level analysis: it loads every completed run's best checkpoint and probes it
with the same test images (the pure math is :mod:`selectivity.analysis.pwcca`).

For every (model, activation) setting of a sweep and every alpha, PWCCA distances
(:func:`selectivity.analysis.pwcca.pwcca_distance`) are computed layer by layer between

* **within** pairs: two replicates (seeds) of the same alpha, ``rho(alpha, alpha)``
  (``C(n, 2)`` pairs, 190 for 20 seeds), and
* **between** pairs: a replicate of alpha against a replicate of the baseline
  (alpha = 0), ``rho(alpha, 0)`` (``n * n0`` pairs, 400 for 20 seeds).

If the regulariser only rotated selectivity into another basis, the between distances
would match the within ones (CCA is invariant to invertible affine maps); the paper
finds them larger, growing with ``|alpha|`` (Fig. 3).

Choices (documented, configurable through :class:`CCASettings`):

* Every network sees the SAME test images: a class-stratified subset of the test split
  drawn with ``image_seed`` (default 2000 images), so distances compare representations
  of identical inputs.
* The activations are those of the selectivity layers (the run's
  ``selectivity_layers`` or the model's default sites), taken from the best-validation
  checkpoint (``checkpoints/best.pt``), in eval mode.
* Conv maps are flattened with :func:`~selectivity.analysis.pwcca.flatten_conv_activations`:
  ``"spatial_mean"`` (one datapoint per image, the unit response of the selectivity
  index) by default, ``"positions"`` (every spatial position is a datapoint) on request.
* PWCCA is computed as the paper computed it: ``method="svcca"`` reproduces the
  reference implementation (``google/svcca``'s ``compute_pwcca``) that paper 1 used;
  ``method="textbook"`` is the canonical-variate form (see
  :mod:`selectivity.analysis.pwcca` for both and how they differ).
* Pair order follows paper 1, appendix A.2, which names the unregularised network
  first (``L_1``, alpha = 0) and the regularised one second: between pairs are
  computed as ``pwcca(baseline, alpha)`` (``order="baseline-first"``, default;
  ``"alpha-first"`` reverses it). Within pairs take the lower seed first. With
  ``svcca`` the projection weights come from the side with fewer live neurons (the
  first on a tie); with ``textbook`` from the first network; ``symmetric=True``
  averages both orders.
* Too few datapoints for the widest layer (``datapoints < min_ratio * neurons``) is an
  error, raised before any distance is computed.
* Only completed runs are used (a diverged network has no meaningful representation).

The shape every per-run analysis of :mod:`selectivity.evaluate` shares, as far as a
pairwise measure allows: the settings are one frozen, self-validating
:class:`CCASettings`; the per-run step :func:`evaluate_run` gives what one run
contributes (its activations on the chosen images); a distance needs two runs, so the
step that makes a result is per pair, :func:`evaluate_pair` (one row per layer), and the
pairs of one alpha are computed together so that the baseline networks' activations are
gathered once; :func:`sweep_cca` does every pair of a sweep and writes
``SWEEP/analysis/cca_distances.csv``; :func:`cca_frame` reads it back. The results are a
sweep-level table (a pair spans two runs), not a per-run file, so no table of the
results database holds them. The statistics of the table are pure and live in
:mod:`selectivity.analysis.cca_stats`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from ..analysis.cca_stats import GROUP_COLS, cca_plot_frame, cca_summary
from ..analysis.pwcca import flatten_conv_activations, pwcca_distance
from ..analysis.stats import normalise_alpha
from ..core.hooks import ActivationCapture
from ..data import BatchLoader, locate_dataset
from ..run.checkpoint import load_run
from ..run.files import SweepFiles
from .common import completed_runs, read_data_hint, select_images

__all__ = [
    "CCASettings",
    "select_images",
    "evaluate_run",
    "evaluate_pair",
    "gather_activations",
    "check_datapoints",
    "layer_distances",
    "plan_pairs",
    "sweep_cca",
    "cca_frame",
    "cca_summary",
    "cca_plot_frame",
    "CCA_CSV",
    "CCA_SETTINGS_JSON",
    "PWCCA_METHODS",
    "PAIR_ORDERS",
    "MODES",
    "CCADistances",
    "cached_cca",
    "cca_or_note",
]

#: Where :func:`sweep_cca` writes its table, relative to the sweep directory.
CCA_CSV = Path(SweepFiles.CCA_CSV)
#: The settings :func:`sweep_cca` used, next to :data:`CCA_CSV`.
CCA_SETTINGS_JSON = Path(SweepFiles.CCA_SETTINGS)
Mode = Literal["spatial_mean", "positions"]
#: Flattenings of conv maps (see :func:`gather_activations`).
MODES = ("spatial_mean", "positions")
#: PWCCA computations (see :mod:`selectivity.analysis.pwcca`).
PWCCA_METHODS = ("svcca", "textbook")
PWCCAMethod = Literal["svcca", "textbook"]
#: Order of the two networks of a between pair.
PAIR_ORDERS = ("baseline-first", "alpha-first")
PairOrder = Literal["baseline-first", "alpha-first"]


@dataclass(frozen=True)
class CCASettings:
    """What :func:`sweep_cca` computes; validated on construction (``ValueError``, one line).

    Attributes
    ----------
    n_images : int
        Test images probed (a stratified subset, identical for every run), >= 2.
    mode : {"spatial_mean", "positions"}
        Conv-map flattening (see :func:`gather_activations`).
    baseline : float
        Alpha of the unregularised networks.
    max_pairs : int or None
        Cap on pairs per (setting, alpha, kind), for speed (paper: 190 within, 400
        between for 20 seeds); None: every pair.
    min_ratio : float or None
        Minimum datapoints per neuron (see :func:`check_datapoints`); None or 0: no check.
    symmetric : bool
        Average the PWCCA of both orders of each pair.
    method : {"svcca", "textbook"}
        PWCCA computation: the reference implementation the paper used, or the
        canonical-variate form.
    order : {"baseline-first", "alpha-first"}
        Order of the two networks of a between pair (paper 1, A.2: alpha = 0 first).
    image_seed : int
        Seed of the image subset, >= 0.
    exclude_same_seed : bool
        Leave out between pairs of equal seeds (same initialisation), see :func:`plan_pairs`.
    model : str or None
        Only this model's runs (None: every model, each against its own baseline).
    """

    n_images: int = 2000
    mode: Mode = "spatial_mean"
    baseline: float = 0.0
    max_pairs: int | None = None
    min_ratio: float | None = 5.0
    symmetric: bool = False
    method: PWCCAMethod = "svcca"
    order: PairOrder = "baseline-first"
    image_seed: int = 0
    exclude_same_seed: bool = False
    model: str | None = None

    def __post_init__(self) -> None:
        def integer(v: Any) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        if not integer(self.n_images) or self.n_images < 2:
            raise ValueError(f"n_images must be an integer >= 2, got {self.n_images!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.max_pairs is not None and (not integer(self.max_pairs) or self.max_pairs < 1):
            raise ValueError(f"max_pairs must be an integer >= 1 or None, got {self.max_pairs!r}")
        if self.min_ratio is not None and not (
            isinstance(self.min_ratio, (int, float)) and math.isfinite(self.min_ratio) and self.min_ratio >= 0
        ):
            raise ValueError(f"min_ratio must be a finite number >= 0 or None, got {self.min_ratio!r}")
        if self.method not in PWCCA_METHODS:
            raise ValueError(f"method must be one of {PWCCA_METHODS}, got {self.method!r}")
        if self.order not in PAIR_ORDERS:
            raise ValueError(f"order must be one of {PAIR_ORDERS}, got {self.order!r}")
        if not integer(self.image_seed) or self.image_seed < 0:
            raise ValueError(f"image_seed must be an integer >= 0, got {self.image_seed!r}")
        if not (isinstance(self.baseline, (int, float)) and math.isfinite(self.baseline)):
            raise ValueError(f"baseline must be a finite number, got {self.baseline!r}")

    def to_dict(self) -> dict[str, Any]:
        """The settings written beside the table (``cca_settings.json``), with the weights in words."""
        d = asdict(self)
        d.pop("model")
        return {**d, "weights": _weights_description(self.method, self.order, self.symmetric)}


# --------------------------------------------------------------------------- activations
def gather_activations(
    run_dir: str | os.PathLike,
    images: int | Sequence[int] | np.ndarray = 2000,
    data: str | os.PathLike | None = None,
    layers: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    mode: Mode = "spatial_mean",
    *,
    image_seed: int = 0,
    batch_size: int = 250,
    dtype: torch.dtype = torch.float64,
) -> dict[str, torch.Tensor]:
    """Activations of a trained run's selectivity layers on a fixed set of test images.

    Parameters
    ----------
    run_dir : path
        Run directory (its ``checkpoints/best.pt`` is loaded) or a checkpoint file.
    images : int or array-like of int, default 2000
        Number of test images (a class-stratified subset drawn with ``image_seed``, the
        same for every run), or explicit test-split indices.
    data : path, optional
        Dataset location (see :func:`selectivity.data.load_dataset`).
    layers : sequence of str, optional
        Module names; default: the run's ``selectivity_layers`` or the model's default
        selectivity sites.
    device : str or torch.device, default "cpu"
        Where the forward passes run (results are returned on the CPU).
    mode : {"spatial_mean", "positions"}, default "spatial_mean"
        Flattening of conv maps, see
        :func:`~selectivity.analysis.pwcca.flatten_conv_activations`.
    image_seed : int, default 0
        Seed of the stratified image subset (when ``images`` is an int).
    batch_size : int, default 250
        Images per forward pass; conv maps are flattened per batch, so full feature
        maps of all images are never held at once.
    dtype : torch.dtype, default torch.float64
        Dtype of the returned matrices (float32 halves the memory of ``"positions"``;
        PWCCA computes in float64 whatever the input).

    Returns
    -------
    dict of str to Tensor
        ``layer name -> (neurons, datapoints)``, in forward order; datapoints are
        images (``"spatial_mean"``) or image x position, image-major (``"positions"``).
    """
    run = load_run(run_dir, data, device)
    model, cfg, splits, dev = run.model, run.config, run.splits, run.device
    test = splits.test
    if isinstance(images, (int, np.integer)):
        idx = select_images(test.labels.numpy(), int(images), image_seed)
    else:
        idx = np.asarray(images, dtype=np.int64)
    loader = BatchLoader(test.subset(idx), batch_size, mean=splits.mean, std=splits.std, device=dev)
    names = list(layers) if layers else (cfg.selectivity_layers or None)
    chunks: dict[str, list[torch.Tensor]] = {}

    def reduce(t: torch.Tensor) -> torch.Tensor:
        # Flatten inside the hook: only (C, B) or (C, B*H*W) per batch is kept.
        return flatten_conv_activations(t, mode).to(dtype=dtype, device="cpu")

    with torch.no_grad(), ActivationCapture(model, names, reduce=reduce, detach=True) as cap:
        for x, _ in loader:
            model(x)
            for name, t in cap.outputs.items():
                chunks.setdefault(name, []).append(t)
    return {name: torch.cat(ts, dim=1) for name, ts in chunks.items()}


def check_datapoints(
    acts: dict[str, torch.Tensor],
    min_ratio: float | None,
    mode: str = "spatial_mean",
    n_images: int | None = None,
) -> None:
    """Raise ``ValueError`` if a layer has fewer than ``min_ratio x neurons`` datapoints.

    The message names the worst layer and the two fixes (more images, or
    ``mode="positions"`` / ``--mode positions``).
    """
    if not min_ratio:
        return
    bad = [(name, a.shape[0], a.shape[1]) for name, a in acts.items() if a.shape[1] < min_ratio * a.shape[0]]
    if not bad:
        return
    name, neurons, points = max(bad, key=lambda b: b[1] / max(b[2], 1))
    widest = max(a.shape[0] for a in acts.values())
    need = int(np.ceil(min_ratio * widest))
    imgs = f" from {n_images} images" if n_images is not None else ""
    hint = (
        f"use at least {need} images (--cca-images / --images / n_images), or --mode positions "
        "(every spatial position of a conv map is a datapoint)"
    )
    if mode == "positions":
        hint = f"use more images (--images / n_images); the widest layer has {widest} neurons"
    raise ValueError(
        f"too few datapoints for CCA: layer {name!r} has {neurons} neurons but only {points} datapoints"
        f"{imgs} (mode={mode}); PWCCA needs >= {min_ratio:g} datapoints per neuron "
        f"({len(bad)} layer(s) fail). Fix: {hint}, or lower min_ratio deliberately."
    )


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily run torch's CPU ops on ``n`` threads (None: unchanged)."""
    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def layer_distances(
    acts_a: dict[str, torch.Tensor],
    acts_b: dict[str, torch.Tensor],
    *,
    min_ratio: float | None = 5.0,
    symmetric: bool = False,
    eps: float | None = None,
    method: PWCCAMethod = "svcca",
    threads: int | None = 1,
) -> dict[str, float]:
    """PWCCA distance per layer between two networks' activations on the same datapoints.

    Parameters
    ----------
    acts_a, acts_b : dict of str to Tensor
        Outputs of :func:`gather_activations` (same layers, same images), passed to
        PWCCA in this order.
    min_ratio, symmetric, eps, method
        See :func:`selectivity.analysis.pwcca.pwcca` (``eps=None``: the method's default).
    threads : int or None, default 1
        Torch CPU threads during the computation. The matrices are small (neurons x
        neurons); several threads only add synchronisation, which on a busy machine
        made one distance ~70x slower (0.6 s vs 8 ms for 64 neurons). None: unchanged.

    Returns
    -------
    dict of str to float
        ``layer -> distance`` in [0, 1] (NaN where every unit of a layer is dead).
    """
    missing = sorted(set(acts_a) ^ set(acts_b))
    if missing:
        raise ValueError(f"the two networks do not share the layers {missing}")
    with _torch_threads(threads):
        return {
            name: pwcca_distance(
                acts_a[name], acts_b[name], eps, method=method, symmetric=symmetric, min_ratio=min_ratio
            )
            for name in acts_a
        }


def _weights_description(method: str, order: str, symmetric: bool) -> str:
    """Which network gives the PWCCA projection weights, in words (for the report)."""
    if symmetric:
        return "both orders of each pair, averaged"
    first = "the alpha = 0 network" if order == "baseline-first" else "the regularised network"
    if method == "svcca":
        return (
            "the side with fewer live neurons, the first on a tie "
            f"({first} of a between pair, the lower seed of a within pair)"
        )
    return f"the first network of each pair ({first} of a between pair, the lower seed of a within pair)"


# --------------------------------------------------------------------------- pairs
def _cap(pairs: list, max_pairs: int | None, seed: int) -> list:
    """A deterministic random subset of at most ``max_pairs`` pairs, in original order."""
    if max_pairs is None or len(pairs) <= max_pairs:
        return pairs
    keep = np.sort(np.random.default_rng(seed).choice(len(pairs), size=max_pairs, replace=False))
    return [pairs[i] for i in keep]


def plan_pairs(
    runs: pd.DataFrame,
    baseline: float = 0.0,
    max_pairs: int | None = None,
    seed: int = 0,
    exclude_same_seed: bool = False,
) -> pd.DataFrame:
    """Every within and between pair of completed runs of a sweep's runs frame.

    Parameters
    ----------
    runs : pandas.DataFrame
        Runs frame (``run_id, model, alpha, seed, activation, negative_slope, status``).
    baseline : float, default 0.0
        Alpha of the unregularised networks.
    max_pairs : int, optional
        At most this many pairs per (setting, alpha, kind), a seeded random subset.
    seed : int, default 0
        Seed of that subset.
    exclude_same_seed : bool, default False
        Drop between pairs whose two runs have the same seed. In this package's sweeps
        the seed fixes the initialisation and the batch order, so such a pair starts
        from the same weights and its distance is lower than that of unrelated
        networks. The paper's 20 x 20 = 400 between pairs include them (default).

    Returns
    -------
    pandas.DataFrame
        One row per pair: ``model, activation, negative_slope, alpha, kind`` (``within`` /
        ``between``), ``seed_a, seed_b, run_a, run_b``. Within pairs: ``seed_a < seed_b``.
        Between pairs: ``a`` is the alpha run, ``b`` the baseline run. The baseline
        alpha has within pairs only.
    """
    cols = [*GROUP_COLS, "alpha", "kind", "seed_a", "seed_b", "run_a", "run_b"]
    done = runs[runs["status"] == "completed"] if "status" in runs.columns else runs
    if done.empty:
        return pd.DataFrame(columns=cols)
    done = done.assign(alpha=normalise_alpha(done["alpha"])).sort_values(["alpha", "seed", "run_id"])
    base = normalise_alpha(baseline)
    rows = []
    for key, grp in done.groupby(list(GROUP_COLS), sort=True, dropna=False):
        g = dict(zip(GROUP_COLS, key))
        base_runs = list(grp[grp["alpha"] == base][["seed", "run_id"]].itertuples(index=False))
        for alpha, sub in grp.groupby("alpha", sort=True):
            mine = list(sub[["seed", "run_id"]].itertuples(index=False))
            within = _cap(list(itertools.combinations(mine, 2)), max_pairs, seed)
            between = (
                []
                if alpha == base
                else [
                    (a, b)
                    for a, b in itertools.product(mine, base_runs)
                    if not (exclude_same_seed and a.seed == b.seed)
                ]
            )
            between = _cap(between, max_pairs, seed)
            for kind, pairs in (("within", within), ("between", between)):
                for a, b in pairs:
                    rows.append(
                        {
                            **g,
                            "alpha": alpha,
                            "kind": kind,
                            "seed_a": int(a.seed),
                            "seed_b": int(b.seed),
                            "run_a": a.run_id,
                            "run_b": b.run_id,
                        }
                    )
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------- per run, per pair
def evaluate_run(
    run_dir: str | os.PathLike,
    settings: CCASettings,
    data: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """What one run contributes: its selectivity layers' activations on the settings' images.

    Returns
    -------
    dict of str to Tensor
        ``layer name -> (neurons, datapoints)`` float64 (see :func:`gather_activations`).
    """
    return gather_activations(
        run_dir, settings.n_images, data, device=device, mode=settings.mode, image_seed=settings.image_seed
    )


def evaluate_pair(
    pair: Mapping[str, Any],
    acts_a: dict[str, torch.Tensor],
    acts_b: dict[str, torch.Tensor],
    settings: CCASettings,
) -> list[dict[str, Any]]:
    """PWCCA distance rows of one pair of runs, one per layer.

    Parameters
    ----------
    pair : mapping
        A row of :func:`plan_pairs` (``kind``, ``run_a`` the alpha run, ``run_b`` ...).
    acts_a, acts_b : dict of str to Tensor
        :func:`evaluate_run` of ``run_a`` and ``run_b``.
    settings : CCASettings

    Returns
    -------
    list of dict
        The pair's columns plus ``layer_index, layer, neurons_a, neurons_b, datapoints,
        distance``. A between pair is computed baseline first with ``order="baseline-first"``.
    """
    if pair["kind"] == "between" and settings.order == "baseline-first":
        first, second = acts_b, acts_a  # run_b is the baseline network
    else:
        first, second = acts_a, acts_b
    d = layer_distances(
        first, second, min_ratio=settings.min_ratio, symmetric=settings.symmetric, method=settings.method
    )
    return [
        {
            **pair,
            "layer_index": i,
            "layer": name,
            "neurons_a": int(acts_a[name].shape[0]),
            "neurons_b": int(acts_b[name].shape[0]),
            "datapoints": int(acts_a[name].shape[1]),
            "distance": dist,
        }
        for i, (name, dist) in enumerate(d.items())
    ]


# --------------------------------------------------------------------------- the sweep
def sweep_cca(
    sweep_dir: str | os.PathLike,
    settings: CCASettings | None = None,
    data: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
    write: bool = True,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """PWCCA distances of every within and between pair of a sweep, layer by layer.

    Parameters
    ----------
    sweep_dir : path
        Sweep directory (``runs/``, ``results.sqlite``).
    settings : CCASettings, optional
        Default: :class:`CCASettings` ().
    data : path, optional
        Dataset location; default: the one recorded in ``sweep.json``, then the usual
        search (``$SELECTIVITY_DATA``, cache).
    device : str, default "cpu"
        Device of the forward passes.
    progress : bool, default True
        Show a progress bar over pairs.
    write : bool, default True
        Write ``SWEEP/analysis/cca_distances.csv`` (and ``cca_settings.json``).
    log : callable, optional
        Receives one-line messages.

    Returns
    -------
    pandas.DataFrame
        One row per (pair, layer): ``model, activation, negative_slope, alpha, kind,
        seed_a, seed_b, run_a, run_b, layer_index, layer, neurons_a, neurons_b,
        datapoints, distance``. ``attrs`` holds the settings.

    Raises
    ------
    ValueError
        No completed run, or too few datapoints for the widest layer (before any
        distance is computed).
    """
    sweep_dir = Path(sweep_dir)
    s = settings or CCASettings()
    log = log or (lambda _m: None)
    runs = completed_runs(sweep_dir)
    if s.model is not None:
        runs = runs[runs["model"] == s.model]
    pairs = plan_pairs(runs, s.baseline, s.max_pairs, exclude_same_seed=s.exclude_same_seed)
    if pairs.empty:
        raise ValueError(
            f"no pairs of completed runs in {sweep_dir}" + (f" for model {s.model!r}" if s.model else "")
        )
    if data is None:
        data = read_data_hint(sweep_dir)
    recorded = s.to_dict()

    cache: dict[str, dict[str, torch.Tensor]] = {}
    checked = False

    def acts(run_id: str) -> dict[str, torch.Tensor]:
        nonlocal checked
        if run_id not in cache:
            cache[run_id] = evaluate_run(SweepFiles(sweep_dir).run(run_id).root, s, data, device=device)
            if not checked:
                # Fail before hours of work, with the fix in the message.
                check_datapoints(cache[run_id], s.min_ratio, s.mode, s.n_images)
                checked = True
        return cache[run_id]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs), desc="CCA pairs", unit="pair", dynamic_ncols=True)
    rows = []
    base = normalise_alpha(s.baseline)
    try:
        for _, grp in pairs.groupby(list(GROUP_COLS), sort=True, dropna=False):
            base_ids = set(grp.loc[grp["alpha"] == base, ["run_a", "run_b"]].to_numpy().ravel()) | set(
                grp.loc[grp["kind"] == "between", "run_b"]
            )
            for _alpha, sub in grp.groupby("alpha", sort=True):
                for p in sub.itertuples(index=False):
                    rows += evaluate_pair(p._asdict(), acts(p.run_a), acts(p.run_b), s)
                    if bar is not None:
                        bar.update(1)
                # Keep only the baseline networks between alphas: bounded memory in "positions" mode.
                for rid in [r for r in cache if r not in base_ids]:
                    del cache[rid]
            cache.clear()
    finally:
        if bar is not None:
            bar.close()
    df = pd.DataFrame(rows)
    df.attrs.update(recorded)
    if write:
        out = sweep_dir / CCA_CSV
        out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False)
        (sweep_dir / CCA_SETTINGS_JSON).write_text(json.dumps(recorded, indent=2) + "\n")
        log(f"wrote {out} ({len(df)} rows, {len(pairs)} pairs)")
    return df


def cca_frame(sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """The sweep's table of :func:`sweep_cca` (``attrs``: its settings); empty if none or unreadable."""
    files = SweepFiles(sweep_dir)
    try:
        df = pd.read_csv(files.cca_csv)
        saved = json.loads(files.cca_settings.read_text()) if files.cca_settings.exists() else {}
    except (OSError, ValueError):
        return pd.DataFrame()
    if isinstance(saved, dict):
        df.attrs.update(saved)
    return df


# --------------------------------------------------------------------------- for the report
@dataclass
class CCADistances:
    """The CCA distances table of a sweep, or a note saying why there is none."""

    distances: pd.DataFrame | None = None
    note: str | None = None
    settings: dict = field(default_factory=dict)


#: Settings a cached table must share with the report's to be reused.
_REPORT_KEYS = ("n_images", "mode", "max_pairs", "min_ratio", "method", "order")


def cached_cca(sweep_dir: str | os.PathLike, settings: dict, pairs: pd.DataFrame) -> pd.DataFrame | None:
    """``SWEEP/analysis/cca_distances.csv`` if it was computed with ``settings`` on ``pairs``.

    Returns None when the file is missing, unreadable, symmetric, or made with other
    settings or other pairs of runs.
    """
    files = SweepFiles(sweep_dir)
    csv, js = files.cca_csv, files.cca_settings
    if not (csv.exists() and js.exists()):
        return None
    try:
        saved = json.loads(js.read_text())
        if any(saved.get(k) != v for k, v in settings.items()) or saved.get("symmetric"):
            return None
        df = pd.read_csv(csv)
    except (OSError, ValueError, AttributeError):
        return None
    have = set(map(tuple, df[["run_a", "run_b"]].drop_duplicates().to_numpy()))
    want = set(map(tuple, pairs[["run_a", "run_b"]].to_numpy()))
    if have != want:
        return None
    df.attrs.update(saved)
    return df


def cca_or_note(
    sweep_dir: str | os.PathLike,
    runs: pd.DataFrame,
    settings: CCASettings | Mapping[str, Any] | None = None,
    data: str | os.PathLike | None = None,
    *,
    device: str = "cpu",
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> CCADistances:
    """CCA distances of a sweep for the report, or a note saying why they are missing (never raises).

    Reuses ``SWEEP/analysis/cca_distances.csv`` when it was computed with the same
    settings on the same pairs of runs (e.g. by ``selectivity cca``).

    Parameters
    ----------
    sweep_dir : path
        Sweep directory.
    runs : pandas.DataFrame
        Its runs frame (``status``, ``alpha``, ``config`` JSON, ...).
    settings : CCASettings or mapping, optional
        The settings, or their fields (bad fields become the note).
    data : path, optional
        Dataset location (default: the one in ``sweep.json``, then the usual search;
        never downloaded).
    device, progress, log
        See :func:`sweep_cca`.
    """
    log = log or (lambda _m: None)
    try:
        s = settings if isinstance(settings, CCASettings) else CCASettings(**dict(settings or {}))
    except (TypeError, ValueError) as e:
        return CCADistances(note=f"CCA not computed: {e}")
    done = runs[runs["status"] == "completed"] if not runs.empty else runs
    if done.empty:
        return CCADistances(note="CCA skipped: no completed runs.")
    if not normalise_alpha(done["alpha"]).eq(0.0).any():
        return CCADistances(
            note="CCA skipped: no completed α = 0 runs, so there are no unregularised networks "
            "to compare with (the between-distances ρ(α, 0) need them)."
        )
    if data is None:
        data = read_data_hint(sweep_dir)
    cfg = json.loads(done["config"].iloc[0]) if "config" in done.columns else {}
    try:
        locate_dataset(cfg.get("dataset", "cifar10"), data)
    except (FileNotFoundError, ValueError) as e:
        return CCADistances(note=f"CCA skipped: the dataset was not found ({e}). Pass --data PATH.")
    wanted = {k: v for k, v in s.to_dict().items() if k in _REPORT_KEYS}
    cached = cached_cca(sweep_dir, wanted, plan_pairs(runs, 0.0, s.max_pairs))
    if cached is not None:
        log(f"reusing {Path(sweep_dir) / CCA_CSV}")
        return CCADistances(distances=cached, settings={**wanted, **cached.attrs})
    try:
        df = sweep_cca(sweep_dir, s, data, device=device, progress=progress, log=log)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        return CCADistances(note=f"CCA not computed: {e}")
    return CCADistances(distances=df, settings=dict(df.attrs))
