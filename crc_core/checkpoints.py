"""Save and load :class:`~crc_core.models.MLP` checkpoints safely.

Format (one ``.pt`` file, written by ``torch.save``)::

    {"format": "crc-explorer-checkpoint", "version": 1,
     "state_dict": {name: tensor}, "metadata_json": "<json>", "sha256": "<digest of tensors + metadata>"}

Files are read **only** with ``torch.load(weights_only=True)``: a pickle that carries code is refused and never run.
Every load checks the format tag, the architecture config, the tensor names and shapes against that architecture,
finite weights and the SHA-256 digest (which detects corruption and accidental edits; it is not a signature).
Writes are atomic (temp file in the same folder, fsync, ``os.replace``): a failed save leaves the old file intact.
A human-readable copy of the metadata is written next to the checkpoint as ``<path>.json`` (best effort).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .errors import CheckpointError, CRCError
from .models import MLP, format_architecture
from .run_records import HISTORY_STEPS, model_record, run_record, thin_events
from .safe_load import load_file

__all__ = [
    "FORMAT_TAG", "FORMAT_VERSION", "HISTORY_STEPS", "atomic_write", "crc_version", "load_checkpoint",
    "load_state_dict_file", "model_record", "read_metadata", "run_record", "save_checkpoint", "sidecar_path",
    "thin_events",
]

FORMAT_TAG = "crc-explorer-checkpoint"
FORMAT_VERSION = 1
CONFIG_KEYS = ("in_dim", "widths", "n_classes", "activation")
# Keys every checkpoint's metadata carries (filled with None when the caller does not give them).
METADATA_KEYS = ("dataset", "gamma", "crt_eps", "epochs", "metrics", "command")

MapLocation = str | torch.device | None
MAX_RECORD_CHARS = 16 << 20  # a record with a full training history is ~70 kB
MAX_RECORD_DEPTH = 32  # records nest a few levels (history -> epochs -> event)


def crc_version() -> str:
    """crc_core.__version__ (read at call time: the package imports this module before it sets it)."""
    from . import __version__

    return __version__


# ---- Atomic writes -------------------------------------------------------------------------------------------------
STALE_TEMP_SECONDS = 15 * 60


def _remove_stale_temps(path: Path, max_age: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Delete temp files of earlier saves of ``path`` that were killed mid-write; return what was removed.

    Only names this module creates (``.<name>.<random>.tmp`` beside ``path``) and only those untouched for
    ``max_age`` seconds: a save still in progress elsewhere writes its temp file within seconds, so it is kept.
    """
    removed: list[Path] = []
    now = time.time()
    with contextlib.suppress(OSError):
        for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            with contextlib.suppress(OSError):
                if tmp.is_file() and not tmp.is_symlink() and now - tmp.stat().st_mtime > max_age:
                    tmp.unlink()
                    removed.append(tmp)
    return removed


