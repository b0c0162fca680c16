"""Text of the numbers on the report's pages and in the sweep summary: one formatter each.

Every table of the report (paper 1 and paper 2) and ``summary.txt`` print a mean with
its CI, a p-value, a percentage or a yes/no through these functions, so the same
number reads the same everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["format_alpha", "format_ci", "format_number", "format_p", "format_percent", "yes_no"]


def _float(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def format_number(v: Any, fmt: str) -> str:
    """``v`` formatted with ``fmt``; ``"-"`` for None, NaN and inf (other text as is)."""
    x = _float(v)
    if x is None:
        return "-" if v is None else str(v)
    return "-" if not np.isfinite(x) else format(x, fmt)


def format_p(v: Any) -> str:
    """A p-value with 3 significant digits (scientific below 1e-3); ``"-"`` when missing."""
    x = _float(v)
    if x is None or not np.isfinite(x):
        return "-"
    return f"{x:.3g}" if x >= 1e-3 else f"{x:.2e}"


def format_ci(
    mean: Any, low: Any, high: Any, n: Any = 1, scale: float = 1.0, digits: int = 3, suffix: str = ""
) -> str:
    """A mean with its CI: ``"91.23% [90.91, 91.52]"``.

    The mean and both bounds have ``digits`` decimals after multiplying by ``scale``;
    ``suffix`` follows the mean. ``"-"`` without data (``n`` = 0 or a missing mean); no
    bracket without a CI (one run).
    """
    m, lo, hi = _float(mean), _float(low), _float(high)
    if not n or m is None or not np.isfinite(m):
        return "-"
    text = f"{m * scale:.{digits}f}{suffix}"
    if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
        text += f" [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"
    return text


def format_percent(v: Any, digits: int = 2) -> str:
    """A fraction in [0, 1] as a percentage: ``0.9123 -> "91.23%"``; ``"-"`` when missing."""
    x = _float(v)
    if x is None or not np.isfinite(x):
        return "-"
    return f"{x * 100:.{digits}f}%"


def format_alpha(a: Any) -> str:
    """A regularisation scale as the shortest plain number (``-0.1``, ``0``, ``10``)."""
    x = _float(a)
    if x is None:
        return str(a)
    return f"{x + 0.0:g}"  # + 0.0: no "-0"


def yes_no(v: Any) -> str:
    """``"yes"`` / ``"no"`` for a truth value; ``"-"`` when missing."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return "yes" if bool(v) else "no"
