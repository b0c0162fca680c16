"""Sweep-level analyses that need checkpoints and data (above the sweep, below the report).

* :mod:`.cca`: PWCCA distances within and between alphas (paper 1, section 4.2).
* :mod:`.geometry`: dimensionality (clean, perturbed, change) and gradient variability (paper 2).
* :mod:`.robustness`: corruption and adversarial accuracy of every run (paper 2).

Each module loads trained runs (:func:`selectivity.run.checkpoint.load_run`), computes with
the pure functions of :mod:`selectivity.analysis`, and writes its tables under
``SWEEP/analysis/``.
"""

from .cca import (
    CCA_CSV,
    CCA_SETTINGS_JSON,
    CCADistances,
    cached_cca,
    cca_distances,
    cca_plot_frame,
    cca_summary,
    check_datapoints,
    gather_activations,
    layer_distances,
    plan_pairs,
    select_images,
    sweep_cca,
)

__all__ = [
    "CCA_CSV",
    "CCA_SETTINGS_JSON",
    "CCADistances",
    "cached_cca",
    "cca_distances",
    "cca_plot_frame",
    "cca_summary",
    "check_datapoints",
    "gather_activations",
    "layer_distances",
    "plan_pairs",
    "select_images",
    "sweep_cca",
]
