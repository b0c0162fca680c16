"""GPU paths on a GPU: fused groups, bf16 autocast and ``--fuse auto``'s memory probe.

Cases marked ``cuda`` are skipped, with the reason, where no GPU is visible (``conftest.py``);
``pytest -m cuda`` selects them (``benchmarks/gpu_check.py`` runs them on a GPU machine).
Where a test also has a CPU case, that case runs everywhere and shows that the test and
its tolerance hold; the CUDA case adds the GPU kernels (cuDNN grouped convolutions, CUDA
autocast, the CUDA allocator's counters). Other ``cuda`` cases: the sync-debug check of
the training steps (``test_syncfree.py``) and PWCCA (``analysis/test_pwcca.py``).
"""

import contextlib
import copy
import re

import pytest
import torch
import torch.nn.functional as F

from selectivity.core.regularizer import SelectivityRegularizer
from selectivity.data import ImageDataset
from selectivity.data.loader import BatchLoader, GroupBatchLoader
from selectivity.models.resnet_cifar import CifarResNet
from selectivity.run.config import make_config
from selectivity.training.fused import FusedRuns
from selectivity.training.group import auto_group_size, cuda_memory_probe
from selectivity.training.runtime import autocast

NUM_CLASSES = 10
HP = dict(lr=0.05, momentum=0.9, weight_decay=5e-4)
DEVICES = [torch.device("cpu"), pytest.param(torch.device("cuda"), marks=pytest.mark.cuda)]


def _toy(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    return ImageDataset(images, labels, [f"c{i}" for i in range(NUM_CLASSES)], "toy")


@contextlib.contextmanager
def _full_float32():
    """No TF32 in CUDA matmuls and convolutions: float32 rounding, not TF32's 10-bit mantissa."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _separate(model, alpha, batches):
    """The single-run reference: the regulariser's hooks, mean CE, torch SGD."""
    model = copy.deepcopy(model).train()
    opt = torch.optim.SGD(model.parameters(), **HP)
    with SelectivityRegularizer(model, alpha, NUM_CLASSES, eps=1e-6) as reg:
        for x, y in batches:
            loss = F.cross_entropy(model(x), y) + reg.penalty(y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model


@pytest.mark.parametrize("device", DEVICES, ids=str)
@pytest.mark.parametrize("backend", ["grouped", "loop"])
def test_fused_group_equals_separate_runs_in_float32(device, backend):
    ds = _toy()
    seeds, alphas, steps = [0, 1, 2], [-1.0, 0.0, 2.0], 5
    models = []
    for s in seeds:
        torch.manual_seed(s)
        models.append(CifarResNet(depth=8, num_classes=NUM_CLASSES).to(device))
    per_run = []
    for s in seeds:  # each run its own batch order, produced on the device
        loader = BatchLoader(ds, 6, shuffle=True, augment=True, seed=s, drop_last=True, device=device)
        per_run.append(list(loader)[:steps])
    with _full_float32():
        group = FusedRuns(models, alphas, NUM_CLASSES, backend=backend, **HP)
        assert group.backend == backend
        for t in range(steps):
            x = torch.stack([per_run[r][t][0] for r in range(3)])  # (R, B, C, H, W)
            y = torch.stack([per_run[r][t][1] for r in range(3)])  # (R, B)
            out = group.step(x, y)
        refs = [_separate(models[r], alphas[r], per_run[r]) for r in range(3)]
    assert torch.isfinite(out.loss).all()
    for r, ref in enumerate(refs):
        got = group.state_dict(r)
        for k, v in ref.state_dict().items():
            assert got[k].device.type == device.type and got[k].dtype == v.dtype, k
            if v.dtype.is_floating_point:
                # Float32 rounding in other kernels (grouped vs plain convolutions, another
                # summation order) after 5 steps: far below 1e-3 of the tensor's scale.
                scale = v.abs().max().clamp(min=1e-6)
                assert ((got[k] - v).abs().max() / scale).item() <= 1e-3, k
            else:
                assert torch.equal(got[k], v), k
    # the runs really differ: not a vacuous match
    assert (group.state_dict(0)["conv1.weight"] - group.state_dict(2)["conv1.weight"]).abs().max() > 1e-3


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_bf16_autocast_keeps_selectivity_in_float32(device):
    torch.manual_seed(0)
    model = CifarResNet(depth=8, num_classes=NUM_CLASSES).to(device).train()
    x, y = next(iter(BatchLoader(_toy(), 48, device=device)))
    with SelectivityRegularizer(model, 1.0, NUM_CLASSES, eps=1e-6) as reg:
        model(x)
        si_fp32 = reg.selectivity(y)
        reg.clear()
        with autocast(device, True):
            logits = model(x)
            si_bf16 = reg.selectivity(y)
    assert logits.dtype == torch.bfloat16  # the network ran in bf16 ...
    assert si_fp32.dtype == si_bf16.dtype == torch.float32  # ... its selectivity did not
    # bf16 responses (8-bit mantissa, relative rounding 2^-8) move an index in [0, 1] by
    # far less than 0.05
    assert abs(si_bf16.item() - si_fp32.item()) < 0.05
    models = []
    for s in range(2):
        torch.manual_seed(s)
        models.append(CifarResNet(depth=8, num_classes=NUM_CLASSES).to(device))
    group = FusedRuns(models, [1.0, -1.0], NUM_CLASSES, lr=0.1, amp=True)
    xg, yg = next(iter(GroupBatchLoader(_toy(), 8, seeds=[0, 1], device=device)))
    out = group.step(xg, yg)
    assert out.selectivity.dtype == torch.float32 and torch.isfinite(out.loss).all()
    assert (out.selectivity > 0).all()


@pytest.mark.cuda
def test_fuse_auto_memory_probe_on_cuda():
    device = torch.device("cuda")
    probe = cuda_memory_probe(device)
    probe.start()
    block = torch.empty(64 * 2**20, dtype=torch.uint8, device=device)  # 64 MiB
    assert probe.peak() >= 64 * 2**20
    del block
    assert 0 < probe.free() <= torch.cuda.get_device_properties(device).total_memory
    messages: list[str] = []
    cfg = make_config("paper", {"model": "resnet20", "device": "cuda", "batch_size": 128})
    r = auto_group_size(cfg, max_runs=64, log=messages.append)
    # One ResNet20 run at batch 128 (parameters, gradients, momentum, activations) needs
    # well under 1 GiB, so any GPU with a few GiB free holds at least two.
    assert 2 <= r <= 64
    per_run = re.search(r"([0-9]+) MiB per run", messages[-1])
    assert per_run is not None and int(per_run.group(1)) > 0, messages
