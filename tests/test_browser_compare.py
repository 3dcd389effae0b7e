"""The Compare page and the Certify page's per-image comparison in a real browser (Playwright + Debian's Chromium).

Starts ``streamlit run app.py`` with the small test checkpoints, runs the test-set comparison on 16 images to the
end, computes the Table 5b view for two models, opens the Certify page's "Every certificate" chart, asserts that no
exception box or error message appears, and saves screenshots into test-artifacts/screenshots/ (compare-*.png).
Skipped cleanly when Chromium is missing.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

import browser_helpers as B  # noqa: E402  (before anything that needs playwright)

sync_api = B.require_browser()

import app_helpers as H  # noqa: E402


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    runs, log = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("log") / "streamlit.log"
    with H.streamlit_server(H.model_dir(), runs, log) as (url, _proc), sync_api.sync_playwright() as p:
        browser, pg = B.launch(p, timeout_ms=90_000)
        yield url, pg
        browser.close()


def test_compare_page_and_certify_chart_in_a_browser(page):
    url, pg = page
    pg.goto(f"{url}/Compare")
    pg.get_by_role("heading", name="Compare certificates: is CRC the better proof, and by how much?").wait_for()
    B.idle(pg)
    box = pg.get_by_label("Test images", exact=True).first
    box.fill("16")
    box.press("Enter")
    B.idle(pg)
    pg.get_by_role("button", name="Start").click()
    pg.get_by_text("Finished: 16 of 16 images.").wait_for(timeout=180_000)
    B.idle(pg)
    assert pg.get_by_role("button", name="Download the per-image table (CSV)").count() == 1
    pg.get_by_role("button", name="Compute").click()
    pg.get_by_text("CRC / CROWN").first.wait_for(state="attached", timeout=180_000)
    B.idle(pg)
    assert pg.locator('[data-testid="stPlotlyChart"] .main-svg').count() >= 2
    B.check(pg, "compare-page")

    pg.goto(f"{url}/Certify")
    pg.get_by_role("heading", name="Certify: how far is this image from changing class?").wait_for()
    B.idle(pg)
    pg.get_by_role("button", name="#12", exact=True).click()  # a correctly classified image of these models
    pg.get_by_text("test image #12").first.wait_for()
    B.idle(pg)
    pg.get_by_text("Every certificate for this image, against the upper end").first.wait_for(timeout=120_000)
    pg.get_by_text("A different classifier: the smoothed one").first.wait_for()
    B.check(pg, "compare-certify")
