"""One prepared GPU call: CUDA tests, the training benchmark and a paper-protocol ResNet20 sample.

Everything a lent GPU should tell us, in one command that ends within ``--budget`` seconds
whatever happens. Four phases, in order, each under its own time cap (a share of the
budget; time a phase leaves unused goes to the next ones); a phase that fails or reaches
its cap is reported as such and the next one still runs:

1. ``env``: device, torch / CUDA / cuDNN versions, free memory, git revision.
2. ``tests``: ``pytest -m cuda`` on the files that hold the ``cuda``-marked tests, in a
   subprocess stopped at the cap (on a CPU they are all skipped, with their reason).
3. ``bench``: one training step of a single run (eager, bf16 autocast, channels_last,
   compiled) and fused groups of R runs per backend (``benchmarks/bench_gpu.py``'s steps
   and timing): images/s per run, images/s of the device, speed-up over R runs one after
   another, peak memory; then the projected device-hours of the ``paper`` sweep preset's
   ResNet20 and VGG16 grids at the best measured fp32 throughput.
4. ``sample``: ResNet20, alphas -1, 0, +2 x 3 seeds trained as one fused group by the
   sweep machinery (``run_sweep(..., fuse=9)``, the ``paper`` preset: SGD 0.9, wd 1e-4,
   batch 256, lr 0.1 x0.1 at 50% and 75% of the epochs), for the largest number of epochs
   up to 200 that a throughput measured on the real data fits into the phase's time; then
   per run the test accuracy of the best-validation epoch, mean SI (dead units counted as
   0, as the paper) and dead units.

Results go to ``--out`` (default ``$OUT`` when set, else ``out/gpu-check``): ``gpu_check.json``
(rewritten after every phase), ``gpu_check.md`` (the tables) and ``gpu_check.log`` (all
output). Run directories and caches go to a temporary ``--work`` folder.

    PYTHONPATH=src python benchmarks/gpu_check.py --budget 300 --data .data --out "$OUT"
    PYTHONPATH=src python benchmarks/gpu_check.py --device cpu --budget 60 --data DIR --out DIR

``--scale smoke`` (the default on a CPU) runs the same code on tiny sizes: batch 8, groups of
1 and 2, one seed per alpha, at most 2 epochs, no ``torch.compile`` (it takes longer than a
smoke budget on a CPU).
"""

# ruff: noqa: E402  (the budget's clock starts before the imports: torch takes seconds)
from __future__ import annotations

import time

_T0 = time.time()  # the budget counts from here

import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

import bench_gpu
from benchutil import make_parser, sync

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("env", "tests", "bench", "sample")
#: The files holding ``cuda``-marked tests: collecting only these keeps the run free of the
#: test suite's optional dependencies (foolbox, imagecorruptions), absent on a GPU image.
CUDA_TEST_FILES = (
    "tests/training/test_cuda.py",
    "tests/training/test_syncfree.py",
    "tests/analysis/test_pwcca.py",
)
SAMPLE_ALPHAS = (-1.0, 0.0, 2.0)
#: Paper 1's values for the sample's alphas (ResNet20, 200 epochs).
PAPER_VALUES = {-1.0: "SI 0.07", 0.0: "accuracy 91%+, SI 0.22", 2.0: "accuracy about 60%"}
#: The goal for a fused group: R = 16 at >= 8x the throughput of 16 runs one after another.
FUSED_GOAL = (16, 8.0)


@dataclass(frozen=True)
class Plan:
    """Sizes of the work: the paper's on a GPU (``full``), a smoke test's on a CPU (``smoke``)."""

    batch: int  # images per run and step in the benchmark
    groups: tuple[int, ...]  # fused group sizes R
    backends: tuple[str, ...]  # fused backends timed on the first model (the others: the first backend)
    models: tuple[str, ...]  # models benchmarked, first = the sample's
    compile: bool  # time a compiled single step (last: it is the slowest to prepare)
    target_s: float  # seconds of timed steps per measurement
    rounds: int  # timed blocks per measurement (median)
    seeds: int  # sample seeds per alpha
    max_epochs: int  # upper bound on the sample's epochs
    calib_s: float  # seconds of calibration steps in the sample phase
    overrides: dict[str, Any] = field(default_factory=dict)  # sample config fields over the paper preset
    shares: dict[str, float] = field(default_factory=dict)  # phase -> at most this share of the budget


