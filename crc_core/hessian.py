"""Closed-form derivatives of the margin f(x) = z_y(x) - z_t(x) (paper Lemma 1).

Lemma 1:  ∇²_x z_i^(L) = Σ_{I=1}^{L-1} B^(I)ᵀ diag(F_i^(L,I) ⊙ σ''(z^(I))) B^(I),
with B^(I) = ∂z^(I)/∂x (N_I × D) and F^(L,I) = ∂z^(L)/∂a^(I) (N_L × N_I). For the margin, row i of F is
replaced by w = W^(L)_y - W^(L)_t pushed back through the layers (plain back-propagation of w).

Shapes: x (B, D); y (B,) predicted/true labels; t (B,) or (B, P) targets. Results carry a P axis when t is 2-D.
All functions are batched, differentiable-free (pure tensor algebra) and follow ``x.device`` / the model's dtype.
torch.func's autograd Hessian is the test reference (tests/test_hessian.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .checks import check_images, check_labels, check_targets
from .f32_bounds import backward_f32, grad_norm_upper, pair_row_norms
from .models import MLP, as_dtype, require_curvature_model


@dataclass
class _Pass:
    """Forward quantities at x and backward margin rows, for pairs (B, P)."""

    logits: torch.Tensor  # (B, C)
    zs: list[torch.Tensor]  # [z^(1)..z^(L-1)], each (B, N_I)
    d1: list[torch.Tensor]  # σ'(z^(I)), each (B, N_I)
    d2: list[torch.Tensor]  # σ''(z^(I)), each (B, N_I)
    rows: list[torch.Tensor]  # F_w^(L,I), each (B, P, N_I): ∂f/∂a^(I)


def _pairs(model: MLP, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                                    torch.Tensor, bool]:
    """Validate and broadcast: returns x (B, D), y (B, 1), t (B, P), squeeze flag."""
    x = check_images(model, x, empty_ok=True, detach=False)  # differentiable in x (curvature ascent)
    B = x.shape[0]
    y = torch.as_tensor(y, device=x.device).long().reshape(-1)
    y = check_labels(y.expand(B) if y.numel() == 1 and B > 1 else y, B, model.n_classes, x.device)
    t = torch.as_tensor(t, device=x.device).long()
    if t.dim() == 0:
        t = t.expand(B)
    squeeze = t.dim() == 1
    t = check_targets(y, t.reshape(t.shape[0], -1), model.n_classes)
    return x, y[:, None], t, squeeze


def _forward_backward(model: MLP, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, *, second: bool = True
                      ) -> _Pass:
    act = require_curvature_model(model)
    return _forward_backward_unchecked(model, act, x, y, t, second=second)


def _forward_backward_unchecked(model: MLP, act, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, *,
                                second: bool = True) -> _Pass:
    logits, zs = model.forward_all(x)
    d1 = [act.d1(z) for z in zs]
    d2 = [act.d2(z) for z in zs] if second else []
    WL = model.layers[-1].weight  # (C, N_{L-1})
    row = WL[y] - WL[t]  # (B, P, N_{L-1})
    rows = [row]
    for I in range(model.depth - 2, 0, -1):  # rows for a^(I), I = L-2 .. 1
        W = model.layers[I].weight  # W^(I+1): (N_{I+1}, N_I)
        row = (row * d1[I][:, None, :]) @ W
        rows.append(row)
    rows.reverse()
    return _Pass(logits, zs, d1, d2, rows)


def _jacobians(model: MLP, p: _Pass) -> list[torch.Tensor]:
    """B^(I) = ∂z^(I)/∂x, each (B, N_I, D); B^(1) = W^(1) (broadcast, not copied)."""
    W1 = model.layers[0].weight
    Bs = [W1.expand(p.zs[0].shape[0], *W1.shape)]
    for I in range(1, model.depth - 1):
        Bs.append(model.layers[I].weight @ (p.d1[I - 1][:, :, None] * Bs[-1]))
    return Bs


def margin_and_grad(model: MLP, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """f(x) = z_y - z_t and ∇_x f, analytically.

    x: (N, D), y: (N,), t: (N,)  ->  f (N,), grad (N, D). One forward and one backward pass, no autograd graph.
    """
    x, y2, t2, _ = _pairs(model, x, y, t)
    p = _forward_backward(model, x, y2, t2, second=False)
    return _f_and_g(model, p, y2, t2)


def _f_and_g(model: MLP, p: _Pass, y2: torch.Tensor, t2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    f = (p.logits.gather(1, y2) - p.logits.gather(1, t2))[:, 0]
    g = (p.rows[0][:, 0] * p.d1[0]) @ model.layers[0].weight
    return f, g


class MarginOracle:
    """Fast f and ∇f for solvers' inner loops: the model and the (y, t) rows are validated once, at construction.

    ``oracle(x, rows=None)`` -> (f (n,), ∇f (n, D)) for x (n, D) of the given rows (all N when None).
    """

    def __init__(self, model: MLP, y: torch.Tensor, t: torch.Tensor) -> None:
        self.model, self.act = model, require_curvature_model(model)
        self.y, self.t = y.long().reshape(-1, 1), t.long().reshape(-1, 1)

    def __call__(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        y2, t2 = (self.y, self.t) if rows is None else (self.y[rows], self.t[rows])
        p = _forward_backward_unchecked(self.model, self.act, x, y2, t2, second=False)
        return _f_and_g(self.model, p, y2, t2)

    def at_images(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All N rows when they are B images × P targets in image-major order, each image's rows at one point:
        x (B, D) -> (f (N,), ∇f (N, D)). One forward pass per image serves its P targets (one backward row each)."""
        B = x.shape[0]
        y2, t2 = self.y.reshape(B, -1)[:, :1], self.t.reshape(B, -1)
        p = _forward_backward_unchecked(self.model, self.act, x, y2, t2, second=False)
        f = p.logits.gather(1, y2) - p.logits.gather(1, t2)  # (B, P)
        g = (p.rows[0] * p.d1[0][:, None, :]) @ self.model.layers[0].weight  # (B, P, D)
        return f.reshape(-1), g.reshape(-1, x.shape[1])

    def at_images_proved(self, x: torch.Tensor, model64: MLP) -> tuple[torch.Tensor, ...]:
        """As :meth:`at_images`, with a proved bound on ‖∇f‖: the forward pass on ``model64`` (the float64 copy of
        this oracle's float32 model), the backward pass in float32 (:func:`crc_core.f32_bounds.backward_f32`).
        x (B, D) -> (f (N,) float64 on the float64 model, ∇f (N, D) float32, its Σ (∇f)² (N,) accumulated in
        float64, an upper bound (N,) float64 on the float64 model's ‖∇f‖). Valid where float32 products are IEEE
        (:func:`f32_bounds.f32_matmul_is_ieee`)."""
        B = x.shape[0]
        y2, t2 = self.y.reshape(B, -1)[:, :1], self.t.reshape(B, -1)
        logits, zs = model64.forward_all(x.double())
        d1 = [self.act.d1(z) for z in zs]
        f = (logits.gather(1, y2) - logits.gather(1, t2)).reshape(-1)
        WL = self.model.layers[-1].weight  # float32: WL[y] - WL[t] is the exact rows' float32 rounding
        g, err = backward_f32(self.model, d1, WL[y2] - WL[t2], pair_row_norms(WL)[y2, t2])
        g = g.reshape(-1, x.shape[1])
        grad_sq = (g * g).sum(1, dtype=torch.float64)
        return f, g, grad_sq, grad_norm_upper(g, err.reshape(-1), grad_sq)


