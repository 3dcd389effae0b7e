"""The η-bisection and the majorise-minimise (MM) step shared by Algorithm 1 (certificate) and Algorithm 2 (attack).

Both algorithms minimise, for a fixed multiplier, a problem of the form

    P(z) = (prox/2) ‖z - x0‖² + lin · f(z)            (Algorithm 1: prox = 1, lin = η;  Algorithm 2: prox = η, lin = 1)

and move the multiplier by bisection. With maj ≥ |lin| · K (K ⪰ |∇²f|), the quadratic majoriser of P at x is
minimised by z = (prox · x0 + maj · x - lin · ∇f(x)) / (prox + maj): each step never increases P.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..hessian import MarginOracle

OnEval = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


def mm_step(x: torch.Tensor, x0: torch.Tensor, g: torch.Tensor, prox: torch.Tensor, lin: torch.Tensor,
            maj: torch.Tensor) -> torch.Tensor:
    """One MM step for P above: x, x0, g = ∇f(x) (N, D); prox, lin, maj (N,) -> the next point (N, D)."""
    return (prox[:, None] * x0 + maj[:, None] * x - lin[:, None] * g) / (prox + maj)[:, None]


def mm_minimise(oracle: MarginOracle, x: torch.Tensor, x0: torch.Tensor, prox: torch.Tensor, lin: torch.Tensor,
                maj: torch.Tensor, *, n_inner: int, tol: float, on_eval: OnEval | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``n_inner`` MM steps per row from x (N, D), each row stopping once ‖∇P(x)‖ = ‖prox (x - x0) + lin ∇f‖
    < tol. ``on_eval(x, f, g)`` sees every evaluated point (the certificate's tracker).
    Returns (x, evaluations (N,))."""
    n = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(n_inner):
        f, g = oracle(x)
        n += active.long()
        if on_eval is not None:
            on_eval(x, f, g)
        active &= (prox[:, None] * (x - x0) + lin[:, None] * g).norm(dim=1) >= tol
        if not active.any():
            break
        x = torch.where(active[:, None], mm_step(x, x0, g, prox, lin, maj), x)
    return x, n


def bisect_eta(lo: torch.Tensor, hi: torch.Tensor, eta: torch.Tensor, go_up: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One bisection step on the multiplier: rows with ``go_up`` keep η as their new lower end, the others as their
    upper end. Returns (lo, hi, the new midpoint), all (N,)."""
    lo = torch.where(go_up, eta, lo)
    hi = torch.where(go_up, hi, eta)
    return lo, hi, (lo + hi) / 2
