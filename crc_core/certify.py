"""Curvature-based robustness certificates (CRC, paper section 4 and Algorithm 1), sound and batched.

For an image x0 with prediction y and a target t, f(x) = z_y(x) - z_t(x) > 0 at x0. For every η in [0, 1/|m|)
the function F_η(x) = ½‖x - x0‖² + η f(x) is μ-strongly convex with μ = 1 + η m > 0 (m ⪯ ∇²f, Theorem 3/4), so
for ANY point x (solved or not):

    ½ dist(x0, {f = 0})²  ≥  min F_η  ≥  F_η(x) - ‖∇F_η(x)‖² / (2μ)                                   (*)

The certified radius is sqrt(2 · max(0, best (*))) over every point the solver evaluated and every η in range
(a 1-D maximisation over η costs only scalars: ‖x - x0‖², (x - x0)·∇f, ‖∇f‖², f). The radius is therefore a
true lower bound even when the solver stops early. When x lies on the boundary and ∇F_η(x) ≈ 0, (*) equals
½‖x - x0‖²: x is provably the closest boundary point (primal = dual, ``exact``).

Final values are recomputed in float64 on a float64 copy of the model.

Modes:
- ``paper``: Algorithm 1 as written (bisection on η over [-1/M, -1/m], 30 × 20 MM steps, warm started).
- ``fast`` (default): a KKT fixed-point chase of the closest boundary point (each step also evaluates (*)), then,
  for rows whose dual gap is still open, an accelerated (Nesterov) dual ascent on η near the top of its range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from .bounds import Bounds, curvature_bounds
from .errors import CRCError
from .hessian import MarginOracle, _as_dtype, margin_and_grad
from .models import MLP, require_curvature_model

TargetMode = Literal["all", "runner-up", "random", "least"]
SolverMode = Literal["fast", "paper"]
_FINAL_EVALS = 3  # float64 re-evaluation: ∇f at the best point, f at x0, f after the Newton step
TARGET_MODES: tuple[str, ...] = ("all", "runner-up", "random", "least")
SOLVER_MODES: tuple[str, ...] = ("fast", "paper")


# ------------------------------------------------------------------------------------------- sound dual bound
def dual_lower_bound(R: torch.Tensor, f: torch.Tensor, v2: torch.Tensor, vg: torch.Tensor, G: torch.Tensor,
                     eta_c: torch.Tensor, m: torch.Tensor, *, n_grid: int = 48, n_refine: int = 24
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """max over η ∈ [0, 1/|m|) of (*) at a point x, from scalars (all (N,), float64):

    R = ‖x - x0‖², f = f(x), G = ‖∇f(x)‖², and, for a centre η_c, v = ∇F_{η_c}(x) = (x - x0) + η_c ∇f(x) with
    v2 = ‖v‖², vg = v·∇f(x), so ‖∇F_η(x)‖² = v2 + 2(η - η_c) vg + (η - η_c)² G without cancellation near η_c.
    m = lower curvature bound (≤ 0). Returns (a lower bound on ½ dist² (N,), the η attaining it (N,)).
    Any returned value is valid: the η search only decides how good it is.
    """
    m = torch.minimum(m, torch.zeros_like(m))
    eta_max = torch.where(m < 0, -1.0 / m.clamp(max=-1e-300), torch.full_like(m, 1e12))

    def value(eta: torch.Tensor) -> torch.Tensor:
        mu = 1.0 + eta * m[:, None]
        de = eta - eta_c[:, None]
        grad_sq = v2[:, None] + 2 * de * vg[:, None] + de * de * G[:, None]
        return 0.5 * R[:, None] + eta * f[:, None] - grad_sq.clamp_min(0) / (2 * mu)

    # grid: uniform part, a geometric approach to the open end η_max (where μ → 0), and the centre itself
    u = torch.linspace(0, 1, n_grid, dtype=R.dtype, device=R.device)
    geo = 1 - torch.logspace(-1, -12, n_grid // 2, dtype=R.dtype, device=R.device)
    frac = torch.cat([u[:-1], geo]).expand(R.shape[0], -1)
    # the centre and the stationary point ignoring μ's dependence on η, with a multiplicative neighbourhood
    eta_st = (eta_c + (f - vg) / G.clamp_min(1e-300)).clamp_min(0)
    mult = torch.logspace(-2, 2, 17, dtype=R.dtype, device=R.device)
    local = torch.cat([eta_c[:, None], eta_st[:, None] * mult[None, :]], 1) / eta_max[:, None]
    frac, _ = torch.sort(torch.cat([frac, local.clamp(0, 1 - 1e-12)], 1), dim=1)
    etas = eta_max[:, None] * frac
    vals = value(etas)
    best = vals.argmax(dim=1)
    k = frac.shape[1]
    lo = frac.gather(1, (best - 1).clamp(min=0)[:, None])[:, 0]
    hi = frac.gather(1, (best + 1).clamp(max=k - 1)[:, None])[:, 0]
    best_val, best_eta = vals.gather(1, best[:, None])[:, 0], etas.gather(1, best[:, None])[:, 0]
    # golden-section refinement inside the bracketing grid cells
    gr = (5 ** 0.5 - 1) / 2
    a, b = lo, hi
    for _ in range(n_refine):
        c1, c2 = b - gr * (b - a), a + gr * (b - a)
        v = value(eta_max[:, None] * torch.stack([c1, c2], 1))
        left = v[:, 0] >= v[:, 1]
        b = torch.where(left, c2, b)
        a = torch.where(left, a, c1)
        cand_eta = eta_max * torch.where(left, c1, c2)
        cand_val = torch.where(left, v[:, 0], v[:, 1])
        better = cand_val > best_val
        best_val = torch.where(better, cand_val, best_val)
        best_eta = torch.where(better, cand_eta, best_eta)
    return best_val, best_eta


def bound_at(x: torch.Tensor, x0: torch.Tensor, f: torch.Tensor, g: torch.Tensor, m: torch.Tensor,
             eta_c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(*) maximised over η at points x (N, D) with f(x) (N,), ∇f(x) (N, D); float64 results (N,).
    ``eta_c`` centres the expansion (default: the η minimising ‖∇F_η(x)‖)."""
    r = x - x0
    G = (g.double() ** 2).sum(1)
    if eta_c is None:
        eta_c = (-(r.double() * g.double()).sum(1) / G.clamp_min(1e-300)).clamp_min(0)
    v = r + eta_c.to(x.dtype)[:, None] * g
    eta_c = eta_c.to(x.dtype).double()  # the centre actually used in v
    vd = v.double()
    return dual_lower_bound((r.double() ** 2).sum(1), f.double(), (vd * vd).sum(1), (vd * g.double()).sum(1), G,
                            eta_c, m)


