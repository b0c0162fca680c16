"""APGD-CE, APGD-T and their ensemble: closed-form worst cases, the schedule, bookkeeping."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selectivity.perturb import (
    accuracy_under_attack,
    apgd_ce,
    apgd_checkpoints,
    apgd_ensemble,
    apgd_t,
    attack,
    attack_outcome,
    dlr_loss,
    targeted_dlr_loss,
)

MEAN = (0.49, 0.48, 0.45)
STD = (0.25, 0.24, 0.26)
SHAPE = (3, 4, 4)
D = math.prod(SHAPE)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ schedule and losses
def test_checkpoints_for_100_iterations_are_the_papers():
    # p: 0, .22, .41, .57, .70, .80, .87, .93, .99 (next 1.05 > 1); w_j = ceil(100 p_j)
    assert apgd_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]


def test_checkpoints_short_runs_round_up_and_drop_repeats():
    # 10 iterations: ceil of 2.2, 4.1, 5.7, 7.0, 8.0, 8.7, 9.3, 9.9 -> 9.9 repeats 10
    assert apgd_checkpoints(10) == [0, 3, 5, 6, 7, 8, 9, 10]
    assert apgd_checkpoints(1) == [0, 1]
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        apgd_checkpoints(0)


def test_dlr_loss_hand_values():
    logits = torch.tensor([[1.0, 4.0, 2.0, 3.0], [1.0, 4.0, 2.0, 3.0]])
    # correct (y=1): -(4 - 3) / (4 - 2); wrong (y=0): -(1 - 4) / (4 - 2)
    torch.testing.assert_close(dlr_loss(logits, torch.tensor([1, 0])), torch.tensor([-0.5, 1.5]))
    # targeted, y=1, t=3: -(4 - 3) / (4 - (2 + 1) / 2); t=0: -(4 - 1) / 2.5
    got = targeted_dlr_loss(logits, torch.tensor([1, 1]), torch.tensor([3, 0]))
    torch.testing.assert_close(got, torch.tensor([-0.4, -1.2]))
    # invariant to shifting and scaling the logits
    torch.testing.assert_close(dlr_loss(7 * logits - 3, torch.tensor([1, 0])), torch.tensor([-0.5, 1.5]))


def test_dlr_needs_enough_classes():
    with pytest.raises(ValueError, match="at least 3 classes"):
        dlr_loss(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 4 classes"):
        targeted_dlr_loss(
            torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long)
        )


# ------------------------------------------------------------------ closed form: 2 classes
def two_class_problem(norm):
    """A float64 2-class affine model (normalised input) and points at known worst-case margins.

    In pixel space the model is ``z = W x + b``; for label ``y`` the margin is
    ``m = wd . x + bd`` with ``wd = W_y - W_other``. Over the ball (clipping never binds),
    the smallest margin is ``m - eps ||wd||_1`` (linf) or ``m - eps ||wd||_2`` (l2), and
    the largest cross-entropy is ``softplus(-that)``.
    """
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, 2)).double()
    s = torch.tensor(STD, dtype=torch.float64).view(-1, 1, 1).expand(SHAPE).reshape(-1)
    mu = torch.tensor(MEAN, dtype=torch.float64).view(-1, 1, 1).expand(SHAPE).reshape(-1)
    w_n, b_n = model[1].weight.detach(), model[1].bias.detach()
    w, b = w_n / s, b_n - (w_n * mu / s).sum(1)  # pixel-space weights and bias
    y = torch.tensor([0, 1] * 6)
    wd, bd = w[y] - w[1 - y], b[y] - b[1 - y]  # (12, D), (12,)
    eps = 0.05 if norm == "linf" else 0.5
    size = wd.abs().sum(1) if norm == "linf" else wd.norm(dim=1)  # dual norm of wd
    # clean margins as multiples of eps * size: below 1 the attack can break the sample
    ratios = torch.tensor([0.3, 0.6, 0.9, 0.95, 1.05, 1.1, 1.5, 2.0, 3.0, 0.5, 1.2, 0.8], dtype=torch.float64)
    base = 0.35 + 0.3 * torch.rand(12, D, generator=seeded(1), dtype=torch.float64)
    m0 = (wd * base).sum(1) + bd
    x = base + ((ratios * eps * size - m0) / (wd * wd).sum(1))[:, None] * wd  # moved along wd
    worst = ratios * eps * size - eps * size
    delta = -eps * (wd.sign() if norm == "linf" else wd / wd.norm(dim=1, keepdim=True))
    # the ball's optimum lies inside [0, 1]: clipping cannot change the worst case
    assert (x + delta).min() > 0 and (x + delta).max() < 1
    return model, x.view(12, *SHAPE), y, eps, worst, delta.view(12, *SHAPE)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_ce_finds_the_closed_form_worst_case_of_a_linear_model(norm):
    model, x, y, eps, worst, delta = two_class_problem(norm)
    out = attack_outcome("apgd-ce", model, x, y, eps, norm=norm, mean=MEAN, std=STD, generator=seeded())
    # exactly the samples whose worst-case margin is negative are broken
    assert out.correct.tolist() == (worst > 0).tolist()
    assert 0 < int(out.correct.sum()) < 12
    # the loss at the returned point is the worst-case loss, and the point is the optimum
    torch.testing.assert_close(out.loss, F.softplus(-worst), rtol=1e-9, atol=1e-12)
    # linf: the corner exactly; l2: the iterates converge radially onto the optimum
    torch.testing.assert_close(out.x_adv - x, delta, rtol=0, atol=1e-12 if norm == "linf" else 1e-6)


# ------------------------------------------------------------------ closed form: 4 classes
def four_class_problem(scale):
    """A float32 4-class linear model with logits times ``scale`` and its closed-form verdicts.

    A sample is breakable iff some class ``j`` has ``m_j - eps ||W_y - W_j||_1 < 0``
    (``m_j = z_y - z_j``); samples within 10% of that threshold are dropped.
    """
    torch.manual_seed(0)
    lin = nn.Linear(D, 4)
    with torch.no_grad():
        lin.weight.mul_(scale)
        lin.bias.mul_(scale)
    model = nn.Sequential(nn.Flatten(), lin)
    w, b = lin.weight.detach().double(), lin.bias.detach().double()
    x = 0.2 + 0.6 * torch.rand(120, D, generator=seeded(1))
    eps = 0.08
    with torch.no_grad():
        y = model(x).argmax(1)  # every sample clean-correct
    z = x.double() @ w.T + b
    margins = z.gather(1, y[:, None]) - z  # (N, 4), 0 at y
    l1 = (w[y][:, None, :] - w[None]).abs().sum(2)  # (N, 4): ||W_y - W_j||_1
    ratio = (margins / (eps * l1)).scatter(1, y[:, None], math.inf).amin(1)
    keep = (ratio - 1).abs() > 0.1
    return model, x[keep].view(-1, *SHAPE), y[keep], eps, ratio[keep] > 1


@pytest.fixture(scope="module")
def saturated_problem():
    return four_class_problem(1e4)


def test_apgd_t_finds_the_closed_form_verdicts_of_a_linear_model():
    model, x, y, eps, robust = four_class_problem(1.0)
    out = attack_outcome("apgd-t", model, x, y, eps, n_target_classes=3, generator=seeded())
    assert 0.2 < robust.float().mean() < 0.8
    assert out.correct.tolist() == robust.tolist()


def test_dlr_sees_through_saturated_softmax_where_cross_entropy_fails(saturated_problem):
    # logits x 1e4: softmax is exactly one-hot in float32, so the CE gradient vanishes;
    # the DLR loss is scale invariant. The ensemble's verdicts are the closed form's.
    model, x, y, eps, robust = saturated_problem
    ce = attack_outcome("apgd-ce", model, x, y, eps, generator=seeded())
    ens = attack_outcome("apgd-ensemble", model, x, y, eps, generator=seeded())
    assert ens.correct.tolist() == robust.tolist()
    assert ce.correct.float().mean() > robust.float().mean() + 0.3
    # the ensemble continues APGD-CE: whatever APGD-CE broke stays broken
    assert not (ens.correct & ~ce.correct).any()


def test_n_target_classes_limits_the_targets():
    # Hand-weighted: class 0 is true; class 1 ranks 2nd but sits 1 below, whatever the
    # pixels; class 2 ranks 3rd with logit 40 * mean(x) - 22, which the ball raises by
    # 40 * eps = 3.2 at most: a sample breaks iff its margin z_0 - z_2 is below 3.2 and
    # the attack targets class 2.
    lin = nn.Linear(D, 4)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[2] = 40 / D
        lin.bias.copy_(torch.tensor([0.0, -1.0, -22.0, -5.0]))
    model = nn.Sequential(nn.Flatten(), lin)
    margins = torch.tensor([1.5, 2.5, 3.0, 3.5, 4.0, 4.5])
    x = ((22 - margins) / 40)[:, None].expand(6, D).reshape(6, *SHAPE)  # z_2 = -margin
    y = torch.zeros(6, dtype=torch.long)
    one = attack_outcome("apgd-t", model, x, y, 0.08, n_target_classes=1, generator=seeded())
    two = attack_outcome("apgd-t", model, x, y, 0.08, n_target_classes=2, generator=seeded())
    many = attack_outcome("apgd-t", model, x, y, 0.08, generator=seeded())  # 9 asked, 3 exist
    assert one.correct.all()
    assert two.correct.tolist() == many.correct.tolist() == [False, False, False, True, True, True]


# ------------------------------------------------------------------ trained network
def blobs(n, seed, k=5, d=20, noise=0.25):
    centres = torch.rand(k, d, generator=seeded(123))
    g = seeded(seed)
    y = torch.randint(0, k, (n,), generator=g)
    return (centres[y] + noise * torch.randn(n, d, generator=g)).clamp(0, 1), y


@pytest.fixture(scope="module")
def trained_mlp():
    """A small MLP trained for 60 full-batch Adam steps on five overlapping Gaussian blobs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5))
    x, y = blobs(512, 0)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    opt.zero_grad()  # no .grad left: the attacks must not create one
    xt, yt = blobs(200, 100)
    with torch.no_grad():
        assert (model(xt).argmax(1) == yt).float().mean() > 0.9  # it learned the task
    return model.eval(), xt, yt


