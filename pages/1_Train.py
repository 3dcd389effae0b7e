"""Train: small standard / γ-regularized / CRT networks with live curves, a stop button, saved for other pages."""

import time
from typing import Any

import streamlit as st

from app_lib import jobs, registry, ui
from crc_core import plots
from crc_core.activations import CURVATURE_ACTIVATIONS
from crc_core.data import load_dataset
from crc_core.errors import CRCError
from crc_core.train import TrainConfig, TrainResult, evaluate

JOB_KEY = "crc_train_job"
KINDS = {"standard": "standard (cross-entropy only)", "gamma": "γ-regularized (cross-entropy + γ·K)",
         "crt": "CRT (curvature attack inputs + γ·K)"}
D = TrainConfig()  # defaults: 2×[256] softplus CRT γ=0.01 ε=0.5, 3 epochs (about a minute on a CPU)

ctx = ui.page_setup("Train", ":material/model_training:", require_model=False)
st.title("Train a network")
st.caption("Train a small fully connected network on 28×28 images and watch its accuracy, curvature bound and "
           "certified accuracy evolve. The result is saved and appears in the model picker of every page.")
ui.explain(
    f"""
* **Standard** training minimises the cross-entropy only. Its curvature bound K usually grows large, so
  certificates are small.
* **γ-regularized** adds γ·K to the loss (paper eq. 7): K is the Theorem 4 curvature bound of the margin between the
  true class and the strongest other class, so the network learns to stay smooth.
* **CRT** (curvature-based robust training) also replaces each image by the curvature attack (Algorithm 2) within
  distance ε: it trains on the worst images it can find, and certifies best.
* **Curves**: loss; mean K (the training estimate per step, and the certification-grade bound each epoch); test
  accuracy and the share of test images *certified* at distance ρ (radius ≥ ρ), against the runner-up class (the
  paper's metric) and against all classes (the guarantee).
* The defaults (2×[256] softplus, CRT, 3 epochs on the embedded Fashion-MNIST subset) take about a minute on a CPU.
  Stopping keeps the model trained so far.
* **One run at a time, in line**: the app trains one network at a time for everyone using it. When another run (or
  a curvature survey) is going, yours *waits in line* and starts by itself when the runs ahead of it have ended; the
  page shows how many are ahead, and you may look at other pages meanwhile. **Cancel** takes it out of the line
  (nothing is trained or saved). Each session has at most one run going or waiting, and at most
  {jobs.QUEUE_CAPACITY} runs can wait at once.
"""
)


