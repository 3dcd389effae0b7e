"""Datasets by name, without torchvision: images (MNIST, Fashion-MNIST, the embedded subset) and 2-D toys.

Every dataset is a :class:`Dataset`: ``images`` float32 (N, D), ``labels`` int64 (N,). Image datasets have
D = 784 raw pixels in [0, 1]; the toys (:mod:`crc_core.data.toy`: moons, circles, spirals, xor, blobs) have D = 2
raw coordinates in ℝ² (:func:`in_unit_box` says which). Modules: :mod:`.dataset` (the type), :mod:`.idx` (IDX
files), :mod:`.embedded` (the shipped subset), :mod:`.toy`. Image sources, in the order :func:`load_dataset` tries
them:

* ``"embedded"``: the stratified Fashion-MNIST subset shipped in ``assets/data/fashion-mnist-subset``
  (always present, works offline). An installed crc_core (``pip install .``) carries it as package data
  ``crc_core.assets`` (pyproject.toml maps that package onto the repository's ``assets/`` folder) and finds it
  through :mod:`importlib.resources`; a repository checkout reads ``assets/`` directly (:func:`embedded_dir`);
* ``"fashion-mnist"`` / ``"mnist"``: an explicit ``root`` folder of IDX files; Debian's
  ``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``, Fashion-MNIST only); a local
  cache folder (``$CRC_DATA_DIR`` or ``~/.cache/crc-explorer/data``); torchvision's download into that folder,
  only when torchvision imports. Otherwise a :class:`~crc_core.errors.DataError` says what to do.

MNIST and Fashion-MNIST use the same IDX file names, so a folder's *layout* says which dataset it holds only when
it is named: ``<root>/mnist`` or ``<root>/fashion-mnist``, torchvision's ``<root>/MNIST/raw`` or
``<root>/FashionMNIST/raw`` (searched first, see :func:`dataset_dirs`). A *flat* folder (the files directly in
``<root>`` or ``<root>/raw``) is told apart by content: the published splits have known class counts
(:data:`PUBLISHED_LABEL_COUNTS`, :func:`identify_labels`). The rule:

* a flat folder given explicitly (``root=``, or the Debian folder for Fashion-MNIST) is accepted for the dataset
  asked for, unless its labels are the published split of the *other* dataset: then a DataError says so (loading
  MNIST digits under Fashion-MNIST class names is never silent). Unidentified data (a subset, synthetic files) is
  trusted to be what the caller named;
* a flat cache folder (``$CRC_DATA_DIR``, holding both datasets in principle) is used for a dataset only when its
  labels identify that dataset; put anything else in ``<cache>/mnist`` or ``<cache>/fashion-mnist``.

Dataset names are case- and separator-insensitive with a few aliases (``"FashionMNIST"``, ``"fmnist"``):
:func:`normalize_dataset_name` is the one place that spells them.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .dataset import (
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    SPLITS,
    Dataset,
    DatasetInfo,
    check_limit,
    check_split,
)
from .embedded import ASSETS_PACKAGE, EMBEDDED_DIR, EMBEDDED_SUBSET, REPO_ROOT, embedded_dir, load_embedded
from .idx import (
    PUBLISHED_LABEL_COUNTS,
    dataset_dirs,
    find_idx_files,
    find_in_folder,
    identify_labels,
    load_idx_folder,
    read_idx,
    write_idx,
)
from .toy import TOY_DEFAULTS, TOY_NAMES, ToySpec, make_toy, toy_spec

__all__ = [
    "ASSETS_PACKAGE", "DATASET_ALIASES", "DATASET_NAMES", "DEBIAN_FASHION_MNIST", "EMBEDDED_DIR",
    "EMBEDDED_SUBSET", "FASHION_MNIST_CLASSES", "IMAGE_DATASET_NAMES", "MNIST_CLASSES",
    "PUBLISHED_LABEL_COUNTS", "REPO_ROOT", "SPLITS", "TOY_DEFAULTS", "TOY_NAMES", "Dataset", "DatasetInfo",
    "ToySpec", "available_datasets", "dataset_dirs", "embedded_dir", "find_idx_files", "identify_labels",
    "in_unit_box", "load_dataset", "load_idx_folder", "make_toy", "normalize_dataset_name", "read_idx",
    "shared_mnist_dir", "toy_spec", "write_idx",
]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IMAGE_DATASET_NAMES: tuple[str, ...] = ("embedded", "fashion-mnist", "mnist")
DATASET_NAMES: tuple[str, ...] = (*IMAGE_DATASET_NAMES, *TOY_NAMES)
# Other spellings of the dataset names (after lower-casing and "_" -> "-"); see normalize_dataset_name.
DATASET_ALIASES: dict[str, str] = {"fashion": "fashion-mnist", "fashionmnist": "fashion-mnist",
                                   "fmnist": "fashion-mnist", "f-mnist": "fashion-mnist", "cifar-10": "cifar10",
                                   "two-moons": "moons", "spiral": "spirals"}


def in_unit_box(name: str) -> bool:
    """True when dataset ``name``'s inputs are pixels in [0, 1] (attacks may clip to that box), False for the 2-D
    toys, whose points are raw coordinates in ℝ² (an attack that clipped them to [0, 1]² would be meaningless)."""
    return normalize_dataset_name(name) not in TOY_NAMES


def _cache_dir() -> Path:
    env = os.environ.get("CRC_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "crc-explorer" / "data"


def shared_mnist_dir() -> Path | None:
    """The real MNIST test set at ``../shared/data/mnist`` next to the repository (tests/benchmarks), if present.

    Use as ``load_dataset("mnist", "test", root=shared_mnist_dir())``. Never copy it into the project.
    """
    for base in (REPO_ROOT.parent, REPO_ROOT):  # the GPU machine's copy may carry shared/ inside the tree
        path = (base / "shared" / "data" / "mnist").resolve()
        if find_idx_files(path, "test") is not None:
            return path
    return None


def _torchvision_download(name: str, split: str, root: Path) -> tuple[Path, Path] | None:
    """Let torchvision download ``name`` into ``root``; None when torchvision is missing/broken or offline."""
    try:
        import torchvision.datasets as tvd  # optional: does not import with every torch build
    except Exception:
        return None
    cls = tvd.FashionMNIST if name == "fashion-mnist" else tvd.MNIST
    try:
        cls(str(root), train=split == "train", download=True)
    except Exception:
        return None
    return find_idx_files(root, split, name=name)


def _identify_file(labels_path: Path) -> str | None:
    try:
        return identify_labels(read_idx(labels_path))
    except DataError:  # a corrupt file identifies nothing; loading it gives the real error
        return None


def _files_in(folder: Path, name: str, split: str, *, flat: str) -> tuple[Path, Path] | None:
    """The IDX files of ``name``/``split`` in a folder found, not given by the caller (the module docstring's rule).

    Named folders (:func:`dataset_dirs`) and, with ``flat="unless-other"``, the flat folder are used unless their
    labels identify the other dataset; with ``flat="identified"`` the flat folder only when they identify ``name``.
    """
    for folder_ in (*dataset_dirs(folder, name), folder, folder / "raw"):
        found = find_in_folder(folder_, split)
        if found is None:
            continue
        found_as = _identify_file(found[1])
        is_flat = folder_ in (folder, folder / "raw")
        if found_as == name or (found_as is None and not (is_flat and flat == "identified")):
            return found
    return None

def normalize_dataset_name(name: str) -> str:
    """The canonical spelling of a dataset name: lower case, ``_`` -> ``-``, aliases resolved (:data:`DATASET_ALIASES`).

    ``"MNIST"`` -> ``"mnist"``, ``"Fashion_MNIST"`` / ``"FashionMNIST"`` / ``"fmnist"`` -> ``"fashion-mnist"``; other
    names come back normalized but unchecked (callers say which names they accept).
    """
    key = str(name).strip().lower().replace("_", "-")
    return DATASET_ALIASES.get(key, key)


def load_dataset(
    name: str = "embedded",
    split: str = "test",
    root: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    **toy_options: int | float | None,
) -> Dataset:
    """Load ``split`` (``"train"`` | ``"test"``) of dataset ``name`` (one of :data:`DATASET_NAMES`).

    The 2-D toys take ``size``, ``noise``, ``seed`` and (blobs, spirals) ``classes`` as keyword options over the
    defaults their name carries (:func:`crc_core.data.toy.make_toy`); image datasets take none.

    ``limit`` keeps the first ``limit`` examples (files are in their published order; the embedded subset is
    stratified and shuffled, so any prefix of it is roughly balanced). See the module docstring for the search
    order and how MNIST and Fashion-MNIST are told apart; ``root`` (a folder of IDX files: flat, ``<root>/<name>``
    or torchvision's layout) is tried first and, when given, is also where torchvision downloads to.
    """
    key = normalize_dataset_name(name)
    check_split(split)
    if limit is not None:
        check_limit(limit)
    if key not in DATASET_NAMES:
        raise DataError(f"Unknown dataset {name!r}: choose one of {', '.join(DATASET_NAMES)}.")
    if key in TOY_NAMES:
        if root is not None:
            raise DataError(f"The toy dataset {key!r} is generated, not read: it takes no root folder.")
        return make_toy(key, split, limit=limit, **toy_options)
    if toy_options:
        raise DataError(f"Options {', '.join(sorted(toy_options))} are for the 2-D toy datasets, not {key!r}.")
    if key == "embedded":
        if root is not None:
            raise DataError("The embedded dataset ships with the project; it takes no root folder.")
        return load_embedded(split, limit)

    if root is not None:  # given explicitly: a flat folder is trusted unless its content says otherwise
        folder = Path(root).expanduser()
        found = find_idx_files(folder, split, name=key)
        folders = [folder]
    else:
        folders = [DEBIAN_FASHION_MNIST] if key == "fashion-mnist" else []
        folders.append(_cache_dir())
        rules = ["unless-other"] * (len(folders) - 1) + ["identified"]
        found = next((f for d, r in zip(folders, rules, strict=True) if (f := _files_in(d, key, split, flat=r))),
                     None)
    if found is None:
        target = folders[0] if root is not None else _cache_dir()
        found = _torchvision_download(key, split, target)
    if found is not None:
        return load_idx_folder(found[0].parent, split, name=key, limit=limit)

    where = ", ".join(str(f) for f in folders)
    hint = "install the Debian package dataset-fashion-mnist, " if key == "fashion-mnist" else ""
    raise DataError(
        f"Could not find the {key} {split} split (looked in {where}, in <folder>/{key} and torchvision's layout; "
        f"torchvision is unavailable or offline). To fix: {hint}pass root=<folder with the IDX files>, put them in "
        f"$CRC_DATA_DIR/{key}, or use the 'embedded' dataset."
    )


def available_datasets() -> list[DatasetInfo]:
    """Image datasets loadable right now without network access (the embedded subset first), with the splits
    present. The 2-D toys (:data:`TOY_NAMES`) are always loadable and are not listed: the image pages use this list.

    Looks in the same places, with the same rules, as :func:`load_dataset` with ``root=None`` (not in ``../shared``:
    that MNIST test set is for tests and benchmarks, see :func:`shared_mnist_dir`). A dataset is listed once, from
    the first place that has any of its splits.
    """
    found: list[DatasetInfo] = []

    def add(name: str, folder: Path, label: str, flat: str) -> None:
        files = {s: f for s in SPLITS if (f := _files_in(folder, name, s, flat=flat)) is not None}
        if files and not any(info.name == name for info in found):
            where = sorted({str(f[0].parent) for f in files.values()})
            found.append(DatasetInfo(name, tuple(files), f"{label} ({', '.join(where)})"))

    splits = tuple(s for s in SPLITS if find_idx_files(EMBEDDED_DIR, s) is not None)
    if splits:
        found.append(DatasetInfo("embedded", splits, f"embedded Fashion-MNIST subset ({EMBEDDED_DIR})"))
    add("fashion-mnist", DEBIAN_FASHION_MNIST, "Debian dataset-fashion-mnist", "unless-other")
    for name in ("fashion-mnist", "mnist"):
        add(name, _cache_dir(), "local cache", "identified")
    return found
