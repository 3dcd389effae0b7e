"""Streamlit glue shared by every page: page set-up, the model picker, caches, the heavy-job lock, errors.

Conventions (docs/DESIGN.md §4): shipped models and datasets are cached with ``st.cache_resource`` (read-only,
never mutate them); the picker's choice lives in ``st.session_state`` so every page sees the same model; one
heavy job at a time per process (:func:`heavy_lock`; training runs wait in line for it,
:func:`train_queue`); errors become readable ``st.error`` boxes (:func:`guard`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st
import torch

from app_lib import jobs, registry
from app_lib.registry import ModelRef
from crc_core.bounds import Bounds, curvature_bounds
from crc_core.data import Dataset, available_datasets, load_dataset
from crc_core.device import default_device, describe_device
from crc_core.errors import CRCError
from crc_core.models import MLP

log = logging.getLogger("crc_explorer")

if os.environ.get("CRC_TORCH_THREADS", "").isdigit() and int(os.environ["CRC_TORCH_THREADS"]) > 0:
    torch.set_num_threads(int(os.environ["CRC_TORCH_THREADS"]))  # e.g. 1 on small shared machines / CI

MODEL_KEY = "crc_model_id"  # the shared choice (a plain session key, survives page switches)
UPLOADS_KEY = "crc_uploads"  # id -> (ModelRef, MLP, metadata) uploaded in this session
DEVICE_KEY = "crc_device"
DATASET_KEY = "crc_dataset"
DEVICE_CHOICES = ("auto", "cpu", "cuda")


# ------------------------------------------------------------------------------------------------ errors
@contextlib.contextmanager
def guard(what: str = "") -> Iterator[None]:
    """Run a page section; show a CRCError's message, or any other exception as one readable line."""
    try:
        yield
    except CRCError as exc:
        st.error(f"{what + ': ' if what else ''}{exc}", icon=":material/warning:")
    except torch.cuda.OutOfMemoryError:
        st.error("The GPU ran out of memory. Choose a smaller model or fewer images, or switch the device to CPU.",
                 icon=":material/warning:")
    except Exception as exc:  # never show a traceback; log it for developers
        log.exception("unexpected error in %s", what or "page")
        st.error(f"{what + ': ' if what else ''}something went wrong ({type(exc).__name__}: {exc}). "
                 "The app is still usable: change a setting or pick another model.", icon=":material/warning:")


# ------------------------------------------------------------------------------------------------ caches
@st.cache_resource(show_spinner=False)
def heavy_lock() -> threading.Lock:
    """One heavy job (training, curvature statistics over many images) at a time in this process."""
    return threading.Lock()


@st.cache_resource(show_spinner=False)
def train_queue() -> jobs.TrainQueue:
    """The process-wide first-come line of training runs waiting for :func:`heavy_lock` (at most
    ``jobs.QUEUE_CAPACITY`` waiting)."""
    return jobs.TrainQueue(heavy_lock())


def session_alive() -> Callable[[], bool]:
    """A check, callable from any thread, that this browser session is still connected to the server.

    A session disconnected for longer than ``server.disconnectedSessionTTL`` is gone for good (the server may drop
    it); a waiting training job uses this to leave the line (``orphan_after``). Outside a real server (AppTest,
    bare mode) it always answers True.
    """
    from streamlit import runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    session_id = ctx.session_id if ctx is not None else None

    def alive() -> bool:
        if session_id is None or not runtime.exists():
            return True
        return bool(runtime.get_instance().is_active_session(session_id))

    return alive


def orphan_after() -> float:
    """Seconds a waiting job's session may stay disconnected (the server's reconnect window) before it leaves."""
    try:
        return float(st.get_option("server.disconnectedSessionTTL"))
    except Exception:
        return jobs.ORPHAN_AFTER


@contextlib.contextmanager
def heavy_job(what: str) -> Iterator[None]:
    """Hold :func:`heavy_lock` for a job that runs in the script; raise a readable CRCError when busy.

    Unlike training runs (which wait in :func:`train_queue`'s line), a job inside the script cannot wait: the
    script would hold the user's page. It is refused, with the number of runs in the line.
    """
    lock = heavy_lock()
    if not lock.acquire(timeout=0.5):
        n = len(train_queue())
        line = f", and {n} training run{'s wait' if n != 1 else ' waits'} in line after it" if n else ""
        raise CRCError(f"Another heavy job (e.g. a training run) is using the machine{line}, so {what} has to "
                       "wait. Try again when it has finished, or stop it on the Train page.")
    try:
        yield
    finally:
        lock.release()


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


@st.cache_resource(show_spinner="Computing curvature bounds for every class pair…", max_entries=64)
def bounds_table(key: str, method: str, device: str, _model: MLP) -> Bounds:
    """Certification-grade bounds for all C(C−1) pairs of a model, cached per (model key, method, device)."""
    return curvature_bounds(_model, method=method)  # type: ignore[arg-type]


@st.cache_data(show_spinner=False, ttl=60)
def dataset_names() -> list[str]:
    return [d.name for d in available_datasets() if "test" in d.splits]


# ------------------------------------------------------------------------------------------------ model picker
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


