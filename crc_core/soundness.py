"""Empirical soundness checks: exact Hessian spectra against curvature bounds.

Used by the test suite and the at-scale soundness scripts. A bound is *violated* when an exact eigenvalue of the
margin Hessian (float64 eigvalsh of the Lemma 1 Hessian) falls outside [m, M] or outside [-K, K] beyond a
round-off tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .bounds import Bounds
from .hessian import _as_dtype, margin_hessian, margin_hessian_eigvals
from .models import MLP


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
    m64 = _as_dtype(model, torch.float64)
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
