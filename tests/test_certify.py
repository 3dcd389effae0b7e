"""Certificate solver: API, modes, targets, exactness, bad input."""

import pytest
import torch
from helpers import small_data, small_model

import crc_core.certify as certify_module
from crc_core.certify import TARGET_MODES, certify
from crc_core.dual import dual_lower_bound
from crc_core.errors import CRCError, UnsupportedActivationError
from crc_core.hessian import as_dtype, f32_product_norm_upper, margin_and_grad
from crc_core.models import MLP


@pytest.fixture(scope="module")
def model():
    return small_model(2, "softplus", True)


@pytest.fixture(scope="module")
def data():
    return small_data("test", 60)


def test_shapes_and_frame(model, data):
    x, lab = data
    c = certify(model, x, lab)
    B = x.shape[0]
    assert c.radius.shape == (B,) and c.radii.shape == (B, 10) and c.x_boundary.shape == (B, x.shape[1])
    assert c.targets_t.shape == (B, 9) and c.x_boundary_t.shape == (B, 9, x.shape[1])
    # radius = min over targets, 0 and no target for misclassified images
    ok = c.correct
    torch.testing.assert_close(c.radius[ok], torch.nan_to_num(c.radii[ok], nan=float("inf")).min(1).values)
    assert (c.radius[~ok] == 0).all() and (c.target[~ok] == -1).all()
    assert torch.isnan(c.radii[torch.arange(B), c.pred]).all()
    df = c.to_frame()
    assert len(df) == B and {"radius", "exact", "n_grad", "upper", "runner_up_radius"} <= set(df.columns)
    assert len(c.to_frame_per_target()) == B * 9
    assert (c.upper[ok] >= c.radius[ok] - 1e-9).all()


def test_target_modes(model, data):
    x, lab = data
    full = certify(model, x, lab, targets="all")
    ru = certify(model, x, lab, targets="runner-up")
    assert (ru.radius >= full.radius - 1e-9).all()  # one target vs the min over all
    torch.testing.assert_close(ru.radius[ru.correct], full.radii[full.correct].gather(
        1, full.runner_up[full.correct][:, None])[:, 0], atol=2e-4, rtol=0)
    least = certify(model, x, lab, targets="least")
    z = least.logits.clone()
    assert (least.targets_t[:, 0] == z.argmin(1)).all()
    r1 = certify(model, x, lab, targets="random", seed=3)
    r2 = certify(model, x, lab, targets="random", seed=3)
    assert torch.equal(r1.targets_t, r2.targets_t) and (r1.targets_t[:, 0] != r1.pred).all()
    assert set(TARGET_MODES) == {"all", "runner-up", "random", "least"}


def test_fast_mode_matches_paper_mode_with_fewer_gradients(model, data):
    x, lab = data
    fast = certify(model, x, lab, targets="runner-up")
    paper = certify(model, x, lab, targets="runner-up", mode="paper")
    ok = fast.correct
    assert (fast.radius[ok] >= paper.radius[ok] - 1e-4).all()
    assert fast.n_grad[ok].median() * 10 <= paper.n_grad[ok].median()


@pytest.mark.parametrize("depth,act", [(2, "sigmoid"), (3, "softplus")])
def test_fast_mode_on_rows_that_cannot_be_exact(depth, act, data):
    """Rows whose dual gap stays open (the boundary lies beyond the curvature's reach: most rows of these models)
    cost the fast solver a few dozen gradients, not hundreds, and still match Algorithm 1's radius."""
    m = small_model(depth, act, True)
    x, lab = data
    fast = certify(m, x, lab, targets="runner-up")
    paper = certify(m, x, lab, targets="runner-up", mode="paper")
    rows = fast.correct & ~paper.exact
    assert rows.sum() >= 10
    assert (fast.radius[rows] >= paper.radius[rows] - 2e-5).all()
    assert fast.n_grad[rows].median() * 5 <= paper.n_grad[rows].median()
    assert (fast.exact == paper.exact)[fast.correct].float().mean() >= 0.95


