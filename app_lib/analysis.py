"""Small computations the pages need around crc_core (pure torch/numpy, no Streamlit): reading an uploaded
image, the margin along a line, the spectrum of the margin Hessian and its per-layer (Lemma 1) terms."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch

from crc_core.errors import DataError
from crc_core.hessian import margin_hessian, margin_hessian_eigh
from crc_core.models import MLP


# ------------------------------------------------------------------------------------------------ images
def image_from_upload(data: bytes, filename: str, *, invert: bool = False) -> torch.Tensor:
    """An uploaded 28×28 image (PNG/JPEG/BMP/… or a .npy array) -> float32 (784,) in [0, 1].

    Colour images are converted to grey. Raises DataError with a readable message for anything else.
    """
    if not data:
        raise DataError(f"{filename}: the uploaded file is empty.")
    if filename.lower().endswith(".npy"):
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as exc:
            raise DataError(f"{filename} is not a readable .npy array ({exc}).") from None
        if arr.dtype.kind not in "biuf" or arr.size != 784:
            raise DataError(f"{filename}: expected 28×28 numbers, got an array of {arr.dtype} with shape "
                            f"{tuple(arr.shape)}.")
        arr = np.asarray(arr, dtype=np.float64).squeeze()
        if arr.size and arr.max() > 1.0:
            arr = arr / 255.0
    else:
        try:
            from PIL import Image, UnidentifiedImageError
        except ImportError as exc:  # pillow ships with streamlit
            raise DataError("Reading images needs the 'pillow' package.") from exc
        try:
            with Image.open(io.BytesIO(data)) as im:
                if im.size != (28, 28):  # refuse before decoding: a tiny file can hold a huge image
                    raise DataError(f"{filename} is {im.size[0]}×{im.size[1]} pixels; the models take 28×28 "
                                    "grey-scale images (like Fashion-MNIST). Resize it to 28×28 pixels first.")
                arr = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
        except DataError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"{filename} is not an image file this app can read ({exc}).") from None
    if arr.shape != (28, 28):
        raise DataError(f"{filename} has shape {tuple(arr.shape)}; the models take 28×28 grey-scale images "
                        "(like Fashion-MNIST). Resize it to 28×28 pixels first.")
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise DataError(f"{filename}: pixel values must be finite and lie in [0, 1] (or 0–255).")
    if invert:
        arr = 1.0 - arr
    return torch.from_numpy(arr.astype(np.float32).reshape(784))


def to_png_array(x: torch.Tensor) -> np.ndarray:
    """(784,) in [0, 1] -> (28, 28) uint8 for st.image."""
    return (x.detach().cpu().reshape(28, 28).clamp(0, 1).numpy() * 255).round().astype(np.uint8)


# ------------------------------------------------------------------------------------------------ margins
@dataclass
class Line:
    """Margins along x0 + s·u, u a unit direction: s (S,), f_target (S,), f_any (S,) (z_y − max other)."""

    s: np.ndarray
    f_target: np.ndarray
    f_any: np.ndarray


@torch.no_grad()
def margin_line(model: MLP, x0: torch.Tensor, direction: torch.Tensor, y: int, t: int, s_max: float,
                n: int = 161) -> Line:
    """The margins along the ray from x0 (D,) in ``direction`` (D,), for distances 0..s_max."""
    dev = model.layers[0].weight.device
    x0 = x0.reshape(-1).to(dev, torch.float32)
    u = direction.reshape(-1).to(dev, torch.float32)
    nrm = float(u.norm())
    if not np.isfinite(nrm) or nrm == 0:
        u = torch.zeros_like(x0)
        u[0] = 1.0
    else:
        u = u / nrm
    s = torch.linspace(0, float(s_max), n, device=dev)
    z = model(x0[None] + s[:, None] * u[None])
    others = z.clone()
    others[:, y] = float("-inf")
    return Line(s.cpu().numpy(), (z[:, y] - z[:, t]).cpu().numpy(), (z[:, y] - others.amax(1)).cpu().numpy())


# ------------------------------------------------------------------------------------------------ hessian
@dataclass
class Spectrum:
    """Eigen-decomposition of the margin Hessian at one image: values (D,) ascending, vectors (D, D) columns."""

    values: np.ndarray
    vectors: np.ndarray

    def extreme_vectors(self, k: int = 3) -> tuple[list[np.ndarray], list[float], list[str]]:
        """The k largest and the k smallest (most negative) eigenvectors, with eigenvalues and labels."""
        D = self.values.size
        idx = [D - 1 - i for i in range(k)] + list(range(k))
        kinds = [f"top {i + 1}:" for i in range(k)] + [f"bottom {i + 1}:" for i in range(k)]
        return [self.vectors[:, i] for i in idx], [float(self.values[i]) for i in idx], kinds


def spectrum(model: MLP, x: torch.Tensor, y: int, t: int) -> Spectrum:
    vals, vecs = margin_hessian_eigh(model, x.reshape(1, -1), y, t)
    return Spectrum(vals.cpu().numpy(), vecs.cpu().numpy())


@torch.no_grad()
def layer_term_ranges(model: MLP, x: torch.Tensor, y: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Lemma 1 per-layer terms of the margin Hessian at x: (smallest, largest) eigenvalue of each, (L−1,)."""
    m64 = MLP.from_config(model.config()).to(dtype=torch.float64, device=model.layers[0].weight.device)
    m64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    x64 = x.reshape(1, -1).to(m64.layers[0].weight.device, torch.float64)
    terms = margin_hessian(m64, x64, torch.tensor([y]), torch.tensor([t]), per_layer=True)  # (L-1, 1, D, D)
    ev = torch.linalg.eigvalsh(terms[:, 0])
    return ev[:, 0].cpu().numpy(), ev[:, -1].cpu().numpy()


def pair_matrix(y: torch.Tensor, t: torch.Tensor, values: torch.Tensor, n_classes: int) -> np.ndarray:
    """Values (P,) for pairs (y, t) -> (C, C) array with NaN where no pair (e.g. the diagonal)."""
    out = np.full((n_classes, n_classes), np.nan)
    out[y.cpu().numpy(), t.cpu().numpy()] = values.detach().cpu().double().numpy()
    return out
