"""Spectral norms and Theorem 3/4 bounds against exact references."""

import pytest
import torch

from crc_core.bounds import (
    CurvatureRegularizer,
    all_pairs,
    curvature_bounds,
    power_iteration,
    spectral_norm_exact,
    spectral_norm_pi,
    theorem3,
    theorem4,
)
from crc_core.errors import CRCError, UnsupportedActivationError
from crc_core.models import MLP


def exact_norm(W):
    return torch.linalg.matrix_norm(W.double(), ord=2)


@pytest.mark.parametrize("shape", [(30, 20), (20, 30), (4, 17, 9)])
def test_spectral_norm_exact_is_tight_upper_bound(shape):
    torch.manual_seed(1)
    W = torch.randn(*shape)
    s, ref = spectral_norm_exact(W), exact_norm(W)
    assert (s >= ref).all()
    assert ((s - ref) / ref).max() < 1e-10


def test_power_iteration_and_uv_gradient_match_exact():
    torch.manual_seed(2)
    for _ in range(5):
        W = torch.randn(40, 25, dtype=torch.float64)
        sigma, _u, _v = power_iteration(W, n_iter=500)
        assert abs(float(sigma) - float(exact_norm(W))) < 1e-8
        Wg = W.clone().requires_grad_(True)
        state: dict = {}
        val = spectral_norm_pi(Wg, state, n_iter=500)
        (g,) = torch.autograd.grad(val, Wg)
        Wr = W.clone().requires_grad_(True)
        (gref,) = torch.autograd.grad(torch.linalg.matrix_norm(Wr, ord=2), Wr)
        torch.testing.assert_close(val.detach(), exact_norm(W), rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(g, gref, rtol=1e-5, atol=1e-7)


def test_power_iteration_warm_start_converges_across_calls():
    torch.manual_seed(3)
    W = torch.randn(50, 50)
    state: dict = {}
    vals = [float(spectral_norm_pi(W, state, n_iter=1)) for _ in range(60)]
    assert vals[-1] <= float(exact_norm(W)) * (1 + 1e-5)  # converges from below
    assert vals[-1] >= float(exact_norm(W)) * (1 - 1e-3)


def test_all_pairs_batched_shapes_and_methods():
    m = MLP(20, [16, 16], 10, "sigmoid")
    y, t = all_pairs(10)
    assert y.shape == (90,) and not (y == t).any()
    b4, br = curvature_bounds(m, method="thm4"), curvature_bounds(m, method="refined")
    assert b4.K.shape == (90,) and br.K.shape == (90,)
    assert (br.K <= b4.K * (1 + 1e-12)).all() and (br.K > 0).all()
    assert curvature_bounds(m).method == "refined"
    sub = b4.for_pairs(torch.tensor([3, 0]), torch.tensor([1, 9]))
    assert sub.K.shape == (2,)
    with pytest.raises(CRCError, match="Theorem 3 applies to 2-layer"):
        theorem3(m, y, t)


def test_theorem3_tighter_than_theorem4_for_two_layers():
    torch.manual_seed(4)
    m = MLP(20, [30], 5, "softplus")
    b3 = curvature_bounds(m)
    assert b3.method == "thm3"
    assert (b3.m <= 0).all() and (b3.M >= 0).all()
    K4 = theorem4(m, b3.y, b3.t)
    assert (b3.K <= K4 * (1 + 1e-12)).all()
    # (y, t) and (t, y): the Hessian flips sign, so m(y, t) = -M(t, y)
    C = 5
    idx = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(b3.y, b3.t))}
    for (a, b), i in idx.items():
        assert torch.isclose(b3.m[i], -b3.M[idx[(b, a)]], rtol=1e-12)
    assert m.n_classes == C


