"""crc_core.data: IDX reader/writer, dataset loading from every source, clear errors on bad files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from crc_core import data
from crc_core.data import (
    DEBIAN_FASHION_MNIST,
    FASHION_MNIST_CLASSES,
    available_datasets,
    load_dataset,
    load_idx_folder,
    read_idx,
    shared_mnist_dir,
    write_idx,
)
from crc_core.errors import CRCError, DataError


def _fake_split(
    folder: Path, split: str, n: int, *, gz: bool = True, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Write a random IDX split (n images 28x28 uint8, labels 0..9) in the standard file names."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    prefix = "train" if split == "train" else "t10k"
    ext = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return images, labels


# ---------------------------------------------------------------------------------------------------- IDX format
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_idx_round_trip(tmp_path: Path, dtype: type, name: str) -> None:
    arr = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    path = write_idx(tmp_path / name, arr)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")


def test_idx_known_header(tmp_path: Path) -> None:
    """The bytes follow the published format: 0x00 0x00 type ndim, big-endian sizes, data."""
    path = write_idx(tmp_path / "labels", np.array([1, 2, 3], dtype=np.uint8))
    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])
    path = write_idx(tmp_path / "ints", np.array([1, 256], dtype=np.int32))
    assert path.read_bytes() == bytes([0, 0, 0x0C, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 1, 0])


def test_gzip_output_is_deterministic(tmp_path: Path) -> None:
    arr = np.arange(100, dtype=np.uint8).reshape(10, 10)
    a = write_idx(tmp_path / "a.gz", arr).read_bytes()
    b = write_idx(tmp_path / "b.gz", arr).read_bytes()
    assert a == b


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "nope.gz")


@pytest.mark.parametrize(
    "payload, match",
    [
        (b"", "truncated"),
        (b"\x00\x00", "truncated"),
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "magic"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "magic"),  # unknown type code
        (b"\x00\x00\x08\x00\x00\x00\x00\x01\x05", "magic"),  # zero dimensions
        (b"\x00\x00\x08\x01\x00\x00\x00", "truncated"),  # dims cut short
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "truncated"),  # 2 of 5 items
        (b"\x00\x00\x08\x01\x00\x00\x00\x02\x01\x02\x03", "extra bytes"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x00\x00\x00\x00\x03", "empty dimension"),
        (b"\x00\x00\x0e\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "too large"),
        (b"<html>404 not found</html>", "magic"),
    ],
)
def test_corrupt_raw_files(tmp_path: Path, payload: bytes, match: str) -> None:
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=match):
        read_idx(path)


def test_truncated_and_corrupt_gzip(tmp_path: Path) -> None:
    good = write_idx(tmp_path / "good.gz", np.arange(5000, dtype=np.int32)).read_bytes()
    cut = tmp_path / "cut.gz"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError):
        read_idx(cut)
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0xFF
    bad = tmp_path / "flipped.gz"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(DataError):
        read_idx(bad)
    # a complete gzip stream whose content is short: the IDX size check catches it
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2])))
    with pytest.raises(DataError, match="truncated"):
        read_idx(short)


def test_data_error_is_a_value_error() -> None:
    assert issubclass(DataError, CRCError) and issubclass(DataError, ValueError)


# ---------------------------------------------------------------------------------------------- folders of IDX
@pytest.mark.parametrize("gz", [True, False])
def test_load_idx_folder(tmp_path: Path, gz: bool) -> None:
    images, labels = _fake_split(tmp_path, "test", 7, gz=gz)
    ds = load_idx_folder(tmp_path, "test", name="mnist")
    assert ds.images.shape == (7, 784) and ds.images.dtype == torch.float32
    assert ds.labels.shape == (7,) and ds.labels.dtype == torch.int64
    assert float(ds.images.min()) >= 0.0 and float(ds.images.max()) <= 1.0
    np.testing.assert_allclose(ds.images.numpy(), images.reshape(7, -1) / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(ds.labels.numpy(), labels)
    assert len(ds) == 7 and ds.n_classes == 10 and ds.name == "mnist" and ds.split == "test"
    assert str(tmp_path) in ds.source
    assert ds.image(3).shape == (28, 28)
    assert len(ds.take(3)) == 3


def test_load_dataset_root_and_limit(tmp_path: Path) -> None:
    _fake_split(tmp_path, "train", 12)
    _fake_split(tmp_path, "test", 5, seed=1)
    train = load_dataset("mnist", "train", root=tmp_path, limit=4)
    assert train.images.shape == (4, 784) and train.class_names == [str(i) for i in range(10)]
    test = load_dataset("fashion-mnist", "test", root=tmp_path)
    assert len(test) == 5 and test.class_names == FASHION_MNIST_CLASSES
    assert len(load_dataset("mnist", "test", root=tmp_path, limit=100)) == 5


def test_torchvision_layout(tmp_path: Path) -> None:
    _fake_split(tmp_path / "FashionMNIST" / "raw", "test", 3)
    assert len(load_dataset("fashion-mnist", "test", root=tmp_path)) == 3


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="No test split"):
        load_idx_folder(tmp_path, "test")
    # images and labels disagree in count
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (4, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3, dtype=np.uint8))
    with pytest.raises(DataError, match="4 images but"):
        load_idx_folder(tmp_path, "test")
    # labels out of range
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 10], dtype=np.uint8))
    with pytest.raises(DataError, match="label 10"):
        load_idx_folder(tmp_path, "test")
    # images of the wrong size
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((4, 32, 32), dtype=np.uint8))
    with pytest.raises(DataError, match=r"\(N, 28, 28\)"):
        load_idx_folder(tmp_path, "test")


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="Unknown dataset"):
        load_dataset("cifar10")
    with pytest.raises(DataError, match="split"):
        load_dataset("embedded", "validation")
    with pytest.raises(DataError, match="limit"):
        load_dataset("embedded", limit=0)
    with pytest.raises(DataError, match="no root"):
        load_dataset("embedded", root=tmp_path)


def test_missing_dataset_explains_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRC_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "_torchvision_download", lambda *a, **k: None)  # offline, no torchvision
    with pytest.raises(DataError, match="root=") as info:
        load_dataset("mnist", "train")
    assert "embedded" in str(info.value)
    with pytest.raises(DataError, match=r"No test split|Could not find"):
        load_dataset("fashion-mnist", "test", root=tmp_path / "empty")


def test_cache_dir_is_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRC_DATA_DIR", str(tmp_path))
    _fake_split(tmp_path / "MNIST" / "raw", "test", 6)
    ds = load_dataset("mnist", "test")
    assert len(ds) == 6
    assert any(info.name == "mnist" and info.splits == ("test",) for info in available_datasets())


# ------------------------------------------------------------------------------------------------ real datasets
def test_embedded_subset() -> None:
    for split, n in (("train", 10_000), ("test", 2_000)):
        ds = load_dataset("embedded", split)
        assert ds.images.shape == (n, 784) and ds.images.dtype == torch.float32
        assert ds.labels.shape == (n,) and ds.labels.dtype == torch.int64
        assert float(ds.images.min()) == 0.0 and float(ds.images.max()) == 1.0
        assert torch.bincount(ds.labels, minlength=10).tolist() == [n // 10] * 10  # stratified
        assert ds.class_names == FASHION_MNIST_CLASSES and ds.name == "embedded"
        assert "embedded" in ds.source
    # shuffled: a prefix is roughly balanced
    first = load_dataset("embedded", "test", limit=200)
    assert torch.bincount(first.labels, minlength=10).min() >= 8
    assert available_datasets()[0].name == "embedded"


def test_embedded_subset_is_small_and_licensed() -> None:
    root = data.EMBEDDED_DIR.parent
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size < 6 * 2**20
    licence = (root / "LICENSE-fashion-mnist.txt").read_text()
    assert "Zalando" in licence and "MIT" in licence and "Xiao" in licence


def test_embedded_dir_in_a_checkout_is_the_repository_assets_folder() -> None:
    """Without the installed package data (crc_core.assets), the checkout's assets/ folder is used; the installed
    case is tests/test_install.py."""
    repo_assets = Path(__file__).resolve().parent.parent / "assets" / "data" / "fashion-mnist-subset"
    assert data.embedded_dir() == data.EMBEDDED_DIR == repo_assets


def test_embedded_dir_prefers_package_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a package crc_core.assets on the path (as after `pip install .`), its data folder wins."""
    pkg = tmp_path / "pkgroot" / "fake_assets"
    (pkg / "data" / data.EMBEDDED_SUBSET).mkdir(parents=True)
    monkeypatch.syspath_prepend(str(tmp_path / "pkgroot"))
    monkeypatch.setattr(data.embedded, "ASSETS_PACKAGE", "fake_assets")
    assert data.embedded_dir() == pkg / "data" / data.EMBEDDED_SUBSET


