"""Builders of hostile model files (issue 25): tiny files that claim gigabytes, duplicate archive entries,
allocating pickles, forged safetensors headers. Shared by tests/test_bombs.py and tests/test_fuzz_inputs.py; each
builder returns the file's bytes and runs nothing."""

from __future__ import annotations

import collections
import io
import itertools
import json
import pickle
import struct
import zipfile

import torch

# name -> (storage numel, shape, stride): one float32 tensor each
Spec = dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]]


def forged_zip(spec: Spec, *, record_bytes: int | None = None, first_pickle: bytes | None = None) -> bytes:
    """A torch-style zip whose pickle holds ``spec``'s tensors, each on its own storage (records hold
    ``record_bytes`` bytes, default what the storage declares). ``first_pickle``: an extra ``data.pkl`` entry written
    before the real one (a duplicate name)."""
    storages = {name: object() for name in spec}

    def tensor(name: str):
        _numel, shape, stride = spec[name]

        class Tensor:
            def __reduce__(self):
                return torch._utils._rebuild_tensor_v2, (storages[name], 0, shape, stride, False,
                                                         collections.OrderedDict())
        return Tensor()

    keys = {id(s): str(i) for i, s in enumerate(storages.values())}
    numels = {id(storages[n]): spec[n][0] for n in spec}

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if id(obj) in keys:
                return ("storage", torch.FloatStorage, keys[id(obj)], "cpu", numels[id(obj)])
            return None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(collections.OrderedDict((n, tensor(n)) for n in spec))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        if first_pickle is not None:
            zf.writestr("archive/data.pkl", first_pickle)
        zf.writestr("archive/data.pkl", buf.getvalue())
        for name, key in ((n, keys[id(storages[n])]) for n in spec):
            size = 4 * spec[name][0] if record_bytes is None else record_bytes
            zf.writestr(f"archive/data/{key}", b"\0" * size)
        zf.writestr("archive/version", b"3\n")
        zf.writestr("archive/byteorder", b"little")
    return out.getvalue()


def stride0_mlp(dims: list[int]) -> bytes:
    """The official layout fc1..fcL of ``dims``, every tensor a stride-0 view of a one-float storage (~1 kB)."""
    spec: Spec = {}
    for i, (a, b) in enumerate(itertools.pairwise(dims), start=1):
        spec[f"fc{i}.weight"] = (1, (b, a), (0, 0))
        spec[f"fc{i}.bias"] = (1, (b,), (0,))
    return forged_zip(spec)


def stride0_layers(n: int, side: int) -> bytes:
    """A chain of ``n`` stride-0 layers of ``side`` units on 784 inputs (the issue's 6 KB file: 40 x 16000)."""
    return stride0_mlp([784] + [side] * (n - 1) + [10])


def legacy_claim(numel: int) -> bytes:
    """A legacy torch file (~370 bytes) whose pickle declares a float storage of ``numel`` elements."""
    storage = object()

    class Tensor:
        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, (storage, 0, (numel,), (1,), False, collections.OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", numel, None) if obj is storage else None

    buf = io.BytesIO()
    for header in (torch.serialization.MAGIC_NUMBER, torch.serialization.PROTOCOL_VERSION, {"little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    Pickler(buf, protocol=2).dump({"format": "crc-explorer-checkpoint", "state_dict": {"w": Tensor()}})
    pickle.dump(["0"], buf, protocol=2)
    buf.write(numel.to_bytes(8, "little") + b"\0" * 64)
    return buf.getvalue()


class _Bytearray:
    def __init__(self, n: int) -> None:
        self.n = n

    def __reduce__(self):
        return bytearray, (self.n,)


def bytearray_bomb(n: int = 10**10) -> bytes:
    """A torch.save zip whose pickle calls bytearray(n) (allow-listed by torch's weights_only unpickler)."""
    good = io.BytesIO()
    torch.save({"fc1.weight": torch.zeros(2, 2)}, good)
    buf = io.BytesIO()
    pickle.Pickler(buf, protocol=2).dump({"x": _Bytearray(n)})
    return replace_pickle(good.getvalue(), lambda _old: buf.getvalue())


def replace_pickle(archive: bytes, edit) -> bytes:
    """A torch zip ``archive`` with its ``data.pkl`` replaced by ``edit(old pickle bytes)``."""
    src = zipfile.ZipFile(io.BytesIO(archive))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for info in src.infolist():
            data = src.read(info)
            zf.writestr(info.filename, edit(data) if info.filename.endswith("/data.pkl") else data)
    return out.getvalue()


def duplicate_pickle(first: bytes) -> bytes:
    """A valid official-layout file with another ``data.pkl`` (``first``) placed before the real one."""
    g = torch.Generator().manual_seed(0)
    sd = {"fc1.weight": torch.randn(16, 784, generator=g), "fc1.bias": torch.zeros(16),
          "fc2.weight": torch.randn(10, 16, generator=g), "fc2.bias": torch.zeros(10)}
    buf = io.BytesIO()
    torch.save(sd, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for info in src.infolist():
            if info.filename.endswith("/data.pkl"):
                zf.writestr(info.filename, first)
            zf.writestr(info.filename, src.read(info))
    return out.getvalue()


def safetensors_bytes(header: dict, body: bytes) -> bytes:
    """A safetensors file from a header dict and the raw bytes after it."""
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body
