"""Curvature: certified upper bounds K_ub vs the curvature measured at test images K_lb, per class pair and
across models (paper Figure 1 / Table 16)."""

import math

import numpy as np
import pandas as pd
import streamlit as st

from app_lib import analysis, registry, ui
from crc_core import plots

METHODS = {"thm3": "Theorem 3 (2-layer nets)", "thm4": "Theorem 4", "refined": "refined Theorem 4"}
SHORT = {"thm3": "Thm 3", "thm4": "Thm 4", "refined": "refined Thm 4"}

ctx = ui.page_setup("Curvature", ":material/monitoring:")
st.title("Curvature: bounds vs reality")
st.caption("Certificates are only as good as the curvature bounds behind them. Here the bound K_ub, which holds for "
           "every possible input, meets K_lb, the largest curvature actually measured near test images.")
ui.explain(
    """
* For a class y and a target t, the margin z_y − z_t bends (curves) as the image changes; the largest |eigenvalue|
  of its Hessian measures how much.
* **K_ub** (upper bound) is computed from the weights and holds *everywhere*: Theorem 3 (2-layer nets, separate
  m and M; K = max(|m|, M)), Theorem 4 (any depth), or the refined Theorem 4 (tighter, used for deep nets).
* **K_lb** (measured) is the largest |eigenvalue| found at test images predicted y whose runner-up is t (paper
  App. H.1). The true global curvature lies between K_lb and K_ub.
* **Ratio K_ub / K_lb**: 1 means the bound is tight. Standard training gives large ratios (loose bounds, small
  certificates); γ-regularized and CRT training bring it close to 1 — the paper's Figure 1.
* Averages use the pairs with enough test images (the paper keeps pairs with ≥ 1% of the test set).
"""
)

