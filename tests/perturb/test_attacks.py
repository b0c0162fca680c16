"""FGSM / PGD: analytic worst case on linear models, constraints, bookkeeping, foolbox."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selectivity.perturb import (
    ATTACKS,
    accuracy_under_attack,
    attack,
    attack_outcome,
    fgsm,
    pgd,
)

MEAN = (0.49, 0.48, 0.45)
STD = (0.25, 0.24, 0.26)


def linear_model(seed=0, classes=2, shape=(3, 4, 4)):
    torch.manual_seed(seed)
    d = math.prod(shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, classes))


def small_convnet(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )


def warm_bn(model, x):
    """Give batch-norm non-trivial running statistics, then eval."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
    return model.eval()


def images(n=16, shape=(3, 8, 8), seed=1, lo=0.0, hi=1.0):
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand((n, *shape), generator=g)


def losses(model, x, y, mean=None, std=None):
    if mean is not None:
        m = torch.tensor(mean).view(1, -1, 1, 1)
        s = torch.tensor(std).view(1, -1, 1, 1)
        x = (x - m) / s
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


# ------------------------------------------------------------------ analytic worst case
def analytic_delta(model, y, eps, norm, std):
    """Worst-case perturbation of a 2-class linear model: along w_other - w_y (pixel space)."""
    w = model[1].weight.detach()  # (2, D) acting on normalised input
    s = torch.tensor(std).view(-1, 1, 1).expand(3, 4, 4).reshape(-1)
    # d logit / d pixel = w / std (per channel); the margin direction w_other - w_y.
    v = (w[1 - y] - w[y]) / s  # (N, D)
    if norm == "linf":
        d = eps * v.sign()
    else:
        d = eps * v / v.norm(dim=1, keepdim=True)
    return d.view(-1, 3, 4, 4)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_linear_two_class_matches_analytic_worst_case(norm):
    model = linear_model()
    # Pixels in [0.3, 0.7] and eps <= 0.2 (linf): clipping to [0, 1] never binds.
    x = images(12, (3, 4, 4), lo=0.3, hi=0.7)
    y = torch.tensor([0, 1] * 6)
    eps = 0.05 if norm == "linf" else 0.5
    expected = analytic_delta(model, y, eps, norm, STD)
    d_fgsm = fgsm(model, x, y, eps, norm=norm, mean=MEAN, std=STD) - x
    # L-inf PGD reaches the corner from any random start; L2 PGD's radial projection only
    # shrinks the random start's orthogonal part slowly, so L2 is compared exactly without it.
    adv = pgd(
        model,
        x,
        y,
        eps,
        norm=norm,
        steps=20,
        random_start=norm == "linf",
        mean=MEAN,
        std=STD,
        generator=torch.Generator().manual_seed(3),
    )
    tol = 1e-6 if norm == "linf" else 1e-5
    torch.testing.assert_close(d_fgsm, expected, atol=tol, rtol=0)
    torch.testing.assert_close(adv - x, expected, atol=tol, rtol=0)
    if norm == "l2":
        # with a random start: never beyond the analytic optimum, and close to it
        best = losses(model, x + expected, y, MEAN, STD)
        adv = pgd(
            model,
            x,
            y,
            eps,
            norm=norm,
            steps=20,
            mean=MEAN,
            std=STD,
            generator=torch.Generator().manual_seed(3),
        )
        got = losses(model, adv, y, MEAN, STD)
        assert (got <= best + 1e-5).all()
        assert (got >= best - 0.05 * (best - losses(model, x, y, MEAN, STD))).all()


def test_linear_analytic_point_beats_random_points_of_the_ball():
    model = linear_model(seed=4)
    x = images(6, (3, 4, 4), lo=0.3, hi=0.7)
    y = torch.tensor([1, 0, 1, 0, 0, 1])
    eps = 0.1
    adv = fgsm(model, x, y, eps, mean=MEAN, std=STD)
    best = losses(model, adv, y, MEAN, STD)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        other = x + eps * (2 * torch.rand(x.shape, generator=g) - 1)
        assert (losses(model, other, y, MEAN, STD) <= best + 1e-6).all()


# ------------------------------------------------------------------ PGD vs FGSM
def test_pgd_not_weaker_than_fgsm():
    x = images(64)
    model = warm_bn(small_convnet(), x)
    y = torch.randint(0, 5, (64,), generator=torch.Generator().manual_seed(2))
    eps = 8 / 255
    l_f = losses(model, fgsm(model, x, y, eps), y)
    out = attack_outcome("pgd", model, x, y, eps, steps=10, generator=torch.Generator().manual_seed(0))
    l_p = losses(model, out.x_adv, y)
    torch.testing.assert_close(out.loss, l_p)  # the reported loss is that of the returned image
    assert l_p.mean() >= l_f.mean()
    acc_f = (model(fgsm(model, x, y, eps)).argmax(1) == y).float().mean()
    assert out.correct.float().mean() <= acc_f
    # With the FGSM step as its first iterate, "best" PGD is per-sample at least as strong.
    adv = pgd(model, x, y, eps, steps=4, step_size=eps, random_start=False, select="best")
    assert (losses(model, adv, y) >= l_f - 1e-6).all()


