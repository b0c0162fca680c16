"""Cost of the robust-training augmentations next to a plain training step.

On a batch of ``--batch`` CIFAR-sized images (3x32x32, random pixels), the median time of:

- one ResNet20 training step (forward, cross-entropy, backward, SGD with momentum);
- one AugMix batch (:func:`selectivity.perturb.augmix`, reference defaults: severity 3,
  width 3, random depth 1-3, alpha 1); AugMix training with the JSD loss needs two per step;
- one Gaussian-noise batch (:func:`selectivity.perturb.gaussian_noise`, sigma in [0, 0.1]);
- one whole training step of each robust-training method (``TrainConfig.robust``, the
  config's defaults: PGD-7 at 8/255 with steps of 2/255, noise sigma in [0, 0.1], AugMix
  with the JSD loss), run by the training loop's own :func:`selectivity.training.single.train_step`,
  as a multiple of that function's plain step (PGD-7 training costs about 8 plain steps:
  seven forward and backward passes for the attack, one for the update).

The random draws come from a generator on ``--device``.

    PYTHONPATH=src python benchmarks/bench_augment.py [--batch 256] [--repeats 5]
        [--threads N] [--clock {wall,cpu}] [--device cpu]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchutil import add_device, add_timing_options, make_parser, start_timing, sync, timed
from selectivity import models
from selectivity.core.regularizer import SelectivityRegularizer
from selectivity.perturb import augmix, gaussian_noise
from selectivity.run.config import ROBUST_METHODS, make_config
from selectivity.training import single
from selectivity.training.robust import robust_training


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

    # Whole training steps of each method, through the training loop's step function.
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)  # CIFAR-10's, roughly: any values do
    xn = (x - torch.tensor(mean, device=device).view(1, 3, 1, 1)) / torch.tensor(std, device=device).view(
        1, 3, 1, 1
    )
    reg = SelectivityRegularizer(model, 0.0, 10)
    counter = [0]

    def method_step(method: str):
        cfg = make_config(None, {"robust": method, "alpha": 0.0})
        robust = robust_training(cfg, mean, std, device)

        def step() -> None:
            counter[0] += 1  # a new (epoch, step) key every call: fresh draws, as in training
            model.train()
            single.train_step(model, opt, reg, xn, y, cfg, device, robust=robust, key=(0, counter[0]))
            sync(device)

        return step

    steps = {m: method_step(m) for m in ROBUST_METHODS}
    for fn in steps.values():  # warm-up
        fn()
    times = timed(steps, args.repeats, clock)
    base = times["none"]
    print("training steps (train_step, alpha 0), as a multiple of the plain step:")
    for name, t in times.items():
        print(f"  {name:22s} {1000 * t:9.2f} ms   {t / base:6.3f} x plain step")


if __name__ == "__main__":
    main()
