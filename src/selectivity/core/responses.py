"""The one reduction of a layer's output to one response per sample and unit, ``(N, U)``.

Every part of the package that turns an activation into unit responses (the metrics,
the hooks of measurement and the regulariser, fused training) calls
:func:`unit_responses`, so a layer has the same units everywhere.

Layouts
-------
``"conv"``
    ``(N, C, H, W)`` or ``(N, C, L)`` (any ``(N, C, *positions)``): C units, the mean
    over positions (the paper's spatial mean).
``"units"``
    ``(N, U)``: U units, as they are.
``"tokens"``
    ``(N, T, D)`` token sequences: D units (the last dimension, the neurons), pooled
    over the T tokens by ``pooling``: ``"mean"`` (the analogue of the spatial mean),
    ``"cls"`` (token 0) or ``"max"``. With a padding ``mask`` ``(N, T)`` (1 = real
    token, the ``attention_mask`` of a Hugging Face batch) only real tokens count.
``"channels_last"``
    ``(N, H, W, C)`` (any ``(N, *positions, C)``): C units, the mean over positions.

``layout=None`` infers the two unambiguous cases: 2-D is ``"units"``, 4-D is
``"conv"``. A 3-D output could be ``(N, C, L)`` or ``(N, T, D)``, whose units differ;
it is never guessed: :class:`LayoutError` says how to declare it.

Arithmetic
----------
Means over positions or tokens are ``sum * (1 / count)``: the backward of a sum is a
stride-0 expand, while ``mean``'s backward writes a full-size tensor per layer (the
regulariser's cost). Every caller uses this one arithmetic, so their numbers agree
bit for bit.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "LAYOUTS",
    "POOLINGS",
    "LayoutError",
    "check_layout",
    "check_pooling",
    "layout_hint",
    "token_responses",
    "unit_responses",
]

#: Declared layouts of a layer's output (module docstring).
LAYOUTS: tuple[str, ...] = ("conv", "units", "tokens", "channels_last")
#: How a ``"tokens"`` output is pooled over its tokens.
POOLINGS: tuple[str, ...] = ("mean", "cls", "max")


class LayoutError(ValueError):
    """A layer's output cannot be reduced to ``(N, units)`` without a declared layout."""


def check_layout(layout: str | None) -> None:
    """Raise ValueError unless ``layout`` is None or one of :data:`LAYOUTS`."""
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")


