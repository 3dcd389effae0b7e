"""The loading gate: every model file crc_core reads (import, ``info``, ``certify --checkpoint``, the app's upload,
sweeps reading their models) goes through :func:`load_file`. Nothing in a file runs, and no file can make crc_core
allocate more than the limits below.

Order of the checks, each before anything the next one would allocate:

1. the path is a regular file (a folder, FIFO, device or socket is named as such) of at most :data:`MAX_FILE_BYTES`;
   it is read once, and every later step reads these same bytes (so the gate and torch cannot see two files);
2. the first bytes name the format: a ``torch.save`` zip archive or legacy pickle, or a safetensors file (other
   formats are refused by name: text, PNG, NumPy, a plain Python pickle...);
3. zip: no duplicate, compressed or out-of-archive entries (a reader could pick another entry than the one checked),
   no TorchScript code, record sizes within the file; the pickle under :data:`MAX_PICKLE_BYTES`;
4. torch's own ``weights_only`` unpickler reads the structure with every storage on the ``meta`` device (legacy
   files: under a FakeTensorMode), so tensors have shapes and strides but no memory; a reference to anything but
   tensors and plain containers is refused there (nothing executed), as is ``bytearray(n)`` (the one allow-listed
   callable that allocates what the file asks);
5. the totals: every storage within the bytes the file holds for it, every tensor *view* within its storage, the sum
   over all views of numel × element size (stride-0 views count in full: that is what ``.contiguous()``, ``.to()``
   or a NaN check materialise) under :data:`MAX_LOAD_BYTES`, the element count under :data:`MAX_LOAD_PARAMETERS`;
6. only then the real ``torch.load(weights_only=True)`` of the same bytes (its storages are bounded by step 5).

Callers check values (NaN, shapes) after this, so a NaN check never touches an unbounded view. safetensors files
(crc_core/safetensors_io.py) go through steps 1, 2 and 5 with their header instead of a pickle.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import math
import os
import pickle
import pickletools
import re
import stat
import struct
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .models import MAX_PARAMETERS
from .safetensors_io import load_safetensors, scan_safetensors

__all__ = ["MAX_FILE_BYTES", "MAX_LOAD_BYTES", "MAX_LOAD_PARAMETERS", "MAX_PICKLE_BYTES", "FileScan",
           "check_amplification", "check_totals", "load_file", "read_file", "scan_file", "sniff"]

# The paper's largest net (4x[1024] on 784 inputs) has 2.9M float32 parameters (11.5 MB). The limits bound what a
# file can make crc_core allocate: views may not materialise more than MAX_VIEW_AMPLIFICATION times the storage bytes
# the file holds (a stride-0 view of a 4-byte storage as a 16000x16000 matrix is refused), nor more than
# MAX_LOAD_BYTES in total, nor more numbers than the largest model crc_core builds (models.MAX_PARAMETERS).
MAX_LOAD_BYTES = 1 << 30  # bytes all tensor views of one file may materialise, summed (strides honoured)
MAX_LOAD_PARAMETERS = MAX_PARAMETERS  # numbers over all tensors of one file
MAX_VIEW_AMPLIFICATION = 4  # views / storage bytes (tied weights: 2; a bomb: millions)
MAX_FILE_BYTES = MAX_LOAD_BYTES + (16 << 20)  # tensors plus a pickle
MAX_PICKLE_BYTES = 2 << 20  # ~60 bytes a tensor (32k tensors, a few seconds to parse); our records: ~70 kB
MAX_ZIP_ENTRIES = 10_000  # a state dict has a handful of records per layer
MAX_OBJECTS = 1_000_000  # containers and values walked in one file's structure
MAX_DEPTH = 100  # levels of nesting in it

_NOT_TORCH = {b"\x89PNG": "a PNG image", b"\x93NUMPY": "a NumPy .npy array", b"\x1f\x8b": "a gzip file",
              b"\x89HDF": "an HDF5 (Keras) file", b"GIF8": "a GIF image", b"\xff\xd8\xff": "a JPEG image",
              b"%PDF": "a PDF document", b"\x7fELF": "an executable (ELF)"}
_BYTEARRAY = re.compile(rb"(?:builtins|__builtin__)\nbytearray\n")  # torch resolves globals from GLOBAL only
_GLOBAL = re.compile(r"GLOBAL (\S+)")


@dataclass(frozen=True)
class FileScan:
    """What the gate found: the container ``format`` ("zip", "legacy" or "safetensors"), the file's size and SHA-256,
    the bytes its storages declare, the bytes and elements all tensor views materialise, and every tensor's shape
    by its path in the structure (``"state_dict/fc1.weight"``)."""

    format: str
    size_bytes: int
    sha256: str
    declared_bytes: int
    tensor_shapes: dict[str, tuple[int, ...]]
    view_bytes: int = 0
    parameters: int = 0


# ---- Steps 1-2: a regular file, read once; its format --------------------------------------------------------------
def _kind_of(mode: int) -> str | None:
    """What a non-regular file is, in words (None for a regular file)."""
    for test, what in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return None if stat.S_ISREG(mode) else "not a regular file"


def read_file(path: str | os.PathLike[str], limit: int = MAX_FILE_BYTES, *, what: str = "model file") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; CheckpointError naming what the path is otherwise
    (``what`` names the expected file in messages). Never blocks on a FIFO and never reads past ``limit``
    (``/dev/zero``, ``/proc`` files that state size 0)."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CheckpointError(f"{what[:1].upper()}{what[1:]} not found: {path}") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    kind = _kind_of(st.st_mode)
    if kind is not None:
        raise CheckpointError(f"{path} is {kind}, not a {what}.")
    if st.st_size > limit:
        raise CheckpointError(f"{path} is {st.st_size:,} bytes, over the limit of {limit:,} bytes for a {what}.")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            kind = _kind_of(os.fstat(f.fileno()).st_mode)  # replaced between stat and open
            if kind is not None:
                raise CheckpointError(f"{path} is {kind}, not a {what}.")
            chunks = [f.read(st.st_size + 1)]  # its stated size (never a limit-sized buffer), then what else is there
            while len(chunks[-1]) and sum(map(len, chunks)) <= limit:
                chunks.append(f.read(1 << 20))
            data = b"".join(chunks)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    if len(data) > limit:
        raise CheckpointError(f"{path} is over the limit of {limit:,} bytes for a {what}.")
    return data


def _is_safetensors(head: bytes) -> bool:
    return len(head) >= 10 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < MAX_PICKLE_BYTES


def _pickle_globals(data: bytes) -> list[str] | None:
    """The globals a plain Python pickle names, read opcode by opcode without running it; None if it is no pickle.

    (Protocol 0/1 pickles look like text; a named global is how a pickle reaches code.)"""
    if len(data) > 1 << 20:  # not read past 1 MiB: a binary pickle is still called one, without its globals
        return [] if data[:1] == b"\x80" and data[1:2] in b"\x02\x03\x04\x05" else None
    names, strings, last = [], [], ""
    try:
        for op, arg, _ in itertools.islice(pickletools.genops(data), 200_000):
            if op.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL":
                names.append(".".join(strings[-2:]) if len(strings) >= 2 else "a global")
            elif isinstance(arg, str):
                strings.append(arg)
            last = op.name
    except Exception:
        return None
    return names if names or last == "STOP" else None


def sniff(data: bytes, path: str | os.PathLike[str]) -> str:
    """'zip' / 'legacy' (the two torch.save formats) or 'safetensors'; CheckpointError naming any other format."""
    head = data[:4096]
    if not head:
        raise CheckpointError(f"{path} is not a readable PyTorch file: it is empty.")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x80\x02\x8a\x0a"):  # protocol 2, then the 10-byte long of torch's magic number
        return "legacy"
    if _is_safetensors(head):
        return "safetensors"
    what = next((w for magic, w in _NOT_TORCH.items() if head.startswith(magic)), None)
    maybe_pickle = what is None and (head.startswith(b"\x80") or data.rstrip().endswith(b"."))
    names = _pickle_globals(data) if maybe_pickle else None
    if names is not None:
        code = f"; it names {', '.join(sorted(set(names))[:3])}: it contains code or pickled objects" if names else ""
        raise CheckpointError(f"Refused {path}: it is a Python pickle but not one written by torch.save{code}. "
                              "Nothing in it was run.")
    if what is None:
        try:
            what = "a text file" if b"\x00" not in head and head.decode("utf-8") else "of an unknown format"
        except UnicodeDecodeError:
            what = "of an unknown format"
    raise CheckpointError(f"{path} is not a readable PyTorch file: it is {what} (a model file is written by "
                          "torch.save or safetensors).")


# ---- Step 3: the zip archive's structure ---------------------------------------------------------------------------
def _zip_records(data: bytes, path: Path) -> dict[int, tuple[str, int]]:
    """Check a torch zip archive's directory -> {data offset: (record name, size)}."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except Exception as exc:  # zipfile raises BadZipFile, NotImplementedError, struct.error... on a forged directory
        raise CheckpointError(f"{path} is not a readable zip archive (corrupt or truncated?): {exc}") from None
    if len(infos) > MAX_ZIP_ENTRIES:
        raise CheckpointError(f"{path} has {len(infos):,} zip entries: not a PyTorch state dict.")
    names = [i.filename for i in infos]
    dup = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) != len(names) else []
    if dup:
        raise CheckpointError(f"{path} has duplicate zip entries {dup[:3]}: a reader could take another copy than "
                              "the one checked; refused.")
    if any(n.split("/", 1)[-1].startswith("code/") for n in names):
        raise CheckpointError(f"{path} is a TorchScript archive (it contains code); save and import "
                              "model.state_dict() instead.")
    pkls = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
    root = pkls[0][: -len("data.pkl")] if len(pkls) == 1 else None
    packed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED]
    big = [i.filename for i in infos if i.file_size > MAX_LOAD_BYTES]
    problems = [f"compressed entries {packed[:3]}"] if packed else []
    problems += [f"entries claiming more than {MAX_LOAD_BYTES:,} bytes: {big[:3]}"] if big else []
    problems += ["no single <archive>/data.pkl"] if root is None else []
    problems += ["entries outside the archive folder"] if root and any(not n.startswith(root) for n in names) else []
    if problems:
        raise CheckpointError(f"{path} is not a PyTorch archive torch.save could have written "
                              f"({'; '.join(problems)}).")
    records: dict[int, tuple[str, int]] = {}
    for info in infos:
        at = info.header_offset
        local = data[at:at + 30]
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise CheckpointError(f"{path}: the zip entry {info.filename!r} has no local header; refused.")
        n_len, e_len = struct.unpack("<HH", local[26:30])
        start = at + 30 + n_len + e_len
        if data[at + 30:at + 30 + n_len] != info.orig_filename.encode("utf-8", "replace"):
            raise CheckpointError(f"{path}: the zip entry {info.filename!r} is named otherwise in its local "
                                  "header; refused.")
        if start + info.file_size > len(data):
            raise CheckpointError(f"{path}: the zip entry {info.filename!r} reaches past the end of the file "
                                  "(truncated?).")
        records[start] = (info.filename, info.file_size)
    pickle_size = next(s for n, s in records.values() if n == pkls[0])
    if pickle_size > MAX_PICKLE_BYTES:
        raise CheckpointError(f"{path}: its pickle is {pickle_size:,} bytes, too large for a state dict.")
    return records


