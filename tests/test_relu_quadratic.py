"""App. G quadratic certificate for 2-layer ReLU nets: the relaxation, the S-procedure, exact answers, attacks."""

from __future__ import annotations

import pytest
import torch

import crc_core.baselines.relu_quadratic as rq
from crc_core.attack import pgd_attack
from crc_core.errors import CRCError
from crc_core.models import MLP


def relu_net(W1, b1, W2, b2) -> MLP:
    W1 = torch.as_tensor(W1, dtype=torch.float64)
    m = MLP(W1.shape[1], [W1.shape[0]], len(b2), "relu").double()
    with torch.no_grad():
        for layer, (W, b) in zip(m.layers, ((W1, b1), (W2, b2)), strict=True):
            layer.weight.copy_(torch.as_tensor(W, dtype=torch.float64))
            layer.bias.copy_(torch.as_tensor(b, dtype=torch.float64))
    return m


def closest_flip(model: MLP, x0: torch.Tensor, radius: torch.Tensor, *, n_dirs: int = 400, n_samples: int = 4000,
                 seed: int = 0) -> torch.Tensor:
    """Smallest distance (N,) at which dense sampling, ray bisection or strong PGD changed the prediction
    (inf if none). Everything is judged on the model itself (float64 nets here)."""
    g = torch.Generator().manual_seed(seed)
    N, D = x0.shape
    pred = model(x0).argmax(1)
    best = torch.full((N,), float("inf"), dtype=torch.float64)
    with torch.no_grad():
        # rays: bisection to the first flip along random directions, within 3 radii
        U = torch.randn(N, n_dirs, D, generator=g, dtype=torch.float64)
        U = U / U.norm(dim=2, keepdim=True)
        reach = 3 * radius.clamp_min(1e-3)
        for s in torch.linspace(1, 0, 121, dtype=torch.float64)[:-1]:
            pts = x0[:, None] + (s * reach)[:, None, None] * U
            flip = model(pts.reshape(-1, D)).argmax(1).reshape(N, n_dirs) != pred[:, None]
            dist = torch.where(flip, s * reach[:, None], torch.full_like(flip, float("inf"), dtype=torch.float64))
            best = torch.minimum(best, dist.min(1).values)
        # dense uniform samples inside the certified ball
        V = torch.randn(N, n_samples, D, generator=g, dtype=torch.float64)
        r = radius[:, None, None] * torch.rand(N, n_samples, 1, generator=g, dtype=torch.float64) ** (1 / D)
        pts = x0[:, None] + V / V.norm(dim=2, keepdim=True) * r
        flip = model(pts.reshape(-1, D)).argmax(1).reshape(N, n_samples) != pred[:, None]
        d = (pts - x0[:, None]).norm(dim=2)
        best = torch.minimum(best, torch.where(flip, d, torch.full_like(d, float("inf"))).min(1).values)
    # strong PGD at the certified radius (no pixel box: certificates hold in R^D)
    keep = radius > 0
    if keep.any():
        xa, fooled = pgd_attack(model, x0[keep], pred[keep], radius[keep], steps=100, restarts=4, clamp=False)
        d = (xa - x0[keep]).norm(dim=1)
        best[keep] = torch.minimum(best[keep], torch.where(fooled, d, torch.full_like(d, float("inf"))))
    return best


# ------------------------------------------------------------------------------------------ the relaxation
def test_relu_quadratic_bounds_hold_on_the_interval(rng):
    d = torch.randn(400, generator=rng, dtype=torch.float64) * 3
    u = d + torch.rand(400, generator=rng, dtype=torch.float64) * 6
    z = d[:, None] + (u - d)[:, None] * torch.linspace(0, 1, 501, dtype=torch.float64)
    a = z.clamp_min(0)
    for upper in (False, True):
        A, B, C = rq.relu_quadratic_bounds(d, u, torch.full_like(d, upper, dtype=torch.bool))
        q = A[:, None] * z * z + B[:, None] * z + C[:, None]
        gap = (q - a) if upper else (a - q)
        assert gap.min() >= -1e-12
        # App. G's bounds touch relu at the interval's ends (tight where they are used)
        assert torch.allclose(q[:, -1], a[:, -1], atol=1e-9) or not upper


