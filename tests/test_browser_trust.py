"""Issue 24 in a real browser (what only a browser shows): holding → on the Certify page's ρ slider does not snap
back and the next choice counts (the page state and the address bar never fight). Screenshots are saved under
test-artifacts/screenshots/."""

from __future__ import annotations

import re
import time

import pytest

pytestmark = pytest.mark.browser

import browser_helpers as B  # noqa: E402  (before anything that needs playwright)

sync_api = B.require_browser()

import app_helpers as H  # noqa: E402

TITLE = "Certify: how far is this image from changing class?"


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    models = H.SHIPPED if any(H.SHIPPED.glob("*.pt")) else H.model_dir()
    runs = tmp_path_factory.mktemp("runs")
    with H.streamlit_server(models, runs, tmp_path_factory.mktemp("log") / "streamlit.log") as (url, _proc):
        yield url


@pytest.fixture(scope="module")
def page(app_url):
    with sync_api.sync_playwright() as p:
        browser, pg = B.launch(p, width=1280, height=720)
        yield pg
        browser.close()


def _slider_value(pg) -> float:
    return float(pg.locator('[data-testid="stSlider"] input[type="range"]').first.input_value())


def _choose(pg, label: str, option: str) -> None:
    """Pick ``option`` in the selectbox ``label`` (its list can close under a rerun on a busy machine: retried)."""
    for _ in range(3):
        box = pg.get_by_role("combobox", name=label)
        box.scroll_into_view_if_needed()
        box.click()
        try:
            pg.get_by_role("option", name=option).click(timeout=15_000)
            return
        except sync_api.TimeoutError:
            pg.keyboard.press("Escape")
            B.idle(pg)
    raise AssertionError(f"could not choose {option!r} in {label!r}")


def test_holding_the_rho_slider_does_not_snap_back(app_url, page):
    pg = page
    pg.goto(f"{app_url}/Certify?img=0&rho=0.5")
    pg.get_by_role("heading", name=TITLE).first.wait_for(timeout=90_000)
    B.idle(pg)
    slider = pg.locator('[data-testid="stSlider"] input[type="range"]').first
    slider.focus()
    for _ in range(10):  # a held key: 10 presses 0.15 s apart, each starting a script run
        slider.press("ArrowRight")
        time.sleep(0.15)
    B.idle(pg, settle=2.0)
    B.idle(pg, settle=1.0)
    assert _slider_value(pg) == pytest.approx(1.0), "the slider snapped back"
    assert re.search(r"rho=1(&|$)", pg.url), pg.url
    pg.get_by_text("4 · At ρ = 1").first.wait_for(timeout=60_000)  # the verdict is computed for what is shown

    # the next change counts (it was swallowed and replaced by the URL's stale value)
    _choose(pg, "Second direction of the plane", "bottom Hessian eigenvector")
    B.idle(pg, settle=1.5)
    assert "dir=hessian-bottom" in pg.url, pg.url
    assert _slider_value(pg) == pytest.approx(1.0)
    pg.wait_for_function("() => document.body.textContent.includes('plane of x_b and the bottom Hessian')",
                         timeout=90_000)  # the slice is drawn for the chosen direction
    assert pg.get_by_text("could not be restored").count() == 0
    B.check(pg, "24-certify-after-held-slider")