def _remove_folders(created: list[Path]) -> None:
    """Remove the folders a failed write created (deepest first), if they are still empty."""
    for folder in created:
        with contextlib.suppress(OSError):
            folder.rmdir()


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The human-readable metadata copy written next to a checkpoint: ``<path>.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def atomic_write(path: Path, write: Callable[[BinaryIO], None], *, stale_age: float = STALE_TEMP_SECONDS) -> None:
    """Call ``write(f)`` on a temp file next to ``path``, fsync it, then ``os.replace`` it onto ``path`` (the one
    atomic write: checkpoints, epoch checkpoints, sweep files). Temp files of ``path`` older than ``stale_age``
    seconds (killed writes) go first. On any failure the temp file and the folders this call created are removed,
    and ``path`` is left as it was."""
    created = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path, stale_age)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except BaseException:
        _remove_folders(created)
        raise
    tmp = Path(tmp_name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600 files; a checkpoint is an ordinary file
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        _remove_folders(created)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (not possible on every platform)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# ---- Validation helpers --------------------------------------------------------------------------------------------
def _digest(state_dict: Mapping[str, torch.Tensor], metadata_json: str) -> str:
    """SHA-256 over (name, dtype, shape, raw bytes) of each tensor in name order, then the metadata JSON."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(metadata_json.encode())
    return h.hexdigest()


def _check_config(cfg: Any, where: str) -> dict[str, Any]:
    """Return a clean copy of an architecture config or raise CheckpointError."""
    if not isinstance(cfg, Mapping):
        raise CheckpointError(f"{where}: the architecture config is missing or not a mapping.")
    missing = [k for k in CONFIG_KEYS if k not in cfg]
    if missing:
        raise CheckpointError(f"{where}: the architecture config lacks {', '.join(missing)}.")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    widths = cfg["widths"]
    ok = (
        is_int(cfg["in_dim"])
        and is_int(cfg["n_classes"])
        and isinstance(widths, (list, tuple))
        and len(widths) > 0
        and all(is_int(w) for w in widths)
        and isinstance(cfg["activation"], str)
    )
    if not ok:
        raise CheckpointError(f"{where}: invalid architecture config {dict(cfg)}.")
    return {
        "in_dim": cfg["in_dim"],
        "widths": list(widths),
        "n_classes": cfg["n_classes"],
        "activation": cfg["activation"],
    }


def _check_state_dict(state_dict: Any, cfg: dict[str, Any], where: str) -> None:
    """Tensor names, shapes, dtypes and finiteness must match the architecture ``cfg`` exactly.

    The expected shapes come from a model built on the ``meta`` device, so nothing is allocated for a config
    that claims huge layers.
    """
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
    ):
        raise CheckpointError(f"{where}: the state_dict is not a mapping of names to tensors.")
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in MLP.from_config(cfg).state_dict().items()}
    except (CRCError, RuntimeError, ValueError, TypeError, OverflowError) as exc:
        raise CheckpointError(f"{where}: unusable architecture {cfg}: {exc}") from exc
    missing = sorted(set(expected) - set(state_dict))
    extra = sorted(set(state_dict) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{where}: the weights do not belong to the architecture {_describe(cfg)} "
            f"(missing: {missing or 'none'}; unexpected: {extra or 'none'})."
        )
    for name, shape in expected.items():
        t = state_dict[name]
        if tuple(t.shape) != shape:
            raise CheckpointError(
                f"{where}: {name} has shape {tuple(t.shape)} but the architecture {_describe(cfg)} needs {shape}: "
                "this checkpoint is of another architecture or was tampered with."
            )
        if not t.is_floating_point():
            raise CheckpointError(f"{where}: {name} has dtype {t.dtype}; expected floating-point weights.")
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{where}: {name} contains NaN or infinite values; the model is unusable.")


def _depth(value: Any) -> int:
    """How deeply dicts / lists nest in a JSON value (iteratively: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, d)
            stack.extend((v, d + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


def _parse_record(meta_json: str, where: str) -> dict[str, Any]:
    """The metadata JSON -> a dict whose ``metrics`` and ``source`` are mappings, nested at most
    :data:`MAX_RECORD_DEPTH` deep (the SHA-256 is not a signature: anyone can write a record and recompute it)."""
    if len(meta_json) > MAX_RECORD_CHARS:
        raise CheckpointError(f"{where}: the metadata is {len(meta_json):,} characters, over {MAX_RECORD_CHARS:,}.")
    try:
        metadata = json.loads(meta_json)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{where}: the metadata is not valid JSON ({str(exc)[:120]}).") from None
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{where}: the metadata is not a JSON object.")
    if _depth(metadata) > MAX_RECORD_DEPTH:
        raise CheckpointError(f"{where}: the metadata nests deeper than {MAX_RECORD_DEPTH} levels; refused.")
    for key in ("metrics", "source"):
        if metadata.get(key) is not None and not isinstance(metadata[key], dict):
            raise CheckpointError(f"{where}: the metadata's {key!r} is a {type(metadata[key]).__name__}, not a "
                                  "mapping; refused.")
    return metadata


def _describe(cfg: Mapping[str, Any]) -> str:
    return format_architecture(cfg["widths"], cfg["activation"], in_dim=cfg["in_dim"], n_classes=cfg["n_classes"])


def _build(cfg: dict[str, Any], state_dict: Mapping[str, torch.Tensor], where: str) -> MLP:
    """Build the MLP of ``cfg`` with ``state_dict`` (already checked), on the tensors' device, in eval mode."""
    try:
        model = MLP.from_config(cfg)
        model.load_state_dict(dict(state_dict), strict=True)
    except (CRCError, RuntimeError) as exc:
        raise CheckpointError(f"{where}: could not load the weights: {exc}") from exc
    device = next(iter(state_dict.values())).device
    return model.to(device).eval()


def _torch_load(path: Path, map_location: MapLocation) -> Any:
    """The loading gate (crc_core/safe_load.py: sizes bounded, nothing executed), then ``torch.load(weights_only)``
    onto ``map_location``; every failure is a CheckpointError."""
    if isinstance(map_location, (str, torch.device)):
        try:
            dev = torch.device(map_location)
        except RuntimeError as exc:
            raise CheckpointError(f"Unknown map_location {map_location!r}.") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise CheckpointError(f"Cannot load {path} onto {map_location!r}: CUDA is not available here.")
    return load_file(path, map_location)[1]


def _unpack(
    path: Path, map_location: MapLocation
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Load and validate one checkpoint file -> (state_dict, architecture config, metadata)."""
    payload = _torch_load(path, map_location)
    where = str(path)
    if not isinstance(payload, Mapping) or payload.get("format") != FORMAT_TAG:
        raise CheckpointError(
            f"{where} is not a CRC Explorer checkpoint (no format tag {FORMAT_TAG!r}). "
            "For a plain state_dict use load_state_dict_file(path, config)."
        )
    if payload.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{where} has checkpoint version {payload.get('version')!r}; this crc_core reads version {FORMAT_VERSION}."
        )
    meta_json = payload.get("metadata_json")
    state_dict = payload.get("state_dict")
    if not isinstance(meta_json, str):
        raise CheckpointError(f"{where}: metadata_json is missing or not a string.")
    metadata = _parse_record(meta_json, where)
    cfg = _check_config(metadata.get("architecture"), where)
    _check_state_dict(state_dict, cfg, where)
    if payload.get("sha256") != _digest(state_dict, meta_json):
        raise CheckpointError(
            f"{where}: the SHA-256 digest does not match the contents: the file was modified or corrupted."
        )
    return dict(state_dict), cfg, metadata


# ---- Public API ----------------------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """json.dumps fallback for numpy / torch scalars and small arrays, paths and dates."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, (Path, _dt.date)):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON-serializable")


def save_checkpoint(
    path: str | os.PathLike[str], model: MLP, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Save ``model`` and ``metadata`` to ``path`` atomically; return the path.

    The stored metadata always has ``architecture`` (``model.config()``), ``created`` (UTC ISO time),
    ``crc_core_version`` and the keys dataset, gamma, crt_eps, epochs, metrics, command (None/{} when not given).
    Raises CheckpointError for a non-MLP, non-finite weights, or metadata that JSON cannot hold.
    """
    if not isinstance(model, MLP):
        raise CheckpointError(f"save_checkpoint needs a crc_core.models.MLP, got {type(model).__name__}.")
    path = Path(path)
    meta: dict[str, Any] = dict.fromkeys(METADATA_KEYS)
    meta["metrics"] = {}
    meta.update(dict(metadata or {}))
    meta["architecture"] = model.config()
    meta.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    meta.setdefault("crc_core_version", crc_version())
    try:
        meta_json = json.dumps(meta, sort_keys=True, default=_jsonable)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"Cannot save the metadata as JSON: {exc}") from exc

    state_dict = {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}
    cfg = _check_config(meta["architecture"], "save_checkpoint")
    _check_state_dict(state_dict, cfg, "save_checkpoint")
    payload = {
        "format": FORMAT_TAG,
        "version": FORMAT_VERSION,
        "state_dict": state_dict,
        "metadata_json": meta_json,
        "sha256": _digest(state_dict, meta_json),
    }
    try:
        atomic_write(path, lambda f: torch.save(payload, f))
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
        reason = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"Could not write checkpoint {path}: {reason}") from None
    with contextlib.suppress(
        OSError, TypeError, ValueError
    ):  # the sidecar is a convenience; the .pt is the truth
        pretty = json.dumps(json.loads(meta_json), indent=2, sort_keys=True) + "\n"
        atomic_write(sidecar_path(path), lambda f: f.write(pretty.encode()))
    return path


def load_checkpoint(
    path: str | os.PathLike[str], map_location: MapLocation = "cpu"
) -> tuple[MLP, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint` -> (model in eval mode, metadata dict).

    Reads with ``torch.load(weights_only=True)`` only. Raises CheckpointError (never runs code) for a missing,
    truncated, corrupt, tampered or foreign file, another architecture's weights, or NaN/Inf weights.
    """
    path = Path(path)
    state_dict, cfg, metadata = _unpack(path, map_location)
    return _build(cfg, state_dict, str(path)), metadata


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated metadata of a checkpoint (same checks as :func:`load_checkpoint`, no model built)."""
    return _unpack(Path(path), "cpu")[2]


def load_state_dict_file(
    path: str | os.PathLike[str], config: Mapping[str, Any], *, map_location: MapLocation = "cpu"
) -> MLP:
    """Load a plain ``state_dict`` file (``torch.save(model.state_dict(), path)``) into ``MLP.from_config(config)``.

    ``config`` has the keys in_dim, widths, n_classes, activation. A dict wrapping the weights under
    ``"state_dict"`` is also accepted. Same safety as :func:`load_checkpoint`: weights_only, exact names and
    shapes, finite values; otherwise CheckpointError.
    """
    path = Path(path)
    where = str(path)
    cfg = _check_config(config, "load_state_dict_file")
    payload = _torch_load(path, map_location)
    if isinstance(payload, Mapping) and payload.get("format") == FORMAT_TAG:
        raise CheckpointError(f"{where} is a CRC Explorer checkpoint: load it with load_checkpoint(path).")
    if isinstance(payload, Mapping) and isinstance(payload.get("state_dict"), Mapping):
        payload = payload["state_dict"]
    _check_state_dict(payload, cfg, where)
    return _build(cfg, payload, where)
