"""Before/after numbers for precision ties and the PWCCA method.

    PYTHONPATH=src python benchmarks/fidelity_examples.py [--images 10000] [--bias 1.0]

1. Precision on the A.5 example and on a randomly initialised ResNet20 made sparse
   (every BatchNorm's bias set to -bias), over Gaussian images whose labels are sorted
   by class (as the CIFAR-10 test set is evaluated). "topk order" is the old rule
   (torch.topk's choice among tied responses); "random order" the old rule after
   shuffling the samples; "shared ties" the current :func:`precision`.
2. PWCCA similarity, method="textbook" vs method="svcca", on three kinds of
   example (rotation + noise, half the dimensions shared, ReLU layers).
"""

import numpy as np
import torch

from benchutil import make_parser
from selectivity.analysis import flatten_conv_activations, pwcca_similarity
from selectivity.core.metrics import layer_mean, precision
from selectivity.models import create


def topk_order_precision(acts: torch.Tensor, labels: torch.Tensor, c: int, top_n: int) -> torch.Tensor:
    """The earlier rule: whichever tied samples torch.topk returns. (N, U) -> (U,)."""
    idx = acts.topk(top_n, dim=0).indices  # (k, U)
    hist = torch.zeros(c, acts.shape[1], dtype=torch.float64)
    hist.scatter_add_(0, labels[idx], torch.ones(idx.shape, dtype=torch.float64))
    p = hist.max(dim=0).values / top_n
    return torch.where((acts == 0).all(dim=0), torch.full_like(p, float("nan")), p)


def layer_activations(model, images, batch=500):
    """Spatial-mean response of every unit of every default layer: name -> (N, U)."""
    names = model.default_selectivity_layers()
    mods = dict(model.named_modules())
    store = {n: [] for n in names}
    hooks = [
        mods[n].register_forward_hook(lambda _m, _i, out, n=n: store[n].append(out.detach().mean(dim=(2, 3))))
        for n in names
    ]
    with torch.no_grad():
        for i in range(0, images.shape[0], batch):
            model(images[i : i + batch])
    for h in hooks:
        h.remove()
    return {n: torch.cat(v) for n, v in store.items()}


def main():
    ap = make_parser(__doc__)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--bias", type=float, default=1.0, help="BatchNorm bias = -bias (sparsity)")
    args = ap.parse_args()
    c, top_n = 10, args.images // 10

    # ---- A.5 example
    labels = torch.arange(c).repeat_interleave(1000)
    acts = torch.zeros(10_000, 1)
    acts[(labels == 3).nonzero().squeeze(1)[:10], 0] = 1.0
    perm = torch.randperm(10_000, generator=torch.Generator().manual_seed(0))
    print(
        "A.5 example (10 cats respond, N=1000): topk order "
        f"{topk_order_precision(acts, labels, c, 1000).item():.4f}, random order "
        f"{topk_order_precision(acts[perm], labels[perm], c, 1000).item():.4f}, shared ties "
        f"{precision(acts, labels, c, top_n=1000).item():.4f}"
    )

    # ---- sparse ResNet20
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(args.images, 3, 32, 32, generator=g)
    labels = torch.arange(c).repeat_interleave(args.images // c)  # sorted by class
    model = create("resnet20").eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.bias.data.fill_(-args.bias)
    acts = layer_activations(model, images)
    perm = torch.randperm(args.images, generator=torch.Generator().manual_seed(2))
    rows = {"topk order": [], "random order": [], "shared ties": [], "shared ties, shuffled": []}
    zero_frac = []
    for a in acts.values():
        zero_frac.append(float((a == 0).double().mean()))
        rows["topk order"].append(layer_mean(topk_order_precision(a, labels, c, top_n)))
        rows["random order"].append(layer_mean(topk_order_precision(a[perm], labels[perm], c, top_n)))
        rows["shared ties"].append(layer_mean(precision(a, labels, c, top_n=top_n)))
        rows["shared ties, shuffled"].append(layer_mean(precision(a[perm], labels[perm], c, top_n=top_n)))
    print(
        f"ResNet20, BN bias -{args.bias}, {args.images} Gaussian images sorted by class, "
        f"zero responses {np.mean(zero_frac):.3f}; mean precision (eq. 3 style, top {top_n}):"
    )
    for k, v in rows.items():
        print(f"  {k:24s} {np.nanmean(v):.4f}")

    # ---- PWCCA methods
    rng = np.random.default_rng(0)
    n = 2000
    x = rng.standard_normal((16, n))
    q, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    cases = {"rotation + noise": (x, q @ x + 0.5 * rng.standard_normal((16, n)))}
    shared = rng.standard_normal((8, n))
    x = np.vstack([shared, rng.standard_normal((8, n))]) + rng.uniform(1, 5, (16, 1))
    y = np.vstack([shared, rng.standard_normal((8, n))]) + rng.uniform(-5, -1, (16, 1))
    cases["half shared, means shifted"] = (x, y)
    print("PWCCA similarity (x first): textbook vs svcca")
    for name, (a, b) in cases.items():
        at, bt = torch.from_numpy(a), torch.from_numpy(b)
        print(
            f"  {name:28s} textbook {pwcca_similarity(at, bt, method='textbook'):.4f}  "
            f"svcca {pwcca_similarity(at, bt, method='svcca'):.4f}"
        )
    torch.manual_seed(10)
    net_a = create("resnet20").eval()
    torch.manual_seed(11)
    net_b = create("resnet20").eval()
    imgs = images[:2000]
    acts_a, acts_b = layer_activations(net_a, imgs), layer_activations(net_b, imgs)
    tb, sv = [], []
    for name in acts_a:
        fa, fb = flatten_conv_activations(acts_a[name]), flatten_conv_activations(acts_b[name])
        tb.append(pwcca_similarity(fa, fb, method="textbook"))
        sv.append(pwcca_similarity(fa, fb, method="svcca"))
    print(
        f"  ReLU layers, two random ResNet20s ({len(tb)} layers, {imgs.shape[0]} images): "
        f"textbook {min(tb):.3f}-{max(tb):.3f} (mean {np.mean(tb):.3f}), "
        f"svcca {min(sv):.3f}-{max(sv):.3f} (mean {np.mean(sv):.3f})"
    )


if __name__ == "__main__":
    main()
