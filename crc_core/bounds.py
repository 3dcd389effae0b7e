"""Global curvature bounds of the margin f = z_y - z_t (paper Theorems 3 and 4) and spectral norms.

Guarantee (certification grade): for every x in R^D and every returned pair,
    m · I ⪯ ∇²_x f(x) ⪯ M · I   and   ‖∇²_x f(x)‖ ≤ K,
computed in float64 from extreme eigenvalues that are *proved* (a Lanczos estimate verified by a Cholesky
factorization with Rump's round-off shift, :mod:`crc_core.verified_eig`; ``eig="eigvalsh"`` selects the older
full eigendecomposition) plus a rigorous allowance for forming the matrices, so the values are never
under-estimates. Power iteration (which converges from *below*) is used only in the differentiable training
regularizer :class:`CurvatureRegularizer`, never for certificates.

Shapes: y, t are LongTensors (P,) of ordered pairs; results are float64 tensors (P,) on the model's device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .errors import CRCError
from .models import MLP, require_curvature_model
from .verified_eig import (
    ETA64,
    EigMethod,
    Estimate,
    lambda_max_upper,
    lanczos,
    lanczos_tol,
    start_vector,
    sym_lower,
    upper_from_estimate,
)

Method = Literal["auto", "thm3", "thm4", "refined"]
_EPS64 = torch.finfo(torch.float64).eps


# --------------------------------------------------------------------------------------------- spectral norms
def _round_up(lam: torch.Tensor, n: int, scale: torch.Tensor) -> torch.Tensor:
    """Add a rigorous float64 round-off allowance: eigvalsh is backward stable, so |λ̂ - λ| ≤ c·n·ε·‖A‖_F."""
    return lam + 16.0 * n * _EPS64 * scale


def _formation_allowance(n_terms: int, n: int, fro: torch.Tensor, cmax: float | torch.Tensor = 1.0
                         ) -> torch.Tensor:
    """Bound on ‖Â − A‖₂ for A = diag(√c) W Wᵀ diag(√c) (n×n, or Wᵀ diag(c) W) formed in floating point with
    sums of n_terms products; fro = Σ_i c_i ‖W_i‖² = ‖diag(√c) W‖_F².

    Entrywise |Â_ij − A_ij| ≤ γ_{n_terms+4} (√c_i |W_i|)·(√c_j |W_j|)ᵀ ≤ γ_{n_terms+4} √c_i‖W_i‖ √c_j‖W_j‖
    (Cauchy–Schwarz), so ‖Â − A‖₂ ≤ γ_{n_terms+4} · fro. We add 16·max(n_terms, n)·ε·fro (ε = 2⁻⁵²), the
    constant the eigvalsh path uses (≥ 30× the bound; it keeps the two paths comparable), plus an underflow
    term: each of the ≤ n_terms + 4 operations per entry errs by at most η = 2⁻¹⁰⁷⁴ absolutely, over n rows.
    """
    return 16.0 * max(n_terms, n) * _EPS64 * fro + 4.0 * n * (n_terms + 4) * ETA64 * (1.0 + cmax)


def _round_up_float(x: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(x, torch.full_like(x, torch.inf))


def lambda_max_psd_gram(A: torch.Tensor, *, eig: EigMethod = "verified") -> torch.Tensor:
    """Provable upper bound on ‖A‖² = λ_max(AᵀA) for A (..., p, q), tight to ~1e-9 relative (≤ 1e-6 guaranteed
    unless the eigvalsh fallback is used, which is tight to ~1e-13).

    Uses the smaller Gram matrix in float64; ``eig`` chooses the proved-Lanczos path or full ``eigvalsh``.
    """
    A = A.to(torch.float64)
    G = A @ A.mT if A.shape[-2] <= A.shape[-1] else A.mT @ A
    n = max(A.shape[-2], A.shape[-1])
    fro = (A * A).sum((-2, -1))
    if eig == "eigvalsh":
        lam = torch.linalg.eigvalsh(G)[..., -1].clamp_min(0)
        return _round_up(lam, n, fro)
    lam = lambda_max_upper(G, method=eig).clamp_min(0)
    return _round_up_float(lam + _formation_allowance(n, G.shape[-1], fro))


def spectral_norm_exact(W: torch.Tensor, *, eig: EigMethod = "verified") -> torch.Tensor:
    """‖W‖₂ for W (..., p, q): a provable upper bound, tight to ~1e-9 relative (float64)."""
    return _round_up_float(lambda_max_psd_gram(W, eig=eig).sqrt())


def power_iteration(W: torch.Tensor, v: torch.Tensor | None = None, n_iter: int = 1
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Warm-started power iteration on WᵀW (no gradient). W (p, q), v (q,) -> (σ, u (p,), v (q,)).

    σ = uᵀWv is a *lower* estimate of ‖W‖ (exact in the limit). Not for certificates.
    """
    with torch.no_grad():
        if v is None:
            v = torch.randn(W.shape[-1], device=W.device, dtype=W.dtype)
        v = v / v.norm().clamp_min(1e-30)
        u = W @ v
        for _ in range(max(1, n_iter)):
            u = W @ v
            u = u / u.norm().clamp_min(1e-30)
            v = W.T @ u
            v = v / v.norm().clamp_min(1e-30)
        u = W @ v
        sigma = u.norm()
        u = u / sigma.clamp_min(1e-30)
    return sigma, u, v


