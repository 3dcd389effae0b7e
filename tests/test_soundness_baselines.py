"""Soundness of the deterministic baselines: every first-order and CROWN radius is attacked like CRC's.

Default suite: a small sample. Slow suite (``-m slow``): ≥ 1,000 (image, model) pairs over 16 briefly trained
models (depth 2 and 3; softplus, sigmoid, tanh, ReLU; two seeds), with 0 violations required.
"""

from __future__ import annotations

import pytest
from baseline_helpers import attack_radii
from helpers import small_data, small_model

from crc_core.compare import compare_certificates
from crc_core.testing import CertificateCheck

ACTS = ("softplus", "sigmoid", "tanh", "relu")


def _attack_baselines(depth: int, act: str, seed: int, n_images: int, offset: int) -> dict[str, CertificateCheck]:
    model = small_model(depth, act, trained=True, seed=seed)
    x, _ = small_data("test", 2000)
    x = x[offset:offset + n_images]
    res = compare_certificates(model, x, None, methods=("crown", "lipschitz"), attack=False)  # the predictions
    out = {}
    for name in ("crown", "lipschitz"):
        r = res.radius(name)
        out[name] = attack_radii(model, x, res.pred, r, seed=seed)
        assert out[name].n_violations == 0, (depth, act, seed, name, out[name])
    return out


@pytest.mark.parametrize("act", ACTS)
def test_baseline_radii_survive_attacks_sample(act):
    checks = _attack_baselines(3, act, 0, 6, 100)
    assert checks["crown"].n_pairs >= 4


@pytest.mark.slow
def test_baseline_radii_survive_attacks_at_scale():
    total = {"crown": CertificateCheck(0, 0, float("inf"), 0), "lipschitz": CertificateCheck(0, 0, float("inf"), 0)}
    for seed in (0, 1):
        for depth in (2, 3):
            for i, act in enumerate(ACTS):
                checks = _attack_baselines(depth, act, seed, 72, 200 + 72 * (i + 4 * depth + 8 * seed))
                total = {k: total[k].merge(checks[k]) for k in total}
    for name, check in total.items():
        assert check.n_violations == 0, (name, check)
        assert check.n_pairs >= 1000, (name, check)
        assert check.closest_ratio >= 1.0
