"""White-box gradient attacks: FGSM and PGD (L-infinity and L2), batched.

Conventions
-----------
* Images ``x`` are ``(N, C, H, W)`` (any ``(N, ...)`` works when ``mean``/``std`` are
  not given) in **[0, 1] pixel space**; ``epsilon`` is measured there. When the model
  expects normalised input, pass the per-channel ``mean`` and ``std`` (0-1 scale): the
  attack feeds ``(x - mean) / std`` to the model, so perturbation sizes stay in pixels.
* Labels ``y`` are ``(N,)`` integer classes; the attacked loss is the cross-entropy
  ``-log softmax(f(x))_y`` of each sample (untargeted: the attack maximises it).
* The model is put in eval mode (batch-norm uses running statistics, so every sample
  is attacked independently of the rest of its batch) and every module's training
  flag is restored afterwards. Parameters get ``requires_grad=False`` for the attack
  (no weight gradients are computed) and their flags are restored: no ``.grad`` is
  created or changed on any parameter.

Adversarial training (:func:`adversarial_training_batch`) runs the same PGD loop with
the model in its own mode (train: batch-norm statistics of the batch), its running
statistics restored afterwards (:func:`selectivity.core.evalmode.frozen_train`).

Algorithm (the same as foolbox 3's ``LinfPGD``/``L2PGD``)
---------------------------------------------------------
From ``x_0`` (``x``, or a uniform random point of the epsilon-ball when
``random_start``) repeat ``steps`` times::

    g     = grad_x loss(x_t)
    x'    = x_t + step_size * d(g)     d = sign(g)            (linf)
                                       d = g / ||g||_2        (l2, per sample)
    x_t+1 = clip_[0,1]( x + P_eps(x' - x) )
            P_eps: clamp to [-eps, eps] (linf) / scale down to norm eps (l2)

FGSM is one such step from ``x`` with ``step_size = epsilon`` (for ``norm="l2"`` it is
the "fast gradient method" step ``epsilon * g / ||g||_2``).

Which point PGD returns (``select``): ``"best"`` (default) keeps, per sample, the
strongest iterate seen over all steps and restarts; ``"last"`` keeps each restart's
final iterate (textbook PGD). Between candidates "stronger" means: misclassified beats
correctly classified, and otherwise the larger loss wins. Restarts always keep the
per-sample strongest of the restarts.

Default step size: ``2.5 * epsilon / steps`` (Madry et al. 2018), so the iterates can
cross the ball even when the random start lands on the far side.

APGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble
of diverse parameter-free attacks")
-----------------------------------------------------------------------------------------
``apgd-ce`` maximises the cross-entropy, ``apgd-t`` the targeted DLR loss
``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` towards each of the ``n_target_classes``
(default 9) classes ranked 2nd, 3rd, ... by the clean logits (AutoAttack's standard
version). One run, from ``x^(0)`` (a random point on the ball's surface, as the reference:
``eps * t / ||t||`` with ``t`` uniform in ``[-1, 1]^D`` (linf) or Gaussian (l2), clipped
to [0, 1]), with step size ``eta = 2 * epsilon`` and momentum ``alpha = 0.75``::

    z       = P( x^(k) + eta * d(grad f(x^(k))) )            d as PGD's
    x^(k+1) = P( x^(k) + alpha (z - x^(k)) + (1 - alpha)(x^(k) - x^(k-1)) )
              (alpha = 1 for the first step)             P: project, clip to [0, 1]

Checkpoints ``w_j = ceil(p_j * steps)`` with ``p_0 = 0``, ``p_1 = 0.22``,
``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` (:func:`apgd_checkpoints`). At
each ``w_j``, per sample, the step size is halved and the run restarts from the
highest-loss point seen so far ``x_max`` when

1. fewer than ``rho * (w_j - w_{j-1})`` of the steps since ``w_{j-1}`` increased the loss
   (``rho = 0.75``), or
2. the step size was not halved at ``w_{j-1}`` and the best loss has not grown since.

Our reading where the paper is silent: ``f_max`` at ``w_0`` is the start's loss (so
condition 2 can fire at ``w_1``; the reference never lets it); after a restart the loss of
the point the next step leaves is ``f(x_max)``. Each run costs ``steps`` forward+backward
passes (the start and the first ``steps - 1`` iterates) and one forward pass (the last
iterate); each attack adds one clean forward pass.

What the APGD attacks return: only images the model still classifies correctly are
attacked (by each restart and each target class, as AutoAttack), so an image that is
misclassified without perturbation is returned unchanged and accuracy under attack never
exceeds clean accuracy. Among every point an attack evaluated (the clean image included),
each sample keeps the strongest by the PGD rule above (misclassified first, then the
larger cross-entropy): the outcome's ``loss`` is always the cross-entropy, also for
``apgd-t``. ``apgd-ensemble`` is AutoAttack's rule restricted to its two APGD attacks: a
sample counts as robust only if both APGD-CE and APGD-T fail on it. FAB-T and Square,
the other two attacks of AutoAttack's standard version, are **not** included, so it is
an upper bound on AutoAttack's robust accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selectivity.core.evalmode import frozen_eval, frozen_train

__all__ = [
    "ATTACKS",
    "NORMS",
    "AttackOutcome",
    "AttackAccuracy",
    "APGD_TARGET_CLASSES",
    "fgsm",
    "pgd",
    "apgd_ce",
    "apgd_t",
    "apgd_ensemble",
    "apgd_checkpoints",
    "dlr_loss",
    "targeted_dlr_loss",
    "attack",
    "attack_outcome",
    "accuracy_under_attack",
    "adversarial_training_batch",
    "BN_MODES",
]

#: Norms of the threat model: ``"linf"`` (max per-pixel change) and ``"l2"`` (Euclidean
#: norm of the whole perturbation of one image).
NORMS = ("linf", "l2")
SELECTS = ("best", "last")

# Smallest gradient / perturbation norm used as a divisor (foolbox uses the same).
_TINY = 1e-12


@dataclass(frozen=True)
class AttackOutcome:
    """Adversarial images with the model's verdict on them.

    Attributes
    ----------
    x_adv : Tensor
        ``(N, ...)`` adversarial images in [0, 1].
    loss : Tensor
        ``(N,)`` cross-entropy of each adversarial image.
    correct : Tensor
        ``(N,)`` bool: the model still predicts the true label.
    """

    x_adv: Tensor
    loss: Tensor
    correct: Tensor


@dataclass(frozen=True)
class AttackAccuracy:
    """Accuracy under one attack at one epsilon, over all streamed batches.

    Attributes
    ----------
    attack : str
    epsilon : float
    correct : int
        Images still classified correctly after the attack.
    clean_correct : int
        Images classified correctly without perturbation.
    total : int
    """

    attack: str
    epsilon: float
    correct: int
    clean_correct: int
    total: int

    @property
    def accuracy(self) -> float:
        """Accuracy under attack, ``correct / total`` (NaN when no image was seen)."""
        return self.correct / self.total if self.total else math.nan

    @property
    def clean_accuracy(self) -> float:
        """Accuracy without perturbation (NaN when no image was seen)."""
        return self.clean_correct / self.total if self.total else math.nan


# --------------------------------------------------------------------------- checks
def _check_epsilon(epsilon: float, name: str = "epsilon") -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
        raise ValueError(f"{name} must be a finite number >= 0, got {epsilon!r}")
    eps = float(epsilon)
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {epsilon!r}")
    return eps


def _check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


def _check_inputs(x: Tensor, y: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() < 2 or not x.is_floating_point():
        raise ValueError("x must be a floating-point tensor of shape (N, ...) in [0, 1]")
    if not isinstance(y, Tensor) or y.shape != x.shape[:1] or y.is_floating_point():
        raise ValueError(f"y must be an integer tensor of shape ({x.shape[0]},), got {tuple(y.shape)}")
    if x.numel() and (torch.isnan(x).any() or x.min() < 0 or x.max() > 1):
        raise ValueError("x must hold pixel values in [0, 1] (pass mean/std to normalise inside)")


def _normaliser(
    x: Tensor,
    mean: Sequence[float] | Tensor | None,
    std: Sequence[float] | Tensor | None,
    check_values: bool = True,
) -> Callable[[Tensor], Tensor]:
    # check_values=False skips the std > 0 check, which reads a value back from the device.
    if mean is None and std is None:
        return lambda t: t
    if mean is None or std is None:
        raise ValueError("mean and std must be given together (per-channel, 0-1 scale)")
    if x.dim() != 4:
        raise ValueError(f"mean/std need images of shape (N, C, H, W), got {tuple(x.shape)}")
    c = x.shape[1]
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(-1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(-1)
    if m.numel() != c or s.numel() != c or (check_values and not bool((s > 0).all())):
        raise ValueError(f"mean and std must hold {c} values (one per channel) with std > 0")
    m, s = m.view(1, c, 1, 1), s.view(1, c, 1, 1)  # broadcast over (N, C, H, W)
    return lambda t: (t - m) / s


def _per_sample_norm(t: Tensor) -> Tensor:
    """L2 norm of each sample, shaped to broadcast against ``t``: ``(N, 1, ..., 1)``."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def _project(delta: Tensor, eps: float, norm: str) -> Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    factor = (eps / _per_sample_norm(delta).clamp_min(_TINY)).clamp(max=1.0)
    return delta * factor


