"""The sidebar every page draws (:func:`page_setup`): page links, the model picker shared by all pages, the dataset
picker that follows the model, and the device. The page list itself is :data:`app_lib.navigation.PAGES`.
"""

from __future__ import annotations

import logging
from typing import Any

import streamlit as st
import torch

from app_lib import links
from app_lib.catalogue import (
    Ctx,
    cached_test_set,
    dataset_label,
    dataset_names,
    dataset_note,
    default_model,
    entries,
    has_curvature,
    home_dataset,
    model_for,
    subset_note,
)
from app_lib.navigation import PAGES, Page
from app_lib.state import (
    DATASET_FOR_KEY,
    DATASET_KEY,
    DEVICE_CHOICES,
    DEVICE_KEY,
    MODEL_KEY,
    persistent_selectbox,
)
from app_lib.ui import explain, guard
from crc_core.device import default_device, describe_device
from crc_core.errors import CRCError

log = logging.getLogger("crc_explorer")


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


def page_header(title: str, icon: str = ":material/shield:", *, sidebar: str = "auto") -> None:
    """Configure the page and draw the sidebar's page links: all a page needs that uses no picked model (the 2-D
    Playground and Lesson, which open with the sidebar ``"collapsed"`` so their figures get the projector's whole
    1280 px); :func:`page_setup` adds the pickers."""
    st.set_page_config(page_title=f"{title} · CRC Explorer", page_icon=icon, layout="wide",
                       initial_sidebar_state=sidebar)
    with st.sidebar:
        st.markdown("## CRC Explorer\n\n" + _WRAP_CSS, unsafe_allow_html=True)  # CSS here: no gap in the page
        for p in PAGES:
            page_link(p)
        st.divider()


def tool_page(link: tuple[links.Field, ...], name: str, icon: str, title: str, caption: str, *,
              about: str | None = None, share: bool = True, require_model: bool = True,
              no_curvature: str | None = None) -> Ctx | None:
    """The top of a tool page, the same on each: restore a shared ``link`` (then mirror the view into the address
    bar), the sidebar (:func:`page_setup`), the title, what the link could not restore, the caption, the
    explainer ``about`` and the share popover. With ``no_curvature``, a model without a curvature bound (ReLU)
    gets that note and the page stops there."""
    links.sync(link)
    ctx = page_setup(name, icon, require_model=require_model)
    st.title(title)
    links.notes()
    st.caption(caption)
    if about is not None:
        explain(about)
    if share:
        links.copy_link(link)
    if no_curvature is not None and ctx is not None and not has_curvature(ctx.model):
        st.info(no_curvature, icon=":material/block:")
        st.stop()
    return ctx


def page_setup(title: str, icon: str = ":material/shield:", *, require_model: bool = True) -> Ctx | None:
    """Configure the page and draw the shared sidebar (model picker, device, dataset) -> the page's context.

    With ``require_model`` the page stops with an explanation when no model can be used.
    """
    page_header(title, icon)
    sb = st.sidebar.container()  # model and dataset first, device below
    device = _device_picker(st.sidebar.container())
    sb.markdown("### Model")
    ids, refs, labels, errors = entries()
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
    pick = persistent_selectbox("Model used by every page", ids, MODEL_KEY, default_model(ids, refs),
                                container=sb, format_func=lambda i: labels.get(i, i),
                                help="Shipped models, models you trained on the Train page, and checkpoints "
                                     "uploaded (or imported: the paper's official files, any PyTorch MLP) on the "
                                     "Home page.")
    sb.caption(labels.get(pick, pick))  # the whole label: the picker itself cuts long ones
    ref = refs[pick]
    # model on device
    with guard("Loading the model"):
        model, meta = model_for(ref, device)
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
    elif note := subset_note(trained_on, dataset, home):
        sb.info(note, icon=":material/info:")
    return dataset


def page_link(p: Page, *, with_blurb: bool = False) -> None:
    """A link to page ``p`` (and its one-line description); nothing when the page runs on its own."""
    try:
        st.page_link(p.path, label=p.label, icon=p.icon)
    except Exception:  # a page run on its own (not through app.py) has no links to the others
        log.debug("no page link for %s", p.path)
        return
    if with_blurb:
        st.caption(p.blurb)


_WRAP_CSS = """<style>
/* long picker options (two runs that differ only in their time stamp) wrap instead of being cut */
div[data-baseweb="popover"] li, div[data-baseweb="popover"] li div { white-space: normal !important;
  overflow: visible !important; text-overflow: clip !important; height: auto !important; }
</style>"""
