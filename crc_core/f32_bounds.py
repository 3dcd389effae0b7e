"""Float32 back-propagation with a proved error bound: ‖∇f‖ bounded from above at about half the cost of float64.

The certificate's bound at x0, (*) with R = 0, needs f(x0) and an upper bound on ‖∇f(x0)‖ only (it decreases in
‖∇f‖). Here the forward pass runs on the float64 model (taken as exact, as everywhere in the certificate: its
guarantee is stated on the float64 model), and the backward pass, whose products are the widest, in float32:

    r_{L-1} = W^(L)_y - W^(L)_t,     r_I = (r_{I+1} ⊙ σ'(z^(I+1))) W^(I+1),     ∇f = (r_1 ⊙ σ'(z^(1))) W^(1).

Model of arithmetic: IEEE float32 round to nearest (unit roundoff ε = 2^-24) for elementwise and matrix
products, any summation order, FMA included, plus an absolute term for underflow. Per step, with the computed
row r̂ (float32), its proved distance E to the exact row, c = fl(r̂ ⊙ fl(σ')) and the product fl(c W):

    ‖fl(c W) - (r ⊙ σ') W‖ ≤ γ_K ‖c‖ S + (2ε + ε²) ‖r̂ ⊙ σ'‖ S + E · max|σ'| · S + underflow,

where γ_K = Kε/(1 - Kε) bounds a length-K dot product's error relative to Σ|a_k b_k| (Higham, Accuracy and
Stability of Numerical Algorithms, Thm 3.5) and S ≥ ‖ |W| ‖₂ ≥ ‖W‖₂. The weights are float32 numbers (a float32
model), so rounding them loses nothing. Norms of float32 arrays are proved upper bounds too (:func:`norm_upper`:
float32 squares and sums widened by γ_{n+1} and an underflow term), and only norms travel between the layers, so
the (B, P, N) rows never get a float64 copy.
"""

from __future__ import annotations

import torch

from .models import MLP
from .tolerances import F32_UNDERFLOW_ABS, F32_UNIT_ROUNDOFF, F64_SUM_RTOL

ELEMENTWISE_RTOL = (1 + F32_UNIT_ROUNDOFF) ** 2 - 1  # fl(r̂ · fl(s)) vs r̂ · s: two float32 roundings


def f32_matmul_is_ieee(device: torch.device) -> bool:
    """True when float32 matrix products on ``device`` are plain IEEE float32 (no TF32 / bf16 shortcuts), the
    model this module's bounds assume."""
    if torch.get_float32_matmul_precision() != "highest":
        return False
    return device.type == "cpu" or (device.type == "cuda" and not torch.backends.cuda.matmul.allow_tf32)


