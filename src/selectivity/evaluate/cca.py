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

Choices (documented, configurable through the arguments):

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
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from ..analysis.pwcca import flatten_conv_activations, pwcca_distance
from ..analysis.stats import bonferroni, normalise_alpha, paired_test
from ..core.hooks import ActivationCapture
from ..data import BatchLoader, locate_dataset, stratified_split
from ..run.checkpoint import load_run
from ..run.files import SweepFiles
from ..sweep.store import open_store

__all__ = [
    "select_images",
    "gather_activations",
    "check_datapoints",
    "layer_distances",
    "plan_pairs",
    "cca_distances",
    "cca_summary",
    "cca_plot_frame",
    "CCA_CSV",
    "CCA_SETTINGS_JSON",
    "PWCCA_METHODS",
    "PAIR_ORDERS",
    "CCADistances",
    "cached_cca",
    "sweep_cca",
]

#: Where :func:`cca_distances` writes its table, relative to the sweep directory.
CCA_CSV = Path("analysis") / "cca_distances.csv"
#: The settings :func:`cca_distances` used, next to :data:`CCA_CSV`.
CCA_SETTINGS_JSON = Path("analysis") / "cca_settings.json"
#: Columns identifying one network configuration; pairs never cross them.
GROUP_COLS = ("model", "activation", "negative_slope")
Mode = Literal["spatial_mean", "positions"]