@pytest.mark.parametrize("eps", [0.1, 0.15])
def test_apgd_never_weaker_than_pgd_with_the_same_budget(trained_mlp, eps):
    model, x, y = trained_mlp
    p = attack_outcome("pgd", model, x, y, eps, steps=100, generator=seeded())
    a = attack_outcome("apgd-ce", model, x, y, eps, steps=100, generator=seeded())
    assert p.correct.float().mean() < 0.95  # the attack bites at this epsilon
    assert a.correct.sum() <= p.correct.sum()
    ens = attack_outcome("apgd-ensemble", model, x, y, eps, steps=100, generator=seeded())
    assert not (ens.correct & ~a.correct).any()


# ------------------------------------------------------------------ bookkeeping
@pytest.mark.parametrize("name", ["apgd-ce", "apgd-t", "apgd-ensemble"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_constraints_determinism_and_reported_loss(trained_mlp, name, norm):
    model, x, y = trained_mlp
    x = x[:40].clone()
    x[:3] = 0.0  # saturated inputs: clipping binds
    eps = 0.1 if norm == "linf" else 0.5
    kw = (
        {"norm": norm, "steps": 12, "n_target_classes": 2}
        if name != "apgd-ce"
        else {"norm": norm, "steps": 12}
    )
    out = attack_outcome(name, model, x, y[:40], eps, generator=seeded(5), **kw)
    again = attack_outcome(name, model, x, y[:40], eps, generator=seeded(5), **kw)
    other = attack_outcome(name, model, x, y[:40], eps, generator=seeded(6), **kw)
    assert torch.equal(out.x_adv, again.x_adv) and torch.equal(out.correct, again.correct)
    assert not torch.equal(out.x_adv, other.x_adv)  # the generator drives the random start
    assert out.x_adv.min() >= 0 and out.x_adv.max() <= 1 and not out.x_adv.requires_grad
    d = (out.x_adv - x).flatten(1)
    if norm == "linf":
        assert d.abs().max() <= eps + 1e-6
    else:
        assert (d.norm(dim=1) <= eps * (1 + 1e-5)).all()
    with torch.no_grad():
        logits = model(out.x_adv)
    torch.testing.assert_close(out.loss, F.cross_entropy(logits, y[:40], reduction="none"))
    assert torch.equal(out.correct, logits.argmax(1) == y[:40])
    assert torch.equal(attack(name, model, x, y[:40], eps, generator=seeded(5), **kw), out.x_adv)


def test_clean_misclassified_returned_unchanged_and_accuracy_below_clean(trained_mlp):
    model, x, y = trained_mlp
    y = y[:30].clone()
    y[:6] = (y[:6] + 1) % 5  # wrong labels: misclassified before any attack
    x = x[:30]
    for fn in (apgd_ce, apgd_t, apgd_ensemble):
        adv = fn(model, x, y, 0.1, steps=5, generator=seeded())
        assert torch.equal(adv[:6], x[:6])
    res = accuracy_under_attack(model, [(x, y)], "apgd-ensemble", [0.0, 0.1], steps=5, generator=seeded())
    assert res[0].clean_correct == res[0].correct <= 24
    assert res[1].correct <= res[0].correct


def test_epsilon_zero_and_model_state_restored(trained_mlp):
    model, x, y = trained_mlp
    model.train()
    model[0].bias.requires_grad_(False)
    with torch.no_grad():  # must work inside a caller's no_grad
        adv = apgd_ensemble(model, x[:10], y[:10], 0.0, steps=3, n_target_classes=2)
    assert torch.equal(adv, x[:10])
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == [True, False] + [True] * 4
    model[0].bias.requires_grad_(True)
    model.eval()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, x, y: apgd_ce(m, x, y, -1.0), "epsilon must be a finite number >= 0"),
        (lambda m, x, y: apgd_ce(m, x, y, 0.1, norm="l1"), "norm must be one of"),
        (lambda m, x, y: apgd_ce(m, x, y, 0.1, steps=0), "steps must be an integer >= 1"),
        (lambda m, x, y: apgd_t(m, x, y, 0.1, restarts=0), "restarts must be an integer >= 1"),
        (lambda m, x, y: apgd_t(m, x, y, 0.1, n_target_classes=0), "n_target_classes must be"),
        (lambda m, x, y: apgd_ce(m, x, y, 0.1, rho=1.5), r"rho must be a number in \[0, 1\]"),
        (lambda m, x, y: apgd_ce(m, x, y, 0.1, momentum=-0.1), r"momentum must be a number in \[0, 1\]"),
        (lambda m, x, y: apgd_ce(m, x * 3, y, 0.1), r"x must hold pixel values in \[0, 1\]"),
        (lambda m, x, y: apgd_t(m[:1], x, y, 0.1), "apgd-t needs at least 4 classes"),
    ],
)
def test_bad_input_one_line_errors(call, match):
    model = nn.Sequential(nn.Linear(20, 3), nn.ReLU(), nn.Linear(3, 5))
    x = torch.rand(4, 20, generator=seeded())
    with pytest.raises(ValueError, match=match) as info:
        call(model, x, torch.zeros(4, dtype=torch.long))
    assert "\n" not in str(info.value)
