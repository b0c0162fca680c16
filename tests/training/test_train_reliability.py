"""`train_run` itself (not only its callers) keeps the promises of issue 9, and the
single-run speed options of issue 12 (sync-free loop, amp on CPU, channels_last, compile).

Everything runs on a tiny random CIFAR-10 copy (150 training images, see
``helpers.write_tiny_cifar``): no real data needed.
"""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

from helpers import TINY, write_image_folder, write_tiny_cifar
from selectivity.core.regularizer import SelectivityRegularizer
from selectivity.data import BatchLoader, DataMismatchError, ImageDataset
from selectivity.models import create
from selectivity.models.resnet_cifar import CifarResNet
from selectivity.run.checkpoint import checkpoint_state, load_model_from
from selectivity.run.config import ConfigError, DeviceUnavailableError, TrainConfig, make_config
from selectivity.run.files import CheckpointError, RunBusyError, RunFiles, read_json, read_jsonl, run_lock
from selectivity.run.health import inspect_run_dir
from selectivity.training.single import Diverged, build_run, open_run_dir, train_epoch, train_run

NEW_FIELDS = (
    "si_dead",
    "channels_last",
    "compile",
    "check_every",
    "val_per_class",
    "val_split",
    "robust",
    "adv_epsilon",
    "adv_step_size",
    "adv_steps",
    "adv_norm",
    "adv_random_start",
    "adv_bn",
    "noise_sigma_min",
    "noise_sigma_max",
    "augmix_severity",
    "augmix_width",
    "augmix_depth",
    "augmix_alpha",
    "augmix_jsd_weight",
)


def quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_cifar(tmp_path_factory.mktemp("tinydata"))


def written(d) -> list[str]:
    """Files in a run directory besides the lock file."""
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and p.name != ".lock")


def tiny_cfg(**kw) -> TrainConfig:
    return make_config(None, {"model": "resnet20", "alpha": -1.0, **TINY, **kw})


# --------------------------------------------------------------------------- 8a: the run lock
def test_train_run_refuses_a_run_whose_lock_is_held(tmp_path, tiny_data):
    out = tmp_path / "run"
    with run_lock(out), pytest.raises(RunBusyError, match="another process is training"):
        train_run(tiny_cfg(), out, data=tiny_data, progress=False, log=quiet)
    assert written(out) == []


# --------------------------------------------------------------------------- 8b: nothing written on a bad start
def test_bad_data_or_device_writes_nothing(tmp_path, tiny_data, monkeypatch):
    out = tmp_path / "run"
    with pytest.raises(FileNotFoundError):
        train_run(tiny_cfg(), out, data=tmp_path / "nope", progress=False, log=quiet)
    assert written(out) == []
    three = write_image_folder(tmp_path / "three", ["a", "b", "c"], size=32, train_per_class=12)
    with pytest.raises(DataMismatchError, match="3 classes.*cifar10"):
        train_run(tiny_cfg(), out, data=three, progress=False, log=quiet)
    assert written(out) == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
        train_run(tiny_cfg(device="cuda"), out, data=tiny_data, progress=False, log=quiet)
    assert written(out) == []


# --------------------------------------------------------------------------- 5: foreign state dicts
def _foreign_last(run, cfg: TrainConfig, arch: str, optimizer_of: str) -> None:
    """A well-formed ``last.pt`` whose model (or optimizer) belongs to another architecture."""
    model = create(arch, num_classes=10)
    other = create(optimizer_of, num_classes=10)
    opt = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    other(torch.zeros(2, 3, 32, 32)).sum().backward()
    opt.step()  # momentum buffers: one per parameter of `other`
    state = checkpoint_state(
        model, cfg, epoch=1, num_classes=10, best_val_accuracy=0.1, best_epoch=1, optimizer=opt
    )
    RunFiles(run).last.parent.mkdir(parents=True)
    torch.save(state, RunFiles(run).last)


@pytest.mark.parametrize(
    ("arch", "optimizer_of", "what"),
    [("resnet32", "resnet32", "a resnet20"), ("resnet20", "resnet32", "the optimizer of a resnet20")],
)
def test_a_foreign_state_dict_is_one_line_saying_how_to_restart(
    tmp_path, tiny_data, arch, optimizer_of, what
):
    run = tmp_path / "run"
    cfg = tiny_cfg()
    _foreign_last(run, cfg, arch, optimizer_of)
    with pytest.raises(CheckpointError) as e:
        train_run(cfg, run, data=tiny_data, progress=False, log=quiet)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 1000
    assert f"last.pt does not fit {what}" in msg and "delete it to restart the run" in msg
    assert written(run) == ["checkpoints/last.pt"]  # nothing else written