class _SpectralNormPI(torch.autograd.Function):
    """σ(W) from power iteration with the gradient ∂σ/∂W = u vᵀ (paper App. C.1)."""

    @staticmethod
    def forward(ctx, W: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(u, v)
        return u @ W @ v

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        u, v = ctx.saved_tensors
        return grad * torch.outer(u, v), None, None


def spectral_norm_pi(W: torch.Tensor, state: dict | None = None, *, key: object = 0, n_iter: int = 1
                     ) -> torch.Tensor:
    """Differentiable ‖W‖ estimate by warm-started power iteration; gradient u vᵀ.

    ``state`` (a dict) keeps the right singular vector per ``key`` between calls, so one iteration per training
    step tracks the top singular pair. Returns a scalar (a lower estimate of ‖W‖).
    """
    v0 = None if state is None else state.get(key)
    if v0 is not None and (v0.shape[0] != W.shape[-1] or v0.device != W.device or v0.dtype != W.dtype):
        v0 = None
    _, u, v = power_iteration(W.detach(), v0, n_iter=n_iter if v0 is not None else max(n_iter, 25))
    if state is not None:
        state[key] = v
    return _SpectralNormPI.apply(W, u, v)


# --------------------------------------------------------------------------------------------- curvature bounds
@dataclass
class Bounds:
    """Global bounds for P pairs: m ⪯ ∇²f ⪯ M and ‖∇²f‖ ≤ K; each a float64 tensor (P,)."""

    y: torch.Tensor
    t: torch.Tensor
    m: torch.Tensor
    M: torch.Tensor
    K: torch.Tensor
    method: str

    def for_pairs(self, y: torch.Tensor, t: torch.Tensor) -> Bounds:
        """Select rows for the pairs (y, t) (each (N,)) from a table covering them."""
        C = int(max(self.y.max(), self.t.max())) + 1
        index = torch.full((C * C,), -1, dtype=torch.long, device=self.y.device)
        index[self.y * C + self.t] = torch.arange(self.y.numel(), device=self.y.device)
        y = torch.as_tensor(y, device=self.y.device).long()
        t = torch.as_tensor(t, device=self.y.device).long()
        rows = index[y * C + t]
        if (rows < 0).any():
            raise CRCError("Some requested (y, t) pairs are not in this bounds table.")
        return Bounds(y, t, self.m[rows], self.M[rows], self.K[rows], self.method)


def all_pairs(n_classes: int, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All C(C-1) ordered pairs (y, t), y != t: two LongTensors (C(C-1),)."""
    y, t = torch.meshgrid(torch.arange(n_classes, device=device), torch.arange(n_classes, device=device),
                          indexing="ij")
    keep = y != t
    return y[keep], t[keep]


def _check_pairs(model: MLP, y: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dev = model.layers[0].weight.device
    y = torch.as_tensor(y, device=dev).long().reshape(-1)
    t = torch.as_tensor(t, device=dev).long().reshape(-1)
    if y.shape != t.shape:
        raise CRCError(f"y and t must have the same length, got {y.numel()} and {t.numel()}.")
    C = model.n_classes
    if (y < 0).any() or (y >= C).any() or (t < 0).any() or (t >= C).any() or (y == t).any():
        raise CRCError(f"Pairs must satisfy 0 <= y, t < {C} and y != t.")
    return y, t


def _margin_rows(model: MLP, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    WL = model.layers[-1].weight.detach().to(torch.float64)
    return WL[y] - WL[t]  # (P, N_{L-1})


def theorem3(model: MLP, y: torch.Tensor, t: torch.Tensor, *, eig: EigMethod = "verified"
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Theorem 3 for 2-layer nets: (m, M), each (P,). M = λmax(W1ᵀ diag(p⊙w) W1), m = λmin(W1ᵀ diag(n⊙w) W1).

    p⊙w = max(h_U w, h_L w) ≥ 0 and n⊙w = min(h_U w, h_L w) ≤ 0 elementwise, so M = ‖diag(√(p⊙w)) W1‖² and
    m = -‖diag(√(-n⊙w)) W1‖², computed as proved upper bounds (see :func:`scaled_sq_norm`).
    """
    act = require_curvature_model(model)
    if model.depth != 2:
        raise CRCError(f"Theorem 3 applies to 2-layer networks; this one has {model.depth} layers (use Theorem 4).")
    y, t = _check_pairs(model, y, t)
    w = _margin_rows(model, y, t)
    W1 = model.layers[0].weight.detach().to(torch.float64)
    cp = torch.maximum(act.h_U * w, act.h_L * w).clamp_min(0)
    cn = (-torch.minimum(act.h_U * w, act.h_L * w)).clamp_min(0)
    both = scaled_sq_norm(W1, torch.cat([cp, cn]), eig=eig)  # one batch: the estimate runs on all 2P at once
    M, m = both[:cp.shape[0]], -both[cp.shape[0]:]
    return m, M


def scaled_sq_norm(W: torch.Tensor, c: torch.Tensor, chunk: int = 16, *, eig: EigMethod = "verified"
                    ) -> torch.Tensor:
    """‖diag(√c) W‖² for W (n, d) and many c (P, n) ≥ 0: provable upper bound, float64. Returns (P,).

    Rows with c_i = 0 do not contribute, so each pair only needs the k = #{c_i > 0} selected rows: the k×k
    matrix A = diag(√c_S) (W Wᵀ)_SS diag(√c_S) (or the d×d one Wᵀ diag(c) W when that is cheaper) has the same
    top eigenvalue; identical rows of c are computed once. ``eig="verified"`` (default): λ_max is estimated by
    Lanczos on all pairs at once (products with the shared W Wᵀ or W) and proved per pair by a Cholesky
    factorization of σI − A (:mod:`crc_core.verified_eig`; within 1e-6·λ_max, typically ~1e-9 above; the
    eigvalsh fallback keeps it sound if a proof fails). ``eig="eigvalsh"``: the older exact float64
    eigendecomposition per pair. Both add a rigorous allowance for the rounding in forming A.
    """
    if eig not in ("verified", "eigvalsh"):
        raise CRCError(f"Unknown eigenvalue method {eig!r}; use 'verified' or 'eigvalsh'.")
    W = W.to(torch.float64)
    c = c.to(torch.float64).clamp_min(0)
    if c.shape[0] > 1:  # identical rows (e.g. Theorem 3's p⊙w for (y, t) is n⊙w for (t, y)) are computed once
        uc, inv = torch.unique(c, dim=0, return_inverse=True)
        if uc.shape[0] < c.shape[0]:
            return scaled_sq_norm(W, uc, chunk, eig=eig)[inv]
    if eig == "eigvalsh":
        return scaled_sq_norm_eigvalsh(W, c, chunk)
    n, d = W.shape
    P, dev = c.shape[0], W.device
    if P == 0:
        return torch.zeros(0, dtype=torch.float64, device=dev)
    G = sym_lower(W @ W.T)  # shared n×n Gram, made exactly symmetric
    g_max = torch.linalg.vector_norm(G, torch.inf)
    fro = c @ (W * W).sum(1)  # ‖diag(√c) W‖_F² (= trace of A)
    r = c.sqrt()
    ks = (c > 0).sum(1)
    through_w = 2 * d < n  # matvecs via the n×d factor are cheaper than via G

    def matvec(X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        rr = r[rows]
        Y = rr * X
        Y = (Y @ W) @ W.T if through_w else Y @ G
        return rr * Y

    est = lanczos(matvec, start_vector(n, dev) * (c > 0), tol=lanczos_tol(ks))
    out = []
    for s in range(0, P, chunk):
        cc = c[s:s + chunk]
        k = int(ks[s:s + chunk].max())
        if k == 0:
            out.append(torch.zeros(cc.shape[0], dtype=torch.float64, device=dev))
            continue
        vals, idx = cc.topk(k, dim=1)  # zero-padded where a row has fewer positive entries
        idx, order = idx.sort(dim=1)  # ascending rows: cache-friendly gathers, and idx = arange when k = n
        vals = vals.gather(1, order)
        entries_ok = None  # upper_from_estimate checks |entries| ≤ 2^900 itself
        if 2 * k * d * d + d ** 3 / 3 < k ** 3 / 3:  # forming the d×d matrix is cheaper than a k×k Cholesky
            Ws = W[idx]  # (chunk, k, d)
            negA = sym_lower((Ws.mT * vals[:, None, :]) @ Ws, -1.0)
        else:  # −A_ij = G_ij · (−r_i r_j): symmetric by construction (r_i r_j = r_j r_i in floating point)
            rr = vals.sqrt()
            negA = torch.empty(cc.shape[0], k, k, dtype=torch.float64, device=dev)
            scale_buf = torch.empty(k, k, dtype=torch.float64, device=dev)
            for p in range(cc.shape[0]):
                torch.outer(rr[p], -rr[p], out=scale_buf)
                Gp = G if k == n else G.index_select(0, idx[p]).index_select(1, idx[p])
                torch.mul(Gp, scale_buf, out=negA[p])
            # |entries| ≤ max|G|·max c·(1+u)³: checked on these numbers instead of a pass over negA
            entries_ok = torch.full((cc.shape[0],), bool(g_max * cc.max() * 2.0 <= 2.0 ** 900), device=dev)
        sl = slice(s, s + chunk)
        sub = Estimate(est.theta[sl], est.err[sl], est.scale[sl], est.steps)
        lam, _fell_back = upper_from_estimate(negA, sub, entries_ok=entries_ok)
        alloc = _formation_allowance(max(n, d), n, fro[sl], cc.max())
        out.append(_round_up_float(lam.clamp_min(0) + alloc))
    return torch.cat(out)


def scaled_sq_norm_eigvalsh(W: torch.Tensor, c: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """The older path of :func:`scaled_sq_norm`: exact float64 eigvalsh of each k×k (or d×d) matrix."""
    n, d = W.shape
    out = []
    G = W @ W.T  # shared n×n Gram
    for s in range(0, c.shape[0], chunk):
        cc = c[s:s + chunk]
        k = int((cc > 0).sum(1).max()) if cc.numel() else 0
        if k == 0:
            out.append(torch.zeros(cc.shape[0], dtype=torch.float64, device=W.device))
            continue
        if k <= d:
            vals, idx = cc.topk(k, dim=1)  # zero-padded where a row has fewer positive entries
            r = vals.clamp_min(0).sqrt()
            Gs = G[idx[:, :, None], idx[:, None, :]]
            A = r[:, :, None] * Gs * r[:, None, :]
        else:
            A = (W.T * cc[:, None, :]) @ W  # (chunk, d, d)
        lam = torch.linalg.eigvalsh(A)[..., -1].clamp_min(0)
        fro = (cc[:, :, None] * W * W).sum((-2, -1))  # ‖diag(√c) W‖_F²
        out.append(_round_up(lam, max(n, d), fro))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64, device=W.device)


def _theorem4_parts(model: MLP, w: torch.Tensor, g: float, norm_fn) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """r^(I) (scalars, I=1..L-1) and S^(I) rows (P, N_I) of eqs. (5)-(6) for margin rows w (P, N_{L-1})."""
    Ws = model.weights()
    r = [norm_fn(Ws[0], 0)]
    for I in range(1, model.depth - 1):
        r.append(g * norm_fn(Ws[I], I) * r[-1])
    S = [w.abs()]
    for I in range(model.depth - 2, 0, -1):  # S^(I) = g S^(I+1) |W^(I+1)|
        S.append(g * S[-1] @ Ws[I].abs().to(S[-1].dtype))
    S.reverse()
    return r, S


def theorem4_terms(model: MLP, y: torch.Tensor, t: torch.Tensor, *, refined: bool = False,
                   eig: EigMethod = "verified") -> torch.Tensor:
    """Theorem 4's bound on each Lemma 1 term of ∇²(z_y − z_t), per pair: (P, L−1) float64 (hidden layer I = 1..L−1).

    Term I is B^(I)ᵀ diag(F^(L,I) ⊙ σ''(z^(I))) B^(I); for every input its spectral norm is at most
    h (r^(I))² max_j S^(I)_j (step (c) of the proof of Theorem 4, with the last layer's row replaced by
    w = W^(L)_y − W^(L)_t), or, ``refined``, h ‖diag(√S^(I)) W^(I)‖² (g r^(I−1))² (with (g r^(0))² := 1), never
    larger. Proved spectral norms (float64, rounded up) and a relative allowance for the products' round-off are
    included, so each entry is an upper bound and the row sums are :func:`theorem4`.
    """
    act = require_curvature_model(model)
    y, t = _check_pairs(model, y, t)
    # the terms depend on w only through |w|, the same for (y, t) and (t, y): compute each distinct row once
    aw, inv = torch.unique(_margin_rows(model, y, t).abs(), dim=0, return_inverse=True)
    Ws = [W.detach().to(torch.float64) for W in model.weights()]

    def norm(W: torch.Tensor, _i: int) -> torch.Tensor:
        return spectral_norm_exact(W, eig=eig)

    r, S = _theorem4_parts(_Detached(model, Ws), aw, act.g, norm)
    # floating-point products and the final sum: inflate by a relative allowance for the few roundings involved
    slack = 1.0 + 64 * model.depth * _EPS64 * max(W.shape[0] for W in Ws)
    terms = []
    for I in range(model.depth - 1):
        if refined:
            scale = 1.0 if I == 0 else (act.g * r[I - 1]) ** 2
            terms.append(act.h * scaled_sq_norm(Ws[I], S[I], eig=eig) * scale)
        else:
            terms.append(act.h * r[I] ** 2 * S[I].max(dim=1).values)
    return (torch.stack(terms, 1) * slack)[inv]


def theorem4(model: MLP, y: torch.Tensor, t: torch.Tensor, *, refined: bool = False,
             eig: EigMethod = "verified") -> torch.Tensor:
    """Theorem 4: K = h Σ_I (r^(I))² max_j S^(I)_j for the margin (last row replaced by w). Returns K (P,).

    ``refined``: the per-term bound h Σ_I ‖diag(√S^(I)) W^(I)‖² (g r^(I-1))² (with (g r^(0))² := 1), which is
    never larger, since ‖diag(√s) W‖² ≤ max(s)‖W‖². Both use proved spectral norms (float64, rounded up);
    ``eig``: how the extreme eigenvalues are obtained ("verified" or "eigvalsh", see :func:`scaled_sq_norm`).
    The per-layer terms are :func:`theorem4_terms`.
    """
    terms = theorem4_terms(model, y, t, refined=refined, eig=eig)
    # the sum of L−1 non-negative terms: round up by (L−1) ulps' worth
    return terms.sum(1) * (1.0 + 4 * terms.shape[1] * _EPS64)


class _Detached:
    """A view of an MLP whose weights() are given float64 copies (keeps _theorem4_parts shared)."""

    def __init__(self, model: MLP, Ws: list[torch.Tensor]) -> None:
        self._Ws, self.depth = Ws, model.depth

    def weights(self) -> list[torch.Tensor]:
        return self._Ws


def curvature_bounds(model: MLP, y: torch.Tensor | None = None, t: torch.Tensor | None = None, *,
                     method: Method = "auto", eig: EigMethod = "verified") -> Bounds:
    """Certification-grade global bounds (m, M, K) for pairs (y, t) (default: all C(C-1) ordered pairs).

    method: "thm3" (2-layer only: m, M from Theorem 3, K = max(|m|, M)); "thm4" (K from Theorem 4, m = -K,
    M = K); "refined" (per-term refined Theorem 4); "auto" = thm3 for 2 layers, refined otherwise.
    eig: "verified" (default: Lanczos estimates proved by Cholesky, ~1e-9 relative above the exact values) or
    "eigvalsh" (full eigendecompositions, the slower reference path); both are sound upper bounds.
    """
    require_curvature_model(model)
    if y is None or t is None:
        y, t = all_pairs(model.n_classes, device=model.layers[0].weight.device)
    y, t = _check_pairs(model, y, t)
    if method == "auto":
        method = "thm3" if model.depth == 2 else "refined"
    if method == "thm3":
        m, M = theorem3(model, y, t, eig=eig)
        K = torch.maximum(-m, M)
    elif method in ("thm4", "refined"):
        K = theorem4(model, y, t, refined=method == "refined", eig=eig)
        m, M = -K, K
    else:
        raise CRCError(f"Unknown bound method {method!r}; use 'auto', 'thm3', 'thm4' or 'refined'.")
    return Bounds(y, t, m, M, K, method)


# --------------------------------------------------------------------------------------------- regularizer
class CurvatureRegularizer:
    """Differentiable K(W, y, t) of Theorem 4 for training (paper eq. 7).

    Spectral norms come from one warm-started power-iteration step per call (gradient u vᵀ), so a call costs a
    few matrix-vector products plus the S recursion. The value is an *estimate* (power iteration converges from
    below): use :func:`curvature_bounds` for certificates.
    """

    def __init__(self, n_iter: int = 1) -> None:
        self.n_iter = n_iter
        self.state: dict[int, torch.Tensor] = {}

    def __call__(self, model: MLP, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """y, t: (B,) -> K (B,), differentiable w.r.t. the model's weights."""
        act = model.activation
        WL = model.layers[-1].weight
        w = WL[y] - WL[t]

        def norm(W: torch.Tensor, i: int) -> torch.Tensor:
            return spectral_norm_pi(W, self.state, key=i, n_iter=self.n_iter)

        r, S = _theorem4_parts(model, w, act.g, norm)
        K = 0.0
        for I in range(model.depth - 1):
            K = K + act.h * r[I] ** 2 * S[I].max(dim=1).values
        return K

    @torch.no_grad()
    def theorem3_estimate(self, model: MLP, y: torch.Tensor, t: torch.Tensor, n_iter: int = 4
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """Estimates of Theorem 3's m ≤ 0 and M ≥ 0 (each (B,)) of the (y, t) margins of a 2-layer net, for the CRT
        training attack: λmax(W1ᵀ diag(c) W1) for c = p⊙w and -n⊙w by power iteration on each pair present, warm
        started from the vectors of earlier calls (kept in ``state``; a pair's first call runs 50 iterations).
        Power iteration converges from below: never for certificates (use :func:`theorem3`)."""
        if model.depth != 2:
            raise CRCError(f"Theorem 3 applies to 2-layer networks; this one has {model.depth} layers.")
        act, C = model.activation, model.n_classes
        W1, WL = model.layers[0].weight.detach(), model.layers[-1].weight.detach()
        pairs, inv = torch.unique(y * C + t, return_inverse=True)
        w = WL[pairs // C] - WL[pairs % C]
        c = torch.cat([torch.maximum(act.h_U * w, act.h_L * w).clamp_min(0),
                       (-torch.minimum(act.h_U * w, act.h_L * w)).clamp_min(0)])  # (2P, n)
        V = self.state.get("theorem3")
        if V is None or V.shape != (2 * C * C, W1.shape[1]) or V.dtype != W1.dtype or V.device != W1.device:
            V = torch.zeros(2 * C * C, W1.shape[1], dtype=W1.dtype, device=W1.device)
        rows = torch.cat([pairs, pairs + C * C])
        v = V[rows]
        fresh = v.norm(dim=1) == 0
        if fresh.any():
            g = torch.Generator().manual_seed(0)
            v[fresh] = torch.randn(int(fresh.sum()), W1.shape[1], generator=g).to(v)
        for _ in range(max(n_iter, 50) if fresh.any() else n_iter):
            v = ((v @ W1.T) * c) @ W1
            v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-30)
        V[rows] = v
        self.state["theorem3"] = V
        lam = ((v @ W1.T) ** 2 * c).sum(dim=1)  # Rayleigh quotient vᵀ W1ᵀ diag(c) W1 v, ‖v‖ = 1
        P = pairs.shape[0]
        return -lam[P:][inv], lam[:P][inv]