def margin_hessian(model: MLP, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, *, per_layer: bool = False
                   ) -> torch.Tensor:
    """Exact Hessian ∇²_x (z_y - z_t) by Lemma 1.

    x: (B, D); y: (B,); t: (B,) or (B, P). Returns (B, D, D) or (B, P, D, D); with ``per_layer`` an extra
    leading axis of size L-1 holds the term of each layer I (their sum is the Hessian).
    Memory is B·P·D² numbers (·(L-1) with per_layer): chunk large batches.
    """
    x, y2, t2, squeeze = _pairs(model, x, y, t)
    p = _forward_backward(model, x, y2, t2)
    terms = []
    for I, Bm in enumerate(_jacobians(model, p)):
        c = p.rows[I] * p.d2[I][:, None, :]  # (B, P, N_I)
        # Bᵀ diag(c) B for every pair: (B, P, D, D)
        terms.append(torch.einsum("bnd,bpn,bne->bpde", Bm, c, Bm))
    H = torch.stack(terms) if per_layer else sum(terms[1:], terms[0])
    return H[..., 0, :, :] if squeeze else H


@torch.no_grad()
def margin_hessian_eigvals(model: MLP, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, *,
                           chunk_size: int = 32, dtype: torch.dtype | None = torch.float64) -> torch.Tensor:
    """All eigenvalues (ascending) of the margin Hessian, exact up to eigvalsh round-off.

    x: (B, D); t: (B,) or (B, P) -> (B, D) or (B, P, D). Computed in ``dtype`` (float64 by default, on a
    float64 copy of the model) in chunks of ``chunk_size`` images to bound memory.
    """
    m = model if dtype is None else as_dtype(model, dtype)
    xs = model.flatten_input(x).to(m.layers[0].weight.dtype)
    y = torch.as_tensor(y, device=xs.device).reshape(-1)
    t = torch.as_tensor(t, device=xs.device)
    out = []
    for s in range(0, xs.shape[0], chunk_size):
        sl = slice(s, s + chunk_size)
        yy = y[sl] if y.numel() > 1 else y
        out.append(torch.linalg.eigvalsh(margin_hessian(m, xs[sl], yy, t[sl] if t.dim() > 0 else t)))
    return torch.cat(out)