def test_load_model_from_a_foreign_best_checkpoint_is_a_checkpoint_error(tmp_path):
    cfg = tiny_cfg()
    best = tmp_path / "best.pt"
    state = checkpoint_state(
        create("resnet32", num_classes=10), cfg, epoch=1, num_classes=10, best_val_accuracy=0.1, best_epoch=1
    )
    torch.save(state, best)
    with pytest.raises(CheckpointError, match=r"best.pt does not fit a resnet20: RuntimeError"):
        load_model_from(best)


# --------------------------------------------------------------------------- 9 + 4: resume bookkeeping
def test_resume_keeps_train_seconds_and_records_data_and_shapes(tmp_path, tiny_data):
    run = tmp_path / "run"
    files = RunFiles(run)
    cfg = tiny_cfg(epochs=3)
    part = train_run(cfg, run, data=tiny_data, progress=False, log=quiet, stop_after_epochs=1)
    assert part["status"] == "interrupted"
    last = torch.load(files.last, weights_only=True)
    rows = read_jsonl(files.metrics)
    assert last["train_seconds"] >= rows[0]["seconds"] > 0
    assert last["input_shape"] == [3, 32, 32] and len(last["classes"]) == 10
    assert torch.load(files.best, weights_only=True)["input_shape"] == [3, 32, 32]
    meta = read_json(files.meta)  # the data are recorded while the run is still going
    assert meta["data"]["num_classes"] == 10 and meta["data"]["input_shape"] == [3, 32, 32]
    assert meta["data"]["format"] == "python-release"

    # An older last.pt without the key: the metrics rows' seconds are the fallback. A
    # recognisably large value shows that it is used.
    del last["train_seconds"]
    torch.save(last, files.last)
    rows[0]["seconds"] = 1000.0
    files.metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train_run(cfg, run, data=tiny_data, progress=False, log=quiet, stop_after_epochs=1)
    assert torch.load(files.last, weights_only=True)["train_seconds"] >= 1000.0

    done = train_run(cfg, run, data=tiny_data, progress=False, log=quiet)
    rows = read_jsonl(files.metrics)
    assert done["status"] == "completed" and len(rows) == 3
    assert done["train_seconds"] >= sum(r["seconds"] for r in rows) >= 1000.0
    assert read_json(files.result)["train_seconds"] == done["train_seconds"]
    meta = read_json(files.meta)
    assert meta["data"]["sizes"]["train"] == 120 and "resumed_with" in meta


# --------------------------------------------------------------------------- configs before the new fields
def test_a_config_written_before_the_new_fields_is_the_same_configuration(tmp_path):
    cfg = tiny_cfg()
    files = RunFiles(tmp_path / "run")
    files.root.mkdir()
    old = {k: v for k, v in cfg.to_dict().items() if k not in NEW_FIELDS}
    files.config.write_text(json.dumps(old))
    assert TrainConfig.from_dict(old) == cfg  # missing keys load with their defaults
    assert open_run_dir(cfg, files, quiet) is None  # not refused as another config
    with pytest.raises(ValueError, match=r"different config \(fields \['check_every'\]\)"):
        open_run_dir(cfg.replace(check_every=7), files, quiet)
    # a checkpoint written by the new code beside the old config.json is healthy
    state = checkpoint_state(
        create("resnet20", num_classes=10), cfg, epoch=0, num_classes=10, best_val_accuracy=-1, best_epoch=-1
    )
    files.best.parent.mkdir()
    torch.save(state, files.best)
    assert inspect_run_dir(files.root).ok


def test_new_fields_are_validated():
    cfg = make_config(
        None, {"si_dead": "include", "channels_last": "true", "compile": "1", "check_every": "7"}
    )
    assert (cfg.si_dead, cfg.channels_last, cfg.compile, cfg.check_every) == ("include", True, True, 7)
    for key, value in (("si_dead", "ignore"), ("check_every", 0), ("compile", "maybe")):
        with pytest.raises(ConfigError, match=repr(key)):
            make_config(None, {key: value})
    with pytest.raises(ConfigError, match="'amp'"):
        TrainConfig(amp=1).validate()  # type: ignore[arg-type]  # the wrong type on purpose


# --------------------------------------------------------------------------- issue 12: the loop
_READBACKS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy")


class _Marked:
    """A loader that writes a marker into ``calls`` before each batch it hands out."""

    def __init__(self, loader, calls: list):
        self.loader, self.calls = loader, calls

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            self.calls.append(("batch", i))
            yield batch


@contextlib.contextmanager
def _count_readbacks(monkeypatch, calls: list):
    for name in _READBACKS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *a, _name=name, _orig=original, **k):
            calls.append(_name)
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    try:
        yield calls
    finally:
        monkeypatch.undo()


