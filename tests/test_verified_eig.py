"""Verified extreme eigenvalues (crc_core.verified_eig) and their use in the curvature bounds.

Every bound is checked against an exact reference: float64 eigvalsh (error ~ n·u·‖A‖, far below the proof's
margin of ≥ 10·(n+2)·u·‖A‖), exactly known spectra (permuted diagonals), or exact rational arithmetic. Each
check is shown to catch a deliberately broken verifier.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

import crc_core.verified_eig as ve
from crc_core.bounds import curvature_bounds, scaled_sq_norm, spectral_norm_exact, theorem3, theorem4
from crc_core.models import MLP
from crc_core.verified_eig import (
    Estimate,
    cholesky_proves_pd,
    eigvalsh_upper,
    lambda_max_upper,
    sym_lower,
    upper_from_estimate,
)

RTOL = ve.DEFAULT_RTOL  # documented: σ − λ_max ≤ RTOL·‖A‖₂ (+ 1e3·n²·2⁻¹⁰⁷⁴) unless the fallback ran
TINY = 1e3 * 2.0 ** -1074


def make(kind: str, n: int, batch: tuple = (), seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(*batch, n, n, generator=g, dtype=torch.float64)
    eye = torch.eye(n, dtype=torch.float64)
    if kind == "sym":
        A = (X + X.mT) / 2
    elif kind == "gram":
        A = X @ X.mT / n
    elif kind == "negdef":
        A = -(X @ X.mT) / n - 0.5 * eye
    elif kind == "rankdef":
        Y = X[..., : max(1, n // 4)]
        A = Y @ Y.mT
    elif kind == "zero":
        A = torch.zeros_like(X)
    elif kind == "clustered":  # top eigenvalue 1.0 three times, then 1 - 1e-9, the rest spread in [-1, 0.9]
        Q = torch.linalg.qr(X).Q
        lam = torch.linspace(-1, 0.9, n, dtype=torch.float64).expand(*batch, n).clone()
        lam[..., -min(n, 3):] = 1.0
        if n > 3:
            lam[..., -4] = 1 - 1e-9
        A = (Q * lam[..., None, :]) @ Q.mT
    else:
        raise ValueError(kind)
    return sym_lower(A) * scale


def check(ub: torch.Tensor, A: torch.Tensor, rtol: float = RTOL) -> tuple[bool, bool]:
    """(sound, tight): ub ≥ λ_max(A) everywhere, and ub − λ_max ≤ rtol·‖A‖₂ + TINY·n²."""
    ev = torch.linalg.eigvalsh(A)
    ref, norm = ev[..., -1], ev.abs().amax(-1)
    n = A.shape[-1]
    return bool((ub >= ref).all()), bool((ub - ref <= rtol * norm + TINY * n * n).all())


def exact_pd(M: list[list[Fraction]]) -> bool:
    """Exact positive definiteness of a symmetric rational matrix: Gaussian elimination, all pivots > 0."""
    n = len(M)
    M = [row[:] for row in M]
    for k in range(n):
        if M[k][k] <= 0:
            return False
        for i in range(k + 1, n):
            f = M[i][k] / M[k][k]
            for j in range(k + 1, n):
                M[i][j] -= f * M[k][j]
    return True


def exact_matrix(B: torch.Tensor) -> list[list[Fraction]]:
    """The symmetric matrix of B's lower triangle, exactly."""
    n = B.shape[0]
    return [[Fraction(float(B[max(i, j), min(i, j)])) for j in range(n)] for i in range(n)]


def exact_upper_bound(A: torch.Tensor, sigma: float) -> bool:
    """λ_max(A) < σ exactly: σI − A positive definite in rational arithmetic."""
    M = exact_matrix(-A)
    for i in range(len(M)):
        M[i][i] = Fraction(sigma) - Fraction(float(A[i, i]))
    return exact_pd(M)


# ------------------------------------------------------------------------------------------ sound and tight
@pytest.mark.parametrize("kind", ["sym", "gram", "negdef", "rankdef", "zero", "clustered"])
@pytest.mark.parametrize("n", [1, 2, 7, 64, 300])
def test_verified_bound_is_sound_and_tight(kind, n):
    A = make(kind, n, batch=(3,), seed=n)
    ub = lambda_max_upper(A)
    sound, tight = check(ub, A)
    assert sound and tight
    assert check(ub, A, rtol=1e-8)[1]  # in practice far tighter than the documented 1e-6 (n ≤ 600: ~1e-9)
    assert check(lambda_max_upper(-A), -A) == (True, True)  # λ_min(A) = -λ_max(-A)


