"""CRC Explorer — home page (run with `make run`). The pages/ folder holds the tools."""

import streamlit as st

st.set_page_config(page_title="CRC Explorer", layout="wide")

st.title("CRC Explorer")
st.markdown(
    """
A **curvature certificate** proves that no perturbation of an image smaller than a radius ρ (in ℓ2 norm) can change
a network's prediction. For a smooth network, the margin f(x) = z_y(x) − z_t(x) between the predicted class y and
another class t has a Hessian whose eigenvalues stay within bounds [m, M] everywhere; Singla & Feizi (2020) bound
these from the weights alone. With them, finding the closest point where the margin hits zero becomes a convex
problem whose dual gives a radius that is **provably** safe — and often the exact distance to the decision boundary.

*Second-Order Provable Defenses against Adversarial Attacks*, Sahil Singla and Soheil Feizi, ICML 2020.
"""
)
