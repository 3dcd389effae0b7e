"""What the browser suites share: Chromium's path and flags, the module skip when it is missing, waiting for a
Streamlit script run to end, and the "no exception, no error" check with a full-page screenshot.

Use at the top of a browser test module, before importing anything that needs playwright::

    import browser_helpers as B
    sync_api = B.require_browser()
"""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType

import pytest

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
RUN_TIMEOUT_MS = 120_000  # one script run on a busy 2-core CI box (a Certify pick with every method included)
MAX_SHOT_HEIGHT = 7000  # px: a full-page screenshot is taken at the page's height, capped here


def require_browser() -> ModuleType:
    """playwright.sync_api; skips the calling test module cleanly when Chromium or playwright is missing."""
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium (apt-get install chromium)",
                    allow_module_level=True)
    return pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")


def launch(p, *, width: int = 1400, height: int = 1000, timeout_ms: int = 60_000):
    """A Chromium page of ``width`` × ``height`` from a running ``sync_playwright()`` ``p``: (browser, page)."""
    browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(timeout_ms)
    return browser, page


def idle(pg, settle: float = 0.8, timeout_ms: int = RUN_TIMEOUT_MS) -> None:
    """Wait until the script run is over (Streamlit's 'running' status widget stays gone) and the page is calm."""
    pg.wait_for_selector('[data-testid="stMain"]')
    for _ in range(2):
        time.sleep(0.5)
        pg.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms)
    time.sleep(settle)


def check(pg, name: str) -> None:
    """No exception box and no error message on the page; then a screenshot of the whole page (the viewport is
    stretched to the page's height for it and put back afterwards) into test-artifacts/screenshots/<name>.png."""
    exc = pg.locator('[data-testid="stException"]')
    assert exc.count() == 0, exc.first.inner_text()
    err = pg.locator('[data-testid="stAlertContentError"]')
    assert err.count() == 0, err.first.inner_text()
    SHOTS.mkdir(parents=True, exist_ok=True)
    size = pg.viewport_size or {"width": 1400, "height": 1000}
    h = pg.evaluate("() => { const m = document.querySelector('[data-testid=\"stMainBlockContainer\"]');"
                    " return m ? m.scrollHeight + 120 : 1000; }")
    pg.set_viewport_size({"width": size["width"], "height": max(size["height"], min(int(h), MAX_SHOT_HEIGHT))})
    time.sleep(0.6)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    pg.set_viewport_size(size)
