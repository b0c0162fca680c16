"""Shared tiny-data builders for the tests: a random CIFAR-10 copy, a random image-folder tree,
a random Tiny ImageNet tree, and the two-run sweep trained on the first.

The fixtures built from these (``tiny_data``, ``tiny_sweep``) live in ``conftest.py``; the
names here are imported by test files that need the same settings (e.g. to rerun the sweep
with an unchanged configuration). No test module imports another test module: shared
builders live here.
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from selectivity.data import CIFAR10_CLASSES
from selectivity.sweep import SweepSpec

# Training overrides of the shared sweep: two epochs on 120 training images, 30 validation.
TINY = dict(epochs=2, batch_size=32, val_size=30, top_n=3, num_threads=1, eval_batch_size=64)
# Test images of the shared data: the geometry needs at least 65 (64 channels + 1).
N_TEST = 80
RUN_A = "resnet20_alpha-1_seed0"
RUN_B = "resnet20_alpha+1_seed0"


class TinySweep(NamedTuple):
    """A finished sweep: its directory and the table ``run_sweep`` returned, indexed by run id."""

    path: Path
    runs: pd.DataFrame


def write_tiny_cifar(root: Path, per_batch: int = 30, n_test: int = 60, seed: int = 0) -> Path:
    """A CIFAR-10 python release of random images: 5 x ``per_batch`` training, ``n_test`` test."""
    rng = np.random.default_rng(seed)
    py = root / "cifar-10-batches-py"
    py.mkdir(parents=True)

    def dump(name: str, obj: dict) -> None:
        (py / name).write_bytes(pickle.dumps(obj, protocol=2))

    for b in range(5):
        labels = rng.permutation(np.arange(per_batch) % 10)
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        dump(f"data_batch_{b + 1}", {b"labels": [int(x) for x in labels], b"data": data})
    labels = rng.permutation(np.arange(n_test) % 10)
    test = {b"labels": [int(x) for x in labels], b"data": rng.integers(0, 256, (n_test, 3072), np.uint8)}
    dump("test_batch", test)
    dump("batches.meta", {b"label_names": [c.encode() for c in CIFAR10_CLASSES]})
    return root


def tiny_spec(**kw) -> SweepSpec:
    """The shared sweep's spec (ResNet20, alpha -1 and +1, seed 0, ``TINY``), fields replaced by ``kw``."""
    spec = SweepSpec(models=["resnet20"], alphas=[-1.0, 1.0], seeds=[0], preset="paper", overrides=dict(TINY))
    for k, v in kw.items():
        setattr(spec, k, v)
    return spec


def write_image_folder(
    root: Path, names: list[str], size: int, train_per_class: int, test_per_class: int = 2
) -> Path:
    """An image-folder tree ``train/<class>/*.png``, ``test/<class>/*.png`` of random images."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for name in names:
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def peak_tensor_bytes(fn) -> int:
    """Peak bytes of CPU tensor memory allocated while ``fn()`` runs, beyond what was live before.

    Reads torch's own allocation records (the profiler's memory events: every allocation
    with its size, every free as a negative size), in time order; the running sum's
    maximum is the peak. Python objects and memory allocated before the call are not
    counted: what grows with the data of a streaming loop is tensors.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e.time_range.start, e.self_cpu_memory_usage) for e in prof.events() if e.self_cpu_memory_usage
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


#: Classes of the fake Tiny ImageNet tree, in label order (wnids.txt deliberately not sorted).
TINY_WNIDS = ["n0300", "n0100", "n0400", "n0200"]
#: Labelled val images per class of the fake tree: its test split (12 images, grouped by class).
TINY_N_VAL = 3


def write_fake_tiny(root: Path, n_train: int = 4, seed: int = 0) -> Path:
    """A Tiny ImageNet tree of random JPEGs under ``root/tiny-imagenet-200``.

    ``n_train`` training and ``TINY_N_VAL`` labelled val images per class of ``TINY_WNIDS``.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    tiny = root / "tiny-imagenet-200"
    (tiny / "val" / "images").mkdir(parents=True)
    (tiny / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    for wnid in TINY_WNIDS:
        d = tiny / "train" / wnid / "images"
        d.mkdir(parents=True)
        for j in range(n_train):
            img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(img).save(d / f"{wnid}_{j}.JPEG", quality=90)
    lines = []
    for j in range(TINY_N_VAL * len(TINY_WNIDS)):
        wnid = TINY_WNIDS[j % len(TINY_WNIDS)]
        img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(img).save(tiny / "val" / "images" / f"val_{j}.JPEG", quality=90)
        lines.append(f"val_{j}.JPEG\t{wnid}\t0\t0\t63\t63")
    (tiny / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return tiny


def write_tiny_c(root: Path, test_images: torch.Tensor, test_labels: torch.Tensor, cells: dict) -> Path:
    """A Tiny ImageNet-C tree ``<corruption>/<severity>/<wnid>/*.png`` of the whole test split.

    ``cells[(corruption, severity)]`` is ``(N_test, 3, 64, 64)`` uint8 in test-split order;
    the k-th image of a class is written as ``<wnid>_<k>.png`` (lossless, to compare bytes).
    """
    from PIL import Image

    for (name, sev), imgs in cells.items():
        for label, wnid in enumerate(TINY_WNIDS):
            d = root / name / str(sev) / wnid
            d.mkdir(parents=True)
            rows = torch.nonzero(test_labels == label).flatten().tolist()
            for k, i in enumerate(rows):
                Image.fromarray(imgs[i].permute(1, 2, 0).numpy()).save(d / f"{wnid}_{k}.png")
    return root


def load_tool(name: str):
    """The module ``tools/<name>.py`` (the tools are scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module
