"""Home: what a certificate is, the tools, the model every page uses and the checkpoint upload."""

import streamlit as st

from app_lib import catalogue, imports_view, navigation, plots, sidebar, texts, ui

ctx = sidebar.page_setup("Home", require_model=False)

st.title("CRC Explorer")
st.markdown("Curvature-based robustness certificates for smooth neural networks — *Second-Order Provable "
            "Defenses against Adversarial Attacks*, Sahil Singla & Soheil Feizi, ICML 2020.")
st.info("**Where to start:** open **Certify**, click a test image and read its certified radius; then see how the "
        "curvature bounds behind it compare with reality on **Curvature** and **Hessian**, or train your own "
        "network on **Train**. The model in the sidebar is used by every page. **Teaching?** Open **Lesson**: the "
        "paper's idea in seven projectable steps on 2-D data, then let the class try the **Playground**.",
        icon=":material/flag:")
TOOLS_PER_ROW = 4  # at 1280×720 a wider row cuts the page names
tools = navigation.PAGES[1:]
for start in range(0, len(tools), TOOLS_PER_ROW):
    for col, p in zip(st.columns(TOOLS_PER_ROW), tools[start:start + TOOLS_PER_ROW]):
        with col:
            sidebar.page_link(p, with_blurb=True)

st.divider()
left, right = st.columns([1, 1], gap="large")
with left:
    st.markdown(texts.HOME)
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
        st.info("No model is available yet. Train one on the **Train** page or upload a checkpoint here (ours, or "
                "the paper's official files and other PyTorch MLPs, which are imported).")
    else:
        rows = catalogue.model_rows(ctx)
        st.table({"property": list(rows), "value": list(rows.values())}, border="horizontal", hide_index=True)
        st.caption("Change it in the sidebar: every page follows the same choice.")

with c2:
    imports_view.upload_section()
