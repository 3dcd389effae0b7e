"""The fast certificate solver: a KKT chase of the closest boundary point, then an accelerated dual ascent.

Phase A (every row): x ← x0 - η_p ∇f(x) with η_p = (f + ∇f·(x0 - x)) / ‖∇f‖² (the linearised boundary's
multiplier), damped. Each evaluated point feeds the bound tracker; a row stops when the first-order distance to
the boundary meets its certified radius (the certificate is then exact) or when η_p keeps exceeding 1/|m| (it
cannot be).
Phase B (rows with an open gap): maximise d(η) = min_x F_η(x) over η ∈ [0, 1/|m|). d is concave with
d'(η) = f(x_η), so this is a root search on f(x_η) (regula falsi, Illinois variant) with each F_η minimised by
Nesterov's method (gradient restart, step 1/(1 + ηM)). The certificate never depends on where either phase stops.

``group`` (N,) gives the image of each row: a row whose bound already reaches the distance of a boundary point
found for the same image (any target) cannot be that image's minimum, so phase B drops it (its value stays a
valid, possibly looser, lower bound) unless ``protect`` (N,) marks it (the runner-up, whose radius is reported).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..dual import BoundTracker
from ..hessian import MarginOracle
from ..tolerances import (
    BEYOND_STEPS,
    CHASE_STEPS,
    CURVATURE_FLOOR,
    DUAL_BUDGET,
    DUAL_CHECK_EVERY,
    DUAL_GAIN_RTOL,
    DUAL_LEVEL_ITERS,
    DUAL_MAX_LEVELS,
    DUAL_TOP_GAP,
    FALSE_POSITION_CLAMP,
    GAP_RTOL,
    STATIONARY_EPS_MULT,
    TINY_F64,
    TINY_NORM,
    WORSE_SLACK,
)


@dataclass
class Rows:
    """The rows a solver works on: starting points x0 (N, D), curvature bounds m ≤ ∇²f ≤ M (N,), and for the
    pruning of phase B the image of each row ``group`` (N,) and the rows never pruned ``protect`` (N,) bool."""

    x0: torch.Tensor
    m: torch.Tensor
    M: torch.Tensor
    group: torch.Tensor | None = None
    protect: torch.Tensor | None = None


def solve_fast(oracle: MarginOracle, rows: Rows, tracker: BoundTracker, *, n_chase: int = CHASE_STEPS,
               n_dual: int = DUAL_BUDGET) -> torch.Tensor:
    """Both phases on all rows; returns gradient evaluations per row (N,)."""
    n_grad = torch.zeros(rows.x0.shape[0], dtype=torch.long, device=rows.x0.device)
    open_rows, f_x0 = chase(oracle, rows, tracker, n_grad, n_chase)
    idx = open_rows.nonzero()[:, 0]
    if idx.numel() > 0:
        DualAscent(oracle, rows, tracker, idx, n_grad, f_x0[idx]).run(n_dual)
    return n_grad


def _gap_open(x0: torch.Tensor, x: torch.Tensor, f: torch.Tensor, g: torch.Tensor, lb: torch.Tensor) -> torch.Tensor:
    """First-order estimate of the distance to the boundary minus the certified radius > tolerance (n,) bool."""
    d = ((x - x0).norm(dim=1) + f.abs() / g.norm(dim=1).clamp_min(TINY_NORM)).double()
    return d - (2 * lb.clamp_min(0)).sqrt() > GAP_RTOL * (1 + d)


def chase(oracle: MarginOracle, rows: Rows, tracker: BoundTracker, n_grad: torch.Tensor, n_steps: int
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Phase A. Adds to ``n_grad`` in place; returns (rows whose gap is still open (N,) bool, f(x0) (N,) float64)."""
    x0, m = rows.x0, rows.m
    N, dev = x0.shape[0], x0.device
    x = x0.clone()
    beta = torch.ones(N, dtype=x0.dtype, device=dev)  # damping
    prev_lb = torch.full((N,), -1.0, dtype=torch.float64, device=dev)
    open_rows = torch.ones(N, dtype=torch.bool, device=dev)
    chasing = torch.ones(N, dtype=torch.bool, device=dev)
    beyond = torch.zeros(N, dtype=torch.long, device=dev)  # consecutive steps whose η_p exceeds 1/|m|
    eta_cap = -1.0 / torch.minimum(m, torch.full_like(m, -CURVATURE_FLOOR))
    f_x0 = torch.full((N,), float("nan"), dtype=torch.float64, device=dev)
    for step in range(n_steps):
        idx = (open_rows & chasing).nonzero()[:, 0]
        if idx.numel() == 0:
            break
        xs, x0s = x[idx], x0[idx]
        f, g = oracle(xs, idx)
        n_grad[idx] += 1
        if step == 0:
            f_x0[idx] = f.double()
        lb = tracker.update(xs, x0s, f, g, m[idx], rows=idx)
        open_rows[idx] = _gap_open(x0s, xs, f, g, tracker.lb[idx])
        eta_p = ((f + (g * (x0s - xs)).sum(1)) / (g * g).sum(1).clamp_min(TINY_NORM)).clamp_min(0)
        # η_p keeps exceeding the curvature's limit 1/|m|: the dual cannot close the gap, phase B takes the row
        beyond[idx] = torch.where(eta_p.double() >= eta_cap[idx], beyond[idx] + 1, torch.zeros_like(beyond[idx]))
        chasing[idx] = beyond[idx] < BEYOND_STEPS
        worse = lb < prev_lb[idx] - WORSE_SLACK  # oscillation: halve β, else grow it back
        b = torch.where(worse, beta[idx] * 0.5, (beta[idx] * 1.5).clamp(max=1.0))
        beta[idx] = b
        prev_lb[idx] = torch.maximum(prev_lb[idx], lb)
        x[idx] = xs + b[:, None] * ((x0s - eta_p[:, None] * g) - xs)
    return open_rows, f_x0


