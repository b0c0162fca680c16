"""Corruption benchmark: corrupting the CIFAR-10 test set at all 75 corruption x severity cells.

Ours: :func:`selectivity.perturb.corrupt` on all test images (``--images``, default 10,000)
in batches, every cell timed, including the uint8 quantisation.
Reference: the ``imagecorruptions`` package, one image per call, on ``--sample`` images per
cell; its per-image time is multiplied by the number of images (an extrapolation, printed as
such). ``imagecorruptions`` hard-codes the ImageNet-C parameters and takes no others, so it
runs with those (they make motion/zoom/glass blur somewhat costlier than CIFAR's). To run at
all on current libraries it needs three shims, applied here only: a ``pkg_resources`` stand-in
(setuptools >= 81 dropped it), ``np.float_`` (numpy 2 dropped it) and ``multichannel=True`` ->
``channel_axis=-1`` for ``skimage.filters.gaussian`` (glass blur).

    SELECTIVITY_DATA=/path/to/data python benchmarks/bench_corruptions.py [--data DIR]
        [--images 10000] [--sample 20] [--batch-size 1000] [--threads N] [--device cpu]
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import types

import numpy as np
import torch

from benchutil import add_device, add_threads, apply_threads, make_parser
from selectivity.data import find_cifar10, read_cifar10
from selectivity.perturb import CORRUPTIONS, corrupt, to_uint8


def import_imagecorruptions():
    if importlib.util.find_spec("pkg_resources") is None:
        stub = types.ModuleType("pkg_resources")

        def resource_filename(package: str, relative: str) -> str:
            spec = importlib.util.find_spec(package)
            return os.path.join(os.path.dirname(spec.origin), relative)

        stub.resource_filename = resource_filename
        sys.modules["pkg_resources"] = stub
    if not hasattr(np, "float_"):
        np.float_ = np.float64  # noqa: NPY201  (removed in numpy 2; imagecorruptions' fog uses it)
    import imagecorruptions
    import imagecorruptions.corruptions as icc

    original = icc.gaussian

    def gaussian(image, *args, multichannel=None, **kwargs):
        if multichannel:
            kwargs["channel_axis"] = -1
        return original(image, *args, **kwargs)

    icc.gaussian = gaussian
    return imagecorruptions


def main() -> None:
    ap = make_parser(__doc__)
    ap.add_argument("--data", default=None, help="CIFAR-10 location (default: $SELECTIVITY_DATA, cache)")
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--sample", type=int, default=20, help="images per cell for imagecorruptions")
    ap.add_argument("--batch-size", type=int, default=1000)
    add_threads(ap)
    add_device(ap, "cpu")
    args = ap.parse_args()
    apply_threads(args)
    dev = torch.device(args.device)
    ic = import_imagecorruptions()
    _, test = read_cifar10(find_cifar10(args.data, download=False))
    clean = test.images[: args.images]  # (N, 3, 32, 32) uint8
    n = clean.shape[0]
    print(f"torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}, images {n}")

    ours: dict[str, float] = {}
    total_start = time.perf_counter()
    for name in CORRUPTIONS:
        t0 = time.perf_counter()
        for severity in range(1, 6):
            gen = torch.Generator(device=dev).manual_seed(severity)
            for start in range(0, n, args.batch_size):
                batch = clean[start : start + args.batch_size].to(dev, torch.float32) / 255.0
                out = to_uint8(corrupt(batch, name, severity, generator=gen)).cpu()
            del out
        ours[name] = time.perf_counter() - t0
        print(f"  ours {name:18s} {ours[name]:7.2f} s for 5 x {n} images", flush=True)
    ours_total = time.perf_counter() - total_start

    hwc = clean[: args.sample].permute(0, 2, 3, 1).numpy()
    theirs: dict[str, float] = {}
    np.random.seed(0)  # noqa: NPY002  (imagecorruptions draws from numpy's global RNG)
    for name in CORRUPTIONS:
        t0 = time.perf_counter()
        for severity in range(1, 6):
            for im in hwc:
                ic.corrupt(im, severity=severity, corruption_name=name)
        per_image = (time.perf_counter() - t0) / (5 * len(hwc))
        theirs[name] = per_image * 5 * n  # extrapolated to n images x 5 severities
        print(
            f"  imagecorruptions {name:18s} {1e3 * per_image:7.2f} ms/image -> {theirs[name]:8.1f} s (extrapolated)",
            flush=True,
        )
    theirs_total = sum(theirs.values())

    print()
    print(f"{'corruption':18s} {'ours [s]':>9s} {'imagecorr. [s]':>15s} {'ratio':>7s}")
    for name in CORRUPTIONS:
        print(f"{name:18s} {ours[name]:9.2f} {theirs[name]:15.1f} {theirs[name] / ours[name]:7.1f}x")
    print(
        f"\nall 75 cells on {n} images: ours {ours_total:.1f} s (measured), imagecorruptions "
        f"{theirs_total:.0f} s (extrapolated from {len(hwc)} images per cell); "
        f"ours is {theirs_total / ours_total:.1f}x faster"
    )


if __name__ == "__main__":
    main()
