"""Pure transforms of input batches (tensors in, tensors out): corruptions, attacks, augmentations.

The 15 common corruptions (CIFAR-10-C, Tiny ImageNet-C parameters), white-box
gradient attacks (FGSM, PGD, APGD-CE, APGD-T and their AutoAttack-style ensemble) and
the training-time augmentations for robustness (Gaussian noise, AugMix and its
Jensen-Shannon consistency loss). Like :mod:`selectivity.analysis`, nothing here imports
training, sweeps, data loading, evaluation, the report or the CLI (checked by
import-linter): only torch, numpy, scipy, Pillow and other ``selectivity.perturb``
modules.
"""

from .attacks import (
    APGD_TARGET_CLASSES,
    ATTACKS,
    NORMS,
    AttackAccuracy,
    AttackOutcome,
    accuracy_under_attack,
    apgd_ce,
    apgd_checkpoints,
    apgd_ensemble,
    apgd_t,
    attack,
    attack_outcome,
    dlr_loss,
    fgsm,
    pgd,
    targeted_dlr_loss,
)
from .augment import (
    AUGMIX_OPS,
    JSD_WEIGHT,
    augmix,
    augmix_magnitude,
    autocontrast,
    equalize,
    gaussian_noise,
    jensen_shannon_consistency,
    posterize,
    rotate,
    sample_beta,
    sample_dirichlet,
    shear_x,
    shear_y,
    solarize,
    translate_x,
    translate_y,
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
    "APGD_TARGET_CLASSES",
    "apgd_ce",
    "apgd_t",
    "apgd_ensemble",
    "apgd_checkpoints",
    "dlr_loss",
    "targeted_dlr_loss",
    "CORRUPTIONS",
    "PARAMETER_SETS",
    "corrupt",
    "corruption_params",
    "disk_kernel",
    "frost_texture",
    "motion_blur_lines",
    "plasma_fractal",
    "to_uint8",
    "AUGMIX_OPS",
    "JSD_WEIGHT",
    "augmix",
    "augmix_magnitude",
    "autocontrast",
    "equalize",
    "gaussian_noise",
    "jensen_shannon_consistency",
    "posterize",
    "rotate",
    "sample_beta",
    "sample_dirichlet",
    "shear_x",
    "shear_y",
    "solarize",
    "translate_x",
    "translate_y",
]
