"""What a sweep is: models x alphas x seeds (x any other config axis), and its presets."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..run.config import MAX_SEED, ConfigError, TrainConfig, make_config

__all__ = [
    "SweepSpec",
    "RunSpec",
    "register_sweep_preset",
    "list_sweep_presets",
    "get_sweep_preset",
    "parse_seeds",
    "parse_floats",
    "parse_grid",
    "run_id",
    "PAPER_ALPHAS",
    "MAX_RUNS",
]

#: Upper bound on the runs of one grid (and on a seed count): a typo such as
#: ``--seeds 2000000`` is refused instead of allocating millions of run specs.
MAX_RUNS = 100_000

#: Paper 1's grid: every alpha named in the text.
PAPER_ALPHAS = [
    -30.0,
    -20.0,
    -10.0,
    -5.0,
    -2.0,
    -1.0,
    -0.5,
    -0.4,
    -0.3,
    -0.2,
    -0.1,
    0.0,
    0.1,
    0.2,
    0.3,
    0.4,
    0.5,
    1.0,
    2.0,
    5.0,
]


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its id (also its directory name) and its full config."""

    run_id: str
    config: TrainConfig


@dataclass
class SweepSpec:
    """A grid of training runs.

    Attributes
    ----------
    models : list of str
        Model names.
    alphas : list of float
        Regulariser strengths.
    seeds : list of int
        Seeds; every (model, alpha, extra) cell is trained once per seed.
    preset : str
        Training preset applied to every run (see ``selectivity presets``); not the
        sweep preset, which is ``sweep_preset``.
    overrides : dict
        Config fields applied to every run after the preset (epochs, train_subset, ...).
    grid : dict
        Further axes: config field -> list of values (e.g. ``{"negative_slope": [0.1, 0.5]}``).
    executor, workers : str, int, optional
        Suggested executor and parallel runs, used when the command line names none
        (they do not change any run's result).
    robustness : dict, optional
        Settings of the paper 2 robustness evaluation (fields of
        ``selectivity.evaluate.robustness.RobustnessSettings``) that ``selectivity sweep``
        runs on the completed runs after training, before the summary; None: none.
    sweep_preset : str, optional
        Name of the sweep preset this grid started from (``quick``, ``paper``, ...; set by
        :func:`get_sweep_preset`; options may have changed the grid since); None: none.
    geometry : dict, optional
        Settings of the paper 2 geometry step (fields of
        ``selectivity.evaluate.geometry.GeometrySettings``) run after the robustness step;
        None: none.
    """

    models: list[str]
    alphas: list[float]
    seeds: list[int]
    preset: str = "paper"
    overrides: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    executor: str | None = None
    workers: int | None = None
    robustness: dict[str, Any] | None = None
    sweep_preset: str | None = None
    geometry: dict[str, Any] | None = None

    def validate(self) -> SweepSpec:
        if not self.models:
            raise ConfigError("a sweep needs at least one model")
        if not self.alphas:
            raise ConfigError("a sweep needs at least one alpha")
        if not self.seeds:
            raise ConfigError("a sweep needs at least one seed")
        for key in ("model", "alpha", "seed"):
            if key in self.overrides or key in self.grid:
                raise ConfigError(f"{key!r} is a sweep axis: use --{key}s, not an override")
        self.runs()  # validates every config
        return self

    def runs(self) -> list[RunSpec]:
        """Every run of the grid, in a stable order (model, extra axes, alpha, seed)."""
        keys = sorted(self.grid)
        n = len(self.models) * len(self.alphas) * len(self.seeds)
        for k in keys:
            n *= max(1, len(self.grid[k]))
        if n > MAX_RUNS:
            raise ConfigError(f"the grid has {n} runs, more than {MAX_RUNS}; split it into several sweeps")
        out = []
        seen: dict[str, TrainConfig] = {}
        for model in self.models:
            for extra in itertools.product(*(self.grid[k] for k in keys)):
                for alpha in self.alphas:
                    for seed in self.seeds:
                        values = {
                            **self.overrides,
                            **dict(zip(keys, extra)),
                            "model": model,
                            "alpha": alpha,
                            "seed": seed,
                        }
                        cfg = make_config(self.preset, values)
                        rid = run_id(cfg, keys)
                        if rid in seen:
                            if seen[rid] == cfg:  # a value listed twice: one run
                                continue
                            other = seen[rid].to_dict()
                            diff = sorted(k for k, v in cfg.to_dict().items() if other.get(k) != v)
                            raise ConfigError(
                                f"two runs of the grid would share the id {rid!r} (they differ in "
                                f"{', '.join(f'{k}={other[k]!r} vs {getattr(cfg, k)!r}' for k in diff)}); "
                                "give values that differ in their printed form"
                            )
                        seen[rid] = cfg
                        out.append(RunSpec(rid, cfg))
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SweepSpec:
        return cls(**d)


