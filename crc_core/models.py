"""Fully connected networks z^(L)(x) of paper section 3.

``MLP(in_dim, widths, n_classes, activation)``: L = len(widths) + 1 linear layers; "2x[1024]" is
``MLP(784, [1024], 10)``. Inputs are raw pixels in [0, 1], shape (B, in_dim) or (B, 1, 28, 28) (flattened).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .activations import ACTIVATIONS, Activation, get_activation
from .errors import CRCError

# A generous cap: the paper's largest net (4x[1024]) has 2.9M parameters; this keeps a typo such as a width of 10^9
# from reaching the allocator (or the OOM killer on a shared machine).
MAX_PARAMETERS = 200_000_000

# Forward-only activations (no curvature bound): allowed so such models can be loaded and rejected clearly.
_FORWARD_ONLY = {"relu": F.relu, "gelu": F.gelu, "elu": F.elu, "leaky_relu": F.leaky_relu}
FORWARD_ONLY_ACTIVATIONS: tuple[str, ...] = tuple(_FORWARD_ONLY)


def format_architecture(widths: Sequence[int], activation: str, *, in_dim: int | None = None,
                        n_classes: int | None = None) -> str:
    """The one way crc_core writes an architecture: the paper's depth x [hidden widths] plus the activation.

    ``format_architecture([256], "softplus")`` -> ``"2x[256] softplus"`` (L = len(widths) + 1 layers);
    ``format_architecture([1024, 1024], "tanh", in_dim=784, n_classes=10)``
    -> ``"3x[1024,1024] tanh (784 inputs, 10 classes)"``. For a file name, see :func:`architecture_slug`.
    """
    text = f"{len(widths) + 1}x[{','.join(str(int(w)) for w in widths)}] {activation}"
    if in_dim is not None or n_classes is not None:
        text += f" ({in_dim} inputs, {n_classes} classes)"
    return text


def architecture_slug(widths: Sequence[int], activation: str) -> str:
    """:func:`format_architecture` made safe for file names: ``[256], "softplus"`` -> ``"2x256-softplus"``."""
    return format_architecture(widths, activation).replace("[", "").replace("]", "").replace(",", "-").replace(
        " ", "-")


class MLP(nn.Module):
    """z^(I) = W^(I) a^(I-1) + b^(I), a^(I) = σ(z^(I)); the last layer has no activation.

    Args:
        in_dim: input dimension D.
        widths: hidden widths N_1..N_{L-1} (at least one, i.e. depth L >= 2).
        n_classes: C = N_L.
        activation: "softplus", "sigmoid", "tanh" (curvature-capable) or "relu"/"gelu"/... (forward only).
    """

    def __init__(self, in_dim: int, widths: Sequence[int], n_classes: int, activation: str = "softplus") -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if int(in_dim) < 1 or int(n_classes) < 2 or not widths or min(widths) < 1:
            raise CRCError(
                f"Invalid architecture: in_dim={in_dim}, widths={widths}, n_classes={n_classes} "
                "(need in_dim >= 1, at least one hidden layer of width >= 1, and >= 2 classes)."
            )
        dims_all = [int(in_dim), *widths, int(n_classes)]
        n_params = sum((a + 1) * b for a, b in itertools.pairwise(dims_all))
        if n_params > MAX_PARAMETERS:
            raise CRCError(
                f"The architecture {widths} on {in_dim} inputs has {n_params:,} parameters, more than this tool's "
                f"limit of {MAX_PARAMETERS:,} (about {4 * MAX_PARAMETERS / 2**30:.1f} GiB of float32 weights, "
                "before gradients and optimizer state). Use narrower or fewer layers "
                "(the paper's largest is 4x[1024]).")
        act = str(activation).strip().lower().replace("-", "_")
        if act not in ACTIVATIONS and act not in _FORWARD_ONLY:
            get_activation(act)  # raises with a clear message
        self.in_dim = int(in_dim)
        self.widths = widths
        self.n_classes = int(n_classes)
        self.activation_name = act
        dims = [self.in_dim, *widths, self.n_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
        self._act = ACTIVATIONS[act].fn if act in ACTIVATIONS else _FORWARD_ONLY[act]

    # --- structure -------------------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """L, the number of linear layers."""
        return len(self.layers)

    @property
    def activation(self) -> Activation:
        """The curvature-capable activation; raises UnsupportedActivationError for ReLU etc."""
        return get_activation(self.activation_name)

    def weights(self) -> list[torch.Tensor]:
        """[W^(1), ..., W^(L)], W^(I) of shape (N_I, N_{I-1})."""
        return [layer.weight for layer in self.layers]

    def config(self) -> dict[str, Any]:
        return {"in_dim": self.in_dim, "widths": list(self.widths), "n_classes": self.n_classes,
                "activation": self.activation_name}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> MLP:
        try:
            return cls(cfg["in_dim"], cfg["widths"], cfg["n_classes"], cfg.get("activation", "softplus"))
        except KeyError as e:
            raise CRCError(f"Model config is missing the key {e.args[0]!r}: {cfg}") from None

    def describe(self) -> str:
        """Paper notation, e.g. ``"2x[256] softplus"`` (see :func:`format_architecture`)."""
        return format_architecture(self.widths, self.activation_name)

    # --- forward ---------------------------------------------------------------------------------------------
    def flatten_input(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) or (B, *image) -> (B, in_dim); also (in_dim,) -> (1, in_dim). Raises on bad shapes."""
        if not isinstance(x, torch.Tensor):
            raise CRCError(f"Expected a torch.Tensor of images, got {type(x).__name__}.")
        if not torch.is_floating_point(x):
            raise CRCError(f"Images must be floating point in [0, 1], got dtype {x.dtype}.")
        if x.dim() == 1:
            x = x.unsqueeze(0)
        if x.dim() > 2:
            x = x.reshape(x.shape[0], -1)
        if x.shape[-1] != self.in_dim:
            raise CRCError(f"Input has {x.shape[-1]} features per image, the model expects {self.in_dim}.")
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, D) -> logits (B, C)."""
        h = self.flatten_input(x)
        for layer in self.layers[:-1]:
            h = self._act(layer(h))
        return self.layers[-1](h)

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x: (B, D) -> (logits (B, C), [z^(1), ..., z^(L-1)] pre-activations, each (B, N_I))."""
        h = self.flatten_input(x)
        zs: list[torch.Tensor] = []
        for layer in self.layers[:-1]:
            z = layer(h)
            zs.append(z)
            h = self._act(z)
        return self.layers[-1](h), zs


def validate_model(model: MLP) -> None:
    """Raise CRCError if any parameter is NaN or infinite."""
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise CRCError(f"Model parameter {name!r} contains NaN or infinite values; the model cannot be used.")


def require_curvature_model(model: nn.Module) -> Activation:
    """Check that ``model`` is an MLP with a curvature-capable activation and finite weights; return σ."""
    if not isinstance(model, MLP):
        raise CRCError(f"Curvature bounds need a crc_core.models.MLP, got {type(model).__name__}.")
    act = model.activation  # raises UnsupportedActivationError for ReLU etc.
    validate_model(model)
    return act


def as_dtype(model: MLP, dtype: torch.dtype = torch.float64) -> MLP:
    """The model in ``dtype`` (a copy on the same device; the model itself when it already has that dtype).
    The float64 copy is where certificates are finalised and Hessians are checked."""
    if model.layers[0].weight.dtype == dtype:
        return model
    return copy.deepcopy(model).to(dtype).eval()  # a copy, not a fresh (randomly initialised) model