FULL = Plan(
    batch=256,
    groups=(1, 4, 16, 64),
    backends=("grouped", "loop", "vmap"),
    models=("resnet20", "vgg16"),
    compile=True,
    target_s=1.0,
    rounds=3,
    seeds=3,
    max_epochs=200,
    calib_s=3.0,
    shares={"env": 0.05, "tests": 0.2, "bench": 0.3},
)
SMOKE = Plan(
    batch=8,
    groups=(1, 2),
    backends=("grouped", "loop", "vmap"),
    models=("resnet20",),
    compile=False,
    target_s=0.1,
    rounds=1,
    seeds=1,
    max_epochs=2,
    calib_s=0.3,
    overrides=dict(batch_size=16, val_size=30, train_subset=60, eval_subset=40, eval_batch_size=64, top_n=3),
    # pytest's start (torch, the package, the test helpers) dominates a smoke run's tests phase
    shares={"env": 0.05, "tests": 0.4, "bench": 0.2},
)
MIN_PHASE_S = {"env": 1.0, "tests": 5.0, "bench": 3.0, "sample": 5.0}


# --------------------------------------------------------------------------- time caps
class PhaseTimeout(BaseException):
    """A time cap was reached. A BaseException, so library code's ``except Exception`` lets it pass."""


class Watchdog:
    """Time caps for blocks of the main thread, and a hard stop for the whole script.

    A daemon thread watches the active caps; when one passes, the thread marks it fired
    and sends SIGINT to the main thread, whose handler raises :class:`PhaseTimeout` there
    if a fired cap is still active (a block that ended meanwhile is left alone; a SIGINT
    the watchdog did not send is a real Ctrl-C). Each cap fires once. At
    ``hard_deadline`` the thread calls ``on_hard_stop`` (which writes what there is) and
    ends the process with status 3.
    """

    def __init__(self, hard_deadline: float, on_hard_stop: Callable[[], None]) -> None:
        self.hard_deadline = hard_deadline
        self._on_hard_stop = on_hard_stop
        self._caps: list[list] = []  # [deadline, fired], outermost first
        self._lock = threading.RLock()  # re-entrant: the handler runs in the main thread
        self._sent = False
        self._main = threading.main_thread().ident
        signal.signal(signal.SIGINT, self._on_sigint)
        threading.Thread(target=self._watch, daemon=True).start()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        with self._lock:
            sent, self._sent = self._sent, False
            fired = any(c[1] for c in self._caps)
        if not sent:
            raise KeyboardInterrupt
        if fired:
            raise PhaseTimeout

    def _watch(self) -> None:
        while True:
            time.sleep(0.05)
            now = time.time()
            if now >= self.hard_deadline:
                try:
                    self._on_hard_stop()
                finally:
                    os._exit(3)
            with self._lock:
                due = [c for c in self._caps if not c[1] and now >= c[0]]
                if due and not self._sent:
                    for c in due:
                        c[1] = True
                    self._sent = True
                    signal.pthread_kill(self._main, signal.SIGINT)

    @contextlib.contextmanager
    def cap(self, seconds: float) -> Iterator[None]:
        """Raise :class:`PhaseTimeout` inside the block after ``seconds`` (never past an outer cap)."""
        with self._lock:
            depth = len(self._caps)
            outer = self._caps[-1][0] if self._caps else math.inf
            self._caps.append([min(outer, time.time() + max(0.0, seconds)), False])
        try:
            yield
        finally:
            with self._lock:
                del self._caps[depth:]  # this cap, and any left by an inner block cut short


class Skipped(Exception):
    """A phase (or a part of one) that does not apply here; the message says why."""


# --------------------------------------------------------------------------- context
@dataclass
class Context:
    device: torch.device
    plan: Plan
    budget: float
    data: str | None
    out: Path
    work: Path
    log: Callable[[str], None]
    watchdog: Watchdog | None = None
    report: dict[str, Any] = field(default_factory=dict)

    def cap(self, seconds: float) -> contextlib.AbstractContextManager[None]:
        """A time cap on a block (:meth:`Watchdog.cap`)."""
        return self.watchdog.cap(seconds) if self.watchdog is not None else contextlib.nullcontext()

    def write(self, timeout: float = -1) -> None:
        """Rewrite ``gpu_check.json`` and ``gpu_check.md`` from the report as it stands."""
        if not _WRITE_LOCK.acquire(timeout=timeout):
            return
        try:
            self.report["wall_s"] = round(time.time() - self.report["started_unix"], 1)
            for name, text in (
                ("gpu_check.json", json.dumps(self.report, indent=1, default=str)),
                ("gpu_check.md", markdown(self.report)),
            ):
                tmp = self.out / f".{name}.tmp"
                tmp.write_text(text)
                os.replace(tmp, self.out / name)
        finally:
            _WRITE_LOCK.release()


_WRITE_LOCK = threading.Lock()  # the main thread and the watchdog's hard stop both write


def _cuda(ctx: Context) -> bool:
    return ctx.device.type == "cuda"