@pytest.mark.parametrize("rho", [0.05, 0.5, 2.0])
def test_the_margin_quadratic_is_below_the_margin_on_the_ball(rho):
    torch.manual_seed(5)
    m = MLP(6, [12], 4, "relu").double()
    W1, b1 = m.layers[0].weight, m.layers[0].bias
    W2, b2 = m.layers[1].weight, m.layers[1].bias
    x0 = torch.rand(1, 6, dtype=torch.float64)
    y, t = m(x0).argmax(1), (m(x0).argmax(1) + 1) % 4
    z0, d, u, z0_err = rq.preactivation_bounds(W1, b1, x0, torch.tensor([rho], dtype=torch.float64))
    q = rq.margin_quadratic(z0, d, u, z0_err, W2[y] - W2[t], b2[y] - b2[t])
    g = torch.Generator().manual_seed(0)
    v = torch.randn(20000, 6, generator=g, dtype=torch.float64)
    r = rho * torch.rand(20000, 1, generator=g, dtype=torch.float64) ** (1 / 6)
    delta = torch.cat([v / v.norm(dim=1, keepdim=True) * r, rho * v / v.norm(dim=1, keepdim=True)])  # inside + sphere
    s = delta @ W1.T
    Q = (q.alpha * s * s).sum(1) + (q.beta * s).sum(1) + q.gamma
    with torch.no_grad():
        z = m(x0 + delta)
    margin = z[:, y[0]] - z[:, t[0]]
    assert (margin + 1e-12 >= Q).all()
    assert (margin - Q).min() < 0.1 * margin.abs().max()  # not vacuous: the bound comes close somewhere


def test_sprocedure_exact_on_a_hyperplane_and_a_sphere():
    W = torch.eye(3, dtype=torch.float64)
    g = torch.tensor([[3.0, 4.0, 0.0]], dtype=torch.float64)
    plane = rq.MarginQuadratic(torch.zeros(1, 3, dtype=torch.float64), g, torch.tensor([10.0], dtype=torch.float64))
    d = rq.quadratic_distance_lower_bound(W, plane)
    assert d.item() <= 2.0 and d.item() == pytest.approx(2.0, rel=1e-6)  # 10 / ‖(3, 4, 0)‖
    sphere = rq.MarginQuadratic(-torch.ones(1, 3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64),
                                torch.tensor([2.25], dtype=torch.float64))
    d = rq.quadratic_distance_lower_bound(W, sphere)  # Q = 2.25 - ‖δ‖²
    assert d.item() <= 1.5 and d.item() == pytest.approx(1.5, rel=1e-6)
    # non-convex with a linear term, in 2-D: exact distance by a dense polar search
    W2 = torch.eye(2, dtype=torch.float64)
    q = rq.MarginQuadratic(torch.tensor([[-1.0, 0.5]], dtype=torch.float64), torch.tensor([[1.0, 0.3]],
                           dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64))
    th = torch.linspace(0, 2 * torch.pi, 4001, dtype=torch.float64)
    r = torch.linspace(0, 3, 1501, dtype=torch.float64)
    X = r[:, None, None] * torch.stack([th.cos(), th.sin()], 1)[None]
    Q = -X[..., 0] ** 2 + 0.5 * X[..., 1] ** 2 + X[..., 0] + 0.3 * X[..., 1] + 1.0
    grid = r[:, None].expand_as(Q)[Q <= 0].min().item()  # ≥ the exact distance, by at most ~3e-3 here
    d = rq.quadratic_distance_lower_bound(W2, q).item()
    assert grid - 5e-3 <= d <= grid  # the S-procedure is exact for one quadratic constraint


