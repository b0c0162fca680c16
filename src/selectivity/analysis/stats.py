"""Statistics over the replicates (seeds) of a sweep, following paper 1, appendix A.1.

The paper reports bootstrapped 95% confidence intervals, two-sample t-tests against
the unregularised networks (alpha = 0) with Bonferroni correction, Wilcoxon rank-sum
tests between promoting (alpha > 0) and penalising (alpha < 0) selectivity at equal
|alpha| (Bonferroni-corrected), and a paired t-test for the CCA distance ratio. All
tests are SciPy's (``scipy.stats``); nothing is re-derived by hand except the
Bonferroni correction, which is a one-liner.

Choices the paper leaves open (documented here, configurable in the functions):

* Bootstrap CI method: ``"percentile"`` by default. The paper's figures look like
  seaborn's, whose error bars are percentile-bootstrap CIs; ``method="BCa"`` (SciPy's
  default) or ``"basic"`` are available.
* A sample with one value has no CI: :func:`bootstrap_ci` returns ``(nan, nan)``
  rather than ``(v, v)``, which would falsely suggest zero uncertainty. If every value
  is identical the CI is ``(v, v)`` (the bootstrap distribution is degenerate).
* NaN values (e.g. a diverged run) are dropped, with a ``RuntimeWarning`` saying how
  many; infinities are kept.
* t-tests are Student's (``equal_var=True``, SciPy's default) by default, as the paper
  says "t-test"; ``equal_var=False`` gives Welch's test, which does not assume equal
  variances (the accuracy variance across seeds grows at large positive alpha).
* Bonferroni families follow the paper's figures: the penalising alphas (Fig. 2) and
  the promoting alphas (Fig. 4) are tested against alpha = 0 as two separate families
  (``family="sign"``, the default), and the promote-vs-penalise rank-sum tests (Fig. 5)
  form a third. ``family="all"`` corrects over every alpha of both signs together.
  Every table carries the family's name and size ``m`` beside each corrected p.
* Bonferroni ``m`` = number of tests actually performed in the family (groups with
  fewer than two values cannot be t-tested; they get ``p = NaN`` and do not count).
* Spearman correlations across runs (:func:`spearman_ci`): percentile bootstrap over
  the (x, y) pairs; undefined (NaN) with fewer than 3 finite pairs or a constant
  variable, and resamples in which a variable is constant are left out of the CI.
* Several rows per unit (e.g. one row per layer and seed): pass ``unit_cols`` (e.g.
  ``("seed",)``) to average within each unit first so that each seed contributes one
  observation (avoids pseudo-replication).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats as sps

__all__ = [
    "FAMILIES",
    "Family",
    "bootstrap_ci",
    "summarize",
    "bonferroni",
    "ttests_against_baseline",
    "rank_sum_promote_vs_penalise",
    "paired_test",
    "spearman_ci",
    "ALPHA_DECIMALS",
    "normalise_alpha",
    "is_baseline",
]

#: Alphas are compared after rounding to this many decimals, so that ``-0.1`` read
#: back from JSON and ``-1 / 10`` computed in Python are one group.
ALPHA_DECIMALS = 12


def normalise_alpha(alpha: Any) -> Any:
    """Round alpha(s) to :data:`ALPHA_DECIMALS` decimals: the one alpha normalisation.

    Parameters
    ----------
    alpha : float, array-like or pandas.Series
        Regularisation scale(s).

    Returns
    -------
    float, numpy.ndarray or pandas.Series
        Same kind as the input (a Series keeps its index), values as float64.
    """
    if isinstance(alpha, (int, float, np.floating, np.integer)):
        return float(np.round(float(alpha), ALPHA_DECIMALS))
    if hasattr(alpha, "astype") and hasattr(alpha, "index"):  # pandas Series
        return alpha.astype(float).round(ALPHA_DECIMALS)
    return np.round(np.asarray(alpha, dtype=float), ALPHA_DECIMALS)


def is_baseline(alpha: Any, baseline: float = 0.0) -> Any:
    """Whether alpha(s) equal the unregularised ``baseline`` after :func:`normalise_alpha`."""
    return normalise_alpha(alpha) == normalise_alpha(baseline)


_TTEST_COLUMNS = [
    "family",
    "group",
    "n",
    "n_baseline",
    "mean",
    "baseline_mean",
    "diff",
    "statistic",
    "p",
    "m",
    "p_bonferroni",
    "significant",
]
_RANKSUM_COLUMNS = [
    "abs_alpha",
    "n_promote",
    "n_penalise",
    "mean_promote",
    "mean_penalise",
    "statistic",
    "p",
    "m",
    "p_bonferroni",
    "significant",
]

#: Names of the Bonferroni families (see the module docstring).
FAMILIES = ("sign", "all")
Family = Literal["sign", "all"]


def _clean(values, name: str = "values") -> np.ndarray:
    """1-D float array with NaNs dropped (warning if any)."""
    arr = np.asarray(values, dtype=float).ravel()
    nan = np.isnan(arr)
    if nan.any():
        warnings.warn(
            f"{name}: dropped {int(nan.sum())} NaN value(s) of {arr.size}",
            RuntimeWarning,
            stacklevel=3,
        )
        arr = arr[~nan]
    return arr


def bootstrap_ci(
    values,
    confidence: float = 0.95,
    n_resamples: int = 10000,
    seed: int | None = 0,
    statistic: Callable = np.mean,
    method: Literal["percentile", "BCa", "basic"] = "percentile",
) -> tuple[float, float]:
    """Bootstrap confidence interval of a statistic (``scipy.stats.bootstrap``).

    Parameters
    ----------
    values : array_like, shape (n,)
        One value per replicate (e.g. per seed). NaNs are dropped with a warning.
    confidence : float, default 0.95
        Confidence level.
    n_resamples : int, default 10000
        Number of bootstrap resamples.
    seed : int or None, default 0
        Seed of the resampling generator (``None``: nondeterministic).
    statistic : callable, default ``np.mean``
        Statistic of a 1-D sample. If it accepts ``axis`` SciPy vectorises it.
    method : {"percentile", "BCa", "basic"}, default "percentile"
        Bootstrap CI method (see module docstring for the choice).

    Returns
    -------
    (low, high) : tuple of float
        ``(nan, nan)`` if only one value remains; ``(v, v)`` if all values equal ``v``.

    Raises
    ------
    ValueError
        If no (non-NaN) value is given, or ``confidence`` is not in (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    arr = _clean(values)
    if arr.size == 0:
        raise ValueError("bootstrap_ci: no (non-NaN) values")
    if arr.size == 1:
        return (float("nan"), float("nan"))
    if np.all(arr == arr[0]):
        v = float(statistic(arr))
        return (v, v)
    res = sps.bootstrap(
        (arr,),
        statistic,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method=method,
        rng=np.random.default_rng(seed),
    )
    ci = res.confidence_interval
    return (float(ci.low), float(ci.high))


def summarize(
    values,
    confidence: float = 0.95,
    n_resamples: int = 10000,
    seed: int | None = 0,
    method: Literal["percentile", "BCa", "basic"] = "percentile",
) -> dict:
    """Mean, bootstrap CI of the mean and standard deviation of replicate values.

    Parameters
    ----------
    values : array_like, shape (n,)
        NaNs are dropped with a warning.
    confidence, n_resamples, seed, method
        See :func:`bootstrap_ci`.

    Returns
    -------
    dict
        ``n`` (int, after dropping NaN), ``mean``, ``ci_low``, ``ci_high``, ``std``
        (sample standard deviation, ``ddof=1``). With ``n == 0`` every other entry is
        NaN; with ``n == 1`` the CI and ``std`` are NaN.
    """
    arr = _clean(values)
    n = int(arr.size)
    if n == 0:
        nan = float("nan")
        return {"n": 0, "mean": nan, "ci_low": nan, "ci_high": nan, "std": nan}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaNs already reported
        low, high = bootstrap_ci(arr, confidence, n_resamples, seed, np.mean, method)
    std = float(np.std(arr, ddof=1)) if n > 1 else float("nan")
    return {"n": n, "mean": float(np.mean(arr)), "ci_low": low, "ci_high": high, "std": std}


def bonferroni(pvalues, m: int | None = None) -> np.ndarray:
    """Bonferroni correction ``min(p * m, 1)``.

    Parameters
    ----------
    pvalues : array_like
        Uncorrected p-values; NaNs stay NaN.
    m : int, optional
        Number of tests; default: the number of non-NaN p-values.

    Returns
    -------
    numpy.ndarray
        Corrected p-values, same shape as ``pvalues``.
    """
    p = np.asarray(pvalues, dtype=float)
    if m is None:
        m = int(np.count_nonzero(~np.isnan(p)))
    if m < 0:
        raise ValueError(f"m must be >= 0, got {m}")
    if np.any(p[~np.isnan(p)] < 0) or np.any(p[~np.isnan(p)] > 1):
        raise ValueError("p-values must be in [0, 1]")
    return np.minimum(p * max(m, 1), 1.0)


def _unit_values(df: pd.DataFrame, value_col: str, key_col: str, unit_cols) -> pd.DataFrame:
    """Optionally average ``value_col`` within each (key, *unit_cols); drop NaN values."""
    for col in (value_col, key_col, *(unit_cols or ())):
        if col not in df.columns:
            raise KeyError(f"column {col!r} not in DataFrame (columns: {list(df.columns)})")
    d = df[[key_col, *(unit_cols or ()), value_col]]
    nan = d[value_col].isna()
    if nan.any():
        warnings.warn(
            f"{value_col}: dropped {int(nan.sum())} NaN value(s) of {len(d)}",
            RuntimeWarning,
            stacklevel=3,
        )
        d = d[~nan]
    if unit_cols:
        d = d.groupby([key_col, *unit_cols], as_index=False, sort=True)[value_col].mean()
    return d


def _is_baseline(col: pd.Series, baseline) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(col) and isinstance(baseline, (int, float, np.number)):
        return normalise_alpha(col.to_numpy(dtype=float)) == normalise_alpha(float(baseline))
    return (col == baseline).to_numpy()


def ttests_against_baseline(
    df: pd.DataFrame,
    value_col: str,
    group_col: str = "alpha",
    baseline=0.0,
    unit_cols: Sequence[str] | None = None,
    equal_var: bool = True,
    alternative: Literal["two-sided", "less", "greater"] = "two-sided",
    significance: float = 0.05,
    family: Family = "sign",
) -> pd.DataFrame:
    """Two-sample t-test of every group against the baseline group, Bonferroni-corrected.

    Parameters
    ----------
    df : pandas.DataFrame
        Long format, one row per replicate (or per replicate and sub-unit, see
        ``unit_cols``).
    value_col : str
        Column with the measurement (e.g. ``"test_acc"``).
    group_col : str, default "alpha"
        Column defining the groups.
    baseline : default 0.0
        Value of ``group_col`` for the baseline group (numeric values are matched
        with an absolute tolerance of 1e-12).
    unit_cols : sequence of str, optional
        If given, values are first averaged within each (group, *unit_cols) so each
        unit (e.g. seed) is one observation.
    equal_var : bool, default True
        ``True``: Student's t-test (pooled variance, the paper's "t-test");
        ``False``: Welch's. Passed to ``scipy.stats.ttest_ind``.
    alternative : {"two-sided", "less", "greater"}
        Alternative hypothesis for ``mean(group) - mean(baseline)``.
    significance : float, default 0.05
        Threshold on the Bonferroni-corrected p-value for ``significant``.
    family : {"sign", "all"}, default "sign"
        Bonferroni family. ``"sign"``: groups below the baseline (``"penalise"``) and
        above it (``"promote"``) are corrected separately, as the paper's Fig. 2 and
        Fig. 4 are; needs a numeric ``group_col`` (otherwise one family ``"all"``).
        ``"all"``: one family of every group.

    Returns
    -------
    pandas.DataFrame
        One row per non-baseline group, sorted by group, with columns ``family``,
        ``group``, ``n``, ``n_baseline``, ``mean``, ``baseline_mean``, ``diff`` (mean -
        baseline mean), ``statistic`` (t), ``p``, ``m`` (number of groups tested in the
        family), ``p_bonferroni``, ``significant`` (``p_bonferroni < significance``).
        Groups with a single value get NaN statistics and are not counted in ``m``.

    Raises
    ------
    KeyError
        A named column is missing.
    ValueError
        The baseline group is missing or has fewer than 2 values.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    d = _unit_values(df, value_col, group_col, unit_cols)
    is_base = _is_baseline(d[group_col], baseline)
    base = d.loc[is_base, value_col].to_numpy(dtype=float)
    if base.size == 0:
        present = sorted(pd.unique(df[group_col]).tolist())
        raise ValueError(
            f"baseline {group_col}={baseline!r} has no (non-NaN) values; groups present: {present}"
        )
    if base.size < 2:
        raise ValueError(f"baseline {group_col}={baseline!r} has only {base.size} value; need >= 2")
    rows = []
    others = d.loc[~is_base]
    by_sign = (
        family == "sign"
        and pd.api.types.is_numeric_dtype(d[group_col])
        and isinstance(baseline, (int, float, np.number))
    )
    for group, sub in others.groupby(group_col, sort=True):
        vals = sub[value_col].to_numpy(dtype=float)
        if vals.size >= 2:
            res = sps.ttest_ind(vals, base, equal_var=equal_var, alternative=alternative)
            t, p = float(res.statistic), float(res.pvalue)
        else:
            t, p = float("nan"), float("nan")
        fam = ("penalise" if float(group) < float(baseline) else "promote") if by_sign else "all"
        rows.append(
            {
                "family": fam,
                "group": group,
                "n": int(vals.size),
                "n_baseline": int(base.size),
                "mean": float(vals.mean()),
                "baseline_mean": float(base.mean()),
                "diff": float(vals.mean() - base.mean()),
                "statistic": t,
                "p": p,
            }
        )
    out = pd.DataFrame(rows, columns=_TTEST_COLUMNS[:-3])
    return _correct_by_family(out, significance)


def _correct_by_family(out: pd.DataFrame, significance: float) -> pd.DataFrame:
    """Add ``m``, ``p_bonferroni`` and ``significant``, correcting within each family."""
    out = out.copy()
    out["m"] = 0
    out["p_bonferroni"] = np.nan
    for _fam, idx in out.groupby("family", sort=False).groups.items():
        p = out.loc[idx, "p"].to_numpy(dtype=float)
        m = int(np.count_nonzero(~np.isnan(p)))
        out.loc[idx, "m"] = m
        out.loc[idx, "p_bonferroni"] = bonferroni(p, m)
    out["m"] = out["m"].astype(int)
    out["p_bonferroni"] = out["p_bonferroni"].astype(float)
    out["significant"] = (out["p_bonferroni"] < significance).astype(bool)
    return out.reset_index(drop=True)


def rank_sum_promote_vs_penalise(
    df: pd.DataFrame,
    value_col: str,
    alpha_col: str = "alpha",
    unit_cols: Sequence[str] | None = None,
    alternative: Literal["two-sided", "less", "greater"] = "two-sided",
    significance: float = 0.05,
) -> pd.DataFrame:
    """Wilcoxon rank-sum tests between alpha > 0 and alpha < 0 at equal |alpha|.

    Parameters
    ----------
    df : pandas.DataFrame
        Long format, one row per replicate.
    value_col : str
        Measurement column.
    alpha_col : str, default "alpha"
        Regularisation-scale column (numeric).
    unit_cols : sequence of str, optional
        Average within each (alpha, *unit_cols) first, see
        :func:`ttests_against_baseline`.
    alternative : {"two-sided", "less", "greater"}
        Passed to ``scipy.stats.ranksums(promote, penalise)``; ``"less"`` tests
        whether promoting gives lower values than penalising.
    significance : float, default 0.05
        Threshold on the Bonferroni-corrected p-value.

    Returns
    -------
    pandas.DataFrame
        One row per |alpha| > 0 present with both signs, sorted by ``abs_alpha``:
        ``abs_alpha``, ``n_promote``, ``n_penalise``, ``mean_promote``,
        ``mean_penalise``, ``statistic`` (positive when promote ranks higher), ``p``,
        ``m`` (number of |alpha| compared: the family of Fig. 5), ``p_bonferroni``,
        ``significant``.
        |alpha| values present with only one sign are skipped.
    """
    d = _unit_values(df, value_col, alpha_col, unit_cols)
    alpha = d[alpha_col].to_numpy(dtype=float)
    # Round so that e.g. -0.1 and 0.1 written differently still pair up.
    abs_key = normalise_alpha(np.abs(alpha))
    values = d[value_col].to_numpy(dtype=float)
    rows = []
    for a in np.unique(abs_key[abs_key > 0]):
        promote = values[(abs_key == a) & (alpha > 0)]
        penalise = values[(abs_key == a) & (alpha < 0)]
        if promote.size == 0 or penalise.size == 0:
            continue
        res = sps.ranksums(promote, penalise, alternative=alternative)
        rows.append(
            {
                "abs_alpha": float(a),
                "n_promote": int(promote.size),
                "n_penalise": int(penalise.size),
                "mean_promote": float(promote.mean()),
                "mean_penalise": float(penalise.mean()),
                "statistic": float(res.statistic),
                "p": float(res.pvalue),
            }
        )
    out = pd.DataFrame(rows, columns=_RANKSUM_COLUMNS[:-3])
    out.insert(0, "family", "promote_vs_penalise")
    return _correct_by_family(out, significance).drop(columns="family")


def paired_test(
    a,
    b,
    method: Literal["ttest", "wilcoxon"] = "ttest",
    alternative: Literal["two-sided", "less", "greater"] = "two-sided",
) -> dict:
    """Paired test of ``a`` against ``b`` (e.g. cross-alpha vs within-alpha CCA distance).

    Parameters
    ----------
    a, b : array_like, shape (n,)
        Paired measurements (same order). Pairs with a NaN on either side are
        dropped with a warning.
    method : {"ttest", "wilcoxon"}, default "ttest"
        ``"ttest"``: paired t-test (``scipy.stats.ttest_rel``, the paper's choice);
        ``"wilcoxon"``: Wilcoxon signed-rank test (``scipy.stats.wilcoxon``).
    alternative : {"two-sided", "less", "greater"}
        For ``a - b`` (``"greater"``: a > b).

    Returns
    -------
    dict
        ``n`` (pairs used), ``mean_diff`` (mean of ``a - b``), ``statistic``, ``p``,
        ``method``.

    Raises
    ------
    ValueError
        Different lengths, fewer than 2 complete pairs, or unknown method.
    """
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired_test needs equal lengths, got {a.size} and {b.size}")
    bad = np.isnan(a) | np.isnan(b)
    if bad.any():
        warnings.warn(f"paired_test: dropped {int(bad.sum())} pair(s) with NaN", RuntimeWarning, stacklevel=2)
        a, b = a[~bad], b[~bad]
    if a.size < 2:
        raise ValueError(f"paired_test needs at least 2 complete pairs, got {a.size}")
    if method == "ttest":
        res = sps.ttest_rel(a, b, alternative=alternative)
    elif method == "wilcoxon":
        res = sps.wilcoxon(a, b, alternative=alternative)
    else:
        raise ValueError(f"method must be 'ttest' or 'wilcoxon', got {method!r}")
    return {
        "n": int(a.size),
        "mean_diff": float(np.mean(a - b)),
        "statistic": float(res.statistic),
        "p": float(res.pvalue),
        "method": method,
    }


def spearman_ci(
    x, y, n_resamples: int = 2000, seed: int | None = 0, confidence: float = 0.95
) -> dict[str, float | int]:
    """Spearman's rho of paired values, its p-value and a percentile bootstrap CI over pairs.

    The one Spearman correlation of the package (the report's robustness and mechanisms
    sections both use it).

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Paired values (e.g. one per run). Pairs with a non-finite value on either side
        are dropped.
    n_resamples : int, default 2000
        Bootstrap resamples of the pairs (indices drawn with replacement).
    seed : int or None, default 0
        Seed of the resampling generator.
    confidence : float, default 0.95
        CI level.

    Returns
    -------
    dict
        ``rho``, ``p``, ``ci_low``, ``ci_high`` (floats) and ``n`` (int, finite pairs
        used). Every float is NaN with fewer than 3 pairs or when ``x`` or ``y`` is
        constant; resamples in which ``x`` or ``y`` is constant (rho undefined) are
        left out of the CI, which is NaN if none remains.

    Raises
    ------
    ValueError
        ``x`` and ``y`` differ in length, or ``confidence`` is not in (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"spearman_ci needs paired values, got lengths {x.size} and {y.size}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    nan = float("nan")
    out: dict[str, float | int] = {"rho": nan, "p": nan, "ci_low": nan, "ci_high": nan, "n": n}
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    r = sps.spearmanr(x, y)
    out["rho"], out["p"] = float(r.statistic), float(r.pvalue)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))  # (resamples, n) pair indices
    boot = [sps.spearmanr(x[i], y[i]).statistic for i in idx if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0]
    if boot:
        a = (1 - confidence) / 2
        out["ci_low"], out["ci_high"] = (
            float(v) for v in np.quantile(np.asarray(boot, dtype=float), [a, 1 - a])
        )
    return out
