"""Activation constants (paper App. F) against dense numerical sweeps; derivatives against autograd."""

import math

import pytest
import torch

from crc_core.activations import ACTIVATIONS, get_activation
from crc_core.errors import UnsupportedActivationError
from crc_core.models import MLP

GRID = torch.linspace(-40, 40, 2_000_001, dtype=torch.float64)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_constants_bound_and_are_tight(name):
    a = get_activation(name)
    d1, d2 = a.d1(GRID), a.d2(GRID)
    # sound: every sampled value within the constants
    assert d1.abs().max() <= a.g
    assert d2.abs().max() <= a.h
    assert d2.min() >= a.h_L and d2.max() <= a.h_U
    # tight: the sweep reaches the constants (to sweep resolution)
    assert d1.abs().max() >= a.g * (1 - 1e-6)
    assert d2.max() >= a.h_U * (1 - 1e-6)
    assert d2.min() <= a.h_L * (1 - 1e-6) + 1e-12
    assert a.h == max(abs(a.h_L), abs(a.h_U))


def test_exact_closed_forms():
    assert ACTIVATIONS["softplus"].h_U == 0.25 and ACTIVATIONS["softplus"].h_L == 0.0
    assert ACTIVATIONS["sigmoid"].g == 0.25
    assert ACTIVATIONS["sigmoid"].h_U >= math.sqrt(3) / 18
    assert ACTIVATIONS["sigmoid"].h_U - math.sqrt(3) / 18 < 1e-15
    assert ACTIVATIONS["tanh"].h_U >= 4 / (3 * math.sqrt(3))
    assert ACTIVATIONS["tanh"].h_U - 4 / (3 * math.sqrt(3)) < 1e-15


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_derivatives_match_autograd(name):
    a = get_activation(name)
    x = torch.linspace(-12, 12, 4001, dtype=torch.float64, requires_grad=True)
    (g1,) = torch.autograd.grad(a.fn(x).sum(), x, create_graph=True)
    (g2,) = torch.autograd.grad(g1.sum(), x)
    torch.testing.assert_close(a.d1(x.detach()), g1.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a.d2(x.detach()), g2, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", ["relu", "ReLU", "gelu", "swish"])
def test_other_activations_refused_with_reason(name):
    with pytest.raises(UnsupportedActivationError, match="cannot be used for curvature bounds"):
        get_activation(name)


def test_relu_model_builds_but_refuses_curvature():
    m = MLP(4, [3], 2, "relu")
    assert m(torch.rand(2, 4)).shape == (2, 2)
    with pytest.raises(UnsupportedActivationError, match="ReLU"):
        _ = m.activation
