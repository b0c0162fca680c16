"""A sweep checks what every run needs (data, model names, analysis settings) once, before any run."""

import pytest
from click.testing import CliRunner

from helpers import TINY
from selectivity.cli import main
from selectivity.sweep import SweepSpec
from selectivity.sweep import spec as spec_module

TINY_SETS = [x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]


def _sweep(out, data, *extra):
    args = ["sweep", "--models", "resnet20", "--alphas=-1,1", "--seeds", "1", "--out", str(out)]
    args += ["--data", str(data), "--executor", "inprocess", "--quiet", *TINY_SETS, *extra]
    return CliRunner().invoke(main, args)


def _one_error_line(r, code: int) -> str:
    assert r.exit_code == code, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, r.output
    return errors[0]


def test_a_wrong_data_path_stops_the_sweep_once_before_any_run(tmp_path):
    out = tmp_path / "sweep"
    r = _sweep(out, tmp_path / "no-such-data")
    line = _one_error_line(r, 1)
    assert "no-such-data" in line
    assert "failed" not in r.output and "figures in" not in r.output  # no run, no summary
    assert not (out / "runs").exists() or not any((out / "runs").iterdir())


def test_a_data_folder_without_the_dataset_stops_the_sweep(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _sweep(tmp_path / "sweep", empty)
    assert "cifar-10-python.tar.gz" in _one_error_line(r, 1)


def test_an_unknown_model_stops_the_sweep_before_any_run(tmp_path, tiny_data):
    out = tmp_path / "sweep"
    args = ["sweep", "--models", "resnet20,resnet21", "--alphas=0", "--seeds", "1", "--out", str(out)]
    r = CliRunner().invoke(main, [*args, "--data", str(tiny_data), "--quiet"])
    assert "known models" in _one_error_line(r, 2)
    assert not out.exists()


@pytest.fixture
def bad_robustness_preset(monkeypatch):
    def preset():
        """A preset whose robustness settings misspell a key."""
        return SweepSpec(
            models=["resnet20"], alphas=[0.0], seeds=[0], overrides=dict(TINY), robustness={"n_image": 10}
        )

    monkeypatch.setitem(spec_module._SWEEP_PRESETS, "bad-robustness", preset)
    return "bad-robustness"


def test_bad_analysis_settings_of_a_preset_stop_the_sweep_before_any_run(
    tmp_path, tiny_data, bad_robustness_preset
):
    out = tmp_path / "sweep"
    r = CliRunner().invoke(
        main,
        ["sweep", "--preset", bad_robustness_preset, "--out", str(out), "--data", str(tiny_data), "--quiet"],
    )
    line = _one_error_line(r, 2)
    assert "unknown robustness setting 'n_image'" in line and "did you mean 'n_images'?" in line
    assert not out.exists()
