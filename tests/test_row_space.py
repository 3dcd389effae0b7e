"""The fast solver's coordinates in the first layer's row space (crc_core.row_space): the same margins, gradients,
distances and certificates as in the full space."""

from __future__ import annotations

import importlib

import pytest
import torch
from helpers import small_data, small_model

from crc_core.certify import certify
from crc_core.hessian import margin_and_grad
from crc_core.models import MLP, as_dtype
from crc_core.row_space import RowSpace

certify_module = importlib.import_module("crc_core.certify")  # the module (crc_core.certify is the function)


def test_the_basis_is_orthonormal_and_spans_the_first_layer():
    model = small_model(3, "softplus", False)  # 24 units on 100 inputs
    space = RowSpace.of(model)
    assert space is not None
    Q, W1 = space.basis, model.layers[0].weight.double()
    assert Q.shape == (100, 24) and Q.dtype == torch.float64
    assert torch.allclose(Q.T @ Q, torch.eye(24, dtype=torch.float64), atol=1e-13)
    assert torch.allclose(W1 @ Q @ Q.T, W1, atol=1e-12)  # every row of W1 lies in span(Q)
    assert torch.allclose(space.first, W1 @ Q, atol=1e-12)


def test_a_wide_first_layer_keeps_the_full_space():
    assert RowSpace.of(MLP(20, [16], 3)) is None  # 16 ≥ 0.75 · 20: nothing to save
    assert RowSpace.of(MLP(20, [14], 3)) is not None


@pytest.mark.parametrize("act,depth", [("softplus", 2), ("tanh", 3), ("sigmoid", 4)])
def test_the_model_on_row_coordinates_has_the_same_margins_and_gradients(act, depth):
    model = as_dtype(small_model(depth, act, False), torch.float64)
    space = RowSpace.of(model)
    g = torch.Generator().manual_seed(depth)
    x0 = torch.rand(6, 100, generator=g, dtype=torch.float64)
    origin = x0.mean(0)
    x = x0 + torch.randn(6, 24, generator=g, dtype=torch.float64) @ space.basis.T  # points in x0 + span(Q)
    y, t = torch.zeros(6, dtype=torch.long), torch.arange(1, 7)
    f, grad = margin_and_grad(model, x, y, t)
    f_s, grad_s = margin_and_grad(space.model_on(model, origin), space.coords(x, origin), y, t)
    assert torch.allclose(f_s, f, rtol=0, atol=1e-12)
    assert torch.allclose(space.basis @ grad_s.T, grad.T, rtol=0, atol=1e-12)  # ∇f = Q g_s
    s, s0 = space.coords(x, origin), space.coords(x0, origin)
    assert torch.allclose((s - s0).norm(dim=1), (x - x0).norm(dim=1), rtol=1e-13)
    assert torch.allclose(space.points(x0, s, s0), x, atol=1e-13)


def test_points_that_did_not_move_are_the_starting_points_exactly():
    model = small_model(2, "softplus", False)
    space = RowSpace.of(model)
    x0 = torch.rand(4, 100)
    s0 = space.coords(x0, x0.double().mean(0))
    s = s0.clone()
    s[1] += 0.5
    x = space.points(x0, s, s0)
    assert torch.equal(x[[0, 2, 3]], x0[[0, 2, 3]]) and not torch.equal(x[1], x0[1])


def test_cached_per_model_until_the_first_layer_changes():
    model = small_model(2, "softplus", False)
    space = RowSpace.of(model)
    assert RowSpace.of(model) is space
    with torch.no_grad():
        model.layers[0].weight[0].mul_(-2.0)
    fresh = RowSpace.of(model)
    assert fresh is not space
    W1 = model.layers[0].weight.double()
    assert torch.allclose(fresh.first, W1 @ fresh.basis, atol=1e-12)


@pytest.mark.parametrize("targets,refine", [("runner-up", "every-target"), ("all", "minimum"), ("all", "every-target")])
def test_certificates_match_the_full_space_solve(monkeypatch, targets, refine):
    """Both are sound lower bounds from the same algorithm: radii agree to the float32 path's precision; the
    points reported for exact rows are the same boundary points, on the boundary of the full model."""
    model = small_model(3, "softplus", True)
    x, lab = small_data("test", 40)
    c = certify(model, x, lab, targets=targets, refine=refine)
    monkeypatch.setattr(certify_module.RowSpace, "of", classmethod(lambda cls, m: None))
    full = certify(model, x, lab, targets=targets, refine=refine)
    assert c.correct.sum() >= 20
    assert torch.allclose(c.radius, full.radius, rtol=0, atol=2e-6)
    assert torch.allclose(c.runner_up_radius.nan_to_num(-1), full.runner_up_radius.nan_to_num(-1), rtol=0, atol=2e-6)
    both = c.refined_by_class & full.refined_by_class
    assert torch.allclose(c.radius_by_class[both], full.radius_by_class[both], rtol=0, atol=2e-6)
    ex = c.exact & full.exact
    assert ex.sum() >= 5
    assert torch.allclose(c.x_boundary[ex], full.x_boundary[ex], atol=1e-4)
    f_b, _ = margin_and_grad(as_dtype(model, torch.float64), c.x_boundary[ex].double(), c.pred[ex], c.target[ex])
    assert f_b.abs().max() < 1e-4
    d_b = (c.x_boundary[ex] - x[ex]).norm(dim=1)
    assert torch.allclose(d_b, c.upper[ex].float(), atol=1e-5)