@pytest.mark.skipif(
    not (DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").exists(), reason="no Debian data"
)
def test_debian_fashion_mnist() -> None:
    ds = load_dataset("fashion-mnist", "test")
    assert ds.images.shape == (10_000, 784)
    assert torch.bincount(ds.labels).tolist() == [1000] * 10
    assert str(DEBIAN_FASHION_MNIST) in ds.source
    assert any(i.name == "fashion-mnist" and i.splits == ("train", "test") for i in available_datasets())


@pytest.mark.skipif(shared_mnist_dir() is None, reason="../shared/data/mnist not present")
def test_shared_mnist_test_set() -> None:
    ds = load_dataset("mnist", "test", root=shared_mnist_dir())
    assert ds.images.shape == (10_000, 784) and ds.labels.shape == (10_000,)
    assert torch.bincount(ds.labels).tolist()[:3] == [980, 1135, 1032]  # published class counts
    assert ds.class_names == [str(i) for i in range(10)]


# ------------------------------------------------------------------------ MNIST vs Fashion-MNIST (same file names)
def _published_split(folder: Path, dataset: str, split: str = "test", seed: int = 0) -> None:
    """IDX files whose labels have the class counts of the published ``dataset`` split (shuffled), random images."""
    counts = data.PUBLISHED_LABEL_COUNTS[(dataset, split)]
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), counts))
    prefix = "train" if split == "train" else "t10k"
    write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.zeros((len(labels), 28, 28), dtype=np.uint8))


