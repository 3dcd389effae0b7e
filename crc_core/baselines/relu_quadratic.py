"""Certified L2 radii for 2-layer ReLU networks through quadratic bounds (paper App. G), batched.

"2-layer" is the paper's count of linear layers: input → one hidden ReLU layer → logits, i.e.
``MLP(D, [H], C, "relu")`` (``model.depth == 2``, described as "2x[H]"). Deeper ReLU nets raise a CRCError.

For a ball ‖x − x0‖ ≤ ρ and a target t ≠ y (margin f = z_y − z_t):

1. pre-activation bounds d ≤ z ≤ u of every hidden unit (eqs. 81–82), :func:`preactivation_bounds`;
2. a quadratic lower or upper bound of each ReLU output on [d, u] (App. G's case formulas, Zhang et al. 2018a),
   the lower one where w_i = W²_{y,i} − W²_{t,i} > 0, the upper one where w_i < 0, :func:`relu_quadratic_bounds`;
3. hence f(x0 + δ) ≥ Q(δ) = Σ_i α_i (W¹δ)_i² + β·W¹δ + γ on the ball, :func:`margin_quadratic`;
4. the distance from x0 to {Q ≤ 0} by the S-procedure: for every λ ≥ 0 with I + λ∇²Q ⪰ 0,
   ½‖δ‖² ≥ inf_δ' ½‖δ'‖² + λ Q(δ') =: φ(λ) for all δ with Q(δ) ≤ 0 (weak duality). λ is chosen on the exact
   one-dimensional dual through an eigendecomposition of ∇²Q (its maximizer, or the smallest λ reaching the radius
   to be proved, which is all the bisection needs); the value φ(λ) is then *proved* at that λ
   (Cholesky proof of I + λ∇²Q ⪰ μI, then inf ≥ L(δ̂) − ‖∇L(δ̂)‖²/(2μ) at the computed minimizer δ̂), so a poor
   eigendecomposition can only make the bound smaller, never wrong, :func:`quadratic_distance_lower_bound`;
5. as Q ≤ f only on the ρ-ball, min(ρ, that distance) is a proven radius; bisection on ρ ∈ [ρ_low, ρ_high]
   = [0, 5] (the paper's) reports the last ρ proven (never a midpoint), :func:`certify_relu`.

Guarantee: no x with ‖x − x0‖ < radius changes the prediction, in exact arithmetic on the float64 model; the
float64 round-off of our own computation is covered by the named allowances below. The radius is capped below ρ_high.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..checks import check_images, check_labels
from ..errors import CRCError
from ..models import MLP, validate_model
from ..targets import TARGET_MODES, choose_targets
from ..tolerances import (
    DOMAIN_MARGIN,
    DUAL_BISECTION_STEPS,
    F64_SUM_RTOL,
    LAMBDA_CAP,
    MU_TRIES,
    RHO_TOL,
    TARGET_MARGIN,
)
from ..verified_eig import U64, cholesky_proves_pd

RHO_LOW = 0.0  # the paper's initial bisection bracket (App. G)
RHO_HIGH = 5.0
CHUNK_ROWS = 32  # (image, target) rows per batched eigendecomposition (memory: rows · D² float64)


# ------------------------------------------------------------------------------------------------ checks
def require_two_layer_relu(model: nn.Module) -> MLP:
    """Return ``model`` if it is a 2-layer (one hidden layer) ReLU MLP with finite weights, else raise CRCError."""
    if not isinstance(model, MLP):
        raise CRCError(f"The App. G ReLU certificate needs a crc_core.models.MLP, got {type(model).__name__}.")
    if model.activation_name != "relu":
        raise CRCError(f"The App. G quadratic certificate is for ReLU networks; this model uses "
                       f"{model.activation_name} (use the curvature certificate CRC instead).")
    if model.depth != 2:
        raise CRCError(f"The App. G quadratic certificate covers 2-layer ReLU networks (one hidden layer) only; "
                       f"this model has {model.depth} layers ({model.describe()}).")
    validate_model(model)
    return model


# ------------------------------------------------------------------------------------------------ steps 1-3
def preactivation_bounds(W1: torch.Tensor, b1: torch.Tensor, x0: torch.Tensor, rho: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eqs. (81)-(82): d ≤ W¹x + b¹ ≤ u for all ‖x − x0‖ ≤ ρ, widened by the round-off allowance.

    W1 (H, D), b1 (H,), x0 (N, D), ρ (N,), all float64. Returns (z0 = W¹x0 + b¹ as computed, d, u, z0_err), each
    (N, H), z0_err ≥ |computed z0 − exact z0|.
    """
    z0 = x0 @ W1.T + b1
    reach = rho[:, None] * torch.linalg.vector_norm(W1, dim=1)[None, :]
    z0_err = F64_SUM_RTOL * (x0.abs() @ W1.abs().T + b1.abs())
    slack = z0_err + F64_SUM_RTOL * reach
    return z0, z0 - reach - slack, z0 + reach + slack, z0_err


