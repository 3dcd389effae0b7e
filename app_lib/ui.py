"""Streamlit glue shared by every page: page set-up, the model picker, caches, the heavy-job lock, errors.

Conventions (the design notes, "The app"): shipped models and datasets are cached with ``st.cache_resource``
(read-only, never mutate them); the picker's choice lives in ``st.session_state`` so every page sees the same model;
one heavy job at a time per process (:func:`heavy_lock`; training runs wait in line for it, :func:`train_queue`; a
curvature survey waits its turn, :func:`curvature_survey`); errors become readable ``st.error`` boxes
(:func:`guard`).
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
from crc_core.data import Dataset, DatasetInfo, available_datasets, load_dataset
from crc_core.device import default_device, describe_device
from crc_core.errors import CRCError
from crc_core.importers import normalize_dataset
from crc_core.models import MLP

log = logging.getLogger("crc_explorer")

if os.environ.get("CRC_TORCH_THREADS", "").isdigit() and int(os.environ["CRC_TORCH_THREADS"]) > 0:
    torch.set_num_threads(int(os.environ["CRC_TORCH_THREADS"]))  # e.g. 1 on small shared machines / CI

MODEL_KEY = "crc_model_id"  # the shared choice (a plain session key, survives page switches)
UPLOADS_KEY = "crc_uploads"  # id -> (ModelRef, MLP, metadata) uploaded in this session
DEVICE_KEY = "crc_device"
DATASET_KEY = "crc_dataset"
DATASET_FOR_KEY = "crc_dataset_model"  # the model id the dataset picker last followed
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


def _catalogue() -> tuple[list[str], dict[str, ModelRef], dict[str, str], dict[str, str]]:
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


def _default_model(ids: Sequence[str], refs: dict[str, ModelRef]) -> str:
    shipped = [i for i in ids if refs[i].source == "shipped"]
    crt = [i for i in shipped if "crt" in i.lower()]
    return (crt or shipped or list(ids))[0]


def persistent(widget: Callable[..., Any], label: str, store_key: str, default: Any, *,
                valid: Callable[[Any], bool] | None = None, **kwargs: Any) -> Any:
    """Draw ``widget(label, key=..., **kwargs)`` whose value survives page switches.

    The value lives in ``session_state[store_key]`` (a plain key, which Streamlit keeps across pages); the widget
    has its own key and copies the user's changes back. The widget is given the stored value only when it has none
    (the page was just opened) or when the program changed the stored value (a link restored, the dataset following
    the model): giving it on every run would send the browser an older value while the user moves on (fast slider
    presses snapped back).
    """
    if store_key not in st.session_state or (valid is not None and not valid(st.session_state[store_key])):
        st.session_state[store_key] = default
    widget_key, shadow, page = f"_w_{store_key}", f"_s_{store_key}", page_id()
    stored = st.session_state[store_key]
    if widget_key not in st.session_state or not _same((page, stored), st.session_state.get(shadow)):
        st.session_state[widget_key] = stored  # first draw on this page, or the program changed the value
    st.session_state[shadow] = (page, stored)

    def _copy() -> None:
        st.session_state[store_key] = st.session_state[widget_key]
        st.session_state[shadow] = (page, st.session_state[widget_key])

    return widget(label, key=widget_key, on_change=_copy, **kwargs)


def page_id() -> str:
    """Which page this run draws (its script hash: the same on every rerun of the page, another on another page)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.page_script_hash if ctx is not None else ""


def _same(a: Any, b: Any) -> bool:
    """a == b for the plain values widgets hold (False when they cannot be compared)."""
    try:
        return type(a) is type(b) and all(type(u) is type(v) for u, v in zip(a, b, strict=True)) and bool(a == b)
    except Exception:
        return False


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


@dataclass(frozen=True)
class Page:
    """One entry of the app's page list: file, title, icon, and one line saying what it is for."""

    path: str
    label: str
    icon: str
    blurb: str


