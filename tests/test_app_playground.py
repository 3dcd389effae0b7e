"""The Playground page through AppTest: it trains a toy net, draws the plane with every certificate and the true
distance, accepts typed points, trains a regularized control side by side, shows ReLU pieces, and answers bad
input with one clear sentence."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("streamlit")
pytest.importorskip("plotly")

import app_helpers as H
from streamlit.testing.v1 import AppTest

from app_lib import playground as pg

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "6_Playground.py")


def _open() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=H.APPTEST_TIMEOUT).run()
    H.assert_clean(at)
    return at


def _train(at: AppTest, **values) -> AppTest:
    for key, value in {"pg_epochs": 8, **values}.items():
        widget = at.selectbox(key=key) if key in ("pg_dataset", "pg_arch", "pg_act") else (
            at.radio(key=key) if key == "pg_control" else at.number_input(key=key))
        widget.set_value(value)
    at.button[0].click().run()
    H.assert_no_exception(at)
    return at


def _table(at: AppTest) -> list[dict]:
    return at.dataframe[0].value.to_dict("records")


def test_opens_with_a_trained_net_every_disc_and_the_truth() -> None:
    at = _open()
    rows = _table(at)
    names = [r["certificate"] for r in rows]
    assert names[0].startswith("CRC") and "CROWN" in names and names[-1].startswith("TRUE distance")
    assert all(r["sound here"] for r in rows if r["sound here"] is not None)
    assert len(at.get("plotly_chart")) >= 2  # the plane and the curvature view
    assert any("dense polar search" in c.value for c in at.caption)


def test_typed_point_and_a_point_outside_the_plot() -> None:
    at = _open()
    at.number_input(key="pg_x").set_value(99.0).run()
    errors = H.error_texts(at)
    assert len(errors) == 1 and "outside the plotted square" in errors[0]
    at.number_input(key="pg_x").set_value(0.0).run()
    H.assert_clean(at)
    assert any("**Point (0.000," in m.value for m in at.markdown)


@pytest.mark.parametrize(("values", "words"), [
    ({"pg_noise": -0.1}, "must be ≥ 0"),
    ({"pg_size": 0}, "at least one point"),
    ({"pg_dataset": "blobs", "pg_classes": 1}, "at least 2 classes"),
])
def test_bad_input_gets_one_clear_sentence(values: dict, words: str) -> None:
    at = _train(_open(), **values)
    errors = H.error_texts(at)
    assert len(errors) == 1 and words in errors[0], errors
    assert at.dataframe, "the last good net stays on the page"


def test_crt_control_is_trained_beside_the_net() -> None:
    at = _train(_open(), pg_control="crt")
    H.assert_clean(at)
    assert len(at.session_state[pg.TOY_KEY]) == 2
    assert sum("true distance" in c.value and "certified radii" in c.value for c in at.caption) == 2


def test_relu_net_shows_pieces_and_the_app_g_certificate() -> None:
    at = _train(_open(), pg_act="relu")
    H.assert_clean(at)
    names = [r["certificate"] for r in _table(at)]
    assert names[0].startswith("App. G") and any("refused" in n for n in names)
    assert any("no curvature bound can exist" in m.value for m in at.markdown)


def test_a_click_moves_the_typed_point_once() -> None:
    state = {pg.CLICK_KEY: {"selection": {"points": [{"x": 0.25, "y": -0.5}]}}}
    assert pg.apply_click(state) and (state["pg_x"], state["pg_y"]) == (0.25, -0.5)
    state["pg_x"] = 1.0  # typed afterwards: the old click is not applied again
    assert not pg.apply_click(state) and state["pg_x"] == 1.0
    assert not pg.apply_click({})


def test_a_link_opens_its_dataset_net_and_point() -> None:
    at = AppTest.from_file(PAGE, default_timeout=H.APPTEST_TIMEOUT)
    for k, v in {"data": "blobs", "act": "relu", "net": "2×[16]", "x": "0.1", "y": "-0.2"}.items():
        at.query_params[k] = v
    at.run()
    H.assert_clean(at)
    toy = at.session_state[pg.TOY_KEY][0]
    assert (toy.run.dataset, toy.run.activation, toy.run.widths) == ("blobs", "relu", (16,))
    assert any("**Point (0.100, -0.200)**" in m.value for m in at.markdown)
    assert at.query_params["data"] == "blobs" and at.query_params["x"] == "0.1"


def test_a_bad_link_says_so_and_opens_the_defaults() -> None:
    at = AppTest.from_file(PAGE, default_timeout=H.APPTEST_TIMEOUT)
    at.query_params["data"] = "mnist"
    at.query_params["x"] = "nan"
    at.run()
    H.assert_no_exception(at)
    notes = " ".join(str(e.value) for e in [*at.warning, *at.info, *at.markdown, *at.caption])
    assert "'mnist' is unknown" in notes and "not finite" in notes
    assert at.session_state[pg.TOY_KEY][0].run.dataset == "moons"
