"""The margin f(x) = z_y − z_t and the choice of targets t (CRC and the baselines share them).

logits (B, C); y (B,) the class to keep (label or prediction); t (B,) a target class ≠ y.
"""

from __future__ import annotations

import torch

__all__ = ["margin"]


def margin(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) margin z_y − z_t, or with ``t`` None z_y − max_{j≠y} z_j (< 0: the prediction is not y).
    Differentiable (the untargeted maximum passes its gradient to the largest other logit)."""
    zy = logits.gather(1, y[:, None])[:, 0]
    if t is not None:
        return zy - logits.gather(1, t[:, None])[:, 0]
    return zy - logits.scatter(1, y[:, None], float("-inf")).amax(1)
