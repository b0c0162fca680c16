"""The one text formatter of the report's numbers (hand-written values, no sweep)."""

import numpy as np
import pandas as pd
import pytest

from selectivity.analysis.summary import summary_table
from selectivity.report.format import format_alpha, format_ci, format_number, format_p, format_percent, yes_no
from selectivity.report.summary import format_summary


def test_format_ci_by_hand():
    assert format_ci(0.91234, 0.90911, 0.91523, 3, 100.0, 2, "%") == "91.23% [90.91, 91.52]"
    assert format_ci(0.2214, 0.2151, 0.2283, 3, 1.0, 3) == "0.221 [0.215, 0.228]"
    assert format_ci(0.5, np.nan, np.nan, 1, 100.0, 2, "%") == "50.00%"  # one run: no CI
    assert format_ci(np.nan, np.nan, np.nan, 0) == "-" and format_ci(0.5, 0.4, 0.6, 0) == "-"


def test_other_formats_by_hand():
    assert format_p(0.01234) == "0.0123" and format_p(1.5e-5) == "1.50e-05" and format_p(None) == "-"
    assert format_number(np.inf, ".3f") == "-" and format_number(1.23456, ".2f") == "1.23"
    assert format_percent(0.9123) == "91.23%" and format_percent(np.nan) == "-"
    assert format_alpha(-0.1) == "-0.1" and format_alpha(-0.0) == "0" and format_alpha(10.0) == "10"
    assert (yes_no(True), yes_no(np.False_), yes_no(None)) == ("yes", "no", "-")


def test_the_sweep_summary_prints_cis_as_the_report_does():
    runs = pd.DataFrame(
        [
            dict(
                run_id=f"r{a}{s}",
                model="m",
                alpha=a,
                seed=s,
                status="completed",
                test_accuracy=acc,
                mean_selectivity=si,
            )
            for a, accs, sis in (
                (0.0, (0.9, 0.92, 0.91), (0.2, 0.22, 0.21)),
                (1.0, (0.8, 0.83, 0.85), (0.4, 0.45, 0.5)),
            )
            for s, (acc, si) in enumerate(zip(accs, sis))
        ]
    )
    table = summary_table(runs, n_resamples=200)
    text = format_summary(table)
    for r in table.itertuples():
        acc = format_ci(
            r.test_accuracy_mean, r.test_accuracy_ci_low, r.test_accuracy_ci_high, r.n, 100.0, 2, "%"
        )
        si = format_ci(
            r.mean_selectivity_mean, r.mean_selectivity_ci_low, r.mean_selectivity_ci_high, r.n, 1.0, 3
        )
        assert acc in text and si in text
        assert acc.count(".") == 3 and all(len(part.split(".")[1].rstrip("%],")) == 2 for part in acc.split())


def test_runs_of_different_robust_training_methods_are_never_pooled():
    """A sweep over ``robust`` (the robust-training grid): one summary row per method, by hand."""
    rows = []
    for method, accs in (("none", (0.30, 0.34)), ("adversarial", (0.20, 0.22))):
        for seed, acc in enumerate(accs):
            rows.append(
                dict(
                    run_id=f"{method}{seed}",
                    model="m",
                    alpha=0.0,
                    seed=seed,
                    robust=method,
                    status="completed",
                    test_accuracy=acc,
                    mean_selectivity=0.3,
                )
            )
    table = summary_table(pd.DataFrame(rows), metrics=["test_accuracy"])
    by = table.set_index("robust")
    assert len(table) == 2 and set(by.index) == {"none", "adversarial"}
    assert by.loc["none", "test_accuracy_mean"] == pytest.approx(0.32)
    assert by.loc["adversarial", "test_accuracy_mean"] == pytest.approx(0.21)
    assert "adversarial" in format_summary(table)
    # one method only: not a grouping column
    assert "robust" not in summary_table(pd.DataFrame(rows[:2]), metrics=["test_accuracy"]).columns
