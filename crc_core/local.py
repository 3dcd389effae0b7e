"""Local curvature bounds for 2-layer nets and the local certificate (paper section 7.4, App. C.6), made sound.

Inside a ball B(x0, R) every pre-activation stays in z_i(x0) ± R‖W1_i‖, so σ'' is confined to [lo_i, hi_i] and
Theorem 3 applied with these per-neuron ranges gives m_R ≤ ∇²f on the ball, with m_R ≥ m (never worse).
For x in the ball, min_{B} F_η ≥ F_η(x) - ‖∇F_η(x)‖² / (2(1 + η m_R)); hence if the nearest boundary point were
inside the ball, ½ dist² ≥ that value. So dist ≥ min(R, sqrt(2 · bound)): a ball radius R is *certified* when the
local bound reaches R. We search R between the global certificate and the nearest boundary point found (the true
distance lies in between), keeping the solver's iterates inside the ball ("safe region"), and never return less
than the global certificate.
"""

from __future__ import annotations

import math

import torch

from .activations import Activation
from .bounds import scaled_sq_norm
from .dual import bound_at
from .errors import CRCError
from .hessian import MarginOracle
from .models import MLP, require_curvature_model
from .tolerances import (
    LOCAL_BISECT_RTOL,
    LOCAL_D2_ABS,
    LOCAL_D2_REL,
    LOCAL_MIN_RADIUS,
    LOCAL_SPREAD_ROUND,
    TINY_NORM,
)

# points where σ'' has its extrema (besides interval ends): softplus σ'' peaks at 0; sigmoid σ'' = S(1-S)(1-2S)
# peaks at ±ln(2+√3); tanh σ'' = -2T(1-T²) at ±atanh(1/√3).
_CRITICAL = {"softplus": (0.0,), "sigmoid": (-math.log(2 + math.sqrt(3)), math.log(2 + math.sqrt(3))),
             "tanh": (-math.atanh(1 / math.sqrt(3)), math.atanh(1 / math.sqrt(3)))}


def second_derivative_range(act: Activation, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact min and max of σ'' over [a, b] (elementwise), widened by a round-off allowance; clipped to [h_L, h_U]."""
    cands = [act.d2(a), act.d2(b)]
    for c in _CRITICAL[act.name]:
        inside = (a <= c) & (c <= b)
        v = act.d2(torch.full_like(a, c))
        cands.append(torch.where(inside, v, cands[0]))
    st = torch.stack(cands)
    tol = LOCAL_D2_ABS + LOCAL_D2_REL * act.h
    return (st.min(0).values - tol).clamp_min(act.h_L), (st.max(0).values + tol).clamp_max(act.h_U)


def local_lower_curvature(model: MLP, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, R: torch.Tensor
                          ) -> torch.Tensor:
    """m_R ≤ λ_min(∇²f(x)) for all x in B(x0, R): rows x0 (N, D), y, t, R (N,) -> (N,) float64 (2-layer nets)."""
    act = require_curvature_model(model)
    if model.depth != 2:
        raise CRCError("Local curvature bounds are implemented for 2-layer networks only (paper section 7.4).")
    W1 = model.layers[0].weight.detach().double()
    b1 = model.layers[0].bias.detach().double()
    W2 = model.layers[1].weight.detach().double()
    z0 = x0.double() @ W1.T + b1  # (N, n)
    spread = R.double()[:, None] * W1.norm(dim=1)[None, :] * (1 + LOCAL_SPREAD_ROUND)
    lo, hi = second_derivative_range(act, z0 - spread, z0 + spread)
    w = W2[y] - W2[t]
    cn = (-torch.minimum(w * lo, w * hi)).clamp_min(0)
    return -scaled_sq_norm(W1, cn)


@torch.no_grad()
def local_certificate(model: MLP, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, r_global: torch.Tensor,
                      upper: torch.Tensor, M: torch.Tensor, *, x_start: torch.Tensor | None = None, rounds: int = 5,
                      steps: int = 60) -> torch.Tensor:
    """Local certified radii (N,) ≥ r_global for rows x0 (N, D), pairs (y, t) (float64 model recommended).

    ``upper`` (N,): the distance to a boundary point found (inf if none); the search stays below it.
    ``M`` (N,): an upper curvature bound (global is fine; only sets step sizes). ``x_start``: warm start points.
    """
    x0 = model.flatten_input(x0)
    r_global = r_global.double()
    hi = torch.where(torch.isfinite(upper), upper.double(), 2 * r_global.clamp_min(LOCAL_MIN_RADIUS))
    best = r_global.clone()
    lo = r_global.clone()
    fg = MarginOracle(model, y, t)
    for _ in range(rounds):
        R = (lo + hi) / 2
        todo = (hi - lo) > LOCAL_BISECT_RTOL * (1 + hi)
        if not todo.any():
            break
        m_R = local_lower_curvature(model, x0, y, t, R)
        lb = _ball_dual(fg, x0, m_R, M, R, steps=steps, x_start=x_start)
        ok = todo & ((2 * lb.clamp_min(0)).sqrt() >= R)
        best = torch.where(ok, torch.maximum(best, R), best)
        lo = torch.where(ok, R, lo)
        hi = torch.where(todo & ~ok, R, hi)
    return best


def _ball_dual(fg: MarginOracle, x0: torch.Tensor, m: torch.Tensor, M: torch.Tensor, R: torch.Tensor, *,
               steps: int, x_start: torch.Tensor | None = None) -> torch.Tensor:
    """Best (*) over projected-gradient iterates kept in B(x0, R), with η maximised at each; returns ½dist² bounds.
    Every evaluated point lies in the ball, so every value is a valid local bound."""
    N = x0.shape[0]
    Rd = R.to(x0.dtype)[:, None]
    x = x0.clone() if x_start is None else x_start.to(x0.dtype).clone()
    d = (x - x0).norm(dim=1, keepdim=True)
    x = x0 + (x - x0) * torch.clamp(Rd / d.clamp_min(TINY_NORM), max=1.0)
    best = torch.zeros(N, dtype=torch.float64, device=x0.device)
    eta = torch.zeros(N, dtype=torch.float64, device=x0.device)
    for _ in range(steps):
        f, g = fg(x)
        lb, e = bound_at(x, x0, f, g, m)
        better = lb > best
        best = torch.where(better, lb, best)
        eta = torch.where(better, e, eta)
        # projected gradient step on F_η (η: the best so far), step 1/L with L = 1 + ηM
        step = (1.0 / (1.0 + eta * M.double().clamp_min(0))).to(x0.dtype)[:, None]
        x = x - step * ((x - x0) + eta.to(x0.dtype)[:, None] * g)
        d = (x - x0).norm(dim=1, keepdim=True)
        x = x0 + (x - x0) * torch.clamp(Rd / d.clamp_min(TINY_NORM), max=1.0)
    return best