# ------------------------------------------------------------------ constraints
@pytest.mark.parametrize("name", ["fgsm", "pgd"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_perturbation_stays_in_ball_and_in_unit_range(name, norm):
    x = images(32)
    x[:4] = 0.0  # saturated images: clipping must bind
    x[4:8] = 1.0
    model = warm_bn(small_convnet(seed=5), x)
    y = torch.randint(0, 5, (32,), generator=torch.Generator().manual_seed(3))
    eps = 8 / 255 if norm == "linf" else 0.5
    kw = {"restarts": 2, "steps": 5, "generator": torch.Generator().manual_seed(1)} if name == "pgd" else {}
    adv = attack(name, model, x, y, eps, norm=norm, mean=MEAN, std=STD, **kw)
    assert adv.shape == x.shape and adv.dtype == x.dtype and not adv.requires_grad
    assert adv.min() >= 0 and adv.max() <= 1
    d = (adv - x).flatten(1)
    if norm == "linf":
        assert d.abs().max() <= eps + 1e-6
    else:
        assert (d.norm(dim=1) <= eps * (1 + 1e-5)).all()
        # the budget is used: unsaturated images move by (almost) eps
        assert d[8:].norm(dim=1).max() > 0.9 * eps
    assert (adv != x).any()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_epsilon_zero_changes_nothing(norm):
    x = images(8)
    model = warm_bn(small_convnet(), x)
    y = torch.zeros(8, dtype=torch.long)
    assert torch.equal(fgsm(model, x, y, 0.0, norm=norm), x)
    assert torch.equal(pgd(model, x, y, 0, norm=norm, restarts=2, steps=3), x)


def test_l2_fgsm_has_norm_epsilon_when_unclipped():
    model = linear_model(seed=7, classes=3)
    x = images(5, (3, 4, 4), lo=0.4, hi=0.6)
    y = torch.tensor([0, 1, 2, 0, 1])
    d = fgsm(model, x, y, 0.2, norm="l2") - x
    torch.testing.assert_close(d.flatten(1).norm(dim=1), torch.full((5,), 0.2))


# ------------------------------------------------------------------ model state
def test_no_parameter_gradients_and_modes_restored():
    x = images(8)
    model = warm_bn(small_convnet(), x)
    model.train()
    model[1].eval()  # a mixed state must come back exactly
    model[0].bias.requires_grad_(False)
    model[7].weight.grad = torch.ones_like(model[7].weight)  # a stale grad must stay untouched
    y = torch.arange(8) % 5
    with torch.no_grad():  # the attack must work inside a caller's no_grad
        pgd(model, x, y, 4 / 255, steps=2)
        fgsm(model, x, y, 4 / 255, norm="l2")
    modes = [m.training for m in model.modules()]
    assert modes == [True, True, False] + [True] * (len(modes) - 3)  # modules(): the Sequential first
    for name, p in model.named_parameters():
        assert p.requires_grad == (name != "0.bias")
        if name == "7.weight":
            assert torch.equal(p.grad, torch.ones_like(p))
        else:
            assert p.grad is None


def test_samples_attacked_independently_of_batch():
    x = images(6)
    model = warm_bn(small_convnet(seed=2), x)
    model.train()  # batch statistics would couple samples; the attack must use eval mode
    y = torch.arange(6) % 5
    whole = fgsm(model, x, y, 8 / 255)
    alone = torch.cat([fgsm(model, x[i : i + 1], y[i : i + 1], 8 / 255) for i in range(6)])
    torch.testing.assert_close(whole, alone)


def test_restarts_keep_per_sample_strongest():
    x = images(24)
    model = warm_bn(small_convnet(seed=3), x)
    y = torch.arange(24) % 5
    eps, kw = 16 / 255, {"steps": 2, "select": "last"}
    g = torch.Generator().manual_seed(11)
    singles = [attack_outcome("pgd", model, x, y, eps, generator=g, **kw) for _ in range(3)]
    multi = attack_outcome(
        "pgd", model, x, y, eps, restarts=3, generator=torch.Generator().manual_seed(11), **kw
    )
    # strongest of the three single runs, per sample: misclassified first, then loss
    score = torch.stack([s.loss.double() + 1e6 * (~s.correct) for s in singles])  # (3, N), float64: no ties
    pick = score.argmax(0)
    expected = torch.stack([s.x_adv for s in singles])[pick, torch.arange(24)]
    torch.testing.assert_close(multi.x_adv, expected)
    assert pick.unique().numel() > 1  # the restarts really disagree somewhere


# ------------------------------------------------------------------ streaming
def test_accuracy_under_attack_streams_batches():
    x = images(40)
    model = warm_bn(small_convnet(seed=6), x)
    with torch.no_grad():
        y = model(x).argmax(1)  # all clean-correct
    y[:5] = (y[:5] + 1) % 5  # five wrong labels
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 40, 16)]
    res = accuracy_under_attack(model, iter(batches), "fgsm", [0.0, 4 / 255, 0.2])
    assert [r.epsilon for r in res] == [0.0, 4 / 255, 0.2]
    assert all(r.total == 40 and r.clean_correct == 35 for r in res)
    assert res[0].correct == 35 and res[0].accuracy == pytest.approx(35 / 40)
    adv = fgsm(model, x, y, 0.2)
    with torch.no_grad():
        assert res[2].correct == int((model(adv).argmax(1) == y).sum())
    assert res[2].correct < 35


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, x, y: fgsm(m, x, y, -0.1), "epsilon must be a finite number >= 0"),
        (lambda m, x, y: pgd(m, x, y, float("nan")), "epsilon must be a finite number >= 0"),
        (lambda m, x, y: pgd(m, x, y, 0.1, norm="l1"), r"norm must be one of \('linf', 'l2'\)"),
        (lambda m, x, y: attack("cw", m, x, y, 0.1), r"attack must be one of \('fgsm', 'pgd', 'apgd-ce'"),
        (lambda m, x, y: pgd(m, x, y, 0.1, steps=0), "steps must be an integer >= 1"),
        (lambda m, x, y: pgd(m, x, y, 0.1, restarts=0), "restarts must be an integer >= 1"),
        (lambda m, x, y: pgd(m, x, y, 0.1, select="first"), "select must be one of"),
        (lambda m, x, y: pgd(m, x, y, 0.1, step_size=-1.0), "step_size must be a finite number >= 0"),
        (lambda m, x, y: fgsm(m, x * 255, y, 0.1), r"x must hold pixel values in \[0, 1\]"),
        (lambda m, x, y: fgsm(m, x, y[:2], 0.1), "y must be an integer tensor of shape"),
        (lambda m, x, y: fgsm(m, x, y, 0.1, mean=MEAN), "mean and std must be given together"),
        (lambda m, x, y: fgsm(m, x, y, 0.1, mean=(0.5,), std=(0.2,)), "one per channel"),
        (lambda m, x, y: accuracy_under_attack(m, [], "pgd", [-1.0]), "epsilon must be"),
    ],
)
def test_bad_input_one_line_errors(call, match):
    x = images(4)
    model = small_convnet().eval()
    with pytest.raises(ValueError, match=match) as info:
        call(model, x, torch.zeros(4, dtype=torch.long))
    assert "\n" not in str(info.value)


