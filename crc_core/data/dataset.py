"""The dataset type shared by every source (IDX files, the embedded subset, the 2-D toys) and its checks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
MNIST_CLASSES = [str(d) for d in range(10)]
SPLITS = ("train", "test")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled set of inputs: images or 2-D toy points.

    Attributes:
        images: float32 tensor (N, D): for image datasets D = 784 pixel values in [0, 1] (raw pixels / 255, no
            normalization); for the 2-D toys D = 2 raw coordinates in ℝ² (:func:`crc_core.data.in_unit_box`).
        labels: int64 tensor (N,), values in [0, len(class_names)).
        class_names: human-readable class names, index = label.
        name: a dataset name (:data:`crc_core.data.DATASET_NAMES`).
        source: where it was read from (folder and split), for display and metadata.
        split: ``"train"`` or ``"test"``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    name: str
    source: str
    split: str = "test"

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_dim(self) -> int:
        return int(self.images.shape[1])

    def image(self, i: int) -> torch.Tensor:
        """Image ``i`` as a (28, 28) float32 tensor, for display (image datasets only)."""
        return self.images[i].reshape(28, 28)

    def take(self, n: int) -> Dataset:
        """The first ``n`` examples (all of them when ``n >= len(self)``)."""
        return Dataset(
            self.images[:n], self.labels[:n], list(self.class_names), self.name, self.source, self.split
        )


@dataclass(frozen=True)
class DatasetInfo:
    """What :func:`available_datasets` reports: a loadable dataset, its splits and where it comes from."""

    name: str
    splits: tuple[str, ...]
    source: str



def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}: use 'train' or 'test'.")



def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise DataError(f"limit must be a positive integer or None, got {limit!r}.")
    return int(limit)

