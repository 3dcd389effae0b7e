"""PGD and TRADES training losses (Table 14 baselines): the inner maximization, the β = 0 case, training, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crc_core.adversarial import (
    pgd_training_loss,
    trades_kl,
    trades_loss,
    validate_adversarial_options,
)
from crc_core.attack import l2_pgd
from crc_core.errors import CRCError
from crc_core.models import MLP


def tiny(seed: int = 0, act: str = "relu") -> tuple[MLP, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = MLP(20, [32], 4, act)
    x = torch.rand(64, 20)
    y = (x[:, :10].sum(1) > x[:, 10:].sum(1)).long() + 2 * (x[:, 0] > 0.5).long()  # a learnable 4-class rule
    return model, x, y


@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_increases_the_loss_and_stays_in_the_ball(random_start):
    model, x, y = tiny()
    eps = 0.5
    clean = F.cross_entropy(model(x), y, reduction="none")
    loss, stats = pgd_training_loss(model, x, y, eps=eps, steps=10, random_start=random_start,
                                    generator=torch.Generator().manual_seed(0))
    assert stats["delta_max"] <= eps * (1 + 1e-6)
    assert loss.item() > clean.mean().item() + 1e-3
    # per row, the attack point is at least as bad as x itself (the PGD from x: ascent never goes below start)
    x_adv = l2_pgd(lambda z: F.cross_entropy(model(z), y, reduction="none"), x, eps=eps, steps=10)
    adv = F.cross_entropy(model(x_adv), y, reduction="none")
    assert (adv >= clean - 1e-6).float().mean() > 0.95
    assert ((x_adv - x).norm(dim=1) <= eps * (1 + 1e-6)).all() and x_adv.min() >= 0 and x_adv.max() <= 1


def test_pgd_inner_max_sends_no_gradient_to_the_parameters():
    model, x, y = tiny()
    loss, _ = pgd_training_loss(model, x, y, eps=0.3, steps=3)
    assert all(p.grad is None for p in model.parameters())
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_trades_is_cross_entropy_at_beta_zero_and_adds_the_kl_otherwise():
    model, x, y = tiny(1, "softplus")
    loss0, stats0 = trades_loss(model, x, y, beta=0.0, eps=0.5, steps=5)
    assert loss0.item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-6)
    assert stats0["robust_kl"] == 0.0
    loss, stats = trades_loss(model, x, y, beta=6.0, eps=0.5, steps=5, generator=torch.Generator().manual_seed(0))
    assert stats["robust_kl"] > 0 and stats["delta_max"] <= 0.5 * (1 + 1e-6)
    assert loss.item() == pytest.approx(stats["natural_loss"] + 6.0 * stats["robust_kl"], rel=1e-5)
    # the inner PGD on the KL beats the tiny random start
    p = F.softmax(model(x), 1).detach()
    start = trades_kl(model(x + 1e-3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))), p)
    assert stats["robust_kl"] > 10 * start.mean().item()


@pytest.mark.parametrize("kind", ["pgd", "trades"])
def test_a_few_training_steps_lower_the_loss(kind):
    model, x, y = tiny(2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)

    def step() -> float:
        if kind == "pgd":
            loss, stats = pgd_training_loss(model, x, y, eps=0.2, steps=5, generator=g)
        else:
            loss, stats = trades_loss(model, x, y, beta=1.0, eps=0.2, steps=5, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert all(torch.isfinite(p).all() for p in model.parameters())
        return stats["loss"]

    first = step()
    for _ in range(40):
        last = step()
    assert last < 0.8 * first


@pytest.mark.parametrize("kw, match", [
    ({"eps": 0.0}, "ε"), ({"eps": -1.0}, "ε"), ({"eps": float("nan")}, "ε"),
    ({"steps": 0}, "steps"), ({"steps": 2.5}, "steps"), ({"step_size": 0.0}, "step size"),
])
def test_bad_options_are_refused(kw, match):
    model, x, y = tiny()
    opts = {"eps": 0.5, "steps": 3} | kw
    with pytest.raises(CRCError, match=match):
        pgd_training_loss(model, x, y, **opts)
    with pytest.raises(CRCError, match=match):
        trades_loss(model, x, y, **opts)


def test_bad_beta_and_batches_are_refused():
    model, x, y = tiny()
    with pytest.raises(CRCError, match="β"):
        trades_loss(model, x, y, beta=-0.1, eps=0.5)
    with pytest.raises(CRCError, match="β"):
        validate_adversarial_options(eps=0.5, steps=3, beta=float("inf"))
    with pytest.raises(CRCError, match="labels"):
        pgd_training_loss(model, x, y[:3], eps=0.5)
    with pytest.raises(CRCError, match="non-empty"):
        trades_loss(model, x[:0], y[:0], eps=0.5)


def test_pgd_robust_is_an_attack_not_a_certificate():
    from crc_core.metrics import pgd_robust

    model, x, _ = tiny()
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert not pgd_robust(model, x, (pred + 1) % 4, eps=1e-3).any()  # misclassified: never robust
    small = pgd_robust(model, x, pred, eps=1e-4, steps=5)
    large = pgd_robust(model, x, pred, eps=3.0, steps=20)
    assert small.all() and large.float().mean() < 0.5 and (large <= small).all()  # a larger ball breaks more
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(CRCError, match="radius ε"):
        pgd_robust(model, x, pred, eps=0.0)
