"""Train: small standard / γ-regularized / CRT networks with live curves, a stop button, saved for other pages."""

import time

import streamlit as st

from app_lib import jobs, plots, registry, texts, ui
from app_lib import train_view as tv
from crc_core.activations import CURVATURE_ACTIVATIONS
from crc_core.train import TrainConfig

D = tv.DEFAULTS

ctx = ui.page_setup("Train", ":material/model_training:", require_model=False)
st.title("Train a network")
st.caption("Train a small fully connected network on 28×28 images and watch its accuracy, curvature bound and "
           "certified accuracy evolve. The result is saved and appears in the model picker of every page.")
ui.explain(texts.TRAIN)

# ------------------------------------------------------------------------------------------------ settings
job: jobs.TrainJob | None = st.session_state.get(tv.JOB_KEY)
busy = job is not None and job.active  # running or waiting in line: one job per session
problems = tv.check_fields(st.session_state)  # before the form: bad values are put back, and said so below
with st.form("train_form", border=True):
    st.markdown("#### Settings")
    c1, c2, c3 = st.columns(3)
    with c1:
        dataset = st.selectbox("Dataset", ui.dataset_names() or ["embedded"], key="tr_dataset",
                               help="embedded: 10,000 training images of Fashion-MNIST shipped with the app.")
        depth = st.number_input("Depth L (number of linear layers)", step=1, key="tr_depth",
                                help="2 to 5. 2 = one hidden layer (Theorem 3 applies); deeper nets use Theorem 4.")
        width = st.selectbox("Hidden width", [16, 32, 64, 128, 256, 512, 1024], index=4, key="tr_width")
        activation = st.selectbox("Activation", list(CURVATURE_ACTIVATIONS),
                                  index=list(CURVATURE_ACTIVATIONS).index(D.activation), key="tr_activation",
                                  help="Smooth activations only: ReLU has no curvature bound.")
    with c2:
        kind = st.radio("Training kind", list(tv.KINDS), index=list(tv.KINDS).index(D.kind),
                        format_func=tv.KINDS.get, key="tr_kind")
        gamma = st.number_input("γ (curvature penalty)", step=0.005, format="%.3f", key="tr_gamma",
                                help="0 to 10. Ignored for standard training. The paper uses 0.01–0.07.")
        crt_eps = st.number_input("CRT ε (attack radius)", step=0.05, key="tr_eps",
                                  help="0.05 to 5. Used by CRT only: the ℓ2 radius of the training attack.")
    with c3:
        epochs = st.number_input("Epochs", step=1, key="tr_epochs", help="1 to 100.")
        lr = st.select_slider("Learning rate (Adam)", [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], value=D.lr, key="tr_lr",
                              format_func=lambda v: f"{v:g}")
        batch = st.selectbox("Batch size", [32, 64, 128, 256, 512], index=2, key="tr_batch")
        seed = st.number_input("Seed", step=1, key="tr_seed")
    with st.expander("Advanced"):
        a1, a2, a3 = st.columns(3)
        limit = a1.number_input("Training images (0 = all)", step=500, key="tr_limit")
        eval_samples = a2.number_input("Test images certified each epoch", step=50, key="tr_eval_samples",
                                       help="0 to 2000; 0 skips the certified accuracy (faster).")
        eval_rho = a3.number_input("ρ for the certified accuracy", step=0.05, key="tr_eval_rho",
                                   help="0.05 to 5.")
        name = st.text_input("Name of the saved model (optional)", key="tr_name", max_chars=40)
    start = st.form_submit_button("Start training", type="primary", disabled=busy,
                                  help="Starts at once when the machine is free; otherwise the run waits in line "
                                       "and starts by itself.")

