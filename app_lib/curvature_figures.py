"""Plotly figures of the Curvature and Hessian pages (pure functions, data in, ``go.Figure`` out): K per class pair as
a heatmap, bounds against measured curvature across models, and the Hessian spectrum and its per-layer terms
against the global bounds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

__all__ = ["bounds_summary", "layer_terms", "pair_heatmap", "spectrum_histogram", "spectrum_sorted"]

from app_lib.plots import COLORS, as_numpy, hline, log_ticks, spans_decades, vline, wrap


# ------------------------------------------------------------------------------------------------ curvature
def pair_heatmap(values: Any, class_names: Sequence[str], *, title: str, colorbar_title: str = "",
                 log: bool | None = None, fmt: str = ".3g") -> go.Figure:
    """A (C, C) table indexed by (y, t) as a heatmap (NaN on the diagonal / for missing pairs).

    ``log`` None: a log colour scale when the values span more than two decades (the hover shows the value).
    """
    v = as_numpy(values)
    use_log = spans_decades(v) if log is None else log
    z = np.where(np.isfinite(v) & (v > 0), np.log10(np.where(v > 0, v, 1.0)), np.nan) if use_log else v
    text = [[("" if not np.isfinite(x) else format(x, fmt)) for x in row] for row in v]
    cb = dict(title=("log₁₀ " if use_log else "") + colorbar_title)
    fig = go.Figure(go.Heatmap(z=z, x=list(class_names), y=list(class_names), colorscale="Viridis",
                               text=text, texttemplate="%{text}" if v.shape[0] <= 10 else None,
                               textfont=dict(size=13), colorbar=cb,  # readable on a projector
                               hovertemplate="y = %{y}<br>t = %{x}<br>value %{text}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="target t", yaxis_title="class y",
                      yaxis=dict(autorange="reversed", automargin=True), xaxis=dict(automargin=True), height=450,
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def bounds_summary(rows: Sequence[Mapping[str, Any]], *, x_key: str = "model", log: bool | None = None,
                   title: str = "Curvature: upper bounds vs measured") -> go.Figure:
    """The paper's Figure 1 view: per model (or γ), average K_ub (each method) next to the measured K_lb.

    ``rows``: dicts with ``x_key`` and any of K_lb, K_ub_thm3, K_ub_thm4, K_ub_refined. With a numeric
    ``x_key`` (e.g. γ) lines are drawn, otherwise grouped bars. Log axis when values span decades.
    """
    series = (("K_ub_thm4", "K_ub (Theorem 4)", COLORS["bound"]),
              ("K_ub_refined", "K_ub (refined)", "#c5b0d5"),
              ("K_ub_thm3", "K_ub (Theorem 3, 2 layers)", "#8c564b"),
              ("K_lb", "K_lb (largest |eigenvalue| measured at test images)", COLORS["lower"]))
    xs = [r.get(x_key) for r in rows]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs) and len(xs) > 1
    if not numeric:
        xs = [wrap(str(x)) for x in xs]
    fig = go.Figure()
    allv = []
    for key, name, color in series:
        ys = [r.get(key) for r in rows]
        if all(y is None for y in ys):
            continue
        ys = [np.nan if y is None else float(y) for y in ys]
        allv += ys
        if numeric:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name, line=dict(color=color)))
        else:
            fig.add_trace(go.Bar(x=xs, y=ys, name=name, marker_color=color,
                                 text=[f"{y:.3g}" for y in ys], textposition="outside", cliponaxis=False))
    if (log is None and spans_decades(allv, 1.0)) or log:
        ticks = log_ticks(allv)
        fig.update_yaxes(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
    fig.update_layout(title=title, barmode="group", xaxis_title=x_key, yaxis_title="curvature (mean over pairs)",
                      height=480, margin=dict(l=10, r=10, t=100, b=10),
                      legend=dict(orientation="h", x=0, y=1.02, yanchor="bottom"))
    fig.update_xaxes(automargin=True, tickangle=0)
    fig.update_yaxes(automargin=True)
    return fig


# ------------------------------------------------------------------------------------------------ hessian
def _bound_lines(fig: go.Figure, m: float | None, M: float | None, K: float | None, vertical: bool,
                 span: tuple[float, float]) -> str:
    """Draw m, M (and ±K when it is within reach of the data) on the value axis; return a note about K."""
    add = vline if vertical else hline
    add(fig, m, COLORS["bound"], "m (bound)", dash="dash", position="top left")
    add(fig, M, COLORS["bound"], "M (bound)", dash="dash", position="top right" if vertical else "top left")
    if K is None or not np.isfinite(K):
        return ""
    lo, hi = span
    if 3 * max(abs(lo), abs(hi), 1e-12) >= K:  # labels at the other end from m and M's, so they never overlap
        add(fig, -K, COLORS["neutral"], "−K", dash="dot", position="bottom left" if vertical else "bottom right")
        add(fig, K, COLORS["neutral"], "+K", dash="dot", position="bottom right")
        return ""
    return f"; ±K = ±{K:.3g} is off the chart"


def _value_span(ev: np.ndarray, m: float | None, M: float | None) -> tuple[float, float]:
    vals = [v for v in (m, M) if v is not None and np.isfinite(v)]
    lo = min([float(ev.min()), *vals]) if ev.size else min(vals, default=-1.0)
    hi = max([float(ev.max()), *vals]) if ev.size else max(vals, default=1.0)
    return lo, hi


def spectrum_histogram(eigenvalues: Any, *, m: float | None = None, M: float | None = None, K: float | None = None,
                       nbins: int = 60, hide_zeros: bool = True) -> go.Figure:
    """Histogram of the eigenvalues of the margin Hessian with the global bounds m, M (and ±K) drawn on it.

    ``hide_zeros``: leave out the eigenvalues that are 0 up to round-off (a D × D Hessian of a net with N hidden
    units has at least D − N of them); their number is given in the title. Counts are on a log axis.
    """
    ev = as_numpy(eigenvalues).ravel()
    sub = []
    if hide_zeros and ev.size:
        tol = 1e-7 * max(float(np.abs(ev).max()), 1e-30)
        n0 = int((np.abs(ev) <= tol).sum())
        ev = ev[np.abs(ev) > tol]
        if n0:
            sub.append(f"{n0} eigenvalues ≈ 0 not shown")
    fig = go.Figure(go.Histogram(x=ev, nbinsx=nbins, marker_color=COLORS["lower"], name="eigenvalues",
                                 hovertemplate="eigenvalue %{x}<br>count %{y}<extra></extra>"))
    note = _bound_lines(fig, m, M, K, vertical=True, span=_value_span(ev, m, M))
    title = "Eigenvalues of the margin Hessian at this image"
    if sub or note:
        title += "<br><sup>" + "; ".join(sub) + note + "</sup>"
    fig.update_layout(title=title, xaxis_title="eigenvalue", yaxis_title="count (log)", height=380,
                      margin=dict(l=10, r=10, t=70, b=10), showlegend=False, bargap=0.05)
    fig.update_yaxes(type="log", dtick=1)
    return fig


def spectrum_sorted(eigenvalues: Any, *, m: float | None = None, M: float | None = None, K: float | None = None
                    ) -> go.Figure:
    """Eigenvalues in ascending order (index on x) with the bounds as horizontal lines."""
    ev = np.sort(as_numpy(eigenvalues).ravel())
    fig = go.Figure(go.Scatter(x=np.arange(1, ev.size + 1), y=ev, mode="lines+markers", marker=dict(size=3),
                               line=dict(color=COLORS["lower"]), name="eigenvalues",
                               hovertemplate="#%{x}: %{y:.4g}<extra></extra>"))
    note = _bound_lines(fig, m, M, K, vertical=False, span=_value_span(ev, m, M))
    fig.update_layout(title=f"All {ev.size} eigenvalues, sorted<br><sup>most are ≈ 0: the rank is at most the "
                            f"number of hidden units{note}</sup>",
                      xaxis_title="index (ascending)", yaxis_title="eigenvalue", height=380,
                      margin=dict(l=10, r=10, t=70, b=10), showlegend=False)
    return fig


def layer_terms(lam_min: Any, lam_max: Any, *, bound_per_layer: Any | None = None) -> go.Figure:
    """Lemma 1: the Hessian is a sum of one term per hidden layer; show each term's eigenvalue range.

    ``bound_per_layer`` (L−1,) ≥ 0: a bound b_I on each term's |eigenvalues| (e.g. Theorem 4's), drawn as markers
    at ±b_I and labelled with how many times the measured range it is.
    """
    lo, hi = as_numpy(lam_min), as_numpy(lam_max)
    names = [f"layer {i}" for i in range(1, lo.size + 1)]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=names, y=hi, name="largest eigenvalue", marker_color=COLORS["lower"],
                         hovertemplate="%{x}: largest eigenvalue %{y:.4g}<extra></extra>"))
    fig.add_trace(go.Bar(x=names, y=lo, name="smallest eigenvalue", marker_color="#aec7e8",
                         hovertemplate="%{x}: smallest eigenvalue %{y:.4g}<extra></extra>"))
    if bound_per_layer is not None:
        b = as_numpy(bound_per_layer)
        measured = np.maximum(np.abs(lo), np.abs(hi))
        ratio = [f"{bi / mi:.3g}× the measured range" if mi > 0 else "" for bi, mi in zip(b, measured)]
        marker = dict(symbol="line-ew-open", size=30, color=COLORS["bound"], line=dict(width=3))
        fig.add_trace(go.Scatter(x=names, y=b, mode="markers+text", name="± bound on the term (Thm 4)",
                                 marker=marker, text=[f"±{bi:.3g}" for bi in b], textposition="top center",
                                 cliponaxis=False,
                                 customdata=ratio,
                                 hovertemplate="%{x}: bound +%{y:.4g} (%{customdata})<extra></extra>"))
        fig.add_trace(go.Scatter(x=names, y=-b, mode="markers", name="−bound", marker=marker, showlegend=False,
                                 customdata=ratio,
                                 hovertemplate="%{x}: bound %{y:.4g} (%{customdata})<extra></extra>"))
    top = max([float(np.max(np.abs(v))) for v in (lo, hi) if v.size] +
              ([float(np.max(as_numpy(bound_per_layer)))] if bound_per_layer is not None else []) + [1e-12])
    fig.update_yaxes(range=[-1.3 * top, 1.3 * top])  # room for the bound labels above the markers
    fig.update_layout(title="Lemma 1 terms: each hidden layer's contribution to the Hessian",
                      barmode="overlay", yaxis_title="eigenvalue of the layer's term", height=360,
                      margin=dict(l=10, r=10, t=50, b=10), legend=dict(orientation="h", y=-0.2))
    return fig
