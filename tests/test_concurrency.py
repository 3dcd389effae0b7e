"""Concurrent users of one app process.

Default suite (AppTest, same process, one thread per session): 3 sessions certify different images at the same time
and get exactly the radii of a direct crc_core call; 2 sessions press "Start training" at the same time: one trains,
the other's run waits in line ("Waiting for 1 run ahead of yours", no refusal, no exception) and starts by itself
when the first run ends.

``-m slow`` (browser): 10 Chromium sessions (Playwright) on one ``streamlit run`` server at the same time: 7 on the
Certify page (each picks its own image; the radius shown must equal crc_core's), 3 on the Train page (all press
Start together once: the later ones wait in line and start by themselves, none is refused), one of them also uploads
hostile files. No exception box
anywhere, the server stays healthy, and its resident memory (sampled every 0.25 s) stays bounded. Numbers:
docs/reliability.md.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

pytest.importorskip("streamlit")

import app_helpers as H
from streamlit.testing.v1 import AppTest

from crc_core.bounds import curvature_bounds
from crc_core.certify import certify
from crc_core.checkpoints import load_checkpoint
from crc_core.data import load_dataset

POOL = 120  # app_lib/certify_view.py certifies the first POOL test images in one batch (the gallery)
TIMEOUT = 180


@pytest.fixture(scope="module")
def reference_radii() -> torch.Tensor:
    """Radii of the gallery images for the picker's default model (small-crt), computed as the page does."""
    model, _ = load_checkpoint(H.model_dir() / "small-crt.pt")
    ds = load_dataset("embedded", "test", limit=POOL)
    with torch.no_grad():
        return certify(model, ds.images, ds.labels, mode="fast", bounds=curvature_bounds(model)).radius


@pytest.fixture
def app_env(monkeypatch, tmp_path) -> Path:
    runs = tmp_path / "runs"
    monkeypatch.setenv("CRC_MODELS_DIR", str(H.model_dir()))
    monkeypatch.setenv("CRC_RUNS_DIR", str(runs))
    return runs


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