class DualAscent:
    """Phase B on rows ``idx``: per row a bracket [lo, hi] on η with f(x_lo) > 0 ≥ f(x_hi), the current level η,
    and the Nesterov state (x, x_prev, momentum t_k, iterations on this level)."""

    def __init__(self, oracle: MarginOracle, rows: Rows, tracker: BoundTracker, idx: torch.Tensor,
                 n_grad: torch.Tensor, f_x0: torch.Tensor) -> None:
        self.oracle, self.rows, self.tracker, self.idx, self.n_grad = oracle, rows, tracker, idx, n_grad
        n, dev = idx.numel(), rows.x0.device
        self.x0 = rows.x0[idx]
        self.m_raw = rows.m[idx]
        self.m = torch.minimum(self.m_raw, torch.full_like(self.m_raw, -CURVATURE_FLOOR))
        self.M = rows.M[idx].clamp_min(0)
        self.top = -1.0 / self.m * (1 - DUAL_TOP_GAP)
        self.eta, self.lo, self.hi = self.top.clone(), torch.zeros_like(self.top), self.top.clone()
        if not torch.isfinite(f_x0).all():  # f(x0): known from the chase's first step
            f_x0, _ = oracle(self.x0, idx)
            n_grad[idx] += 1
        self.f_lo, self.f_hi = f_x0.double(), torch.full_like(self.eta, float("nan"))
        self.side = torch.zeros(n, dtype=torch.long, device=dev)  # Illinois: which end moved last (+1 lo, -1 hi)
        self.x = tracker.x_lb[idx].clone()
        self.x_prev = self.x.clone()
        self.mom = torch.ones(n, dtype=torch.float64, device=dev)  # FISTA's t_k
        self.it = torch.zeros(n, dtype=torch.long, device=dev)
        self.levels = torch.zeros(n, dtype=torch.long, device=dev)
        self.alive = torch.ones(n, dtype=torch.bool, device=dev)
        self.g_tol = STATIONARY_EPS_MULT * torch.finfo(rows.x0.dtype).eps

    def run(self, budget: int) -> None:
        for step_no in range(budget):
            if step_no % DUAL_CHECK_EVERY == 0:
                self.alive &= ~self.irrelevant()
            a = self.alive.nonzero()[:, 0]
            if a.numel() == 0:
                break
            done, f = self.nesterov_step(a)
            if done.any():
                self.next_level(a[done], f[done].double())

    def irrelevant(self) -> torch.Tensor:
        """Rows whose bound already reaches a boundary distance found for their image (cannot be its minimum)."""
        group, tr = self.rows.group, self.tracker
        if group is None:
            return torch.zeros_like(self.alive)
        U = torch.full((int(group.max()) + 1,), float("inf"), dtype=torch.float64, device=group.device)
        U.scatter_reduce_(0, group, tr.d_up, reduce="amin")
        out = (2 * tr.lb[self.idx].clamp_min(0)).sqrt() >= U[group[self.idx]]
        return out if self.rows.protect is None else out & ~self.rows.protect[self.idx]

    def nesterov_step(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One accelerated step on F_η for the alive rows ``a``; returns (level finished (k,) bool, f at the point)."""
        dt = self.x0.dtype
        e = self.eta[a]
        tk = self.mom[a]
        t_next = (1 + (1 + 4 * tk * tk).sqrt()) / 2
        beta = ((tk - 1) / t_next).to(dt)[:, None]
        xa, x0a = self.x[a], self.x0[a]
        yk = xa + beta * (xa - self.x_prev[a])
        f, g = self.oracle(yk, self.idx[a])
        self.n_grad[self.idx[a]] += 1
        self.tracker.update(yk, x0a, f, g, self.m_raw[a], rows=self.idx[a], eta_c=e)
        gradF = (yk - x0a) + e.to(dt)[:, None] * g
        x_new = yk - gradF / (1 + e * self.M[a]).to(dt)[:, None]  # step 1/L, L = 1 + ηM ≥ ∇²F_η
        restart = (gradF * (x_new - xa)).sum(1) > 0  # momentum points uphill: drop it (O'Donoghue & Candès)
        self.mom[a] = torch.where(restart, torch.ones_like(tk), t_next)
        self.x_prev[a] = torch.where(restart[:, None], x_new, xa)
        self.x[a] = x_new
        self.it[a] += 1
        # level finished: F_η minimised to working precision, its slack negligible, or the iteration cap reached
        gn = gradF.norm(dim=1).double()
        scale = 1 + (yk - x0a).norm(dim=1).double()
        slack = gn * gn / (2 * (1 + e * self.m[a]).clamp_min(TINY_F64))
        done = (gn <= self.g_tol * scale) | (slack <= DUAL_GAIN_RTOL * scale) | (self.it[a] >= DUAL_LEVEL_ITERS)
        return done, f

    def next_level(self, d: torch.Tensor, fd: torch.Tensor) -> None:
        """Move the bracket of rows ``d`` by the sign of f(x_η) (Illinois halves the stale end's value) and pick
        the next η by false position; retire rows whose possible gain is negligible."""
        pos = fd > 0
        at_top = pos & (self.eta[d] >= self.top[d])
        side = self.side[d]
        self.lo[d] = torch.where(pos, self.eta[d], self.lo[d])
        self.hi[d] = torch.where(pos, self.hi[d], self.eta[d])
        self.f_lo[d] = torch.where(pos, fd, torch.where(side == -1, self.f_lo[d] / 2, self.f_lo[d]))
        self.f_hi[d] = torch.where(pos, torch.where(side == 1, self.f_hi[d] / 2, self.f_hi[d]), fd)
        self.side[d] = torch.where(pos, torch.ones_like(side), -torch.ones_like(side))
        w = self.f_lo[d] / (self.f_lo[d] - self.f_hi[d])
        w = torch.where(torch.isfinite(w), w.clamp(*FALSE_POSITION_CLAMP), torch.full_like(w, 0.5))
        self.eta[d] = self.lo[d] + w * (self.hi[d] - self.lo[d])
        self.mom[d] = 1.0
        self.x_prev[d] = self.x[d]
        self.it[d] = 0
        self.levels[d] += 1
        gain = (self.hi[d] - self.lo[d]) * self.f_lo[d].clamp_min(0) * torch.where(self.side[d] == -1, 2.0, 1.0)
        small = gain <= DUAL_GAIN_RTOL * (1 + self.tracker.lb[self.idx[d]])
        finished = at_top | (self.levels[d] >= DUAL_MAX_LEVELS) | small
        self.alive[d] = ~finished
