"""First-order certificate: the Lipschitz bound against gradient norms, a case where it is exact, attacks."""

from __future__ import annotations

import pytest
import torch
from baseline_helpers import attack_radii, to_float64
from helpers import small_data, small_model

from crc_core.baselines.lipschitz import LIPSCHITZ_G, hidden_lipschitz, lipschitz_constant, lipschitz_radius
from crc_core.errors import CRCError
from crc_core.models import MLP

ACTS = ("softplus", "sigmoid", "tanh", "relu")


def _grad_norms(model: MLP, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    m64 = to_float64(model)
    x = x.double().clone().requires_grad_(True)
    z = m64(x)
    f = z.gather(1, y[:, None])[:, 0] - z.gather(1, t[:, None])[:, 0]
    (g,) = torch.autograd.grad(f.sum(), x)
    return g.norm(dim=1)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("depth", [2, 3, 4])
def test_constant_bounds_gradient_norm_at_data_random_and_ascent_points(act, depth, rng):
    model = small_model(depth, act, trained=depth < 4)
    x, _ = small_data("test", 200)
    x = torch.cat([x[:20], torch.randn(20, 100, generator=rng) * 3])
    y = torch.randint(0, 10, (40,), generator=rng)
    t = (y + torch.randint(1, 10, (40,), generator=rng)) % 10
    L = lipschitz_constant(model, y, t)
    assert (_grad_norms(model, x, y, t) <= L).all()
    # gradient ascent on ‖∇f‖ (the points where the bound is most at risk)
    xa = x.double().clone().requires_grad_(True)
    opt = torch.optim.Adam([xa], lr=0.05)
    m64 = to_float64(model)
    for _ in range(30):
        z = m64(xa)
        f = z.gather(1, y[:, None])[:, 0] - z.gather(1, t[:, None])[:, 0]
        (g,) = torch.autograd.grad(f.sum(), xa, create_graph=act != "relu")
        if act == "relu":
            break
        opt.zero_grad()
        (-g.norm(dim=1).sum()).backward()
        opt.step()
    assert (_grad_norms(model, xa.detach(), y, t) <= L).all()


def test_constant_by_hand():
    """L = ‖W2[y] - W2[t]‖ · g · ‖W1‖ with ‖W1‖ = 3 (diagonal), sigmoid g = 1/4."""
    m = MLP(3, [3], 2, "sigmoid").double()
    with torch.no_grad():
        m.layers[0].weight.copy_(torch.diag(torch.tensor([3.0, -2.0, 1.0], dtype=torch.float64)))
        m.layers[1].weight.copy_(torch.tensor([[1.0, 2.0, 0.0], [1.0, 0.0, 2.0]], dtype=torch.float64))
    lip = float(lipschitz_constant(m, torch.tensor([0]), torch.tensor([1]))[0])
    by_hand = 8**0.5 * 0.25 * 3
    assert lip >= by_hand
    assert lip == pytest.approx(by_hand, rel=1e-8)
    assert LIPSCHITZ_G["relu"] == 1.0 and LIPSCHITZ_G["sigmoid"] == 0.25


def _linear_relu() -> MLP:
    """Where the first-order radius is exact: relu units that stay active, so the margin is linear."""
    m = MLP(2, [2], 2, "relu").double()
    with torch.no_grad():
        m.layers[0].weight.copy_(torch.eye(2, dtype=torch.float64))
        m.layers[0].bias.fill_(10.0)
        m.layers[1].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64))
        m.layers[1].bias.zero_()
    return m


def test_exact_case_and_inflated_radius_is_caught():
    m = _linear_relu()
    x0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    y, t = torch.tensor([0]), torch.tensor([1])
    r = lipschitz_radius(m, x0, y, t)
    assert float(r[0]) == pytest.approx(1 / 2**0.5, rel=1e-7) and float(r[0]) <= 1 / 2**0.5  # less the allowance
    assert attack_radii(m, x0, y, r).n_violations == 0
    assert attack_radii(m, x0, y, 1.01 * r).n_violations == 1


@pytest.mark.parametrize("act", ACTS)
def test_radii_survive_attacks_small_sample(act):
    model = small_model(3, act, trained=True)
    x, _ = small_data("test", 200)
    x0 = x[:10]
    with torch.no_grad():
        y = model(x0).argmax(1)
    rows = torch.arange(10).repeat_interleave(9)
    t = torch.stack([(y + k) % 10 for k in range(1, 10)], 1).reshape(-1)
    r = lipschitz_radius(model, x0[rows], y[rows], t, hidden=hidden_lipschitz(model)).reshape(10, 9).min(1).values
    assert (r > 0).all()
    assert attack_radii(model, x0, y, r).n_violations == 0


def test_misclassified_rows_get_zero_and_bad_input():
    model = small_model(2, "tanh", trained=True)
    x, _ = small_data("test", 200)
    with torch.no_grad():
        z = model(x[:5])
    y, t = z.argmax(1), z.argmin(1)
    assert (lipschitz_radius(model, x[:5], t, y) == 0).all()  # f(x0) < 0: nothing to certify
    with pytest.raises(CRCError, match="differ"):
        lipschitz_radius(model, x[:5], y, y)
    with pytest.raises(CRCError, match="gelu"):
        lipschitz_radius(MLP(100, [4], 10, "gelu"), x[:5], y, t)
    with pytest.raises(CRCError, match="features"):
        lipschitz_radius(model, torch.rand(5, 7), y, t)
