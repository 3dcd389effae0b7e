"""Bring your own model: import a foreign PyTorch MLP (e.g. the paper's official checkpoints) as our checkpoint.

A *foreign* file is anything ``torch.save`` wrote that holds the weights of a chain of ``nn.Linear`` layers: the
official files (``torch.save(model.state_dict())``, keys ``fc1.weight``, ``fc1.bias``, ... up to ``fc4``), an
``nn.Sequential`` (``0.weight``, ``2.weight``, ... with gaps where the activations sit), ``layers.N``, any prefix
(``model.``, ``module.`` from DataParallel), or a dict wrapping the weights under ``state_dict`` /
``model_state_dict``. The architecture is read off the shapes (any depth); the activation and the dataset are not
stored in a state dict, so they come from the caller or from the official file name (:func:`parse_official_name`).

Safety, in this order, before any tensor is allocated or any pickle is run by torch:

1. the first bytes must be a PyTorch zip archive or a legacy PyTorch pickle (text, PNG, ``.npy``, empty files...
   are refused by name);
2. the pickle is *scanned* with an unpickler whose only callables are inert stand-ins (so nothing in the file is
   executed): any reference to something other than tensors and plain containers (``os.system``, a custom class)
   is refused; every declared storage and tensor size is checked against :data:`MAX_IMPORT_BYTES` and against the
   bytes actually present in the file, so a header claiming a 10 GB tensor is refused without allocating it;
3. only then ``torch.load(weights_only=True)`` reads the file, and the tensors must match what the scan declared.

Then the layout is recognised (:func:`inspect_foreign`), checked against the dataset (:func:`import_model`) and
written with :func:`crc_core.checkpoints.save_checkpoint` (:func:`import_checkpoint`), with a record shaped like a
trained model's (:func:`crc_core.checkpoints.model_record`, ``kind="imported"``, the training only as far as an
official name states it) saying where it came from (``metadata["source"]``: file name, SHA-256, original key
names, parsed name fields). ``python -m crc_core import`` (crc_core/cli/import_.py) is the command line for it.
Every refusal is a :class:`~crc_core.errors.CheckpointError` (a ValueError) naming the problem; nothing is written.

Example::

    from crc_core.importers import import_checkpoint, inspect_foreign
    inspect_foreign("mnist_2_softplus_L2_1.58_EIGEN_0.005").describe()   # '784-1024-10 (2 Linear layers: fc1, fc2)'
    result = import_checkpoint("mnist_2_softplus_L2_1.58_EIGEN_0.005", "runs/official.pt")  # name gives the rest
    result = import_checkpoint("my_net.pth", "runs/mine.pt", activation="tanh", dataset="fashion-mnist")
    print("\\n".join(result.summary_lines()))                                # what a CLI shows
"""

from __future__ import annotations

import collections
import hashlib
import io
import itertools
import math
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .activations import CURVATURE_ACTIVATIONS
from .checkpoints import FORMAT_TAG, model_record, save_checkpoint
from .data import FASHION_MNIST_CLASSES, MNIST_CLASSES, normalize_dataset_name
from .errors import CheckpointError, CRCError
from .models import MLP

__all__ = [
    "DATASET_SHAPES",
    "IMPORTED_KIND",
    "MAX_IMPORT_BYTES",
    "WRAPPER_KEYS",
    "FileScan",
    "ForeignLayer",
    "ForeignModel",
    "ImportResult",
    "NameHints",
    "import_checkpoint",
    "import_model",
    "inspect_foreign",
    "normalize_dataset",
    "parse_official_name",
    "scan_torch_file",
    "training_from_name",
]

# Far above the paper's largest net (4x[1024] on 784 inputs: 2.9M float32 parameters, 11.5 MB), far below what would
# hurt a shared machine: every declared storage and tensor is checked against this before anything is allocated.
MAX_IMPORT_BYTES = 1 << 30
# The pickle of a state dict is a few kB per layer; a larger one is not a state dict (or is an attack).
MAX_PICKLE_BYTES = 16 << 20
# A state dict has a handful of records per layer; a zip with more entries than this is not one.
MAX_ZIP_ENTRIES = 10_000

# (input size, number of classes) of each dataset a model can be imported for: 28x28 grey images (raw pixels).
DATASET_SHAPES: dict[str, tuple[int, int]] = {"mnist": (28 * 28, len(MNIST_CLASSES)),
                                              "fashion-mnist": (28 * 28, len(FASHION_MNIST_CLASSES))}

# metadata["kind"] of an imported model (trained models have "standard" / "gamma" / "crt"): crc_core did not train
# it, so its training is only what the file name says (metadata["trained_kind"]).
IMPORTED_KIND = "imported"
# Keys under which training scripts commonly wrap a state dict, most specific first.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "state")

_ITEMSIZE = {"DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
             "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
             "UntypedStorage": 1}
