"""The Lesson page through AppTest: every step opens from its own link (?step=N) with its figure and text, Next
and Back move through the steps and rewrite the link, a bad link opens step 1, the last step leads to Certify."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("streamlit")
pytest.importorskip("plotly")

import app_helpers as H
from streamlit.testing.v1 import AppTest

from app_lib import lesson

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "7_Lesson.py")


def _open(step: str | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=H.APPTEST_TIMEOUT)
    if step is not None:
        at.query_params["step"] = step
    at.run()
    H.assert_clean(at)
    return at


def _title(at: AppTest) -> str:
    return at.markdown[0].value


@pytest.mark.parametrize("n", range(1, len(lesson.STEPS) + 1))
def test_every_step_opens_from_its_link(n: int) -> None:
    at = _open(str(n))
    step = lesson.STEPS[n - 1]
    assert _title(at) == f"#### Step {n} of {len(lesson.STEPS)} · {step.title}"
    assert len(at.get("plotly_chart")) == len(lesson.figures(n))
    assert any(m.value == step.text for m in at.markdown)
    assert at.query_params["step"] == str(n)


def test_next_and_back_rewrite_the_link() -> None:
    at = _open("3")
    at.button(key="lesson_next").click().run()
    H.assert_clean(at)
    assert _title(at).startswith("#### Step 4") and at.query_params["step"] == "4"
    at.button(key="lesson_back").click().run()
    at.button(key="lesson_back").click().run()
    assert _title(at).startswith("#### Step 2") and at.query_params["step"] == "2"


@pytest.mark.parametrize("bad", ["0", "99", "three", ""])
def test_a_bad_link_opens_step_one(bad: str) -> None:
    assert lesson.step_from_query(bad) == 1
    assert lesson.step_from_query(None) == 1 and lesson.step_from_query("7") == 7


def test_first_and_last_steps_disable_their_ends() -> None:
    at = _open("1")
    assert at.button(key="lesson_back").disabled and not at.button(key="lesson_next").disabled
    at = _open(str(len(lesson.STEPS)))
    assert at.button(key="lesson_next").disabled
    assert any("Certify page" in m.value for m in at.markdown)


def test_what_the_steps_say_holds() -> None:
    """Step 3: the CRC disc stays inside the true distance; step 4: the measured curvature stays under K_ub;
    step 5: CRT lowers K_ub and grows the disc around the same point; step 7: App. G certifies the ReLU net."""
    from app_lib import playground as pg

    smooth, flat, relu = (pg.train_toy(run) for run in (lesson.SMOOTH, lesson.FLAT, lesson.RELU))
    v = lesson._view(smooth)
    assert 0 < v.radii["crc"] <= v.true_distance
    cv = pg.curvature_view(smooth.key, smooth, v.pred, pg.target_for(v))
    assert 0 < float(cv.measured.max()) <= cv.K_ub
    sweep = pg.bound_sweep(smooth.key, smooth, (float(v.x0[0]), float(v.x0[1])))
    assert all(a >= b for a, b in zip(sweep.radius, sweep.radius[1:]))  # a smaller bound, a larger disc
    proven = [r for k, r in zip(sweep.K, sweep.radius) if k >= sweep.K_ub * (1 - 1e-12)]
    assert proven and max(proven) <= sweep.true_distance * (1 + 1e-9)
    w = lesson._view(flat, smooth)
    assert w.K_ub < v.K_ub and w.radii["crc"] > v.radii["crc"]
    r = lesson._view(relu)
    assert 0 < r.radii["relu-quadratic"] <= r.true_distance and "crc" in r.refused
