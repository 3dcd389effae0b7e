"""Algorithm 2 (curvature attack) and PGD against answers known in closed form.

- ``linear_net``: two softplus units with softplus(z) - softplus(-z) = z, so the margin is exactly linear:
  the worst point in the ball is x0 - ρ ∇f/‖∇f‖ and the closest boundary point x0 - f ∇f/‖∇f‖².
- ``one_unit_net``: f(x) = a·softplus(wᵀx + b) + c depends on wᵀx only and is monotone in it: the worst point in
  the ball and the closest boundary point both lie on the line x0 - s·w/‖w‖, in closed form.
Algorithm 2's ``success`` claims its point is the worst case in the ball: checked against the closed form, dense
sampling of the ball and PGD. Below a certified radius every attack must fail; just above the true distance
they must succeed (so the checks can fail).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import small_data, small_model

from crc_core.attack import curvature_attack, pgd_attack
from crc_core.certify import certify
from crc_core.models import MLP

D = 5
X0 = torch.tensor([[0.3, -0.2, 0.5, 0.1, 0.0]], dtype=torch.float64)
W = torch.tensor([1.0, 2.0, -1.0, 0.5, 1.5], dtype=torch.float64)


def linear_net(a: float = 1.0, c: float = 1.0) -> MLP:
    """Margin f = z_0 - z_1 = a wᵀx + c exactly (two units whose curvatures cancel)."""
    m = MLP(D, [2], 2, "softplus").double()
    with torch.no_grad():
        m.layers[0].weight.copy_(torch.stack([W, -W]))
        m.layers[0].bias.zero_()
        m.layers[1].weight.copy_(torch.tensor([[a, -a], [0.0, 0.0]]))
        m.layers[1].bias.copy_(torch.tensor([c, 0.0]))
    return m.eval()


def one_unit_net(a: float = 2.0, b: float = 0.3, c: float = -1.0) -> MLP:
    """Margin f = a·softplus(wᵀx + b) + c (convex in x for a > 0)."""
    m = MLP(D, [1], 2, "softplus").double()
    with torch.no_grad():
        m.layers[0].weight.copy_(W[None])
        m.layers[0].bias.fill_(b)
        m.layers[1].weight.copy_(torch.tensor([[a], [0.0]]))
        m.layers[1].bias.copy_(torch.tensor([c, 0.0]))
    return m.eval()


@torch.no_grad()
def margin(model: MLP, x: torch.Tensor) -> torch.Tensor:
    z = model(x)
    return z[:, 0] - z[:, 1]


def one_unit_answers(rho: float, a: float = 2.0, b: float = 0.3, c: float = -1.0) -> tuple[float, float]:
    """(min of f over the ρ-ball, distance from X0 to the boundary) for ``one_unit_net``."""
    s0, nw = float(X0[0] @ W) + b, float(W.norm())
    worst = a * float(F.softplus(torch.tensor(s0 - rho * nw, dtype=torch.float64))) + c
    s_star = math.log(math.expm1(-c / a))  # softplus(s*) = -c/a
    return worst, (s0 - s_star) / nw


def ball_samples(x0: torch.Tensor, rho: float, n: int = 20000, seed: int = 0) -> torch.Tensor:
    """n points in the closed ρ-ball around x0 (1, D): half on the sphere, half inside."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, D, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=1, keepdim=True)
    r = torch.ones(n, 1, dtype=torch.float64)
    r[n // 2:] = torch.rand(n - n // 2, 1, generator=g, dtype=torch.float64) ** (1 / D)
    return x0 + rho * r * u


@pytest.mark.parametrize("rho", [0.05, 0.1, 0.2])
def test_linear_model_worst_case_is_found_and_proved(rho):
    model = linear_net()
    f0 = float(margin(model, X0))
    res = curvature_attack(model, X0, torch.tensor([0]), torch.tensor([1]), rho)
    exact_min = f0 - rho * float(W.norm())
    assert bool(res.success[0])
    assert abs(float(res.margin[0]) - exact_min) <= 1e-4 * (1 + abs(exact_min))
    x_star = X0 - rho * W / W.norm()
    assert float((res.x - x_star).norm()) <= 1e-3 * rho
    assert float(margin(model, ball_samples(X0, rho)).min()) >= float(res.margin[0]) - 1e-6


# Algorithm 2 searches η ≤ 20 (1 - m): here ‖∇f‖ ≈ 3.4 and η = ‖∇f‖/ρ at the solution, so ρ ≥ 0.2
@pytest.mark.parametrize("rho", [0.2, 0.3, 0.5])
def test_one_unit_net_success_means_nothing_in_the_ball_is_lower(rho):
    model = one_unit_net()
    res = curvature_attack(model, X0, torch.tensor([0]), torch.tensor([1]), rho)
    worst, _ = one_unit_answers(rho)
    assert bool(res.success[0])
    assert abs(float(res.margin[0]) - worst) <= 1e-4 * (1 + abs(worst))
    tol = 1e-6 * (1 + abs(worst))
    assert float(margin(model, ball_samples(X0, rho)).min()) >= float(res.margin[0]) - tol
    x_pgd, _ = pgd_attack(model, X0, torch.tensor([0]), rho, steps=200, restarts=3, clamp=False)
    assert float(margin(model, x_pgd)[0]) >= float(res.margin[0]) - tol
    assert float((x_pgd - X0).norm()) <= rho * (1 + 1e-9)


def test_a_wrong_success_claim_would_be_caught():
    """The dense-sampling check is not vacuous: a point short of the worst case is beaten by samples."""
    model = one_unit_net()
    rho = 0.3
    res = curvature_attack(model, X0, torch.tensor([0]), torch.tensor([1]), rho)
    halfway = X0 + 0.5 * (res.x - X0)  # a feasible point that is not the worst case
    assert float(margin(model, ball_samples(X0, rho)).min()) < float(margin(model, halfway)[0]) - 1e-3


def test_pgd_reaches_the_known_closest_boundary_point():
    model = one_unit_net()
    _, dist = one_unit_answers(0.1)
    x_star = X0 - dist * W / W.norm()
    assert abs(float(margin(model, x_star)[0])) < 1e-9
    x_in, fooled_in = pgd_attack(model, X0, torch.tensor([0]), 0.99 * dist, steps=200, clamp=False)
    assert not bool(fooled_in[0])  # impossible inside the true distance
    x_out, fooled_out = pgd_attack(model, X0, torch.tensor([0]), 1.01 * dist, steps=200, clamp=False)
    assert bool(fooled_out[0])
    assert float((x_out - x_star).norm()) <= 0.02 * dist  # it went to the closest point, not elsewhere
    assert float((x_in - x_star).norm()) <= 0.02 * dist


def test_closest_point_of_the_linear_model_matches_the_certificate():
    model = linear_net()
    f0, nw = float(margin(model, X0)), float(W.norm())
    c = certify(model, X0, targets="runner-up")
    assert bool(c.exact[0])
    assert abs(float(c.radius[0]) - f0 / nw) <= 1e-6 * (1 + f0 / nw)
    torch.testing.assert_close(c.x_boundary.double(), X0 - f0 / nw ** 2 * W[None], atol=1e-6, rtol=0)


def test_attacks_fail_below_and_succeed_above_the_radius():
    model = small_model(2, "softplus", True)
    x, lab = small_data("test", 24)
    c = certify(model, x, lab, targets="all")
    ok = (c.correct & c.exact).nonzero()[:, 0]
    assert ok.numel() >= 5
    xs, ys, r = x[ok], c.pred[ok], c.radius[ok]
    C = c.logits.shape[1]
    for t in range(C):
        rows = ys != t
        res = curvature_attack(model, xs[rows], ys[rows], torch.full_like(ys[rows], t), 0.99 * r[rows])
        assert not res.fooled.any()
    _, fooled = pgd_attack(model, xs, ys, 0.99 * r, steps=100, restarts=3, clamp=False)
    assert not fooled.any()
    # exact certificates are tight: just above the radius the attacks do succeed (the checks above can fail)
    above = curvature_attack(model, xs, ys, c.target[ok], 1.02 * r)
    assert above.fooled.float().mean() >= 0.8
    _, fooled_above = pgd_attack(model, xs, ys, 1.05 * r, steps=100, restarts=3, clamp=False)
    assert fooled_above.float().mean() >= 0.5