# ---- Step 4: torch's weights_only unpickler, storages on the meta device -------------------------------------------
def _refusal(exc: BaseException, path: Path) -> CheckpointError:
    """torch.load's exception on a file -> one sentence (torch's advice to retry unsafely is never repeated)."""
    text = str(exc)
    first = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
    if isinstance(exc, pickle.UnpicklingError) and ("weights only" in text.lower() or "weights_only" in text):
        found = _GLOBAL.search(text)
        what = found[1] if found else "objects other than tensors and plain containers"
        return CheckpointError(
            f"Refused {path}: the pickle refers to {what}, which is not a tensor or a plain container: the file "
            "contains code or pickled objects (it may be malicious, or a whole pickled model rather than its "
            "state_dict). Nothing in it was executed.")
    if isinstance(exc, RecursionError):
        return CheckpointError(f"{path}: its structure is nested too deeply to be a state dict; refused.")
    if isinstance(exc, MemoryError):
        return CheckpointError(f"{path}: reading it needs more memory than a model file may use; refused.")
    return CheckpointError(f"{path} is corrupt or truncated (torch could not read it: {type(exc).__name__}: {first}).")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No torch warning lines leak to the terminal while a file is read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _check_legacy_pickles(data: bytes, path: Path) -> None:
    """A legacy file's four pickles (magic, protocol, system info, the data) end within :data:`MAX_PICKLE_BYTES`,
    read opcode by opcode without running anything (torch parses a pickle at ~60 bytes a tensor a few µs each)."""
    f = io.BytesIO(data[: MAX_PICKLE_BYTES])
    try:
        for _ in range(4):
            for _op in pickletools.genops(f):
                pass
    except Exception:
        raise CheckpointError(f"{path}: its pickle does not end within {MAX_PICKLE_BYTES:,} bytes (too large for a "
                              "state dict, or corrupt); refused.") from None


