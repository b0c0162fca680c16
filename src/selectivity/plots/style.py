"""One plot style for every figure: the alpha palette, the symmetric-log alpha axis, panel
layout and the one function that saves a figure.

Every module of :mod:`selectivity.plots` draws with these, so one alpha has one colour
everywhere in a report. No ``pyplot`` and no ``matplotlib.use``: figures are created as
:class:`matplotlib.figure.Figure` objects, so importing this never selects a backend.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib import colors as mcolors
from matplotlib import ticker as mticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..analysis.stats import is_baseline

__all__ = [
    "LINTHRESH",
    "DEFAULT_MAX_ABS",
    "ZERO_COLOR",
    "PROMOTE_COLOR",
    "PENALISE_COLOR",
    "MODEL_COLORS",
    "PANEL_SIZE",
    "LEGEND_FONT",
    "alpha_axis",
    "alpha_legend",
    "ci_errors",
    "alpha_color",
    "alpha_palette",
    "completed_runs",
    "describe",
    "facets",
    "fmt_num",
    "lighten",
    "new_ax",
    "panel_figure",
    "save_figure",
]


#: Linear range of the symmetric-log alpha axis (the smallest |alpha| in the paper).
LINTHRESH = 0.1


#: |alpha| drawn at full intensity by :func:`alpha_color` when ``max_abs`` is None
#: (the paper's largest |alpha|).
DEFAULT_MAX_ABS = 30.0


#: Colour of alpha = 0 (no regularisation).
ZERO_COLOR = (0.5, 0.5, 0.5, 1.0)


#: Colour of promote / penalise summary lines (mid-dark red / blue).
PROMOTE_COLOR = colormaps["Reds"](0.75)


PENALISE_COLOR = colormaps["Blues"](0.75)


#: Model colours of Fig. A12 (ResNet20 cyan, VGG16 orange); others from tab10.
MODEL_COLORS = {"resnet20": "tab:cyan", "vgg16": "tab:orange"}


#: Size of one panel, inches (legible at 150 dpi with the default 10 pt font).
PANEL_SIZE = (6.0, 4.0)


#: Font size of legends.
LEGEND_FONT = 9


# ----------------------------------------------------------------------------- colours
def alpha_color(alpha: float, max_abs: float | None = None) -> tuple[float, float, float, float]:
    """Colour of a regularisation scale: blues < 0, reds > 0, grey at 0.

    Intensity grows with ``log1p(|alpha| / LINTHRESH)``, so that 0.1, 1 and 10 are
    distinguishable steps rather than 10 and 30 hogging the range.

    Parameters
    ----------
    alpha : float
        Regularisation scale.
    max_abs : float, optional
        ``|alpha|`` drawn at full intensity (larger values are clipped). Default
        :data:`DEFAULT_MAX_ABS` (30); :func:`alpha_palette` passes the data's maximum.

    Returns
    -------
    tuple of 4 floats
        RGBA in [0, 1].

    Raises
    ------
    ValueError
        ``alpha`` is not finite, or ``max_abs`` is not positive.
    """
    a = float(alpha)
    if not math.isfinite(a):
        raise ValueError(f"alpha must be finite, got {alpha!r}")
    if is_baseline(a):
        return ZERO_COLOR
    m = DEFAULT_MAX_ABS if max_abs is None else float(max_abs)
    if not m > 0:
        raise ValueError(f"max_abs must be > 0, got {max_abs!r}")
    t = min(math.log1p(abs(a) / LINTHRESH) / math.log1p(m / LINTHRESH), 1.0)
    # 0.35 .. 1.0 of the colormap: the lightest shade must still be visible on white.
    cmap = colormaps["Reds" if a > 0 else "Blues"]
    r, g, b, alpha = cmap(0.35 + 0.65 * t)
    return float(r), float(g), float(b), float(alpha)


def alpha_palette(alphas) -> dict[float, tuple[float, float, float, float]]:
    """Colours of a set of alphas, full intensity at their largest ``|alpha|``.

    Parameters
    ----------
    alphas : iterable of float
        Alpha values (duplicates and NaN are ignored).

    Returns
    -------
    dict
        ``{alpha: RGBA}`` for every distinct finite alpha, sorted by alpha.
    """
    a = np.asarray(list(alphas), dtype=float)
    a = np.unique(a[np.isfinite(a)])
    max_abs = float(np.abs(a).max()) if a.size and np.abs(a).max() > 0 else None
    return {float(v): alpha_color(v, max_abs) for v in a}


def lighten(color, amount: float = 0.5):
    """Mix ``color`` with white (for a companion line of the same alpha)."""
    r, g, b, a = mcolors.to_rgba(color)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount, a)


# ----------------------------------------------------------------------------- helpers
def new_ax(ax: Axes | None, figsize=PANEL_SIZE) -> Axes:
    if ax is not None:
        return ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig.add_subplot()


def completed_runs(runs: pd.DataFrame) -> pd.DataFrame:
    if "status" in runs.columns:
        runs = runs[runs["status"] == "completed"]
    return runs


def describe(df: pd.DataFrame) -> str:
    """``"resnet20"`` or ``"resnet20, leaky_relu 0.1"``: the prefix of a panel title."""
    parts = []
    if "model" in df.columns and df["model"].nunique() == 1:
        parts.append(str(df["model"].iloc[0]))
    if "activation" in df.columns and df["activation"].nunique() == 1:
        act = str(df["activation"].iloc[0])
        if act not in ("relu", "None", "nan"):
            slope = ""
            if "negative_slope" in df.columns and df["negative_slope"].nunique() == 1:
                slope = f" {float(df['negative_slope'].iloc[0]):g}"
            parts.append(act + slope)
    return ", ".join(parts)


def fmt_num(x, _pos=None) -> str:
    return f"{x:g}"


def alpha_axis(ax: Axes, alphas, axis: str = "x", min_sep: float = 1 / 13) -> None:
    """Symmetric-log alpha axis with plain-number ticks that do not collide.

    Candidate ticks in order of priority: 0, the extreme alphas, the decades (+-0.1,
    +-1, +-10, ...) inside the data range, then every other alpha present. A candidate
    is kept if it is at least ``min_sep`` of the axis span (in transformed space) away
    from the ticks already kept, so a dense grid (0.1, 0.2, 0.3 ...) stays readable.
    """
    a = np.asarray(alphas, dtype=float)
    a = np.unique(a[np.isfinite(a)])
    set_scale = ax.set_xscale if axis == "x" else ax.set_yscale
    # linscale=0.5: the linear band around 0 takes half a decade, not a full one.
    set_scale("symlog", linthresh=LINTHRESH, linscale=0.5)
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_formatter(mticker.FuncFormatter(fmt_num))
    target.set_minor_locator(
        mticker.SymmetricalLogLocator(linthresh=LINTHRESH, base=10, subs=[float(v) for v in range(2, 10)])
    )
    target.set_minor_formatter(mticker.NullFormatter())
    if a.size == 0:
        return
    lo, hi = float(min(a.min(), 0.0)), float(max(a.max(), 0.0))
    decades = [10.0**e for e in range(int(math.floor(math.log10(LINTHRESH))), 6)]
    candidates = [0.0, lo, hi]
    candidates += [v for d in decades for v in (-d, d) if lo - 1e-12 <= v <= hi + 1e-12]
    candidates += sorted(a.tolist(), key=abs)
    tr = target.get_transform()
    t = lambda v: float(tr.transform(np.array([v], dtype=float))[0])  # noqa: E731
    span = (t(hi) - t(lo)) or 1.0
    kept: list[float] = []
    for v in candidates:
        if all(abs(t(v) - t(k)) >= min_sep * span for k in kept):
            kept.append(v)
    target.set_major_locator(mticker.FixedLocator(sorted(kept)))


def ci_errors(mean, low, high) -> np.ndarray:
    """Error-bar lengths ``(2, n)`` below and above ``mean`` from CI bounds; 0 where there is no CI."""
    m = np.asarray(mean, dtype=float)
    lo = np.nan_to_num(m - np.asarray(low, dtype=float), nan=0.0)
    hi = np.nan_to_num(np.asarray(high, dtype=float) - m, nan=0.0)
    return np.vstack([np.maximum(lo, 0), np.maximum(hi, 0)])


def alpha_legend(ax: Axes, n_entries: int, title: str = "α", outside_above: int = 6) -> None:
    """Legend of the labelled artists; outside the axes (right) when it would hide the data."""
    kw = dict(title=title, fontsize=LEGEND_FONT, title_fontsize=LEGEND_FONT, framealpha=0.85)
    if n_entries > outside_above:
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            ncol=1 if n_entries <= 14 else 2,
            borderaxespad=0.0,
            **kw,
        )
    else:
        ax.legend(**kw)


# ----------------------------------------------------------------------------- output
def save_figure(ax_or_fig, path, dpi: int = 150) -> Path:
    """Write the figure holding ``ax_or_fig`` to ``path`` (PNG unless the suffix says otherwise).

    The only function of this module that writes a file. The parent directory is
    created; nothing is closed and no global state is touched.

    Parameters
    ----------
    ax_or_fig : matplotlib.axes.Axes or matplotlib.figure.Figure
        What to save (an Axes saves its whole figure).
    path : str or path-like
        Destination. Without a suffix ``.png`` is appended.
    dpi : int, default 150
        Resolution.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    fig = ax_or_fig
    if isinstance(fig, Axes):
        fig = fig.get_figure(root=True) if _has_root_kw() else fig.figure
    if not isinstance(fig, Figure):
        raise TypeError(f"expected a matplotlib Axes or Figure, got {type(ax_or_fig).__name__}")
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    # bbox_inches="tight": legends placed outside the axes are kept in the file.
    fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white")
    return path


def _has_root_kw() -> bool:
    import inspect

    try:
        return "root" in inspect.signature(Axes.get_figure).parameters
    except (TypeError, ValueError):
        return False


def facets(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One facet per model (and per activation setting when it varies)."""
    if df.empty:
        return [("", df)]
    cols = [
        c
        for c in ("model", "activation", "negative_slope")
        if c in df.columns and (c == "model" or df[c].nunique(dropna=False) > 1)
    ]
    if not cols:
        return [("", df)]
    out = []
    for _key, sub in df.groupby(cols, sort=True, dropna=False):
        out.append((describe(sub), sub))
    return out


def panel_figure(n: int, panel=PANEL_SIZE) -> tuple[Figure, list[Axes]]:
    ncols = min(max(n, 1), 3)
    nrows = math.ceil(max(n, 1) / ncols)
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    return fig, [fig.add_subplot(nrows, ncols, i + 1) for i in range(max(n, 1))]
