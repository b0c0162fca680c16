"""The command line: train and measure, help texts, clear errors for bad values."""

import json

import pytest
from click.testing import CliRunner

from selectivity.cli import main

TINY_SETS = [
    "--set",
    "batch_size=64",
    "--set",
    "eval_subset=100",
    "--set",
    "val_size=500",
    "--set",
    "top_n=10",
    "--set",
    "num_threads=1",
]


@pytest.fixture(scope="module")
def run_dir(cifar_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    r = CliRunner().invoke(
        main,
        [
            "train",
            "--preset",
            "smoke",
            "--alpha",
            "-1",
            "--train-subset",
            "128",
            "--data",
            str(cifar_data),
            "--out",
            str(out),
            "--quiet",
            *TINY_SETS,
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.output.strip().splitlines()[-1])
    assert res["status"] == "completed" and 0 <= res["test_accuracy"] <= 1
    return out


def test_measure_uses_the_runs_own_images_by_default(run_dir, cifar_data):
    stored = json.loads((run_dir / "result.json").read_text())
    r = CliRunner().invoke(main, ["measure", str(run_dir), "--data", str(cifar_data), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["images"] == "eval_subset" and d["num_samples"] == stored["test_samples"] == 100
    assert d["accuracy"] == pytest.approx(stored["test_accuracy"], abs=1e-9)
    assert d["mean_selectivity"] == pytest.approx(stored["mean_selectivity"], rel=1e-4)
    assert d["mean_precision"] == pytest.approx(stored["mean_precision"], rel=1e-4)
    r = CliRunner().invoke(main, ["measure", str(run_dir), "--data", str(cifar_data), "--quiet"])
    assert "the run's evaluation subset: 100 of 10000 test images" in r.stdout


def test_measure_table_and_json(run_dir, cifar_data):
    r = CliRunner().invoke(
        main, ["measure", str(run_dir), "--data", str(cifar_data), "--json", "--top-n", "50", "--all-images"]
    )
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["num_samples"] == 10000 and d["top_n"] == 50 and len(d["layers"]) == 19
    assert d["images"] == "all"
    assert {"layer", "units", "selectivity", "dead_fraction", "precision"} <= set(d["layers"][0])
    # measuring the checkpoint file directly gives the same numbers
    r2 = CliRunner().invoke(
        main,
        [
            "measure",
            str(run_dir / "checkpoints" / "best.pt"),
            "--data",
            str(cifar_data),
            "--json",
            "--top-n",
            "50",
            "--all-images",
        ],
    )
    assert json.loads(r2.output)["mean_selectivity"] == d["mean_selectivity"]
    r3 = CliRunner().invoke(main, ["measure", str(run_dir), "--data", str(cifar_data), "--split", "val"])
    assert r3.exit_code == 0 and "layer1.0.act1" in r3.output and "selectivity" in r3.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--out", "x", "--set", "bogus=1"], "unknown config key"),
        (["train", "--out", "x", "--epochs", "0"], "'epochs'"),
        (["train", "--out", "x", "--model", "resnet21"], "known models"),
        (["train", "--out", "x", "--set", "activation=tanh"], "'activation'"),
        (["train", "--out", "x", "--preset", "fastest"], "unknown preset"),
        (["train", "--out", "x", "--set", "lr"], "key=value"),
        (["measure", "/nonexistent/run"], "does not exist"),
    ],
)
def test_bad_values_get_clear_errors(args, message):
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0
    assert message in r.output


def test_measure_rejects_bad_options(run_dir):
    r = CliRunner().invoke(main, ["measure", str(run_dir), "--top-n", "0"])
    assert r.exit_code == 2 and "--top-n" in r.output
    r = CliRunner().invoke(main, ["measure", str(run_dir / "metrics.jsonl")])
    assert r.exit_code == 1 and "cannot load checkpoint" in r.output


def test_missing_dataset_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SELECTIVITY_DATA", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(
        main,
        [
            "train",
            "--preset",
            "smoke",
            "--data",
            str(tmp_path / "empty"),
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ],
    )
    assert r.exit_code == 1
    assert "cifar-10-python.tar.gz" in r.output


def test_every_command_and_option_has_help():
    for cmd in ["train", "measure", "sweep", "results", "summarize", "models", "presets"]:
        r = CliRunner().invoke(main, [cmd, "--help"])
        assert r.exit_code == 0
        command = main.get_command(None, cmd)
        for p in command.params:
            if p.param_type_name == "option" and p.name != "help":
                assert p.help, f"{cmd} --{p.name} has no help text"
    r = CliRunner().invoke(main, ["models"])
    assert "resnet20" in r.output and "vgg16" in r.output
