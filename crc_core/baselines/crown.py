"""CROWN (Zhang et al. 2018, "CROWN-general"; CROWN-Ada for ReLU) for L2 balls on MLPs, batched, float64.

Each hidden unit's activation is sandwiched on its pre-activation interval [l, u] by two lines,
α_L z + β_L ≤ σ(z) ≤ α_U z + β_U. A linear function Λ·z^(i) + c of the layer-i pre-activations is then bounded
below by propagating Λ backwards (a positive coefficient takes the lower line, a negative one the upper line)
down to a linear function Λ_x·x + c' of the input, whose minimum over ‖x - x0‖ ≤ ρ is Λ_x·x0 + c' - ρ‖Λ_x‖₂.
The intervals [l, u] of every hidden layer come from the same backward pass (CROWN itself), layer by layer.

Relaxations (sound on [l, u]; tangent and chord lines as in that paper):
- convex (softplus; sigmoid/tanh with u ≤ 0): tangent at the midpoint below, chord above;
- concave (sigmoid/tanh with l ≥ 0): chord below, tangent at the midpoint above;
- S-shaped (sigmoid/tanh with l < 0 < u): above, the tangent at d ∈ [0, u] passing through (l, σ(l)) (found by
  bisection, keeping the end that is proven valid), or the chord when no such d exists; below, the mirror image;
- ReLU: chord above; below, slope 1 if u ≥ -l else 0 (CROWN-Ada).

The radius is the largest ρ at which every requested margin's lower bound stays positive; the bisection reports
the last ρ it proved, never a midpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..activations import ACTIVATIONS
from ..checks import check_targets
from ..errors import CRCError
from ..models import MLP
from ..tolerances import F64_SUM_RTOL, NARROW, TANGENT_STEPS
from .common import Net64, as_net64, check_rows

__all__ = ["CrownResult", "Relaxation", "crown_lower_bounds", "crown_radius", "ibp_lower_bounds", "relax"]

# Sigmoid and tanh are convex on (-inf, 0] and concave on [0, inf); softplus is convex everywhere.
_S_SHAPED = ("sigmoid", "tanh")


@dataclass(frozen=True)
class Relaxation:
    """Lines per unit (N, n): lo_slope·z + lo_icpt ≤ σ(z) ≤ up_slope·z + up_icpt for z in [l, u]."""

    lo_slope: torch.Tensor
    lo_icpt: torch.Tensor
    up_slope: torch.Tensor
    up_icpt: torch.Tensor


def _tangent(act: str, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = ACTIVATIONS[act]
    k = a.d1(d)
    return k, a.fn(d) - k * d


def _chord(act: str, l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chord slope and intercept through (l, σ(l)), (u, σ(u)), and the Taylor allowance where it is narrow."""
    a = ACTIVATIONS[act]
    w = u - l
    narrow = w < NARROW * (1 + l.abs())
    k = torch.where(narrow, a.d1(l), (a.fn(u) - a.fn(l)) / torch.where(narrow, torch.ones_like(w), w))
    return k, a.fn(l) - k * l, torch.where(narrow, a.h * w * w / 2, torch.zeros_like(w))


