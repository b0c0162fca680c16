"""Summaries of robustness curves and sanity checks of attack results (numbers in, numbers out).

Definitions
-----------
**Area under the accuracy-epsilon curve.** The curve is the points ``(0, a_clean)``,
``(eps_1, a_1)``, ..., ``(eps_max, a_max)`` (epsilons increasing), joined by straight
lines; its area by the trapezoid rule is

    AUC = sum_i (eps_{i+1} - eps_i) (a_i + a_{i+1}) / 2         (units: accuracy x epsilon)

and the **relative AUC** is ``AUC / (a_clean * eps_max)``: a model whose accuracy stays
at its clean value over the whole range has area ``a_clean * eps_max`` and scores 1; the
score tends to 0 for one whose accuracy falls to 0 right after epsilon 0 (a curve that
rose above clean accuracy would score above 1). It compares robustness across models of
different clean accuracy; the absolute AUC mixes the two.

**Corruption error (CE), in the style of Hendrycks & Dietterich 2019 (mCE).** With the
error ``E = 1 - accuracy`` of the model ``f`` and of the baseline ``b`` (here the alpha =
0 networks: pass the mean accuracy of their replicates per cell), per corruption ``c``
over its severities ``s``:

    CE_c         = sum_s E^f_{s,c} / sum_s E^b_{s,c}
    relative CE_c = sum_s (E^f_{s,c} - E^f_clean) / sum_s (E^b_{s,c} - E^b_clean)

and ``mCE`` (``relative mCE``) is the unweighted mean of ``CE_c`` over the corruptions.
The baseline itself scores exactly 1; below 1 is more robust than the baseline. A zero
denominator gives NaN for that corruption (and so for the mean).

**Corruption families.** :data:`CORRUPTION_FAMILIES` groups the 15 standard CIFAR-10-C
corruptions as ImageNet-C does (noise, blur, weather, digital) and puts the four extra
types of the CIFAR-10-C release in the family of their namesake: ``speckle_noise`` ->
noise, ``gaussian_blur`` -> blur, ``spatter`` -> weather, ``saturate`` -> digital.

**Gradient-masking sanity checks** (:func:`gradient_masking_checks`; Athalye et al.
2018, Carlini et al. 2019): accuracy under a white-box attack does not rise with epsilon;
it reaches a low value at the largest epsilon; more attack steps never raise it; a
black-box attack is not stronger than the white-box one. Each is a pass/fail with the
numbers that decided it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "STANDARD_CORRUPTIONS",
    "EXTRA_CORRUPTIONS",
    "CORRUPTION_FAMILY_NAMES",
    "CORRUPTION_FAMILIES",
    "RobustnessAUC",
    "CorruptionError",
    "SanityCheck",
    "robustness_auc",
    "corruption_error",
    "relative_corruption_error",
    "family_means",
    "gradient_masking_checks",
]

#: The 15 corruptions of CIFAR-10-C / ImageNet-C that benchmarks average over.
STANDARD_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
#: The four further types of the CIFAR-10-C release (not in the standard average).
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CORRUPTION_FAMILY_NAMES: tuple[str, ...] = ("noise", "blur", "weather", "digital")
#: Family of each of the 19 corruption types of the CIFAR-10-C release.
CORRUPTION_FAMILIES: dict[str, str] = {
    "gaussian_noise": "noise",
    "shot_noise": "noise",
    "impulse_noise": "noise",
    "speckle_noise": "noise",
    "defocus_blur": "blur",
    "glass_blur": "blur",
    "motion_blur": "blur",
    "zoom_blur": "blur",
    "gaussian_blur": "blur",
    "snow": "weather",
    "frost": "weather",
    "fog": "weather",
    "brightness": "weather",
    "spatter": "weather",
    "contrast": "digital",
    "elastic_transform": "digital",
    "pixelate": "digital",
    "jpeg_compression": "digital",
    "saturate": "digital",
}


@dataclass(frozen=True)
class RobustnessAUC:
    """Area under one accuracy-epsilon curve.

    Attributes
    ----------
    area : float
        Trapezoid area from epsilon 0 (clean accuracy) to ``eps_max``.
    relative : float
        ``area / (clean_accuracy * eps_max)``; NaN when the clean accuracy is 0.
    clean_accuracy : float
    eps_max : float
    """

    area: float
    relative: float
    clean_accuracy: float
    eps_max: float


@dataclass(frozen=True)
class CorruptionError:
    """Corruption errors of one model relative to a baseline.

    Attributes
    ----------
    per_corruption : dict of str to float
        ``CE_c`` (or relative ``CE_c``), in the order the corruptions were given.
    mean : float
        Unweighted mean over the corruptions (mCE or relative mCE).
    """

    per_corruption: dict[str, float]
    mean: float


@dataclass(frozen=True)
class SanityCheck:
    """One gradient-masking check.

    Attributes
    ----------
    name : str
        ``"monotone_in_epsilon"``, ``"reaches_threshold"``, ``"more_steps_not_weaker"`` or
        ``"black_box_not_stronger"``.
    passed : bool
    values : dict of str to float
        The numbers that decided it (see :func:`gradient_masking_checks`).
    message : str
        One line for a report.
    """

    name: str
    passed: bool
    values: dict[str, float] = field(default_factory=dict)
    message: str = ""


# --------------------------------------------------------------------------- checks
def _finite(name: str, value: object, lo: float = -math.inf, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or not lo <= v <= hi:
        raise ValueError(f"{name} must be a finite number in [{lo:g}, {hi:g}], got {value!r}")
    return v


def _accuracy(name: str, value: object) -> float:
    return _finite(name, value, 0.0, 1.0)


def _curve(
    epsilons: Sequence[float],
    accuracies: Sequence[float],
    clean_accuracy: float | None,
    need_clean: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(eps, acc)`` float64 arrays, starting at epsilon 0 (the clean accuracy).

    Without an epsilon-0 point or a clean accuracy: an error, or with ``need_clean=False``
    the given points only.
    """
    if len(epsilons) != len(accuracies):
        raise ValueError(f"got {len(epsilons)} epsilons but {len(accuracies)} accuracies")
    eps = np.array([_finite("epsilon", e, 0.0) for e in epsilons], dtype=np.float64)
    acc = np.array([_accuracy("accuracy", a) for a in accuracies], dtype=np.float64)
    if len(np.unique(eps)) != len(eps):
        raise ValueError("epsilons must be distinct")
    order = np.argsort(eps)
    eps, acc = eps[order], acc[order]
    has_zero = len(eps) > 0 and eps[0] == 0
    if clean_accuracy is None:
        if not has_zero and need_clean:
            raise ValueError("give clean_accuracy or an accuracy at epsilon 0")
    else:
        clean = _accuracy("clean_accuracy", clean_accuracy)
        if has_zero:
            if abs(acc[0] - clean) > 1e-12:
                raise ValueError(
                    f"accuracy at epsilon 0 ({acc[0]:g}) differs from clean_accuracy ({clean:g})"
                )
        else:
            eps, acc = np.concatenate([[0.0], eps]), np.concatenate([[clean], acc])
    return eps, acc


