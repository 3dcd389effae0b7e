"""Pictures for the models (pure numpy/torch/Pillow, no Streamlit): an uploaded picture read into the 28×28 grey
image a model sees (with what was done, in words), the content key every cached result of an image uses, and an
image as a PNG array for display."""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from crc_core.errors import DataError

# ------------------------------------------------------------------------------------------------ images
SIDE = 28  # the models take SIDE×SIDE grey images (Fashion-MNIST)
MAX_PIXELS = 40_000_000  # larger uploads are refused from their declared size, before anything is decoded
_WORK = 8 * SIDE  # big pictures are first box-reduced to at most about 2·_WORK pixels per side (cheap, 8-bit)

Invert = bool | Literal["auto"]


@dataclass
class UploadedImage:
    """An upload made ready for the models (see :func:`read_upload`).

    x: float32 (784,) in [0, 1], what the model sees; size: the upload's (width, height); square: the grey picture
    padded to a square (uint8, at most ~450 pixels per side), for a preview; inverted: whether the grey values
    were flipped; note: one sentence saying what was done, for the user.
    """

    x: torch.Tensor
    size: tuple[int, int]
    square: np.ndarray
    inverted: bool
    note: str


def read_upload(data: bytes, filename: str, *, invert: Invert = "auto") -> UploadedImage:
    """An uploaded picture of any size (PNG/JPEG/BMP/GIF/WebP/…, or a .npy array) -> the 28×28 the models take.

    Much as Fashion-MNIST was made (each product centred on a square canvas, then shrunk to 28×28): grey values
    (transparent parts on white, phone photos turned upright as their EXIF data says), padded to a square with the
    picture's background colour (the median of its border) so that the aspect ratio is kept, then resized to
    28×28 (area average when shrinking, Lanczos when enlarging). Unlike Fashion-MNIST, nothing is cropped or
    sharpened. Fashion-MNIST objects are light on a dark background: ``invert=True`` flips the grey values,
    ``"auto"`` flips them when the background is light (median border value above ½).

    A .npy file holds grey values in [0, 1] (or 0–255): either a 2-D array of any size (a picture, resized the same
    way) or 784 numbers (read as 28×28).

    Refused with a readable :class:`DataError`: empty, corrupt or non-image files, pictures above
    :data:`MAX_PIXELS` (checked from the declared size before decoding: a small file can unpack into a huge
    image), arrays that are not numbers or hold NaN/Inf or values outside [0, 255].
    """
    if invert not in (True, False, "auto"):
        raise ValueError(f"invert must be True, False or 'auto', got {invert!r}")
    if not data:
        raise DataError(f"{filename}: the uploaded file is empty.")
    steps: list[str] = []
    if filename.lower().endswith(".npy"):
        grey, size = _npy_picture(data, filename)
    else:
        grey, size = _decode_picture(data, filename, steps)
    small, square, background = _fit_square(grey)
    w, h = size
    if w != h:
        steps.append(f"padded to a square with its background colour (grey level {background:.2f})")
    if (w, h) != (SIDE, SIDE):
        steps.append(f"{'shrunk' if max(w, h) > SIDE else 'enlarged'} to {SIDE}×{SIDE}")
    flip = background > 0.5 if invert == "auto" else bool(invert)
    if invert == "auto":
        steps.append("inverted because its background is light (the models expect a light object on a dark "
                     "background)" if flip else "not inverted (its background is dark)")
    elif flip:
        steps.append("inverted, as asked")
    if flip:
        small = 1.0 - small
    what = f"{filename} ({w}×{h}" + (" array)" if filename.lower().endswith(".npy") else " pixels)")
    note = f"{what}: " + (", ".join(steps) if steps else "used as is") + "."
    x = torch.from_numpy(small.astype(np.float32).reshape(SIDE * SIDE))
    return UploadedImage(x, (w, h), square, flip, note)


def _too_big(filename: str, w: int, h: int) -> DataError:
    return DataError(f"{filename} is {w}×{h} pixels ({w * h / 1e6:.0f} megapixels); pictures above "
                     f"{MAX_PIXELS / 1e6:.0f} megapixels are refused (a small file can unpack into a huge image). "
                     "Upload a smaller picture.")


def _decode_picture(data: bytes, filename: str, steps: list[str]):
    """Decode an image file into a grey PIL image (mode "L", or "F" in [0, 1] for 16-bit files), reduced to at
    most ~2·_WORK pixels per side. Returns (image, (width, height) as uploaded)."""
    try:
        from PIL import Image, ImageOps  # pillow ships with streamlit
    except ImportError as exc:
        raise DataError("Reading images needs the 'pillow' package.") from exc
    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            w, h = im.size
            if w * h > MAX_PIXELS:  # refuse before decoding
                raise _too_big(filename, w, h)
            if w < 1 or h < 1:
                raise DataError(f"{filename} has no pixels ({w}×{h}).")
            colour = im.mode not in ("1", "L", "LA", "La", "F") and not im.mode.startswith("I")
            im.draft("L", (_WORK, _WORK))  # JPEG (and MPO): decode grey at 1/2, 1/4 or 1/8 scale; others: no-op
            im.load()
            if colour:
                steps.append("converted to grey")
            grey = _to_grey(im, steps)
            try:
                if grey.getexif().get(0x0112, 1) != 1:  # phone photos store their orientation in EXIF
                    grey = ImageOps.exif_transpose(grey)
                    steps.append("turned upright (as its EXIF data says)")
            except Exception:  # a broken EXIF block is not worth refusing the picture for
                pass
            if (k := max(grey.size) // _WORK) >= 2:
                grey = grey.reduce(k)
            return grey, (w, h)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{filename} declares a picture far above the {MAX_PIXELS / 1e6:.0f}-megapixel limit and "
                        f"was refused before decoding, as a possible decompression bomb ({exc}).") from None
    except MemoryError:
        raise DataError(f"{filename} is too large to read into memory. Upload a smaller picture.") from None
    except Exception:  # UnidentifiedImageError, truncated data (OSError), broken headers, …: no internals shown
        raise DataError(f"{filename} is not an image file this app can read: it is another kind of file, or a "
                        "damaged picture. Upload a PNG, JPEG, BMP, GIF or WebP picture, or a .npy array.") from None