PAGES = (
    Page("app.py", "Home", ":material/home:", "What a curvature certificate is; the model every page uses."),
    Page("pages/2_Certify.py", "Certify", ":material/verified_user:",
         "Start here: pick a test image and see its certified radius, closest boundary point and an attack at ρ."),
    Page("pages/3_Curvature.py", "Curvature", ":material/monitoring:",
         "Curvature bounds K_ub vs the curvature measured at test images K_lb, per class pair and across models."),
    Page("pages/4_Hessian.py", "Hessian", ":material/scatter_plot:",
         "All eigenvalues of the margin Hessian at one image, against the global bounds."),
    Page("pages/5_Compare.py", "Compare", ":material/compare_arrows:",
         "CRC beside CROWN, the first-order bound and randomized smoothing: on a test set and across models."),
    Page("pages/1_Train.py", "Train", ":material/model_training:",
         "Train a small network (standard, γ-regularized, CRT, PGD or TRADES) with live curves; stop any time."),
)  # the one page list: the sidebar links and the Home page's tool cards


def page_setup(title: str, icon: str = ":material/shield:", *, require_model: bool = True) -> Ctx | None:
    """Configure the page and draw the shared sidebar (model picker, device, dataset) -> the page's context.

    With ``require_model`` the page stops with an explanation when no model can be used.
    """
    st.set_page_config(page_title=f"{title} · CRC Explorer", page_icon=icon, layout="wide")
    st.markdown(_WRAP_CSS, unsafe_allow_html=True)
    with st.sidebar:
        st.markdown("## CRC Explorer")
        for p in PAGES:
            page_link(p)
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
            st.info("There is no model to work with yet: train one on the **Train** page (the "
                    "defaults take under a minute on a CPU) or upload a checkpoint on the **Home** page.")
            st.stop()
        return None
    pick = persistent_selectbox("Model used by every page", ids, MODEL_KEY, _default_model(ids, refs),
                                container=sb, format_func=lambda i: labels.get(i, i),
                                help="Shipped models, models you trained on the Train page, and checkpoints "
                                     "uploaded (or imported: the paper's official files, any PyTorch MLP) on the "
                                     "Home page.")
    sb.caption(labels.get(pick, pick))  # the whole label: the picker itself cuts long ones
    ref = refs[pick]
    # model on device
    with guard("Loading the model"):
        model, meta = _model_for(ref, device)
        dataset = _dataset_picker(sb, pick, meta.get("dataset"))
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


def _dataset_picker(sb: Any, model_id: str, trained_on: str | None) -> str:
    """The sidebar's dataset picker -> the dataset whose test images the pages use.

    It follows the model: when another model is picked, the picker moves to the dataset that model was trained on
    (when that dataset is on this machine); the user may still pick another one, and then reads a note saying the
    model was trained on other images.
    """
    names = dataset_names() or ["embedded"]
    home = home_dataset(trained_on, names)
    if st.session_state.get(DATASET_FOR_KEY) != model_id:  # a newly picked model brings its own dataset
        st.session_state[DATASET_FOR_KEY] = model_id
        if home is not None:
            st.session_state[DATASET_KEY] = home
    dataset = persistent_selectbox("Test images from", names, DATASET_KEY, home or names[0], container=sb,
                                   format_func=dataset_label,
                                   help="Follows the picked model: picking a model picks the dataset it was trained "
                                        "on. MNIST appears when its IDX files are found ($CRC_DATA_DIR or "
                                        "$CRC_DATA_DIR/mnist).")
    sb.caption(f"Dataset in use: **{dataset}** (test split). Trained on: {trained_on or 'unknown'}.")
    if note := dataset_note(trained_on, dataset, home):
        sb.warning(note, icon=":material/swap_horiz:")
    return dataset


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


