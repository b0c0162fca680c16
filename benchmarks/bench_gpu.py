"""GPU training benchmark: sync-free step, fused groups, compile, bf16, projected grid cost.

Measured in one run on one device:

1. Old vs new training step of one ResNet20 run with the regulariser (the old
   ``batch_selectivity``, with its per-step host reads and Python loop over layers, is
   kept below for the comparison): forward + regulariser + backward + SGD step.
2. Images per second *per run* for a single run (a plain model) and for fused groups of
   R runs (:class:`selectivity.training.fused.FusedRuns`), eager vs ``torch.compile`` and fp32 vs
   bf16 autocast, and the fused cost ratio ``t(R) / (R * t(single))`` against the
   criterion ``<= 1.05``.
3. Projected device-hours of the paper's grids (the ``paper`` sweep preset: ResNet20 and
   VGG16, 20 alphas x 20 seeds, 200 epochs of 45,000 images; training steps only, no
   evaluation) from the best measured throughput (:func:`paper_grid`).

On CPU the time of a step is the process CPU time with one torch thread (robust when the
machine is shared); on CUDA it is wall time between synchronisations.

    PYTHONPATH=src python benchmarks/bench_gpu.py --device cpu --groups 1,2,4 --batch 32
    PYTHONPATH=src python benchmarks/bench_gpu.py --device cuda --groups 1,4,16,64 --batch 256
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchutil import add_device, add_threads, make_parser, sync
from selectivity.core.hooks import ActivationCapture
from selectivity.core.metrics import NEGATIVE_RULES
from selectivity.core.regularizer import SelectivityRegularizer, batch_selectivity
from selectivity.data import ImageDataset
from selectivity.data.loader import BatchLoader, GroupBatchLoader
from selectivity.models import create
from selectivity.run.config import make_config
from selectivity.sweep.spec import get_sweep_preset
from selectivity.training.fused import FusedRuns
from selectivity.training.runtime import autocast, keep_freed_memory
from selectivity.training.runtime import channels_last as to_channels_last

#: CIFAR-10's training images, before the validation hold-out (``val_size``) is taken out.
CIFAR10_TRAIN_IMAGES = 50_000


def paper_grid(model_name: str) -> dict[str, int]:
    """The ``paper`` sweep preset's grid for one model: runs, epochs and training images per epoch."""
    spec = get_sweep_preset("paper")
    cfg = make_config(spec.preset, {"model": model_name})
    return {
        "runs": len(spec.alphas) * len(spec.seeds),
        "epochs": cfg.epochs,
        "images_per_epoch": CIFAR10_TRAIN_IMAGES - cfg.val_size,
    }


def grid_hours(model_name: str, images_per_s: float) -> float:
    """Device-hours of the training steps of the paper's grid for one model at ``images_per_s``."""
    g = paper_grid(model_name)
    return g["runs"] * g["epochs"] * g["images_per_epoch"] / images_per_s / 3600