# --------------------------------------------------------------------------- 1. env
def phase_env(ctx: Context, res: dict, end: float) -> None:
    from selectivity import __version__
    from selectivity.run.files import git_revision

    res.update(
        device=str(ctx.device),
        python=platform.python_version(),
        platform=platform.platform(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        selectivity=__version__,
        git=git_revision(ROOT),
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
    )
    if _cuda(ctx):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda but torch.cuda.is_available() is False")
        props = torch.cuda.get_device_properties(ctx.device)
        free, total = torch.cuda.mem_get_info(ctx.device)
        res.update(
            name=props.name,
            capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            memory_total_gib=round(total / 2**30, 2),
            memory_free_gib=round(free / 2**30, 2),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
    else:
        res.update(name=platform.processor() or platform.machine(), memory_free_gib=_host_free_gib())
    ctx.log(
        f"device {res['name']} ({res['device']}); torch {res['torch']}, CUDA {res['cuda']}, "
        f"cuDNN {res['cudnn']}; free memory {res['memory_free_gib']} GiB; git {res['git']}"
    )


def _host_free_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return round(int(line.split()[1]) / 2**20, 2)  # kB -> GiB
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------- 2. tests
def phase_tests(ctx: Context, res: dict, end: float) -> None:
    import importlib.util

    if importlib.util.find_spec("pytest") is None:
        raise Skipped("pytest is not installed here")
    xml = ctx.work / "cuda_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-v", "-rs", "-p", "no:cacheprovider"]
    cmd += [f"--junitxml={xml}", *CUDA_TEST_FILES]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
    )
    res["command"] = " ".join(cmd[1:])
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(1.0, end - time.time() - 1.0)
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout or ""
        res["output_tail"] = out[-3000:]
        # The tests that finished before the cap, from pytest's verbose lines.
        res["tests"] = [
            {"test": m.group(1), "outcome": m.group(2).lower(), "seconds": None, "message": None}
            for m in re.finditer(r"^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR)", out, re.MULTILINE)
        ]
        raise PhaseTimeout from None
    res["returncode"] = proc.returncode
    res["output_tail"] = proc.stdout[-3000:]
    ctx.log(proc.stdout[-3000:].rstrip())
    cases = _junit_cases(xml)
    res["tests"] = cases
    counts = {k: sum(1 for c in cases if c["outcome"] == k) for k in ("passed", "failed", "skipped")}
    res.update(counts)
    if proc.returncode not in (0, 5) or counts["failed"]:
        bad = [c["test"] for c in cases if c["outcome"] == "failed"]
        raise RuntimeError(
            f"pytest exit status {proc.returncode}; failed: {', '.join(bad) or '(see output)'}"
        )
    if counts["passed"] == 0:
        reasons = sorted({c["message"] for c in cases if c["outcome"] == "skipped" and c["message"]})
        raise Skipped(f"{counts['skipped']} cuda-marked tests collected, all skipped: {'; '.join(reasons)}")


def _junit_cases(xml: Path) -> list[dict]:
    """One dict per test case of a JUnit XML report: test, outcome, seconds, message."""
    if not xml.exists():
        return []
    cases = []
    for tc in ET.parse(xml).getroot().iter("testcase"):
        outcome, message = "passed", None
        for child in tc:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", child.get("message")
            elif child.tag == "skipped":
                outcome, message = "skipped", child.get("message")
        cases.append(
            {
                "test": f"{tc.get('classname')}::{tc.get('name')}",
                "outcome": outcome,
                "seconds": round(float(tc.get("time") or 0.0), 2),
                "message": (message or "")[:300] or None,
            }
        )
    return cases


# --------------------------------------------------------------------------- 3. bench
@dataclass(frozen=True)
class Job:
    model: str
    variant: str  # single: eager | bf16 | channels_last | compiled; fused: fused
    runs: int = 1
    backend: str | None = None  # fused only


def bench_jobs(plan: Plan) -> list[Job]:
    """The measurements in the order they run (the most needed first, compiling last)."""
    first, *others = plan.models
    jobs = [Job(first, v) for v in ("eager", "bf16", "channels_last")]
    jobs += [Job(first, "fused", r, b) for b in plan.backends for r in plan.groups]
    for m in others:  # the grid projection needs their throughput: eager and the first backend
        jobs += [Job(m, "eager"), Job(m, "bf16")]
        jobs += [Job(m, "fused", r, plan.backends[0]) for r in plan.groups if r <= 16]
    if plan.compile:
        jobs.append(Job(first, "compiled"))
    return jobs


