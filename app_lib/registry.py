"""Where the app's models come from, without Streamlit (so it is testable on its own).

Four sources, one id scheme:
- ``shipped:<file>``  checkpoints in ``$CRC_MODELS_DIR`` (default ``assets/models``), read-only;
- ``trained:<file>``  checkpoints written by the Train page into ``$CRC_RUNS_DIR`` (default ``runs/``, gitignored);
- ``imported:<file>`` foreign files (the paper's official checkpoints, any PyTorch MLP state dict) uploaded on the
  Home page, converted by :func:`crc_core.importers.import_model` into ``<runs>/imported`` (:func:`import_upload`);
- ``uploaded:<sha>``  a CRC Explorer checkpoint uploaded in the browser, kept in the session only.
Every file is read with :func:`crc_core.checkpoints.load_checkpoint` (weights only; tampered files refused); an
upload is first scanned without running anything (:func:`crc_core.importers.scan_torch_file`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from crc_core.activations import CURVATURE_ACTIVATIONS
from crc_core.checkpoints import load_checkpoint, read_metadata, save_checkpoint
from crc_core.data import Dataset
from crc_core.errors import CheckpointError, UnsupportedActivationError
from crc_core.importers import (
    DATASET_SHAPES,
    IMPORTED_KIND,
    ForeignModel,
    import_model,
    inspect_foreign,
    scan_torch_file,
)
from crc_core.models import MLP, format_architecture
from crc_core.safe_load import sniff

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_ENV = "CRC_MODELS_DIR"
RUNS_ENV = "CRC_RUNS_DIR"


def shipped_dir() -> Path:
    """Folder of shipped models: ``$CRC_MODELS_DIR`` or ``assets/models``."""
    env = os.environ.get(MODELS_ENV)
    return Path(env).expanduser() if env else REPO_ROOT / "assets" / "models"


def runs_dir() -> Path:
    """Folder where the Train page saves models: ``$CRC_RUNS_DIR`` or ``runs/``."""
    env = os.environ.get(RUNS_ENV)
    return Path(env).expanduser() if env else REPO_ROOT / "runs"


def imported_dir() -> Path:
    """Folder where imported (foreign) models are saved: ``<runs_dir>/imported``."""
    return runs_dir() / "imported"


@dataclass(frozen=True)
class ModelRef:
    """A pickable model. ``key`` changes whenever the weights may have changed (used as a cache key)."""

    id: str
    source: str
    path: Path | None
    key: str

    @property
    def name(self) -> str:
        return self.path.stem if self.path is not None else self.id.split(":", 1)[1]


def list_files(folder: Path, source: str) -> list[ModelRef]:
    """Checkpoints ``*.pt`` in ``folder`` (sorted by name; newest first for trained models)."""
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.glob("*.pt") if p.is_file() and not p.name.startswith("."))
    if source == "trained":
        files.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
    return [file_ref(p, source) for p in files]


def file_ref(path: Path, source: str) -> ModelRef:
    """The catalogue entry of a checkpoint file (its key changes with the file's time stamp and size)."""
    st = path.stat()
    return ModelRef(f"{source}:{path.name}", source, path, f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}")


def discover() -> list[ModelRef]:
    """Trained (newest first), imported, then shipped models on disk."""
    return (list_files(runs_dir(), "trained") + list_files(imported_dir(), "imported")
            + list_files(shipped_dir(), "shipped"))


# ------------------------------------------------------------------------------------------------ descriptions
def training_kind(meta: Mapping[str, Any]) -> str:
    """"standard" | "gamma" | "crt" | "pgd" | "trades" | "imported" | "unknown" from a checkpoint's metadata
    (tolerant of older layouts). "imported": not trained here; what its file name says is ``meta["trained_kind"]``
    (:func:`kind_text`)."""
    cfg = meta.get("train_config") or meta.get("config") or {}
    kind = meta.get("kind") or (cfg.get("kind") if isinstance(cfg, Mapping) else None)
    if kind in ("standard", "gamma", "crt", "pgd", "trades", IMPORTED_KIND):
        return str(kind)
    if meta.get("crt_eps"):
        return "crt"
    if meta.get("gamma"):
        return "gamma"
    if meta.get("gamma") == 0:
        return "standard"
    return "unknown"


def arch_text(arch: Mapping[str, Any]) -> str:
    """e.g. ``"2x[256] softplus"`` (crc_core's one architecture format)."""
    return format_architecture(list(arch.get("widths", [])), str(arch.get("activation", "?")))


def kind_text(meta: Mapping[str, Any]) -> str:
    """How the model was trained, in a few words: ``"CRT γ=0.01 ε=0.5"``, ``"standard"``; for an imported model
    ``"imported · CRT γ=0.005 ε=1.58 (from file name)"`` or ``"imported · training unknown"``."""
    kind = training_kind(meta)
    if kind == IMPORTED_KIND:
        said = meta.get("trained_kind")
        if said not in ("standard", "gamma", "crt"):
            return "imported · training unknown"
        return f"imported · {_training_text(str(said), meta)} (from file name)"
    return _training_text(kind, meta)


def _training_text(kind: str, meta: Mapping[str, Any]) -> str:
    g, eps = meta.get("gamma"), meta.get("crt_eps")
    if kind == "crt":
        return f"CRT γ={g:g} ε={eps:g}" if isinstance(g, (int, float)) and isinstance(eps, (int, float)) else "CRT"
    if kind == "gamma":
        return f"γ={g:g}" if isinstance(g, (int, float)) else "γ-regularized"
    if kind in ("pgd", "trades"):  # kind_settings of crc_core.train.TrainConfig: ε (and β for TRADES)
        ks = meta.get("kind_settings") or {}
        num = {k: v for k, v in ks.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        beta = f" β={num['beta']:g}" if kind == "trades" and "beta" in num else ""
        return f"{kind.upper()}{beta}" + (f" ε={num['eps']:g}" if "eps" in num else "")
    return {"standard": "standard"}.get(kind, "training unknown")


STAMP = re.compile(r"^(\d{8})-(\d{6})(?:-(.*))?$")  # save_trained's file names: <date>-<time>-<name>


def slug(text: str) -> str:
    """A file-name-safe form of ``text`` (at most 40 characters)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text.strip()).strip("-")[:40]


def describe(ref: ModelRef, meta: Mapping[str, Any], *, today: _dt.date | None = None) -> str:
    """One line for the picker, what tells models apart first.

    Shipped and uploaded: ``"crt-2x256 · 2x[256] softplus · CRT γ=0.01 ε=0.5 · acc 80% (shipped)"``. Imported:
    ``"mnist_2_softplus_L2_1.58_EIGEN_0.005 · 2x[1024] softplus · imported · CRT γ=0.005 ε=1.58 (from file name) ·
    mnist"`` (its dataset, since imported models come for either). Trained in
    the app (file names differ only by a time stamp): ``"CRT γ=0.01 ε=0.5 · 08:52:43 · acc 81% · 2x[256] softplus
    (trained)"`` (the date too when not today; the name given on the Train page, if any, after the time): the
    sidebar shows only the start of a label, so what tells runs apart comes first. ``today``: the clock's date
    (default: the real one).
    """
    arch = meta.get("architecture") or {}
    acc = (meta.get("metrics") or {}).get("test_accuracy")
    acc_txt = f" · acc {acc:.0%}" if isinstance(acc, (int, float)) else ""
    stamp = trained_stamp(ref, meta, today=today)
    if training_kind(meta) == IMPORTED_KIND:
        return f"{ref.name} · {arch_text(arch)} · {kind_text(meta)} · {meta.get('dataset') or '?'}{acc_txt}"
    if stamp is None:
        return f"{ref.name} · {arch_text(arch)} · {kind_text(meta)}{acc_txt} ({ref.source})"
    return f"{kind_text(meta)} · {stamp}{acc_txt} · {arch_text(arch)} (trained)"


def trained_stamp(ref: ModelRef, meta: Mapping[str, Any], *, today: _dt.date | None = None) -> str | None:
    """For a model saved by the Train page: when it was saved, ``"08:52:43"`` (``"Nov 30 08:52"`` on any other day
    than ``today``, default the real clock's), plus the name given on the page, if any (None for other models)."""
    stamp = STAMP.match(ref.name) if ref.source == "trained" else None
    if stamp is None:
        return None
    at = _dt.datetime.strptime(stamp[1] + stamp[2], "%Y%m%d%H%M%S")
    when = at.strftime("%H:%M:%S" if at.date() == (today or _dt.date.today()) else "%b %d %H:%M")
    name = stamp[3] or ""
    given = f" · {name}" if name and name != slug(str(meta.get("label") or "")) and name != "model" else ""
    return f"{when}{given}"


# ------------------------------------------------------------------------------------------------ loading
def load(ref: ModelRef) -> tuple[MLP, dict[str, Any]]:
    """Load a file-backed model (CPU, eval mode). Raises CheckpointError with a readable message."""
    if ref.path is None:
        raise CheckpointError(f"Model {ref.id} has no file (uploaded models live in the session).")
    return load_checkpoint(ref.path, map_location="cpu")


def check_usable(model: MLP, *, allow_relu: bool = False) -> None:
    """Raise a readable CRCError unless the app can work with ``model`` (28×28 inputs, smooth activation, or ReLU
    with ``allow_relu``: the pages without curvature and the App. G certificate of 2-layer ReLU nets)."""
    try:
        if not (allow_relu and model.activation_name == "relu"):
            _ = model.activation
    except UnsupportedActivationError as exc:
        raise UnsupportedActivationError(
            f"This checkpoint uses the {model.activation_name!r} activation. Curvature certificates need a smooth "
            "activation with a bounded second derivative (softplus, sigmoid or tanh); ReLU's curvature is "
            f"unbounded at 0. ({exc})"
        ) from None
    if model.in_dim != 784:
        raise CheckpointError(
            f"This model expects {model.in_dim} inputs per image; the app works with 28×28 = 784-pixel images."
        )


_TORCH_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # zip, or a legacy pickle


@dataclass(frozen=True)
class ForeignUpload:
    """An uploaded file that is not a CRC Explorer checkpoint but holds a chain of Linear layers: ``foreign`` is what
    :func:`crc_core.importers.inspect_foreign` recognised (its ``path`` no longer exists); import with
    :func:`import_upload`."""

    filename: str
    data: bytes = field(repr=False)
    foreign: ForeignModel

    @property
    def sha256(self) -> str:
        return self.foreign.scan.sha256


def open_upload(data: bytes, filename: str) -> tuple[ModelRef, MLP, dict[str, Any]] | ForeignUpload:
    """Read an uploaded file: our checkpoint -> (ref, model, metadata); a foreign MLP file (the paper's official
    checkpoints, a state dict of any naming) -> :class:`ForeignUpload`. Anything else raises CheckpointError in one
    plain sentence naming the file as uploaded (never the temporary path).

    Nothing in the file runs: it is first scanned by :func:`crc_core.importers.scan_torch_file` (code, oversized
    declarations and other formats are refused before any tensor is allocated), then read with weights_only.
    """
    _check_upload_bytes(data, filename)
    with _upload_path(data, filename) as path:
        try:
            scan_torch_file(path)
            model, meta = load_checkpoint(path, map_location="cpu")
        except CheckpointError as exc:
            if not str(exc).startswith(f"{path} is not a CRC Explorer checkpoint"):
                raise CheckpointError(_plain(str(exc), str(path), filename)) from None
            try:
                foreign = inspect_foreign(path)
            except CheckpointError as exc2:
                raise CheckpointError(_plain(str(exc2), str(path), filename)) from None
            if (foreign.in_dim, foreign.n_classes) not in DATASET_SHAPES.values():
                raise CheckpointError(
                    f"{filename!r} holds a network with {foreign.in_dim} inputs and {foreign.n_classes} outputs "
                    f"({foreign.describe()}), but the app's images have 28×28 = 784 pixels and 10 classes.") from None
            return ForeignUpload(filename, data, foreign)
    check_usable(model)
    sha = hashlib.sha256(data).hexdigest()[:12]
    stem = slug(Path(filename).stem) or "upload"
    return ModelRef(f"uploaded:{stem}-{sha}", "uploaded", None, f"upload|{sha}"), model, meta


def import_upload(upload: ForeignUpload, *, activation: str, dataset: str, name: str = "",
                  test_set: Dataset | None = None) -> tuple[ModelRef, bool]:
    """Import a foreign upload (:func:`crc_core.importers.import_model`) into :func:`imported_dir` -> (its catalogue
    entry, True when written now). With ``test_set`` (images of the chosen dataset) the record's metrics get the
    accuracy on all its images: a wrong activation or dataset shows as a low accuracy.
    The same file imported before with the same activation and dataset is not written twice: that model's entry
    comes back with False. Raises CheckpointError (nothing written) when the weights do not fit the dataset, or
    UnsupportedActivationError for an activation without a curvature bound."""
    if activation not in CURVATURE_ACTIVATIONS:
        raise UnsupportedActivationError(f"{activation!r} has no curvature bound; choose one of "
                                         f"{', '.join(CURVATURE_ACTIVATIONS)}.")
    folder = imported_dir()
    for ref in list_files(folder, "imported"):
        try:
            meta = read_metadata(ref.path)  # type: ignore[arg-type]
        except CheckpointError:
            continue
        src, arch = meta.get("source") or {}, meta.get("architecture") or {}
        if (src.get("sha256") == upload.sha256 and arch.get("activation") == activation
                and meta.get("dataset") == dataset):
            return ref, False
    with _upload_path(upload.data, upload.filename) as path:
        try:
            model, meta = import_model(path, activation=activation, dataset=dataset, name=name.strip() or None)
        except CheckpointError as exc:
            raise CheckpointError(_plain(str(exc), str(path), upload.filename)) from None
    meta["command"] = "CRC Explorer app: checkpoint upload on the Home page"
    if test_set is not None:  # every test image: a forward pass of 10,000 images takes well under a second
        meta["metrics"] = {"test_accuracy": round(accuracy_on(model, test_set), 6), "test_images": len(test_set),
                           "test_dataset": test_set.name}
    out = _unique_path(folder, slug(name) or slug(upload_stem(upload.filename)) or "imported")
    return file_ref(save_checkpoint(out, model, meta), "imported"), True


def accuracy_by_activation(upload: ForeignUpload, dataset: str, test_set: Dataset) -> dict[str, float]:
    """activation -> accuracy on every image of ``test_set`` of the upload's weights with that activation (each
    one with a curvature bound): the weights are the same, so a much better sibling means the choice is wrong.
    Nothing is written. Raises CheckpointError when the weights do not fit ``dataset``."""
    out: dict[str, float] = {}
    with _upload_path(upload.data, upload.filename) as path:
        for act in CURVATURE_ACTIVATIONS:
            try:
                model, _meta = import_model(path, activation=act, dataset=dataset)
            except CheckpointError as exc:
                raise CheckpointError(_plain(str(exc), str(path), upload.filename)) from None
            out[act] = accuracy_on(model, test_set)
    return out


def accuracy_on(model: MLP, ds: Dataset) -> float:
    """Share of ``ds``'s images the model classifies correctly (CPU, no gradients)."""
    with torch.no_grad():
        return float((model(ds.images).argmax(1) == ds.labels).float().mean())


_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"\x93NUMPY")  # PNG, JPEG, GIF, BMP, .npy


def _check_upload_bytes(data: bytes, filename: str) -> None:
    if not data:
        raise CheckpointError(f"{filename!r}: the uploaded file is empty.")
    if data.startswith(_IMAGE_MAGIC) or data[8:12] == b"WEBP":
        raise CheckpointError(f"{filename!r} is a picture, not a model checkpoint: to certify an image, upload it on "
                              "the Certify page (section 1, 'Upload your own image').")
    if not data.startswith(_TORCH_MAGIC) and not _is_safetensors(data):
        raise CheckpointError(f"{filename!r} is not a readable PyTorch file: it is neither the zip archive nor the "
                              "pickle that torch.save writes, nor a safetensors file (a text file or another format?).")


def _is_safetensors(data: bytes) -> bool:
    """The upload starts like a safetensors file (the loading gate checks the rest)."""
    try:
        return sniff(data[:4096], "upload") == "safetensors"
    except CheckpointError:
        return False


def upload_stem(filename: str) -> str:
    """The upload's name without a model extension (``mnist_2_softplus_L2_1.58_EIGEN_0.005`` keeps its ``.005``)."""
    base = Path(filename).name
    return re.sub(r"\.(pt|pth|ckpt|pkl|bin|tar|safetensors)$", "", base, flags=re.IGNORECASE)


@contextlib.contextmanager
def _upload_path(data: bytes, filename: str) -> Iterator[Path]:
    """The upload written to a temporary file under its own (sanitized) name: an official name gives the defaults
    (:func:`crc_core.importers.parse_official_name`). Removed afterwards."""
    safe = re.sub(r"[^A-Za-z0-9_.+-]+", "_", Path(filename).name).lstrip(".")[:120] or "upload.pt"
    with tempfile.TemporaryDirectory(prefix="crc-upload-") as tmp:
        path = Path(tmp) / safe
        path.write_bytes(data)
        yield path


def _unique_path(folder: Path, stem: str) -> Path:
    path, i = folder / f"{stem}.pt", 1
    while path.exists():
        path, i = folder / f"{stem}-{i}.pt", i + 1
    return path


_CODE_REFUSAL = re.compile(r"^Refused (?P<path>.+?): the pickle refers to (?P<what>\S+), which")


def _plain(msg: str, path: str, filename: str) -> str:
    """A checkpoint loader's message about ``path`` -> one about the uploaded ``filename``, without internals."""
    if msg.startswith(f"Refused to load {path}:"):
        return (f"{filename!r} contains code or objects other than tensors, so it was not opened (nothing in it was "
                "run). A CRC Explorer checkpoint holds only tensors and text.")
    code = _CODE_REFUSAL.match(msg)
    if code and code["path"] == path:
        return (f"{filename!r} contains code or objects other than tensors: it refers to {code['what']}, so it could "
                "carry code (nothing in it was run; save and upload model.state_dict() instead).")
    if msg.startswith(f"Refused {path}: "):  # the scan's other refusals: oversized or forged declarations
        return f"{filename!r} was refused unopened (nothing in it was run or allocated): {msg[len(path) + 10:]}"
    if msg.startswith(f"{path} is a Python pickle but not one written by torch.save"):
        return (f"{filename!r} is a Python pickle but not one written by torch.save: it contains code or objects "
                "other than tensors, so it was not opened (nothing in it was run).")
    if msg.startswith(f"{path} is not a readable PyTorch file"):
        return f"{filename!r} is not a readable PyTorch file: it is corrupt or truncated."
    if msg.startswith(f"{path} is corrupt or truncated"):
        return f"{filename!r} is corrupt or truncated."
    return msg.replace(path, repr(filename))


def save_trained(model: MLP, metadata: Mapping[str, Any], name: str | None = None) -> Path:
    """Save a model trained in the app into :func:`runs_dir` under a unique, readable file name."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    tail = slug(name or "") or "model"
    folder = runs_dir()
    path = folder / f"{stamp}-{tail}.pt"
    i = 1
    while path.exists():
        path = folder / f"{stamp}-{tail}-{i}.pt"
        i += 1
    return save_checkpoint(path, model, dict(metadata))
