"""Small Streamlit helpers every page uses: errors as readable boxes (:func:`guard`), the newcomer's explanation
(:func:`explain`), a Plotly chart at container width (:func:`plot`) and clickable gallery thumbnails.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import streamlit as st
import torch

from crc_core.errors import CRCError

log = logging.getLogger("crc_explorer")

if os.environ.get("CRC_TORCH_THREADS", "").isdigit() and int(os.environ["CRC_TORCH_THREADS"]) > 0:
    torch.set_num_threads(int(os.environ["CRC_TORCH_THREADS"]))  # e.g. 1 on small shared machines / CI


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


def explain(text: str, title: str = "What am I looking at?", expanded: bool = False) -> None:
    """A short explanation for newcomers, in an expander."""
    with st.expander(title, expanded=expanded, icon=":material/lightbulb:"):
        st.markdown(text)


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


def readable_table(table: Any, formats: dict[str, str], missing: str = "—") -> Any:
    """A DataFrame for display: the columns in ``formats`` as text ("{:.4g}"-style), ``missing`` where a value is
    None or not finite (Streamlit would show a literal "None")."""
    import math

    out = table.copy()
    for col, fmt in formats.items():
        if col in out:
            out[col] = [fmt.format(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                        else missing for v in out[col]]
    return out