def add_upload(data: bytes, filename: str) -> ModelRef:
    """Validate and keep an uploaded checkpoint in this session; make it the picked model."""
    ref, model, meta = registry.load_upload(data, filename)
    for p in model.parameters():
        p.requires_grad_(False)
    uploads()[ref.id] = (ref, model, meta)
    st.session_state[MODEL_KEY] = ref.id
    return ref


def _catalogue() -> tuple[list[str], dict[str, ModelRef], dict[str, str], dict[str, str]]:
    """All pickable models -> (ids in display order, refs, labels, load errors)."""
    refs: dict[str, ModelRef] = {}
    labels: dict[str, str] = {}
    errors: dict[str, str] = {}
    for ref, _model, meta in uploads().values():
        refs[ref.id] = ref
        labels[ref.id] = registry.describe(ref, meta)
    for ref in registry.discover():
        try:
            _m, meta = _load_file_model(ref.key, ref)
        except CRCError as exc:
            errors[ref.id] = str(exc)
            continue
        refs[ref.id] = ref
        labels[ref.id] = registry.describe(ref, meta)
    return list(refs), refs, labels, errors


def _default_model(ids: Sequence[str], refs: dict[str, ModelRef]) -> str:
    shipped = [i for i in ids if refs[i].source == "shipped"]
    crt = [i for i in shipped if "crt" in i.lower()]
    return (crt or shipped or list(ids))[0]


def persistent(widget: Callable[..., Any], label: str, store_key: str, default: Any, *,
               valid: Callable[[Any], bool] | None = None, **kwargs: Any) -> Any:
    """Draw ``widget(label, key=..., **kwargs)`` whose value survives page switches.

    The value lives in ``session_state[store_key]`` (a plain key, which Streamlit keeps across pages); the widget
    gets its own key, is seeded from the stored value on every run and copies changes back.
    """
    if store_key not in st.session_state or (valid is not None and not valid(st.session_state[store_key])):
        st.session_state[store_key] = default
    widget_key = f"_w_{store_key}"
    st.session_state[widget_key] = st.session_state[store_key]

    def _copy() -> None:
        st.session_state[store_key] = st.session_state[widget_key]

    return widget(label, key=widget_key, on_change=_copy, **kwargs)


def persistent_selectbox(label: str, options: Sequence[Any], store_key: str, default: Any, *,
                         container: Any = st, format_func: Callable[[Any], str] = str, help: str | None = None
                         ) -> Any:
    """A selectbox whose choice survives page switches (kept in ``session_state[store_key]``)."""
    options = list(options)
    default = default if default in options else options[0]
    return persistent(container.selectbox, label, store_key, default, valid=lambda v: v in options,
                      options=options, format_func=format_func, help=help)


def _device_picker(sb: Any) -> torch.device:
    sb.markdown("### Device")
    choice = persistent_selectbox("Device", DEVICE_CHOICES, DEVICE_KEY, "auto", container=sb,
                                  help="'auto' uses a GPU when there is one, else the CPU.")
    try:
        device = default_device(choice)
    except ValueError as exc:
        sb.warning(f"{exc} Using the CPU instead.", icon=":material/warning:")
        device = torch.device("cpu")
    sb.caption(f"Device in use: {describe_device(device)}")
    st.session_state["crc_device_resolved"] = str(device)
    return device


def current_device() -> torch.device:
    """The device resolved by the sidebar on this run (CPU before any page set-up)."""
    return torch.device(st.session_state.get("crc_device_resolved", "cpu"))


PAGES = (("app.py", "Home", ":material/home:"), ("pages/1_Train.py", "Train", ":material/model_training:"),
         ("pages/2_Certify.py", "Certify", ":material/verified_user:"),
         ("pages/3_Curvature.py", "Curvature", ":material/monitoring:"),
         ("pages/4_Hessian.py", "Hessian", ":material/scatter_plot:"))


