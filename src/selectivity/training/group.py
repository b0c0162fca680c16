"""Train several runs as one fused model (:class:`~selectivity.training.fused.FusedRuns`), resumable.

:func:`train_group` is :func:`selectivity.training.single.train_run` for R runs at once: the runs
share everything but ``seed`` and ``alpha`` (:func:`fuse_key`), so they can step
together as one stacked model on one device, with one copy of the data
(:class:`~selectivity.data.loader.GroupBatchLoader`). Each run still has its own run
directory, written by the single-run code (:func:`~selectivity.training.single.open_run_dir`,
:func:`~selectivity.training.single.write_run_files`, :func:`~selectivity.training.single.finish_epoch`,
:func:`~selectivity.training.single.finish_run`), so its files are those of a single run:
``config.json``, ``meta.json`` (plus ``fused_group``, the runs trained together in the
call, ``fused_group_size`` and ``fused_backend``; ``fused_channels_last_applied: false``
when the config asks for ``channels_last``, which a group does not use),
``metrics.jsonl``, ``checkpoints/last.pt`` and ``best.pt`` in the single-run schema, and
``result.json``. A run of a group can be resumed alone with ``train_run`` and the other
way round.

Resume: each run resumes from its own ``last.pt``. Runs that stopped at different epochs
are brought level first: the runs at the lowest epoch train (fused among themselves)
until they reach the next one, then the group grows. Divergence: the per-run losses are
read back every ``check_every`` steps, as in the single-run loop; a run whose loss is no
longer finite is recorded ``diverged`` (the same record as a single run's), dropped from
the group and from the data loader, and the others go on unchanged. An exception (out of
memory, a damaged file) leaves every run at its last completed epoch: resumable.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data import BatchLoader
from ..data.check import NOMINAL
from ..data.loader import GroupBatchLoader
from ..models import create
from ..run.config import TrainConfig, resolve_device
from ..run.files import RunFiles, read_json, run_lock, write_json
from .fused import BACKENDS, FusedRuns, pick_backend
from .robust import robust_training
from .runtime import keep_freed_memory
from .single import (
    Run,
    build_model,
    build_regularizer,
    finish_epoch,
    finish_run,
    open_run_dir,
    prepare_data,
    write_run_files,
)
from .tracking import open_tracker

__all__ = [
    "MemoryProbe",
    "cuda_memory_probe",
    "FUSE_FREE_FIELDS",
    "auto_group_size",
    "check_fusable",
    "fuse_free_fields",
    "fuse_key",
    "runs_that_fit",
    "train_group",
]

#: Config fields that may differ between the runs of a fused group; all others must match.
FUSE_FREE_FIELDS = ("seed", "alpha")


def fuse_free_fields(cfg: TrainConfig) -> tuple[str, ...]:
    """The fields that may differ within ``cfg``'s group: ``seed`` and ``alpha``, or only
    ``alpha`` when the validation split is drawn per run (the seed then chooses the data)."""
    return ("alpha",) if cfg.val_split == "per-run" else FUSE_FREE_FIELDS


def fuse_key(cfg: TrainConfig) -> tuple[tuple[str, str], ...]:
    """What must match for runs to be fused: every config field but ``seed`` and ``alpha``.

    (But ``alpha`` alone with ``val_split="per-run"``: see :func:`fuse_free_fields`.) Two
    configs can train in one group exactly when their keys are equal. The key is hashable
    (field name, JSON-like text of the value), sorted by field name.
    """
    free = fuse_free_fields(cfg)
    return tuple(sorted((k, repr(v)) for k, v in cfg.to_dict().items() if k not in free))


def check_fusable(cfgs: Sequence[TrainConfig]) -> None:
    """Raise ValueError (naming the first differing field) unless every config has one :func:`fuse_key`."""
    if not cfgs:
        raise ValueError("a fused group needs at least one run config")
    first = dict(fuse_key(cfgs[0]))
    for i, cfg in enumerate(cfgs[1:], start=1):
        other = dict(fuse_key(cfg))
        diff = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
        if diff:
            k = diff[0]
            raise ValueError(
                f"runs 0 and {i} cannot be fused: they differ in {k!r} ({first.get(k)} vs {other.get(k)}); "
                f"only {' and '.join(fuse_free_fields(cfgs[0]))} may differ within a group"
            )


@dataclass(eq=False)  # compared and hashed by identity
class _Member:
    """One run of the group: its single-run state and files."""

    index: int  # position in the caller's lists
    name: str  # run id (its directory's name)
    run: Run
    files: RunFiles
    log: Callable[[str], None]
    epochs_this_call: int = 0
    result: dict | None = field(default=None)

    @property
    def cfg(self) -> TrainConfig:
        return self.run.cfg


def train_group(
    cfgs: Sequence[TrainConfig],
    out_dirs: Sequence[str | os.PathLike],
    data: str | os.PathLike | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stop_after_epochs: int | None = None,
    lock: bool = True,
    run_logs: Sequence[Callable[[str], None]] | None = None,
    backend: str = "auto",
    tracker: str | None = None,
) -> list[dict]:
    """Train R runs that differ only in seed and alpha as one fused model, each into its directory.

    Parameters
    ----------
    cfgs : sequence of TrainConfig
        One validated config per run; equal :func:`fuse_key` (else ValueError).
    out_dirs : sequence of path
        One run directory per config (distinct). As for :func:`~selectivity.training.single.train_run`:
        a finished run is returned as it is, an unfinished one resumes.
    data : path, optional
        Dataset location.
    progress : bool
        Show a progress bar per epoch.
    log : callable
        Receives the group's one-line messages.
    stop_after_epochs : int, optional
        Each run returns (status ``interrupted``) after training this many epochs in this
        call (tests of resumption).
    lock : bool, default True
        Hold every run's lock while training (not waiting); False when the caller holds them.
    run_logs : sequence of callable, optional
        One log per run for its own messages; default: ``log`` with the run's name in front.
    backend : str
        How the group computes its R forward passes (:func:`selectivity.training.fused.pick_backend`;
        "auto": the fastest for the device). Every backend follows the arithmetic of
        separate runs, so the choice changes speed and float rounding only.
    tracker : {"tensorboard", "mlflow", "wandb"}, optional
        Log each run of the group to this experiment tracker as its own tracked run
        (:mod:`selectivity.training.tracking`), as :func:`~selectivity.training.single.train_run` does.

    Returns
    -------
    list of dict
        Each run's result, in the order of ``cfgs``: the content of its ``result.json``, or
        ``{"status": "interrupted", "epoch": n}``.

    Raises
    ------
    ValueError
        Configs that cannot be fused, and every error of ``train_run`` (another config in a
        directory, bad device or data, a checkpoint that does not fit). Nothing is written
        before every run's directory, the device, the data and every model are known good.
    """
    cfgs = list(cfgs)
    dirs = [Path(d) for d in out_dirs]
    if len(cfgs) != len(dirs):
        raise ValueError(f"need one run directory per config: {len(cfgs)} configs, {len(dirs)} directories")
    if len({d.resolve() for d in dirs}) != len(dirs):
        raise ValueError("the runs of a fused group need distinct run directories")
    for cfg in cfgs:
        cfg.validate()
    check_fusable(cfgs)
    if backend not in BACKENDS:
        raise ValueError(f"unknown fused backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if cfgs[0].robust != "none" and backend not in ("auto", "loop"):
        raise ValueError(
            f"backend {backend!r} cannot train robust={cfgs[0].robust!r} runs (each run attacks or "
            "augments its own batch through its own module); use 'loop' or 'auto'"
        )
    names = [d.name for d in dirs]
    logs = list(run_logs) if run_logs is not None else [_prefixed(log, n) for n in names]
    if len(logs) != len(cfgs):
        raise ValueError(f"need one run log per config, got {len(logs)} for {len(cfgs)}")
    files = [RunFiles(d) for d in dirs]
    with contextlib.ExitStack() as stack:
        if lock:  # in path order, so two processes locking overlapping groups cannot deadlock
            for i in sorted(range(len(files)), key=lambda i: str(files[i].root)):
                stack.enter_context(run_lock(files[i].root, wait=False))
        results: list[dict | None] = [open_run_dir(c, f, lg) for c, f, lg in zip(cfgs, files, logs)]
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            t_start = time.time()
            members = _build_members(cfgs, files, names, logs, todo, data)
            backend = pick_backend(
                backend, members[0].run.model, members[0].run.device, robust=members[0].cfg.robust != "none"
            )
            group_info = {
                "fused_group": [m.name for m in members],
                "fused_group_size": len(members),
                "fused_backend": backend,
            }
            if members[0].cfg.channels_last:
                # The stacked parameters keep the contiguous layout; say so next to the config.
                group_info["fused_channels_last_applied"] = False
                log("channels_last is not applied inside a fused group (stacked parameters stay contiguous)")
            for m in members:
                resumed = m.files.meta.exists()
                write_run_files(m.run, m.files, m.log)
                _record_group(m.files, group_info, resumed)
                m.run.tracker = open_tracker(tracker, m.files.root, m.name, m.cfg.to_dict(), m.log)
                stack.callback(m.run.tracker.close)  # one tracked run per member, closed at the end
                m.run.t_start = t_start
            _train_members(members, progress, log, stop_after_epochs, backend)
            for m in members:
                results[m.index] = m.result
    out = [r for r in results if r is not None]
    assert len(out) == len(cfgs)  # every run has a result
    return out


def _prefixed(log: Callable[[str], None], name: str) -> Callable[[str], None]:
    return lambda msg: log(f"{name}: {msg}")


def _build_members(
    cfgs: list[TrainConfig],
    files: list[RunFiles],
    names: list[str],
    logs: list[Callable[[str], None]],
    todo: list[int],
    data: str | os.PathLike | None,
) -> list[_Member]:
    """Shared data (loaded once) and each run's model and optimiser, resumed from its ``last.pt``."""
    rd = prepare_data(cfgs[todo[0]], data)  # equal fuse keys: the same device and data for all
    if rd.device.type == "cpu":
        keep_freed_memory()  # fewer page faults per step (see its docstring)
    norm: dict[str, Any] = dict(mean=rd.splits.mean, std=rd.splits.std, device=rd.device)
    first = cfgs[todo[0]]
    # One copy of the training data on the device for the whole group; the validation
    # loader is not shuffled, so every run may share it.
    train_loader = GroupBatchLoader(
        rd.train,
        first.batch_size,
        seeds=[cfgs[i].seed for i in todo],
        shuffle=True,
        augment=first.augment,
        **norm,
    )
    val_loader = BatchLoader(rd.val, first.eval_batch_size, **norm)
    members = []
    for i in todo:
        cfg = cfgs[i]
        model, opt, state = build_model(cfg, files[i], rd.device, rd.splits.num_classes, logs[i])
        if cfg.channels_last:  # a single-run layout; the stacked (R, ...) parameters stay contiguous
            model = model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # stubs lack memory_format
        run = Run(
            cfg=cfg,
            device=rd.device,
            splits=rd.splits,
            model=model,
            opt=opt,
            reg=build_regularizer(cfg, model, rd.splits.num_classes),
            train_loader=train_loader,
            val_loader=val_loader,
            test_ds=rd.test,
            state=state,
            robust=robust_training(cfg, rd.splits.mean, rd.splits.std, rd.device),
        )
        members.append(_Member(i, names[i], run, files[i], logs[i]))
    return members


