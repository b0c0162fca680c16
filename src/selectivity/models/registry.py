"""Name -> factory registry for the built-in models, in the style of timm.

A factory is registered with :func:`register_model` and instantiated with
:func:`create`. Every factory has the signature::

    fn(num_classes: int = <natural default>, activation: str = "relu",
       negative_slope: float = 0.01) -> nn.Module

``num_classes`` is the number of outputs, ``activation`` one of
:data:`ALLOWED_ACTIVATIONS` (the one list of allowed activations) and
``negative_slope`` the leaky-ReLU slope. Being shared, these are documented here once;
each factory's docstring is one line naming the variant (as in timm).

:func:`create` validates the arguments before calling the factory so that every
model reports bad input in the same way. Importing this module has no side
effects beyond defining the (initially empty) registry dict; the model modules
fill it when :mod:`selectivity.models` is imported.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

from torch import nn

__all__ = [
    "ALLOWED_ACTIVATIONS",
    "create",
    "list_models",
    "make_activation",
    "register_model",
    "validate_model_args",
]

#: Activation names accepted by every built-in model.
ALLOWED_ACTIVATIONS: tuple[str, ...] = ("relu", "leaky_relu", "gelu")

ModelFactory = Callable[..., nn.Module]

_MODEL_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering a model factory under ``name``.

    Parameters
    ----------
    name : str
        Registry key, used by :func:`create`. Must be a non-empty string.

    Returns
    -------
    Callable
        Decorator that stores the factory and returns it unchanged.

    Raises
    ------
    ValueError
        If ``name`` is empty or already taken by a different factory.

    Examples
    --------
    >>> @register_model("tiny_mlp")  # doctest: +SKIP
    ... def tiny_mlp(num_classes=10, activation="relu", negative_slope=0.01):
    ...     return nn.Linear(4, num_classes)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")

    def decorator(fn: ModelFactory) -> ModelFactory:
        existing = _MODEL_REGISTRY.get(name)
        # Re-registering the same function (e.g. after importlib.reload) is harmless;
        # silently replacing a different one would hide a name clash.
        if existing is not None and (
            getattr(existing, "__module__", None),
            getattr(existing, "__qualname__", None),
        ) != (getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)):
            raise ValueError(
                f"model name {name!r} is already registered by {existing.__module__}.{existing.__qualname__}"
            )
        _MODEL_REGISTRY[name] = fn
        return fn

    return decorator


def list_models() -> list[str]:
    """Return the names of all registered models, sorted.

    Returns
    -------
    list of str
        Sorted registry keys.
    """
    return sorted(_MODEL_REGISTRY)


def validate_model_args(num_classes: int | None, activation: str, negative_slope: float) -> None:
    """Check the arguments shared by every model factory.

    Parameters
    ----------
    num_classes : int or None
        Number of output classes; ``None`` means "the model's default".
    activation : str
        One of :data:`ALLOWED_ACTIVATIONS`.
    negative_slope : float
        Slope of leaky ReLU for negative inputs; must be >= 0.

    Raises
    ------
    ValueError
        If any argument is invalid; the message says what is allowed.
    """
    if num_classes is not None:
        # bool is an Integral subclass, but True/False as a class count is a bug.
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if activation not in ALLOWED_ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(ALLOWED_ACTIVATIONS)}")
    if (
        isinstance(negative_slope, bool)
        or not isinstance(negative_slope, numbers.Real)
        or not negative_slope >= 0  # also rejects NaN
    ):
        raise ValueError(f"negative_slope must be a real number >= 0, got {negative_slope!r}")


def make_activation(activation: str = "relu", negative_slope: float = 0.01) -> nn.Module:
    """Build a fresh, non-inplace activation module.

    Each call returns a new instance so that every activation site in a model is
    its own module and can be hooked separately.

    Parameters
    ----------
    activation : {"relu", "leaky_relu", "gelu"}
        Which nonlinearity.
    negative_slope : float
        Slope for negative inputs (only used for ``"leaky_relu"``); must be >= 0.

    Returns
    -------
    nn.Module
        ``nn.ReLU(inplace=False)``, ``nn.LeakyReLU(negative_slope, inplace=False)`` or
        ``nn.GELU()`` (exact erf form; signed, down to about -0.17).

    Raises
    ------
    ValueError
        If ``activation`` or ``negative_slope`` is invalid.
    """
    validate_model_args(None, activation, negative_slope)
    # inplace=False: forward hooks must see the activation output exactly as the
    # next layer receives it, and not have it overwritten later.
    if activation == "relu":
        return nn.ReLU(inplace=False)
    if activation == "gelu":
        return nn.GELU()
    return nn.LeakyReLU(negative_slope=float(negative_slope), inplace=False)


def create(
    name: str,
    num_classes: int | None = None,
    activation: str = "relu",
    negative_slope: float = 0.01,
) -> nn.Module:
    """Instantiate a registered model.

    Parameters
    ----------
    name : str
        Registered model name, see :func:`list_models`.
    num_classes : int or None, optional
        Number of output classes (>= 2). ``None`` uses the model's natural default
        (10 for the CIFAR models, 200 for ``resnet18``).
    activation : {"relu", "leaky_relu", "gelu"}, optional
        Nonlinearity used at every activation site.
    negative_slope : float, optional
        Leaky-ReLU slope for negative inputs, >= 0. Ignored for ``"relu"``.

    Returns
    -------
    nn.Module
        The freshly initialised model.

    Raises
    ------
    ValueError
        Unknown ``name`` (the message lists the available names) or invalid
        ``num_classes``, ``activation`` or ``negative_slope``.
    """
    if name not in _MODEL_REGISTRY:
        available = ", ".join(list_models()) or "(none registered)"
        raise ValueError(f"unknown model {name!r}; available models: {available}")
    validate_model_args(num_classes, activation, negative_slope)
    kwargs: dict[str, object] = {"activation": activation, "negative_slope": negative_slope}
    if num_classes is not None:
        kwargs["num_classes"] = int(num_classes)
    return _MODEL_REGISTRY[name](**kwargs)
