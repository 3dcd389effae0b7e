"""crc_core.checks: every public entry refuses the same mistake with the same sentence (validated once, at the
door), and the message lives in one place."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from crc_core.attack import curvature_attack, pgd_attack
from crc_core.baselines.crown import crown_radius
from crc_core.baselines.lipschitz import lipschitz_radius
from crc_core.baselines.relu_quadratic import certify_relu
from crc_core.baselines.smoothing import Smooth
from crc_core.certify import certify
from crc_core.checks import check_images, check_labels, check_targets
from crc_core.compare import compare_certificates
from crc_core.errors import CRCError
from crc_core.evaluate import evaluate
from crc_core.hessian import margin_hessian
from crc_core.models import MLP

NAN_MESSAGE = "Input images contain NaN or infinite values."
ROOT = Path(__file__).resolve().parents[1] / "crc_core"


def _nets():
    torch.manual_seed(0)
    return MLP(6, [5], 3, "softplus").eval(), MLP(6, [5], 3, "relu").eval()


def test_every_entry_refuses_nan_images_with_one_sentence():
    smooth, relu = _nets()
    bad = torch.rand(2, 6)
    bad[1, 2] = math.nan
    y, t = torch.tensor([0, 1]), torch.tensor([1, 2])
    calls = [lambda: certify(smooth, bad, y), lambda: certify_relu(relu, bad, y),
             lambda: compare_certificates(smooth, bad, y, methods=("lipschitz",)),
             lambda: curvature_attack(smooth, bad, y, t, 0.5), lambda: margin_hessian(smooth, bad, y, t),
             lambda: crown_radius(smooth, bad, y, t), lambda: lipschitz_radius(smooth, bad, y, t),
             lambda: evaluate(smooth, bad, y, rho=0.5), lambda: Smooth(smooth, 0.25).certify(bad, 10, 100, 0.01)]
    for call in calls:
        with pytest.raises(CRCError) as err:
            call()
        assert str(err.value) == NAN_MESSAGE


def test_labels_and_targets_one_message_each():
    smooth, relu = _nets()
    x = torch.rand(2, 6)
    for call in (lambda: certify(smooth, x, [0, 3]), lambda: certify_relu(relu, x, [0, 3]),
                 lambda: compare_certificates(smooth, x, [0, 3], methods=("lipschitz",))):
        with pytest.raises(CRCError, match=r"^Labels must lie in \[0, 2\] \(one class label per image\)\.$"):
            call()
    for call in (lambda: curvature_attack(smooth, x, [0, 1], [0, 2], 0.5),
                 lambda: crown_radius(smooth, x, torch.tensor([0, 1]), torch.tensor([0, 2])),
                 lambda: lipschitz_radius(smooth, x, torch.tensor([0, 1]), torch.tensor([0, 2]))):
        with pytest.raises(CRCError, match=r"^A target class equals the label"):
            call()
    with pytest.raises(CRCError, match="Got 2 images but 3 labels"):
        check_labels([0, 1, 2], 2, 3)
    with pytest.raises(CRCError, match=r"Targets must lie in \[0, 2\]"):
        check_targets(torch.tensor([0, 1]), torch.tensor([[1, 5], [0, 2]]), 3)
    with pytest.raises(CRCError, match="No images"):
        check_images(smooth, torch.rand(0, 6))
    assert check_images(smooth, torch.rand(0, 6), empty_ok=True).shape == (0, 6)
    with pytest.raises(CRCError, match="NaN"):  # checked after the conversion: 1e300 is inf in float32
        check_images(smooth, torch.full((1, 6), 1e300, dtype=torch.float64), dtype=torch.float32)
    with pytest.raises(CRCError, match="features"):
        pgd_attack(smooth, torch.rand(2, 7), torch.tensor([0, 1]), 0.5)


def test_the_messages_and_roundoff_live_in_one_place():
    sources = {p: p.read_text(encoding="utf-8") for p in ROOT.rglob("*.py")}
    assert [p.name for p, s in sources.items() if NAN_MESSAGE in s] == ["checks.py"]
    roundoff = re.compile(r"^[A-Z0-9_]*ROUNDOFF[A-Z0-9_]* = ", re.M)  # a round-off allowance defined as a constant
    assert [p.name for p, s in sources.items() if roundoff.search(s)] == ["tolerances.py"]


def test_the_baselines_take_their_tolerances_from_tolerances_py():
    # a module-level number in a baseline is a bracket, a batch size or a memory chunk, never a tolerance (#22)
    number = re.compile(r"^([A-Z][A-Z0-9_]*) *(?::[^=]*)?= *\(?-?[0-9]", re.M)
    found = {m.group(1) for p in (ROOT / "baselines").glob("*.py") for m in number.finditer(p.read_text("utf-8"))}
    assert found == {"RHO_LOW", "RHO_HIGH", "CHUNK_ROWS", "DEFAULT_BATCH"}
