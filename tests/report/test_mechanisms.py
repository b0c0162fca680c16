"""The Mechanisms section's statistics on a geometry frame written by hand.

Four runs (alpha -1 and +1, two each), three layers of which the first is marked early, two
corruption cells and one attack. Every number below is computed by hand from the rows.
"""

from __future__ import annotations

import pandas as pd
import pytest

from selectivity.report.mechanisms import mechanism_statistics

#: run -> (alpha, mean selectivity)
RUNS = {"r1": (-1.0, 0.1), "r2": (-1.0, 0.2), "r3": (1.0, 0.5), "r4": (1.0, 0.6)}
#: Early-layer clean PCA dimensionality: falls as selectivity rises (rho = -1).
CLEAN_PCA = {"r1": 8.0, "r2": 6.0, "r3": 4.0, "r4": 2.0}
#: Early-layer increase of PCA dimensionality: the two corruption cells, the attack.
CORRUPTION_INCREASE = {"r1": (1.0, 3.0), "r2": (0.0, 2.0), "r3": (-1.0, 1.0), "r4": (0.0, 0.0)}
ATTACK_INCREASE = {"r1": 5.0, "r2": 4.0, "r3": 1.0, "r4": 2.0}
#: Element-wise gradient variance across samples at layers 0 and 1 (squared pixel units).
ELEM_VAR = {"r1": (2e-6, 4e-6), "r2": (4e-6, 6e-6), "r3": (1e-6, 1e-6), "r4": (3e-6, 1e-6)}


def _frame() -> pd.DataFrame:
    rows = []

    def add(run, layer, kind, pert, measure, value):
        alpha, si = RUNS[run]
        rows.append(
            dict(
                run_id=run,
                layer_index=layer,
                layer=f"l{layer}" if layer >= 0 else "input",
                kind=kind,
                perturbation=pert,
                measure=measure,
                value=value,
                alpha=alpha,
                mean_selectivity=si,
            )
        )

    for run in RUNS:
        for layer in range(3):
            add(run, layer, "clean", "clean", "early", 1.0 if layer == 0 else 0.0)
            # the later layers carry values that would change every early-layer number
            add(run, layer, "clean", "clean", "pca", CLEAN_PCA[run] if layer == 0 else 100.0)
            add(
                run,
                layer,
                "clean",
                "clean",
                "participation_ratio",
                CLEAN_PCA[run] / 2 if layer == 0 else 50.0,
            )
            for cell, value in zip(("fog-1", "fog-3"), CORRUPTION_INCREASE[run]):
                add(run, layer, "corruption", cell, "increase_pca", value if layer == 0 else 100.0)
            add(
                run,
                layer,
                "adversarial",
                "pgd-linf-4/255",
                "increase_pca",
                ATTACK_INCREASE[run] if layer == 0 else -100.0,
            )
        for layer, value in enumerate(ELEM_VAR[run]):
            add(run, layer, "clean", "clean", "grad_elem_var_samples", value)
        add(run, -1, "adversarial", "pgd-linf-4/255", "accuracy", 0.1)  # not a layer: ignored
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def stats():
    st = mechanism_statistics(_frame(), n_resamples=200)
    assert st is not None
    return st


def test_empty_frame_has_no_statistics():
    assert mechanism_statistics(pd.DataFrame()) is None


def test_early_layers_are_the_marked_ones(stats):
    assert stats.early == [0]
    assert stats.early_text == "early layers = l0"


def test_increase_per_alpha_and_difference_by_hand(stats):
    inc = stats.increase.set_index(["measure", "alpha"])["mean"]
    # per run: corruptions r1 2, r2 1, r3 0, r4 0; attack r1 5, r2 4, r3 1, r4 2
    assert inc[("PCA increase, corruptions", -1.0)] == pytest.approx(1.5)
    assert inc[("PCA increase, corruptions", 1.0)] == pytest.approx(0.0)
    assert inc[("PCA increase, adversarial", -1.0)] == pytest.approx(4.5)
    assert inc[("PCA increase, adversarial", 1.0)] == pytest.approx(1.5)
    # adversarial - corruptions per run: 3, 3, 1, 2
    assert inc[("PCA: adversarial - corruptions", -1.0)] == pytest.approx(3.0)
    assert inc[("PCA: adversarial - corruptions", 1.0)] == pytest.approx(1.5)
    view = stats.increase_view.set_index("α")
    assert view.loc["all runs", "n (runs)"] == 4
    assert view.loc["all runs", "PCA: adversarial - corruptions"].startswith("2.25 [")
    assert view.loc["-1", "PCA increase, corruptions"].startswith("1.50 [")