def _measure(ctx: Context, job: Job) -> dict:
    """Seconds per step (median of ``rounds`` timed blocks after a warm-up) and peak memory."""
    dev, plan = ctx.device, ctx.plan
    if _cuda(ctx):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    note = ""
    if job.variant == "fused":
        step, note = bench_gpu.fused_step(
            job.model, job.runs, plan.batch, dev, False, False, job.backend or "auto"
        )
    elif job.variant == "compiled":
        step, note = bench_gpu.compiled_single_step(job.model, plan.batch, dev, False)
    else:
        step = bench_gpu.single_step(
            job.model,
            plan.batch,
            dev,
            old=False,
            amp=job.variant == "bf16",
            channels_last=job.variant == "channels_last",
        )
    t0 = time.perf_counter()
    step()  # first call: lazy initialisation, cuDNN algorithm choice
    sync(dev)
    first = time.perf_counter() - t0
    block = max(1, min(20, int(plan.target_s / (plan.rounds * max(first, 1e-4)))))
    sec = bench_gpu.time_blocks({"s": step}, dev, block, plan.rounds)["s"]
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if _cuda(ctx) else None
    return {"sec": sec, "peak_mib": None if peak is None else round(peak, 1), "note": note, "steps": block}


def phase_bench(ctx: Context, res: dict, end: float) -> None:
    plan, dev = ctx.plan, ctx.device
    if dev.type == "cpu":
        from selectivity.training.runtime import keep_freed_memory

        keep_freed_memory()  # as training on the CPU does
    rows: list[dict] = []
    res.update(batch=plan.batch, clock="wall time" if _cuda(ctx) else "process CPU time", rows=rows)
    single_t: dict[str, float] = {}
    oom: set[tuple[str, str | None]] = set()
    reserve = 1.0  # for the projection below
    for job in bench_jobs(plan):
        row: dict[str, Any] = {
            "model": job.model,
            "variant": job.variant if job.variant != "fused" else f"fused {job.backend}",
            "runs": job.runs,
        }
        rows.append(row)
        left = end - reserve - time.time()
        if (job.model, job.backend) in oom and job.variant == "fused":
            row.update(status="skipped", note="a smaller group ran out of memory")
            continue
        if left < 1.0:
            row.update(status="skipped", note="the phase's time was used up")
            continue
        try:
            with ctx.cap(left):
                m = _measure(ctx, job)
        except PhaseTimeout:
            row.update(status="timeout", note=f"stopped at the phase's cap ({left:.0f} s left)")
            continue
        except torch.OutOfMemoryError:
            row.update(status="out of memory", note=f"R = {job.runs} does not fit")
            oom.add((job.model, job.backend))
            if _cuda(ctx):
                torch.cuda.empty_cache()
            continue
        except Exception as e:
            row.update(status="failed", note=f"{type(e).__name__}: {' '.join(str(e).split())[:200]}")
            continue
        sec = m["sec"]
        if job.variant == "eager":
            single_t[job.model] = sec
        t1 = single_t.get(job.model)
        row.update(
            status="ok",
            ms_per_step=round(sec * 1e3, 2),
            images_per_s_per_run=round(plan.batch / sec, 1),
            images_per_s=round(job.runs * plan.batch / sec, 1),
            speedup_vs_sequential=round(job.runs * t1 / sec, 2) if t1 and job.variant == "fused" else None,
            peak_mib=m["peak_mib"],
            timed_steps=m["steps"] * plan.rounds,
            note=m["note"],
        )
        ctx.log(
            f"bench {job.model:<9} {row['variant']:<16} R={job.runs:<3} {row['ms_per_step']:>9.2f} ms/step "
            f"{row['images_per_s_per_run']:>9.1f} img/s/run {row['images_per_s']:>10.1f} img/s "
            f"peak {row['peak_mib']} MiB {row['note']}"
        )
    if plan.compile:
        with contextlib.suppress(Exception):
            torch._dynamo.reset()  # nothing compiled is needed after this phase
    res["projection"] = projection(rows, plan)
    res["fused_goal"] = fused_goal(rows, plan)
    if not any(r["status"] == "ok" for r in rows):
        raise RuntimeError("no measurement succeeded")


def projection(rows: list[dict], plan: Plan) -> list[dict]:
    """Device-hours of the ``paper`` preset's grid per model at the best measured fp32 throughput."""
    out = []
    for model in ("resnet20", "vgg16"):
        grid = bench_gpu.paper_grid(model)
        ok = [r for r in rows if r["model"] == model and r["status"] == "ok" and r["variant"] != "bf16"]
        entry: dict[str, Any] = {"model": model, **grid}
        if not ok:
            entry.update(best_images_per_s=None, device_hours=None, note="not measured")
        else:
            best = max(ok, key=lambda r: r["images_per_s"])
            seq = [r for r in ok if r["variant"] == "eager"]
            entry.update(
                best_images_per_s=best["images_per_s"],
                best_variant=f"{best['variant']} R={best['runs']}",
                device_hours=round(bench_gpu.grid_hours(model, best["images_per_s"]), 2),
                sequential_device_hours=round(bench_gpu.grid_hours(model, seq[0]["images_per_s"]), 2)
                if seq
                else None,
            )
        out.append(entry)
    return out


