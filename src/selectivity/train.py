"""Training with the class selectivity regulariser (paper 1's protocol), resumable.

:func:`train_run` trains one model into a self-describing run directory (see
:mod:`selectivity.rundir`). Started again with the same config, it resumes from the
last completed epoch and ends with the same result as an uninterrupted run: the model
is initialised from the seed, every epoch's batches depend only on ``(seed, epoch)``,
the learning rate only on the epoch, and the optimizer state is checkpointed.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import TrainConfig
from .data import BatchLoader, DataSplits, ImageDataset, stratified_split
from .measure import measure_selectivity
from .models import create
from .regularizer import SelectivityRegularizer
from .rundir import (
    RunFiles,
    append_jsonl,
    atomic_torch_save,
    load_checkpoint,
    provenance,
    read_json,
    read_jsonl,
    rewrite_jsonl,
    write_json,
)

__all__ = ["train_run", "load_data", "resolve_device", "Diverged", "load_model_from"]

CHECKPOINT_FORMAT = 1


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return dev


# --------------------------------------------------------------------------- data
_DATA_CACHE: dict[tuple, DataSplits] = {}


def load_data(cfg: TrainConfig, data: str | os.PathLike | None = None) -> DataSplits:
    """Load the configured dataset's splits (memoised per process for sweeps)."""
    key = (cfg.dataset, str(data) if data else None, cfg.val_size, cfg.split_seed)
    if key not in _DATA_CACHE:
        if cfg.dataset == "cifar10":
            from .data import load_cifar10

            splits = load_cifar10(data, val_size=cfg.val_size, split_seed=cfg.split_seed)
        else:
            from .data import load_tiny_imagenet

            splits = load_tiny_imagenet(data, val_size=cfg.val_size, split_seed=cfg.split_seed)
        _DATA_CACHE.clear()  # keep one dataset in memory
        _DATA_CACHE[key] = splits
    return _DATA_CACHE[key]


def _subset(ds: ImageDataset, n: int | None, seed: int) -> ImageDataset:
    """Stratified, deterministic subset of ``n`` samples (all if None or n >= len)."""
    if n is None or n >= len(ds):
        return ds
    _, keep = stratified_split(ds.labels.numpy(), val_size=n, seed=seed)
    return ds.subset(np.sort(keep))


# --------------------------------------------------------------------------- helpers
@dataclass
class _State:
    epoch: int  # number of completed epochs
    best_val: float
    best_epoch: int


def _config_matches(saved: dict, cfg: TrainConfig) -> list[str]:
    now = cfg.to_dict()
    return sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))


