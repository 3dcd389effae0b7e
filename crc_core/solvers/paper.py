"""Algorithm 1 of the paper as written (batched): bisection on η over [-1/M, -1/m], MM steps on F_η, warm started.

Every gradient evaluation also feeds the sound bound tracker (crc_core.dual), so the certificate is the best (*)
over all evaluated points, not the last iterate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..dual import BoundTracker
from ..hessian import MarginOracle
from ..tolerances import CURVATURE_FLOOR, MM_STATIONARY_TOL
from .mm import bisect_eta, mm_minimise


@dataclass
class PaperResult:
    """What :func:`solve_paper` leaves besides the tracker: gradient evaluations per row ``n_grad`` (N,).
    Algorithm 1 solves every row to the end (``dropped`` all False) and proves nothing at x0 beforehand
    (``f_x0`` and ``grad_norm_up_x0`` None): the float64 finalisation evaluates every row itself."""

    n_grad: torch.Tensor
    f_x0: ClassVar[None] = None
    grad_norm_up_x0: ClassVar[None] = None

    @property
    def dropped(self) -> torch.Tensor:
        """(N,) bool, all False: no row is left early."""
        return torch.zeros_like(self.n_grad, dtype=torch.bool)


def solve_paper(oracle: MarginOracle, x0: torch.Tensor, m: torch.Tensor, M: torch.Tensor, K: torch.Tensor,
                tracker: BoundTracker, *, n_outer: int = 30, n_inner: int = 20, tol: float = MM_STATIONARY_TOL
                ) -> PaperResult:
    """Rows x0 (N, D) with curvature bounds m ≤ ∇²f ≤ M, K ≥ |∇²f| (N,); the bounds go to ``tracker``."""
    dt = x0.dtype
    eta_lo = -1.0 / M.clamp_min(CURVATURE_FLOOR).to(dt)
    eta_hi = -1.0 / torch.minimum(m, -torch.full_like(m, CURVATURE_FLOOR)).to(dt)
    eta = (eta_lo + eta_hi) / 2
    Kx = K.to(dt)
    ones = torch.ones_like(eta)
    x = x0.clone()
    n_grad = torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device)
    for _ in range(n_outer):
        def feed(xe: torch.Tensor, f: torch.Tensor, g: torch.Tensor, e: torch.Tensor = eta) -> None:
            tracker.update(xe, x0, f, g, m, eta_c=e.clamp_min(0).double())

        x, n = mm_minimise(oracle, x, x0, ones, eta, (eta * Kx).abs(), n_inner=n_inner, tol=tol, on_eval=feed)
        f, _ = oracle(x)
        n_grad += n + 1
        eta_lo, eta_hi, eta = bisect_eta(eta_lo, eta_hi, eta, f > 0)
    return PaperResult(n_grad)
