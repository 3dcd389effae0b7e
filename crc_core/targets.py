"""The margin f(x) = z_y − z_t and the choice of targets t (CRC and the baselines share them).

logits (B, C); y (B,) the class to keep (label or prediction); t (B,) a target class ≠ y.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from .errors import CRCError

__all__ = ["TARGET_MODES", "TargetMode", "choose_targets", "margin", "runner_up"]

TargetMode = Literal["all", "runner-up", "random", "least"]
TARGET_MODES: tuple[str, ...] = get_args(TargetMode)


def margin(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) margin z_y − z_t, or with ``t`` None z_y − max_{j≠y} z_j (< 0: the prediction is not y).
    Differentiable (the untargeted maximum passes its gradient to the largest other logit)."""
    zy = logits.gather(1, y[:, None])[:, 0]
    if t is not None:
        return zy - logits.gather(1, t[:, None])[:, 0]
    return zy - logits.scatter(1, y[:, None], float("-inf")).amax(1)


def runner_up(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The strongest class other than y: argmax_{t ≠ y} logits[t]. logits (B, C), y (B,) -> t (B,) long.

    For a correctly classified input this is the second-largest logit (the paper's target).
    """
    z = logits.detach().clone()
    z.scatter_(1, y.reshape(-1, 1), float("-inf"))
    return z.argmax(dim=1)


def choose_targets(logits: torch.Tensor, y: torch.Tensor, mode: TargetMode, *, seed: int = 0) -> torch.Tensor:
    """Targets (B, T) for predictions y: all others (T = C - 1), runner-up, random, or least likely (T = 1)."""
    B, C = logits.shape
    if mode == "all":
        ar = torch.arange(C, device=logits.device).expand(B, C)
        return ar[ar != y[:, None]].reshape(B, C - 1)
    if mode == "runner-up":
        return runner_up(logits, y)[:, None]
    if mode == "least":
        z = logits.detach().clone()
        z.scatter_(1, y[:, None], float("inf"))
        return z.argmin(1, keepdim=True)
    if mode == "random":
        g = torch.Generator().manual_seed(seed)
        off = torch.randint(1, C, (B,), generator=g).to(logits.device)
        return ((y + off) % C)[:, None]
    raise CRCError(f"Unknown target mode {mode!r}; use one of {', '.join(TARGET_MODES)}.")
