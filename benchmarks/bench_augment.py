"""Cost of the robust-training augmentations next to a plain training step.

On a batch of ``--batch`` CIFAR-sized images (3x32x32, random pixels), the median time of:

- one ResNet20 training step (forward, cross-entropy, backward, SGD with momentum);
- one AugMix batch (:func:`selectivity.perturb.augmix`, reference defaults: severity 3,
  width 3, random depth 1-3, alpha 1); AugMix training with the JSD loss needs two per step;
- one Gaussian-noise batch (:func:`selectivity.perturb.gaussian_noise`, sigma in [0, 0.1]).

The random draws come from a generator on ``--device``.

    PYTHONPATH=src python benchmarks/bench_augment.py [--batch 256] [--repeats 5]
        [--threads N] [--clock {wall,cpu}] [--device cpu]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchutil import add_device, add_timing_options, make_parser, start_timing, sync, timed
from selectivity import models
from selectivity.perturb import augmix, gaussian_noise


def main() -> None:
    ap = make_parser(__doc__)
    ap.add_argument("--batch", type=int, default=256, help="images per batch")
    add_device(ap)
    add_timing_options(ap, repeats=5)
    args = ap.parse_args()
    clock = start_timing(args)
    device = torch.device(args.device)

    torch.manual_seed(0)
    model = models.create("resnet20").to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.rand(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    g = torch.Generator(device=device).manual_seed(0)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sync(device)

    def augmix_batch() -> None:
        augmix(x, generator=g)
        sync(device)

    def noise_batch() -> None:
        gaussian_noise(x, (0.0, 0.1), generator=g)
        sync(device)

    fns = {"resnet20 train step": train_step, "augmix batch": augmix_batch, "noise batch": noise_batch}
    for fn in fns.values():  # warm-up
        fn()
    times = timed(fns, args.repeats, clock)
    base = times["resnet20 train step"]
    print(
        f"device {device}, batch {args.batch} x 3x32x32, threads {torch.get_num_threads()}, clock {args.clock}"
    )
    for name, t in times.items():
        print(f"  {name:22s} {1000 * t:9.2f} ms   {t / base:6.3f} x train step")


if __name__ == "__main__":
    main()
