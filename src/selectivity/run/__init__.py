"""The on-disk contract of one training run.

* :mod:`.config`: :class:`~.config.TrainConfig` (every field with its unit), the named
  presets, device checks.
* :mod:`.files`: :class:`~.files.RunFiles` / :class:`~.files.SweepFiles` (every file
  name), statuses, atomic JSON I/O, run locks, provenance.
* :mod:`.checkpoint`: the checkpoint schema and loading a trained run back
  (:func:`~.checkpoint.load_run`).
* :mod:`.health`: what state a run directory is in, and which files are damaged.

Below training and sweeps; above data and models.
"""
