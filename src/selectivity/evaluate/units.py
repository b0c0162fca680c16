"""Per-unit records of a measurement: one row per unit, the most-activating samples, a gallery.

:func:`unit_frame` has one row per unit (layer, unit, SI, precision, preferred class,
dead, mean response per class); :func:`top_frame` one row per unit and rank of its
``k`` most-activating samples (streamed by
:func:`selectivity.core.measure.measure_selectivity` with ``top_k``, ``O(units x k)``
memory). :func:`write_unit_records` writes both as Parquet (with ``pyarrow``) or CSV.
:func:`gallery_units` picks, per chosen layer, the most and least selective units with
their top images, and :func:`gallery_images` gathers those images and their classes from
the measured data set: the data that :func:`selectivity.plots.units.draw_unit_gallery`
draws.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core.measure import LayerReport, SelectivityReport, measure_selectivity
from ..data import BatchLoader
from ..run.checkpoint import load_run
from ..training.single import subset

__all__ = [
    "RECORD_FORMATS",
    "TOP_SAMPLES",
    "UNITS",
    "GalleryUnit",
    "gallery_images",
    "gallery_units",
    "run_gallery",
    "top_frame",
    "unit_frame",
    "write_unit_records",
]

#: File stems of the per-unit records in a ``--units`` directory (suffix .parquet or .csv).
UNITS = "units"
TOP_SAMPLES = "top_samples"
#: Formats :func:`write_unit_records` writes ("auto": Parquet when pyarrow is installed).
RECORD_FORMATS = ("auto", "parquet", "csv")


def unit_frame(report: SelectivityReport, class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per unit of every layer: :meth:`~selectivity.core.measure.SelectivityReport.to_frame`.

    Columns: ``layer``, ``unit``, ``selectivity`` (NaN for dead units), ``precision``,
    ``dead``, ``preferred_class`` (index of the largest class mean), ``preferred_name``
    and ``mean_<class>`` (mean response per class) for every class.
    """
    return report.to_frame(class_names)