def _toy_loader(n=80, batch=8):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    ds = ImageDataset(images, torch.arange(n) % 10, [f"c{i}" for i in range(10)])
    return BatchLoader(ds, batch, shuffle=True, augment=True, seed=1)


def _toy_run(alpha=-1.0, **cfg_kw):
    cfg = make_config(None, {"model": "resnet20", "alpha": alpha, "epochs": 1, "num_threads": 1, **cfg_kw})
    torch.manual_seed(0)
    model = CifarResNet(depth=8, num_classes=10)  # small: the loop is what is tested
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    reg = SelectivityRegularizer(model, alpha, 10, check_labels=False)
    return cfg, model, opt, reg


def test_training_loop_reads_back_only_every_k_steps(monkeypatch):
    k = 4
    cfg, model, opt, reg = _toy_run(check_every=k)
    calls: list = []
    loader = _Marked(_toy_loader(), calls)  # 10 batches: read-backs after steps 4, 8 and 10
    with _count_readbacks(monkeypatch, calls):
        out = train_epoch(model, opt, reg, loader, cfg, torch.device("cpu"), 0, progress=False)
    marks = [i for i, c in enumerate(calls) if isinstance(c, tuple)] + [len(calls)]
    between = {step: calls[a + 1 : b] for step, (a, b) in enumerate(zip(marks, marks[1:]))}
    assert len(between) == 10
    for step, reads in between.items():
        if (step + 1) % k == 0 or step == 9:
            assert reads, step  # positive control: the counter sees the read-back points
        else:
            assert reads == [], (step, reads)  # K-1 steps in a row read nothing back
    assert 0 < out["accuracy"] <= 1 and out["selectivity"] is not None


def test_divergence_is_found_at_the_read_back_points():
    cfg, model, opt, reg = _toy_run(alpha=1e6, check_every=3)
    for g in opt.param_groups:
        g["lr"] = 1e10
    with pytest.raises(Diverged, match=r"loss became .* step (3|6|9|10) "):
        train_epoch(model, opt, reg, _toy_loader(), cfg, torch.device("cpu"), 0, progress=False)


def test_amp_runs_bf16_on_cpu_and_channels_last_gives_the_same_loss():
    seen = []
    cfg, model, opt, reg = _toy_run(amp=True)
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    out = train_epoch(model, opt, reg, _toy_loader(), cfg, torch.device("cpu"), 0, progress=False)
    assert seen and set(seen) == {torch.bfloat16} and out["loss"] == out["loss"]
    losses = {}
    for cl in (False, True):
        cfg, model, opt, reg = _toy_run(channels_last=cl)
        if cl:
            model.to(memory_format=torch.channels_last)
        losses[cl] = train_epoch(model, opt, reg, _toy_loader(), cfg, torch.device("cpu"), 0, progress=False)
    assert losses[True]["loss"] == pytest.approx(losses[False]["loss"], rel=1e-3)
    assert losses[True]["selectivity"] == pytest.approx(losses[False]["selectivity"], rel=1e-3)


def test_build_run_wires_the_regulariser_and_channels_last(tmp_path, tiny_data):
    run = build_run(
        tiny_cfg(si_dead="include", channels_last=True), RunFiles(tmp_path / "r"), tiny_data, quiet
    )
    assert run.reg.dead == "include" and run.reg.check_labels is False
    conv = next(m for m in run.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not (tmp_path / "r").exists()  # building writes nothing


def test_compile_falls_back_to_eager_once_and_changes_no_number(tmp_path, tiny_data, monkeypatch):
    """``compile=True`` with a compiler that fails, or an identity "compiler": same numbers."""

    def broken_compile(fn, **_kw):
        def broken(*a, **k):
            raise RuntimeError("no compiler here")

        return broken

    cfg = tiny_cfg(epochs=1)
    ref = train_run(cfg, tmp_path / "eager", data=tiny_data, progress=False, log=quiet)
    for name, fake in (("broken", broken_compile), ("identity", lambda fn, **_kw: fn)):
        monkeypatch.setattr(torch, "compile", fake)
        said: list[str] = []
        res = train_run(
            cfg.replace(compile=True), tmp_path / name, data=tiny_data, progress=False, log=said.append
        )
        fallbacks = [m for m in said if "torch.compile failed" in m]
        if name == "broken":  # logged once, on one line, with the reason
            assert len(fallbacks) == 1 and "no compiler here" in fallbacks[0] and "\n" not in fallbacks[0]
        else:
            assert fallbacks == []
        for key in ("test_accuracy", "best_val_accuracy", "mean_selectivity", "layer_selectivity"):
            assert res[key] == ref[key], (name, key)  # the trial step was undone
        assert read_json(RunFiles(tmp_path / name).config)["compile"] is True
