"""Measured curvature at test images: the K_lb of paper App. H.1, per (y, t) pair.

For each test image, y is the predicted class and t the runner-up (second-largest logit; for a correctly
classified image y is also its label, as in the paper). K_lb(y, t) is the largest |eigenvalue| of the margin
Hessian ∇²(z_y − z_t) over the images of that pair: a *lower* bound on the global curvature of the pair, so it
can be compared with the certified upper bound K_ub (Theorems 3/4). Pairs with fewer than ``min_count`` images
are reported but flagged (the paper keeps pairs with at least 100 of its 10,000 test images).

Two ways to get max |λ| per image, both lower bounds of the true value (up to float round-off):
- ``"power"`` (default): batched power iteration with Hessian-vector products; ‖Hv‖ ≤ ‖H‖ for every unit v, so
  every iterate is a valid lower bound, and it converges to max |λ|. Cheap: O(iterations · parameters) per image.
- ``"exact"``: eigvalsh of the D × D Hessian in float64 (slow for D = 784: use for checks and few images).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import CRCError
from .hessian import margin_hessian_eigvals, margin_hvp
from .models import MLP, require_curvature_model

__all__ = ["PairCurvature", "max_abs_eigenvalue", "measured_curvature"]


@torch.no_grad()
def max_abs_eigenvalue(model: MLP, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, *, method: str = "power",
                       n_iter: int = 60, seed: int = 0) -> torch.Tensor:
    """max |λ(∇²_x (z_y − z_t))| at each image: x (B, D), y (B,), t (B,) -> (B,) float64.

    A lower estimate (up to the model dtype's round-off, ~1e-6 relative in float32).

    ``"power"`` returns the best ‖Hv‖ over ``n_iter`` power-iteration steps (each a valid lower bound);
    ``"exact"`` returns the exact value (up to eigvalsh round-off).
    """
    require_curvature_model(model)
    x = model.flatten_input(x)
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64, device=x.device)
    if method == "exact":
        ev = margin_hessian_eigvals(model, x, y, t)
        return ev.abs().amax(dim=-1).to(torch.float64)
    if method != "power":
        raise CRCError(f"Unknown method {method!r}: use 'power' or 'exact'.")
    g = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
    v = v / v.norm(dim=1, keepdim=True)
    best = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for _ in range(max(1, n_iter)):
        hv = margin_hvp(model, x, y, t, v)
        nrm = hv.norm(dim=1)
        best = torch.maximum(best, nrm.double())
        v = torch.where(nrm[:, None] > 0, hv / nrm.clamp_min(1e-30)[:, None], v)
    return best


@dataclass
class PairCurvature:
    """Per ordered pair (y, t), as (C, C) float64 tables (NaN on the diagonal and where no image falls).

    K_lb: max |λ| over the pair's images; count: number of images (long); n_images: images used.
    """

    K_lb: torch.Tensor
    count: torch.Tensor
    n_images: int
    method: str

    def mask(self, min_count: int = 1) -> torch.Tensor:
        """(C, C) bool: pairs with at least ``min_count`` images."""
        return self.count >= max(1, int(min_count))

    def mean_K_lb(self, min_count: int = 1) -> float:
        """Average of K_lb over the pairs with at least ``min_count`` images (NaN when none)."""
        sel = self.K_lb[self.mask(min_count)]
        return float(sel.mean()) if sel.numel() else float("nan")


@torch.no_grad()
def measured_curvature(model: MLP, x: torch.Tensor, *, method: str = "power", n_iter: int = 60,
                       batch_size: int = 256, progress: Callable[[int, int], None] | None = None) -> PairCurvature:
    """K_lb per (prediction, runner-up) pair over images x (N, D) (paper App. H.1).

    ``progress(done, total)`` is called after each batch (for progress bars); it may raise to cancel.
    """
    require_curvature_model(model)
    x = model.flatten_input(x)
    C = model.n_classes
    dev = x.device
    K = torch.full((C, C), float("nan"), dtype=torch.float64, device=dev)
    count = torch.zeros((C, C), dtype=torch.long, device=dev)
    N = x.shape[0]
    for s in range(0, N, batch_size):
        xb = x[s:s + batch_size]
        logits = model(xb)
        y = logits.argmax(1)
        z = logits.clone()
        z.scatter_(1, y[:, None], float("-inf"))
        t = z.argmax(1)
        lam = max_abs_eigenvalue(model, xb, y, t, method=method, n_iter=n_iter, seed=s)
        flat = y * C + t
        count.view(-1).index_add_(0, flat, torch.ones_like(flat))
        cur = K.view(-1)
        filled = torch.where(torch.isnan(cur), torch.zeros_like(cur), cur)
        cur.copy_(torch.where(count.view(-1) > 0, filled.scatter_reduce(0, flat, lam, "amax"), cur))
        if progress is not None:
            progress(min(s + batch_size, N), N)
    return PairCurvature(K, count, N, method)
