"""Figures of perturbed inputs (paper 2). Functions only draw: no statistics, no file I/O,
no ``pyplot``; when ``ax`` is None a fresh figure is created by
:func:`selectivity.plots.style.new_ax`, and :func:`~selectivity.plots.style.save_figure`
writes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes

from .style import new_ax

__all__ = ["draw_corruption_grid"]


def _to_hwc_float(images: np.ndarray) -> np.ndarray:
    """``(C, S, H, W, 3)`` or ``(C, S, 3, H, W)``, uint8 or float in [0, 1] -> float ``(C, S, H, W, 3)``."""
    arr = np.asarray(images)
    if arr.ndim != 5 or 3 not in (arr.shape[2], arr.shape[4]):
        raise ValueError(
            f"images must be (corruptions, severities, H, W, 3) or (corruptions, severities, 3, H, W), got {arr.shape}"
        )
    if arr.shape[4] != 3:
        arr = arr.transpose(0, 1, 3, 4, 2)  # (C, S, 3, H, W) -> (C, S, H, W, 3)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise ValueError("float images must have values in [0, 1]; pass uint8 for 0-255 data")
    return arr


def draw_corruption_grid(
    images: np.ndarray,
    names: Sequence[str],
    ax: Axes | None = None,
    *,
    clean: np.ndarray | None = None,
    severities: Sequence[int | str] | None = None,
    gap: int = 2,
    title: str | None = None,
) -> Axes:
    """Draw a contact sheet: one image per (corruption, severity), corruptions in rows.

    Parameters
    ----------
    images : numpy.ndarray
        ``(C, S, H, W, 3)`` or ``(C, S, 3, H, W)``; uint8 (0-255) or float in ``[0, 1]``.
    names : sequence of str
        C row labels (corruption names; underscores shown as spaces).
    ax : matplotlib.axes.Axes, optional
        Where to draw; default a new figure sized to the grid.
    clean : numpy.ndarray, optional
        The clean image, ``(H, W, 3)`` or ``(3, H, W)``, shown as a first column.
    severities : sequence, optional
        S column labels; default 1..S.
    gap : int
        White pixels between tiles.
    title : str, optional
        Axes title.

    Returns
    -------
    matplotlib.axes.Axes
    """
    tiles = _to_hwc_float(images)
    n_rows, n_cols, h, w, _ = tiles.shape
    if len(names) != n_rows:
        raise ValueError(f"names must have one label per row ({n_rows}), got {len(names)}")
    labels = [str(s) for s in (range(1, n_cols + 1) if severities is None else severities)]
    if len(labels) != n_cols:
        raise ValueError(f"severities must have one label per column ({n_cols}), got {len(labels)}")
    if clean is not None:
        c = _to_hwc_float(np.asarray(clean)[None, None])[0, 0]
        if c.shape != (h, w, 3):
            raise ValueError(f"clean must be one ({h}, {w}, 3) or (3, {h}, {w}) image, got {np.shape(clean)}")
        tiles = np.concatenate([np.broadcast_to(c, (n_rows, 1, h, w, 3)), tiles], axis=1)
        labels = ["clean", *labels]
        n_cols += 1
    sheet = np.ones((n_rows * (h + gap) - gap, n_cols * (w + gap) - gap, 3))
    for r in range(n_rows):
        for col in range(n_cols):
            sheet[r * (h + gap) : r * (h + gap) + h, col * (w + gap) : col * (w + gap) + w] = tiles[r, col]
    ax = new_ax(ax, figsize=(1.0 + 0.9 * n_cols, 0.3 + 0.9 * n_rows))
    ax.imshow(sheet, interpolation="nearest")
    ax.set_xticks([col * (w + gap) + (w - 1) / 2 for col in range(n_cols)], labels)
    ax.set_yticks([r * (h + gap) + (h - 1) / 2 for r in range(n_rows)], [n.replace("_", " ") for n in names])
    ax.tick_params(length=0)
    ax.xaxis.set_ticks_position("top")
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title)
    return ax
