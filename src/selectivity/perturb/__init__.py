"""Pure transforms of input batches: adversarial attacks."""

from .attacks import (
    ATTACKS,
    NORMS,
    AttackAccuracy,
    AttackOutcome,
    accuracy_under_attack,
    attack,
    attack_outcome,
    fgsm,
    pgd,
)

__all__ = [
    "ATTACKS",
    "NORMS",
    "AttackAccuracy",
    "AttackOutcome",
    "accuracy_under_attack",
    "attack",
    "attack_outcome",
    "fgsm",
    "pgd",
]
