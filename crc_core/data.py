"""Datasets as flat image tensors, without torchvision.

Every dataset is a :class:`Dataset`: ``images`` float32 (N, 784) in [0, 1], ``labels`` int64 (N,).
Sources, in the order :func:`load_dataset` tries them:

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

The IDX reader (:func:`read_idx`) handles raw and gzip files and checks magic number, dimensions and size, so
a missing, corrupt or truncated file gives a ``DataError`` and never a wrong array.
"""

from __future__ import annotations

import gzip
import importlib.resources
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from .errors import DataError

__all__ = [
    "DATASET_ALIASES",
    "DATASET_NAMES",
    "DEBIAN_FASHION_MNIST",
    "EMBEDDED_DIR",
    "EMBEDDED_SUBSET",
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "PUBLISHED_LABEL_COUNTS",
    "Dataset",
    "DatasetInfo",
    "available_datasets",
    "dataset_dirs",
    "embedded_dir",
    "find_idx_files",
    "identify_labels",
    "load_dataset",
    "load_idx_folder",
    "normalize_dataset_name",
    "read_idx",
    "shared_mnist_dir",
    "write_idx",
]

REPO_ROOT = Path(__file__).resolve().parent.parent  # the repository, in a checkout (site-packages when installed)
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
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
MNIST_CLASSES = [str(d) for d in range(10)]
DATASET_NAMES = ("embedded", "fashion-mnist", "mnist")
SPLITS = ("train", "test")

_CLASS_NAMES = {
    "embedded": FASHION_MNIST_CLASSES,
    "fashion-mnist": FASHION_MNIST_CLASSES,
    "mnist": MNIST_CLASSES,
}
_TORCHVISION_FOLDER = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}
# Other spellings of the dataset names (after lower-casing and "_" -> "-"); see normalize_dataset_name.
DATASET_ALIASES: dict[str, str] = {"fashion": "fashion-mnist", "fashionmnist": "fashion-mnist",
                                   "fmnist": "fashion-mnist", "f-mnist": "fashion-mnist", "cifar-10": "cifar10"}
