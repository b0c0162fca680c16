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
    "ADV_BN_MODES",
    "ROBUST_METHODS",
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
#: Robust-training methods (``TrainConfig.robust``): standard training, PGD adversarial
#: training, Gaussian-noise augmentation, AugMix with its consistency loss.
ROBUST_METHODS = ("none", "adversarial", "noise_augment", "augmix")
#: Batch-norm mode while the training attack is generated (``TrainConfig.adv_bn``).
ADV_BN_MODES = ("train", "eval")
#: The fields a dataset's validation protocol fills when they are None.
_PROTOCOL_FIELDS = ("val_size", "val_per_class", "val_split")


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
    # The three validation fields left None take the dataset's protocol when the config is
    # built (CIFAR-10: 5000 in total, one fixed split; Tiny ImageNet: 50 per class, drawn
    # afresh for each run), so config.json always holds the resolved values.
    val_size: int | None = None  # validation images held out of the training set, in total
    val_per_class: int | None = None  # validation images per class (instead of val_size)
    val_split: str | None = None  # "fixed" (from split_seed, same for all runs) | "per-run" (also from seed)
    split_seed: int = 0  # seed of the stratified train/validation split
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
    # --- robust training (paper 2, the reverse direction; "none" = standard training) -----
    # Every random draw of a method comes from a generator seeded by (seed, epoch, step).
    robust: str = "none"  # "none" | "adversarial" (PGD) | "noise_augment" (Gaussian noise) | "augmix"
    adv_epsilon: float = 8 / 255  # radius of the training attack's threat ball, [0, 1] pixel units
    adv_step_size: float = 2 / 255  # PGD step length, [0, 1] pixel units
    adv_steps: int = 7  # PGD steps per training batch (each one forward and backward pass)
    adv_norm: str = "linf"  # threat model of the training attack: "linf" or "l2"
    adv_random_start: bool = True  # start each attack at a uniform random point of the ball
    adv_bn: str = "train"  # batch norm during the attack: "train" (batch statistics) | "eval" (running)
    noise_sigma_min: float = 0.0  # smallest per-image Gaussian-noise sigma, [0, 1] pixel units
    noise_sigma_max: float = 0.1  # largest per-image Gaussian-noise sigma, [0, 1] pixel units
    augmix_severity: float = 3.0  # AugMix operation severity, 1-10
    augmix_width: int = 3  # AugMix chains mixed into each image
    augmix_depth: int = -1  # operations per AugMix chain; -1 = 1-3 at random per chain
    augmix_alpha: float = 1.0  # concentration of AugMix's Dirichlet and Beta draws (unitless)
    augmix_jsd_weight: float = 12.0  # weight of the Jensen-Shannon consistency term in the loss

    def __post_init__(self) -> None:
        self._resolve_protocol()

    def _resolve_protocol(self) -> None:
        """Fill the validation fields left None from the dataset's protocol (unknown dataset: left)."""
        from ..data.registry import DATASETS

        info = DATASETS.get(self.dataset) if isinstance(self.dataset, str) else None
        if info is None:
            return
        if self.val_size is None and self.val_per_class is None:
            self.val_size, self.val_per_class = info.protocol.val_size, info.protocol.val_per_class
        if self.val_split is None:
            self.val_split = info.protocol.val_split

    def run_split_seed(self) -> int:
        """The seed that draws this run's validation split.

        ``split_seed`` itself for ``val_split="fixed"``; for ``"per-run"`` a seed mixed from
        ``(split_seed, seed)`` (numpy's SeedSequence), so every run draws its own split and a
        resumed run draws the same one again.
        """
        if self.val_split != "per-run":
            return int(self.split_seed)
        import numpy as np

        state = np.random.SeedSequence([int(self.split_seed), int(self.seed)]).generate_state(1, np.uint64)
        return int(state[0] >> np.uint64(1))

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
        from ..data.registry import VAL_SPLITS

        if self.val_size is not None and self.val_size < 0:
            raise bad("val_size", "expected >= 0")
        if self.val_per_class is not None and self.val_per_class < 1:
            raise bad("val_per_class", "expected an integer >= 1 or null")
        if self.val_size is not None and self.val_per_class is not None:
            raise bad("val_per_class", "give val_size (in total) or val_per_class, not both")
        if self.val_split not in VAL_SPLITS:
            raise bad("val_split", "expected " + " or ".join(repr(v) for v in VAL_SPLITS))
        self._validate_robust(bad)
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

    def _validate_robust(self, bad: Callable[[str, str], ConfigError]) -> None:
        from ..perturb.attacks import NORMS

        if self.robust not in ROBUST_METHODS:
            raise bad("robust", "expected " + ", ".join(repr(m) for m in ROBUST_METHODS))
        for name in ("adv_epsilon", "adv_step_size", "noise_sigma_min"):
            if getattr(self, name) < 0:
                raise bad(name, "expected >= 0 (pixel units in [0, 1])")
        if self.adv_steps < 1:
            raise bad("adv_steps", "expected an integer >= 1")
        if self.adv_norm not in NORMS:
            raise bad("adv_norm", "expected " + " or ".join(repr(n) for n in NORMS))
        if not isinstance(self.adv_random_start, bool):
            raise bad("adv_random_start", "expected true or false")
        if self.adv_bn not in ADV_BN_MODES:
            raise bad("adv_bn", "expected " + " or ".join(repr(m) for m in ADV_BN_MODES))
        if not self.noise_sigma_min <= self.noise_sigma_max:
            raise bad("noise_sigma_max", f"expected >= noise_sigma_min ({self.noise_sigma_min})")
        if not 1 <= self.augmix_severity <= 10:
            raise bad("augmix_severity", "expected a number from 1 to 10")
        if self.augmix_width < 1:
            raise bad("augmix_width", "expected an integer >= 1")
        if not (self.augmix_depth == -1 or self.augmix_depth >= 1):
            raise bad("augmix_depth", "expected -1 (1-3 at random) or an integer >= 1")
        if not self.augmix_alpha > 0:
            raise bad("augmix_alpha", "expected > 0")
        if self.augmix_jsd_weight < 0:
            raise bad("augmix_jsd_weight", "expected >= 0")

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
        """The config a run recorded (``config.json``, a checkpoint's ``config``).

        Keys the record lacks take the value a run used before the key existed
        (:func:`complete_config`), not a dataset's protocol.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a mapping of fields, got {type(d).__name__}")
        return make_config(None, complete_config(d))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``; a new ``dataset`` brings its own protocol for the
        validation fields that held the old dataset's protocol and are not changed."""
        values = {**self.to_dict(), **changes}
        new = changes.get("dataset", self.dataset)
        if new != self.dataset:
            from ..data.registry import DATASETS

            old = DATASETS.get(self.dataset)
            for name in _PROTOCOL_FIELDS:
                if old is not None and name not in changes and values[name] == getattr(old.protocol, name):
                    values[name] = None
        return make_config(None, values)


def complete_config(d: dict) -> dict:
    """``d`` with every missing :class:`TrainConfig` field set to its default.

    A run directory written before a field existed lacks its key; the default is what
    that run used (new fields default to the earlier behaviour: the defaults of
    ``TrainConfig()``, whose validation fields resolve to the CIFAR-10 protocol, a
    5000-image split fixed for all runs, which every run used before those fields
    existed). Compare configs after completing both, so such a run is not taken for
    another configuration. Unknown keys are kept (and still differ).
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
