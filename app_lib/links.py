"""Shareable links: a page's state mirrored in the URL's query string (``st.query_params``) and restored from it.

Each page names the fields it shares (:data:`CERTIFY`, :data:`HESSIAN`, …: query name -> session key and how to
read the value). One source of truth: :func:`sync`, called before the page draws its widgets,

* reads the query string **once**, on the first run of the page after it was opened (from a link, a typed address
  or the page list): every field in it is checked and written into ``st.session_state``; a field that cannot be
  used (unknown model, image index out of range, garbage) is skipped with a one-line note and the page keeps its
  default;
* after that never reads it again: the widgets are the truth, and their state is only *written* to the address bar
  when it changes. (A rerun can arrive with the query string of an earlier run, before the browser received the
  last write: reading it back then snapped the ρ slider back and swallowed the next choice.)

:func:`notes` shows the notes of a link just opened; :func:`copy_link` shows the full link to copy.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import streamlit as st

from app_lib import catalogue, state

WRITTEN_KEY = "crc_links_written"  # the query string (a dict) this session wrote last
OPEN_PAGE_KEY = "crc_links_page"  # the page whose runs these are (a new value: the page was just opened)
NOTES_KEY = "crc_links_notes"  # notes about the link just opened, shown once
UPLOAD_PARAM = "upload"  # the uploaded image's content hash (only meaningful in the session that uploaded it)
RHO_RANGE = (0.05, 3.0)  # the ρ sliders' range and step (Certify, Compare): 0.01 holds the paper's 1.58
RHO_STEP = 0.01
MAX_VALUE = 100  # characters: longer query values are garbage (model ids and hashes are far shorter)
SLICE_DIR_KEY = "crc_slice_dir"
SLICE_TARGET_KEY = "crc_slice_target"
LOCAL_KEY = "crc_local"
COMPARE_KEY = "crc_slice_compare"  # the second model of the side-by-side slice ("": one model)


class LinkError(ValueError):
    """A query-string value that cannot be used (its message is the note shown to the user)."""


@dataclass(frozen=True)
class Field:
    """One shared piece of state: the query name, the session key, ``parse`` (query text -> value, raising
    LinkError) and ``show`` (value -> query text)."""

    name: str
    key: str
    parse: Callable[[str], Any]
    show: Callable[[Any], str] = str


# ------------------------------------------------------------------------------------------------ parsers
def _model(text: str) -> str:
    if text not in catalogue.catalogue_labels():
        raise LinkError(f"the model '{text}' is not available here (it may be a model trained or uploaded in "
                        "another session); showing the default model")
    return text


def _dataset(text: str) -> str:
    if text not in (catalogue.dataset_names() or ["embedded"]):
        raise LinkError(f"there is no dataset '{text}' here; showing the model's own")
    return text


def _image(text: str) -> int:
    try:
        i = int(text)
    except ValueError:
        raise LinkError(f"'{text}' is not an image number; showing test image #0") from None
    n = len(catalogue.cached_test_set(st.session_state.get(state.DATASET_KEY) or "embedded"))
    if not 0 <= i < n:
        raise LinkError(f"test image #{i} does not exist (the test set has images #0 to #{n - 1}); showing "
                        "test image #0")
    return i


def _rho(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise LinkError(f"ρ = '{text}' is not a number; showing the default ρ") from None
    lo, hi = RHO_RANGE
    if not math.isfinite(v) or not lo <= v <= hi:
        raise LinkError(f"ρ = {text} is outside [{lo:g}, {hi:g}]; showing the default ρ")
    return round(round(v / RHO_STEP) * RHO_STEP, 2)


def choice(options: tuple[str, ...], what: str) -> Callable[[str], str]:
    """A parser accepting one of ``options``."""
    def parse(text: str) -> str:
        if text not in options:
            raise LinkError(f"{what} '{text}' is unknown (use one of {', '.join(options)}); showing the default")
        return text
    return parse


def integer(lo: int, hi: int, what: str) -> Callable[[str], int]:
    """A parser accepting a whole number in [lo, hi]."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise LinkError(f"{what} '{text}' is not a whole number; showing the default") from None
        if not lo <= v <= hi:
            raise LinkError(f"{what} {v} is outside [{lo}, {hi}]; showing the default")
        return v
    return parse


def flag(what: str) -> Callable[[str], bool]:
    """A parser accepting 0 or 1 (off / on) for the switch ``what``."""
    def parse(text: str) -> bool:
        if text not in ("0", "1"):
            raise LinkError(f"{what} '{text}' is not 0 (off) or 1 (on); showing the default")
        return text == "1"
    return parse


SURVEY_SIZES = (100, 200, 500, 1000, 2000, 5000, 10000)  # the Curvature page's choices of test-image counts


def _survey_size(text: str) -> int:
    n = integer(1, max(SURVEY_SIZES), "the number of test images")(text)
    size = len(catalogue.cached_test_set(st.session_state.get(state.DATASET_KEY) or "embedded"))
    if n not in SURVEY_SIZES or n > size:
        allowed = ", ".join(str(k) for k in SURVEY_SIZES if k <= size)
        raise LinkError(f"{n} test images is not one of the choices ({allowed}); showing the default")
    return n


