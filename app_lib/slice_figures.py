"""Plotly figures of 2-D decision-region slices (crc_core.slices): pure functions, a slice in, ``go.Figure`` out.

The visual language is the Home page's cartoon (app_lib.plots.certificate_sketch): x0 a black dot, x_b a red cross,
the decision boundary a red line, the certified ball a green disc with a dashed radius to x_b, ρ in orange.
Here the regions are coloured by the class the model predicts (pale colours, one per class, shared colour bar),
and hovering a point shows its class and margin.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from app_lib.plots import COLORS, as_numpy
from crc_core.slices import DecisionSlice

__all__ = ["CIRCLE_POINTS", "SLICE_CAPTION", "class_colorscale", "slice_figure", "slice_pair_figure"]

AXIS_WORDS = 28  # characters of a direction's name that fit beside a 520-pixel-high plot
CIRCLE_POINTS = 241  # vertices of the drawn circles: smooth at any zoom, the radius exact at every vertex
# In a slice the disc lies over class colours: a hatch (not a flat tint) never reads as another class's colour
BALL_PATTERN = dict(shape="/", fgcolor="rgba(44,160,44,0.55)", bgcolor="rgba(0,0,0,0)", size=8, solidity=0.15)
# x_b with a margin above this is not called a boundary point: the certifier's own "on the boundary" test accepts
# |f| ≤ 1e-5·(1 + |f(x0)|), and logit margins of these nets are O(1–10).
XB_ON_BOUNDARY = 1e-3
SLICE_CAPTION = ("A slice through the image x0: the plane spanned by the direction to the closest boundary point "
                 "x_b and the chosen second direction, coloured by the class the model predicts. The certificate "
                 "holds in all 784 directions at once; a slice shows two of them. So the green disc (the certified "
                 "ball cut by this plane) never holds another class, but a boundary that looks far away here may "
                 "come closer in directions this picture does not show.")


def class_colorscale(n_classes: int) -> list[list]:
    """A stepwise colour scale for integer class values 0..n−1 on [−0.5, n − 0.5] (pale qualitative colours)."""
    base = (qualitative.Pastel1 + qualitative.Pastel2 + qualitative.Set3) if n_classes > 9 else qualitative.Pastel1
    cols = [base[k % len(base)] for k in range(n_classes)]
    scale = []
    for k, c in enumerate(cols):
        scale += [[k / n_classes, c], [(k + 1) / n_classes, c]]
    return scale


def _circle(r: float) -> tuple[np.ndarray, np.ndarray]:
    th = np.linspace(0.0, 2 * np.pi, CIRCLE_POINTS)
    return r * np.cos(th), r * np.sin(th)


def _slice_traces(s: DecisionSlice, class_names: Sequence[str], *, legend: bool, values_in_names: bool = True,
                  point: str = "x_b") -> list[go.BaseTraceType]:
    """The traces of one panel: class regions, zero contour, certified disc, ρ circle, x0, x_b. Grids are sent as
    uint8 classes and float32 margins (Plotly ships them base64-encoded: ~0.9 MB for 201×201, half of float64)."""
    a, b = as_numpy(s.a), as_numpy(s.b)
    classes = np.asarray(s.classes.detach().cpu().numpy() if hasattr(s.classes, "detach") else s.classes)
    margin = as_numpy(s.margin).astype(np.float32)  # 1e-7 relative: the zero contour moves by far less than a pixel
    names = np.asarray(list(class_names), dtype=object)
    if classes.size and (classes.min() < 0 or classes.max() >= len(names)):
        raise ValueError(f"The slice has classes up to {int(classes.max())}, but {len(names)} class names were given.")
    r, xb = float(s.radius), tuple(float(v) for v in s.xb_ab)
    ball = f"certified ball, r = {r:.3f}" if values_in_names else "certified ball (radius r)"
    on_boundary = s.xb_margin <= XB_ON_BOUNDARY and point == "x_b"  # only a point on the boundary is called x_b
    near = "closest boundary point x_b" if on_boundary else (point if point != "x_b" else
                                                             "the first axis's point (not a boundary point)")
    if values_in_names:
        near += f" (distance {xb[0]:.3f})"
    x0_name = f"the image x0 ({names[s.y]})" if values_in_names else "the image x0"
    traces: list[go.BaseTraceType] = [
        go.Heatmap(x=a, y=b, z=classes.astype(np.uint8 if len(names) <= 256 else np.int32),
                   coloraxis="coloraxis", text=names[classes], customdata=margin, name="predicted class",
                   showlegend=False,
                   hovertemplate="%{text}<br>margin z_y − max other: %{customdata:.4g}<br>"
                                 "(%{x:.3f}, %{y:.3f})<extra></extra>"),
        go.Contour(x=a, y=b, z=margin, contours=dict(start=0, end=0, size=1, coloring="none"), showscale=False,
                   line=dict(color=COLORS["boundary"], width=3), name="decision boundary (margin = 0)",
                   hoverinfo="skip", showlegend=legend, legendgroup="boundary"),
    ]
    cx, cy = _circle(r)
    traces.append(go.Scatter(x=cx, y=cy, mode="lines", fill="toself", fillpattern=BALL_PATTERN,
                             line=dict(color=COLORS["radius"], width=3), name=ball,
                             hoverinfo="skip", showlegend=legend, legendgroup="ball", meta={"radius": r}))
    traces.append(go.Scatter(x=[0.0, xb[0]], y=[0.0, xb[1]], mode="lines", hoverinfo="skip", showlegend=False,
                             line=dict(color=COLORS["radius"], dash="dash"), legendgroup="ball"))
    if s.rho is not None and s.rho > 0:
        rx, ry = _circle(float(s.rho))
        traces.append(go.Scatter(x=rx, y=ry, mode="lines", line=dict(color=COLORS["rho"], width=2, dash="dot"),
                                 name=f"attack budget ρ = {float(s.rho):g}", hoverinfo="skip", showlegend=legend,
                                 legendgroup="rho", meta={"radius": float(s.rho)}))
    traces.append(go.Scatter(x=[0.0], y=[0.0], mode="markers", marker=dict(size=12, color="black"),
                             name=x0_name, showlegend=legend, legendgroup="x0",
                             hovertemplate=f"x0: {names[s.y]}<extra></extra>"))
    traces.append(go.Scatter(x=[xb[0]], y=[xb[1]], mode="markers", showlegend=legend, legendgroup="xb",
                             marker=dict(size=13, color=COLORS["boundary"], symbol="x"),
                             name=near,
                             hovertemplate=f"{'x_b' if on_boundary else 'point'}, at distance {xb[0]:.3f} from "
                                           f"x0, margin {s.xb_margin:.2g}<extra></extra>"))
    return traces


def _axes_titles(s: DecisionSlice, point: str = "x_b") -> tuple[str, str]:
    second = s.second or "second direction"
    first = "along x_b − x0" if point == "x_b" and s.xb_margin <= XB_ON_BOUNDARY else "towards the marked point"
    if len(second) > AXIS_WORDS:  # a long direction (its name is in the title) would overflow the axis
        second = "the second direction"
    return f"{first} (ℓ2 distance)", f"along {second}, orthogonalised (ℓ2 distance)"


def _coloraxis(class_names: Sequence[str]) -> dict:
    n = len(class_names)
    return dict(colorscale=class_colorscale(n), cmin=-0.5, cmax=n - 0.5,
                colorbar=dict(title="predicted class", tickvals=list(range(n)), ticktext=list(class_names),
                              len=0.9, thickness=14))


def _two_lines(title: str) -> str:
    """A long title broken before "in the plane", so that it never runs under the chart's toolbar (top right)."""
    return title.replace(" in the plane of ", "<br><sup>in the plane of ", 1) + ("</sup>" if " in the plane of "
                                                                                 in title else "")


