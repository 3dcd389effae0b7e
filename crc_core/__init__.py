"""crc_core: curvature-based robustness certificates (Singla & Feizi, ICML 2020).

The public face (README.md "Library quick start")::

    import crc_core
    model, meta = crc_core.load_checkpoint("assets/models/crt-2x256.pt")
    test = crc_core.load_dataset("embedded", "test", limit=100)
    cert = crc_core.certify(model, test.images, test.labels)   # CertificateBatch: cert.radius (B,) ...

- :func:`certify` (Algorithm 1, sound; the classifier's radius against every class by default),
  :func:`compare_certificates` (CRC beside CROWN, the first-order bound and randomized smoothing),
  :func:`curvature_bounds` (Theorems 3 / 4 / refined, certification grade);
- :func:`train` with a :class:`TrainConfig` (standard, γ, CRT, PGD, TRADES), :class:`MLP`;
- :func:`load_checkpoint`, :func:`load_dataset`, :func:`import_checkpoint` (foreign MLP files);
- the maths beneath: Lemma 1's margin Hessian (:func:`margin_hessian`, ...), the dual bound (:func:`bound_at`, ...),
  the margin and runner-up (:func:`margin`, :func:`runner_up`), activations with App. F's constants;
- errors: :class:`CRCError` and subclasses (all ValueError).

``crc_core.certify`` and ``crc_core.train`` are the functions; their modules stay importable by name
(``from crc_core.certify import CertificateBatch``, ``from crc_core.train import TrainResult``).
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
from .certify import CertificateBatch, certify
from .checkpoints import load_checkpoint, save_checkpoint
from .compare import compare_certificates
from .data import load_dataset
from .dual import BoundTracker, bound_at, dual_lower_bound
from .errors import CheckpointError, CRCError, DataError, UnsupportedActivationError
from .hessian import margin_and_grad, margin_hessian, margin_hessian_eigh, margin_hessian_eigvals, margin_hvp
from .importers import import_checkpoint
from .models import MLP, as_dtype, validate_model
from .targets import margin, runner_up
from .train import TrainConfig, TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "CURVATURE_ACTIVATIONS", "MLP", "Activation", "BoundTracker", "Bounds", "CRCError",
    "CertificateBatch", "CheckpointError", "CurvatureRegularizer", "DataError", "TrainConfig", "TrainResult",
    "UnsupportedActivationError", "__version__", "all_pairs", "as_dtype", "bound_at", "certify",
    "compare_certificates", "curvature_bounds", "dual_lower_bound", "get_activation", "import_checkpoint",
    "load_checkpoint", "load_dataset", "margin", "margin_and_grad", "margin_hessian", "margin_hessian_eigh",
    "margin_hessian_eigvals", "margin_hvp", "power_iteration", "runner_up", "save_checkpoint", "scaled_sq_norm",
    "spectral_norm_exact", "spectral_norm_pi", "theorem3", "theorem4", "theorem4_terms", "train", "validate_model",
]