def fused_goal(rows: list[dict], plan: Plan) -> dict:
    """R = 16 fused (first backend) against 16 runs one after another: the goal is >= 8x."""
    r_goal, x_goal = FUSED_GOAL
    first = plan.models[0]
    cand = [
        r
        for r in rows
        if r["model"] == first and r["variant"] == f"fused {plan.backends[0]}" and r["status"] == "ok"
    ]
    exact = [r for r in cand if r["runs"] == r_goal]
    if exact:
        x = exact[0]["speedup_vs_sequential"]
        return {"runs": r_goal, "speedup": x, "goal": x_goal, "met": x is not None and x >= x_goal}
    return {
        "runs": r_goal,
        "speedup": None,
        "goal": x_goal,
        "met": None,
        "note": f"R = {r_goal} not measured",
    }


# --------------------------------------------------------------------------- 4. sample
def _sample_spec(ctx: Context, epochs: int):
    from selectivity.sweep import SweepSpec

    return SweepSpec(
        models=[ctx.plan.models[0]],
        alphas=list(SAMPLE_ALPHAS),
        seeds=list(range(ctx.plan.seeds)),
        preset="paper",
        overrides={**ctx.plan.overrides, "epochs": epochs, "device": str(ctx.device)},
        executor="inprocess",
    )


def phase_sample(ctx: Context, res: dict, end: float) -> None:
    from selectivity.data.loader import BatchLoader, GroupBatchLoader
    from selectivity.models import create
    from selectivity.training.fused import FusedRuns
    from selectivity.training.single import prepare_data

    if ctx.data is None:
        raise Skipped("no CIFAR-10 copy given (--data or SELECTIVITY_DATA)")
    dev, plan = ctx.device, ctx.plan
    runs = _sample_spec(ctx, 1).runs()
    cfg = runs[0].config
    nr = len(runs)
    # Data once (decoded into the cache, so the sweep's own load is quick).
    t = time.time()
    rd = prepare_data(cfg, ctx.data)
    data_s = time.time() - t
    n_train, n_val, n_test = len(rd.train), len(rd.val), len(rd.test)
    ctx.log(f"sample: data loaded in {data_s:.1f} s ({n_train} train, {n_val} val, {n_test} test images)")
    # Calibration: steps of the sample's own fused group on the real data, and eval batches.
    norm = dict(mean=rd.splits.mean, std=rd.splits.std, device=dev)
    models = []
    for r in runs:
        torch.manual_seed(r.config.seed)
        models.append(create(cfg.model, rd.splits.num_classes).to(dev))
    group = FusedRuns(
        models,
        [r.config.alpha for r in runs],
        rd.splits.num_classes,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        amp=cfg.amp,
    )
    loader = GroupBatchLoader(
        rd.train,
        cfg.batch_size,
        seeds=[r.config.seed for r in runs],
        shuffle=True,
        augment=cfg.augment,
        **norm,
    )
    batches = iter(loader)
    for _ in range(2):  # warm-up
        group.step(*next(batches))
    sync(dev)
    steps, t = 0, time.perf_counter()
    while steps < 2 or (time.perf_counter() - t < plan.calib_s and steps < 50):
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        group.step(x, y)
        sync(dev)
        steps += 1
    t_step = (time.perf_counter() - t) / steps
    model = group.model(0).eval()
    del group, models, loader, batches, x, y  # the sweep loads its own copy
    xv, _ = next(iter(BatchLoader(rd.val, cfg.eval_batch_size, **norm)))
    with torch.no_grad():
        model(xv)
        sync(dev)
        t = time.perf_counter()
        model(xv)
        sync(dev)
        t_img = (time.perf_counter() - t) / xv.shape[0]
    del model
    if _cuda(ctx):
        torch.cuda.empty_cache()
    # Epochs that fit: training steps + every run's validation (a forward with the
    # selectivity hooks: counted as 2 plain ones) per epoch; the final test and selectivity
    # measurement (about 4 eval passes) and the sweep's setup once.
    epoch_s = math.ceil(n_train / cfg.batch_size) * t_step + nr * (2 * n_val * t_img + 0.05)
    final_s = nr * (4 * n_test * t_img + 0.2)
    setup_s = 1.0 + 0.5 * data_s + 0.1 * nr
    reserve = 1.0  # reading the results
    avail = end - time.time() - setup_s - final_s - reserve
    fit = int(0.85 * avail / epoch_s) if avail > 0 else 0
    epochs = min(plan.max_epochs, fit)
    res.update(
        model=cfg.model,
        alphas=list(SAMPLE_ALPHAS),
        seeds=plan.seeds,
        runs=nr,
        batch_size=cfg.batch_size,
        data_seconds=round(data_s, 1),
        images={"train": n_train, "val": n_val, "test": n_test},
        calibration={
            "group_step_s": round(t_step, 4),
            "images_per_s_per_run": round(cfg.batch_size / t_step, 1),
            "eval_image_s": t_img,
            "predicted_epoch_s": round(epoch_s, 2),
            "predicted_final_s": round(final_s, 2),
            "available_s": round(avail, 1),
        },
        epochs_fit=fit,
        epochs=epochs,
    )
    ctx.log(
        f"sample: group of {nr} step {t_step * 1e3:.1f} ms, predicted epoch {epoch_s:.1f} s; "
        f"{avail:.0f} s available -> {fit} epochs fit, training {epochs}"
    )
    if epochs < 1:
        raise Skipped(f"not one epoch fits: {avail:.0f} s available, {epoch_s:.1f} s predicted per epoch")
    spec = _sample_spec(ctx, epochs)
    res["milestone_epochs"] = spec.runs()[0].config.milestone_epochs()
    res["lr"] = cfg.lr
    sweep_dir = ctx.work / "sample"
    from selectivity.sweep import run_sweep

    t = time.time()
    timed_out = False
    try:
        with ctx.cap(end - reserve - time.time()):
            run_sweep(
                spec, sweep_dir, executor="inprocess", data=ctx.data, progress=False, log=ctx.log, fuse=nr
            )
    except PhaseTimeout:
        timed_out = True
    res["train_and_test_s"] = round(time.time() - t, 1)
    res["per_run"] = _sample_results(sweep_dir, [r.run_id for r in runs])
    res["per_alpha"] = _per_alpha(res["per_run"])
    if timed_out:
        raise PhaseTimeout
    bad = [r["run"] for r in res["per_run"] if r["status"] != "completed"]
    if bad:
        raise RuntimeError(f"runs not completed: {', '.join(bad)}")


