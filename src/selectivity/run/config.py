"""One typed training configuration and its named presets.

Presets are small registered functions (like timm's ``@register_model``) that take the
model name, because the paper's learning rate depends on the model (0.1 for ResNets,
0.01 for VGG16).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "TrainConfig",
    "ConfigError",
    "register_preset",
    "list_presets",
    "get_preset",
    "make_config",
    "parse_overrides",
    "DeviceUnavailableError",
    "check_device_available",
    "resolve_device",
    "complete_config",
]

#: Devices a config may name: auto, cpu, cuda or cuda:N.
_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]{1,4})?")
#: Optimizers a config may name (``optimizer``).
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")
#: Learning-rate schedules a config may name (``lr_schedule``).
LR_SCHEDULES: tuple[str, ...] = ("step", "cosine")
#: Seeds are fed to torch and numpy generators, which take non-negative 63-bit integers.
MAX_SEED = 2**63 - 1


class ConfigError(ValueError):
    """A configuration key or value is not acceptable."""


class DeviceUnavailableError(ValueError):
    """The configured device is valid but not present on this machine."""


def check_device_available(name: str) -> None:
    """Raise :class:`DeviceUnavailableError` if ``name`` (auto, cpu, cuda[:N]) cannot be used here."""
    if not isinstance(name, str) or not _DEVICE.fullmatch(name):
        raise ConfigError(f"invalid device {name!r} (expected auto, cpu, cuda or cuda:N)")
    if name in ("auto", "cpu"):
        return
    import torch

    if not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"device {name!r} requested but CUDA is not available on this machine; "
            "use --set device=cpu (or device=auto)"
        )
    index = int(name.split(":")[1]) if ":" in name else 0
    if index >= torch.cuda.device_count():
        raise DeviceUnavailableError(
            f"device {name!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s)"
        )


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a device.

    Raises
    ------
    ConfigError
        ``name`` is not one of these forms.
    DeviceUnavailableError
        The device is valid but not on this machine (both are ValueErrors).
    """
    import torch

    check_device_available(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class TrainConfig:
    """Everything that determines a training run. Units are given per field."""

    # --- what is trained ---------------------------------------------------------
    model: str = "resnet20"  # name in selectivity.models (see `selectivity models`)
    activation: str = "relu"  # "relu", "leaky_relu" or "gelu"
    negative_slope: float = 0.01  # leaky ReLU slope for x < 0 (unitless); ignored for relu
    dataset: str = "cifar10"  # "cifar10" or "tiny-imagenet"
    # --- the regulariser (paper 1, eq. 2) -----------------------------------------
    alpha: float = 0.0  # loss = CE - alpha * mean SI; < 0 penalises, > 0 promotes selectivity
    selectivity_layers: list | None = None  # module names; None = model's default sites
    si_eps: float = 1e-6  # epsilon added to the minibatch index's denominator
    negative_rule: str = "shift"  # handling of negative responses: shift | clamp | raw
    si_dead: str = "exclude"  # units dead in a minibatch: "exclude" from the layer mean | "include" as 0
    token_pooling: str = "mean"  # (N, T, D) token sites: pool the D units over tokens by mean | cls | max
    # --- optimisation (paper 1, A.1) ----------------------------------------------
    epochs: int = 200  # number of passes over the training split
    batch_size: int = 256  # samples per minibatch
    optimizer: str = "sgd"  # "sgd" (momentum, L2 weight decay) | "adamw" (betas 0.9/0.999, decoupled decay)
    lr: float = 0.1  # initial (peak) learning rate
    momentum: float = 0.9  # SGD momentum (unused by adamw)
    weight_decay: float = 1e-4  # sgd: L2 penalty on all parameters; adamw: decoupled decay per step (x lr)
    lr_milestones: list = field(
        default_factory=lambda: [0.5, 0.75]
    )  # fractions of `epochs` at which lr *= lr_gamma (0.5, 0.75 of 200 = epochs 100, 150)
    lr_gamma: float = 0.1  # learning-rate decay factor at each milestone
    lr_schedule: str = "step"  # "step" (lr_milestones, lr_gamma) | "cosine" (per epoch, from lr down to 0)
    warmup: float = 0.0  # fraction of `epochs` of linear warmup before the schedule (0.1 of 30 = 3 epochs)
    # --- data ---------------------------------------------------------------------
    val_size: int = 5000  # validation images held out of the training set (45k/5k split)
    split_seed: int = 0  # seed of the stratified train/validation split (kept fixed across runs)
    train_subset: int | None = None  # train on a stratified subset of this many images; None = all
    eval_subset: int | None = (
        None  # evaluate on a stratified subset of val/test of this many images; None = all
    )
    augment: bool = True  # random crop (4-pixel padding) + horizontal flip
    # --- measurement --------------------------------------------------------------
    top_n: int = 1000  # samples per unit for the precision metric (paper: 1000)
    # --- run ------------------------------------------------------------------------
    seed: int = 0  # seed of initialisation, shuffling and augmentation
    device: str = "auto"  # "auto" (CUDA if available), "cpu", "cuda", "cuda:1", ...
    amp: bool = False  # bfloat16 autocast on CUDA and CPU (off for the paper preset)
    channels_last: bool = False  # NHWC memory format for the model and its inputs (GPU speed)
    compile: bool = False  # torch.compile the model; eager (logged once) if compiling fails
    check_every: int = 50  # training steps between host read-backs of loss/accuracy (NaN/inf check)
    num_threads: int | None = None  # CPU threads for torch; None = torch's default
    eval_batch_size: int = 1000  # samples per batch when evaluating

    # ------------------------------------------------------------------ validation
    def validate(self) -> TrainConfig:
        """Check every value; raise :class:`ConfigError` naming the field."""
        from ..core.metrics import NEGATIVE_RULES
        from ..core.regularizer import DEAD_RULES
        from ..core.responses import POOLINGS
        from ..data.registry import DATASETS
        from ..models import ALLOWED_ACTIVATIONS, list_models

        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"invalid value for {name!r}: {getattr(self, name)!r} ({why})")

        # Every float field must be a finite number: NaN slips through `<` comparisons.
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise bad(f.name, "expected a finite number")
        if any(not isinstance(m, (int, float)) or not math.isfinite(m) for m in self.lr_milestones):
            raise bad("lr_milestones", "expected finite fractions of the epochs")
        if self.selectivity_layers is not None and not (
            isinstance(self.selectivity_layers, list)
            and self.selectivity_layers
            and all(isinstance(x, str) and x for x in self.selectivity_layers)
        ):
            raise bad("selectivity_layers", "expected a non-empty list of module names or null")
        for name in ("seed", "split_seed"):
            if not 0 <= getattr(self, name) <= MAX_SEED:
                raise bad(name, f"expected an integer in [0, {MAX_SEED}]")
        if self.model not in list_models():
            raise bad("model", f"known models: {', '.join(list_models())}")
        if self.activation not in ALLOWED_ACTIVATIONS:
            raise bad("activation", "expected " + " or ".join(repr(a) for a in ALLOWED_ACTIVATIONS))
        if not self.negative_slope >= 0:
            raise bad("negative_slope", "expected >= 0")
        if self.dataset not in DATASETS:
            raise bad("dataset", "expected " + " or ".join(repr(d) for d in DATASETS))
        if not (self.alpha == self.alpha and abs(self.alpha) != float("inf")):
            raise bad("alpha", "expected a finite number")
        if self.negative_rule not in NEGATIVE_RULES:
            raise bad("negative_rule", "expected " + ", ".join(NEGATIVE_RULES))
        if self.si_dead not in DEAD_RULES:
            raise bad("si_dead", "expected " + " or ".join(repr(d) for d in DEAD_RULES))
        if self.token_pooling not in POOLINGS:
            raise bad("token_pooling", "expected " + ", ".join(POOLINGS))
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", "expected " + " or ".join(repr(o) for o in OPTIMIZERS))
        if self.lr_schedule not in LR_SCHEDULES:
            raise bad("lr_schedule", "expected " + " or ".join(repr(o) for o in LR_SCHEDULES))
        if not 0 <= self.warmup < 1:
            raise bad("warmup", "expected a fraction of the epochs in [0, 1)")
        for name in ("augment", "amp", "channels_last", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "expected true or false")
        for name in ("epochs", "batch_size", "eval_batch_size", "top_n", "check_every"):
            if getattr(self, name) < 1:
                raise bad(name, "expected an integer >= 1")
        if self.val_size < 0:
            raise bad("val_size", "expected >= 0")
        for name in ("train_subset", "eval_subset", "num_threads"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise bad(name, "expected an integer >= 1 or null")
        if not self.lr > 0:
            raise bad("lr", "expected > 0")
        if not 0 <= self.momentum < 1:
            raise bad("momentum", "expected 0 <= momentum < 1")
        if self.weight_decay < 0:
            raise bad("weight_decay", "expected >= 0")
        if not 0 < self.lr_gamma <= 1:
            raise bad("lr_gamma", "expected 0 < gamma <= 1")
        if any(not (0 < m <= 1) for m in self.lr_milestones):
            raise bad("lr_milestones", "expected fractions of the epochs in (0, 1]")
        if self.si_eps < 0:
            raise bad("si_eps", "expected >= 0")
        if not _DEVICE.fullmatch(self.device):
            raise bad("device", "expected auto, cpu, cuda or cuda:N")
        return self

    def warmup_epochs(self) -> int:
        """Epochs of linear warmup: ``round(warmup * epochs)``, at most ``epochs - 1``."""
        return min(round(self.warmup * self.epochs), self.epochs - 1)

    def milestone_epochs(self) -> list[int]:
        """Epoch indices (0-based) at whose start the learning rate is decayed."""
        return sorted({max(1, round(m * self.epochs)) for m in self.lr_milestones})

    def lr_at(self, epoch: int) -> float:
        """Learning rate during 0-based ``epoch`` (a pure function: resuming needs no state).

        Linear warmup ``lr * (epoch + 1) / (W + 1)`` for the first
        ``W = warmup_epochs()`` epochs; then ``"step"``: ``lr * lr_gamma**k`` after k
        milestones, or ``"cosine"``: ``lr * (1 + cos(pi * e / E)) / 2`` with ``e`` the
        epochs since the warmup and ``E`` the epochs after it.
        """
        w = self.warmup_epochs()
        if epoch < w:
            return self.lr * (epoch + 1) / (w + 1)
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - w) / (self.epochs - w)))
        k = sum(1 for m in self.milestone_epochs() if epoch >= m)
        return self.lr * self.lr_gamma**k

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a mapping of fields, got {type(d).__name__}")
        return make_config(None, d)

    def replace(self, **changes: Any) -> TrainConfig:
        return make_config(None, {**self.to_dict(), **changes})


