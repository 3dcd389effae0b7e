"""Where the app's models come from, without Streamlit (so it is testable on its own).

Three sources, one id scheme:
- ``shipped:<file>``  checkpoints in ``$CRC_MODELS_DIR`` (default ``assets/models``), read-only;
- ``trained:<file>``  checkpoints written by the Train page into ``$CRC_RUNS_DIR`` (default ``runs/``, gitignored);
- ``uploaded:<sha>``  a checkpoint uploaded in the browser, kept in the session only.
Every file is read with :func:`crc_core.checkpoints.load_checkpoint` (weights only; tampered/foreign files refused).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crc_core.checkpoints import load_checkpoint, save_checkpoint
from crc_core.errors import CheckpointError, UnsupportedActivationError
from crc_core.models import MLP, format_architecture

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
    refs = []
    for p in files:
        st = p.stat()
        refs.append(ModelRef(f"{source}:{p.name}", source, p, f"{p.resolve()}|{st.st_mtime_ns}|{st.st_size}"))
    return refs


def discover() -> list[ModelRef]:
    """Trained (newest first) then shipped models on disk."""
    return list_files(runs_dir(), "trained") + list_files(shipped_dir(), "shipped")


# ------------------------------------------------------------------------------------------------ descriptions
def training_kind(meta: Mapping[str, Any]) -> str:
    """"standard" | "gamma" | "crt" | "unknown" from a checkpoint's metadata (tolerant of older layouts)."""
    cfg = meta.get("train_config") or meta.get("config") or {}
    kind = meta.get("kind") or (cfg.get("kind") if isinstance(cfg, Mapping) else None)
    if kind in ("standard", "gamma", "crt"):
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
    kind = training_kind(meta)
    g, eps = meta.get("gamma"), meta.get("crt_eps")
    if kind == "crt":
        return f"CRT γ={g:g} ε={eps:g}" if isinstance(g, (int, float)) and isinstance(eps, (int, float)) else "CRT"
    if kind == "gamma":
        return f"γ={g:g}" if isinstance(g, (int, float)) else "γ-regularized"
    return {"standard": "standard", "unknown": "training unknown"}[kind]


STAMP = re.compile(r"^(\d{8})-(\d{6})(?:-(.*))?$")  # save_trained's file names: <date>-<time>-<name>


def slug(text: str) -> str:
    """A file-name-safe form of ``text`` (at most 40 characters)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text.strip()).strip("-")[:40]


def describe(ref: ModelRef, meta: Mapping[str, Any]) -> str:
    """One line for the picker, what tells models apart first.

    Shipped and uploaded: ``"crt-2x256 · 2x[256] softplus · CRT γ=0.01 ε=0.5 · acc 80% (shipped)"``. Trained in
    the app (file names differ only by a time stamp): ``"CRT γ=0.01 ε=0.5 · 08:52:43 · acc 81% · 2x[256] softplus
    (trained)"`` (the date too when not today; the name given on the Train page, if any, after the time): the
    sidebar shows only the start of a label, so what tells runs apart comes first.
    """
    arch = meta.get("architecture") or {}
    acc = (meta.get("metrics") or {}).get("test_accuracy")
    acc_txt = f" · acc {acc:.0%}" if isinstance(acc, (int, float)) else ""
    stamp = trained_stamp(ref, meta)
    if stamp is None:
        return f"{ref.name} · {arch_text(arch)} · {kind_text(meta)}{acc_txt} ({ref.source})"
    return f"{kind_text(meta)} · {stamp}{acc_txt} · {arch_text(arch)} (trained)"


def trained_stamp(ref: ModelRef, meta: Mapping[str, Any]) -> str | None:
    """For a model saved by the Train page: when it was saved, ``"08:52:43"`` (``"Nov 30 08:52"`` before today),
    plus the name given on the page, if any (None for other models)."""
    stamp = STAMP.match(ref.name) if ref.source == "trained" else None
    if stamp is None:
        return None
    at = _dt.datetime.strptime(stamp[1] + stamp[2], "%Y%m%d%H%M%S")
    when = at.strftime("%H:%M:%S" if at.date() == _dt.date.today() else "%b %d %H:%M")
    name = stamp[3] or ""
    given = f" · {name}" if name and name != slug(str(meta.get("label") or "")) and name != "model" else ""
    return f"{when}{given}"


# ------------------------------------------------------------------------------------------------ loading
def load(ref: ModelRef) -> tuple[MLP, dict[str, Any]]:
    """Load a file-backed model (CPU, eval mode). Raises CheckpointError with a readable message."""
    if ref.path is None:
        raise CheckpointError(f"Model {ref.id} has no file (uploaded models live in the session).")
    return load_checkpoint(ref.path, map_location="cpu")


def check_usable(model: MLP) -> None:
    """Raise a readable CRCError unless the app can work with ``model`` (28×28 inputs, smooth activation)."""
    try:
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


def load_upload(data: bytes, filename: str) -> tuple[ModelRef, MLP, dict[str, Any]]:
    """Validate an uploaded checkpoint (bytes) -> (ref, model, metadata). Never executes code in the file.

    Messages name the file as uploaded (never the temporary path) and say what the file is in plain words.
    """
    if not data:
        raise CheckpointError(f"{filename}: the uploaded file is empty.")
    if not data.startswith(_TORCH_MAGIC):
        raise CheckpointError(f"{filename!r} is not a readable PyTorch file: it is neither the zip archive nor the "
                              "pickle that torch.save writes (a text file or another format?).")
    sha = hashlib.sha256(data).hexdigest()[:12]
    with tempfile.TemporaryDirectory(prefix="crc-upload-") as tmp:
        path = Path(tmp) / "upload.pt"
        path.write_bytes(data)
        try:
            model, meta = load_checkpoint(path, map_location="cpu")
        except CheckpointError as exc:
            raise CheckpointError(_plain(str(exc), str(path), filename)) from None
    check_usable(model)
    stem = slug(Path(filename).stem) or "upload"
    ref = ModelRef(f"uploaded:{stem}-{sha}", "uploaded", None, f"upload|{sha}")
    return ref, model, meta


def _plain(msg: str, path: str, filename: str) -> str:
    """A checkpoint loader's message about ``path`` -> one about the uploaded ``filename``, without internals."""
    if msg.startswith(f"Refused to load {path}:"):
        return (f"{filename!r} contains code or objects other than tensors, so it was not opened (nothing in it was "
                "run). A CRC Explorer checkpoint holds only tensors and text.")
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
