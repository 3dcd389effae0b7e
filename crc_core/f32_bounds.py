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
model), so rounding them loses nothing. Norms are taken in float64 and widened by F64_SUM_RTOL.
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


def abs_norm_upper(W: torch.Tensor) -> torch.Tensor:
    """S ≥ ‖ |W| ‖₂ ≥ ‖W‖₂ for a matrix W (K, D), float64 scalar: min(Frobenius, √(‖W‖₁ ‖W‖_∞)), widened."""
    Wa = W.double().abs()
    return torch.minimum(Wa.norm(), (Wa.sum(0).max() * Wa.sum(1).max()).sqrt()) * (1 + F64_SUM_RTOL)


def product_error(c_norm: torch.Tensor, W: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """A proved bound on ‖fl32(c W) - c W‖ per row, from ‖c‖ (any shape, float64) for float32 rows c and a float32
    matrix W (K, D) with S ≥ ‖ |W| ‖₂: γ_K ‖c‖ S plus (K + max column sum of |W|) · 2^-126 · √D for underflow."""
    K, D = W.shape
    gamma = K * F32_UNIT_ROUNDOFF / (1 - K * F32_UNIT_ROUNDOFF)
    under = (K + W.double().abs().sum(0).max()) * F32_UNDERFLOW_ABS * D**0.5
    return gamma * c_norm * S * (1 + F64_SUM_RTOL) + under


def _norm64(a: torch.Tensor) -> torch.Tensor:
    """Row norms over the last axis, accumulated in float64 and widened by F64_SUM_RTOL."""
    return (a * a).sum(-1, dtype=torch.float64).sqrt() * (1 + F64_SUM_RTOL)


def backward_f32(model: MLP, d1: list[torch.Tensor], row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Back-propagate margin rows in float32 with a proved error bound.

    model: a float32 MLP; d1: σ'(z^(I)) from a float64 forward pass, each (B, N_I) float64; row: the exact rows
    W^(L)_y - W^(L)_t (B, P, N_{L-1}) float64. Returns (∇f computed in float32 (B, P, D), a bound (B, P) float64 on
    ‖computed - exact‖ for the exact ∇f of the float64 forward pass)."""
    r32 = row.float()
    err = F32_UNIT_ROUNDOFF * _norm64(row) + row.shape[-1] ** 0.5 * F32_UNDERFLOW_ABS  # rounding the row to float32
    for I in range(model.depth - 2, -1, -1):
        W = model.layers[I].weight
        S = abs_norm_upper(W)
        s = d1[I][:, None, :]  # (B, 1, N_I) float64
        c = r32 * s.float()
        exact_c_norm = _norm64(r32.double() * s)  # ‖r̂ ⊙ σ'‖ (float64 product: its rounding is in the widening)
        n = s.shape[-1]
        elementwise = ELEMENTWISE_RTOL * exact_c_norm + (_norm64(r32) + n**0.5) * F32_UNDERFLOW_ABS
        err = (err * s.abs().amax(-1) + elementwise) * S * (1 + F64_SUM_RTOL) + product_error(_norm64(c), W, S)
        r32 = c @ W
    return r32, err


def grad_norm_upper(g32: torch.Tensor, err: torch.Tensor) -> torch.Tensor:
    """‖∇f‖ ≤ ‖computed‖ + error bound, per row (float64), from :func:`backward_f32`'s two results."""
    return (_norm64(g32) + err) * (1 + F64_SUM_RTOL)
