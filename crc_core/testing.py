"""Testing harness (not used by the library itself): empirical soundness checks of bounds and certificates.

Used by the test suite (tests/test_soundness_*.py, tests/test_evaluate.py) and scripts/soundness_at_scale.py.

* :func:`check_bounds`: exact Hessian spectra against curvature bounds. A bound is *violated* when an exact
  eigenvalue of the margin Hessian (float64 eigvalsh of the Lemma 1 Hessian) falls outside [m, M] or outside
  [-K, K] beyond a round-off tolerance.
* :func:`curvature_ascent_points`: points chosen to make the curvature large (the hardest places for a bound).
* :func:`attack_certificates`: PGD, Algorithm 2 and line searches trying to change a prediction inside its
  certified radius (a violation = a sound-looking certificate proved wrong).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .bounds import Bounds
from .hessian import margin_hessian, margin_hessian_eigvals
from .models import MLP, as_dtype

# A flip found at ≥ (1 − FLIP_RATIO_TOL)·radius is the bisection's round-off at the boundary, not a violation.
FLIP_RATIO_TOL = 1e-6


@dataclass
class BoundCheck:
    """Counts over all (point, pair) checks; ``worst`` = largest |eig| / bound seen (≤ 1 when sound)."""

    n_checks: int
    n_violations: int
    worst_ratio_m: float
    worst_ratio_M: float
    worst_ratio_K: float

    def merge(self, other: BoundCheck) -> BoundCheck:
        return BoundCheck(self.n_checks + other.n_checks, self.n_violations + other.n_violations,
                          max(self.worst_ratio_m, other.worst_ratio_m), max(self.worst_ratio_M, other.worst_ratio_M),
                          max(self.worst_ratio_K, other.worst_ratio_K))


def check_bounds(model: MLP, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, bounds: Bounds, *,
                 rtol: float = 1e-9) -> BoundCheck:
    """Check exact spectra at points x (N, D) for pairs (y (N,), t (N,)) against ``bounds`` (any table covering
    the pairs). Returns counts; a violation is λ_min < m - tol, λ_max > M + tol or max|λ| > K + tol."""
    ev = margin_hessian_eigvals(model, x, y, t)  # (N, D) ascending, float64
    b = bounds.for_pairs(y, t)
    lo, hi = ev[:, 0], ev[:, -1]
    tol = rtol * b.K.abs() + 1e-12
    absmax = torch.maximum(-lo, hi)
    bad = (lo < b.m - tol) | (hi > b.M + tol) | (absmax > b.K + tol)

    def worst(a: torch.Tensor, bound: torch.Tensor) -> float:
        return float((a / bound.abs().clamp_min(1e-300)).max()) if a.numel() else 0.0

    return BoundCheck(int(ev.shape[0]), int(bad.sum()), worst(-lo.clamp(max=0), -b.m), worst(hi.clamp(min=0), b.M),
                      worst(absmax, b.K))


def curvature_ascent_points(model: MLP, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, *, steps: int = 30,
                            lr: float = 0.05, which: str = "absmax") -> torch.Tensor:
    """Points found by gradient ascent on an extreme eigenvalue of the margin Hessian, started at x0 (N, D).

    which: "max" (λ_max), "min" (-λ_min) or "absmax" (max |λ|). Returns detached points (N, D) in the model's
    dtype; they are not clamped to [0, 1] (the bounds are global over R^D).
    """
    m64 = as_dtype(model, torch.float64)
    for p in m64.parameters():
        p.requires_grad_(False)
    x = x0.detach().to(torch.float64).clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    for _ in range(steps):
        ev = torch.linalg.eigvalsh(margin_hessian(m64, x, y, t))
        obj = {"max": ev[:, -1], "min": -ev[:, 0], "absmax": torch.maximum(ev[:, -1], -ev[:, 0])}[which]
        opt.zero_grad()
        (-obj.sum()).backward()
        opt.step()
    return x.detach().to(model.layers[0].weight.dtype)


def line_search_flips(m64: MLP, x0: torch.Tensor, pred: torch.Tensor, radius: torch.Tensor, dirs: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Along each direction dirs (N, k, D) from x0 (N, D), the nearest point (within 3·radius) where the float64
    model's prediction leaves pred (N,): a scan of s in (0, 3r] on a 60-step grid, then 40 bisection steps.

    Returns (points (P, D) just past the first flip, their row in x0 (P,), number of directions without a flip).
    """
    N, k, D = dirs.shape
    U = dirs / dirs.norm(dim=2, keepdim=True).clamp_min(1e-300)
    xs = x0[:, None, :].expand(N, k, D).reshape(-1, D)
    us = U.reshape(-1, D)
    rr, pr = radius.repeat_interleave(k), pred.repeat_interleave(k)
    ri = torch.arange(N).repeat_interleave(k)
    valid = us.norm(dim=1) > 0
    grid = torch.linspace(0, 3, 61, dtype=torch.float64)[1:]
    first = torch.full((xs.shape[0],), float("inf"), dtype=torch.float64)
    with torch.no_grad():
        for s in grid.flip(0):
            flip = (m64(xs + (s * rr)[:, None] * us).argmax(1) != pr) & valid
            first = torch.where(flip, s * rr, first)
        hit = torch.isfinite(first)
        lo = (first - 3 / 60 * rr).clamp_min(0)
        hi = first.clone()
        for _ in range(40):
            mid = (lo + hi) / 2
            flip = m64(xs + torch.where(hit, mid, 0 * mid)[:, None] * us).argmax(1) != pr
            hi = torch.where(hit & flip, mid, hi)
            lo = torch.where(hit & ~flip, mid, lo)
    return xs[hit] + hi[hit][:, None] * us[hit], ri[hit], int((~hit).sum())


