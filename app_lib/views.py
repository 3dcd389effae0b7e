"""What the Home, Hessian and Curvature pages show, computed and cached here (the pages only lay it out).

Each function returns a small view model; heavy parts are cached per (model key, image key, …) with
``st.cache_resource`` or kept in the process-wide survey store (:func:`app_lib.ui.curvature_survey`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch

from app_lib import analysis, registry, ui

BOUND_NAMES = {"thm3": "Theorem 3", "refined": "refined Thm 4", "thm4": "Theorem 4"}  # short: metric labels
NONZERO_REL = 1e-7  # eigenvalues below this fraction of the largest |eigenvalue| count as 0 (round-off)


# ------------------------------------------------------------------------------------------------ home
def model_rows(ctx: ui.Ctx) -> dict[str, str]:
    """The Home page's description of the picked model: property -> value."""
    meta = ctx.meta
    metrics = meta.get("metrics") or {}
    rows = {
        "Model": registry.describe(ctx.ref, meta) if ctx.ref.source == "trained" else ctx.ref.name,
        "Source": ctx.ref.source,
        "Architecture": registry.arch_text(meta.get("architecture") or ctx.model.config()),
        "Training": registry.kind_text(meta),
        "Trained on": str(meta.get("dataset") or "unknown"),
        "Epochs": str(meta.get("epochs") if meta.get("epochs") is not None else "—"),
        "Device in use": str(ctx.device),
        "Dataset in use": f"{ctx.dataset} (test split)",
    }
    acc, cert = metrics.get("test_accuracy"), metrics.get("certified_accuracy")
    if isinstance(acc, (int, float)):
        rows["Test accuracy (saved)"] = f"{acc:.1%}"
    if isinstance(cert, (int, float)):
        rows[f"Certified accuracy at ρ={metrics.get('eval_rho', 0.5):g} (saved)"] = f"{cert:.1%}"
    return rows


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


def targets(ctx: ui.Ctx, picked: ui.Picked) -> Targets:
    """The predicted class at the picked image and the targets, runner-up first."""
    return _targets(ctx.key, picked.key, str(ctx.device), ctx.model, picked.x)


@dataclass(frozen=True)
class HessianView:
    """The spectrum of the margin Hessian ∇²(z_pred − z_t) at one image against the global bounds: m ≤ λ ≤ M (the
    certificate's bounds, ``method``) and |λ| ≤ K (Theorem 4); per-layer (Lemma 1) terms for deeper nets."""

    spectrum: analysis.Spectrum
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
def _hessian(key: str, image_key: str, y: int, t: int, device: str, _ctx: ui.Ctx, _x) -> HessianView:
    model, x = _ctx.model, _x.to(device)
    sp = analysis.spectrum(model, x, y, t)
    yy, tt = torch.tensor([y], device=device), torch.tensor([t], device=device)
    auto = _ctx.bounds("auto").for_pairs(yy, tt)
    K4 = float(_ctx.bounds("thm4").for_pairs(yy, tt).K[0])
    layers = None
    if model.depth > 2:
        lo, hi = analysis.layer_term_ranges(model, x, y, t)
        layers = (lo, hi, analysis.theorem4_layer_bounds(model, y, t))
    return HessianView(sp, float(auto.m[0]), float(auto.M[0]), K4, BOUND_NAMES.get(auto.method, auto.method),
                       layers)


def hessian(ctx: ui.Ctx, picked: ui.Picked, y: int, t: int) -> HessianView:
    """Spectrum and bounds of the margin Hessian of (y, t) at the picked image (cached)."""
    return _hessian(ctx.key, picked.key, int(y), int(t), str(ctx.device), ctx, picked.x)


# ------------------------------------------------------------------------------------------------ curvature
METHODS = {"thm3": "Theorem 3 (2-layer nets)", "thm4": "Theorem 4", "refined": "refined Theorem 4"}
SHORT = {"thm3": "Thm 3", "thm4": "Thm 4", "refined": "refined"}


def has_curvature(model) -> bool:
    """False for a ReLU network: its Hessian is zero almost everywhere (undefined at the kinks), so it has no
    curvature bound and the Curvature and Hessian pages do not apply."""
    return model.activation_name != "relu"


