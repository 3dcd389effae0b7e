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
    with H.shipped_app(tmp_path_factory) as url:
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
    assert _slider_value(pg) == pytest.approx(0.6), "the slider snapped back"  # 10 steps of 0.01
    assert re.search(r"rho=0\.6(&|$)", pg.url), pg.url
    pg.get_by_text("4 · At ρ = 0.6").first.wait_for(timeout=60_000)  # the verdict is computed for what is shown

    # the next change counts (it was swallowed and replaced by the URL's stale value)
    _choose(pg, "Second direction of the plane", "bottom Hessian eigenvector")
    B.idle(pg, settle=1.5)
    assert "dir=hessian-bottom" in pg.url, pg.url
    assert _slider_value(pg) == pytest.approx(0.6)
    pg.wait_for_function("() => document.body.textContent.includes('plane of x_b and the bottom Hessian')",
                         timeout=90_000)  # the slice is drawn for the chosen direction
    assert pg.get_by_text("could not be restored").count() == 0
    B.check(pg, "24-certify-after-held-slider")


def _shot(pg, name: str) -> None:
    """What a 1280×720 projector shows now (the viewport), then the whole page."""
    B.SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(B.SHOTS / f"{name}-1280x720.png"))
    B.check(pg, name)
    pg.set_viewport_size({"width": 1280, "height": 720})


def _open(pg, url: str, title: str) -> None:
    pg.goto(url)
    pg.get_by_role("heading", name=title).first.wait_for(timeout=120_000)
    B.idle(pg)


def test_walkthrough_every_page_at_1280x720(app_url, page):
    """Every page through st.navigation under its old URL path, at 1280×720: no error; Certify names x_b only on
    the boundary (never inside the disc); Train keeps the run in view after Start; screenshots for the eye."""
    pg = page
    _open(pg, app_url, "CRC Explorer")
    _shot(pg, "24-walk-home")
    _open(pg, f"{app_url}/Certify?img=0&rho=1.4", TITLE)
    pg.get_by_text("The closest boundary point found").first.wait_for(timeout=120_000)
    text = pg.locator('[data-testid="stMain"]').inner_text()
    interval = re.search(r"lies in \[([\d.]+), ([\d.]+)\]", text)
    assert interval and re.search(r"over all classes: distance ([\d.]+)", text)[1] == interval[2]
    assert "attack provably worst case?" in text
    _shot(pg, "24-walk-certify")
    chart = pg.locator('[data-testid="stPlotlyChart"]').filter(has_text="certified ball").first
    chart.scroll_into_view_if_needed()
    time.sleep(1.0)
    pg.screenshot(path=str(B.SHOTS / "24-walk-certify-slice-1280x720.png"))
    pg.locator('[data-testid="stSidebar"] [data-testid="stPageLink"]').filter(has_text="Hessian").first.click()
    pg.get_by_role("heading", name="Hessian: the curvature at one image").first.wait_for(timeout=120_000)
    B.idle(pg)
    assert pg.get_by_text("could not be restored").count() == 0  # Certify's link is not read by another page
    assert "/Hessian" in pg.url and "rho=" not in pg.url, pg.url
    pg.goto(f"{app_url}/Curvature?n=1000")  # a long run (1000 images measured): the page shows that it runs
    pg.wait_for_selector('[data-testid="stStatusWidget"]', timeout=30_000)
    B.idle(pg)
    for path, title in (("Curvature", "Curvature: bounds vs reality"),
                        ("Hessian", "Hessian: the curvature at one image"),
                        ("Compare", "Compare certificates: is CRC the better proof, and by how much?")):
        _open(pg, f"{app_url}/{path}", title)
        _shot(pg, f"24-walk-{path.lower()}")
    _open(pg, f"{app_url}/Train", "Train a network")
    pg.get_by_text("standard (cross-entropy only)").click()
    pg.get_by_label("Epochs", exact=True).fill("100")  # far more than the test waits: Stop is still there to click
    pg.get_by_role("button", name="Start training").click()
    bar = pg.get_by_text(re.compile(r"one step = one batch of \d+ images")).first
    bar.wait_for(timeout=90_000)
    box = bar.bounding_box()
    assert box and box["y"] + box["height"] <= 720, box  # the thing that changes is in view
    pg.screenshot(path=str(B.SHOTS / "24-walk-train-running-1280x720.png"))
    pg.locator('[data-testid="stMain"]').get_by_role("button", name="Stop").click()  # not the header's
    pg.get_by_text(re.compile("Stopped (after|before)")).first.wait_for(timeout=120_000)
    B.idle(pg)
    _shot(pg, "24-walk-train-done")
