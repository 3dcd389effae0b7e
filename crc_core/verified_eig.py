"""Verified extreme eigenvalues of symmetric float64 matrices: a cheap estimate, proved by a Cholesky
factorization.

:func:`lambda_max_upper` returns σ with λ_max(A) < σ for a batch of symmetric float64 matrices A, in three
steps:

1. *estimate* θ ≈ λ_max(A) by Lanczos (a few dozen matrix-vector products, batched over matrices), with an
   estimate of its error; Ritz values approach λ_max from below;
2. *prove* σ = θ + δ: λ_max(A) < σ ⟺ σI − A is positive definite, which a floating-point Cholesky
   factorization of σI − A, shifted down by Rump's round-off constant, proves (:func:`cholesky_proves_pd`);
3. if the proof fails, enlarge δ (×10, at most ``tries`` times, never beyond ``rtol``·‖A‖); if that fails too,
   fall back to the old path: ``eigvalsh`` plus a backward-error allowance (:func:`eigvalsh_upper`).

So the result is always an upper bound. Tightness (the documented tolerance): unless the fallback ran,
σ − θ ≤ rtol·‖A‖₂ (+ 1e3·n²·2⁻¹⁰⁷⁴) with θ a Ritz value (≤ λ_max(A) up to round-off), so σ overshoots λ_max(A)
by at most ``rtol`` (default 1e-6) relative to ‖A‖₂. In practice the overshoot is about twice the Cholesky
shift, ~20·n·u·tr(σI − A) (~1e-9 relative for n = 1024), plus 4× the Lanczos error estimate; the fallback is
tight to ~16·n·ε·‖A‖_F.

Only the lower triangle of A is read (as ``eigvalsh`` does); the bound is for the symmetric matrix it
defines, exactly as stored (no allowance for how A was computed: callers add that). Device-agnostic (CPU,
CUDA). Assumes IEEE 754 binary64 with rounding to nearest and a Cholesky that evaluates the textbook formulas
in any order (blocked, FMA allowed), as LAPACK/cuSOLVER ``potrf`` do: Rump's theorem holds for any order of
summation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

EigMethod = Literal["verified", "eigvalsh"]

U64 = 2.0 ** -53  # unit round-off of binary64 (round to nearest)
ETA64 = 2.0 ** -1074  # smallest positive subnormal binary64
_EPS64 = 2.0 ** -52
_BIG = 2.0 ** 900  # entries / shifts beyond this go to the fallback: then nothing can overflow in Cholesky
_RUMP_SAFETY = 10.0  # over-shift Rump's constant 10x (costs ~1e-9 relative for n = 1024, rules out slips)
DEFAULT_RTOL = 1e-6


# ------------------------------------------------------------------------------------------------ the proof
def rump_shift(diag: torch.Tensor) -> torch.Tensor:
    """Round-off shift c (...,) for proving B positive definite, from B's diagonal ``diag`` (..., n), all > 0.

    Rump, "Verification of positive definiteness", BIT Numer. Math. 46 (2006) 433-452, Sect. 2, in the form
    his INTLAB ``isspd`` implements: for symmetric B ∈ F^{n×n} with b_ii > 0, u = 2⁻⁵³, η = 2⁻¹⁰⁷⁴, n < 2²⁶,
    if the floating-point Cholesky decomposition of the float matrix B̃ with B̃_ij = B_ij (i ≠ j),
    B̃_ii ≤ b_ii − c runs to completion (all pivots > 0, no overflow), where

        c ≥ Σ_i α_i b_ii + 6n(n + max_i b_ii)·η,   α_i = (t_i + 3)·u ≤ (n + 2)·u

    (t_i ≤ n − 1 the number of off-diagonal entries above b_ii; α_i bounds γ_{t_i+2}/(1 − γ_{t_i+2})), then
    B is positive definite. (Idea: Demmel's backward error R̃ᵀR̃ = B̃ + Δ with |Δ| ≤ α d dᵀ, d_i = b̃_ii^½,
    gives ‖Δ‖₂ ≤ α·tr(B̃) < c; the η term covers underflow.) We use

        c = 10 · [(n + 2)·u·Σ_i b_ii + 6n(n + max_i b_ii)·η],

    every α_i replaced by its maximum and the whole constant taken 10 times, which also covers the round-off
    of evaluating c itself in floating point.
    """
    return _rump_c(diag.sum(-1), diag.amax(-1), diag.shape[-1])


def _rump_c(trace: torch.Tensor, max_diag: torch.Tensor, n: int) -> torch.Tensor:
    return _RUMP_SAFETY * ((n + 2) * U64 * trace + (6.0 * n * (n + max_diag)) * ETA64)


def cholesky_proves_pd(B: torch.Tensor, *, shift: bool = True) -> torch.Tensor:
    """True where the symmetric matrix of the lower triangle of B (..., n, n) is *proved* positive definite.

    ``shift=False`` skips Rump's shift (plain floating-point Cholesky): NOT a proof, for tests only.
    """
    Bs = sym_lower(B.to(torch.float64))
    d = Bs.diagonal(dim1=-2, dim2=-1).clone()
    return _entries_ok(Bs) & _chol_pd(Bs, d, shift=shift)


def sym_lower(A: torch.Tensor, sign: float = 1.0) -> torch.Tensor:
    """sign·(the symmetric matrix of A's lower triangle), a new tensor."""
    n = A.shape[-1]
    lower = torch.ones(n, n, dtype=torch.bool, device=A.device).tril_()
    S = torch.where(lower, A, A.mT)
    return S.neg_() if sign < 0 else S


def _entries_ok(M: torch.Tensor) -> torch.Tensor:
    """All |entries| ≤ 2^900 (nothing can overflow inside Cholesky), none NaN. M (..., n, n) -> (...,)."""
    return torch.linalg.vector_norm(M, torch.inf, dim=(-2, -1)) <= _BIG


def _chol_pd(Bs: torch.Tensor, d: torch.Tensor, *, shift: bool = True) -> torch.Tensor:
    """Cholesky of Bs (b, n, n) (exactly symmetric; its diagonal is overwritten) with diagonal d (b, n): d is
    ≤ the exact diagonal of the matrix to be proved positive definite, whose off-diagonal entries are Bs's."""
    ok = (d > 0).all(-1) & (torch.linalg.vector_norm(d, torch.inf, dim=-1) <= _BIG)  # NaN fails comparisons
    if shift:
        c = rump_shift(d.clamp_min(0))
        # diagonal rounded *down*: nextafter of the rounded-to-nearest difference is ≤ the exact d_i − c
        d = torch.nextafter(d - c[..., None], torch.full_like(d, -torch.inf))
    Bs.diagonal(dim1=-2, dim2=-1).copy_(d)
    L, info = torch.linalg.cholesky_ex(Bs)
    # with all entries ≤ 2^900 nothing can overflow; the finite-diagonal check is belt and braces
    return ok & (info == 0) & torch.isfinite(L.diagonal(dim1=-2, dim2=-1)).all(-1)


def _prove_upper(negA: torch.Tensor, a_diag: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """True where λ_max(A) < σ is proved. negA (b, n, n): −A, exactly symmetric, entries checked by
    :func:`_entries_ok` (its diagonal gets overwritten); a_diag (b, n): A's diagonal; σ (b,).

    B = σI − A with its diagonal rounded down (so B ⪯ σI − A exactly): B ≻ 0 proves σI − A ≻ 0.
    """
    d = torch.nextafter(sigma[:, None] - a_diag, torch.full_like(a_diag, -torch.inf))
    ok = torch.isfinite(sigma) & (sigma.abs() <= _BIG)
    return ok & _chol_pd(negA, d)


# --------------------------------------------------------------------------------------------- the fallback
def eigvalsh_upper(A: torch.Tensor) -> torch.Tensor:
    """The old path: float64 ``eigvalsh`` plus a backward-error allowance 16·n·ε·‖A‖_F. A (..., n, n)."""
    A = A.to(torch.float64)
    n = A.shape[-1]
    lam = torch.linalg.eigvalsh(A)[..., -1]
    fro = torch.linalg.matrix_norm(sym_lower(A))
    return lam + 16.0 * n * _EPS64 * fro + 16.0 * n * n * ETA64


# --------------------------------------------------------------------------------------------- the estimate
@dataclass
class Estimate:
    """Lanczos result per row: θ (top Ritz value, ≈ λ_max from below), err (estimated λ_max − θ ≥ 0),
    scale (max |Ritz value| ≈ ‖A‖₂, from below), steps (most Lanczos steps any row took)."""

    theta: torch.Tensor
    err: torch.Tensor
    scale: torch.Tensor
    steps: int


def start_vector(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """A fixed pseudo-random start vector (n,) (own generator: the global RNG is untouched; reproducible)."""
    g = torch.Generator().manual_seed(20200712)
    return torch.randn(n, generator=g, dtype=torch.float64).to(device)


def _check_points(kmax: int) -> list[int]:
    pts = [k for k in (8, 16, 24, 32, 40, 48, 56) if k < kmax]
    k = 64
    while k < kmax:
        pts.append(k)
        k += 16
    return [*pts, kmax]


def _ritz(alpha: torch.Tensor, beta: torch.Tensor, J: int) -> tuple[torch.Tensor, ...]:
    """Top/bottom Ritz values, the residual bound of the top one and the gap below it, from T_J."""
    T = torch.diag_embed(alpha[:, :J])
    if J > 1:
        off = torch.diag_embed(beta[:, :J - 1], offset=-1)
        T = T + off + off.mT
    vals, vecs = torch.linalg.eigh(T)
    top = vals[:, -1]
    resid = beta[:, J - 1].abs() * vecs[:, -1, -1].abs()  # ‖A y − θ y‖ for the top Ritz pair
    gap = (top - vals[:, -2]) if J > 1 else torch.full_like(top, torch.inf)
    return top, vals[:, 0], resid, gap


def lanczos(matvec: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], start: torch.Tensor, *,
            kmax: int = 200, tol: torch.Tensor | float = 1e-12) -> Estimate:
    """Batched Lanczos (three-term recurrence) for the top eigenvalue of b symmetric operators.

    ``matvec(X, rows)``: X (r, n) -> A_i x_i for each row (``rows``: the batch indices of the rows of X).
    ``start`` (b, n): start vectors (an operator living on a subspace, e.g. a support mask, gets start vectors
    in it). Stops once every row has err ≤ tol·scale (err = min(r, r²/gap), r the Ritz residual β_J|s_J|;
    ``tol`` a float or per row) or after kmax steps; converged rows leave the batch.

    No reorthogonalization: for the *extreme* eigenvalue this is standard and safe (Paige: in finite precision
    every Ritz value stays within round-off of [λ_min, λ_max]; lost orthogonality only makes copies of
    converged Ritz values), and a step stays one batched product. When β vanishes (an invariant subspace,
    e.g. the zero matrix) the row restarts from a fresh random vector in the same support (β = 0: a decoupled
    block, whose Ritz values are again Ritz values of A). The estimate carries no guarantee: that is the
    proof's job.
    """
    b, n = start.shape
    dev, dt = start.device, torch.float64
    tol = torch.as_tensor(tol, dtype=dt, device=dev).expand(b)
    kmax = max(1, kmax)
    alpha = torch.zeros(b, kmax, dtype=dt, device=dev)
    beta = torch.zeros(b, kmax, dtype=dt, device=dev)
    theta = torch.zeros(b, dtype=dt, device=dev)
    err = torch.zeros(b, dtype=dt, device=dev)
    scale = torch.zeros(b, dtype=dt, device=dev)
    steps = torch.zeros(b, dtype=torch.long, device=dev)
    norm0 = start.norm(dim=-1)
    live = (norm0 > 0).nonzero().flatten()  # rows still iterating (zero start: the zero operator, θ = 0)
    q = start[live] / norm0[live, None]
    q_prev = torch.zeros_like(q)
    b_prev = torch.zeros(live.numel(), dtype=dt, device=dev)
    running = torch.zeros(live.numel(), dtype=dt, device=dev)  # max |α|, ‖Aq‖ seen: ≈ ‖A‖ from below
    restart_gen = torch.Generator().manual_seed(7)
    checks = set(_check_points(kmax))
    for j in range(kmax):
        if live.numel() == 0:
            break
        w = matvec(q, live)
        a = (q * w).sum(-1)
        running = torch.maximum(running, w.norm(dim=-1))
        w = w - a[:, None] * q - b_prev[:, None] * q_prev
        bj = w.norm(dim=-1)
        alpha[live, j] = a
        brk = bj <= 1e-12 * running  # invariant subspace (to round-off): restart, decoupled
        if bool(brk.any()):
            r = torch.randn(live.numel(), n, generator=restart_gen, dtype=dt).to(dev) * (start[live] != 0)
            r = r / r.norm(dim=-1, keepdim=True).clamp_min(1e-300)
            w = torch.where(brk[:, None], r, w / bj.clamp_min(1e-300)[:, None])
            bj = torch.where(brk, torch.zeros_like(bj), bj)
        else:
            w = w / bj[:, None]
        beta[live, j] = bj
        q_prev, q, b_prev = q, w, bj
        J = j + 1
        if J in checks:
            top, bottom, resid, gap = _ritz(alpha[live], beta[live], J)
            e = resid * (resid / gap.clamp_min(1e-300)).clamp_max(1.0)  # min(r, r²/gap), no overflow
            theta[live], err[live], steps[live] = top, e, J
            scale[live] = torch.maximum(top.abs(), bottom.abs())
            keep = e > tol[live] * scale[live]
            live, q, q_prev = live[keep], q[keep], q_prev[keep]
            b_prev, running = b_prev[keep], running[keep]
    return Estimate(theta, err, scale, int(steps.max()) if b else 0)


def lanczos_tol(n: int | torch.Tensor) -> torch.Tensor | float:
    """Lanczos target accuracy (relative to ‖A‖) for an n×n proof: 1/20 of the Cholesky shift's usual size
    (≈ 10·(n+2)·n·u relative), at least 1e-12."""
    if isinstance(n, torch.Tensor):
        return (0.5 * (n + 2) * n * U64).clamp_min(1e-12).to(torch.float64)
    return max(1e-12, 0.5 * (n + 2) * n * U64)


# ----------------------------------------------------------------------------------------- estimate + proof
def initial_delta(a_diag: torch.Tensor, est: Estimate) -> torch.Tensor:
    """First δ to try: twice Rump's shift at σ ≈ θ (the proof needs σ ≳ λ_max + c) + 4× the Lanczos error."""
    n = a_diag.shape[-1]
    sigma = est.theta + est.err
    c = _rump_c((n * sigma - a_diag.sum(-1)).abs(), (sigma[:, None] - a_diag).abs().amax(-1), n)
    return 2.0 * c + 4.0 * est.err + 64.0 * n * U64 * est.scale


def upper_from_estimate(negA: torch.Tensor, est: Estimate, *, rtol: float = DEFAULT_RTOL, tries: int = 3,
                        entries_ok: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Proved bounds λ_max(A) < σ given a Lanczos estimate; returns (σ (b,), fell_back (b,) bool).

    ``negA`` (b, n, n): −A, which must be *exactly* symmetric (build it with a symmetric formula, or take
    ``sym_lower(A, -1)``); its diagonal is used as scratch and restored. Tries δ = δ₀, 10δ₀, 100δ₀ (at most
    ``tries``, never beyond rtol·scale); rows still unproved use :func:`eigvalsh_upper`. ``entries_ok`` (b,):
    the caller's proof that all |entries| ≤ 2^900 (NaN-free), else checked here with one pass.
    """
    b, n = negA.shape[0], negA.shape[-1]
    a_diag = -negA.diagonal(dim1=-2, dim2=-1)  # a new tensor
    entries_ok = _entries_ok(negA) if entries_ok is None else entries_ok
    delta = initial_delta(a_diag, est)
    cap = rtol * est.scale + 1e3 * n * n * ETA64
    sigma = torch.full((b,), torch.nan, dtype=torch.float64, device=negA.device)
    todo = (delta <= cap) & entries_ok
    for _ in range(max(1, tries)):
        idx = todo.nonzero().flatten()
        if idx.numel() == 0:
            break
        s = est.theta[idx] + delta[idx]
        M = negA if idx.numel() == b else negA[idx]
        ok = _prove_upper(M, a_diag[idx], s)
        sigma[idx[ok]] = s[ok]
        todo[idx[ok]] = False
        todo = todo & (delta < cap)
        delta = torch.minimum(delta * 10, cap)
    negA.diagonal(dim1=-2, dim2=-1).copy_(-a_diag)
    fell_back = torch.isnan(sigma)
    if bool(fell_back.any()):
        sigma[fell_back] = eigvalsh_upper(-negA[fell_back])
    return sigma, fell_back


def lambda_max_upper(A: torch.Tensor, *, method: EigMethod = "verified", rtol: float = DEFAULT_RTOL,
                     kmax: int = 200, chunk: int = 16) -> torch.Tensor:
    """Provable upper bound on λ_max of the symmetric float64 matrices A (..., n, n) (lower triangle): (...,).

    ``method="verified"``: Lanczos estimate + Cholesky proof (tight to ``rtol``·‖A‖₂, see the module
    docstring); ``"eigvalsh"``: full eigendecomposition plus a backward-error allowance (the reference path).
    """
    A = A.to(torch.float64)
    batch, n = A.shape[:-2], A.shape[-1]
    Ab = A.reshape(-1, n, n)
    if Ab.shape[0] == 0 or n == 0:
        return torch.zeros(batch, dtype=torch.float64, device=A.device)
    if method == "eigvalsh":
        return eigvalsh_upper(Ab).reshape(batch)
    if method != "verified":
        raise ValueError(f"Unknown eigenvalue method {method!r}; use 'verified' or 'eigvalsh'.")
    out = []
    for s in range(0, Ab.shape[0], chunk):
        negA = sym_lower(Ab[s:s + chunk], -1.0)
        # scale each matrix by 2^-e, max |entry| into [1/2, 1) (|e| ≤ 1000), so no norm over- or underflows:
        # exact, except that scaling *down* may round entries that turn subnormal, by ≤ η/2 each, so
        # ‖ΔA‖₂ ≤ n·η/2: added below
        big = torch.linalg.vector_norm(negA, torch.inf, dim=(-2, -1))
        e = torch.frexp(big).exponent.to(torch.int64)
        e = torch.where(torch.isfinite(big) & (big > 0), e, torch.zeros_like(e)).clamp(-1000, 1000)
        negA = negA * _pow2(-e)[:, None, None]
        x0 = start_vector(n, A.device).expand(negA.shape[0], n)
        est = lanczos(lambda X, rows, M=negA: -(M[rows] @ X[:, :, None])[:, :, 0], x0, kmax=kmax,
                      tol=lanczos_tol(n))
        ub = upper_from_estimate(negA, est, rtol=rtol)[0]
        ub = _next_up(ub + (e > 0).to(ub.dtype) * (n * ETA64))
        ub = ub * _pow2(e)  # exact unless the result is subnormal: then rounded up below
        out.append(torch.where(ub.abs() < 2.0 ** -1021, _next_up(ub), ub))
    return torch.cat(out).reshape(batch)


def _pow2(e: torch.Tensor) -> torch.Tensor:
    """2^e exactly, for integer e (int64) in the normal range [-1022, 1023], built from its bit pattern."""
    return ((e + 1023) << 52).view(torch.float64)


def _next_up(x: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(x, torch.full_like(x, torch.inf))
