"""Pure analysis functions: PWCCA (representation similarity), sweep statistics,
dimensionality of representations and input-unit gradient variability."""

from .geometry import (
    CovarianceAccumulator,
    DifferenceAccumulator,
    Dimensionality,
    change_dimensionality,
    dimensionality,
    participation_ratio,
    pca_dimensionality,
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
from .stats import (
    bonferroni,
    bootstrap_ci,
    paired_test,
    rank_sum_promote_vs_penalise,
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
    "bonferroni",
    "bootstrap_ci",
    "paired_test",
    "rank_sum_promote_vs_penalise",
    "summarize",
    "ttests_against_baseline",
    "CovarianceAccumulator",
    "DifferenceAccumulator",
    "Dimensionality",
    "change_dimensionality",
    "dimensionality",
    "participation_ratio",
    "pca_dimensionality",
    "GradientVariability",
    "gradient_variability",
    "input_unit_gradients",
]
