"""Soundness of the curvature bounds: exact Hessian eigenvalues never leave [m, M] or [-K, K].

For random and briefly trained models of depth 2, 3, 4 and every activation, at >= 1,000 points per model:
real data points, random points (uniform in [0,1]^D and wide Gaussians), and points found by gradient ascent on
the extreme eigenvalues (every ascent iterate counts). Zero violations allowed. A deliberately under-estimated
bound must be caught by the very same procedure.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import small_data, small_model

from crc_core.bounds import Bounds, curvature_bounds
from crc_core.testing import BoundCheck, check_bounds, curvature_ascent_points

ACTS = ["softplus", "sigmoid", "tanh"]


def probe_points(model, n_data=300, n_uniform=200, n_gauss=200, n_ascent=40, ascent_steps=12, seed=0):
    """Yield (x, y, t) batches: data, random, and curvature-ascent points with y = prediction and t = runner-up
    or a random other class (alternating)."""
    g = torch.Generator().manual_seed(seed)
    x_data, _ = small_data("test", n=max(n_data, n_ascent))
    D = x_data.shape[1]
    batches = [x_data[:n_data], torch.rand(n_uniform, D, generator=g),
               0.5 + 3 * torch.randn(n_gauss, D, generator=g)]

    def pairs(x):
        with torch.no_grad():
            logits = model(x)
        top2 = logits.topk(2, dim=1).indices
        y = top2[:, 0]
        rnd = (y + torch.randint(1, model.n_classes, y.shape, generator=g)) % model.n_classes
        t = torch.where(torch.arange(len(y)) % 2 == 0, top2[:, 1], rnd)
        return y, t

    for x in batches:
        yield (x, *pairs(x))
    # ascent: start from data points, collect every iterate
    x0 = x_data[:n_ascent]
    y, t = pairs(x0)
    for which in ("max", "min"):
        x = x0
        for _ in range(ascent_steps // 3):
            x = curvature_ascent_points(model, x, y, t, steps=3, lr=0.2, which=which)
            yield x, y, t


def run_suite(model, bounds: Bounds, **kw) -> BoundCheck:
    total = BoundCheck(0, 0, 0.0, 0.0, 0.0)
    for x, y, t in probe_points(model, **kw):
        total = total.merge(check_bounds(model, x, y, t, bounds))
    return total


@pytest.mark.parametrize("trained", [False, True], ids=["random", "trained"])
@pytest.mark.parametrize("depth", [2, 3, 4])
@pytest.mark.parametrize("act", ACTS)
def test_no_eigenvalue_escapes_the_bounds(act, depth, trained):
    model = small_model(depth, act, trained)
    methods = ["thm3", "thm4"] if depth == 2 else ["thm4", "refined"]
    for method in methods:
        b = curvature_bounds(model, method=method)
        res = run_suite(model, b)
        assert res.n_checks >= 1000
        assert res.n_violations == 0, (method, res)
        assert res.worst_ratio_K <= 1.0


def test_an_underestimated_bound_is_caught(monkeypatch):
    """Halving σ'' 's upper constant h_U (a plausible slip in App. F) must produce violations."""
    import crc_core.activations as A

    model = small_model(2, "softplus", True)
    sound = curvature_bounds(model)
    half = dataclasses.replace(A.ACTIVATIONS["softplus"], h_U=0.125, h=0.125)
    monkeypatch.setitem(A.ACTIVATIONS, "softplus", half)
    wrong = curvature_bounds(model)
    assert (wrong.M < sound.M).all()
    res = run_suite(model, wrong)
    assert res.n_violations > 0
    assert res.worst_ratio_M > 1.0


def test_a_slightly_shrunk_bound_is_caught():
    """Scaling the sound Theorem 3 bound down by 5% must be detected (Thm 3 is near-tight on 2 layers)."""
    model = small_model(2, "softplus", False)
    b = curvature_bounds(model)
    shrunk = Bounds(b.y, b.t, b.m * 0.95, b.M * 0.95, b.K * 0.95, "shrunk")
    assert run_suite(model, shrunk).n_violations > 0