def _random_start(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """A uniform random point of the epsilon-ball around ``x``, clipped to [0, 1]."""
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        delta = (2 * u - 1) * eps
    else:
        # Uniform in the L2 ball: a uniform direction times radius eps * U^(1/d).
        d = x[0].numel()
        g = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        r = torch.rand((x.shape[0],), generator=generator, dtype=x.dtype, device=x.device) ** (1.0 / d)
        delta = g / _per_sample_norm(g).clamp_min(_TINY) * (eps * r).view(-1, *([1] * (x.dim() - 1)))
    return (x + delta).clamp(0.0, 1.0)


def _stronger(loss_new: Tensor, wrong_new: Tensor, loss_old: Tensor, wrong_old: Tensor) -> Tensor:
    """Per sample: is the new candidate stronger (misclassified first, then loss)?"""
    return (wrong_new & ~wrong_old) | ((wrong_new == wrong_old) & (loss_new > loss_old))


def _keep(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
    return torch.where(mask.view(-1, *([1] * (new.dim() - 1))), new, old)


def _iterate(
    evaluate: Callable[[Tensor], tuple[Tensor, Tensor]],
    x0: Tensor,
    eps: float,
    norm: str,
    steps: int,
    step_size: float,
    random_start: bool,
    generator: torch.Generator | None,
    observe: Callable[[Tensor, Tensor, Tensor], None] | None = None,
) -> Tensor:
    """One PGD restart from ``x0``: the final iterate (detached).

    ``evaluate(x) -> (loss (N,), wrong (N,))`` is the model's loss on ``x``;
    ``observe(x_t, loss, wrong)`` sees every iterate before its step (``select="best"``).
    The one PGD loop of the package: attacks and adversarial training both run it.
    """
    xt = _random_start(x0, eps, norm, generator) if random_start else x0.clone()
    for _ in range(steps):
        xt.requires_grad_(True)
        loss, wrong = evaluate(xt)
        # Summed loss: each sample's gradient undiluted by 1/N (its sign and direction
        # are those of the mean loss's gradient).
        (grad,) = torch.autograd.grad(loss.sum(), xt)
        if observe is not None:
            observe(xt, loss, wrong)
        xt = xt.detach()
        if norm == "linf":
            direction = grad.sign()
        else:
            direction = grad / _per_sample_norm(grad).clamp_min(_TINY)
        xt = x0 + _project(xt + step_size * direction - x0, eps, norm)
        xt = xt.clamp(0.0, 1.0)
    return xt


def _run(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: str,
    steps: int,
    step_size: float,
    random_start: bool,
    restarts: int,
    select: str,
    mean: Sequence[float] | Tensor | None,
    std: Sequence[float] | Tensor | None,
    generator: torch.Generator | None,
) -> AttackOutcome:
    normalise = _normaliser(x, mean, std)
    x0 = x.detach()
    best: AttackOutcome | None = None

    def evaluate(xt: Tensor) -> tuple[Tensor, Tensor]:
        logits = model(normalise(xt))
        return F.cross_entropy(logits, y, reduction="none"), logits.argmax(1) != y

    def merge(cur: AttackOutcome | None, xt: Tensor, loss: Tensor, wrong: Tensor) -> AttackOutcome:
        loss, wrong = loss.detach(), wrong.detach()
        if cur is None:
            return AttackOutcome(xt.detach(), loss, ~wrong)
        better = _stronger(loss, wrong, cur.loss, ~cur.correct)
        return AttackOutcome(
            _keep(better, xt.detach(), cur.x_adv),
            torch.where(better, loss, cur.loss),
            torch.where(better, ~wrong, cur.correct),
        )

    with frozen_eval(model):
        for _ in range(restarts):
            run_best: list[AttackOutcome | None] = [None]  # this restart's strongest iterates

            def observe(
                xt: Tensor, loss: Tensor, wrong: Tensor, run_best: list[AttackOutcome | None] = run_best
            ) -> None:
                run_best[0] = merge(run_best[0], xt, loss, wrong)

            xt = _iterate(
                evaluate,
                x0,
                eps,
                norm,
                steps,
                step_size,
                random_start,
                generator,
                observe if select == "best" else None,
            )
            with torch.no_grad():
                loss, wrong = evaluate(xt)
            final = merge(run_best[0], xt, loss, wrong)
            best = final if best is None else merge(best, final.x_adv, final.loss, ~final.correct)
    assert best is not None  # restarts >= 1 is checked by the callers
    return best


def _check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


# --------------------------------------------------------------------------- public
def _pgd_outcome(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilon: float,
    *,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    select: str = "best",
    mean: Sequence[float] | Tensor | None = None,
    std: Sequence[float] | Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackOutcome:
    eps = _check_epsilon(epsilon)
    _check_norm(norm)
    _check_int("steps", steps, 1)
    _check_int("restarts", restarts, 1)
    if select not in SELECTS:
        raise ValueError(f"select must be one of {SELECTS}, got {select!r}")
    alpha = 2.5 * eps / steps if step_size is None else _check_epsilon(step_size, "step_size")
    _check_inputs(x, y)
    return _run(model, x, y, eps, norm, steps, alpha, random_start, restarts, select, mean, std, generator)


def _fgsm_outcome(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilon: float,
    *,
    norm: str = "linf",
    mean: Sequence[float] | Tensor | None = None,
    std: Sequence[float] | Tensor | None = None,
) -> AttackOutcome:
    # FGSM is one PGD step of size epsilon from x itself, keeping that step's image.
    return _pgd_outcome(
        model,
        x,
        y,
        epsilon,
        norm=norm,
        steps=1,
        step_size=epsilon,
        random_start=False,
        restarts=1,
        select="last",
        mean=mean,
        std=std,
    )


def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilon: float,
    *,
    norm: str = "linf",
    mean: Sequence[float] | Tensor | None = None,
    std: Sequence[float] | Tensor | None = None,
) -> Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015), one step of size epsilon.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits ``(N, K)``.
    x : Tensor
        ``(N, C, H, W)`` images in [0, 1].
    y : Tensor
        ``(N,)`` true labels.
    epsilon : float
        Perturbation budget (>= 0) in [0, 1] pixel units.
    norm : {"linf", "l2"}
        ``"linf"``: ``x + eps * sign(g)``; ``"l2"``: ``x + eps * g / ||g||_2``
        (the fast gradient method). Both clipped to [0, 1].
    mean, std : sequence of float or Tensor, optional
        Per-channel normalisation the model expects (0-1 scale), applied inside.

    Returns
    -------
    Tensor
        ``(N, C, H, W)`` adversarial images, detached.

    Raises
    ------
    ValueError
        Negative or NaN epsilon, unknown norm, malformed inputs.
    """
    return _fgsm_outcome(model, x, y, epsilon, norm=norm, mean=mean, std=std).x_adv


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilon: float,
    *,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    select: str = "best",
    mean: Sequence[float] | Tensor | None = None,
    std: Sequence[float] | Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient descent on the loss (Madry et al. 2018).

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits ``(N, K)``.
    x : Tensor
        ``(N, C, H, W)`` images in [0, 1].
    y : Tensor
        ``(N,)`` true labels.
    epsilon : float
        Radius (>= 0) of the threat ball in [0, 1] pixel units.
    norm : {"linf", "l2"}
        Threat-model norm.
    steps : int
        Gradient steps per restart (>= 1). Costs ``steps`` forward+backward passes and
        one forward pass per restart.
    step_size : float, optional
        Step length in pixel units; default ``2.5 * epsilon / steps``.
    random_start : bool
        Start from a uniform random point of the ball (clipped to [0, 1]).
    restarts : int
        Independent runs (>= 1); the per-sample strongest result is kept.
    select : {"best", "last"}
        Return each sample's strongest iterate (``"best"``) or the final iterate of
        each restart (``"last"``); see the module docstring.
    mean, std : sequence of float or Tensor, optional
        Per-channel normalisation the model expects (0-1 scale), applied inside.
    generator : torch.Generator, optional
        Source of the random starts (on ``x``'s device), for reproducibility.

    Returns
    -------
    Tensor
        ``(N, C, H, W)`` adversarial images in [0, 1], within epsilon of ``x``, detached.

    Raises
    ------
    ValueError
        Negative or NaN epsilon/step size, unknown norm or select, steps or restarts
        < 1, malformed inputs.
    """
    return _pgd_outcome(
        model,
        x,
        y,
        epsilon,
        norm=norm,
        steps=steps,
        step_size=step_size,
        random_start=random_start,
        restarts=restarts,
        select=select,
        mean=mean,
        std=std,
        generator=generator,
    ).x_adv


#: Batch-norm modes of :func:`adversarial_training_batch`.
BN_MODES = ("train", "eval")


def adversarial_training_batch(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilon: float,
    *,
    norm: str = "linf",
    steps: int = 7,
    step_size: float | None = None,
    random_start: bool = True,
    mean: Sequence[float] | Tensor | None = None,
    std: Sequence[float] | Tensor | None = None,
    generator: torch.Generator | None = None,
    bn: str = "train",
) -> Tensor:
    """The images PGD adversarial training (Madry et al. 2018) trains on: PGD's last iterate.

    The PGD loop of :func:`pgd` (one restart, ``select="last"``, no final evaluation),
    for a training step:

    - ``bn="train"``: the model keeps its mode, so a model in train mode attacks with
      each batch's own batch-norm statistics, as in the adversarial-training literature;
      the attack's forward passes leave the running statistics unchanged
      (:func:`~selectivity.core.evalmode.frozen_train`), so only the training step's own
      forward pass on the returned images updates them. ``bn="eval"``: running
      statistics (:func:`~selectivity.core.evalmode.frozen_eval`, as :func:`pgd`).
    - The tensors are not checked for NaN or range (that would read values back from the
      device every step); ``x`` must hold pixels in [0, 1].

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits ``(N, K)``; no parameter gradient is created or changed.
    x : Tensor
        ``(N, C, H, W)`` images in [0, 1].
    y : Tensor
        ``(N,)`` labels.
    epsilon : float
        Radius of the threat ball in [0, 1] pixel units.
    norm : {"linf", "l2"}
    steps : int
        PGD steps (>= 1): ``steps`` forward and backward passes.
    step_size : float, optional
        Step length in pixel units; default ``2.5 * epsilon / steps``.
    random_start : bool
        Start at a uniform random point of the ball.
    mean, std : sequence of float or Tensor, optional
        Per-channel normalisation the model expects, applied inside.
    generator : torch.Generator, optional
        Source of the random start (on ``x``'s device).
    bn : {"train", "eval"}
        Batch-norm statistics while attacking (see above).

    Returns
    -------
    Tensor
        ``(N, C, H, W)`` images in [0, 1] within epsilon of ``x``, detached.
    """
    eps = _check_epsilon(epsilon)
    _check_norm(norm)
    _check_int("steps", steps, 1)
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
    alpha = 2.5 * eps / steps if step_size is None else _check_epsilon(step_size, "step_size")
    if not isinstance(x, Tensor) or x.dim() < 2 or not isinstance(y, Tensor) or y.shape != x.shape[:1]:
        raise ValueError("x must be a tensor (N, ...) and y its (N,) labels")
    normalise = _normaliser(x, mean, std, check_values=False)  # no read-back per training step

    def evaluate(xt: Tensor) -> tuple[Tensor, Tensor]:
        logits = model(normalise(xt))
        return F.cross_entropy(logits, y, reduction="none"), logits.argmax(1) != y

    with frozen_train(model) if bn == "train" else frozen_eval(model):
        return _iterate(evaluate, x.detach(), eps, norm, steps, alpha, random_start, generator)


# --------------------------------------------------------------------------- APGD
#: Default number of target classes of APGD-T (AutoAttack's standard version).
APGD_TARGET_CLASSES = 9
# p_1 and the p_j decrements in hundredths: integer arithmetic keeps ceil(p_j * steps) exact.
_P1, _P_DECREMENT, _P_MIN_STEP = 22, 3, 6


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations ``w_j = ceil(p_j * steps)`` at which APGD may halve its step size.

    ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, for
    every ``p_j <= 1``; a ``w_j`` equal to the one before it is dropped (short runs).

    Parameters
    ----------
    steps : int
        ``N_iter`` (>= 1).

    Returns
    -------
    list of int
        ``[w_0 = 0, w_1, ...]``, increasing; ``[0, 22, 41, 57, 70, 80, 87, 93, 99]`` for 100.
    """
    _check_int("steps", steps, 1)
    ps = [0, _P1]  # hundredths
    while True:
        nxt = ps[-1] + max(ps[-1] - ps[-2] - _P_DECREMENT, _P_MIN_STEP)
        if nxt > 100:
            break
        ps.append(nxt)
    out: list[int] = []
    for p in ps:
        w = -(-p * steps // 100)  # ceil(p / 100 * steps) in integers
        if not out or w > out[-1]:
            out.append(w)
    return out


def _check_logits(logits: Tensor, y: Tensor, min_classes: int, what: str) -> None:
    if not isinstance(logits, Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError("logits must be a floating-point tensor of shape (N, K)")
    if logits.shape[1] < min_classes:
        raise ValueError(f"{what} needs at least {min_classes} classes, got {logits.shape[1]}")
    if not isinstance(y, Tensor) or y.shape != logits.shape[:1] or y.is_floating_point():
        raise ValueError(f"labels must be an integer tensor of shape ({logits.shape[0]},)")


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of logits ratio (Croce & Hein 2020), untargeted.

    ``DLR(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`` with
    ``z_pi1 >= z_pi2 >= ...`` the sorted logits: invariant to shifting and scaling the
    logits; positive exactly when the sample is misclassified.

    Parameters
    ----------
    logits : Tensor
        ``(N, K)``, ``K >= 3``.
    y : Tensor
        ``(N,)`` true labels.

    Returns
    -------
    Tensor
        ``(N,)`` loss (larger = more adversarial).
    """
    _check_logits(logits, y, 3, "the DLR loss")
    srt = logits.sort(dim=1, descending=True).values  # (N, K), z_pi1 first
    z_y = logits.gather(1, y[:, None])[:, 0]
    top_is_y = logits.argmax(1) == y
    other = torch.where(top_is_y, srt[:, 1], srt[:, 0])  # max over i != y
    return -(z_y - other) / (srt[:, 0] - srt[:, 2] + 1e-12)


def targeted_dlr_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR loss (Croce & Hein 2020): ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``.

    Parameters
    ----------
    logits : Tensor
        ``(N, K)``, ``K >= 4``.
    y : Tensor
        ``(N,)`` true labels.
    target : Tensor
        ``(N,)`` target classes.

    Returns
    -------
    Tensor
        ``(N,)`` loss (larger = closer to the target overtaking the true class).
    """
    _check_logits(logits, y, 4, "the targeted DLR loss")
    if not isinstance(target, Tensor) or target.shape != y.shape or target.is_floating_point():
        raise ValueError(f"target must be an integer tensor of shape ({y.shape[0]},)")
    srt = logits.sort(dim=1, descending=True).values  # (N, K)
    z_y = logits.gather(1, y[:, None])[:, 0]
    z_t = logits.gather(1, target[:, None])[:, 0]
    return -(z_y - z_t) / (srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3]) + 1e-12)


def _apgd_start(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """The reference's random start: ``x + eps * t / ||t||`` (a point of the sphere), clipped."""
    if norm == "linf":
        t = 2 * torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) - 1
        scale = t.flatten(1).abs().amax(1).view(-1, *([1] * (x.dim() - 1)))
    else:
        t = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        scale = _per_sample_norm(t)
    return (x + eps * t / scale.clamp_min(_TINY)).clamp(0.0, 1.0)


