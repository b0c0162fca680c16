"""Pure analysis: arrays and tensors in, numbers out.

PWCCA (representation similarity, :mod:`.pwcca`), the statistics over a sweep's
replicates (:mod:`.stats`), dimensionality of representations and of the change and
increase a perturbation causes (:mod:`.geometry`), input-unit gradient variability
(:mod:`.gradients`), and summaries of robustness curves, corruption errors and
gradient-masking checks (:mod:`.robustness`). Nothing here reads files, trains or loads
data: the sweep-level analyses that need checkpoints and data live in
:mod:`selectivity.evaluate` (import-linter enforces it, see ``[tool.importlinter]`` in
pyproject.toml).
"""

from .geometry import (
    CovarianceAccumulator,
    DifferenceAccumulator,
    Dimensionality,
    DimensionalityIncrease,
    change_dimensionality,
    dimensionality,
    dimensionality_increase,
    dimensionality_increase_by_layer,
    flattened_dimensionality,
    flattened_eigenvalues,
    participation_ratio,
    pca_dimensionality,
    select_positions,
    spatial_positions,
)
from .gradients import GradientVariability, gradient_variability, input_unit_gradients
from .pwcca import (
    CCAResult,
    PWCCAResult,
    cca,
    flatten_conv_activations,
    projection_weights,
    pwcca,
    pwcca_distance,
    pwcca_similarity,
)
from .robustness import (
    CORRUPTION_FAMILIES,
    CORRUPTION_FAMILY_NAMES,
    EXTRA_CORRUPTIONS,
    STANDARD_CORRUPTIONS,
    CorruptionError,
    RobustnessAUC,
    SanityCheck,
    corruption_error,
    family_means,
    gradient_masking_checks,
    relative_corruption_error,
    robustness_auc,
)
from .stats import (
    ALPHA_DECIMALS,
    FAMILIES,
    bonferroni,
    bootstrap_ci,
    is_baseline,
    normalise_alpha,
    paired_test,
    rank_sum_promote_vs_penalise,
    spearman_ci,
    summarize,
    ttests_against_baseline,
)

__all__ = [
    "CCAResult",
    "PWCCAResult",
    "cca",
    "flatten_conv_activations",
    "projection_weights",
    "pwcca",
    "pwcca_distance",
    "pwcca_similarity",
    "ALPHA_DECIMALS",
    "FAMILIES",
    "bonferroni",
    "bootstrap_ci",
    "is_baseline",
    "normalise_alpha",
    "paired_test",
    "rank_sum_promote_vs_penalise",
    "spearman_ci",
    "summarize",
    "ttests_against_baseline",
    "CovarianceAccumulator",
    "DifferenceAccumulator",
    "Dimensionality",
    "change_dimensionality",
    "dimensionality",
    "participation_ratio",
    "pca_dimensionality",
    "DimensionalityIncrease",
    "dimensionality_increase",
    "dimensionality_increase_by_layer",
    "flattened_dimensionality",
    "flattened_eigenvalues",
    "select_positions",
    "spatial_positions",
    "GradientVariability",
    "gradient_variability",
    "input_unit_gradients",
    "CORRUPTION_FAMILIES",
    "CORRUPTION_FAMILY_NAMES",
    "EXTRA_CORRUPTIONS",
    "STANDARD_CORRUPTIONS",
    "CorruptionError",
    "RobustnessAUC",
    "SanityCheck",
    "corruption_error",
    "family_means",
    "gradient_masking_checks",
    "relative_corruption_error",
    "robustness_auc",
]