def _record_group(files: RunFiles, info: dict[str, Any], resumed: bool) -> None:
    """Say in ``meta.json`` how this run was trained: with which runs, by which backend.

    On a resume the record goes under ``resumed_with`` (the first call's stays on top).
    """
    meta = read_json(files.meta)
    if resumed and isinstance(meta.get("resumed_with"), dict):
        meta["resumed_with"].update(info)
    else:
        meta.update(info)
    write_json(files.meta, meta)


def _train_members(
    members: list[_Member],
    progress: bool,
    log: Callable[[str], None],
    stop_after_epochs: int | None,
    backend: str,
) -> None:
    """The epoch loop over fused sub-groups; sets every member's ``result``."""
    cfg = members[0].cfg  # the shared fields (epochs, schedule, batch size, ...)
    loader = members[0].run.train_loader
    assert isinstance(loader, GroupBatchLoader)
    group: FusedRuns | None = None
    active: list[_Member] = []
    while True:
        waiting = [
            m
            for m in members
            if m.result is None
            and m.run.state.epoch < cfg.epochs
            and (stop_after_epochs is None or m.epochs_this_call < stop_after_epochs)
        ]
        if not waiting:
            break
        epoch = min(m.run.state.epoch for m in waiting)
        level = [m for m in waiting if m.run.state.epoch == epoch]  # laggards first
        if group is None or [m.index for m in level] != group.run_ids:
            active = level
            group = _make_group(active, epoch, backend)
            loader.seeds = [m.cfg.seed for m in active]
            if cfg.compile:
                loader.set_epoch(epoch)
                x, y = next(iter(loader))
                if not group.enable_compile(x, y):
                    log(f"torch.compile failed, training in eager mode: {group.compile_error}")
        t0 = time.time()
        diverged, records = _group_epoch(group, loader, active, epoch, progress)
        train_seconds = time.time() - t0
        for m, msg in diverged.items():
            m.result = finish_run(m.run, m.files, progress, m.log, diverged=msg)
        active = [m for m in active if m not in diverged]
        for pos, m in enumerate(active):
            # The run's single-run objects take the state at the end of the epoch; from there
            # validation, metrics line and checkpoints are the single run's code.
            m.run.model.load_state_dict(group.state_dict(pos))
            m.run.opt.load_state_dict(group.optimizer_state_dict(pos))
            # Row seconds: the group's training time plus this run's own validation.
            finish_epoch(m.run, m.files, records[pos], cfg.lr_at(epoch), time.time() - train_seconds, m.log)
            m.epochs_this_call += 1
        if not active:
            group = None
    for m in members:
        if m.result is not None:
            continue
        if m.run.state.epoch >= cfg.epochs:
            m.result = finish_run(m.run, m.files, progress, m.log)
        else:
            m.result = {"status": "interrupted", "epoch": m.run.state.epoch}