@dataclass
class _Track:
    """Best sound bound per row and the point/η giving it; best boundary point (f ≤ 0) found."""

    lb: torch.Tensor
    eta: torch.Tensor
    x_lb: torch.Tensor
    x_up: torch.Tensor
    d_up: torch.Tensor

    @classmethod
    def new(cls, x0: torch.Tensor) -> _Track:
        n = x0.shape[0]
        z = torch.zeros(n, dtype=torch.float64, device=x0.device)
        return cls(z.clone(), z.clone(), x0.clone(), x0.clone(), torch.full_like(z, float("inf")))

    def update(self, x: torch.Tensor, x0: torch.Tensor, f: torch.Tensor, g: torch.Tensor, m: torch.Tensor,
               rows: torch.Tensor | None = None, eta_c: torch.Tensor | None = None) -> torch.Tensor:
        """Evaluate (*) at x for the given rows (all when None); returns the new lb values of those rows."""
        idx = torch.arange(x.shape[0], device=x.device) if rows is None else rows
        lb, eta = bound_at(x, x0, f, g, m, eta_c)
        R = ((x - x0).double() ** 2).sum(1)
        better = lb > self.lb[idx]
        self.lb[idx] = torch.where(better, lb, self.lb[idx])
        self.eta[idx] = torch.where(better, eta, self.eta[idx])
        self.x_lb[idx] = torch.where(better[:, None], x, self.x_lb[idx])
        d = R.sqrt()
        closer = (f <= 0) & (d < self.d_up[idx])
        self.d_up[idx] = torch.where(closer, d, self.d_up[idx])
        self.x_up[idx] = torch.where(closer[:, None], x, self.x_up[idx])
        return lb


