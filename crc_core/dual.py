"""The sound dual lower bound (*) of DESIGN.md §2 and the tracker of its best value (one home for both).

For an image x0 with prediction y and a target t, f(x) = z_y(x) - z_t(x) > 0 at x0. For every η in [0, 1/|m|)
the function F_η(x) = ½‖x - x0‖² + η f(x) is μ-strongly convex with μ = 1 + η m > 0 (m ⪯ ∇²f, Theorem 3/4), so
for ANY point x (solved or not):

    ½ dist(x0, {f = 0})²  ≥  min F_η  ≥  F_η(x) - ‖∇F_η(x)‖² / (2μ)                                   (*)

A radius sqrt(2 · max(0, (*))) is therefore a proven lower bound at every point a solver evaluated, whatever the
solver did. The maximisation over η costs only scalars: ‖x - x0‖², (x - x0)·∇f, ‖∇f‖² and f.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .tolerances import (
    ETA_GRID,
    ETA_LOCAL_DECADES,
    ETA_LOCAL_POINTS,
    ETA_REFINE,
    ETA_TOP_CLOSEST,
    ETA_UNBOUNDED,
    TINY_F64,
)

GOLDEN = (5 ** 0.5 - 1) / 2


def dual_lower_bound(R: torch.Tensor, f: torch.Tensor, v2: torch.Tensor, vg: torch.Tensor, grad_sq: torch.Tensor,
                     eta_c: torch.Tensor, m: torch.Tensor, *, n_grid: int = ETA_GRID, n_refine: int = ETA_REFINE
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """max over η ∈ [0, 1/|m|) of (*) at a point x, from scalars (all (N,), float64):

    R = ‖x - x0‖², f = f(x), grad_sq = ‖∇f(x)‖², and, for a centre η_c, v = ∇F_{η_c}(x) = (x - x0) + η_c ∇f(x)
    with v2 = ‖v‖², vg = v·∇f(x), so ‖∇F_η(x)‖² = v2 + 2(η - η_c) vg + (η - η_c)² grad_sq without cancellation
    near η_c. m = lower curvature bound (≤ 0). Returns (a lower bound on ½ dist² (N,), the η attaining it (N,)).
    Any returned value is valid: the η search only decides how good it is.
    """
    m = torch.minimum(m, torch.zeros_like(m))
    eta_max = torch.where(m < 0, -1.0 / m.clamp(max=-TINY_F64), torch.full_like(m, ETA_UNBOUNDED))

    def value(eta: torch.Tensor) -> torch.Tensor:
        mu = 1.0 + eta * m[:, None]
        de = eta - eta_c[:, None]
        gF_sq = v2[:, None] + 2 * de * vg[:, None] + de * de * grad_sq[:, None]
        return 0.5 * R[:, None] + eta * f[:, None] - gF_sq.clamp_min(0) / (2 * mu)

    frac = _eta_grid(f, vg, grad_sq, eta_c, eta_max, n_grid)
    etas = eta_max[:, None] * frac
    vals = value(etas)
    best = vals.argmax(dim=1)
    k = frac.shape[1]
    a = frac.gather(1, (best - 1).clamp(min=0)[:, None])[:, 0]
    b = frac.gather(1, (best + 1).clamp(max=k - 1)[:, None])[:, 0]
    best_val, best_eta = vals.gather(1, best[:, None])[:, 0], etas.gather(1, best[:, None])[:, 0]
    for _ in range(n_refine):  # golden-section refinement inside the bracketing grid cells
        c1, c2 = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
        v = value(eta_max[:, None] * torch.stack([c1, c2], 1))
        left = v[:, 0] >= v[:, 1]
        b = torch.where(left, c2, b)
        a = torch.where(left, a, c1)
        cand_val = torch.where(left, v[:, 0], v[:, 1])
        better = cand_val > best_val
        best_val = torch.where(better, cand_val, best_val)
        best_eta = torch.where(better, eta_max * torch.where(left, c1, c2), best_eta)
    return best_val, best_eta


def _eta_grid(f: torch.Tensor, vg: torch.Tensor, grad_sq: torch.Tensor, eta_c: torch.Tensor, eta_max: torch.Tensor,
              n_grid: int) -> torch.Tensor:
    """Sorted fractions of η_max (N, K): uniform, a geometric approach to the open end (where μ → 0), the centre
    η_c, and a multiplicative neighbourhood of the stationary point ignoring μ's dependence on η."""
    u = torch.linspace(0, 1, n_grid, dtype=f.dtype, device=f.device)
    geo = 1 - torch.logspace(-1, -12, n_grid // 2, dtype=f.dtype, device=f.device)
    frac = torch.cat([u[:-1], geo]).expand(f.shape[0], -1)
    eta_st = (eta_c + (f - vg) / grad_sq.clamp_min(TINY_F64)).clamp_min(0)
    mult = torch.logspace(-ETA_LOCAL_DECADES, ETA_LOCAL_DECADES, ETA_LOCAL_POINTS, dtype=f.dtype, device=f.device)
    local = torch.cat([eta_c[:, None], eta_st[:, None] * mult[None, :]], 1) / eta_max[:, None]
    return torch.sort(torch.cat([frac, local.clamp(0, 1 - ETA_TOP_CLOSEST)], 1), dim=1)[0]


def bound_at(x: torch.Tensor, x0: torch.Tensor, f: torch.Tensor, g: torch.Tensor, m: torch.Tensor,
             eta_c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(*) maximised over η at points x (N, D) with f(x) (N,), ∇f(x) (N, D); float64 results (N,) (bound, η).
    ``eta_c`` centres the expansion (default: the η minimising ‖∇F_η(x)‖)."""
    r = x - x0
    grad_sq = (g.double() ** 2).sum(1)
    if eta_c is None:
        eta_c = (-(r.double() * g.double()).sum(1) / grad_sq.clamp_min(TINY_F64)).clamp_min(0)
    v = r + eta_c.to(x.dtype)[:, None] * g
    eta_c = eta_c.to(x.dtype).double()  # the centre actually used in v
    vd = v.double()
    return dual_lower_bound((r.double() ** 2).sum(1), f.double(), (vd * vd).sum(1), (vd * g.double()).sum(1),
                            grad_sq, eta_c, m)


@dataclass
class BoundTracker:
    """Per row (N of them): the best sound bound (*) seen and the point/η giving it; the closest boundary point
    (f ≤ 0) seen. Solvers feed it every point they evaluate; the certificate reads it, never the solver's state.

    lb (N,) float64 best ½dist² bound; eta (N,) its η; x_lb (N, D) its point; x_up (N, D) closest boundary point;
    d_up (N,) its distance (inf if none).
    """

    lb: torch.Tensor
    eta: torch.Tensor
    x_lb: torch.Tensor
    x_up: torch.Tensor
    d_up: torch.Tensor

    @classmethod
    def new(cls, x0: torch.Tensor) -> BoundTracker:
        n = x0.shape[0]
        z = torch.zeros(n, dtype=torch.float64, device=x0.device)
        return cls(z.clone(), z.clone(), x0.clone(), x0.clone(), torch.full_like(z, float("inf")))

    def update(self, x: torch.Tensor, x0: torch.Tensor, f: torch.Tensor, g: torch.Tensor, m: torch.Tensor,
               rows: torch.Tensor | None = None, eta_c: torch.Tensor | None = None) -> torch.Tensor:
        """Evaluate (*) at x (n, D) for the given rows (all when None); returns the new bound of those rows (n,)."""
        lb, eta = bound_at(x, x0, f, g, m, eta_c)
        d = ((x - x0).double() ** 2).sum(1).sqrt()
        closer = f <= 0
        if rows is None:
            better = lb > self.lb
            self.lb = torch.where(better, lb, self.lb)
            self.eta = torch.where(better, eta, self.eta)
            self.x_lb = torch.where(better[:, None], x, self.x_lb)
            closer &= d < self.d_up
            self.d_up = torch.where(closer, d, self.d_up)
            self.x_up = torch.where(closer[:, None], x, self.x_up)
            return lb
        better = lb > self.lb[rows]
        self.lb[rows] = torch.where(better, lb, self.lb[rows])
        self.eta[rows] = torch.where(better, eta, self.eta[rows])
        self.x_lb[rows[better]] = x[better]
        closer &= d < self.d_up[rows]
        self.d_up[rows] = torch.where(closer, d, self.d_up[rows])
        self.x_up[rows[closer]] = x[closer]
        return lb
