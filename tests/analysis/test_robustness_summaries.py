"""Robustness-curve summaries, corruption errors, families and gradient-masking checks."""

import math

import pytest

from selectivity.analysis import (
    CORRUPTION_FAMILIES,
    CORRUPTION_FAMILY_NAMES,
    EXTRA_CORRUPTIONS,
    STANDARD_CORRUPTIONS,
    corruption_error,
    family_means,
    gradient_masking_checks,
    relative_corruption_error,
    robustness_auc,
)
from selectivity.perturb import CORRUPTIONS


# ------------------------------------------------------------------ AUC
def test_auc_of_a_piecewise_linear_curve_by_hand():
    # (0, .9) -> (.1, .5) -> (.2, .1): trapezoids .1 * (.9 + .5) / 2 + .1 * (.5 + .1) / 2
    r = robustness_auc([0.1, 0.2], [0.5, 0.1], clean_accuracy=0.9)
    assert r.area == pytest.approx(0.07 + 0.03)
    assert r.relative == pytest.approx(0.10 / (0.9 * 0.2))
    assert (r.clean_accuracy, r.eps_max) == (0.9, 0.2)
    # the same curve with its epsilon-0 point given, unordered
    r2 = robustness_auc([0.2, 0.0, 0.1], [0.1, 0.9, 0.5])
    assert r2.area == pytest.approx(r.area) and r2.relative == pytest.approx(r.relative)


def test_auc_uneven_spacing_by_hand():
    # (0, 1) -> (.01, .8) -> (.04, .2): .01 * 1.8 / 2 + .03 * 1.0 / 2 = .009 + .015
    r = robustness_auc([0.01, 0.04], [0.8, 0.2], clean_accuracy=1.0)
    assert r.area == pytest.approx(0.024)
    assert r.relative == pytest.approx(0.024 / 0.04)


def test_relative_auc_is_one_when_accuracy_never_falls_and_zero_when_it_drops_at_once():
    assert robustness_auc([1 / 255, 4 / 255, 8 / 255], [0.7, 0.7, 0.7], 0.7).relative == pytest.approx(1.0)
    # a drop to 0 at the first epsilon leaves only the first half-trapezoid
    r = robustness_auc([0.1, 0.5], [0.0, 0.0], 0.8)
    assert r.area == pytest.approx(0.04) and r.relative == pytest.approx(0.04 / 0.4)
    assert math.isnan(robustness_auc([0.1], [0.0], 0.0).relative)


@pytest.mark.parametrize(
    "args, match",
    [
        (([0.1], [0.5]), "give clean_accuracy or an accuracy at epsilon 0"),
        (([0.0], [0.5]), "at least one epsilon > 0"),
        (([0.1, 0.1], [0.5, 0.4], 0.9), "distinct"),
        (([0.1], [1.5], 0.9), r"accuracy must be a finite number in \[0, 1\]"),
        (([-0.1], [0.5], 0.9), "epsilon must be a finite number"),
        (([0.1, 0.2], [0.5], 0.9), "2 epsilons but 1 accuracies"),
        (([0.0, 0.1], [0.8, 0.5], 0.9), "differs from clean_accuracy"),
    ],
)
def test_auc_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        robustness_auc(*args)


# ------------------------------------------------------------------ corruption error
BASE = {"fog": [0.9, 0.8, 0.7], "snow": [0.8, 0.6, 0.4]}


def test_mce_of_the_baseline_itself_is_one():
    r = corruption_error(BASE, BASE)
    assert r.per_corruption == {"fog": pytest.approx(1.0), "snow": pytest.approx(1.0)}
    assert r.mean == pytest.approx(1.0)
    rel = relative_corruption_error(BASE, 0.95, BASE, 0.95)
    assert rel.mean == pytest.approx(1.0)


def test_mce_by_hand():
    model = {"fog": [0.95, 0.9, 0.85], "snow": [0.7, 0.5, 0.3]}
    # fog: errors .05+.1+.15 = .3 over baseline .1+.2+.3 = .6 -> .5
    # snow: .3+.5+.7 = 1.5 over .2+.4+.6 = 1.2 -> 1.25; mean 0.875
    r = corruption_error(model, BASE)
    assert r.per_corruption["fog"] == pytest.approx(0.5)
    assert r.per_corruption["snow"] == pytest.approx(1.25)
    assert r.mean == pytest.approx(0.875)
    assert list(r.per_corruption) == ["fog", "snow"]
    # relative, clean accuracies .97 (model) and .95 (baseline): error floors .03 and .05
    # fog: (.02+.07+.12) / (.05+.15+.25) = .21/.45; snow: (.27+.47+.67) / (.15+.35+.55) = 1.41/1.05
    rel = relative_corruption_error(model, 0.97, BASE, 0.95)
    assert rel.per_corruption["fog"] == pytest.approx(0.21 / 0.45)
    assert rel.per_corruption["snow"] == pytest.approx(1.41 / 1.05)
    assert rel.mean == pytest.approx((0.21 / 0.45 + 1.41 / 1.05) / 2)


def test_mce_zero_baseline_error_is_nan_and_mismatches_are_errors():
    r = corruption_error({"fog": [0.9]}, {"fog": [1.0]})
    assert math.isnan(r.per_corruption["fog"]) and math.isnan(r.mean)
    with pytest.raises(ValueError, match="same corruptions"):
        corruption_error({"fog": [0.9]}, {"snow": [0.9]})
    with pytest.raises(ValueError, match="2 severities for the model, 3 for the baseline"):
        corruption_error({"fog": [0.9, 0.8], "snow": [0.8, 0.6, 0.4]}, BASE)


