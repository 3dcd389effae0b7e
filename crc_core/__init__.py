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
- errors: :class:`CRCError` and subclasses (all ValueError).
The maths beneath has one module each (DESIGN.md §1): hessian (Lemma 1), bounds, dual, targets, attack, metrics, ...

``crc_core.certify`` and ``crc_core.train`` are the functions; their modules stay importable by name
(``from crc_core.certify import CertificateBatch``, ``from crc_core.train import TrainResult``).
"""

from .bounds import curvature_bounds
from .certify import CertificateBatch, certify
from .checkpoints import load_checkpoint, save_checkpoint
from .compare import compare_certificates
from .data import load_dataset
from .errors import CheckpointError, CRCError, DataError, UnsupportedActivationError
from .importers import import_checkpoint
from .models import MLP
from .train import TrainConfig, TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "MLP", "CRCError", "CertificateBatch", "CheckpointError", "DataError", "TrainConfig", "TrainResult",
    "UnsupportedActivationError", "__version__", "certify", "compare_certificates", "curvature_bounds",
    "import_checkpoint", "load_checkpoint", "load_dataset", "save_checkpoint", "train",
]
