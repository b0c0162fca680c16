"""What the commands tell the user: interruption, progress only on a terminal, summary headlines."""

import ast
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import selectivity
from helpers import N_TEST, RUN_A, RUN_B
from selectivity.cli import main
from selectivity.report.summary import format_summary

SRC = Path(selectivity.__file__).resolve().parent


@pytest.mark.parametrize("command", ["sweep", "robustness"])
def test_ctrl_c_says_how_to_resume(tmp_path, monkeypatch, command):
    import selectivity.evaluate.robustness as robustness
    import selectivity.report as report

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "run_experiment", interrupted)
    monkeypatch.setattr(robustness, "sweep_robustness", interrupted)
    (tmp_path / "runs").mkdir()
    args = {
        "sweep": ["sweep", "--models", "resnet20", "--alphas=0", "--seeds", "1", "--out", str(tmp_path)],
        "robustness": ["robustness", str(tmp_path)],
    }[command]
    r = CliRunner().invoke(main, [*args, "--quiet"])
    assert r.exit_code == 130, r.output
    assert "rerun the same command to resume" in r.stderr and "Aborted!" not in r.output


def test_every_progress_bar_is_for_a_terminal_only():
    """tqdm with ``disable=None`` draws only on a TTY: log files get no carriage returns."""
    calls = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", "")) == "tqdm"
            ):
                kw = {k.arg: k.value for k in node.keywords}
                ok = (
                    "disable" in kw
                    and isinstance(kw["disable"], ast.Constant)
                    and kw["disable"].value is None
                )
                calls.append((f"{path.relative_to(SRC)}:{node.lineno}", ok))
    assert len(calls) >= 6
    assert [c for c, ok in calls if not ok] == []


def test_progress_is_not_written_to_a_log(tiny_sweep_copy, tiny_data):
    args = ["robustness", str(tiny_sweep_copy), "--data", str(tiny_data), "--images", "20"]
    args += ["--corruptions", "fog", "--severities", "1", "--attacks", "none", "--batch-size", "20"]
    r = CliRunner().invoke(main, args)  # not --quiet, output not a terminal
    assert r.exit_code == 0, r.output
    assert "\r" not in r.output and RUN_A in r.stdout and RUN_B in r.stdout


# --------------------------------------------------------------------------- summaries
def _table(n: int) -> pd.DataFrame:
    """A summary_table-shaped frame: one model, alpha 0, ``n`` completed runs."""
    t = pd.DataFrame(
        {
            "model": ["resnet20"],
            "alpha": [0.0],
            "n": [n],
            "test_accuracy_mean": [0.9],
            "test_accuracy_ci_low": [0.89],
            "test_accuracy_ci_high": [0.91],
        }
    )
    t.attrs.update(group_cols=["model", "alpha"], metrics=["test_accuracy"], confidence=0.95)
    return t


def test_summary_warns_when_groups_have_fewer_than_three_runs():
    two = format_summary(_table(2))
    assert "fewer than 3 runs" in two and "not meaningful" in two
    assert "fewer than 3 runs" not in format_summary(_table(3))


def test_sweep_summary_has_the_robustness_headline(tiny_sweep_copy, tiny_data):
    from selectivity.evaluate.robustness import robustness_frame

    args = ["robustness", str(tiny_sweep_copy), "--data", str(tiny_data), "--images", str(N_TEST // 2)]
    args += ["--corruptions", "fog,contrast", "--severities", "1", "--attacks", "fgsm", "--epsilons", "2/255"]
    r = CliRunner().invoke(main, [*args, "--batch-size", "20", "--quiet"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["summarize", str(tiny_sweep_copy), "--no-figures"])
    assert r.exit_code == 0, r.output
    rob = robustness_frame(tiny_sweep_copy, "summary")
    lines = r.stdout.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("robustness"))
    assert "2 runs" in lines[head] and f"{N_TEST // 2} test images" in lines[head]
    for _, row in rob.iterrows():  # one alpha per run: its line shows that run's numbers
        line = next(ln for ln in lines[head:] if ln.split()[:1] == [f"{row['alpha']:g}"])
        assert f"{100 * row['clean_accuracy']:.1f}%" in line
        assert f"{100 * row['mean_corruption_accuracy']:.1f}%" in line
        assert f"{row['relative_corruption_accuracy']:.2f}" in line


def test_geometry_reports_progress_in_images_within_a_run(tiny_sweep_copy, tiny_data):
    """Inside one run the work advances in images (clean, each perturbation, probe, gradients)."""
    from selectivity.evaluate.geometry import GeometrySettings, evaluate_run

    settings = GeometrySettings(
        n_images=40,
        layers=("act1",),
        corruptions=("gaussian_noise",),
        severities=(3,),
        attacks=("pgd",),
        epsilons=(4 / 255,),
        match_l2=True,
        pgd_steps=1,
        gradient_images=8,
        gradient_layers=("act1",),
        batch_size=20,
    )
    calls = []
    res = evaluate_run(
        tiny_sweep_copy / "runs" / RUN_A,
        settings,
        tiny_data,
        force=True,
        on_images=lambda done, total: calls.append((done, total)),
    )
    assert not res["reused"]
    # 40 images: clean + 3 perturbations (noise, L-inf PGD, matched L2 PGD; the matched
    # budget is the noise's median distance, measured in its own pass); 8 gradient images
    # for one layer
    total = 40 * (1 + 3) + 8 * 1
    assert {t for _, t in calls} == {total} and calls[-1][0] == total
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(done) == 2 * (1 + 3) + 1  # per batch and gradient layer


def test_report_says_each_step_and_quiet_silences_it(tiny_sweep_copy, tmp_path):
    args = ["report", str(tiny_sweep_copy), "--resamples", "20"]
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    lines = r.stderr.splitlines()
    steps = ["reading the sweep's records", "2 runs in 1 setting", "statistics", "section ", "wrote "]
    at = [next(i for i, ln in enumerate(lines) if s in ln) for s in steps]
    assert at == sorted(at), lines  # in the order they happen, the page last
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "b"), "--quiet"])
    assert r.exit_code == 0 and r.stderr == "" and r.stdout.strip().endswith("report.html")
