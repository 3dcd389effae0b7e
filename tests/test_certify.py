"""Certificate solver: API, modes, targets, exactness, bad input."""

import dataclasses
import importlib

import pytest
import torch
from helpers import small_data, small_model

from crc_core.certify import TARGET_MODES, certify
from crc_core.dual import dual_lower_bound
from crc_core.errors import CRCError, UnsupportedActivationError
from crc_core.f32_bounds import backward_f32, grad_norm_upper, norm_upper
from crc_core.hessian import MarginOracle, margin_and_grad
from crc_core.models import MLP, as_dtype
from crc_core.tolerances import F64_SUM_RTOL

certify_module = importlib.import_module("crc_core.certify")  # the module (crc_core.certify is the function)


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
    assert c.radius.shape == (B,) and c.radius_by_class.shape == (B, 10)
    assert c.x_boundary.shape == (B, x.shape[1])
    assert c.target_by_row.shape == (B, 9) and c.x_boundary_by_row.shape == (B, 9, x.shape[1])
    # radius = min over targets, 0 and no target for misclassified images
    ok = c.correct
    per_class = torch.nan_to_num(c.radius_by_class[ok], nan=float("inf"))
    torch.testing.assert_close(c.radius[ok], per_class.min(1).values)
    assert (c.radius[~ok] == 0).all() and (c.target[~ok] == -1).all()
    assert torch.isnan(c.radius_by_class[torch.arange(B), c.pred]).all()
    df = c.to_frame()
    assert len(df) == B and {"radius", "exact", "n_grad", "upper", "runner_up_radius"} <= set(df.columns)
    assert (c.upper[ok] >= c.radius[ok] - 1e-9).all()


def test_target_modes(model, data):
    x, lab = data
    full = certify(model, x, lab, targets="all")
    ru = certify(model, x, lab, targets="runner-up")
    # one target vs the min over all (two solves: float32 paths of different batch shapes round differently)
    assert (ru.radius >= full.radius - 1e-6).all()
    torch.testing.assert_close(ru.radius[ru.correct], full.radius_by_class[full.correct].gather(
        1, full.runner_up[full.correct][:, None])[:, 0], atol=2e-4, rtol=0)
    least = certify(model, x, lab, targets="least")
    z = least.logits.clone()
    assert (least.target_by_row[:, 0] == z.argmin(1)).all()
    r1 = certify(model, x, lab, targets="random", seed=3)
    r2 = certify(model, x, lab, targets="random", seed=3)
    assert torch.equal(r1.target_by_row, r2.target_by_row) and (r1.target_by_row[:, 0] != r1.pred).all()
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
    """(B, C) per class vs (B, T) per target row: shapes as documented, one name per field (no aliases)."""
    x, lab = data
    c = certify(model, x[:6], lab[:6], targets="all")
    B, C, T, D = 6, 10, 9, x.shape[1]
    for name in ("radius_by_class", "exact_by_class", "n_grad_by_class", "refined_by_class"):
        assert getattr(c, name).shape == (B, C)
    assert c.target_by_row.shape == (B, T) and c.x_boundary_by_row.shape == (B, T, D)
    for name in ("eta_by_row", "margin_by_row", "upper_by_row"):
        assert getattr(c, name).shape == (B, T)
    assert not any(isinstance(v, property) for v in vars(type(c)).values())
    shape_of = {"_by_class": (B, C), "_by_row": (B, T)}  # the name says the shape; plain names are (B,)
    for f in dataclasses.fields(c):
        v = getattr(c, f.name)
        if isinstance(v, torch.Tensor) and f.name not in ("logits", "x_boundary"):  # (B, C) scores, (B, D) point
            suffix = next((s for s in shape_of if f.name.endswith(s)), None)
            assert (tuple(v.shape[:2]) == shape_of[suffix]) if suffix else (tuple(v.shape) == (B,)), f.name
    rows = torch.arange(B)[:, None].expand(B, T)
    assert not torch.isnan(c.radius_by_class[rows, c.target_by_row]).any()  # each row's class has a radius


def test_float32_backward_bound_holds_where_float32_alone_does_not():
    """The proved bound on ‖∇f‖ from a float32 backward pass holds on every row, including rows near W's left null
    space where the float32 norm alone falls below the exact one (so the error term is needed: dropping it fails)."""
    g = torch.Generator().manual_seed(0)
    K, D, n = 1024, 784, 400
    net = MLP(D, [K], 10, "softplus")
    W = torch.randn(K, D, generator=g)  # float32
    with torch.no_grad():
        net.layers[0].weight.copy_(W)
    Q, _ = torch.linalg.qr(W.double())  # (K, D): u ⟂ range(W) gives u W = 0
    u = torch.randn(n, K, generator=g, dtype=torch.float64)
    u = u - (u @ Q) @ Q.T + 1e-6 * torch.randn(n, K, generator=g, dtype=torch.float64)  # tiny ‖u W‖
    d1 = [torch.ones(1, K, dtype=torch.float64)]
    g32, err = backward_f32(net, d1, u[None])
    exact = (u @ W.double()).norm(dim=1)
    assert (grad_norm_upper(g32, err)[0] >= exact).all()
    assert (g32[0].double().norm(dim=1) < exact).any()  # float32 alone would not be a bound


