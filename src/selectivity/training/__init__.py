"""Training: one run, and fused groups of runs that differ only in seed and alpha.

* :mod:`.single`: :func:`~.single.train_run`, one run into a self-describing run directory.
* :mod:`.fused`: :class:`~.fused.FusedRuns`, R runs of one architecture as one model.
* :mod:`.group`: :func:`~.group.train_group`, a fused group of run directories.
* :mod:`.robust`: robust training (PGD adversarial, Gaussian noise, AugMix) as a step's
  inputs and loss.
* :mod:`.runtime`: autocast, channels_last, ``torch.compile`` with fallback, the CPU
  allocator setting.

Below sweeps; above the run contract (:mod:`selectivity.run`), data, models and core.
"""
