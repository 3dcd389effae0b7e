"""Hessian: the full eigen-spectrum of the margin Hessian at one image, against the global curvature bounds."""

import streamlit as st

from app_lib import curvature_figures as cfig
from app_lib import hessian_view, images, links, plots, sidebar, state, texts, ui

ctx = sidebar.tool_page(
    links.HESSIAN, "Hessian", ":material/scatter_plot:", "Hessian: the curvature at one image",
    "How strongly does the margin between two classes bend around this image, and how close are the global bounds "
    "m, M and K (which hold for every possible input) to what happens here?",
    about=texts.HESSIAN, no_curvature=texts.RELU_NO_HESSIAN)

with ui.guard("Hessian"):
    ds = ctx.test_set()
    names = ds.class_names
    up = st.session_state.get(state.UPLOAD_IMAGE_KEY)
    c1, c2, c3 = st.columns([1, 1, 1])
    with c1:
        use_up = up is not None and state.persistent(st.toggle, f"Use the uploaded image ({up[0]})",
                                                     state.USE_UPLOAD_KEY, False)
        state.persistent(st.number_input, "Test image #", state.IMAGE_KEY, 0, min_value=0, max_value=len(ds) - 1,
                         step=1, disabled=use_up, valid=lambda v: isinstance(v, int) and 0 <= v < len(ds),
                         help="The same image as on the Certify page (pick it there from the gallery).")
    picked = state.picked_image(ds)
    tg = hessian_view.targets(ctx, picked)
    with c2:
        t = state.persistent(st.selectbox, "Target class t", "crc_hess_target", tg.order[0], options=tg.order,
                          format_func=lambda i: f"{names[i]} (margin {tg.margins[i]:.2f})",
                          valid=lambda v: v in tg.order, help="Default: the runner-up (second-largest score).")
    with c3:
        i1, i2 = st.columns([1, 2])
        i1.image(images.to_png_array(picked.x), width="stretch")
        i2.markdown(f"**{picked.what}**  \npredicted **{names[tg.pred]}**"
                    + (f"  \nlabel {names[picked.label]}" if picked.label is not None else ""))

    hv = hessian_view.hessian(ctx, picked, tg.pred, t)
    ev = hv.spectrum.values
    cols = st.columns([1, 1, 1.3, 1.3, 1])  # the bound labels name their theorem
    cols[0].metric("largest λ here", f"{ev[-1]:.4g}", help="The largest eigenvalue of the Hessian at this image.")
    cols[1].metric("smallest λ here", f"{ev[0]:.4g}", help="The smallest eigenvalue of the Hessian at this image.")
    cols[2].metric(f"bound M ({hv.method})", f"{hv.M:.4g}", help="No input anywhere has a larger eigenvalue.")
    cols[3].metric(f"bound m ({hv.method})", f"{hv.m:.4g}", help="No input anywhere has a smaller eigenvalue.")
    cols[4].metric("K (Thm 4)", f"{hv.K4:.4g}", help="Bound on |eigenvalue| for any depth: −K ≤ λ ≤ K.")
    st.caption(f"The bounds are **{hv.ratio:.3g}×** the largest |curvature| at this image. Eigenvalues are exact "
               f"(float64 eigh of the Hessian from Lemma 1); {hv.nonzero} of {ev.size} are non-zero (at most one per "
               "hidden unit).")
    a, b = st.columns(2)
    with a:
        ui.plot(cfig.spectrum_histogram(ev, m=hv.m, M=hv.M, K=hv.K4), key="hist")
    with b:
        ui.plot(cfig.spectrum_sorted(ev, m=hv.m, M=hv.M, K=hv.K4), key="sorted")

    st.subheader("The directions of strongest curvature")
    st.caption("Eigenvectors as 28×28 images. Moving the image along a 'top' direction bends the margin upwards "
               "(harder to attack), along a 'bottom' one downwards (where attacks and the boundary are closer).")
    vecs, vals, kinds = hv.spectrum.extreme_vectors(3)
    ui.plot(plots.eigenvector_images(vecs, vals, kinds=kinds), key="vecs")

    if hv.layers is not None:
        st.subheader("Lemma 1: one term per hidden layer")
        lo, hi, bounds = hv.layers
        ui.plot(cfig.layer_terms(lo, hi, bound_per_layer=bounds), key="layers")
        ratios = ", ".join(f"layer {i + 1}: {b / max(abs(a), abs(c), 1e-300):.3g}×"
                           for i, (a, c, b) in enumerate(zip(lo, hi, bounds)))
        st.caption("The Hessian is the sum of these terms (bars: each term's smallest and largest eigenvalue at "
                   "this image). Theorem 4 bounds each term separately, for every input: its eigenvalues lie "
                   "within ± h·(r⁽ᴵ⁾)²·maxⱼ S⁽ᴵ⁾ⱼ (the markers), and K is the sum of these per-layer bounds "
                   f"(here {float(bounds.sum()):.4g}), which is why it grows with depth. Each bound is this many "
                   f"times the largest |eigenvalue| of its term here: {ratios}.")
    else:
        st.caption("This is a 2-layer network: Lemma 1 has a single term, W1ᵀ diag(w ⊙ σ''(z)) W1. Pick a deeper "
                   "model to see the per-layer terms.")
