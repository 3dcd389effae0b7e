"""Heavy jobs on a shared machine: one at a time per process (:func:`heavy_lock`); training runs wait in a
first-come line (:func:`train_queue`); a curvature survey waits its turn (:func:`curvature_survey`,
:func:`wait_for_machine`). Jobs check that their browser session is still there (:func:`session_alive`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import streamlit as st
import torch

from app_lib import jobs
from app_lib.catalogue import bounds_table, cached_test_set
from crc_core.models import MLP


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
