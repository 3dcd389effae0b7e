"""Randomized smoothing: Clopper–Pearson, radii against a linear classifier's exact answer, determinism, errors."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import binom, norm

from crc_core.baselines.smoothing import SMOOTHING_GUARANTEE, Smooth, clopper_pearson_lower
from crc_core.errors import CRCError
from crc_core.models import MLP


def test_clopper_pearson_lower_is_the_exact_binomial_quantile():
    n, alpha = 1000, 0.001
    k = torch.tensor([0, 1, 500, 900, 999, 1000])
    lo = clopper_pearson_lower(k, n, alpha)
    assert lo[0] == 0
    for ki, p in zip(k.tolist()[1:], lo.tolist()[1:]):
        assert binom.sf(ki - 1, n, p) == pytest.approx(alpha, rel=1e-6)  # P(X ≥ k | p = lower bound) = α
    assert lo[-1] == pytest.approx(alpha ** (1 / n), rel=1e-12)


def _linear(w: list[float], b: float) -> MLP:
    """Two classes, logits (w·x + b, 0) up to a hidden relu layer that stays the identity near the data:
    class 0 iff w·x + b > 0, so the smoothed classifier is the same half-space and p_A = Φ(|w·x + b| / (σ‖w‖))."""
    D = len(w)
    m = MLP(D, [D], 2, "relu")
    with torch.no_grad():
        m.layers[0].weight.copy_(torch.eye(D))
        m.layers[0].bias.fill_(100.0)  # active unless the noise is ~100σ: never at these σ
        wt = torch.tensor(w)
        m.layers[1].weight.copy_(torch.stack([wt, torch.zeros(D)]))
        m.layers[1].bias.copy_(torch.tensor([b - 100.0 * float(wt.sum()), 0.0]))
    return m


def test_radius_of_a_half_space_is_below_the_true_distance_and_close():
    m = _linear([3.0, 4.0], -1.0)
    x = torch.tensor([[0.5, 0.3], [0.1, 0.1], [0.4, 0.3]])  # w·x + b = 1.7, -0.3, 1.4
    dist = (x @ torch.tensor([3.0, 4.0]) - 1.0).abs() / 5
    c = Smooth(m, 0.25).certify(x, 100, 20_000, 0.001, seed=1)
    assert c.pred.tolist() == [0, 1, 0]
    assert not c.abstain.any()
    assert (c.radius <= dist.double()).all()  # with probability ≥ 1 - α each; these draws are fixed by the seed
    assert (c.radius >= 0.8 * dist.double()).all()
    p_true = norm.cdf(dist.double().numpy() / 0.25)
    assert (c.p_lower.numpy() <= p_true).all()
    assert "smoothed classifier" in c.guarantee and "1 − α" in SMOOTHING_GUARANTEE


def test_constant_classifier_gets_the_formula_and_seeds_reproduce():
    m = _linear([0.0, 0.0], 5.0)  # always class 0
    x = torch.rand(4, 2)
    c = Smooth(m, 0.5).certify(x, 10, 500, 0.01, seed=3)
    expected = 0.5 * norm.ppf(0.01 ** (1 / 500))
    assert torch.allclose(c.radius, torch.full((4,), expected, dtype=torch.float64), rtol=1e-12)
    mm = _linear([1.0, -1.0], 0.05)
    a = Smooth(mm, 0.5).certify(x, 20, 400, 0.01, seed=7, batch_size=64)
    b = Smooth(mm, 0.5).certify(x, 20, 400, 0.01, seed=7, batch_size=64)
    assert torch.equal(a.radius, b.radius) and torch.equal(a.pred, b.pred)


def test_binary_variant_selects_y_and_t_and_certifies_the_pair():
    torch.manual_seed(0)
    m = MLP(5, [8], 4, "tanh")
    x = torch.rand(6, 5)
    s = Smooth(m, 0.1)
    c = s.certify_binary(x, 50, 2000, 0.001, seed=2)
    assert c.binary
    assert (c.target != c.pred).all()
    z = m(x)
    assert (c.pred[~c.abstain] == z.argmax(1)[~c.abstain]).all()  # σ small: the base model's top class
    y, t = z.argmax(1), z.argmin(1)
    c2 = s.certify_binary(x, 50, 2000, 0.001, y=y, t=t, seed=2)
    assert (c2.target == t).all()
    # against the least likely class the pair is easier to hold than against the runner-up
    assert (c2.radius >= c.radius - 1e-9).all()


def test_bad_input_gets_a_clear_error():
    m = _linear([1.0, 0.0], 0.0)
    x = torch.rand(2, 2)
    for sigma in (0, -1.0, math.inf, math.nan):
        with pytest.raises(CRCError, match="σ"):
            Smooth(m, sigma)
    s = Smooth(m, 0.25)
    with pytest.raises(CRCError, match="at least"):
        s.certify(x, 100, 50, 0.001)
    for alpha in (0, 1, -0.1, 1.5):
        with pytest.raises(CRCError, match="α"):
            s.certify(x, 10, 100, alpha)
    with pytest.raises(CRCError, match="positive integers"):
        s.certify(x, 0, 100, 0.01)
    with pytest.raises(CRCError, match="both"):
        s.certify_binary(x, 10, 100, 0.01, y=torch.tensor([0, 0]))
    with pytest.raises(CRCError, match="t ≠ y"):
        s.certify_binary(x, 10, 100, 0.01, y=torch.tensor([0, 0]), t=torch.tensor([0, 1]))
    with pytest.raises(CRCError, match="finite"):
        s.certify(torch.full((1, 2), math.nan), 10, 100, 0.01)