def abs_norm_upper(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a float32 matrix W (K, D): S ≥ ‖ |W| ‖₂ ≥ ‖W‖₂, as min(Frobenius, √(‖W‖₁ ‖W‖_∞)) widened, and the max
    column sum of |W| (for the underflow term of :func:`product_error`); float64 scalars."""
    Wa = W.double().abs()
    col = Wa.sum(0).max()
    return torch.minimum(Wa.norm(), (col * Wa.sum(1).max()).sqrt()) * (1 + F64_SUM_RTOL), col


def product_error(c_norm: torch.Tensor, W: torch.Tensor, S: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """A proved bound on ‖fl32(c W) - c W‖ per row, from an upper bound on ‖c‖ (any shape, float64) for float32
    rows c and a float32 matrix W (K, D) with S ≥ ‖ |W| ‖₂ and col = max column sum of |W|: γ_K ‖c‖ S plus
    (K + col) · 2^-126 · √D for underflow."""
    K, D = W.shape
    return _gamma(K) * c_norm * S * (1 + F64_SUM_RTOL) + (K + col) * F32_UNDERFLOW_ABS * D**0.5


def _gamma(n: int) -> float:
    """γ_n = n u / (1 - n u) for float32 (Higham): the relative error bound of n roundings."""
    return n * F32_UNIT_ROUNDOFF / (1 - n * F32_UNIT_ROUNDOFF)


def norm_upper(a: torch.Tensor) -> torch.Tensor:
    """A proved upper bound (float64) on the row norms of a (..., n) over the last axis, computed in a's dtype
    without float64 copies. float32: the squares and their sum in float32 (any order) lose at most a factor
    1 - γ_{n+1} and n · 2^-126 to underflow; float64: widened by F64_SUM_RTOL."""
    if a.dtype == torch.float64:
        return (a * a).sum(-1).sqrt() * (1 + F64_SUM_RTOL)
    n = a.shape[-1]
    sq = (a * a).sum(-1).double()
    return ((sq + n * F32_UNDERFLOW_ABS) / (1 - _gamma(n + 1))).sqrt() * (1 + F64_SUM_RTOL)


def backward_f32(model: MLP, d1: list[torch.Tensor], row: torch.Tensor, row_norm: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Back-propagate margin rows in float32 with a proved error bound.

    model: a float32 MLP; d1: σ'(z^(I)) from a float64 forward pass, each (B, N_I) float64; row: the rows
    W^(L)_y - W^(L)_t (B, P, N_{L-1}), either exact in float64 or their float32 rounding (one rounding of the
    exact rows) with ``row_norm`` (B, P) float64 ≥ the exact rows' norms. Returns (∇f computed in float32 (B, P, D),
    a bound (B, P) float64 on ‖computed - exact‖ for the exact ∇f of the float64 forward pass).

    Only norms are tracked besides the product itself: ‖r̂‖ and ‖r̂ ⊙ σ'‖ are bounded from ‖c‖ and the layer
    constants, so no float64 copy of the (B, P, N) rows is made."""
    n_last = row.shape[-1]
    if row_norm is None:
        row_norm = norm_upper(row)
    r32 = row.float()
    err = F32_UNIT_ROUNDOFF * row_norm + n_last**0.5 * F32_UNDERFLOW_ABS  # rounding the rows to float32
    r_norm = row_norm * (1 + F32_UNIT_ROUNDOFF) + n_last**0.5 * F32_UNDERFLOW_ABS  # ≥ ‖r̂‖
    for I in range(model.depth - 2, -1, -1):
        W = model.layers[I].weight
        S, col = abs_norm_upper(W)
        s = d1[I][:, None, :]  # (B, 1, N_I) float64
        c = r32 * s.float()
        c_norm = norm_upper(c)
        n = s.shape[-1]
        under = 2 * (r_norm + n**0.5) * F32_UNDERFLOW_ABS  # σ' or the product near underflow (2: the (1 ± u) factors)
        # c_k = r̂_k σ'_k (1 + δ1)(1 + δ2) away from underflow, so ‖r̂ ⊙ σ'‖ ≤ ‖c‖ / (1 - u)² + underflow
        exact_c_norm = c_norm / (1 - F32_UNIT_ROUNDOFF) ** 2 + under
        elementwise = ELEMENTWISE_RTOL * exact_c_norm + under
        prod = product_error(c_norm, W, S, col)
        err = (err * s.abs().amax(-1) + elementwise) * S * (1 + F64_SUM_RTOL) + prod
        r32 = c @ W
        r_norm = c_norm * S * (1 + F64_SUM_RTOL) + prod  # ‖fl(c W)‖ ≤ ‖c‖ ‖W‖ + its error
    return r32, err


def grad_norm_upper(g32: torch.Tensor, err: torch.Tensor, sq: torch.Tensor | None = None) -> torch.Tensor:
    """‖∇f‖ ≤ ‖computed‖ + error bound, per row (float64), from :func:`backward_f32`'s two results. ``sq``: the
    computed rows' Σ fl32(g²) accumulated in float64 ((g * g).sum(-1, dtype=float64), as a solver has it), else
    computed here; each float32 square loses at most a factor 1 - u and 2^-126 to underflow."""
    if sq is None:
        sq = (g32 * g32).sum(-1, dtype=torch.float64)
    n = g32.shape[-1]
    norm = ((sq + n * F32_UNDERFLOW_ABS) / (1 - F32_UNIT_ROUNDOFF) * (1 + F64_SUM_RTOL)).sqrt()
    return (norm + err) * (1 + F64_SUM_RTOL)


def pair_row_norms(W_last: torch.Tensor) -> torch.Tensor:
    """Upper bounds (C, C) float64 on ‖W_i - W_j‖ for the rows of a float32 last layer (C, N): the float64
    differences of float32 numbers, normed with :func:`norm_upper` (C² rows instead of one per (image, target))."""
    W = W_last.double()
    return norm_upper(W[:, None, :] - W[None, :, :])
