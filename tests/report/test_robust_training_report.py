"""The report's "Robust training and selectivity" section: its statistics by hand, and
``selectivity report`` on a tiny run of the ``robust-training`` preset (with the cross).

The sweep: the preset's four methods x seeds 0, 1 at alpha 0, plus standard and PGD
training at alpha -1 in the same directory (12 one-epoch ResNet20 runs on 120 random
CIFAR-sized images, PGD-1 for the adversarial runs), each with the preset's robustness
step shrunk to one corruption and PGD-1 at one epsilon.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats as sps

from helpers import TINY
from selectivity.cli import main
from selectivity.report import run_experiment
from selectivity.report.robust_training import arrows_table, cross_statistics, method_statistics
from selectivity.sweep import get_sweep_preset


def quiet(_msg: str) -> None:
    pass


def _frame(rows):
    return pd.DataFrame(rows, columns=["run_id", "model", "alpha", "seed", "method", "mean_selectivity"])


def test_method_statistics_by_hand():
    # standard 0.1, 0.2, 0.3; PGD 0.4, 0.5, 0.6; noise 0.1, 0.1, 0.4 (alpha 0, one model)
    values = {"none": [0.1, 0.2, 0.3], "adversarial": [0.4, 0.5, 0.6], "noise_augment": [0.1, 0.1, 0.4]}
    rows = [(f"{m}{s}", "resnet20", 0.0, s, m, v) for m, vs in values.items() for s, v in enumerate(vs)]
    st = method_statistics(_frame(rows), n_resamples=200)
    si = st[st["measure"] == "mean_selectivity"].set_index("method")
    assert list(si.index) == ["none", "adversarial", "noise_augment"]  # standard first
    # Student t by hand: PGD vs standard, equal variances 0.01, n = 3 each
    t = (0.5 - 0.2) / math.sqrt(0.01 * (1 / 3 + 1 / 3))
    p = 2 * sps.t.sf(t, df=4)
    adv = si.loc["adversarial"]
    assert adv["diff"] == pytest.approx(0.3) and adv["p"] == pytest.approx(p, rel=1e-9)
    assert adv["p_bonferroni"] == pytest.approx(min(2 * p, 1.0), rel=1e-9)  # two methods tested
    assert bool(adv["significant"]) == (2 * p < 0.05)
    assert np.isnan(si.loc["none", "diff"]) and si.loc["none", "mean"] == pytest.approx(0.2)
    noise = si.loc["noise_augment"]
    assert noise["diff"] == pytest.approx(0.0, abs=1e-12) and not bool(noise["significant"])
    table = arrows_table(st, "resnet20", 0.0)
    assert table["method"].tolist() == [
        "standard training",
        "PGD adversarial training",
        "Gaussian-noise augmentation",
    ]
    assert table.loc[1, "paper 2 expects"] == "higher" and table.loc[2, "paper 2 expects"] == "lower"
    assert table.loc[1, "observed"].startswith("higher (")
    assert (
        table.loc[1, "class selectivity"].startswith("0.500 [")
        and "(Δ +0.300" in table.loc[1, "class selectivity"]
    )


def test_cross_statistics_compare_each_method_with_itself_at_alpha_0():
    rows = []
    for m, shift in (("none", 0.0), ("adversarial", 0.3)):
        for a, da in ((0.0, 0.0), (-1.0, -0.1), (1.0, 0.1)):
            rows += [(f"{m}{a}{s}", "resnet20", a, s, m, 0.2 + shift + da + 0.01 * s) for s in range(3)]
    cross = cross_statistics(_frame(rows), n_resamples=200)
    adv = cross[(cross["method"] == "adversarial") & (cross["measure"] == "mean_selectivity")].set_index(
        "alpha"
    )
    assert adv.loc[-1.0, "diff"] == pytest.approx(-0.1) and adv.loc[1.0, "diff"] == pytest.approx(0.1)
    assert np.isnan(adv.loc[0.0, "diff"])
    assert cross_statistics(_frame(rows[:9]).assign(alpha=0.0), n_resamples=200).empty  # no alpha != 0


@pytest.mark.slow
def test_report_of_the_robust_training_preset_shows_the_section(tiny_data, tmp_path):
    spec = get_sweep_preset("robust-training")
    assert spec.grid == {"robust": ["none", "adversarial", "noise_augment", "augmix"]} and spec.alphas == [
        0.0
    ]
    spec.overrides = {**TINY, "epochs": 1, "adv_steps": 1}
    spec.executor, spec.workers = None, None
    spec.robustness = {
        **spec.robustness,
        "n_images": 40,
        "corruptions": ["gaussian_noise"],
        "severities": [3],
        "attacks": ["pgd"],
        "epsilons": [8 / 255],
        "pgd_steps": 1,
    }
    out = tmp_path / "sweep"
    res = run_experiment(spec, out, data=tiny_data, summary=False, progress=False, log=quiet)
    assert (res.runs.status == "completed").all() and len(res.runs) == 8
    # The cross with the regulariser, for two of the methods (the same sweep directory).
    spec.alphas, spec.grid = [-1.0], {"robust": ["none", "adversarial"]}
    res = run_experiment(spec, out, data=tiny_data, summary=False, progress=False, log=quiet)
    assert (res.runs.status == "completed").all() and len(res.runs) == 12
    r = CliRunner().invoke(main, ["report", str(out), "--out", str(tmp_path / "report")])
    assert r.exit_code == 0, r.output
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Robust training and selectivity" in html and 'id="robust-training"' in html
    assert "Both arrows: resnet20, α = 0" in html and "The regulariser crossed with each method" in html
    tables = tmp_path / "report" / "tables"
    arrows = pd.read_csv(tables / "robust-training-resnet20-alpha0.csv")
    si = arrows[arrows["measure"] == "mean_selectivity"]
    assert sorted(si["method"]) == ["adversarial", "augmix", "noise_augment", "none"]
    assert (si["n"] == 2).all() and si["p"].notna().sum() == 3  # three methods tested against standard
    assert {"clean_accuracy", "mean_corruption_accuracy", "pgd 8/255"} <= set(arrows["measure"])
    cross = pd.read_csv(tables / "robust-training-cross-resnet20.csv")
    assert set(cross["alpha"]) == {-1.0, 0.0} and set(cross["method"]) == set(si["method"])
    adv = cross[(cross["method"] == "adversarial") & (cross["alpha"] == -1.0)]
    assert "pgd 8/255" in set(adv["measure"])
    assert adv.loc[adv["measure"] == "mean_selectivity", "p"].notna().all()  # tested against alpha = 0
    assert (tmp_path / "report" / "figures" / "robust-training-layers-resnet20-alpha0.png").exists()
    # The paper-1 settings are split by method: standard and robust runs are never pooled.
    assert "resnet20, PGD adversarial training" in html and "resnet20, standard training" in html
