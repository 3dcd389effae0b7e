"""crc_core: curvature-based robustness certificates (Singla & Feizi, ICML 2020).

Public API (all batched, device-following, typed):
- models:      :class:`MLP`, :func:`validate_model`
- activations: :func:`get_activation`, ``ACTIVATIONS`` (σ, σ', σ'' and App. F constants g, h, h_L, h_U)
- hessian:     :func:`margin_hessian` (Lemma 1), :func:`margin_hessian_eigvals`, :func:`margin_hvp`,
               :func:`margin_and_grad`
- bounds:      :func:`curvature_bounds` (Theorems 3 / 4 / refined; certification grade),
               :func:`spectral_norm_exact`, :func:`spectral_norm_pi`, :class:`CurvatureRegularizer`
- errors:      :class:`CRCError` and subclasses (all ValueError)
"""

from .activations import ACTIVATIONS, CURVATURE_ACTIVATIONS, Activation, get_activation
from .bounds import (
                     Bounds,
                     CurvatureRegularizer,
                     all_pairs,
                     curvature_bounds,
                     power_iteration,
                     spectral_norm_exact,
                     spectral_norm_pi,
                     theorem3,
                     theorem4,
                     theorem4_terms,
)
from .errors import CheckpointError, CRCError, DataError, UnsupportedActivationError
from .hessian import margin_and_grad, margin_hessian, margin_hessian_eigh, margin_hessian_eigvals, margin_hvp
from .models import MLP, validate_model

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "CURVATURE_ACTIVATIONS", "MLP", "Activation", "Bounds", "CRCError", "CheckpointError",
    "CurvatureRegularizer", "DataError", "UnsupportedActivationError", "__version__", "all_pairs",
    "curvature_bounds", "get_activation", "margin_and_grad", "margin_hessian", "margin_hessian_eigh",
    "margin_hessian_eigvals", "margin_hvp", "power_iteration", "spectral_norm_exact", "spectral_norm_pi",
    "theorem3", "theorem4", "theorem4_terms", "validate_model",
]
