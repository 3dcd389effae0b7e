"""The Certify page's larger sections, drawn here so that the page stays a short layout: the image picker (gallery
and upload), the drawing canvas, the 2-D slice, the local certificate, every method's radius, and the main
certificate of a ReLU model (App. G for 2-layer nets; for deeper ones CRC's refusal and the other methods).
Computations live in :mod:`app_lib.certify_view`; this module only lays out widgets and results.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import streamlit as st

from app_lib import catalogue, compare_figures, compare_view, images, links, plots, state, texts, ui
from app_lib import certify_view as cv
from app_lib.slice_figures import SLICE_CAPTION

CLEAR_KEY = "crc_canvas_generation"  # bumped by "Clear": a new canvas key gives a blank canvas


def gallery(ctx: catalogue.Ctx, mode: str, rho: float, names: list[str]) -> None:
    """The filterable gallery of certified test images; a click picks an image (and reruns the page)."""
    pool, radii = cv.gallery(ctx, mode), catalogue.has_curvature(ctx.model)
    f1, f2, f3, f4 = st.columns(4)
    at_rho = f3.selectbox(f"At ρ = {rho:g}", ["any", "certified", "not certified"], key="crc_f_cert",
                          disabled=not radii, help=None if radii else "No gallery radii for a ReLU model: certify "
                          "an image by picking it (App. G for 2-layer ReLU nets).")
    sel = cv.filter_gallery(pool, names, f1.selectbox("Class", ["any", *names], key="crc_f_class"),
                            f2.selectbox("Prediction", ["any", "correct", "wrong"], key="crc_f_outcome"),
                            at_rho if radii else "any", rho,
                            f4.selectbox("Order", cv.GALLERY_ORDERS, key="crc_f_order",
                                         help="Correct first: the best certified first (a good model looks good at "
                                              "first sight); hardest first: misclassified, then the smallest radii."))
    st.caption(f"{len(sel)} of the first {len(pool)} test images match; showing up to {cv.SHOW}. ✓/✗: correct or "
               "wrong prediction; " + ("r: certified radius (all classes)." if radii else "the model's prediction "
               "(a ReLU model: no curvature bound, so the gallery shows predictions only).")
               + " Click an image to pick it.")
    ui.clickable_thumbnails()
    shown, picked_index = sel.head(cv.SHOW), st.session_state.get(state.IMAGE_KEY)
    for start in range(0, len(shown), 12):
        for col, (_, row) in zip(st.columns(12, gap="small"), shown.iloc[start:start + 12].iterrows()):
            i = int(row["index"])
            with col.container(key=f"thumb_{i}"):
                st.image(images.to_png_array(ctx.test_set().images[i]), width="stretch",
                         caption=f"{'✓' if row['correct'] else '✗'} " + (f"r={row['radius']:.2f}" if radii
                                                                           else names[int(row['pred'])]))
                if st.button(f"#{i}", key=f"pick_{i}", type="primary" if i == picked_index else "secondary"):
                    state.pick_test_image(i)
                    st.rerun()
    if sel.empty:
        st.info("No image matches these filters: loosen them.")


def upload() -> None:
    """The upload box: a picture becomes the picked image (previewed as the model sees it)."""
    st.caption(texts.UPLOAD_IMAGE)
    u1, u2 = st.columns([3, 1])
    up = u1.file_uploader("Image file", type=["png", "jpg", "jpeg", "bmp", "gif", "webp", "npy"],
                          key="crc_upload_image")
    colours = u2.radio("Colours", ["auto", "keep", "invert"], key="crc_invert_mode",
                       help="auto: invert when the picture's background (its border) is light; keep: use the "
                            "grey values as they are; invert: always swap light and dark.")
    if up is not None:
        with ui.guard("Upload refused"):
            done = cv.take_upload(up.getvalue(), up.name, colours)
            p1, p2, p3 = st.columns([1, 1, 3])
            p1.image(done.square, width="stretch", caption="your picture in grey, padded to a square")
            p2.image(images.to_png_array(done.x), width="stretch", caption="what the model sees: 28×28")
            p3.caption(done.note)
    if st.session_state.get(state.UPLOAD_IMAGE_KEY) is not None:
        state.persistent(st.toggle, "Analyse the uploaded image", state.USE_UPLOAD_KEY, True)


def draw(ctx: catalogue.Ctx, mode: str, rho: float, names: list[str]) -> None:
    """The drawing canvas: every stroke (on mouse-up) makes the drawing the picked image; its certificate is shown
    beside the canvas (and in full below)."""
    gen = int(st.session_state.get(CLEAR_KEY, 0))
    c1, c2 = st.columns([1, 2])
    with c1:
        st.caption("Draw here:")  # a line above the canvas keeps its toolbar (undo, redo, erase) off the header
        d = cv.draw_canvas(gen)  # a canvas the preprocessing refuses raises a one-line CRCError (page guard)
    with c2:
        st.caption(texts.DRAW)
        if st.button("Clear the drawing", icon=":material/ink_eraser:", key="crc_canvas_clear"):
            st.session_state[CLEAR_KEY] = gen + 1
            up = st.session_state.get(state.UPLOAD_IMAGE_KEY)
            if up is not None and up[0] == cv.DRAWING_NAME:
                state.forget_uploaded_image()
            st.rerun()
        if d.empty:
            st.info(d.note, icon=":material/draw:")
            return
        if state.use_uploaded_image(cv.DRAWING_NAME, d.x):
            st.rerun()  # a new drawing: the picker's title and the sections below name it
        picked = state.picked_image(ctx.test_set())
        i1, i2 = st.columns([1, 3])
        i1.image(images.to_png_array(d.x), width="stretch", caption="the model sees")
        if catalogue.has_curvature(ctx.model):
            cert = cv.certificate(ctx, picked, mode)
            i2.markdown(f"Predicted **{names[cert.pred]}** ({cert.prob:.0%}), certified radius "
                        f"**{cert.radius:.4f}**: {'certified' if cert.certified(rho) else 'not certified'} at "
                        f"ρ = {rho:g}.")
        else:  # a ReLU model: the prediction here, its certificates in the sections below
            pred, prob, _ = cv.prediction(ctx, picked)
            i2.markdown(f"Predicted **{names[pred]}** ({prob:.0%}): its certificates are below.")
        i2.caption(d.note)


def slice_section(ctx: catalogue.Ctx, picked: state.Picked, cert: cv.Certificate, mode: str, rho: float,
                  names: list[str]) -> None:
    """The 2-D decision-region slice through the picked image (and optionally a second model beside it)."""
    s1, s2, s3 = st.columns([2, 1, 2])
    second = state.persistent(s1.selectbox, "Second direction of the plane", links.SLICE_DIR_KEY, "hessian-top",
                           options=list(cv.SLICE_DIRECTIONS), format_func=cv.SLICE_DIRECTIONS.get,
                           valid=lambda v: v in cv.SLICE_DIRECTIONS,
                           help="The first direction points to the closest boundary point x_b (when none was found: "
                                "to the certifier's best point, marked as such). The Hessian eigenvectors are where "
                                "the margin curves up most (top) or down most (bottom).")
    other = None
    if second == "target":
        options = cv.other_targets(cert, cv.certificate_batch(ctx, picked, mode))
        if not options:
            st.info("No other class has a boundary point to point at: pick another direction.")
            return
        other = state.persistent(s2.selectbox, "Other class", links.SLICE_TARGET_KEY, options[0], options=options,
                              format_func=lambda t: names[t], valid=lambda v: v in options)
    labels = catalogue.catalogue_labels()
    others = [i for i in labels if i != st.session_state.get(state.MODEL_KEY)]
    if st.session_state.get(links.COMPARE_KEY) not in others:  # e.g. it has just become the picked model
        st.session_state[links.COMPARE_KEY] = ""
    compare = s3.selectbox("Side by side with (same image)", ["", *others], key=links.COMPARE_KEY,
                           format_func=lambda i: labels[i] if i else "— one model only —",
                           help="E.g. a standard and a CRT model: the certified disc grows.")
    slot = st.empty()  # the old slice goes at once: no stale picture under a "computing" line
    with ui.guard("Slice"):
        with slot.container(), st.spinner(f"Computing the 2-D slice ({cv.SLICE_GRID}×{cv.SLICE_GRID} forward "
                                          "passes)…"):
            view = cv.slice_view(ctx, picked, mode, rho, second, other, names, compare or None)
        with slot.container():
            ui.plot(view.figure, key="slice")
            st.caption(SLICE_CAPTION + (" Side by side, each panel is the plane of its own model's x_b."
                                        if compare else "") + ("" if cert.boundary is not None else
                       f" No point where another class wins was found, so the first axis points to the "
                       f"certifier's best point against {names[cert.toward_class]}, where the prediction still "
                       "holds: it is marked as such, not as x_b."))


def local_section(ctx: catalogue.Ctx, picked: state.Picked, cert: cv.Certificate, mode: str) -> None:
    """The local certificate (paper §7.4) beside the global one, behind a toggle (2-layer nets only)."""
    if ctx.model.depth != 2:
        st.caption("Local certificates (paper §7.4) are available for 2-layer networks only: this one has "
                   f"{ctx.model.depth} layers.")
        return
    if not state.persistent(st.toggle, "Local certificate (2-layer nets, paper §7.4)", links.LOCAL_KEY, False,
                         valid=lambda v: isinstance(v, bool)):
        return
    with ui.guard("Local certificate"):
        lv = cv.local_view(ctx, picked, cert, mode)
        c1, c2, c3 = st.columns([1, 1, 3])
        c1.metric("global radius", f"{lv.global_radius:.4f}")
        gain = lv.local_radius - lv.global_radius
        c2.metric("local radius", f"{lv.local_radius:.4f}", f"{gain:+.4f}" if gain >= 5e-5 else "no gain",
                  delta_color="off", delta_arrow="off")
        c3.caption(texts.LOCAL + ("" if gain >= 5e-5 else " " + texts.LOCAL_NO_GAIN))


RELU_NOT_SHOWN = ("The 2-D slice along Hessian directions, the local certificate and the curvature sections do not "
                  "apply either: a ReLU network's Hessian is zero almost everywhere, so there is no curvature to "
                  "bound or follow.")


def certificate_head(picked: state.Picked, names: list[str], pred: int, prob: float, label: int | None,
                     correct: bool, n: int) -> tuple[Any, list[Any]]:
    """Section 2's head, the same for every model: the title, the image, and a row of ``n`` metrics whose first two
    are the prediction and the true label -> (the box beside the image, the row's columns) for the rest."""
    st.subheader(f"2 · The certificate of {picked.what}")
    head = st.columns([1, 6])
    head[0].image(images.to_png_array(picked.x), width="stretch", caption=picked.what)
    m = head[1].columns(n)
    m[0].metric("prediction", names[pred], f"{prob:.0%} confident", delta_color="off", delta_arrow="off")
    m[1].metric("true label", names[label] if label is not None else "unknown",
                ("correct" if correct else "wrong") if label is not None else None,
                delta_color="normal" if correct else "inverse", delta_arrow="off")
    return head[1], m


def relu_main(ctx: catalogue.Ctx, picked: state.Picked, rho: float, names: list[str], note: str) -> bool:
    """Section 2 for a ReLU model (no curvature bound): prediction, App. G's certificate for a 2-layer net (radius,
    verdict at ρ, the attack's closest point as the upper end) or, deeper, CRC's refusal. Returns correct."""
    pred, prob, logits = cv.prediction(ctx, picked)
    correct = picked.label is None or pred == picked.label
    main = compare_view.relu_certificate(ctx, picked)
    box, m = certificate_head(picked, names, pred, prob, picked.label, correct, 4)
    with box:
        if main is None:
            m[2].metric("CRC radius", "refused", "no curvature bound for ReLU", delta_color="off", delta_arrow="off")
        else:
            ok = main.correct and main.radius >= rho
            m[2].metric("certified radius (App. G)", f"{main.radius:.4f}", f"smallest against {names[main.target]}"
                        if main.target >= 0 else None, delta_color="off", delta_arrow="off",
                        help="App. G's quadratic bound for 2-layer ReLU nets, over all other classes: a proof.")
            m[3].metric(f"certified at ρ = {rho:g}?", "yes" if ok else "no",
                        f"radius {'≥' if ok else '<'} ρ" if main.correct else "misclassified",
                        delta_color="normal" if ok else "inverse", delta_arrow="off")
        st.info(f"{note} {RELU_NOT_SHOWN}", icon=":material/info:")
        if main is not None and main.correct:
            upper = compare_view.image_methods(ctx, picked).attack_upper
            st.info(f"The true distance to the decision boundary lies in **[{main.radius:.4f}, {upper:.4f}]**: "
                    "App. G's certified radius ≤ distance ≤ distance of the closest point the attack found where "
                    "another class wins." if np.isfinite(upper) else f"The true distance to the decision boundary "
                    f"is **at least {main.radius:.4f}**; the attack found no point where another class wins.")
    ui.plot(plots.margins_bar(logits, names, pred=pred, label=picked.label), key="margins")
    return correct


def methods_section(ctx: catalogue.Ctx, picked: state.Picked, rho: float, correct: bool,
                    upper: float | None = None) -> None:
    """Every certificate that applies to the model on this image (CROWN, first-order, smoothing, App. G; CRC for
    smooth nets) beside the upper end of the distance: ``upper`` (the page's one value, the distance of x_b) when
    given, else the attack's."""
    if not correct:
        st.info("Misclassified: every method's radius is 0.")
        return
    other = compare_view.image_methods(ctx, picked)
    if upper is not None:
        other = dataclasses.replace(other, attack_upper=upper)
    ui.plot(compare_figures.methods_vs_attack(other.deterministic, compare_view.LABELS, rho=rho,
                                              attack_upper=other.attack_upper, smoothing=other.smoothing),
            key="methods")
    st.caption(compare_view.caption(other))
