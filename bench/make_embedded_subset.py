"""Regenerate the embedded Fashion-MNIST subset in assets/data/fashion-mnist-subset/ (deterministic).

Source: Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist), or --source DIR with the four IDX files.
Takes a stratified sample (the same number of images per class) with a fixed seed, shuffles it with that seed,
and writes IDX .gz files whose bytes depend only on the inputs and the arguments.

    .venv/bin/python bench/make_embedded_subset.py [--train-per-class 1000] [--test-per-class 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crc_core.data import DEBIAN_FASHION_MNIST, EMBEDDED_DIR, find_idx_files, read_idx, write_idx


def stratified_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` indices of each class (sorted within the class before sampling), then shuffled together."""
    picks = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise SystemExit(f"class {c} has only {len(idx)} examples, {per_class} requested")
        picks.append(np.sort(rng.choice(idx, size=per_class, replace=False)))
    out = np.concatenate(picks)
    rng.shuffle(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, default=DEBIAN_FASHION_MNIST)
    parser.add_argument("--out", type=Path, default=EMBEDDED_DIR)
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    for split, per_class, prefix in (
        ("train", args.train_per_class, "train"),
        ("test", args.test_per_class, "t10k"),
    ):
        found = find_idx_files(args.source, split)
        if found is None:
            raise SystemExit(
                f"no {split} IDX files in {args.source} (install dataset-fashion-mnist or pass --source)"
            )
        images, labels = (read_idx(p) for p in found)
        rng = np.random.default_rng([args.seed, 0 if split == "train" else 1])
        idx = stratified_indices(labels, per_class, rng)
        img_path = write_idx(args.out / f"{prefix}-images-idx3-ubyte.gz", images[idx])
        lab_path = write_idx(args.out / f"{prefix}-labels-idx1-ubyte.gz", labels[idx])
        for p in (img_path, lab_path):
            digest = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            print(f"{p}  {p.stat().st_size / 1e6:.2f} MB  sha256:{digest}")
        print(f"{split}: {len(idx)} images, {per_class} per class, from {found[0].parent}")


if __name__ == "__main__":
    main()
