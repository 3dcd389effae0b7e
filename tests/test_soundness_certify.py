"""Soundness of certificates: strong attacks never change the prediction strictly inside the certified radius.

Briefly trained models of depth 2-4 and every activation; attacks: untargeted PGD with restarts, Algorithm 2 against
every class, and bisection along random directions, the margin gradients and the direction of the reported boundary
point. Default suite: a small sample; `-m slow`: >= 1,000 (image, model) pairs. An inflated radius must be caught.
"""

from __future__ import annotations

import pytest
import torch
from helpers import small_data, small_model

from crc_core.certify import certify
from crc_core.testing import CertificateCheck, attack_certificates

ACTS = ["softplus", "sigmoid", "tanh"]


def check_model(depth: int, act: str, n_images: int, offset: int = 0, thorough: bool = False) -> CertificateCheck:
    model = small_model(depth, act, True)
    x, lab = small_data("test", offset + n_images)
    x, lab = x[offset:], lab[offset:]
    c = certify(model, x, lab, targets="all")
    ok = c.correct
    towards_b = (c.x_boundary_by_row - x[:, None, :])  # every target's boundary / dual point
    return attack_certificates(model, x[ok], c.pred[ok], c.radius[ok], extra_dirs=towards_b[ok],
                               pgd_restarts=3 if thorough else 2)


@pytest.mark.parametrize("depth", [2, 3, 4])
@pytest.mark.parametrize("act", ACTS)
def test_no_attack_beats_the_certificate(act, depth):
    res = check_model(depth, act, n_images=20)
    assert res.n_pairs >= 8
    assert res.n_violations == 0, res
    assert res.closest_ratio >= 1 - 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("depth", [2, 3, 4])
@pytest.mark.parametrize("act", ACTS)
def test_no_attack_beats_the_certificate_at_scale(act, depth):
    """9 models x 200 images: >= 100 correctly classified per model, >= 1,000 (image, model) pairs overall."""
    res = check_model(depth, act, n_images=200, offset=20, thorough=True)
    assert res.n_pairs >= 100
    assert res.n_violations == 0, res


def test_an_inflated_radius_is_caught():
    """Claiming 1.3x the certified radius is unsound wherever the certificate is tight: the attacks must say so."""
    model = small_model(2, "softplus", True)
    x, lab = small_data("test", 20)
    c = certify(model, x, lab)
    ok = c.correct & c.exact
    assert ok.sum() >= 5
    res = attack_certificates(model, x[ok], c.pred[ok], 1.3 * c.radius[ok])  # no help from our own boundary points
    assert res.n_violations >= 0.8 * int(ok.sum())
    assert res.closest_ratio < 1.0
    tiny = attack_certificates(model, x[ok], c.pred[ok], c.radius[ok] * 0.999 + 0 * torch.rand(int(ok.sum())))
    assert tiny.n_violations == 0
