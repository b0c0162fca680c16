"""The unit gallery: each unit's most-activating images in one row. Functions only draw: no
statistics, no file I/O, no ``pyplot``; when ``ax`` is None a fresh
:class:`matplotlib.figure.Figure` is created.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["draw_unit_gallery"]


def draw_unit_gallery(
    images: np.ndarray,
    row_labels: Sequence[str],
    tile_labels: Sequence[Sequence[str]],
    ax: Axes | None = None,
    *,
    gap: int = 2,
    title: str | None = None,
) -> Axes:
    """Draw one row of images per unit (its most-activating samples, best first).

    Parameters
    ----------
    images : numpy.ndarray
        ``(R, K, 3, H, W)`` or ``(R, K, H, W, 3)`` uint8: R units, K images each.
    row_labels : sequence of str
        R row labels (e.g. ``"unit 17  SI 0.82  -> cat"``).
    tile_labels : sequence of sequences of str
        ``R x K`` labels printed under each image (its class).
    ax : matplotlib.axes.Axes, optional
        Where to draw; default a new figure sized to the grid.
    gap : int
        White pixels between tiles.
    title : str, optional
        Axes title.

    Returns
    -------
    matplotlib.axes.Axes
    """
    arr = np.asarray(images)
    if arr.ndim != 5 or 3 not in (arr.shape[2], arr.shape[4]) or arr.dtype != np.uint8:
        raise ValueError(f"images must be (units, K, 3, H, W) or (units, K, H, W, 3) uint8, got {arr.shape}")
    if arr.shape[4] != 3:
        arr = arr.transpose(0, 1, 3, 4, 2)  # (R, K, 3, H, W) -> (R, K, H, W, 3)
    n_rows, n_cols, h, w, _ = arr.shape
    if len(row_labels) != n_rows or len(tile_labels) != n_rows or any(len(t) != n_cols for t in tile_labels):
        raise ValueError(f"need {n_rows} row labels and {n_rows} x {n_cols} tile labels")
    label_h = max(6, h // 3)  # white band under each row for the tiles' class names
    row_h = h + label_h + gap
    sheet = np.full((n_rows * row_h - gap, n_cols * (w + gap) - gap, 3), 255, dtype=np.uint8)
    for r in range(n_rows):
        for c in range(n_cols):
            y, x = r * row_h, c * (w + gap)
            sheet[y : y + h, x : x + w] = arr[r, c]
    if ax is None:
        fig = Figure(figsize=(max(4.0, 0.75 * n_cols + 2.5), max(1.5, 0.95 * n_rows + 0.6)))
        ax = fig.add_subplot()
    ax.imshow(sheet, interpolation="nearest")
    for r in range(n_rows):
        for c in range(n_cols):
            ax.text(
                c * (w + gap) + w / 2,
                r * row_h + h + label_h / 2,
                str(tile_labels[r][c]),
                ha="center",
                va="center",
                fontsize=6,
            )
    ax.set_yticks([r * row_h + h / 2 for r in range(n_rows)])
    ax.set_yticklabels(list(row_labels), fontsize=7)
    ax.set_xticks([])
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title, fontsize=9)
    return ax