# ------------------------------------------------------------------------------------------- solvers
def _solve_paper(fg: MarginOracle, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, m: torch.Tensor, M: torch.Tensor,
                 K: torch.Tensor, tr: _Track, n_outer: int = 30, n_inner: int = 20, tol: float = 1e-5
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Algorithm 1 verbatim (batched); every gradient evaluation also feeds the sound bound tracker."""
    N = x0.shape[0]
    dt = x0.dtype
    Mp = M.clamp_min(1e-12).to(dt)
    mn = torch.minimum(m, -torch.full_like(m, 1e-12)).to(dt)
    eta_lo, eta_hi = -1.0 / Mp, -1.0 / mn
    eta = (eta_lo + eta_hi) / 2
    Kx = K.to(dt)
    x = x0.clone()
    n_grad = torch.zeros(N, dtype=torch.long, device=x0.device)
    for _ in range(n_outer):
        active = torch.ones(N, dtype=torch.bool, device=x0.device)
        for _ in range(n_inner):
            f, g = fg(x)
            n_grad += active.long()
            tr.update(x, x0, f, g, m, eta_c=eta.clamp_min(0).double())
            active &= (eta[:, None] * g + (x - x0)).norm(dim=1) >= tol
            if not active.any():
                break
            c = (eta * Kx).abs()[:, None]
            x = torch.where(active[:, None], (x0 + c * x - eta[:, None] * g) / (1 + c), x)
        f, _ = fg(x)
        n_grad += 1
        pos = f > 0
        eta_lo = torch.where(pos, eta, eta_lo)
        eta_hi = torch.where(pos, eta_hi, eta)
        eta = (eta_lo + eta_hi) / 2
    return x, eta, n_grad


def _solve_fast(fg: MarginOracle, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, m: torch.Tensor, M: torch.Tensor,
                tr: _Track, *, n_chase: int = 12, n_dual: int = 400, gap_tol: float = 1e-6,
                group: torch.Tensor | None = None, protect: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Phase A: KKT chase x ← x0 - η g(x), η = (f + g·(x0 - x)) / ‖g‖² (linearised boundary), damped.
    Phase B (rows with an open gap): Nesterov on F_η for η near the best η found, moving η up by bisection.

    ``group`` (N,): the image of each row. A row of an image whose certified value already reaches the distance of a
    boundary point found for the same image (any target) cannot be that image's minimum, so phase B skips it
    (its value stays a valid, possibly looser, lower bound) unless ``protect`` (N,) bool marks it."""
    N = x0.shape[0]
    dt = x0.dtype
    dev = x0.device
    n_grad = torch.zeros(N, dtype=torch.long, device=dev)
    x = x0.clone()
    beta = torch.ones(N, dtype=dt, device=dev)
    prev_lb = torch.full((N,), -1.0, dtype=torch.float64, device=dev)
    open_rows = torch.ones(N, dtype=torch.bool, device=dev)
    chasing = torch.ones(N, dtype=torch.bool, device=dev)
    beyond = torch.zeros(N, dtype=torch.long, device=dev)  # consecutive steps whose η_p exceeds 1/|m|
    eta_cap = -1.0 / torch.minimum(m, torch.full_like(m, -1e-12))
    f_x0 = torch.full((N,), float("nan"), dtype=torch.float64, device=dev)

    def gap_open(x0s: torch.Tensor, xs: torch.Tensor, f: torch.Tensor, g: torch.Tensor, lb: torch.Tensor
                 ) -> torch.Tensor:
        """First-order estimate of the distance to the boundary minus the certified radius > tolerance."""
        d = ((xs - x0s).norm(dim=1) + f.abs() / g.norm(dim=1).clamp_min(1e-30)).double()
        return d - (2 * lb.clamp_min(0)).sqrt() > gap_tol * (1 + d)

    for step in range(n_chase):
        idx = (open_rows & chasing).nonzero()[:, 0]
        if idx.numel() == 0:
            break
        xs, x0s = x[idx], x0[idx]
        f, g = fg(xs, idx)
        n_grad[idx] += 1
        if step == 0:
            f_x0[idx] = f.double()
        lb = tr.update(xs, x0s, f, g, m[idx], rows=idx)
        open_rows[idx] = gap_open(x0s, xs, f, g, tr.lb[idx])
        G = (g * g).sum(1).clamp_min(1e-30)
        eta_p = ((f + (g * (x0s - xs)).sum(1)) / G).clamp_min(0)
        # the linearised KKT multiplier keeps exceeding the curvature's limit 1/|m|: the dual cannot close the
        # gap (the certificate will not be exact), so the chase is over for this row and phase B takes it
        beyond[idx] = torch.where(eta_p.double() >= eta_cap[idx], beyond[idx] + 1, torch.zeros_like(beyond[idx]))
        chasing[idx] = beyond[idx] < 2
        target = x0s - eta_p[:, None] * g
        # damping: halve β where the bound got worse (oscillation), grow back otherwise
        worse = lb < prev_lb[idx] - 1e-12
        b = torch.where(worse, beta[idx] * 0.5, (beta[idx] * 1.5).clamp(max=1.0))
        beta[idx] = b
        prev_lb[idx] = torch.maximum(prev_lb[idx], lb)
        x[idx] = xs + b[:, None] * (target - xs)

    # Phase B: accelerated dual solves for rows whose dual gap is still open
    idx = open_rows.nonzero()[:, 0]
    if idx.numel() > 0:
        _dual_ascent(fg, x0, y, t, m, M, tr, idx, n_grad, budget=n_dual, f_x0=f_x0[idx], group=group,
                     protect=protect)
    return tr.x_lb, tr.eta, n_grad


def _dual_ascent(fg: MarginOracle, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, m: torch.Tensor, M: torch.Tensor,
                 tr: _Track, idx: torch.Tensor, n_grad: torch.Tensor, *, budget: int, level_iters: int = 60,
                 max_levels: int = 12, top_gap: float = 1e-6, gain_tol: float = 1e-9,
                 f_x0: torch.Tensor | None = None, group: torch.Tensor | None = None,
                 protect: torch.Tensor | None = None) -> None:
    """Dual ascent on rows ``idx``, where the chase left a gap: maximise d(η) = min_x F_η(x) over η ∈ [0, 1/|m|).

    d is concave with d'(η) = f(x_η), so the search is a root search of f(x_η) on a bracket [lo, hi]:
    - the first level solves F_η at the top of the range, η = (1 - top_gap)/|m|. If f(x_η) > 0 there, d still
      rises and its supremum is at most top_gap·f(x_η)/|m| above d(η): the row is done (the usual case when the
      boundary lies beyond the curvature's reach, i.e. the certificate is not exact);
    - otherwise η moves by regula falsi (Illinois) on f between lo (f > 0, starting at η = 0, x = x0) and hi,
      until the possible gain (hi - lo)·f(lo) is negligible.
    Each F_η is minimised by Nesterov's method with gradient restart and step 1/(1 + ηM) (M ⪰ ∇²f, so the step
    is safe): it adapts to the local conditioning of F_η, which is far better than the global μ = 1 + ηm that
    makes the sound slack ‖∇F‖²/(2μ) so demanding near the top of the range. Every evaluation feeds the tracker,
    whose bound (*) is maximised over η at each point: the certificate never depends on where the search stops."""
    dt = x0.dtype
    n = idx.numel()
    dev = x0.device
    x0s, ms_raw = x0[idx], m[idx]
    ms = torch.minimum(ms_raw, torch.full_like(ms_raw, -1e-12))
    Ms = M[idx].clamp_min(0)
    eta_max = -1.0 / ms
    top = eta_max * (1 - top_gap)
    eta = top.clone()
    lo, hi = torch.zeros_like(eta), top.clone()
    if f_x0 is None or not torch.isfinite(f_x0).all():  # f(x0) (n,): known from the chase's first step
        f_x0, _ = fg(x0s, idx)
        n_grad[idx] += 1
    f_lo, f_hi = f_x0.double(), torch.full_like(eta, float("nan"))
    side = torch.zeros(n, dtype=torch.long, device=dev)  # Illinois: which end moved last (+1 lo, -1 hi)
    x = tr.x_lb[idx].clone()
    x_prev = x.clone()
    mom = torch.ones(n, dtype=torch.float64, device=dev)  # FISTA's t_k
    it = torch.zeros(n, dtype=torch.long, device=dev)
    levels = torch.zeros(n, dtype=torch.long, device=dev)
    alive = torch.ones(n, dtype=torch.bool, device=dev)
    g_tol = 30 * torch.finfo(dt).eps

    def irrelevant() -> torch.Tensor:
        """Rows whose bound already reaches a boundary distance found for their image (cannot be its minimum)."""
        if group is None:
            return torch.zeros(n, dtype=torch.bool, device=dev)
        G = int(group.max()) + 1
        U = torch.full((G,), float("inf"), dtype=torch.float64, device=dev)
        U.scatter_reduce_(0, group, tr.d_up, reduce="amin")
        out = (2 * tr.lb[idx].clamp_min(0)).sqrt() >= U[group[idx]]
        return out if protect is None else out & ~protect[idx]

    for step_no in range(budget):
        if step_no % 10 == 0:
            alive &= ~irrelevant()
        a = alive.nonzero()[:, 0]
        if a.numel() == 0:
            break
        e = eta[a]
        L = (1 + e * Ms[a]).to(dt)[:, None]
        tk = mom[a]
        t_next = (1 + (1 + 4 * tk * tk).sqrt()) / 2
        beta = ((tk - 1) / t_next).to(dt)[:, None]
        xa, xp = x[a], x_prev[a]
        yk = xa + beta * (xa - xp)
        f, g = fg(yk, idx[a])
        n_grad[idx[a]] += 1
        tr.update(yk, x0s[a], f, g, ms_raw[a], rows=idx[a], eta_c=e)
        gradF = (yk - x0s[a]) + e.to(dt)[:, None] * g
        x_new = yk - gradF / L
        restart = ((gradF * (x_new - xa)).sum(1) > 0)  # momentum points uphill: drop it (O'Donoghue & Candès)
        mom[a] = torch.where(restart, torch.ones_like(tk), t_next)
        x_prev[a] = torch.where(restart[:, None], x_new, xa)
        x[a] = x_new
        it[a] += 1
        # level finished: F_η is minimised to working precision, or the level's iteration cap is reached
        gn = gradF.norm(dim=1).double()
        scale = 1 + (yk - x0s[a]).norm(dim=1).double()
        slack = gn * gn / (2 * (1 + e * ms[a]).clamp_min(1e-300))
        done = (gn <= g_tol * scale) | (slack <= gain_tol * scale) | (it[a] >= level_iters)
        if not done.any():
            continue
        d = a[done]
        fd = f[done].double()
        pos = fd > 0
        at_top = pos & (eta[d] >= top[d])
        # move the bracket; Illinois halves the stale end's value so the false position keeps converging
        lo[d] = torch.where(pos, eta[d], lo[d])
        hi[d] = torch.where(pos, hi[d], eta[d])
        f_lo[d] = torch.where(pos, fd, torch.where(side[d] == -1, f_lo[d] / 2, f_lo[d]))
        f_hi[d] = torch.where(pos, torch.where(side[d] == 1, f_hi[d] / 2, f_hi[d]), fd)
        side[d] = torch.where(pos, torch.ones_like(side[d]), -torch.ones_like(side[d]))
        w = f_lo[d] / (f_lo[d] - f_hi[d])
        w = torch.where(torch.isfinite(w), w.clamp(0.02, 0.98), torch.full_like(w, 0.5))
        eta[d] = lo[d] + w * (hi[d] - lo[d])
        mom[d] = 1.0
        x_prev[d] = x[d]
        it[d] = 0
        levels[d] += 1
        gain = (hi[d] - lo[d]) * f_lo[d].clamp_min(0) * torch.where(side[d] == -1, 2.0, 1.0)
        finished = at_top | (levels[d] >= max_levels) | (gain <= gain_tol * (1 + tr.lb[d]))
        alive[d] = ~finished


# ------------------------------------------------------------------------------------------- public API
@dataclass
class CertificateBatch:
    """Certificates for B images against their targets.

    Per image (B,): pred, label, correct, radius (min over targets; 0 when misclassified), target (the arg-min
    class, -1 if none), exact (primal = dual for that target), eta, margin f(x_b), n_grad (all targets summed),
    upper (distance to the closest boundary point actually found over all targets, inf if none: an upper bound on
    the true distance, so the true distance lies in [radius, upper]),
    x_boundary (B, D) (the boundary point of the arg-min target, or the dual's point when not exact),
    runner_up / runner_up_radius: the paper's target and its radius (nan when not computed).
    radii (B, C): per-target radius (nan where not computed, e.g. t = y); exact_t (B, C) bool; n_grad_t (B, C).
    Per (image, target) row, in the order of targets_t (B, T): x_boundary_t (B, T, D), eta_t, margin_t, upper_t.
    """

    pred: torch.Tensor
    label: torch.Tensor
    correct: torch.Tensor
    radius: torch.Tensor
    target: torch.Tensor
    exact: torch.Tensor
    eta: torch.Tensor
    margin: torch.Tensor
    n_grad: torch.Tensor
    upper: torch.Tensor
    x_boundary: torch.Tensor
    runner_up: torch.Tensor
    runner_up_radius: torch.Tensor
    radii: torch.Tensor
    exact_t: torch.Tensor
    n_grad_t: torch.Tensor
    logits: torch.Tensor
    targets_t: torch.Tensor
    x_boundary_t: torch.Tensor
    eta_t: torch.Tensor
    margin_t: torch.Tensor
    upper_t: torch.Tensor
    mode: str = "fast"
    targets: str = "all"
    bound_method: str = ""
    extra: dict = field(default_factory=dict)

    def certified(self, rho: float) -> torch.Tensor:
        """(B,) bool: correctly classified and radius ≥ ρ (strictly provable robustness at ρ)."""
        return self.correct & (self.radius >= rho)

    def to_frame_per_target(self):
        """One row per (image, target) pair (pandas DataFrame)."""
        import pandas as pd

        B, T = self.targets_t.shape
        img = torch.arange(B).repeat_interleave(T)
        t = self.targets_t.reshape(-1).cpu()
        return pd.DataFrame({
            "image": img.numpy(), "pred": self.pred.cpu()[img].numpy(), "target": t.numpy(),
            "radius": self.radii.cpu()[img, t].numpy(), "exact": self.exact_t.cpu()[img, t].numpy(),
            "eta": self.eta_t.reshape(-1).cpu().numpy(), "margin_at_boundary": self.margin_t.reshape(-1).cpu().numpy(),
            "upper": self.upper_t.reshape(-1).cpu().numpy(), "n_grad": self.n_grad_t.cpu()[img, t].numpy(),
        })

    def to_frame(self):
        """One row per image (pandas DataFrame): the table shared by the app and the CLI."""
        import pandas as pd

        return pd.DataFrame({
            "pred": self.pred.cpu().numpy(), "label": self.label.cpu().numpy(),
            "correct": self.correct.cpu().numpy(), "radius": self.radius.cpu().numpy(),
            "target": self.target.cpu().numpy(), "exact": self.exact.cpu().numpy(),
            "eta": self.eta.cpu().numpy(), "margin_at_boundary": self.margin.cpu().numpy(),
            "upper": self.upper.cpu().numpy(), "runner_up": self.runner_up.cpu().numpy(),
            "runner_up_radius": self.runner_up_radius.cpu().numpy(), "n_grad": self.n_grad.cpu().numpy(),
        })


def choose_targets(logits: torch.Tensor, y: torch.Tensor, mode: str, *, seed: int = 0) -> torch.Tensor:
    """Targets (B, T) for predictions y: all others (T = C - 1), runner-up, random, or least likely (T = 1)."""
    B, C = logits.shape
    if mode == "all":
        ar = torch.arange(C, device=logits.device).expand(B, C)
        return ar[ar != y[:, None]].reshape(B, C - 1)
    z = logits.detach().clone()
    if mode == "runner-up":
        z.scatter_(1, y[:, None], float("-inf"))
        return z.argmax(1, keepdim=True)
    if mode == "least":
        z.scatter_(1, y[:, None], float("inf"))
        return z.argmin(1, keepdim=True)
    if mode == "random":
        g = torch.Generator().manual_seed(seed)
        off = torch.randint(1, C, (B,), generator=g).to(logits.device)
        return ((y + off) % C)[:, None]
    raise CRCError(f"Unknown target mode {mode!r}; use one of {', '.join(TARGET_MODES)}.")


@torch.no_grad()
def certify(model: MLP, x: torch.Tensor, labels: torch.Tensor | None = None, *, targets: TargetMode = "all",
            mode: SolverMode = "fast", bounds: Bounds | None = None, bound_method: str = "auto",
            local: bool = False, seed: int = 0) -> CertificateBatch:
    """Certified L2 radii for images x (B, D) (or (B, 1, 28, 28)) in [0, 1].

    labels (B,): true labels; a misclassified image gets radius 0 (``correct`` False). Without labels the
    prediction is certified. targets: "all" (default; the radius of the classifier), "runner-up" (the paper's),
    "random", "least". mode: "fast" or "paper". bounds: a precomputed table covering the needed pairs (e.g.
    ``curvature_bounds(model)`` cached per model); computed when None. local: 2-layer nets only, refine the
    certificates that are not exact with local curvature bounds (section 7.4); never smaller than the global ones.

    Guarantee: no x' with ‖x' - x0‖ < radius changes the prediction (in exact arithmetic on the float64 model).
    """
    require_curvature_model(model)
    if local and model.depth != 2:
        raise CRCError("Local curvature certificates are available for 2-layer networks only (paper section 7.4).")
    if mode not in SOLVER_MODES:
        raise CRCError(f"Unknown solver mode {mode!r}; use one of {', '.join(SOLVER_MODES)}.")
    if targets not in TARGET_MODES:
        raise CRCError(f"Unknown target mode {targets!r}; use one of {', '.join(TARGET_MODES)}.")
    x0 = model.flatten_input(x).detach().to(model.layers[0].weight.dtype)
    if not torch.isfinite(x0).all():
        raise CRCError("Input images contain NaN or infinite values.")
    B, D = x0.shape
    if B == 0:
        raise CRCError("No images to certify (the batch is empty).")
    C = model.n_classes
    dev = x0.device
    with torch.no_grad():
        logits = model(x0)
    pred = logits.argmax(1)
    label = pred.clone() if labels is None else torch.as_tensor(labels, device=dev).long().reshape(-1)
    if label.shape[0] != B:
        raise CRCError(f"Got {B} images but {label.shape[0]} labels.")
    if ((label < 0) | (label >= C)).any():
        raise CRCError(f"Labels must lie in [0, {C - 1}].")
    correct = pred == label

    T = choose_targets(logits, pred, targets, seed=seed)  # (B, T)
    nT = T.shape[1]
    rows_b = torch.arange(B, device=dev).repeat_interleave(nT)
    yy, tt = pred[rows_b], T.reshape(-1)
    if bounds is None:
        pairs = torch.unique(yy * C + tt)
        bounds = curvature_bounds(model, pairs // C, pairs % C, method=bound_method)  # type: ignore[arg-type]
    bp = bounds.for_pairs(yy, tt)
    xr = x0[rows_b]
    tr = _Track.new(xr)
    if mode == "paper":
        n_grad = _solve_paper(MarginOracle(model, yy, tt), xr, yy, tt, bp.m, bp.M, bp.K, tr)[2]
    else:
        z = logits.detach().clone()
        z.scatter_(1, pred[:, None], float("-inf"))
        protect = tt == z.argmax(1)[rows_b]  # the paper's runner-up radius stays tight
        n_grad = _solve_fast(MarginOracle(model, yy, tt), xr, yy, tt, bp.m, bp.M, tr, group=rows_b,
                             protect=protect)[2]

    # final, sound evaluation in float64 at the best points
    m64 = _as_dtype(model, torch.float64)
    x0d = xr.double()
    xb = tr.x_lb.double()
    f, g = margin_and_grad(m64, xb, yy, tt)
    lb, eta_f = bound_at(xb, x0d, f, g, bp.m, tr.eta)
    f0, _ = margin_and_grad(m64, x0d, yy, tt)
    lb = torch.where(f0 > 0, lb.clamp_min(0), torch.zeros_like(lb))
    rad = (2 * lb).sqrt()
    # exact (primal = dual): one Newton step puts x on the boundary within the certified radius
    gn2 = (g * g).sum(1).clamp_min(1e-300)
    x_on = xb - (f / gn2)[:, None] * g
    f_on, _ = margin_and_grad(m64, x_on, yy, tt)
    d_on = (x_on - x0d).norm(dim=1)
    exact = (f_on.abs() <= 1e-5 * (1 + f0.abs())) & (d_on - rad <= 1e-4 * (1 + d_on)) & (rad > 0)
    upper = torch.where(exact, d_on, tr.d_up)
    x_show = torch.where(exact[:, None], x_on, torch.where(torch.isfinite(tr.d_up)[:, None], tr.x_up.double(), xb))
    f_show = torch.where(exact, f_on, f)

    if local:
        from .local import local_certificate

        todo = ~exact & (rad > 0)
        if todo.any():
            r_loc = local_certificate(m64, x0d[todo], yy[todo], tt[todo], rad[todo], upper[todo], bp.M[todo],
                                      x_start=xb[todo])
            rad = rad.clone()
            rad[todo] = torch.maximum(rad[todo], r_loc)
    radT = rad.reshape(B, nT)
    radT = torch.where(correct[:, None], radT, torch.zeros_like(radT))
    j = radT.argmin(1)
    pick = torch.arange(B, device=dev) * nT + j
    ng = n_grad + _FINAL_EVALS

    def per_class(v: torch.Tensor, fill: float | bool | int) -> torch.Tensor:
        out = torch.full((B, C), fill, dtype=v.dtype, device=dev)
        return out.scatter_(1, T, v.reshape(B, nT))

    radii = per_class(radT, float("nan"))
    z = logits.detach().clone()
    z.scatter_(1, pred[:, None], float("-inf"))
    ru = z.argmax(1)
    upperT = upper.reshape(B, nT)
    return CertificateBatch(
        pred=pred, label=label, correct=correct, radius=radT.gather(1, j[:, None])[:, 0],
        target=torch.where(correct, T.gather(1, j[:, None])[:, 0], torch.full_like(pred, -1)),
        exact=exact[pick] & correct, eta=eta_f[pick], margin=f_show[pick], n_grad=ng.reshape(B, nT).sum(1),
        upper=torch.where(correct, upperT.min(1).values, torch.zeros_like(upperT[:, 0])),
        x_boundary=x_show[pick].to(x0.dtype), runner_up=ru, runner_up_radius=radii.gather(1, ru[:, None])[:, 0],
        radii=radii, exact_t=per_class(exact & correct[rows_b], False), n_grad_t=per_class(ng, 0),
        logits=logits, targets_t=T, x_boundary_t=x_show.reshape(B, nT, D).to(x0.dtype),
        eta_t=eta_f.reshape(B, nT), margin_t=f_show.reshape(B, nT), upper_t=upperT,
        mode=mode, targets=targets, bound_method=bounds.method,
    )
