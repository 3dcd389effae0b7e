"""Bring your own model: import a foreign PyTorch MLP (e.g. the paper's official checkpoints) as our checkpoint.

A *foreign* file is a ``torch.save`` file or a safetensors file holding the weights of a chain of ``nn.Linear``
layers: the official files (``torch.save(model.state_dict())``, keys ``fc1.weight``, ``fc1.bias``, ... up to
``fc4``), an ``nn.Sequential``, ``layers.N``, any prefix, or a dict wrapping the weights (crc_core/foreign.py
recognises the layout). The architecture is read off the shapes (any depth); the activation and the dataset are not
stored in a state dict, so they come from the caller or from the official file name (crc_core/official_names.py).

Safety: every file goes through the loading gate (crc_core/safe_load.py) before a tensor is allocated: the format
is recognised by its first bytes, torch's ``weights_only`` unpickler reads the structure with storages on the meta
device (a pickle referring to code is refused, nothing runs), and every storage, every tensor view and their totals
are checked against the file's bytes and the limits (:data:`MAX_IMPORT_BYTES`, :data:`MAX_LOAD_PARAMETERS`); only
then the same bytes are loaded and the weights checked for NaN.

Then the layout is checked against the dataset (:func:`import_model`) and written with
:func:`crc_core.checkpoints.save_checkpoint` (:func:`import_checkpoint`), with a record shaped like a trained model's
(:func:`crc_core.checkpoints.model_record`, ``kind="imported"``, the training only as far as an official name
states it) saying where it came from (``metadata["source"]``: file name, SHA-256, original key names, parsed name
fields). ``python -m crc_core import`` (crc_core/cli/import_.py) is the command line for it. Every refusal is a
:class:`~crc_core.errors.CheckpointError` (a ValueError) naming the problem; nothing is written.

Example::

    from crc_core.importers import import_checkpoint, inspect_foreign
    inspect_foreign("mnist_2_softplus_L2_1.58_EIGEN_0.005").describe()   # '784-1024-10 (2 Linear layers: fc1, fc2)'
    result = import_checkpoint("mnist_2_softplus_L2_1.58_EIGEN_0.005", "runs/official.pt")  # name gives the rest
    result = import_checkpoint("my_net.pth", "runs/mine.pt", activation="tanh", dataset="fashion-mnist")
    print("\\n".join(result.summary_lines()))                                # what a CLI shows
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .activations import CURVATURE_ACTIVATIONS
from .checkpoints import model_record, save_checkpoint, sidecar_path
from .data import FASHION_MNIST_CLASSES, MNIST_CLASSES
from .errors import CheckpointError, CRCError
from .foreign import WRAPPER_KEYS, ForeignLayer, ForeignModel, inspect_foreign, read_foreign
from .models import MLP
from .official_names import NameHints, model_stem, normalize_dataset, parse_official_name, training_from_name
from .safe_load import MAX_LOAD_BYTES, MAX_LOAD_PARAMETERS, FileScan, scan_file

__all__ = [
    "DATASET_SHAPES", "IMPORTED_KIND", "MAX_IMPORT_BYTES", "MAX_LOAD_PARAMETERS", "WRAPPER_KEYS", "FileScan",
    "ForeignLayer", "ForeignModel", "ImportResult", "NameHints", "import_checkpoint", "import_model",
    "inspect_foreign", "normalize_dataset", "parse_official_name", "scan_torch_file", "training_from_name",
]

# The gate's limit on the bytes all tensor views of one file materialise (crc_core/safe_load.py says why).
MAX_IMPORT_BYTES = MAX_LOAD_BYTES

# (input size, number of classes) of each dataset a model can be imported for: 28x28 grey images (raw pixels).
DATASET_SHAPES: dict[str, tuple[int, int]] = {"mnist": (28 * 28, len(MNIST_CLASSES)),
                                              "fashion-mnist": (28 * 28, len(FASHION_MNIST_CLASSES))}

# metadata["kind"] of an imported model (trained models have "standard" / "gamma" / "crt"): crc_core did not train
# it, so its training is only what the file name says (metadata["trained_kind"]).
IMPORTED_KIND = "imported"


def scan_torch_file(path: str | os.PathLike[str]) -> FileScan:
    """The loading gate on a file without loading a tensor (:func:`crc_core.safe_load.scan_file`): a torch.save or
    safetensors file holding only tensors and containers, within the limits; CheckpointError otherwise."""
    return scan_file(path)


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
    foreign, tensors = read_foreign(path)
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
        extra={"name": name or (hints.stem if hints else model_stem(foreign.path.name)),
               "trained_kind": trained_kind, "source": _source_record(foreign, act_from, ds_from)})
    return model, metadata, foreign




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
    must not exist, nor its metadata copy ``<out>.json``, unless ``overwrite``. Every check runs before anything is
    written (the write is atomic).
    """
    src, dst = Path(path), Path(out)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise CheckpointError(f"The output {dst} is the file being imported; choose another path.")
    for taken in (dst, sidecar_path(dst)):
        if (taken.exists() or taken.is_symlink()) and not overwrite:
            raise CheckpointError(f"{taken} already exists; choose another path or pass overwrite=True.")
    model, meta, foreign = _import(src, activation, dataset, name)
    meta.update(dict(metadata or {}))
    written = save_checkpoint(dst, model, meta)
    return ImportResult(written, model, meta, foreign)