def complete_config(d: dict) -> dict:
    """``d`` with every missing :class:`TrainConfig` field set to its default.

    A run directory written before a field existed lacks its key; the default is what
    that run used (new fields default to the earlier behaviour). Compare configs after
    completing both, so such a run is not taken for another configuration. Unknown keys
    are kept (and still differ).
    """
    defaults = TrainConfig().to_dict()
    return {**defaults, **d}


# --------------------------------------------------------------------------- presets
_PRESETS: dict[str, Callable[[str], dict]] = {}
_PRESET_DOCS: dict[str, str] = {}


def register_preset(name: str):
    """Register ``fn(model_name) -> dict of TrainConfig overrides`` as a named preset."""

    def deco(fn: Callable[[str], dict]):
        if name in _PRESETS:
            raise ValueError(f"preset {name!r} already registered")
        _PRESETS[name] = fn
        _PRESET_DOCS[name] = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        return fn

    return deco


def list_presets() -> dict[str, str]:
    """Preset names with their one-line descriptions."""
    return dict(sorted(_PRESET_DOCS.items()))


def get_preset(name: str, model: str = "resnet20") -> dict:
    if name not in _PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(sorted(_PRESETS))}")
    return {"model": model, **_PRESETS[name](model)}


def vit_optimisation(model: str) -> dict:
    """Overrides that train a transformer (``vit*``) as usual: AdamW, warmup, cosine (our choice).

    Empty for every other model, whose presets keep the paper's SGD. AdamW lr 1e-3,
    decoupled weight decay 0.05, linear warmup over a tenth of the epochs, cosine
    decay to 0, GELU MLPs.
    """
    if not model.startswith("vit"):
        return {}
    return dict(
        optimizer="adamw",
        lr=1e-3,
        weight_decay=0.05,
        lr_schedule="cosine",
        warmup=0.1,
        activation="gelu",
    )