def test_exact_boundary_points_lie_on_the_boundary_and_flip_just_beyond(model, data):
    x, lab = data
    c = certify(model, x, lab, targets="all")
    rows = (c.exact & c.correct).nonzero()[:, 0]
    assert rows.numel() > 0.5 * c.correct.sum()
    m64 = as_dtype(model, torch.float64)
    for i in rows.tolist():
        xb, x0 = c.x_boundary[i].double(), x[i].double()
        f, _ = margin_and_grad(m64, xb[None], c.pred[i:i + 1], c.target[i:i + 1])
        assert abs(float(f.detach())) < 1e-3
        assert abs(float((xb - x0).norm()) - float(c.radius[i])) < 1e-3 * (1 + float(c.radius[i]))
        u = (xb - x0) / (xb - x0).norm()
        with torch.no_grad():
            beyond = m64((xb + 1e-2 * u)[None])[0]
            before = m64((x0 + 0.98 * (xb - x0))[None])[0]
        assert beyond[c.target[i]] > beyond[c.pred[i]]
        assert before.argmax() == c.pred[i]


def test_dual_lower_bound_is_a_lower_bound_of_half_distance_squared():
    """On f(x) = a·x + b (zero curvature, m = 0) the bound is exact: ½ dist² = f(x0)² / (2‖a‖²)."""
    a = torch.tensor([3.0, 4.0], dtype=torch.float64)
    x0 = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    f0 = (x0 @ a) - 2.0  # 5
    zero = torch.zeros(1, dtype=torch.float64)
    # at x = x0: R = 0, v = η_c ∇f with η_c = 0
    lb, eta = dual_lower_bound(zero, f0, zero, zero, (a @ a)[None], zero, zero)
    assert 25 / 50 - 1e-6 < float(lb) <= 25 / 50 + 1e-12
    assert abs(float(eta) - 0.2) < 1e-3
    # with negative curvature allowed (m < 0) the bound can only get smaller, never larger
    lb_m, _ = dual_lower_bound(zero, f0, zero, zero, (a @ a)[None], zero, -torch.ones(1, dtype=torch.float64))
    assert float(lb_m) <= float(lb)


def test_bad_input(model, data):
    x, lab = data
    with pytest.raises(CRCError, match="features"):
        certify(model, torch.rand(2, 7))
    with pytest.raises(CRCError, match="floating"):
        certify(model, torch.ones(2, 100, dtype=torch.long))
    with pytest.raises(CRCError, match="NaN"):
        certify(model, torch.full((2, 100), float("nan")))
    with pytest.raises(CRCError, match="target mode"):
        certify(model, x[:2], targets="second")
    with pytest.raises(CRCError, match="solver mode"):
        certify(model, x[:2], mode="slow")
    with pytest.raises(CRCError, match="labels"):
        certify(model, x[:2], lab[:3])
    with pytest.raises(UnsupportedActivationError):
        certify(MLP(100, [8], 10, "relu"), x[:2])
    bad = MLP(100, [8], 10, "tanh")
    bad.layers[0].bias.data[0] = float("nan")
    with pytest.raises(CRCError, match="NaN"):
        certify(bad, x[:2])


def test_dual_lower_bound_maximises_over_eta_like_a_dense_grid():
    """The closed-form maximiser of the concave (*) in η matches a dense grid (and is never beaten by it)."""
    g = torch.Generator().manual_seed(0)
    n = 400
    R = torch.rand(n, generator=g, dtype=torch.float64)
    f = torch.randn(n, generator=g, dtype=torch.float64)
    G = torch.rand(n, generator=g, dtype=torch.float64) * 3 + 1e-3
    r_g = (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1) * (R * G).sqrt()  # |(x - x0)·∇f| ≤ √(R G)
    m = -torch.rand(n, generator=g, dtype=torch.float64) * 2
    m[:50] = 0.0
    eta_c = torch.rand(n, generator=g, dtype=torch.float64) * torch.where(m < 0, -1 / m, torch.ones_like(m)) * 0.9
    v2 = R + 2 * eta_c * r_g + eta_c ** 2 * G
    vg = r_g + eta_c * G
    lb, eta = dual_lower_bound(R, f, v2, vg, G, eta_c, m)
    top = torch.where(m < 0, -1 / m, torch.full_like(m, 50.0)) * (1 - 1e-9)
    grid = top[:, None] * torch.linspace(0, 1, 20001, dtype=torch.float64)[None, :]
    mu = 1 + grid * m[:, None]
    q = R[:, None] + 2 * grid * r_g[:, None] + grid ** 2 * G[:, None]
    val = 0.5 * R[:, None] + grid * f[:, None] - q / (2 * mu)
    best = val.max(1).values
    bad = lb < best - 1e-9 * (1 + best.abs())
    assert not bad.any(), (lb[bad], best[bad], m[bad], f[bad], eta[bad])
    mu_e = 1 + eta * m
    again = 0.5 * R + eta * f - (R + 2 * eta * r_g + eta ** 2 * G) / (2 * mu_e)
    torch.testing.assert_close(lb, again, rtol=1e-6, atol=1e-9)  # the same value, uncentred (rounding near μ → 0)