def _exact(v: float, sign: bool = False) -> str:
    """Short form of a float that reads back as the same float (``:g`` when it does, else ``repr``).

    ``:g`` keeps 6 significant digits, so 0.1 and 0.1000001 would both print as 0.1 and
    name the same run directory; ``repr`` is the shortest exact form.
    """
    short = f"{v:+g}" if sign else f"{v:g}"
    if float(short) == v:
        return short
    text = repr(float(v))
    return f"+{text}" if sign and v > 0 else text


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return _exact(v)
    return re.sub(r"[^A-Za-z0-9.+-]", "-", str(v))


def run_id(cfg: TrainConfig, extra_keys: Sequence[str] = ()) -> str:
    """Directory-safe id, e.g. ``resnet20_alpha-1_seed0`` (+ ``_negative_slope0.1``).

    Floats are written exactly (``alpha+0.1000001``), so distinct values give distinct ids.
    """
    alpha = "0" if cfg.alpha == 0 else _exact(cfg.alpha, sign=True)
    parts = [cfg.model, f"alpha{alpha}", f"seed{cfg.seed}"]
    parts += [f"{k}{_fmt(getattr(cfg, k))}" for k in extra_keys]
    return "_".join(parts)


# --------------------------------------------------------------------------- parsing
def parse_seeds(text: str) -> list[int]:
    """``"3"`` -> [0, 1, 2]; ``"0,4,9"`` -> explicit; ``"10-19"`` -> a range (inclusive)."""
    text = str(text).strip()
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        elif re.fullmatch(r"\d+-\d+", text):
            lo, hi = (int(s) for s in text.split("-"))
            if hi < lo or hi - lo >= MAX_RUNS:
                raise ValueError
            seeds = list(range(lo, hi + 1))
        else:
            n = int(text)
            if not 1 <= n <= MAX_RUNS:
                raise ValueError
            seeds = list(range(n))
    except ValueError:
        raise ConfigError(
            f"invalid seeds {text!r}: give a count (3 -> 0,1,2), a list (0,4,9) or a range (10-19)"
        ) from None
    if not seeds:
        raise ConfigError(f"no seeds in {text!r}")
    if len(seeds) > MAX_RUNS:
        raise ConfigError(f"at most {MAX_RUNS} seeds, got {len(seeds)}")
    if any(not 0 <= s <= MAX_SEED for s in seeds):
        raise ConfigError(f"seeds must be integers in [0, {MAX_SEED}], got {seeds[:10]}")
    return seeds


