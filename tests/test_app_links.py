"""Page state vs the address bar (issue 24, Major 1): the URL is read once, when a page opens from a link; after
that the widgets are the truth and the URL is only written. A rerun that arrives with a stale query string (the
browser had not yet received the last write: fast slider presses) must not snap a widget back or swallow the next
change."""

from __future__ import annotations

from pathlib import Path

import app_helpers as H
import pytest
from streamlit.testing.v1 import AppTest

from app_lib import state

TIMEOUT = 120
PAGE = "pages/2_Certify.py"


@pytest.fixture
def app_env(monkeypatch, tmp_path) -> Path:
    return H.use_small_models(monkeypatch, tmp_path)


def _notes(at: AppTest) -> list[str]:
    return [w.value for w in at.warning if "could not be restored" in w.value]


def test_a_stale_query_string_never_overrides_the_widgets(app_env):
    at = AppTest.from_file(str(H.REPO / PAGE), default_timeout=TIMEOUT)
    at.query_params.update({"rho": "0.5", "img": "1"})  # opened from a link (a correctly classified image)
    at.run()
    H.assert_clean(at)
    assert at.slider(key="_w_crc_rho").value == 0.5
    for rho in (0.55, 0.6, 0.65):  # fast presses: each rerun still carries the URL of an earlier run
        at.query_params["rho"] = "0.5"
        at.slider(key="_w_crc_rho").set_value(rho).run()
        H.assert_clean(at)
        assert at.slider(key="_w_crc_rho").value == rho  # no snap back
        assert at.query_params["rho"] == f"{rho:g}"  # the address bar follows the widget
        assert at.session_state["crc_rho"] == rho
        assert not _notes(at)
    at.query_params.update({"rho": "0.5", "dir": "hessian-top"})  # the next change is not swallowed
    at.selectbox(key="_w_crc_slice_dir").set_value("hessian-bottom").run()
    H.assert_clean(at)
    assert at.selectbox(key="_w_crc_slice_dir").value == "hessian-bottom"
    assert at.slider(key="_w_crc_rho").value == 0.65
    assert at.query_params["dir"] == "hessian-bottom" and at.query_params["rho"] == "0.65"


def test_after_an_upload_the_next_choice_counts_and_no_false_note(app_env):
    import numpy as np

    at = AppTest.from_file(str(H.REPO / PAGE), default_timeout=TIMEOUT)
    at.query_params.update({"img": "3"})
    at.run()
    H.assert_clean(at)
    img = np.zeros((28, 28), np.uint8)
    img[6:22, 10:18] = 255
    at.session_state[state.UPLOAD_IMAGE_KEY] = ("shirt.png", __import__("torch").from_numpy(img.reshape(-1) / 255.0)
                                             .float())
    at.session_state[state.USE_UPLOAD_KEY] = True
    at.run()
    H.assert_clean(at)
    assert "upload" in at.query_params
    at.query_params.clear()
    at.query_params["img"] = "3"  # the browser still shows the URL from before the upload
    at.selectbox(key="_w_crc_mode").set_value("paper").run()
    H.assert_clean(at)
    assert at.selectbox(key="_w_crc_mode").value == "paper" and at.query_params["solver"] == "paper"
    assert not _notes(at)
    assert any("uploaded image" in s.value for s in at.subheader)


def test_page_switches_keep_every_widget_value(app_env):
    """The widgets get the stored value again on every page they are drawn on: the model picked on Home and the ρ
    set on Certify survive a trip through other pages (the picker is a new widget on each page)."""
    at = H.open_app("app.py", "shipped:small-standard.pt")
    at.switch_page(PAGE).run()
    H.assert_clean(at)
    at.slider(key="_w_crc_rho").set_value(0.8).run()
    for page in ("pages/3_Curvature.py", "pages/4_Hessian.py", PAGE):
        at.switch_page(page).run()
        H.assert_no_exception(at)
        assert at.sidebar.selectbox(key="_w_crc_model_id").value == "shipped:small-standard.pt", page
    assert at.slider(key="_w_crc_rho").value == 0.8


def test_every_page_keeps_its_url_path_and_is_listed_once():
    """#22: pages through st.navigation from one list; each keeps the URL path the pages/ folder gave it before
    (pages/2_Certify.py -> /Certify), so old links and shared views keep working; Home is the root."""
    import re

    from app_lib import navigation

    paths = [p.path for p in navigation.PAGES]
    assert len(paths) == len(set(paths)) and navigation.HOME.url_path == ""
    for p in navigation.PAGES:
        assert (H.REPO / p.path).is_file(), p.path
        if p is not navigation.HOME:
            assert p.url_path == re.sub(r"^\d+_", "", Path(p.path).stem), p
    listed = {p.path for p in navigation.PAGES}
    assert {f"pages/{f.name}" for f in (H.REPO / "pages").glob("[0-5]_*.py")} <= listed
    assert "st.navigation" in (H.REPO / "app.py").read_text()
