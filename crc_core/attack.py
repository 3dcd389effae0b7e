"""Attacks: the curvature attack (paper Algorithm 2, App. C.3/C.5) and L2 PGD, batched.

Curvature attack: for target t, minimise f(x) = z_y(x) - z_t(x) over ‖x - x0‖ ≤ ρ through the dual
max_{η ≥ -m} min_x f(x) + η/2 (‖x - x0‖² - ρ²), convex in x for η ≥ -m. The inner problem is solved by the MM
step x ← (K x + η x0 - ∇f(x)) / (K + η); η by bisection on ‖x - x0‖ vs ρ. ``success`` (‖x - x0‖ = ρ at the
solution) certifies primal = dual: x is then the *worst-case* perturbation in the ball (Theorem 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .bounds import Bounds, curvature_bounds
from .errors import CRCError
from .hessian import MarginOracle
from .models import MLP, require_curvature_model
from .solvers.mm import bisect_eta, mm_minimise
from .tolerances import (
    ATTACK_ETA_TOP,
    ATTACK_SOLVED_TOL,
    ATTACK_SUCCESS_RTOL,
    CURVATURE_FLOOR,
    MM_STATIONARY_TOL,
    PGD_STEP_SCALE,
    TINY_NORM,
)


@dataclass
class AttackResult:
    """Per (image, target) rows, N of them.

    x (N, D) attack points (always inside the ρ-ball); margin f(x) (N,); distance ‖x - x0‖ (N,);
    success (N,) bool: ‖x - x0‖ = ρ up to ``tol`` with the inner problem solved, i.e. x is provably the worst case;
    fooled (N,) bool: f(x) < 0; eta (N,); n_grad (N,) gradient evaluations spent.
    """

    x: torch.Tensor
    margin: torch.Tensor
    distance: torch.Tensor
    success: torch.Tensor
    fooled: torch.Tensor
    eta: torch.Tensor
    n_grad: torch.Tensor


def _check_rho(rho: float | torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    r = torch.as_tensor(rho, dtype=like.dtype, device=like.device).reshape(-1)
    if not torch.isfinite(r).all() or (r <= 0).any():
        raise CRCError(f"The radius ρ must be a positive finite number, got {rho!r}.")
    return r.expand(n) if r.numel() == 1 else r


def _pair_bounds(model: MLP, y: torch.Tensor, t: torch.Tensor, bounds: Bounds | None, m, K, like: torch.Tensor):
    if m is not None and K is not None:
        return (torch.as_tensor(m, dtype=like.dtype, device=like.device).expand(len(y)),
                torch.as_tensor(K, dtype=like.dtype, device=like.device).expand(len(y)))
    if bounds is None:
        pairs = torch.unique(y * model.n_classes + t)
        bounds = curvature_bounds(model, pairs // model.n_classes, pairs % model.n_classes)
    b = bounds.for_pairs(y, t)
    return b.m.to(like), b.K.to(like)


@torch.no_grad()
def curvature_attack(model: MLP, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, rho: float | torch.Tensor, *,
                     bounds: Bounds | None = None, m: torch.Tensor | None = None, K: torch.Tensor | None = None,
                     n_outer: int = 30, n_inner: int = 20, tol: float = MM_STATIONARY_TOL,
                     success_rtol: float = ATTACK_SUCCESS_RTOL) -> AttackResult:
    """Algorithm 2 for N rows: x0 (N, D), y (N,), t (N,), ρ scalar or (N,).

    Curvature bounds come from ``bounds`` (a table), explicit per-row ``m``/``K`` (e.g. training-time estimates),
    or are computed (certification grade) for the pairs present. Iteration counts default to the paper's.
    The inner problem min_x f(x) + η/2 ‖x - x0‖² is solved by the MM step shared with Algorithm 1
    (crc_core.solvers.mm, prox = η, lin = 1); η moves by bisection on ‖x - x0‖ vs ρ.
    """
    require_curvature_model(model)
    x0 = model.flatten_input(x0).detach()
    if not torch.isfinite(x0).all():
        raise CRCError("Input images contain NaN or infinite values.")
    N = x0.shape[0]
    y = torch.as_tensor(y, device=x0.device).long().reshape(-1)
    t = torch.as_tensor(t, device=x0.device).long().reshape(-1)
    rho_t = _check_rho(rho, N, x0)
    mm, KK = _pair_bounds(model, y, t, bounds, m, K, x0)
    oracle = MarginOracle(model, y, t)
    mm = torch.minimum(mm, torch.zeros_like(mm))
    KK = torch.maximum(KK, -mm).clamp_min(CURVATURE_FLOOR)
    eta_lo, eta_hi = -mm, ATTACK_ETA_TOP * (1 - mm)
    eta = (eta_lo + eta_hi) / 2
    ones = torch.ones_like(eta)
    x = x0.clone()
    best_x, best_f = x0.clone(), torch.full((N,), float("inf"), dtype=x0.dtype, device=x0.device)
    n_grad = torch.zeros(N, dtype=torch.long, device=x0.device)
    solved = torch.zeros(N, dtype=torch.bool, device=x0.device)
    for _ in range(n_outer):
        x, n = mm_minimise(oracle, x, x0, eta, ones, KK, n_inner=n_inner, tol=tol)
        n_grad += n
        f, g = oracle(x)
        solved = (g + eta[:, None] * (x - x0)).norm(dim=1) < max(tol, ATTACK_SOLVED_TOL)
        d = (x - x0).norm(dim=1)
        better = (d <= rho_t * (1 + success_rtol)) & (f < best_f)
        best_x = torch.where(better[:, None], x, best_x)
        best_f = torch.where(better, f, best_f)
        eta_lo, eta_hi, eta = bisect_eta(eta_lo, eta_hi, eta, d >= rho_t)  # outside the ball: more penalty
    # a final point inside the ball: radial projection of the best feasible iterate
    d = (best_x - x0).norm(dim=1)
    scale = torch.where(d > rho_t, rho_t / d.clamp_min(TINY_NORM), torch.ones_like(d))
    xa = x0 + (best_x - x0) * scale[:, None]
    fa, _ = oracle(xa)
    da = (xa - x0).norm(dim=1)
    success = solved & ((da - rho_t).abs() <= success_rtol * rho_t)
    return AttackResult(xa, fa, da, success, fa < 0, eta, n_grad)


def pgd_attack(model: torch.nn.Module, x0: torch.Tensor, y: torch.Tensor, rho: float | torch.Tensor, *,
               target: torch.Tensor | None = None, steps: int = 50, restarts: int = 1,
               step_size: float | None = None, clamp: bool = True, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """L2 PGD (Madry et al.) on the margin: untargeted (minimise z_y - max_{j≠y} z_j) or targeted (z_y - z_target).

    x0 (N, D), y (N,), target (N,) or None, ρ a scalar or per row (N,). Returns (x_adv (N, D) with
    ‖x_adv - x0‖ ≤ ρ, fooled (N,) bool), keeping across restarts (the first from x0, the others from random points
    in the ball) the point with the lowest margin. ``clamp`` keeps pixels in [0, 1].
    """
    x0 = x0.reshape(x0.shape[0], -1).detach()
    r = _check_rho(rho, x0.shape[0], x0)[:, None]  # (N, 1)
    step = (torch.full_like(r, step_size) if step_size is not None else PGD_STEP_SCALE * r / steps)
    g = torch.Generator(device="cpu").manual_seed(seed)
    best_x, best_score = x0.clone(), torch.full((x0.shape[0],), float("inf"), device=x0.device, dtype=x0.dtype)

    def score(z: torch.Tensor) -> torch.Tensor:  # margin to beat: < 0 means the prediction left y (or hit target)
        zy = z.gather(1, y[:, None])[:, 0]
        if target is not None:
            return zy - z.gather(1, target[:, None])[:, 0]
        other = z.clone()
        other.scatter_(1, y[:, None], float("-inf"))
        return zy - other.max(1).values

    def keep_best(delta: torch.Tensor) -> None:
        nonlocal best_x, best_score
        s = score(model(x0 + delta))
        better = s < best_score
        best_x = torch.where(better[:, None], x0 + delta, best_x)
        best_score = torch.where(better, s, best_score)

    for k in range(restarts):
        if k == 0:
            delta = torch.zeros_like(x0)
        else:
            delta = torch.randn(x0.shape, generator=g, dtype=x0.dtype).to(x0.device)
            delta = delta / delta.norm(dim=1, keepdim=True) * r * torch.rand(
                x0.shape[0], 1, generator=g, dtype=x0.dtype).to(x0.device)
        for _ in range(steps):
            delta.requires_grad_(True)
            xa = (x0 + delta).clamp(0, 1) if clamp else x0 + delta
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(score(model(xa)).sum(), delta)  # CW-style margin loss
            with torch.no_grad():
                keep_best(delta.detach())
                delta = delta.detach() - step * grad / grad.norm(dim=1, keepdim=True).clamp_min(TINY_NORM)
                delta = delta * torch.clamp(r / delta.norm(dim=1, keepdim=True).clamp_min(TINY_NORM), max=1.0)
                if clamp:
                    delta = (x0 + delta).clamp(0, 1) - x0
        with torch.no_grad():
            keep_best(delta)
    return best_x.detach(), best_score < 0