def page_link(p: Page, *, with_blurb: bool = False) -> None:
    """A link to page ``p`` (and its one-line description); nothing when the page runs on its own."""
    try:
        st.page_link(p.path, label=p.label, icon=p.icon)
    except Exception:  # a page run on its own (not through app.py) has no links to the others
        log.debug("no page link for %s", p.path)
        return
    if with_blurb:
        st.caption(p.blurb)


def explain(text: str, title: str = "What am I looking at?", expanded: bool = False) -> None:
    """A short explanation for newcomers, in an expander."""
    with st.expander(title, expanded=expanded, icon=":material/lightbulb:"):
        st.markdown(text)


_WRAP_CSS = """<style>
/* long picker options (two runs that differ only in their time stamp) wrap instead of being cut */
div[data-baseweb="popover"] li, div[data-baseweb="popover"] li div { white-space: normal !important;
  overflow: visible !important; text-overflow: clip !important; height: auto !important; }
</style>"""
_THUMB_CSS = """<style>
[class*="st-key-thumb_"] { position: relative; gap: 0; }
[class*="st-key-thumb_"] [data-testid="stImage"] img { border-radius: 4px; }
[class*="st-key-pick_"] { position: absolute; inset: 0; z-index: 2; width: 100% !important; height: 100%; }
[class*="st-key-pick_"] > div, [class*="st-key-pick_"] [data-testid="stButton"], [class*="st-key-pick_"] button {
  width: 100% !important; height: 100%; }
[class*="st-key-pick_"] button { background: transparent; border: 2px solid transparent; align-items: flex-start;
  justify-content: flex-start; padding: 0 3px; min-height: 0; }
[class*="st-key-pick_"] button p { font-size: 0.75rem; background: rgba(255,255,255,0.85); color: #333;
  border-radius: 3px; padding: 0 3px; }
[class*="st-key-pick_"] button:hover { border-color: #ff4b4b; background: rgba(255,75,75,0.10); }
[class*="st-key-pick_"] button[kind="primary"], [class*="st-key-pick_"] button[data-testid="stBaseButton-primary"] {
  border-color: #ff4b4b; background: rgba(255,75,75,0.15); }
</style>"""


def clickable_thumbnails() -> None:
    """Make every gallery thumbnail (a container keyed ``thumb_<i>`` holding an image and a button keyed
    ``pick_<i>``) clickable as a whole: the button is laid over the picture and its caption."""
    st.markdown(_THUMB_CSS, unsafe_allow_html=True)


def plot(fig: Any, key: str | None = None) -> None:
    """Show a Plotly figure at container width."""
    st.plotly_chart(fig, width="stretch", key=key, config={"displaylogo": False})


# ------------------------------------------------------------------------------------------------ picked image
IMAGE_KEY = "crc_image_index"  # test-set index of the picked image (shared by Certify and Hessian)
UPLOAD_IMAGE_KEY = "crc_image_upload"  # (name, tensor (784,)) of an image uploaded on the Certify page
USE_UPLOAD_KEY = "crc_use_upload"  # True when the uploaded image is the picked one
DRAWING_NAME = "your drawing"  # the name a drawing on the Certify page is kept under


@dataclass(frozen=True)
class Picked:
    """The image the pages work on: x (784,) in [0, 1]; its true label (None for an upload); a description;
    ``key`` (a content hash, :func:`app_lib.analysis.image_key`: the cache key of everything computed for it);
    ``index`` in the test set (None for an upload)."""

    x: torch.Tensor
    label: int | None
    what: str
    key: str
    index: int | None


def picked_image(ds: Dataset) -> Picked:
    """The image picked on the Certify page (or test image 0)."""
    from app_lib.analysis import image_key

    up = st.session_state.get(UPLOAD_IMAGE_KEY)
    if st.session_state.get(USE_UPLOAD_KEY) and up is not None:
        what = "your drawing" if up[0] == DRAWING_NAME else f"the uploaded image {up[0]}"
        return Picked(up[1], None, what, image_key(up[1]), None)
    i = st.session_state.get(IMAGE_KEY, 0)
    if not isinstance(i, int) or not 0 <= i < len(ds):
        i = 0
        st.session_state[IMAGE_KEY] = 0
    x = ds.images[i]
    return Picked(x, int(ds.labels[i]), f"test image #{i}", image_key(x), i)


