"""Plotly figures comparing certificates: pure functions, numbers in, ``go.Figure`` out (no Streamlit here).

Randomized smoothing certifies a *different* (smoothed) classifier with probability ≥ 1 − α, so every figure draws it
apart from the deterministic radii (its own panel, or a dashed line) and says so in its label.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app_lib.plots import COLORS

__all__ = ["METHOD_COLORS", "certified_accuracy_curves", "mean_certificate_bars", "methods_vs_attack"]

METHOD_COLORS = {"crc": COLORS["radius"], "crown": "#1f77b4", "lipschitz": "#8c564b", "smoothing": "#e377c2",
                 "relu-quadratic": "#bcbd22"}
SMOOTHED = "smoothed classifier, prob. ≥ 1 − α"
ATTACK_LABEL_SHIFT = 22  # px: the attack's label sits above the panel titles, so the two never overlap
SMOOTHED_PANEL = "A different classifier: the smoothed one, certified with probability ≥ 1 − α"


def methods_vs_attack(radii: Mapping[str, float], labels: Mapping[str, str], *, attack_upper: float,
                      smoothing: float | None = None, rho: float | None = None) -> go.Figure:
    """Horizontal bars: each deterministic method's radius (name -> radius) against the attack's upper bound (a
    red line: the true distance lies between the best bar and it); smoothing in a separate panel below, labelled
    as a certificate of the smoothed classifier."""
    rows = 2 if smoothing is not None else 1
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.18,
                        row_heights=[max(1, len(radii)), 1][:rows],
                        subplot_titles=["Proofs about this model (deterministic)", SMOOTHED_PANEL][:rows])
    names = list(radii)
    fig.add_bar(y=[labels.get(m, m) for m in names], x=[radii[m] for m in names], orientation="h",
                marker_color=[METHOD_COLORS.get(m, COLORS["neutral"]) for m in names],
                text=[f"{radii[m]:.3f}" for m in names], textposition="outside", name="certified radius",
                hovertemplate="%{y}: radius %{x:.4f}<extra></extra>", row=1, col=1)
    if smoothing is not None:
        fig.add_bar(y=[labels.get("smoothing", "smoothing")], x=[smoothing], orientation="h",
                    marker_color=METHOD_COLORS["smoothing"], marker_pattern_shape="/", text=[f"{smoothing:.3f}"],
                    textposition="outside", name=SMOOTHED,
                    hovertemplate="smoothed classifier: radius %{x:.4f} (prob. ≥ 1 − α)<extra></extra>", row=2, col=1)
    finite = [v for v in (*radii.values(), smoothing or 0.0, attack_upper, rho or 0.0) if math.isfinite(v)]
    x_max = 1.25 * max([*finite, 1e-3])
    for r in range(1, rows + 1):
        if math.isfinite(attack_upper) and attack_upper > 0:
            fig.add_vline(x=attack_upper, line_color=COLORS["boundary"], line_dash="dash", row=r, col=1, layer="below")
        if rho is not None:
            fig.add_vline(x=rho, line_color=COLORS["rho"], line_dash="dot", row=r, col=1, layer="below")
    if math.isfinite(attack_upper) and attack_upper > 0:
        fig.add_annotation(x=attack_upper, y=1.0, xref="x", yref="paper", yanchor="bottom", showarrow=False,
                           yshift=ATTACK_LABEL_SHIFT, text=f"closest found: {attack_upper:.3f}",
                           font_color=COLORS["boundary"])
    fig.update_xaxes(range=[0, x_max])
    fig.update_xaxes(title_text="ℓ2 radius (red dashes: closest point found where the class changes"
                     + ("; orange dots: ρ)" if rho is not None else ")"), row=rows, col=1)
    fig.update_layout(height=170 + 45 * (len(names) + rows), showlegend=False,
                      margin=dict(l=10, r=20, t=60 + ATTACK_LABEL_SHIFT, b=50),
                      title="Every certificate for this image, against the upper end of the distance")
    return fig


def certified_accuracy_curves(rhos: Sequence[float], curves: Mapping[str, Sequence[float]],
                              labels: Mapping[str, str], *, n_images: int, rho: float | None = None,
                              model: str = "") -> go.Figure:
    """Certified accuracy (fraction of all images, correct and radius ≥ ρ) against ρ, one line per method;
    smoothing dashed and labelled as the smoothed classifier's."""
    fig = go.Figure()
    for m, acc in curves.items():
        smooth = m == "smoothing"
        name = labels.get(m, m) + (f" ({SMOOTHED})" if smooth else "")
        fig.add_scatter(x=list(rhos), y=100 * np.asarray(acc, dtype=float), mode="lines", name=name,
                        line=dict(color=METHOD_COLORS.get(m, COLORS["neutral"]), dash="dash" if smooth else "solid",
                                  width=2.5),
                        hovertemplate=f"{name}<br>ρ = %{{x:.2f}}: %{{y:.1f}}%<extra></extra>")
    if rho is not None:
        fig.add_vline(x=rho, line_color=COLORS["rho"], line_dash="dot", annotation_text=f"ρ = {rho:g}")
    of = f" of {model}" if model else ""
    fig.update_layout(title=f"Certified accuracy against ρ{of} ({n_images} test images)", xaxis_title="ρ (ℓ2 radius)",
                      yaxis_title="certified accuracy (%)", yaxis_range=[0, 100], height=420,
                      legend=dict(orientation="h", yanchor="top", y=-0.18), margin=dict(l=10, r=10, t=50, b=10))
    return fig


def mean_certificate_bars(models: Sequence[str], values: Mapping[str, Sequence[float]], labels: Mapping[str, str]
                          ) -> go.Figure:
    """Grouped bars: mean certificate per method (method -> one value per model), one group per model."""
    fig = go.Figure()
    for m, vals in values.items():
        fig.add_bar(x=list(models), y=list(vals), name=labels.get(m, m),
                    marker_color=METHOD_COLORS.get(m, COLORS["neutral"]),
                    text=[f"{v:.3f}" if math.isfinite(v) else "" for v in vals], textposition="outside")
    fig.update_layout(barmode="group", title="Mean certificate over correctly classified images (runner-up target)",
                      yaxis_title="mean certified radius", height=420, legend=dict(orientation="h", y=-0.2),
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig
