"""Attack benchmark: PGD-10 (or APGD-CE-100) over N CIFAR-sized images with ResNet20 vs its floor.

The floor is 11 forward+backward passes (10 gradient steps and the final verdict),
each a gradient of the summed loss w.r.t. the input with frozen parameters, i.e. the
same work PGD-10 cannot avoid. Both are measured in one run, alternating, median of
``--repeats``; printed as a ratio.

With ``--attack apgd-ce`` the attack is APGD-CE with 100 iterations (L-inf, 8/255, one
run) and the floor is 101 forward+backward passes (the start and 100 iterates). APGD
attacks only correctly classified images, so the labels are the model's own clean
predictions: every image is attacked for the full 100 iterations.

    PYTHONPATH=src python benchmarks/bench_attacks.py [--images 1000] [--device cpu] [--attack apgd-ce]

Random weights and random images by default (the cost does not depend on them); with
``--real`` the N images are a seeded random subset of the CIFAR-10 test set, read through $SELECTIVITY_DATA.
"""

import torch
import torch.nn.functional as F

from benchutil import add_device, add_timing_options, make_parser, start_timing, sync, timed
from selectivity.models import create
from selectivity.perturb import attack_outcome

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def load_images(n, real, device):
    """N images in [0, 1] with labels: random, or a seeded random subset of the CIFAR-10 test set."""
    g = torch.Generator().manual_seed(0)
    if real:
        import os

        from selectivity.data.cifar10 import read_cifar10

        if not os.environ.get("SELECTIVITY_DATA"):
            raise SystemExit("--real needs $SELECTIVITY_DATA pointing at a CIFAR-10 copy")
        _, test = read_cifar10(os.environ["SELECTIVITY_DATA"])
        idx = torch.randperm(len(test.labels), generator=g)[:n]  # the test set is grouped by class
        return (test.images[idx].float() / 255).to(device), test.labels[idx].to(device)
    return torch.rand(n, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (n,), generator=g).to(
        device
    )


def main():
    ap = make_parser(__doc__)
    add_device(ap)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--real", action="store_true")
    ap.add_argument("--attack", choices=("pgd", "apgd-ce"), default="pgd")
    add_timing_options(ap, 3)
    args = ap.parse_args()
    clock = start_timing(args)
    dev = torch.device(args.device)
    print(
        f"torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}, clock {args.clock}, images {args.images}"
    )
    torch.manual_seed(0)
    model = create("resnet20").to(dev).eval()
    x, y = load_images(args.images, args.real, dev)
    m = torch.tensor(CIFAR_MEAN, device=dev).view(1, 3, 1, 1)
    s = torch.tensor(CIFAR_STD, device=dev).view(1, 3, 1, 1)
    apgd = args.attack == "apgd-ce"
    passes = 101 if apgd else 11
    if apgd:  # APGD skips misclassified images: label each image as the model does
        with torch.no_grad():
            y = torch.cat([model((x[i : i + 250] - m) / s).argmax(1) for i in range(0, len(x), 250)])
    batches = [
        (x[i : i + args.batch_size], y[i : i + args.batch_size]) for i in range(0, len(x), args.batch_size)
    ]

    def floor():
        # reads `batches` at call time, so the warm-up can use a single batch
        for p in model.parameters():
            p.requires_grad_(False)
        for xb, yb in batches:
            for _ in range(passes):
                xi = xb.clone().requires_grad_(True)
                loss = F.cross_entropy(model((xi - m) / s), yb, reduction="sum")
                torch.autograd.grad(loss, xi)
        for p in model.parameters():
            p.requires_grad_(True)
        sync(dev)

    def run_attack():
        wrong = 0
        for xb, yb in batches:
            if apgd:
                out = attack_outcome(
                    "apgd-ce", model, xb, yb, 8 / 255, steps=100, mean=CIFAR_MEAN, std=CIFAR_STD, generator=g
                )
            else:
                out = attack_outcome("pgd", model, xb, yb, 8 / 255, steps=10, mean=CIFAR_MEAN, std=CIFAR_STD)
            wrong += int((~out.correct).sum())
        sync(dev)
        return wrong

    g = torch.Generator(device=dev).manual_seed(0)

    full = batches
    batches = full[:1]
    floor(), run_attack()  # warm-up on one batch
    batches = full
    t = timed({"floor": floor, "attack": run_attack}, args.repeats, clock)
    f, p = t["floor"], t["attack"]
    what = (
        "APGD-CE-100 (linf, eps 8/255, one run, labels = clean predictions)"
        if apgd
        else "PGD-10 (linf, eps 8/255, random start, best-iterate)"
    )
    print(
        f"{what} over {args.images} images: {p:.2f} s; "
        f"{passes} forward+backward passes: {f:.2f} s (median of {args.repeats}) -> ratio {p / f:.3f}"
    )


if __name__ == "__main__":
    main()
