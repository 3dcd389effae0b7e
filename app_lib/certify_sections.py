"""The Certify page's larger sections, drawn here so that the page stays a short layout: the image picker (gallery
and upload), the drawing canvas, the 2-D slice and the local certificate. Computations live in
:mod:`app_lib.certify_view`; this module only lays out widgets and results.
"""

from __future__ import annotations

import streamlit as st

from app_lib import analysis, links, texts, ui
from app_lib import certify_view as cv
from app_lib.slice_figures import SLICE_CAPTION

CLEAR_KEY = "crc_canvas_generation"  # bumped by "Clear": a new canvas key gives a blank canvas


def gallery(ctx: ui.Ctx, mode: str, rho: float, names: list[str]) -> None:
    """The filterable gallery of certified test images; a click picks an image (and reruns the page)."""
    pool = cv.gallery(ctx, mode)
    f1, f2, f3 = st.columns(3)
    sel = cv.filter_gallery(pool, names, f1.selectbox("Class", ["any", *names], key="crc_f_class"),
                            f2.selectbox("Prediction", ["any", "correct", "wrong"], key="crc_f_outcome"),
                            f3.selectbox(f"At ρ = {rho:g}", ["any", "certified", "not certified"],
                                         key="crc_f_cert"), rho)
    st.caption(f"{len(sel)} of the first {len(pool)} test images match; showing up to {cv.SHOW}. "
               "✓/✗: correct or wrong prediction; r: certified radius (all classes). Click an image to pick it.")
    ui.clickable_thumbnails()
    shown, picked_index = sel.head(cv.SHOW), st.session_state.get(ui.IMAGE_KEY)
    for start in range(0, len(shown), 12):
        for col, (_, row) in zip(st.columns(12, gap="small"), shown.iloc[start:start + 12].iterrows()):
            i = int(row["index"])
            with col.container(key=f"thumb_{i}"):
                st.image(analysis.to_png_array(ctx.test_set().images[i]), width="stretch",
                         caption=f"{'✓' if row['correct'] else '✗'} r={row['radius']:.2f}")
                if st.button(f"#{i}", key=f"pick_{i}", type="primary" if i == picked_index else "secondary"):
                    ui.pick_test_image(i)
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
            p2.image(analysis.to_png_array(done.x), width="stretch", caption="what the model sees: 28×28")
            p3.caption(done.note)
    if st.session_state.get(ui.UPLOAD_IMAGE_KEY) is not None:
        ui.persistent(st.toggle, "Analyse the uploaded image", ui.USE_UPLOAD_KEY, True)


def draw(ctx: ui.Ctx, mode: str, rho: float, names: list[str]) -> None:
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
            up = st.session_state.get(ui.UPLOAD_IMAGE_KEY)
            if up is not None and up[0] == cv.DRAWING_NAME:
                ui.forget_uploaded_image()
            st.rerun()
        if d.empty:
            st.info(d.note, icon=":material/draw:")
            return
        ui.use_uploaded_image(cv.DRAWING_NAME, d.x)
        cert = cv.certificate(ctx, ui.picked_image(ctx.test_set()), mode)
        i1, i2 = st.columns([1, 3])
        i1.image(analysis.to_png_array(d.x), width="stretch", caption="the model sees")
        i2.markdown(f"Predicted **{names[cert.pred]}** ({cert.prob:.0%}), certified radius **{cert.radius:.4f}**: "
                    f"{'certified' if cert.certified(rho) else 'not certified'} at ρ = {rho:g}.")
        i2.caption(d.note)


def slice_section(ctx: ui.Ctx, picked: ui.Picked, cert: cv.Certificate, mode: str, rho: float,
                  names: list[str]) -> None:
    """The 2-D decision-region slice through the picked image (and optionally a second model beside it)."""
    s1, s2, s3 = st.columns([2, 1, 2])
    second = ui.persistent(s1.selectbox, "Second direction of the plane", links.SLICE_DIR_KEY, "hessian-top",
                           options=list(cv.SLICE_DIRECTIONS), format_func=cv.SLICE_DIRECTIONS.get,
                           valid=lambda v: v in cv.SLICE_DIRECTIONS,
                           help="The first direction always points to the closest boundary point x_b. The Hessian "
                                "eigenvectors are where the margin curves up most (top) or down most (bottom).")
    other = None
    if second == "target":
        options = cv.other_targets(cert)
        if not options:
            st.info("No other class has a boundary point to point at: pick another direction.")
            return
        other = ui.persistent(s2.selectbox, "Other class", links.SLICE_TARGET_KEY, options[0], options=options,
                              format_func=lambda t: names[t], valid=lambda v: v in options)
    labels = ui.catalogue_labels()
    others = [i for i in labels if i != st.session_state.get(ui.MODEL_KEY)]
    if st.session_state.get(links.COMPARE_KEY) not in others:  # e.g. it has just become the picked model
        st.session_state[links.COMPARE_KEY] = ""
    compare = s3.selectbox("Side by side with (same image)", ["", *others], key=links.COMPARE_KEY,
                           format_func=lambda i: labels[i] if i else "— one model only —",
                           help="E.g. a standard and a CRT model: the certified disc grows.")
    with ui.guard("Slice"):
        view = cv.slice_view(ctx, picked, mode, rho, second, other, names, compare or None)
        ui.plot(view.figure, key="slice")
        st.caption(SLICE_CAPTION + (" Side by side, each panel is the plane of its own model's x_b."
                                    if compare else ""))


def local_section(ctx: ui.Ctx, picked: ui.Picked, cert: cv.Certificate, mode: str) -> None:
    """The local certificate (paper §7.4) beside the global one, behind a toggle (2-layer nets only)."""
    if ctx.model.depth != 2:
        st.caption("Local certificates (paper §7.4) are available for 2-layer networks only: this one has "
                   f"{ctx.model.depth} layers.")
        return
    if not ui.persistent(st.toggle, "Local certificate (2-layer nets, paper §7.4)", links.LOCAL_KEY, False,
                         valid=lambda v: isinstance(v, bool)):
        return
    with ui.guard("Local certificate"):
        lv = cv.local_view(ctx, picked, cert, mode)
        c1, c2, c3 = st.columns([1, 1, 3])
        c1.metric("global radius", f"{lv.global_radius:.4f}")
        c2.metric("local radius", f"{lv.local_radius:.4f}",
                  f"+{lv.local_radius - lv.global_radius:.4f}", delta_color="off", delta_arrow="off")
        c3.caption(texts.LOCAL)
