"""safetensors files (the format model hubs use) through the loading gate (crc_core/safe_load.py).

A safetensors file is an 8-byte little-endian header length, a JSON header ``{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {...}}`` and the raw bytes. It holds no code. The gate checks the
header before anything is allocated: known dtypes, shapes of non-negative integers, each tensor's byte range exactly
its numel × element size, ranges inside the file and not overlapping, no duplicate names, and the same totals as a
torch file (the gate's running total, passed in). Only then the ``safetensors`` package reads the same bytes.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

__all__ = ["load_safetensors", "scan_safetensors"]

# safetensors dtype names -> element size in bytes (the dtypes a model file holds; others are refused by name)
DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise CheckpointError(f"duplicate names in the safetensors header: {dup[:3]}")
    return dict(pairs)


def _header(data: bytes, path: Path) -> tuple[dict[str, Any], int]:
    """The parsed JSON header and where the tensor bytes start."""
    n = struct.unpack("<Q", data[:8])[0]
    if 8 + n > len(data):
        raise CheckpointError(f"{path}: its safetensors header claims {n:,} bytes, more than the file holds.")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"), object_pairs_hook=_no_duplicates)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}; refused.") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: its safetensors header is not valid JSON ({str(exc)[:120]}).") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: its safetensors header is not a JSON object.")
    return header, 8 + n


def _entry(name: str, spec: Any, body: int, path: Path) -> tuple[tuple[int, ...], int, int, int]:
    """One header entry checked -> (shape, element size, begin, end)."""
    ok = (isinstance(spec, dict) and spec.get("dtype") in DTYPE_SIZES and isinstance(spec.get("shape"), list)
          and isinstance(spec.get("data_offsets"), list) and len(spec["data_offsets"]) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                  for v in (*spec["shape"], *spec["data_offsets"])))
    if not ok:
        raise CheckpointError(f"{path}: the safetensors entry {name[:80]!r} is malformed or has an unsupported dtype "
                              f"(supported: {', '.join(DTYPE_SIZES)}).")
    shape, size = tuple(spec["shape"]), DTYPE_SIZES[spec["dtype"]]
    begin, end = spec["data_offsets"]
    if not begin <= end <= body:
        raise CheckpointError(f"{path}: the safetensors entry {name[:80]!r} points outside the file; refused.")
    return shape, size, begin, end


def scan_safetensors(data: bytes, path: Path, add_view: Callable[[tuple[int, ...], int], None],
                     ) -> tuple[int, dict[str, tuple[int, ...]]]:
    """The gate's step 5 on a safetensors header -> (bytes declared, shapes by name). ``add_view(shape, itemsize)``
    is the gate's running total (:func:`crc_core.safe_load.check_totals`), called for each entry before its size
    is trusted."""
    header, start = _header(data, path)
    header.pop("__metadata__", None)
    shapes, ranges = {}, []
    for name, spec in header.items():
        shape, size, begin, end = _entry(name, spec, len(data) - start, path)
        add_view(shape, size)
        nbytes = size * math.prod(shape)
        if end - begin != nbytes:
            raise CheckpointError(f"{path}: the safetensors entry {name[:80]!r} has shape {shape} ({nbytes:,} bytes) "
                                  f"but {end - begin:,} bytes of data; refused.")
        shapes[name] = shape
        ranges.append((begin, end, name))
    ranges.sort()
    for (_, end, a), (begin, _, b) in itertools.pairwise(ranges):
        if begin < end:
            raise CheckpointError(f"{path}: the safetensors entries {a[:40]!r} and {b[:40]!r} overlap; refused.")
    return sum(e - b for b, e, _ in ranges), shapes


def load_safetensors(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file already scanned by the gate (CPU, copies of the bytes)."""
    try:
        from safetensors.torch import load
    except ImportError:
        raise CheckpointError(f"{path} is a safetensors file; reading it needs the safetensors package "
                              "(pip install safetensors).") from None
    try:
        return dict(load(data))
    except Exception as exc:
        raise CheckpointError(f"{path}: the safetensors package refused it ({str(exc)[:160]}).") from None
