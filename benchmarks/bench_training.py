"""Training benchmarks, measured in one run.

1. One training epoch of ResNet20 over the CIFAR-10 training split (45k images) with
   this package's loop (batch loader with crop+flip augmentation, regulariser context,
   divergence checks, metrics) vs a bare PyTorch loop over the same tensors with the same
   model (pre-normalised float tensors, slicing, forward/backward/step).
2. First and second load of the dataset (the second is served from the decoded cache).

    SELECTIVITY_DATA=DATA python benchmarks/bench_training.py [--images 45000]
"""

import os
import tempfile
import time

import torch
import torch.nn.functional as F

from benchutil import make_parser
from selectivity.core.regularizer import SelectivityRegularizer
from selectivity.data import BatchLoader, load_cifar10
from selectivity.models import create
from selectivity.run.config import make_config
from selectivity.training.single import subset, train_epoch


def main():
    ap = make_parser(__doc__)
    ap.add_argument("--data", default=None, help="dataset location (default $SELECTIVITY_DATA)")
    ap.add_argument("--images", type=int, default=45_000, help="training images per epoch")
    ap.add_argument("--alpha", type=float, default=0.0)
    ap.add_argument("--fresh-cache", action="store_true", help="time the first load in an empty cache")
    args = ap.parse_args()

    if args.fresh_cache:
        os.environ["SELECTIVITY_CACHE"] = tempfile.mkdtemp(prefix="sel-cache-")
    t = time.perf_counter()
    splits = load_cifar10(args.data)
    first = time.perf_counter() - t
    t = time.perf_counter()
    splits = load_cifar10(args.data)
    second = time.perf_counter() - t
    print(
        f"dataset load: first {first:.2f} s{' (fresh cache)' if args.fresh_cache else ''}, "
        f"second {second:.2f} s  [target second < 5 s]"
    )

    cfg = make_config("paper", {"model": "resnet20", "alpha": args.alpha, "device": "cpu"})
    dev = torch.device("cpu")
    train = subset(splits.train, args.images, 0)
    print(
        f"torch threads {torch.get_num_threads()}, {len(train)} images, batch {cfg.batch_size}, alpha {args.alpha}"
    )

    # ---- package loop --------------------------------------------------------
    torch.manual_seed(0)
    model = create("resnet20")
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=1e-4)
    reg = SelectivityRegularizer(model, cfg.alpha, 10)
    loader = BatchLoader(
        train, cfg.batch_size, shuffle=True, augment=True, mean=splits.mean, std=splits.std, seed=0
    )
    t = time.perf_counter()
    train_epoch(model, opt, reg, loader, cfg, dev, 0, progress=True)
    ours = time.perf_counter() - t

    # ---- bare loop over the same tensors --------------------------------------
    mean = torch.tensor(splits.mean).view(1, 3, 1, 1)
    std = torch.tensor(splits.std).view(1, 3, 1, 1)
    xs = (train.images.float() / 255 - mean) / std  # (N, 3, 32, 32) pre-normalised
    ys = train.labels
    torch.manual_seed(0)
    model = create("resnet20")
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=1e-4)
    model.train()
    t = time.perf_counter()
    perm = torch.randperm(len(ys))
    for i in range(0, len(ys), cfg.batch_size):
        idx = perm[i : i + cfg.batch_size]
        loss = F.cross_entropy(model(xs[idx]), ys[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    bare = time.perf_counter() - t
    print(
        f"one epoch: package loop {ours:.1f} s, bare PyTorch loop {bare:.1f} s -> ratio {ours / bare:.3f}  "
        f"[target <= 1.15]"
    )


if __name__ == "__main__":
    main()