def curvature_ids(metas: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """The model ids (picker order) whose curvature can be compared, and those skipped (ReLU nets)."""
    relu = [i for i, m in metas.items() if (m.get("architecture") or {}).get("activation") == "relu"]
    return [i for i in metas if i not in relu], relu


def methods_for(model) -> list[str]:
    """The K_ub methods that apply to ``model`` (Theorem 3: 2-layer nets only)."""
    return [m for m in METHODS if m != "thm3" or model.depth == 2]


@dataclass(frozen=True)
class PairTables:
    """(C, C) tables over (class y, target t): K_ub per method, and, once measured, K_lb and the image counts
    (None while the machine is busy: the survey waits its turn)."""

    K_ub: dict[str, np.ndarray]
    K_lb: np.ndarray | None
    count: np.ndarray | None

    @property
    def measured(self) -> bool:
        return self.K_lb is not None

    def mask(self, min_count: int) -> np.ndarray:
        """Pairs with at least ``min_count`` images (none before the survey)."""
        if self.count is None:
            return np.zeros_like(next(iter(self.K_ub.values())), dtype=bool)
        out = self.count >= max(1, int(min_count))
        np.fill_diagonal(out, False)
        return out

    def mean_K_ub(self, method: str, min_count: int) -> float | None:
        sel = self.mask(min_count)
        return float(np.nanmean(self.K_ub[method][sel])) if sel.any() else None

    def mean_K_lb(self, min_count: int) -> float | None:
        sel = self.mask(min_count)
        return float(np.nanmean(self.K_lb[sel])) if sel.any() and self.K_lb is not None else None

    def ratio(self, method: str, min_count: int) -> np.ndarray:
        """K_ub / K_lb per pair with enough images (NaN elsewhere)."""
        if self.K_lb is None:
            return np.full_like(self.K_ub[method], np.nan)
        klb = np.where(self.K_lb > 0, self.K_lb, np.nan)
        return np.where(self.mask(min_count), self.K_ub[method] / klb, np.nan)


def _tables_from_survey(df: pd.DataFrame | None, C: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    if df is None:
        return None, None
    y, t = torch.tensor(df["y"].to_numpy()), torch.tensor(df["t"].to_numpy())
    K_lb = analysis.pair_matrix(y, t, torch.tensor(df["K_lb"].to_numpy()), C)
    count = np.nan_to_num(analysis.pair_matrix(y, t, torch.tensor(df["n_images"].to_numpy(), dtype=torch.float64),
                                               C), nan=0.0).astype(int)
    return K_lb, count


def pair_tables(ctx: ui.Ctx, n_images: int) -> PairTables:
    """K_ub of every applicable method at once; K_lb and counts from the survey when the machine is free."""
    C = ctx.model.n_classes
    K_ub = {}
    for m in methods_for(ctx.model):
        b = ctx.bounds(m)
        K_ub[m] = analysis.pair_matrix(b.y, b.t, b.K, C)
    df = ui.curvature_survey(ctx.key, ctx.model, ctx.dataset, int(n_images), ctx.device)
    return PairTables(K_ub, *_tables_from_survey(df, C))


def short_name(ref: registry.ModelRef, meta: Mapping[str, Any]) -> str:
    """A model's name in a chart: the file name, or for a model trained in the app what tells it apart."""
    stamp = registry.trained_stamp(ref, meta)
    return ref.name if stamp is None else f"{registry.kind_text(meta)} · trained {stamp}"


def contrasting_models(current: str, metas: Mapping[str, Mapping[str, Any]], n: int = 4) -> list[str]:
    """A default set for the cross-model comparison that contrasts training kinds (the paper's Figure 1): the
    current model, then one model of each other kind (standard, CRT, γ-regularized; same architecture and shipped
    preferred), then others up to ``n``."""
    arch = registry.arch_text(metas[current].get("architecture") or {}) if current in metas else ""

    def rank(i: str) -> tuple[bool, bool]:
        return (registry.arch_text(metas[i].get("architecture") or {}) != arch, not i.startswith("shipped:"))

    chosen = [current] if current in metas else []
    kinds = {registry.training_kind(metas[i]) for i in chosen}
    for kind in ("standard", "crt", "gamma"):
        options = sorted((i for i in metas if i not in chosen and registry.training_kind(metas[i]) == kind), key=rank)
        if kind not in kinds and options:
            chosen.append(options[0])
            kinds.add(kind)
    rest = sorted((i for i in metas if i not in chosen), key=rank)
    return (chosen + rest)[:n]


@dataclass(frozen=True)
class Comparison:
    """One row per compared model (the paper's Table 16 view) and the ids still waiting for the machine."""

    rows: list[dict[str, Any]]
    waiting: list[str]


def compare(ids: Sequence[str], dataset: str, n_images: int, min_count: int, device: torch.device) -> Comparison:
    """Mean K_ub (each method) and mean K_lb over the pairs with at least ``min_count`` images, per model
    (:func:`crc_core.evaluate.curvature_table` through the survey store). Models whose survey has to wait for the
    machine are listed in ``waiting``."""
    rows, waiting = [], []
    for mid in ids:
        ref, m, meta = ui.model_by_id(mid, device)
        if not has_curvature(m):  # no curvature bound to compare (the page does not offer ReLU models)
            continue
        row = compare_row(ref, m, meta, dataset, n_images, min_count, device)
        if row is None:
            waiting.append(mid)
        else:
            rows.append(row)
    return Comparison(rows, waiting)


def compare_row(ref: registry.ModelRef, m, meta: Mapping[str, Any], dataset: str, n_images: int, min_count: int,
                device: torch.device) -> dict[str, Any] | None:
    """One model's row of :func:`compare` (K_lb measured through the survey store); None while the survey waits
    for the machine."""
    df = ui.curvature_survey(ref.key, m, dataset, int(n_images), device, label=f"for {ref.name}")
    if df is None:
        return None
    sel = df[df["n_images"] >= max(1, int(min_count))]
    y, t = torch.tensor(sel["y"].to_numpy()), torch.tensor(sel["t"].to_numpy())
    row: dict[str, Any] = {"model": short_name(ref, meta), "architecture": registry.arch_text(
        meta.get("architecture") or m.config()), "training": registry.kind_text(meta), "γ": meta.get("gamma"),
        "test accuracy": (meta.get("metrics") or {}).get("test_accuracy")}
    for meth in methods_for(m):
        K = ui.bounds_table(ref.key, meth, str(device), m).for_pairs(y.to(device), t.to(device)).K
        row[f"K_ub_{meth}"] = float(K.mean()) if len(sel) else None
    row["K_lb"] = float(sel["K_lb"].mean()) if len(sel) else None
    best = row.get("K_ub_thm3") or row.get("K_ub_refined")
    row["K_ub/K_lb"] = best / row["K_lb"] if best and row["K_lb"] else None
    return row
