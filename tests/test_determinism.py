"""Determinism: the same seed and inputs give the same certificates.

CPU: twice in one process (bit for bit), after training twice with one seed (bit for bit), and in a fresh process
through the CLI (equal to 1e-12: the CSV holds printed floats). GPU (``-m gpu``, skipped without CUDA): CPU and CUDA
radii agree to 1e-4 for every depth and activation.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import small_data, small_model

from crc_core.bounds import curvature_bounds
from crc_core.certify import certify
from crc_core.checkpoints import save_checkpoint
from crc_core.data import load_dataset
from crc_core.evaluate import evaluate
from crc_core.models import MLP
from crc_core.train import TrainConfig, train

REPO = Path(__file__).resolve().parent.parent
FIELDS = ("pred", "radius", "radius_by_class", "target", "exact", "x_boundary")


def _same(a, b) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if x.is_floating_point():
            x, y = x.nan_to_num(-7.0), y.nan_to_num(-7.0)  # nan marks targets that were not computed
        assert torch.equal(x, y), name


@pytest.mark.parametrize(("depth", "act", "mode", "targets"), [
    (2, "softplus", "fast", "all"), (3, "tanh", "paper", "runner-up"), (4, "sigmoid", "fast", "random"),
])
def test_same_inputs_same_certificates_twice(depth, act, mode, targets):
    model = small_model(depth, act, True)
    x, y = small_data("test", 8)
    a = certify(model, x, y, targets=targets, mode=mode, seed=5)
    b = certify(model, x, y, targets=targets, mode=mode, seed=5)
    _same(a, b)
    c = certify(model, x, y, targets=targets, mode=mode, seed=5, bounds=curvature_bounds(model))
    # a precomputed (cached) all-pair table gives the same answer up to round-off: the verified eigenvalue
    # bounds are computed batched over the pairs asked for, so other pairs in the batch can move the last bits
    for name in ("pred", "target", "exact"):
        assert torch.equal(getattr(a, name), getattr(c, name)), name
    for name in ("radius", "radius_by_class", "x_boundary"):
        torch.testing.assert_close(getattr(a, name).double(), getattr(c, name).double(), rtol=0, atol=1e-12,
                                   equal_nan=True, msg=name)


def test_same_seed_same_training_same_certificates():
    data = load_dataset("embedded", "train", limit=600), load_dataset("embedded", "test", limit=50)
    cfg = TrainConfig(widths=(16,), kind="crt", gamma=0.02, epochs=1, eval_samples=0, device="cpu", seed=11)
    m1, m2 = train(cfg, data=data).model, train(cfg, data=data).model
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)
    x, y = data[1].images[:10], data[1].labels[:10]
    _same(certify(m1, x, y), certify(m2, x, y))


def test_fresh_process_gives_the_same_certificates(tmp_path):
    """The CLI in a new process (1 thread) and the library here agree on every image's radius."""
    torch.manual_seed(0)
    model = MLP(784, [24], 10, "tanh").eval()
    ckpt = save_checkpoint(tmp_path / "m.pt", model, {"dataset": "embedded"})
    out = tmp_path / "c.csv"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "crc_core", "certify", "--checkpoint", str(ckpt), "--limit", "8",
                    "--no-attacks", "--threads", "1", "--out", str(out)], check=True, env=env, cwd=REPO,
                   capture_output=True, timeout=300)
    ds = load_dataset("embedded", "test", limit=8)
    here = evaluate(model, ds.images, ds.labels, rho=0.5, attacks=False).table
    there = pd.read_csv(out)
    radius = [c for c in here.columns if c.startswith("radius")]
    assert radius
    for c in radius:
        assert np.abs(here[c].to_numpy() - there[c].to_numpy()).max() <= 1e-12, c


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("depth", [2, 3, 4])
@pytest.mark.parametrize("act", ["softplus", "sigmoid", "tanh"])
def test_cpu_and_gpu_radii_agree(depth, act):
    model = small_model(depth, act, True)
    x, y = small_data("test", 64)
    cpu = certify(model, x, y)
    gpu_model = MLP.from_config(model.config())
    gpu_model.load_state_dict(model.state_dict())
    gpu_model = gpu_model.cuda().eval()
    gpu = certify(gpu_model, x.cuda(), y.cuda())
    assert torch.equal(cpu.pred, gpu.pred.cpu())
    diff = (cpu.radius - gpu.radius.cpu()).abs().max().item()
    assert diff <= 1e-4, diff
    both = torch.isfinite(cpu.radius_by_class) & torch.isfinite(gpu.radius_by_class.cpu())
    assert (cpu.radius_by_class[both] - gpu.radius_by_class.cpu()[both]).abs().max().item() <= 1e-4
