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
from crc_core.models import MLP

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
    """e.g. ``"2×[256] softplus"``."""
    widths = list(arch.get("widths", []))
    return f"{len(widths) + 1}×[{','.join(map(str, widths))}] {arch.get('activation', '?')}"


def kind_text(meta: Mapping[str, Any]) -> str:
    kind = training_kind(meta)
    g, eps = meta.get("gamma"), meta.get("crt_eps")
    if kind == "crt":
        return f"CRT γ={g:g} ε={eps:g}" if isinstance(g, (int, float)) and isinstance(eps, (int, float)) else "CRT"
    if kind == "gamma":
        return f"γ={g:g}" if isinstance(g, (int, float)) else "γ-regularized"
    return {"standard": "standard", "unknown": "training unknown"}[kind]


def describe(ref: ModelRef, meta: Mapping[str, Any]) -> str:
    """One line for the picker: ``"crt-2x256 · 2×[256] softplus · CRT γ=0.01 ε=0.5 (shipped)"``."""
    arch = meta.get("architecture") or {}
    acc = (meta.get("metrics") or {}).get("test_accuracy")
    acc_txt = f" · acc {acc:.0%}" if isinstance(acc, (int, float)) else ""
    return f"{ref.name} · {arch_text(arch)} · {kind_text(meta)}{acc_txt} ({ref.source})"


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


def load_upload(data: bytes, filename: str) -> tuple[ModelRef, MLP, dict[str, Any]]:
    """Validate an uploaded checkpoint (bytes) -> (ref, model, metadata). Never executes code in the file."""
    if not data:
        raise CheckpointError(f"{filename}: the uploaded file is empty.")
    sha = hashlib.sha256(data).hexdigest()[:12]
    with tempfile.TemporaryDirectory(prefix="crc-upload-") as tmp:
        path = Path(tmp) / "upload.pt"
        path.write_bytes(data)
        try:
            model, meta = load_checkpoint(path, map_location="cpu")
        except CheckpointError as exc:
            raise CheckpointError(str(exc).replace(str(path), f"The uploaded file {filename!r}")) from None
    check_usable(model)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(filename).stem)[:40] or "upload"
    ref = ModelRef(f"uploaded:{stem}-{sha}", "uploaded", None, f"upload|{sha}")
    return ref, model, meta


def save_trained(model: MLP, metadata: Mapping[str, Any], name: str | None = None) -> Path:
    """Save a model trained in the app into :func:`runs_dir` under a unique, readable file name."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", (name or "").strip()).strip("-")[:40]
    folder = runs_dir()
    path = folder / f"{stamp}-{slug or 'model'}.pt"
    i = 1
    while path.exists():
        path = folder / f"{stamp}-{slug or 'model'}-{i}.pt"
        i += 1
    return save_checkpoint(path, model, dict(metadata))