def test_theorem4_matches_hand_computation():
    torch.manual_seed(5)
    m = MLP(6, [5, 4], 3, "tanh").double()
    W1, W2, W3 = m.weights()
    w = W3[0] - W3[2]
    g, h = 1.0, m.activation.h
    r1 = exact_norm(W1)
    r2 = g * exact_norm(W2) * r1
    S2 = w.abs()
    S1 = g * S2 @ W2.abs()
    K = h * (r1**2 * S1.max() + r2**2 * S2.max())
    got = theorem4(m, torch.tensor([0]), torch.tensor([2]))
    torch.testing.assert_close(got[0], K.detach(), rtol=1e-9, atol=0)
    assert got[0] >= K


def test_regularizer_is_differentiable_and_approaches_exact_K():
    torch.manual_seed(6)
    m = MLP(12, [10, 10], 4, "softplus").double()
    y, t = torch.tensor([0, 1, 2]), torch.tensor([1, 3, 0])
    reg = CurvatureRegularizer()
    for _ in range(80):
        K = reg(m, y, t)
    exact = theorem4(m, y, t)
    assert K.shape == (3,)
    assert (K.detach() <= exact * (1 + 1e-9)).all() and (K.detach() >= exact * (1 - 1e-4)).all()
    K.sum().backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)
    # gradient agrees with autograd through exact (SVD) norms
    m2 = MLP.from_config(m.config()).double()
    m2.load_state_dict(m.state_dict())
    Ws = m2.weights()
    w = Ws[-1][y] - Ws[-1][t]
    n1, n2 = torch.linalg.matrix_norm(Ws[0], ord=2), torch.linalg.matrix_norm(Ws[1], ord=2)
    r1, r2 = n1, n2 * n1
    S2 = w.abs()
    S1 = S2 @ Ws[1].abs()
    Kref = 0.25 * (r1**2 * S1.max(1).values + r2**2 * S2.max(1).values)
    Kref.sum().backward()
    for p, q in zip(m.parameters(), m2.parameters()):
        if q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-6)


def test_bad_models_refused():
    with pytest.raises(UnsupportedActivationError):
        curvature_bounds(MLP(5, [4], 3, "relu"))
    m = MLP(5, [4], 3, "softplus")
    m.layers[1].weight.data[0, 0] = float("inf")
    with pytest.raises(CRCError, match="NaN or infinite"):
        curvature_bounds(m)
    with pytest.raises(CRCError, match="Unknown bound method"):
        curvature_bounds(MLP(5, [4], 3), method="thm5")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bounds_on_gpu_match_cpu():
    torch.manual_seed(7)
    m = MLP(30, [20, 20], 10, "sigmoid")
    cpu = curvature_bounds(m, method="refined").K
    gpu = curvature_bounds(m.cuda(), method="refined").K.cpu()
    torch.testing.assert_close(cpu, gpu, rtol=1e-6, atol=0)


def test_theorem3_estimate_approaches_theorem3_from_below_and_warm_starts():
    """The CRT attack's estimates of Theorem 3's m, M: below the proved values, near them after a few warm calls,
    one value per row (pairs repeat), kept warm in the regularizer's state; 2-layer nets only."""
    torch.manual_seed(7)
    m = MLP(30, [20], 5, "softplus").double()
    y, t = torch.tensor([0, 1, 2, 0, 4]), torch.tensor([1, 3, 0, 1, 2])
    reg = CurvatureRegularizer()
    lo, hi = reg.theorem3_estimate(m, y, t)
    for _ in range(10):
        lo, hi = reg.theorem3_estimate(m, y, t)
    m_ex, M_ex = theorem3(m, y, t)
    assert lo.shape == hi.shape == (5,) and torch.equal(lo[0], lo[3]) and torch.equal(hi[0], hi[3])
    assert (lo <= 0).all() and (hi >= 0).all()
    assert (lo >= m_ex * (1 + 1e-9)).all() and (hi <= M_ex * (1 + 1e-9)).all()  # from below in magnitude
    assert (lo <= m_ex * (1 - 1e-6)).all() and (hi >= M_ex * (1 - 1e-6)).all()  # and converged
    assert set(reg.state) == {"theorem3"}
    with pytest.raises(CRCError, match="2-layer"):
        CurvatureRegularizer().theorem3_estimate(MLP(6, [5, 5], 3, "softplus"), y[:1] % 3, t[:1] % 3)