_DTYPE_ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2,
                   "int8": 1, "uint8": 1, "bool": 1}
_NOT_TORCH = {b"\x89PNG": "a PNG image", b"\x93NUMPY": "a NumPy .npy array", b"\x1f\x8b": "a gzip file",
              b"\x89HDF": "an HDF5 (Keras) file", b"GIF8": "a GIF image", b"\xff\xd8\xff": "a JPEG image",
              b"%PDF": "a PDF document"}
_NAMED_DATASETS = ("mnist", "fashion-mnist", "cifar10")  # datasets an official file name may start with
_MODEL_EXTENSIONS = (".pt", ".pth", ".pkl", ".ckpt", ".bin", ".tar")


# ----------------------------------------------------------------------------------------------------------------
# Step 1-2: recognise the container and scan the pickle without running it
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileScan:
    """What :func:`scan_torch_file` found: the container ``format`` ("zip" or "legacy"), the file's size and
    SHA-256, the bytes its storages declare, and the (name path, shape) of every tensor in the pickle."""

    format: str
    size_bytes: int
    sha256: str
    declared_bytes: int
    tensor_shapes: dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class _StorageType:
    itemsize: int


@dataclass(frozen=True)
class _StorageRef:
    key: str
    numel: int
    itemsize: int


@dataclass(frozen=True)
class _TensorRef:
    shape: tuple[int, ...]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _rebuild_tensor_stub(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> _TensorRef:
    """Stand-in for torch._utils._rebuild_tensor_v2: checks the view fits its storage, allocates nothing."""
    ok = (isinstance(storage, _StorageRef) and _is_int(offset) and offset >= 0
          and isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
          and all(_is_int(s) and s >= 0 for s in (*size, *stride)))
    if not ok:
        raise CheckpointError("malformed tensor record (storage, offset, size, stride) in the pickle")
    numel = math.prod(size)
    if numel * storage.itemsize > MAX_IMPORT_BYTES:
        raise CheckpointError(f"a tensor of shape {size} ({numel * storage.itemsize:,} bytes) is declared, more "
                              f"than the import limit of {MAX_IMPORT_BYTES:,} bytes")
    extent = offset + sum((s - 1) * st for s, st in zip(size, stride, strict=True)) + 1 if numel else 0
    if extent > storage.numel:
        raise CheckpointError(f"a tensor of shape {size} reaches past the end of its storage "
                              f"({extent:,} > {storage.numel:,} elements)")
    return _TensorRef(tuple(size))


def _rebuild_parameter_stub(data: Any, *_rest: Any) -> Any:
    return data


def _encode_stub(text: Any, encoding: str = "latin1") -> bytes:
    """Stand-in for _codecs.encode (how protocol-2 pickles spell bytes): a bytes value, nothing more."""
    return str(text).encode("latin1", errors="replace")


# Everything a scanned pickle may refer to: plain containers and inert stand-ins for torch's rebuild functions.
# (A subset of torch's weights_only list: no tensor subclasses, no quantization, no bytearray(n) allocations.)
_INERT_GLOBALS: dict[str, Any] = {
    "collections.OrderedDict": collections.OrderedDict,
    "collections.Counter": collections.Counter,
    "builtins.set": set,
    "_codecs.encode": _encode_stub,
    "torch.Size": lambda dims=(): tuple(dims),
    "torch.device": lambda *args: str(args),
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_stub,
    "torch._utils._rebuild_parameter": _rebuild_parameter_stub,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter_stub,
}


class _ScanUnpickler(pickle.Unpickler):
    """Unpickles a torch pickle with inert stand-ins: tensors become shapes, storages become size records.

    find_class is the only way a pickle reaches a callable, and here it returns only the stand-ins above, plain
    containers and storage markers; anything else is refused by name before it is resolved.
    """

    def __init__(self, file: io.BytesIO, on_storage: Any) -> None:
        super().__init__(file)
        self._on_storage = on_storage

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # protocol 2 spells it the Python 2 way
        full = f"{module}.{name}"
        if full in _INERT_GLOBALS:
            return _INERT_GLOBALS[full]
        if module == "torch" and name in _ITEMSIZE:
            return _StorageType(_ITEMSIZE[name])
        if module == "torch" and name in _DTYPE_ITEMSIZE:
            return _StorageType(_DTYPE_ITEMSIZE[name])
        raise CheckpointError(
            f"the pickle refers to {full}, which is not a tensor or a plain container: such a file can carry "
            "code (it may be malicious, or a whole pickled model object rather than its state_dict). "
            "Nothing in it was executed")

    def persistent_load(self, pid: Any) -> _StorageRef:
        # zip: ('storage', type, key, location, numel); legacy: the same plus view metadata.
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and _is_int(pid[4]) and pid[4] >= 0):
            raise CheckpointError(f"unexpected persistent record {str(pid)[:80]!r} in the pickle")
        ref = _StorageRef(str(pid[2]), pid[4], pid[1].itemsize)
        self._on_storage(ref)
        return ref