def top_frame(report: SelectivityReport) -> pd.DataFrame:
    """One row per unit and rank of its most-activating samples (empty without ``top_k``).

    Columns: ``layer``, ``unit``, ``rank`` (0 = largest), ``sample`` (index in the
    measured data's order), ``token`` (position, -1 unless token-level labels) and
    ``value`` (the response).
    """
    parts = []
    for layer in report.layers:
        if layer.top_values is None or layer.top_samples is None:
            continue
        k, u = layer.top_values.shape
        tokens = layer.top_tokens if layer.top_tokens is not None else torch.full((k, u), -1)
        parts.append(
            pd.DataFrame(
                {
                    "layer": layer.name,
                    "unit": np.tile(np.arange(u), k),  # (k, U) flattened row-major
                    "rank": np.repeat(np.arange(k), u),
                    "sample": layer.top_samples.reshape(-1).numpy(),
                    "token": tokens.reshape(-1).numpy(),
                    "value": layer.top_values.reshape(-1).numpy(),
                }
            ).sort_values(["unit", "rank"], kind="stable")
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def write_unit_records(
    report: SelectivityReport,
    out_dir: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    fmt: str = "auto",
) -> dict[str, Path]:
    """Write ``units`` and ``top_samples`` (if measured) to ``out_dir``.

    Parameters
    ----------
    fmt : {"auto", "parquet", "csv"}
        ``"auto"``: Parquet when ``pyarrow`` is installed (the ``parquet`` extra), else CSV.

    Returns
    -------
    dict
        ``{"units": path, "top_samples": path}`` of the files written.
    """
    if fmt not in RECORD_FORMATS:
        raise ValueError(f"format must be one of {RECORD_FORMATS}, got {fmt!r}")
    has_arrow = importlib.util.find_spec("pyarrow") is not None
    if fmt == "parquet" and not has_arrow:
        raise ValueError("Parquet needs pyarrow: pip install 'selectivity[parquet]', or use CSV")
    parquet = fmt == "parquet" or (fmt == "auto" and has_arrow)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    frames = {UNITS: unit_frame(report, class_names), TOP_SAMPLES: top_frame(report)}
    for stem, frame in frames.items():
        if frame.empty:
            continue
        path = out / f"{stem}.{'parquet' if parquet else 'csv'}"
        tmp = path.with_name(path.name + ".tmp")
        if parquet:
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
        os.replace(tmp, path)  # a reader never sees half a file
        written[stem] = path
    return written


@dataclass(frozen=True)
class GalleryUnit:
    """One unit of the gallery: its index, selectivity, preferred class and top samples.

    With token-level labels a top sample is one token: ``samples`` holds its sequence
    (the input's index in the data order) and ``positions`` its position in that
    sequence (:attr:`~selectivity.core.measure.LayerReport.top_tokens`); otherwise
    ``positions`` is None.
    """

    layer: str
    unit: int
    selectivity: float
    preferred_class: int
    samples: list[int]  # indices into the measured data, most activating first
    values: list[float]
    positions: list[int] | None = None  # token positions in those samples (token labels only)


def gallery_units(
    report: SelectivityReport, layers: Sequence[str] | None = None, n: int = 3, k: int = 9
) -> dict:
    """The ``n`` most and ``n`` least selective live units of each chosen layer, with top ``k`` samples.

    Parameters
    ----------
    report : SelectivityReport
        Measured with ``top_k >= k``.
    layers : sequence of str, optional
        Layer names; default: every layer.
    n, k : int
        Units per end of the ranking; samples per unit.

    Returns
    -------
    dict
        ``{layer: {"most": [GalleryUnit, ...], "least": [...]}}``; dead units (NaN
        index) are never picked.
    """
    by_name = {l.name: l for l in report.layers}
    chosen = list(layers) if layers is not None else list(by_name)
    missing = [name for name in chosen if name not in by_name]
    if missing:
        raise ValueError(f"no measured layer named {missing}; measured: {list(by_name)}")
    out: dict[str, dict[str, list[GalleryUnit]]] = {}
    for name in chosen:
        layer = by_name[name]
        if layer.top_samples is None or layer.top_values is None or layer.top_samples.shape[0] < k:
            raise ValueError(f"layer {name!r} was measured without top_k >= {k} most-activating samples")
        si = layer.selectivity
        live = [int(i) for i in torch.nonzero(~torch.isnan(si)).flatten()]
        ranked = sorted(live, key=lambda i: (-float(si[i]), i))
        most = ranked[:n]
        least = [i for i in reversed(ranked) if i not in most][:n]
        out[name] = {"most": [_unit(layer, i, k) for i in most], "least": [_unit(layer, i, k) for i in least]}
    return out


def _unit(layer: LayerReport, i: int, k: int) -> GalleryUnit:
    assert layer.top_samples is not None and layer.top_values is not None
    pref = int(layer.class_means[:, i].argmax()) if layer.class_means is not None else -1
    value = float(layer.selectivity[i])
    return GalleryUnit(
        layer.name,
        i,
        value if not math.isnan(value) else float("nan"),
        pref,
        [int(s) for s in layer.top_samples[:k, i]],
        [float(v) for v in layer.top_values[:k, i]],
        None if layer.top_tokens is None else [int(p) for p in layer.top_tokens[:k, i]],
    )


def gallery_images(gallery: dict, dataset) -> dict[str, dict]:
    """The images and labels of :func:`gallery_units`' choice, ready for the gallery plot.

    Parameters
    ----------
    gallery : dict
        :func:`gallery_units`' result, measured on ``dataset`` in its order (no shuffling).
    dataset : ImageDataset
        The measured images: ``images`` ``(N, 3, H, W)`` uint8, ``labels`` ``(N,)``,
        ``classes`` names.

    Returns
    -------
    dict
        ``{layer: {"images": (R, K, 3, H, W) uint8, "row_labels": [R str],
        "tile_labels": [R x K class names], "units": [GalleryUnit]}}``, most selective
        units first, then the least selective.
    """
    out: dict[str, dict] = {}
    n = len(dataset.labels)
    for layer, ends in gallery.items():
        units = [*ends["most"], *ends["least"]]
        if any(s >= n for u in units for s in u.samples):
            raise ValueError("the gallery's sample indices exceed the data set: measure it on this data set")
        idx = torch.tensor([u.samples for u in units], dtype=torch.long)  # (R, K)
        images = dataset.images[idx.reshape(-1)].reshape(*idx.shape, *dataset.images.shape[1:])
        labels = dataset.labels[idx]  # (R, K)
        rows = [
            f"{'most' if i < len(ends['most']) else 'least'}: unit {u.unit}  SI {u.selectivity:.2f}"
            + (f"  -> {dataset.classes[u.preferred_class]}" if u.preferred_class >= 0 else "")
            for i, u in enumerate(units)
        ]
        out[layer] = {
            "images": images.numpy(),
            "row_labels": rows,
            "tile_labels": [[dataset.classes[int(c)] for c in row] for row in labels],
            "units": units,
        }
    return out


def run_gallery(
    run_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    layers: Sequence[str] | None = None,
    n: int = 3,
    k: int = 9,
    device: str = "cpu",
    batch_size: int = 500,
) -> dict[str, dict]:
    """The unit gallery of one run: measure its test images, pick units, gather their images.

    The run's best checkpoint is measured on the test images its test accuracy used (the
    stratified ``eval_subset`` of its config, else the whole test split), keeping each
    unit's ``k`` most-activating images (``O(units x k)`` memory).

    Returns
    -------
    dict
        :func:`gallery_images`' result for the chosen layers (default: the first, the
        middle and the last measured layer).
    """
    run = load_run(run_dir, data, device)
    cfg = run.config
    test = subset(run.splits.test, cfg.eval_subset, cfg.split_seed)
    loader = BatchLoader(test, batch_size, mean=run.splits.mean, std=run.splits.std, device=run.device)
    rep = measure_selectivity(
        run.model,
        loader,
        run.splits.num_classes,
        layers=cfg.selectivity_layers or None,
        top_n=None,
        negative=cfg.negative_rule,
        device=run.device,
        pooling=cfg.token_pooling,
        top_k=k,
    )
    names = [l.name for l in rep.layers]
    chosen = list(layers) if layers else list(dict.fromkeys([names[0], names[len(names) // 2], names[-1]]))
    return gallery_images(gallery_units(rep, chosen, n=n, k=k), test)