@torch.no_grad()
def margin_hessian_eigh(model: MLP, x: torch.Tensor, y: int, t: int, *, dtype: torch.dtype = torch.float64
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of the margin Hessian at one image x (D,): eigenvalues (D,) ascending, vectors (D, D)."""
    m = as_dtype(model, dtype)
    H = margin_hessian(m, model.flatten_input(x)[:1].to(dtype), torch.tensor([y]), torch.tensor([t]))[0]
    return torch.linalg.eigh(H)


def margin_hvp(model: MLP, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Hessian-vector products (∇²f) v without forming the Hessian: O(parameters) per vector.

    x: (B, D); y: (B,); t: (B,) or (B, P); v: same shape as the result, (B, D) or (B, P, D).
    """
    x, y2, t2, squeeze = _pairs(model, x, y, t)
    p = _forward_backward(model, x, y2, t2)
    v = v.reshape(x.shape[0], t2.shape[1], x.shape[1]).to(x.dtype)
    L1 = model.depth - 1
    # forward tangents u_I = B^(I) v
    us = [v @ model.layers[0].weight.T]  # (B, P, N_1)
    for I in range(1, L1):
        us.append((p.d1[I - 1][:, None, :] * us[-1]) @ model.layers[I].weight.T)
    # Σ_I B^(I)ᵀ q_I with q_I = c_I ⊙ u_I, accumulated backwards
    r = p.rows[L1 - 1] * p.d2[L1 - 1][:, None, :] * us[L1 - 1]
    for I in range(L1 - 1, 0, -1):
        r = (r @ model.layers[I].weight) * p.d1[I - 1][:, None, :] + p.rows[I - 1] * p.d2[I - 1][:, None, :] * us[I - 1]
    out = r @ model.layers[0].weight
    return out[:, 0] if squeeze else out