def test_spearman_signs_by_hand(stats):
    assert stats.spearman_of("clean PCA dimensionality")["rho"] == pytest.approx(-1.0)
    assert stats.spearman_of("clean participation ratio")["rho"] == pytest.approx(-1.0)
    # attack increase 5, 4, 1, 2 against selectivity 0.1, 0.2, 0.5, 0.6: ranks 4 3 1 2 vs 1 2 3 4
    assert stats.spearman_of("PCA increase, adversarial")["rho"] == pytest.approx(-0.8)
    row = stats.spearman_view().set_index("measure").loc["clean PCA dimensionality"]
    assert row["n (runs)"] == 4 and row["sign"].startswith("-")


def test_tiny_gradient_measures_are_shown_in_their_power_of_ten(stats):
    grads = stats.gradients.set_index(["measure", "alpha"])["mean"]
    # per run, the mean over both layers: 3e-6, 5e-6, 1e-6, 2e-6
    assert grads[("element-wise variance, across samples", -1.0)] == pytest.approx(4e-6)
    assert grads[("element-wise variance, across samples", 1.0)] == pytest.approx(1.5e-6)
    view = stats.gradients_view.set_index("α")
    column = "element-wise variance, across samples (x 1e-6)"
    assert column in view.columns
    assert view.loc["-1", column].startswith("4.0000 [")
    assert view.loc["1", column].startswith("1.5000 [")


def test_increase_per_perturbation_pools_corruptions_by_severity(stats):
    d = stats.by_perturbation
    d = d[d["measure"] == "increase_pca"].set_index(["perturbation", "alpha"])["mean"]
    # severity 1: r1 1, r2 0 | r3 -1, r4 0; severity 3: r1 3, r2 2 | r3 1, r4 0
    assert d[("corruptions, severity 1", -1.0)] == pytest.approx(0.5)
    assert d[("corruptions, severity 3", -1.0)] == pytest.approx(2.5)
    assert d[("corruptions, severity 1", 1.0)] == pytest.approx(-0.5)
    assert d[("pgd-linf-4/255", 1.0)] == pytest.approx(1.5)
    view = stats.by_perturbation_view
    row = view[(view["perturbation"] == "corruptions, severity 3")].iloc[0]
    assert row["measure"] == "increase of PCA dimensionality"
    assert (row["α = -1"], row["α = 1"]) == ("+2.50", "+0.50")
    assert list(view["perturbation"]) == [
        "corruptions, severity 1",
        "corruptions, severity 3",
        "pgd-linf-4/255",
    ]


def test_dimensionality_by_alpha_by_hand(stats):
    d = stats.dimensionality.set_index(["measure", "alpha"])["mean"]
    assert d[("clean PCA, early", -1.0)] == pytest.approx(7.0)  # runs r1 8, r2 6
    assert d[("clean PCA, early", 1.0)] == pytest.approx(3.0)  # runs r3 4, r4 2
    assert d[("clean PR, early", 1.0)] == pytest.approx(1.5)
    # all three layers: (8 + 100 + 100) / 3 and (6 + 100 + 100) / 3
    assert d[("clean PCA, all layers", -1.0)] == pytest.approx((208 / 3 + 206 / 3) / 2)
    assert stats.dimensionality_view.columns[:3].tolist() == ["α", "n (runs)", "clean PCA, early"]


def test_rescaling_follows_the_smallest_mean():
    frame = _frame()
    # alpha +1 runs get variances 100x larger: means 4e-6 (alpha -1) and 1.5e-4 (alpha +1)
    big = (frame["measure"] == "grad_elem_var_samples") & (frame["alpha"] == 1.0)
    frame.loc[big, "value"] *= 100
    st = mechanism_statistics(frame, n_resamples=200)
    assert st is not None
    view = st.gradients_view.set_index("α")
    column = "element-wise variance, across samples (x 1e-6)"
    assert view.loc["-1", column].startswith("4.0000 [") and view.loc["1", column].startswith("150.0000 [")


def test_a_share_is_never_rescaled():
    frame = _frame()
    share = frame[frame["measure"] == "grad_elem_var_samples"].assign(measure="grad_zero_fraction")
    st = mechanism_statistics(pd.concat([frame, share], ignore_index=True), n_resamples=200)
    assert st is not None
    view = st.gradients_view.set_index("α")
    assert view.loc["-1", "share of zero gradients (inactive units)"].startswith("0.0000")
