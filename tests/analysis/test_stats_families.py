"""Bonferroni families as the paper's figures draw them, and Student's t-test by default."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from selectivity.analysis.stats import rank_sum_promote_vs_penalise, ttests_against_baseline


def _sweep(n=5):
    # Fixed, hand-chosen values (no randomness): 5 seeds per alpha.
    base = [0.910, 0.912, 0.905, 0.915, 0.908]
    rows = [{"alpha": 0.0, "seed": s, "acc": v} for s, v in enumerate(base)]
    shifts = {-2.0: -0.004, -1.0: -0.009, 0.5: -0.006, 2.0: -0.3, 5.0: -0.6}
    for a, d in shifts.items():
        for s, v in enumerate(base):
            rows.append({"alpha": a, "seed": s, "acc": v + d + 0.001 * ((s * 7 + int(a * 3)) % 5)})
    return pd.DataFrame(rows)


def test_default_is_student_with_one_family_per_sign():
    df = _sweep()
    out = ttests_against_baseline(df, "acc").set_index("group")
    base = df.loc[df.alpha == 0, "acc"].to_numpy()
    for a in (-2.0, -1.0, 0.5, 2.0, 5.0):
        vals = df.loc[df.alpha == a, "acc"].to_numpy()
        ref = sps.ttest_ind(vals, base)  # SciPy's default: Student's (pooled variance)
        m = 2 if a < 0 else 3  # two penalising alphas (Fig. 2), three promoting (Fig. 4)
        assert out.loc[a, "family"] == ("penalise" if a < 0 else "promote")
        assert out.loc[a, "m"] == m
        assert out.loc[a, "p"] == pytest.approx(ref.pvalue, rel=1e-12)
        assert out.loc[a, "p_bonferroni"] == pytest.approx(min(1.0, m * ref.pvalue), rel=1e-12)


def test_family_all_corrects_over_both_signs():
    df = _sweep()
    sign = ttests_against_baseline(df, "acc").set_index("group")
    every = ttests_against_baseline(df, "acc", family="all").set_index("group")
    assert (every["family"] == "all").all() and (every["m"] == 5).all()
    np.testing.assert_allclose(every["p"], sign["p"], rtol=0)
    np.testing.assert_allclose(every["p_bonferroni"], np.minimum(5 * every["p"], 1.0), rtol=1e-12)


def test_welch_on_request_differs_from_student():
    df = _sweep()
    df.loc[(df.alpha == 5.0), "acc"] += np.array([0.0, 0.05, -0.05, 0.1, -0.1])  # unequal variance
    welch = ttests_against_baseline(df, "acc", equal_var=False).set_index("group")
    student = ttests_against_baseline(df, "acc").set_index("group")
    vals = df.loc[df.alpha == 5.0, "acc"].to_numpy()
    base = df.loc[df.alpha == 0.0, "acc"].to_numpy()
    assert welch.loc[5.0, "p"] == pytest.approx(sps.ttest_ind(vals, base, equal_var=False).pvalue)
    assert welch.loc[5.0, "p"] != pytest.approx(student.loc[5.0, "p"])


def test_unknown_family_is_an_error():
    with pytest.raises(ValueError, match="family"):
        ttests_against_baseline(_sweep(), "acc", family="figure-3")


def test_rank_sum_reports_its_family_size():
    df = pd.concat([_sweep(), _sweep().query("alpha == -2.0").assign(alpha=-0.5)])
    out = rank_sum_promote_vs_penalise(df, "acc")
    # |alpha| present with both signs: 0.5 and 2.
    assert out["abs_alpha"].tolist() == [0.5, 2.0]
    assert (out["m"] == 2).all()
    np.testing.assert_allclose(out["p_bonferroni"], np.minimum(2 * out["p"], 1.0))
