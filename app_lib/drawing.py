"""A drawing from the canvas (streamlit-drawable-canvas's RGBA pixels) -> the 28×28 image the models take.

The pixels are encoded as a PNG and go through :func:`app_lib.images.read_upload`, the same preprocessing as an
uploaded picture (transparent parts on white, padded to a square, area-averaged down to 28×28, inverted when the
background is light), so a drawing and a screenshot of it give the same input. No Streamlit here.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch

from app_lib.images import Invert, read_upload
from crc_core.errors import DataError

DRAWING_NAME = "drawing.png"  # the name the upload preprocessing sees (it shows in its note)
# A drawing whose grey levels (after compositing on white) all lie within this of each other holds no stroke:
# 2/255 ignores the one-level dithering of anti-aliased canvas backgrounds.
EMPTY_SPREAD = 2 / 255
MAX_SIDE = 4096  # canvases are a few hundred pixels per side (×2 on high-DPI screens); larger arrays are refused
EMPTY_NOTE = "The canvas is empty: draw something (a light stroke on the dark canvas) to get a certificate."


@dataclass
class Drawing:
    """A canvas read for the models. x: float32 (784,) in [0, 1], or None when the canvas is empty; note: one
    sentence for the user (what was done, or why there is nothing to certify)."""

    x: torch.Tensor | None
    note: str

    @property
    def empty(self) -> bool:
        return self.x is None


def read_drawing(rgba: np.ndarray | None, *, invert: Invert = "auto") -> Drawing:
    """Canvas pixels (H, W, 4) uint8 RGBA (or (H, W, 3) RGB), as ``st_canvas(...).image_data`` returns them ->
    :class:`Drawing`.

    None (nothing drawn yet) or a canvas of one colour gives an empty Drawing with :data:`EMPTY_NOTE`. Arrays of
    another shape or type, or larger than :data:`MAX_SIDE` per side, are refused with a one-line DataError.
    """
    if rgba is None:
        return Drawing(None, EMPTY_NOTE)
    a = np.asarray(rgba)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or min(a.shape[:2]) < 1:
        raise DataError(f"The canvas must be an (H, W, 4) RGBA or (H, W, 3) RGB array, got shape {a.shape}.")
    if max(a.shape[:2]) > MAX_SIDE:
        raise DataError(f"The canvas is {a.shape[1]}×{a.shape[0]} pixels; at most {MAX_SIDE} per side are accepted.")
    if a.dtype != np.uint8:
        if a.dtype.kind not in "biuf":
            raise DataError(f"The canvas must hold 0–255 colour values, got an array of {a.dtype}.")
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 255:
            raise DataError(f"The canvas must hold finite 0–255 colour values, got {a.min()} to {a.max()}.")
        a = a.round().astype(np.uint8)
    if _spread(a) <= EMPTY_SPREAD:
        return Drawing(None, EMPTY_NOTE)
    from PIL import Image  # pillow ships with streamlit

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")  # (H, W, 4) uint8 is RGBA, (H, W, 3) RGB
    up = read_upload(buf.getvalue(), DRAWING_NAME, invert=invert)
    return Drawing(up.x, up.note.replace(DRAWING_NAME, "The drawing", 1))


def _spread(a: np.ndarray) -> float:
    """max − min of the grey levels in [0, 1], transparent parts counted as white (as the preprocessing does)."""
    rgb = a[..., :3].astype(np.float64) / 255.0
    grey = rgb @ np.array([0.299, 0.587, 0.114])  # ITU-R 601 luma, as PIL's "L" conversion
    if a.shape[2] == 4:
        alpha = a[..., 3].astype(np.float64) / 255.0
        grey = alpha * grey + (1.0 - alpha)
    return float(grey.max() - grey.min())