# --------------------------------------------------------------------------- old code
def old_batch_selectivity(
    acts: list[torch.Tensor],
    labels: torch.Tensor,
    num_classes: int,
    eps: float = 1e-6,
    negative: str = "shift",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_selectivity`` as it was before the sync-free step (host reads, Python loop over layers)."""
    if negative not in NEGATIVE_RULES:
        raise ValueError(negative)
    flat = [a.mean(dim=(2, 3)) if a.dim() == 4 else a for a in acts]
    sizes = [f.shape[1] for f in flat]
    r = torch.cat(flat, dim=1)
    if r.dtype in (torch.float16, torch.bfloat16):
        r = r.float()
    b = r.shape[0]
    if b and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError("labels out of range")
    labels = labels.to(r.device).long()
    onehot = torch.zeros(b, num_classes, dtype=r.dtype, device=r.device)
    onehot[torch.arange(b, device=r.device), labels] = 1.0
    counts = onehot.sum(dim=0)
    present = counts > 0
    n_present = int(present.sum())
    zero = r.sum() * 0.0
    if n_present < 2:
        return zero, torch.zeros(len(sizes), dtype=r.dtype, device=r.device)
    onehot = onehot[:, present] / counts[present]
    m = onehot.t() @ r
    if negative == "shift":
        m = m - m.min(dim=0).values.clamp(max=0.0)
    elif negative == "clamp":
        m = m.clamp(min=0.0)
    mu_max = m.max(dim=0).values
    mu_rest = (m.sum(dim=0) - mu_max) / (m.shape[0] - 1)
    den = mu_max + mu_rest
    live = den > 0
    safe_den = torch.where(live, den + eps, torch.ones_like(den))
    si = torch.where(live, (mu_max - mu_rest) / safe_den, torch.zeros_like(den))
    livef = live.to(r.dtype)
    layer_sum = torch.stack([s.sum() for s in si.split(sizes)])
    layer_live = torch.stack([s.sum() for s in livef.split(sizes)])
    has_live = layer_live > 0
    per_layer = layer_sum / layer_live.clamp(min=1.0)
    if not bool(has_live.any()):
        return zero, per_layer
    return per_layer[has_live].mean(), per_layer


# --------------------------------------------------------------------------- timing
def _clock(device: torch.device) -> float:
    # CPU: process time (one thread) is robust on a shared machine; CUDA: wall time.
    return time.perf_counter() if device.type == "cuda" else time.process_time()


def time_blocks(fns: dict[str, Callable[[], None]], device: torch.device, block: int, rounds: int) -> dict:
    """Median seconds per call of each function, measured in interleaved blocks."""
    for fn in fns.values():  # warm-up
        fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = _clock(device)
            for _ in range(block):
                fn()
            sync(device)
            times[k].append((_clock(device) - t) / block)
    return {k: statistics.median(v) for k, v in times.items()}


# --------------------------------------------------------------------------- steps
def _dataset(n: int, device: torch.device) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return ImageDataset(images, torch.arange(n) % 10, [f"c{i}" for i in range(10)], "synthetic")


def _cycle(batches: list):
    i = 0
    while True:
        yield batches[i % len(batches)]
        i += 1


def single_step(
    model_name: str,
    batch: int,
    device: torch.device,
    old: bool,
    amp: bool,
    alpha: float = -1.0,
    channels_last: bool = False,
):
    """A plain one-model step (forward + regulariser + backward + SGD) as a closure.

    ``channels_last``: the model and its inputs in NHWC memory format (the config field's path).
    """
    torch.manual_seed(0)
    model = create(model_name).to(device).train()
    if channels_last:
        model = to_channels_last(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loader = BatchLoader(_dataset(4 * batch, device), batch, shuffle=True, augment=True, device=device)
    it = _cycle(list(loader))
    if old:
        cap = ActivationCapture(model, detach=False)
        cap.add_hooks()

        def si(y: torch.Tensor) -> torch.Tensor:
            return old_batch_selectivity(cap.tensors, y, 10)[0]
    else:
        reg = SelectivityRegularizer(model, alpha, 10, check_labels=False)
        reg.__enter__()

        def si(y: torch.Tensor) -> torch.Tensor:
            return reg.selectivity(y)  # type: ignore[return-value]

    def step() -> None:
        x, y = next(it)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            loss = F.cross_entropy(model(x), y) - alpha * si(y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def fused_step(
    model_name: str,
    runs: int,
    batch: int,
    device: torch.device,
    amp: bool,
    compile_: bool,
    backend: str = "auto",
):
    models = []
    for s in range(runs):
        torch.manual_seed(s)
        models.append(create(model_name).to(device))
    alphas = [(-1.0, 0.0, 2.0)[s % 3] for s in range(runs)]
    group = FusedRuns(models, alphas, 10, lr=0.01, amp=amp, backend=backend)
    loader = GroupBatchLoader(
        _dataset(4 * batch, device), batch, seeds=list(range(runs)), shuffle=True, augment=True, device=device
    )
    batches = list(loader)
    it = _cycle(batches)
    note = ""
    if compile_:
        t = time.perf_counter()
        ok = group.enable_compile(*batches[0])
        note = (
            f"compiled in {time.perf_counter() - t:.0f} s" if ok else f"fallback: {group.compile_error[:80]}"
        )

    def step() -> None:
        group.step(*next(it))

    return step, note


def compiled_single_step(model_name: str, batch: int, device: torch.device, amp: bool, alpha: float = -1.0):
    """One model, its forward + loss compiled (fallback to eager on failure)."""
    from selectivity.training.runtime import compile_with_fallback

    torch.manual_seed(0)
    model = create(model_name).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loader = BatchLoader(_dataset(4 * batch, device), batch, shuffle=True, augment=True, device=device)
    batches = list(loader)
    it = _cycle(batches)
    reg = SelectivityRegularizer(model, alpha, 10, check_labels=False)
    reg.__enter__()

    def loss_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y) - alpha * reg.selectivity(y)  # type: ignore[operator]

    state = {"fn": loss_fn}

    def run(fn, x, y) -> None:
        with autocast(device, amp):
            loss = fn(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def snapshot():
        return ({k: v.clone() for k, v in model.state_dict().items()}, opt.state_dict())

    def restore(s) -> None:
        model.load_state_dict(s[0])
        opt.load_state_dict(s[1])

    t = time.perf_counter()
    fn, err = compile_with_fallback(loss_fn, lambda f: run(f, *batches[0]), snapshot, restore)
    state["fn"] = fn
    note = f"compiled in {time.perf_counter() - t:.0f} s" if err is None else f"fallback: {err[:80]}"

    def step() -> None:
        run(state["fn"], *next(it))

    return step, note


# --------------------------------------------------------------------------- main
def main() -> None:
    ap = make_parser(__doc__)
    add_device(ap)
    ap.add_argument(
        "--groups", default=None, help="fused group sizes (default 1,4,16,64 on CUDA, 1,2,4 on CPU)"
    )
    ap.add_argument("--batch", type=int, default=None, help="images per run and step (256 CUDA, 32 CPU)")
    ap.add_argument("--models", default="resnet20,vgg16", help="models to project the grid cost for")
    ap.add_argument("--block", type=int, default=None, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timed blocks per variant")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bf16 autocast variants")
    ap.add_argument("--no-old-new", action="store_true", help="skip the old vs new step comparison")
    add_threads(ap, 1, help="torch CPU threads (CPU device)")
    ap.add_argument(
        "--malloc-default",
        action="store_true",
        help="keep glibc malloc's defaults (training on the CPU calls fused.keep_freed_memory)",
    )
    ap.add_argument(
        "--backends",
        default="auto",
        help="fused backends to time, comma-separated (auto, grouped, loop, vmap); auto = loop on CPU",
    )
    args = ap.parse_args()

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if not cuda:
        torch.set_num_threads(args.threads)
    # Same allocator setting as training on the CPU (train_run / train_group), for single and fused alike.
    kept = keep_freed_memory() if not cuda and not args.malloc_default else False
    groups = [int(g) for g in (args.groups or ("1,4,16,64" if cuda else "1,2,4")).split(",")]
    batch = args.batch or (256 if cuda else 32)
    block = args.block or (20 if cuda else 2)
    what = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} thread(s)"
    clock = "wall time" if cuda else "process CPU time"
    print(
        f"device {what}; torch {torch.__version__}; batch {batch} per run; {clock}, median of {args.rounds}"
        + ("" if cuda else f"; malloc keeps freed memory: {kept}")
    )
    bf16 = False
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            torch.ones(2, 2, device=device) @ torch.ones(2, 2, device=device)
        bf16 = not args.no_bf16
    except Exception as e:  # report instead of failing: the fp32 rows still stand
        bf16 = False
        print(f"bf16 autocast unavailable on {device.type}: {e}")

    # 0. equivalence of old and new term (sanity, same numbers)
    g = torch.Generator().manual_seed(0)
    acts = [torch.relu(torch.randn(64, u, 4, 4, generator=g, dtype=torch.float64)) for u in (16, 32, 64)]
    labels = torch.randint(0, 10, (64,), generator=g)
    diff = (old_batch_selectivity(acts, labels, 10)[0] - batch_selectivity(acts, labels, 10)[0]).abs().item()
    print(f"old vs new batch_selectivity on random activations: |difference| = {diff:.1e}")

    # 1. old vs new single-run step
    if not args.no_old_new:
        t = time_blocks(
            {
                "old": single_step("resnet20", batch, device, old=True, amp=False),
                "new": single_step("resnet20", batch, device, old=False, amp=False),
            },
            device,
            block,
            args.rounds + 2,
        )
        print(
            f"\n[1] resnet20 step with the regulariser: old {t['old'] * 1e3:.1f} ms, sync-free {t['new'] * 1e3:.1f} ms "
            f"-> new/old {t['new'] / t['old']:.3f}  [criterion <= 1.00: {'PASS' if t['new'] <= t['old'] else 'FAIL'}]"
        )

    # 2. throughput table
    best: dict[str, float] = {}
    for model_name in args.models.split(","):
        print(f"\n[2] {model_name}: images/s per run (and for the whole device)")
        print(
            f"{'variant':<30} {'R':>3} {'ms/step':>9} {'img/s/run':>10} {'img/s':>9} {'t(R)/(R*t1)':>12}  note"
        )
        precisions = [False, True] if bf16 else [False]
        compile_modes = [False] if args.no_compile else [False, True]
        for amp in precisions:
            for comp in compile_modes:
                tag = f"{'bf16' if amp else 'fp32'} {'compiled' if comp else 'eager'}"
                if comp:
                    step, note = compiled_single_step(model_name, batch, device, amp)
                else:
                    step, note = single_step(model_name, batch, device, old=False, amp=amp), ""
                t1 = time_blocks({"s": step}, device, block, args.rounds)["s"]
                print(
                    f"{'single ' + tag:<30} {1:>3} {t1 * 1e3:>9.1f} {batch / t1:>10.1f} {batch / t1:>9.1f} {'':>12}  {note}"
                )
                best[model_name] = max(best.get(model_name, 0.0), batch / t1)
                sizes = groups if not comp else [max(groups)]  # one compiled group: compiling is slow
                for backend in args.backends.split(","):
                    for r in sizes:
                        try:
                            fstep, note = fused_step(model_name, r, batch, device, amp, comp, backend)
                            # single and fused interleaved in one measurement: drift hits both alike
                            t = time_blocks(
                                {"s": step, "f": fstep}, device, max(1, block // max(1, r // 4)), args.rounds
                            )
                        except torch.OutOfMemoryError:
                            print(f"{'fused ' + tag:<30} {r:>3}  out of memory")
                            break
                        tr, ratio = t["f"], t["f"] / (r * t["s"])
                        crit = "PASS" if ratio <= 1.05 else "FAIL"
                        name = f"fused {backend} {tag}"
                        print(
                            f"{name:<30} {r:>3} {tr * 1e3:>9.1f} {batch / tr:>10.1f} {r * batch / tr:>9.1f} "
                            f"{ratio:>7.3f} {crit}  {note}"
                        )
                        best[model_name] = max(best[model_name], r * batch / tr)
                        del fstep
                        if cuda:
                            torch.cuda.empty_cache()

    # 3. projection
    print("\n[3] projected cost of the paper's grids on this device (the paper sweep preset,")
    print("    training steps only, at the best measured whole-device throughput above)")
    for model_name, ips in best.items():
        g = paper_grid(model_name)
        print(f"    {model_name}: {g['runs']} runs x {g['epochs']} epochs x {g['images_per_epoch']} images")
        hours = grid_hours(model_name, ips)
        unit = "GPU-hours" if cuda else "CPU-core-hours" if args.threads == 1 else "CPU-hours"
        print(f"    {model_name:<10} {ips:>10.1f} img/s -> {hours:>12.1f} {unit}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
