"""2-D toy datasets (moons, circles, spirals, xor, blobs): the paper in two dimensions, where the truth is exact.

Points are raw coordinates in ℝ² (no [0, 1] box: a certificate's disc may reach any point of the plane), float32
(N, 2); labels int64 (N,), classes balanced (sizes differ by at most one). Each name carries its defaults
(:data:`TOY_DEFAULTS`); ``size``, ``noise``, ``seed`` and (blobs, spirals) ``classes`` are options of
:func:`make_toy` and :func:`crc_core.data.load_dataset`. The train and test splits come from the same
distribution with different random streams (seed, split), so the same options always give the same points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError
from .dataset import SPLITS, Dataset, check_split

__all__ = ["MAX_TOY_SIZE", "TOY_DEFAULTS", "TOY_NAMES", "ToySpec", "make_toy", "toy_spec"]

TOY_NAMES: tuple[str, ...] = ("moons", "circles", "spirals", "xor", "blobs")
MAX_TOY_SIZE = 100_000  # a toy is for seeing; more points only slow the pictures
_MULTI_CLASS = ("blobs", "spirals")  # the toys whose class count is an option (2..4)


@dataclass(frozen=True)
class ToySpec:
    """What defines a toy dataset: name, size (points per split), noise (≥ 0, in the plane's units), seed, classes."""

    name: str
    size: int = 400
    noise: float = 0.1
    seed: int = 0
    classes: int = 2


TOY_DEFAULTS: dict[str, ToySpec] = {
    "moons": ToySpec("moons", noise=0.1),
    "circles": ToySpec("circles", noise=0.06),
    "spirals": ToySpec("spirals", noise=0.08),
    "xor": ToySpec("xor", noise=0.05),
    "blobs": ToySpec("blobs", noise=0.45, classes=3),
}


def _whole(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise DataError(f"A toy dataset's {name} must be a whole number from {lo} to {hi}, got {value!r}.")
    return int(value)


def toy_spec(name: str, *, size: int | None = None, noise: float | None = None, seed: int | None = None,
             classes: int | None = None) -> ToySpec:
    """The checked spec of toy ``name`` with the given options over its defaults; one clear DataError otherwise."""
    if name not in TOY_DEFAULTS:
        raise DataError(f"Unknown toy dataset {name!r}: choose one of {', '.join(TOY_NAMES)}.")
    base = TOY_DEFAULTS[name]
    if size is not None and not isinstance(size, bool) and isinstance(size, (int, np.integer)) and size < 1:
        raise DataError(f"A toy dataset needs at least one point per class; size {size} has none.")
    n = _whole("size", base.size if size is None else size, 1, MAX_TOY_SIZE)
    k = base.classes if classes is None else classes
    if name not in _MULTI_CLASS and k != 2:
        raise DataError(f"{name} has exactly 2 classes; only blobs and spirals take 2 to 4.")
    if not isinstance(k, bool) and isinstance(k, (int, np.integer)) and k < 2:
        raise DataError(f"A classifier needs at least 2 classes, got {k}: choose 2, 3 or 4.")
    k = _whole("number of classes", k, 2, 4)
    if n < k:
        raise DataError(f"size {n} is too small for {k} classes: give at least one point per class.")
    try:
        sigma = float(base.noise if noise is None else noise)
    except (TypeError, ValueError):
        raise DataError(f"The noise must be a number ≥ 0, got {noise!r}.") from None
    if not math.isfinite(sigma) or sigma < 0:
        raise DataError(f"The noise is a standard deviation and must be ≥ 0 (and finite), got {noise!r}.")
    s = _whole("seed", base.seed if seed is None else seed, 0, 2**31 - 1)
    return ToySpec(name, n, sigma, s, k)


def _class_sizes(n: int, k: int) -> list[int]:
    return [n // k + (1 if c < n % k else 0) for c in range(k)]


def _moons(rng: np.random.Generator, sizes: list[int]) -> np.ndarray:
    a = rng.uniform(0, math.pi, sizes[0])
    b = rng.uniform(0, math.pi, sizes[1])
    upper = np.stack([np.cos(a), np.sin(a)], 1)
    lower = np.stack([1 - np.cos(b), 0.5 - np.sin(b)], 1)
    return np.concatenate([upper, lower]) - np.array([0.5, 0.25])


def _circles(rng: np.random.Generator, sizes: list[int]) -> np.ndarray:
    parts = []
    for c, radius in enumerate((1.0, 0.5)):
        a = rng.uniform(0, 2 * math.pi, sizes[c])
        parts.append(radius * np.stack([np.cos(a), np.sin(a)], 1))
    return np.concatenate(parts)


def _spirals(rng: np.random.Generator, sizes: list[int]) -> np.ndarray:
    parts = []
    for c, n in enumerate(sizes):
        r = np.sqrt(rng.uniform(0.02, 1.0, n))  # more points further out, where the arms are longer
        a = 3 * math.pi * r + 2 * math.pi * c / len(sizes)
        parts.append(1.2 * r[:, None] * np.stack([np.cos(a), np.sin(a)], 1))
    return np.concatenate(parts)


def _xor(rng: np.random.Generator, sizes: list[int]) -> np.ndarray:
    parts = []
    for c, n in enumerate(sizes):  # class 0: quadrants I and III, class 1: II and IV
        p = rng.uniform(0.08, 1.0, (n, 2))
        sign = rng.choice([-1.0, 1.0], n)
        parts.append(p * np.stack([sign, sign * (1 if c == 0 else -1)], 1))
    return np.concatenate(parts)


def _blobs(rng: np.random.Generator, sizes: list[int]) -> np.ndarray:
    k = len(sizes)
    centres = [(1.4 * math.cos(2 * math.pi * c / k + math.pi / 4), 1.4 * math.sin(2 * math.pi * c / k + math.pi / 4))
               for c in range(k)]
    return np.concatenate([np.tile(np.array(centres[c]), (n, 1)) for c, n in enumerate(sizes)])


_SHAPES = {"moons": _moons, "circles": _circles, "spirals": _spirals, "xor": _xor, "blobs": _blobs}


def make_toy(name: str, split: str = "train", *, size: int | None = None, noise: float | None = None,
             seed: int | None = None, classes: int | None = None, limit: int | None = None) -> Dataset:
    """Toy dataset ``name``'s ``split``: points (size, 2) float32 in raw coordinates, labels (size,) int64.

    Noise is Gaussian with standard deviation ``noise`` on both coordinates (for blobs, the clusters' spread).
    Deterministic: (name, options, split) give the same points on every machine (numpy's PCG64 stream).
    ``limit`` keeps the first ``limit`` points (they are shuffled, so any prefix is roughly balanced).
    """
    spec = toy_spec(name, size=size, noise=noise, seed=seed, classes=classes)
    check_split(split)
    rng = np.random.default_rng([spec.seed, SPLITS.index(split), TOY_NAMES.index(name)])
    sizes = _class_sizes(spec.size, spec.classes)
    points = _SHAPES[name](rng, sizes) + rng.normal(0.0, spec.noise, (spec.size, 2))
    labels = np.repeat(np.arange(spec.classes), sizes)
    order = rng.permutation(spec.size)
    n = spec.size if limit is None else min(limit, spec.size)
    x = torch.from_numpy(points[order][:n].astype(np.float32))
    y = torch.from_numpy(labels[order][:n].astype(np.int64))
    source = f"toy {name}: {spec.size} points, noise {spec.noise:g}, seed {spec.seed} ({split})"
    return Dataset(x, y, [f"class {c}" for c in range(spec.classes)], name, source, split)
