"""Two kinds of preset, one listing: cross-hints, did-you-mean, the sweep preset recorded, CPU warning."""

import json
import math
import re

import pytest
import torch
from click.testing import CliRunner

from selectivity.cli import main
from selectivity.run.config import list_presets, make_config
from selectivity.sweep import get_sweep_preset, list_sweep_presets
from selectivity.training.estimate import estimate_training, steps_per_epoch


def _one_error_line(r, code: int) -> str:
    assert r.exit_code == code, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), r.output
    return lines[0]


def test_presets_lists_both_kinds_with_descriptions():
    r = CliRunner().invoke(main, ["presets"])
    assert r.exit_code == 0, r.output
    train_part, sweep_part = r.output.split("sweep presets")
    for name, doc in list_presets().items():
        assert re.search(rf"^\s+{re.escape(name)}\s+{re.escape(doc)}$", train_part, re.M), name
    for name, doc in list_sweep_presets().items():
        assert re.search(rf"^\s+{re.escape(name)}\s+{re.escape(doc)}$", sweep_part, re.M), name


def test_sweep_help_lists_every_sweep_preset():
    r = CliRunner().invoke(main, ["sweep", "--help"])
    text = " ".join(r.output.split())
    for name in list_sweep_presets():
        assert name in text, name


def test_a_training_preset_given_to_sweep_points_at_train_preset(tmp_path):
    r = CliRunner().invoke(main, ["sweep", "--preset", "smoke", "--out", str(tmp_path / "s")])
    line = _one_error_line(r, 2)
    assert "'smoke' is a training preset" in line and "--train-preset smoke" in line
    assert not (tmp_path / "s").exists()


def test_a_sweep_preset_given_to_train_points_at_sweep(tmp_path):
    r = CliRunner().invoke(main, ["train", "--preset", "quick", "--out", str(tmp_path / "r")])
    line = _one_error_line(r, 2)
    assert "'quick' is a sweep preset" in line and "selectivity sweep --preset quick" in line
    r = CliRunner().invoke(main, ["sweep", "--train-preset", "quick", "--out", str(tmp_path / "s")])
    assert "'quick' is a sweep preset" in _one_error_line(r, 2)


@pytest.mark.parametrize(
    "args, hint",
    [
        (["sweep", "--preset", "quik"], "did you mean 'quick'?"),
        (["sweep", "--preset", "medum"], "did you mean 'medium'?"),
        (["train", "--preset", "smok"], "did you mean 'smoke'?"),
        (
            ["sweep", "--models", "resnet20", "--alphas", "0", "--seeds", "1", "--train-preset", "papr"],
            "did you mean 'paper'?",
        ),
    ],
)
def test_unknown_preset_names_get_a_did_you_mean(tmp_path, args, hint):
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "x")])
    line = _one_error_line(r, 2)
    assert hint in line and "known:" in line


def test_every_sweep_preset_records_its_name():
    for name in list_sweep_presets():
        spec = get_sweep_preset(name)
        assert spec.sweep_preset == name and spec.to_dict()["sweep_preset"] == name
        assert spec.preset in list_presets()  # `preset` stays the training preset of every run


def test_the_sweep_preset_is_recorded_and_old_records_still_resume(tiny_sweep_copy, tiny_data):
    from helpers import tiny_spec
    from selectivity.run.files import read_json, write_json
    from selectivity.sweep import run_sweep

    path = tiny_sweep_copy / "sweep.json"
    old = read_json(path)
    assert "sweep_preset" not in old["spec"] or old["spec"]["sweep_preset"] is None
    # a sweep.json written before the field existed has no such key
    write_json(path, {**old, "spec": {k: v for k, v in old["spec"].items() if k != "sweep_preset"}})
    messages = []
    df = run_sweep(tiny_spec(), tiny_sweep_copy, data=str(tiny_data), progress=False, log=messages.append)
    assert (df.status == "completed").all() and "2 already finished" in "\n".join(messages)
    assert "history" not in read_json(path)  # the same sweep, not a changed one
    spec = tiny_spec(sweep_preset="quick")
    run_sweep(spec, tiny_sweep_copy, data=str(tiny_data), progress=False, log=messages.append)
    rec = read_json(path)
    assert rec["spec"]["sweep_preset"] == "quick" and rec["spec"]["preset"] == "paper"


# --------------------------------------------------------------------------- train on a CPU
def test_estimate_is_one_measured_step_times_the_steps_of_the_run():
    cfg = make_config("smoke", {"batch_size": 4, "num_threads": 1})
    assert steps_per_epoch(cfg) == math.ceil(min(50_000 - 500, 512) / 4) == 128
    est = estimate_training(cfg, timed_steps=1)
    assert 0 < est.step_seconds < 60 and est.device == "cpu"
    assert est.seconds == pytest.approx(est.step_seconds * 128 * cfg.epochs)
    paper = make_config("paper", {"train_subset": None})
    assert steps_per_epoch(paper) == math.ceil(45_000 / 256) == 176


def test_train_without_gpu_and_preset_says_what_it_will_do(tmp_path, tiny_data, monkeypatch):
    import selectivity.training.single as single

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    calls = []

    def fake_train_run(cfg, out, **kw):
        calls.append(cfg)
        return {"status": "completed"}

    monkeypatch.setattr(single, "train_run", fake_train_run)
    args = ["train", "--data", str(tiny_data), "--out", str(tmp_path / "r"), "--set", "batch_size=8"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert calls and calls[0].epochs == 200
    assert "preset 'paper'" in r.stderr and "200 epochs" in r.stderr and "no GPU" in r.stderr
    assert "measured" in r.stderr and "--preset cpu-short" in r.stderr
    assert re.search(r"about [0-9.]+ (h|min)\b", r.stderr), r.stderr
    # a preset named, or --quiet: no such line
    for extra in (["--preset", "paper"], ["--quiet"]):
        r = CliRunner().invoke(main, [*args, *extra])
        assert r.exit_code == 0 and "no GPU" not in r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["status"] == "completed"
