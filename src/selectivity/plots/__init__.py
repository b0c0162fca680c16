"""Plot functions: they only draw. Frames (statistics precomputed) in, ``Axes`` out.

* :mod:`.style`: one palette per alpha, the symmetric-log alpha axis, panel layout and
  :func:`~.style.save_figure`, the one function that writes a figure.
* :mod:`.selectivity`: the panels of paper 1.
* :mod:`.robustness`, :mod:`.geometry`: the panels of paper 2; :mod:`.robust_training`: its
  reverse direction (robust-training methods against standard training).
* :mod:`.perturb`: a contact sheet of corrupted images.

Every ``plot_*`` function takes an optional ``ax`` and returns the ``Axes`` it drew on.
Nothing here computes a statistic that the caller can pass in, reads a file, or touches
pyplot's global state.
"""

from .selectivity import (
    plot_accuracy_vs_alpha,
    plot_accuracy_vs_selectivity,
    plot_cca_distance_by_layer,
    plot_cca_ratio,
    plot_layer_selectivity,
    plot_leaky_relu,
    plot_model_comparison,
    plot_promote_vs_penalise,
    plot_selectivity_vs_alpha,
)
from .style import alpha_color, alpha_palette, save_figure

__all__ = [
    "alpha_color",
    "alpha_palette",
    "plot_accuracy_vs_alpha",
    "plot_accuracy_vs_selectivity",
    "plot_cca_distance_by_layer",
    "plot_cca_ratio",
    "plot_layer_selectivity",
    "plot_leaky_relu",
    "plot_model_comparison",
    "plot_promote_vs_penalise",
    "plot_selectivity_vs_alpha",
    "save_figure",
]
