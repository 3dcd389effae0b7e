"""Activation functions with their first/second derivatives and the curvature constants of paper App. F.

For each curvature-capable activation σ we store exact constants (rounded *up* where irrational):
  g   >= sup |σ'|,   h >= sup |σ''|,   h_L <= inf σ'',   h_U >= sup σ''.
Soundness of every bound in :mod:`crc_core.bounds` rests on these four numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import UnsupportedActivationError

Fn = Callable[[torch.Tensor], torch.Tensor]


def _up(x: float) -> float:
    """Round a positive float up by one ulp (sound for upper bounds)."""
    return math.nextafter(x, math.inf)


@dataclass(frozen=True)
class Activation:
    """An activation with derivatives and App. F constants (g, h, h_L, h_U)."""

    name: str
    fn: Fn
    d1: Fn
    d2: Fn
    g: float
    h: float
    h_L: float
    h_U: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _softplus_d1(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


def _softplus_d2(x: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return s * (1 - s)


def _sigmoid_d1(x: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return s * (1 - s)


def _sigmoid_d2(x: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return s * (1 - s) * (1 - 2 * s)


def _tanh_d1(x: torch.Tensor) -> torch.Tensor:
    t = torch.tanh(x)
    return 1 - t * t


def _tanh_d2(x: torch.Tensor) -> torch.Tensor:
    t = torch.tanh(x)
    return -2 * t * (1 - t * t)


# sigmoid: σ'' = S(1-S)(1-2S), extremes at S = 1/2 ± 1/(2√3): |σ''| <= √3/18.
_SIG_H = _up(math.sqrt(3) / 18)
# tanh: σ'' = -2T(1-T²), extremes at T = ±1/√3: |σ''| <= 4/(3√3).
_TANH_H = _up(4 / (3 * math.sqrt(3)))

ACTIVATIONS: dict[str, Activation] = {
    # softplus: σ' = S in (0,1), σ'' = S(1-S) in (0, 1/4].
    "softplus": Activation("softplus", F.softplus, _softplus_d1, _softplus_d2, g=1.0, h=0.25, h_L=0.0, h_U=0.25),
    # sigmoid: σ' = S(1-S) <= 1/4.
    "sigmoid": Activation("sigmoid", torch.sigmoid, _sigmoid_d1, _sigmoid_d2,
                          g=0.25, h=_SIG_H, h_L=-_SIG_H, h_U=_SIG_H),
    # tanh: σ' = 1-T² <= 1.
    "tanh": Activation("tanh", torch.tanh, _tanh_d1, _tanh_d2, g=1.0, h=_TANH_H, h_L=-_TANH_H, h_U=_TANH_H),
}
CURVATURE_ACTIVATIONS: tuple[str, ...] = tuple(ACTIVATIONS)

_WHY_NOT = {
    "relu": "ReLU is piecewise linear: its second derivative is zero almost everywhere and undefined (infinite) at 0, "
    "so the margin has no global curvature bound and second-order certificates do not apply",
    "gelu": "GELU is smooth but its curvature constants are not implemented here",
    "elu": "ELU's second derivative jumps at 0, so no Lipschitz-gradient bound holds",
    "leaky_relu": "Leaky ReLU is piecewise linear with a kink: no bounded second derivative",
}


def get_activation(name: str) -> Activation:
    """Return the curvature-capable activation ``name`` or raise :class:`UnsupportedActivationError`."""
    key = str(name).strip().lower().replace("-", "_")
    if key in ACTIVATIONS:
        return ACTIVATIONS[key]
    why = _WHY_NOT.get(key, "it is not one of the activations with known curvature constants")
    raise UnsupportedActivationError(
        f"Activation {name!r} cannot be used for curvature bounds: {why}. "
        f"Use one of {', '.join(CURVATURE_ACTIVATIONS)}."
    )