with ui.guard("Training"):
    if problems:
        st.error(("Not started: " if start else "") + " ".join(problems) + " Check the settings and press Start.",
                 icon=":material/warning:")
    elif start:
        config = TrainConfig(dataset=dataset, widths=(int(width),) * (int(depth) - 1), activation=activation,
                             kind=kind, gamma=float(gamma), crt_eps=float(crt_eps), epochs=int(epochs),
                             lr=float(lr), batch_size=int(batch), seed=int(seed), device=str(ui.current_device()),
                             eval_samples=int(eval_samples), eval_rho=float(eval_rho), train_limit=int(limit) or None)
        tv.start(st.session_state, config, name)
        st.rerun()  # redraw the form with Start disabled (one job per session) and the live view polling


# ------------------------------------------------------------------------------------------------ live view
@st.fragment(run_every=1.0 if busy else None)
def live_view() -> None:
    job: jobs.TrainJob | None = st.session_state.get(tv.JOB_KEY)
    if job is None:
        st.info("Choose the settings and press **Start training**. The curves appear here while it trains.")
        if ctx is not None and (events := tv.saved_history(ctx.meta)):
            ui.plot(plots.training_curves(events, title=f"How the picked model was trained: {ctx.ref.name} "
                                                        f"({registry.kind_text(ctx.meta)})"), key="saved_curves")
        return
    st.markdown(f"#### Run: {job.config.describe()}")
    if job.waiting:
        c1, c2 = st.columns([5, 1])
        ahead = job.ahead() or 1
        c1.info(f"Waiting for {ahead} run{'s' if ahead > 1 else ''} ahead of yours; it starts automatically.",
                icon=":material/hourglass_top:")
        c2.button("Cancel", key="tr_stop", on_click=job.stop, help="Leaves the line: nothing is trained or saved.")
        st.caption(f"In line for {time.time() - job.queued:.0f} s. You can look at other pages meanwhile; the "
                   "curves appear here when it starts.")
        return
    if job.status == "cancelled":
        st.info(f"Cancelled: your run left the line before it started; nothing was trained or saved. "
                f"{job.error or ''}".strip(), icon=":material/block:")
        if busy:
            st.rerun()  # redraw the form (start enabled)
        return
    steps = job.step_events()
    last = steps[-1] if steps else None
    text = (f"epoch {last['epoch']}/{job.config.epochs}, step {last['step']}/{last['total_steps']}, "
            f"{job.elapsed():.0f} s" if last else f"starting… {job.elapsed():.0f} s")
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
        verb = "Stopped" if job.status == "stopped" else "Finished"
        if job.path is not None:
            st.success(f"{verb} after {job.elapsed():.0f} s ({text}). Saved as **{job.path.name}**; it is now the "
                       "model picked in the sidebar, so the other pages use it.")
        else:
            st.warning(f"{verb} before the first step: nothing to save.")
        if m := job.metrics:
            cols = st.columns(4)
            cols[0].metric("test accuracy", f"{m.get('test_accuracy', 0):.1%}")
            ca, caa = m.get("certified_accuracy"), m.get("certified_accuracy_all")
            rho = m.get("eval_rho", job.config.eval_rho)
            cols[1].metric(f"certified at ρ={rho:g} (runner-up)", "—" if ca is None else f"{ca:.1%}")
            cols[2].metric(f"certified at ρ={rho:g} (all classes)", "—" if caa is None else f"{caa:.1%}")
            cols[3].metric("mean K_ub", "—" if m.get("mean_K_ub") is None else f"{m['mean_K_ub']:.3g}")
    ui.plot(plots.training_curves(job.events, title="Live training curves"), key="curves")
    if not job.running and job.path is not None and st.session_state.get("crc_train_announced") != str(job.path):
        st.session_state["crc_train_announced"] = str(job.path)
        st.session_state[ui.MODEL_KEY] = f"trained:{job.path.name}"
        st.rerun()  # the whole page: the sidebar picker lists the new model
    elif busy and not job.active:
        st.rerun()  # the run ended without a model: redraw the form (start enabled)


live_view()