def _s_tangent(act: str, l: torch.Tensor, u: torch.Tensor, upper: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """For l < 0 < u: the tangent point d through the far end (l for upper, u for lower) and whether it exists.

    Upper: d in [0, u] with σ(d) + σ'(d)(l - d) ≥ σ(l) (this gap grows with d). Lower: d in [l, 0] with
    σ(d) + σ'(d)(u - d) ≤ σ(u) (this gap grows as d decreases). The returned d always satisfies the inequality.
    """
    a = ACTIVATIONS[act]
    far = l if upper else u

    def ok(d: torch.Tensor) -> torch.Tensor:
        gap = a.fn(d) + a.d1(d) * (far - d) - a.fn(far)
        return gap >= 0 if upper else gap <= 0

    near, valid_end = (torch.zeros_like(u), u) if upper else (torch.zeros_like(l), l)
    exists = ok(valid_end)
    bad, good = near, valid_end.clone()
    for _ in range(TANGENT_STEPS):
        mid = (bad + good) / 2
        fine = ok(mid)
        good = torch.where(fine, mid, good)
        bad = torch.where(fine, bad, mid)
    return good, exists


def relax(act: str, l: torch.Tensor, u: torch.Tensor) -> Relaxation:
    """Sound linear lower/upper lines of activation ``act`` on [l, u] (elementwise, any shape, float64)."""
    if act == "relu":
        on, off = l >= 0, u <= 0
        k = u / (u - l).clamp_min(torch.finfo(u.dtype).tiny)
        up_k = torch.where(on, torch.ones_like(l), torch.where(off, torch.zeros_like(l), k))
        up_b = torch.where(on | off, torch.zeros_like(l), -k * l)
        lo_k = torch.where(on, torch.ones_like(l), torch.where(off, torch.zeros_like(l), (u >= -l).to(l.dtype)))
        return _with_slack(l, u, lo_k, torch.zeros_like(l), up_k, up_b)
    if act not in ACTIVATIONS:
        raise CRCError(f"CROWN has no linear relaxation for activation {act!r}.")
    ck, cb, taylor = _chord(act, l, u)
    tk, tb = _tangent(act, (l + u) / 2)
    if act not in _S_SHAPED:  # convex
        return _with_slack(l, u, tk, tb, ck, cb + taylor)
    convex, concave = u <= 0, l >= 0
    d_up, up_exists = _s_tangent(act, l, u, upper=True)
    d_lo, lo_exists = _s_tangent(act, l, u, upper=False)
    sk_up, sb_up = _tangent(act, d_up)
    sk_lo, sb_lo = _tangent(act, d_lo)
    # S-shaped: the tangent through the far end where it exists, else the chord (valid then: see module doc)
    up_k = torch.where(convex, ck, torch.where(concave, tk, torch.where(up_exists, sk_up, ck)))
    up_b = torch.where(convex, cb + taylor, torch.where(concave, tb, torch.where(up_exists, sb_up, cb + taylor)))
    lo_k = torch.where(convex, tk, torch.where(concave, ck, torch.where(lo_exists, sk_lo, ck)))
    lo_b = torch.where(convex, tb, torch.where(concave, cb - taylor, torch.where(lo_exists, sb_lo, cb - taylor)))
    return _with_slack(l, u, lo_k, lo_b, up_k, up_b)


def _with_slack(l, u, lo_k, lo_b, up_k, up_b) -> Relaxation:
    """Widen both lines by the round-off allowance (relative to the values they take on [l, u])."""
    span = l.abs() + u.abs()
    return Relaxation(lo_k, lo_b - F64_SUM_RTOL * (1 + lo_b.abs() + lo_k.abs() * span),
                      up_k, up_b + F64_SUM_RTOL * (1 + up_b.abs() + up_k.abs() * span))


def _backward_lower(net: Net64, rel: list[Relaxation], i: int, lam: torch.Tensor, x0: torch.Tensor,
                    rho: torch.Tensor) -> torch.Tensor:
    """Lower bound of Λ·z^(i) over ‖x - x0‖ ≤ ρ, for Λ (N, S, n_i) or (S, n_i) shared; x0 (N, D), ρ (N,) -> (N, S).

    ``rel[j]`` relaxes the activation of layer j < i (0-based; z^(j) = W_j a^(j-1) + b_j, a^(-1) = x).
    """
    N = x0.shape[0]
    c = torch.zeros(N, lam.shape[-2], dtype=x0.dtype, device=x0.device)
    c_abs = torch.zeros_like(c)  # sum of |terms| of c: the scale of its round-off
    for j in range(i, -1, -1):
        c = c + lam @ net.bs[j]
        c_abs = c_abs + lam.abs() @ net.bs[j].abs()
        lam = lam @ net.Ws[j]  # coefficients on a^(j-1) (or on x when j = 0)
        if j == 0:
            break
        r = rel[j - 1]
        pos, neg = lam.clamp_min(0), lam.clamp_max(0)
        lam = pos * r.lo_slope[:, None, :] + neg * r.up_slope[:, None, :]
        terms = pos * r.lo_icpt[:, None, :] + neg * r.up_icpt[:, None, :]
        c = c + terms.sum(-1)
        c_abs = c_abs + terms.abs().sum(-1)
    lam = lam.expand(N, *lam.shape[-2:])
    lin = (lam @ x0[:, :, None])[..., 0]
    dual = rho[:, None] * lam.norm(dim=-1)
    scale = c_abs + (lam.abs() @ x0.abs()[:, :, None])[..., 0] + dual + 1
    return c + lin - dual - F64_SUM_RTOL * scale


def _relaxations(net: Net64, x0: torch.Tensor, rho: torch.Tensor) -> list[Relaxation]:
    """CROWN bounds [l, u] of every hidden layer's pre-activations, layer by layer, and their relaxations."""
    rel: list[Relaxation] = []
    for i in range(net.depth - 1):
        n = net.Ws[i].shape[0]
        eye = torch.eye(n, dtype=x0.dtype, device=x0.device)
        both = _backward_lower(net, rel, i, torch.cat([eye, -eye]), x0, rho)
        rel.append(relax(net.act, both[:, :n], -both[:, n:]))
    return rel


def _spec(net: Net64, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Λ on the logits for margins z_y - z_t: y (N,), t (N, T) -> (N, T, C)."""
    C = net.Ws[-1].shape[0]
    eye = torch.eye(C, dtype=torch.float64, device=y.device)
    return eye[y][:, None, :] - eye[t]


def _rows(model: MLP, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, rho: float | torch.Tensor | None = None
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Validated rows: (x0 float64, y (N,), t (N, T), ρ (N,) or None)."""
    t = torch.as_tensor(t)
    t2 = t.reshape(t.shape[0], -1) if t.dim() > 0 else t.reshape(1, 1)
    x0, y, _ = check_rows(model, x0, y, t2[:, 0])
    t2 = check_targets(y, t2, model.n_classes)
    if rho is None:
        return x0, y, t2, None
    r = torch.as_tensor(rho, dtype=torch.float64, device=x0.device).reshape(-1)
    if r.numel() not in (1, x0.shape[0]) or not torch.isfinite(r).all() or (r < 0).any():
        raise CRCError(f"The radius ρ must be finite and ≥ 0, one value or one per row, got {rho!r}.")
    return x0, y, t2, r.expand(x0.shape[0])


@torch.no_grad()
def crown_lower_bounds(model: MLP, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, rho: float | torch.Tensor
                       ) -> torch.Tensor:
    """CROWN lower bounds of z_y - z_t over ‖x - x0‖ ≤ ρ: x0 (N, D), y (N,), t (N,) or (N, T), ρ scalar or (N,)
    -> (N, T) float64. Guarantee: z_y(x) - z_t(x) ≥ bound for every x in the ball (float64 model)."""
    x0, y, t2, r = _rows(model, x0, y, t, rho)
    net = as_net64(model)
    rel = _relaxations(net, x0, r)
    return _backward_lower(net, rel, net.depth - 1, _spec(net, y, t2), x0, r)


@torch.no_grad()
def ibp_lower_bounds(model: MLP, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, rho: float | torch.Tensor
                     ) -> torch.Tensor:
    """Interval bound propagation (the first layer exact on the L2 ball), same shapes as :func:`crown_lower_bounds`.

    Every activation here is monotone, so a^(i) lies in [σ(l), σ(u)]. A reference: CROWN should never be looser.
    """
    x0, y, t2, r = _rows(model, x0, y, t, rho)
    net = as_net64(model)
    mid = x0 @ net.Ws[0].T + net.bs[0]
    rad = r[:, None] * net.Ws[0].norm(dim=1)
    for W, b in zip(net.Ws[1:], net.bs[1:]):
        lo, hi = net.fn(mid - rad), net.fn(mid + rad)
        mid, rad = (lo + hi) / 2 @ W.T + b, (hi - lo) / 2 @ W.abs().T
    spec = _spec(net, y, t2)
    return (spec @ mid[:, :, None])[..., 0] - (spec.abs() @ rad[:, :, None])[..., 0]


@dataclass
class CrownResult:
    """radius (N,) float64: the last ρ proven (every requested margin's CROWN lower bound > 0 at ρ);
    lower (N, T): the bounds at that ρ; n_bounds (N,): CROWN evaluations spent."""

    radius: torch.Tensor
    lower: torch.Tensor
    n_bounds: torch.Tensor


@torch.no_grad()
def crown_radius(model: MLP, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, *, rho_start: float = 0.5,
                 grow_steps: int = 30, bisect_steps: int = 20, batch_size: int = 32) -> CrownResult:
    """CROWN radius for rows x0 (N, D), y (N,), t (N,) or (N, T) (a row is proven when all T margins are).

    Doubling from ``rho_start`` until a ρ fails (at most ``grow_steps`` times), then ``bisect_steps`` bisections;
    the radius is the largest ρ proven, 0 where none is (e.g. f(x0) ≤ 0). Rows are processed in chunks of
    ``batch_size`` (the hidden-layer passes hold (batch, 2·width, D) tensors).
    """
    if rho_start <= 0 or grow_steps < 0 or bisect_steps < 0 or batch_size < 1:
        raise CRCError("crown_radius needs rho_start > 0, grow_steps ≥ 0, bisect_steps ≥ 0 and batch_size ≥ 1.")
    x0, y, t2, _ = _rows(model, x0, y, t)
    net = as_net64(model)
    parts = [_crown_radius_chunk(net, x0[s:s + batch_size], y[s:s + batch_size], t2[s:s + batch_size],
                                 rho_start, grow_steps, bisect_steps)
             for s in range(0, x0.shape[0], batch_size)]
    return CrownResult(*(torch.cat([p[k] for p in parts]) for k in range(3)))


def _crown_radius_chunk(net: Net64, x0, y, t2, rho_start: float, grow_steps: int, bisect_steps: int):
    N = x0.shape[0]
    spec = _spec(net, y, t2)

    def bound(rho: torch.Tensor) -> torch.Tensor:
        return _backward_lower(net, _relaxations(net, x0, rho), net.depth - 1, spec, x0, rho)

    lo = torch.zeros(N, dtype=torch.float64, device=x0.device)
    lo_bound = bound(lo)
    hi = torch.full_like(lo, float(rho_start))
    open_ = torch.ones(N, dtype=torch.bool, device=x0.device)  # no failing ρ found yet
    n = torch.ones(N, dtype=torch.long, device=x0.device)
    proven0 = (lo_bound > 0).all(1)
    open_ &= proven0
    for _ in range(grow_steps):
        if not open_.any():
            break
        b = bound(hi)
        n += open_.long()
        ok = (b > 0).all(1) & open_
        lo, lo_bound = torch.where(ok, hi, lo), torch.where(ok[:, None], b, lo_bound)
        open_ &= ok
        hi = torch.where(ok, 2 * hi, hi)
    active = proven0 & ~open_  # rows with a proven lo and a failing hi
    for _ in range(bisect_steps):
        if not active.any():
            break
        mid = (lo + hi) / 2
        b = bound(mid)
        n += active.long()
        ok = (b > 0).all(1) & active
        lo, lo_bound = torch.where(ok, mid, lo), torch.where(ok[:, None], b, lo_bound)
        hi = torch.where(active & ~ok, mid, hi)
    return lo, lo_bound, n
