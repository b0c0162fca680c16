"""selectivity: measure and regularise class selectivity of units in PyTorch networks.

Public API (see the README for a tour):

* metrics: :func:`class_selectivity_index`, :func:`precision`, :func:`dead_units`,
  :func:`network_selectivity`, :class:`SelectivityAccumulator`
* :class:`SelectivityRegularizer` for ``loss = CE - alpha * mean_SI``
* :func:`measure_selectivity` for a model over a dataset, streaming
* :func:`sites` and :func:`family_preset` to find the units of a model (transformers:
  the MLP neurons of ``(N, T, D)`` token outputs)
* :mod:`selectivity.models` for the papers' networks
* :func:`open_sweep` (a sweep's results as pandas frames, read-only) and :func:`open_run`
  (a trained run's model, config and data), loaded on first use
* :func:`write_token_gallery`: the unit gallery of token data (each unit's top tokens in
  context) as an HTML page, loaded on first use
"""

from .core.hooks import ActivationCapture, resolve_layers
from .core.measure import LayerReport, SelectivityReport, measure_selectivity
from .core.metrics import (
    AccumulatorResult,
    SelectivityAccumulator,
    class_means,
    class_selectivity_index,
    dead_units,
    layer_mean,
    network_selectivity,
    precision,
    selectivity_from_class_means,
)
from .core.regularizer import SelectivityRegularizer, batch_selectivity
from .core.responses import LAYOUTS, POOLINGS, unit_responses
from .core.sites import FAMILY_PRESETS, family_preset, format_sites, sites
from .version import __version__

__all__ = [
    "ActivationCapture",
    "resolve_layers",
    "LayerReport",
    "SelectivityReport",
    "measure_selectivity",
    "AccumulatorResult",
    "SelectivityAccumulator",
    "class_means",
    "class_selectivity_index",
    "dead_units",
    "layer_mean",
    "network_selectivity",
    "precision",
    "selectivity_from_class_means",
    "SelectivityRegularizer",
    "batch_selectivity",
    "LAYOUTS",
    "POOLINGS",
    "unit_responses",
    "FAMILY_PRESETS",
    "family_preset",
    "format_sites",
    "sites",
    "__version__",
    "open_sweep",
    "open_run",
    "write_token_gallery",
]


def __getattr__(name: str):
    # open_sweep / open_run / write_token_gallery live in the report layer, which imports pandas and matplotlib:
    # loaded on first use, so `import selectivity` stays light.
    if name in ("open_sweep", "open_run"):
        from .report import results

        return getattr(results, name)
    if name == "write_token_gallery":
        from .report import tokens

        return tokens.write_token_gallery
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
