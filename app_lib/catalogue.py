"""The models and datasets every page picks from: the catalogue (shipped, trained, uploaded and imported models),
model and dataset caches, the curvature-bound table of a model, and the page context :class:`Ctx`.

Shipped models and datasets are cached with ``st.cache_resource`` (read-only, never mutate them); what a user
uploads lives in ``st.session_state``; what a user trains or imports is on disk (:mod:`app_lib.registry`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st
import torch

from app_lib import registry
from app_lib.registry import ModelRef
from app_lib.state import MODEL_KEY
from crc_core.bounds import Bounds, curvature_bounds
from crc_core.compare import refusal
from crc_core.data import Dataset, DatasetInfo, available_datasets, load_dataset
from crc_core.errors import CRCError
from crc_core.importers import normalize_dataset
from crc_core.models import MLP
from crc_core.run_records import kept_text

UPLOADS_KEY = "crc_uploads"  # id -> (ModelRef, MLP, metadata) uploaded in this session


@st.cache_resource(show_spinner=False, max_entries=32)
def _load_file_model(key: str, _ref: ModelRef) -> tuple[MLP, dict[str, Any]]:
    model, meta = registry.load(_ref)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, meta


@st.cache_resource(show_spinner=False, max_entries=16)
def _on_device(key: str, device: str, _model: MLP) -> MLP:
    """A copy of a cached CPU model on another device (the cached CPU model itself is never moved)."""
    m = MLP.from_config(_model.config())
    m.load_state_dict(_model.state_dict())
    for p in m.parameters():
        p.requires_grad_(False)
    return m.to(device).eval()


@st.cache_resource(show_spinner="Loading the dataset…", max_entries=4)
def cached_test_set(name: str) -> Dataset:
    """The test split of dataset ``name`` (cached for every session)."""
    return load_dataset(name, "test")


BOUNDS_KEPT = 64  # curvature-bound tables kept for the process (one per model, method and device)


@st.cache_resource(show_spinner=False)
def _bounds_store() -> dict[tuple[str, str, str], Bounds]:
    return {}


def bounds_table(key: str, method: str, device: str, _model: MLP) -> Bounds:
    """Certification-grade bounds for all C(C−1) pairs of a model, computed once per (model key, method, device)
    for the process. The first time, one predicted class at a time under a progress bar (a 2×[1024] net takes
    ~20 s on a small CPU): call it where the bar is in view."""
    store, skey = _bounds_store(), (key, method, device)
    if skey in store:
        return store[skey]
    C = _model.n_classes
    what = "Computing the curvature bounds of this model (once per model)"
    bar = st.progress(0.0, text=f"{what}: class pairs 0 of {C * (C - 1)}…")
    parts = []
    try:
        for yc in range(C):
            t = torch.tensor([c for c in range(C) if c != yc], device=_model.layers[0].weight.device)
            parts.append(curvature_bounds(_model, torch.full_like(t, yc), t, method=method))  # type: ignore[arg-type]
            bar.progress((yc + 1) / C, text=f"{what}: class pairs {(yc + 1) * (C - 1)} of {C * (C - 1)}…")
    finally:
        bar.empty()
    got = Bounds(*(torch.cat([getattr(p, f) for p in parts]) for f in ("y", "t", "m", "M", "K")), parts[0].method)
    while len(store) >= BOUNDS_KEPT:
        store.pop(next(iter(store)))
    store[skey] = got
    return got


@st.cache_data(show_spinner=False, ttl=60)
def dataset_infos() -> dict[str, DatasetInfo]:
    """name -> what :func:`crc_core.data.available_datasets` found (splits present, where), re-checked every minute."""
    return {d.name: d for d in available_datasets()}


def dataset_names(split: str = "test") -> list[str]:
    """Datasets on this machine that have ``split`` (the pages need "test"; the Train page "train")."""
    return [name for name, info in dataset_infos().items() if split in info.splits]


DATASET_TITLES = {"embedded": "Fashion-MNIST subset, shipped", "fashion-mnist": "Fashion-MNIST, clothing",
                  "mnist": "MNIST, digits"}


def dataset_label(name: str) -> str:
    """The dataset picker's label: ``"mnist (MNIST, digits; test split only)"``."""
    info = dataset_infos().get(name)
    splits = "" if info is None else "; train + test" if "train" in info.splits else "; test split only"
    return f"{name} ({DATASET_TITLES.get(name, name)}{splits})"


