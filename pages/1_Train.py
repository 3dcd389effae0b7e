"""Train: small standard / γ-regularized / CRT / PGD / TRADES networks with live curves and a stop button, saved
for the other pages."""

import streamlit as st

from app_lib import catalogue, jobs, links, plots, registry, sidebar, state, texts, ui
from app_lib import train_sections as ts
from app_lib import train_view as tv

D = tv.DEFAULTS

ctx = sidebar.tool_page(
    links.TRAIN, "Train", ":material/model_training:", "Train a network",
    "Train a small fully connected network on 28×28 images and watch its accuracy, curvature bound and certified "
    "accuracy evolve. The result is saved and appears in the model picker of every page.",
    about=texts.TRAIN, share=False, require_model=False)

job: jobs.TrainJob | None = st.session_state.get(tv.JOB_KEY)
busy = job is not None and job.active  # running or waiting in line: one job per session


# ------------------------------------------------------------------------------------------------ live view
@st.fragment(run_every=1.0 if busy else None)
def live_view() -> None:
    job: jobs.TrainJob | None = st.session_state.get(tv.JOB_KEY)
    if job is None:
        st.info("Choose the settings and press **Start training**. The curves appear here while it trains.")
        if ctx is not None and (events := tv.saved_history(ctx.meta)):
            ui.plot(plots.training_curves(events, title=f"How the picked model was trained: {ctx.ref.name} "
                                                        f"({registry.kind_text(ctx.meta)})",
                                          no_curvature=tv.NO_CURVATURE_RELU), key="saved_curves")
            if note := tv.curves_caption(ctx.model.activation_name, ctx.model.depth):
                st.caption(note)
        return
    st.markdown(f"#### Run: {job.config.describe()}")
    if job.waiting:
        ts.waiting(job)
        return
    if job.status == "cancelled":
        st.info(f"Cancelled: your run left the line before it started; nothing was trained or saved. "
                f"{job.error or ''}".strip(), icon=":material/block:")
        if busy:
            st.rerun()  # redraw the form (start enabled)
        return
    text = tv.progress_text(job)
    if job.running:
        c1, c2 = st.columns([5, 1])
        c1.progress(job.progress(), text=text)
        c2.button("Stop", key="tr_stop", on_click=job.stop, type="primary", disabled=job.stop_requested,
                  help="Ends after the current step; the model trained so far is saved.")
        if job.stop_requested:
            st.caption("Stopping after the current step…")
    elif job.status == "error":
        st.error(f"Training failed: {job.error}", icon=":material/warning:")
    else:
        ts.outcome(job, text)
    ui.plot(plots.training_curves(job.events, title="Live training curves", no_curvature=tv.NO_CURVATURE_RELU),
            key="curves")
    if note := tv.curves_caption(job.config.activation, len(job.config.widths) + 1):
        st.caption(note)
    if not job.running and job.path is not None and st.session_state.get("crc_train_announced") != str(job.path):
        st.session_state["crc_train_announced"] = str(job.path)
        st.session_state[state.MODEL_KEY] = f"trained:{job.path.name}"
        st.rerun()  # the whole page: the sidebar picker lists the new model
    elif busy and not job.active:
        st.rerun()  # the run ended without a model: redraw the form (start enabled)



if job is not None:  # a run: its progress and curves come first, in view at 1280×720
    live_view()

# ------------------------------------------------------------------------------------------------ settings
problems = tv.check_fields(st.session_state)  # before the form: bad values are put back, and said so below
settings = st.expander("Settings of the next run", expanded=not busy, icon=":material/tune:")
with settings:
    k1, k2 = st.columns([3, 1])  # outside the form: the form shows the fields of the chosen kind at once
    kind = k1.radio("Training kind", list(tv.KINDS), index=list(tv.KINDS).index(D.kind), format_func=tv.KINDS.get,
                    key="tr_kind", horizontal=True)
    k1.caption(tv.KIND_EXPLANATIONS[kind])
    activation = k2.selectbox("Activation", list(tv.ACTIVATIONS), index=list(tv.ACTIVATIONS).index(D.activation),
                              key="tr_activation", help="relu: only for standard, PGD and TRADES training (it has no "
                                                        "curvature bound to penalise).")
    if mismatch := tv.kind_problem(kind, activation):
        st.warning(mismatch, icon=":material/block:")
    shown = tv.shown_fields(kind)
    with st.form("train_form", border=True):
        st.markdown("#### Settings")
        c1, c2, c3 = st.columns(3)
        with c1:
            st.selectbox("Dataset", catalogue.dataset_names("train") or ["embedded"], key="tr_dataset",
                         help="embedded: 10,000 training images of Fashion-MNIST shipped with the app.")
            if no_train := catalogue.missing_train_split():
                st.caption(f"Not offered: {', '.join(no_train)} (only its test split was found here, so it can be "
                           "tested on but not trained on).")
            st.number_input("Depth L (number of linear layers)", step=1, key="tr_depth",
                            help="2 to 5. 2 = one hidden layer (Theorem 3 applies); deeper nets use Theorem 4.")
            st.selectbox("Hidden width", [16, 32, 64, 128, 256, 512, 1024], index=4, key="tr_width")
        with c2:
            ts.kind_settings(shown)
        with c3:
            st.number_input("Epochs", step=1, key="tr_epochs", help="1 to 100.")
            st.select_slider("Learning rate (Adam)", [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], value=D.lr, key="tr_lr",
                             format_func=lambda v: f"{v:g}")
            st.selectbox("Batch size", [32, 64, 128, 256, 512], index=2, key="tr_batch")
            st.number_input("Seed", step=1, key="tr_seed")
        with st.container(border=True):  # not an expander: expanders do not nest (the settings are one)
            st.markdown("###### Advanced")
            a1, a2, a3 = st.columns(3)
            a1.number_input("Training images (0 = all)", step=500, key="tr_limit")
            a2.number_input("Test images certified each epoch", step=50, key="tr_eval_samples",
                            help="0 to 2000; 0 skips the robust and certified accuracies (faster).")
            a3.number_input("ρ for the robust and certified accuracies", step=0.05, key="tr_eval_rho",
                            help="0.05 to 5.")
            name = st.text_input("Name of the saved model (optional)", key="tr_name", max_chars=40)
        start = st.form_submit_button("Start training", type="primary", disabled=busy,
                                      help="Starts at once when the machine is free; otherwise the run waits in line "
                                           "and starts by itself.")

with ui.guard("Training"):
    if problems:
        st.error(("Not started: " if start else "") + " ".join(problems) + " Check the settings and press Start.",
                 icon=":material/warning:")
    elif start and mismatch:
        st.error(f"Not started: {mismatch}", icon=":material/warning:")
    elif start:
        tv.start(st.session_state, tv.make_config(st.session_state, str(sidebar.current_device())), name)
        st.rerun()  # redraw the form with Start disabled (one job per session) and the live view polling

if job is None:  # no run yet: the invitation and the picked model's own curves, below the settings
    live_view()