def _to_grey(im, steps: list[str]):
    """Any PIL mode -> "L" (or "F" in [0, 1] for 16/32-bit grey); transparent parts are put on white."""
    from PIL import Image

    if im.mode.startswith("I") or im.mode == "F":  # 16/32-bit grey: PIL's "L" conversion would clip at 255
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I") else (255.0 if a.max(initial=0) > 1 else 1.0)
        return Image.fromarray(np.clip(a / top, 0, 1).astype(np.float32))
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        alpha = rgba.getchannel("A")
        grey = rgba.convert("L")
        if alpha.getextrema()[0] < 255:
            grey = Image.composite(grey, Image.new("L", grey.size, 255), alpha)
            steps.append("transparent parts put on white")
        return grey
    return im.convert("L")


def _npy_picture(data: bytes, filename: str):
    """A .npy upload -> grey PIL image (mode "F", values in [0, 1]) and its (width, height)."""
    from PIL import Image

    fmt = np.lib.format
    f = io.BytesIO(data)
    try:  # read the header first: refuse what it promises before allocating anything
        version = fmt.read_magic(f)
        shape, _fortran, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(f)
        n = math.prod(shape)
        if dtype.itemsize and n * dtype.itemsize > len(data) - f.tell():
            raise ValueError(f"its header promises a {'×'.join(map(str, shape))} array of {dtype}, "
                             f"but the file holds only {len(data)} bytes")
    except Exception as exc:
        raise DataError(f"{filename} is not a readable .npy array ({exc}).") from None
    if n > MAX_PIXELS:  # refuse before allocating
        raise DataError(f"{filename} holds a {'×'.join(map(str, shape))} array ({n / 1e6:.0f} million values); "
                        f"arrays above {MAX_PIXELS / 1e6:.0f} million values are refused. Upload a smaller one.")
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{filename} is not a readable .npy array ({exc}).") from None
    rules = ("expected a 2-D array of grey values (a picture of any size, e.g. 28×28, which is resized like an "
             "image) or 784 numbers (read as 28×28)")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{filename}: {rules}; got an array of {arr.dtype} with shape {tuple(arr.shape)}.")
    dims = [d for d in arr.shape if d != 1]  # axes of length 1, as in (1, 28, 28) or (28, 28, 1), are dropped
    if arr.size == SIDE * SIDE and len(dims) == 1:
        a = arr.reshape(SIDE, SIDE)
    elif arr.size and arr.ndim == 2:
        a = arr
    elif arr.size and arr.ndim > 2 and len(dims) == 2:
        a = arr.reshape(dims)
    else:
        raise DataError(f"{filename}: {rules}; got shape {tuple(arr.shape)}.")
    h, w = a.shape
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise DataError(f"{filename}: pixel values must be finite (no NaN or infinity) and lie in [0, 1] "
                        "(or 0–255).")
    if a.max() > 1.0:
        a = a / 255.0
    if a.min() < 0 or a.max() > 1:
        raise DataError(f"{filename}: pixel values must be finite and lie in [0, 1] (or 0–255); got values from "
                        f"{float(arr.min()):g} to {float(arr.max()):g}.")
    img = Image.fromarray(a.astype(np.float32))
    if (k := max(w, h) // _WORK) >= 2:
        img = img.reduce(k)
    return img, (w, h)


def _fit_square(grey) -> tuple[np.ndarray, np.ndarray, float]:
    """A grey PIL image ("L" 0–255 or "F" in [0, 1]) -> (28×28 float64 in [0, 1], the padded square as uint8,
    background level in [0, 1]). The picture is centred on a square of its background colour (the median of its
    border), so the aspect ratio is kept, then resized: box filter (area average) when shrinking, Lanczos when
    enlarging."""
    from PIL import Image

    a = np.asarray(grey, dtype=np.float64)
    if grey.mode != "F":
        a = a / 255.0
    h, w = a.shape
    background = float(np.median(np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])))
    s = max(h, w)
    sq = np.full((s, s), background)
    top, left = (s - h) // 2, (s - w) // 2
    sq[top:top + h, left:left + w] = a
    filt = Image.Resampling.BOX if s >= SIDE else Image.Resampling.LANCZOS
    small = np.asarray(Image.fromarray(sq.astype(np.float32)).resize((SIDE, SIDE), filt), dtype=np.float64)
    return np.clip(small, 0.0, 1.0), (sq * 255).round().astype(np.uint8), background


def image_key(content: torch.Tensor | bytes) -> str:
    """The one cache key of an image (its pixels) or of an uploaded file (its bytes): a content hash, stable
    across processes (unlike Python's salted ``hash``). Everything computed for an image is cached under it."""
    raw = content if isinstance(content, bytes) else content.detach().cpu().float().contiguous().numpy().tobytes()
    return hashlib.sha1(raw).hexdigest()[:16]


def to_png_array(x: torch.Tensor) -> np.ndarray:
    """(784,) in [0, 1] -> (28, 28) uint8 for st.image."""
    return (x.detach().cpu().reshape(28, 28).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