def _make_group(active: list[_Member], epoch: int, backend: str) -> FusedRuns:
    """A fused group from the members' current models and optimiser states."""
    cfg = active[0].cfg
    return FusedRuns(
        [m.run.model for m in active],
        [m.cfg.alpha for m in active],
        active[0].run.num_classes,
        lr=cfg.lr_at(epoch),
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        layers=cfg.selectivity_layers or None,
        pooling=cfg.token_pooling,
        optimizer=cfg.optimizer,
        eps=cfg.si_eps,
        negative=cfg.negative_rule,
        dead=cfg.si_dead,
        run_ids=[m.index for m in active],  # unique, unlike directory names
        amp=cfg.amp,
        optimizer_states=[m.run.opt.state_dict() for m in active],
        backend=backend,
        robust=[m.run.robust for m in active],
    )


def _group_epoch(
    group: FusedRuns,
    loader: GroupBatchLoader,
    active: list[_Member],
    epoch: int,
    progress: bool,
) -> tuple[dict[_Member, str], list[dict[str, Any]]]:
    """One epoch of every run in ``group`` (members ``active``, in group order).

    Sums stay on the device and are read back every ``check_every`` steps and at the end
    (the single-run loop's schedule); a run whose summed loss is not finite there is
    dropped from the group and from the loader.

    Returns
    -------
    diverged : dict
        Member -> the single run's divergence message, for the runs dropped.
    records : list of dict
        The epoch's training means of the remaining runs (group order):
        ``loss, ce, accuracy, selectivity`` as :func:`selectivity.training.single.train_epoch`.
    """
    cfg = active[0].cfg
    group.set_lr(cfg.lr_at(epoch))
    group.train()
    loader.set_epoch(epoch)
    dev = group.device
    nr = group.num_runs
    tot_loss = torch.zeros(nr, device=dev, dtype=torch.float64)
    tot_ce = torch.zeros(nr, device=dev, dtype=torch.float64)
    tot_si = torch.zeros(nr, device=dev, dtype=torch.float64)
    correct = torch.zeros(nr, device=dev, dtype=torch.int64)
    live = list(active)  # members still in the group, in group order
    rows: list[int] | None = None  # rows of the loader's batches still in use (None: all)
    diverged: dict[_Member, str] = {}
    n = 0
    steps = len(loader)
    bar = None
    it: Iterable = loader
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{cfg.epochs} ({nr} runs)",
            unit="batch",
            leave=False,
            dynamic_ncols=True,
            disable=None,  # a terminal only: no carriage returns in log files
        )
        it = bar
    for step, (x, y) in enumerate(it):
        if rows is not None:  # runs were dropped this epoch: the loader still yields their batches
            sel = torch.tensor(rows, device=x.device)
            x, y = x.index_select(0, sel), y.index_select(0, sel)
        out = group.step(x, y, key=(epoch, step))
        b = y.shape[1]
        n += b
        tot_loss += out.loss * b
        tot_ce += out.ce * b
        tot_si += out.selectivity
        correct += out.correct
        if (step + 1) % cfg.check_every == 0 or step + 1 == steps:
            # The read-back point: one host sync per `check_every` steps for the whole group.
            bad = group.nonfinite_runs(tot_loss)
            if bad:
                last = out.loss.tolist()
                for p in bad:
                    m = live[p]
                    diverged[m] = (
                        f"loss became {last[p]} at epoch {epoch + 1}, step {step + 1} "
                        f"(alpha={m.cfg.alpha}); the run is stopped"
                    )
                keep = [p for p in range(len(live)) if p not in bad]
                rows = [(rows[p] if rows is not None else p) for p in keep]
                live = [live[p] for p in keep]
                if not live:
                    break
                group.drop(bad)
                idx = torch.tensor(keep, device=dev)
                tot_loss, tot_ce, tot_si, correct = (
                    t.index_select(0, idx) for t in (tot_loss, tot_ce, tot_si, correct)
                )
            if bar is not None:
                bar.set_postfix(
                    {"loss": f"{(tot_loss.sum() / max(n * len(live), 1)).item():.3f}"}, refresh=False
                )
    if bar is not None:
        bar.close()
    if rows is not None and live:
        loader.keep(rows)  # later epochs yield only the remaining runs' batches
    loss, ce, si, ok = (t.tolist() for t in (tot_loss, tot_ce, tot_si, correct))
    records = [
        {
            "loss": loss[p] / max(n, 1),
            "ce": ce[p] / max(n, 1),
            "accuracy": ok[p] / max(n, 1),
            "selectivity": si[p] / max(steps, 1) if m.cfg.alpha != 0.0 else None,
        }
        for p, m in enumerate(live)
    ]
    return diverged, records