def test_registry_names():
    assert set(ATTACKS) == {"fgsm", "pgd", "apgd-ce", "apgd-t", "apgd-ensemble"}


# ------------------------------------------------------------------ foolbox cross-check
def foolbox_setup():
    import foolbox as fb  # the `test` extra installs it; a missing install fails loudly

    torch.manual_seed(0)
    x = images(16).double()
    model = warm_bn(small_convnet(seed=8), x.float()).double()
    y = torch.arange(16) % 5
    fmodel = fb.PyTorchModel(
        model, bounds=(0, 1), preprocessing={"mean": list(MEAN), "std": list(STD), "axis": -3}
    )
    # foolbox stores mean/std as float32 tensors; pass ours the same float32-rounded values.
    return fb, model, fmodel, x, y, torch.tensor(MEAN), torch.tensor(STD)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_equals_foolbox(norm):
    fb, model, fmodel, x, y, mean, std = foolbox_setup()
    eps = 8 / 255 if norm == "linf" else 0.5
    ref_attack = fb.attacks.FGSM() if norm == "linf" else fb.attacks.FGM()
    ref = ref_attack.run(fmodel, x, y, epsilon=eps)
    ours = fgsm(model, x, y, eps, norm=norm, mean=mean, std=std)
    assert (ours != x).any()
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_without_random_start_equals_foolbox(norm):
    fb, model, fmodel, x, y, mean, std = foolbox_setup()
    eps = 8 / 255 if norm == "linf" else 0.5
    steps, alpha = 7, 2.5 * eps / 7
    cls = fb.attacks.LinfPGD if norm == "linf" else fb.attacks.L2PGD
    ref = cls(abs_stepsize=alpha, steps=steps, random_start=False).run(fmodel, x, y, epsilon=eps)
    ours = pgd(
        model, x, y, eps, norm=norm, steps=steps, random_start=False, select="last", mean=mean, std=std
    )
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