def missing_train_split() -> list[str]:
    """Datasets found with a test split but no train split (they can be tested on but not trained on here)."""
    return [name for name, info in dataset_infos().items() if "train" not in info.splits]


@dataclass
class Ctx:
    """What a page works with: the picked model (on the chosen device), its metadata, device and dataset."""

    ref: ModelRef
    model: MLP
    meta: dict[str, Any]
    label: str
    device: torch.device
    dataset: str

    @property
    def key(self) -> str:
        """Cache key of the model's weights (changes when the file changes)."""
        return self.ref.key

    def test_set(self) -> Dataset:
        return cached_test_set(self.dataset)

    def bounds(self, method: str = "auto") -> Bounds:
        return bounds_table(self.key, method, str(self.device), self.model)


def uploads() -> dict[str, tuple[ModelRef, MLP, dict[str, Any]]]:
    return st.session_state.setdefault(UPLOADS_KEY, {})


def open_upload(data: bytes, filename: str) -> ModelRef | registry.ForeignUpload:
    """An uploaded file: our checkpoint is kept in this session and becomes the picked model (its ref comes back);
    a foreign MLP file comes back as a :class:`registry.ForeignUpload` to confirm and import
    (:func:`import_upload`). Anything else raises CRCError in one sentence; the picked model stays."""
    got = registry.open_upload(data, filename)
    if isinstance(got, registry.ForeignUpload):
        return got
    ref, model, meta = got
    for p in model.parameters():
        p.requires_grad_(False)
    uploads()[ref.id] = (ref, model, meta)
    st.session_state[MODEL_KEY] = ref.id
    return ref


def import_test_set(dataset: str) -> Dataset | None:
    """The test images an import for ``dataset`` is checked on (None when they are not on this machine)."""
    home = home_dataset(dataset, dataset_names())
    return cached_test_set(home) if home is not None else None


def import_upload(upload: registry.ForeignUpload, *, activation: str, dataset: str, name: str = ""
                  ) -> tuple[ModelRef, bool]:
    """Import a foreign upload into the user's models folder (:func:`registry.import_upload`; checked on the
    dataset's test images when they are on this machine) and make it the picked model (the dataset picker follows
    it) -> (its entry, True when written now, False when imported before)."""
    ref, new = registry.import_upload(upload, activation=activation, dataset=dataset, name=name,
                                      test_set=import_test_set(dataset))
    st.session_state[MODEL_KEY] = ref.id
    return ref, new


def entries() -> tuple[list[str], dict[str, ModelRef], dict[str, str], dict[str, str]]:
    """All pickable models -> (ids in display order, refs, labels, load errors)."""
    refs, metas, errors = _catalogue_metas()
    labels = {i: registry.describe(refs[i], metas[i]) for i in refs}
    return list(refs), refs, labels, errors


def _catalogue_metas() -> tuple[dict[str, ModelRef], dict[str, dict[str, Any]], dict[str, str]]:
    refs: dict[str, ModelRef] = {}
    metas: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for ref, _model, meta in uploads().values():
        refs[ref.id], metas[ref.id] = ref, meta
    for ref in registry.discover():
        try:
            _m, meta = _load_file_model(ref.key, ref)
        except CRCError as exc:
            errors[ref.id] = str(exc)
            continue
        refs[ref.id], metas[ref.id] = ref, meta
    return refs, metas, errors


def default_model(ids: Sequence[str], refs: dict[str, ModelRef]) -> str:
    shipped = [i for i in ids if refs[i].source == "shipped"]
    crt = [i for i in shipped if "crt" in i.lower()]
    return (crt or shipped or list(ids))[0]


def home_dataset(trained_on: str | None, names: Sequence[str]) -> str | None:
    """The dataset among ``names`` a model trained on ``trained_on`` belongs with: the same one, else the same
    images under another name ("fashion-mnist" <-> "embedded", its subset); None when none is on this machine."""
    if not trained_on:
        return None
    if trained_on in names:
        return trained_on
    family = normalize_dataset(trained_on)
    return next((n for n in names if normalize_dataset(n) == family), None)