def _collect_shapes(obj: Any, prefix: str = "", out: dict[str, tuple[int, ...]] | None = None,
                    ) -> dict[str, tuple[int, ...]]:
    """Flatten nested dicts/lists of _TensorRef into {"a/b": shape}."""
    out = {} if out is None else out
    if isinstance(obj, _TensorRef):
        out[prefix] = obj.shape
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            _collect_shapes(v, f"{prefix}/{k}" if prefix else str(k), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _collect_shapes(v, f"{prefix}/{i}" if prefix else str(i), out)
    return out


def _sniff(head: bytes, path: Path) -> str:
    """'zip' or 'legacy' for the two torch.save formats; CheckpointError naming any other kind of file."""
    if not head:
        raise CheckpointError(f"{path} is empty: not a PyTorch file.")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x80\x02\x8a\x0a"):  # protocol 2, then the 10-byte long of torch's magic number
        return "legacy"
    for magic, what in _NOT_TORCH.items():
        if head.startswith(magic):
            raise CheckpointError(f"{path} is {what}, not a PyTorch file (torch.save output).")
    if head.startswith(b"\x80"):
        raise CheckpointError(f"{path} is a Python pickle but not one written by torch.save; refused unread.")
    try:
        head.decode("utf-8")
        is_text = b"\x00" not in head
    except UnicodeDecodeError:
        is_text = False
    what = "a text file" if is_text else "of an unknown format"
    raise CheckpointError(f"{path} is {what}, not a PyTorch file (torch.save output).")


def _scan_pickle(f: io.BytesIO, on_storage: Any, where: str) -> Any:
    """Load one pickle from ``f`` with :class:`_ScanUnpickler`; refusals and parse errors become CheckpointError."""
    try:
        return _ScanUnpickler(f, on_storage).load()
    except CheckpointError as exc:
        raise CheckpointError(f"Refused {where}: {exc}.") from None
    except Exception as exc:  # truncated / malformed pickle; nothing was executed
        raise CheckpointError(f"{where} is corrupt or truncated (its pickle does not parse: {exc}).") from None


def _scan_zip(path: Path, data: bytes) -> tuple[Any, int]:
    """Scan a torch zip archive -> (inert structure, declared storage bytes)."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable zip archive (corrupt or truncated?): {exc}") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_ENTRIES:
            raise CheckpointError(f"{path} has {len(infos):,} zip entries: not a PyTorch state dict.")
        if any(i.filename.split("/", 1)[-1].startswith("code/") for i in infos):
            raise CheckpointError(f"{path} is a TorchScript archive (it contains code); save and import "
                                  "model.state_dict() instead.")
        sizes = {i.filename: i.file_size for i in infos}
        bad = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED]
        big = [n for n, s in sizes.items() if s > MAX_IMPORT_BYTES]
        pkls = [n for n in sizes if n.count("/") == 1 and n.endswith("/data.pkl")]
        problems = [f"compressed entries {bad[:3]}"] if bad else []
        problems += [f"entries claiming more than {MAX_IMPORT_BYTES:,} bytes: {big[:3]}"] if big else []
        problems += ["no single <archive>/data.pkl"] if len(pkls) != 1 else []
        if problems:
            raise CheckpointError(f"{path} is not a PyTorch archive torch.save could have written "
                                  f"({'; '.join(problems)}).")
        root = pkls[0][: -len("data.pkl")]
        if sizes[pkls[0]] > MAX_PICKLE_BYTES:
            raise CheckpointError(f"{path}: its pickle is {sizes[pkls[0]]:,} bytes, too large for a state dict.")
        seen: dict[str, int] = {}

        def on_storage(ref: _StorageRef) -> None:
            nbytes = ref.numel * ref.itemsize
            record = f"{root}data/{ref.key}"
            if record not in sizes:
                raise CheckpointError(f"storage {ref.key!r} has no record in the archive")
            if nbytes > sizes[record]:
                raise CheckpointError(f"storage {ref.key!r} declares {nbytes:,} bytes but its record holds "
                                      f"{sizes[record]:,}")
            seen[ref.key] = nbytes
            if sum(seen.values()) > MAX_IMPORT_BYTES:
                raise CheckpointError(f"the storages declare more than the import limit of {MAX_IMPORT_BYTES:,} "
                                      "bytes")

        structure = _scan_pickle(io.BytesIO(zf.read(pkls[0])), on_storage, str(path))
    return structure, sum(seen.values())


def _scan_legacy(path: Path, data: bytes) -> tuple[Any, int]:
    """Scan a legacy (pre-1.6) torch file: magic, protocol, sys_info, the data pickle, storage keys, raw bytes."""
    f = io.BytesIO(data)
    declared: dict[str, int] = {}

    def on_storage(ref: _StorageRef) -> None:
        declared[ref.key] = ref.numel * ref.itemsize
        if sum(declared.values()) > min(MAX_IMPORT_BYTES, len(data)):
            raise CheckpointError(f"the storages declare {sum(declared.values()):,} bytes, more than the file's "
                                  f"{len(data):,} bytes (or the import limit)")

    header = [_scan_pickle(f, on_storage, str(path)) for _ in range(3)]
    if header[0] != torch.serialization.MAGIC_NUMBER or header[1] != torch.serialization.PROTOCOL_VERSION:
        raise CheckpointError(f"{path} is a pickle with an unknown header, not a torch.save file.")
    structure = _scan_pickle(f, on_storage, str(path))
    keys = _scan_pickle(f, on_storage, str(path))
    # Each storage follows as an 8-byte element count and its raw bytes.
    needed = sum(declared.values()) + 8 * len(declared)
    if not isinstance(keys, list) or needed > len(data) - f.tell():
        raise CheckpointError(f"{path}: the storages declare {needed:,} bytes but the file holds "
                              f"{len(data) - f.tell():,} after the pickle (truncated or forged).")
    return structure, sum(declared.values())


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise CheckpointError(f"Model file not found: {path}")
    size = path.stat().st_size
    if size > MAX_IMPORT_BYTES + MAX_PICKLE_BYTES:
        raise CheckpointError(f"{path} is {size:,} bytes, over the import limit of {MAX_IMPORT_BYTES:,}.")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"Cannot read {path}: {exc}") from None


def _scan_bytes(data: bytes, path: Path) -> FileScan:
    fmt = _sniff(data[:4096], path)
    structure, declared = _scan_zip(path, data) if fmt == "zip" else _scan_legacy(path, data)
    return FileScan(fmt, len(data), hashlib.sha256(data).hexdigest(), declared, _collect_shapes(structure))


def scan_torch_file(path: str | os.PathLike[str]) -> FileScan:
    """Check a file is a torch.save file that holds only tensors and containers, without running or allocating.

    Raises CheckpointError for a missing, empty or other-format file, a pickle referring to anything but tensors
    and plain containers (it could carry code; nothing is executed), or declared sizes over
    :data:`MAX_IMPORT_BYTES` or beyond the bytes in the file.
    """
    path = Path(path)
    return _scan_bytes(_read_bytes(path), path)


def _torch_load(data: bytes, path: Path) -> Any:
    """``torch.load(weights_only=True)`` of the very bytes that were scanned (no second read of the file)."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # the scan passed, so this is a corrupt record; weights_only executed nothing
        raise CheckpointError(f"{path} could not be read by torch.load(weights_only=True): {exc}") from None


# ----------------------------------------------------------------------------------------------------------------
# The official file names
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NameHints:
    """Fields of an official file name ``<dataset>_<depth>_<activation>[_<NORM>_<eps>][_<REG>_<gamma>]``.

    ``mnist_2_softplus_L2_1.58_EIGEN_0.005``: MNIST, L = 2 linear layers, softplus; trained with CRT against l2
    attacks of radius ε = 1.58 (the paper's ρ of Tables 3/4, ``attack_norm``/``attack_eps``); curvature (Hessian
    eigenvalue bound K) regularizer with γ = 0.005 (eq. 7, Table 16: ``regularizer``/``gamma``). The depth counts
    linear layers as the paper's "L x [1024]" does. This reading of the last two pairs follows the paper's
    notation; any other LABEL_value pair is kept in ``extra``.
    """

    stem: str
    dataset: str
    depth: int
    activation: str
    attack_norm: str | None = None
    attack_eps: float | None = None
    regularizer: str | None = None
    gamma: float | None = None
    extra: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["extra"] = [list(p) for p in self.extra]
        return d


_NAME_RE = re.compile(r"^(?P<dataset>[a-z0-9_-]+?)_(?P<depth>\d+)_(?P<activation>[a-z]+)(?:_(?P<rest>.+))?$",
                      re.IGNORECASE)


def _model_stem(name: str) -> str:
    """The file name without a model extension (not Path.stem: ``..._0.005`` must keep its ``.005``)."""
    base = Path(name).name
    for ext in _MODEL_EXTENSIONS:
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return base


def normalize_dataset(name: str) -> str:
    """The dataset a model is for: :func:`crc_core.data.normalize_dataset_name` ('MNIST' -> 'mnist', 'fmnist' ->
    'fashion-mnist'), with 'embedded' (the shipped Fashion-MNIST subset) -> 'fashion-mnist'."""
    key = normalize_dataset_name(name)
    return "fashion-mnist" if key == "embedded" else key


def parse_official_name(name: str | os.PathLike[str]) -> NameHints | None:
    """Parse an official file name (``fashion-mnist_3_sigmoid_L2_1.58_EIGEN_0.01``); None if it is not one."""
    stem = _model_stem(str(name))
    m = _NAME_RE.match(stem)
    if m is None or int(m["depth"]) < 1 or normalize_dataset(m["dataset"]) not in _NAMED_DATASETS:
        return None
    hints: dict[str, Any] = {"stem": stem, "dataset": normalize_dataset(m["dataset"]), "depth": int(m["depth"]),
                             "activation": m["activation"].lower()}
    tokens = m["rest"].split("_") if m["rest"] else []
    extra: list[tuple[str, str]] = []
    for label, value in itertools.zip_longest(tokens[::2], tokens[1::2], fillvalue=""):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            extra.append((label, value))
        elif re.fullmatch(r"L(\d+|INF)", label, re.IGNORECASE) and "attack_norm" not in hints:
            hints.update(attack_norm=label.upper(), attack_eps=number)
        elif label.upper() in ("EIGEN", "CURVATURE", "CRT") and "regularizer" not in hints:
            hints.update(regularizer=label.upper(), gamma=number)
        else:
            extra.append((label, value))
    return NameHints(**hints, extra=tuple(extra))


# ----------------------------------------------------------------------------------------------------------------
# Step 3: recognise a chain of Linear layers
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ForeignLayer:
    """One Linear layer of a foreign file: its original module path and key names, and its size."""

    module: str
    weight_key: str
    bias_key: str
    in_features: int
    out_features: int


@dataclass(frozen=True)
class ForeignModel:
    """What :func:`inspect_foreign` recognised in a foreign file (no dataset or activation decided yet).

    ``layers`` are in forward order; ``wrapper_key`` is the dict key the weights sat under (None for a bare state
    dict); ``prefix`` the module path shared by all layers (``"model."``, ``"module.layers."`` or ``""``);
    ``hints`` the official file-name fields, if the name is one; ``ignored`` non-tensor entries left aside.
    """

    path: Path
    scan: FileScan
    layers: tuple[ForeignLayer, ...]
    wrapper_key: str | None = None
    prefix: str = ""
    hints: NameHints | None = None
    ignored: tuple[str, ...] = ()
    dtype: str = "torch.float32"

    @property
    def in_dim(self) -> int:
        return self.layers[0].in_features

    @property
    def widths(self) -> list[int]:
        return [layer.out_features for layer in self.layers[:-1]]

    @property
    def n_classes(self) -> int:
        return self.layers[-1].out_features

    @property
    def depth(self) -> int:
        return len(self.layers)

    def key_map(self) -> dict[str, str]:
        """{our key (``layers.I.weight``): the original key} for every tensor imported."""
        out: dict[str, str] = {}
        for i, layer in enumerate(self.layers):
            out[f"layers.{i}.weight"] = layer.weight_key
            out[f"layers.{i}.bias"] = layer.bias_key
        return out

    def describe(self) -> str:
        """``784-1024-10 (2 Linear layers: fc1, fc2)``."""
        dims = "-".join(map(str, [self.in_dim, *self.widths, self.n_classes]))
        return f"{dims} ({self.depth} Linear layers: {', '.join(layer.module or '<root>' for layer in self.layers)})"


def _unwrap(payload: Any, where: str) -> tuple[dict[str, torch.Tensor], str | None, tuple[str, ...]]:
    """The flat {key: tensor} mapping inside ``payload``, the wrapper key it sat under, ignored entry names."""
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"{where} holds a {type(payload).__name__}, not a state dict (a mapping of names to "
                              "tensors).")
    if payload.get("format") == FORMAT_TAG:
        raise CheckpointError(f"{where} is already a CRC Explorer checkpoint: open it with load_checkpoint.")
    wrapper, ignored = None, []
    for key in WRAPPER_KEYS:
        inner = payload.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            ignored = [str(k) for k in payload if k != key]
            payload, wrapper = inner, key
            break
    tensors = {k: v for k, v in payload.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{where} holds no tensors under names (keys: {sorted(map(str, payload))[:8]}).")
    ignored += [f"{wrapper}/{k}" if wrapper else str(k) for k in payload if k not in tensors]
    return tensors, wrapper, tuple(sorted(ignored))


def _group_modules(tensors: Mapping[str, torch.Tensor], where: str) -> dict[str, dict[str, str]]:
    """{module path: {"weight": key, "bias": key}}; refuses tensors that no Linear layer has."""
    modules: dict[str, dict[str, str]] = {}
    for key in tensors:
        module, _, param = key.rpartition(".")
        if param not in ("weight", "bias"):
            raise CheckpointError(
                f"{where}: {key!r} is not a weight or a bias (batch norm or another layer type?); only a chain of "
                "Linear layers can be imported.")
        modules.setdefault(module, {})[param] = key
    for module, params in modules.items():
        w = tensors[params["weight"]] if "weight" in params else None
        if w is None:
            raise CheckpointError(f"{where}: layer {module!r} has a bias but no weight.")
        if w.dim() in (3, 4, 5):
            raise CheckpointError(
                f"{where}: {params['weight']!r} has shape {tuple(w.shape)}, a {w.dim() - 2}-D convolution "
                "weight: this is a CNN; only fully connected networks (chains of Linear layers) can be imported.")
        if w.dim() != 2:
            raise CheckpointError(f"{where}: {params['weight']!r} has shape {tuple(w.shape)}, not a Linear "
                                  "weight (out_features, in_features).")
        if "bias" not in params:
            raise CheckpointError(f"{where}: layer {module!r} has no bias; our MLP needs one in every layer.")
        b = tensors[params["bias"]]
        if tuple(b.shape) != (w.shape[0],):
            raise CheckpointError(f"{where}: {params['bias']!r} has shape {tuple(b.shape)} but its weight has "
                                  f"{w.shape[0]} rows.")
    return modules


def _layer_order(modules: Mapping[str, Mapping[str, str]], tensors: Mapping[str, torch.Tensor],
                 where: str) -> list[str]:
    """Modules in forward order: by the numbers in their names (fc1 < fc2, 0 < 2 < 4, layers.10 after layers.9);
    when some names carry no number, by the only order in which the shapes chain."""
    numbers = {m: tuple(int(n) for n in re.findall(r"\d+", m)) for m in modules}
    if all(numbers.values()) and len(set(numbers.values())) == len(numbers):
        return sorted(modules, key=numbers.__getitem__)
    shape = {m: tuple(tensors[p["weight"]].shape) for m, p in modules.items()}  # (out, in)
    starts = [m for m in modules if not any(shape[o][0] == shape[m][1] for o in modules if o != m)]
    order: list[str] = []
    while len(starts) == 1:
        order.append(starts[0])
        starts = [m for m in modules if m not in order and shape[m][1] == shape[order[-1]][0]]
    if len(order) != len(modules):
        raise CheckpointError(f"{where}: cannot tell the order of the layers {sorted(modules)}: their names carry "
                              "no layer numbers and their shapes do not chain in exactly one way.")
    return order


def _recognise(tensors: Mapping[str, torch.Tensor], where: str) -> tuple[tuple[ForeignLayer, ...], str]:
    """The Linear chain in ``tensors`` -> (layers in forward order, common module prefix); refuses non-chains."""
    modules = _group_modules(tensors, where)
    order = _layer_order(modules, tensors, where)
    layers = tuple(ForeignLayer(m, modules[m]["weight"], modules[m]["bias"],
                                int(tensors[modules[m]["weight"]].shape[1]),
                                int(tensors[modules[m]["weight"]].shape[0])) for m in order)
    if len(layers) < 2:
        raise CheckpointError(f"{where}: found {len(layers)} Linear layer; a network needs at least 2 (one hidden "
                              "layer) to be imported.")
    for prev, nxt in itertools.pairwise(layers):
        if nxt.in_features != prev.out_features:
            raise CheckpointError(
                f"{where}: the shapes do not chain: {nxt.weight_key!r} takes {nxt.in_features} inputs but "
                f"{prev.weight_key!r} gives {prev.out_features} outputs.")
    parts = [layer.module.split(".") for layer in layers]
    common = list(itertools.takewhile(lambda c: len(set(c)) == 1, zip(*(p[:-1] for p in parts))))
    prefix = "".join(c[0] + "." for c in common)
    return layers, prefix


def _read_foreign(path: str | os.PathLike[str]) -> tuple[ForeignModel, dict[str, torch.Tensor]]:
    """Scan, load (weights_only) and recognise a foreign file -> (ForeignModel, its tensors by original key)."""
    path = Path(path)
    data = _read_bytes(path)
    scan = _scan_bytes(data, path)
    payload = _torch_load(data, path)
    tensors, wrapper, ignored = _unwrap(payload, str(path))
    layers, prefix = _recognise(tensors, str(path))
    used = {k for layer in layers for k in (layer.weight_key, layer.bias_key)}
    for key in used:
        t = tensors[key]
        if scan.tensor_shapes.get(f"{wrapper}/{key}" if wrapper else key) != tuple(t.shape):
            raise CheckpointError(f"{path}: {key!r} loaded with another shape than its record declares.")
        if not t.is_floating_point():
            raise CheckpointError(f"{path}: {key!r} has dtype {t.dtype}; expected floating-point weights.")
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path}: {key!r} contains NaN or infinite values; the model is unusable.")
    dtype = str(tensors[layers[0].weight_key].dtype)
    foreign = ForeignModel(path, scan, layers, wrapper, prefix, parse_official_name(path.name), ignored, dtype)
    return foreign, tensors


