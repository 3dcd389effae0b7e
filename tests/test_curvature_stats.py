"""crc_core.curvature_stats: K_lb per (prediction, runner-up) pair (paper App. H.1), checked against exact spectra
and against the certified upper bounds."""

from __future__ import annotations

import pytest
import torch
from helpers import small_data, small_model

from crc_core.bounds import curvature_bounds
from crc_core.curvature_stats import max_abs_eigenvalue, measured_curvature
from crc_core.errors import CRCError
from crc_core.hessian import margin_hessian_eigvals


@pytest.mark.parametrize("depth", [2, 3])
def test_power_iteration_matches_exact_max_abs_eigenvalue(depth):
    model = small_model(depth, "softplus", trained=True)
    x, _ = small_data("test", 200)
    x = x[:12]
    y = model(x).argmax(1)
    t = (y + 1) % 10
    exact = margin_hessian_eigvals(model, x, y, t).abs().amax(-1)
    power = max_abs_eigenvalue(model, x, y, t, n_iter=150)
    assert torch.all(power <= exact * (1 + 1e-5) + 1e-9)  # a lower estimate (up to float32 round-off)
    assert torch.allclose(power, exact, rtol=1e-3)
    assert torch.allclose(max_abs_eigenvalue(model, x, y, t, method="exact"), exact)
    with pytest.raises(CRCError, match="Unknown method"):
        max_abs_eigenvalue(model, x, y, t, method="lanczos")


def test_measured_curvature_per_pair_and_below_the_bound():
    model = small_model(2, "sigmoid", trained=True)
    x, _ = small_data("test", 300)
    seen = []
    pc = measured_curvature(model, x, batch_size=128, progress=lambda d, n: seen.append((d, n)))
    assert seen[-1] == (300, 300) and len(seen) == 3
    assert int(pc.count.sum()) == 300 and pc.count.diagonal().sum() == 0
    have = pc.count > 0
    assert torch.isnan(pc.K_lb[~have]).all() and (pc.K_lb[have] > 0).all()
    # the measured curvature never exceeds the certified bound of its pair
    b = curvature_bounds(model)
    K = torch.full((10, 10), float("nan"), dtype=torch.float64)
    K[b.y, b.t] = b.K
    assert torch.all(pc.K_lb[have] <= K[have] * (1 + 1e-5))
    # App. H.1's "pairs with enough images" selection
    assert pc.mask(10).sum() <= pc.mask(1).sum()
    assert pc.mean_K_lb(10**6) != pc.mean_K_lb(10**6)  # no pair: NaN
    # per pair: the max over the pair's images
    logits = model(x)
    yy = logits.argmax(1)
    z = logits.clone()
    z.scatter_(1, yy[:, None], float("-inf"))
    tt = z.argmax(1)
    k = int(torch.nonzero(pc.count == pc.count.max())[0][0] * 10 + torch.nonzero(pc.count == pc.count.max())[0][1])
    sel = (yy * 10 + tt) == k
    lam = max_abs_eigenvalue(model, x[sel], yy[sel], tt[sel])
    assert torch.isclose(pc.K_lb.view(-1)[k], lam.max(), rtol=1e-6)
