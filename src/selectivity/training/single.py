"""Training with the class selectivity regulariser (paper 1's protocol), resumable.

:func:`train_run` trains one model into a self-describing run directory (see
:mod:`selectivity.run.files`). Started again with the same config, it resumes from the
last completed epoch and ends with the same result as an uninterrupted run: the model
is initialised from the seed, every epoch's batches depend only on ``(seed, epoch)``,
the learning rate only on the epoch, and the optimizer state is checkpointed.

It is four steps, each a function: :func:`open_run_dir` (check or create the run
directory), :func:`build_run` (data, model, optimiser, regulariser; resumed from
``last.pt``), the epoch loop (:func:`train_epoch` + validation + checkpoints) and
:func:`final_test` (test metrics with the best-validation parameters). Checkpoints
follow the one schema of :func:`selectivity.run.checkpoint.checkpoint_state`.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.measure import measure_selectivity
from ..core.regularizer import SelectivityRegularizer
from ..data import BatchLoader, DataSplits, ImageDataset, check_dataset, data_record, stratified_split
from ..models import create
from ..run.checkpoint import (
    CHECKPOINT_FORMAT,
    checkpoint_state,
    load_data,
    load_model_from,
    load_state_checked,
    resolve_device,
)
from ..run.config import TrainConfig, complete_config
from ..run.files import (
    FINAL_STATUSES,
    DamagedFileError,
    RunFiles,
    append_jsonl,
    atomic_torch_save,
    load_checkpoint,
    provenance,
    read_json,
    read_jsonl,
    rewrite_jsonl,
    run_lock,
    set_aside,
    write_json,
)
from .robust import RobustTraining, robust_training
from .runtime import autocast, channels_last, compile_with_fallback, keep_freed_memory
from .tracking import NullTracker, Tracker, open_tracker

__all__ = [
    "train_run",
    "open_run_dir",
    "build_run",
    "prepare_data",
    "build_model",
    "build_regularizer",
    "finish_epoch",
    "finish_run",
    "RunData",
    "write_run_files",
    "train_step",
    "train_epoch",
    "final_test",
    "subset",
    "Run",
    "RunState",
    "Diverged",
    # Re-exported from selectivity.run.checkpoint (their home) for existing callers.
    "CHECKPOINT_FORMAT",
    "load_data",
    "load_model_from",
    "resolve_device",
]


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def subset(ds: ImageDataset, n: int | None, seed: int) -> ImageDataset:
    """Stratified, deterministic subset of ``n`` samples (all if None or n >= len)."""
    if n is None or n >= len(ds):
        return ds
    _, keep = stratified_split(ds.labels.numpy(), val_size=n, seed=seed)
    return ds.subset(np.sort(keep))


def _config_diff(saved: dict, cfg: TrainConfig) -> list[str]:
    """Names of the fields where ``saved`` and ``cfg`` differ (missing keys take their default)."""
    now = cfg.to_dict()
    saved = complete_config(saved)
    return sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))


def _previous_seconds(ckpt: dict, rows: list[dict]) -> float:
    """Training time recorded before a resume: ``last.pt``'s, else the epochs' ``seconds``."""
    saved = ckpt.get("train_seconds")
    if isinstance(saved, (int, float)) and not isinstance(saved, bool) and math.isfinite(saved):
        return float(saved)
    # Checkpoints written before the key existed: the metrics rows are the best record.
    return float(sum(r["seconds"] for r in rows if isinstance(r.get("seconds"), (int, float))))


# --------------------------------------------------------------------------- training
def train_run(
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stop_after_epochs: int | None = None,
    lock: bool = True,
    tracker: str | None = None,
) -> dict:
    """Train one model into ``out_dir`` and return the final result record.

    Nothing is written before the device, the data (:func:`selectivity.data.check_dataset`)
    and the model (resumed from ``last.pt`` if present) are known good, so a failed start
    leaves nothing that blocks the corrected rerun (only the lock file ``.lock``).

    Parameters
    ----------
    cfg : TrainConfig
        Validated configuration.
    out_dir : path
        Run directory; created if missing. If it holds a finished run with the same
        config, nothing is done and its result is returned; if it holds an unfinished
        one, training resumes from the last completed epoch.
    data : path, optional
        Dataset location (see :func:`selectivity.data.find_cifar10`).
    progress : bool
        Show progress bars.
    log : callable
        Receives one-line messages.
    stop_after_epochs : int, optional
        Return after this many epochs of this call (tests of resumption).
    lock : bool, default True
        Hold the run directory's lock (:func:`selectivity.run.files.run_lock`, not waiting)
        while training. A caller that already holds it (the sweep executor) passes
        False: a second lock on the same run in one process would never be granted.
    tracker : {"tensorboard", "mlflow", "wandb"}, optional
        Also log the run to this experiment tracker (:mod:`selectivity.training.tracking`):
        config, each epoch's metrics, the final result. A tracker that is missing or
        fails is reported in one line through ``log``; training goes on.

    Returns
    -------
    dict
        The content of ``result.json`` (``status`` is ``completed``, ``diverged`` or,
        with ``stop_after_epochs``, ``interrupted`` which is not written).
        ``train_seconds`` sums the training time of every call that trained the run.

    Raises
    ------
    RunBusyError
        Another process holds the run's lock (``lock=True``).
    ValueError
        A config error, another config in ``out_dir``, an unavailable device, data that
        are not the configured data set, a damaged file or a checkpoint that does not fit
        (:class:`~selectivity.run.files.CheckpointError`, saying how to restart).
    """
    cfg.validate()
    files = RunFiles(out_dir)
    with run_lock(files.root, wait=False) if lock else contextlib.nullcontext():
        finished = open_run_dir(cfg, files, log)
        if finished is not None:
            return finished
        t_start = time.time()
        run = build_run(cfg, files, data, log)
        write_run_files(run, files, log)
        run.tracker = open_tracker(tracker, files.root, files.root.name, cfg.to_dict(), log)
        run.t_start = t_start
        try:
            return _train(run, files, progress, log, stop_after_epochs)
        finally:
            run.tracker.close()


def _train(
    run: Run,
    files: RunFiles,
    progress: bool,
    log: Callable[[str], None],
    stop_after_epochs: int | None,
) -> dict:
    """The epoch loop, then the final test (or the diverged record); writes ``result.json``."""
    cfg = run.cfg
    if run.device.type == "cpu":
        keep_freed_memory()  # fewer page faults per step (see its docstring)
    if cfg.compile and run.state.epoch < cfg.epochs:
        run.forward = _compiled_forward(run, log)
    epochs_this_call = 0
    diverged_msg = None
    while run.state.epoch < cfg.epochs:
        try:
            _run_epoch(run, files, progress, log)
        except Diverged as e:
            diverged_msg = str(e)
            break
        epochs_this_call += 1
        if (
            stop_after_epochs is not None
            and epochs_this_call >= stop_after_epochs
            and run.state.epoch < cfg.epochs
        ):
            return {"status": "interrupted", "epoch": run.state.epoch}

    return finish_run(run, files, progress, log, diverged=diverged_msg)


def finish_run(
    run: Run,
    files: RunFiles,
    progress: bool,
    log: Callable[[str], None],
    diverged: str | None = None,
) -> dict:
    """The run's result record, written to ``result.json``: the final test, or the diverged record.

    Parameters
    ----------
    diverged : str, optional
        Why the run stopped (its loss stopped being finite); the run is then recorded as
        ``diverged`` without a test. None: the run completed its epochs.
    """
    cfg, state = run.cfg, run.state
    base = {
        "status": "completed",
        "message": None,
        "model": cfg.model,
        "alpha": cfg.alpha,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "epochs_completed": state.epoch,
        "best_val_accuracy": state.best_val if state.best_epoch > 0 else None,
        "best_epoch": state.best_epoch if state.best_epoch > 0 else None,
    }
    if diverged is not None:
        log(f"run diverged: {diverged}")
        result = {
            **base,
            "status": "diverged",
            "message": diverged,
            "test_accuracy": None,
            "mean_selectivity": None,
        }
    else:
        result = {**base, **final_test(run, files, progress)}
        log(
            f"done: test_acc {result['test_accuracy']:.4f} mean_SI {result['mean_selectivity']:.4f} "
            f"(best val {state.best_val:.4f} at epoch {state.best_epoch})"
        )
    result["train_seconds"] = run.train_seconds()
    write_json(files.result, result)
    run.tracker.finish(result)
    return result


def open_run_dir(cfg: TrainConfig, files: RunFiles, log: Callable[[str], None] = print) -> dict | None:
    """Read-only checks of an existing run directory; its result when the run is finished.

    Nothing is written (see :func:`write_run_files`).

    Raises
    ------
    ValueError
        The directory holds a run of another config (fields named; a config written
        before a field existed is completed with its default first).
    DamagedFileError
        ``config.json`` or ``result.json`` cannot be read (named).
    """
    if files.config.exists():
        diff = _config_diff(read_json(files.config), cfg)
        if diff:
            raise ValueError(
                f"{files.root} already holds a run with a different config (fields {diff}); "
                f"use another --out directory"
            )
    if files.result.exists():
        res = read_json(files.result)
        if res.get("status") in FINAL_STATUSES:
            log(f"run in {files.root} already finished (status {res['status']}); nothing to do")
            return res
    return None


def write_run_files(run: Run, files: RunFiles, log: Callable[[str], None] = print) -> None:
    """Write ``config.json`` and ``meta.json`` once data and model are known good.

    ``meta.json`` records the seed, device, provenance and the data
    (:func:`selectivity.data.data_record`). A resumed run keeps its first meta (and data
    record) and adds the new one under ``resumed_with``; a damaged ``meta.json`` is set
    aside (``damaged/``) and written afresh.
    """
    cfg = run.cfg
    files.root.mkdir(parents=True, exist_ok=True)
    write_json(files.config, cfg.to_dict())
    record = data_record(run.splits)
    meta: dict[str, Any] = {"seed": cfg.seed, "device": str(run.device), **provenance(), "data": record}
    if files.meta.exists():
        try:
            old = read_json(files.meta)
        except DamagedFileError as e:
            where = set_aside(files.root, [RunFiles.META])
            log(f"{e}; moved it to {where} and wrote a new one")
        else:
            meta = {"data": record, **old, "resumed_with": meta}
    write_json(files.meta, meta)


@dataclass
class RunState:
    """Progress of a run: what ``last.pt`` records besides the parameters."""

    epoch: int  # number of completed epochs
    best_val: float
    best_epoch: int
    train_seconds: float = 0.0  # training time of the calls before this one (s)


@dataclass
class Run:
    """Everything the epoch loop and the final test work on."""

    cfg: TrainConfig
    device: torch.device
    splits: DataSplits
    model: nn.Module
    opt: torch.optim.Optimizer
    reg: SelectivityRegularizer
    train_loader: BatchLoader
    val_loader: BatchLoader
    test_ds: ImageDataset
    state: RunState
    #: The model's forward used for training steps: the model, or its compiled form.
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None
    #: ``time.time()`` when this call started (training time counts from it).
    t_start: float = field(default_factory=time.time)
    #: Experiment tracker told about each epoch's row and the final result.
    tracker: Tracker = field(default_factory=NullTracker)
    #: The run's robust-training method (``cfg.robust``); None for standard training.
    robust: RobustTraining | None = None

    def train_seconds(self) -> float:
        """Training time of the run so far: earlier calls plus this one (s)."""
        return self.state.train_seconds + (time.time() - self.t_start)

    @property
    def num_classes(self) -> int:
        return self.splits.num_classes

    @property
    def layers(self) -> list[str] | None:
        return self.cfg.selectivity_layers or None

    def loader(self, ds: ImageDataset, batch_size: int, **kw: Any) -> BatchLoader:
        return BatchLoader(
            ds, batch_size, mean=self.splits.mean, std=self.splits.std, device=self.device, **kw
        )


def build_run(
    cfg: TrainConfig,
    files: RunFiles,
    data: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
) -> Run:
    """Data, model, optimiser, regulariser and loaders; resumed from ``last.pt`` if present.

    Metric lines of epochs that were not checkpointed (killed in between) are dropped
    (the only write; nothing else is written here).

    Raises
    ------
    ValueError
        Unavailable device (:class:`~selectivity.run.config.DeviceUnavailableError`), data
        that are not the configured data set (:class:`~selectivity.data.DataMismatchError`),
        a ``last.pt`` that cannot be loaded or does not fit the model
        (:class:`~selectivity.run.files.CheckpointError`, saying how to restart).
    """
    data_ = prepare_data(cfg, data)
    device, splits = data_.device, data_.splits
    model, opt, state = build_model(cfg, files, device, splits.num_classes, log)
    norm: dict[str, Any] = dict(mean=splits.mean, std=splits.std, device=device)
    return Run(
        cfg=cfg,
        device=device,
        splits=splits,
        model=model,
        opt=opt,
        reg=build_regularizer(cfg, model, splits.num_classes),
        train_loader=BatchLoader(
            data_.train, cfg.batch_size, shuffle=True, augment=cfg.augment, seed=cfg.seed, **norm
        ),
        val_loader=BatchLoader(data_.val, cfg.eval_batch_size, **norm),
        test_ds=data_.test,
        state=state,
        robust=robust_training(cfg, splits.mean, splits.std, device),
    )


@dataclass
class RunData:
    """The device and the data a run trains and evaluates on (shared by a fused group)."""

    device: torch.device
    splits: DataSplits
    train: ImageDataset  # the training subset actually used
    val: ImageDataset
    test: ImageDataset


def prepare_data(cfg: TrainConfig, data: str | os.PathLike | None = None) -> RunData:
    """The device and the (checked, subset) splits of ``cfg``; the first step of :func:`build_run`.

    Raises
    ------
    ValueError
        As :func:`build_run` (device, data set, empty validation split).
    """
    device = resolve_device(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    splits = load_data(cfg, data)
    check_dataset(cfg.dataset, splits)
    train_ds = subset(splits.train, cfg.train_subset, cfg.split_seed)
    val_ds = subset(splits.val, cfg.eval_subset, cfg.split_seed)
    test_ds = subset(splits.test, cfg.eval_subset, cfg.split_seed)
    if len(val_ds) == 0:
        raise ValueError("the validation split is empty; set val_size > 0")
    return RunData(device, splits, train_ds, val_ds, test_ds)


def build_model(
    cfg: TrainConfig,
    files: RunFiles,
    device: torch.device,
    num_classes: int,
    log: Callable[[str], None] = print,
) -> tuple[nn.Module, torch.optim.Optimizer, RunState]:
    """The model initialised from ``cfg.seed`` and its optimiser, resumed from ``last.pt`` if present.

    Metric lines of epochs that were not checkpointed are dropped from ``metrics.jsonl``.

    Raises
    ------
    CheckpointError
        ``last.pt`` cannot be loaded or does not fit the model (saying how to restart).
    """
    torch.manual_seed(cfg.seed)
    model = create(
        cfg.model,
        num_classes=num_classes,
        activation=cfg.activation,
        negative_slope=cfg.negative_slope,
    ).to(device)
    if cfg.channels_last:
        channels_last(model)
    opt = make_optimizer(cfg, model.parameters())
    state = RunState(epoch=0, best_val=-1.0, best_epoch=-1)
    rows = read_jsonl(files.metrics)
    if files.last.exists():
        ckpt = load_checkpoint(files.last, map_location=device)
        load_state_checked(model, ckpt["model"], files.last, f"a {cfg.model}")
        load_state_checked(opt, ckpt["optimizer"], files.last, f"the optimizer of a {cfg.model}")
        state = RunState(int(ckpt["epoch"]), float(ckpt["best_val_accuracy"]), int(ckpt["best_epoch"]))
        state.train_seconds = _previous_seconds(ckpt, rows[: state.epoch])
        log(f"resuming {files.root} after epoch {state.epoch}/{cfg.epochs}")
    if len(rows) != state.epoch:
        rewrite_jsonl(files.metrics, rows[: state.epoch])
    return model, opt, state


def make_optimizer(cfg: TrainConfig, params: Any) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over ``params``: SGD (the paper's) or AdamW, at ``cfg.lr``."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_regularizer(cfg: TrainConfig, model: nn.Module, num_classes: int) -> SelectivityRegularizer:
    """The selectivity regulariser of ``cfg`` on ``model`` (hooks attach only inside ``with``)."""
    return SelectivityRegularizer(
        model,
        cfg.alpha,
        num_classes,
        layers=cfg.selectivity_layers or None,
        eps=cfg.si_eps,
        negative=cfg.negative_rule,
        dead=cfg.si_dead,
        check_labels=False,  # checked once when the data were loaded: no host sync per step
        pooling=cfg.token_pooling,
    )


def _run_epoch(run: Run, files: RunFiles, progress: bool, log: Callable[[str], None]) -> None:
    """One epoch: train, validate, append the metrics line, write the checkpoints."""
    cfg, state = run.cfg, run.state
    epoch = state.epoch
    lr = cfg.lr_at(epoch)
    for group in run.opt.param_groups:
        group["lr"] = lr
    run.train_loader.set_epoch(epoch)
    t0 = time.time()
    tr = train_epoch(
        run.model,
        run.opt,
        run.reg,
        run.train_loader,
        cfg,
        run.device,
        epoch,
        progress,
        forward=run.forward,
        robust=run.robust,
    )
    finish_epoch(run, files, tr, lr, t0, log)


def finish_epoch(
    run: Run,
    files: RunFiles,
    tr: dict[str, Any],
    lr: float,
    t0: float,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """After training epoch ``run.state.epoch``: validate, append the metrics line, checkpoint.

    ``run.model`` and ``run.opt`` must hold the state at the end of the epoch.

    Parameters
    ----------
    tr : dict
        The epoch's training means (:func:`train_epoch`'s record).
    lr : float
        The epoch's learning rate.
    t0 : float
        ``time.time()`` when the epoch started (the row's ``seconds`` count from it).

    Returns
    -------
    dict
        The metrics row appended to ``metrics.jsonl``.
    """
    cfg, state = run.cfg, run.state
    epoch = state.epoch
    val = measure_selectivity(
        run.model,
        run.val_loader,
        run.num_classes,
        layers=run.layers,
        top_n=None,
        negative=cfg.negative_rule,
        device=run.device,
    )
    assert val.accuracy is not None  # the validation split is labelled
    row = {
        "epoch": epoch + 1,
        "lr": lr,
        "train_loss": tr["loss"],
        "train_ce": tr["ce"],
        "train_accuracy": tr["accuracy"],
        "train_batch_selectivity": tr["selectivity"],
        "val_accuracy": val.accuracy,
        "val_selectivity": val.mean_selectivity,
        "val_dead_fraction": val.dead_fraction,
        "seconds": time.time() - t0,
    }
    if val.accuracy > state.best_val:
        state.best_val, state.best_epoch = val.accuracy, epoch + 1
        atomic_torch_save(_checkpoint(run, epoch + 1, with_optimizer=False), files.best)
    append_jsonl(files.metrics, row)
    run.tracker.log_epoch(row)  # host values only: no device read-back here
    state.epoch = epoch + 1
    atomic_torch_save(_checkpoint(run, state.epoch, with_optimizer=True), files.last)
    log(
        f"epoch {epoch + 1}/{cfg.epochs} loss {tr['loss']:.4f} train_acc {tr['accuracy']:.4f} "
        f"val_acc {val.accuracy:.4f} val_SI {val.mean_selectivity:.4f} ({row['seconds']:.1f}s)"
    )
    return row


def _checkpoint(run: Run, epoch: int, with_optimizer: bool) -> dict[str, Any]:
    return checkpoint_state(
        run.model,
        run.cfg,
        epoch=epoch,
        num_classes=run.num_classes,
        best_val_accuracy=run.state.best_val,
        best_epoch=run.state.best_epoch,
        optimizer=run.opt if with_optimizer else None,
        classes=list(run.splits.classes),
        input_shape=list(run.splits.train.image_shape),
        train_seconds=run.train_seconds() if with_optimizer else None,
    )


def _compiled_forward(run: Run, log: Callable[[str], None]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile(run.model)`` if one trial training step with it succeeds, else the model.

    The trial step (on the first batch of the current epoch) is undone: parameters,
    batch-norm buffers and optimizer state are restored, so resuming stays exact. A
    failure is logged once and training goes on in eager mode.
    """
    cfg, model, opt = run.cfg, run.model, run.opt
    run.train_loader.set_epoch(run.state.epoch)
    x, y = next(iter(run.train_loader))

    def trial(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        model.train()
        with run.reg if cfg.alpha != 0.0 else contextlib.nullcontext():
            train_step(fn, opt, run.reg, x, y, cfg, run.device, robust=run.robust, model=model)

    def snapshot() -> tuple[dict, dict]:
        return copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())

    def restore(saved: tuple[dict, dict]) -> None:
        model.load_state_dict(saved[0])
        opt.load_state_dict(saved[1])
        opt.zero_grad(set_to_none=True)

    fn, err = compile_with_fallback(model, trial, snapshot, restore)
    if err is not None:
        log(f"torch.compile failed, training in eager mode: {err}")
    return fn


def final_test(run: Run, files: RunFiles, progress: bool = False) -> dict[str, Any]:
    """Test metrics with the parameters of the best-validation epoch (paper 1, A.1).

    Returns the result fields ``test_accuracy, test_samples, mean_selectivity,
    mean_precision, dead_fraction, layers`` (one dict per layer) and the per-layer
    maps ``layer_selectivity``, ``layer_dead_fraction``, ``layer_precision`` (kept in
    ``result.json`` for existing readers; ``layers`` holds the same numbers).
    """
    best = load_checkpoint(files.best, map_location=run.device)
    run.model.load_state_dict(best["model"])
    rep = measure_selectivity(
        run.model,
        run.loader(run.test_ds, run.cfg.eval_batch_size),
        run.num_classes,
        layers=run.layers,
        top_n=run.cfg.top_n,
        negative=run.cfg.negative_rule,
        device=run.device,
        progress=progress,
    )
    per_layer = rep.per_layer()
    return {
        "test_accuracy": rep.accuracy,
        "test_samples": rep.num_samples,
        "mean_selectivity": rep.mean_selectivity,  # dead units count as 0 (paper's main figures)
        "mean_selectivity_live": rep.mean_selectivity_live,  # dead units removed (Fig. A9b)
        "mean_precision": rep.mean_precision,
        "dead_fraction": rep.dead_fraction,
        "layers": per_layer,
        **{
            f"layer_{k}": {l["layer"]: l[k] for l in per_layer}
            for k in ("selectivity", "dead_fraction", "precision")
        },
    }


def train_step(
    forward: Callable[[torch.Tensor], torch.Tensor],
    opt: torch.optim.Optimizer,
    reg: SelectivityRegularizer,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    device: torch.device,
    robust: RobustTraining | None = None,
    key: tuple[int, int] = (0, 0),
    model: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One SGD step on ``(x, y)``; nothing is read back from the device.

    With ``cfg.alpha != 0`` the regulariser must be attached (``with reg:``).

    Parameters
    ----------
    robust : RobustTraining, optional
        The run's robust-training method: the step trains on its inputs (an attacked,
        noisy or AugMix batch) with its loss (:mod:`selectivity.training.robust`), and the
        regulariser sees that forward pass.
    key : (int, int)
        ``(epoch, step)`` of this step: with ``seed``, what the method's draws depend on.
    model : nn.Module, optional
        The eager model the attack of ``robust="adversarial"`` runs on (``forward`` may be
        its compiled form); default ``forward``.

    Returns
    -------
    loss, ce : torch.Tensor
        Scalar total loss and cross-entropy (detached).
    selectivity : torch.Tensor or None
        The minibatch's mean SI (detached); None when alpha = 0.
    correct : torch.Tensor
        int64 scalar, correct predictions in the minibatch.
    """
    use_reg = cfg.alpha != 0.0
    y_si = y  # labels of the forward pass the regulariser sees
    if robust is not None:
        attacked = model if model is not None else forward
        assert isinstance(attacked, nn.Module)  # the attack needs the module
        x, y_si = robust.inputs(attacked, x, y, *key)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, cfg.amp):
        logits = forward(x)
        if robust is None:
            ce = F.cross_entropy(logits, y)
            base = ce
        else:
            base, ce, logits = robust.loss(logits, y)
    si = None
    if use_reg:
        penalty = reg.penalty(y_si)  # -alpha * SI
        loss = base + penalty
        si = penalty.detach() / -cfg.alpha
    else:
        loss = base
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if use_reg:
        reg.clear()
    correct = (logits.detach().argmax(1) == y).sum()
    return loss.detach(), ce.detach(), si, correct


def train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    reg: SelectivityRegularizer,
    loader: BatchLoader,
    cfg: TrainConfig,
    device: torch.device,
    epoch: int,
    progress: bool,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    robust: RobustTraining | None = None,
) -> dict[str, Any]:
    """One pass over ``loader``: loss = CE + ``reg.penalty`` (= CE - alpha * SI).

    The sums of loss, CE, SI and correct predictions stay on the device; they are read
    back only every ``cfg.check_every`` steps and at the end of the epoch, where the
    NaN/inf check happens. Between those points a step reads nothing back (no host
    synchronisation on a GPU).

    Parameters
    ----------
    forward : callable, optional
        Used instead of ``model`` for the training forward pass (its compiled form).
    robust : RobustTraining, optional
        The robust-training method of every step (:func:`train_step`).

    Returns the epoch's mean ``loss``, ``ce``, ``accuracy`` (per sample) and the mean
    minibatch ``selectivity`` (per step; None when alpha = 0). Raises
    :class:`Diverged` when the loss stops being finite.
    """
    model.train()
    fwd = forward if forward is not None else model
    use_reg = cfg.alpha != 0.0
    tot_loss = torch.zeros((), device=device, dtype=torch.float64)
    tot_ce = torch.zeros((), device=device, dtype=torch.float64)
    tot_si = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    n = 0
    steps = len(loader)
    bar = None
    it: Iterable = loader
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
            leave=False,
            dynamic_ncols=True,
            disable=None,  # a terminal only: no carriage returns in log files
        )
        it = bar
    ctx = reg if use_reg else contextlib.nullcontext()
    with ctx:
        for step, (x, y) in enumerate(it):
            loss, ce, si, ok = train_step(
                fwd, opt, reg, x, y, cfg, device, robust=robust, key=(epoch, step), model=model
            )
            b = y.shape[0]
            n += b
            tot_loss += loss * b
            tot_ce += ce * b
            correct += ok
            if si is not None:
                tot_si += si
            if (step + 1) % cfg.check_every == 0 or step + 1 == steps:
                # The read-back point: one host sync per `check_every` steps.
                if not math.isfinite(float(tot_loss)):
                    raise Diverged(
                        f"loss became {float(loss)} at epoch {epoch + 1}, step {step + 1} "
                        f"(alpha={cfg.alpha}); the run is stopped"
                    )
                if bar is not None:
                    post = {"loss": f"{float(tot_loss) / n:.3f}", "acc": f"{int(correct) / n:.3f}"}
                    if use_reg:
                        post["SI"] = f"{float(tot_si) / (step + 1):.3f}"
                    bar.set_postfix(post, refresh=False)
    if bar is not None:
        bar.close()
    return {
        "loss": float(tot_loss) / max(n, 1),
        "ce": float(tot_ce) / max(n, 1),
        "accuracy": int(correct) / max(n, 1),
        "selectivity": float(tot_si) / max(steps, 1) if use_reg else None,
    }
