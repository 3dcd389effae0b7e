"""Input validation at the public entries of crc_core: one check per mistake, one message style.

Each check raises :class:`~crc_core.errors.CRCError` (a ValueError) with one sentence that names the problem, and
returns the checked input in the shape the code below it works with, so a public function validates once, at its
door, and the solvers beneath never check again.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .errors import CRCError

__all__ = ["check_attack_options", "check_images", "check_labels", "check_radius", "check_targets"]


def check_images(model: nn.Module, x: torch.Tensor, *, dtype: torch.dtype | None = None,
                 device: torch.device | None = None, empty_ok: bool = False, detach: bool = True) -> torch.Tensor:
    """Images x (B, D), (B, *image) or (D,) for ``model`` -> (B, D) (detached unless ``detach`` is False), in
    ``dtype`` / on ``device`` when given. Refuses a non-tensor, integer pixels, the wrong number of features (an
    MLP's ``flatten_input``), an empty batch (unless ``empty_ok``) and NaN or infinite pixels (after the
    conversion)."""
    if hasattr(model, "flatten_input"):
        x = model.flatten_input(x)
    elif not isinstance(x, torch.Tensor) or not torch.is_floating_point(x) or x.dim() < 2:
        raise CRCError("Expected a floating-point batch of images x of shape (B, ...).")
    x = x.detach() if detach else x
    if dtype is not None or device is not None:
        x = x.to(device=device, dtype=dtype)
    if x.shape[0] == 0 and not empty_ok:
        raise CRCError("No images: a non-empty batch is needed.")
    if not torch.isfinite(x).all():
        raise CRCError("Input images contain NaN or infinite values.")
    return x


def check_labels(labels: torch.Tensor | object, n: int, n_classes: int | None, device: torch.device | None = None
                 ) -> torch.Tensor:
    """One class per image: ``labels`` (n,) (any integer tensor or sequence) -> long tensor (n,) on ``device``
    (in [0, n_classes) unless n_classes is None)."""
    label = torch.as_tensor(labels, device=device).long().reshape(-1)
    if label.shape[0] != n:
        raise CRCError(f"Got {n} images but {label.shape[0]} labels.")
    if n_classes is not None and ((label < 0) | (label >= n_classes)).any():
        raise CRCError(f"Labels must lie in [0, {n_classes - 1}] (one class label per image).")
    return label


def check_targets(y: torch.Tensor, t: torch.Tensor, n_classes: int | None) -> torch.Tensor:
    """Targets t (B,) or (B, P) for classes y (B,) (checked by :func:`check_labels`): one row per image, each
    target a class ≠ y (in [0, n_classes) unless n_classes is None). Returns t as a long tensor on y's device."""
    t = torch.as_tensor(t, device=y.device).long()
    if t.dim() == 0 or t.shape[0] != y.shape[0]:
        raise CRCError(f"Got {y.shape[0]} images but {t.numel() if t.dim() == 0 else t.shape[0]} target rows.")
    if n_classes is not None and ((t < 0) | (t >= n_classes)).any():
        raise CRCError(f"Targets must lie in [0, {n_classes - 1}].")
    if (t == y.reshape(-1, *([1] * (t.dim() - 1)))).any():
        raise CRCError("A target class equals the label: every target t must differ from y (t ≠ y), or the margin "
                       "z_y − z_t is identically zero.")
    return t


def check_radius(rho: float | torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    """A radius ρ > 0, finite, one value or one per image -> (n,) in ``like``'s dtype and device."""
    r = torch.as_tensor(rho, dtype=like.dtype, device=like.device).reshape(-1)
    if r.numel() not in (1, n) or not torch.isfinite(r).all() or (r <= 0).any():
        raise CRCError(f"The radius ρ must be a positive finite number (one, or one per image), got {rho!r}.")
    return r.expand(n) if r.numel() == 1 else r


def check_attack_options(*, eps: object, steps: object, step_size: object = None) -> None:
    """An attack's radius ε > 0 (a number), steps ≥ 1 (an integer) and step size > 0 (or None)."""
    def finite(v: object) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    if not finite(eps) or eps <= 0:
        raise CRCError(f"The attack radius ε must be a positive finite number, got {eps!r}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise CRCError(f"The number of attack steps must be an integer ≥ 1, got {steps!r}.")
    if step_size is not None and (not finite(step_size) or step_size <= 0):
        raise CRCError(f"The attack step size must be a positive finite number (or None), got {step_size!r}.")