def test_per_class_and_per_row_names_are_the_stored_fields(model, data):
    """(B, C) per class vs (B, T) per target row: the explicit names are the public fields, shapes as documented."""
    x, lab = data
    c = certify(model, x[:6], lab[:6], targets="all")
    B, C, T, D = 6, 10, 9, x.shape[1]
    assert c.radius_by_class is c.radii and c.radii.shape == (B, C)
    assert c.exact_by_class is c.exact_t and c.n_grad_by_class is c.n_grad_t and c.exact_t.shape == (B, C)
    assert c.target_by_row is c.targets_t and c.targets_t.shape == (B, T)
    assert c.x_boundary_by_row is c.x_boundary_t and c.x_boundary_t.shape == (B, T, D)
    for name in ("eta_by_row", "margin_by_row", "upper_by_row"):
        assert getattr(c, name).shape == (B, T)
    rows = torch.arange(B)[:, None].expand(B, T)
    assert not torch.isnan(c.radius_by_class[rows, c.target_by_row]).any()  # each row's class has a radius


def test_f32_product_norm_upper_bounds_the_exact_norm_where_float32_alone_does_not():
    """The proved bound on ‖u W‖ from a float32 product holds on every row, including rows near W's left null
    space where the float32 norm alone falls below the exact one (so the error term is needed: dropping it fails)."""
    g = torch.Generator().manual_seed(0)
    K, D, n = 1024, 784, 400
    W = torch.randn(K, D, generator=g).float().double()  # exactly representable in float32
    Q, _ = torch.linalg.qr(W)  # (K, D): u ⟂ range(W) gives u W = 0
    u = torch.randn(n, K, generator=g, dtype=torch.float64)
    u = u - (u @ Q) @ Q.T + 1e-6 * torch.randn(n, K, generator=g, dtype=torch.float64)  # tiny ‖u W‖
    exact = (u @ W).norm(dim=1)
    prod32 = u.float() @ W.float()
    up = f32_product_norm_upper(prod32, u, W)
    assert (up >= exact).all()
    assert (prod32.double().norm(dim=1) < exact).any()  # float32 alone would not be a bound
    # and on well-conditioned rows the bound is tight (relative excess ≪ 1)
    v = torch.randn(n, K, generator=g, dtype=torch.float64)
    ev = (v @ W).norm(dim=1)
    assert ((f32_product_norm_upper(v.float() @ W.float(), v, W) - ev) / ev).max() < 1e-2


def test_settled_targets_leave_image_radii_unchanged(model, data, monkeypatch):
    """All classes: targets settled at x0 take a float32-product bound on ‖∇f(x0)‖ (per-class radius sound, at
    most slightly looser); per-image and runner-up radii equal the float64 finalisation's."""
    x, lab = data
    c = certify(model, x, lab, targets="all")
    monkeypatch.setattr(certify_module, "f32_matmul_is_ieee", lambda device: False)
    ref = certify(model, x, lab, targets="all")
    # equal up to float64 rounding (batched products of other sizes round differently in the last bits)
    torch.testing.assert_close(c.radius, ref.radius, rtol=0, atol=1e-12)
    torch.testing.assert_close(c.runner_up_radius, ref.runner_up_radius, rtol=0, atol=1e-12, equal_nan=True)
    assert torch.equal(c.target, ref.target)
    done = ~torch.isnan(ref.radii)
    assert torch.equal(done, ~torch.isnan(c.radii))
    assert (c.radii[done] <= ref.radii[done] + 1e-12).all()
    assert (c.radii[done] >= ref.radii[done] * (1 - 1e-3)).all()
    assert (c.radii[done] < ref.radii[done]).any()  # the cheap path did run
