"""The report's data model: what is read from a sweep, split into settings.

:func:`collect` reads the sweep's stored records only (database synced from the run
directories, ``sweep.json``, each run's ``meta.json``), once per report: the runs, the
layers, and the stored results of ``selectivity robustness`` and ``selectivity
geometry`` come from one opening of the store, and every section reads them from the
:class:`ReportData`; nothing is trained or measured.
:func:`settings_of` splits the runs into settings (model x activation x slope x
robust-training method), which are never pooled. :class:`TableItem` and :class:`FigureItem` are what the other
modules of the package produce and :mod:`.html` renders.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..evaluate.geometry import GEOMETRY_TABLES
from ..evaluate.geometry import pick_settings as pick_geometry_settings
from ..evaluate.robustness import ROBUSTNESS_TABLES
from ..evaluate.robustness import pick_settings as pick_robustness_settings
from ..run.files import SweepFiles, provenance, read_json
from ..sweep.store import open_store

__all__ = [
    "TITLE",
    "META_FIELDS",
    "ROBUSTNESS_KINDS",
    "ReportData",
    "Setting",
    "FigureItem",
    "TableItem",
    "METHOD_LABELS",
    "collect",
    "robust_methods",
    "settings_of",
    "slug",
    "match_setting",
]

#: Title of the HTML page (also its first heading).
TITLE = "Class selectivity sweep report"
#: Frames of the store's robustness results read by :func:`collect`.
ROBUSTNESS_KINDS = ("summary", "corruptions", "attacks")
#: Fields of each run's meta.json summarised under "Provenance".
META_FIELDS = (
    "package_version",
    "git_revision",
    "torch_version",
    "python_version",
    "hostname",
    "platform",
    "device",
    "cuda_available",
)


@dataclass
class ReportData:
    """Everything the report shows that comes from stored records.

    Attributes
    ----------
    sweep_dir : Path
    runs : pandas.DataFrame
        The store's runs frame (every status; ``config`` JSON kept).
    layers : pandas.DataFrame
        The store's layers frame.
    sweep : dict
        Content of ``sweep.json`` (``{}`` when missing).
    meta : pandas.DataFrame
        One row per run directory with a ``meta.json``: ``run_id`` + :data:`META_FIELDS`.
    generated : str
        Generation time, UTC, ISO 8601.
    generator : dict
        Provenance of the code writing the report.
    robustness : dict of str to pandas.DataFrame
        The store's robustness frames (``"summary"``, ``"corruptions"``, ``"attacks"``;
        empty frames without results of ``selectivity robustness``).
    geometry : pandas.DataFrame
        The store's geometry frame (empty without results of ``selectivity geometry``).
    """

    sweep_dir: Path
    runs: pd.DataFrame
    layers: pd.DataFrame
    sweep: dict
    meta: pd.DataFrame
    generated: str
    generator: dict
    robustness: dict[str, pd.DataFrame] = field(default_factory=dict)
    geometry: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass
class Setting:
    """Runs of one model with one activation setting and one training method (never pooled)."""

    key: str  # file- and id-safe slug
    label: str  # human-readable, e.g. "resnet20" or "resnet20, leaky_relu slope 0.1"
    model: str
    runs: pd.DataFrame  # every status
    layers: pd.DataFrame  # completed runs only
    robust: str = "none"  # robust-training method (config field ``robust``)

    @property
    def done(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "completed"]


@dataclass
class FigureItem:
    """One figure: its file and caption, or a note saying why it is missing."""

    id: str
    paper: str  # e.g. "Fig. 1b"
    title: str
    caption: str = ""
    path: Path | None = None
    note: str | None = None
    wide: bool = False  # multi-panel: spans the whole row of the figure grid


@dataclass
class TableItem:
    """One table: the raw frame (written as CSV) and a display frame (shown in HTML)."""

    id: str
    title: str
    data: pd.DataFrame
    display: pd.DataFrame | None = None
    caption: str = ""
    path: Path | None = None
    note: str | None = None
    show: bool = True  # False: CSV only (listed, not rendered)


# --------------------------------------------------------------------------- collect
def collect(sweep_dir: str | os.PathLike) -> ReportData:
    """Read a sweep's stored records (database, ``sweep.json``, ``meta.json`` files).

    Parameters
    ----------
    sweep_dir : path
        Sweep directory.

    Returns
    -------
    ReportData
    """
    sweep_dir = Path(sweep_dir)
    files = SweepFiles(sweep_dir)
    # The one scan of runs/ (analysis tables synced with it); alphas come back normalised.
    with open_store(sweep_dir, analyses=[ROBUSTNESS_TABLES, GEOMETRY_TABLES]) as store:
        runs = store.runs_df()
        layers = store.layers_df()
        robustness = {kind: store.frame(ROBUSTNESS_TABLES, kind) for kind in ROBUSTNESS_KINDS}
        geometry = store.frame(GEOMETRY_TABLES, "rows")
    # Results of several settings are stored side by side: the sweep's default settings.
    robustness = pick_robustness_settings(robustness, sweep_dir)
    geometry = pick_geometry_settings(geometry)
    sweep: dict[str, Any] = {}
    if files.spec.exists():
        try:
            sweep = read_json(files.spec)
        except (OSError, ValueError) as e:
            sweep = {"error": f"cannot read sweep.json: {e}"}
    metas = []
    for rid in runs["run_id"] if not runs.empty else []:
        try:
            p = files.run(rid).meta  # ValueError: a stored id that is not a run id
            m = read_json(p) if p.exists() else {}
        except (OSError, ValueError):
            m = {}
        metas.append({"run_id": rid, **{k: m.get(k) for k in META_FIELDS}})
    meta = pd.DataFrame(metas, columns=["run_id", *META_FIELDS])
    gen = provenance()
    return ReportData(
        sweep_dir=sweep_dir,
        runs=runs,
        layers=layers,
        sweep=sweep,
        meta=meta,
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        generator={k: gen.get(k) for k in ("package_version", "git_revision", "torch_version", "hostname")},
        robustness=robustness,
        geometry=geometry,
    )


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "all"


def _same(col: pd.Series, value: Any) -> np.ndarray:
    """Element-wise equality that treats NaN as equal to NaN."""
    if pd.isna(value):
        return col.isna().to_numpy()
    return (col == value).to_numpy()


def robust_methods(runs: pd.DataFrame) -> pd.Series:
    """Each run's robust-training method: the config field ``robust`` ("none" when absent).

    Parameters
    ----------
    runs : pandas.DataFrame
        A runs frame with the ``config`` JSON column (the store's).

    Returns
    -------
    pandas.Series
        str, aligned with ``runs``.
    """

    def method(text: Any) -> str:
        try:
            cfg = json.loads(text) if isinstance(text, str) else {}
        except ValueError:
            cfg = {}
        return str(cfg.get("robust") or "none") if isinstance(cfg, dict) else "none"

    if "config" not in runs.columns:
        return pd.Series("none", index=runs.index, dtype=object)
    return runs["config"].map(method).astype(object)


#: How a robust-training method reads in a setting's label.
METHOD_LABELS = {
    "none": "standard training",
    "adversarial": "PGD adversarial training",
    "noise_augment": "Gaussian-noise augmentation",
    "augmix": "AugMix",
}


def settings_of(data: ReportData) -> list[Setting]:
    """Split the runs into settings: model x activation (x slope for leaky ReLU) x training method."""
    runs = data.runs
    if runs.empty:
        return []
    runs = runs.assign(robust=robust_methods(runs))
    cols = ["model", "activation", "negative_slope", "robust"]
    many_acts = runs["activation"].nunique(dropna=False) > 1
    many_methods = runs["robust"].nunique() > 1
    out = []
    # Per model: plain ReLU first, then other activations by slope; standard training first.
    keys = sorted(
        runs.groupby(cols, sort=False, dropna=False).groups,
        key=lambda k: (
            str(k[0]),
            k[1] != "relu",
            str(k[1]),
            float(k[2]) if pd.notna(k[2]) else -1.0,
            list(METHOD_LABELS).index(k[3]) if k[3] in METHOD_LABELS else len(METHOD_LABELS),
            str(k[3]),
        ),
    )
    for key in keys:
        model, act, slope, method = key
        sub = runs[
            (runs["model"] == model)
            & (runs["activation"].astype(str) == str(act))
            & _same(runs["negative_slope"], slope)
            & (runs["robust"] == method)
        ].drop(columns=["robust"])
        label = str(model)
        if act == "leaky_relu":
            label += f", leaky_relu slope {float(slope):g}"
        elif many_acts or (act not in ("relu", None) and not pd.isna(act)):
            label += f", {act}"
        if many_methods or method != "none":
            label += f", {METHOD_LABELS.get(method, method)}"
        lay = data.layers
        if not lay.empty:
            lay = lay[lay["run_id"].isin(sub["run_id"]) & (lay["status"] == "completed")]
        out.append(
            Setting(
                key=slug(label),
                label=label,
                model=str(model),
                runs=sub.reset_index(drop=True),
                layers=lay.reset_index(drop=True),
                robust=str(method),
            )
        )
    # Labels could collide for odd grids (e.g. relu runs with different ignored slopes).
    seen: dict[str, int] = {}
    for s in out:
        n = seen.get(s.key, 0)
        seen[s.key] = n + 1
        if n:
            s.key, s.label = f"{s.key}-{n}", f"{s.label} (#{n + 1})"
    return out


def match_setting(df: pd.DataFrame, s: Setting) -> pd.DataFrame:
    """Rows of a CCA frame belonging to setting ``s`` (same model, activation, slope)."""
    if df.empty:
        return df
    r = s.runs.iloc[0]
    m = (df["model"] == r["model"]) & (df["activation"].astype(str) == str(r["activation"]))
    m &= np.isclose(
        pd.to_numeric(df["negative_slope"], errors="coerce").fillna(-1).to_numpy(float),
        float(r["negative_slope"]) if pd.notna(r["negative_slope"]) else -1,
    )
    return df[m]
