"""crc_core: curvature-based robustness certificates (Singla & Feizi, ICML 2020).

Public API (all batched, device-following, typed):
- models:      :class:`MLP`, :func:`validate_model`
- activations: :func:`get_activation`, ``ACTIVATIONS`` (σ, σ', σ'' and App. F constants g, h, h_L, h_U)
- hessian:     :func:`margin_hessian` (Lemma 1), :func:`margin_hessian_eigvals`, :func:`margin_hvp`,
               :func:`margin_and_grad`, :func:`runner_up`, :func:`as_dtype` (the float64 copy of a model)
- dual:        :func:`dual_lower_bound`, :func:`bound_at`, :class:`BoundTracker` (the sound bound (*) of certify)
- certify:     :func:`certify`, :class:`CertificateBatch` (import from crc_core.certify)
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
                     scaled_sq_norm,
                     spectral_norm_exact,
                     spectral_norm_pi,
                     theorem3,
                     theorem4,
                     theorem4_terms,
)
from .dual import BoundTracker, bound_at, dual_lower_bound
from .errors import CheckpointError, CRCError, DataError, UnsupportedActivationError
from .hessian import margin_and_grad, margin_hessian, margin_hessian_eigh, margin_hessian_eigvals, margin_hvp
from .models import MLP, as_dtype, validate_model
from .targets import margin, runner_up

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "CURVATURE_ACTIVATIONS", "MLP", "Activation", "BoundTracker", "Bounds", "CRCError",
    "CheckpointError", "CurvatureRegularizer", "DataError", "UnsupportedActivationError", "__version__", "all_pairs",
    "as_dtype", "bound_at", "curvature_bounds", "dual_lower_bound", "get_activation", "margin",
    "margin_and_grad", "margin_hessian", "margin_hessian_eigh", "margin_hessian_eigvals", "margin_hvp",
    "power_iteration", "runner_up", "scaled_sq_norm", "spectral_norm_exact", "spectral_norm_pi",
    "theorem3", "theorem4", "theorem4_terms", "validate_model",
]
