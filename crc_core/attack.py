"""Attacks: the curvature attack (paper Algorithm 2, App. C.3/C.5) and THE L2 PGD (training, evaluation and tests
use :func:`l2_pgd`; :func:`pgd_attack` runs it on the margin), batched.

Curvature attack: for target t, minimise f(x) = z_y(x) - z_t(x) over ‖x - x0‖ ≤ ρ through the dual
max_{η ≥ -m} min_x f(x) + η/2 (‖x - x0‖² - ρ²), convex in x for η ≥ -m. The inner problem is solved by the MM
step x ← (K x + η x0 - ∇f(x)) / (K + η); η by bisection on ‖x - x0‖ vs ρ. ``success`` (‖x - x0‖ = ρ at the
solution) certifies primal = dual: x is then the *worst-case* perturbation in the ball (Theorem 2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .bounds import Bounds, curvature_bounds
from .checks import check_attack_options, check_images, check_labels, check_radius, check_targets
from .hessian import MarginOracle
from .models import MLP, require_curvature_model
from .solvers.mm import bisect_eta, mm_minimise
from .targets import margin
from .tolerances import (
    ATTACK_ETA_TOP,
    ATTACK_SOLVED_TOL,
    ATTACK_SUCCESS_RTOL,
    CURVATURE_FLOOR,
    MM_STATIONARY_TOL,
    PGD_NORM_FLOOR,
    TINY_NORM,
)

PGD_STEP_FACTOR = 2.5  # default PGD step 2.5·ε/steps (Madry et al.): it can cross the ball and still refine


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
    x0 = check_images(model, x0, empty_ok=True)
    N = x0.shape[0]
    y = check_labels(y, N, model.n_classes, x0.device)
    t = check_targets(y, torch.as_tensor(t).reshape(-1), model.n_classes)
    rho_t = check_radius(rho, N, x0)
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


def _check_eps(eps: float | torch.Tensor, x: torch.Tensor) -> float | torch.Tensor:
    """ε as a float, or per row as a tensor (B, 1, ...) broadcasting against x (B, ...)."""
    if isinstance(eps, torch.Tensor) and eps.numel() > 1:
        return check_radius(eps, x.shape[0], x).reshape(-1, *([1] * (x.dim() - 1)))
    check_attack_options(eps=float(eps), steps=1)
    return float(eps)


def _project(x: torch.Tensor, x_adv: torch.Tensor, eps: float | torch.Tensor, clamp: bool) -> torch.Tensor:
    """Onto {‖x_adv − x‖ ≤ ε} (per row), then the pixel box [0, 1] (which keeps the norm ≤ ε: x is in the box)."""
    delta = x_adv - x
    norm = delta.flatten(1).norm(dim=1).clamp_min(PGD_NORM_FLOOR)
    if isinstance(eps, torch.Tensor):
        norm = norm.reshape(eps.shape)
    delta = delta * (eps / norm).clamp(max=1.0).reshape(-1, *([1] * (x.dim() - 1)))
    out = x + delta
    return out.clamp(0, 1) if clamp else out


def random_ball_start(x: torch.Tensor, eps: float | torch.Tensor, generator: torch.Generator | None = None, *,
                      uniform_radius: bool = False) -> torch.Tensor:
    """x + a random point of the L2 ball of radius ε (per row), x (B, ...): uniform in the ball's volume, or with
    ``uniform_radius`` a uniform direction at a radius uniform in [0, ε] (PGD restarts)."""
    B, D = x.shape[0], x[0].numel()
    u = torch.randn(B, D, generator=generator, dtype=x.dtype).to(x.device)
    r = torch.rand(B, 1, generator=generator, dtype=x.dtype).to(x.device)
    r = r if uniform_radius else r ** (1.0 / D)
    eps = eps.reshape(B, 1) if isinstance(eps, torch.Tensor) else eps
    return x + (eps * r * u / u.norm(dim=1, keepdim=True).clamp_min(PGD_NORM_FLOOR)).reshape(x.shape)


def l2_pgd(loss_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, eps: float | torch.Tensor,
           steps: int, step_size: float | None = None, start: torch.Tensor | None = None, clamp: bool = True,
           track: Callable[[torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
    """THE L2 PGD: maximize ``loss_fn(x_adv)`` (per-row losses (B,), summed) over ‖x_adv − x‖₂ ≤ ε by
    normalized-gradient ascent + projection; x (B, ...), ε a number or per row (B,). Starts at ``start``
    (projected) or x. Returns the last x_adv (B, ...), detached, with ‖x_adv − x‖ ≤ ε per row (and in [0, 1] when
    ``clamp``). Step size defaults to PGD_STEP_FACTOR·ε/steps. ``track(x_i, loss_i)`` sees every iterate but the
    last with its per-row loss (detached)."""
    check_attack_options(eps=1.0, steps=steps, step_size=step_size)  # ε: next line, a number or per row
    x = x.detach()
    eps = _check_eps(eps, x)
    alpha = PGD_STEP_FACTOR * eps / steps if step_size is None else step_size
    x_adv = _project(x, (x if start is None else start).detach(), eps, clamp)
    shape = (-1, *([1] * (x.dim() - 1)))
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(x_adv)
            (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        if track is not None:
            track(x_adv.detach(), loss.detach())
        g_norm = grad.flatten(1).norm(dim=1).clamp_min(PGD_NORM_FLOOR).reshape(shape)
        x_adv = _project(x, x_adv.detach() + alpha * grad / g_norm, eps, clamp)
    return x_adv.detach()


def pgd_attack(model: torch.nn.Module, x0: torch.Tensor, y: torch.Tensor, rho: float | torch.Tensor, *,
               target: torch.Tensor | None = None, steps: int = 50, restarts: int = 1,
               step_size: float | None = None, clamp: bool = True, seed: int = 0,
               keep_best: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`l2_pgd` (Madry et al.) on the margin (:func:`crc_core.targets.margin`): untargeted (minimise
    z_y − max_{j≠y} z_j) or targeted (z_y − z_target).

    x0 (N, D), y (N,), target (N,) or None, ρ a scalar or per row (N,). Returns (x_adv (N, D) with
    ‖x_adv − x0‖ ≤ ρ, fooled (N,) bool: margin < 0 at x_adv). The first run starts at x0, the other ``restarts``
    at random points of the ball (``seed``); ``keep_best`` keeps the point with the lowest margin over every
    iterate, else x_adv is the last run's last point. ``clamp`` keeps pixels in [0, 1].
    """
    x0 = x0.reshape(x0.shape[0], -1).detach()
    eps = _check_eps(rho, x0)
    g = torch.Generator(device="cpu").manual_seed(seed)
    best_x, best_loss = x0.clone(), torch.full((x0.shape[0],), -float("inf"), device=x0.device, dtype=x0.dtype)

    def loss(z: torch.Tensor) -> torch.Tensor:  # > 0: the prediction left y (or reached the target)
        return -margin(model(z), y, target)

    def keep(z: torch.Tensor, lz: torch.Tensor) -> None:
        nonlocal best_x, best_loss
        better = lz > best_loss
        best_x, best_loss = torch.where(better[:, None], z, best_x), torch.where(better, lz, best_loss)

    for k in range(restarts):
        start = None if k == 0 else random_ball_start(x0, eps, g, uniform_radius=True)
        x_last = l2_pgd(loss, x0, eps=eps, steps=steps, step_size=step_size, start=start, clamp=clamp,
                        track=keep if keep_best else None)
        with torch.no_grad():
            if keep_best:
                keep(x_last, loss(x_last))
            else:
                best_x, best_loss = x_last, loss(x_last)
    return best_x, best_loss > 0