def _merge(cur: AttackOutcome, x_new: Tensor, loss: Tensor, wrong: Tensor) -> AttackOutcome:
    """Per sample, the stronger of ``cur`` and the new candidate (misclassified, then loss)."""
    better = _stronger(loss, wrong, cur.loss, ~cur.correct)
    return AttackOutcome(
        _keep(better, x_new, cur.x_adv),
        torch.where(better, loss, cur.loss),
        torch.where(better, ~wrong, cur.correct),
    )


def _merge_at(full: AttackOutcome, idx: Tensor, part: AttackOutcome) -> AttackOutcome:
    """``full`` with the samples ``idx`` replaced by the stronger of them and ``part``."""
    cur = AttackOutcome(full.x_adv[idx], full.loss[idx], full.correct[idx])
    sub = _merge(cur, part.x_adv, part.loss, ~part.correct)
    x_adv, loss, correct = full.x_adv.clone(), full.loss.clone(), full.correct.clone()
    x_adv[idx], loss[idx], correct[idx] = sub.x_adv, sub.loss, sub.correct
    return AttackOutcome(x_adv, loss, correct)


def _apgd_run(
    forward: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    target: Tensor | None,
    eps: float,
    norm: str,
    steps: int,
    rho: float,
    momentum: float,
    generator: torch.Generator | None,
) -> AttackOutcome:
    """One APGD run on ``x`` ``(B, ...)``: the strongest point it evaluated, per sample.

    ``target`` None: maximise the cross-entropy; else the targeted DLR loss towards it.
    """
    view = (-1,) + (1,) * (x.dim() - 1)  # per-sample scalars broadcast over (B, ...)

    def evaluate(xt: Tensor, need_grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Objective, cross-entropy, misclassified and (optionally) the objective's gradient."""
        with torch.set_grad_enabled(need_grad):
            xt = xt.requires_grad_(need_grad)
            logits = forward(xt)
            ce = F.cross_entropy(logits, y, reduction="none")
            obj = ce if target is None else targeted_dlr_loss(logits, y, target)
            # Summed objective: each sample's gradient is its own (eval mode).
            grad = torch.autograd.grad(obj.sum(), xt)[0] if need_grad else None
        return obj.detach(), ce.detach(), (logits.argmax(1) != y).detach(), grad

    def step(xt: Tensor, grad: Tensor, eta: Tensor) -> Tensor:
        d = grad.sign() if norm == "linf" else grad / _per_sample_norm(grad).clamp_min(_TINY)
        return project(xt + eta * d)

    def project(xt: Tensor) -> Tensor:
        return (x + _project(xt - x, eps, norm)).clamp(0.0, 1.0)

    checks = apgd_checkpoints(steps)[1:]
    x_cur = _apgd_start(x, eps, norm, generator)
    f_cur, ce, wrong, grad = evaluate(x_cur, True)
    assert grad is not None
    best = AttackOutcome(x_cur.detach(), ce, ~wrong)
    x_cur = x_cur.detach()
    x_prev = x_cur
    f_max, x_max, g_max = f_cur, x_cur, grad
    eta = torch.full((x.shape[0],), 2.0 * eps, dtype=x.dtype, device=x.device).view(view)
    increases = torch.zeros_like(f_cur)  # loss increases since the last checkpoint
    f_max_last = f_max  # f_max at the last checkpoint (w_0: the start's loss)
    halved_last = torch.zeros_like(wrong)  # step size halved at the last checkpoint
    last_check = 0
    for k in range(steps):
        a = 1.0 if k == 0 else momentum
        z = step(x_cur, grad, eta)
        x_new = project(x_cur + a * (z - x_cur) + (1 - a) * (x_cur - x_prev))
        x_prev, x_cur = x_cur, x_new
        final = k == steps - 1
        f_new, ce, wrong, g_new = evaluate(x_cur, not final)
        x_cur = x_cur.detach()
        best = _merge(best, x_cur, ce, wrong)
        if final:
            break
        assert g_new is not None
        grad = g_new
        increases = increases + (f_new > f_cur).to(increases.dtype)
        f_cur = f_new
        up = f_new > f_max
        f_max = torch.where(up, f_new, f_max)
        x_max, g_max = _keep(up, x_cur, x_max), _keep(up, grad, g_max)
        if k + 1 in checks:
            w = k + 1
            cond1 = increases < rho * (w - last_check)
            cond2 = ~halved_last & (f_max <= f_max_last)  # f_max never falls: "has not grown"
            halve = cond1 | cond2
            eta = torch.where(halve.view(view), eta / 2, eta)
            x_cur, grad = _keep(halve, x_max, x_cur), _keep(halve, g_max, grad)
            f_cur = torch.where(halve, f_max, f_cur)
            halved_last, f_max_last, last_check = halve, f_max, w
            increases = torch.zeros_like(increases)
    return best


def _check_fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _apgd_outcome(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilon: float,
    *,
    loss: str,
    start: AttackOutcome | None = None,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    n_target_classes: int = APGD_TARGET_CLASSES,
    rho: float = 0.75,
    momentum: float = 0.75,
    mean: Sequence[float] | Tensor | None = None,
    std: Sequence[float] | Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackOutcome:
    """APGD-CE (``loss="ce"``) or APGD-T (``loss="dlr-targeted"``), continuing ``start``."""
    eps = _check_epsilon(epsilon)
    _check_norm(norm)
    _check_int("steps", steps, 1)
    _check_int("restarts", restarts, 1)
    _check_int("n_target_classes", n_target_classes, 1)
    rho, momentum = _check_fraction("rho", rho), _check_fraction("momentum", momentum)
    _check_inputs(x, y)
    normalise = _normaliser(x, mean, std)
    x0 = x.detach()

    def forward(xt: Tensor) -> Tensor:
        return model(normalise(xt))

    with frozen_eval(model):
        with torch.no_grad():
            logits = forward(x0)
        out = start
        if out is None:
            out = AttackOutcome(
                x0.clone(), F.cross_entropy(logits, y, reduction="none"), logits.argmax(1) == y
            )
        if loss == "ce":
            targets: list[Tensor | None] = [None]
        else:
            k = logits.shape[1]
            if k < 4:
                raise ValueError(f"apgd-t needs at least 4 classes (targeted DLR loss), got {k}")
            ranked = logits.argsort(dim=1, descending=True)  # (N, K): class of rank 1, 2, ...
            targets = [ranked[:, r] for r in range(1, 1 + min(n_target_classes, k - 1))]
        for target in targets:
            for _ in range(restarts):
                idx = torch.nonzero(out.correct).flatten()  # only samples not yet broken
                if idx.numel() == 0:
                    return out
                part = _apgd_run(
                    forward,
                    x0[idx],
                    y[idx],
                    None if target is None else target[idx],
                    eps,
                    norm,
                    steps,
                    rho,
                    momentum,
                    generator,
                )
                out = _merge_at(out, idx, part)
    return out


def _apgd_ce_outcome(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilon: float,
    *,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    rho: float = 0.75,
    momentum: float = 0.75,
    mean: Sequence[float] | Tensor | None = None,
    std: Sequence[float] | Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackOutcome:
    return _apgd_outcome(
        model,
        x,
        y,
        epsilon,
        loss="ce",
        norm=norm,
        steps=steps,
        restarts=restarts,
        rho=rho,
        momentum=momentum,
        mean=mean,
        std=std,
        generator=generator,
    )


def _apgd_t_outcome(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilon: float,
    *,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    n_target_classes: int = APGD_TARGET_CLASSES,
    rho: float = 0.75,
    momentum: float = 0.75,
    mean: Sequence[float] | Tensor | None = None,
    std: Sequence[float] | Tensor | None = None,
    generator: torch.Generator | None = None,
    start: AttackOutcome | None = None,
) -> AttackOutcome:
    return _apgd_outcome(
        model,
        x,
        y,
        epsilon,
        loss="dlr-targeted",
        start=start,
        norm=norm,
        steps=steps,
        restarts=restarts,
        n_target_classes=n_target_classes,
        rho=rho,
        momentum=momentum,
        mean=mean,
        std=std,
        generator=generator,
    )


def _apgd_ensemble_outcome(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilon: float,
    *,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    n_target_classes: int = APGD_TARGET_CLASSES,
    rho: float = 0.75,
    momentum: float = 0.75,
    mean: Sequence[float] | Tensor | None = None,
    std: Sequence[float] | Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackOutcome:
    kw: dict[str, Any] = {
        "norm": norm,
        "steps": steps,
        "restarts": restarts,
        "rho": rho,
        "momentum": momentum,
        "mean": mean,
        "std": std,
        "generator": generator,
    }
    ce = _apgd_ce_outcome(model, x, y, epsilon, **kw)
    return _apgd_t_outcome(model, x, y, epsilon, n_target_classes=n_target_classes, start=ce, **kw)


def apgd_ce(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilon: float,
    *,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    rho: float = 0.75,
    momentum: float = 0.75,
    mean: Sequence[float] | Tensor | None = None,
    std: Sequence[float] | Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """APGD on the cross-entropy, untargeted (APGD-CE, Croce & Hein 2020).

    The algorithm and what is returned: see the module docstring.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits ``(N, K)``.
    x : Tensor
        ``(N, C, H, W)`` images in [0, 1].
    y : Tensor
        ``(N,)`` true labels.
    epsilon : float
        Radius (>= 0) of the threat ball in [0, 1] pixel units.
    norm : {"linf", "l2"}
        Threat-model norm.
    steps : int
        Iterations per run (the paper's ``N_iter``, default 100): ``steps``
        forward+backward passes and one forward pass per run.
    restarts : int
        Runs from independent random starts (default 1); each attacks only the samples
        that are still classified correctly.
    rho : float
        Condition 1's share of loss-increasing steps, in [0, 1] (default 0.75).
    momentum : float
        ``alpha`` of the update, in [0, 1] (default 0.75).
    mean, std : sequence of float or Tensor, optional
        Per-channel normalisation the model expects (0-1 scale), applied inside.
    generator : torch.Generator, optional
        Source of the random starts (on ``x``'s device), for reproducibility.

    Returns
    -------
    Tensor
        ``(N, C, H, W)`` adversarial images in [0, 1], within epsilon of ``x``, detached;
        images misclassified without perturbation are returned unchanged.

    Raises
    ------
    ValueError
        Negative or NaN epsilon, unknown norm, steps or restarts < 1, rho or momentum
        outside [0, 1], malformed inputs.
    """
    return _apgd_ce_outcome(
        model,
        x,
        y,
        epsilon,
        norm=norm,
        steps=steps,
        restarts=restarts,
        rho=rho,
        momentum=momentum,
        mean=mean,
        std=std,
        generator=generator,
    ).x_adv


def apgd_t(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilon: float,
    *,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    n_target_classes: int = APGD_TARGET_CLASSES,
    rho: float = 0.75,
    momentum: float = 0.75,
    mean: Sequence[float] | Tensor | None = None,
    std: Sequence[float] | Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Targeted APGD on the targeted DLR loss (APGD-T, Croce & Hein 2020).

    One attack (``restarts`` runs) per target class: the classes ranked 2nd, 3rd, ...,
    ``(n_target_classes + 1)``-th by the clean logits, each attacking the samples no
    earlier target broke. Parameters as :func:`apgd_ce`, plus:

    Parameters
    ----------
    n_target_classes : int
        Target classes (>= 1; default 9, AutoAttack's standard version). At most
        ``K - 1`` exist; a larger value uses them all.

    Returns
    -------
    Tensor
        ``(N, C, H, W)`` adversarial images, as :func:`apgd_ce`.

    Raises
    ------
    ValueError
        As :func:`apgd_ce`; also ``n_target_classes < 1`` and fewer than 4 classes (the
        loss needs the 4th largest logit).
    """
    return _apgd_t_outcome(
        model,
        x,
        y,
        epsilon,
        norm=norm,
        steps=steps,
        restarts=restarts,
        n_target_classes=n_target_classes,
        rho=rho,
        momentum=momentum,
        mean=mean,
        std=std,
        generator=generator,
    ).x_adv


def apgd_ensemble(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilon: float,
    *,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    n_target_classes: int = APGD_TARGET_CLASSES,
    rho: float = 0.75,
    momentum: float = 0.75,
    mean: Sequence[float] | Tensor | None = None,
    std: Sequence[float] | Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """AutoAttack-style worst case of APGD-CE and APGD-T, per sample.

    APGD-CE first; APGD-T then attacks the samples it did not break, so a sample stays
    correct only if both attacks fail on it (AutoAttack's rule). FAB-T and Square, the
    other two attacks of AutoAttack's standard version, are **not** run: the accuracy
    under this attack is an upper bound on AutoAttack's. Parameters as :func:`apgd_t`
    (both attacks get the same ``steps``, ``restarts``, ``rho``, ``momentum``; the
    generator's draws are consumed by APGD-CE first).

    Returns
    -------
    Tensor
        ``(N, C, H, W)`` adversarial images, as :func:`apgd_ce`.
    """
    return _apgd_ensemble_outcome(
        model,
        x,
        y,
        epsilon,
        norm=norm,
        steps=steps,
        restarts=restarts,
        n_target_classes=n_target_classes,
        rho=rho,
        momentum=momentum,
        mean=mean,
        std=std,
        generator=generator,
    ).x_adv


#: Attack functions by name, as :func:`attack` accepts them.
ATTACKS: dict[str, Callable[..., Tensor]] = {
    "fgsm": fgsm,
    "pgd": pgd,
    "apgd-ce": apgd_ce,
    "apgd-t": apgd_t,
    "apgd-ensemble": apgd_ensemble,
}
_OUTCOMES: dict[str, Callable[..., AttackOutcome]] = {
    "fgsm": _fgsm_outcome,
    "pgd": _pgd_outcome,
    "apgd-ce": _apgd_ce_outcome,
    "apgd-t": _apgd_t_outcome,
    "apgd-ensemble": _apgd_ensemble_outcome,
}


def _check_name(name: str) -> str:
    if name not in ATTACKS:
        raise ValueError(f"attack must be one of {tuple(ATTACKS)}, got {name!r}")
    return name


def attack(name: str, model: nn.Module, x: Tensor, y: Tensor, epsilon: float, **kwargs: object) -> Tensor:
    """Run the attack called ``name`` (a key of :data:`ATTACKS`); see :func:`fgsm`, :func:`pgd`, :func:`apgd_ce`, ...

    Returns
    -------
    Tensor
        ``(N, C, H, W)`` adversarial images.
    """
    return ATTACKS[_check_name(name)](model, x, y, epsilon, **kwargs)


def attack_outcome(
    name: str, model: nn.Module, x: Tensor, y: Tensor, epsilon: float, **kwargs: object
) -> AttackOutcome:
    """Like :func:`attack`, also returning each image's loss and whether it is still correct.

    The verdict comes from the forward pass the attack makes anyway, so it costs nothing extra.
    """
    return _OUTCOMES[_check_name(name)](model, x, y, epsilon, **kwargs)


def accuracy_under_attack(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    name: str,
    epsilons: Sequence[float],
    *,
    mean: Sequence[float] | Tensor | None = None,
    std: Sequence[float] | Tensor | None = None,
    device: torch.device | str | None = None,
    **kwargs: object,
) -> list[AttackAccuracy]:
    """Stream ``(x, y)`` batches through an attack at several epsilons; count accuracy.

    Parameters
    ----------
    model : nn.Module
        Classifier (already on ``device``).
    batches : iterable of (Tensor, Tensor)
        ``(B, C, H, W)`` images in [0, 1] and ``(B,)`` labels; consumed once.
    name : str
        Attack name, a key of :data:`ATTACKS`.
    epsilons : sequence of float
        Budgets to evaluate, each >= 0.
    mean, std : sequence of float or Tensor, optional
        Per-channel normalisation the model expects (0-1 scale), applied inside.
    device : torch.device or str, optional
        Where batches are moved before attacking; default: the model's device.
    **kwargs
        Passed to the attack (``norm``, ``steps``, ``restarts``, ...).

    Returns
    -------
    list of AttackAccuracy
        One per epsilon, in the given order.
    """
    _check_name(name)
    eps_list = [_check_epsilon(e) for e in epsilons]
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    correct = [0] * len(eps_list)
    clean_correct = total = 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with frozen_eval(model), torch.no_grad():
            normalise = _normaliser(x, mean, std)
            clean_correct += int((model(normalise(x)).argmax(1) == y).sum())
        total += int(y.numel())
        for i, eps in enumerate(eps_list):
            out = attack_outcome(name, model, x, y, eps, mean=mean, std=std, **kwargs)
            correct[i] += int(out.correct.sum())
    return [AttackAccuracy(name, e, c, clean_correct, total) for e, c in zip(eps_list, correct)]