# ------------------------------------------------------------------ families
def test_families_cover_the_release_and_the_standard_fifteen_are_the_generators():
    assert STANDARD_CORRUPTIONS == CORRUPTIONS
    assert set(CORRUPTION_FAMILIES) == set(STANDARD_CORRUPTIONS) | set(EXTRA_CORRUPTIONS)
    assert len(CORRUPTION_FAMILIES) == 19
    standard = [CORRUPTION_FAMILIES[c] for c in STANDARD_CORRUPTIONS]
    # ImageNet-C's grouping: 3 noise, 4 blur, 4 weather, 4 digital
    assert [standard.count(f) for f in CORRUPTION_FAMILY_NAMES] == [3, 4, 4, 4]
    extras = {"speckle_noise": "noise", "gaussian_blur": "blur", "spatter": "weather", "saturate": "digital"}
    assert {c: CORRUPTION_FAMILIES[c] for c in EXTRA_CORRUPTIONS} == extras


def test_family_means_by_hand():
    got = family_means({"gaussian_noise": 0.2, "shot_noise": 0.4, "fog": 0.9, "saturate": 0.5})
    assert got == {"noise": pytest.approx(0.3), "weather": pytest.approx(0.9), "digital": pytest.approx(0.5)}
    assert list(got) == ["noise", "weather", "digital"]
    with pytest.raises(ValueError, match="unknown corruption 'rain'"):
        family_means({"rain": 0.1})


# ------------------------------------------------------------------ sanity checks
def by_name(checks):
    return {c.name: c for c in checks}


def test_a_healthy_curve_passes_every_check():
    checks = gradient_masking_checks(
        [1 / 255, 4 / 255, 16 / 255, 64 / 255],
        [0.6, 0.2, 0.01, 0.0],
        clean_accuracy=0.9,
        accuracy_by_steps={5: 0.25, 10: 0.2, 50: 0.195, 100: 0.2},  # +0.005: within tolerance
        black_box={4 / 255: 0.5, 16 / 255: 0.3},
    )
    assert [c.name for c in checks] == [
        "monotone_in_epsilon",
        "reaches_threshold",
        "more_steps_not_weaker",
        "black_box_not_stronger",
    ]
    assert all(c.passed for c in checks)
    c = by_name(checks)
    # the largest rise along the curve (0 -> ... all falling): the smallest fall, 0.0 - 0.01
    assert c["monotone_in_epsilon"].values["max_rise"] == pytest.approx(-0.01)
    assert c["more_steps_not_weaker"].values == {
        "max_rise": pytest.approx(0.005),
        "from_steps": 50.0,
        "to_steps": 100.0,
    }
    # white - black: 0.2 - 0.5 at 4/255, 0.01 - 0.3 at 16/255 (the larger)
    assert c["black_box_not_stronger"].values == {"max_gap": pytest.approx(0.01 - 0.3), "epsilon": 16 / 255}
    assert c["reaches_threshold"].values == {"accuracy": 0.0, "epsilon": 64 / 255, "threshold": 0.1}


def test_masked_curve_fails_with_the_numbers():
    checks = by_name(
        gradient_masking_checks(
            [0.01, 0.02, 0.05, 0.1],
            [0.5, 0.45, 0.52, 0.4],  # rises from 0.45 to 0.52 and stays high
            clean_accuracy=0.9,
            accuracy_by_steps={10: 0.45, 20: 0.40, 100: 0.47},  # 0.40 -> 0.47 with more steps
            black_box={0.05: 0.30, 0.1: 0.38},  # black-box beats white-box by 0.22 at 0.05
            tolerance=0.01,
            final_threshold=0.05,
        )
    )
    m = checks["monotone_in_epsilon"]
    assert not m.passed
    assert m.values == {"max_rise": pytest.approx(0.07), "from_epsilon": 0.02, "to_epsilon": 0.05}
    assert "+0.0700" in m.message
    assert not checks["reaches_threshold"].passed and checks["reaches_threshold"].values["accuracy"] == 0.4
    s = checks["more_steps_not_weaker"]
    assert not s.passed and s.values["max_rise"] == pytest.approx(0.07) and s.values["from_steps"] == 20.0
    b = checks["black_box_not_stronger"]
    assert not b.passed and b.values == {"max_gap": pytest.approx(0.22), "epsilon": 0.05}


def test_checks_need_only_what_is_given():
    checks = gradient_masking_checks([0.1], [0.05])  # one point, no clean accuracy
    assert [c.name for c in checks] == ["reaches_threshold"] and checks[0].passed
    # a slow creep of small rises, each within tolerance, fails as a whole
    creep = by_name(gradient_masking_checks([0.1, 0.2, 0.3, 0.4], [0.30, 0.308, 0.316, 0.324]))
    assert not creep["monotone_in_epsilon"].passed
    assert creep["monotone_in_epsilon"].values["max_rise"] == pytest.approx(0.024)
    with pytest.raises(ValueError, match="shares no epsilon"):
        gradient_masking_checks([0.1], [0.05], black_box={0.2: 0.1})
    with pytest.raises(ValueError, match="at least two step counts"):
        gradient_masking_checks([0.1], [0.05], accuracy_by_steps={10: 0.1})
