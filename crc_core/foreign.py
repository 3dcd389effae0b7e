"""Recognise a chain of ``nn.Linear`` layers in a foreign file's tensors (any depth, any common naming).

Layouts: the official ``fc1..fcN``, an ``nn.Sequential`` (``0.weight``, ``2.weight``, ... with gaps where the
activations sit), ``layers.N``, any prefix (``model.``, ``module.`` from DataParallel), or a dict wrapping the weights
under one of :data:`WRAPPER_KEYS`. The file is read through the loading gate (crc_core/safe_load.py): torch files
with ``weights_only``, safetensors files with the ``safetensors`` package, both after the size checks.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoints import FORMAT_TAG
from .errors import CheckpointError
from .official_names import NameHints, parse_official_name
from .safe_load import FileScan, load_file

__all__ = ["WRAPPER_KEYS", "ForeignLayer", "ForeignModel", "inspect_foreign", "read_foreign"]

# Keys under which training scripts commonly wrap a state dict, most specific first.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "state")


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
    # numbers compared as (digit count, digits): numeric order without int() (a 5,000-digit name is not an error)
    numbers = {m: tuple((len(n.lstrip("0")), n.lstrip("0")) for n in re.findall(r"\d+", m)) for m in modules}
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


def read_foreign(path: str | os.PathLike[str]) -> tuple[ForeignModel, dict[str, torch.Tensor]]:
    """Load through the gate (crc_core/safe_load.py) and recognise a foreign file -> (ForeignModel, its tensors by
    original key). The NaN check runs after the gate's size limits, so it never touches an unbounded view."""
    path = Path(path)
    scan, payload = load_file(path)
    tensors, wrapper, ignored = _unwrap(payload, str(path))
    layers, prefix = _recognise(tensors, str(path))
    for key in (k for layer in layers for k in (layer.weight_key, layer.bias_key)):
        t = tensors[key]
        if not t.is_floating_point():
            raise CheckpointError(f"{path}: {key!r} has dtype {t.dtype}; expected floating-point weights.")
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path}: {key!r} contains NaN or infinite values; the model is unusable.")
    dtype = str(tensors[layers[0].weight_key].dtype)
    foreign = ForeignModel(path, scan, layers, wrapper, prefix, parse_official_name(path.name), ignored, dtype)
    return foreign, tensors


def inspect_foreign(path: str | os.PathLike[str]) -> ForeignModel:
    """Recognise the chain of Linear layers in a foreign PyTorch file (see the module docstring for the layouts).

    Safe on untrusted files (the loading gate: nothing runs, sizes bounded before anything is allocated). Raises
    CheckpointError for another format, a pickle carrying code, oversized declarations, a CNN, a missing bias,
    shapes that do not chain, fewer than 2 layers, or non-finite weights.
    """
    return read_foreign(path)[0]