# --------------------------------------------------------------------------- activations
def select_images(labels, n_images: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of a class-stratified subset of ``n_images`` samples.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
        Labels of the test split.
    n_images : int or None
        Subset size; ``None`` or ``>= N`` selects every sample.
    seed : int, default 0
        Seed of the stratified draw; the same labels and seed give the same subset, so
        every run of a sweep is probed with identical images.

    Returns
    -------
    numpy.ndarray
        Sorted int64 indices.
    """
    labels = np.asarray(labels)
    if n_images is None or n_images >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    if n_images < 2:
        raise ValueError(f"n_images must be >= 2, got {n_images}")
    _, keep = stratified_split(labels, val_size=int(n_images), seed=seed)
    return np.sort(np.asarray(keep, dtype=np.int64))


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


#: PWCCA computations (see :mod:`selectivity.analysis.pwcca`).
PWCCA_METHODS = ("svcca", "textbook")
PWCCAMethod = Literal["svcca", "textbook"]
#: Order of the two networks of a between pair.
PAIR_ORDERS = ("baseline-first", "alpha-first")
PairOrder = Literal["baseline-first", "alpha-first"]


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


def _read_data_hint(sweep_dir: Path) -> str | None:
    p = SweepFiles(sweep_dir).spec
    if p.exists():
        try:
            return json.loads(p.read_text()).get("data")
        except (OSError, ValueError):
            return None
    return None


def cca_distances(
    sweep_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    model: str | None = None,
    n_images: int = 2000,
    mode: Mode = "spatial_mean",
    baseline: float = 0.0,
    max_pairs: int | None = None,
    device: str = "cpu",
    progress: bool = True,
    *,
    min_ratio: float | None = 5.0,
    symmetric: bool = False,
    method: PWCCAMethod = "svcca",
    order: PairOrder = "baseline-first",
    image_seed: int = 0,
    exclude_same_seed: bool = False,
    write: bool = True,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """PWCCA distances of every within and between pair of a sweep, layer by layer.

    Parameters
    ----------
    sweep_dir : path
        Sweep directory (``runs/``, ``results.sqlite``).
    data : path, optional
        Dataset location; default: the one recorded in ``sweep.json``, then the usual
        search (``$SELECTIVITY_DATA``, cache).
    model : str, optional
        Only this model's runs (default: every model, each against its own baseline).
    n_images : int, default 2000
        Test images probed (a stratified subset, identical for every run).
    mode : {"spatial_mean", "positions"}, default "spatial_mean"
        Conv-map flattening (see :func:`gather_activations`).
    baseline : float, default 0.0
        Alpha of the unregularised networks.
    max_pairs : int, optional
        Cap on pairs per (setting, alpha, kind), for speed (paper: 190 within, 400
        between for 20 seeds).
    device : str, default "cpu"
        Device of the forward passes.
    progress : bool, default True
        Show a progress bar over pairs.
    min_ratio : float or None, default 5
        Minimum datapoints per neuron (see :func:`check_datapoints`).
    symmetric : bool, default False
        Average the PWCCA of both orders of each pair.
    method : {"svcca", "textbook"}, default "svcca"
        PWCCA computation: the reference implementation the paper used, or the
        canonical-variate form.
    order : {"baseline-first", "alpha-first"}, default "baseline-first"
        Order of the two networks of a between pair (paper 1, A.2: alpha = 0 first).
    image_seed : int, default 0
        Seed of the image subset.
    exclude_same_seed : bool, default False
        Leave out between pairs of equal seeds (same initialisation), see
        :func:`plan_pairs`.
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
    log = log or (lambda _m: None)
    with open_store(sweep_dir) as store:
        runs = store.runs_df()
    if model is not None:
        runs = runs[runs["model"] == model]
    pairs = plan_pairs(runs, baseline, max_pairs, exclude_same_seed=exclude_same_seed)
    if pairs.empty:
        raise ValueError(
            f"no pairs of completed runs in {sweep_dir}" + (f" for model {model!r}" if model else "")
        )
    if data is None:
        data = _read_data_hint(sweep_dir)
    if method not in PWCCA_METHODS:
        raise ValueError(f"method must be one of {PWCCA_METHODS}, got {method!r}")
    if order not in PAIR_ORDERS:
        raise ValueError(f"order must be one of {PAIR_ORDERS}, got {order!r}")
    settings = dict(
        n_images=n_images,
        mode=mode,
        baseline=baseline,
        max_pairs=max_pairs,
        min_ratio=min_ratio,
        symmetric=symmetric,
        method=method,
        order=order,
        image_seed=image_seed,
        exclude_same_seed=exclude_same_seed,
        weights=_weights_description(method, order, symmetric),
    )

    cache: dict[str, dict[str, torch.Tensor]] = {}
    checked = False

    def acts(run_id: str) -> dict[str, torch.Tensor]:
        nonlocal checked
        if run_id not in cache:
            cache[run_id] = gather_activations(
                SweepFiles(sweep_dir).run(run_id).root,
                n_images,
                data,
                device=device,
                mode=mode,
                image_seed=image_seed,
            )
            if not checked:
                # Fail before hours of work, with the fix in the message.
                check_datapoints(cache[run_id], min_ratio, mode, n_images)
                checked = True
        return cache[run_id]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs), desc="CCA pairs", unit="pair", dynamic_ncols=True, disable=None)
    rows = []
    base = normalise_alpha(baseline)
    try:
        for _, grp in pairs.groupby(list(GROUP_COLS), sort=True, dropna=False):
            base_ids = set(grp.loc[grp["alpha"] == base, ["run_a", "run_b"]].to_numpy().ravel()) | set(
                grp.loc[grp["kind"] == "between", "run_b"]
            )
            for _alpha, sub in grp.groupby("alpha", sort=True):
                for p in sub.itertuples(index=False):
                    a, b = acts(p.run_a), acts(p.run_b)
                    if p.kind == "between" and order == "baseline-first":
                        first, second = b, a  # run_b is the baseline network
                    else:
                        first, second = a, b
                    d = layer_distances(
                        first, second, min_ratio=min_ratio, symmetric=symmetric, method=method
                    )
                    for i, (name, dist) in enumerate(d.items()):
                        rows.append(
                            {
                                **p._asdict(),
                                "layer_index": i,
                                "layer": name,
                                "neurons_a": int(a[name].shape[0]),
                                "neurons_b": int(b[name].shape[0]),
                                "datapoints": int(a[name].shape[1]),
                                "distance": dist,
                            }
                        )
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
    df.attrs.update(settings)
    if write:
        out = sweep_dir / CCA_CSV
        out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False)
        (sweep_dir / CCA_SETTINGS_JSON).write_text(json.dumps(settings, indent=2) + "\n")
        log(f"wrote {out} ({len(df)} rows, {len(pairs)} pairs)")
    return df


# --------------------------------------------------------------------------- summaries
def _group_keys(df: pd.DataFrame) -> list[str]:
    return [c for c in GROUP_COLS if c in df.columns]