# ------------------------------------------------------------------------------------------------ AppTest
# AppTest keeps one global Runtime per run, so several AppTests cannot run in parallel threads: these tests interleave
# live sessions instead (every session stays open while the others run). Real parallelism: the browser tests below.
def _session(page: str) -> AppTest:
    at = AppTest.from_file(str(H.REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    at.switch_page(page).run()
    return at


def test_interleaved_sessions_keep_their_own_state(app_env, reference_radii):
    """Three open Certify sessions pick different images in turn; each keeps its own pick and shows crc_core's
    radius for it (no state leaks between sessions through the shared caches)."""
    images = (2, 5, 9)
    sessions = [_session("pages/2_Certify.py") for _ in images]
    for at, i in zip(sessions, images):
        at.button(key=f"pick_{i}").click().run()
    for at in sessions:  # another round for everyone, after all picked
        at.slider(key="_w_crc_rho").set_value(0.3).run()
    for at, i in zip(sessions, images):
        assert not at.exception and not at.error, ([e.value for e in at.exception], [e.value for e in at.error])
        assert at.session_state["crc_image_index"] == i
        r = float(_metrics(at)["certified radius"])
        assert abs(r - float(reference_radii[i])) <= 5.1e-5, (i, r, float(reference_radii[i]))


def _tiny(at: AppTest) -> None:
    at.number_input(key="tr_epochs").set_value(1)
    at.selectbox(key="tr_width").set_value(16)
    at.radio(key="tr_kind").set_value("standard")
    at.number_input(key="tr_limit").set_value(600)
    at.number_input(key="tr_eval_samples").set_value(0)


def test_second_training_waits_for_the_first(app_env):
    """Two sessions press Start one after the other while the first run is going: the second run waits in line
    (its position shown, no refusal, no exception) and starts by itself once the first run has ended."""
    first, second = _session("pages/1_Train.py"), _session("pages/1_Train.py")
    for at in (first, second):
        _tiny(at)
    first.number_input(key="tr_epochs").set_value(30)  # long enough to still run when the second user presses
    first.form_submit_button[0].click().run()
    second.form_submit_button[0].click().run()
    for at in (first, second):
        assert not at.exception, [e.value for e in at.exception]
    job, job2 = first.session_state["crc_train_job"], second.session_state["crc_train_job"]
    try:
        assert not second.error, [e.value for e in second.error]
        assert job.running and job2.status == "waiting" and job2.ahead() == 1
        assert any("Waiting for 1 run ahead of yours" in i.value for i in second.info)
        deadline = time.time() + TIMEOUT
        while not job.step_events() and job.running and time.time() < deadline:  # a few steps: a model to save
            time.sleep(0.1)
        job.stop()
        assert job.wait(TIMEOUT) and job.status in ("stopped", "done"), job.error
        assert job.path is not None
        assert job2.wait(TIMEOUT) and job2.status == "done", (job2.status, job2.error)  # started by itself
        assert job2.started >= job.finished
        second.run()
        assert not second.exception and not second.error
        assert any("Finished after" in s.value for s in second.success)
        assert len(list(app_env.glob("*.pt"))) == 2
    finally:
        for j in (job, job2):
            j.stop()
            j.wait(TIMEOUT)


# ------------------------------------------------------------------------------------------------ browser
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
METRIC_JS = """label => { for (const m of document.querySelectorAll('[data-testid="stMetric"]')) {
    const l = m.querySelector('[data-testid="stMetricLabel"]');
    if (l && l.innerText.trim() === label) return m.querySelector('[data-testid="stMetricValue"]').innerText; }
  return null; }"""


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class _Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.samples, self.done = pid, [], threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.samples.append(_rss_mb(self.pid))
            except OSError:
                return
            time.sleep(0.25)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run app.py` with the small test models; yields (url, pid, runs folder)."""
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium")
    pytest.importorskip("playwright.sync_api")
    runs = tmp_path_factory.mktemp("runs")
    with H.streamlit_server(H.model_dir(), runs, tmp_path_factory.mktemp("log") / "streamlit.log") as (url, proc):
        yield url, proc.pid, runs


def _idle(pg) -> None:
    for _ in range(2):
        time.sleep(0.5)
        pg.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=300_000)


def _no_exception(pg, name: str) -> None:
    exc = pg.locator('[data-testid="stException"]')
    assert exc.count() == 0, (name, exc.first.inner_text())


@dataclass
class Round:
    """What one round of simultaneous browser sessions saw."""

    radii: dict[int, tuple[float, float]] = field(default_factory=dict)  # image -> (shown, crc_core)
    trainings: int = 0
    queued: int = 0  # Train sessions whose run was shown waiting in line right after Start
    refusals: int = 0  # "Another heavy job" / "line … is full" messages: must stay 0
    seconds: float = 0.0
    rss_peak: float = 0.0


def _browser_round(browser, url: str, reference: torch.Tensor, images: list[int], n_train: int, sampler: _Sampler,
                   evil: Path | None = None) -> Round:
    """Open len(images) Certify sessions and n_train Train sessions at once; certify / train; check every page."""
    t0, first_sample = time.time(), len(sampler.samples)
    contexts = [browser.new_context(viewport={"width": 1200, "height": 900}) for _ in range(len(images) + n_train)]
    pages = [c.new_page() for c in contexts]
    for pg in pages:
        pg.set_default_timeout(300_000)
    cert_pages, train_pages = pages[:len(images)], pages[len(images):]
    out = Round()
    try:
        for pg in cert_pages:  # everyone arrives at once
            pg.goto(f"{url}/Certify", wait_until="commit")
        for pg in train_pages:
            pg.goto(f"{url}/Train", wait_until="commit")
        long_first = "30" if n_train > 1 else "1"  # the first run lasts until the others have pressed Start
        for k, pg in enumerate(train_pages):  # short runs, then all press Start
            pg.get_by_text("standard (cross-entropy only)").click()
            pg.get_by_label("Epochs", exact=True).fill(long_first if k == 0 else "1")
            pg.get_by_text("Advanced").click()
            pg.get_by_label("Training images (0 = all)", exact=True).fill("3000")
            pg.get_by_label("Test images certified each epoch", exact=True).fill("20")
        for pg in train_pages:
            pg.get_by_role("button", name="Start training").click()
        for pg in train_pages:  # each run either trains at once or waits in line: never refused
            stop = pg.locator('[data-testid="stMain"]').get_by_role("button", name="Stop")  # not the header's
            pg.get_by_text("Waiting for").or_(stop).or_(pg.get_by_text("Finished after")).first.wait_for()
            out.queued += pg.get_by_text("Waiting for").count() > 0
        for pg, i in zip(cert_pages, images):  # each Certify session picks its own image (while training runs)
            pg.get_by_role("button", name=f"#{i}", exact=True).click()
        for pg, i in zip(cert_pages, images):
            pg.get_by_text(f"The certificate of test image #{i}").first.wait_for()
            _idle(pg)
            # under load the heading can arrive a script run before the metrics: wait for the value itself
            pg.wait_for_function(f"() => ({METRIC_JS})('certified radius') !== null", timeout=300_000)
            out.radii[i] = (float(pg.evaluate(METRIC_JS, "certified radius")), float(reference[i]))
        if evil is not None:  # one Certify user also uploads a non-image while the others work
            pg = cert_pages[0]
            pg.get_by_text("1 · Pick an image").first.click()  # the picker folds once an image is picked
            pg.get_by_role("tab", name="Upload your own image").click()
            pg.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
                files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"not an image at all"}])
            pg.get_by_text("is not an image file this app can read").first.wait_for()
        trained = [False] * len(train_pages)
        deadline = time.time() + 600
        while not all(trained) and time.time() < deadline:  # queued runs start by themselves: nobody clicks again
            time.sleep(1.0)
            for k, pg in enumerate(train_pages):
                if not trained[k] and pg.get_by_text("Finished after").count():
                    trained[k] = True
                out.refusals += pg.get_by_text("Another heavy job").count() + pg.get_by_text("is full").count()
        out.trainings = sum(trained)
        if evil is not None:  # and a checkpoint carrying code on the Home page
            pg = cert_pages[0]
            pg.goto(url)
            pg.get_by_role("heading", name="CRC Explorer").first.wait_for()
            pg.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
                files=[{"name": "evil.pt", "mimeType": "application/octet-stream",
                        "buffer": H.malicious_pickle_bytes(evil)}])
            pg.get_by_text("Upload refused").first.wait_for()
        for k, pg in enumerate(pages):
            _no_exception(pg, f"session {k}")
    finally:
        for c in contexts:
            c.close()
    out.seconds = time.time() - t0
    out.rss_peak = max(sampler.samples[first_sample:] or [0.0])
    return out


def _check_round(r: Round, n_train: int) -> None:
    bad = {i: v for i, v in r.radii.items() if abs(v[0] - v[1]) > 5.1e-5}  # shown with 4 decimals
    assert not bad, bad
    assert r.trainings == n_train
    assert r.refusals == 0


@pytest.mark.browser
def test_three_browser_sessions_at_once(server, reference_radii, tmp_path):
    """Default suite: 2 Certify sessions and 1 training at the same time on one server."""
    from playwright.sync_api import sync_playwright

    url, pid, runs = server
    sampler = _Sampler(pid)
    sampler.start()
    n_before = len(list(runs.glob("*.pt")))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
            r = _browser_round(browser, url, reference_radii, [3, 7], 1, sampler)
            browser.close()
    finally:
        sampler.done.set()
    _check_round(r, 1)
    assert H.healthy(url)
    assert len(list(runs.glob("*.pt"))) == n_before + 1
    assert r.rss_peak < 3000


@pytest.mark.slow
@pytest.mark.browser
def test_ten_browser_sessions_at_once(server, reference_radii, tmp_path):
    """Two rounds of 10 simultaneous sessions (7 Certify, 3 Train, hostile uploads); memory after round 2 must not
    keep growing like a leak."""
    from playwright.sync_api import sync_playwright

    url, pid, runs = server
    evil = tmp_path / "PWNED"
    sampler = _Sampler(pid)
    sampler.start()
    rss_start = _rss_mb(pid)
    n_before = len(list(runs.glob("*.pt")))
    rounds, rss_after = [], []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
            for images in ([1, 2, 4, 5, 6, 8, 9], [10, 11, 12, 13, 14, 15, 16]):
                rounds.append(_browser_round(browser, url, reference_radii, images, 3, sampler, evil=evil))
                time.sleep(5)
                rss_after.append(_rss_mb(pid))
            browser.close()
    finally:
        sampler.done.set()
    for r in rounds:
        _check_round(r, 3)
        assert r.queued >= 1  # three pressed Start together: the later ones were shown waiting in line
    assert H.healthy(url)
    assert not evil.exists()
    assert len(list(runs.glob("*.pt"))) == n_before + 6
    for k, r in enumerate(rounds, 1):
        print(f"\n[concurrency] round {k}: 10 browser sessions in {r.seconds:.0f} s; {len(r.radii)} radii equal to "
              f"crc_core's; {r.trainings} trainings one at a time, {r.queued} of them shown waiting in line, "
              f"{r.refusals} refusals; "
              f"server RSS peak {r.rss_peak:.0f} MB, 5 s after closing {rss_after[k - 1]:.0f} MB")
    print(f"[concurrency] server RSS at start of the test {rss_start:.0f} MB")
    peak = max(r.rss_peak for r in rounds)
    assert peak < 3000, f"server RSS peaked at {peak:.0f} MB"
    assert rss_after[1] < rss_after[0] + 300, f"RSS grew from {rss_after[0]:.0f} to {rss_after[1]:.0f} MB"