def page_setup(title: str, icon: str = ":material/shield:", *, require_model: bool = True) -> Ctx | None:
    """Configure the page and draw the shared sidebar (model picker, device, dataset) -> the page's context.

    With ``require_model`` the page stops with an explanation when no model can be used.
    """
    st.set_page_config(page_title=f"{title} · CRC Explorer", page_icon=icon, layout="wide")
    with st.sidebar:
        st.markdown("## CRC Explorer")
        for path, label, page_icon in PAGES:
            try:
                st.page_link(path, label=label, icon=page_icon)
            except Exception:  # a page run on its own (not through app.py) has no links to the others
                log.debug("no page link for %s", path)
        st.divider()
    sb = st.sidebar.container()  # model and dataset first, device below
    device = _device_picker(st.sidebar.container())
    sb.markdown("### Model")
    ids, refs, labels, errors = _catalogue()
    for rid, msg in errors.items():
        sb.warning(f"Skipped {rid}: {msg}", icon=":material/warning:")
    if not ids:
        sb.info("No model yet. Train one on the **Train** page or upload a checkpoint on the **Home** page.")
        if require_model:
            st.title(title)
            st.info("There is no model to work with yet: train one on the **Train** page (about a minute on a "
                    "CPU) or upload a CRC Explorer checkpoint on the **Home** page.")
            st.stop()
        return None
    pick = persistent_selectbox("Model used by every page", ids, MODEL_KEY, _default_model(ids, refs),
                                container=sb, format_func=lambda i: labels.get(i, i),
                                help="Shipped models, models you trained on the Train page, and checkpoints "
                                     "uploaded on the Home page.")
    ref = refs[pick]
    # model on device
    with guard("Loading the model"):
        model, meta = _model_for(ref, device)
        # dataset
        names = dataset_names() or ["embedded"]
        trained_on = meta.get("dataset") if meta.get("dataset") in names else "embedded"
        dataset = persistent_selectbox("Test images from", names, DATASET_KEY, trained_on, container=sb,
                                       help=f"The model was trained on: {meta.get('dataset') or 'unknown'}.")
        sb.caption(f"Dataset in use: **{dataset}** (test split). Trained on: {meta.get('dataset') or 'unknown'}.")
        n_classes = cached_test_set(dataset).n_classes
        if model.n_classes != n_classes:
            raise CRCError(f"This model has {model.n_classes} output classes but the {dataset} images have "
                           f"{n_classes}: pick another model.")
        return Ctx(ref, model, meta, labels[pick], device, dataset)
    # guard caught an error: the page cannot go on with this model
    if require_model:
        st.info("Pick another model in the sidebar.")
        st.stop()
    return None


def explain(text: str, title: str = "What am I looking at?", expanded: bool = False) -> None:
    """A short explanation for newcomers, in an expander."""
    with st.expander(title, expanded=expanded, icon=":material/lightbulb:"):
        st.markdown(text)


def plot(fig: Any, key: str | None = None) -> None:
    """Show a Plotly figure at container width."""
    st.plotly_chart(fig, width="stretch", key=key, config={"displaylogo": False})


# ------------------------------------------------------------------------------------------------ picked image
IMAGE_KEY = "crc_image_index"  # test-set index of the picked image (shared by Certify and Hessian)
UPLOAD_IMAGE_KEY = "crc_image_upload"  # (name, tensor (784,)) of an image uploaded on the Certify page
USE_UPLOAD_KEY = "crc_use_upload"  # True when the uploaded image is the picked one


def picked_image(ds: Dataset) -> tuple[torch.Tensor, int | None, str]:
    """The image picked on the Certify page (or test image 0) -> (x (784,), true label or None, description)."""
    up = st.session_state.get(UPLOAD_IMAGE_KEY)
    if st.session_state.get(USE_UPLOAD_KEY) and up is not None:
        return up[1], None, f"uploaded image {up[0]}"
    i = int(st.session_state.get(IMAGE_KEY, 0))
    if not 0 <= i < len(ds):
        i = 0
        st.session_state[IMAGE_KEY] = 0
    return ds.images[i], int(ds.labels[i]), f"test image #{i}"


def catalogue_labels() -> dict[str, str]:
    """id -> picker label of every model that loads."""
    ids, _refs, labels, _errors = _catalogue()
    return {i: labels[i] for i in ids}


def model_by_id(model_id: str, device: torch.device) -> tuple[ModelRef, MLP, dict[str, Any]]:
    """Load any pickable model (for pages that compare several) on ``device``."""
    _ids, refs, _labels, errors = _catalogue()
    if model_id not in refs:
        raise CRCError(errors.get(model_id, f"Model {model_id} is no longer available."))
    ref = refs[model_id]
    model, meta = _model_for(ref, device)
    return ref, model, meta


def _model_for(ref: ModelRef, device: torch.device) -> tuple[MLP, dict[str, Any]]:
    """The model behind a catalogue entry (uploaded or on disk), checked usable, on ``device``."""
    if ref.source == "uploaded":
        _r, cpu_model, meta = uploads()[ref.id]
    else:
        cpu_model, meta = _load_file_model(ref.key, ref)
    registry.check_usable(cpu_model)
    model = cpu_model if device.type == "cpu" else _on_device(ref.key, str(device), cpu_model)
    return model, meta


@st.cache_resource(show_spinner=False)
def _survey_store() -> dict[tuple[str, str, int, str], Any]:
    return {}


def measured_curvature(key: str, model: MLP, dataset: str, n_images: int, device: torch.device, label: str = ""
                       ) -> Any:
    """K_lb per pair (crc_core.curvature_stats) over the first ``n_images`` test images, computed once per model
    and kept for the process; shows a progress bar and holds the heavy-job lock while computing."""
    from crc_core.curvature_stats import measured_curvature as _measure

    store = _survey_store()
    skey = (key, dataset, int(n_images), str(device))
    if skey not in store:
        ds = cached_test_set(dataset)
        bar = st.progress(0.0, text=f"Measuring the curvature at {n_images} test images {label}…")
        with heavy_job("the curvature survey"):
            store[skey] = _measure(model, ds.images[:n_images].to(device),
                                   progress=lambda d, n: bar.progress(d / n, text=f"Measuring curvature {label}: "
                                                                                  f"{d}/{n} images"))
        bar.empty()
    return store[skey]