def cca_summary(
    df: pd.DataFrame,
    baseline: float = 0.0,
    method: Literal["ttest", "wilcoxon"] = "ttest",
    significance: float = 0.05,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per-layer means, per-replicate distance ratios and paired tests of a CCA table.

    Parameters
    ----------
    df : pandas.DataFrame
        Output of :func:`cca_distances`.
    baseline : float, default 0.0
        Alpha of the unregularised networks (no ratio or test for it).
    method : {"ttest", "wilcoxon"}, default "ttest"
        Paired test (:func:`selectivity.analysis.stats.paired_test`; the paper's is the
        paired t-test).
    significance : float, default 0.05
        Threshold on the Bonferroni-corrected p-value.

    Returns
    -------
    by_layer : pandas.DataFrame
        Per (setting, alpha, layer): ``distance_within`` / ``distance_between`` (means
        over pairs), ``n_within``, ``n_between``.
    ratio : pandas.DataFrame
        Per (setting, alpha != baseline, seed of alpha): mean over layers of
        ``mean(between) / mean(within)`` (the seed's pairs only), plus the two mean
        distances and ``n_layers`` (the input of :func:`selectivity.plots.selectivity.plot_cca_ratio`).
    tests : pandas.DataFrame
        Per (setting, alpha != baseline): paired test of the per-layer mean between vs
        within distances (paired by layer), ``n`` layers, ``mean_between``,
        ``mean_within``, ``ratio``, ``statistic``, ``p``, ``p_bonferroni`` (over the
        alphas of the setting), ``significant``, ``note`` (why a test is missing).
    """
    keys = _group_keys(df)
    layer_keys = [*keys, "alpha", "layer_index", "layer"]
    by_cols = [*layer_keys, "distance_within", "distance_between", "n_within", "n_between"]
    ratio_cols = [*keys, "alpha", "seed", "ratio", "distance_between", "distance_within", "n_layers"]
    test_cols = [
        *keys,
        "alpha",
        "n",
        "mean_between",
        "mean_within",
        "ratio",
        "statistic",
        "p",
        "p_bonferroni",
        "significant",
        "method",
        "note",
    ]
    if df is None or df.empty:
        return (
            pd.DataFrame(columns=by_cols),
            pd.DataFrame(columns=ratio_cols),
            pd.DataFrame(columns=test_cols),
        )
    d = df.assign(alpha=normalise_alpha(df["alpha"]))
    base = normalise_alpha(baseline)

    def mean_of(kind: str, name: str) -> pd.DataFrame:
        s = d[d["kind"] == kind].groupby(layer_keys, dropna=False)["distance"]
        return s.agg(["mean", "count"]).rename(columns={"mean": f"distance_{name}", "count": f"n_{name}"})

    by_layer = mean_of("within", "within").join(mean_of("between", "between"), how="outer").reset_index()
    for c in ("n_within", "n_between"):
        by_layer[c] = by_layer[c].fillna(0).astype(int)
    by_layer = (
        by_layer[by_cols]
        .sort_values([*keys, "alpha", "layer_index"], kind="mergesort")
        .reset_index(drop=True)
    )

    # Per replicate s of alpha: its own between pairs vs the within pairs it belongs to.
    ratio_rows = []
    nonbase = d[d["alpha"] != base]
    for key, sub in nonbase.groupby([*keys, "alpha"], sort=True, dropna=False):
        w, b = sub[sub["kind"] == "within"], sub[sub["kind"] == "between"]
        for s in sorted(set(b["seed_a"])):
            bm = b[b["seed_a"] == s].groupby("layer_index")["distance"].mean()
            wm = w[(w["seed_a"] == s) | (w["seed_b"] == s)].groupby("layer_index")["distance"].mean()
            both = pd.concat([bm.rename("b"), wm.rename("w")], axis=1).dropna()
            both = both[both["w"] > 0]  # a zero within distance has no finite ratio
            r = (both["b"] / both["w"]).mean() if len(both) else np.nan
            ratio_rows.append(
                {
                    **dict(zip([*keys, "alpha"], key)),
                    "seed": int(s),
                    "ratio": float(r),
                    "distance_between": float(bm.mean()) if len(bm) else np.nan,
                    "distance_within": float(wm.mean()) if len(wm) else np.nan,
                    "n_layers": int(len(both)),
                }
            )
    ratio = pd.DataFrame(ratio_rows, columns=ratio_cols)

    test_frames = []
    for key, sub in by_layer[by_layer["alpha"] != base].groupby(keys, sort=True, dropna=False):
        rows = []
        for alpha, s in sub.groupby("alpha", sort=True):
            ok = s.dropna(subset=["distance_within", "distance_between"])
            row = {
                **dict(zip(keys, key if isinstance(key, tuple) else (key,))),
                "alpha": alpha,
                "n": len(ok),
                "mean_between": ok["distance_between"].mean() if len(ok) else np.nan,
                "mean_within": ok["distance_within"].mean() if len(ok) else np.nan,
                "statistic": np.nan,
                "p": np.nan,
                "method": method,
                "note": "",
            }
            row["ratio"] = row["mean_between"] / row["mean_within"] if row["mean_within"] else np.nan
            if len(ok) < 2:
                row["note"] = (
                    "needs within and between distances in >= 2 layers "
                    f"(within pairs {int(s['n_within'].max())}, between pairs {int(s['n_between'].max())})"
                )
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # constant differences: NaN p
                    t = paired_test(ok["distance_between"], ok["distance_within"], method=method)
                row.update(statistic=t["statistic"], p=t["p"])
            rows.append(row)
        t = pd.DataFrame(rows)
        t["p_bonferroni"] = bonferroni(t["p"].to_numpy(float))
        t["significant"] = (t["p_bonferroni"] < significance).astype(bool)
        test_frames.append(t)
    tests = pd.concat(test_frames, ignore_index=True) if test_frames else pd.DataFrame(columns=test_cols)
    return by_layer, ratio, tests[test_cols].reset_index(drop=True)


def cca_plot_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Pair-level frame for :func:`selectivity.plots.selectivity.plot_cca_distance_by_layer`.

    One row per (pair, layer) with ``distance_within`` set for within pairs and
    ``distance_between`` for between pairs (the other NaN), so the plot's 95% CI bands
    are over pairs rather than over a single per-layer mean.
    """
    keys = _group_keys(df)
    d = df[[*keys, "alpha", "layer_index", "layer", "kind", "distance"]].copy()
    d["distance_within"] = d["distance"].where(d["kind"] == "within")
    d["distance_between"] = d["distance"].where(d["kind"] == "between")
    return d.drop(columns=["kind", "distance"]).reset_index(drop=True)


# --------------------------------------------------------------------------- for the report
@dataclass
class CCADistances:
    """The CCA distances table of a sweep, or a note saying why there is none."""

    distances: pd.DataFrame | None = None
    note: str | None = None
    settings: dict = field(default_factory=dict)


def cached_cca(sweep_dir: str | os.PathLike, settings: dict, pairs: pd.DataFrame) -> pd.DataFrame | None:
    """``SWEEP/analysis/cca_distances.csv`` if it was computed with ``settings`` on ``pairs``.

    Returns None when the file is missing, unreadable, symmetric, or made with other
    settings or other pairs of runs.
    """
    sweep_dir = Path(sweep_dir)
    csv, js = sweep_dir / CCA_CSV, sweep_dir / CCA_SETTINGS_JSON
    if not (csv.exists() and js.exists()):
        return None
    try:
        saved = json.loads(js.read_text())
        if any(saved.get(k) != v for k, v in settings.items()) or saved.get("symmetric"):
            return None
        df = pd.read_csv(csv)
    except (OSError, ValueError):
        return None
    have = set(map(tuple, df[["run_a", "run_b"]].drop_duplicates().to_numpy()))
    want = set(map(tuple, pairs[["run_a", "run_b"]].to_numpy()))
    if have != want:
        return None
    df.attrs.update(saved)
    return df


def sweep_cca(
    sweep_dir: str | os.PathLike,
    runs: pd.DataFrame,
    dataset: str | os.PathLike | None = None,
    n_images: int = 2000,
    mode: Mode = "spatial_mean",
    device: str = "cpu",
    max_pairs: int | None = None,
    min_ratio: float | None = 5.0,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    method: PWCCAMethod = "svcca",
    order: PairOrder = "baseline-first",
) -> CCADistances:
    """CCA distances of a sweep, or a note saying why they are missing (never raises).

    Reuses ``SWEEP/analysis/cca_distances.csv`` when it was computed with the same
    settings on the same pairs of runs (e.g. by ``selectivity cca``).

    Parameters
    ----------
    sweep_dir : path
        Sweep directory.
    runs : pandas.DataFrame
        Its runs frame (``status``, ``alpha``, ``config`` JSON, ...).
    dataset : path, optional
        Dataset location (default: the one in ``sweep.json``, then the usual search;
        never downloaded).
    n_images, mode, device, max_pairs, min_ratio, progress, log, method, order
        See :func:`cca_distances`.
    """
    log = log or (lambda _m: None)
    done = runs[runs["status"] == "completed"] if not runs.empty else runs
    if done.empty:
        return CCADistances(note="CCA skipped: no completed runs.")
    if not normalise_alpha(done["alpha"]).eq(0.0).any():
        return CCADistances(
            note="CCA skipped: no completed α = 0 runs, so there are no unregularised networks "
            "to compare with (the between-distances ρ(α, 0) need them)."
        )
    if dataset is None:
        dataset = _read_data_hint(Path(sweep_dir))
    cfg = json.loads(done["config"].iloc[0]) if "config" in done.columns else {}
    try:
        locate_dataset(cfg.get("dataset", "cifar10"), dataset)
    except (FileNotFoundError, ValueError) as e:
        return CCADistances(note=f"CCA skipped: the dataset was not found ({e}). Pass --data PATH.")
    settings = dict(
        n_images=n_images, mode=mode, max_pairs=max_pairs, min_ratio=min_ratio, method=method, order=order
    )
    cached = cached_cca(sweep_dir, settings, plan_pairs(runs, 0.0, max_pairs))
    if cached is not None:
        log(f"reusing {Path(sweep_dir) / CCA_CSV}")
        return CCADistances(distances=cached, settings={**settings, **cached.attrs})
    try:
        df = cca_distances(
            sweep_dir,
            dataset,
            n_images=n_images,
            mode=mode,
            max_pairs=max_pairs,
            device=device,
            progress=progress,
            min_ratio=min_ratio,
            method=method,
            order=order,
            log=log,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        return CCADistances(note=f"CCA not computed: {e}")
    return CCADistances(distances=df, settings=dict(df.attrs))