@register_preset("paper")
def _paper(model: str) -> dict:
    """Paper 1, A.1: SGD 0.9, wd 1e-4, batch 256, 200 epochs, lr x0.1 at 100/150 (ViT: AdamW, cosine)."""
    lr = 0.01 if model.startswith("vgg") else 0.1
    return dict(
        epochs=200,
        batch_size=256,
        lr=lr,
        momentum=0.9,
        weight_decay=1e-4,
        lr_milestones=[0.5, 0.75],
        lr_gamma=0.1,
        augment=True,
        amp=False,
    ) | vit_optimisation(model)


@register_preset("cpu-short")
def _cpu_short(model: str) -> dict:
    """A few-minute CPU run: 5k training images, 6 epochs, 2k-image evaluation."""
    lr = 0.01 if model.startswith("vgg") else 0.1
    return dict(
        epochs=6,
        batch_size=128,
        lr=lr,
        train_subset=5000,
        eval_subset=2000,
        lr_milestones=[0.5, 0.75],
        top_n=200,
    ) | vit_optimisation(model)


@register_preset("smoke")
def _smoke(model: str) -> dict:
    """Seconds: 512 training images, 1 epoch; checks that everything runs."""
    return dict(
        epochs=1,
        batch_size=128,
        train_subset=512,
        eval_subset=500,
        top_n=50,
        val_size=500,
    ) | vit_optimisation(model)


