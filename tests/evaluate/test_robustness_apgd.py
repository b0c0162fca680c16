"""APGD in the robustness step: its settings reach the attack, and it is never weaker than PGD.

On the session's tiny trained sweep (``tiny_sweep`` in conftest.py); the spy test replaces
the attack by a recorder, so it costs no attack at all.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import selectivity.evaluate.robustness as rob
from selectivity.evaluate.robustness import (
    RobustnessSettings,
    robustness_frame,
    robustness_results,
    sweep_robustness,
)
from selectivity.perturb import AttackOutcome
from selectivity.run.files import read_json

EPS = 0.5 / 255  # small enough that PGD leaves some images correct on the tiny networks


@pytest.fixture(scope="module")
def attacked(tiny_sweep, tiny_data, tmp_path_factory) -> Path:
    """The tiny sweep under PGD-10, APGD-CE-10, APGD-T-10 (3 targets) and their ensemble at one epsilon."""
    out = Path(shutil.copytree(tiny_sweep.path, tmp_path_factory.mktemp("apgd") / "sweep"))
    settings = RobustnessSettings(
        n_images=None,
        corruptions=(),
        attacks=("pgd", "apgd-ce", "apgd-t", "apgd-ensemble"),
        epsilons=(EPS,),
        apgd_epsilons=(EPS,),
        pgd_steps=10,
        apgd_steps=10,
        apgd_target_classes=3,
        batch_size=80,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sweep_robustness(out, settings, str(tiny_data), progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.slow
def test_apgd_never_weaker_than_pgd_with_the_same_budget(attacked):
    acc = robustness_frame(attacked, "attacks").pivot_table(
        index="run_id", columns="attack", values="accuracy"
    )
    clean = robustness_frame(attacked, "summary").set_index("run_id")["clean_accuracy"]
    assert (acc["pgd"] < clean[acc.index]).any()  # the attack bites on some network
    for rid, a in acc.iterrows():
        assert a["apgd-ce"] <= a["pgd"], rid  # 10 APGD iterations against 10 PGD steps
        # the AutoAttack-style accuracy is the per-sample minimum of APGD-CE and APGD-T
        assert a["apgd-ensemble"] <= min(a["apgd-ce"], a["apgd-t"]), rid
        assert a["apgd-ensemble"] >= a["apgd-ce"] + a["apgd-t"] - clean[rid] - 1e-12, rid


@pytest.mark.slow
def test_apgd_rows_and_settings_are_stored(attacked):
    (path,) = robustness_results(attacked / "runs" / "resnet20_alpha-1_seed0").values()
    saved = read_json(path)
    assert saved["settings"]["apgd_steps"] == 10 and saved["settings"]["apgd_target_classes"] == 3
    assert {(a["attack"], a["epsilon"]) for a in saved["attacks"]} == {
        (a, EPS) for a in ("pgd", "apgd-ce", "apgd-t", "apgd-ensemble")
    }


def test_apgd_settings_reach_the_attack(tiny_sweep, tiny_data, tmp_path, monkeypatch):
    """Steps, restarts, targets and the seeded generator are passed through, per epsilon."""
    out = Path(shutil.copytree(tiny_sweep.path, tmp_path / "sweep"))
    calls: list[dict] = []

    def record(name, model, x, y, epsilon, **kw):
        calls.append({"name": name, "epsilon": epsilon, "seed": kw["generator"].initial_seed(), **kw})
        correct = torch.ones(len(y), dtype=torch.bool)
        return AttackOutcome(x, torch.zeros(len(y)), correct)

    monkeypatch.setattr(rob, "attack_outcome", record)
    settings = RobustnessSettings(
        n_images=20,
        corruptions=(),
        attacks=("apgd-ce", "apgd-ensemble"),
        epsilons=(1 / 255,),
        apgd_epsilons=(2 / 255, 8 / 255),
        apgd_steps=7,
        apgd_restarts=2,
        apgd_target_classes=4,
        attack_seed=123,
        batch_size=20,
    )
    sweep_robustness(out, settings, str(tiny_data), progress=False)
    per_run = [c for c in calls if c["epsilon"] == 2 / 255][:2]  # the first run at 2/255
    ce, t = per_run
    assert (ce["name"], t["name"]) == ("apgd-ce", "apgd-t")
    for c in (ce, t):
        assert (c["steps"], c["restarts"], c["seed"], c["norm"]) == (7, 2, 123, "linf")
    assert t["n_target_classes"] == 4 and t["start"] is not None  # APGD-T continues APGD-CE's outcome
    assert t["generator"] is ce["generator"]  # the ensemble's draws continue APGD-CE's, as apgd_ensemble
    assert {c["epsilon"] for c in calls} == {2 / 255, 8 / 255}  # apgd_epsilons, not the FGSM/PGD grid
    assert len(calls) == 2 * 2 * 2  # 2 runs x 2 epsilons x (APGD-CE, APGD-T stage): APGD-CE runs once