# --------------------------------------------------------------------------- group size by memory
def runs_that_fit(peak_one: int, peak_two: int, free: int, fraction: float = 0.8, max_runs: int = 64) -> int:
    """The largest group size R whose training step fits in ``fraction * free`` bytes.

    A step's peak memory is modelled as ``base + R * per_run``: parameters, gradients,
    momentum and activations grow with R; the CUDA workspace and the data do not. Two
    measured peaks, with R = 1 and R = 2, give both terms.

    Parameters
    ----------
    peak_one, peak_two : int
        Peak bytes of one step of a group of 1 and of 2 runs.
    free : int
        Bytes the device has free for the group.
    fraction : float
        Share of ``free`` to fill (the rest is headroom: the data set, fragmentation).
    max_runs : int
        Upper bound on R.

    Returns
    -------
    int
        R in ``[1, max_runs]``.

    Examples
    --------
    >>> runs_that_fit(peak_one=300, peak_two=500, free=2000, fraction=0.8)  # base 100, 200 per run
    7
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    per_run = max(int(peak_two) - int(peak_one), 1)
    base = max(int(peak_one) - per_run, 0)
    r = int((fraction * free - base) // per_run)
    return max(1, min(int(max_runs), r))


@dataclass
class MemoryProbe:
    """How :func:`auto_group_size` reads a device's memory (CUDA's counters by default).

    ``start()`` begins a measurement (empties caches, resets the peak), ``peak()`` gives
    the bytes allocated at the peak since ``start()`` above what was allocated then, and
    ``free()`` the bytes the device has free.
    """

    start: Callable[[], None]
    peak: Callable[[], int]
    free: Callable[[], int]


def cuda_memory_probe(device: torch.device) -> MemoryProbe:
    """:class:`MemoryProbe` over ``torch.cuda``'s allocator statistics for ``device``."""
    base = [0]

    def start() -> None:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base[0] = torch.cuda.memory_allocated(device)

    def peak() -> int:
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device)) - base[0]

    def free() -> int:
        torch.cuda.empty_cache()
        return int(torch.cuda.mem_get_info(device)[0])

    return MemoryProbe(start, peak, free)


