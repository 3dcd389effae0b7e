"""What the Hessian page shows, computed and cached here (the page only lays it out): the classes closest to the
picked image's prediction, and the exact Hessian spectrum at the image against the global bounds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st
import torch

from app_lib import catalogue, margin_maths, state

BOUND_NAMES = {"thm3": "Theorem 3", "refined": "refined Thm 4", "thm4": "Theorem 4"}  # short: metric labels
NONZERO_REL = 1e-7  # eigenvalues below this fraction of the largest |eigenvalue| count as 0 (round-off)

# ------------------------------------------------------------------------------------------------ hessian
@dataclass(frozen=True)
class Targets:
    """The prediction at an image and the other classes, closest (smallest margin) first, with their margins."""

    pred: int
    order: list[int]
    margins: dict[int, float]


@st.cache_resource(show_spinner=False, max_entries=64)
def _targets(key: str, image_key: str, device: str, _model, _x) -> Targets:
    with torch.no_grad():
        z = _model(_x[None].to(device))[0].detach().cpu().double()
    pred = int(z.argmax())
    order = [int(i) for i in z.argsort(descending=True) if int(i) != pred]
    return Targets(pred, order, {t: float(z[pred] - z[t]) for t in order})


def targets(ctx: catalogue.Ctx, picked: state.Picked) -> Targets:
    """The predicted class at the picked image and the targets, runner-up first."""
    return _targets(ctx.key, picked.key, str(ctx.device), ctx.model, picked.x)


@dataclass(frozen=True)
class HessianView:
    """The spectrum of the margin Hessian ∇²(z_pred − z_t) at one image against the global bounds: m ≤ λ ≤ M (the
    certificate's bounds, ``method``) and |λ| ≤ K (Theorem 4); per-layer (Lemma 1) terms for deeper nets."""

    spectrum: margin_maths.Spectrum
    m: float
    M: float
    K4: float
    method: str
    layers: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # (smallest, largest eigenvalue, Thm 4 bound) per layer

    @property
    def ratio(self) -> float:
        """How many times the largest |curvature| here the bounds are."""
        v = self.spectrum.values
        return max(self.M, -self.m) / max(abs(float(v[-1])), abs(float(v[0])), 1e-12)

    @property
    def nonzero(self) -> int:
        v = np.abs(self.spectrum.values)
        return int((v > NONZERO_REL * v.max()).sum())


@st.cache_resource(show_spinner="Computing all 784 eigenvalues…", max_entries=32)
def _hessian(key: str, image_key: str, y: int, t: int, device: str, _ctx: catalogue.Ctx, _x) -> HessianView:
    model, x = _ctx.model, _x.to(device)
    sp = margin_maths.spectrum(model, x, y, t)
    yy, tt = torch.tensor([y], device=device), torch.tensor([t], device=device)
    auto = _ctx.bounds("auto").for_pairs(yy, tt)
    K4 = float(_ctx.bounds("thm4").for_pairs(yy, tt).K[0])
    layers = None
    if model.depth > 2:
        lo, hi = margin_maths.layer_term_ranges(model, x, y, t)
        layers = (lo, hi, margin_maths.theorem4_layer_bounds(model, y, t))
    return HessianView(sp, float(auto.m[0]), float(auto.M[0]), K4, BOUND_NAMES.get(auto.method, auto.method),
                       layers)


def hessian(ctx: catalogue.Ctx, picked: state.Picked, y: int, t: int) -> HessianView:
    """Spectrum and bounds of the margin Hessian of (y, t) at the picked image (cached)."""
    return _hessian(ctx.key, picked.key, int(y), int(t), str(ctx.device), ctx, picked.x)
