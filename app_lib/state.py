"""Page state: widgets whose values survive page switches and the image the pages work on.

One source of truth (the design notes, "The app"): a widget's value lives in ``st.session_state`` under a plain key
(:func:`persistent`), kept across pages; the page's URL is read once when a page opens and only written after that
(:mod:`app_lib.links`). The picked image (a test image or an upload / drawing) is shared by Certify and Hessian.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st
import torch

from crc_core.data import Dataset

MODEL_KEY = "crc_model_id"  # the shared choice (a plain session key, survives page switches)


DEVICE_KEY = "crc_device"


DATASET_KEY = "crc_dataset"


DATASET_FOR_KEY = "crc_dataset_model"  # the model id the dataset picker last followed


DEVICE_CHOICES = ("auto", "cpu", "cuda")


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


IMAGE_KEY = "crc_image_index"  # test-set index of the picked image (shared by Certify and Hessian)


UPLOAD_IMAGE_KEY = "crc_image_upload"  # (name, tensor (784,)) of an image uploaded on the Certify page


USE_UPLOAD_KEY = "crc_use_upload"  # True when the uploaded image is the picked one


DRAWING_NAME = "your drawing"  # the name a drawing on the Certify page is kept under


@dataclass(frozen=True)
class Picked:
    """The image the pages work on: x (784,) in [0, 1]; its true label (None for an upload); a description;
    ``key`` (a content hash, :func:`app_lib.images.image_key`: the cache key of everything computed for it);
    ``index`` in the test set (None for an upload)."""

    x: torch.Tensor
    label: int | None
    what: str
    key: str
    index: int | None


def picked_image(ds: Dataset) -> Picked:
    """The image picked on the Certify page (or test image 0)."""
    from app_lib.images import image_key

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