@pytest.mark.parametrize("kind", ["sym", "gram", "clustered"])
def test_large_n(kind):
    A = make(kind, 600, seed=11)
    assert check(lambda_max_upper(A), A, rtol=1e-8) == (True, True)


@pytest.mark.parametrize("scale", [1e-150, 1e-300, 1e150, 1e250])
@pytest.mark.parametrize("kind", ["sym", "gram", "negdef"])
def test_tiny_and_huge_scales(kind, scale):
    A = make(kind, 40, batch=(2,), seed=3, scale=scale)
    assert check(lambda_max_upper(A), A) == (True, True)


def test_batched_shapes_and_lower_triangle_only():
    A = make("sym", 9, batch=(2, 3), seed=5)
    ub = lambda_max_upper(A)
    assert ub.shape == (2, 3) and check(ub, A) == (True, True)
    garbage = A + torch.triu(torch.full_like(A, 1e3), 1)  # the strict upper triangle is never read
    torch.testing.assert_close(lambda_max_upper(garbage), ub, rtol=1e-12, atol=0)
    assert lambda_max_upper(torch.zeros(0, 4, 4)).shape == (0,)
    assert lambda_max_upper(A, method="eigvalsh").shape == (2, 3)


@pytest.mark.parametrize("scale", [1.0, 1e-200, 1e200])
def test_exactly_known_spectra(scale):
    """Permuted diagonals have exactly known eigenvalues: the bound must be strictly above, with no reference
    error at all; repeated top values (clusters) included."""
    g = torch.Generator().manual_seed(9)
    for n in (1, 2, 5, 50, 200):
        v = torch.randn(4, n, generator=g, dtype=torch.float64) * scale
        v[1, : n // 2 + 1] = v[1].max()  # a cluster of equal top values
        v[2] = -v[2].abs() - scale  # negative definite
        perm = torch.randperm(n, generator=g)
        A = torch.diag_embed(v)[:, perm][:, :, perm]
        ub = lambda_max_upper(A)
        top = v.max(-1).values
        assert (ub > top).all()
        assert (ub - top <= RTOL * v.abs().amax(-1) + TINY * n * n).all()


def test_small_matrices_proved_in_exact_arithmetic():
    """For n ≤ 5, check σI − A ≻ 0 with rational arithmetic: an exact certificate of soundness."""
    g = torch.Generator().manual_seed(4)
    for trial in range(150):
        n = 1 + trial % 5
        X = torch.randn(n, n, generator=g, dtype=torch.float64)
        A = sym_lower(X @ X.T if trial % 2 else X + X.T)
        if trial % 3 == 0:  # ill-conditioned: a dominant rank-one part
            A = sym_lower(A + 1e6 * torch.outer(X[0], X[0]))
        sigma = float(lambda_max_upper(A))
        assert exact_upper_bound(A, sigma), (trial, sigma)


# ----------------------------------------------------------------------------------------- broken verifiers
def test_plain_cholesky_is_not_a_proof_but_the_shifted_one_is():
    """Near-singular matrices: plain floating-point Cholesky "proves" some matrices positive definite that
    exact arithmetic shows are not (so skipping Rump's shift is caught by this check); the real test never
    does."""
    g = torch.Generator().manual_seed(0)
    plain_false = ours_false = ours_true = 0
    for trial in range(2000):
        n = 2 + trial % 4
        X = torch.randn(n, n, generator=g, dtype=torch.float64)
        B0 = X @ X.T
        k = int(torch.randint(-2, 3, (1,), generator=g))
        shift = torch.linalg.eigvalsh(B0)[0] + k * 2.0 ** -52 * B0.norm()
        B = sym_lower(B0 - shift * torch.eye(n, dtype=torch.float64))
        ex = exact_pd(exact_matrix(B))
        plain, ours = bool(cholesky_proves_pd(B, shift=False)), bool(cholesky_proves_pd(B))
        plain_false += plain and not ex
        ours_false += ours and not ex
        ours_true += ours
    assert plain_false >= 1  # the broken verifier is caught
    assert ours_false == 0
    # and the real one proves comfortably definite matrices
    X = torch.randn(4, 30, 30, generator=g, dtype=torch.float64)
    assert cholesky_proves_pd(X @ X.mT + 1e-3 * torch.eye(30)).all()
    assert not cholesky_proves_pd(-torch.eye(3)).any() and not cholesky_proves_pd(torch.zeros(3, 3))


def _underestimate(A: torch.Tensor) -> Estimate:
    """A lying estimate: θ 1% below the true λ_max, claimed exact (err = 0)."""
    ev = torch.linalg.eigvalsh(A)
    return Estimate(ev[:, -1] - 0.01 * ev.abs().amax(-1), torch.zeros(A.shape[0], dtype=torch.float64),
                    ev.abs().amax(-1), 1)


def test_an_unverified_estimate_is_caught(monkeypatch):
    """Accepting the estimate without the Cholesky proof gives an under-estimate, which the check catches; the
    real verifier rejects it and falls back to eigvalsh, staying sound."""
    A = make("gram", 80, batch=(3,), seed=2)
    ub, fell_back = upper_from_estimate(sym_lower(A, -1.0), _underestimate(A))
    assert check(ub, A) == (True, True) and fell_back.all()
    monkeypatch.setattr(ve, "_prove_upper", lambda negA, d, s: torch.ones_like(s, dtype=torch.bool))
    bad, _ = upper_from_estimate(sym_lower(A, -1.0), _underestimate(A))
    assert not check(bad, A)[0]


def _broken_prove_upper(negA: torch.Tensor, a_diag: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """σI − A factorized as is: no downward rounding of the diagonal, no Rump shift (NOT a proof)."""
    B = negA.clone()
    B.diagonal(dim1=-2, dim2=-1).copy_(sigma[:, None] - a_diag)
    return torch.linalg.cholesky_ex(B).info == 0


def test_the_proof_of_an_upper_bound_against_exact_arithmetic():
    """σ within a few ulps of λ_max: a proof without the diagonal rounding and the shift claims some σ < λ_max
    (caught by exact rational arithmetic); the real proof never does."""
    g = torch.Generator().manual_seed(1)
    broken_false = real_false = 0
    for trial in range(1000):
        n = 2 + trial % 3
        X = torch.randn(n, n, generator=g, dtype=torch.float64)
        A = sym_lower(X @ X.T)
        lam = torch.linalg.eigvalsh(A)[-1]
        sigma = (lam + int(torch.randint(-2, 3, (1,), generator=g)) * 2.0 ** -54 * lam)[None]
        true_bound = exact_upper_bound(A, float(sigma))
        args = (sym_lower(A, -1.0)[None], A.diagonal()[None], sigma)
        broken_false += bool(_broken_prove_upper(*args)) and not true_bound
        real_false += bool(ve._prove_upper(*args)) and not true_bound
    assert broken_false >= 1
    assert real_false == 0


# ------------------------------------------------------------------------------------------------- fallback
def test_fallback_when_cholesky_fails(monkeypatch):
    A = make("sym", 50, batch=(4,), seed=6)
    ref = eigvalsh_upper(A)

    real = torch.linalg.cholesky_ex

    def failing(B, *args, **kw):
        L, info = real(B, *args, **kw)
        return L, torch.ones_like(info)

    monkeypatch.setattr(torch.linalg, "cholesky_ex", failing)
    ub = lambda_max_upper(A)
    assert check(ub, A)[0]
    assert (ub >= ref).all() and ((ub - ref) <= 1e-14 * ref.abs()).all()  # the eigvalsh path (after scaling)
    _, fell_back = upper_from_estimate(sym_lower(A, -1.0), _underestimate(A))
    assert fell_back.all()


def test_fallback_without_a_usable_estimate(monkeypatch):
    """An estimate whose error exceeds the tolerance is not even tried: straight to eigvalsh, sound."""
    calls = []
    real = ve._prove_upper
    monkeypatch.setattr(ve, "_prove_upper", lambda *a: calls.append(1) or real(*a))
    A = make("gram", 60, batch=(2,), seed=8)
    est = _underestimate(A)
    est.err = est.scale  # 100% uncertain
    ub, fell_back = upper_from_estimate(sym_lower(A, -1.0), est)
    assert fell_back.all() and not calls and check(ub, A)[0]
    # a truncated Lanczos (2 steps) on a spread spectrum: still sound, via larger δ or the fallback
    A = make("sym", 200, batch=(2,), seed=9)
    assert check(lambda_max_upper(A, kmax=2), A)[0]


def test_non_finite_or_enormous_entries_are_not_proved():
    A = make("sym", 5, batch=(3,), seed=1)
    A[1, 2, 0] = float("nan")
    A[2] = A[2] * 1e300  # beyond 2^900: no proof is attempted
    negA = sym_lower(A, -1.0)
    d = -negA.diagonal(dim1=-2, dim2=-1)
    assert ve._entries_ok(negA).tolist() == [True, False, False]
    assert not ve._prove_upper(negA.clone(), d, torch.full((3,), 1e301, dtype=torch.float64)).any()
    inf = torch.tensor([float("inf")], dtype=torch.float64)
    assert not ve._prove_upper(negA[:1].clone(), d[:1], inf).any()
    huge = A[2:]
    ub = lambda_max_upper(huge)  # the eigvalsh fallback answers, soundly
    assert check(ub, huge)[0]


# ----------------------------------------------------------------------------------------------- the bounds
MODELS = [
    (20, [30], "softplus", "thm3"),
    (20, [30], "sigmoid", "thm3"),
    (20, [30], "tanh", "thm3"),
    (64, [200], "softplus", "thm3"),
    (30, [40, 30, 20], "softplus", "refined"),
    (30, [64, 64], "tanh", "refined"),
    (30, [24, 24], "sigmoid", "thm4"),
]


@pytest.mark.parametrize("D,hidden,act,method", MODELS)
def test_bounds_agree_with_the_eigvalsh_path_and_are_never_below(D, hidden, act, method):
    torch.manual_seed(len(hidden) * 100 + D)
    model = MLP(D, hidden, 10, act)
    old = curvature_bounds(model, method=method, eig="eigvalsh")
    new = curvature_bounds(model, method=method)
    assert (new.M >= old.M).all() and (new.m <= old.m).all() and (new.K >= old.K).all()
    for a, b in ((new.M, old.M), (new.m, old.m), (new.K, old.K)):
        assert ((a - b).abs() <= RTOL * b.abs()).all()


def test_refined_theorem4_and_theorem3_parts_agree():
    torch.manual_seed(3)
    deep = MLP(30, [50, 40], 10, "softplus")
    y, t = torch.tensor([0, 1, 2, 9]), torch.tensor([1, 0, 5, 3])
    old, new = theorem4(deep, y, t, refined=True, eig="eigvalsh"), theorem4(deep, y, t, refined=True)
    assert (new >= old).all() and ((new - old) <= RTOL * old).all()
    two = MLP(30, [50], 10, "sigmoid")
    (m0, M0), (m1, M1) = theorem3(two, y, t, eig="eigvalsh"), theorem3(two, y, t)
    assert (M1 >= M0).all() and (m1 <= m0).all() and ((M1 - M0) <= RTOL * M0).all()
    assert torch.equal(m1[:2], -M1[:2].flip(0))  # (0, 1) and (1, 0): exactly mirrored


def test_scaled_sq_norm_sound_on_exact_reference_and_edge_rows():
    """‖diag(√c) W‖² against the SVD reference, with zero entries, an all-zero row of c, duplicate rows, and
    a narrow W (d ≪ k) that takes the d×d route."""
    g = torch.Generator().manual_seed(12)
    for n, d in ((40, 30), (60, 8), (7, 50)):
        W = torch.randn(n, d, generator=g, dtype=torch.float64)
        c = torch.rand(9, n, generator=g, dtype=torch.float64) * (torch.rand(9, n, generator=g) > 0.4)
        c[3] = 0
        c[4] = c[5]
        ub = scaled_sq_norm(W, c)
        ref = torch.linalg.matrix_norm(c.sqrt()[:, :, None] * W, ord=2) ** 2
        assert (ub >= ref).all() and ((ub - ref) <= RTOL * ref + 1e-300).all()
        assert ub[3] == 0 or ub[3] < 1e-300
        assert ub[4] == ub[5]
        old = scaled_sq_norm(W, c, eig="eigvalsh")
        assert ((ub - old).abs() <= RTOL * old + 1e-300).all()


def test_spectral_norm_paths_agree():
    W = torch.randn(3, 70, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    a, b = spectral_norm_exact(W), spectral_norm_exact(W, eig="eigvalsh")
    ref = torch.linalg.matrix_norm(W, ord=2)
    assert (a >= ref).all() and (b >= ref).all() and ((a - ref) <= 1e-9 * ref).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_verified_bounds_on_gpu():
    A = make("gram", 300, batch=(4,), seed=1).cuda()
    ub = lambda_max_upper(A)
    assert ub.device.type == "cuda" and check(ub.cpu(), A.cpu()) == (True, True)
    torch.manual_seed(7)
    m = MLP(30, [64, 64], 10, "sigmoid")
    cpu_old = curvature_bounds(m, method="refined", eig="eigvalsh").K
    gpu = curvature_bounds(m.cuda(), method="refined").K.cpu()
    assert (gpu >= cpu_old * (1 - 1e-12)).all() and ((gpu - cpu_old) <= RTOL * cpu_old).all()