def test_an_unbounded_dual_still_proves_the_radius_asked_for():
    W = torch.eye(3, dtype=torch.float64)
    q = rq.MarginQuadratic(torch.ones(1, 3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64),
                           torch.tensor([0.5], dtype=torch.float64))  # Q = 0.5 + ‖δ‖² > 0 everywhere
    for rho in (0.1, 3.0, 4.9):
        d = rq.quadratic_distance_lower_bound(W, q, at_least=torch.tensor([rho], dtype=torch.float64))
        assert d.item() >= rho
    assert rq.quadratic_distance_lower_bound(W, q).item() >= 5.0


def test_a_poor_dual_value_is_still_a_lower_bound(monkeypatch):
    W = torch.eye(2, dtype=torch.float64)
    q = rq.MarginQuadratic(torch.tensor([[-1.0, 0.5]], dtype=torch.float64), torch.tensor([[1.0, 0.3]],
                           dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64))
    good = rq.quadratic_distance_lower_bound(W, q).item()
    for frac in (0.0, 0.3, 0.999999):
        monkeypatch.setattr(rq, "_dual_argmax", lambda e, g2, c, hi, f=frac: hi * f)
        assert 0 <= rq.quadratic_distance_lower_bound(W, q).item() <= good + 1e-12


# ------------------------------------------------------------------------------------------ exact answers
def test_one_unit_stable_case_is_exact():
    # margin = relu(x_1) - 1, x0 = (3, 0.2): the boundary is the hyperplane x_1 = 1 at distance 2
    m = relu_net([[1.0, 0.0]], [0.0], [[0.5], [-0.5]], [-0.5, 0.5])
    res = rq.certify_relu(m, torch.tensor([[3.0, 0.2]], dtype=torch.float64))
    assert res.pred.item() == 0
    assert res.radius.item() <= 2.0 and res.radius.item() >= 2.0 - 2 * rq.RHO_TOL


def test_one_unit_unstable_case_is_tight():
    # margin = 1 - relu(x_1), x0 = (-3, 0): distance 4; App. G's upper bound u (z - d)²/(u - d)² is exact at ρ = 4
    m = relu_net([[1.0, 0.0]], [0.0], [[-0.5], [0.5]], [0.5, -0.5])
    res = rq.certify_relu(m, torch.tensor([[-3.0, 0.0]], dtype=torch.float64))
    assert res.radius.item() <= 4.0 and res.radius.item() >= 4.0 - 2 * rq.RHO_TOL


def test_two_units_radius_below_exact_distance():
    # margin = 1 - relu(x_1) - relu(x_2), x0 = (-1, -1): the closest flip is (1, -1), distance 2
    m = relu_net([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0], [[-0.5, -0.5], [0.5, 0.5]], [0.5, -0.5])
    x0 = torch.tensor([[-1.0, -1.0]], dtype=torch.float64)
    res = rq.certify_relu(m, x0)
    flip = closest_flip(m, x0, res.radius).item()
    assert flip == pytest.approx(2.0, abs=0.05)  # the ray scan resolves 3·radius/120
    assert 0.5 < res.radius.item() <= 2.0


# ------------------------------------------------------------------------------------------ attacks
@pytest.mark.parametrize("dims", [(6, 10, 3), (12, 4, 4)])  # H > D and H < D (the reduced eigenproblem)
def test_attacks_find_no_flip_inside_the_radius(dims):
    D, H, C = dims
    torch.manual_seed(D * 100 + H)
    m = MLP(D, [H], C, "relu").double()
    x0 = torch.rand(6, D, dtype=torch.float64)
    radius = {}
    for targets in ("all", "runner-up"):
        res = rq.certify_relu(m, x0, targets=targets)
        assert (res.radius > 0).sum() >= 4
        assert (res.radius < rq.RHO_HIGH).all()
        flip = closest_flip(m, x0, res.radius)
        assert (flip >= res.radius).all(), (flip, res.radius)
        radius[targets] = res.radius
    assert (radius["all"] <= radius["runner-up"] + 1e-12).all()  # the min over all targets includes the runner-up


