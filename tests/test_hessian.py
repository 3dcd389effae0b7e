"""Lemma 1 closed form against torch.func (autograd) Hessians, in float64."""

import pytest
import torch

from crc_core.errors import CRCError, UnsupportedActivationError
from crc_core.hessian import (
    margin_and_grad,
    margin_hessian,
    margin_hessian_eigh,
    margin_hessian_eigvals,
    margin_hvp,
)
from crc_core.models import MLP


def autograd_hessian(model, x, y, t):
    def f(xx):
        z = model(xx[None])[0]
        return z[y] - z[t]
    return torch.func.hessian(f)(x)


@pytest.mark.parametrize("act", ["softplus", "sigmoid", "tanh"])
@pytest.mark.parametrize("depth", [2, 3, 4, 5])
def test_lemma1_equals_autograd(act, depth):
    torch.manual_seed(depth)
    m = MLP(9, [7] * (depth - 1), 4, act).double()
    x = torch.randn(3, 9, dtype=torch.float64)
    y = torch.tensor([0, 1, 3])
    t = torch.tensor([[1, 2], [0, 3], [2, 1]])
    H = margin_hessian(m, x, y, t)
    ref = torch.stack([torch.stack([autograd_hessian(m, x[b], int(y[b]), int(t[b, p])) for p in range(2)])
                       for b in range(3)])
    rel = (H - ref).abs().max() / ref.abs().max()
    assert rel < 1e-6
    # per-layer terms sum to the Hessian
    terms = margin_hessian(m, x, y, t, per_layer=True)
    assert terms.shape[0] == depth - 1
    torch.testing.assert_close(terms.sum(0), H)
    # 1-D t drops the pair axis
    torch.testing.assert_close(margin_hessian(m, x, y, t[:, 0]), H[:, 0])


@pytest.mark.parametrize("depth", [2, 4])
def test_grad_hvp_and_spectra(depth):
    torch.manual_seed(0)
    m = MLP(8, [6] * (depth - 1), 3, "tanh").double()
    x = torch.randn(4, 8, dtype=torch.float64)
    y, t = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 0, 2])
    f, g = margin_and_grad(m, x, y, t)
    for b in range(4):
        xb = x[b].clone().requires_grad_(True)
        z = m(xb[None])[0]
        fb = z[y[b]] - z[t[b]]
        (gb,) = torch.autograd.grad(fb, xb)
        torch.testing.assert_close(f[b], fb.detach())
        torch.testing.assert_close(g[b], gb)
    H = margin_hessian(m, x, y, t)
    v = torch.randn(4, 8, dtype=torch.float64)
    torch.testing.assert_close(margin_hvp(m, x, y, t, v), torch.einsum("bde,be->bd", H, v))
    ev = margin_hessian_eigvals(m, x, y, t)
    torch.testing.assert_close(ev, torch.linalg.eigvalsh(H))
    vals, vecs = margin_hessian_eigh(m, x[0], 0, 1)
    torch.testing.assert_close(vals, torch.linalg.eigvalsh(H[0]))
    torch.testing.assert_close(vecs @ torch.diag(vals) @ vecs.T, H[0])


def test_float32_model_spectra_are_computed_in_float64():
    m = MLP(8, [6], 3, "softplus")
    x = torch.rand(2, 8)
    ev = margin_hessian_eigvals(m, x, torch.tensor([0, 1]), torch.tensor([1, 2]))
    assert ev.dtype == torch.float64 and ev.shape == (2, 8)


def test_bad_requests():
    m = MLP(8, [6], 3, "softplus")
    x = torch.rand(2, 8)
    with pytest.raises(CRCError, match="target class equals"):
        margin_hessian(m, x, torch.tensor([0, 1]), torch.tensor([0, 2]))
    with pytest.raises(CRCError, match=r"\[0, 2\]"):
        margin_hessian(m, x, torch.tensor([0, 1]), torch.tensor([5, 2]))
    with pytest.raises(CRCError, match="NaN"):
        margin_hessian(m, torch.full((2, 8), float("nan")), torch.tensor([0, 1]), torch.tensor([1, 2]))
    with pytest.raises(UnsupportedActivationError):
        margin_hessian(MLP(8, [6], 3, "relu"), x, torch.tensor([0, 1]), torch.tensor([1, 2]))