def auto_group_size(
    cfg: TrainConfig,
    max_runs: int = 64,
    fraction: float = 0.8,
    log: Callable[[str], None] = print,
    probe: MemoryProbe | None = None,
) -> int:
    """Group size for ``sweep --fuse auto``: as many runs of ``cfg`` as fit the GPU's memory.

    On CUDA, one step of a fused group of 1 and of 2 freshly initialised runs (random
    inputs of the data set's shape, ``cfg.batch_size`` per run, three times that for
    AugMix) is measured with
    ``torch.cuda.max_memory_allocated`` and :func:`runs_that_fit` is applied to the free
    memory (``torch.cuda.mem_get_info``). On a CPU the answer is 1: a fused group costs
    there what its runs cost one by one (the ``loop`` backend), so there is nothing to gain.
    A ``probe`` replaces CUDA's counters and measures on ``cfg.device`` whatever it is
    (the tests run the GPU path on the CPU this way).
    """
    device = resolve_device(cfg.device)
    if probe is None:
        if device.type != "cuda":
            log("--fuse auto: 1 run per task on the CPU (fusing saves time only on a GPU)")
            return 1
        probe = cuda_memory_probe(device)
    nominal = NOMINAL.get(cfg.dataset, {})
    shape = tuple(nominal.get("input_shape", (3, 32, 32)))
    classes = int(nominal.get("num_classes") or 200)
    peaks = []
    for r in (1, 2):
        probe.start()
        models = [
            create(cfg.model, classes, activation=cfg.activation, negative_slope=cfg.negative_slope).to(
                device
            )
            for _ in range(r)
        ]
        group = FusedRuns(
            models,
            [1.0] * r,  # alpha != 0: the regulariser's memory is counted
            classes,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            layers=cfg.selectivity_layers or None,
            pooling=cfg.token_pooling,
            optimizer=cfg.optimizer,
            amp=cfg.amp,
        )
        # AugMix trains on the batch and two views of it: three times the images per step.
        b = cfg.batch_size * (3 if cfg.robust == "augmix" else 1)
        x = torch.rand(r, b, *shape, device=device)  # (R, B, C, H, W)
        y = torch.randint(0, classes, (r, b), device=device)
        group.step(x, y)
        peaks.append(probe.peak())
        del group, models, x, y
    free = probe.free()
    r = runs_that_fit(peaks[0], peaks[1], free, fraction, max_runs)
    log(
        f"--fuse auto: {r} runs per task ({cfg.model}, batch {cfg.batch_size}: "
        f"{(peaks[1] - peaks[0]) / 2**20:.0f} MiB per run, {free / 2**30:.1f} GiB free)"
    )
    return r
