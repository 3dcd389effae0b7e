"""Test helpers: small real-image data and briefly trained models (fast, CPU, deterministic)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from crc_core.data import load_dataset
from crc_core.models import MLP

SMALL_SIDE = 10  # 28x28 -> centre 20x20 -> 10x10 average-pooled: D = 100 keeps exact spectra cheap


def downsample(images: torch.Tensor) -> torch.Tensor:
    """(N, 784) in [0,1] -> (N, 100): centre crop 20x20, 2x2 average pooling. Still real images, in [0,1]."""
    x = images.reshape(-1, 1, 28, 28)[:, :, 4:24, 4:24]
    return F.avg_pool2d(x, 2).reshape(x.shape[0], -1)


@functools.cache
def small_data(split: str = "train", n: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    ds = load_dataset("embedded", split, limit=n)
    return downsample(ds.images), ds.labels


def train_briefly(model: MLP, steps: int = 150, seed: int = 0) -> MLP:
    """A few Adam steps of cross-entropy on real (downsampled) images: a 'briefly trained' model."""
    x, y = small_data("train")
    g = torch.Generator().manual_seed(seed)
    if model.activation_name == "sigmoid":  # σ' ≤ 1/4 slows deep sigmoid nets down
        lr, steps = 1e-2, 2 * steps
    else:
        lr = 3e-3
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (128,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@functools.cache
def small_model(depth: int, activation: str, trained: bool, width: int = 24, seed: int = 0) -> MLP:
    torch.manual_seed(seed + 17 * depth)
    m = MLP(SMALL_SIDE * SMALL_SIDE, [width] * (depth - 1), 10, activation)
    if trained:
        train_briefly(m, seed=seed)
    for p in m.parameters():
        p.requires_grad_(False)
    return m


