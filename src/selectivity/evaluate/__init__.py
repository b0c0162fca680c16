"""Per-run analyses that need checkpoints and data (above the sweep, below the report).

* :mod:`.cca`: PWCCA distances within and between alphas (paper 1, section 4.2).
* :mod:`.robustness`: corruption and adversarial accuracy (paper 2).
* :mod:`.geometry`: dimensionality (clean, perturbed, change) and gradient variability (paper 2).
* :mod:`.common`: what they share (the images every run is probed with, the data hint,
  the completed runs).

Every analysis has the same shape: a frozen settings dataclass validated on
construction, ``evaluate_run(run_dir, settings)`` (one run -> its record; CCA's result
is per pair of runs, see :mod:`.cca`), ``sweep_<name>(sweep_dir, settings)`` (every
completed run) and ``<name>_frame(sweep_dir)`` (the results, read back). Each loads
trained runs (:func:`selectivity.run.checkpoint.load_run`), computes with the pure
functions of :mod:`selectivity.analysis`, and writes its results into the run
directories (robustness, geometry; their tables in the sweep's database, described by
the analysis itself: :class:`selectivity.sweep.store.AnalysisTables`) or under
``SWEEP/analysis/`` (CCA).
"""

from .cca import (
    CCA_CSV,
    CCA_SETTINGS_JSON,
    CCADistances,
    CCASettings,
    cached_cca,
    cca_frame,
    cca_or_note,
    cca_plot_frame,
    cca_summary,
    check_datapoints,
    gather_activations,
    layer_distances,
    plan_pairs,
    sweep_cca,
)
from .common import completed_runs, read_data_hint, select_images

__all__ = [
    "CCA_CSV",
    "CCA_SETTINGS_JSON",
    "CCADistances",
    "CCASettings",
    "cached_cca",
    "cca_frame",
    "cca_or_note",
    "cca_plot_frame",
    "cca_summary",
    "check_datapoints",
    "completed_runs",
    "gather_activations",
    "layer_distances",
    "plan_pairs",
    "read_data_hint",
    "select_images",
    "sweep_cca",
]
