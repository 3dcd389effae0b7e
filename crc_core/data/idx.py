"""IDX files (MNIST / Fashion-MNIST's format): read, write, find in a folder, load one split as a Dataset.

The IDX reader (:func:`read_idx`) handles raw and gzip files and checks magic number, dimensions and size, so
a missing, corrupt or truncated file gives a ``DataError`` and never a wrong array. MNIST and Fashion-MNIST use
the same file names: :func:`identify_labels` tells the published splits apart by their class counts.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ..errors import DataError
from .dataset import FASHION_MNIST_CLASSES, MNIST_CLASSES, Dataset, check_limit, check_split

_CLASS_NAMES = {
    "embedded": FASHION_MNIST_CLASSES,
    "fashion-mnist": FASHION_MNIST_CLASSES,
    "mnist": MNIST_CLASSES,
}
_TORCHVISION_FOLDER = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}
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


# ---- IDX files -----------------------------------------------------------------------------------------------------
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


def _candidate_names(split: str, kind: str) -> list[str]:
    """File names used by the common distributions (LeCun/Zalando, Kaggle, un-gzipped torchvision)."""
    prefix = _FILE_PREFIX[split]
    idx = "idx3" if kind == "images" else "idx1"
    stems = [f"{prefix}-{kind}-{idx}-ubyte", f"{prefix}-{kind}.{idx}-ubyte"]
    return [s + ext for s in stems for ext in (".gz", "")]



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


def find_in_folder(folder: Path, split: str) -> tuple[Path, Path] | None:
    """``(images, labels)`` paths of ``split`` directly in ``folder`` (any distribution's file names), or None."""
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
    check_split(split)
    for folder in _search_dirs(Path(root), name):
        found = find_in_folder(folder, split)
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
    n = images.shape[0] if limit is None else min(check_limit(limit), images.shape[0])
    x = torch.from_numpy(images[:n].reshape(n, 28 * 28).astype(np.float32) / np.float32(255.0))
    y = torch.from_numpy(labels[:n].astype(np.int64))
    return Dataset(x, y, names, name, source or f"{images_path.parent} ({split})", split)

