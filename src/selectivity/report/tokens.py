"""The unit gallery of token data as HTML: each unit's most-activating tokens in context.

:func:`token_gallery_html` renders :func:`selectivity.evaluate.tokens.token_gallery`'s
result as an HTML fragment through the package's Jinja2 environment (autoescaping on:
every token is escaped); :func:`write_token_gallery` picks the units of a measured
report and writes the page, ``gallery.html``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..core.measure import SelectivityReport
from ..evaluate.tokens import TokenUnit, token_gallery
from ..evaluate.units import gallery_units
from .html import template_environment

__all__ = ["GALLERY_FILE", "token_gallery_html", "write_token_gallery"]

#: File :func:`write_token_gallery` writes into a directory.
GALLERY_FILE = "gallery.html"


def _name(i: int, class_names: Sequence[str] | None) -> str:
    return str(class_names[i]) if class_names is not None and 0 <= i < len(class_names) else str(i)


def _view(gallery: dict[str, list[TokenUnit]], class_names: Sequence[str] | None) -> list[dict[str, Any]]:
    """Plain strings for the template (it escapes every one)."""
    layers = []
    for name, units in gallery.items():
        rows = []
        for tu in units:
            u = tu.unit
            rows.append(
                {
                    "end": tu.end,
                    "unit": u.unit,
                    "si": "-" if math.isnan(u.selectivity) else f"{u.selectivity:.3f}",
                    "preferred": _name(u.preferred_class, class_names) if u.preferred_class >= 0 else None,
                    "entries": [
                        {
                            "rank": r + 1,
                            "value": f"{e.value:.4g}",
                            "label": _name(e.label, class_names),
                            "token": e.token,
                            "left": e.left,
                            "right": e.right,
                            "sequence": e.sequence,
                            "position": e.position,
                        }
                        for r, e in enumerate(tu.entries)
                    ],
                }
            )
        layers.append({"name": name, "units": rows})
    return layers


def token_gallery_html(gallery: dict[str, list[TokenUnit]], class_names: Sequence[str] | None = None) -> str:
    """The token gallery as an HTML fragment (one ``<section>``, no script, no style).

    Parameters
    ----------
    gallery : dict
        :func:`~selectivity.evaluate.tokens.token_gallery`'s result.
    class_names : sequence of str, optional
        Names of the classes; default: their indices.

    Returns
    -------
    str
        Per layer, per unit its selectivity index, preferred class and a table of its
        top tokens: rank, response, the token's class and the token highlighted
        (``<mark>``) in its context window. Every token is escaped.
    """
    env = template_environment()
    return env.get_template("token_gallery.html.j2").render(layers=_view(gallery, class_names))


def write_token_gallery(
    report: SelectivityReport,
    tokens: torch.Tensor | Sequence[Sequence[Any]],
    labels: torch.Tensor | Sequence[Sequence[int]],
    out: str | os.PathLike,
    *,
    layers: Sequence[str] | None = None,
    n: int = 3,
    k: int = 9,
    context: int = 5,
    mask: torch.Tensor | Sequence[Sequence[int]] | None = None,
    decode: Callable[[Any], str] | None = None,
    class_names: Sequence[str] | None = None,
    title: str = "Unit gallery",
) -> Path:
    """Write the unit gallery of a token-level measurement as one HTML page.

    For each chosen layer, the ``n`` most and ``n`` least selective live units, each
    with its SI, preferred class and ``k`` most-activating tokens (their class and the
    response), every token highlighted in a window of ``context`` real tokens either
    side.

    Parameters
    ----------
    report : SelectivityReport
        :func:`~selectivity.core.measure.measure_selectivity`'s result on token data:
        labels ``(N, T)`` and ``top_k >= k``, the data not shuffled.
    tokens : torch.Tensor or sequence of sequences
        The measured sequences, ``tokens[sequence][position]``: ``(N, T)`` input ids or
        lists of token strings (see :func:`~selectivity.evaluate.tokens.token_gallery`).
    labels : torch.Tensor or sequence of sequences
        The measured ``(N, T)`` token labels (``-100``: no sample).
    out : path
        A file ending in ``.html``, or a directory that gets ``gallery.html``.
    layers : sequence of str, optional
        Layer names; default: the first, the middle and the last measured layer.
    n, k : int
        Units per end of the ranking; tokens per unit.
    context : int, default 5
        Real tokens shown either side.
    mask : optional
        ``(N, T)`` padding mask (``attention_mask``): padded tokens are never shown.
    decode : callable, optional
        Token (e.g. input id) -> text, e.g. ``tokenizer.convert_ids_to_tokens``.
    class_names : sequence of str, optional
        Class names; default: class indices.
    title : str
        The page's heading.

    Returns
    -------
    Path
        The page written.

    Raises
    ------
    ValueError
        The report has no token positions (``(N,)`` labels) or fewer than ``k`` top
        samples, a layer is unknown, or the tokens are not the measured data.
    """
    if not report.token_level:
        raise ValueError("the report was measured with (N,) labels: the token gallery needs (N, T) labels")
    names = [layer.name for layer in report.layers]
    chosen = list(layers) if layers else list(dict.fromkeys([names[0], names[len(names) // 2], names[-1]]))
    units = token_gallery(
        gallery_units(report, chosen, n=n, k=k), tokens, labels, context=context, mask=mask, decode=decode
    )
    caption = (
        f"The {n} most and {n} least selective live units of each layer, ranked by the class "
        f"selectivity index over {report.num_samples} labelled tokens; each with its {k} "
        f"most-activating tokens (largest response first) in a window of {context} tokens "
        "either side, the token's class, and the unit's preferred class (largest class mean)."
    )
    page = (
        template_environment()
        .get_template("token_gallery_page.html.j2")
        .render(title=title, caption=caption, layers=_view(units, class_names))
    )
    path = Path(out)
    if path.suffix.lower() != ".html":
        path = path / GALLERY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)  # a reader never sees half a page
    return path
