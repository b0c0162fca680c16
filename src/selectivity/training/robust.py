"""Robust training methods as two hooks of a training step: its inputs and its loss.

A step of a robust method differs from a plain step in two places only:

1. :meth:`RobustTraining.inputs`: the images the network trains on, from the loader's
   normalised batch (crop and flip already applied):

   - ``"adversarial"``: PGD adversarial training (Madry et al. 2018): the batch attacked
     with :func:`selectivity.perturb.attacks.adversarial_training_batch` (the package's one
     PGD loop), L-inf radius ``adv_epsilon`` with ``adv_steps`` steps of ``adv_step_size``
     from a random start, batch norm as ``adv_bn`` says;
   - ``"noise_augment"``: every image plus Gaussian noise of its own sigma, uniform in
     ``[noise_sigma_min, noise_sigma_max]`` (:func:`selectivity.perturb.augment.gaussian_noise`);
   - ``"augmix"``: the clean batch and two AugMix views of it side by side, ``(3B, ...)``
     (:func:`selectivity.perturb.augment.augmix`).

2. :meth:`RobustTraining.loss`: cross-entropy on the training images, and for AugMix
   ``CE(clean) + augmix_jsd_weight * JSD(clean, view 1, view 2)`` (the reference's loss).

The selectivity regulariser sees the forward pass the step trains on: the attacked batch,
the noisy batch, or all ``3B`` AugMix images (labels repeated), so ``loss = CE (+ JSD) -
alpha * SI`` composes with every method.

Every random number comes from a generator seeded by ``(seed, epoch, step)``
(:func:`step_seed`), so a resumed run draws what an uninterrupted one draws. The
attack's and the noise's generators live on the batch's device (their draws are as large
as the batch); AugMix's on the CPU (its draws are a few numbers per image, and its Gamma
sampler loops until every draw is accepted, which on a GPU would read back every pass).
Perturbations are made in [0, 1] pixel space: the batch is un-normalised with the
training split's mean and std, perturbed, and normalised again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..perturb.attacks import adversarial_training_batch
from ..perturb.augment import augmix, gaussian_noise, jensen_shannon_consistency
from ..run.config import TrainConfig
from .runtime import autocast

__all__ = ["RobustTraining", "step_seed", "robust_training"]

#: A number per method mixed into the step seed, so two methods never share a stream.
_METHOD_KEYS = {"adversarial": 1, "noise_augment": 2, "augmix": 3}


def step_seed(seed: int, epoch: int, step: int, method: str) -> int:
    """The 63-bit seed of one training step's random draws, from ``(seed, epoch, step)``.

    numpy's SeedSequence mixes the four numbers (the fourth is the method), so
    neighbouring seeds, epochs and steps give unrelated streams.
    """
    key = [int(seed), int(epoch), int(step), _METHOD_KEYS[method]]
    return int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


@dataclass
class RobustTraining:
    """One run's robust-training method, bound to its config and its data's normalisation.

    Attributes
    ----------
    cfg : TrainConfig
        The run's config (``robust`` is not ``"none"``).
    mean, std : torch.Tensor
        ``(1, C, 1, 1)`` per-channel statistics the loader normalised with (0-1 scale).
    """

    cfg: TrainConfig
    mean: torch.Tensor
    std: torch.Tensor

    @property
    def method(self) -> str:
        return self.cfg.robust

    @property
    def views(self) -> int:
        """Images the network sees per training image (3 for AugMix, else 1)."""
        return 3 if self.method == "augmix" else 1

    def _pixels(self, x: torch.Tensor) -> torch.Tensor:
        # Rounding can step a hair outside [0, 1]; the attack and augmentations need [0, 1].
        return (x * self.std + self.mean).clamp(0.0, 1.0)

    def _normalised(self, x01: torch.Tensor) -> torch.Tensor:
        return (x01 - self.mean) / self.std

    def inputs(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised images and labels step ``step`` of ``epoch`` trains on.

        Parameters
        ----------
        model : nn.Module
            The run's model (eager), attacked by ``"adversarial"``; left as it was.
        x : torch.Tensor
            ``(B, C, H, W)`` the loader's normalised batch.
        y : torch.Tensor
            ``(B,)`` labels.

        Returns
        -------
        inputs : torch.Tensor
            ``(V * B, C, H, W)`` with ``V = views`` (AugMix: clean, view 1, view 2).
        labels : torch.Tensor
            ``(V * B,)`` the labels of ``inputs``.
        """
        cfg = self.cfg
        s = step_seed(cfg.seed, epoch, step, self.method)
        if self.method == "adversarial":
            g = torch.Generator(device=x.device).manual_seed(s)
            with autocast(x.device, cfg.amp):
                x_adv = adversarial_training_batch(
                    model,
                    self._pixels(x),
                    y,
                    cfg.adv_epsilon,
                    norm=cfg.adv_norm,
                    steps=cfg.adv_steps,
                    step_size=cfg.adv_step_size,
                    random_start=cfg.adv_random_start,
                    mean=self.mean.flatten(),
                    std=self.std.flatten(),
                    generator=g,
                    bn=cfg.adv_bn,
                )
            return self._normalised(x_adv), y
        if self.method == "noise_augment":
            g = torch.Generator(device=x.device).manual_seed(s)
            sigma = (cfg.noise_sigma_min, cfg.noise_sigma_max)
            return self._normalised(gaussian_noise(self._pixels(x), sigma, generator=g)), y
        if self.method == "augmix":
            g = torch.Generator().manual_seed(s)
            x01 = self._pixels(x)
            views = [
                augmix(
                    x01,
                    cfg.augmix_severity,
                    cfg.augmix_width,
                    cfg.augmix_depth,
                    cfg.augmix_alpha,
                    generator=g,
                )
                for _ in range(2)
            ]
            return torch.cat([x, *(self._normalised(v) for v in views)]), y.repeat(3)
        raise ValueError(f"unknown robust-training method {self.method!r}")

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The step's loss before the regulariser, from the logits of :meth:`inputs`.

        Parameters
        ----------
        logits : torch.Tensor
            ``(V * B, K)`` logits of the step's inputs.
        y : torch.Tensor
            ``(B,)`` labels of the loader's batch.

        Returns
        -------
        loss : torch.Tensor
            Scalar: CE, or for AugMix ``CE(clean) + augmix_jsd_weight * JSD``.
        ce : torch.Tensor
            Scalar cross-entropy (AugMix: of the clean images).
        logits : torch.Tensor
            ``(B, K)`` the logits accuracy is counted on (AugMix: the clean images').
        """
        if self.method != "augmix":
            ce = F.cross_entropy(logits, y)
            return ce, ce, logits
        clean, view1, view2 = logits.chunk(3)  # (3B, K) -> three (B, K)
        ce = F.cross_entropy(clean, y)
        jsd = jensen_shannon_consistency(clean, view1, view2)
        return ce + self.cfg.augmix_jsd_weight * jsd, ce, clean


def robust_training(
    cfg: TrainConfig,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> RobustTraining | None:
    """The robust-training method of ``cfg`` (None for ``robust="none"``).

    Parameters
    ----------
    mean, std : sequence of float
        Per-channel statistics the run's loader normalises with (0-1 scale).
    device, dtype
        Where and in which precision the batches are.
    """
    if cfg.robust == "none":
        return None
    shape = (1, len(mean), 1, 1)
    m = torch.tensor(list(mean), dtype=dtype, device=device).view(shape)
    s = torch.tensor(list(std), dtype=dtype, device=device).view(shape)
    return RobustTraining(cfg, m, s)
