"""The index itself: torch only, no I/O, no data, no configuration.

* :mod:`.metrics`: the class selectivity index, precision, dead units, streaming
  class-conditional means (pure functions, float64).
* :mod:`.responses`: the one reduction of a layer's output to ``(N, units)``, with an
  explicit layout (conv maps, units, ``(N, T, D)`` tokens, channels-last maps).
* :mod:`.hooks`: forward hooks that capture layer outputs, inside a context manager that
  removes them in ``finally``.
* :mod:`.regularizer`: the differentiable regulariser ``loss = CE - alpha * mean_SI``.
* :mod:`.measure`: every unit of a model over a dataset, streaming.
* :mod:`.sites`: candidate sites of any model on a probe input; presets of families.
* :mod:`.evalmode`: :func:`~.evalmode.frozen_eval`, eval mode with no weight gradients, and
  :func:`~.evalmode.frozen_train`, the same in train mode with buffers restored.

Everything else in the package sits above this layer; ``selectivity/__init__.py``
re-exports the public names.
"""