# --------------------------------------------------------------------------- curves
def robustness_auc(
    epsilons: Sequence[float], accuracies: Sequence[float], clean_accuracy: float | None = None
) -> RobustnessAUC:
    """Area under accuracy vs epsilon (trapezoid rule from epsilon 0), absolute and relative.

    Parameters
    ----------
    epsilons : sequence of float
        Attack budgets (>= 0, distinct, any order).
    accuracies : sequence of float
        Accuracy in [0, 1] under attack at each epsilon.
    clean_accuracy : float, optional
        Accuracy without perturbation: the curve's value at epsilon 0. May be omitted when
        ``epsilons`` contains 0; when both are given they must agree.

    Returns
    -------
    RobustnessAUC
        ``area`` and ``relative = area / (clean_accuracy * eps_max)`` (module docstring).

    Raises
    ------
    ValueError
        No positive epsilon, negative or non-finite values, accuracies outside [0, 1],
        duplicate epsilons, lengths that differ, no clean accuracy.
    """
    eps, acc = _curve(epsilons, accuracies, clean_accuracy)
    if len(eps) < 2:
        raise ValueError("need at least one epsilon > 0")
    area = float(np.sum(np.diff(eps) * (acc[1:] + acc[:-1]) / 2))
    clean, eps_max = float(acc[0]), float(eps[-1])
    relative = area / (clean * eps_max) if clean > 0 else math.nan
    return RobustnessAUC(area, relative, clean, eps_max)


