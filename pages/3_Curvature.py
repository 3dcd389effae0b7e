"""Curvature: certified upper bounds K_ub vs the curvature measured at test images K_lb, per class pair and
across models (paper Figure 1 / Table 16)."""

import math

import numpy as np
import streamlit as st

from app_lib import catalogue, curvature_view, heavy_jobs, links, sidebar, state, sweep_view, texts, ui
from app_lib import curvature_figures as cfig

ctx = sidebar.tool_page(
    links.CURVATURE, "Curvature", ":material/monitoring:", "Curvature: bounds vs reality",
    "Certificates are only as good as the curvature bounds behind them. Here the bound K_ub, which holds for every "
    "possible input, meets K_lb, the largest curvature actually measured near test images.",
    about=texts.CURVATURE, no_curvature=texts.RELU_NO_CURVATURE)

with ui.guard("Curvature"):
    ds = ctx.test_set()
    names, C = ds.class_names, ctx.model.n_classes
    methods = curvature_view.methods_for(ctx.model)
    c1, c2, c3 = st.columns(3)
    method = state.persistent(c1.selectbox, "K_ub from", "crc_curv_method", methods[0], options=methods,
                           format_func=curvature_view.METHODS.get, valid=lambda v: v in methods)
    n_images = state.persistent(c2.select_slider, "Test images for K_lb", "crc_curv_n", min(500, len(ds)),
                             options=[n for n in (100, 200, 500, 1000, 2000, 5000, 10000) if n <= len(ds)]
                             or [len(ds)], help="K_lb: power iteration with Hessian-vector products per image.")
    min_count = state.persistent(c3.number_input, "Min. images per pair (for the averages)", "crc_curv_min",
                              max(1, math.ceil(0.01 * n_images)), min_value=1, max_value=1000, step=1)

    pt = curvature_view.pair_tables(ctx, int(n_images))
    st.subheader(f"This model: {ctx.ref.name}")
    if not pt.measured:
        heavy_jobs.wait_for_machine(f"measuring the curvature at {n_images} test images (K_lb)")
    k = st.columns(2 + len(methods))
    n_pairs = int(pt.mask(min_count).sum())
    k[0].metric("pairs used", f"{n_pairs} of {C * (C - 1)}" if pt.measured else "—",
                help=f"Pairs with at least {min_count} images.")
    for i, m in enumerate(methods):
        mean = pt.mean_K_ub(m, min_count) if pt.measured else float(np.nanmean(pt.K_ub[m]))
        k[1 + i].metric(f"mean K_ub ({curvature_view.SHORT[m]})", "—" if mean is None else f"{mean:.4g}",
                        help=None if pt.measured else "Over all pairs until K_lb has been measured.")
    klb, kub = pt.mean_K_lb(min_count), pt.mean_K_ub(method, min_count)
    k[-1].metric("mean K_lb (measured)", "—" if klb is None else f"{klb:.4g}",
                 f"K_ub/K_lb = {kub / klb:.3g}×" if klb and kub else None, delta_color="off", delta_arrow="off")
    if pt.measured and not n_pairs:
        st.warning(f"No pair has {min_count} or more images among the first {n_images}: lower the minimum or use more "
                   "images.")
    tabs = st.tabs(["K_ub", "K_lb (measured)", "ratio K_ub / K_lb", "images per pair"] if pt.measured else ["K_ub"])
    with tabs[0]:  # one heatmap at a time, at full width: its numbers stay readable on a projector
        ui.plot(cfig.pair_heatmap(pt.K_ub[method], names, title=f"K_ub per pair ({curvature_view.METHODS[method]})",
                                  colorbar_title="K_ub"), key="kub")
    if pt.measured:
        with tabs[1]:
            ui.plot(cfig.pair_heatmap(np.where(pt.count > 0, pt.K_lb, np.nan), names, colorbar_title="K_lb",
                                      title=f"K_lb per pair (measured at {n_images} test images)"), key="klb")
        with tabs[2]:
            ui.plot(cfig.pair_heatmap(pt.ratio(method, min_count), names, colorbar_title="ratio",
                                      title="Ratio K_ub / K_lb (1 = tight bound)"), key="ratio")
        with tabs[3]:
            ui.plot(cfig.pair_heatmap(np.where(pt.count > 0, pt.count, np.nan), names, log=False, fmt=".0f",
                                      title="Test images per pair (predicted y, runner-up t)",
                                      colorbar_title="images"), key="count")
    st.caption("Rows: the predicted class y; columns: the target t. Empty cells: no test image has this "
               "(prediction, runner-up) pair. Colours switch to a log scale when the values span decades.")

    st.subheader("Across models (the paper's Figure 1 and Table 16)")
    labels = catalogue.catalogue_labels()
    metas = catalogue.catalogue_metadata()
    usable, relu = curvature_view.curvature_ids({i: metas[i] for i in labels if i in metas})  # ReLU: nothing to compare
    chosen = st.multiselect("Models to compare", usable, format_func=labels.get, key="crc_cmp_models",
                            default=curvature_view.contrasting_models(ctx.ref.id, {i: metas[i] for i in usable}),
                            max_selections=8,
                            help="By default: this model and models of the other training kinds (standard, "
                                 "γ-regularized, CRT), to contrast them as in the paper's Figure 1.")
    if relu:
        st.caption(f"Not offered: {len(relu)} ReLU model{'s' if len(relu) > 1 else ''} ("
                   + ", ".join(labels[i].split(" · ")[0] for i in relu) + "): a ReLU net has no curvature bound "
                   "(its Hessian is zero almost everywhere).")
    cmp = (curvature_view.compare(chosen, ctx.dataset, int(n_images), int(min_count), ctx.device) if pt.measured
           else None)
    if cmp is None:
        st.info("The comparison appears here once the curvature of this model has been measured.")
    elif cmp.waiting:
        heavy_jobs.wait_for_machine("the comparison")
    swept = curvature_view.Comparison([], [])
    with st.expander("Add a sweep's models (python -m crc_core sweep)", expanded=bool(st.session_state.get(
            "crc_sweep_dir"))), ui.guard("Sweep folder"):  # K columns of its table, else measured as above
        swept = sweep_view.curvature_rows(sweep_view.picker("crc_sweep"), ctx.dataset, int(n_images),
                                          int(min_count), ctx.device)
        if swept.waiting:
            heavy_jobs.wait_for_machine("the sweep's models")
        st.caption("K_lb and K_ub of a sweep's model come from its results table when the sweep measured them (on its "
                   "own test sample and pair minimum), else they are measured here like the others.")
    rows = (cmp.rows if cmp is not None else []) + swept.rows
    if rows:
        gammas = [r["γ"] for r in rows]
        numeric = len(rows) > 1 and all(isinstance(g, (int, float)) for g in gammas) and len(set(gammas)) > 1
        by_gamma = numeric and st.toggle("Plot against γ", value=False, key="crc_cmp_gamma",
                                         help="For models that differ in γ (the paper's Figure 2 view).")
        ui.plot(cfig.bounds_summary(sorted(rows, key=lambda r: r["γ"]) if by_gamma else rows,
                                     x_key="γ" if by_gamma else "model"), key="summary")
        number = st.column_config.NumberColumn
        st.dataframe(curvature_view.comparison_table(rows), hide_index=True, placeholder=curvature_view.MISSING,
                     column_config={  # pixel widths: every column fits, no header is cut
            "model": st.column_config.TextColumn(width=125), "architecture": st.column_config.TextColumn(width=140),
            "training": st.column_config.TextColumn(width=120), "γ": number(width=45),
            "test accuracy": number(format="percent", width=100), "K_lb": number(format="%.4g", width=65),
            "K_ub Thm 3": number("K_ub Thm 3 (2-layer)", format="%.4g", width=130, help=curvature_view.THM3_HELP),
            **{c: number(format="%.4g", width=w) for c, w in (("K_ub Thm 4", 85), ("K_ub refined", 90),
                                                                ("K_ub/K_lb", 80))}})
        st.caption("Means over the (y, t) pairs with enough test images, as in the paper's App. H.1. K_ub/K_lb uses "
                   "Theorem 3 for 2-layer nets and the refined Theorem 4 otherwise. — : no value; under K_ub Thm 3, "
                   "a deeper net (Theorem 3 holds for 2-layer nets only).")
