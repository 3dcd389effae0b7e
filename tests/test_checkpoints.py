"""crc_core.checkpoints: round trip, atomic writes, and refusal of malicious / corrupt / foreign files."""

from __future__ import annotations

import json
import os
import pickle
import time
import zipfile
from pathlib import Path

import pytest
import torch

from crc_core import checkpoints
from crc_core.checkpoints import (
    FORMAT_TAG,
    load_checkpoint,
    load_state_dict_file,
    read_metadata,
    save_checkpoint,
)
from crc_core.errors import CheckpointError, CRCError
from crc_core.models import MLP


def _model(widths: tuple[int, ...] = (16, 8), activation: str = "softplus", seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(784, list(widths), 10, activation)


def _meta() -> dict:
    return {
        "dataset": "embedded",
        "gamma": 0.01,
        "crt_eps": 0.5,
        "epochs": 3,
        "metrics": {"clean_acc": 0.81, "certified_acc": 0.42},
        "command": "python -m crc_core train --epochs 3",
    }


def _same_weights(a: MLP, b: MLP) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("activation", ["softplus", "tanh", "sigmoid", "relu"])
def test_round_trip(tmp_path: Path, activation: str) -> None:
    model = _model(activation=activation)
    path = save_checkpoint(tmp_path / "sub" / "m.pt", model, _meta())
    assert path == tmp_path / "sub" / "m.pt" and path.is_file()
    loaded, meta = load_checkpoint(path)
    assert isinstance(loaded, MLP) and not loaded.training
    assert loaded.config() == model.config()
    assert _same_weights(loaded, model)
    x = torch.rand(3, 784)
    assert torch.equal(loaded(x), model.eval()(x))
    assert meta["architecture"] == model.config()
    for key in ("dataset", "gamma", "crt_eps", "epochs", "metrics", "command", "created", "crc_core_version"):
        assert key in meta
    assert meta["metrics"]["certified_acc"] == 0.42 and meta["gamma"] == 0.01
    assert meta["created"][:4].isdigit() and "T" in meta["created"]
    assert read_metadata(path) == meta
    # human-readable sidecar, same metadata
    sidecar = tmp_path / "sub" / "m.pt.json"
    assert json.loads(sidecar.read_text()) == meta
    # no temp files left behind
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.pt", "m.pt.json"]


def test_metadata_defaults_and_numpy_values(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    path = save_checkpoint(
        tmp_path / "m.pt", _model(), {"metrics": {"acc": np.float32(0.5)}, "note": Path("x")}
    )
    meta = read_metadata(path)
    assert meta["dataset"] is None and meta["epochs"] is None and meta["metrics"] == {"acc": 0.5}
    assert meta["note"] == "x"
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(tmp_path / "bad.pt", _model(), {"metrics": object()})
    assert not (tmp_path / "bad.pt").exists()


def test_load_on_device_of_tensors(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", _model(), _meta())
    model, _ = load_checkpoint(path, map_location="cpu")
    assert all(p.device.type == "cpu" for p in model.parameters())
    if not torch.cuda.is_available():
        with pytest.raises(CheckpointError, match="CUDA"):
            load_checkpoint(path, map_location="cuda")


def test_refuses_to_save_nan_model(tmp_path: Path) -> None:
    model = _model()
    with torch.no_grad():
        model.layers[0].weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN"):
        save_checkpoint(tmp_path / "m.pt", model, _meta())
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------- atomic write
def test_failed_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "m.pt", _model(seed=1), _meta())
    before = path.read_bytes()

    def save_half_then_crash(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial data")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(checkpoints.torch, "save", save_half_then_crash)
    with pytest.raises(CheckpointError, match="disk full"):
        save_checkpoint(path, _model(seed=2), _meta())
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.pt.json"]  # temp file cleaned up
    model, _ = load_checkpoint(path)
    assert _same_weights(model, _model(seed=1))


def test_interrupted_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A KeyboardInterrupt (e.g. a stop button) between write and rename also leaves the old file."""
    path = save_checkpoint(tmp_path / "m.pt", _model(seed=1), _meta())
    before = path.read_bytes()

    def interrupted_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _model(seed=2), _meta())
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.pt.json"]


def test_stale_temp_files_of_killed_saves_are_removed(tmp_path: Path) -> None:
    """A save killed mid-write (SIGKILL: no cleanup runs) leaves a temp file; the next save of that path removes
    it once it is stale, and leaves fresh temp files (a save in progress), other models' files and links alone."""
    path = save_checkpoint(tmp_path / "m.pt", _model(seed=1), _meta())
    old = time.time() - checkpoints.STALE_TEMP_SECONDS - 60
    stale = [tmp_path / ".m.pt.abc123.tmp", tmp_path / ".m.pt.json.def456.tmp"]
    fresh = tmp_path / ".m.pt.zzz999.tmp"
    other = tmp_path / ".other.pt.abc123.tmp"
    keep_names = ["notes.tmp", ".m.pt.keep"]
    for p in [*stale, fresh, other, *(tmp_path / n for n in keep_names)]:
        p.write_bytes(b"partial")
    target = tmp_path / "outside.bin"
    target.write_bytes(b"not ours")
    link = tmp_path / ".m.pt.link.tmp"
    link.symlink_to(target)
    for p in [*stale, other, *(tmp_path / n for n in keep_names)]:
        os.utime(p, (old, old))
    now = time.time()  # fresh by this process's clock, not the file system's (the two differ under faketime)
    os.utime(fresh, (now, now))
    os.utime(link, (old, old), follow_symlinks=False)

    save_checkpoint(path, _model(seed=2), _meta())
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and other.exists() and link.is_symlink() and target.read_bytes() == b"not ours"
    assert all((tmp_path / n).exists() for n in keep_names)
    model, _ = load_checkpoint(path)
    assert _same_weights(model, _model(seed=2))


# ------------------------------------------------------------------------------------------ hostile / bad files
class _Evil:
    """Unpickling this object would create the file ``target``."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    payload = {
        "format": FORMAT_TAG,
        "version": 1,
        "state_dict": {},
        "metadata_json": "{}",
        "x": _Evil(marker),
    }
    if writer == "torch":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="Refused"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        load_state_dict_file(path, _model().config())
    assert not marker.exists(), "loading executed code from the file"


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_file(tmp_path: Path, fraction: float) -> None:
    path = save_checkpoint(tmp_path / "m.pt", _model(), _meta())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "junk.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "text.pt")


def _rewrite_payload(path: Path, edit) -> None:
    """Load our payload (trusted, in the test), edit it, save it again without fixing the digest."""
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)


def test_tampered_weights_detected(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", _model(), _meta())

    def edit(p):
        p["state_dict"]["layers.0.weight"][0, 0] += 1.0

    _rewrite_payload(path, edit)
    with pytest.raises(CheckpointError, match="digest"):
        load_checkpoint(path)


def test_tampered_metadata_detected(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", _model(), _meta())

    def edit(p):
        p["metadata_json"] = p["metadata_json"].replace("0.42", "0.99")

    _rewrite_payload(path, edit)
    with pytest.raises(CheckpointError, match="digest"):
        load_checkpoint(path)


def test_flipped_bytes_in_tensor_data(tmp_path: Path) -> None:
    """Editing the raw bytes of a stored tensor inside the zip is detected (by torch's CRC or our digest)."""
    path = save_checkpoint(tmp_path / "m.pt", _model(), _meta())
    with zipfile.ZipFile(path) as zf:
        name = max(zf.namelist(), key=lambda n: zf.getinfo(n).file_size)  # the biggest tensor
        info = zf.getinfo(name)
    raw = bytearray(path.read_bytes())
    offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 100
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_wrong_format_and_version(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a CRC Explorer checkpoint"):
        load_checkpoint(path)
    save_checkpoint(path, _model(), _meta())
    _rewrite_payload(path, lambda p: p.update(version=2))
    with pytest.raises(CheckpointError, match="version 2"):
        load_checkpoint(path)


def test_other_architecture_refused(tmp_path: Path) -> None:
    """Metadata that claims one architecture for weights of another is refused (shape check before the digest)."""
    path = save_checkpoint(tmp_path / "m.pt", _model(widths=(16, 8)), _meta())

    def edit(p):
        meta = json.loads(p["metadata_json"])
        meta["architecture"]["widths"] = [32, 8]
        p["metadata_json"] = json.dumps(meta)

    _rewrite_payload(path, edit)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_checkpoint(path)

    def huge(p):
        meta = json.loads(p["metadata_json"])
        meta["architecture"]["widths"] = [10**9]
        p["metadata_json"] = json.dumps(meta)

    _rewrite_payload(path, huge)  # nothing of that size may be allocated
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "bad_arch",
    [
        None,
        {"in_dim": 784, "widths": [16], "n_classes": 10},
        {"in_dim": "784", "widths": [16], "n_classes": 10, "activation": "softplus"},
        {"in_dim": 784, "widths": [], "n_classes": 10, "activation": "softplus"},
        {"in_dim": 784, "widths": [16], "n_classes": 10, "activation": "swish-9000"},
    ],
)
def test_bad_architecture_config(tmp_path: Path, bad_arch) -> None:
    path = save_checkpoint(tmp_path / "m.pt", _model(widths=(16,)), _meta())

    def edit(p):
        meta = json.loads(p["metadata_json"])
        meta["architecture"] = bad_arch
        p["metadata_json"] = json.dumps(meta)

    _rewrite_payload(path, edit)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_nan_weights_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", _model(), _meta())
    _rewrite_payload(path, lambda p: p["state_dict"]["layers.1.bias"].fill_(float("inf")))
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_checkpoint(path)


# --------------------------------------------------------------------------------------------- plain state_dict
def test_plain_state_dict(tmp_path: Path) -> None:
    model = _model(widths=(12,), activation="tanh")
    path = tmp_path / "sd.pt"
    torch.save(model.state_dict(), path)
    loaded = load_state_dict_file(path, model.config())
    assert loaded.config() == model.config() and _same_weights(loaded, model)
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "wrapped.pt")
    assert _same_weights(load_state_dict_file(tmp_path / "wrapped.pt", model.config()), model)


def test_plain_state_dict_refusals(tmp_path: Path) -> None:
    model = _model(widths=(12,))
    path = tmp_path / "sd.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_state_dict_file(path, {**model.config(), "widths": [13]})
    with pytest.raises(CheckpointError, match="missing"):
        load_state_dict_file(path, {**model.config(), "widths": [12, 12]})
    with pytest.raises(CheckpointError, match="lacks"):
        load_state_dict_file(path, {"in_dim": 784, "widths": [12]})
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["layers.0.weight"][1, 2] = float("nan")
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="NaN"):
        load_state_dict_file(path, model.config())
    ours = save_checkpoint(tmp_path / "ours.pt", model, _meta())
    with pytest.raises(CheckpointError, match="load_checkpoint"):
        load_state_dict_file(ours, model.config())


# ------------------------------------------------------------------------------------------------ run records
def test_format_architecture_is_the_one_format() -> None:
    from crc_core.models import architecture_slug, format_architecture
    from crc_core.train import TrainConfig

    assert format_architecture([256], "softplus") == "2x[256] softplus"
    assert format_architecture((1024, 1024), "tanh", in_dim=784, n_classes=10) == \
        "3x[1024,1024] tanh (784 inputs, 10 classes)"
    assert architecture_slug([1024, 1024], "tanh") == "3x1024-1024-tanh"
    assert MLP(784, [16, 8], 10, "sigmoid").describe() == format_architecture([16, 8], "sigmoid")
    assert TrainConfig(widths=(16, 8), activation="sigmoid", kind="standard").describe().startswith(
        "3x[16,8] sigmoid")


def _fake_result(n_steps: int, stopped: bool = False):
    from crc_core.train import TrainResult

    steps = [{"kind": "step", "step": i, "loss": 1.0 / (i + 1)} for i in range(1, n_steps + 1)]
    epochs = [{"kind": "epoch", "epoch": 1, "step": n_steps, "test_accuracy": 0.123456789}]
    metrics = {"epoch": 1, "test_accuracy": 0.123456789, "certified_accuracy": None}
    return TrainResult(MLP(784, [8], 10), [*steps, *epochs, {"kind": "done"}], metrics, stopped, 3.14159, n_steps)


def test_run_record_schema_and_thinning(tmp_path) -> None:
    from crc_core.checkpoints import HISTORY_STEPS, run_record
    from crc_core.train import TrainConfig

    cfg = TrainConfig(widths=(8,), kind="crt", gamma=0.02, crt_eps=0.3)
    res = _fake_result(HISTORY_STEPS * 3 + 7)
    rec = run_record(cfg, res, source="python -m crc_core train --kind crt", extra={"dry_run": False})
    assert set(rec) == {"dataset", "kind", "gamma", "crt_eps", "epochs", "label", "metrics", "command", "config",
                        "stopped", "train_seconds", "device", "torch_version", "history", "dry_run", "kind_settings"}
    assert rec["kind"] == "crt" and rec["gamma"] == 0.02 and rec["crt_eps"] == 0.3 and rec["epochs"] == 1
    assert rec["command"] == "python -m crc_core train --kind crt" and rec["label"] == cfg.describe()
    assert rec["metrics"]["test_accuracy"] == 0.123457 and rec["train_seconds"] == 3.14
    steps = rec["history"]["steps"]
    assert len(steps) == HISTORY_STEPS and steps[0]["step"] == 1 and steps[-1]["step"] == HISTORY_STEPS * 3 + 7
    assert all("kind" not in e for e in steps + rec["history"]["epochs"])
    # it is what save_checkpoint stores
    _, meta = load_checkpoint(save_checkpoint(tmp_path / "r.pt", res.model, rec))
    assert {k: meta[k] for k in rec} == rec


def test_run_record_standard_and_overrides() -> None:
    from crc_core.checkpoints import run_record
    from crc_core.train import TrainConfig

    cfg = TrainConfig(widths=(8,), kind="standard", gamma=0.5)
    rec = run_record(cfg, _fake_result(3, stopped=True), source="CRC Explorer app, Train page",
                     metrics={"epoch": None, "test_accuracy": 0.5})
    assert rec["gamma"] == 0.0 and rec["crt_eps"] is None and rec["stopped"]
    assert rec["metrics"] == {"epoch": None, "test_accuracy": 0.5}
    with pytest.raises(CRCError, match="replace"):
        run_record(cfg, _fake_result(3), source="x", extra={"kind": "other"})


def test_model_record_is_the_shared_part_of_every_record() -> None:
    from crc_core.checkpoints import model_record

    rec = model_record(dataset="mnist", kind="imported", label="2x[8] tanh", command=None,
                       metrics={"test_accuracy": 0.123456789}, extra={"source": {"file": "a"}})
    assert rec == {"dataset": "mnist", "kind": "imported", "gamma": None, "crt_eps": None, "epochs": None,
                   "label": "2x[8] tanh", "metrics": {"test_accuracy": 0.123457}, "command": None,
                   "torch_version": torch.__version__, "source": {"file": "a"}}
    with pytest.raises(CRCError, match="would replace"):
        model_record(dataset=None, kind="x", label="x", command=None, extra={"gamma": 1.0})
