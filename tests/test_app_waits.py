"""Issue 24 Major 4 on the Train page: after Start, the run's progress and curves come first (in view at
1280×720; the settings fold away), and the progress line says what a step is and how long is left."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import app_helpers as H
import pytest
from streamlit.testing.v1 import AppTest

from app_lib import train_view as tv

TIMEOUT = 120


@pytest.fixture
def app_env(monkeypatch, tmp_path) -> Path:
    return H.use_small_models(monkeypatch, tmp_path)


def _job(step: int, total: int, elapsed: float, running: bool = True) -> SimpleNamespace:
    events = [{"kind": "step", "step": step, "epoch": 1 + (step - 1) // 79, "steps_per_epoch": 79,
               "total_steps": total}]
    return SimpleNamespace(step_events=lambda: events, config=SimpleNamespace(epochs=3, batch_size=128),
                           elapsed=lambda: elapsed, progress=lambda: step / total, running=running)


def test_progress_text_explains_the_step_and_gives_the_time_left():
    text = tv.progress_text(_job(70, 237, 21.0))
    assert text.startswith("epoch 1/3, step 70 of 237 (one step = one batch of 128 images; 79 per epoch)")
    assert "21 s so far" in text and "about 50 s left" in text
    assert "left" not in tv.progress_text(_job(2, 237, 1.0))  # too early to estimate
    assert "left" not in tv.progress_text(_job(237, 237, 80.0, running=False))
    assert tv.duration(185) == "3 min 05 s" and tv.duration(3720) == "1 h 02 min"


def _walk(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _walk(child)


def test_after_start_the_run_comes_before_the_settings(app_env):
    at = AppTest.from_file(str(H.REPO / "pages/1_Train.py"), default_timeout=TIMEOUT)
    at.run()
    at.number_input(key="tr_epochs").set_value(100)
    at.selectbox(key="tr_width").set_value(16)
    at.radio(key="tr_kind").set_value("standard")
    at.number_input(key="tr_limit").set_value(2000)
    at.number_input(key="tr_eval_samples").set_value(0)
    at.form_submit_button[0].click().run()
    H.assert_clean(at)
    job = at.session_state["crc_train_job"]
    try:
        deadline = time.time() + 60
        while not job.step_events() and time.time() < deadline:
            time.sleep(0.1)
        at.run()
        H.assert_clean(at)
        order = list(_walk(at.main))  # every element, in page order
        run_at = next(i for i, b in enumerate(order) if "Run:" in str(getattr(b, "value", "")))
        settings_at = next(i for i, b in enumerate(order) if "Settings of the next run" in str(getattr(b, "label",
                                                                                                         "")))
        assert run_at < settings_at
        bars = at.get("progress")
        assert bars and "one step = one batch of 128 images" in bars[0].proto.text
    finally:
        job.stop()
        job.wait(60)
