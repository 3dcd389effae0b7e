"""The app's page list, defined once: app.py routes with it (``st.navigation``), the sidebar links to it and the Home
page shows its tools from it. A new page is one more :class:`Page` here (its script in pages/).

Each page keeps the URL path it had before ``st.navigation`` (``/Certify``, ``/Train``, …), so old links and shared
views keep working.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Page:
    """One entry of the page list: script path, title, icon, URL path ("" for the home page) and one line saying
    what it is for."""

    path: str
    label: str
    icon: str
    url_path: str
    blurb: str


HOME = Page("pages/0_Home.py", "Home", ":material/home:", "",
            "What a curvature certificate is; the model every page uses.")
PAGES = (
    HOME,
    Page("pages/2_Certify.py", "Certify", ":material/verified_user:", "Certify",
         "Start here: pick a test image and see its certified radius, closest boundary point and an attack at ρ."),
    Page("pages/3_Curvature.py", "Curvature", ":material/monitoring:", "Curvature",
         "Curvature bounds K_ub vs the curvature measured at test images K_lb, per class pair and across models."),
    Page("pages/4_Hessian.py", "Hessian", ":material/scatter_plot:", "Hessian",
         "All eigenvalues of the margin Hessian at one image, against the global bounds."),
    Page("pages/5_Compare.py", "Compare", ":material/compare_arrows:", "Compare",
         "CRC beside CROWN, the first-order bound and randomized smoothing: on a test set and across models."),
    Page("pages/1_Train.py", "Train", ":material/model_training:", "Train",
         "Train a small network (standard, γ-regularized, CRT, PGD or TRADES) with live curves; stop any time."),
    Page("pages/6_Playground.py", "Playground", ":material/toys:", "Playground",
         "The paper in two dimensions: every certificate drawn to scale beside the exact distance to the boundary."),
    Page("pages/7_Lesson.py", "Lesson", ":material/school:", "Lesson",
         "Seven projectable steps through the paper's idea on 2-D toys, each step a link of its own."),
)