def _save(job: jobs.TrainJob) -> Any:
    """Return the function the worker calls to save its result (captures the job's name and config)."""
    cfg = job.config

    def save(result: TrainResult):
        metrics = dict(result.metrics)
        if result.stopped or not metrics:  # evaluate what we have, so the saved metrics describe these weights
            metrics = {"epoch": None, "step": result.steps, **evaluate(
                result.model, load_dataset(cfg.dataset, "test", root=cfg.data_root, limit=cfg.test_limit),
                rho=cfg.eval_rho, eval_samples=cfg.eval_samples, all_targets=cfg.eval_all_targets,
                mode=cfg.eval_mode)}
            job.metrics = metrics
        epochs_done = [e for e in result.history if e.get("kind") == "epoch"]
        steps = [e for e in result.history if e.get("kind") == "step"]
        keep = steps[:: max(1, len(steps) // 200)]
        meta = {  # the same keys as `python -m crc_core train` writes
            "dataset": cfg.dataset,
            "kind": cfg.kind,
            "gamma": cfg.gamma_used,
            "crt_eps": cfg.crt_eps if cfg.kind == "crt" else None,
            "epochs": len(epochs_done),
            "label": cfg.describe(),
            "metrics": metrics,
            "command": "CRC Explorer app, Train page",
            "config": cfg.to_dict(),
            "stopped": result.stopped,
            "train_seconds": round(result.seconds, 2),
            "history": {"epochs": [{k: v for k, v in e.items() if k != "kind"} for e in epochs_done],
                        "steps": [{k: v for k, v in e.items() if k != "kind"} for e in keep]},
        }
        return registry.save_trained(result.model, meta, job.name or cfg.describe())

    return save


# ------------------------------------------------------------------------------------------------ settings
job: jobs.TrainJob | None = st.session_state.get(JOB_KEY)
busy = job is not None and job.active  # running or waiting in line: one job per session
with st.form("train_form", border=True):
    st.markdown("#### Settings")
    c1, c2, c3 = st.columns(3)
    with c1:
        datasets = ui.dataset_names() or ["embedded"]
        dataset = st.selectbox("Dataset", datasets, key="tr_dataset",
                               help="embedded: 10,000 training images of Fashion-MNIST shipped with the app.")
        depth = st.number_input("Depth L (number of linear layers)", 2, 5, 2, key="tr_depth",
                                help="2 = one hidden layer (Theorem 3 applies); deeper nets use Theorem 4.")
        width = st.selectbox("Hidden width", [16, 32, 64, 128, 256, 512, 1024], index=4, key="tr_width")
        activation = st.selectbox("Activation", list(CURVATURE_ACTIVATIONS),
                                  index=list(CURVATURE_ACTIVATIONS).index(D.activation), key="tr_activation",
                                  help="Smooth activations only: ReLU has no curvature bound.")
    with c2:
        kind = st.radio("Training kind", list(KINDS), index=list(KINDS).index(D.kind), format_func=KINDS.get,
                        key="tr_kind")
        gamma = st.number_input("γ (curvature penalty)", 0.0, 10.0, D.gamma, step=0.005, format="%.3f",
                                key="tr_gamma", help="Ignored for standard training. The paper uses 0.01–0.07.")
        crt_eps = st.number_input("CRT ε (attack radius)", 0.05, 5.0, D.crt_eps, step=0.05, key="tr_eps",
                                  help="Used by CRT only: the ℓ2 radius of the training attack.")
    with c3:
        epochs = st.number_input("Epochs", 1, 100, D.epochs, key="tr_epochs")
        lr = st.select_slider("Learning rate (Adam)", [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], value=D.lr, key="tr_lr",
                              format_func=lambda v: f"{v:g}")
        batch = st.selectbox("Batch size", [32, 64, 128, 256, 512], index=2, key="tr_batch")
        seed = st.number_input("Seed", 0, 2**31 - 1, D.seed, key="tr_seed")
    with st.expander("Advanced"):
        a1, a2, a3 = st.columns(3)
        limit = a1.number_input("Training images (0 = all)", 0, 1_000_000, 0, step=500, key="tr_limit")
        eval_samples = a2.number_input("Test images certified each epoch", 0, 2000, D.eval_samples, step=50,
                                       key="tr_eval_samples",
                                       help="0 skips the certified accuracy (faster).")
        eval_rho = a3.number_input("ρ for the certified accuracy", 0.05, 5.0, D.eval_rho, step=0.05,
                                   key="tr_eval_rho")
        name = st.text_input("Name of the saved model (optional)", key="tr_name", max_chars=40)
    start = st.form_submit_button("Start training", type="primary", disabled=busy,
                                  help="Starts at once when the machine is free; otherwise the run waits in line "
                                       "and starts by itself.")

with ui.guard("Training"):
    if start:
        if busy:
            raise CRCError("Your training run is still waiting in line: cancel it first." if job.waiting else
                           "Your training run is still going: stop it first (one run per session).")
        config = TrainConfig(dataset=dataset, widths=(int(width),) * (int(depth) - 1), activation=activation,
                             kind=kind, gamma=float(gamma), crt_eps=float(crt_eps), epochs=int(epochs),
                             lr=float(lr), batch_size=int(batch), seed=int(seed), device=str(ui.current_device()),
                             eval_samples=int(eval_samples), eval_rho=float(eval_rho),
                             train_limit=int(limit) or None)
        new = jobs.TrainJob(config, name=name.strip())
        new.start(ui.train_queue(), _save(new), session_alive=ui.session_alive(), orphan_after=ui.orphan_after())
        if job is not None and job.waiting:  # never orphan a job in the line: the session's job is replaced
            job.stop()
        st.session_state[JOB_KEY] = new
        st.session_state.pop("crc_train_announced", None)
        st.rerun()  # redraw the form with Start disabled (one job per session) and the live view polling


# ------------------------------------------------------------------------------------------------ live view
@st.fragment(run_every=1.0 if busy else None)
def live_view() -> None:
    job: jobs.TrainJob | None = st.session_state.get(JOB_KEY)
    if job is None:
        st.info("Choose the settings and press **Start training**. The curves appear here while it trains.")
        hist = (ctx.meta.get("history") or {}) if ctx is not None else {}
        if hist.get("steps") or hist.get("epochs"):
            events = [{"kind": "step", **e} for e in hist.get("steps", [])] + [
                {"kind": "epoch", **e} for e in hist.get("epochs", [])]
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
        m = job.metrics
        if m:
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