def slice_figure(s: DecisionSlice, class_names: Sequence[str], *, title: str | None = None,
                 height: int = 520, point: str = "x_b") -> go.Figure:
    """One slice: class regions, the margin's zero contour, the certified disc (radius r), ρ's circle, x0 and the
    first axis's point: x_b when ``point`` is "x_b" and it lies on the boundary, else ``point`` says what it is."""
    fig = go.Figure(_slice_traces(s, class_names, legend=True, point=point))
    xt, yt = _axes_titles(s, point)
    lim = float(max(np.abs(as_numpy(s.a)).max(), np.abs(as_numpy(s.b)).max()))
    fig.update_layout(coloraxis=_coloraxis(class_names), height=height, margin=dict(l=10, r=10, t=80, b=10),
                      title=dict(y=0.98, yanchor="top", x=0, xanchor="left", font_size=15, text=_two_lines(
                          title or f"Class regions around x0 in the plane of x_b and {s.second or 'a direction'}")),
                      xaxis=dict(title=xt, range=[-lim, lim], constrain="domain"),
                      yaxis=dict(title=yt, range=[-lim, lim], scaleanchor="x", scaleratio=1),
                      legend=dict(orientation="h", x=0, y=-0.2, yanchor="top"))
    return fig


def slice_pair_figure(left: DecisionSlice, right: DecisionSlice, class_names: Sequence[str], *,
                      titles: Sequence[str] = ("model A", "model B"), height: int = 520,
                      points: Sequence[str] = ("x_b", "x_b")) -> go.Figure:
    """Two slices side by side (e.g. a standard and a CRT model on the same image) on one scale, so the certified
    discs can be compared: both panels show the larger of the two extents (compute both slices with the same
    ``half_width`` to fill them)."""
    if len(titles) != 2:
        raise ValueError(f"Two panel titles are needed, got {len(titles)}.")
    fig = make_subplots(rows=1, cols=2, subplot_titles=[f"{t}: r = {float(s.radius):.3f}"
                                                        for t, s in zip(titles, (left, right), strict=True)],
                        horizontal_spacing=0.08)
    lim = max(float(np.abs(as_numpy(v)).max()) for s in (left, right) for v in (s.a, s.b))
    for col, s, point in ((1, left, points[0]), (2, right, points[1])):
        traces = _slice_traces(s, class_names, legend=col == 1, values_in_names=False, point=point)
        if col == 2 and traces[-1].name != fig.data[-1].name:  # the two panels' points differ: both in the legend
            traces[-1].showlegend = True
        for tr in traces:
            fig.add_trace(tr, row=1, col=col)
        xt, yt = _axes_titles(s, point)
        fig.update_xaxes(title_text=xt, range=[-lim, lim], constrain="domain", row=1, col=col)
        fig.update_yaxes(title_text=yt if col == 1 else None, range=[-lim, lim],  # one title: none over panel 1
                         scaleanchor="x" if col == 1 else "x2", scaleratio=1, row=1, col=col)
    fig.update_layout(coloraxis=_coloraxis(class_names), height=height, margin=dict(l=10, r=10, t=60, b=10),
                      legend=dict(orientation="h", x=0, y=-0.22, yanchor="top"))
    return fig
