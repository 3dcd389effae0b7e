"""The first layer's row space: where every iterate of the fast certificate solver lies.

For an MLP, ∇f(x) = W1ᵀ h(x) for every margin f (h: the back-propagated row at the first layer), so ∇f lies in
span(W1ᵀ), of dimension k ≤ N1. Every iterate of the fast solver is x0 plus a combination of gradients, so it lies
in x0 + span(Q) for an orthonormal basis Q (D, k) of that span. With coordinates s = Qᵀ(x - origin):

    W1 x = W1 Q s + W1 origin   (W1 (I - QQᵀ) = 0),   ‖x - x0‖ = ‖s - s0‖  for x - x0 ∈ span(Q),

so the model on s (first layer W1 Q (N1, k) with bias b1 + W1 origin, the rest unchanged) has the same margins at
the same points, the same distances, and gradients g_s = Qᵀ∇f with ‖g_s‖ = ‖∇f‖: the dual bound (*) of DESIGN.md §2
at a point takes the same value in either coordinates. When N1 < D the vectors shrink from D to k numbers and the
first layer's products from N1 × D to N1 × k. The origin sits near the points (the images' mean): float32
coordinates of small vectors are finely spaced, so the iterates keep more of their displacement from x0.

Q and W1 Q = Rᵀ come from a float64 Householder QR of W1ᵀ, which is backward stable: W1 Q is the exact product for
a first layer within float64 rounding of W1, the same size as the rounding of float64 products in the full space.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

from .models import MLP
from .tolerances import ROW_SPACE_MAX_FRACTION


@dataclass
class RowSpace:
    """basis Q (D, k) float64 with orthonormal columns spanning the first layer's rows, and first = W1 Q (N1, k)
    float64 (Rᵀ from W1ᵀ = QR)."""

    basis: torch.Tensor
    first: torch.Tensor

    @classmethod
    def of(cls, model: MLP) -> RowSpace | None:
        """The row space of ``model``'s first layer (cached per model while W1 is unchanged), or None when it would
        not save work (N1 ≥ ROW_SPACE_MAX_FRACTION · D)."""
        W1 = model.layers[0].weight.detach()
        N1, D = W1.shape
        if N1 >= ROW_SPACE_MAX_FRACTION * D:
            return None
        hit = _CACHE.get(model)
        if hit is not None and hit[0].dtype == W1.dtype and hit[0].device == W1.device and torch.equal(hit[0], W1):
            return hit[1]
        Q, R = torch.linalg.qr(W1.double().T)  # W1ᵀ = QR: Q (D, N1) orthonormal columns, W1 Q = Rᵀ
        space = cls(Q, R.T.contiguous())
        _CACHE[model] = (W1.clone(), space)
        return space

    def model_on(self, model: MLP, origin: torch.Tensor) -> MLP:
        """``model`` (the one this space was made for, or a copy in another dtype) on coordinates s = Qᵀ(x - origin)
        for an origin (D,), in that model's dtype: first layer W1 Q with bias b1 + W1 origin (formed in float64);
        the later layers are shared, not copied."""
        W, b = model.layers[0].weight, model.layers[0].bias
        first = nn.Linear(self.first.shape[1], self.first.shape[0], device=W.device, dtype=W.dtype)
        with torch.no_grad():
            first.weight.copy_(self.first)
            first.bias.copy_(b.double() + W.double() @ origin.double())
        reduced = MLP(self.first.shape[1], model.widths, model.n_classes, model.activation_name)
        reduced.layers = nn.ModuleList([first, *model.layers[1:]])
        return reduced.eval()

    def coords(self, x: torch.Tensor, origin: torch.Tensor | None = None) -> torch.Tensor:
        """s = Qᵀ(x - origin) (n, k) for points x (n, D), or Qᵀx for vectors (origin None), in x's dtype."""
        return (x if origin is None else x - origin.to(x.dtype)) @ self.basis.to(x.dtype)

    def points(self, x0: torch.Tensor, s: torch.Tensor, s0: torch.Tensor) -> torch.Tensor:
        """The full-space points x0 + Q (s - s0) (n, D), in x0's dtype, for coordinates s (n, k) of rows with
        starting points x0 (n, D) and coordinates s0 (n, k); rows with s == s0 are x0 itself (no product formed)."""
        moved = (s != s0).any(1).nonzero()[:, 0]
        x = x0.clone()
        step = (s.index_select(0, moved) - s0.index_select(0, moved)).to(x0.dtype)
        x[moved] = x0.index_select(0, moved) + step @ self.basis.to(x0.dtype).T
        return x


# model -> (its W1 when the row space was computed, the row space); entries go with their models
_CACHE: weakref.WeakKeyDictionary[MLP, tuple[torch.Tensor, RowSpace]] = weakref.WeakKeyDictionary()