def inspect_foreign(path: str | os.PathLike[str]) -> ForeignModel:
    """Recognise the chain of Linear layers in a foreign PyTorch file (see the module docstring for the layouts).

    Safe on untrusted files: :func:`scan_torch_file` first, then ``torch.load(weights_only=True)``. Raises
    CheckpointError for another format, a pickle carrying code, oversized declarations, a CNN, a missing bias,
    shapes that do not chain, fewer than 2 layers, or non-finite weights.
    """
    return _read_foreign(path)[0]


# ----------------------------------------------------------------------------------------------------------------
# Step 4: decide activation and dataset, build our MLP, write our checkpoint
# ----------------------------------------------------------------------------------------------------------------
def _choose(given: str | None, hinted: str | None, what: str, where: Path) -> tuple[str, str]:
    """(value, where it came from): the argument wins over the file name; refuse when neither says."""
    if given is not None:
        return str(given), "argument"
    if hinted is not None:
        return hinted, "file name"
    example = "softplus" if what == "activation" else "mnist"
    raise CheckpointError(f"{where.name}: the {what} is not stored in a state dict and the file name does not "
                          f"give it; pass {what}=... (e.g. {what}={example!r}).")


def _check_fits(foreign: ForeignModel, dataset: str, depth_hint: int | None) -> None:
    where = foreign.path.name
    if dataset not in DATASET_SHAPES:
        raise CheckpointError(f"{where}: dataset {dataset!r} is not supported; choose one of "
                              f"{', '.join(DATASET_SHAPES)}.")
    in_dim, n_classes = DATASET_SHAPES[dataset]
    if foreign.in_dim != in_dim:
        raise CheckpointError(f"{where}: the first layer takes {foreign.in_dim} inputs but {dataset} images have "
                              f"{in_dim} pixels (28x28); this model is not for {dataset}.")
    if foreign.n_classes != n_classes:
        raise CheckpointError(f"{where}: the last layer has {foreign.n_classes} outputs but {dataset} has "
                              f"{n_classes} classes.")
    if depth_hint is not None and depth_hint != foreign.depth:
        raise CheckpointError(f"{where}: the file name says {depth_hint} layers but the weights have "
                              f"{foreign.depth} ({foreign.describe()}); is it the right file?")