def _sample_results(sweep_dir: Path, run_ids: list[str]) -> list[dict]:
    from selectivity.run.files import SweepFiles, read_json

    out = []
    for rid in run_ids:
        files = SweepFiles(sweep_dir).run(rid)
        row: dict[str, Any] = {"run": rid}
        try:
            res = read_json(files.result)
        except (OSError, ValueError):
            res = None
        if res is None:  # stopped before the end: what its metrics say
            lines = files.metrics.read_text().splitlines() if files.metrics.exists() else []
            rec = [json.loads(x) for x in lines if x.strip()]
            row.update(
                status="unfinished",
                epochs_completed=len(rec),
                best_val_accuracy=max((r.get("val_accuracy") or 0.0 for r in rec), default=None),
            )
        else:
            layers = res.get("layers") or []
            row.update(
                status=res.get("status"),
                alpha=res.get("alpha"),
                seed=res.get("seed"),
                epochs_completed=res.get("epochs_completed"),
                best_epoch=res.get("best_epoch"),
                best_val_accuracy=res.get("best_val_accuracy"),
                test_accuracy=res.get("test_accuracy"),
                mean_selectivity=res.get("mean_selectivity"),
                mean_selectivity_live=res.get("mean_selectivity_live"),
                dead_units=sum(round(l["units"] * l["dead_fraction"]) for l in layers) if layers else None,
                units=sum(l["units"] for l in layers) if layers else None,
                train_seconds=res.get("train_seconds"),
            )
        out.append(row)
    return out


def _per_alpha(per_run: list[dict]) -> list[dict]:
    out = []
    for a in SAMPLE_ALPHAS:
        done = [r for r in per_run if r.get("alpha") == a and r.get("status") == "completed"]

        def mean(key: str, rows: list[dict] = done) -> float | None:
            vals = [r[key] for r in rows if r.get(key) is not None]
            return sum(vals) / len(vals) if vals else None

        out.append(
            {
                "alpha": a,
                "n": len(done),
                "test_accuracy": mean("test_accuracy"),
                "mean_selectivity": mean("mean_selectivity"),
                "dead_units": mean("dead_units"),
                "paper": PAPER_VALUES.get(a),
            }
        )
    return out


# --------------------------------------------------------------------------- report
def _f(v: Any, fmt: str = "{:.3f}") -> str:
    return "" if v is None else fmt.format(v) if isinstance(v, (int, float)) else str(v)