# Class counts (labels 0..9) of the published splits: they identify a folder's dataset by content, since MNIST and
# Fashion-MNIST share their file names. MNIST: LeCun et al.'s files; Fashion-MNIST: Xiao et al., balanced.
PUBLISHED_LABEL_COUNTS: dict[tuple[str, str], tuple[int, ...]] = {
    ("mnist", "train"): (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    ("mnist", "test"): (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
    ("fashion-mnist", "train"): (6000,) * 10,
    ("fashion-mnist", "test"): (1000,) * 10,
}
_FAMILY = {"embedded": "fashion-mnist"}  # the dataset whose images a dataset name holds
_TITLE = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
_FILE_PREFIX = {"train": "train", "test": "t10k"}

# IDX type byte -> big-endian numpy dtype
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_MAX_IDX_BYTES = 2**31  # refuse absurd headers instead of trying to allocate them
_GZIP_MAGIC = b"\x1f\x8b"


# ----------------------------------------------------------------------------------------------------------------
# IDX files
# ----------------------------------------------------------------------------------------------------------------
def _open_maybe_gzip(path: Path) -> BinaryIO:
    """Open ``path`` for reading, transparently un-gzipping it (detected by content, not by name)."""
    with open(path, "rb") as f:
        head = f.read(2)
    if head == _GZIP_MAGIC:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _read_exact(f: BinaryIO, n: int, path: Path, what: str) -> bytes:
    chunks: list[bytes] = []
    remaining = n
    while remaining > 0:
        chunk = f.read(min(remaining, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    data = b"".join(chunks)
    if len(data) != n:
        raise DataError(
            f"IDX file {path} is truncated: expected {n} bytes of {what}, found only {len(data)}. "
            "Re-download or re-copy the file."
        )
    return data


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (raw or gzip) into a numpy array of its stored shape and dtype (native byte order).

    Guarantees: the magic number is valid (two zero bytes, a known type code, 1..4 dimensions, all positive), and
    the payload has exactly prod(dims) items: a truncated, corrupt or padded file raises :class:`DataError`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"IDX file not found: {path}")
    try:
        with _open_maybe_gzip(path) as f:
            magic = _read_exact(f, 4, path, "header")
            if magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES or not 1 <= magic[3] <= 4:
                raise DataError(
                    f"{path} is not an IDX file (bad magic number {magic.hex()}); expected e.g. 00000803 for "
                    "images or 00000801 for labels."
                )
            dtype = _IDX_DTYPES[magic[2]]
            ndim = magic[3]
            dims = struct.unpack(f">{ndim}I", _read_exact(f, 4 * ndim, path, "dimensions"))
            if min(dims) < 1:
                raise DataError(f"IDX file {path} has an empty dimension: shape {dims}.")
            n_bytes = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
            if n_bytes > _MAX_IDX_BYTES:
                raise DataError(
                    f"IDX file {path} declares shape {dims} ({n_bytes} bytes): too large, refusing."
                )
            payload = _read_exact(f, n_bytes, path, f"data for shape {dims}")
            if f.read(1):
                raise DataError(
                    f"IDX file {path} has extra bytes after the data for shape {dims}: corrupt file."
                )
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"Could not read IDX file {path}: {exc} (corrupt or truncated gzip?).") from exc
    arr = np.frombuffer(payload, dtype=dtype).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike[str], array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write ``array`` (uint8/int8/int16/int32/float32/float64, 1..4 dims) as an IDX file.

    ``compress=None`` gzips when the name ends in ``.gz``. The gzip stream carries no timestamp or file name, so
    the same array always gives the same bytes.
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}
    dtype = array.dtype.newbyteorder("=")
    if dtype not in codes:
        raise DataError(f"IDX cannot store dtype {array.dtype}; use one of {sorted(str(d) for d in codes)}.")
    if not 1 <= array.ndim <= 4 or 0 in array.shape:
        raise DataError(f"IDX stores 1..4 non-empty dimensions, got shape {array.shape}.")
    header = bytes([0, 0, codes[dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = header + np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">")).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw:
        if compress:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
                gz.write(body)
        else:
            raw.write(body)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image set.

    Attributes:
        images: float32 tensor (N, 784), pixel values in [0, 1] (raw pixels / 255, no normalization).
        labels: int64 tensor (N,), values in [0, len(class_names)).
        class_names: human-readable class names, index = label.
        name: ``"embedded"``, ``"fashion-mnist"`` or ``"mnist"``.
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
        """Image ``i`` as a (28, 28) float32 tensor, for display."""
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


def _candidate_names(split: str, kind: str) -> list[str]:
    """File names used by the common distributions (LeCun/Zalando, Kaggle, un-gzipped torchvision)."""
    prefix = _FILE_PREFIX[split]
    idx = "idx3" if kind == "images" else "idx1"
    stems = [f"{prefix}-{kind}-{idx}-ubyte", f"{prefix}-{kind}.{idx}-ubyte"]
    return [s + ext for s in stems for ext in (".gz", "")]


def normalize_dataset_name(name: str) -> str:
    """The canonical spelling of a dataset name: lower case, ``_`` -> ``-``, aliases resolved (:data:`DATASET_ALIASES`).

    ``"MNIST"`` -> ``"mnist"``, ``"Fashion_MNIST"`` / ``"FashionMNIST"`` / ``"fmnist"`` -> ``"fashion-mnist"``; other
    names come back normalized but unchecked (callers say which names they accept).
    """
    key = str(name).strip().lower().replace("_", "-")
    return DATASET_ALIASES.get(key, key)


def dataset_dirs(root: str | os.PathLike[str], name: str) -> list[Path]:
    """The folders under ``root`` whose *name* says they hold dataset ``name``, in search order:
    ``<root>/<name>``, ``<root>/<name>/raw``, torchvision's ``<root>/<MNIST|FashionMNIST>/raw`` and
    ``<root>/<MNIST|FashionMNIST>``. Empty for a name without such folders (``"embedded"``)."""
    root = Path(root)
    if name not in _TORCHVISION_FOLDER:
        return []
    tv = root / _TORCHVISION_FOLDER[name]
    return [root / name, root / name / "raw", tv / "raw", tv]


def _search_dirs(root: Path, name: str | None) -> Iterator[Path]:
    """The named folders of ``name`` (:func:`dataset_dirs`) first, then the flat ``root`` and ``root/raw``."""
    yield from dataset_dirs(root, name) if name is not None else ()
    yield root
    yield root / "raw"


def _find_in(folder: Path, split: str) -> tuple[Path, Path] | None:
    images = next((folder / n for n in _candidate_names(split, "images") if (folder / n).is_file()), None)
    labels = next((folder / n for n in _candidate_names(split, "labels") if (folder / n).is_file()), None)
    return (images, labels) if images is not None and labels is not None else None


def find_idx_files(
    root: str | os.PathLike[str], split: str, *, name: str | None = None
) -> tuple[Path, Path] | None:
    """Return ``(images_path, labels_path)`` for ``split`` under ``root``, or None.

    Looks in the named folders of ``name`` first (:func:`dataset_dirs`), then in ``root`` and ``root/raw``. By file
    names only: the content checks of the module docstring are :func:`load_idx_folder`'s and :func:`load_dataset`'s.
    """
    _check_split(split)
    for folder in _search_dirs(Path(root), name):
        found = _find_in(folder, split)
        if found is not None:
            return found
    return None


def identify_labels(labels: np.ndarray) -> str | None:
    """``"mnist"`` or ``"fashion-mnist"`` when ``labels`` (N,) has the class counts of a published split of that
    dataset (:data:`PUBLISHED_LABEL_COUNTS`); None for anything else (a subset, a reordering is fine; other data)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or labels.min() < 0 or labels.max() >= 10:
        return None
    counts = tuple(int(c) for c in np.bincount(labels.astype(np.int64), minlength=10))
    return next((ds for (ds, _split), want in PUBLISHED_LABEL_COUNTS.items() if counts == want), None)


def _check_content(labels: np.ndarray, labels_path: Path, name: str, split: str) -> None:
    """DataError when the labels are the published split of another dataset than ``name``."""
    found_as, claimed = identify_labels(labels), _FAMILY.get(name, name)
    if found_as is not None and claimed in _TITLE and found_as != claimed:
        raise DataError(
            f"{labels_path} holds the published {_TITLE[found_as]} labels, not {_TITLE[claimed]}'s (the two use the "
            f"same file names): load it as {found_as!r}, or keep each dataset in its own folder "
            f"(<root>/{claimed}, <root>/{found_as})."
        )


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}: use 'train' or 'test'.")


def load_idx_folder(
    root: str | os.PathLike[str],
    split: str = "test",
    *,
    name: str = "fashion-mnist",
    class_names: Sequence[str] | None = None,
    limit: int | None = None,
    source: str | None = None,
) -> Dataset:
    """Load one split from a folder of IDX files (28x28 uint8 images, uint8 labels), found by :func:`find_idx_files`.

    Raises :class:`DataError` when the files are missing, corrupt, or disagree (count, label range, image size), and
    when their labels are the published split of another dataset than ``name`` (:func:`identify_labels`).
    """
    root = Path(root)
    found = find_idx_files(root, split, name=name)
    if found is None:
        expected = " + ".join(_candidate_names(split, k)[0] for k in ("images", "labels"))
        raise DataError(
            f"No {split} split found in {root}: expected the IDX files {expected} (gzipped or not)."
        )
    images_path, labels_path = found
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataError(
            f"{images_path} holds {images.dtype} of shape {images.shape}; expected uint8 images of shape (N, 28, 28)."
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(
            f"{labels_path} holds {labels.dtype} of shape {labels.shape}; expected uint8 labels (N,)."
        )
    _check_content(labels, labels_path, name, split)
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{images_path.name} has {images.shape[0]} images but {labels_path.name} has {labels.shape[0]} labels."
        )
    names = list(class_names) if class_names is not None else list(_CLASS_NAMES.get(name, MNIST_CLASSES))
    if int(labels.max()) >= len(names):
        raise DataError(
            f"{labels_path} has label {int(labels.max())}, but only {len(names)} classes are known."
        )
    n = images.shape[0] if limit is None else min(_check_limit(limit), images.shape[0])
    x = torch.from_numpy(images[:n].reshape(n, 28 * 28).astype(np.float32) / np.float32(255.0))
    y = torch.from_numpy(labels[:n].astype(np.int64))
    return Dataset(x, y, names, name, source or f"{images_path.parent} ({split})", split)


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise DataError(f"limit must be a positive integer or None, got {limit!r}.")
    return int(limit)


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
        found = _find_in(folder_, split)
        if found is None:
            continue
        found_as = _identify_file(found[1])
        is_flat = folder_ in (folder, folder / "raw")
        if found_as == name or (found_as is None and not (is_flat and flat == "identified")):
            return found
    return None


def load_dataset(
    name: str = "embedded",
    split: str = "test",
    root: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> Dataset:
    """Load ``split`` (``"train"`` | ``"test"``) of dataset ``name`` (``"embedded"``, ``"fashion-mnist"``, ``"mnist"``).

    ``limit`` keeps the first ``limit`` examples (files are in their published order; the embedded subset is
    stratified and shuffled, so any prefix of it is roughly balanced). See the module docstring for the search
    order and how MNIST and Fashion-MNIST are told apart; ``root`` (a folder of IDX files: flat, ``<root>/<name>``
    or torchvision's layout) is tried first and, when given, is also where torchvision downloads to.
    """
    key = normalize_dataset_name(name)
    _check_split(split)
    if limit is not None:
        _check_limit(limit)
    if key not in DATASET_NAMES:
        raise DataError(f"Unknown dataset {name!r}: choose one of {', '.join(DATASET_NAMES)}.")

    if key == "embedded":
        if root is not None:
            raise DataError("The embedded dataset ships with the project; it takes no root folder.")
        if find_idx_files(EMBEDDED_DIR, split) is None:
            raise DataError(
                f"The embedded Fashion-MNIST subset is missing from {EMBEDDED_DIR}. Restore assets/ from git or "
                "regenerate it with: python bench/make_embedded_subset.py"
            )
        source = f"embedded Fashion-MNIST subset, assets/data/{EMBEDDED_SUBSET} ({split})"
        return load_idx_folder(EMBEDDED_DIR, split, name="embedded", limit=limit, source=source)

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
    """Datasets loadable right now without network access (the embedded subset first), with the splits present.

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
