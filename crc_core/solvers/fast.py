"""The fast certificate solver: a KKT chase of the closest boundary point, then an accelerated dual ascent.

Phase A (every row): x ← x0 - η_p ∇f(x) with η_p = (f + ∇f·(x0 - x)) / ‖∇f‖² (the linearised boundary's
multiplier; the move uses at most 1/|m|), damped. Each evaluated point feeds the bound tracker; a row stops when
the first-order distance to the boundary meets its certified radius (the certificate is then exact) or when η_p
keeps exceeding 1/|m| (it cannot be).
Phase B (rows with an open gap): maximise d(η) = min_x F_η(x) over η ∈ [0, 1/|m|). d is concave with
d'(η) = f(x_η), so this is a root search on f(x_η) (regula falsi, Illinois variant) with each F_η minimised by
Nesterov's method (gradient restart, step 1/(1 + ηM)); a level ends when ‖∇F_η‖ reaches working precision or stops
falling. The certificate never depends on where either phase stops.

``group`` (N,) gives the image of each row: a row whose bound already reaches the distance of a boundary point
found for the same image (any target) cannot be that image's minimum, so phase B drops it (its value stays a
valid, possibly looser, lower bound) unless ``protect`` (N,) marks it (the runner-up, whose radius is reported).
Phase B also works best first: a row whose bound lies above its image's lowest bound waits and resumes only if
that minimum passes it, so rows that can end as the minimum are solved exactly as they would be alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..dual import BoundTracker, vector_scalars
from ..hessian import MarginOracle
from ..tolerances import (
    BEST_FIRST_RTOL,
    BEYOND_STEPS,
    CHASE_STEPS,
    CURVATURE_FLOOR,
    DAMP_DOWN,
    DAMP_UP,
    DUAL_BUDGET,
    DUAL_GAIN_RTOL,
    DUAL_LEVEL_ITERS,
    DUAL_MAX_LEVELS,
    DUAL_STALL_FALL,
    DUAL_STALL_ITERS,
    DUAL_TOP_GAP,
    FALSE_POSITION_CLAMP,
    GAP_RTOL,
    STATIONARY_EPS_MULT,
    TINY_F64,
    TINY_NORM,
    WORSE_SLACK,
)


@dataclass
class FastResult:
    """What :func:`solve_fast` leaves besides the tracker: gradient evaluations per row ``n_grad`` (N,); ``dropped``
    (N,) bool, the rows left early because they provably cannot be their image's minimum (sound, possibly looser
    bounds; never a protected row); with a :class:`ProvedStart` given to the solver, f(x0) (N,) float64 and a
    proved upper bound on ‖∇f(x0)‖ (N,) float64, both on the float64 model (else None)."""

    n_grad: torch.Tensor
    dropped: torch.Tensor
    f_x0: torch.Tensor | None = None
    grad_norm_up_x0: torch.Tensor | None = None


@dataclass
class Rows:
    """The rows a solver works on: starting points x0 (N, D), curvature bounds m ≤ ∇²f ≤ M (N,), and for the
    pruning of phase B the image of each row ``group`` (N,) and the rows never pruned ``protect`` (N,) bool."""

    x0: torch.Tensor
    m: torch.Tensor
    M: torch.Tensor
    group: torch.Tensor | None = None
    protect: torch.Tensor | None = None


@dataclass
class ProvedStart:
    """f and ∇f at every row's x0, with proofs (:meth:`MarginOracle.at_images_proved`): f (N,) float64 on the
    float64 model, ∇f (N, D') float32, Σ (∇f)² (N,) float64, a proved bound on ‖∇f‖ (N,) float64. ``to_solver``
    takes rows of ∇f (n, D') to the solver's coordinates (n, D) when these differ (applied only to the rows that
    are chased)."""

    f: torch.Tensor
    g: torch.Tensor
    grad_sq: torch.Tensor
    grad_norm_up: torch.Tensor
    to_solver: Callable[[torch.Tensor], torch.Tensor] | None = None


def solve_fast(oracle: MarginOracle, rows: Rows, tracker: BoundTracker, *, n_chase: int = CHASE_STEPS,
               n_dual: int = DUAL_BUDGET, start: ProvedStart | None = None) -> FastResult:
    """Both phases on all rows (see :class:`FastResult` for what is returned). ``start``: f and ∇f at x0 with
    proved f(x0) and ‖∇f(x0)‖ bounds, used as the first step (B images × P targets only).

    With several targets per image (``group``) the chase runs in two stages: first every row's step at x0 (its
    bound there is already a certificate) and the chase of the protected rows (the runner-up: usually the
    image's minimum); then the other rows are chased, and after every step a row that provably cannot be its
    image's minimum (:func:`beyond_image_minimum` with the protected rows' final bounds) is left as it is (its
    radius stays a valid lower bound)."""
    n_grad = torch.zeros(rows.x0.shape[0], dtype=torch.long, device=rows.x0.device)
    dropped = torch.zeros(rows.x0.shape[0], dtype=torch.bool, device=rows.x0.device)
    ch = Chase(oracle, rows, tracker, n_grad)

    def dual(todo: torch.Tensor) -> None:
        idx = todo.nonzero()[:, 0]
        if idx.numel() > 0:
            dual_ascent = DualAscent(oracle, rows, tracker, idx, n_grad, ch.f_x0[idx])
            dual_ascent.run(n_dual)
            dropped[idx] |= dual_ascent.dropped

    if rows.group is None or rows.protect is None:
        ch.run(None, n_chase)
        dual(ch.open)
        return FastResult(n_grad, dropped)
    images = per_image_points(rows)
    if images is None:
        ch.step(torch.arange(rows.x0.shape[0], device=rows.x0.device))
    else:
        ch.first_step(images, start)
    ch.run(rows.protect, n_chase)
    dual(ch.open & rows.protect)  # the protected rows, solved first: their bounds are final

    def drop_hopeless() -> None:
        cut = ch.open & beyond_image_minimum(rows, tracker, low_rows=rows.protect)
        dropped.logical_or_(cut)
        ch.open &= ~cut

    drop_hopeless()
    ch.run(None, n_chase, after_step=drop_hopeless)
    dual(ch.open & ~rows.protect)
    f_x0 = ch.f_x0 if ch.grad_norm_up_x0 is not None else None
    return FastResult(n_grad, dropped, f_x0, ch.grad_norm_up_x0)


def beyond_image_minimum(rows: Rows, tracker: BoundTracker, idx: torch.Tensor | None = None, *,
                         boundary: bool = True, low_rows: torch.Tensor | None = None) -> torch.Tensor:
    """THE pruning rule: rows (all N, or ``idx``), never protected ones, that cannot be (or are not now) their
    image's minimum. With ``boundary``: their certified radius reaches the distance of a boundary point found for
    their image (any target). With ``low_rows`` (N,) bool: their bound exceeds the lowest bound among their
    image's ``low_rows`` by BEST_FIRST_RTOL (a bound only grows: when those rows are final, for good). All False
    without ``group``."""
    sel = torch.arange(rows.x0.shape[0], device=rows.x0.device) if idx is None else idx
    out = torch.zeros(sel.shape[0], dtype=torch.bool, device=sel.device)
    if rows.group is None:
        return out
    g, n_images = rows.group, int(rows.group.max()) + 1
    if boundary:
        out |= (2 * tracker.lb[sel].clamp_min(0)).sqrt() >= _per_image_min(g, tracker.d_up, n_images)[g[sel]]
    if low_rows is not None:
        low = _per_image_min(g[low_rows], tracker.lb[low_rows], n_images)
        out |= tracker.lb[sel] > low[g[sel]] * (1 + BEST_FIRST_RTOL)
    return out if rows.protect is None else out & ~rows.protect[sel]


def _per_image_min(group: torch.Tensor, values: torch.Tensor, n_images: int) -> torch.Tensor:
    """(n_images,) float64: the smallest value per image (inf for an image without values)."""
    low = torch.full((n_images,), float("inf"), dtype=torch.float64, device=values.device)
    return low.scatter_reduce_(0, group, values, reduce="amin")


def per_image_points(rows: Rows) -> torch.Tensor | None:
    """x0 of each image (B, D) when the rows are B images × P targets in image-major order, else None."""
    if rows.group is None:
        return None
    B = int(rows.group[-1]) + 1
    N = rows.group.shape[0]
    P = N // B
    if B * P != N or not torch.equal(rows.group, torch.arange(B, device=rows.group.device).repeat_interleave(P)):
        return None
    return rows.x0[::P]


def _gap_open(d: torch.Tensor, lb: torch.Tensor) -> torch.Tensor:
    """(n,) bool: a first-order estimate d of the distance to the boundary exceeds the certified radius
    sqrt(2 lb) by more than the tolerance (the row's gap is still open)."""
    return d - (2 * lb.clamp_min(0)).sqrt() > GAP_RTOL * (1 + d)


class Chase:
    """Phase A state per row: the point x, damping β, steps taken, whether the row is still open (gap) and still
    chasing (η_p within reach), and f(x0) (recorded at the first step)."""

    def __init__(self, oracle: MarginOracle, rows: Rows, tracker: BoundTracker, n_grad: torch.Tensor) -> None:
        self.oracle, self.rows, self.tracker, self.n_grad = oracle, rows, tracker, n_grad
        x0, m = rows.x0, rows.m
        N, dev = x0.shape[0], x0.device
        self.x = x0.clone()
        self.beta = torch.ones(N, dtype=x0.dtype, device=dev)
        self.prev_lb = torch.full((N,), -1.0, dtype=torch.float64, device=dev)
        self.open = torch.ones(N, dtype=torch.bool, device=dev)
        self.chasing = torch.ones(N, dtype=torch.bool, device=dev)
        self.steps = torch.zeros(N, dtype=torch.long, device=dev)
        self.beyond = torch.zeros(N, dtype=torch.long, device=dev)  # consecutive steps with η_p ≥ 1/|m|
        self.eta_cap = -1.0 / torch.minimum(m, torch.full_like(m, -CURVATURE_FLOOR))
        self.f_x0 = torch.full((N,), float("nan"), dtype=torch.float64, device=dev)
        self.grad_norm_up_x0: torch.Tensor | None = None  # proved ‖∇f(x0)‖ bound (first_step with start)
        self.first_move: tuple[torch.Tensor, torch.Tensor, Callable | None] | None = None  # see first_step
        self.placed = torch.ones(N, dtype=torch.bool, device=dev)  # x holds the row's point (see first_points)

    def run(self, eligible: torch.Tensor | None, n_steps: int, after_step: Callable[[], None] | None = None
            ) -> None:
        """Step the open, chasing rows (among ``eligible``) until each has taken ``n_steps`` steps in total;
        ``after_step`` runs after every step (it may close rows)."""
        while True:
            live = self.open & self.chasing & (self.steps < n_steps)
            if eligible is not None:
                live &= eligible
            idx = live.nonzero()[:, 0]
            if idx.numel() == 0:
                return
            self.step(idx)
            if after_step is not None:
                after_step()

    def first_step(self, images: torch.Tensor, start: ProvedStart | None = None) -> None:
        """The first step of every row when the rows are B images × P targets (image-major) and all sit at their
        image's point (``images`` (B, D)): one forward pass per image serves its targets, and at x = x0 the bound
        (*) needs only f and ‖∇f‖² (R = 0, η_c = 0). Equivalent to :meth:`step` on every row. With ``start`` the
        evaluation comes from there, and ‖∇f(x0)‖ has a proved bound."""
        to_solver = None
        if start is None:
            f, g = self.oracle.at_images(images)
            grad_sq = (g * g).sum(1, dtype=torch.float64)
        else:
            f, g, grad_sq, self.grad_norm_up_x0 = start.f, start.g, start.grad_sq, start.grad_norm_up
            to_solver = start.to_solver
        x0, m = self.rows.x0, self.rows.m
        self.n_grad += 1
        self.steps += 1
        self.f_x0 = f.double()
        zero = torch.zeros_like(grad_sq)
        lb = self.tracker.update_scalars(x0, f, (zero, zero, zero, grad_sq, zero), m)
        d = self.f_x0.abs() / grad_sq.sqrt().clamp_min(TINY_NORM)  # first-order distance to the boundary
        self.open = _gap_open(d, lb)
        eta_p = (self.f_x0 / grad_sq.clamp_min(TINY_NORM)).clamp_min(0)
        self.beyond = (eta_p >= self.eta_cap).long()
        self.chasing = self.beyond < BEYOND_STEPS
        self.prev_lb = torch.maximum(self.prev_lb, lb)  # the bound at x0 is ≥ 0 > prev_lb: β stays 1
        # the step x0 - η∇f (η capped as in step()) is formed when a row is chased (with all targets, most never are)
        self.first_move = (torch.minimum(eta_p, self.eta_cap), g, to_solver)
        self.placed.zero_()

    def first_points(self, idx: torch.Tensor) -> None:
        """Form x = x0 - η∇f of the first step for the rows among ``idx`` (n,) not stepped since (x holds x0)."""
        if self.first_move is None:
            return
        p = idx[~self.placed[idx]]
        if p.numel() > 0:
            eta, g, to_solver = self.first_move
            gp = g.index_select(0, p)
            gp = gp if to_solver is None else to_solver(gp)
            self.x[p] = self.rows.x0.index_select(0, p) - eta[p].to(gp.dtype)[:, None] * gp
            self.placed[p] = True

    def step(self, idx: torch.Tensor) -> None:
        """x ← x + β (x0 - η_p ∇f(x) - x) for rows ``idx``; every evaluation feeds the tracker."""
        self.first_points(idx)
        xs, x0s, tr = self.x.index_select(0, idx), self.rows.x0.index_select(0, idx), self.tracker
        f, g = self.oracle(xs, idx)
        self.n_grad[idx] += 1
        first = self.steps[idx] == 0
        self.f_x0[idx] = torch.where(first, f.double(), self.f_x0[idx])
        self.steps[idx] += 1
        lb = tr.update(xs, x0s, f, g, self.rows.m[idx], rows=idx)
        d = ((xs - x0s).norm(dim=1) + f.abs() / g.norm(dim=1).clamp_min(TINY_NORM)).double()
        self.open[idx] = _gap_open(d, tr.lb[idx])
        eta_p = ((f + (g * (x0s - xs)).sum(1)) / (g * g).sum(1).clamp_min(TINY_NORM)).clamp_min(0)
        # η_p keeps exceeding the curvature's limit 1/|m|: the dual cannot close the gap, phase B takes the row
        over = eta_p.double() >= self.eta_cap[idx]
        self.beyond[idx] = torch.where(over, self.beyond[idx] + 1, torch.zeros_like(self.beyond[idx]))
        self.chasing[idx] = self.beyond[idx] < BEYOND_STEPS
        worse = lb < self.prev_lb[idx] - WORSE_SLACK  # oscillation: halve β, else grow it back
        b = torch.where(worse, self.beta[idx] * DAMP_DOWN, (self.beta[idx] * DAMP_UP).clamp(max=1.0))
        self.beta[idx] = b
        self.prev_lb[idx] = torch.maximum(self.prev_lb[idx], lb)
        # the target point x0 - η∇f with η capped at 1/|m|: beyond it the linearised multiplier overshoots (the
        # certificate cannot be exact there), while at the cap it is the minimiser of the linearised F_η at the top
        # of the η range, where the dual ascent starts
        eta_move = torch.minimum(eta_p, self.eta_cap[idx].to(eta_p.dtype))
        self.x[idx] = xs + b[:, None] * ((x0s - eta_move[:, None] * g) - xs)


class DualAscent:
    """Phase B on rows ``idx``: per row a bracket [lo, hi] on η with f(x_lo) > 0 ≥ f(x_hi), the current level η,
    and the Nesterov state (x, x_prev, momentum t_k, iterations on this level)."""

    def __init__(self, oracle: MarginOracle, rows: Rows, tracker: BoundTracker, idx: torch.Tensor,
                 n_grad: torch.Tensor, f_x0: torch.Tensor) -> None:
        self.oracle, self.rows, self.tracker, self.idx, self.n_grad = oracle, rows, tracker, idx, n_grad
        n, dev = idx.numel(), rows.x0.device
        self.x0 = rows.x0.index_select(0, idx)
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
        self.x = tracker.x_lb.index_select(0, idx)
        self.x_prev = self.x.clone()
        self.mom = torch.ones(n, dtype=torch.float64, device=dev)  # FISTA's t_k
        self.it = torch.zeros(n, dtype=torch.long, device=dev)
        self.best_gn = torch.full((n,), float("inf"), dtype=torch.float64, device=dev)  # smallest ‖∇F_η‖ this level
        self.stall = torch.zeros(n, dtype=torch.long, device=dev)  # iterations since it last fell
        self.levels = torch.zeros(n, dtype=torch.long, device=dev)
        self.alive = torch.ones(n, dtype=torch.bool, device=dev)
        self.dropped = torch.zeros(n, dtype=torch.bool, device=dev)  # left unfinished: cannot be the minimum
        self.g_tol = STATIONARY_EPS_MULT * torch.finfo(rows.x0.dtype).eps
        # rows that may be dropped or wait: none when every row is protected (runner-up, refine="every-target")
        unprotected = rows.protect is None or not bool(rows.protect[idx].all())
        self.prunable = rows.group is not None and unprotected

    def run(self, budget: int) -> None:
        """Up to ``budget`` steps per row. Rows whose bound lies above their image's lowest bound wait (best
        first): a waiting row resumes once that minimum passes it, so every row that can end as the image's
        minimum is solved exactly as without waiting, and rows still waiting at the end lie above it."""
        steps = torch.zeros_like(self.it)
        every_row = torch.ones(self.rows.m.shape[0], dtype=torch.bool, device=self.rows.m.device)
        while True:
            waiting = torch.zeros_like(self.alive)
            if self.prunable:  # checked before every step: drop the rows that cannot be the minimum, others wait
                cut = self.alive & beyond_image_minimum(self.rows, self.tracker, self.idx)
                self.dropped |= cut
                self.alive &= ~cut
                waiting = beyond_image_minimum(self.rows, self.tracker, self.idx, boundary=False, low_rows=every_row)
            a = (self.alive & ~waiting).nonzero()[:, 0]
            if a.numel() == 0:
                self.dropped |= self.alive  # still waiting: above their image's minimum for good
                break
            done, f = self.nesterov_step(a)
            steps[a] += 1
            if done.any():
                self.next_level(a[done], f[done].double())
            self.alive[a] &= steps[a] < budget

    def nesterov_step(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One accelerated step on F_η for the alive rows ``a``; returns (level finished (k,) bool, f at the point).
        The vectors r = y - x0 and ∇F_η(y) = r + η∇f(y) serve both the step and the tracker's bound (*)."""
        dt = self.x0.dtype
        every = a.numel() == self.idx.numel()  # all rows step: work on the arrays, no gathers and scatters
        e, tk = self.eta[a], self.mom[a]
        t_next = (1 + (1 + 4 * tk * tk).sqrt()) / 2
        beta = (tk - 1) / t_next
        xa = self.x if every else self.x.index_select(0, a)  # index_select: far faster than x[a] on CPU
        d = xa - (self.x_prev if every else self.x_prev.index_select(0, a))
        yk = xa + beta.to(dt)[:, None] * d
        ia = self.idx[a]
        f, g = self.oracle(yk, ia)
        self.n_grad[ia] += 1
        r = yk - (self.x0 if every else self.x0.index_select(0, a))
        gradF = r + e.to(dt)[:, None] * g
        R, v2, vg, grad_sq = vector_scalars(r, gradF, g)
        self.tracker.update_scalars(yk, f, (R, v2, vg, grad_sq, e.to(dt).double()), self.m_raw[a], rows=ia)
        L = 1 + e * self.M[a]  # step 1/L, L = 1 + ηM ≥ ∇²F_η
        x_new = yk - gradF / L.to(dt)[:, None]
        # momentum points uphill, ∇F·(x_new - x) > 0 with x_new - x = β d - ∇F/L: drop it (O'Donoghue & Candès)
        restart = beta * (gradF * d).sum(1, dtype=torch.float64) - v2 / L > 0
        self.mom[a] = torch.where(restart, torch.ones_like(tk), t_next)
        x_prev = torch.where(restart[:, None], x_new, xa)
        if every:
            self.x, self.x_prev = x_new, x_prev
        else:
            self.x[a], self.x_prev[a] = x_new, x_prev
        it = self.it[a] + 1
        self.it[a] = it
        # level finished: F_η minimised to working precision, its slack negligible, or the iteration cap reached
        gn = v2.sqrt()
        scale = 1 + R.sqrt()
        slack = v2 / (2 * (1 + e * self.m[a]).clamp_min(TINY_F64))
        # or ‖∇F_η‖ has stopped falling: the row sits at its float32 rounding floor
        fell = gn < self.best_gn[a] * (1 - DUAL_STALL_FALL)
        self.best_gn[a] = torch.where(fell, gn, self.best_gn[a])
        stall = torch.where(fell, torch.zeros_like(it), self.stall[a] + 1)
        self.stall[a] = stall
        done = ((gn <= self.g_tol * scale) | (slack <= DUAL_GAIN_RTOL * scale) | (it >= DUAL_LEVEL_ITERS)
                | (stall >= DUAL_STALL_ITERS))
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
        self.best_gn[d], self.stall[d] = float("inf"), 0
        self.levels[d] += 1
        gain = (self.hi[d] - self.lo[d]) * self.f_lo[d].clamp_min(0) * torch.where(self.side[d] == -1, 2.0, 1.0)
        small = gain <= DUAL_GAIN_RTOL * (1 + self.tracker.lb[self.idx[d]])
        finished = at_top | (self.levels[d] >= DUAL_MAX_LEVELS) | small
        self.alive[d] = ~finished
