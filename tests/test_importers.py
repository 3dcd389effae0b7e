"""crc_core.importers: foreign MLP files (the paper's official layout, nn.Sequential, prefixes, wrappers) become our
checkpoints; every bad input is refused before anything runs or is written."""

from __future__ import annotations

import collections
import hashlib
import io
import itertools
import os
import pickle
import zipfile
from pathlib import Path

import hostile_files
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crc_core.certify import certify
from crc_core.checkpoints import load_checkpoint, save_checkpoint
from crc_core.data import load_dataset, shared_mnist_dir
from crc_core.errors import CheckpointError
from crc_core.importers import (
    IMPORTED_KIND,
    MAX_IMPORT_BYTES,
    import_checkpoint,
    import_model,
    inspect_foreign,
    parse_official_name,
    scan_torch_file,
    training_from_name,
)
from crc_core.models import MLP

OFFICIAL = "mnist_2_softplus_L2_1.58_EIGEN_0.005"


def official_state_dict(dims: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """The official key layout fc1..fcL for a chain of Linear layers dims[0] -> ... -> dims[-1]."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, (a, b) in enumerate(itertools.pairwise(dims), start=1):
        sd[f"fc{i}.weight"] = torch.randn(b, a, generator=g) / a**0.5
        sd[f"fc{i}.bias"] = torch.randn(b, generator=g) * 0.1
    return sd


def by_hand(sd: dict[str, torch.Tensor], activation: str) -> MLP:
    """Our MLP built by hand from official-layout weights (the reference the importer must reproduce)."""
    n = len(sd) // 2
    dims = [sd["fc1.weight"].shape[1]] + [sd[f"fc{i}.weight"].shape[0] for i in range(1, n + 1)]
    model = MLP(dims[0], dims[1:-1], dims[-1], activation)
    with torch.no_grad():
        for i, layer in enumerate(model.layers, start=1):
            layer.weight.copy_(sd[f"fc{i}.weight"])
            layer.bias.copy_(sd[f"fc{i}.bias"])
    return model.eval()


def assert_same_weights(model: MLP, sd: dict[str, torch.Tensor], order: list[str]) -> None:
    """model.layers[i] holds the tensors of module order[i] of ``sd``."""
    assert len(model.layers) == len(order)
    for layer, module in zip(model.layers, order, strict=True):
        assert torch.equal(layer.weight, sd[f"{module}.weight"])
        assert torch.equal(layer.bias, sd[f"{module}.bias"])


# ----------------------------------------------------------------------------------------------------------------
# Layouts
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [2, 3, 4])
def test_official_layout_any_depth_uses_the_file_name(tmp_path: Path, depth: int) -> None:
    sd = official_state_dict([784, *[24] * (depth - 1), 10], seed=depth)
    src = tmp_path / f"fashion-mnist_{depth}_sigmoid_L2_1.58_EIGEN_0.01"
    torch.save(sd, src)
    result = import_checkpoint(src, tmp_path / "ours.pt")
    model, meta = load_checkpoint(result.path)
    assert model.config() == {"in_dim": 784, "widths": [24] * (depth - 1), "n_classes": 10, "activation": "sigmoid"}
    assert_same_weights(model, sd, [f"fc{i}" for i in range(1, depth + 1)])
    src_meta = meta["source"]
    assert src_meta["file"] == src.name
    assert src_meta["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert src_meta["original_keys"] == sorted(sd)
    assert src_meta["key_map"]["layers.0.weight"] == "fc1.weight"
    assert src_meta["name_fields"]["gamma"] == 0.01 and src_meta["activation_from"] == "file name"
    assert (meta["dataset"], meta["gamma"], meta["crt_eps"], meta["name"]) == ("fashion-mnist", 0.01, 1.58, src.name)
    assert any("Wrote" in line for line in result.summary_lines())


def test_sequential_layout_with_activation_gaps_and_prefixes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(784, 20), nn.Softplus(), nn.Linear(20, 12), nn.Softplus(), nn.Linear(12, 10))
    layouts = {
        "plain.pt": net.state_dict(),
        "module.pt": {f"module.{k}": v for k, v in net.state_dict().items()},  # DataParallel
        "wrapped.pt": {"epoch": 7, "model_state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}},
        "sd.pt": {"state_dict": {f"model.layers.{k}": v for k, v in net.state_dict().items()}, "acc": 0.9},
    }
    for name, payload in layouts.items():
        torch.save(payload, tmp_path / name)
        model, meta = import_model(tmp_path / name, activation="softplus", dataset="mnist")
        assert model.config()["widths"] == [20, 12], name
        x = torch.rand(5, 784)
        assert torch.equal(model(x), net(x)), name
        assert meta["source"]["activation_from"] == "argument"
    foreign = inspect_foreign(tmp_path / "sd.pt")
    assert (foreign.wrapper_key, foreign.prefix, foreign.ignored) == ("state_dict", "model.layers.", ("acc",))
    assert foreign.describe().startswith("784-20-12-10 (3 Linear layers")


def test_a_training_checkpoint_with_parameters_and_optimizer_state_is_read(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(784, 12), nn.Tanh(), nn.Linear(12, 10))
    opt = torch.optim.Adam(net.parameters())
    net(torch.rand(2, 784)).sum().backward()
    opt.step()
    payload = {"model": dict(net.named_parameters()), "optimizer": opt.state_dict(), "epoch": 3,
               "input_shape": torch.Size([1, 28, 28]), "tag": b"run-7", "seen": {1, 2}, "device": torch.device("cpu")}
    torch.save(payload, tmp_path / "train_state.pt")
    model, meta = import_model(tmp_path / "train_state.pt", activation="tanh", dataset="mnist")
    x = torch.rand(3, 784)
    assert torch.equal(model(x), net(x))
    assert meta["source"]["wrapper_key"] == "model"
    assert "optimizer" in meta["source"]["ignored_entries"]


def test_numbered_names_sort_numerically_and_unnumbered_names_chain_by_shape(tmp_path: Path) -> None:
    dims = [784, 9, 8, 7, 6, 5, 4, 3, 2, 11, 10]  # 10 layers: layers.10 must come after layers.9
    sd = {}
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        sd[f"layers.{i}.weight"], sd[f"layers.{i}.bias"] = torch.randn(b, a), torch.randn(b)
    torch.save(sd, tmp_path / "deep.pt")
    assert inspect_foreign(tmp_path / "deep.pt").widths == dims[1:-1]
    named = {"hidden.weight": torch.randn(16, 784), "hidden.bias": torch.randn(16),
             "out.weight": torch.randn(10, 16), "out.bias": torch.randn(10)}
    torch.save(dict(reversed(named.items())), tmp_path / "named.pt")
    model, _ = import_model(tmp_path / "named.pt", activation="tanh", dataset="mnist")
    assert_same_weights(model, named, ["hidden", "out"])


def test_legacy_torch_format_is_read(tmp_path: Path) -> None:
    sd = official_state_dict([784, 16, 10])
    torch.save(sd, tmp_path / OFFICIAL, _use_new_zipfile_serialization=False)
    assert scan_torch_file(tmp_path / OFFICIAL).format == "legacy"
    model, meta = import_model(tmp_path / OFFICIAL)
    assert_same_weights(model, sd, ["fc1", "fc2"])
    assert meta["source"]["container"] == "legacy"


def test_summary_notes_rounded_weights_and_uncertifiable_activations(tmp_path: Path) -> None:
    sd = {k: v.double() for k, v in official_state_dict([784, 16, 10]).items()}
    torch.save(sd, tmp_path / "mnist_2_relu")
    result = import_checkpoint(tmp_path / "mnist_2_relu", tmp_path / "ours.pt")
    lines = "\n".join(result.summary_lines())
    assert "torch.float64, stored as float32" in lines and "relu has no curvature bound" in lines
    assert result.metadata["source"]["original_dtype"] == "torch.float64"


def test_official_names_are_parsed() -> None:
    h = parse_official_name(f"/some/dir/{OFFICIAL}")
    assert h is not None
    assert (h.dataset, h.depth, h.activation) == ("mnist", 2, "softplus")
    assert (h.attack_norm, h.attack_eps, h.regularizer, h.gamma) == ("L2", 1.58, "EIGEN", 0.005)
    h = parse_official_name("fashion-mnist_3_sigmoid_L2_1.58_EIGEN_0.01.pt")
    assert h is not None and (h.dataset, h.depth, h.activation, h.gamma) == ("fashion-mnist", 3, "sigmoid", 0.01)
    h = parse_official_name("fashion_mnist_4_tanh")
    assert h is not None and (h.dataset, h.depth, h.gamma, h.extra) == ("fashion-mnist", 4, None, ())
    h = parse_official_name("mnist_2_softplus_FOO_bar_EIGEN_nan_L2_0.5")
    assert h is not None and h.extra == (("FOO", "bar"), ("EIGEN", "nan")) and (h.gamma, h.attack_eps) == (None, 0.5)
    for other in ("my_model.pt", "model_1_final.pt", "mnist.pt", "checkpoint_best"):
        assert parse_official_name(other) is None, other


def test_the_record_of_an_imported_model_has_a_trained_models_keys(tmp_path: Path) -> None:
    """kind 'imported'; the training only as far as the official name states it (unknown is None, never 0)."""
    sd = official_state_dict([784, 16, 10])
    torch.save(sd, tmp_path / OFFICIAL)
    _, meta = import_model(tmp_path / OFFICIAL)
    common = {"dataset", "kind", "gamma", "crt_eps", "epochs", "label", "metrics", "command", "torch_version"}
    assert common <= set(meta) and meta["kind"] == IMPORTED_KIND and meta["trained_kind"] == "crt"
    assert meta["label"] == "2x[16] softplus, CRT γ=0.005 ε=1.58 (imported; training read from the file name)"
    cases = {"mnist_2_softplus_EIGEN_0.02": ("gamma", 0.02, None), "mnist_2_softplus_L2_1.58": (None, None, None),
             "mnist_2_softplus": (None, None, None)}
    for name, want in cases.items():
        assert training_from_name(parse_official_name(name)) == want, name
        torch.save(sd, tmp_path / name)
        _, meta = import_model(tmp_path / name)
        assert (meta["trained_kind"], meta["gamma"], meta["crt_eps"]) == want
    assert training_from_name(None) == (None, None, None)


def test_arguments_override_the_name_and_the_name_is_checked(tmp_path: Path) -> None:
    sd = official_state_dict([784, 16, 10])
    torch.save(sd, tmp_path / OFFICIAL)
    model, meta = import_model(tmp_path / OFFICIAL, activation="tanh", dataset="fashion_mnist", name="mine")
    assert (model.activation_name, meta["dataset"], meta["name"]) == ("tanh", "fashion-mnist", "mine")
    torch.save(sd, tmp_path / "mnist_3_softplus")  # the name says 3 layers, the weights have 2
    with pytest.raises(CheckpointError, match="file name says 3 layers"):
        import_model(tmp_path / "mnist_3_softplus")
    torch.save(sd, tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="activation"):
        import_model(tmp_path / "weights.pt", dataset="mnist")
    with pytest.raises(CheckpointError, match="dataset"):
        import_model(tmp_path / "weights.pt", activation="softplus")
    with pytest.raises(CheckpointError, match="swish"):
        import_model(tmp_path / "weights.pt", activation="swish", dataset="mnist")
    with pytest.raises(CheckpointError, match="not supported"):
        import_model(tmp_path / "weights.pt", activation="softplus", dataset="cifar10")


# ----------------------------------------------------------------------------------------------------------------
# Refusals: a clear message, nothing executed, nothing written
# ----------------------------------------------------------------------------------------------------------------
def write_forged_zip(path: Path, numel: int, shape: tuple[int, ...], stride: tuple[int, ...], record: int) -> None:
    """A torch-style zip whose pickle claims a storage of ``numel`` floats while its record holds ``record`` bytes."""
    storage = object()

    class Tensor:
        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, (storage, 0, shape, stride, False, collections.OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", numel) if obj is storage else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"fc1.weight": Tensor()})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        zf.writestr("archive/data/0", b"\0" * record)
        zf.writestr("archive/version", b"3\n")
        zf.writestr("archive/byteorder", b"little")


class Payload:
    """Unpickling this runs a shell command (what a malicious checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def bad_state_dict(kind: str) -> dict[str, torch.Tensor]:
    sd = official_state_dict([784, 16, 10])
    if kind == "cnn":
        net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Softplus(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
        return net.state_dict()
    if kind == "no-chain":
        sd["fc2.weight"] = torch.randn(10, 17)
    elif kind == "no-bias":
        del sd["fc2.bias"]
    elif kind == "input-size":
        sd = official_state_dict([100, 16, 10])
    elif kind == "classes":
        sd = official_state_dict([784, 16, 5])
    elif kind == "batchnorm":
        sd["bn1.running_mean"] = torch.zeros(16)
    elif kind == "one-layer":
        sd = {"fc1.weight": torch.randn(10, 784), "fc1.bias": torch.randn(10)}
    elif kind == "nan":
        sd["fc1.weight"][0, 0] = float("nan")
    return sd


REFUSED_DICTS = {
    "cnn": "CNN", "no-chain": "do not chain", "no-bias": "no bias", "input-size": "100 inputs",
    "classes": "5 outputs", "batchnorm": "not a weight or a bias", "one-layer": "at least 2", "nan": "NaN",
}


def assert_refused(src: Path, tmp_path: Path, match: str, **kwargs) -> None:
    """import_checkpoint refuses with ``match`` in the message and writes nothing."""
    out_dir = tmp_path / "out"
    with pytest.raises(CheckpointError, match=match):
        import_checkpoint(src, out_dir / "model.pt", **kwargs)
    assert not out_dir.exists() or not any(out_dir.iterdir())


@pytest.mark.parametrize("kind", sorted(REFUSED_DICTS))
def test_state_dicts_that_are_not_an_mlp_for_the_dataset_are_refused(tmp_path: Path, kind: str) -> None:
    src = tmp_path / "model.pt"
    torch.save(bad_state_dict(kind), src)
    assert_refused(src, tmp_path, REFUSED_DICTS[kind], activation="softplus", dataset="mnist")


def test_a_pickle_carrying_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    src = tmp_path / OFFICIAL
    torch.save({**official_state_dict([784, 16, 10]), "hook": Payload(marker)}, src)
    assert_refused(src, tmp_path, r"system.*Nothing in it was executed")
    torch.save(nn.Sequential(nn.Linear(784, 16), nn.Softplus(), nn.Linear(16, 10)), src)  # a whole pickled model
    assert_refused(src, tmp_path, "torch.nn.modules")
    assert not marker.exists()


def claim_record_size(path: Path, record: str, size: int) -> None:
    """Patch the zip's central directory so ``record`` claims ``size`` uncompressed bytes (< 4 GiB)."""
    data = bytearray(path.read_bytes())
    at = data.index(b"PK\x01\x02")  # the first central directory header
    while True:
        name_len = int.from_bytes(data[at + 28:at + 30], "little")
        if data[at + 46:at + 46 + name_len] == record.encode():
            data[at + 24:at + 28] = size.to_bytes(4, "little")
            break
        extra_len, comment_len = (int.from_bytes(data[at + o:at + o + 2], "little") for o in (30, 32))
        at = data.index(b"PK\x01\x02", at + 46 + name_len + extra_len + comment_len)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("forge", ["zip-storage", "zip-view", "zip-record", "legacy"])
def test_a_header_claiming_a_10gb_tensor_is_refused_before_loading(tmp_path: Path, monkeypatch, forge) -> None:
    src = tmp_path / "huge.pt"
    big = 50_000  # 50000 x 50000 float32 = 10 GB
    if forge == "zip-storage":
        write_forged_zip(src, big * big, (big, big), (big, 1), record=64)
        match = "declares 10,000,000,000 bytes but its record holds 64"
    elif forge == "zip-view":  # a small storage viewed with zero strides as a 10 GB tensor
        write_forged_zip(src, 16, (big, big), (0, 0), record=64)
        match = f"more than the import limit of {MAX_IMPORT_BYTES:,}"
    elif forge == "zip-record":  # the archive's directory says the record holds 4 GB
        write_forged_zip(src, 16, (4, 4), (4, 1), record=64)
        claim_record_size(src, "archive/data/0", 0xFFFF0000)
        match = "claiming more than"
    else:
        src.write_bytes(hostile_files.legacy_claim(big * big))
        match = "declare 10,000,000,000 bytes, more than the file's"

    real_load = torch.load

    def no_load(*args, **kwargs):  # the gate's structural read (meta / fake storages, no bytes) is allowed
        if kwargs.get("map_location") == "meta" or torch._guards.active_fake_mode() is not None:
            return real_load(*args, **kwargs)
        raise AssertionError("torch.load read the tensors of a forged file")

    monkeypatch.setattr(torch, "load", no_load)
    assert_refused(src, tmp_path, match, activation="softplus", dataset="mnist")


def test_files_of_other_formats_are_refused_by_name(tmp_path: Path) -> None:
    png = tmp_path / "digit.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    npy = tmp_path / "weights.npy"
    np.save(npy, np.zeros((3, 3)))
    text = tmp_path / "notes.pt"
    text.write_text("fc1.weight = [[0.1, 0.2]]\n")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    plain_pickle = tmp_path / "plain.pkl"
    plain_pickle.write_bytes(pickle.dumps({"fc1.weight": [1.0]}, protocol=4))
    truncated = tmp_path / OFFICIAL
    torch.save(official_state_dict([784, 16, 10]), truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    cases = {png: "PNG image", npy: "NumPy", text: "text file", empty: "empty",
             plain_pickle: "not one written by torch", truncated: "corrupt or truncated|not a readable zip",
             tmp_path / "missing.pt": "not found"}
    for src, match in cases.items():
        assert_refused(src, tmp_path, match, activation="softplus", dataset="mnist")


def test_our_own_checkpoint_and_existing_outputs_are_refused(tmp_path: Path) -> None:
    ours = save_checkpoint(tmp_path / "ours.pt", MLP(784, [8], 10))
    assert_refused(ours, tmp_path, "already a CRC Explorer checkpoint", activation="softplus", dataset="mnist")
    src = tmp_path / OFFICIAL
    torch.save(official_state_dict([784, 16, 10]), src)
    with pytest.raises(CheckpointError, match="is the file being imported"):
        import_checkpoint(src, src, overwrite=True)
    (tmp_path / "taken.pt").write_bytes(b"keep")
    with pytest.raises(CheckpointError, match="already exists"):
        import_checkpoint(src, tmp_path / "taken.pt")
    assert (tmp_path / "taken.pt").read_bytes() == b"keep"


# ----------------------------------------------------------------------------------------------------------------
# Certificates: an imported model certifies exactly like the same weights built by hand
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("depth", "activation"), [(2, "softplus"), (3, "sigmoid"), (4, "tanh")])
def test_imported_certificates_match_the_same_weights_built_by_hand(tmp_path: Path, depth, activation) -> None:
    sd = official_state_dict([784, *[16] * (depth - 1), 10], seed=10 + depth)
    src = tmp_path / f"mnist_{depth}_{activation}_L2_1.58_EIGEN_0.005"
    torch.save(sd, src)
    imported, _ = load_checkpoint(import_checkpoint(src, tmp_path / "ours.pt").path)
    x = torch.rand(3, 784, generator=torch.Generator().manual_seed(depth))
    got, want = certify(imported, x), certify(by_hand(sd, activation), x)
    assert torch.equal(got.pred, want.pred)
    assert torch.equal(got.radius, want.radius) and bool((want.radius > 0).any())
    # The comparison can fail: a model whose weights were perturbed certifies differently.
    perturbed = by_hand({k: v * 1.01 for k, v in sd.items()}, activation)
    assert not torch.equal(certify(perturbed, x).radius, want.radius)


# ----------------------------------------------------------------------------------------------------------------
# MNIST end to end (the real MNIST test set in ../shared/data/mnist)
# ----------------------------------------------------------------------------------------------------------------
MNIST_DIR = shared_mnist_dir()
needs_mnist = pytest.mark.skipif(
    MNIST_DIR is None, reason="the real MNIST test set (../shared/data/mnist, IDX files) is not present here")


@needs_mnist
def test_mnist_idx_files_are_found_by_root_and_by_crc_data_dir(monkeypatch) -> None:
    by_root = load_dataset("mnist", "test", root=MNIST_DIR, limit=5)
    monkeypatch.setenv("CRC_DATA_DIR", str(MNIST_DIR))
    by_env = load_dataset("mnist", "test", limit=5)
    assert by_root.in_dim == 784 and by_root.n_classes == 10
    assert torch.equal(by_root.images, by_env.images) and torch.equal(by_root.labels, by_env.labels)


@needs_mnist
def test_mnist_end_to_end_official_file_to_certificates(tmp_path: Path) -> None:
    ds = load_dataset("mnist", "test", root=MNIST_DIR, limit=1200)
    x_train, y_train, x_test, y_test = ds.images[:1000], ds.labels[:1000], ds.images[1000:], ds.labels[1000:]
    torch.manual_seed(0)  # a net in the official layout (fc1, fc2), trained briefly on real MNIST images
    net = nn.ModuleDict({"fc1": nn.Linear(784, 32), "fc2": nn.Linear(32, 10)})
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for step in range(150):
        idx = torch.arange(step * 100, step * 100 + 100) % 1000
        loss = F.cross_entropy(net["fc2"](F.softplus(net["fc1"](x_train[idx]))), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    src = tmp_path / OFFICIAL
    torch.save(net.state_dict(), src)
    result = import_checkpoint(src, tmp_path / "mnist_model.pt")
    model, meta = load_checkpoint(result.path)
    assert meta["dataset"] == "mnist" and model.describe() == "2x[32] softplus"
    with torch.no_grad():
        assert torch.equal(model(x_test), net["fc2"](F.softplus(net["fc1"](x_test))))
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy > 0.75, accuracy
    cert = certify(model, x_test[:6], y_test[:6])
    assert bool(cert.correct.any())
    assert bool((cert.radius[cert.correct] > 0).all()) and bool(torch.isfinite(cert.radius).all())
