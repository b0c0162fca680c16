"""Tests of selectivity.analysis.stats against direct SciPy calls."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from selectivity.analysis import (
    bonferroni,
    bootstrap_ci,
    paired_test,
    rank_sum_promote_vs_penalise,
    spearman_ci,
    summarize,
    ttests_against_baseline,
)


def _sweep(seed=0, n=20):
    """Fake sweep: 'acc' per (alpha, seed); promoting hurts, penalising barely."""
    rng = np.random.default_rng(seed)
    effect = {0.0: 0.0, -0.1: 0.0, -1.0: -0.005, -30.0: -0.02, 0.1: -0.001, 0.2: -0.02, 2.0: -0.3}
    rows = []
    for a, e in effect.items():
        for s in range(n):
            rows.append({"alpha": a, "seed": s, "acc": 0.91 + e + 0.003 * rng.standard_normal()})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------- bonferroni


def test_bonferroni_by_hand():
    np.testing.assert_allclose(bonferroni([0.01, 0.02, 0.04]), [0.03, 0.06, 0.12])
    np.testing.assert_allclose(bonferroni([0.5, 0.01]), [1.0, 0.02])
    np.testing.assert_allclose(bonferroni([0.01, 0.02], m=10), [0.1, 0.2])
    out = bonferroni([0.01, np.nan, 0.2])
    np.testing.assert_allclose(out[[0, 2]], [0.02, 0.4])
    assert np.isnan(out[1])
    assert bonferroni([]).shape == (0,)
    with pytest.raises(ValueError):
        bonferroni([1.5])


# ----------------------------------------------------------------- bootstrap


def test_bootstrap_matches_scipy():
    vals = np.random.default_rng(1).normal(0.9, 0.01, size=20)
    for method in ["percentile", "BCa"]:
        low, high = bootstrap_ci(vals, n_resamples=2000, seed=3, method=method)
        ref = sps.bootstrap(
            (vals,), np.mean, n_resamples=2000, method=method, rng=np.random.default_rng(3)
        ).confidence_interval
        assert (low, high) == pytest.approx((ref.low, ref.high), abs=1e-12)
    # Deterministic for a given seed.
    assert bootstrap_ci(vals, seed=5, n_resamples=500) == bootstrap_ci(vals, seed=5, n_resamples=500)


def test_ci_contains_mean_and_narrows_with_n():
    rng = np.random.default_rng(2)
    small = rng.normal(0, 1, size=10)
    big = rng.normal(0, 1, size=1000)
    lo_s, hi_s = bootstrap_ci(small, n_resamples=2000)
    lo_b, hi_b = bootstrap_ci(big, n_resamples=2000)
    assert lo_s < small.mean() < hi_s
    assert lo_b < big.mean() < hi_b
    assert (hi_b - lo_b) < 0.5 * (hi_s - lo_s)
    # Higher confidence -> wider.
    lo9, hi9 = bootstrap_ci(small, confidence=0.99, n_resamples=2000)
    assert hi9 - lo9 > hi_s - lo_s


def test_bootstrap_edge_cases():
    assert all(np.isnan(bootstrap_ci([0.5])))
    assert bootstrap_ci([0.3, 0.3, 0.3]) == (0.3, 0.3)
    with pytest.warns(RuntimeWarning, match="dropped 1 NaN"):
        lo, hi = bootstrap_ci([0.1, np.nan, 0.2, 0.3], n_resamples=500)
    assert 0.1 <= lo <= hi <= 0.3
    with pytest.raises(ValueError, match="no"), pytest.warns(RuntimeWarning):
        bootstrap_ci([np.nan])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1, 2, 3], confidence=95)
    # Custom statistic.
    lo, hi = bootstrap_ci(np.arange(20.0), statistic=np.median, n_resamples=500)
    assert lo <= 9.5 <= hi


def test_summarize():
    vals = np.random.default_rng(4).normal(5, 2, size=30)
    s = summarize(vals, n_resamples=1000)
    assert s["n"] == 30
    assert s["mean"] == pytest.approx(vals.mean())
    assert s["std"] == pytest.approx(vals.std(ddof=1))
    assert s["ci_low"] < s["mean"] < s["ci_high"]
    one = summarize([2.0])
    assert one["n"] == 1 and one["mean"] == 2.0 and np.isnan(one["ci_low"]) and np.isnan(one["std"])
    none = summarize([])
    assert none["n"] == 0 and np.isnan(none["mean"])
    with pytest.warns(RuntimeWarning):
        assert summarize([1.0, np.nan, 3.0], n_resamples=200)["n"] == 2


# ----------------------------------------------------------------- t-tests


def test_ttests_against_baseline_match_scipy():
    df = _sweep()
    # Welch's test with one family over every alpha (options; see test_stats_families.py
    # for the defaults: Student's test, one family per sign).
    out = ttests_against_baseline(df, "acc", equal_var=False, family="all")
    groups = sorted(a for a in df["alpha"].unique() if a != 0)
    assert out["group"].tolist() == groups
    base = df.loc[df.alpha == 0, "acc"].to_numpy()
    m = len(groups)
    for _, row in out.iterrows():
        vals = df.loc[df.alpha == row["group"], "acc"].to_numpy()
        ref = sps.ttest_ind(vals, base, equal_var=False)
        assert row["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
        assert row["p"] == pytest.approx(ref.pvalue, rel=1e-12)
        assert row["p_bonferroni"] == pytest.approx(min(ref.pvalue * m, 1.0), rel=1e-12)
        assert row["significant"] == (min(ref.pvalue * m, 1.0) < 0.05)
        assert row["n"] == 20 and row["n_baseline"] == 20
        assert row["mean"] == pytest.approx(vals.mean())
        assert row["baseline_mean"] == pytest.approx(base.mean())
    sig = dict(zip(out["group"], out["significant"]))
    assert sig[2.0] and sig[-30.0] and not sig[-0.1]
    # Student's t-test on request.
    student = ttests_against_baseline(df, "acc", equal_var=True)
    vals = df.loc[df.alpha == 0.2, "acc"].to_numpy()
    ref = sps.ttest_ind(vals, base, equal_var=True)
    assert student.set_index("group").loc[0.2, "p"] == pytest.approx(ref.pvalue, rel=1e-12)


def test_ttests_unit_cols_average_within_seed():
    df = _sweep(n=5)
    # Duplicate every row as two "layers" with offsets that average out.
    df2 = pd.concat([df.assign(layer=0, acc=df.acc + 0.01), df.assign(layer=1, acc=df.acc - 0.01)])
    a = ttests_against_baseline(df, "acc")
    b = ttests_against_baseline(df2, "acc", unit_cols=["seed"])
    np.testing.assert_allclose(a["p"], b["p"], rtol=1e-9)
    assert (b["n"] == 5).all()


def test_ttests_errors_and_small_groups():
    df = _sweep(n=4)
    with pytest.raises(ValueError, match="baseline"):
        ttests_against_baseline(df[df.alpha != 0], "acc")
    with pytest.raises(ValueError, match="baseline"):
        ttests_against_baseline(df, "acc", baseline=5.0)
    with pytest.raises(ValueError, match="only 1"):
        ttests_against_baseline(df[(df.alpha != 0) | (df.seed == 0)], "acc")
    with pytest.raises(KeyError, match="nope"):
        ttests_against_baseline(df, "nope")
    # A group with a single value: NaN p, not counted in the Bonferroni m.
    small = df[(df.alpha != 2.0) | (df.seed == 0)]
    out = ttests_against_baseline(small, "acc", family="all").set_index("group")
    assert np.isnan(out.loc[2.0, "p"]) and not out.loc[2.0, "significant"]
    m = out["p"].notna().sum()
    assert m == len(out) - 1
    np.testing.assert_allclose(out["p_bonferroni"].dropna(), np.minimum(out["p"].dropna() * m, 1))
    # Only the baseline present: empty table with the documented columns.
    empty = ttests_against_baseline(df[df.alpha == 0], "acc")
    assert len(empty) == 0 and "p_bonferroni" in empty.columns


# ----------------------------------------------------------------- rank-sum


def test_rank_sum_rows_match_scipy():
    df = _sweep()
    out = rank_sum_promote_vs_penalise(df, "acc")
    # |alpha| with both signs: 0.1 only (1, 30 negative only; 0.2, 2 positive only).
    assert out["abs_alpha"].tolist() == [0.1]
    df = pd.concat(
        [df, df[df.alpha.isin([0.2, 2.0])].assign(alpha=lambda d: -d.alpha, acc=lambda d: d.acc + 0.1)]
    )
    out = rank_sum_promote_vs_penalise(df, "acc")
    assert out["abs_alpha"].tolist() == [0.1, 0.2, 2.0]
    m = 3
    for _, row in out.iterrows():
        a = row["abs_alpha"]
        pro = df.loc[np.isclose(df.alpha, a), "acc"].to_numpy()
        pen = df.loc[np.isclose(df.alpha, -a), "acc"].to_numpy()
        ref = sps.ranksums(pro, pen)
        assert row["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
        assert row["p"] == pytest.approx(ref.pvalue, rel=1e-12)
        assert row["p_bonferroni"] == pytest.approx(min(ref.pvalue * m, 1.0), rel=1e-12)
        assert row["n_promote"] == len(pro) and row["n_penalise"] == len(pen)
        assert row["significant"] == (min(ref.pvalue * m, 1.0) < 0.05)
    assert out.set_index("abs_alpha").loc[2.0, "significant"]
    assert out.set_index("abs_alpha").loc[2.0, "statistic"] < 0  # promote is worse


# ----------------------------------------------------------------- paired


def test_paired_test_matches_scipy():
    rng = np.random.default_rng(6)
    b = rng.normal(0.3, 0.05, size=20)
    a = b + rng.normal(0.05, 0.02, size=20)
    r = paired_test(a, b)
    ref = sps.ttest_rel(a, b)
    assert r["statistic"] == pytest.approx(ref.statistic) and r["p"] == pytest.approx(ref.pvalue)
    assert r["n"] == 20 and r["mean_diff"] == pytest.approx(np.mean(a - b))
    r = paired_test(a, b, method="wilcoxon", alternative="greater")
    ref = sps.wilcoxon(a, b, alternative="greater")
    assert r["statistic"] == pytest.approx(ref.statistic) and r["p"] == pytest.approx(ref.pvalue)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_test(a, b[:-1])
    with pytest.raises(ValueError, match="method"):
        paired_test(a, b, method="sign")
    a2 = a.copy()
    a2[0] = np.nan
    with pytest.warns(RuntimeWarning, match="dropped 1 pair"):
        assert paired_test(a2, b)["n"] == 19


# ----------------------------------------------------------------- spearman_ci
def test_spearman_ci_by_hand():
    # ranks of y: 1 3 2 4 against 1 2 3 4: sum d^2 = 2, rho = 1 - 6 * 2 / (4 * 15) = 0.8
    st = spearman_ci([1.0, 2.0, 3.0, 4.0], [10.0, 30.0, 20.0, 40.0], n_resamples=200)
    assert st["rho"] == pytest.approx(0.8) and st["n"] == 4
    assert st["p"] == pytest.approx(sps.spearmanr([1, 2, 3, 4], [1, 3, 2, 4]).pvalue)
    assert -1.0 <= st["ci_low"] <= st["ci_high"] <= 1.0


def test_spearman_ci_of_monotone_relations():
    x = np.arange(8.0)
    st = spearman_ci(x, x**3, n_resamples=200)  # monotone: rho = 1 in every resample
    assert st["rho"] == pytest.approx(1.0) and st["ci_low"] == pytest.approx(1.0) and st["n"] == 8
    st = spearman_ci(x, -x, n_resamples=200)
    assert st["rho"] == pytest.approx(-1.0) and st["ci_high"] == pytest.approx(-1.0)


def test_spearman_ci_degenerate_cases():
    x = np.arange(8.0)
    const = spearman_ci(x, np.ones(8), n_resamples=50)  # constant: undefined
    assert const["n"] == 8 and all(np.isnan(const[k]) for k in ("rho", "p", "ci_low", "ci_high"))
    # non-finite pairs are dropped; two pairs left: undefined
    few = spearman_ci([1.0, 2.0, np.nan, 4.0], [1.0, np.inf, 3.0, 2.0], n_resamples=50)
    assert few["n"] == 2 and np.isnan(few["rho"]) and np.isnan(few["ci_low"])
    with pytest.raises(ValueError, match="paired"):
        spearman_ci([1.0, 2.0, 3.0], [1.0, 2.0])


def test_spearman_ci_is_the_percentile_bootstrap_over_pairs():
    # The documented protocol, written out: resample pairs, skip resamples where a
    # variable is constant (three pairs: often), take the 2.5 and 97.5 percentiles.
    x, y = np.array([0.0, 1.0, 2.0]), np.array([0.0, 2.0, 1.0])
    rng = np.random.default_rng(7)
    boot = []
    for _ in range(300):
        i = rng.integers(0, 3, 3)
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
            boot.append(sps.spearmanr(x[i], y[i]).statistic)
    st = spearman_ci(x, y, n_resamples=300, seed=7)
    assert 0 < len(boot) < 300
    assert (st["ci_low"], st["ci_high"]) == pytest.approx(tuple(np.quantile(boot, [0.025, 0.975])))
