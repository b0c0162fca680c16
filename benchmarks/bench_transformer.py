"""The built-in ViT: streamed measurement and the regulariser's training-step overhead, as ratios.

1. Streamed measurement (selectivity, dead units, precision over the top 1000) of every
   MLP neuron of ``vit`` (6 sites x 384 units, tokens pooled by mean) over 10,000
   CIFAR-sized images, against plain forward passes over the same batches (eval mode,
   no grad). Target: <= 1.10x.
2. One AdamW training step of ``vit`` (batch 128) with the regulariser (hooks, token
   pooling, the minibatch index over 2304 units, its backward) against the same step
   without it (no hooks attached). Target: <= 1.05x.

Inputs are random tensors of CIFAR-10's shape: the cost of either path does not depend
on the pixel values. One run of each comparison by default (``--repeats``); with
``--clock cpu --threads 1`` the times are the process's CPU time, which other jobs on a
shared machine do not inflate.

    PYTHONPATH=src python benchmarks/bench_transformer.py [--threads 1 --clock cpu] [--repeats 1]
"""

import torch
import torch.nn.functional as F

from benchutil import add_device, add_timing_options, make_parser, start_timing, sync, timed
from selectivity import SelectivityRegularizer, measure_selectivity
from selectivity.models import create


def main():
    ap = make_parser(__doc__)
    add_device(ap)
    add_timing_options(ap, repeats=1)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--eval-batch", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="training steps per timed round")
    args = ap.parse_args()
    clock = start_timing(args)
    dev = torch.device(args.device)
    print(f"torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}, clock {args.clock}")

    torch.manual_seed(0)
    model = create("vit", activation="gelu").to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"vit: {n_params / 1e6:.2f}M parameters, sites {model.default_selectivity_layers()}")

    # ---- 1. streamed measurement vs plain forward passes -----------------------
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(args.images, 3, 32, 32, generator=g)
    ys = torch.randint(0, 10, (args.images,), generator=g)
    batches = [
        (xs[i : i + args.eval_batch].to(dev), ys[i : i + args.eval_batch].to(dev))
        for i in range(0, args.images, args.eval_batch)
    ]

    @torch.no_grad()
    def plain():
        model.eval()
        for x, _ in batches:
            model(x)
        sync(dev)

    def measured():
        rep = measure_selectivity(model, batches, 10, top_n=1000, device=dev)
        sync(dev)
        return rep

    rep = measure_selectivity(model, batches[:1], 10, top_n=100, device=dev)  # warm-up
    units = sum(layer.num_units for layer in rep.layers)
    t = timed({"plain": plain, "measure": measured}, args.repeats, clock)
    p, m = t["plain"], t["measure"]
    print(
        f"measurement, {args.images} images, {units} units: plain forward {p:.2f} s, "
        f"streamed measurement {m:.2f} s -> ratio {m / p:.3f}  [target <= 1.10]"
    )

    # ---- 2. training step with the regulariser vs without ----------------------
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    x = torch.randn(args.batch_size, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (args.batch_size,), device=dev)
    reg = SelectivityRegularizer(model, alpha=-1.0, num_classes=10, check_labels=False)

    def step(use_reg):
        loss = F.cross_entropy(model(x), y)
        if use_reg:
            loss = loss + reg.penalty(y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if use_reg:
            reg.clear()

    def steps_plain():  # no hooks attached at all
        for _ in range(args.steps):
            step(False)
        sync(dev)

    def steps_reg():
        with reg:
            for _ in range(args.steps):
                step(True)
        sync(dev)

    steps_plain(), steps_reg()  # warm-up
    t = timed({"plain": steps_plain, "reg": steps_reg}, args.repeats, clock)
    p, r = t["plain"] / args.steps, t["reg"] / args.steps
    print(
        f"train step, batch {args.batch_size}: plain {p * 1000:.0f} ms, with regulariser {r * 1000:.0f} ms "
        f"-> ratio {r / p:.3f}  [target <= 1.05]"
    )


if __name__ == "__main__":
    main()
