"""Core benchmarks (measurement and regulariser), both measured in one run, printed as ratios.

1. ResNet20 training step (batch 256) with the selectivity regulariser vs without.
2. Streaming measurement of all units (selectivity + dead units + precision) over
   10,000 CIFAR-sized images vs a plain evaluation pass over them.

    python benchmarks/bench_core.py [--device cpu] [--repeats 5]
"""

import time

import torch
import torch.nn.functional as F

from benchutil import add_device, add_repeats, make_parser, sync, timed
from selectivity import SelectivityRegularizer, measure_selectivity
from selectivity.models import create


def main():
    ap = make_parser(__doc__)
    add_device(ap)
    add_repeats(ap, 5, help="timed rounds (each round: one step of each)")
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

    with reg:
        for _ in range(2):  # warm-up
            step(False), step(True)
        t = timed({"plain": lambda: step(False), "reg": lambda: step(True)}, args.repeats, time.perf_counter)
    p, r = t["plain"], t["reg"]
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
    t = timed({"eval": plain_eval, "measure": streaming}, max(2, args.repeats // 2), time.perf_counter)
    e, m = t["eval"], t["measure"]
    print(
        f"{args.images} images: plain eval {e:.2f} s, streaming measurement of all units "
        f"(SI, dead, precision top-1000) {m:.2f} s -> ratio {m / e:.3f}  [target <= 1.20]"
    )


if __name__ == "__main__":
    main()
