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

from .tolerances import ETA_TOP_CLOSEST, ETA_UNBOUNDED, TINY_F64


def dual_lower_bound(R: torch.Tensor, f: torch.Tensor, v2: torch.Tensor, vg: torch.Tensor, grad_sq: torch.Tensor,
                     eta_c: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """max over η ∈ [0, 1/|m|) of (*) at a point x, from scalars (all (N,), float64):

    R = ‖x - x0‖², f = f(x), grad_sq = ‖∇f(x)‖², and, for a centre η_c, v = ∇F_{η_c}(x) = (x - x0) + η_c ∇f(x)
    with v2 = ‖v‖², vg = v·∇f(x), so ‖∇F_η(x)‖² = q(η) = v2 + 2(η - η_c) vg + (η - η_c)² grad_sq without
    cancellation near η_c. m = lower curvature bound (≤ 0). Returns (a lower bound on ½ dist² (N,), its η (N,)).

    (*) = ½R + ηf - q(η)/(2μ(η)) is concave in η (q/μ is a quadratic over a positive affine function), so its
    maximiser is its stationary point clipped to the range. Writing μ_c = 1 + η_c m, the stationarity condition
    2fμ² = q'μ - qm reduces to μ*² = μ_c² - m·c/k with k = 2fm - ‖∇f‖², c = 2fμ_c² - 2vg·μ_c + m·v2, i.e.
    η* - η_c = -c / (k (μ* + μ_c)) (no cancellation; m = 0 gives (f - vg)/‖∇f‖²). The value is evaluated at η*,
    η_c and both ends, and the best is returned: any returned value is a valid bound whatever the rounding.
    """
    m = torch.minimum(m, torch.zeros_like(m))
    eta_max = torch.where(m < 0, -1.0 / m.clamp(max=-TINY_F64), torch.full_like(m, ETA_UNBOUNDED))
    top = eta_max * (1 - ETA_TOP_CLOSEST)
    mu_c = 1 + eta_c * m
    k = 2 * f * m - grad_sq
    c = 2 * f * mu_c * mu_c - 2 * vg * mu_c + m * v2
    mu_star = (mu_c * mu_c - m * c / k).clamp_min(0).sqrt()
    eta_star = torch.nan_to_num(eta_c - c / (k * (mu_star + mu_c)), nan=0.0, posinf=0.0, neginf=0.0)
    etas = torch.stack([eta_star, eta_c, torch.zeros_like(top), top], 1)
    etas = torch.minimum(etas.clamp_min(0), top[:, None])
    mu = 1.0 + etas * m[:, None]
    de = etas - eta_c[:, None]
    q = v2[:, None] + 2 * de * vg[:, None] + de * de * grad_sq[:, None]
    vals = 0.5 * R[:, None] + etas * f[:, None] - q.clamp_min(0) / (2 * mu)
    best = vals.argmax(1, keepdim=True)
    return vals.gather(1, best)[:, 0], etas.gather(1, best)[:, 0]


def point_scalars(x: torch.Tensor, x0: torch.Tensor, g: torch.Tensor, eta_c: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, ...]:
    """The scalars (*) needs at points x (N, D) with ∇f(x) = g (N, D), float64 (N,):
    (R = ‖x - x0‖², v2 = ‖v‖², vg = v·∇f, grad_sq = ‖∇f‖², η_c) with v = (x - x0) + η_c ∇f formed directly
    (no cancellation near the centre). ``eta_c`` defaults to the η minimising ‖∇F_η(x)‖.

    Vectors stay in the inputs' dtype and every sum accumulates in float64 (no float64 copies of (N, D) arrays):
    with float32 inputs the scalars carry float32 rounding, which only the solvers' bookkeeping sees; certificates
    are finalised from float64 inputs, where this is plain float64 arithmetic."""
    r = x - x0
    grad_sq = _sum_sq(g)
    if eta_c is None:
        eta_c = (-_dot(r, g) / grad_sq.clamp_min(TINY_F64)).clamp_min(0)
    eta_c = eta_c.to(r.dtype).double()  # the centre v is formed with (exactly representable in r's dtype)
    v = r + eta_c.to(r.dtype)[:, None] * g
    return _sum_sq(r), _sum_sq(v), _dot(v, g), grad_sq, eta_c


def vector_scalars(r: torch.Tensor, v: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(R = ‖r‖², v2 = ‖v‖², vg = v·g, grad_sq = ‖g‖²) (N,) float64 from r = x - x0, v = r + η_c g, g = ∇f(x)
    (N, D): for a solver that has r and v = ∇F_{η_c}(x) at hand (sums accumulated in float64)."""
    return _sum_sq(r), _sum_sq(v), _dot(v, g), _sum_sq(g)


def _sum_sq(a: torch.Tensor) -> torch.Tensor:
    """Row sums of squares (N,), accumulated in float64."""
    return (a * a).sum(1, dtype=torch.float64) if a.dtype != torch.float64 else (a * a).sum(1)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row dot products (N,), accumulated in float64."""
    return (a * b).sum(1, dtype=torch.float64) if a.dtype != torch.float64 else (a * b).sum(1)


def bound_at(x: torch.Tensor, x0: torch.Tensor, f: torch.Tensor, g: torch.Tensor, m: torch.Tensor,
             eta_c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(*) maximised over η at points x (N, D) with f(x) (N,), ∇f(x) (N, D); float64 results (N,) (bound, η).
    ``eta_c`` centres the expansion (default: the η minimising ‖∇F_η(x)‖)."""
    R, v2, vg, grad_sq, eta_c = point_scalars(x, x0, g, eta_c)
    return dual_lower_bound(R, f.double(), v2, vg, grad_sq, eta_c, m)


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
        R, v2, vg, grad_sq, eta_c = point_scalars(x, x0, g, eta_c)
        return self.update_scalars(x, f, (R, v2, vg, grad_sq, eta_c), m, rows)

    def update_scalars(self, x: torch.Tensor, f: torch.Tensor, scalars: tuple[torch.Tensor, ...], m: torch.Tensor,
                       rows: torch.Tensor | None = None) -> torch.Tensor:
        """As :meth:`update`, from the point x (n, D), f(x) (n,) and its :func:`point_scalars` (R, v2, vg,
        grad_sq, η_c)."""
        R, v2, vg, grad_sq, eta_c = scalars
        lb, eta = dual_lower_bound(R, f.double(), v2, vg, grad_sq, eta_c, m)
        d = R.sqrt()
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
        b = better.nonzero()[:, 0]
        self.x_lb.index_copy_(0, rows[b], x.index_select(0, b))
        closer &= d < self.d_up[rows]
        self.d_up[rows] = torch.where(closer, d, self.d_up[rows])
        c = closer.nonzero()[:, 0]
        self.x_up.index_copy_(0, rows[c], x.index_select(0, c))
        return lb