def check_pooling(pooling: str) -> None:
    """Raise ValueError unless ``pooling`` is one of :data:`POOLINGS`."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown token pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")


def layout_hint(name: str | None, shape: tuple[int, ...]) -> str:
    """The one-line error for an undeclared 3-D output (of layer ``name``, if known)."""
    if name:
        who, how = f"layer {name!r}", f'layouts={{"{name}": "tokens"}}'
    else:
        who, how = "an activation", 'layout="tokens"'
    return (
        f"{who} has a 3-D output {shape} whose layout is not declared (expected (N, U) or "
        f"(N, U, H, W)): declare it, e.g. {how} for (N, T, D) token sequences (D units), "
        f'"conv" for (N, C, L) maps, "channels_last" for (N, L, C)'
    )


def unit_responses(
    t: torch.Tensor,
    layout: str | None = None,
    *,
    pooling: str = "mean",
    mask: torch.Tensor | None = None,
    name: str | None = None,
) -> torch.Tensor:
    """Reduce a layer's output to one response per sample and unit.

    Parameters
    ----------
    t : torch.Tensor
        The output: ``(N, C, H, W)``/``(N, C, L)`` (``"conv"``), ``(N, U)``
        (``"units"``), ``(N, T, D)`` (``"tokens"``) or ``(N, H, W, C)``
        (``"channels_last"``).
    layout : str or None
        One of :data:`LAYOUTS`; None infers 2-D as ``"units"`` and 4-D as ``"conv"``
        and refuses any other rank.
    pooling : {"mean", "cls", "max"}
        Pooling over tokens (``"tokens"`` only).
    mask : torch.Tensor, optional
        ``(N, T)`` padding mask, nonzero = real token (``"tokens"`` only). Padded
        tokens never enter the pooled response; ``"cls"`` ignores it (token 0 is
        real).
    name : str, optional
        The layer's name, for the error message.

    Returns
    -------
    torch.Tensor
        ``(N, U)`` in the dtype of ``t``.

    Raises
    ------
    LayoutError
        3-D output with no declared layout (the message says how to declare it), or a
        rank the layout does not allow.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"a layer output must be a torch.Tensor, got {type(t).__name__}")
    check_layout(layout)
    shape = tuple(t.shape)
    if layout is None:
        if t.dim() == 2:
            layout = "units"
        elif t.dim() == 4:
            layout = "conv"
        elif t.dim() == 3:
            raise LayoutError(layout_hint(name, shape))
        else:
            who = f"layer {name!r}" if name else "a layer"
            raise LayoutError(
                f"{who} has a {t.dim()}-D output {shape}; expected (N, U) or (N, U, H, W), "
                f"or a declared layout ({', '.join(LAYOUTS)})"
            )
    if layout == "units":
        if t.dim() != 2:
            raise LayoutError(f"layout 'units' needs a 2-D (N, U) output, got {shape}" + _of(name))
        return t
    if layout == "conv":
        if t.dim() < 3:
            raise LayoutError(f"layout 'conv' needs (N, C, *positions), got {shape}" + _of(name))
        dims = tuple(range(2, t.dim()))
        return t.sum(dim=dims) * (1.0 / math.prod(shape[2:]))  # (N, C, *P) -> (N, C)
    if layout == "channels_last":
        if t.dim() < 3:
            raise LayoutError(f"layout 'channels_last' needs (N, *positions, C), got {shape}" + _of(name))
        dims = tuple(range(1, t.dim() - 1))
        return t.sum(dim=dims) * (1.0 / math.prod(shape[1:-1]))  # (N, *P, C) -> (N, C)
    # tokens
    if t.dim() != 3:
        raise LayoutError(f"layout 'tokens' needs a 3-D (N, T, D) output, got {shape}" + _of(name))
    check_pooling(pooling)
    if pooling == "cls":
        return t[:, 0]  # (N, T, D) -> (N, D)
    if mask is None:
        if pooling == "max":
            return t.amax(dim=1)
        return t.sum(dim=1) * (1.0 / shape[1])  # (N, T, D) -> (N, D)
    m = _check_mask(mask, shape, name).to(t.device)  # (N, T) bool
    if pooling == "max":
        # Padded tokens never win: -inf there (a sample without real tokens gives -inf).
        neg = torch.full((), float("-inf"), dtype=t.dtype, device=t.device)
        return torch.where(m.unsqueeze(-1), t, neg).amax(dim=1)
    w = m.to(t.dtype)  # (N, T)
    count = w.sum(dim=1, keepdim=True).clamp(min=1.0)  # (N, 1) real tokens per sample
    return (t * w.unsqueeze(-1)).sum(dim=1) / count  # (N, T, D) -> (N, D)


def token_responses(
    t: torch.Tensor, keep: torch.Tensor, layout: str | None = "tokens", name: str | None = None
) -> torch.Tensor:
    """Every kept token of a ``(N, T, D)`` output as a sample: token-level labels.

    Parameters
    ----------
    t : torch.Tensor
        ``(N, T, D)`` output of a ``"tokens"`` layer.
    keep : torch.Tensor
        ``(N, T)`` bool, the labelled tokens (label != -100).
    layout : str or None
        The layer's declared layout; anything but ``"tokens"`` is refused (a conv map
        has no tokens to label).
    name : str, optional
        For the error message.

    Returns
    -------
    torch.Tensor
        ``(M, D)`` with ``M = keep.sum()``, tokens in row-major ``(n, t)`` order.
    """
    if layout != "tokens":
        who = f"layer {name!r}" if name else "a layer"
        raise LayoutError(
            f"token-level labels (N, T) need token layers, but {who} has layout {layout!r}; "
            f'declare layouts={{"{name or "<layer name>"}": "tokens"}} or use (N,) labels'
        )
    if t.dim() != 3 or tuple(keep.shape) != tuple(t.shape[:2]):
        raise LayoutError(
            f"token-level labels of shape {tuple(keep.shape)} do not match the (N, T, D) output "
            f"{tuple(t.shape)}" + _of(name)
        )
    return t[keep.to(t.device)]  # (N, T, D)[(N, T)] -> (M, D)


def _check_mask(mask: torch.Tensor, shape: tuple[int, ...], name: str | None) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        mask = torch.as_tensor(mask)
    if tuple(mask.shape) != shape[:2]:
        raise ValueError(
            f"padding mask of shape {tuple(mask.shape)} does not match the (N, T, D) output {shape}"
            + _of(name)
        )
    return mask != 0


def _of(name: str | None) -> str:
    return f" (layer {name!r})" if name else ""
