"""CROWN: relaxations, lower bounds against sampling/PGD and IBP, a hand-computed case, the bisection's radius."""

from __future__ import annotations

import math

import pytest
import torch
from baseline_helpers import attack_radii, min_margin_in_ball
from helpers import small_data, small_model

from crc_core.activations import ACTIVATIONS
from crc_core.baselines.crown import crown_lower_bounds, crown_radius, ibp_lower_bounds, relax
from crc_core.errors import CRCError
from crc_core.models import MLP

ACTS = ("softplus", "sigmoid", "tanh", "relu")


def _fn(act: str):
    return torch.relu if act == "relu" else ACTIVATIONS[act].fn


@pytest.mark.parametrize("act", ACTS)
def test_relaxation_lines_sandwich_the_activation(act, rng):
    """Dense grid on many intervals: narrow, wide, one-sided and straddling 0 (the S-shaped cases)."""
    c = torch.randn(400, generator=rng, dtype=torch.float64) * 4
    w = torch.cat([torch.rand(300, generator=rng, dtype=torch.float64) * 10,
                   10.0 ** torch.linspace(-14, -6, 100, dtype=torch.float64)])
    l, u = c - w / 2, c + w / 2
    r = relax(act, l, u)
    s = torch.linspace(0, 1, 2001, dtype=torch.float64)
    z = l[:, None] + s[None, :] * (u - l)[:, None]
    v = _fn(act)(z)
    assert (r.lo_slope[:, None] * z + r.lo_icpt[:, None] <= v).all()
    assert (r.up_slope[:, None] * z + r.up_icpt[:, None] >= v).all()


@pytest.mark.parametrize(("act", "depth"), [(a, d) for a in ACTS for d in (2, 3)])
def test_lower_bound_below_sampling_and_pgd_and_never_looser_than_ibp(act, depth):
    model = small_model(depth, act, trained=True)
    x, _ = small_data("test", 200)
    x0 = x[:10].double()
    with torch.no_grad():
        z = model(x0.float())
    y = z.argmax(1)
    t = z.scatter(1, y[:, None], -math.inf).argmax(1)
    for rho in (0.05, 0.3, 1.0):
        lb = crown_lower_bounds(model, x0, y, t, rho)[:, 0]
        found = min_margin_in_ball(model, x0, y, t, torch.full((10,), rho), n_samples=500, pgd_steps=40)
        assert (found >= lb).all(), (found - lb).min()
    # IBP is never tighter where it matters: up to and beyond the certified radius. (Far out, with bounds deep
    # below 0 and saturated sigmoids, IBP's constants can beat the lines: no theorem orders the two there.)
    r = crown_radius(model, x0, y, t).radius
    for rho in (torch.full((10,), 0.05), torch.full((10,), 0.3), r, 1.5 * r):
        lb = crown_lower_bounds(model, x0, y, t, rho)[:, 0]
        ibp = ibp_lower_bounds(model, x0, y, t, rho)[:, 0]
        assert (ibp <= lb).all(), (ibp - lb).max()
    # at ρ = 0 the bound is f(x0) itself, up to the round-off allowance
    f0 = crown_lower_bounds(model, x0, y, t, 0.0)[:, 0]
    exact = z.double().gather(1, y[:, None])[:, 0] - z.double().gather(1, t[:, None])[:, 0]
    assert torch.allclose(f0, exact, rtol=1e-4, atol=1e-4)


def _one_unit(v: float, act: str = "softplus") -> MLP:
    """x in R², one hidden unit z = w·x + b, logits (v·a + 2, 0): margin(y=0, t=1) = v·σ(z) + 2."""
    m = MLP(2, [1], 2, act).double()
    f64 = torch.float64
    with torch.no_grad():
        m.layers[0].weight.copy_(torch.tensor([[3.0, 4.0]], dtype=f64))  # ‖w‖ = 5
        m.layers[0].bias.fill_(0.5)
        m.layers[1].weight.copy_(torch.tensor([[v], [0.0]], dtype=f64))
        m.layers[1].bias.copy_(torch.tensor([2.0, 0.0], dtype=f64))
    return m