@dataclass
class CertificateCheck:
    """Result of attacking certificates: n_pairs (image, model) checked, n_violations (a prediction change found
    strictly inside the certified radius), closest_ratio = min over attacks of (flip distance / radius)."""

    n_pairs: int
    n_violations: int
    closest_ratio: float
    n_attack_points: int

    def merge(self, other: CertificateCheck) -> CertificateCheck:
        return CertificateCheck(self.n_pairs + other.n_pairs, self.n_violations + other.n_violations,
                                min(self.closest_ratio, other.closest_ratio),
                                self.n_attack_points + other.n_attack_points)


def attack_certificates(model: MLP, x0: torch.Tensor, pred: torch.Tensor, radius: torch.Tensor, *,
                        pgd_restarts: int = 3, pgd_steps: int = 60, n_random_dirs: int = 8,
                        use_curvature_attack: bool = True, extra_dirs: torch.Tensor | None = None,
                        shrink: float = 1e-4, seed: int = 0
                        ) -> CertificateCheck:
    """Try hard to change the prediction of x0 (N, D) within its certified radius (N,) (rows with radius 0 skipped).

    Attacks: untargeted L2 PGD with restarts (no box constraint: certificates hold in R^D), Algorithm 2 against
    every other class, and bisection along random directions, the margin gradients of every target, and any
    ``extra_dirs`` (N, k, D). Attacks run at ρ = radius·(1 - shrink); flips are judged on the float64 model.
    """
    from .attack import curvature_attack, pgd_attack
    from .hessian import margin_and_grad

    keep = radius > 0
    x0, pred, radius = x0[keep], pred[keep], radius[keep].double()
    if extra_dirs is not None:
        extra_dirs = extra_dirs[keep]
    N, D = x0.shape
    if N == 0:
        return CertificateCheck(0, 0, float("inf"), 0)
    m64 = as_dtype(model, torch.float64)
    x0d = x0.double()
    rho = radius * (1 - shrink)
    closest = torch.full((N,), float("inf"), dtype=torch.float64)
    n_points = 0

    def judge(x: torch.Tensor, rows: torch.Tensor) -> None:
        nonlocal n_points
        x = x.detach()
        with torch.no_grad():
            flipped = m64(x.double()).argmax(1) != pred[rows]
        d = (x.double() - x0d[rows]).norm(dim=1)
        ratio = torch.where(flipped, d / radius[rows], torch.full_like(d, float("inf")))
        closest.scatter_reduce_(0, rows, ratio, reduce="amin")
        n_points += x.shape[0]

    rows = torch.arange(N)
    # 1. PGD (float64 model, no clamp), restarts from x0 and from random points in the ball
    xa, _ = pgd_attack(m64, x0d, pred, rho, steps=pgd_steps, restarts=pgd_restarts, clamp=False, seed=seed)
    judge(xa, rows)
    # 2. Algorithm 2 against every target, and 3. bisection along directions
    C = model.n_classes
    dirs = [torch.randn(N, n_random_dirs, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)]
    for t in range(C):
        sel = pred != t
        if not sel.any():
            continue
        tt = torch.full((int(sel.sum()),), t, dtype=torch.long)
        if use_curvature_attack:
            res = curvature_attack(m64, x0d[sel], pred[sel], tt, rho[sel], n_outer=20, n_inner=15)
            judge(res.x, rows[sel])
        _, g = margin_and_grad(m64, x0d[sel], pred[sel], tt)
        gd = torch.zeros(N, 1, D, dtype=torch.float64)
        gd[sel, 0] = -g
        dirs.append(gd)
    if extra_dirs is not None:
        dirs.append(extra_dirs.double())
    points, point_rows, n_missed = line_search_flips(m64, x0d, pred, radius, torch.cat(dirs, 1))
    if point_rows.numel():
        judge(points, point_rows)
    n_points += n_missed
    violations = int((closest < 1 - FLIP_RATIO_TOL).sum())
    return CertificateCheck(N, violations, float(closest.min()), n_points)
