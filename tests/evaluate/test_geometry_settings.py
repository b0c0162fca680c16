"""Settings of the paper-2 steps without data: early layers, matching the robustness step, APGD fields."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selectivity.analysis.robustness import EXTRA_CORRUPTIONS
from selectivity.evaluate.geometry import (
    GeometrySettings,
    early_layer_names,
    parse_early_layers,
    perturbation_label,
)
from selectivity.evaluate.robustness import APGD_ATTACKS, RobustnessSettings

LAYERS = ["act1", "layer1.0.act1", "layer1.0.act2", "layer2.0.act1", "layer3.2.act2"]


# --------------------------------------------------------------------------- early layers
@pytest.mark.parametrize(
    "text, expected",
    [("3", 3), ("1", 1), ("1/3", 1 / 3), ("0.5", 0.5), ("1", 1), ("a,b", ("a", "b")), ("act1", ("act1",))],
)
def test_parse_early_layers_by_hand(text, expected):
    assert parse_early_layers(text) == expected
    assert type(parse_early_layers(text)) is type(expected)


@pytest.mark.parametrize("text", ["", " ", "0", "1.5", "0/3", "2/0", "-1", ",", "3x"])
def test_parse_early_layers_refuses_with_one_line(text):
    with pytest.raises(ValueError, match="early layers") as e:
        parse_early_layers(text)
    assert "\n" not in str(e.value)


@given(st.integers(min_value=1, max_value=10**6))
def test_parse_early_layers_counts(k):
    assert parse_early_layers(str(k)) == k


@given(st.integers(min_value=1, max_value=1000), st.integers(min_value=1, max_value=1000))
def test_parse_early_layers_fractions(p, q):
    if p > q:
        with pytest.raises(ValueError, match="fraction"):
            parse_early_layers(f"{p}/{q}")
    else:
        assert parse_early_layers(f"{p}/{q}") == pytest.approx(p / q)


@given(st.lists(st.from_regex(r"[a-z_][a-z0-9_.]{0,12}", fullmatch=True), min_size=1, max_size=5))
def test_parse_early_layers_names_round_trip(names):
    assert parse_early_layers(",".join(names)) == tuple(names)


def test_early_layer_names_by_hand():
    assert early_layer_names(LAYERS, 2) == LAYERS[:2]
    assert early_layer_names(LAYERS, 9) == LAYERS  # more than measured: all
    assert early_layer_names(LAYERS, 1 / 3) == LAYERS[:2]  # ceil(5 / 3) = 2
    assert early_layer_names(LAYERS, 0.2) == LAYERS[:1]  # ceil(1.0) = 1, not 2
    assert early_layer_names(LAYERS, 0.01) == LAYERS[:1]  # at least one
    assert early_layer_names(LAYERS, 1.0) == LAYERS
    # names keep the order of the measured layers
    assert early_layer_names(LAYERS, ("layer2.0.act1", "act1")) == ["act1", "layer2.0.act1"]
    with pytest.raises(ValueError, match="'nope' is not a measured layer"):
        early_layer_names(LAYERS, ("nope",))


# --------------------------------------------------------------------------- matching the robustness step
def test_matching_copies_the_robustness_perturbations():
    r = RobustnessSettings(
        n_images=500,
        image_seed=3,
        corruptions=("fog", "contrast"),
        severities=(1, 5),
        params="cifar10",
        corruption_seed=7,
        attacks=("fgsm", "pgd", "apgd-ce", "apgd-ensemble"),
        epsilons=(0.0, 1 / 255, 8 / 255),
        norm="linf",
        pgd_steps=7,
        pgd_step_factor=2.0,
        pgd_restarts=2,
        attack_seed=11,
        batch_size=100,
    )
    g = GeometrySettings.matching(r)
    for name in (
        "n_images",
        "image_seed",
        "corruptions",
        "severities",
        "params",
        "corruption_seed",
        "norm",
        "pgd_steps",
        "pgd_step_factor",
        "pgd_restarts",
        "attack_seed",
        "batch_size",
    ):
        assert getattr(g, name) == getattr(r, name), name
    assert g.attacks == ("fgsm", "pgd")  # APGD is not a geometry perturbation
    assert g.epsilons == (1 / 255, 8 / 255)  # epsilon 0 is the clean pass
    # the corrupted cells come from the same robustness settings (the same cache key)
    back = g.robustness_settings()
    for name in (
        "n_images",
        "image_seed",
        "corruptions",
        "severities",
        "params",
        "corruption_seed",
        "batch_size",
    ):
        assert getattr(back, name) == getattr(r, name), name
    assert GeometrySettings.matching(r, severities=(3,), match_l2=True).severities == (3,)
    with pytest.raises(ValueError, match="unknown geometry setting 'severity'"):
        GeometrySettings.matching(r, severity=3)


def test_geometry_defaults_are_the_robustness_defaults():
    g, r = GeometrySettings(), RobustnessSettings()
    assert (g.corruptions, g.severities, g.epsilons, g.pgd_steps) == (
        r.corruptions,
        r.severities,
        r.epsilons,
        r.pgd_steps,
    )
    assert not g.match_l2  # the matched L2 attacks are a sensitivity analysis, asked for


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(positions=4), "applies to units='flatten' only"),
        (dict(units="flatten", positions=0), "positions must be an integer >= 1"),
        (dict(attacks=("apgd-ce",)), "unknown geometry attack 'apgd-ce'"),
        (dict(corruptions=("spatter",)), "unknown corruption"),
        (dict(early_layers=0), "a count must be >= 1"),
        (dict(early_layers=1.5), "a fraction must be in"),
        (dict(severities=(6,)), "severity must be an integer in 1..5"),
        (dict(match_severity=0), "severity must be an integer in 1..5"),
        (dict(epsilons=(0.0,)), "epsilons must be finite numbers > 0"),
        (dict(pgd_step_factor=0.0), "pgd_step_factor must be > 0"),
        (dict(attack_seed=-1), "attack_seed must be an integer >= 0"),
    ],
)
def test_geometry_settings_refuse_with_one_line(kw, match):
    with pytest.raises(ValueError, match=match) as e:
        GeometrySettings(**kw)
    assert "\n" not in str(e.value)


def test_extra_release_types_are_read_not_generated(tmp_path):
    assert len(EXTRA_CORRUPTIONS) == 4
    with pytest.raises(ValueError, match="read from a directory"):
        RobustnessSettings(corruptions=("speckle_noise",))
    r = RobustnessSettings(corruptions=("speckle_noise", "fog"), corrupted=str(tmp_path))
    assert r.corruptions == ("speckle_noise", "fog")
    assert GeometrySettings(corruptions=("spatter",), corrupted=str(tmp_path)).corruptions == ("spatter",)
    assert "generated by our batched re-implementation" in RobustnessSettings().source_text("cifar10")
    assert str(tmp_path) in r.source_text("cifar10")


def test_apgd_settings_and_the_cells_they_add():
    r = RobustnessSettings(attacks=("fgsm", "apgd-ce", "apgd-ensemble"), epsilons=(1 / 255, 2 / 255))
    assert r.apgd_epsilons == (8 / 255,) and r.apgd_steps == 100 and r.apgd_target_classes == 9
    assert r.attack_cells() == [
        ("fgsm", 1 / 255),
        ("fgsm", 2 / 255),
        ("apgd-ce", 8 / 255),
        ("apgd-ensemble", 8 / 255),
    ]
    same = dataclasses.replace(r, apgd_epsilons=None)
    assert [e for a, e in same.attack_cells() if a in APGD_ATTACKS] == [1 / 255, 2 / 255] * 2
    for name in ("apgd_steps", "apgd_restarts", "apgd_target_classes", "pgd_restarts"):
        with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
            RobustnessSettings(**{name: 0})
    with pytest.raises(ValueError, match="epsilon must be a finite number"):
        RobustnessSettings(apgd_epsilons=(math.nan,))
    assert RobustnessSettings.from_dict(r.to_dict()) == r  # stored settings read back


def test_perturbation_labels():
    assert perturbation_label("corruption", "fog", 3) == "fog-3"
    assert perturbation_label("adversarial", "pgd", 4 / 255) == "pgd-linf-4/255"
    assert perturbation_label("adversarial", "fgsm", 0.25 / 255) == "fgsm-linf-0.25/255"
    assert perturbation_label("matched-l2", "fog-3", 1.7) == "pgd-l2-match-fog-3"
