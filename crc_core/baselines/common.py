"""What the baseline certificates share: the network as float64 layers, its activation, the margin rows.

All baselines evaluate in float64 on the model's device, like CRC's final evaluation, so their radii are proven for
the float64 model (in exact arithmetic, up to the named round-off allowances in each module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..activations import ACTIVATIONS
from ..checks import check_images, check_labels, check_targets
from ..errors import CRCError, UnsupportedActivationError
from ..models import MLP, validate_model
from ..targets import margin

__all__ = ["BASELINE_ACTIVATIONS", "Net64", "as_net64", "check_rows", "margin64"]

# Activations the baselines accept: the curvature-capable ones and ReLU (piecewise linear; first-order and CROWN
# handle it, smoothing handles any classifier).
BASELINE_ACTIVATIONS: tuple[str, ...] = (*ACTIVATIONS, "relu")


@dataclass(frozen=True)
class Net64:
    """An MLP's layers in float64: Ws[i] (N_i, N_{i-1}), bs[i] (N_i,); ``act`` the activation's name."""

    Ws: tuple[torch.Tensor, ...]
    bs: tuple[torch.Tensor, ...]
    act: str

    @property
    def depth(self) -> int:
        return len(self.Ws)

    @property
    def fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return F.relu if self.act == "relu" else ACTIVATIONS[self.act].fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, D) float64 -> logits (N, C)."""
        h = x
        for W, b in zip(self.Ws[:-1], self.bs[:-1]):
            h = self.fn(h @ W.T + b)
        return h @ self.Ws[-1].T + self.bs[-1]


def as_net64(model: MLP) -> Net64:
    """The model's layers as float64 tensors on its device; raises CRCError for other models or activations."""
    if not isinstance(model, MLP):
        raise CRCError(f"The baseline certificates need a crc_core.models.MLP, got {type(model).__name__}.")
    if model.activation_name not in BASELINE_ACTIVATIONS:
        raise UnsupportedActivationError(
            f"Activation {model.activation_name!r} is not supported by the baseline certificates; "
            f"use one of {', '.join(BASELINE_ACTIVATIONS)}.")
    validate_model(model)
    with torch.no_grad():
        Ws = tuple(layer.weight.detach().to(torch.float64) for layer in model.layers)
        bs = tuple(layer.bias.detach().to(torch.float64) for layer in model.layers)
    return Net64(Ws, bs, model.activation_name)


def check_rows(model: MLP, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate rows: x0 (N, D) (or images), y (N,), t (N,) with y ≠ t -> (x0 float64, y, t) on the model's device."""
    x0 = check_images(model, x0, dtype=torch.float64, device=model.layers[0].weight.device)
    y = check_labels(y, x0.shape[0], model.n_classes, x0.device)
    return x0, y, check_targets(y, torch.as_tensor(t).reshape(-1), model.n_classes)


def margin64(net: Net64, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """f(x0) = z_y - z_t on the float64 network, (N,)."""
    return margin(net.forward(x0), y, t)