def test_one_hidden_unit_by_hand():
    x0 = torch.tensor([[0.1, 0.2]], dtype=torch.float64)
    y, t, rho = torch.tensor([0]), torch.tensor([1]), 0.1
    z0 = 3 * 0.1 + 4 * 0.2 + 0.5  # 1.6
    l, u = z0 - 5 * rho, z0 + 5 * rho  # the exact range of z over the ball: [1.1, 2.1]
    sp = lambda s: math.log1p(math.exp(s))  # noqa: E731
    sig = lambda s: 1 / (1 + math.exp(-s))  # noqa: E731
    # v > 0: the lower line (tangent at the midpoint d = 1.6) at its smallest, z = l
    by_hand = 0.7 * (sp(z0) + sig(z0) * (l - z0)) + 2.0
    got = float(crown_lower_bounds(_one_unit(0.7), x0, y, t, rho)[0, 0])
    assert got == pytest.approx(by_hand, rel=1e-7) and got <= by_hand  # off by the round-off allowance
    # v < 0: the upper line (the chord) at its largest, z = u: exact, since softplus is monotone
    by_hand = -0.7 * sp(u) + 2.0
    got = float(crown_lower_bounds(_one_unit(-0.7), x0, y, t, rho)[0, 0])
    assert got == pytest.approx(by_hand, rel=1e-7) and got <= by_hand  # off by the round-off allowance
    # the radius: -0.7·softplus(z0 + 5ρ) + 2 = 0  <=>  ρ* = (softplus⁻¹(2/0.7) - z0) / 5
    rho_star = (math.log(math.expm1(2 / 0.7)) - z0) / 5
    r = float(crown_radius(_one_unit(-0.7), x0, y, t, bisect_steps=40).radius[0])
    assert r <= rho_star and r == pytest.approx(rho_star, rel=1e-6)


def test_inflated_bound_and_radius_are_caught():
    """The checks above can fail: an inflated bound or radius on the exact one-unit case is detected."""
    model = _one_unit(-0.7)
    x0 = torch.tensor([[0.1, 0.2]], dtype=torch.float64)
    y, t = torch.tensor([0]), torch.tensor([1])
    lb = crown_lower_bounds(model, x0, y, t, 0.1)[:, 0]
    found = min_margin_in_ball(model, x0, y, t, torch.tensor([0.1]), n_samples=200, pgd_steps=50)
    assert (found >= lb).all()
    assert (found < lb + 1e-3).all()  # lb + 1e-3 would be caught
    r = crown_radius(model, x0, y, t).radius
    assert attack_radii(model, x0, y, r).n_violations == 0
    assert attack_radii(model, x0, y, 1.01 * r).n_violations == 1


def test_radius_is_proven_and_batching_changes_nothing():
    model = small_model(3, "tanh", trained=True)
    x, _ = small_data("test", 200)
    x0 = x[:6]
    with torch.no_grad():
        y = model(x0).argmax(1)
    T = torch.stack([(y + k) % 10 for k in range(1, 10)], 1)
    res = crown_radius(model, x0, y, T)
    assert (res.radius > 0).all()
    assert (crown_lower_bounds(model, x0, y, T, res.radius) > 0).all()  # the reported ρ is a proven one
    assert (res.lower > 0).all()
    one = torch.cat([crown_radius(model, x0[i:i + 1], y[i:i + 1], T[i:i + 1]).radius for i in range(6)])
    assert torch.allclose(one, res.radius, rtol=1e-12, atol=0)
    per_t = torch.stack([crown_radius(model, x0, y, T[:, k]).radius for k in range(9)], 1)
    assert torch.allclose(per_t.min(1).values, res.radius, rtol=1e-5)  # all targets = the weakest one


def test_crown_radii_survive_attacks_small_sample():
    x, _ = small_data("test", 200)
    total = 0
    for act in ACTS:
        model = small_model(2, act, trained=True)
        x0 = x[:8]
        with torch.no_grad():
            y = model(x0).argmax(1)
        T = torch.stack([(y + k) % 10 for k in range(1, 10)], 1)
        r = crown_radius(model, x0, y, T).radius
        check = attack_radii(model, x0, y, r)
        assert check.n_violations == 0, (act, check)
        total += check.n_pairs
    assert total >= 24


def test_bad_input():
    model = small_model(2, "softplus", trained=False)
    x = torch.rand(2, 100)
    with pytest.raises(CRCError, match="differ"):
        crown_lower_bounds(model, x, torch.tensor([1, 2]), torch.tensor([1, 3]), 0.1)
    with pytest.raises(CRCError, match="radius"):
        crown_lower_bounds(model, x, torch.tensor([1, 2]), torch.tensor([0, 3]), -1.0)
    with pytest.raises(CRCError):
        crown_radius(model, x, torch.tensor([1, 2]), torch.tensor([0, 3]), rho_start=0)
    with pytest.raises(CRCError, match="gelu"):
        crown_radius(MLP(100, [8], 10, "gelu"), x, torch.tensor([1, 2]), torch.tensor([0, 3]))