def relu_quadratic_bounds(d: torch.Tensor, u: torch.Tensor, upper: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coefficients (A, B, C) with A z² + B z + C ≤ relu(z) (``upper`` False) or ≥ relu(z) (``upper`` True)
    for every z ∈ [d, u]; all (..., H), elementwise. Stable units (u ≤ 0 or d ≥ 0) are exact (0 or z).

    Unstable units (d < 0 < u), App. G's cases with s = u − d:
    upper: |d| ≤ |u|: (−d z² + (u² + d²) z − u² d)/s² (tangent to z at u, through (d, 0));
           |d| ≥ |u|: u (z − d)²/s² (tangent to 0 at d, through (u, u));
    lower: 2|d| ≤ |u|: 0;  |d| ≥ 2|u|: z;  otherwise z (z − d)/s (through (d, 0), (0, 0), (u, u)).
    """
    s = (u - d).clamp_min(torch.finfo(d.dtype).tiny)
    s2 = s * s
    zero, one = torch.zeros_like(d), torch.ones_like(d)
    right = d.abs() <= u.abs()
    ua = torch.where(right, -d / s2, u / s2)
    ub = torch.where(right, (u * u + d * d) / s2, -2 * u * d / s2)
    uc = torch.where(right, -u * u * d / s2, u * d * d / s2)
    lo_zero, lo_lin = 2 * d.abs() <= u.abs(), d.abs() >= 2 * u.abs()
    la = torch.where(lo_zero | lo_lin, zero, 1 / s)
    lb = torch.where(lo_zero, zero, torch.where(lo_lin, one, -d / s))
    A, B, C = (torch.where(upper, a, b) for a, b in ((ua, la), (ub, lb), (uc, zero)))
    dead, alive = u <= 0, d >= 0
    A = torch.where(dead | alive, zero, A)
    B = torch.where(dead, zero, torch.where(alive, one, B))
    C = torch.where(dead | alive, zero, C)
    return A, B, C


@dataclass
class MarginQuadratic:
    """Q(δ) = Σ_i α_i (W¹δ)_i² + β·W¹δ + γ ≤ f(x0 + δ) on the ρ-ball, per row: α, β (N, H), γ (N,)."""

    alpha: torch.Tensor
    beta: torch.Tensor
    gamma: torch.Tensor


def margin_quadratic(z0: torch.Tensor, d: torch.Tensor, u: torch.Tensor, z0_err: torch.Tensor, w: torch.Tensor,
                     c0: torch.Tensor) -> MarginQuadratic:
    """Step 3: f = Σ_i w_i relu(z_i) + c0 ≥ Q, with w = W²_y − W²_t (N, H), c0 = b²_y − b²_t (N,),
    z = z0 + W¹δ; z0, d, u, z0_err (N, H) from :func:`preactivation_bounds`. γ carries the round-off allowance:
    the coefficients' rounding (relative to |A|m² + |B|m + |C|, m = max(|d|, |u|)) and z0's error times the
    quadratic's slope bound 2|A|m + |B| on [d, u]."""
    A, B, C = relu_quadratic_bounds(d, u, upper=w < 0)
    alpha = w * A
    beta = w * (2 * A * z0 + B)
    gamma = (w * ((A * z0 + B) * z0 + C)).sum(1) + c0
    m = torch.maximum(d.abs(), u.abs())
    scale = (w.abs() * (A.abs() * m * m + B.abs() * m + C.abs())).sum(1) + c0.abs()
    shift = (w.abs() * (2 * A.abs() * m + B.abs()) * z0_err).sum(1)
    return MarginQuadratic(alpha, beta, gamma - F64_SUM_RTOL * scale - (1 + F64_SUM_RTOL) * shift)


# ------------------------------------------------------------------------------------------------ step 4
def _dual_argmax(lam_eig: torch.Tensor, g2: torch.Tensor, c: torch.Tensor, lam_hi: torch.Tensor) -> torch.Tensor:
    """argmax over λ ∈ [0, λ_hi] of φ(λ) = λc − ½λ² Σ_i g2_i / (1 + λ e_i) (concave): bisection on the sign of
    φ'(λ) = c − Σ_i g2_i (λ + ½λ² e_i)/(1 + λ e_i)². lam_eig, g2 (N, k); c, λ_hi (N,)."""
    lo, hi = torch.zeros_like(c), lam_hi.clone()

    def slope(lam: torch.Tensor) -> torch.Tensor:
        den = 1 + lam[:, None] * lam_eig
        return c - (g2 * (lam[:, None] + 0.5 * lam[:, None] ** 2 * lam_eig) / (den * den)).sum(1)

    rising_at_end = slope(hi) > 0
    for _ in range(DUAL_BISECTION_STEPS):
        mid = (lo + hi) / 2
        up = slope(mid) > 0
        lo, hi = torch.where(up, mid, lo), torch.where(up, hi, mid)
    return torch.where(rising_at_end, lam_hi, lo)


def _dual_value(lam_eig: torch.Tensor, g2: torch.Tensor, c: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """φ(λ) = λc − ½λ² Σ_i g2_i / (1 + λ e_i) (N,), unproved (the estimate that guides the search)."""
    return lam * c - 0.5 * lam * lam * (g2 / (1 + lam[:, None] * lam_eig)).sum(1)


def _smallest_lambda_reaching(lam_eig: torch.Tensor, g2: torch.Tensor, c: torch.Tensor, lam_max: torch.Tensor,
                              target: torch.Tensor) -> torch.Tensor:
    """The smallest λ ∈ [0, λ_max] with φ(λ) ≥ target (φ increases on [0, argmax]); λ_max where φ(λ_max) < target."""
    lo, hi = torch.zeros_like(lam_max), lam_max.clone()
    for _ in range(DUAL_BISECTION_STEPS):
        mid = (lo + hi) / 2
        up = _dual_value(lam_eig, g2, c, mid) >= target
        lo, hi = torch.where(up, lo, mid), torch.where(up, mid, hi)
    return hi


def _proved_mu(W1: torch.Tensor, alpha: torch.Tensor, lam: torch.Tensor, mu_est: torch.Tensor) -> torch.Tensor:
    """The largest μ among MU_TRIES·μ_est with I + λ∇²Q − μI proved positive definite (Rump's Cholesky test),
    0 where none is. ∇²Q = 2 W¹ᵀ diag(α) W¹; the matrix is formed with its round-off covered by a diagonal shift."""
    c = 2 * lam[:, None] * alpha  # (N, H): λ∇²Q = W¹ᵀ diag(c) W¹
    # |computed − exact| entrywise ≤ F64_SUM_RTOL·(|W¹|ᵀ|c||W¹|), whose spectral norm ≤ its trace tr; the
    # 4u(1 + tr) covers the rounding of adding the diagonal shift
    tr = (c.abs() * (W1 * W1).sum(1)[None, :]).sum(1)
    err = F64_SUM_RTOL * tr + 4 * U64 * (1 + tr)
    mu = torch.zeros_like(lam)
    for frac in MU_TRIES:
        todo = ((mu == 0) & (mu_est > 0)).nonzero()[:, 0]
        if todo.numel() == 0:
            break
        trial = frac * mu_est[todo]
        Mt = (W1.T * c[todo, None, :]) @ W1  # (n, D, D), one GEMM
        Mt.diagonal(dim1=1, dim2=2).add_((1 - trial - err[todo])[:, None])
        mu[todo] = torch.where(cholesky_proves_pd(Mt), trial, mu[todo])
    return mu


def _proved_dual_value(W1: torch.Tensor, q: MarginQuadratic, lam: torch.Tensor, delta: torch.Tensor,
                       mu: torch.Tensor) -> torch.Tensor:
    """A proved lower bound on inf_δ ½‖δ‖² + λQ(δ), from any point δ̂ (N, D) and μ ≤ λ_min(I + λ∇²Q):
    L(δ̂) − ‖∇L(δ̂)‖²/(2μ) (strong convexity), both evaluated with round-off allowances; −inf where μ = 0."""
    v = delta @ W1.T  # (N, H) = W¹δ̂
    dn = delta.norm(dim=1)
    v_err = F64_SUM_RTOL * dn[:, None] * torch.linalg.vector_norm(W1, dim=1)[None, :]  # |v − exact| ≤ this
    quad = (q.alpha * v * v).sum(1) + (q.beta * v).sum(1) + q.gamma
    L = 0.5 * dn * dn + lam * quad
    L_err = F64_SUM_RTOL * (0.5 * dn * dn + lam * ((q.alpha.abs() * v * v).sum(1) + (q.beta * v).abs().sum(1)
                                                    + q.gamma.abs()))
    L_err = L_err + lam * ((2 * q.alpha.abs() * v.abs() + q.beta.abs()) * v_err).sum(1) * (1 + F64_SUM_RTOL)
    inner = 2 * q.alpha * v + q.beta  # (N, H)
    grad = delta + lam[:, None] * (inner @ W1)
    w_fro = torch.linalg.matrix_norm(W1, "fro")
    g_err = F64_SUM_RTOL * (dn + lam * w_fro * (inner.norm(dim=1) + 2 * q.alpha.abs().amax(1) * w_fro * dn))
    g_norm = grad.norm(dim=1) + g_err
    val = L - L_err - g_norm * g_norm / (2 * mu.clamp_min(torch.finfo(mu.dtype).tiny))
    return torch.where(mu > 0, val, torch.full_like(val, -math.inf))


def quadratic_distance_lower_bound(W1: torch.Tensor, q: MarginQuadratic, basis: torch.Tensor | None = None,
                                   R: torch.Tensor | None = None, *, at_least: torch.Tensor | None = None
                                   ) -> torch.Tensor:
    """Step 4: a proved lower bound (N,) float64 on min ‖δ‖ subject to Q(δ) ≤ 0 (0 where Q(0) ≤ 0). W1 (H, D)
    float64; q per row (N rows).

    ``basis``, ``R``: a factorization W¹ᵀ = basis·R (basis (D, k) orthonormal columns, R (k, H)), e.g. from
    ``torch.linalg.qr(W1.T)``; it only chooses λ (k = min(H, D) sized eigenproblems), never the value proved.
    ``at_least`` (N,): rows whose unproved dual estimate is below it are not proved and get 0 (a valid bound),
    which saves the D×D proof where its result would not be used.
    """
    if basis is None or R is None:
        basis, R = torch.linalg.qr(W1.T)
    K = 2 * R @ (q.alpha[:, :, None] * R.T)  # (N, k, k): ∇²Q in the basis
    h = q.beta @ R.T  # (N, k): ∇Q(0) in the basis
    e, V = torch.linalg.eigh(0.5 * (K + K.transpose(1, 2)))
    e_min = e[:, 0].clamp_max(0)  # λ_min(∇²Q) ≥ this up to round-off (0 off the basis span when k < D)
    lam_hi = torch.where(e_min < 0, (1 - DOMAIN_MARGIN) / (-e_min).clamp_min(1e-300),
                         torch.full_like(e_min, LAMBDA_CAP))
    lam_hi = lam_hi.clamp_max(LAMBDA_CAP)
    gt = (V.transpose(1, 2) @ h[:, :, None])[:, :, 0]  # (N, k)
    lam = _dual_argmax(e, gt * gt, q.gamma, lam_hi)
    if at_least is not None:  # the smallest λ that reaches at_least (with a margin): keeps the proof well scaled
        lam = _smallest_lambda_reaching(e, gt * gt, q.gamma, lam, 0.5 * (at_least * (1 + TARGET_MARGIN)) ** 2)
    s = -(lam[:, None] * gt) / (1 + lam[:, None] * e)
    estimate = (2 * _dual_value(e, gt * gt, q.gamma, lam).clamp_min(0)).sqrt()  # sqrt(2φ(λ)), unproved
    todo = (q.gamma > 0) & (estimate > 0)
    if at_least is not None:
        todo &= estimate >= at_least
    dist = torch.zeros_like(q.gamma)
    if todo.any():
        qt = MarginQuadratic(q.alpha[todo], q.beta[todo], q.gamma[todo])
        delta = (V[todo] @ s[todo, :, None])[:, :, 0] @ basis.T  # (n, D): the minimizer of ½‖δ‖² + λQ(δ)
        mu = _proved_mu(W1, qt.alpha, lam[todo], 1 + lam[todo] * e_min[todo])
        val = _proved_dual_value(W1, qt, lam[todo], delta, mu)
        dist[todo] = (2 * val.clamp_min(0)).sqrt()  # λ = 0 gives inf = 0: the bound is never below that
    return dist


# ------------------------------------------------------------------------------------------------ step 5
@dataclass
class ReluCertificate:
    """App. G certificates for B images.

    Per image (B,): pred, label, correct, radius (float64, min over the targets of the proven radii; 0 when
    misclassified), target (the arg-min class, −1 when misclassified). radius_by_class (B, C): per-target proven
    radius (nan where not computed, e.g. t = y; targets dropped early keep the value proven then). Per (image,
    target) row (B, T), row j of image i being class target_by_row[i, j]: rho_low (the last ρ the bisection
    proved), rho_high (the smallest ρ it failed to prove: NOT an upper bound on the true distance).
    n_steps: bisection steps; targets: the target mode.
    """

    pred: torch.Tensor
    label: torch.Tensor
    correct: torch.Tensor
    radius: torch.Tensor
    target: torch.Tensor
    radius_by_class: torch.Tensor
    target_by_row: torch.Tensor
    rho_low: torch.Tensor
    rho_high: torch.Tensor
    n_steps: int
    targets: str

    def certified(self, rho: float) -> torch.Tensor:
        """(B,) bool: correctly classified and radius ≥ ρ."""
        return self.correct & (self.radius >= rho)


def relu_distance_at(model: MLP, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, rho: torch.Tensor, *,
                     at_least: torch.Tensor | None = None,
                     factor: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Steps 1-4 for N rows at one radius each: x0 (N, D) float64, y, t (N,), ρ (N,) > 0. Returns a proved lower
    bound (N,) on the distance from x0 to {Q ≤ 0}; min(ρ, it) is a proven radius for (y, t) (f ≥ Q on the ρ-ball).
    ``at_least`` (N,), ``factor`` (the QR factors of W¹ᵀ, reused across calls): see
    :func:`quadratic_distance_lower_bound`."""
    W1, b1 = model.layers[0].weight.double(), model.layers[0].bias.double()
    W2, b2 = model.layers[1].weight.double(), model.layers[1].bias.double()
    basis, R = torch.linalg.qr(W1.T) if factor is None else factor
    out = torch.empty(x0.shape[0], dtype=torch.float64, device=x0.device)
    for s in range(0, x0.shape[0], CHUNK_ROWS):
        sl = slice(s, s + CHUNK_ROWS)
        z0, d, u, z0_err = preactivation_bounds(W1, b1, x0[sl], rho[sl])
        q = margin_quadratic(z0, d, u, z0_err, W2[y[sl]] - W2[t[sl]], b2[y[sl]] - b2[t[sl]])
        out[sl] = quadratic_distance_lower_bound(W1, q, basis, R,
                                                 at_least=None if at_least is None else at_least[sl])
    return out


def _check_options(targets: str, rho_low: float, rho_high: float, rho_tol: float) -> None:
    if targets not in TARGET_MODES:
        raise CRCError(f"Unknown target mode {targets!r}; use one of {', '.join(TARGET_MODES)}.")
    vals = (rho_low, rho_high, rho_tol)
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in vals) or not 0 <= rho_low < rho_high \
            or rho_tol <= 0:
        raise CRCError(f"Need finite 0 ≤ rho_low < rho_high and rho_tol > 0, got rho_low={rho_low!r}, "
                       f"rho_high={rho_high!r}, rho_tol={rho_tol!r}.")


def _bisect(model: MLP, xr: torch.Tensor, yy: torch.Tensor, tt: torch.Tensor, active: torch.Tensor, n_images: int,
            rho_low: float, rho_high: float, rho_tol: float
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Bisection on ρ for N = n_images·T rows (image-major): xr (N, D) float64, yy, tt (N,), active (N,) bool.
    Returns (proven radius, last ρ proven, smallest ρ not proven, each (N,); steps). Only a proof of the tested ρ is
    attempted (the bisection needs nothing else)."""
    lo = torch.full((xr.shape[0],), float(rho_low), dtype=torch.float64, device=xr.device)
    hi = torch.full_like(lo, float(rho_high))
    best = torch.zeros_like(lo)
    active = active.clone()
    n_steps = max(1, math.ceil(math.log2((rho_high - rho_low) / rho_tol)))
    basis, R = torch.linalg.qr(model.layers[0].weight.double().T)
    for _ in range(n_steps):
        idx = active.nonzero()[:, 0]
        if idx.numel() == 0:
            break
        rho = (lo[idx] + hi[idx]) / 2
        dist = relu_distance_at(model, xr[idx], yy[idx], tt[idx], rho, at_least=rho, factor=(basis, R))
        best[idx] = torch.maximum(best[idx], torch.minimum(dist, rho))
        ok = dist >= rho
        lo[idx], hi[idx] = torch.where(ok, rho, lo[idx]), torch.where(ok, hi[idx], rho)
        # a target proven beyond another target's failed ρ (≥ that target's final radius) cannot be the minimum
        min_hi = hi.reshape(n_images, -1).min(1).values.repeat_interleave(xr.shape[0] // n_images)
        active &= best <= min_hi
    return best, lo, hi, n_steps


def _prepare(model: MLP, x: torch.Tensor, labels: torch.Tensor | None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checked inputs: (x0 (B, D), logits (B, C), pred (B,), label (B,): the prediction where labels is None)."""
    x0 = check_images(model, x)
    logits = model(x0.to(model.layers[0].weight.dtype))
    pred = logits.argmax(1)
    label = pred.clone() if labels is None else check_labels(labels, x0.shape[0], model.n_classes, x0.device)
    return x0, logits, pred, label


@torch.no_grad()
def certified_at(model: MLP, x: torch.Tensor, labels: torch.Tensor | None, rho: float, *,
                 targets: str = "all") -> torch.Tensor:
    """(B,) bool: image correctly classified and its radius against the chosen targets proven ≥ ρ, for images
    x (B, D) of a 2-layer ReLU MLP (labels None: the prediction). One App. G proof at ρ per (image, target), no
    bisection: the cheap form of ``certify_relu(...).certified(rho)`` for a certified accuracy at one ρ (it can
    prove a little more than the bisection, which proves its own sequence of radii, never less soundly).
    Guarantee: where True, no x' with ‖x' − x0‖ < ρ changes the prediction (exact arithmetic, float64 model)."""
    require_two_layer_relu(model)
    _check_options(targets, RHO_LOW, RHO_HIGH, RHO_TOL)
    if isinstance(rho, bool) or not isinstance(rho, int | float) or not math.isfinite(rho) or rho <= 0:
        raise CRCError(f"The radius ρ must be a positive finite number, got {rho!r}.")
    x0, logits, pred, label = _prepare(model, x, labels)
    correct = pred == label
    T = choose_targets(logits, pred, targets)  # (B, T)
    B, nT = T.shape
    rows_b = correct.nonzero()[:, 0].repeat_interleave(nT)
    ok = torch.zeros(B, nT, dtype=torch.bool, device=x0.device)
    if rows_b.numel():
        r = torch.full((rows_b.numel(),), float(rho), dtype=torch.float64, device=x0.device)
        dist = relu_distance_at(model, x0.double()[rows_b], pred[rows_b], T[correct].reshape(-1), r, at_least=r)
        ok[correct] = (dist >= r).reshape(-1, nT)
    return correct & ok.all(1)


@torch.no_grad()
def certify_relu(model: MLP, x: torch.Tensor, labels: torch.Tensor | None = None, *, targets: str = "all",
                 rho_low: float = RHO_LOW, rho_high: float = RHO_HIGH, rho_tol: float = RHO_TOL
                 ) -> ReluCertificate:
    """App. G certified L2 radii for images x (B, D) (or (B, 1, 28, 28)) of a 2-layer ReLU MLP.

    labels (B,): a misclassified image gets radius 0; without labels the prediction is certified. targets:
    "all" (default: min over t ≠ y, the radius of the classifier), "runner-up" (the paper's), "random", "least".
    Bisection on ρ in [rho_low, rho_high] until the bracket is ≤ rho_tol; the radius of a target is the last ρ
    proven (rho_low; rarely a little more, when a failed step still proved a distance above it); radii are
    < rho_high. With several targets, a target is no longer refined once it is proven beyond another target's
    failed ρ (it cannot be the minimum): its radius (radius_by_class (B, C)) is then proven but not refined;
    ``radius`` is unaffected.
    Guarantee: no x' with ‖x' − x0‖ < radius changes the prediction (exact arithmetic on the float64 model).
    Cost: per step one eigendecomposition of size min(H, D) and one Cholesky of size D per (image, target).
    """
    require_two_layer_relu(model)
    _check_options(targets, rho_low, rho_high, rho_tol)
    x0, logits, pred, label = _prepare(model, x, labels)
    B, C, dev = x0.shape[0], model.n_classes, x0.device
    correct = pred == label
    T = choose_targets(logits, pred, targets)
    nT = T.shape[1]
    rows_b = torch.arange(B, device=dev).repeat_interleave(nT)
    best, lo, hi, n_steps = _bisect(model, x0.double()[rows_b], pred[rows_b], T.reshape(-1), correct[rows_b], B,
                                    rho_low, rho_high, rho_tol)
    radT = torch.where(correct[:, None], best.reshape(B, nT), torch.zeros(B, nT, dtype=torch.float64, device=dev))
    j = radT.argmin(1)
    radius_by_class = torch.full((B, C), float("nan"), dtype=torch.float64, device=dev).scatter_(1, T, radT)
    return ReluCertificate(
        pred=pred, label=label, correct=correct, radius=radT.gather(1, j[:, None])[:, 0],
        target=torch.where(correct, T.gather(1, j[:, None])[:, 0], torch.full_like(pred, -1)),
        radius_by_class=radius_by_class, target_by_row=T, rho_low=lo.reshape(B, nT), rho_high=hi.reshape(B, nT),
        n_steps=n_steps, targets=targets)
