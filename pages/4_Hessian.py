"""Hessian: the full eigen-spectrum of the margin Hessian at one image, against the global curvature bounds."""

import streamlit as st
import torch

from app_lib import analysis, ui
from crc_core import plots
from crc_core.bounds import curvature_bounds

ctx = ui.page_setup("Hessian", ":material/scatter_plot:")
st.title("Hessian: the curvature at one image")
st.caption("How strongly does the margin between two classes bend around this image, and how close are the "
           "global bounds m, M and K (which hold for every possible input) to what happens here?")
ui.explain(
    """
* The **margin** f(x) = z_y(x) − z_t(x) is the score of the predicted class y minus the score of a target class t.
  The prediction changes when f reaches 0.
* Its **Hessian** ∇²f (784 × 784 numbers, one per pair of pixels) says how f curves. Its **eigenvalues** are the
  curvatures along special directions (the **eigenvectors**, shown as images below: red = brighten, blue = darken).
* The certificate needs bounds that hold for *every* input: **m ≤ every eigenvalue ≤ M** (Theorem 3 for 2-layer
  networks) and **|every eigenvalue| ≤ K** (Theorem 4, any depth). If the bars sit far inside the bounds, the bounds are
  loose and certificates will be small; curvature-regularized training (γ, CRT) pulls them together.
* Lemma 1 writes the Hessian as one term per hidden layer; for deeper networks the per-layer terms are shown too.
  Theorem 4 bounds each term separately (whatever the input) and K is the sum of these per-layer bounds: the
  purple markers show ± each layer's bound next to the eigenvalue range its term actually has at this image.
"""
)

with ui.guard("Hessian"):
    ds = ctx.test_set()
    names = ds.class_names
    model = ctx.model
    up = st.session_state.get(ui.UPLOAD_IMAGE_KEY)
    c1, c2, c3 = st.columns([1, 1, 1])
    with c1:
        if up is not None:
            use_up = ui.persistent(st.toggle, f"Use the uploaded image ({up[0]})", ui.USE_UPLOAD_KEY, False)
        else:
            use_up = False
        ui.persistent(st.number_input, "Test image #", ui.IMAGE_KEY, 0, min_value=0, max_value=len(ds) - 1,
                            step=1, disabled=use_up, valid=lambda v: isinstance(v, int) and 0 <= v < len(ds),
                            help="The same image as on the Certify page (pick it there from the gallery).")
    x, label, what = ui.picked_image(ds)
    dev = ctx.device
    with torch.no_grad():
        logits = model(x[None].to(dev))[0].cpu()
    pred = int(logits.argmax())
    order = [int(i) for i in logits.argsort(descending=True) if int(i) != pred]
    with c2:
        t = ui.persistent(st.selectbox, "Target class t", "crc_hess_target", order[0], options=order,
                          format_func=lambda i: f"{names[i]} (margin {float(logits[pred] - logits[i]):.2f})",
                          valid=lambda v: v in order, help="Default: the runner-up (second-largest score).")
    with c3:
        i1, i2 = st.columns([1, 2])
        i1.image(analysis.to_png_array(x), width="stretch")
        i2.markdown(f"**{what}**  \npredicted **{names[pred]}**" + (f"  \nlabel {names[label]}" if label is not None
                                                                     else ""))

    @st.cache_resource(show_spinner="Computing all 784 eigenvalues…", max_entries=32)
    def _spectrum(key: str, image_key: str, y: int, t: int, _model, _x) -> analysis.Spectrum:
        return analysis.spectrum(_model, _x, y, t)

    @st.cache_resource(show_spinner="Computing the per-layer terms…", max_entries=16)
    def _layers(key: str, image_key: str, y: int, t: int, _model, _x):
        return analysis.layer_term_ranges(_model, _x, y, t)

    @st.cache_resource(max_entries=64)
    def _layer_bounds(key: str, y: int, t: int, _model):
        return analysis.theorem4_layer_bounds(_model, y, t)

    image_key = what if up is None or not use_up else f"upload:{hash(x.numpy().tobytes())}"
    sp = _spectrum(ctx.key + str(dev), image_key, pred, t, model, x.to(dev))
    yy, tt = torch.tensor([pred]), torch.tensor([t])
    auto = ctx.bounds("auto").for_pairs(yy, tt)
    K4 = float(curvature_bounds(model, yy.to(dev), tt.to(dev), method="thm4").K[0])
    m, M = float(auto.m[0]), float(auto.M[0])
    lam_min, lam_max = float(sp.values[0]), float(sp.values[-1])
    method = {"thm3": "Theorem 3", "refined": "refined Theorem 4", "thm4": "Theorem 4"}.get(auto.method, auto.method)

    cols = st.columns(5)
    cols[0].metric("largest eigenvalue here", f"{lam_max:.4g}")
    cols[1].metric("smallest eigenvalue here", f"{lam_min:.4g}")
    cols[2].metric(f"bound M ({method})", f"{M:.4g}", help="No input anywhere has a larger eigenvalue.")
    cols[3].metric(f"bound m ({method})", f"{m:.4g}", help="No input anywhere has a smaller eigenvalue.")
    cols[4].metric("K (Theorem 4)", f"{K4:.4g}", help="Bound on |eigenvalue| for any depth: −K ≤ λ ≤ K.")
    ratio = max(M, -m) / max(abs(lam_max), abs(lam_min), 1e-12)
    nonzero = int((abs(sp.values) > 1e-7 * abs(sp.values).max()).sum())
    st.caption(f"The bounds are **{ratio:.3g}×** the largest |curvature| at this image. Eigenvalues are exact "
               f"(float64 eigh of the Hessian from Lemma 1); {nonzero} of {sp.values.size} are non-zero (at most "
               "one per hidden unit).")
    a, b = st.columns(2)
    with a:
        ui.plot(plots.spectrum_histogram(sp.values, m=m, M=M, K=K4), key="hist")
    with b:
        ui.plot(plots.spectrum_sorted(sp.values, m=m, M=M, K=K4), key="sorted")

    st.subheader("The directions of strongest curvature")
    st.caption("Eigenvectors as 28×28 images. Moving the image along a 'top' direction bends the margin upwards "
               "(harder to attack), along a 'bottom' one downwards (where attacks and the boundary are closer).")
    vecs, vals, kinds = sp.extreme_vectors(3)
    ui.plot(plots.eigenvector_images(vecs, vals, kinds=kinds), key="vecs")

    if model.depth > 2:
        st.subheader("Lemma 1: one term per hidden layer")
        lo, hi = _layers(ctx.key + str(dev), image_key, pred, t, model, x.to(dev))
        bounds = _layer_bounds(ctx.key + str(dev), pred, t, model)
        ui.plot(plots.layer_terms(lo, hi, bound_per_layer=bounds), key="layers")
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
