"""The embedded dataset: a stratified Fashion-MNIST subset shipped with the project (works offline).

An installed crc_core (``pip install .``) carries it as package data ``crc_core.assets`` (pyproject.toml maps that
package onto the repository's ``assets/`` folder) and finds it through :mod:`importlib.resources`; a repository
checkout reads ``assets/`` directly (:func:`embedded_dir`).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from ..errors import DataError
from .dataset import Dataset
from .idx import find_idx_files, load_idx_folder

REPO_ROOT = Path(__file__).resolve().parents[2]  # the repository, in a checkout (site-packages when installed)
EMBEDDED_SUBSET = "fashion-mnist-subset"
ASSETS_PACKAGE = "crc_core.assets"  # package data of an installed crc_core: the repository's assets/ folder


def embedded_dir() -> Path:
    """The folder of the embedded subset: the installed package data (``crc_core.assets/data/...``, found with
    :mod:`importlib.resources`), else the checkout's ``assets/data/fashion-mnist-subset``."""
    try:
        folder = importlib.resources.files(ASSETS_PACKAGE) / "data" / EMBEDDED_SUBSET
    except ModuleNotFoundError:  # a repository checkout: crc_core/assets does not exist, assets/ is beside it
        folder = None
    if isinstance(folder, Path) and folder.is_dir():
        return folder
    return REPO_ROOT / "assets" / "data" / EMBEDDED_SUBSET


EMBEDDED_DIR = embedded_dir()


def load_embedded(split: str, limit: int | None = None) -> Dataset:
    """``split`` of the embedded subset (first ``limit`` examples; the subset is stratified and shuffled)."""
    if find_idx_files(EMBEDDED_DIR, split) is None:
        raise DataError(
            f"The embedded Fashion-MNIST subset is missing from {EMBEDDED_DIR}. Restore assets/ from git or "
            "regenerate it with: python bench/make_embedded_subset.py"
        )
    source = f"embedded Fashion-MNIST subset, assets/data/{EMBEDDED_SUBSET} ({split})"
    return load_idx_folder(EMBEDDED_DIR, split, name="embedded", limit=limit, source=source)
