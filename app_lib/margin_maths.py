"""The margin computations the Certify and Hessian pages draw (pure torch/numpy, no Streamlit): the margin along
a straight line from an image, the spectrum of the margin Hessian at an image, its per-layer (Lemma 1) terms with
Theorem 4's bound on each, and a per-pair table laid out as a C×C matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from crc_core.bounds import theorem4_terms
from crc_core.errors import CRCError
from crc_core.hessian import margin_hessian, margin_hessian_eigh
from crc_core.models import MLP, as_dtype


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
    m64 = as_dtype(model, torch.float64)
    x64 = x.reshape(1, -1).to(m64.layers[0].weight.device, torch.float64)
    terms = margin_hessian(m64, x64, torch.tensor([y]), torch.tensor([t]), per_layer=True)  # (L-1, 1, D, D)
    ev = torch.linalg.eigvalsh(terms[:, 0])
    return ev[:, 0].cpu().numpy(), ev[:, -1].cpu().numpy()


def theorem4_layer_bounds(model: MLP, y: int, t: int, *, refined: bool = False) -> np.ndarray:
    """Theorem 4's bound on each Lemma 1 term of the margin Hessian ∇²(z_y − z_t), for one pair: (L−1,) float64.

    Term I (the hidden layer I = 1..L−1) is B^(I)ᵀ diag(F^(L,I) ⊙ σ''(z^(I))) B^(I); for every input x its spectral
    norm is at most  h · (r^(I))² · max_j S^(I)_j  (paper Theorem 4, step (c) of its proof, with r, S of eqs. 5–6
    and the last layer's row replaced by w = W^(L)_y − W^(L)_t), so each term's eigenvalues lie in ±that bound.
    ``refined``: h · ‖diag(√S^(I)) W^(I)‖² · (g r^(I−1))² instead (never larger). The terms sum to
    :func:`crc_core.bounds.theorem4` for the pair (with ``refined`` alike), including the same round-off allowance;
    r and S come from the same helper as ``theorem4`` uses (exact float64 spectral norms, rounded up).
    """
    C = model.n_classes
    y, t = int(y), int(t)
    if not (0 <= y < C and 0 <= t < C) or y == t:
        raise CRCError(f"Pairs must satisfy 0 <= y, t < {C} and y != t; got ({y}, {t}).")
    dev = model.layers[0].weight.device
    pair = torch.tensor([y], device=dev), torch.tensor([t], device=dev)
    return theorem4_terms(model, *pair, refined=refined)[0].cpu().numpy()


def pair_matrix(y: torch.Tensor, t: torch.Tensor, values: torch.Tensor, n_classes: int) -> np.ndarray:
    """Values (P,) for pairs (y, t) -> (C, C) array with NaN where no pair (e.g. the diagonal)."""
    out = np.full((n_classes, n_classes), np.nan)
    out[y.cpu().numpy(), t.cpu().numpy()] = values.detach().cpu().double().numpy()
    return out
