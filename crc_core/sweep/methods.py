"""The certificate methods a sweep can evaluate: one small table, one entry per method.

A method maps (model, images (N, D) in [0, 1], labels (N,), target mode, solver mode) to a
:class:`MethodResult`: a per-image radius (N,) that is **0 wherever the method does not certify the true label**
(misclassified, abstained, ...), so that "certified at ρ" is simply ``radius ≥ ρ``, plus optional scalar extras
(e.g. CRC's certificate success rate). Deterministic methods return proven lower bounds on the distance to the
decision boundary. A probabilistic method (randomized smoothing) certifies a *different*, smoothed classifier with
probability 1 − α: its entry must say so in ``note`` and the results table carries that note.

To add a method (e.g. from crc_core.compare), add one :class:`CertificateMethod` to :data:`METHODS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import torch

from ..baselines.smoothing import SMOOTHING_GUARANTEE
from ..bounds import curvature_bounds
from ..certify import TARGET_MODES, SolverMode, TargetMode, certify
from ..compare import Targets, compare_certificates
from ..models import MLP

__all__ = ["METHODS", "CertificateMethod", "MethodResult", "compared_radii", "crc_radii"]

CERTIFY_BATCH = 256  # images per certify() call: bounds the (B · targets, D) working set


@dataclass
class MethodResult:
    """radius (N,) float: certified radius, 0 where the true label is not certified; extras: name -> scalar."""

    radius: torch.Tensor
    extras: dict[str, float] = field(default_factory=dict)


RadiusFn = Callable[[MLP, torch.Tensor, torch.Tensor, str, str], MethodResult]


@dataclass(frozen=True)
class CertificateMethod:
    """A table entry: ``radii(model, images, labels, target, mode)``, the target modes it supports, whether its
    radii are deterministic proofs about the model itself (False for randomized smoothing), and a note."""

    radii: RadiusFn
    targets: tuple[str, ...]
    deterministic: bool = True
    note: str = "deterministic: a proven lower bound on the L2 distance to the decision boundary"


def crc_radii(model: MLP, images: torch.Tensor, labels: torch.Tensor, target: str, mode: str) -> MethodResult:
    """CRC (Algorithm 1 with the certification-grade curvature bounds) in batches.

    extras: ``certificate_success`` = fraction of correctly classified images whose certificate is exact
    (primal = dual: the closest boundary point was found; paper Table 2).
    """
    bounds = curvature_bounds(model)  # all ordered pairs, computed once for every batch
    radii, exact, correct = [], [], []
    for s in range(0, images.shape[0], CERTIFY_BATCH):
        c = certify(model, images[s:s + CERTIFY_BATCH], labels[s:s + CERTIFY_BATCH],
                    targets=cast(TargetMode, target), mode=cast(SolverMode, mode), bounds=bounds,  # validated
                    refine="minimum")
        radii.append(torch.where(c.correct, c.radius, torch.zeros_like(c.radius)))
        exact.append(c.exact & c.correct)
        correct.append(c.correct)
    n_ok = max(1, int(torch.cat(correct).sum()))
    return MethodResult(torch.cat(radii), {"certificate_success": float(torch.cat(exact).sum()) / n_ok})


def compared_radii(name: str) -> RadiusFn:
    """The radii of one :func:`crc_core.compare.compare_certificates` method (no attack), in batches; ``mode`` is
    CRC's solver and is ignored. Smoothing runs with its defaults (σ = 0.25, n0 = 100, n = 10,000, α = 0.001)."""

    def radii(model: MLP, images: torch.Tensor, labels: torch.Tensor, target: str, mode: str) -> MethodResult:
        out = [compare_certificates(model, images[s:s + CERTIFY_BATCH], labels[s:s + CERTIFY_BATCH], methods=(name,),
                                    targets=cast(Targets, target), attack=False).radius(name)  # validated
               for s in range(0, images.shape[0], CERTIFY_BATCH)]
        return MethodResult(torch.cat(out).to(images.device))

    return radii


COMPARED_TARGETS = ("all", "runner-up")  # the target modes compare_certificates supports
METHODS: dict[str, CertificateMethod] = {
    "crc": CertificateMethod(crc_radii, TARGET_MODES),
    "crown": CertificateMethod(compared_radii("crown"), COMPARED_TARGETS),
    "lipschitz": CertificateMethod(compared_radii("lipschitz"), COMPARED_TARGETS),
    "smoothing": CertificateMethod(compared_radii("smoothing"), COMPARED_TARGETS, deterministic=False,
                                   note=f"randomized smoothing: {SMOOTHING_GUARANTEE} (1 − α = 0.999)"),
}