def _torch_structure(data: bytes, fmt: str, path: Path) -> Any:
    """The file's structure through torch's own weights_only unpickler, with no tensor memory allocated."""
    if _BYTEARRAY.search(data):
        raise CheckpointError(f"Refused {path}: the pickle refers to builtins.bytearray, which is not a tensor or a "
                              "plain container (it would allocate what the file asks). Nothing in it was executed.")
    if fmt == "legacy":
        _check_legacy_pickles(data, path)
    try:
        with _quiet():
            if fmt == "zip":
                return torch.load(io.BytesIO(data), map_location="meta", weights_only=True)
            # legacy storages: fake tensors, no bytes read, nothing allocated
            from torch._subclasses.fake_tensor import FakeTensorMode

            with FakeTensorMode(allow_non_fake_inputs=False):
                return torch.load(io.BytesIO(data), weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:
        raise _refusal(exc, path) from None


def _walk(obj: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """(path, tensor) for every tensor in nested dicts / lists / tuples / sets, iteratively; refuses a structure of
    more than :data:`MAX_OBJECTS` objects or nested more than :data:`MAX_DEPTH` levels (a state dict has 2-3)."""
    stack: list[tuple[str, Any, int]] = [("", obj, 0)]
    seen = 0
    while stack:
        prefix, node, depth = stack.pop()
        seen += 1
        if seen > MAX_OBJECTS or depth > MAX_DEPTH:
            raise CheckpointError(f"the structure holds more than {MAX_OBJECTS:,} objects or nests more than "
                                  f"{MAX_DEPTH} levels deep: not a state dict; refused")
        if isinstance(node, torch.Tensor):
            yield prefix, node
        elif isinstance(node, Mapping):
            stack.extend((f"{prefix}/{k}" if prefix else str(k), v, depth + 1) for k, v in node.items())
        elif isinstance(node, (list, tuple, set, frozenset)):
            stack.extend((f"{prefix}/{i}" if prefix else str(i), v, depth + 1) for i, v in enumerate(node))


def _extent(t: torch.Tensor) -> int:
    """Elements of its storage a strided view reaches (offset included); 0 for an empty view."""
    if t.numel() == 0:
        return 0
    return t.storage_offset() + sum((s - 1) * st for s, st in zip(t.shape, t.stride(), strict=True)) + 1


@dataclass
class _Totals:
    view_bytes: int = 0
    parameters: int = 0


def check_totals(totals: _Totals | None, shape: tuple[int, ...], itemsize: int, where: str) -> _Totals:
    """Add one tensor view (``shape`` of ``itemsize``-byte elements) to the file's totals; refuse past a limit."""
    totals = totals or _Totals()
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise CheckpointError(f"{where}: a tensor has an invalid shape {shape}.")
    numel = math.prod(shape)
    totals.view_bytes += numel * itemsize
    totals.parameters += numel
    if totals.view_bytes > MAX_LOAD_BYTES:
        raise CheckpointError(f"{where}: its tensors (a tensor of shape {shape} reached) would take "
                              f"{totals.view_bytes:,} bytes or more, more than the import limit of "
                              f"{MAX_LOAD_BYTES:,} bytes in total (strided views counted in full).")
    if totals.parameters > MAX_LOAD_PARAMETERS:
        raise CheckpointError(f"{where}: its tensors hold more than {MAX_LOAD_PARAMETERS:,} numbers in total (the "
                              "parameter limit of a model file).")
    return totals


def _check_tensors(structure: Any, fmt: str, records: Mapping[int, tuple[str, int]], size: int,
                   path: Path) -> tuple[int, _Totals, dict[str, tuple[int, ...]]]:
    """Step 5 on the meta/fake structure -> (storage bytes declared, view totals, shapes by path)."""
    try:
        tensors = list({id(t): (where, t) for where, t in _walk(structure)}.values())  # one pickled object, once
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}.") from None
    by_record: dict[int, int] = {}
    legacy_bytes = 0
    for where, t in tensors:
        if t.layout != torch.strided or t.is_quantized or t.is_nested:
            raise CheckpointError(f"{path}: {where!r} is a {t.layout} tensor; only dense tensors are read.")
        nbytes = t.untyped_storage().nbytes()
        if _extent(t) * t.element_size() > nbytes:
            raise CheckpointError(f"{path}: {where!r} reaches past the end of its storage; refused.")
        if fmt == "zip":
            offset = getattr(t.untyped_storage(), "_checkpoint_offset", None)
            if offset not in records:
                raise CheckpointError(f"{path}: {where!r} has no data record in the archive; refused.")
            by_record[offset] = max(by_record.get(offset, 0), nbytes)
        else:
            legacy_bytes += nbytes  # shared legacy storages are counted once per tensor: an upper bound
    for offset, nbytes in by_record.items():
        name, held = records[offset]
        if nbytes > held:
            raise CheckpointError(f"{path}: storage {name.rsplit('/', 1)[-1]!r} declares {nbytes:,} bytes but its "
                                  f"record holds {held:,}; refused.")
    if fmt == "legacy" and legacy_bytes > size:
        raise CheckpointError(f"{path}: the storages declare {legacy_bytes:,} bytes, more than the file's {size:,} "
                              "bytes (truncated or forged); refused.")
    totals = _Totals()
    for _, t in tensors:
        check_totals(totals, tuple(t.shape), t.element_size(), str(path))
    declared = sum(by_record.values()) if fmt == "zip" else legacy_bytes
    check_amplification(totals, declared, str(path))
    return declared, totals, {where: tuple(t.shape) for where, t in tensors}


def check_amplification(totals: _Totals, storage_bytes: int, where: str) -> None:
    """Views may materialise at most :data:`MAX_VIEW_AMPLIFICATION` x the storage bytes (+ 1 MiB) the file holds."""
    allowed = MAX_VIEW_AMPLIFICATION * storage_bytes + (1 << 20)
    if totals.view_bytes > allowed:
        raise CheckpointError(f"{where}: its tensor views would materialise {totals.view_bytes:,} bytes from "
                              f"{storage_bytes:,} bytes of storage (stride-0 or overlapping views); refused.")


def _scan(data: bytes, path: Path) -> tuple[FileScan, str]:
    fmt = sniff(data, path)
    if fmt == "safetensors":
        totals = _Totals()
        declared, shapes = scan_safetensors(data, path, lambda shape, size: check_totals(totals, shape, size,
                                                                                          str(path)))
    else:
        records = _zip_records(data, path) if fmt == "zip" else {}
        structure = _torch_structure(data, fmt, path)
        declared, totals, shapes = _check_tensors(structure, fmt, records, len(data), path)
    sha = hashlib.sha256(data).hexdigest()
    return FileScan(fmt, len(data), sha, declared, shapes, totals.view_bytes, totals.parameters), fmt


def scan_file(path: str | os.PathLike[str]) -> FileScan:
    """Steps 1-5 on a file without loading a tensor: what :func:`load_file` would read, or CheckpointError."""
    return _scan(read_file(path), Path(path))[0]


def load_file(path: str | os.PathLike[str], map_location: str | torch.device | None = "cpu") -> tuple[FileScan, Any]:
    """The gate, then the real ``torch.load(weights_only=True)`` (or safetensors) of the very bytes it checked.

    Returns (what the scan found, the loaded structure: dicts / lists of tensors). Raises CheckpointError for every
    refusal (never another exception type), having executed nothing and allocated at most the limits above.
    """
    path = Path(path)
    data = read_file(path)
    scan, fmt = _scan(data, path)
    if fmt == "safetensors":
        return scan, load_safetensors(data, path)
    try:
        with _quiet():
            payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:
        raise _refusal(exc, path) from None
    return scan, payload
