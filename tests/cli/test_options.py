"""One vocabulary across commands: every option spelled one way, explained, with the same device default.

The test walks every command's parameters (click introspection), so a new command or
option is checked without being listed here.
"""

import re

import click
import pandas as pd
import pytest
from click.testing import CliRunner

from selectivity.cli import main
from selectivity.cli.options import EpsilonList, NameList

#: Things that were spelled more than one way: the one spelling, then the retired ones.
SYNONYMS = {
    "--pgd-steps": ("--attack-steps", "--steps"),
    "--severities": ("--severity",),
    "--corrupted": ("--cifar10-c",),
    "--corruption-seed": (),
    "--per-layer": (),
}
#: Names that differ only by a plural s and mean one value / a list of the same thing.
SINGULAR_PLURAL = {("--model", "--models"), ("--alpha", "--alphas"), ("--seed", "--seeds")}
#: ``--seed`` is the model seed (initialisation, shuffling, augmentation) wherever it appears.
MODEL_SEED_COMMANDS = {"train"}
#: Commands that show progress bars or progress lines (all but listings and printouts).
PROGRESS_COMMANDS = {"train", "measure", "sweep", "report", "cca", "robustness", "geometry", "corrupt"}


def _options():
    for name, cmd in sorted(main.commands.items()):
        for p in cmd.params:
            if isinstance(p, click.Option):
                yield name, cmd, p


def _names(p: click.Option) -> list[str]:
    return [o for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]


def test_every_option_has_help():
    missing = [f"{c} {p.opts[0]}" for c, _, p in _options() if p.name != "help" and not p.help]
    assert not missing, f"options without help: {missing}"


def test_device_defaults_to_auto_everywhere():
    devices = {c: p.default for c, _, p in _options() if "--device" in p.opts}
    assert {"train", "measure", "robustness", "geometry", "cca", "report"} <= set(devices)
    assert set(devices.values()) == {"auto"}, devices


def test_each_option_is_spelled_one_way():
    visible = {n for _, _, p in _options() if not p.hidden for n in _names(p)}
    for canonical, retired in SYNONYMS.items():
        assert not set(retired) & visible, f"{sorted(set(retired) & visible)} should be {canonical}"
    # a singular and a plural of one word are one option spelled two ways, unless listed
    bare = {n.removeprefix("--no-").removeprefix("--") for n in visible}
    for n in bare:
        if n + "s" in bare or (n.endswith("y") and n[:-1] + "ies" in bare):
            plural = n + "s" if n + "s" in bare else n[:-1] + "ies"
            assert (f"--{n}", f"--{plural}") in SINGULAR_PLURAL, f"--{n} and --{plural}"


def test_an_option_name_is_a_flag_everywhere_or_nowhere():
    kinds: dict[str, set[bool]] = {}
    for _, _, p in _options():
        for n in _names(p):
            kinds.setdefault(n, set()).add(bool(p.is_flag))
    assert not [n for n, k in kinds.items() if len(k) > 1]


def test_seed_is_the_model_seed():
    assert {c for c, _, p in _options() if "--seed" in p.opts} == MODEL_SEED_COMMANDS
    for c in ("robustness", "corrupt"):
        assert any("--corruption-seed" in p.opts for cc, _, p in _options() if cc == c)


def test_none_is_spelled_none():
    for c, _, p in _options():
        if isinstance(p.type, (NameList, EpsilonList)) and p.type.allow_none:
            assert "'none'" in p.help, f"{c} {p.opts[0]}: say that 'none' means none"
        assert not re.search(r"\bempty\b", p.help or ""), f"{c} {p.opts[0]}: use 'none', not empty"


def test_commands_with_progress_have_quiet():
    for name in PROGRESS_COMMANDS:
        opts = {o for p in main.commands[name].params for o in p.opts}
        assert "--quiet" in opts, name


# --------------------------------------------------------------------------- old spellings
@pytest.fixture
def fake_sweep(tmp_path):
    (tmp_path / "runs").mkdir()
    return tmp_path


def test_old_spellings_still_work_with_a_deprecation_line(fake_sweep, monkeypatch):
    import selectivity.evaluate.geometry as geometry
    import selectivity.evaluate.robustness as robustness

    got = {}

    def fake_robustness(sweep_dir, settings, data=None, **kw):
        got["robustness"] = settings
        return pd.DataFrame({"run_id": []})

    def fake_geometry(sweep_dir, settings, data=None, device="auto", **kw):
        got["geometry"] = settings
        return pd.DataFrame({"measure": [], "kind": []})

    monkeypatch.setattr(robustness, "sweep_robustness", fake_robustness)
    monkeypatch.setattr(geometry, "sweep_geometry", fake_geometry)
    r = CliRunner().invoke(
        main, ["robustness", str(fake_sweep), "--seed", "7", "--cifar10-c", "x", "--quiet"]
    )
    assert r.exit_code == 0, r.output
    assert got["robustness"].corruption_seed == 7 and got["robustness"].corrupted == "x"
    assert "--seed is deprecated: use --corruption-seed" in r.stderr
    assert "--cifar10-c is deprecated: use --corrupted" in r.stderr
    r = CliRunner().invoke(
        main, ["geometry", str(fake_sweep), "--attack-steps=3", "--severity", "2", "--quiet"]
    )
    assert r.exit_code == 0, r.output
    assert got["geometry"].pgd_steps == 3 and got["geometry"].severities == (2,)
    assert "--attack-steps is deprecated: use --pgd-steps" in r.stderr
    assert "--severity is deprecated: use --severities" in r.stderr
    # the new spellings, without a deprecation line
    r = CliRunner().invoke(
        main, ["geometry", str(fake_sweep), "--pgd-steps", "4", "--severities", "5", "--quiet"]
    )
    assert r.exit_code == 0 and "deprecated" not in r.stderr
    assert got["geometry"].pgd_steps == 4 and got["geometry"].severities == (5,)
    r = CliRunner().invoke(main, ["geometry", str(fake_sweep), "--severities", "1,2", "--quiet"])
    assert r.exit_code == 0 and got["geometry"].severities == (1, 2)  # every severity, as robustness


def test_analyses_run_on_the_auto_device_by_default(fake_sweep, monkeypatch):
    import selectivity.evaluate.robustness as robustness

    got = {}

    def fake(sweep_dir, settings, data=None, **kw):
        got["settings"] = settings
        return pd.DataFrame({"run_id": []})

    monkeypatch.setattr(robustness, "sweep_robustness", fake)
    r = CliRunner().invoke(main, ["robustness", str(fake_sweep), "--quiet"])
    assert r.exit_code == 0, r.output
    assert got["settings"].device == "auto"