# --------------------------------------------------------------------------- corruptions
def _cells(name: str, table: Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
    if not isinstance(table, Mapping) or not table:
        raise ValueError(f"{name} must be a non-empty mapping corruption -> accuracies per severity")
    out = {}
    for c, accs in table.items():
        a = np.array([_accuracy(f"{name}[{c!r}]", v) for v in accs], dtype=np.float64)
        if a.size == 0:
            raise ValueError(f"{name}[{c!r}] holds no severity")
        out[c] = a
    return out


def _paired(
    accuracy: Mapping[str, Sequence[float]], baseline: Mapping[str, Sequence[float]]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    a, b = _cells("accuracy", accuracy), _cells("baseline", baseline)
    if set(a) != set(b):
        raise ValueError(
            f"accuracy and baseline must name the same corruptions, got {sorted(a)} and {sorted(b)}"
        )
    for c in a:
        if a[c].shape != b[c].shape:
            raise ValueError(f"{c!r}: {a[c].size} severities for the model, {b[c].size} for the baseline")
    return a, b


def _ratio(num: float, den: float) -> float:
    return num / den if den != 0 else math.nan


def corruption_error(
    accuracy: Mapping[str, Sequence[float]], baseline: Mapping[str, Sequence[float]]
) -> CorruptionError:
    """Hendrycks-style corruption error against a baseline: ``CE_c`` and their mean (mCE).

    Parameters
    ----------
    accuracy : mapping of str to sequence of float
        Per corruption, the model's accuracy at each severity (same order as the baseline).
    baseline : mapping of str to sequence of float
        The same cells for the baseline (the mean over the alpha = 0 replicates).

    Returns
    -------
    CorruptionError
        ``CE_c = sum_s (1 - acc_s) / sum_s (1 - base_s)`` and their unweighted mean.

    Raises
    ------
    ValueError
        Different corruptions or severity counts, accuracies outside [0, 1].
    """
    a, b = _paired(accuracy, baseline)
    per = {c: _ratio(float(np.sum(1 - a[c])), float(np.sum(1 - b[c]))) for c in a}
    return CorruptionError(per, float(np.mean(list(per.values()))))


def relative_corruption_error(
    accuracy: Mapping[str, Sequence[float]],
    clean_accuracy: float,
    baseline: Mapping[str, Sequence[float]],
    baseline_clean_accuracy: float,
) -> CorruptionError:
    """Relative corruption error: the degradation from clean, against the baseline's.

    ``relative CE_c = sum_s (E_{s,c} - E_clean) / sum_s (E^b_{s,c} - E^b_clean)``
    with ``E = 1 - accuracy``; the mean over corruptions is the relative mCE.

    Parameters
    ----------
    accuracy, baseline : mapping of str to sequence of float
        As :func:`corruption_error`.
    clean_accuracy, baseline_clean_accuracy : float
        Accuracy without corruption of the model and of the baseline.

    Returns
    -------
    CorruptionError
    """
    a, b = _paired(accuracy, baseline)
    ec = 1 - _accuracy("clean_accuracy", clean_accuracy)
    bc = 1 - _accuracy("baseline_clean_accuracy", baseline_clean_accuracy)
    per = {c: _ratio(float(np.sum(1 - a[c] - ec)), float(np.sum(1 - b[c] - bc))) for c in a}
    return CorruptionError(per, float(np.mean(list(per.values()))))


def family_means(values: Mapping[str, float]) -> dict[str, float]:
    """Mean of per-corruption values within each family of :data:`CORRUPTION_FAMILIES`.

    Parameters
    ----------
    values : mapping of str to float
        One number per corruption (e.g. mean accuracy over severities, or ``CE_c``).

    Returns
    -------
    dict of str to float
        Family -> mean over the corruptions of that family present in ``values``, in the
        order noise, blur, weather, digital; families with none are left out.

    Raises
    ------
    ValueError
        A corruption name outside :data:`CORRUPTION_FAMILIES`.
    """
    groups: dict[str, list[float]] = {f: [] for f in CORRUPTION_FAMILY_NAMES}
    for c, v in values.items():
        if c not in CORRUPTION_FAMILIES:
            raise ValueError(f"unknown corruption {c!r}: expected one of {', '.join(CORRUPTION_FAMILIES)}")
        groups[CORRUPTION_FAMILIES[c]].append(float(v))
    return {f: float(np.mean(v)) for f, v in groups.items() if v}


# --------------------------------------------------------------------------- sanity checks
def _max_rise(keys: np.ndarray, vals: np.ndarray) -> tuple[float, float, float]:
    """Largest ``vals[j] - vals[i]`` over ``keys[i] < keys[j]``, with those two keys."""
    order = np.argsort(keys)
    k, v = keys[order], vals[order]
    best, at, lo = -math.inf, (math.nan, math.nan), 0  # lo: index of the lowest value so far
    for j in range(1, len(v)):
        if v[j] - v[lo] > best:
            best, at = float(v[j] - v[lo]), (float(k[lo]), float(k[j]))
        if v[j] < v[lo]:
            lo = j
    return best, at[0], at[1]


def gradient_masking_checks(
    epsilons: Sequence[float],
    accuracies: Sequence[float],
    *,
    clean_accuracy: float | None = None,
    accuracy_by_steps: Mapping[int, float] | None = None,
    black_box: Mapping[float, float] | None = None,
    tolerance: float = 0.01,
    final_threshold: float = 0.1,
) -> list[SanityCheck]:
    """Sanity checks against gradient masking, each pass/fail with its numbers.

    Parameters
    ----------
    epsilons, accuracies : sequence of float
        White-box accuracy under attack per epsilon (as :func:`robustness_auc`).
    clean_accuracy : float, optional
        Accuracy at epsilon 0, joined to the curve when given.
    accuracy_by_steps : mapping of int to float, optional
        White-box accuracy at one epsilon for several numbers of attack steps.
    black_box : mapping of float to float, optional
        Accuracy under a black-box (e.g. transfer or score-based) attack per epsilon; it
        is compared at the epsilons the white-box curve also has.
    tolerance : float
        Accuracy rises up to this much (absolute, default 0.01) count as noise.
    final_threshold : float
        Highest accuracy accepted at the largest epsilon (default 0.1, chance level of
        a 10-class problem; use 0 with an epsilon that allows any image).

    Returns
    -------
    list of SanityCheck
        In this order, those the inputs allow:

        * ``monotone_in_epsilon``: ``max_rise = max_{eps_i < eps_j} (a_j - a_i) <= tolerance``
          (values ``max_rise``, ``from_epsilon``, ``to_epsilon``).
        * ``reaches_threshold``: accuracy at the largest epsilon ``<= final_threshold``
          (values ``accuracy``, ``epsilon``, ``threshold``).
        * ``more_steps_not_weaker``: ``max_rise`` over increasing step counts
          ``<= tolerance`` (values ``max_rise``, ``from_steps``, ``to_steps``); needs two
          step counts.
        * ``black_box_not_stronger``: ``max_gap = max_eps (white - black) <= tolerance``
          (values ``max_gap``, ``epsilon``).

    Raises
    ------
    ValueError
        Malformed inputs, or a black-box result sharing no epsilon with the white-box curve.
    """
    tol = _finite("tolerance", tolerance, 0.0)
    thr = _accuracy("final_threshold", final_threshold)
    eps, acc = _curve(epsilons, accuracies, clean_accuracy, need_clean=False)
    if len(eps) == 0:
        raise ValueError("need at least one epsilon")
    checks = []
    if len(eps) >= 2:
        rise, e0, e1 = _max_rise(eps, acc)
        checks.append(
            SanityCheck(
                "monotone_in_epsilon",
                rise <= tol,
                {"max_rise": rise, "from_epsilon": e0, "to_epsilon": e1},
                f"accuracy rises by at most {rise:+.4f} with epsilon ({e0:g} -> {e1:g}); tolerance {tol:g}",
            )
        )
    final = float(acc[-1])
    checks.append(
        SanityCheck(
            "reaches_threshold",
            final <= thr,
            {"accuracy": final, "epsilon": float(eps[-1]), "threshold": thr},
            f"accuracy {final:.4f} at the largest epsilon {eps[-1]:g}; threshold {thr:g}",
        )
    )
    if accuracy_by_steps is not None:
        if len(accuracy_by_steps) < 2:
            raise ValueError("accuracy_by_steps needs at least two step counts")
        steps = np.array([_finite("steps", s, 1.0) for s in accuracy_by_steps], dtype=np.float64)
        sacc = np.array([_accuracy("accuracy", a) for a in accuracy_by_steps.values()], dtype=np.float64)
        rise, s0, s1 = _max_rise(steps, sacc)
        checks.append(
            SanityCheck(
                "more_steps_not_weaker",
                rise <= tol,
                {"max_rise": rise, "from_steps": s0, "to_steps": s1},
                f"accuracy rises by at most {rise:+.4f} with more steps ({s0:g} -> {s1:g}); tolerance {tol:g}",
            )
        )
    if black_box is not None:
        white = dict(zip(eps.tolist(), acc.tolist()))
        common = [(float(e), float(a)) for e, a in black_box.items() if float(e) in white]
        if not common:
            raise ValueError("black_box shares no epsilon with the white-box curve")
        gaps = [(white[e] - _accuracy("black-box accuracy", a), e) for e, a in common]
        gap, at = max(gaps)
        checks.append(
            SanityCheck(
                "black_box_not_stronger",
                gap <= tol,
                {"max_gap": gap, "epsilon": at},
                f"black-box accuracy is at most {gap:+.4f} below white-box (epsilon {at:g}); tolerance {tol:g}",
            )
        )
    return checks