def markdown(rep: dict) -> str:
    """The report's tables as Markdown."""
    ph = rep.get("phases", {})
    env = ph.get("env", {}).get("result", {})
    lines = [
        f"# GPU check: {env.get('name', '?')} ({rep.get('device')})",
        "",
        f"torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}; free memory "
        f"{env.get('memory_free_gib')} GiB; git {env.get('git')}; budget {rep.get('budget_s')} s, "
        f"wall {rep.get('wall_s')} s; scale {rep.get('scale')}.",
        "",
        f"Command: `{rep.get('command')}`",
        "",
        "| phase | status | seconds | cap (s) | note |",
        "|---|---|---|---|---|",
    ]
    for name in PHASES:
        p = ph.get(name, {})
        lines.append(
            f"| {name} | {p.get('status', 'not run')} | {_f(p.get('seconds'), '{:.1f}')} | "
            f"{_f(p.get('cap_s'), '{:.0f}')} | {(p.get('reason') or '').replace('|', '/')[:200]} |"
        )
    t = ph.get("tests", {}).get("result", {})
    if t.get("tests"):
        n = {k: sum(1 for c in t["tests"] if c["outcome"] == k) for k in ("passed", "failed", "skipped")}
        lines += ["", f"**CUDA tests**: {n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped."]
        lines += [f"- failed: `{c['test']}`: {c['message']}" for c in t["tests"] if c["outcome"] == "failed"]
    b = ph.get("bench", {}).get("result", {})
    if b.get("rows"):
        lines += [
            "",
            f"## Training step (batch {b.get('batch')} per run, {b.get('clock')})",
            "",
            "| model | variant | R | ms/step | img/s per run | img/s | x R sequential | peak MiB | status / note |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in b["rows"]:
            note = r.get("status", "") if r.get("status") != "ok" else ""
            note = "; ".join(x for x in (note, r.get("note") or "") if x)
            lines.append(
                f"| {r['model']} | {r['variant']} | {r['runs']} | {_f(r.get('ms_per_step'), '{:.1f}')} | "
                f"{_f(r.get('images_per_s_per_run'), '{:.0f}')} | {_f(r.get('images_per_s'), '{:.0f}')} | "
                f"{_f(r.get('speedup_vs_sequential'), '{:.2f}')} | {_f(r.get('peak_mib'), '{:.0f}')} | "
                f"{note.replace('|', '/')[:120]} |"
            )
        g = b.get("fused_goal") or {}
        if g:
            lines += [
                "",
                f"Fused R = {g.get('runs')} vs {g.get('runs')} runs one after another: "
                f"{_f(g.get('speedup'), '{:.2f}x')} (goal >= {g.get('goal')}x: "
                f"{'met' if g.get('met') else 'not met' if g.get('met') is False else g.get('note')}).",
            ]
    if b.get("projection"):
        lines += [
            "",
            "## Projected device-hours of the paper's grids (training steps only)",
            "",
            "| model | runs x epochs x images | best fp32 img/s (variant) | device-hours | one run at a time |",
            "|---|---|---|---|---|",
        ]
        for p in b["projection"]:
            lines.append(
                f"| {p['model']} | {p['runs']} x {p['epochs']} x {p['images_per_epoch']} | "
                f"{_f(p.get('best_images_per_s'), '{:.0f}')} ({p.get('best_variant', p.get('note'))}) | "
                f"{_f(p.get('device_hours'), '{:.1f}')} | {_f(p.get('sequential_device_hours'), '{:.1f}')} |"
            )
    s = ph.get("sample", {}).get("result", {})
    if s.get("per_run"):
        lines += [
            "",
            f"## Paper-protocol sample: {s.get('model')}, {s.get('epochs')} epochs "
            f"(lr {s.get('lr')} x0.1 at epochs {s.get('milestone_epochs')}), batch {s.get('batch_size')}, "
            f"{s.get('runs')} runs fused",
            "",
            "| run | status | epochs | best epoch | test acc | mean SI | SI live | dead units |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in s["per_run"]:
            lines.append(
                f"| {r['run']} | {r.get('status')} | {_f(r.get('epochs_completed'), '{}')} | "
                f"{_f(r.get('best_epoch'), '{}')} | {_f(r.get('test_accuracy'), '{:.2%}')} | "
                f"{_f(r.get('mean_selectivity'))} | {_f(r.get('mean_selectivity_live'))} | "
                f"{_f(r.get('dead_units'), '{}')} / {_f(r.get('units'), '{}')} |"
            )
        lines += [
            "",
            "| alpha | n | test acc | mean SI | dead units | paper (200 epochs) |",
            "|---|---|---|---|---|---|",
        ]
        for a in s.get("per_alpha", []):
            lines.append(
                f"| {a['alpha']:+g} | {a['n']} | {_f(a['test_accuracy'], '{:.2%}')} | "
                f"{_f(a['mean_selectivity'])} | {_f(a['dead_units'], '{:.1f}')} | {a['paper']} |"
            )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main
PHASE_FNS: dict[str, Callable[[Context, dict, float], None]] = {
    "env": phase_env,
    "tests": phase_tests,
    "bench": phase_bench,
    "sample": phase_sample,
}


def run_phase(ctx: Context, name: str, cap: float) -> None:
    rec: dict[str, Any] = {"status": "running", "cap_s": round(cap, 1), "seconds": None, "reason": None}
    res: dict[str, Any] = {}
    rec["result"] = res
    ctx.report["phases"][name] = rec
    ctx.log(f"== phase {name} (cap {cap:.0f} s)")
    t0 = time.time()
    try:
        with ctx.cap(cap):
            PHASE_FNS[name](ctx, res, t0 + cap)
        rec["status"] = "ok"
    except Skipped as e:
        rec.update(status="skipped", reason=str(e))
    except PhaseTimeout:
        rec.update(status="timeout", reason=f"stopped at its cap of {cap:.0f} s")
    except Exception as e:
        rec.update(status="failed", reason=f"{type(e).__name__}: {' '.join(str(e).split())[:500]}")
        ctx.log(traceback.format_exc())
    rec["seconds"] = round(time.time() - t0, 1)
    ctx.log(
        f"== phase {name}: {rec['status']} in {rec['seconds']} s"
        + (f" ({rec['reason']})" if rec["reason"] else "")
    )
    if _cuda(ctx):
        with contextlib.suppress(Exception):
            torch.cuda.empty_cache()
    ctx.write()


def main(argv: list[str] | None = None) -> int:
    ap = make_parser(__doc__)
    ap.add_argument(
        "--budget", type=float, default=300.0, help="wall-time budget of the whole script, seconds"
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--data", default=None, help="CIFAR-10 copy (default: $SELECTIVITY_DATA)")
    ap.add_argument("--out", default=None, help="output folder (default: $OUT when set, else out/gpu-check)")
    ap.add_argument("--work", default=None, help="run directories and caches (default: a temporary folder)")
    ap.add_argument("--scale", choices=("full", "smoke"), default=None, help="full on CUDA, smoke on CPU")
    ap.add_argument("--skip", default="", help="phases to skip, comma-separated (e.g. tests,bench)")
    ap.add_argument("--seeds", type=int, default=None, help="sample seeds per alpha (full: 3)")
    ap.add_argument(
        "--max-epochs", type=int, default=None, help="upper bound on the sample's epochs (full: 200)"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads on a CPU device (1: steady on a shared machine)",
    )
    args = ap.parse_args(argv)
    start = _T0 if argv is None else time.time()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    plan = FULL if (args.scale or ("full" if device.type == "cuda" else "smoke")) == "full" else SMOKE
    scale = "full" if plan is FULL else "smoke"
    if args.seeds is not None:
        plan = replace(plan, seeds=args.seeds)
    if args.max_epochs is not None:
        plan = replace(plan, max_epochs=args.max_epochs)
    out = Path(args.out or os.environ.get("OUT") or "out/gpu-check")
    out.mkdir(parents=True, exist_ok=True)
    temp_work = args.work is None
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    # Decoded data in the work folder: no per-user cache directory needed on a bare machine.
    os.environ.setdefault("SELECTIVITY_CACHE", str(work / "cache"))
    data = args.data or os.environ.get("SELECTIVITY_DATA") or None
    log_file = (out / "gpu_check.log").open("w", buffering=1)

    def log(msg: str) -> None:
        print(msg, flush=True)
        log_file.write(msg + "\n")

    ctx = Context(device, plan, args.budget, data, out, work, log)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    ctx.report.update(
        script="benchmarks/gpu_check.py",
        command="python benchmarks/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
        device=str(device),
        scale=scale,
        budget_s=args.budget,
        started_unix=start,
        plan=asdict(plan),
        phases={},
    )
    reserve = min(3.0, 0.05 * args.budget)  # writing the files at the end
    deadline = start + args.budget - reserve

    def hard_stop() -> None:
        for _ in range(3):
            with contextlib.suppress(Exception):
                ctx.report["hard_stop"] = "the budget ran out; the process was ended"
                ctx.write(timeout=0.3)
                return

    ctx.watchdog = Watchdog(start + args.budget - 0.5, hard_stop)
    try:
        for i, name in enumerate(PHASES):
            if name in skip:
                ctx.report["phases"][name] = {
                    "status": "skipped",
                    "reason": "--skip",
                    "seconds": 0.0,
                    "result": {},
                }
                continue
            left = deadline - time.time()
            later = sum(MIN_PHASE_S[p] for p in PHASES[i + 1 :] if p not in skip)
            share = plan.shares.get(name)
            cap = left - later if share is None else min(share * args.budget, left - later)
            if cap < MIN_PHASE_S[name]:
                ctx.report["phases"][name] = {
                    "status": "skipped",
                    "reason": f"no time left in the budget ({max(cap, 0):.0f} s for it)",
                    "seconds": 0.0,
                    "result": {},
                }
                continue
            run_phase(ctx, name, cap)
    finally:
        ctx.write()
        statuses = {k: v["status"] for k, v in ctx.report["phases"].items()}
        log(f"gpu_check: {statuses} in {time.time() - start:.1f} s; results in {out}")
        log_file.close()
        if temp_work:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if all(s in ("ok", "skipped") for s in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