def test_norm_upper_bounds_float32_rows_whose_squares_round_down():
    """norm_upper and grad_norm_upper hold on float32 rows whose squares all round down by almost a unit roundoff,
    where summing the float32 squares in float64 (widened by F64_SUM_RTOL only) falls below the exact norm."""
    cand = 1 + torch.arange(1, 4096, dtype=torch.float64) * 2.0**-23  # float32 numbers just above 1
    loss = cand * cand - (cand.float() * cand.float()).double()  # what fl32(x²) drops
    a = torch.full((2, 1024), float(cand[loss.argmax()]), dtype=torch.float32)
    a[1] *= 2.0**-70  # squares in float32 underflow (subnormal): the absolute term is needed
    exact = a.double().norm(dim=1)
    naive = (a * a).sum(1, dtype=torch.float64).sqrt() * (1 + F64_SUM_RTOL)
    assert (naive < exact).all()  # the old widening was not enough
    assert (norm_upper(a) >= exact).all()
    assert (grad_norm_upper(a, torch.zeros(2, dtype=torch.float64)) >= exact).all()
    assert norm_upper(a)[0] <= exact[0] * (1 + 1e-4)  # tight away from underflow


@pytest.mark.parametrize("depth, act", [(2, "softplus"), (3, "tanh"), (4, "sigmoid")])
def test_proved_first_step_bounds_the_float64_gradient_tightly(depth, act, data):
    """at_images_proved: f equals the float64 model's, ‖∇f‖ ≤ the bound ≤ ‖∇f‖ (1 + 1e-2) on every (image, target)."""
    x, _ = data
    model = small_model(depth, act, True)
    m64 = as_dtype(model, torch.float64)
    B, C = x.shape[0], model.n_classes
    with torch.no_grad():
        pred = model(x).argmax(1)
    ar = torch.arange(C).expand(B, C)
    T = ar[ar != pred[:, None]].reshape(B, C - 1)
    y_row, t_row = pred.repeat_interleave(C - 1), T.reshape(-1)
    f, g, grad_sq, up = MarginOracle(model, y_row, t_row).at_images_proved(x, m64)
    f64, g64 = margin_and_grad(m64, x.double().repeat_interleave(C - 1, 0), y_row, t_row)
    assert torch.equal(f, f64)
    exact = g64.norm(dim=1)
    assert (up >= exact).all() and (up <= exact * (1 + 1e-2)).all()
    torch.testing.assert_close(g.double(), g64, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_sq, (g.double() ** 2).sum(1), rtol=1e-6, atol=0)  # float32 squares


def test_settled_targets_leave_image_radii_unchanged(model, data, monkeypatch):
    """All classes, refine="minimum": targets settled at x0 take the proved float32-backward bound on ‖∇f(x0)‖
    (per-class radius sound, at most slightly looser); per-image and runner-up radii equal those of the run
    without it (float64 finalisation of every row) to the issue's 1e-6: the solver's first step then takes f(x0)
    from the float32 forward pass, so the float32 trajectories differ in rounding only."""
    x, lab = data
    c = certify(model, x, lab, targets="all", refine="minimum")
    monkeypatch.setattr(certify_module, "f32_matmul_is_ieee", lambda device: False)
    ref = certify(model, x, lab, targets="all", refine="minimum")
    torch.testing.assert_close(c.radius, ref.radius, rtol=0, atol=1e-6)
    torch.testing.assert_close(c.runner_up_radius, ref.runner_up_radius, rtol=0, atol=1e-6, equal_nan=True)
    assert torch.equal(c.target, ref.target)
    assert c.n_grad.sum() < ref.n_grad.sum()  # the cheap path did run: no float64 finalisation of settled rows
    done = ~torch.isnan(ref.radius_by_class)
    assert torch.equal(done, ~torch.isnan(c.radius_by_class))
    loose = done & ~c.refined_by_class
    assert (c.radius_by_class[loose] <= ref.radius_by_class[loose] + 1e-6).all()
    assert (c.radius_by_class[loose] >= ref.radius_by_class[loose] * (1 - 1e-2)).all()
    assert (c.radius_by_class[loose] < ref.radius_by_class[loose] - 1e-9).any()


@pytest.mark.parametrize("depth, act", [(2, "softplus"), (3, "tanh")])
def test_refine_minimum_keeps_image_and_runner_up_radii_and_marks_loose_classes(depth, act, data):
    """refine="minimum" solves fully only what the image's radius needs: per-image and runner-up radii equal the
    every-target solve's; a class marked refined has the same radius; an unrefined class's radius is sound (never
    above the every-target one, which the reference test and the soundness suites hold as a floor)."""
    x, lab = data
    model = small_model(depth, act, True)
    full = certify(model, x, lab, targets="all")
    fast = certify(model, x, lab, targets="all", refine="minimum")
    assert full.refined_by_class[~torch.isnan(full.radius_by_class)].all()
    # the same solves in batches of other shapes: float32 products round differently (the 1e-6 allowance)
    torch.testing.assert_close(fast.radius, full.radius, rtol=0, atol=1e-6)
    torch.testing.assert_close(fast.runner_up_radius, full.runner_up_radius, rtol=0, atol=1e-6, equal_nan=True)
    done = ~torch.isnan(full.radius_by_class)
    assert torch.equal(done, ~torch.isnan(fast.radius_by_class)) and not fast.refined_by_class[~done].any()
    same = fast.refined_by_class & done
    torch.testing.assert_close(fast.radius_by_class[same], full.radius_by_class[same], rtol=0, atol=1e-6)
    loose = ~fast.refined_by_class & done
    assert loose.any() and (fast.radius_by_class[loose] <= full.radius_by_class[loose] + 1e-6).all()
    # the difference is real: the flag means something
    assert (fast.radius_by_class[loose] < full.radius_by_class[loose] - 1e-6).any()
    assert fast.n_grad.sum() < full.n_grad.sum()
    ru = full.runner_up
    assert fast.refined_by_class.gather(1, ru[:, None]).all()  # the runner-up is always solved fully
    with pytest.raises(CRCError, match="refine"):
        certify(model, x[:2], lab[:2], refine="some")
