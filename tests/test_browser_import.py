"""A real browser imports one of the paper's official checkpoints (issue 13): upload on Home, the import prompt
(screenshot test-artifacts/screenshots/import-prompt.png), Import, then the Certify page with the imported model.

The file is synthetic (the official key layout fc1/fc2 under the official name); test images are the real MNIST test
set from ../shared/data/mnist where present, else the model is shown Fashion-MNIST images with the sidebar's note.
Skipped cleanly when Chromium or Playwright is missing.
"""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.browser

import browser_helpers as B  # noqa: E402  (before anything that needs playwright)

sync_api = B.require_browser()

import app_helpers as H  # noqa: E402
from test_app_import import OFFICIAL, official_bytes  # noqa: E402

from crc_core.data import shared_mnist_dir  # noqa: E402


def test_import_an_official_checkpoint_in_a_real_browser(monkeypatch, tmp_path):
    mnist = shared_mnist_dir()
    monkeypatch.setenv("CRC_DATA_DIR", str(mnist or tmp_path / "no-data"))
    src = tmp_path / OFFICIAL
    src.write_bytes(official_bytes())
    runs = tmp_path / "runs"
    with H.streamlit_server(H.model_dir(), runs, tmp_path / "streamlit.log") as (url, _proc), \
            sync_api.sync_playwright() as p:
        browser, pg = B.launch(p, height=1300)
        try:
            pg.goto(url)
            pg.get_by_role("heading", name="CRC Explorer").first.wait_for(timeout=90_000)
            B.idle(pg)

            pg.locator('[data-testid="stFileUploader"] input[type="file"]').first.set_input_files(str(src))
            pg.get_by_role("button", name="Import").wait_for(timeout=60_000)
            B.idle(pg)
            prompt = pg.locator('[class*="st-key-crc_import_prompt"]')
            prompt.scroll_into_view_if_needed()
            assert OFFICIAL in prompt.inner_text() and "Pre-filled" not in prompt.inner_text()  # help is a tooltip
            B.check(pg, "import-prompt")

            name = pg.get_by_label("Name in the model picker", exact=True)  # issue 24: Enter takes the name only
            name.fill("my official")
            name.press("Enter")
            B.idle(pg, settle=2.0)
            assert pg.get_by_text(re.compile(r"^Imported ")).count() == 0 and not (runs / "imported").exists()
            assert pg.get_by_role("button", name="Import").is_visible()
            name.fill(OFFICIAL)
            name.press("Tab")
            B.idle(pg)

            pg.get_by_role("button", name="Import").click()
            pg.get_by_text(f"Imported {OFFICIAL}").first.wait_for(timeout=60_000)
            B.idle(pg)
            sidebar = pg.locator('[data-testid="stSidebar"]')
            B.check(pg, "import-done")
            picked = sidebar.locator('[data-testid="stSelectbox"]').first.inner_html()
            assert OFFICIAL in picked, picked
            assert (runs / "imported" / f"{OFFICIAL}.pt").is_file()

            pg.get_by_role("link", name="Certify").first.click()
            pg.locator('[data-testid="stMetricLabel"]', has_text="certified radius").first.wait_for(timeout=90_000)
            B.idle(pg)
            if mnist is None:
                assert "not found on this machine" in sidebar.inner_text()
            else:
                assert "Dataset in use: mnist" in sidebar.inner_text()
            B.check(pg, "import-certify")
        finally:
            browser.close()