def test_attacks_on_a_briefly_trained_net_on_real_images():
    from helpers import small_data, small_model

    m = small_model(2, "relu", True).double()  # 2x[24] relu on 10x10 Fashion-MNIST images
    x, y = small_data("test", 200)
    x0 = x[:8].double()
    res = rq.certify_relu(m, x0, y[:8])
    assert res.correct.sum() >= 5 and (res.radius[res.correct] > 0).all()
    flip = closest_flip(m, x0, res.radius)
    assert (flip >= res.radius).all(), (flip, res.radius)


def test_an_inflated_radius_is_caught():
    m = relu_net([[1.0, 0.0]], [0.0], [[0.5], [-0.5]], [-0.5, 0.5])
    x0 = torch.tensor([[3.0, 0.2]], dtype=torch.float64)
    radius = rq.certify_relu(m, x0).radius
    assert (closest_flip(m, x0, radius) >= radius).all()
    inflated = radius * 1.05
    assert (closest_flip(m, x0, inflated) < inflated).all()


def test_float32_model_and_labels():
    torch.manual_seed(3)
    m = MLP(5, [7], 3, "relu")
    x0 = torch.rand(4, 5)
    res = rq.certify_relu(m, x0)
    wrong = (res.pred + 1) % 3
    res_w = rq.certify_relu(m, x0, labels=wrong)
    assert (res_w.radius == 0).all() and (res_w.target == -1).all() and not res_w.correct.any()
    assert res.radius_by_class.isnan().sum() == 4  # t = y per image
    assert res.certified(0.0).all()


# ------------------------------------------------------------------------------------------ bad input
def test_bad_input_is_refused():
    x = torch.rand(2, 4)
    with pytest.raises(CRCError, match="ReLU"):
        rq.certify_relu(MLP(4, [5], 3, "softplus"), x)
    with pytest.raises(CRCError, match="2-layer"):
        rq.certify_relu(MLP(4, [5, 5], 3, "relu"), x)
    m = MLP(4, [5], 3, "relu")
    with pytest.raises(CRCError, match="target mode"):
        rq.certify_relu(m, x, targets="nearest")
    with pytest.raises(CRCError, match="rho_low"):
        rq.certify_relu(m, x, rho_low=2.0, rho_high=1.0)
    with pytest.raises(CRCError, match="rho_tol"):
        rq.certify_relu(m, x, rho_tol=0.0)
    with pytest.raises(CRCError, match="NaN"):
        rq.certify_relu(m, torch.full((1, 4), float("nan")))
    with pytest.raises(CRCError, match="labels"):
        rq.certify_relu(m, x, labels=torch.tensor([0, 1, 2]))
    with pytest.raises(CRCError, match="features"):
        rq.certify_relu(m, torch.rand(2, 5))
    with pytest.raises(CRCError, match="MLP"):
        rq.certify_relu(torch.nn.Linear(4, 3), x)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ certified_at
def test_certified_at_agrees_with_the_bisection_and_survives_attacks():
    torch.manual_seed(7)
    m = MLP(6, [10], 3, "relu").double()
    x0 = torch.rand(12, 6, dtype=torch.float64)
    res = rq.certify_relu(m, x0, targets="all")
    rho = float(res.radius[res.radius > 0].median())
    ok = rq.certified_at(m, x0, None, rho, targets="all")
    assert (ok >= res.certified(rho)).all() and ok.any() and not ok.all()  # never proves less than the bisection
    flip = closest_flip(m, x0[ok], torch.full((int(ok.sum()),), rho, dtype=torch.float64))
    assert (flip >= rho).all(), flip
    ru = rq.certified_at(m, x0, None, rho, targets="runner-up")
    assert (ru >= ok).all()  # one target is easier than all of them
    wrong = (res.pred + 1) % 3
    assert not rq.certified_at(m, x0, wrong, rho).any()  # misclassified: never certified
    with pytest.raises(CRCError, match="radius ρ"):
        rq.certified_at(m, x0, None, 0.0)
    with pytest.raises(CRCError, match="2-layer"):
        rq.certified_at(MLP(6, [4, 4], 3, "relu"), x0, None, 0.1)
