"""The report's robustness summaries on synthetic records of known answer (no training, ~10 s).

Runs: alpha -1, 0, 1 x seeds 0, 1, evaluated on all 19 types of the CIFAR-10-C release at
severities 1, 3, 5, with FGSM and PGD at 1, 2, 4, 8 /255 and the APGD attacks at 8/255.
PGD accuracy falls linearly from the clean accuracy to 0 at 8/255, so its relative AUC is
exactly 1/2 and its AUC (in accuracy x epsilon/255) 4 x clean accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selectivity.analysis.robustness import CORRUPTION_FAMILIES, EXTRA_CORRUPTIONS, STANDARD_CORRUPTIONS
from selectivity.report import ReportContext, ReportStats, build_report, collect
from selectivity.report.robustness_summaries import per_run_measures, summary_sections
from selectivity.run.config import make_config
from selectivity.run.files import write_json

ALL19 = (*STANDARD_CORRUPTIONS, *EXTRA_CORRUPTIONS)
EPS = [e / 255 for e in (1, 2, 4, 8)]
SOURCE = "read from a cifar10-c directory: /data/CIFAR-10-C"


def _cell(alpha: float, seed: int, c: str, s: int) -> float:
    k = ALL19.index(c)
    return 0.8 - 0.1 * s - 0.01 * k + 0.02 * alpha + 0.005 * seed


def _clean(alpha: float, seed: int) -> float:
    return 0.9 - 0.05 * alpha + 0.01 * seed


def _fgsm(alpha: float, seed: int) -> list[float]:
    if (alpha, seed) == (1.0, 1):
        return [0.5, 0.3, 0.4, 0.05]  # rises from 2/255 to 4/255: a masking check fails
    return [0.5, 0.3, 0.1, 0.02]


def _records(root: Path) -> Path:
    for alpha in (-1.0, 0.0, 1.0):
        for seed in (0, 1):
            d = root / "runs" / f"resnet20_alpha{alpha:+g}_seed{seed}"
            write_json(d / "config.json", make_config("smoke", dict(alpha=alpha, seed=seed)).to_dict())
            write_json(
                d / "result.json",
                dict(
                    status="completed",
                    test_accuracy=0.8,
                    mean_selectivity=0.3 + 0.1 * alpha + 0.01 * seed,
                    mean_precision=0.2,
                    dead_fraction=0.0,
                    layers=[dict(layer="l0", units=8, selectivity=0.3 + 0.1 * alpha, precision=0.2)],
                ),
            )
            clean = _clean(alpha, seed)
            cells = [
                {"corruption": c, "severity": s, "accuracy": _cell(alpha, seed, c, s)}
                for c in ALL19
                for s in (1, 3, 5)
            ]
            attacks = [
                {"attack": "pgd", "norm": "linf", "epsilon": e, "accuracy": clean * (1 - e / EPS[-1])}
                for e in EPS
            ]
            attacks += [
                {"attack": "fgsm", "norm": "linf", "epsilon": e, "accuracy": a}
                for e, a in zip(EPS, _fgsm(alpha, seed))
            ]
            attacks += [
                {"attack": a, "norm": "linf", "epsilon": 8 / 255, "accuracy": v}
                for a, v in (("apgd-ce", 0.0), ("apgd-t", 0.0), ("apgd-ensemble", 0.0))
            ]
            mean = float(np.mean([c["accuracy"] for c in cells]))
            write_json(
                d / "robustness.json",
                dict(
                    settings={"corruptions": list(ALL19), "pgd_steps": 10, "apgd_steps": 100},
                    n_images=40,
                    clean_accuracy=clean,
                    corruptions=cells,
                    n_corruption_cells=len(cells),
                    mean_corruption_accuracy=mean,
                    relative_corruption_accuracy=mean / clean,
                    corruption_source=SOURCE,
                    attacks=attacks,
                ),
            )
    return root


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    root = _records(tmp_path_factory.mktemp("summaries") / "sweep")
    data = collect(root)
    ctx = ReportContext(
        data=data,
        settings=[],
        stats=ReportStats(settings={}),
        out_dir=root.parent / "report",
        n_resamples=50,
        dpi=30,
    )
    (sec,) = summary_sections(ctx)
    return sec, data


def test_auc_and_corruption_measures_by_hand(section):
    _, data = section
    r = data.robustness
    per_run, labels = per_run_measures(r["summary"], r["corruptions"], r["attacks"])
    per_run = per_run.set_index("run_id")
    for _rid, row in per_run.iterrows():
        alpha, seed = float(row["alpha"]), int(row["seed"])
        clean = _clean(alpha, seed)
        assert row["rel_auc_pgd"] == pytest.approx(0.5)
        assert row["auc_pgd"] == pytest.approx(4 * clean)
        std = np.mean([_cell(alpha, seed, c, s) for c in STANDARD_CORRUPTIONS for s in (1, 3, 5)])
        assert row["mean_acc_15"] == pytest.approx(std)
        assert row["mean_acc_19"] == pytest.approx(
            np.mean([_cell(alpha, seed, c, s) for c in ALL19 for s in (1, 3, 5)])
        )
        # mCE against the mean of the two alpha = 0 runs, by hand (one severity sum per type)
        base = {
            c: sum(1 - (_cell(0.0, 0, c, s) + _cell(0.0, 1, c, s)) / 2 for s in (1, 3, 5))
            for c in STANDARD_CORRUPTIONS
        }
        mce = np.mean(
            [sum(1 - _cell(alpha, seed, c, s) for s in (1, 3, 5)) / base[c] for c in STANDARD_CORRUPTIONS]
        )
        assert row["mce_15"] == pytest.approx(mce)
        assert row["worst_apgd-ensemble"] == 0.0
    # the alpha = 0 runs' mean corruption error is 1 by construction
    zero = per_run[per_run["alpha"] == 0.0]
    assert zero["mce_15"].mean() == pytest.approx(1.0) and zero["rel_mce_19"].mean() == pytest.approx(1.0)
    assert labels["worst_apgd-ensemble"].startswith("AutoAttack-style")


def test_tables_figures_and_notes(section):
    sec, _ = section
    tables = {t.id: t for t in sec.tables}
    assert {
        "robustness-auc",
        "robustness-mce",
        "robustness-worst-case",
        "robustness-summaries-tests",
        "robustness-summaries-correlations",
        "robustness-masking",
        "robustness-summaries-runs",
    } <= set(tables)
    worst = tables["robustness-worst-case"].display
    assert any(c.startswith("AutoAttack-style") for c in worst.columns)
    assert any(c.startswith("PGD, ε = 8/255") for c in worst.columns)
    mce = tables["robustness-mce"].display
    assert any("19 types" in c for c in mce.columns) and any("15 standard" in c for c in mce.columns)
    # the alpha = 0 row of the mCE table reads 1 (to 3 decimals) for both seeds' mean
    row0 = mce[mce["α"] == "0"].iloc[0]
    assert row0["mCE vs α = 0, 15 types"].startswith("1.000")
    # the one non-monotone FGSM curve fails, every PGD curve passes
    masking = tables["robustness-masking"].data
    mono = masking[masking["check"] == "monotone_in_epsilon"].set_index(["run_id", "attack"])["passed"]
    assert (
        not mono[("resnet20_alpha+1_seed1", "fgsm")] and mono.drop(("resnet20_alpha+1_seed1", "fgsm")).all()
    )
    steps = masking[masking["check"] == "more_steps_not_weaker"]
    # at every shared epsilon, per run; PGD was made weaker than FGSM below 8/255 (a failure)
    assert len(steps) == 6 * 4
    at8 = steps["attack"].str.endswith("at 8/255")
    assert steps.loc[at8, "passed"].all() and not steps.loc[~at8, "passed"].any()
    assert set(steps.loc[at8, "attack"]) == {"fgsm < pgd < apgd-ce at 8/255"}
    assert "not run" in tables["robustness-masking"].display["runs passing"].tolist()
    ids = {f.id for f in sec.figures}
    assert {f"robustness-family-{f}" for f in set(CORRUPTION_FAMILIES.values())} <= ids
    assert all(f.path is not None and f.path.exists() for f in sec.figures), [f.note for f in sec.figures]
    assert any(SOURCE in n for n in sec.notes)


def test_report_page_has_the_summaries(tmp_path):
    root = _records(tmp_path / "sweep")
    html = build_report(root, tmp_path / "report", n_resamples=20).read_text(encoding="utf-8")
    assert '<section id="robustness-summaries">' in html
    assert "AutoAttack-style (APGD-CE + APGD-T)" in html
    assert (tmp_path / "report" / "tables" / "robustness-auc.csv").exists()
    t = pd.read_csv(tmp_path / "report" / "tables" / "robustness-summaries-runs.csv")
    assert len(t) == 6 and "rel_auc_pgd" in t.columns