def pick_test_image(i: int) -> None:
    """Make test image ``i`` the picked image (the uploaded one stays available)."""
    st.session_state[IMAGE_KEY] = int(i)
    st.session_state[USE_UPLOAD_KEY] = False


def use_uploaded_image(name: str, x: torch.Tensor) -> bool:
    """Make an uploaded image the picked one (once per new file: a later switch back to test images stays) ->
    True when it is new (the page reruns so that everything drawn above names it)."""
    prev = st.session_state.get(UPLOAD_IMAGE_KEY)
    if prev is None or prev[0] != name or not torch.equal(prev[1], x):
        st.session_state[UPLOAD_IMAGE_KEY] = (name, x)
        st.session_state[USE_UPLOAD_KEY] = True
        return True
    return False


def forget_uploaded_image() -> None:
    """Drop the uploaded image (e.g. after a refused upload), so that no stale result stays on screen."""
    st.session_state.pop(UPLOAD_IMAGE_KEY, None)
    st.session_state[USE_UPLOAD_KEY] = False


def catalogue_labels() -> dict[str, str]:
    """id -> picker label of every model that loads."""
    ids, _refs, labels, _errors = _catalogue()
    return {i: labels[i] for i in ids}


def catalogue_metadata() -> dict[str, dict[str, Any]]:
    """id -> checkpoint metadata of every model that loads (picker order)."""
    return _catalogue_metas()[1]


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
    registry.check_usable(cpu_model, allow_relu=True)
    model = cpu_model if device.type == "cpu" else _on_device(ref.key, str(device), cpu_model)
    return model, meta


@st.cache_resource(show_spinner=False)
def _survey_store() -> dict[tuple[str, str, int, str], Any]:
    return {}


def heavy_busy() -> bool:
    """True while another heavy job (a training run, a survey) holds the machine."""
    return heavy_lock().locked()


def curvature_survey(key: str, model: MLP, dataset: str, n_images: int, device: torch.device, label: str = ""
                     ) -> Any | None:
    """:func:`crc_core.evaluate.curvature_table` (K_lb by power iteration beside the certification-grade K_ub, every
    pair with at least one image) over the first ``n_images`` test images, computed once per model and kept for the
    process. Holds the heavy-job lock while measuring; returns None, at once, when another heavy job holds it (the
    caller shows what it has and asks again later: :func:`wait_for_machine`)."""
    from crc_core.evaluate import curvature_table

    store = _survey_store()
    skey = (key, dataset, int(n_images), str(device))
    if skey in store:
        return store[skey]
    lock = heavy_lock()
    if not lock.acquire(blocking=False):
        return None
    what = f"Measuring the curvature (K_lb){' ' + label if label else ''}"
    bar = st.progress(0.0, text=f"{what}: 0 of {n_images} test images…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"{what}: {done} of {total} test images…")

    try:
        ds = cached_test_set(dataset)
        store[skey] = curvature_table(model, ds.images[:n_images].to(device), min_images=1, method="power",
                                      bounds=bounds_table(key, "auto", str(device), model), progress=progress)
    finally:
        lock.release()
        bar.empty()
    return store[skey]


def wait_for_machine(what: str, every: float = 2.0) -> None:
    """Say that ``what`` waits for the machine, and rerun the page by itself once it is free."""
    n = len(train_queue())
    line = f" ({n} more training run{'s wait' if n != 1 else ' waits'} in line)" if n else ""
    st.info(f"A training run is using the machine{line}: {what} waits its turn and appears here by itself when "
            "it has finished. Everything else on this page is ready now.", icon=":material/hourglass_top:")

    @st.fragment(run_every=every)
    def _poll() -> None:
        if not heavy_busy():
            st.rerun()

    _poll()
