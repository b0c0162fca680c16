"""The unit gallery of token data: each unit's most-activating tokens, in their context.

With token-level labels ``(N, T)`` (``-100`` = no sample) every labelled token is a
sample. :func:`selectivity.core.measure.measure_selectivity` with ``top_k`` keeps, per
unit, its ``k`` most-activating tokens as ``(sequence, position)`` pairs, streamed with
``O(units x k)`` memory: :attr:`~selectivity.core.measure.LayerReport.top_samples` is
the sequence (the input's index in the data order, over all batches) and
:attr:`~selectivity.core.measure.LayerReport.top_tokens` the token's position in it
(the column of the labels ``(N, T)``). :func:`token_gallery` turns the units that
:func:`selectivity.evaluate.units.gallery_units` picks into entries: the token, its
class label, the response, and a window of real tokens either side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..core.measure import IGNORE_INDEX
from .units import GalleryUnit

__all__ = ["TokenEntry", "TokenUnit", "token_gallery"]


@dataclass(frozen=True)
class TokenEntry:
    """One of a unit's most-activating tokens, in context."""

    sequence: int  # index of the sequence in the measured data's order
    position: int  # the token's position in it (column of the (N, T) labels)
    token: str
    label: int  # the token's class label
    value: float  # the unit's response to it
    left: list[str]  # up to `context` real tokens before it, in text order
    right: list[str]  # up to `context` real tokens after it


@dataclass(frozen=True)
class TokenUnit:
    """A gallery unit of token data: the unit, its end of the ranking and its top tokens."""

    unit: GalleryUnit
    end: str  # "most" or "least" selective
    entries: list[TokenEntry]  # most activating first


def _row(rows: Any, n: int) -> list:
    """Row ``n`` of a ``(N, T)`` tensor or a list of lists, as a list."""
    r = rows[n]
    return r.tolist() if isinstance(r, torch.Tensor) else list(r)


def _real(mask_row: list, q: int) -> bool:
    """Whether position ``q`` is a real token (a row shorter than the tokens ends in padding)."""
    return q < len(mask_row) and mask_row[q] != 0


def token_gallery(
    gallery: dict,
    tokens: torch.Tensor | Sequence[Sequence[Any]],
    labels: torch.Tensor | Sequence[Sequence[int]],
    *,
    context: int = 5,
    mask: torch.Tensor | Sequence[Sequence[int]] | None = None,
    decode: Callable[[Any], str] | None = None,
) -> dict[str, list[TokenUnit]]:
    """Each gallery unit's most-activating tokens with their labels and context windows.

    Parameters
    ----------
    gallery : dict
        :func:`~selectivity.evaluate.units.gallery_units`' result for a report measured
        with token-level labels and ``top_k`` on this data, in its order (no shuffling).
    tokens : torch.Tensor or sequence of sequences
        The measured sequences, indexed ``tokens[sequence][position]`` like the labels:
        ``(N, T)`` input ids, or a list of token lists (strings or ids; a list may stop
        before the padding). Each token is shown as ``decode(token)``, else ``str(token)``.
    labels : torch.Tensor or sequence of sequences
        The measured ``(N, T)`` token labels (``-100``: no sample).
    context : int, default 5
        Real tokens shown either side of each top token.
    mask : torch.Tensor or sequence of sequences, optional
        ``(N, T)`` padding mask (nonzero = real token, the ``attention_mask``): padded
        tokens never enter a context window.
    decode : callable, optional
        Token (e.g. an input id) -> its text; no tokenizer is needed.

    Returns
    -------
    dict
        ``{layer: [TokenUnit, ...]}``, the most selective units first, then the least
        selective, each with its ``k`` tokens, most activating first. A window holds
        every real token, labelled or not (``-100`` marks no sample, not no text); a top
        token is always a labelled, real one.

    Raises
    ------
    ValueError
        The gallery has no token positions (measured with ``(N,)`` labels), or a top
        token is not a labelled, real token of ``tokens``: the report was measured on
        other data.
    """
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    show = decode if decode is not None else str
    n_seq = len(tokens)
    out: dict[str, list[TokenUnit]] = {}
    for layer, ends in gallery.items():
        units: list[TokenUnit] = []
        for end in ("most", "least"):
            for u in ends[end]:
                if u.positions is None:
                    raise ValueError(
                        f"layer {layer!r} has no token positions: measure token data with (N, T) "
                        "labels and top_k"
                    )
                entries = []
                for n, p, value in zip(u.samples, u.positions, u.values):
                    row = _row(tokens, n) if n < n_seq else []
                    label = _row(labels, n) if n < len(labels) else []
                    real_mask = _row(mask, n) if mask is not None and n < n_seq else None
                    if p >= min(len(row), len(label)) or label[p] == IGNORE_INDEX:
                        raise ValueError(
                            f"unit {u.unit} of {layer!r}: token {p} of sequence {n} is no labelled "
                            "token of these data: measure the report on these tokens and labels"
                        )
                    if real_mask is not None and not _real(real_mask, p):
                        raise ValueError(
                            f"unit {u.unit} of {layer!r}: token {p} of sequence {n} is padding "
                            "(mask 0) but labelled: label padded tokens -100"
                        )
                    # positions of the real tokens of sequence n, in text order
                    real = [q for q in range(len(row)) if real_mask is None or _real(real_mask, q)]
                    i = real.index(p)
                    entries.append(
                        TokenEntry(
                            sequence=n,
                            position=p,
                            token=show(row[p]),
                            label=int(label[p]),
                            value=value,
                            left=[show(row[q]) for q in real[max(0, i - context) : i]],
                            right=[show(row[q]) for q in real[i + 1 : i + 1 + context]],
                        )
                    )
                units.append(TokenUnit(u, end, entries))
        out[layer] = units
    return out
