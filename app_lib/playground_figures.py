"""Pure Plotly builders for the Playground and the Lesson: the plane to scale (equal axes, so a disc is round).

Every builder takes view models (:mod:`app_lib.playground`, :mod:`crc_core.plane`) and returns a go.Figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from crc_core.plane import PlaneGrid

CLASS_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
REGION_COLORS = ("#c6dbef", "#fcbba1", "#c7e9c0", "#dadaeb")
METHOD_STYLE = {  # name shown, colour, dash
    "crc": ("CRC (curvature) disc", "#e6550d", "solid"),
    "relu-quadratic": ("App. G (2-layer ReLU) disc", "#e6550d", "solid"),
    "crown": ("CROWN disc", "#3182bd", "dash"),
    "lipschitz": ("first-order (Lipschitz) disc", "#31a354", "dot"),
}
CLICK_GRID = 49  # invisible markers a click can pick (49×49 over the square)
HEIGHT = 470


def _discrete_scale(colors: Sequence[str]) -> list[list]:
    n = len(colors)
    out: list[list] = []
    for i, c in enumerate(colors):
        out += [[i / n, c], [(i + 1) / n, c]]
    return out


def _circle(x0: Sequence[float], r: float, n: int = 181) -> tuple[np.ndarray, np.ndarray]:
    a = np.linspace(0, 2 * math.pi, n)
    return x0[0] + r * np.cos(a), x0[1] + r * np.sin(a)


def _base(grid: PlaneGrid, n_classes: int, title: str) -> go.Figure:
    xs, ys = grid.xs.numpy(), grid.ys.numpy()
    colors = REGION_COLORS[:n_classes]
    fig = go.Figure(go.Heatmap(x=xs, y=ys, z=grid.classes.numpy(), zmin=-0.5, zmax=n_classes - 0.5,
                               colorscale=_discrete_scale(colors), showscale=False, hoverinfo="skip"))
    _boundary(fig, grid)
    fig.update_layout(title={"text": title, "font": {"size": 14}}, height=HEIGHT, plot_bgcolor="white",
                      margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend={"font": {"size": 11}})
    fig.update_xaxes(range=[xs[0], xs[-1]], constrain="domain", showgrid=False, zeroline=False)
    fig.update_yaxes(range=[ys[0], ys[-1]], scaleanchor="x", scaleratio=1, constrain="domain", showgrid=False,
                     zeroline=False)
    return fig


def _boundary(fig: go.Figure, grid: PlaneGrid, color: str = "black") -> None:
    """The decision boundary: the zero line of each class's lead z_c − max_{j≠c} z_j (interpolated between grid
    points, so it is smooth; a boundary between two classes is drawn by both, on the same line)."""
    for c in range(grid.lead.shape[0]):
        fig.add_trace(go.Contour(x=grid.xs.numpy(), y=grid.ys.numpy(), z=grid.lead[c].numpy(), showscale=False,
                                 hoverinfo="skip", contours={"coloring": "none", "start": 0, "end": 0, "size": 1},
                                 line={"color": color, "width": 2.5}, name="decision boundary",
                                 showlegend=c == 0, legendgroup="boundary"))


def _points(fig: go.Figure, points: torch.Tensor, labels: torch.Tensor, names: Sequence[str]) -> None:
    p, lab = points.numpy(), labels.numpy()
    for c, name in enumerate(names):
        sel = lab == c
        fig.add_trace(go.Scatter(x=p[sel, 0], y=p[sel, 1], mode="markers", name=f"training points: {name}",
                                 marker={"color": CLASS_COLORS[c % 4], "size": 6, "line": {"color": "white",
                                                                                          "width": 0.6}},
                                 hoverinfo="skip"))


def _margin_contours(fig: go.Figure, grid: PlaneGrid) -> None:
    m = grid.margin.numpy()
    top = float(np.quantile(m, 0.9)) if m.size else 1.0
    step = max(top / 4, 1e-6)
    fig.add_trace(go.Contour(x=grid.xs.numpy(), y=grid.ys.numpy(), z=m, showscale=False, name="margin contours",
                             contours={"coloring": "none", "start": step, "end": 4 * step, "size": step,
                                       "showlabels": True, "labelfont": {"size": 9, "color": "#555"}},
                             line={"color": "#777", "width": 0.8, "dash": "dot"}, hoverinfo="skip",
                             showlegend=True))


def _click_layer(fig: go.Figure, grid: PlaneGrid) -> None:
    xs = np.linspace(float(grid.xs[0]), float(grid.xs[-1]), CLICK_GRID)
    ys = np.linspace(float(grid.ys[0]), float(grid.ys[-1]), CLICK_GRID)
    X, Y = np.meshgrid(xs, ys)
    fig.add_trace(go.Scatter(x=X.ravel(), y=Y.ravel(), mode="markers", name="click to pick", showlegend=False,
                             marker={"size": 10, "color": "rgba(0,0,0,0)"},
                             hovertemplate="pick (%{x:.2f}, %{y:.2f})<extra></extra>"))


def regions_figure(grid: PlaneGrid, points: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], *,
                   title: str, view=None, methods: Sequence[str] | None = None, truth: bool = True,
                   margins: bool = True, clickable: bool = False) -> go.Figure:
    """Decision regions and boundary, training points, margin contours; with a :class:`PointView` ``view``: the
    chosen point, each method's certified disc (``methods``: which; default all), the closest boundary point CRC
    proves, Algorithm 2's path and (``truth``) the true distance's circle and closest other-class point."""
    fig = _base(grid, len(class_names), title)
    if margins:
        _margin_contours(fig, grid)
    _points(fig, points, labels, class_names)
    if clickable:
        _click_layer(fig, grid)
    if view is not None:
        add_point(fig, view, methods=methods, truth=truth)
    return fig


def add_point(fig: go.Figure, view, *, methods: Sequence[str] | None = None, truth: bool = True) -> None:
    """Draw a :class:`app_lib.playground.PointView` on a plane figure (see :func:`regions_figure`)."""
    x0 = view.x0.numpy()
    for name, r in view.radii.items():
        if methods is not None and name not in methods:
            continue
        label, color, dash = METHOD_STYLE[name]
        cx, cy = _circle(x0, r)
        fig.add_trace(go.Scatter(x=cx, y=cy, mode="lines", name=f"{label}: r = {r:.3f}",
                                 line={"color": color, "dash": dash, "width": 2.5}, hoverinfo="name"))
    if view.path is not None and (methods is None or "crc" in methods):
        p = view.path.numpy()
        fig.add_trace(go.Scatter(x=[x0[0], *p[:, 0]], y=[x0[1], *p[:, 1]], mode="lines+markers",
                                 name="curvature attack (Alg. 2), growing ρ", marker={"size": 5},
                                 line={"color": "#756bb1", "width": 1.5}))
    if view.crc_boundary is not None and (methods is None or "crc" in methods):
        b = view.crc_boundary.numpy()
        fig.add_trace(go.Scatter(x=[b[0]], y=[b[1]], mode="markers", name="closest boundary point (CRC proves)",
                                 marker={"symbol": "x", "size": 13, "color": "#e6550d",
                                         "line": {"width": 1, "color": "black"}}))
    d = view.true_distance
    if truth and math.isfinite(d):
        cx, cy = _circle(x0, d)
        q = view.truth.point[0].numpy()
        fig.add_trace(go.Scatter(x=cx, y=cy, mode="lines", name=f"TRUE distance (dense search): {d:.3f}",
                                 line={"color": "black", "dash": "longdash", "width": 1.5}))
        fig.add_trace(go.Scatter(x=[x0[0], q[0]], y=[x0[1], q[1]], mode="lines+markers", showlegend=False,
                                 name="closest other-class point", line={"color": "black", "width": 1},
                                 marker={"symbol": ["circle", "star"], "size": [4, 14], "color": "black"}))
    fig.add_trace(go.Scatter(x=[x0[0]], y=[x0[1]], mode="markers", name="the point x0",
                             marker={"symbol": "circle", "size": 11, "color": "yellow",
                                     "line": {"width": 2, "color": "black"}}))


def curvature_figure(cv, *, title: str | None = None) -> go.Figure:
    """Measured curvature |λ|max of the margin Hessian over the plane, with the pair's certified K_ub in the title."""
    m = cv.measured.numpy()
    top = float(m.max())
    fig = go.Figure(go.Heatmap(x=cv.grid.xs.numpy(), y=cv.grid.ys.numpy(), z=m, colorscale="Viridis",
                               zmin=0, zmax=max(top, 1e-12), colorbar={"title": "|λ|max"},
                               hovertemplate="(%{x:.2f}, %{y:.2f}): |λ| = %{z:.3f}<extra></extra>"))
    _boundary(fig, cv.grid, color="white")
    y, t = cv.pair
    fig.update_layout(title=title or f"Measured curvature of z{y} − z{t}: max {top:.3g} over the plane ≤ "
                                     f"K_ub = {cv.K_ub:.3g} (the bound CRC uses)",
                      height=HEIGHT, margin={"l": 10, "r": 10, "t": 50, "b": 10}, showlegend=False)
    fig.update_yaxes(scaleanchor="x", scaleratio=1, constrain="domain")
    fig.update_xaxes(constrain="domain")
    return fig