with ui.guard("Curvature"):
    model, dev = ctx.model, ctx.device
    ds = ctx.test_set()
    names = ds.class_names
    C = model.n_classes
    methods = [m for m in METHODS if m != "thm3" or model.depth == 2]
    c1, c2, c3 = st.columns(3)
    method = ui.persistent(c1.selectbox, "K_ub from", "crc_curv_method", methods[0], options=methods,
                           format_func=METHODS.get, valid=lambda v: v in methods)
    n_images = ui.persistent(c2.select_slider, "Test images for K_lb", "crc_curv_n", min(500, len(ds)),
                             options=[n for n in (100, 200, 500, 1000, 2000, 5000, 10000) if n <= len(ds)]
                             or [len(ds)], help="K_lb: power iteration with Hessian-vector products per image.")
    min_count = ui.persistent(c3.number_input, "Min. images per pair (for the averages)", "crc_curv_min",
                              max(1, math.ceil(0.01 * n_images)), min_value=1, max_value=1000, step=1)

    bounds = {m: ctx.bounds(m) for m in methods}
    Kub = {m: analysis.pair_matrix(b.y, b.t, b.K, C) for m, b in bounds.items()}
    pc = ui.measured_curvature(ctx.key, model, ctx.dataset, int(n_images), dev)
    Klb = pc.K_lb.cpu().numpy()
    count = pc.count.cpu().numpy()
    mask = count >= min_count
    np.fill_diagonal(mask, False)
    ratio = np.where(mask, Kub[method] / np.where(Klb > 0, Klb, np.nan), np.nan)

    st.subheader(f"This model: {ctx.ref.name}")
    k = st.columns(5)
    n_pairs = int(mask.sum())
    k[0].metric("pairs used", f"{n_pairs} of {C * (C - 1)}", help=f"Pairs with at least {min_count} images.")
    for i, m in enumerate(methods):
        k[1 + i].metric(f"mean K_ub ({SHORT[m]})", f"{np.nanmean(Kub[m][mask]):.4g}" if n_pairs else "—")
    k[4].metric("mean K_lb (measured)", f"{pc.mean_K_lb(min_count):.4g}" if n_pairs else "—",
                f"K_ub/K_lb = {np.nanmean(Kub[method][mask]) / pc.mean_K_lb(min_count):.3g}×" if n_pairs else None,
                delta_color="off", delta_arrow="off")
    if not n_pairs:
        st.warning(f"No pair has {min_count} or more images among the first {n_images}: lower the minimum or use more "
                   "images.")
    a, b = st.columns(2)
    with a:
        ui.plot(plots.pair_heatmap(Kub[method], names, title=f"K_ub per pair ({METHODS[method]})",
                                   colorbar_title="K_ub"), key="kub")
    with b:
        shown = np.where(count > 0, Klb, np.nan)
        ui.plot(plots.pair_heatmap(shown, names, title=f"K_lb per pair (measured at {n_images} test images)",
                                   colorbar_title="K_lb"), key="klb")
    a, b = st.columns(2)
    with a:
        ui.plot(plots.pair_heatmap(ratio, names, title="Ratio K_ub / K_lb (1 = tight bound)",
                                   colorbar_title="ratio"), key="ratio")
    with b:
        ui.plot(plots.pair_heatmap(np.where(count > 0, count, np.nan), names, log=False, fmt=".0f",
                                   title="Test images per pair (predicted y, runner-up t)",
                                   colorbar_title="images"), key="count")
    st.caption("Rows: the predicted class y; columns: the target t. Empty cells: no test image has this "
               "(prediction, runner-up) pair. Colours switch to a log scale when the values span decades.")

    # ------------------------------------------------------------------ across models
    st.subheader("Across models (the paper's Figure 1 and Table 16)")
    labels = ui.catalogue_labels()
    default = [ctx.ref.id, *[i for i in labels if i != ctx.ref.id][:3]]
    chosen = st.multiselect("Models to compare", list(labels), default=default, format_func=labels.get,
                            key="crc_cmp_models", max_selections=8)
    rows = []
    for mid in chosen:
        with ui.guard(f"Comparing {mid}"):
            ref, m, meta = ui.model_by_id(mid, dev)
            row = {"model": ref.name, "architecture": registry.arch_text(meta.get("architecture") or m.config()),
                   "training": registry.kind_text(meta), "γ": meta.get("gamma"),
                   "test accuracy": (meta.get("metrics") or {}).get("test_accuracy")}
            cmp_pc = ui.measured_curvature(ref.key, m, ctx.dataset, int(n_images), dev, label=f"for {ref.name}")
            sel = cmp_pc.mask(min_count).cpu().numpy()
            np.fill_diagonal(sel, False)
            for meth in METHODS:
                if meth == "thm3" and m.depth != 2:
                    continue
                bb = ui.bounds_table(ref.key, meth, str(dev), m)
                mat = analysis.pair_matrix(bb.y, bb.t, bb.K, m.n_classes)
                row[f"K_ub_{meth}"] = float(np.nanmean(mat[sel])) if sel.any() else None
            row["K_lb"] = cmp_pc.mean_K_lb(min_count) if sel.any() else None
            best = row.get("K_ub_thm3") or row.get("K_ub_refined")
            row["K_ub/K_lb"] = best / row["K_lb"] if best and row["K_lb"] else None
            rows.append(row)
    if rows:
        gammas = [r["γ"] for r in rows]
        numeric = len(rows) > 1 and all(isinstance(g, (int, float)) for g in gammas) and len(set(gammas)) > 1
        by_gamma = numeric and st.toggle("Plot against γ", value=False, key="crc_cmp_gamma",
                                         help="For models that differ in γ (the paper's Figure 2 view).")
        fig_rows = [{**r, "model": r["model"], "γ": r["γ"]} for r in rows]
        if by_gamma:
            fig_rows.sort(key=lambda r: r["γ"])
        ui.plot(plots.bounds_summary(fig_rows, x_key="γ" if by_gamma else "model"), key="summary")
        table = pd.DataFrame(rows).rename(columns={"K_ub_thm3": "K_ub Thm 3", "K_ub_thm4": "K_ub Thm 4",
                                                   "K_ub_refined": "K_ub refined"})
        st.dataframe(table, hide_index=True, column_config={
            "test accuracy": st.column_config.NumberColumn(format="percent"),
            "K_ub/K_lb": st.column_config.NumberColumn(format="%.3g"),
        })
        st.caption("Means over the (y, t) pairs with enough test images, as in the paper's App. H.1. K_ub/K_lb uses "
                   "Theorem 3 for 2-layer nets and the refined Theorem 4 otherwise.")
