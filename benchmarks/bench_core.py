"""Issue-2 benchmarks, both measured in one run, printed as ratios.

1. ResNet20 training step (batch 256) with the selectivity regulariser vs without.
2. Streaming measurement of all units (selectivity + dead units + precision) over
   10,000 CIFAR-sized images vs a plain evaluation pass over them.

    python benchmarks/bench_core.py [--device cpu] [--repeats 5]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from selectivity import SelectivityRegularizer, measure_selectivity
from selectivity.models import create


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (each round: one step of each)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--images", type=int, default=10_000)
    args = ap.parse_args()
    dev = torch.device(args.device)
    print(f"torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}")

    # ---- 1. training step ------------------------------------------------------
    torch.manual_seed(0)
    model = create("resnet20").to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(args.batch_size, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (args.batch_size,), device=dev)
    reg = SelectivityRegularizer(model, alpha=-1.0, num_classes=10)

    def step(use_reg):
        loss = F.cross_entropy(model(x), y)
        if use_reg:
            loss = loss + reg.penalty(y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if use_reg:
            reg.clear()
        sync(dev)

    plain, regd = [], []
    with reg:
        for _ in range(2):  # warm-up
            step(False), step(True)
        for i in range(args.repeats):
            # alternate the order so drifts in machine speed hit both equally
            for use in (False, True) if i % 2 == 0 else (True, False):
                t = time.perf_counter()
                step(use)
                (regd if use else plain).append(time.perf_counter() - t)
    p, r = statistics.median(plain), statistics.median(regd)
    print(
        f"train step, batch {args.batch_size}: plain {p * 1000:.1f} ms, with regulariser {r * 1000:.1f} ms "
        f"(median of {args.repeats}) -> ratio {r / p:.3f}  [target <= 1.10]"
    )

    # ---- 2. streaming measurement vs plain evaluation --------------------------
    g = torch.Generator().manual_seed(1)
    images = torch.randn(args.images, 3, 32, 32, generator=g)
    labels = torch.randint(0, 10, (args.images,), generator=g)
    eb = 1000
    batches = [(images[i : i + eb].to(dev), labels[i : i + eb].to(dev)) for i in range(0, args.images, eb)]
    model.eval()

    @torch.no_grad()
    def plain_eval():
        correct = 0
        for xb, yb in batches:
            correct += int((model(xb).argmax(1) == yb).sum())
        sync(dev)
        return correct

    def streaming():
        rep = measure_selectivity(model, batches, 10, top_n=1000)
        sync(dev)
        return rep

    plain_eval(), streaming()  # warm-up
    te, tm = [], []
    for i in range(max(2, args.repeats // 2)):
        for fn, bucket in (
            ((plain_eval, te), (streaming, tm)) if i % 2 == 0 else ((streaming, tm), (plain_eval, te))
        ):
            t = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - t)
    e, m = statistics.median(te), statistics.median(tm)
    print(
        f"{args.images} images: plain eval {e:.2f} s, streaming measurement of all units "
        f"(SI, dead, precision top-1000) {m:.2f} s -> ratio {m / e:.3f}  [target <= 1.20]"
    )


if __name__ == "__main__":
    main()