def pieces_figure(grid: PlaneGrid, pieces: torch.Tensor, *, title: str | None = None) -> go.Figure:
    """A ReLU net's linear pieces (one colour per activation pattern) with its decision boundary."""
    n = int(pieces.max()) + 1
    palette = ("#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5",
               "#d9d9d9", "#bc80bd", "#ccebc5", "#ffed6f")
    ids = (pieces % len(palette)).numpy()
    fig = go.Figure(go.Heatmap(x=grid.xs.numpy(), y=grid.ys.numpy(), z=ids, zmin=-0.5, zmax=len(palette) - 0.5,
                               colorscale=_discrete_scale(palette), showscale=False, hoverinfo="skip"))
    _boundary(fig, grid)
    fig.update_layout(title=title or f"{n} linear pieces: on each the net is affine (Hessian 0), at the kinks "
                                     "it has none", height=HEIGHT, margin={"l": 10, "r": 10, "t": 50, "b": 10})
    fig.update_yaxes(scaleanchor="x", scaleratio=1, constrain="domain", range=[float(grid.ys[0]),
                                                                               float(grid.ys[-1])])
    fig.update_xaxes(constrain="domain", range=[float(grid.xs[0]), float(grid.xs[-1])])
    return fig


def bound_figure(sweep, *, title: str | None = None) -> go.Figure:
    """CRC's radius against the curvature bound K it is given (a :class:`app_lib.playground.BoundSweep`): solid
    where K ≥ K_ub (proven: certificates), dotted below (what a tighter bound would give, not proven)."""
    K, r = np.array(sweep.K), np.array(sweep.radius)
    proven = np.greater_equal(K, sweep.K_ub * (1 - 1e-12))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=K[~proven], y=r[~proven], mode="lines+markers", name="K below K_ub: not proven",
                             line={"color": "#e6550d", "dash": "dot"}))
    fig.add_trace(go.Scatter(x=K[proven], y=r[proven], mode="lines+markers", name="K ≥ K_ub: certified radius",
                             line={"color": "#e6550d", "width": 3}))
    top = max(float(r.max()), sweep.true_distance) * 1.05
    d = sweep.true_distance
    lines = [([K[0], K[-1]], [d, d], f"true distance {d:.3f}", "black", "longdash"),
             ([sweep.K_ub] * 2, [0, top], f"K_ub {sweep.K_ub:.3g} (proven)", "#e6550d", "solid"),
             ([sweep.K_lb] * 2, [0, top], f"K_lb {sweep.K_lb:.3g} (measured)", "#555", "dot")]
    for xs, ys, name, color, dash in lines:  # traces, not shapes: they take data coordinates on a log axis
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=name, line={"color": color, "dash": dash,
                                                                          "width": 1.5}))
    fig.update_layout(title=title or "The smaller the curvature bound, the larger the disc", height=HEIGHT,
                      xaxis_title="curvature bound K given to CRC (log scale)", xaxis_type="log",
                      yaxis_title="CRC radius at the point",
                      margin={"l": 10, "r": 10, "t": 50, "b": 10}, legend={"orientation": "h", "y": -0.2},
                      yaxis_range=[0, top])
    return fig