MODEL = Field("model", state.MODEL_KEY, _model)
DATASET = Field("dataset", state.DATASET_KEY, _dataset)
IMAGE = Field("img", state.IMAGE_KEY, _image)
RHO = Field("rho", "crc_rho", _rho, lambda v: f"{float(v):g}")
SOLVER = Field("solver", "crc_mode", choice(("fast", "paper"), "the solver"))
COMMON = (MODEL, DATASET)
CERTIFY = (*COMMON, IMAGE, RHO, SOLVER,
           Field("dir", SLICE_DIR_KEY, choice(("hessian-top", "hessian-bottom", "pgd", "target", "random"),
                                              "the slice direction")),
           Field("target", SLICE_TARGET_KEY, integer(0, 999, "the target class")),
           Field("local", LOCAL_KEY, flag("the local-certificate switch (local)"), lambda v: "1" if v else "0"),
           Field("vs", COMPARE_KEY, _model))
HESSIAN = (*COMMON, IMAGE, Field("target", "crc_hess_target", integer(0, 999, "the target class")))
CURVATURE = (*COMMON, Field("kub", "crc_curv_method", choice(("thm3", "thm4", "refined"), "the bound K_ub")),
             Field("n", "crc_curv_n", _survey_size))
TRAIN = COMMON
COMPARE = COMMON  # the test-set job and its settings stay in the session that ran it


# ------------------------------------------------------------------------------------------------ sync
def _query() -> dict[str, str]:
    return {k: st.query_params.get(k) or "" for k in st.query_params}


def restore(fields: tuple[Field, ...], query: dict[str, str]) -> list[str]:
    """Write the usable fields of ``query`` into the session; -> one note per field (or name) that was skipped."""
    notes: list[str] = []
    by_name = {f.name: f for f in fields}
    for name in query:
        if name not in by_name and name != UPLOAD_PARAM:
            notes.append(f"'{name[:MAX_VALUE]}' is not something this page can restore; ignored")
    for f in fields:  # in order: the dataset is set before the image index is checked against it
        if f.name not in query:
            continue
        if len(query[f.name]) > MAX_VALUE:
            notes.append(f"the value of '{f.name}' is too long to be real; ignored")
            continue
        try:
            st.session_state[f.key] = f.parse(query[f.name])
        except LinkError as exc:
            notes.append(str(exc))
            continue
        if f is IMAGE:
            st.session_state[state.USE_UPLOAD_KEY] = False
    if UPLOAD_PARAM in query and any(f is IMAGE for f in fields):
        up = st.session_state.get(state.UPLOAD_IMAGE_KEY)
        from app_lib.images import image_key

        if up is not None and image_key(up[1]) == query[UPLOAD_PARAM]:
            st.session_state[state.USE_UPLOAD_KEY] = True
        else:
            notes.append("the link points to an uploaded or drawn image, which stays in the browser session that "
                         "made it; showing a test image instead")
    return notes


def current(fields: tuple[Field, ...]) -> dict[str, str]:
    """The page's state as a query string (a dict): the fields that have a value in the session."""
    out: dict[str, str] = {}
    for f in fields:
        v = st.session_state.get(f.key)
        if v not in (None, "") and not (f is IMAGE and st.session_state.get(state.USE_UPLOAD_KEY)):
            out[f.name] = f.show(v)
    up = st.session_state.get(state.UPLOAD_IMAGE_KEY)
    if any(f is IMAGE for f in fields) and up is not None and st.session_state.get(state.USE_UPLOAD_KEY):
        from app_lib.images import image_key

        out[UPLOAD_PARAM] = image_key(up[1])
    return out


def sync(fields: tuple[Field, ...]) -> None:
    """On the page's first run after it was opened, restore its state from the link; on every run, mirror the
    state into the query string when it changed. Call it before the page draws its widgets (also before
    :func:`app_lib.sidebar.page_setup`: the model picker)."""
    page = state.page_id()
    if st.session_state.get(OPEN_PAGE_KEY) != page:  # just opened: the only time the URL is read
        st.session_state[OPEN_PAGE_KEY] = page
        st.session_state.pop(WRITTEN_KEY, None)
        query = _query()
        if query:
            notes = restore(fields, query)
            if notes:
                st.session_state[NOTES_KEY] = notes
    write(fields)


def write(fields: tuple[Field, ...]) -> dict[str, str]:
    """Mirror the page's current state into the query string (when it differs from what was written last) -> that
    state. Never reads the query string: a stale one must not decide anything."""
    now = current(fields)
    if now != st.session_state.get(WRITTEN_KEY):
        st.query_params.from_dict(now)
        st.session_state[WRITTEN_KEY] = now
    return now


def notes() -> None:
    """Show (once) what could not be restored from the link just opened."""
    got = st.session_state.pop(NOTES_KEY, None)
    if got:  # the notes quote the link's text: escaped, so a crafted link cannot show Markdown (links, images)
        text = "This link could not be restored in full: " + "; ".join(got) + "."
        text = re.sub(r"([\\`*_\[\]<>!|~$])", r"\\\1", " ".join(text.split()))
        st.warning(text, icon=":material/link_off:")


def link(fields: tuple[Field, ...]) -> str:
    """The full link to the page as it is now (the browser's address, with the page's state as query string)."""
    now = write(fields)
    base = (st.context.url or "").split("?")[0]
    return base + ("?" + urllib.parse.urlencode(now) if now else "")


def copy_link(fields: tuple[Field, ...], container: Any = st) -> None:
    """A 'Share this view' popover showing the link (with a copy button) to the page as it is now."""
    with container.popover("Share this view", icon=":material/link:"):
        st.caption("Anyone who opens this link sees this page with the same model, image and settings (an uploaded "
                   "or drawn image stays in your session only).")
        st.code(link(fields), language=None, wrap_lines=True)
