"""Canvas drawings -> the models' 28×28 input (app_lib.drawing), through the same preprocessing as uploads."""

from __future__ import annotations

import base64
import importlib.util
import io
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from app_lib.drawing import EMPTY_NOTE, read_drawing
from app_lib.images import read_upload
from crc_core.errors import DataError

SIDE = 280  # the canvas size the page uses: 10 canvas pixels per model pixel


def _canvas(background=(0, 0, 0, 255), stroke=(255, 255, 255, 255), h: int = SIDE, w: int = SIDE) -> np.ndarray:
    """A canvas with one filled block: rows 100..179, columns 120..159 (model pixels 10..17 × 12..15)."""
    a = np.empty((h, w, 4), np.uint8)
    a[...] = background
    a[100:180, 120:160] = stroke
    return a


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _expected_block() -> torch.Tensor:
    e = torch.zeros(28, 28)
    e[10:18, 12:16] = 1.0
    return e.reshape(-1)


def test_light_stroke_on_dark_canvas_is_area_averaged_to_28x28():
    d = read_drawing(_canvas())
    assert not d.empty and d.x.shape == (784,) and d.x.dtype == torch.float32
    torch.testing.assert_close(d.x, _expected_block(), atol=1 / 255, rtol=0)
    assert d.note.startswith("The drawing (280×280 pixels)") and "shrunk to 28×28" in d.note


def test_matches_the_upload_preprocessing_exactly():
    rng = np.random.default_rng(0)
    for a in (_canvas(), _canvas(h=200, w=360), rng.integers(0, 256, (150, 150, 4), dtype=np.uint8)):
        a[..., 3] = np.maximum(a[..., 3], 1) if a.shape[0] == 150 else a[..., 3]
        d = read_drawing(a)
        up = read_upload(_png(a), "drawing.png", invert="auto")
        assert torch.equal(d.x, up.x)
        assert d.note == up.note.replace("drawing.png", "The drawing", 1)


def test_dark_strokes_on_a_transparent_canvas_give_the_same_image():
    """The canvas's default: transparent background, black strokes -> put on white, then inverted ("auto")."""
    d = read_drawing(_canvas(background=(0, 0, 0, 0), stroke=(0, 0, 0, 255)))
    torch.testing.assert_close(d.x, _expected_block(), atol=1 / 255, rtol=0)
    assert "inverted" in d.note


def test_rgb_canvas_and_float_values_are_accepted():
    a = _canvas()
    torch.testing.assert_close(read_drawing(a[..., :3]).x, read_drawing(a).x)
    torch.testing.assert_close(read_drawing(a.astype(np.float64)).x, read_drawing(a).x)


@pytest.mark.parametrize("a", [
    None,
    np.zeros((SIDE, SIDE, 4), np.uint8),  # transparent
    np.full((SIDE, SIDE, 4), 255, np.uint8),  # white
    _canvas(stroke=(0, 0, 0, 255)),  # black on black
    _canvas(stroke=(1, 1, 1, 255)),  # one grey level of dithering
], ids=["none", "transparent", "white", "black-on-black", "dither"])
def test_empty_drawing_gives_a_note(a):
    d = read_drawing(a)
    assert d.empty and d.x is None and d.note == EMPTY_NOTE


@pytest.mark.parametrize("a, match", [
    (np.zeros((28, 28), np.uint8), "RGBA"),
    (np.zeros((10, 10, 2), np.uint8), "RGBA"),
    (np.zeros((0, 10, 4), np.uint8), "RGBA"),
    (np.full((10, 10, 4), np.nan), "0–255"),
    (np.full((10, 10, 4), 300.0), "0–255"),
    (np.array([[["a"] * 4] * 3] * 3), "0–255"),
    (np.zeros((5000, 10, 4), np.uint8), "per side"),
], ids=["2d", "2-channels", "no-rows", "nan", "over-255", "strings", "huge"])
def test_bad_canvas_arrays_are_refused(a, match):
    with pytest.raises(DataError, match=match):
        read_drawing(a)


def test_apptest_can_feed_canvas_pixels(tmp_path):
    """streamlit-drawable-canvas 0.13 under AppTest: the component's state, set through session_state under the
    canvas key, reaches st_canvas(...).image_data, and read_drawing turns it into the model's input."""
    if importlib.util.find_spec("streamlit_drawable_canvas") is None:
        pytest.skip("streamlit-drawable-canvas is not installed")
    # Not imported here: outside a Streamlit runtime (AppTest or `streamlit run`) its import fails with
    # "must be declared in pyproject.toml with asset_dir": the runtime registers the component's manifest first.
    from streamlit.testing.v1 import AppTest

    script = tmp_path / "canvas_app.py"
    script.write_text(textwrap.dedent("""
        import streamlit as st
        from streamlit_drawable_canvas import st_canvas
        from app_lib.drawing import read_drawing

        res = st_canvas(stroke_width=18, stroke_color="#ffffff", background_color="#000000", height=280,
                        width=280, return_image_data=True, key="canvas")
        d = read_drawing(res.image_data)
        st.write("EMPTY" if d.empty else f"SUM {float(d.x.sum()):.3f}")
        st.caption(d.note)
    """))
    at = AppTest.from_file(str(script), default_timeout=60)
    at.run()
    assert not at.exception
    assert at.markdown[0].value == "EMPTY" and at.caption[0].value == EMPTY_NOTE
    url = "data:image/png;base64," + base64.b64encode(_png(_canvas())).decode()
    at.session_state["canvas"] = {"drawing": {"raw": {"objects": [{"type": "path"}]}, "data": url}}
    at.run()
    assert not at.exception
    assert at.markdown[0].value == f"SUM {float(_expected_block().sum()):.3f}"
