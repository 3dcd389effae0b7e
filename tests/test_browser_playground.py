"""The Playground and every Lesson step in a real Chromium at a projector's 1280×720: no error, the figures
drawn, a click on the plane picks a point; screenshots (viewport = what a projector shows) in
test-artifacts/screenshots/playground*.png and lesson-step-N.png."""

from __future__ import annotations

import browser_helpers as B
import pytest

sync_api = B.require_browser()

import app_helpers as H  # noqa: E402

from app_lib import lesson  # noqa: E402

pytestmark = pytest.mark.browser
W, H720 = 1280, 720


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    runs, log = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("log") / "streamlit.log"
    with H.streamlit_server(H.model_dir(), runs, log) as (url, _proc), sync_api.sync_playwright() as p:
        browser, pg = B.launch(p, width=W, height=H720, timeout_ms=120_000)
        yield url, pg
        browser.close()


def _shot(pg, name: str) -> None:
    B.SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(B.SHOTS / f"{name}.png"))  # the viewport only: what the projector shows


def test_playground_in_a_browser(page):
    url, pg = page
    pg.goto(f"{url}/Playground")
    pg.get_by_role("heading", name="Playground: certificates you can see").wait_for()
    pg.get_by_text("TRUE distance: dense polar search").first.wait_for(timeout=180_000)
    B.idle(pg)
    assert pg.locator('[data-testid="stPlotlyChart"] .main-svg').count() >= 2
    _shot(pg, "playground-1280x720")  # as the page opens: the plane, the point and its table in view
    point_text = pg.locator('[data-testid="stMarkdownContainer"]', has_text="Point (").first
    assert point_text.bounding_box()["y"] < H720
    before = point_text.inner_text()
    plot = pg.locator('[data-testid="stPlotlyChart"]').first.locator(".nsewdrag").first
    box = plot.bounding_box()
    pg.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.7)
    B.idle(pg)
    pg.wait_for_function("b => !document.body.innerText.includes(b)", arg=before, timeout=60_000)
    B.check(pg, "playground-page")


@pytest.mark.parametrize("n", range(1, len(lesson.STEPS) + 1))
def test_lesson_step_at_1280x720(page, n):
    url, pg = page
    pg.goto(f"{url}/Lesson?step={n}")
    pg.get_by_text(f"Step {n} of {len(lesson.STEPS)}").first.wait_for(timeout=180_000)
    pg.locator('[data-testid="stPlotlyChart"] .main-svg').first.wait_for(timeout=180_000)  # trained, drawn
    B.idle(pg)
    assert pg.get_by_role("button", name="Next").is_visible()  # the buttons fit on the projected screen
    assert pg.get_by_role("button", name="Next").bounding_box()["y"] < H720
    _shot(pg, f"lesson-step-{n}")
    B.check(pg, f"lesson-step-{n}-page")
