"""First-order certificate: r = f(x0) / L, L a proven upper bound on the margin's global Lipschitz constant.

For the margin f(x) = z_y(x) - z_t(x) of an L-layer MLP with |σ'| ≤ g,

    ‖∇f(x)‖ ≤ ‖W_L[y] - W_L[t]‖ · g^(L-1) · Π_{I<L} ‖W_I‖₂   for every x,

so no x with ‖x - x0‖ < f(x0) / L can reach f = 0. The spectral norms are provable upper bounds
(:func:`crc_core.bounds.spectral_norm_exact`, float64), never power-iteration estimates. ReLU is allowed (g = 1).
"""

from __future__ import annotations

import torch

from ..activations import ACTIVATIONS
from ..bounds import spectral_norm_exact
from ..models import MLP
from ..tolerances import F64_SUM_RTOL
from .common import as_net64, check_rows, margin64

__all__ = ["LIPSCHITZ_G", "hidden_lipschitz", "lipschitz_constant", "lipschitz_radius"]

# sup |σ'| per activation: App. F's g for the smooth ones; ReLU's derivative is 0 or 1.
LIPSCHITZ_G: dict[str, float] = {**{name: a.g for name, a in ACTIVATIONS.items()}, "relu": 1.0}



def hidden_lipschitz(model: MLP) -> torch.Tensor:
    """g^(L-1) · Π_{I<L} ‖W_I‖₂ (a 0-dim float64 tensor): the Lipschitz bound of x ↦ a^(L-1)(x), provably upper."""
    net = as_net64(model)
    g = LIPSCHITZ_G[net.act]
    out = torch.ones((), dtype=torch.float64, device=net.Ws[0].device)
    for W in net.Ws[:-1]:
        out = out * g * spectral_norm_exact(W)
    return out * (1 + F64_SUM_RTOL)


def lipschitz_constant(model: MLP, y: torch.Tensor, t: torch.Tensor, *, hidden: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """Proven upper bound on sup_x ‖∇(z_y - z_t)(x)‖ for pairs y (N,), t (N,) -> (N,) float64.

    ``hidden``: a precomputed :func:`hidden_lipschitz` of this model (it is the same for every pair).
    """
    net = as_net64(model)
    dev = net.Ws[0].device
    y = torch.as_tensor(y, device=dev).long().reshape(-1)
    t = torch.as_tensor(t, device=dev).long().reshape(-1)
    hid = hidden_lipschitz(model) if hidden is None else hidden.to(device=dev, dtype=torch.float64)
    w = net.Ws[-1][y] - net.Ws[-1][t]
    return w.norm(dim=1) * (1 + F64_SUM_RTOL) * hid


@torch.no_grad()
def lipschitz_radius(model: MLP, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, *,
                     hidden: torch.Tensor | None = None) -> torch.Tensor:
    """First-order radius for rows x0 (N, D), y (N,), t (N,) -> (N,) float64 (0 where f(x0) ≤ 0).

    Guarantee: no x with ‖x - x0‖ < radius has z_t(x) ≥ z_y(x) (float64 model, exact arithmetic, with the
    ``F64_SUM_RTOL`` allowance taken off f(x0)). Works for any depth and for ReLU.
    """
    x0, y, t = check_rows(model, x0, y, t)
    net = as_net64(model)
    z = net.forward(x0)
    f = margin64(net, x0, y, t)
    slack = F64_SUM_RTOL * (z.gather(1, y[:, None])[:, 0].abs() + z.gather(1, t[:, None])[:, 0].abs() + 1)
    L = lipschitz_constant(model, y, t, hidden=hidden)
    return (f - slack).clamp_min(0) / L.clamp_min(torch.finfo(torch.float64).tiny)  # inf when f is constant