def _source_record(foreign: ForeignModel, activation_from: str, dataset_from: str) -> dict[str, Any]:
    """The provenance kept in the checkpoint's metadata["source"]."""
    return {
        "kind": "import",
        "file": foreign.path.name,
        "sha256": foreign.scan.sha256,
        "size_bytes": foreign.scan.size_bytes,
        "container": foreign.scan.format,
        "wrapper_key": foreign.wrapper_key,
        "prefix": foreign.prefix,
        "original_dtype": foreign.dtype,
        "original_keys": sorted(foreign.key_map().values()),
        "key_map": foreign.key_map(),
        "ignored_entries": list(foreign.ignored),
        "name_fields": foreign.hints.as_dict() if foreign.hints else None,
        "activation_from": activation_from,
        "dataset_from": dataset_from,
    }


def _build_model(foreign: ForeignModel, tensors: Mapping[str, torch.Tensor], activation: str) -> MLP:
    try:
        model = MLP(foreign.in_dim, foreign.widths, foreign.n_classes, activation)
    except CRCError as exc:
        raise CheckpointError(f"{foreign.path.name}: {exc}") from None
    state = {ours: tensors[orig].detach().to(torch.float32) for ours, orig in foreign.key_map().items()}
    model.load_state_dict(state, strict=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def _import(path: str | os.PathLike[str], activation: str | None, dataset: str | None,
            name: str | None) -> tuple[MLP, dict[str, Any], ForeignModel]:
    """import_model's work, also returning what was read."""
    foreign, tensors = _read_foreign(path)
    hints = foreign.hints
    act, act_from = _choose(activation, hints.activation if hints else None, "activation", foreign.path)
    ds, ds_from = _choose(dataset, hints.dataset if hints else None, "dataset", foreign.path)
    ds = normalize_dataset(ds)
    _check_fits(foreign, ds, hints.depth if hints else None)
    model = _build_model(foreign, tensors, act)
    trained_kind, gamma, crt_eps = training_from_name(hints)
    training = (f"CRT γ={gamma:g} ε={crt_eps:g}" if trained_kind == "crt" and crt_eps is not None
                else f"γ={gamma:g}" if gamma is not None else None)
    label = (f"{model.describe()}, {training} (imported; training read from the file name)" if training
             else f"{model.describe()} (imported; training unknown)")
    metadata = model_record(
        dataset=ds, kind=IMPORTED_KIND, label=label, command=None, gamma=gamma, crt_eps=crt_eps,
        extra={"name": name or (hints.stem if hints else _model_stem(foreign.path.name)),
               "trained_kind": trained_kind, "source": _source_record(foreign, act_from, ds_from)})
    return model, metadata, foreign


def training_from_name(hints: NameHints | None) -> tuple[str | None, float | None, float | None]:
    """(training kind, γ, CRT ε) an official file name states: ``..._L2_<eps>_EIGEN_<gamma>`` -> ("crt", gamma, eps)
    (curvature-regularized training against l2 attacks of radius eps, the paper's CRT); a regularizer alone ->
    ("gamma", gamma, None); anything else -> (None, None, None): unknown, never guessed as standard training."""
    if hints is None or hints.gamma is None:
        return None, None, None
    if hints.attack_norm == "L2" and hints.attack_eps is not None:
        return "crt", hints.gamma, hints.attack_eps
    return "gamma", hints.gamma, None


def import_model(path: str | os.PathLike[str], *, activation: str | None = None, dataset: str | None = None,
                 name: str | None = None) -> tuple[MLP, dict[str, Any]]:
    """Read a foreign MLP file and return (our MLP in eval mode, float32; the metadata to save with it).

    ``activation`` / ``dataset`` default to the official file name's fields and are required when the name has
    none. The weights must fit the dataset (784 inputs, 10 classes for mnist / fashion-mnist) and the name's depth.
    The metadata is a :func:`crc_core.checkpoints.model_record` (the keys a trained model's record has) with
    ``kind="imported"`` (how the model came here: it was not trained by crc_core), ``dataset``, ``label`` (e.g.
    ``"2x[1024] softplus, CRT γ=0.005 ε=1.58 (imported; training read from the file name)"``), ``gamma`` /
    ``crt_eps`` / ``trained_kind`` as the official name states them (:func:`training_from_name`; None = unknown),
    ``command`` None (:func:`import_checkpoint`'s callers set it), ``epochs`` None, ``metrics`` {}, plus ``name``
    (default: the file name without extension) and ``source`` (file, SHA-256, original keys...: see the module
    docstring). Raises CheckpointError; runs nothing.
    """
    model, metadata, _ = _import(path, activation, dataset, name)
    return model, metadata


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_checkpoint` did: the checkpoint written, the model, its metadata, what was read."""

    path: Path
    model: MLP
    metadata: dict[str, Any]
    foreign: ForeignModel = field(repr=False)

    def summary_lines(self) -> list[str]:
        """Human-readable lines for a CLI or a log (the library itself prints nothing)."""
        src, f = self.metadata["source"], self.foreign
        lines = [
            f"Read {src['file']} ({src['container']} torch file, {src['size_bytes']:,} bytes, "
            f"sha256 {src['sha256'][:16]}...)",
            f"Layers: {f.describe()}" + (f", under {f.wrapper_key!r}" if f.wrapper_key else ""),
            f"Activation: {self.model.activation_name} (from the {src['activation_from']}); "
            f"dataset: {self.metadata['dataset']} (from the {src['dataset_from']})",
        ]
        if f.hints is not None:
            lines.append(f"Name fields: {f.hints.as_dict()}")
        if f.ignored:
            lines.append(f"Ignored entries: {', '.join(f.ignored)}")
        if f.dtype != "torch.float32":
            lines.append(f"Note: the weights were {f.dtype}, stored as float32; certificates are for the stored model.")
        if self.model.activation_name not in CURVATURE_ACTIVATIONS:
            lines.append(f"Note: {self.model.activation_name} has no curvature bound; this model can be evaluated "
                         "and attacked but not certified with CRC.")
        lines.append(f"Wrote {self.path} ({self.model.describe()}, name {self.metadata['name']!r})")
        return lines


def import_checkpoint(path: str | os.PathLike[str], out: str | os.PathLike[str], *, activation: str | None = None,
                      dataset: str | None = None, name: str | None = None,
                      metadata: Mapping[str, Any] | None = None, overwrite: bool = False) -> ImportResult:
    """Import a foreign MLP file (:func:`import_model`) and save it as our checkpoint at ``out``.

    ``metadata`` adds entries (e.g. ``command``) to the saved metadata. ``out`` must not be the source file and
    must not exist unless ``overwrite``. Every check runs before anything is written (the write is atomic).
    """
    src, dst = Path(path), Path(out)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise CheckpointError(f"The output {dst} is the file being imported; choose another path.")
    if dst.exists() and not overwrite:
        raise CheckpointError(f"{dst} already exists; choose another path or pass overwrite=True.")
    model, meta, foreign = _import(src, activation, dataset, name)
    meta.update(dict(metadata or {}))
    written = save_checkpoint(dst, model, meta)
    return ImportResult(written, model, meta, foreign)
