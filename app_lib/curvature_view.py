"""What the Curvature page shows, computed and cached here (the page only lays it out): K_ub against the measured
K_lb per class pair (from the process-wide survey store, :func:`app_lib.heavy_jobs.curvature_survey`), and the same
averages across models (the paper's Figure 1 and Table 16)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from app_lib import catalogue, heavy_jobs, margin_maths, registry

# ------------------------------------------------------------------------------------------------ curvature
METHODS = {"thm3": "Theorem 3 (2-layer nets)", "thm4": "Theorem 4", "refined": "refined Theorem 4"}
SHORT = {"thm3": "Thm 3", "thm4": "Thm 4", "refined": "refined"}


def curvature_ids(metas: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """The model ids (picker order) whose curvature can be compared, and those skipped (ReLU nets)."""
    relu = [i for i, m in metas.items() if (m.get("architecture") or {}).get("activation") == "relu"]
    return [i for i in metas if i not in relu], relu


def comparison_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The across-models table, one row per model: the K columns stay numeric (named "K_ub Thm 3", "K_ub Thm 4",
    "K_ub refined"), NaN where a value does not exist (Theorem 3 for a deeper net); the page shows NaN as
    :data:`MISSING`."""
    return pd.DataFrame(list(rows)).rename(columns={f"K_ub_{m}": f"K_ub {SHORT[m]}" for m in METHODS})


MISSING = "—"  # a missing cell of the across-models table (Streamlit would show "None")
THM3_HELP = ("Theorem 3's bound holds for 2-layer nets only: — for a deeper net, whose K_ub is Theorem 4's or the "
             "refined one.")


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
    K_lb = margin_maths.pair_matrix(y, t, torch.tensor(df["K_lb"].to_numpy()), C)
    count = np.nan_to_num(margin_maths.pair_matrix(y, t, torch.tensor(df["n_images"].to_numpy(), dtype=torch.float64),
                                               C), nan=0.0).astype(int)
    return K_lb, count


def pair_tables(ctx: catalogue.Ctx, n_images: int) -> PairTables:
    """K_ub of every applicable method at once; K_lb and counts from the survey when the machine is free."""
    C = ctx.model.n_classes
    K_ub = {}
    for m in methods_for(ctx.model):
        b = ctx.bounds(m)
        K_ub[m] = margin_maths.pair_matrix(b.y, b.t, b.K, C)
    df = heavy_jobs.curvature_survey(ctx.key, ctx.model, ctx.dataset, int(n_images), ctx.device)
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
        ref, m, meta = catalogue.model_by_id(mid, device)
        if not catalogue.has_curvature(m):  # no curvature bound to compare (the page does not offer ReLU models)
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
    df = heavy_jobs.curvature_survey(ref.key, m, dataset, int(n_images), device, label=f"for {ref.name}")
    if df is None:
        return None
    sel = df[df["n_images"] >= max(1, int(min_count))]
    y, t = torch.tensor(sel["y"].to_numpy()), torch.tensor(sel["t"].to_numpy())
    row: dict[str, Any] = {"model": short_name(ref, meta), "architecture": registry.arch_text(
        meta.get("architecture") or m.config()), "training": registry.kind_text(meta), "γ": meta.get("gamma"),
        "test accuracy": (meta.get("metrics") or {}).get("test_accuracy")}
    for meth in methods_for(m):
        K = catalogue.bounds_table(ref.key, meth, str(device), m).for_pairs(y.to(device), t.to(device)).K
        row[f"K_ub_{meth}"] = float(K.mean()) if len(sel) else None
    row["K_lb"] = float(sel["K_lb"].mean()) if len(sel) else None
    best = row.get("K_ub_thm3") or row.get("K_ub_refined")
    row["K_ub/K_lb"] = best / row["K_lb"] if best and row["K_lb"] else None
    return row