def parse_floats(text: str, what: str = "alphas") -> list[float]:
    """``"-1,0,1"`` -> [-1.0, 0.0, 1.0]; finite numbers only; a value listed twice is kept once."""
    try:
        vals = [float(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"invalid {what} {text!r}: expected comma-separated numbers, e.g. -1,0,1") from None
    if not vals:
        raise ConfigError(f"no {what} given")
    bad = [v for v in vals if not math.isfinite(v)]
    if bad:
        raise ConfigError(f"invalid {what} {text!r}: {bad[0]} is not a finite number")
    if len(vals) > MAX_RUNS:
        raise ConfigError(f"at most {MAX_RUNS} {what}, got {len(vals)}")
    return list(dict.fromkeys(vals))


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["negative_slope=0.1,0.3"]`` -> ``{"negative_slope": ["0.1", "0.3"]}`` (values coerced later).

    Raises
    ------
    ConfigError
        An item without ``=``, an empty key or no values.
    """
    grid: dict[str, list[str]] = {}
    for g in items:
        if "=" not in g:
            raise ConfigError(f"--grid {g!r} is not of the form key=v1,v2")
        k, v = g.split("=", 1)
        key = k.strip().replace("-", "_")
        values = list(dict.fromkeys(x.strip() for x in v.split(",") if x.strip()))
        if not key or not values:
            raise ConfigError(f"--grid {g!r} needs a key and at least one value, e.g. negative_slope=0.1,0.3")
        grid[key] = values
    return grid


# --------------------------------------------------------------------------- presets
_SWEEP_PRESETS: dict[str, Callable[[], SweepSpec]] = {}


def register_sweep_preset(name: str):
    """Register ``fn() -> SweepSpec`` as a named sweep preset."""

    def deco(fn):
        _SWEEP_PRESETS[name] = fn
        return fn

    return deco


def list_sweep_presets() -> dict[str, str]:
    return {k: (fn.__doc__ or "").strip().splitlines()[0] for k, fn in sorted(_SWEEP_PRESETS.items())}


def get_sweep_preset(name: str) -> SweepSpec:
    """A fresh spec of the sweep preset ``name``, its name recorded as ``sweep_preset``.

    Raises
    ------
    ConfigError
        An unknown name (with the closest known one).
    """
    if name not in _SWEEP_PRESETS:
        import difflib

        close = difflib.get_close_matches(name, list(_SWEEP_PRESETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown sweep preset {name!r}{hint}; known: {', '.join(sorted(_SWEEP_PRESETS))}")
    spec = _SWEEP_PRESETS[name]()
    spec.sweep_preset = name
    return spec


#: The quick preset's training overrides: 4000 images, 3 epochs, one thread per run.
QUICK_OVERRIDES: dict[str, Any] = dict(
    epochs=3,
    train_subset=4000,
    eval_subset=2000,
    batch_size=128,
    lr_milestones=[0.67],
    top_n=200,
    num_threads=1,
)


@register_sweep_preset("quick")
def _quick() -> SweepSpec:
    """About 35 minutes on a 2-core CPU (10 of training): ResNet20, 7 alphas x 2 seeds on a CIFAR-10 subset."""
    return SweepSpec(
        models=["resnet20"],
        alphas=[-5.0, -2.0, -0.5, 0.0, 0.5, 2.0, 5.0],
        seeds=[0, 1],
        preset="paper",
        overrides=dict(QUICK_OVERRIDES),
        executor="process",
        workers=2,  # two single-threaded runs at once use a 2-core CPU better than one 2-thread run
        # Paper 2 on the quick networks, sized for minutes on 2 cores: 500 test images, the 15
        # corruptions at severities 1, 3, 5, FGSM and PGD-5 at 0.25/255 ... 8/255 (the curve
        # under the AUC) and APGD-CE-100 with the AutoAttack-style ensemble at 8/255.
        robustness=dict(
            n_images=500,
            severities=[1, 3, 5],
            attacks=["fgsm", "pgd", "apgd-ce", "apgd-ensemble"],
            epsilons=[e / 255 for e in (0.25, 0.5, 1, 2, 4, 8)],
            pgd_steps=5,
        ),
    )


@register_sweep_preset("quick-vit")
def _quick_vit() -> SweepSpec:
    """About 15 minutes on a 2-core CPU: the tiny ViT (GELU, AdamW, cosine), alphas -2, 0, 2, 5, on a subset."""
    # The `paper` preset's ViT settings (AdamW 1e-3, wd 0.05, warmup 0.1, cosine) on
    # 4000 training images for 6 epochs; units are the MLP neurons of the 4 blocks.
    return SweepSpec(
        models=["vit_tiny"],
        alphas=[-2.0, 0.0, 2.0, 5.0],
        seeds=[0],
        preset="paper",
        overrides=dict(
            epochs=6,
            train_subset=4000,
            eval_subset=2000,
            batch_size=128,
            top_n=200,
            num_threads=1,
        ),
        executor="process",
        workers=2,  # two single-threaded runs at once, as in `quick`
    )


#: Standard training and the three robust-training methods (``TrainConfig.robust``).
ROBUST_GRID = ["none", "adversarial", "noise_augment", "augmix"]


@register_sweep_preset("robust-training")
def _robust_training() -> SweepSpec:
    """Paper 2 reversed, CPU scale: standard vs PGD, noise and AugMix training, alpha 0, 2 seeds."""
    # The quick preset's networks trained four ways; the robustness step adds 8/255 (the
    # training attack's radius) to the quick preset's epsilons. The cross with the
    # regulariser: the same preset with --alphas=-2,0,2 (alpha-0 runs are reused).
    return SweepSpec(
        models=["resnet20"],
        alphas=[0.0],
        seeds=[0, 1],
        preset="paper",
        overrides=dict(QUICK_OVERRIDES),
        grid={"robust": list(ROBUST_GRID)},
        executor="process",
        workers=2,
        robustness=dict(
            n_images=500,
            severities=[1, 3, 5],
            attacks=["fgsm", "pgd"],
            epsilons=[1 / 255, 4 / 255, 8 / 255],
            pgd_steps=5,
        ),
    )


@register_sweep_preset("medium")
def _medium() -> SweepSpec:
    """About 70 minutes on a 2-core CPU: ResNet20 on the full 45k split, alphas -2, 0, +2, 15 epochs."""
    # The paper's schedule compressed proportionally: 200 -> 15 epochs, lr x0.1 at the
    # same fractions (0.5, 0.75 -> epochs 8 and 11); full validation and test sets.
    return SweepSpec(
        models=["resnet20"],
        alphas=[-2.0, 0.0, 2.0],
        seeds=[0],
        preset="paper",
        overrides=dict(epochs=15, num_threads=1),
        executor="process",
        workers=3,  # the three runs side by side, one thread each
    )


@register_sweep_preset("paper")
def _paper() -> SweepSpec:
    """Paper 1 (A.1): ResNet20 and VGG16, 20 seeds, the full alpha grid, 200 epochs (GPUs/cluster)."""
    return SweepSpec(
        models=["resnet20", "vgg16"], alphas=list(PAPER_ALPHAS), seeds=list(range(20)), preset="paper"
    )


# Paper 2's protocol beyond its networks and data is not known (its full text is not
# available): the alpha grid is paper 1's, the seeds and the step settings are our choices.
@register_sweep_preset("paper2-cifar")
def _paper2_cifar() -> SweepSpec:
    """Paper 2 on CIFAR-10: ResNet20, the alpha grid, 20 seeds, 200 epochs; robustness and geometry steps."""
    return SweepSpec(
        models=["resnet20"],
        alphas=list(PAPER_ALPHAS),
        seeds=list(range(20)),
        preset="paper",
        # The whole test set: 15 corruptions x 5 severities (CIFAR-10-C's parameters, or a
        # CIFAR-10-C directory with --corrupted), FGSM and PGD-10 at 0.25/255 ... 8/255.
        robustness=dict(n_images=None),
        geometry=dict(),  # the robustness step's perturbations and images (our choice)
    )


@register_sweep_preset("paper2-tiny")
def _paper2_tiny() -> SweepSpec:
    """Paper 2 on Tiny ImageNet: ResNet18 and ResNet50, the alpha grid, 5 seeds; Tiny ImageNet-C (--corrupted) and geometry."""
    return SweepSpec(
        models=["resnet18", "resnet50"],
        alphas=list(PAPER_ALPHAS),
        seeds=list(range(5)),
        preset="paper",
        # The validation fields are left to the dataset's protocol: 50 images per class
        # drawn from the training set afresh for each run.
        overrides={"dataset": "tiny-imagenet"},
        # The whole test set (the official validation set), read from a Tiny ImageNet-C
        # directory given with --corrupted, else generated with its parameters.
        robustness=dict(n_images=None),
        # The robustness step's perturbations on 4000 images: ResNet50's last stage has
        # 2048 channels, and the channel covariance needs more images than units.
        geometry=dict(n_images=4000),
    )


@register_sweep_preset("leaky-relu")
def _leaky() -> SweepSpec:
    """Paper 1, A10: leaky ReLU slopes 0-0.5 with positive alphas, ResNet20, 20 seeds, 200 epochs."""
    return SweepSpec(
        models=["resnet20"],
        alphas=[0.0, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0],
        seeds=list(range(20)),
        preset="paper",
        overrides={"activation": "leaky_relu"},
        grid={"negative_slope": [0.01, 0.1, 0.2, 0.3, 0.5]},
    )