def dataset_note(trained_on: str | None, dataset: str, home: str | None) -> str | None:
    """One sentence when the test images are not the kind the model was trained on (None when they are)."""
    if not trained_on or normalize_dataset(trained_on) == normalize_dataset(dataset):
        return None
    if home is None:
        family = normalize_dataset(trained_on)
        return (f"This model was trained on {trained_on}, which is not found on this machine, so it is shown "
                f"{dataset} images, on which its predictions and radii mean little: put {family}'s IDX files in "
                f"$CRC_DATA_DIR/{family} and reload.")
    return (f"This model was trained on {trained_on} but the test images are {dataset}, on which its predictions "
            f"and radii mean little: pick {home} above.")


def subset_note(trained_on: str | None, dataset: str, home: str | None) -> str | None:
    """One sentence when a model trained on the full Fashion-MNIST is shown the embedded subset of its test images
    (the same images, a stratified subset of them): why, and how to get all of them; None otherwise."""
    if (dataset != "embedded" or not trained_on or normalize_dataset(trained_on) != "fashion-mnist"
            or trained_on == "embedded"):
        return None
    n = len(cached_test_set("embedded"))
    if home == "embedded":  # the full set is not on this machine
        return (f"This model was trained on the full Fashion-MNIST, whose test split is not on this machine: the "
                f"pages use the embedded subset, {n:,} of the same test images. Put Fashion-MNIST's IDX files in "
                "$CRC_DATA_DIR/fashion-mnist and reload to use all of them.")
    return (f"The embedded subset holds {n:,} of this model's Fashion-MNIST test images; pick {home} above to use "
            "all of them.")


def catalogue_labels() -> dict[str, str]:
    """id -> picker label of every model that loads."""
    ids, _refs, labels, _errors = entries()
    return {i: labels[i] for i in ids}


def catalogue_metadata() -> dict[str, dict[str, Any]]:
    """id -> checkpoint metadata of every model that loads (picker order)."""
    return _catalogue_metas()[1]


def model_by_id(model_id: str, device: torch.device) -> tuple[ModelRef, MLP, dict[str, Any]]:
    """Load any pickable model (for pages that compare several) on ``device``."""
    _ids, refs, _labels, errors = entries()
    if model_id not in refs:
        raise CRCError(errors.get(model_id, f"Model {model_id} is no longer available."))
    ref = refs[model_id]
    model, meta = model_for(ref, device)
    return ref, model, meta


def model_for(ref: ModelRef, device: torch.device) -> tuple[MLP, dict[str, Any]]:
    """The model behind a catalogue entry (uploaded or on disk), checked usable, on ``device``."""
    if ref.source == "uploaded":
        _r, cpu_model, meta = uploads()[ref.id]
    else:
        cpu_model, meta = _load_file_model(ref.key, ref)
    registry.check_usable(cpu_model, allow_relu=True)
    model = cpu_model if device.type == "cpu" else _on_device(ref.key, str(device), cpu_model)
    return model, meta


def has_curvature(model: MLP) -> bool:
    """Whether the model has a curvature bound, so that CRC, the Hessian and Curvature pages apply (the library's
    own rule, :func:`crc_core.compare.refusal`; False for ReLU: its Hessian is zero almost everywhere)."""
    return refusal(model, "crc") is None


def model_rows(ctx: Ctx) -> dict[str, str]:
    """The Home page's description of the picked model: property -> value."""
    meta = ctx.meta
    metrics = meta.get("metrics") or {}
    rows = {
        "Model": registry.describe(ctx.ref, meta) if ctx.ref.source == "trained" else ctx.ref.name,
        "Source": ctx.ref.source,
        "Architecture": registry.arch_text(meta.get("architecture") or ctx.model.config()),
        "Training": registry.kind_text(meta),
        "Trained on": str(meta.get("dataset") or "unknown"),
        "Epochs": str(meta.get("epochs") if meta.get("epochs") is not None else "—"),
        "Device in use": str(ctx.device),
        "Dataset in use": f"{ctx.dataset} (test split)",
    }
    kept = kept_text(meta)
    if kept is not None and kept != "last":
        rows["Weights kept"] = kept
    acc, cert = metrics.get("test_accuracy"), metrics.get("certified_accuracy")
    if isinstance(acc, (int, float)):
        rows["Test accuracy (saved)"] = f"{acc:.1%}"
    if isinstance(cert, (int, float)):
        n = metrics.get("eval_samples")
        on = f", {n} test images" if isinstance(n, int) and not isinstance(n, bool) and n > 0 else ""
        rows[f"Certified accuracy at ρ={metrics.get('eval_rho', 0.5):g} (saved{on})"] = f"{cert:.1%}"
    return rows
