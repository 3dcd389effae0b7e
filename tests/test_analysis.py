"""The app's helpers without Streamlit (app_lib.images, app_lib.margin_maths): uploads of any size made into
the 28×28 the models take, and Theorem 4's bound on each Lemma 1 term of the margin Hessian. (Hostile uploads:
tests/test_reliability.py.)"""

from __future__ import annotations

import io

import app_helpers as H
import numpy as np
import pytest
import torch

from app_lib import images, margin_maths
from crc_core.bounds import curvature_bounds, theorem4
from crc_core.errors import CRCError, DataError
from crc_core.models import MLP

pytest.importorskip("PIL")
from PIL import Image


def _encode(arr: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _grid(x: torch.Tensor) -> np.ndarray:
    assert x.shape == (784,) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and float(x.min()) >= 0 and float(x.max()) <= 1
    return x.reshape(28, 28).numpy()


# ============================================================================================== uploads
def _square_pattern() -> np.ndarray:
    """The 28×28 a centred white 28-pixel square on black becomes when shrunk 2×: ones on rows/cols 7..20."""
    want = np.zeros((28, 28))
    want[7:21, 7:21] = 1
    return want


def test_a_28x28_grey_image_is_used_as_is():
    img = np.linspace(0, 1, 784).reshape(28, 28)
    u = images.read_upload(H.png_bytes(img), "a.png", invert=False)
    assert np.allclose(_grid(u.x), (img * 255).astype(np.uint8) / 255, atol=1e-7)  # png_bytes truncates
    assert u.size == (28, 28) and not u.inverted and "used as is" in u.note


def test_a_larger_image_is_shrunk_by_area_average():
    img = np.zeros((56, 56), np.uint8)
    img[14:42, 14:42] = 255
    u = images.read_upload(_encode(img), "sq.png")
    assert np.array_equal(_grid(u.x), _square_pattern())
    assert u.size == (56, 56) and "shrunk to 28×28" in u.note and "not inverted" in u.note


def test_the_aspect_ratio_is_kept_by_padding_with_the_background():
    wide = np.zeros((28, 56), np.uint8)  # a 28×28 white square touching the top and bottom edges
    wide[:, 14:42] = 255
    u = images.read_upload(_encode(wide), "wide.png")
    assert np.array_equal(_grid(u.x), _square_pattern())  # still a square, not a 14-wide bar
    assert u.square.shape == (56, 56) and "padded to a square" in u.note
    tall = np.full((90, 30), 200, np.uint8)  # grey background: padding uses it, not black
    tall[30:60, :] = 20
    g = _grid(images.read_upload(_encode(tall), "tall.png", invert=False).x)
    assert np.allclose(g[:, :5], 200 / 255, atol=1 / 255) and np.allclose(g[:, -5:], 200 / 255, atol=1 / 255)
    assert g[14, 14] < 30 / 255


def test_invert_auto_flips_light_backgrounds_only():
    dark = np.zeros((56, 56), np.uint8)
    dark[14:42, 14:42] = 255
    light = 255 - dark  # a dark drawing on white paper
    auto = images.read_upload(_encode(light), "drawing.png", invert="auto")
    assert auto.inverted and "inverted because its background is light" in auto.note
    assert np.array_equal(_grid(auto.x), _square_pattern())
    assert not images.read_upload(_encode(dark), "d.png", invert="auto").inverted
    kept = images.read_upload(_encode(light), "drawing.png", invert=False)
    assert np.array_equal(_grid(kept.x), 1 - _square_pattern()) and not kept.inverted
    forced = images.read_upload(_encode(dark), "d.png", invert=True)
    assert np.array_equal(_grid(forced.x), 1 - _square_pattern()) and "inverted, as asked" in forced.note
    with pytest.raises(ValueError, match="invert"):
        images.read_upload(_encode(dark), "d.png", invert="sometimes")


def test_a_big_colour_jpeg_photo_is_accepted():
    """3000×2000 colour JPEG (a phone photo's size): a dark-to-light gradient left to right, with a white disc."""
    yy, xx = np.mgrid[0:2000, 0:3000]
    grey = xx / 3000 * 160
    rgb = np.stack([grey, grey * 0.8, grey * 0.6], -1)
    rgb[(yy - 1000) ** 2 + (xx - 1500) ** 2 < 400 ** 2] = 255
    data = _encode(rgb.astype(np.uint8), "JPEG", quality=90)
    u = images.read_upload(data, "photo.jpg")
    g = _grid(u.x)
    assert u.size == (3000, 2000) and "converted to grey" in u.note and "shrunk to 28×28" in u.note
    assert u.square.shape[0] == u.square.shape[1] <= 450  # decoded small (JPEG draft), then padded
    mid = g[10:18]  # rows inside the photo (2000/3000 of the height, centred)
    assert (np.diff(mid[:, :6].mean(0)) > 0).all()  # the gradient survives: left columns get lighter
    assert g[14, 14] > 0.95  # the disc in the centre
    assert np.allclose(g[0], g[0, 0], atol=2 / 255) and np.allclose(g[-1], g[-1, 0], atol=2 / 255)  # padding


def test_transparent_16bit_palette_and_exif_rotated_images():
    rgba = np.zeros((40, 30, 4), np.uint8)  # transparent, with an opaque black bar: a dark drawing on "white"
    rgba[10:30, 10:20] = (0, 0, 0, 255)
    u = images.read_upload(_encode(rgba), "icon.png", invert="auto")
    assert "transparent parts put on white" in u.note and u.inverted
    assert _grid(u.x)[14, 14] == 1 and _grid(u.x)[0, 0] == 0
    deep = np.linspace(0, 65535, 784).reshape(28, 28).astype(np.uint16)  # 16-bit PNG: not clipped at 255
    g = _grid(images.read_upload(_encode(deep), "s16.png", invert=False).x)
    assert abs(g[0, 0]) < 1e-6 and abs(g[-1, -1] - 1) < 1e-6 and abs(g[14, 0] - 0.5) < 0.02
    pal = Image.fromarray(np.kron(np.eye(2), np.ones((8, 8))).astype(np.uint8) * 255).convert("P")
    buf = io.BytesIO()
    pal.save(buf, format="GIF")
    assert _grid(images.read_upload(buf.getvalue(), "a.gif", invert=False).x).max() == 1
    wide = np.zeros((28, 56), np.uint8)
    wide[:, 14:42] = 255
    im = Image.fromarray(wide)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    u = images.read_upload(buf.getvalue(), "phone.jpg")
    assert "turned upright" in u.note and u.square.shape == (56, 56)


def test_small_images_and_npy_arrays_of_any_size_are_resized():
    one = images.read_upload(_encode(np.full((1, 1), 255, np.uint8)), "dot.png", invert=False)
    assert np.allclose(_grid(one.x), 1) and "enlarged to 28×28" in one.note
    for shape in [(10, 10), (56, 56), (1, 56, 56), (56, 56, 1), (3, 7)]:
        arr = np.zeros(shape)
        buf = io.BytesIO()
        np.save(buf, arr)
        u = images.read_upload(buf.getvalue(), "a.npy", invert=False)
        assert np.array_equal(_grid(u.x), np.zeros((28, 28))), shape
    sq = np.zeros((56, 56))
    sq[14:42, 14:42] = 1
    for arr in (sq, (sq * 255).astype(np.uint8)):
        buf = io.BytesIO()
        np.save(buf, arr)
        assert np.array_equal(_grid(images.read_upload(buf.getvalue(), "sq.npy").x), _square_pattern())
    flat = np.linspace(0, 1, 784)
    for arr in (flat, flat[None], flat.reshape(28, 28)):  # 784 numbers are read as 28×28
        buf = io.BytesIO()
        np.save(buf, arr)
        assert np.allclose(_grid(images.read_upload(buf.getvalue(), "f.npy", invert=False).x),
                           flat.reshape(28, 28), atol=1e-6)
    for bad in (np.zeros(100), np.zeros((3, 28, 28)), np.zeros((0, 5))):
        buf = io.BytesIO()
        np.save(buf, bad)
        with pytest.raises(DataError, match="2-D array of grey values"):
            images.read_upload(buf.getvalue(), "bad.npy")


# ============================================================================================== Theorem 4 per layer
def _random_model(widths: tuple[int, ...], activation: str, seed: int, scale: float = 1.0) -> MLP:
    torch.manual_seed(seed)
    model = MLP(12, list(widths), 4, activation).double()
    with torch.no_grad():
        for layer in model.layers:
            layer.weight.mul_(scale)
            layer.bias.normal_(0, 1)
    return model


@pytest.mark.parametrize("widths,activation", [((9, 7), "softplus"), ((8, 8, 6), "tanh"), ((10, 6), "sigmoid"),
                                               ((7, 9, 5), "softplus")])
def test_each_layer_term_lies_within_its_theorem4_bound(widths, activation):
    model = _random_model(widths, activation, seed=len(widths), scale=2.5)
    gen = torch.Generator().manual_seed(0)
    for y, t in [(0, 1), (3, 2)]:
        bounds = margin_maths.theorem4_layer_bounds(model, y, t)
        assert bounds.shape == (len(widths),) and (bounds > 0).all()
        K = float(theorem4(model, torch.tensor([y]), torch.tensor([t]))[0])
        assert abs(bounds.sum() - K) <= 1e-9 * K
        assert abs(bounds.sum() - float(curvature_bounds(model, torch.tensor([y]), torch.tensor([t]),
                                                         method="thm4").K[0])) <= 1e-9 * K
        refined = margin_maths.theorem4_layer_bounds(model, y, t, refined=True)
        K_ref = float(theorem4(model, torch.tensor([y]), torch.tensor([t]), refined=True)[0])
        assert abs(refined.sum() - K_ref) <= 1e-9 * K_ref
        assert (refined <= bounds * (1 + 1e-12)).all()
        for scale in (0.3, 1.0, 3.0, 10.0):
            for _ in range(4):
                x = torch.randn(12, generator=gen, dtype=torch.float64) * scale
                lo, hi = margin_maths.layer_term_ranges(model, x, y, t)
                assert (np.abs(lo) <= refined).all() and (np.abs(hi) <= refined).all()
                assert (-bounds <= lo).all() and (hi <= bounds).all()


def test_per_layer_bounds_are_tight_on_a_single_path_network():
    """1→1→1→2 softplus: layer 1's term reaches its bound where z1 = 0 (σ'' = h) and σ'(z2) → g; layer 2's
    where z2 = 0 and σ'(z1) → g. So the per-term formula is not only valid but exact there."""
    model = MLP(1, [1, 1], 2, "softplus").double()
    with torch.no_grad():
        model.layers[0].weight.fill_(2.0)
        model.layers[0].bias.zero_()
        model.layers[1].weight.fill_(1.5)
        model.layers[1].bias.fill_(40.0)  # σ'(z2) ≈ 1 near x = 0
        model.layers[2].weight.copy_(torch.tensor([[1.0], [-0.5]], dtype=torch.float64))
    b = margin_maths.theorem4_layer_bounds(model, 0, 1)
    lo, hi = margin_maths.layer_term_ranges(model, torch.zeros(1, dtype=torch.float64), 0, 1)
    assert abs(max(abs(lo[0]), abs(hi[0])) / b[0] - 1) < 1e-9
    with torch.no_grad():
        model.layers[1].bias.fill_(-1.5 * 20.0)  # z2 = 0 where softplus(z1) = 20, i.e. z1 ≈ 20, σ'(z1) ≈ 1
    x = torch.tensor([float(np.log(np.expm1(20.0))) / 2.0], dtype=torch.float64)
    b = margin_maths.theorem4_layer_bounds(model, 0, 1)
    lo, hi = margin_maths.layer_term_ranges(model, x, 0, 1)
    assert abs(max(abs(lo[1]), abs(hi[1])) / b[1] - 1) < 1e-6


def test_layer_bounds_of_a_two_layer_net_and_bad_pairs():
    model = _random_model((6,), "softplus", seed=3)
    b = margin_maths.theorem4_layer_bounds(model, 1, 0)
    assert b.shape == (1,) and abs(b[0] - float(theorem4(model, torch.tensor([1]), torch.tensor([0]))[0])) <= 1e-12
    for y, t in [(1, 1), (0, 4), (-1, 2)]:
        with pytest.raises(CRCError):
            margin_maths.theorem4_layer_bounds(model, y, t)
