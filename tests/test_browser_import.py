"""A real browser imports one of the paper's official checkpoints (issue 13): upload on Home, the import prompt
(screenshot test-artifacts/screenshots/import-prompt.png), Import, then the Certify page with the imported model.

The file is synthetic (the official key layout fc1/fc2 under the official name); test images are the real MNIST test
set from ../shared/data/mnist where present, else the model is shown Fashion-MNIST images with the sidebar's note.
Skipped cleanly when Chromium or Playwright is missing.
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
from test_app_import import OFFICIAL, official_bytes  # noqa: E402

from crc_core.data import shared_mnist_dir  # noqa: E402


def _idle(pg, settle: float = 0.8) -> None:
    """Wait until the script run is over (Streamlit's 'running' status widget stays gone)."""
    pg.wait_for_selector('[data-testid="stMain"]')
    for _ in range(2):
        time.sleep(0.5)
        pg.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=90_000)
    time.sleep(settle)


def _check(pg, name: str) -> None:
    """No exception box, no error message; save a screenshot of the whole page."""
    exc = pg.locator('[data-testid="stException"]')
    assert exc.count() == 0, exc.first.inner_text()
    err = pg.locator('[data-testid="stAlertContentError"]')
    assert err.count() == 0, err.first.inner_text()
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_import_an_official_checkpoint_in_a_real_browser(monkeypatch, tmp_path):
    mnist = shared_mnist_dir()
    monkeypatch.setenv("CRC_DATA_DIR", str(mnist or tmp_path / "no-data"))
    src = tmp_path / OFFICIAL
    src.write_bytes(official_bytes())
    runs = tmp_path / "runs"
    with H.streamlit_server(H.model_dir(), runs, tmp_path / "streamlit.log") as (url, _proc), \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1300})
            pg.set_default_timeout(60_000)
            pg.goto(url)
            pg.get_by_role("heading", name="CRC Explorer").first.wait_for(timeout=90_000)
            _idle(pg)

            pg.locator('[data-testid="stFileUploader"] input[type="file"]').first.set_input_files(str(src))
            pg.get_by_role("button", name="Import").wait_for(timeout=60_000)
            _idle(pg)
            prompt = pg.locator('[class*="st-key-crc_import_prompt"]')
            prompt.scroll_into_view_if_needed()
            assert OFFICIAL in prompt.inner_text() and "Pre-filled" not in prompt.inner_text()  # help is a tooltip
            _check(pg, "import-prompt")

            pg.get_by_role("button", name="Import").click()
            pg.get_by_text(f"Imported {OFFICIAL}").first.wait_for(timeout=60_000)
            _idle(pg)
            sidebar = pg.locator('[data-testid="stSidebar"]')
            _check(pg, "import-done")
            picked = sidebar.locator('[data-testid="stSelectbox"]').first.inner_html()
            assert OFFICIAL in picked, picked
            assert (runs / "imported" / f"{OFFICIAL}.pt").is_file()

            pg.get_by_role("link", name="Certify").first.click()
            pg.locator('[data-testid="stMetricLabel"]', has_text="certified radius").first.wait_for(timeout=90_000)
            _idle(pg)
            if mnist is None:
                assert "not found on this machine" in sidebar.inner_text()
            else:
                assert "Dataset in use: mnist" in sidebar.inner_text()
            _check(pg, "import-certify")
        finally:
            browser.close()
