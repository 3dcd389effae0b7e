"""The certificates CRC is compared with (DESIGN §7).

- :mod:`.lipschitz`: first-order, r = f(x0) / L with a proven global Lipschitz bound L (any depth, ReLU too).
- :mod:`.crown`: CROWN-general (softplus, sigmoid, tanh) and CROWN-Ada (ReLU) for L2 balls, radius by bisection.
- :mod:`.smoothing`: randomized smoothing (Cohen et al. 2019), a certificate of the *smoothed* classifier that holds
  with probability ≥ 1 - α; plus the binary y-vs-t variant of the paper's App. H.3.
- :mod:`.relu_quadratic`: the 2-layer ReLU certificate of App. G (quadratic bounds, S-procedure, bisection on ρ).

:func:`crc_core.compare.compare_certificates` runs them beside CRC and an attack.
"""

from .crown import CrownResult, crown_lower_bounds, crown_radius, ibp_lower_bounds
from .lipschitz import hidden_lipschitz, lipschitz_constant, lipschitz_radius
from .relu_quadratic import ReluCertificate, certify_relu
from .smoothing import SMOOTHING_GUARANTEE, Smooth, SmoothingCertificate

__all__ = [
    "SMOOTHING_GUARANTEE", "CrownResult", "ReluCertificate", "Smooth", "SmoothingCertificate", "certify_relu",
    "crown_lower_bounds", "crown_radius", "hidden_lipschitz", "ibp_lower_bounds", "lipschitz_constant",
    "lipschitz_radius",
]