# --------------------------------------------------------------------------- building
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """Coerce ``value`` (possibly a CLI string) to the field type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    # `X | None` (types.UnionType) and `Optional[X]` (typing.Union) alike.
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        tp = next(a for a in args if a is not type(None))
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                raise ValueError
            return value
        if tp is list:
            if isinstance(value, str):
                value = (
                    json.loads(value)
                    if value.strip().startswith("[")
                    else [v.strip() for v in value.split(",") if v.strip()]
                )
            if not isinstance(value, (list, tuple)):
                raise ValueError
            if name == "lr_milestones":
                return [float(v) for v in value]
            return list(value)
    except (ValueError, TypeError, OverflowError, RecursionError):  # JSONDecodeError is a ValueError
        pass
    else:
        return value
    tname = getattr(tp, "__name__", str(tp))
    raise ConfigError(f"invalid value for {name!r}: {value!r} (expected {tname})")


def make_config(preset: str | None = None, overrides: dict | None = None) -> TrainConfig:
    """Build a validated :class:`TrainConfig` from a preset and overrides.

    Parameters
    ----------
    preset : str, optional
        Name of a registered preset; applied first (it may depend on ``model``).
    overrides : dict, optional
        Field -> value (values may be strings as typed on a command line).

    Raises
    ------
    ConfigError
        On an unknown key (with close matches) or a value of the wrong type/range.
    """
    import difflib

    overrides = dict(overrides or {})
    types = _field_types()
    names = [f.name for f in fields(TrainConfig)]
    unknown = [k for k in overrides if k not in names]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, names, n=3)
            hints.append(f"{k!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise ConfigError(f"unknown config key(s): {', '.join(hints)}. Known keys: {', '.join(names)}")
    values: dict[str, Any] = {}
    if preset is not None:
        model = overrides.get("model", TrainConfig.model)
        values.update(get_preset(preset, model))
    values.update(overrides)
    coerced = {k: _coerce(k, v, types[k]) for k, v in values.items()}
    return TrainConfig(**coerced).validate()


def parse_overrides(items: list[str]) -> dict[str, str]:
    """Parse ``["key=value", ...]`` from the command line."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        k, v = item.split("=", 1)
        out[k.strip().replace("-", "_")] = v.strip()
    return out
