"""Compare certificates: CRC beside CROWN, the first-order bound and randomized smoothing, on the test set and across
models (the paper's Table 5b)."""

import numpy as np
import streamlit as st

from app_lib import catalogue, links, sidebar, sweep_view, ui
from app_lib import compare_figures as cf
from app_lib import compare_view as cv

ctx = sidebar.tool_page(
    links.COMPARE, "Compare certificates", ":material/compare_arrows:",
    "Compare certificates: is CRC the better proof, and by how much?",
    "CRC, CROWN and the first-order (Lipschitz) bound prove radii for this model; 2-layer ReLU models get App. G's "
    "quadratic certificate instead of CRC. Randomized smoothing certifies a different classifier (the smoothed one) "
    "and holds with probability ≥ 1 − α: it is drawn apart, dashed.")

with ui.guard("Compare"):
    methods = cv.applicable_methods(ctx.model)  # every registered method that applies, in the registry's order
    st.subheader("1 · Certified accuracy against ρ on the test set")
    chosen = tuple(st.multiselect("Methods", methods, default=list(methods), key="cmp_methods",
                                  format_func=cv.label))  # a full row: every method's chip stays readable
    c1, c2, c3 = st.columns([2, 3, 1], vertical_alignment="bottom")
    n_images = int(c1.number_input("Test images", 8, 2000, 48, step=8, key="cmp_n",
                                   help="The first N test images; CROWN and smoothing take ~0.1–1 s per image."))
    rho = c2.slider("ρ marked on the chart", *links.RHO_RANGE, 0.5, links.RHO_STEP, key="cmp_rho")
    start = c3.button("Start", type="primary", key="cmp_start", disabled=not chosen, width="stretch")
    each = st.toggle("Time each image on its own", False, key="cmp_each", help=cv.EACH_IMAGE_HELP)
    if start:
        cv.start_job(ctx, n_images, chosen, each)


busy = (running := cv.current_job(ctx)) is not None and not running.done


@st.fragment(run_every=1.0 if busy else None)
def test_set_view() -> None:
    job = cv.current_job(ctx)
    if job is None:
        st.info("Choose N and the methods and press **Start**: the curves grow here as images are certified.")
        return
    n = job.images.shape[0]
    if not job.done:
        p1, p2 = st.columns([5, 1])
        waiting = job.status == "waiting"
        p1.progress(job.n_done / n, text="waiting for the machine (a training run or survey holds it)…" if waiting
                    else f"certified {job.n_done} of {n} images with {', '.join(map(cv.label, job.methods))}")
        p2.button("Stop", key="cmp_stop", on_click=job.stop, type="secondary", width="stretch",
                  help="Ends after the current chunk of images; what is done so far stays.")
    elif job.error:
        st.error(f"The comparison failed: {job.error}")
    else:
        st.caption(f"{'Stopped' if job.status == 'stopped' else 'Finished'}: {job.n_done} of {n} images.")
        if busy:
            st.rerun()  # the whole page, once: stop polling
    frame = job.frame()
    if frame.empty:
        return
    rhos = np.linspace(0, max(3.0, float(rho)), 121)
    ui.plot(cf.certified_accuracy_curves(rhos, cv.accuracy_curves(frame, job.methods, rhos), cv.LABELS,
                                         n_images=len(frame), rho=rho, model=ctx.ref.name), key="cmp_curves")
    if "smoothing" in job.methods:
        st.caption(cv.SMOOTHING_NOTE)
    table = cv.csv_frame(frame, ctx.test_set().class_names, job.each_image)
    with st.expander(f"Per-image table ({len(frame)} images)"):
        st.dataframe(table, hide_index=True)
    st.download_button("Download the per-image table (CSV)", table.to_csv(index=False).encode(),
                       file_name=f"compare-{ctx.ref.name}-{len(frame)}.csv", mime="text/csv", key="cmp_csv")


test_set_view()

with ui.guard("Table 5b"):
    st.subheader("2 · Mean certificate across models (the paper's Table 5b)")
    st.caption("Mean certified radius over the correctly classified images, against the runner-up class (the "
               "paper's setting), for each model you pick: standard, γ-regularized and CRT, 2 and 3 layers.")
    labels = catalogue.catalogue_labels()
    default = [i for i in labels if i.startswith("shipped:")][:5]
    picked = st.multiselect("Models", list(labels), default=default, format_func=lambda i: labels.get(i, i),
                            key="cmp_models")
    t2, t3, t4, _ = st.columns([2, 1, 1, 2], vertical_alignment="bottom")
    n5 = int(t2.number_input("Test images", 4, 500, 20, step=4, key="cmp_n5"))
    compute = t3.button("Compute", key="cmp_table", disabled=not picked, width="stretch")
    t4.button("Stop", key="cmp_table_stop", width="stretch", help="Ends after the current step of "
              f"{cv.TABLE_CHUNK} images; what is done is kept, and Compute goes on from there.")
    if st.session_state.pop("cmp_table_running", False) and not compute:  # a rerun cut the last run short
        st.info("Stopped. The images done so far are kept: press **Compute** to go on from there.",
                icon=":material/pause_circle:")
    if compute:
        bar = st.progress(0.0, text="Table 5b: starting…")
        st.session_state["cmp_table_running"] = True
        st.session_state["cmp_table_result"] = cv.models_table(
            picked, labels, ctx.dataset, n5, ctx.device,
            progress=lambda done, total, what: bar.progress(done / total, text=f"Table 5b, step {done} of "
                                                            f"{total}: {what}"))
        st.session_state.pop("cmp_table_running", None)
        bar.empty()
    table = st.session_state.get("cmp_table_result")
    if table is not None:
        st.dataframe(cv.shown_table(table), hide_index=True)
        st.caption("Mean certified radius over the correctly classified images; — : the method does not apply to "
                   "that model; seconds: the time it took (steps done before are not recomputed).")
        shown = [m for m in ("crc", "relu-quadratic", "crown", "lipschitz") if cv.label(m) in table]
        ticks = [cv.short_model_label(t) for t in table["model"]]
        ui.plot(cf.mean_certificate_bars(ticks, {m: table[cv.label(m)].tolist() for m in shown}, cv.LABELS),
                key="cmp_bars")
    st.markdown("**The paper's numbers** (Table 5b, MNIST, sigmoid nets, mean certificate): CRC ≫ CROWN on 2-layer "
                "and curvature-regularized nets; CROWN ahead on standard deeper nets.")
    st.dataframe(cv.PAPER_TABLE_5B, hide_index=True)

with ui.guard("Sweep folder"):  # Table 5b for a sweep's models: its table's mean certificates, else certified here
    st.subheader("3 · Mean certificate across a sweep's models (python -m crc_core sweep)")
    if (pick := sweep_view.picker("cmp_sweep")) is not None:
        swept = sweep_view.table5b(pick, ctx.dataset, int(st.session_state.get("cmp_n5", 20)), ctx.device)
        st.dataframe(swept, hide_index=True, column_config={"accuracy": st.column_config.NumberColumn(format="%.2f")})
        ui.plot(cf.mean_certificate_bars(*sweep_view.bars(swept), cv.LABELS), key="cmp_sweep_bars")
