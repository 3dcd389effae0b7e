"""Certify: pick an image -> certified radius, closest boundary point, margin along the path, attack at ρ."""

import streamlit as st

from app_lib import catalogue, compare_view, links, plots, sidebar, state, texts, ui
from app_lib import certify_sections as sections
from app_lib import certify_view as cv

links.sync(links.CERTIFY)  # a shared link opened: restore its view; then mirror the view into the address bar
ctx = sidebar.page_setup("Certify", ":material/verified_user:")
st.title("Certify: how far is this image from changing class?")
links.notes()

with ui.guard("Certify"):
    names = ctx.test_set().class_names
    top = st.columns([3, 2, 1.3], vertical_alignment="bottom")
    rho = state.persistent(top[0].slider, "ρ: the attack budget (ℓ2 distance)", "crc_rho", 0.5,
                        min_value=links.RHO_RANGE[0], max_value=links.RHO_RANGE[1], step=links.RHO_STEP,
                        help="The paper uses ρ = 0.5 (Tables 8, 9) and ρ = 1.58 (Tables 3, 4) on MNIST / "
                             "Fashion-MNIST.")
    mode = state.persistent(top[1].selectbox, "Certificate solver", "crc_mode", "fast", options=["fast", "paper"],
                         valid=lambda v: v in ("fast", "paper"), disabled=not catalogue.has_curvature(ctx.model),
                         help="fast: our accelerated solver; paper: Algorithm 1 as published (slower). Both give "
                         "sound radii. (CRC only: a ReLU model has no curvature bound.)")
    links.copy_link(links.CERTIFY, top[2])

    if catalogue.has_curvature(ctx.model):  # computed here, in view (progress bars), not inside the folded gallery
        cv.gallery(ctx, mode)
    now = state.picked_image(ctx.test_set()).what  # the gallery folds away once an image is picked
    chosen = state.IMAGE_KEY in st.session_state or bool(st.session_state.get(state.USE_UPLOAD_KEY))
    with st.expander(f"1 · Pick an image (now: {now})", expanded=not chosen, icon=":material/photo_library:"):
        tab_gallery, tab_upload = st.tabs(["Test-image gallery", "Upload your own image"])
        with tab_gallery:
            sections.gallery(ctx, mode, rho, names)
        with tab_upload:
            sections.upload()
    with st.expander("Draw your own input", icon=":material/draw:"):
        sections.draw(ctx, mode, rho, names)

    picked = state.picked_image(ctx.test_set())
    note = compare_view.main_certificate_note(ctx.model)  # None: CRC applies (a smooth activation)
    if note is not None:  # a ReLU model: App. G (2-layer) or CRC's refusal, then the other methods
        correct = sections.relu_main(ctx, picked, rho, names, note)
    else:
        cert = cv.certificate(ctx, picked, mode)
        pred = names[cert.pred]
        box, m = sections.certificate_head(picked, names, cert.pred, cert.prob, cert.label, cert.correct, 3)
        with box:
            m[2].metric("certified radius", f"{cert.radius:.4f}", f"smallest against {names[cert.target]}"
                        if cert.target >= 0 else None, delta_color="off", delta_arrow="off",
                        help="The smallest radius over all other classes: the guarantee for the classifier.")
            m = st.columns(3)
            ru = cert.runner_up_radius
            m[0].metric("runner-up radius", f"{ru:.4f}" if ru == ru else "—", f"against {names[cert.runner_up]}",
                        delta_color="off", delta_arrow="off",
                        help="The paper's radius: against the class with the second-highest score only.")
            m[1].metric("exact?", "yes" if cert.exact else "no",
                        help="Yes: a boundary point lies at exactly the certified distance (primal = dual).")
            m[2].metric(f"verdict at ρ = {rho:g}", "certified" if cert.certified(rho) else "not certified",
                        f"radius {'≥' if cert.certified(rho) else '<'} ρ" if cert.correct else "misclassified",
                        delta_color="normal" if cert.certified(rho) else "inverse", delta_arrow="off")
            kind, text = cert.summary()
            getattr(st, kind)(text)
        sections.local_section(ctx, picked, cert, mode)
        ui.explain(texts.CERTIFY)
        c1, c2 = st.columns(2)
        with c1:
            ui.plot(plots.radii_bar(cert.radius_by_class, names, pred=cert.pred, runner_up=cert.runner_up,
                                    rho=rho, exact=cert.exact_by_class, correct=cert.correct), key="radii")
        with c2:
            ui.plot(plots.margins_bar(cert.logits, names, pred=cert.pred, label=cert.label), key="margins")

        if cert.correct:
            b = cert.boundary
            if b is not None:
                st.markdown(f"**The closest boundary point found**, x_b, over all classes: distance {b.distance:.4f} "
                            f"(the upper end of the interval; found by {b.found_by}, then moved along its line onto "
                            f"the boundary). There *{names[b.cls]}* ties with *{pred}*. The certificate's smallest "
                            f"radius is against *{names[cert.target]}*, a separate fact: the radius is what is "
                            "proved, x_b is the closest point the searches reached.")
                ui.plot(plots.boundary_triptych(picked.x, b.x_b, distance=b.distance,
                                                xb_title=f"x_b ({names[b.cls]} ties)"), key="triptych")
            else:
                st.markdown(f"**No point where another class wins was found** (neither the certifier nor the "
                            f"attack), so there is no x_b. The chart follows the line towards the certifier's best "
                            f"point against *{names[cert.toward_class]}*, where the prediction still holds.")
            line = cv.margin_path(ctx, picked, cert, rho)
            ui.plot(plots.margin_along_path(line.s, line.f_target, line.f_any, radius=cert.radius, rho=rho,
                                            boundary_distance=b.distance if b is not None else None,
                                            target_name=names[cert.toward_class]), key="path")
            st.caption(("Along this straight line the margin reaches 0 at x_b. " if b is not None else "")
                       + "The green band is the certified radius: inside it the margin cannot reach 0 in *any* "
                       "direction, not only along this line.")

            st.subheader("3 · The decision regions around the image: a 2-D slice")
            sections.slice_section(ctx, picked, cert, mode, rho, names)

        st.subheader(f"4 · At ρ = {rho:g}")
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
            a3.metric("attack provably worst case?", *att.worst_case_words(names),
                      delta_color="off", delta_arrow="off",
                      help="Success flag of Algorithm 2, per target: the attack point is on the sphere of radius ρ and "
                           "its dual certifies that no point in the ball has a lower margin against that target "
                           "(paper Theorem 2). 'yes' only when this holds for every target (see the table below).")
            kind, text = att.verdict(certified, rho, names)
            getattr(st, kind)(text)
            with st.expander("The attack against every target class"):
                st.dataframe(att.table, hide_index=True)
                ui.plot(plots.image_heatmaps([picked.x, att.x, att.x - picked.x],
                                             ["x0", f"attack (target {names[att.target]})", "attack − x0"],
                                             diverging=[False, False, True]), key="attack_images")
        correct = cert.correct

    st.subheader(f"{3 if note else 5} · Every certificate for this image")  # CROWN, first-order, smoothing, …
    sections.methods_section(ctx, picked, rho, correct, upper=None if note else cert.upper)

links.write(links.CERTIFY)  # the picked image may have changed during this run (a drawing): keep the address current
