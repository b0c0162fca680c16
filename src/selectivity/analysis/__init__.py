"""Pure analysis functions: PWCCA (representation similarity) and sweep statistics."""

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
]
