"""run_experiment: the sweep command's workflow (train, robustness, summary) as one library call."""

import re

import pytest

from helpers import N_TEST, RUN_A, RUN_B, tiny_spec
from selectivity.evaluate.robustness import RobustnessSettings
from selectivity.report import robustness_settings, run_experiment
from selectivity.run.config import ConfigError
from selectivity.sweep import get_sweep_preset, list_sweep_presets


@pytest.mark.parametrize("name", sorted(list_sweep_presets()))
def test_every_sweep_preset_has_valid_robustness_settings(name):
    spec = get_sweep_preset(name)
    settings = robustness_settings(spec)
    assert settings is None if spec.robustness is None else isinstance(settings, RobustnessSettings)
    if settings is not None:  # every key the preset names is taken as given, none dropped
        assert {k: settings.to_dict()[k] for k in spec.robustness} == {
            k: list(v) if isinstance(v, (list, tuple)) else v for k, v in spec.robustness.items()
        }


def test_quick_preset_asks_for_robustness():
    settings = robustness_settings(get_sweep_preset("quick"))
    assert settings is not None and settings.n_images == 500 and settings.pgd_steps == 5


@pytest.mark.parametrize(
    "robustness, message",
    [
        ({"n_image": 500}, "unknown robustness setting 'n_image' (did you mean 'n_images'?)"),
        ({"severities": [0]}, "severity must be an integer in 1..5"),
        ({"attacks": ["cw"]}, "unknown attack 'cw'"),
    ],
)
def test_bad_robustness_settings_stop_before_any_training(tmp_path, robustness, message):
    out = tmp_path / "sweep"
    spec = tiny_spec(robustness=robustness)
    # the data path does not exist: any training would fail on it, after writing the sweep
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_experiment(spec, out, data=str(tmp_path / "no-data"), progress=False, log=lambda _m: None)
    assert not out.exists()


def test_run_experiment_resumes_and_adds_robustness_and_summary(tiny_sweep_copy, tiny_data):
    spec = tiny_spec(
        robustness=dict(n_images=N_TEST // 2, corruptions=["fog"], severities=[1], attacks=[], batch_size=40)
    )
    messages = []
    res = run_experiment(spec, tiny_sweep_copy, data=tiny_data, progress=False, log=messages.append)
    assert "2 already finished" in "\n".join(messages)  # nothing trained again
    assert res.failed == 0 and set(res.runs["run_id"]) == {RUN_A, RUN_B}
    assert res.robustness is not None and set(res.robustness["run_id"]) == {RUN_A, RUN_B}
    for run in (RUN_A, RUN_B):
        assert (tiny_sweep_copy / "runs" / run / "robustness.json").exists()
    assert res.summary["csv"].exists() and res.summary["txt"].exists()
    # robustness=False, summary=False: only the (finished) sweep
    res = run_experiment(
        spec, tiny_sweep_copy, data=tiny_data, robustness=False, summary=False, progress=False, log=print
    )
    assert res.robustness is None and res.summary == {}