def _autocast(cfg: TrainConfig, device: torch.device):
    if cfg.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_model_from(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild a model from a checkpoint file or a run directory (its best checkpoint).

    Returns
    -------
    model : nn.Module
    config : TrainConfig
    checkpoint : dict
    """
    p = Path(path)
    if p.is_dir():
        files = RunFiles(p)
        if files.best.exists():
            p = files.best
        elif files.last.exists():
            p = files.last
        else:
            raise FileNotFoundError(
                f"{path} is a directory without checkpoints/best.pt or checkpoints/last.pt"
            )
    elif not p.exists():
        raise FileNotFoundError(f"no such checkpoint or run directory: {path}")
    ckpt = load_checkpoint(p, map_location="cpu")
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{p} is not a selectivity checkpoint (expected keys 'model' and 'config')")
    cfg = TrainConfig.from_dict(ckpt["config"])
    model = create(
        cfg.model,
        num_classes=ckpt.get("num_classes"),
        activation=cfg.activation,
        negative_slope=cfg.negative_slope,
    )
    model.load_state_dict(ckpt["model"])
    return model.to(device), cfg, ckpt


# --------------------------------------------------------------------------- training
def train_run(
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stop_after_epochs: int | None = None,
) -> dict:
    """Train one model into ``out_dir`` and return the final result record.

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

    Returns
    -------
    dict
        The content of ``result.json`` (``status`` is ``completed``, ``diverged`` or,
        with ``stop_after_epochs``, ``interrupted`` which is not written).
    """
    cfg.validate()
    files = RunFiles(out_dir)
    files.root.mkdir(parents=True, exist_ok=True)
    if files.config.exists():
        diff = _config_matches(read_json(files.config), cfg)
        if diff:
            raise ValueError(
                f"{files.root} already holds a run with a different config (fields {diff}); "
                f"use another --out directory"
            )
    if files.result.exists():
        res = read_json(files.result)
        if res.get("status") in ("completed", "diverged"):
            log(f"run in {files.root} already finished (status {res['status']}); nothing to do")
            return res

    device = resolve_device(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    write_json(files.config, cfg.to_dict())
    meta = {"seed": cfg.seed, "device": str(device), **provenance()}
    if files.meta.exists():
        meta = {**read_json(files.meta), "resumed_with": meta}
    write_json(files.meta, meta)

    t_start = time.time()
    splits = load_data(cfg, data)
    train_ds = _subset(splits.train, cfg.train_subset, cfg.split_seed)
    val_ds = _subset(splits.val, cfg.eval_subset, cfg.split_seed)
    test_ds = _subset(splits.test, cfg.eval_subset, cfg.split_seed)
    num_classes = splits.num_classes
    if len(val_ds) == 0:
        raise ValueError("the validation split is empty; set val_size > 0")

    torch.manual_seed(cfg.seed)
    model = create(
        cfg.model, num_classes=num_classes, activation=cfg.activation, negative_slope=cfg.negative_slope
    ).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    state = _State(epoch=0, best_val=-1.0, best_epoch=-1)

    if files.last.exists():
        ckpt = load_checkpoint(files.last, map_location=device)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        state = _State(int(ckpt["epoch"]), float(ckpt["best_val_accuracy"]), int(ckpt["best_epoch"]))
        log(f"resuming {files.root} after epoch {state.epoch}/{cfg.epochs}")
    # Drop metric lines of epochs that were not checkpointed (killed in between).
    rows = read_jsonl(files.metrics)
    if len(rows) != state.epoch:
        rewrite_jsonl(files.metrics, rows[: state.epoch])

    norm = dict(mean=splits.mean, std=splits.std, device=device)
    train_loader = BatchLoader(
        train_ds, cfg.batch_size, shuffle=True, augment=cfg.augment, seed=cfg.seed, **norm
    )
    val_loader = BatchLoader(val_ds, cfg.eval_batch_size, **norm)
    layers = cfg.selectivity_layers or None
    reg = SelectivityRegularizer(
        model, cfg.alpha, num_classes, layers=layers, eps=cfg.si_eps, negative=cfg.negative_rule
    )

    epochs_this_call = 0
    diverged_msg = None
    while state.epoch < cfg.epochs:
        epoch = state.epoch
        lr = cfg.lr_at(epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        train_loader.set_epoch(epoch)
        t0 = time.time()
        try:
            tr = _train_epoch(model, opt, reg, train_loader, cfg, device, epoch, progress)
        except Diverged as e:
            diverged_msg = str(e)
            break
        val = measure_selectivity(
            model,
            val_loader,
            num_classes,
            layers=layers,
            top_n=None,
            negative=cfg.negative_rule,
            device=device,
        )
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
            atomic_torch_save(
                {
                    "format": CHECKPOINT_FORMAT,
                    "model": model.state_dict(),
                    "config": cfg.to_dict(),
                    "epoch": epoch + 1,
                    "val_accuracy": val.accuracy,
                    "num_classes": num_classes,
                    "classes": list(splits.classes),
                },
                files.best,
            )
        append_jsonl(files.metrics, row)
        state.epoch = epoch + 1
        atomic_torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "config": cfg.to_dict(),
                "epoch": state.epoch,
                "best_val_accuracy": state.best_val,
                "best_epoch": state.best_epoch,
                "num_classes": num_classes,
            },
            files.last,
        )
        log(
            f"epoch {epoch + 1}/{cfg.epochs} loss {tr['loss']:.4f} train_acc {tr['accuracy']:.4f} "
            f"val_acc {val.accuracy:.4f} val_SI {val.mean_selectivity:.4f} ({row['seconds']:.1f}s)"
        )
        epochs_this_call += 1
        if (
            stop_after_epochs is not None
            and epochs_this_call >= stop_after_epochs
            and state.epoch < cfg.epochs
        ):
            return {"status": "interrupted", "epoch": state.epoch}

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
        "train_seconds": time.time() - t_start,
    }
    if diverged_msg is not None:
        log(f"run diverged: {diverged_msg}")
        result = {
            **base,
            "status": "diverged",
            "message": diverged_msg,
            "test_accuracy": None,
            "mean_selectivity": None,
        }
        write_json(files.result, result)
        return result

    # Test results use the parameters of the best-validation epoch (paper 1, A.1).
    best = load_checkpoint(files.best, map_location=device)
    model.load_state_dict(best["model"])
    test_loader = BatchLoader(test_ds, cfg.eval_batch_size, **norm)
    rep = measure_selectivity(
        model,
        test_loader,
        num_classes,
        layers=layers,
        top_n=cfg.top_n,
        negative=cfg.negative_rule,
        device=device,
        progress=progress,
    )
    result = {
        **base,
        "test_accuracy": rep.accuracy,
        "test_samples": rep.num_samples,
        "mean_selectivity": rep.mean_selectivity,
        "mean_precision": rep.mean_precision,
        "dead_fraction": rep.dead_fraction,
        "layers": rep.per_layer(),
        "layer_selectivity": {l["layer"]: l["selectivity"] for l in rep.per_layer()},
        "layer_dead_fraction": {l["layer"]: l["dead_fraction"] for l in rep.per_layer()},
        "layer_precision": {l["layer"]: l["precision"] for l in rep.per_layer()},
        "train_seconds": time.time() - t_start,
    }
    write_json(files.result, result)
    log(
        f"done: test_acc {rep.accuracy:.4f} mean_SI {rep.mean_selectivity:.4f} "
        f"(best val {state.best_val:.4f} at epoch {state.best_epoch})"
    )
    return result


def _train_epoch(model, opt, reg, loader, cfg: TrainConfig, device, epoch: int, progress: bool) -> dict:
    model.train()
    use_reg = cfg.alpha != 0.0
    # Sums stay on the device; one host sync per `check_every` steps keeps GPUs busy.
    tot_loss = torch.zeros((), device=device, dtype=torch.float64)
    tot_ce = torch.zeros((), device=device, dtype=torch.float64)
    tot_si = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    n = 0
    check_every = 1 if device.type == "cpu" else 20
    bar = None
    it = loader
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False, dynamic_ncols=True
        )
        it = bar
    ctx = reg if use_reg else contextlib.nullcontext()
    with ctx:
        for step, (x, y) in enumerate(it):
            with _autocast(cfg, device):
                logits = model(x)
                ce = F.cross_entropy(logits, y)
            if use_reg:
                si = reg.selectivity(y)
                loss = ce - cfg.alpha * si
                tot_si += si.detach()
            else:
                loss = ce
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if use_reg:
                reg.clear()
            b = y.shape[0]
            n += b
            tot_loss += loss.detach() * b
            tot_ce += ce.detach() * b
            correct += (logits.detach().argmax(1) == y).sum()
            if (step + 1) % check_every == 0 or step + 1 == len(loader):
                if not math.isfinite(float(tot_loss)):
                    raise Diverged(
                        f"loss became {float(loss.detach())} at epoch {epoch + 1}, step {step + 1} "
                        f"(alpha={cfg.alpha}); the run is stopped"
                    )
                if bar is not None:
                    post = {"loss": f"{float(tot_loss) / n:.3f}", "acc": f"{int(correct) / n:.3f}"}
                    if use_reg:
                        post["SI"] = f"{float(tot_si) / (step + 1):.3f}"
                    bar.set_postfix(post, refresh=False)
    if bar is not None:
        bar.close()
    steps = max(len(loader), 1)
    return {
        "loss": float(tot_loss) / max(n, 1),
        "ce": float(tot_ce) / max(n, 1),
        "accuracy": int(correct) / max(n, 1),
        "selectivity": float(tot_si) / steps if use_reg else None,
    }
