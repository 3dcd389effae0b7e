"""A real browser on the Train page with TRADES selected (its fields, the picked TRADES model's curves with the
empirical robust accuracy) and on the Curvature and Hessian pages with the ReLU model picked (the explanation instead
of an error), and the Certify page with the 2-layer ReLU model (App. G's certificate, the other methods).
Screenshots go to test-artifacts/screenshots/. Skipped cleanly when Chromium is missing.
"""

from __future__ import annotations

import re
import shutil

import pytest

pytestmark = pytest.mark.browser

import browser_helpers as B  # noqa: E402  (before anything that needs playwright)

sync_api = B.require_browser()

import app_helpers as H  # noqa: E402

MODELS = ("relu-2x256.pt", "trades-3x256.pt")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    for f in H.model_dir().glob("*.pt"):
        shutil.copy(f, models / f.name)
    for name in MODELS:
        if not (H.SHIPPED / name).exists():
            pytest.skip(f"assets/models/{name} is not in this checkout")
        shutil.copy(H.SHIPPED / name, models / name)
    runs = tmp_path_factory.mktemp("runs")
    log = tmp_path_factory.mktemp("log") / "streamlit.log"
    with H.streamlit_server(models, runs, log) as (url, _proc), sync_api.sync_playwright() as p:
        browser, pg = B.launch(p)
        pg.app_url = url
        yield pg
        browser.close()


def _goto(pg, path: str, title: str) -> None:
    pg.goto(f"{pg.app_url}/{path}")
    pg.get_by_role("heading", name=title).first.wait_for(timeout=90_000)
    B.idle(pg)


def _switch(pg, label: str, title: str) -> None:
    """Go to another page through the sidebar (the same session: the picked model stays)."""
    pg.locator('[data-testid="stSidebar"]').get_by_role("link", name=label).first.click()
    pg.get_by_role("heading", name=title).first.wait_for(timeout=90_000)
    B.idle(pg)


def _pick_model(pg, name: str) -> None:
    pg.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
    pg.get_by_role("option", name=re.compile(re.escape(name))).first.click()
    B.idle(pg)


def test_train_trades_and_relu_pages_in_a_browser(page):
    pg = page
    _goto(pg, "Train", "Train a network")
    _pick_model(pg, "trades-3x256")
    pg.get_by_text("TRADES (cross-entropy + β·KL at a PGD point)").click()
    B.idle(pg)
    pg.get_by_label("TRADES β (weight of the KL term)", exact=True).wait_for()
    assert pg.get_by_label("γ (curvature penalty)", exact=True).count() == 0
    pg.get_by_text("robust to PGD at ρ (empirical, an upper bound)").first.wait_for()  # the saved curves' legend
    B.check(pg, "train-trades")

    pg.get_by_role("combobox", name="Activation").click()  # a combination that cannot be trained: the reason at once
    pg.get_by_role("option", name="relu", exact=True).click()
    pg.get_by_text("CRT (curvature attack inputs + γ·K)").click()
    B.idle(pg)
    pg.get_by_text("needs a smooth activation").first.wait_for()

    _pick_model(pg, "relu-2x256")
    _switch(pg, "Curvature", "Curvature: bounds vs reality")
    pg.get_by_text("This page does not apply to ReLU networks.").first.wait_for()
    B.check(pg, "curvature-relu")
    _switch(pg, "Hessian", "Hessian: the curvature at one image")
    pg.get_by_text("This page does not apply to ReLU networks.").first.wait_for()
    B.check(pg, "hessian-relu")
    _switch(pg, "Train", "Train a network")
    pg.get_by_text("ReLU network: no curvature curves").first.wait_for()
    B.check(pg, "train-relu-model")
    _switch(pg, "Certify", "Certify: how far is this image from changing class?")
    pg.get_by_text("certified radius (App. G)").first.wait_for(timeout=180_000)
    pg.get_by_text("zero almost everywhere").first.wait_for()
    charts = pg.locator('[data-testid="stPlotlyChart"]')  # the margins, then every method (drawn last: CROWN,
    charts.nth(1).wait_for(timeout=180_000)                  # first-order, smoothing and App. G are computed first)
    B.idle(pg, 2.0)
    B.check(pg, "certify-relu")