@pytest.fixture
def no_default_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty $CRC_DATA_DIR, no Debian folder, no torchvision download: only what a test writes is found."""
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("CRC_DATA_DIR", str(cache))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    monkeypatch.setattr(data, "_torchvision_download", lambda *a, **k: None)
    return cache


def test_dataset_names_have_one_home() -> None:
    from crc_core.importers import normalize_dataset

    for spelling in ("Fashion_MNIST", "FashionMNIST", "fmnist", " fashion ", "fashion-mnist"):
        assert data.normalize_dataset_name(spelling) == "fashion-mnist"
        assert normalize_dataset(spelling) == "fashion-mnist"
    assert data.normalize_dataset_name("MNIST") == "mnist" and data.normalize_dataset_name("embedded") == "embedded"
    assert normalize_dataset("embedded") == "fashion-mnist"  # a model for the embedded subset is a Fashion-MNIST model
    assert load_dataset("EMBEDDED", "test", limit=3).name == "embedded"


def test_published_label_counts_identify_the_dataset() -> None:
    for (dataset, split), counts in data.PUBLISHED_LABEL_COUNTS.items():
        assert sum(counts) == (60_000 if split == "train" else 10_000)
        labels = np.random.default_rng(1).permutation(np.repeat(np.arange(10), counts))
        assert data.identify_labels(labels) == dataset
    assert data.identify_labels(np.zeros(10_000, dtype=np.uint8)) is None
    assert data.identify_labels(load_dataset("embedded", "test").labels.numpy()) is None  # a balanced subset
    ten_k = np.repeat(np.arange(10), data.PUBLISHED_LABEL_COUNTS[("mnist", "test")])
    assert data.identify_labels(ten_k[:-1]) is None  # one label short: not the published file


def test_a_flat_folder_of_mnist_is_not_loaded_as_fashion_mnist(tmp_path: Path) -> None:
    _published_split(tmp_path, "mnist")
    assert load_dataset("mnist", "test", root=tmp_path).name == "mnist"
    with pytest.raises(DataError, match=r"published MNIST labels, not Fashion-MNIST's.*load it as 'mnist'"):
        load_dataset("fashion-mnist", "test", root=tmp_path)
    with pytest.raises(DataError, match="not Fashion-MNIST's"):
        load_idx_folder(tmp_path, "test", name="fashion-mnist")
    other = tmp_path / "fm"
    _published_split(other, "fashion-mnist")
    with pytest.raises(DataError, match="published Fashion-MNIST labels, not MNIST's"):
        load_dataset("mnist", "test", root=other)


def test_named_folders_under_one_root_are_told_apart(tmp_path: Path) -> None:
    _published_split(tmp_path / "mnist", "mnist")
    _published_split(tmp_path / "FashionMNIST" / "raw", "fashion-mnist")
    _fake_split(tmp_path, "test", 5)  # flat files as well: the named folders win
    assert data.identify_labels(load_dataset("mnist", "test", root=tmp_path).labels.numpy()) == "mnist"
    assert data.identify_labels(load_dataset("fashion-mnist", "test", root=tmp_path).labels.numpy()) == "fashion-mnist"
    assert data.dataset_dirs(tmp_path, "mnist")[0] == tmp_path / "mnist" and data.dataset_dirs(tmp_path, "x") == []


def test_a_flat_cache_is_used_only_for_the_dataset_its_labels_identify(no_default_sources: Path) -> None:
    cache = no_default_sources
    _published_split(cache, "mnist")
    assert [(i.name, i.splits) for i in available_datasets()][1:] == [("mnist", ("test",))]
    assert load_dataset("mnist", "test").name == "mnist"
    with pytest.raises(DataError, match="Could not find the fashion-mnist test split"):
        load_dataset("fashion-mnist", "test")
    # unidentified flat files in the shared cache belong to neither dataset; in <cache>/<name> they do
    for f in cache.glob("*.gz"):
        f.unlink()
    _fake_split(cache, "test", 4)
    assert [i.name for i in available_datasets()] == ["embedded"]
    _fake_split(cache / "fashion-mnist", "train", 4)
    info = [i for i in available_datasets() if i.name == "fashion-mnist"]
    assert len(info) == 1 and info[0].splits == ("train",) and str(cache / "fashion-mnist") in info[0].source
    assert len(load_dataset("fashion-mnist", "train")) == 4


@pytest.mark.skipif(shared_mnist_dir() is None, reason="../shared/data/mnist (the real MNIST test set) not present")
def test_real_mnist_is_never_fashion_mnist(monkeypatch: pytest.MonkeyPatch, no_default_sources: Path) -> None:
    with pytest.raises(DataError, match="published MNIST labels"):
        load_dataset("fashion-mnist", "test", root=shared_mnist_dir())
    monkeypatch.setenv("CRC_DATA_DIR", str(shared_mnist_dir()))
    listed = {i.name: i.splits for i in available_datasets()}
    assert listed.get("mnist") == ("test",) and "fashion-mnist" not in listed  # only the test split is there
