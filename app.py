"""CRC Explorer — home page (run with `make run`). The pages/ folder holds the tools."""

import streamlit as st

from app_lib import registry, ui
from crc_core import plots

ctx = ui.page_setup("Home", require_model=False)

st.title("CRC Explorer")
st.markdown("Curvature-based robustness certificates for smooth neural networks — *Second-Order Provable "
            "Defenses against Adversarial Attacks*, Sahil Singla & Soheil Feizi, ICML 2020.")

left, right = st.columns([1, 1], gap="large")
with left:
    st.markdown(
        """
#### What is a curvature certificate?
A classifier picks the class with the largest score (logit). An **adversarial attack** adds a small change to an
image so that another class wins. A **certificate** is a radius *r* with a proof that **no** change smaller than *r*
(in ℓ2 norm, pixels in [0, 1]) can flip the prediction.

For a network with a smooth activation (softplus, sigmoid, tanh), the *curvature* of the margin
f(x) = z_y(x) − z_t(x) — the eigenvalues of its Hessian — is bounded **everywhere** by numbers *m ≤ M* computed from
the weights alone. With those bounds, finding the closest point where the margin hits zero becomes a convex
problem; its dual gives a radius that is provably safe, and often equal to the exact distance to the decision
boundary (then the certificate is **exact**). Training with a curvature penalty γ·K (CRT) keeps the bounds small,
so the certificates get large.
"""
    )
with right:
    ui.plot(plots.certificate_sketch(), key="sketch")
    st.caption("A cartoon in 2-D (real images have 784 dimensions). The certified radius is the largest ball around "
               "the image x0 that the decision boundary provably does not enter; when the closest boundary point "
               "x_b lies exactly on the ball, the certificate is exact.")

st.divider()
c1, c2 = st.columns([1, 1], gap="large")
with c1:
    st.markdown("#### The model every page uses")
    if ctx is None:
        st.info("No model is available yet. Train one on the **Train** page or upload a checkpoint here.")
    else:
        meta = ctx.meta
        arch = meta.get("architecture") or ctx.model.config()
        metrics = meta.get("metrics") or {}
        rows = {
            "Model": ctx.ref.name,
            "Source": ctx.ref.source,
            "Architecture": registry.arch_text(arch),
            "Training": registry.kind_text(meta),
            "Trained on": str(meta.get("dataset") or "unknown"),
            "Epochs": str(meta.get("epochs") if meta.get("epochs") is not None else "—"),
            "Device in use": str(ctx.device),
            "Dataset in use": f"{ctx.dataset} (test split)",
        }
        acc, cert = metrics.get("test_accuracy"), metrics.get("certified_accuracy")
        if isinstance(acc, (int, float)):
            rows["Test accuracy (saved)"] = f"{acc:.1%}"
        if isinstance(cert, (int, float)):
            rho = metrics.get("eval_rho", 0.5)
            rows[f"Certified accuracy at ρ={rho:g} (saved)"] = f"{cert:.1%}"
        st.table({"": list(rows.keys()), "value": list(rows.values())})
        st.caption("Change it in the sidebar: every page follows the same choice.")

with c2:
    st.markdown("#### Upload a checkpoint")
    st.caption("A `.pt` file saved by CRC Explorer (the Train page, or `crc_core.checkpoints.save_checkpoint`). "
               "Files are read as weights only: code inside a file is never run, and tampered or foreign files "
               "are refused.")
    up = st.file_uploader("Checkpoint file", type=["pt", "pth", "ckpt"], key="crc_upload_ckpt")
    if up is not None and st.session_state.get("crc_upload_done") != up.file_id:
        st.session_state["crc_upload_done"] = up.file_id
        with ui.guard("Upload refused"):
            ref = ui.add_upload(up.getvalue(), up.name)
            st.session_state["crc_flash"] = f"Loaded {up.name}: it is now the picked model ({ref.id})."
            st.rerun()
    if msg := st.session_state.pop("crc_flash", None):
        st.success(msg)

st.divider()
st.markdown("#### The tools")
TOOLS = (
    ("pages/1_Train.py", "Train", ":material/model_training:",
     "Train a small network (standard, γ-regularized or CRT) with live curves; stop any time."),
    ("pages/2_Certify.py", "Certify", ":material/verified_user:",
     "Pick a test image: its certified radius, closest boundary point, and an attack at ρ."),
    ("pages/3_Curvature.py", "Curvature", ":material/monitoring:",
     "Curvature bounds K_ub vs the curvature measured at test images K_lb, per class pair."),
    ("pages/4_Hessian.py", "Hessian", ":material/scatter_plot:",
     "All eigenvalues of the margin Hessian at one image, against the global bounds."),
)
for col, (page, label, icon, text) in zip(st.columns(len(TOOLS)), TOOLS):
    with col:
        st.page_link(page, label=label, icon=icon)
        st.caption(text)
