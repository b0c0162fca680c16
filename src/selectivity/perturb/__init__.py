"""Pure transforms of input batches (tensors in, tensors out): corruptions, attacks.

The 15 common corruptions (CIFAR-10-C, Tiny ImageNet-C parameters) and white-box
gradient attacks (FGSM, PGD). Like :mod:`selectivity.analysis`, nothing here imports
training, sweeps, data loading, evaluation, the report or the CLI (checked by
import-linter): only torch, numpy, scipy, Pillow and other ``selectivity.perturb``
modules.
"""

from .attacks import (
    ATTACKS,
    NORMS,
    AttackAccuracy,
    AttackOutcome,
    accuracy_under_attack,
    attack,
    attack_outcome,
    fgsm,
    pgd,
)
from .corruptions import (
    CORRUPTIONS,
    PARAMETER_SETS,
    corrupt,
    corruption_params,
    disk_kernel,
    frost_texture,
    motion_blur_lines,
    plasma_fractal,
    to_uint8,
)

__all__ = [
    "ATTACKS",
    "NORMS",
    "AttackAccuracy",
    "AttackOutcome",
    "accuracy_under_attack",
    "attack",
    "attack_outcome",
    "fgsm",
    "pgd",
    "CORRUPTIONS",
    "PARAMETER_SETS",
    "corrupt",
    "corruption_params",
    "disk_kernel",
    "frost_texture",
    "motion_blur_lines",
    "plasma_fractal",
    "to_uint8",
]
