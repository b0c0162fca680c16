"""Geometry benchmarks (dimensionality, gradients), measured in one run, printed as ratios.

1. Dimensionality of all ResNet20 selectivity layers (19, the model's
   ``default_selectivity_layers()``) over N images, clean plus one perturbation
   (Gaussian noise, sigma 0.08, precomputed): float64 covariance of the clean, the
   perturbed and the change (perturbed - clean) activations per layer, both measures at
   the end; against the 2 plain forward passes per image it needs. Target ratio <= 1.5.
2. Input-unit gradient variability of one layer over B images (batched per-unit
   gradients) against the reference "one backward pass per unit": one forward pass, then
   for each unit a backward of its summed response over the batch (retain_graph).
3. With ``--flattened-images N``: the flattened-map covariance spectrum of the first
   layer (``act1``, 16 x 32 x 32 = 16384 units) over N images through the N x N Gram
   matrix (``flattened_eigenvalues``), against the plain forward passes that produce the
   activations; the U x U covariance it avoids would need 2 GiB in float64.

    PYTHONPATH=src python benchmarks/bench_geometry.py [--images 2000] [--grad-images 64] [--flattened-images 1000]
"""

import torch

from benchutil import add_device, add_timing_options, make_parser, start_timing, sync, timed
from selectivity.analysis.geometry import (
    CovarianceAccumulator,
    DifferenceAccumulator,
    flattened_dimensionality,
    layer_units,
)
from selectivity.analysis.gradients import gradient_variability
from selectivity.core.hooks import ActivationCapture
from selectivity.models import create


def main():
    ap = make_parser(__doc__)
    add_device(ap)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--grad-images", type=int, default=64)
    ap.add_argument("--grad-layers", default="act1,layer2.0.act1,layer3.2.act2")
    ap.add_argument("--unit-chunk", type=int, default=1, help="units per backward in gradient_variability")
    ap.add_argument("--skip-dimensionality", action="store_true", help="skip part 1")
    ap.add_argument("--skip-gradients", action="store_true", help="skip part 2")
    ap.add_argument("--flattened-images", type=int, default=0, help="images for part 3 (0: skip)")
    add_timing_options(ap, 3)
    args = ap.parse_args()
    clock = start_timing(args)
    dev = torch.device(args.device)
    print(f"torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}, clock {args.clock}")
    torch.manual_seed(0)
    model = create("resnet20").to(dev).eval()
    layers = model.default_selectivity_layers()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.images, 3, 32, 32, generator=g)
    xp = (x + 0.08 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    batches = [
        (x[i : i + args.batch_size].to(dev), xp[i : i + args.batch_size].to(dev))
        for i in range(0, len(x), args.batch_size)
    ]

    @torch.no_grad()
    def forwards():  # reads `batches` at call time (one-batch warm-up)
        for xb, pb in batches:
            model(xb)
            model(pb)
        sync(dev)

    @torch.no_grad()
    def measure():
        clean = {n: CovarianceAccumulator() for n in layers}
        pert = {n: CovarianceAccumulator() for n in layers}
        diff = {n: DifferenceAccumulator() for n in layers}
        # reduce in the hook: (B, C, H, W) -> (B, C) float64; the change of the spatial
        # mean is the spatial mean of the change (linear), so (B, C) suffices for diff
        with ActivationCapture(model, layers, reduce=layer_units, detach=True) as cap:
            for xb, pb in batches:
                model(xb)
                a = dict(cap.outputs)
                model(pb)
                b = cap.outputs
                for n in layers:
                    clean[n].update(a[n])
                    pert[n].update(b[n])
                    diff[n].update(a[n], b[n])
        res = {
            n: (clean[n].dimensionality(), pert[n].dimensionality(), diff[n].dimensionality()) for n in layers
        }
        sync(dev)
        return res

    if not args.skip_dimensionality:
        full = batches
        batches = full[:1]
        forwards(), measure()  # warm-up on one batch
        batches = full
        t = timed({"forwards": forwards, "measure": measure}, args.repeats, clock)
        print(
            f"dimensionality of {len(layers)} layers over {args.images} images (clean + perturbed + change): "
            f"{t['measure']:.2f} s; 2 x {args.images} plain forward passes: {t['forwards']:.2f} s "
            f"(median of {args.repeats}) -> ratio {t['measure'] / t['forwards']:.3f}  [target <= 1.5]"
        )
        res = measure()
        print(
            "  clean PCA-95 / PR per layer:",
            " ".join(f"{r[0].pca}/{r[0].participation_ratio:.1f}" for r in res.values()),
        )
        print(
            "  change PCA-95 / PR per layer:",
            " ".join(f"{r[2].pca}/{r[2].participation_ratio:.1f}" for r in res.values()),
        )

    # ---- 2. gradient variability ------------------------------------------------
    xg = x[: args.grad_images].to(dev)
    modules = dict(model.named_modules())
    for name in [] if args.skip_gradients else args.grad_layers.split(","):

        def reference(name=name):
            flags = [(p, p.requires_grad) for p in model.parameters()]
            for p, _ in flags:
                p.requires_grad_(False)
            xi = xg.clone().requires_grad_(True)
            acts = {}
            h = modules[name].register_forward_hook(lambda _m, _i, o: acts.setdefault("a", o))
            try:
                model(xi)
            finally:
                h.remove()
            r = acts["a"].mean((2, 3))  # (B, C)
            for j in range(r.shape[1]):
                torch.autograd.grad(r[:, j].sum(), xi, retain_graph=j < r.shape[1] - 1)
            for p, f in flags:
                p.requires_grad_(f)
            sync(dev)

        def batched(name=name):
            gradient_variability(model, name, xg, unit_chunk=args.unit_chunk)
            sync(dev)

        reference(), batched()
        t = timed({"reference": reference, "batched": batched}, args.repeats, clock)
        u = modules[name].__class__.__name__
        print(
            f"gradient variability, layer {name} ({u}), {args.grad_images} images: batched {t['batched']:.2f} s; "
            f"one backward per unit {t['reference']:.2f} s -> ratio {t['batched'] / t['reference']:.3f}"
        )

    # ---- 3. flattened maps through the Gram matrix -------------------------------------
    if args.flattened_images:
        xf = torch.rand(args.flattened_images, 3, 32, 32, generator=g)
        fb = [xf[i : i + args.batch_size].to(dev) for i in range(0, len(xf), args.batch_size)]
        acts = {}

        @torch.no_grad()
        def capture():
            with ActivationCapture(model, ["act1"], reduce=lambda t: t, detach=True) as cap:
                parts = []
                for xb in fb:
                    model(xb)
                    parts.append(cap.outputs["act1"])
            acts["act1"] = torch.cat(parts)  # (N, 16, 32, 32) float32
            sync(dev)

        def spectrum():
            res = flattened_dimensionality(acts["act1"])
            sync(dev)
            return res

        capture(), spectrum()
        t = timed({"capture": capture, "spectrum": spectrum}, args.repeats, clock)
        d = spectrum()
        print(
            f"flattened act1 spectrum (Gram, {args.flattened_images} x {d.n_units}): {t['spectrum']:.2f} s; "
            f"{args.flattened_images} forward passes capturing it: {t['capture']:.2f} s "
            f"-> ratio {t['spectrum'] / t['capture']:.3f}; PCA-95 {d.pca}, PR {d.participation_ratio:.1f}"
        )


if __name__ == "__main__":
    main()
