"""The Compare page and the Certify page's per-image comparison in a real browser (Playwright + Debian's Chromium).

Starts ``streamlit run app.py`` with the small test checkpoints, runs the test-set comparison on 16 images to the
end, computes the Table 5b view for two models, opens the Certify page's "Every certificate" chart, asserts that no
exception box or error message appears, and saves screenshots into test-artifacts/screenshots/ (compare-*.png).
Skipped cleanly when Chromium is missing.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

if not CHROMIUM.exists():
    pytest.skip("Chromium is not installed at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

import app_helpers as H  # noqa: E402


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    runs, log = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("log") / "streamlit.log"
    with H.streamlit_server(H.model_dir(), runs, log) as (url, _proc), sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(90_000)
        yield url, pg
        browser.close()


def _idle(pg, settle: float = 0.8) -> None:
    pg.wait_for_selector('[data-testid="stMain"]')
    for _ in range(2):
        time.sleep(0.5)
        pg.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=120_000)
    time.sleep(settle)


def _check(pg, name: str) -> None:
    """No exception box, no error message; a screenshot of the whole page."""
    exc = pg.locator('[data-testid="stException"]')
    assert exc.count() == 0, exc.first.inner_text()
    err = pg.locator('[data-testid="stAlertContentError"]')
    assert err.count() == 0, err.first.inner_text()
    SHOTS.mkdir(parents=True, exist_ok=True)
    h = pg.evaluate("() => { const m = document.querySelector('[data-testid=\"stMainBlockContainer\"]');"
                    " return m ? m.scrollHeight + 120 : 1000; }")
    pg.set_viewport_size({"width": 1400, "height": max(1000, min(int(h), 7000))})
    time.sleep(0.6)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    pg.set_viewport_size({"width": 1400, "height": 1000})


def test_compare_page_and_certify_chart_in_a_browser(page):
    url, pg = page
    pg.goto(f"{url}/Compare")
    pg.get_by_role("heading", name="Compare certificates: is CRC the better proof, and by how much?").wait_for()
    _idle(pg)
    box = pg.get_by_label("Test images", exact=True).first
    box.fill("16")
    box.press("Enter")
    _idle(pg)
    pg.get_by_role("button", name="Start").click()
    pg.get_by_text("Finished: 16 of 16 images.").wait_for(timeout=180_000)
    _idle(pg)
    assert pg.get_by_role("button", name="Download the per-image table (CSV)").count() == 1
    pg.get_by_role("button", name="Compute").click()
    pg.get_by_text("CRC / CROWN").first.wait_for(state="attached", timeout=180_000)
    _idle(pg)
    assert pg.locator('[data-testid="stPlotlyChart"] .main-svg').count() >= 2
    _check(pg, "compare-page")

    pg.goto(f"{url}/Certify")
    pg.get_by_role("heading", name="Certify: how far is this image from changing class?").wait_for()
    _idle(pg)
    pg.get_by_role("button", name="#12", exact=True).click()  # a correctly classified image of these models
    pg.get_by_text("test image #12").first.wait_for()
    _idle(pg)
    pg.get_by_text("Every certificate for this image, against the attack").first.wait_for(timeout=120_000)
    pg.get_by_text("A different classifier: the smoothed one").first.wait_for()
    _check(pg, "compare-certify")
