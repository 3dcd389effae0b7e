"""The Train page's larger sections, drawn here so that the page stays a short layout: the settings of the chosen
training kind (inside the form), a run waiting in line, and the outcome of a finished run. The computations and
checks live in :mod:`app_lib.train_view`; this module only lays out widgets and results.
"""

from __future__ import annotations

import time

import streamlit as st

from app_lib import jobs
from app_lib import train_view as tv

D = tv.DEFAULTS


def kind_settings(shown: set[str]) -> None:
    """The fields of the chosen training kind (γ, CRT ε, PGD, TRADES β), in the settings form."""
    if "tr_gamma" in shown:
        st.number_input("γ (curvature penalty)", step=0.005, format="%.3f", key="tr_gamma",
                        help="0 to 10. The paper uses 0.01–0.07.")
    if "tr_eps" in shown:
        st.number_input("CRT ε (attack radius)", step=0.05, key="tr_eps",
                        help="0.05 to 5: the ℓ2 radius of the curvature attack CRT trains on.")
    if "tr_adv_eps" in shown:
        st.number_input("Attack ε (ℓ2 radius)", step=0.05, key="tr_adv_eps",
                        help="0.01 to 5: the radius PGD searches within, pixels in [0, 1].")
        st.number_input("PGD steps", step=1, key="tr_adv_steps", help="1 to 100 steps per training batch.")
        st.number_input("PGD step size (0 = 2.5·ε/steps)", step=0.05, key="tr_adv_step",
                        help="0 to 5; 0 picks Madry et al.'s 2.5·ε/steps.")
    if "tr_adv_random" in shown:
        st.checkbox("Random start in the ε-ball", value=D.adv_random_start, key="tr_adv_random",
                    help="PGD starts at a uniform random point of the ball (else at the image).")
    if "tr_beta" in shown:
        st.number_input("TRADES β (weight of the KL term)", step=0.5, key="tr_beta",
                        help="0 to 100; the TRADES paper's default is 6. Larger β: more robust, less accurate.")
    if not shown:
        st.caption("Standard training has no settings of its own.")


def waiting(job: jobs.TrainJob) -> None:
    """A run waiting in line for the machine: how many are ahead, and a Cancel button."""
    c1, c2 = st.columns([5, 1])
    ahead = job.ahead() or 1
    c1.info(f"Waiting for {ahead} run{'s' if ahead > 1 else ''} ahead of yours; it starts automatically.",
            icon=":material/hourglass_top:")
    c2.button("Cancel", key="tr_stop", on_click=job.stop, help="Leaves the line: nothing is trained or saved.")
    st.caption(f"In line for {time.time() - job.queued:.0f} s. You can look at other pages meanwhile; the "
               "curves appear here when it starts.")


def outcome(job: jobs.TrainJob, text: str) -> None:
    """A run that finished or was stopped: where it was saved and its final metrics."""
    verb = "Stopped" if job.status == "stopped" else "Finished"
    if job.path is not None:
        st.success(f"{verb} after {job.elapsed():.0f} s ({text}). Saved as **{job.path.name}**; it is now the "
                   "model picked in the sidebar, so the other pages use it.")
    else:
        st.warning(f"{verb} before the first step: nothing to save.")
    if m := job.metrics:
        cols = st.columns(5)
        cols[0].metric("test accuracy", f"{m.get('test_accuracy', 0):.1%}")
        rho = m.get("eval_rho", job.config.eval_rho)
        pct = {k: "—" if m.get(k) is None else f"{m[k]:.1%}" for k in
               ("pgd_robust_accuracy", "certified_accuracy", "certified_accuracy_all")}
        cols[1].metric("PGD-robust", pct["pgd_robust_accuracy"], f"ρ = {rho:g}", delta_color="off",
                       delta_arrow="off", help="Robust to PGD at ρ. Empirical: an upper bound on the true robust "
                                               "accuracy.")
        cols[2].metric("certified, runner-up", pct["certified_accuracy"], f"ρ = {rho:g}", delta_color="off",
                       delta_arrow="off", help="Certified at ρ against the runner-up class only (the paper's).")
        cols[3].metric("certified, all classes", pct["certified_accuracy_all"], f"ρ = {rho:g}", delta_color="off",
                       delta_arrow="off", help="Certified at ρ against every other class: the classifier's.")
        cols[4].metric("mean K_ub", "—" if m.get("mean_K_ub") is None else f"{m['mean_K_ub']:.3g}")
