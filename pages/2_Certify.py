"""Certify: pick an image -> certified radius, closest boundary point, margin along the path, attack at ρ."""

import streamlit as st

from app_lib import analysis, compare_figures, compare_view, plots, texts, ui
from app_lib import certify_view as cv

ctx = ui.page_setup("Certify", ":material/verified_user:")
st.title("Certify: how far is this image from changing class?")
st.caption("Pick an image. The certificate is a radius r with a proof that no change of the image smaller than r "
           "(ℓ2 norm) can change the prediction; the attack looks for a change that does.")
ui.explain(texts.CERTIFY)

with ui.guard("Certify"):
    names = ctx.test_set().class_names
    top = st.columns([2, 1, 1])
    rho = ui.persistent(top[0].slider, "ρ: the attack budget (ℓ2 distance)", "crc_rho", 0.5, min_value=0.05,
                        max_value=3.0, step=0.05, help="The paper uses ρ = 0.5 for MNIST/Fashion-MNIST.")
    mode = ui.persistent(top[1].selectbox, "Certificate solver", "crc_mode", "fast", options=["fast", "paper"],
                         valid=lambda v: v in ("fast", "paper"), help="fast: our accelerated solver; paper: "
                         "Algorithm 1 as published (slower). Both give sound radii.")

    st.subheader("1 · Pick an image")
    tab_gallery, tab_upload = st.tabs(["Test-image gallery", "Upload your own image"])
    with tab_gallery:
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
    with tab_upload:
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

    picked = ui.picked_image(ctx.test_set())
    cert = cv.certificate(ctx, picked, mode)
    pred = names[cert.pred]

    st.subheader(f"2 · The certificate of {picked.what}")
    head = st.columns([1, 6])
    head[0].image(analysis.to_png_array(picked.x), width="stretch", caption=picked.what)
    with head[1]:
        m = st.columns(3)
        m[0].metric("prediction", pred, f"{cert.prob:.0%} confident", delta_color="off", delta_arrow="off")
        m[1].metric("true label", names[cert.label] if cert.label is not None else "unknown",
                    ("correct" if cert.correct else "wrong") if cert.label is not None else None,
                    delta_color="normal" if cert.correct else "inverse", delta_arrow="off")
        m[2].metric("certified radius", f"{cert.radius:.4f}", f"smallest against {names[cert.target]}"
                    if cert.target >= 0 else None, delta_color="off", delta_arrow="off",
                    help="The smallest radius over all other classes: the guarantee for the classifier.")
        m = st.columns(3)
        m[0].metric("runner-up radius", f"{cert.runner_up_radius:.4f}" if cert.runner_up_radius == cert.runner_up_radius
                    else "—", f"against {names[cert.runner_up]}", delta_color="off", delta_arrow="off",
                    help="The paper's radius: against the class with the second-highest score only.")
        m[1].metric("exact?", "yes" if cert.exact else "no",
                    help="Yes: a boundary point lies at exactly the certified distance (primal = dual).")
        kind, text = cert.summary()
        getattr(st, kind)(text)
    c1, c2 = st.columns(2)
    with c1:
        ui.plot(plots.radii_bar(cert.radii, names, pred=cert.pred, runner_up=cert.runner_up, rho=rho,
                                exact=cert.exact_t, correct=cert.correct), key="radii")
    with c2:
        ui.plot(plots.margins_bar(cert.logits, names, pred=cert.pred, label=cert.label), key="margins")

    if cert.correct:
        b = cert.boundary
        if b is not None:
            st.markdown(f"**The closest boundary point found**, x_b, over all classes: distance {b.distance:.4f} "
                        f"(the upper end of the interval). There *{names[b.cls]}* ties with or beats *{pred}*. "
                        f"The certificate's smallest radius is against *{names[cert.target]}*, a separate fact: "
                        "the radius is what is proved, x_b is the closest point the search reached.")
            ui.plot(plots.boundary_triptych(picked.x, b.x_b, distance=b.distance,
                                            xb_title=f"x_b ({names[b.cls]} ties or wins)"), key="triptych")
        else:
            st.markdown(f"**No point where another class wins was found.** The chart follows the line towards the "
                        f"solver's best point against *{names[cert.toward_class]}*.")
        line = cv.margin_path(ctx, picked, cert, rho)
        ui.plot(plots.margin_along_path(line.s, line.f_target, line.f_any, radius=cert.radius, rho=rho,
                                        boundary_distance=b.distance if b is not None else None,
                                        target_name=names[cert.toward_class]), key="path")
        st.caption("Along this straight line the margin reaches 0 at x_b. The green band is the certified radius: "
                   "inside it the margin cannot reach 0 in *any* direction, not only along this line.")

    st.subheader(f"3 · At ρ = {rho:g}")
    if not cert.correct:
        st.info("Misclassified: not certified at any ρ.")
    else:
        certified, att = cert.certified(rho), cv.attack(ctx, picked, cert, rho, names)
        a1, a2, a3 = st.columns(3)
        a1.metric(f"certified at ρ = {rho:g}?", "yes" if certified else "no",
                  f"radius {cert.radius:.3f} {'≥' if certified else '<'} ρ",
                  delta_color="normal" if certified else "inverse", delta_arrow="off")
        a2.metric("attack changed the class?", "yes" if att.fooled else "no", f"strongest target: "
                  f"{names[att.target]}", delta_color="inverse" if att.fooled else "normal", delta_arrow="off")
        a3.metric("attack provably worst case?", "yes" if att.provably_worst else "no",
                  help="Success flag of Algorithm 2: the attack point is on the sphere of radius ρ and its dual "
                       "certifies that no point in the ball has a lower margin (paper Theorem 2).")
        kind, text = att.verdict(certified, rho, names)
        getattr(st, kind)(text)
        with st.expander("The attack against every target class"):
            st.dataframe(att.table, hide_index=True)
            ui.plot(plots.image_heatmaps([picked.x, att.x, att.x - picked.x],
                                         ["x0", f"attack (target {names[att.target]})", "attack − x0"],
                                         diverging=[False, False, True]), key="attack_images")

    st.subheader("4 · Every certificate for this image")  # CROWN, first-order, smoothing beside CRC (compare_view)
    if not cert.correct:
        st.info("Misclassified: every method's radius is 0.")
    else:
        other = compare_view.image_methods(ctx, picked)
        ui.plot(compare_figures.methods_vs_attack(other.deterministic, compare_view.LABELS, rho=rho,
                                                  attack_upper=other.attack_upper, smoothing=other.smoothing),
                key="methods")
        st.caption(compare_view.caption(other))
