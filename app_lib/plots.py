"""Plotly figure builders for the app: pure functions, numbers in, ``go.Figure`` out (no Streamlit here).

Inputs are numpy arrays or torch tensors (converted with :func:`as_numpy`); images are flat (784,) or (28, 28).
Every builder returns a new figure with titles, axis labels and hover text a newcomer can read. Colours are
shared so that the same quantity looks the same on every page (see ``COLORS``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "COLORS",
    "as_numpy",
    "boundary_triptych",
    "certificate_sketch",
    "eigenvector_images",
    "image_heatmaps",
    "log_ticks",
    "margin_along_path",
    "margins_bar",
    "radii_bar",
    "spans_decades",
    "training_curves",
    "wrap",
]

COLORS = {
    "radius": "#2ca02c",  # certified radius / safe region
    "rho": "#ff7f0e",  # the attack budget ρ
    "boundary": "#d62728",  # decision boundary, x_b, attacks
    "bound": "#9467bd",  # curvature bounds m, M, K (upper bounds)
    "lower": "#1f77b4",  # measured curvature K_lb, eigenvalues
    "neutral": "#7f7f7f",
    "runner_up": "#17becf",
}


def as_numpy(a: Any) -> np.ndarray:
    """torch tensor / list / array -> float64 numpy array (detached, on the CPU)."""
    if hasattr(a, "detach"):
        a = a.detach().to("cpu").double().numpy()
    return np.asarray(a, dtype=np.float64)


def _img(a: Any) -> np.ndarray:
    x = as_numpy(a)
    if x.size == 784:
        return x.reshape(28, 28)
    side = math.isqrt(x.size)
    if side * side != x.size:
        raise ValueError(f"Cannot show an image of {x.size} pixels as a square.")
    return x.reshape(side, side)


def wrap(text: str, width: int = 18) -> str:
    """Break a long label into lines of about ``width`` characters (Plotly's <br>), at spaces, '-', '_' or '·'."""
    parts = re.split(r"(?<=[\s\-_·])", text)
    lines, cur = [], ""
    for p in parts:
        if cur and len(cur) + len(p) > width:
            lines.append(cur.rstrip())
            cur = ""
        cur += p
    lines.append(cur.rstrip())
    return "<br>".join(line for line in lines if line)


def log_ticks(values: Any) -> list[float]:
    """Tick values for a log axis over the positive finite ``values``: 1-2-5 steps (every digit when that gives
    fewer than three), so that each tick is labelled with its full value (not Plotly's bare minor digits)."""
    v = as_numpy(values).ravel()
    v = v[np.isfinite(v) & (v > 0)]
    if not v.size:
        return []
    lo, hi = float(v.min()), float(v.max())
    decades = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
    for digits in ((1, 2, 5), tuple(range(1, 10))):
        ticks = [d * 10.0**e for e in decades for d in digits if lo / 1.25 <= d * 10.0**e <= hi * 1.25]
        if len(ticks) >= 3:
            break
    return ticks


def spans_decades(values: Any, decades: float = 2.0) -> bool:
    """True when the positive finite values span more than ``decades`` powers of ten (use a log axis)."""
    v = as_numpy(values).ravel()
    v = v[np.isfinite(v) & (v > 0)]
    return v.size > 1 and math.log10(v.max() / v.min()) > decades


def vline(fig: go.Figure, x: float, color: str, text: str, dash: str = "solid", row=None, col=None,
           position: str = "top right") -> None:
    if x is None or not np.isfinite(x):
        return
    kw = {} if row is None else {"row": row, "col": col}
    lift = {"annotation_yshift": 18} if "bottom" in position else {}  # a bottom label clears the axis ticks
    fig.add_vline(x=float(x), line_color=color, line_dash=dash, line_width=2, annotation_text=text,
                  annotation_position=position, annotation_font_color=color, **lift, **kw)


def hline(fig: go.Figure, y: float, color: str, text: str, dash: str = "solid",
           position: str = "top left") -> None:
    """A horizontal line labelled ``text`` (``position="right"``: the label sits right of the plot area)."""
    if y is None or not np.isfinite(y):
        return
    fig.add_hline(y=float(y), line_color=color, line_dash=dash, line_width=2, annotation_text=text,
                  annotation_position=position, annotation_font_color=color)


def _square_images(fig: go.Figure, n: int) -> None:
    for i in range(1, n + 1):
        suffix = "" if i == 1 else str(i)
        fig.update_layout({f"yaxis{suffix}": dict(autorange="reversed", scaleanchor=f"x{suffix}", ticks="",
                                                 showticklabels=False, showgrid=False, zeroline=False),
                           f"xaxis{suffix}": dict(showticklabels=False, showgrid=False, zeroline=False, ticks="",
                                                  constrain="domain")})


# ------------------------------------------------------------------------------------------------ home picture
def certificate_sketch() -> go.Figure:
    """A 2-D cartoon of a curvature certificate: input x0, a curved decision boundary f(x) = 0, the closest
    boundary point x_b, and the certified ball (radius = distance to x_b when the certificate is exact)."""
    s = np.linspace(-2.6, 2.6, 200)
    bx, by = 1.5 + 0.3 * s**2, s  # boundary: a parabola opening to the right, vertex (1.5, 0)
    xb = np.array([1.5, 0.0])  # the closest boundary point to x0 = (0, 0) for this (small) curvature
    r = float(np.linalg.norm(xb))
    th = np.linspace(0, 2 * np.pi, 200)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=np.r_[bx, 4.2, 4.2], y=np.r_[by, 2.6, -2.6], fill="toself", mode="none",
                             fillcolor="rgba(214,39,40,0.10)", hoverinfo="skip", name="another class wins here"))
    fig.add_trace(go.Scatter(x=bx, y=by, mode="lines", line=dict(color=COLORS["boundary"], width=3),
                             name="decision boundary f(x) = 0", hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=r * np.cos(th), y=r * np.sin(th), fill="toself", mode="lines",
                             fillcolor="rgba(44,160,44,0.15)", line=dict(color=COLORS["radius"], width=2),
                             name="certified ball: no change inside it flips the class", hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=[0, xb[0]], y=[0, xb[1]], mode="lines", line=dict(color=COLORS["radius"], dash="dash"),
                             showlegend=False, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=[0], y=[0], mode="markers", marker=dict(size=12, color="black"), name="the image x0"))
    fig.add_trace(go.Scatter(x=[xb[0]], y=[xb[1]], mode="markers", marker=dict(size=13, color=COLORS["boundary"],
                             symbol="x"), name="closest boundary point x_b"))
    fig.add_annotation(x=0, y=0, text="x0", showarrow=False, yshift=-16)
    fig.add_annotation(x=0.75, y=0, text="radius r", showarrow=False, yshift=12, font=dict(color=COLORS["radius"]))
    fig.add_annotation(x=xb[0], y=0, text="x_b", showarrow=False, xshift=18, yshift=-14)
    fig.update_layout(xaxis=dict(visible=False, range=[-2.0, 4.2], constrain="domain"),
                      yaxis=dict(visible=False, range=[-2.6, 2.6], scaleanchor="x"),
                      height=420, margin=dict(l=10, r=10, t=10, b=10),
                      legend=dict(orientation="h", x=0, y=-0.02, yanchor="top"))
    return fig


# ------------------------------------------------------------------------------------------------ training
def _epoch_x(e: Mapping[str, Any]) -> float:
    """Position of a training event in epochs: (epoch − 1) + epoch_step / steps_per_epoch, or the epoch."""
    if e.get("kind") == "step" and e.get("steps_per_epoch"):
        return e["epoch"] - 1 + e["epoch_step"] / e["steps_per_epoch"]
    return float(e.get("epoch", 0))


def training_curves(events: Sequence[Mapping[str, Any]], *, title: str = "Training curves",
                    no_curvature: str = "no curvature bound logged") -> go.Figure:
    """Live curves from :func:`crc_core.train.train` events: x axis in epochs (fractional between epochs).

    Panels: loss (total and cross-entropy, per logged step); curvature: the Theorem 4 bound K that the γ·K penalty
    uses (mean over each batch's (label, runner-up) pairs, per step) and the bound certificates use (mean K_ub over
    all pairs, per epoch: Theorem 3 for 2-layer nets, which is tighter than Theorem 4, so it can sit below the
    first line; both are upper bounds); accuracy (train batches per step; test, certified at ρ against the runner-up
    as in the paper, and certified against all classes, per epoch; the last two often coincide, so they are drawn
    with different markers and dashes; the empirical robust accuracy under PGD at ρ, an upper bound on the true
    robust accuracy, per epoch). Missing series (a ReLU net has no curvature bound, a deeper ReLU net no certified
    accuracy) are left out; an empty curvature panel says ``no_curvature`` instead.
    """
    steps = [e for e in events if e.get("kind") == "step"]
    epochs = [e for e in events if e.get("kind") == "epoch"]
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08,
                        subplot_titles=["Loss", "Curvature bounds (means)", "Accuracy"])

    def line(col: int, rows: Sequence[Mapping[str, Any]], key: str, name: str, color: str, *,
             markers: str | None = None, dash: str | None = None, size: int = 8, width: float = 2) -> list[float]:
        pts = [(_epoch_x(e), e[key]) for e in rows if e.get(key) is not None]
        if pts:
            xs, ys = zip(*pts)
            fig.add_trace(go.Scatter(x=xs, y=ys, name=name, mode="lines+markers" if markers else "lines",
                                     line=dict(color=color, dash=dash, width=width),
                                     marker=dict(size=size, symbol=markers or "circle")), row=1, col=col)
            return list(ys)
        return []

    line(1, steps, "loss", "total loss", "#1f77b4")
    line(1, steps, "ce", "cross-entropy", "#aec7e8", dash="dot")
    ks = line(2, steps, "mean_K", "K penalised in training (Theorem 4, batch pairs; steps)", COLORS["bound"])
    ks += line(2, epochs, "mean_K_ub", "K_ub used by certificates (Theorem 3 for 2 layers, all pairs; epochs)",
               "#8c564b", markers="diamond")
    line(3, steps, "accuracy", "train accuracy (batches)", "#c7c7c7")
    line(3, epochs, "test_accuracy", "test accuracy", "#1f77b4", markers="circle")
    line(3, epochs, "certified_accuracy", "certified at ρ (runner-up, paper)", COLORS["radius"],
         markers="circle-open", size=14, width=4)
    line(3, epochs, "certified_accuracy_all", "certified at ρ (all classes)", COLORS["rho"], markers="x",
         dash="dash", size=8)
    line(3, epochs, "pgd_robust_accuracy", "robust to PGD at ρ (empirical, an upper bound)",
         COLORS["boundary"],
         markers="square", dash="dot", size=7)
    if steps and not ks:
        lo, hi = fig.layout.xaxis2.domain  # the middle of the empty panel, in paper coordinates
        fig.add_annotation(text=no_curvature.replace(" (", "<br>("), showarrow=False, xref="paper", yref="paper",
                           x=(lo + hi) / 2, y=0.5)
        fig.update_xaxes(showticklabels=False, row=1, col=2)
        fig.update_yaxes(showticklabels=False, row=1, col=2)
    if spans_decades(ks, 1.0):
        ticks = log_ticks(ks)
        fig.update_yaxes(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks], row=1, col=2)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=3)
    fig.update_xaxes(title_text="epoch")
    if not steps:
        fig.add_annotation(text="the curves appear after the first steps", showarrow=False, xref="paper",
                           yref="paper", x=0.5, y=0.5)
    fig.update_layout(title=title, height=420, margin=dict(l=10, r=10, t=70, b=10),
                      legend=dict(orientation="h", y=-0.22))
    return fig


# ------------------------------------------------------------------------------------------------ images
def image_heatmaps(images: Sequence[Any], titles: Sequence[str], *, diverging: Sequence[bool] | None = None,
                   height: int = 300) -> go.Figure:
    """Images side by side as heatmaps: grey scale in [0, 1], or a red/blue diverging scale centred at 0."""
    n = len(images)
    diverging = list(diverging) if diverging is not None else [False] * n
    fig = make_subplots(rows=1, cols=n, subplot_titles=list(titles), horizontal_spacing=0.06)
    for i, (im, div) in enumerate(zip(images, diverging), start=1):
        z = _img(im)
        cbar_x = i / n - 0.02
        if div:
            amp = float(np.abs(z).max()) or 1.0
            tr = go.Heatmap(z=z, colorscale="RdBu_r", zmid=0, zmin=-amp, zmax=amp,
                            colorbar=dict(x=cbar_x, len=0.8, thickness=10),
                            hovertemplate="row %{y}, col %{x}<br>change %{z:.3f}<extra></extra>")
        else:
            tr = go.Heatmap(z=z, colorscale="gray", zmin=0, zmax=1, showscale=False,
                            hovertemplate="row %{y}, col %{x}<br>pixel %{z:.3f}<extra></extra>")
        fig.add_trace(tr, row=1, col=i)
    _square_images(fig, n)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=50, b=10))
    return fig


def boundary_triptych(x0: Any, xb: Any, *, x0_title: str = "x0 (input)", xb_title: str = "x_b (boundary point)",
                      distance: float | None = None) -> go.Figure:
    """x0, the boundary point x_b and the perturbation x_b − x0 side by side."""
    a, b = _img(x0), _img(xb)
    d = float(np.linalg.norm(b - a)) if distance is None else float(distance)
    return image_heatmaps([a, b, b - a], [x0_title, xb_title, f"x_b − x0 (ℓ2 norm {d:.3f})"],
                          diverging=[False, False, True])


def eigenvector_images(vectors: Sequence[Any], eigenvalues: Sequence[float], *, kinds: Sequence[str] | None = None,
                       cols: int = 3) -> go.Figure:
    """Eigenvectors (D,) of the margin Hessian shown as images, ``cols`` per row, on one shared diverging colour
    scale (red: brighten the pixel, blue: darken it) with its colour bar.

    A bright red/blue pattern is a direction in pixel space along which the margin curves most.
    """
    vals = as_numpy(eigenvalues)
    kinds = list(kinds) if kinds is not None else [""] * len(vectors)
    n = len(vectors)
    rows = max(1, math.ceil(n / cols))
    titles = [f"{k} λ = {v:.3g}".strip() for k, v in zip(kinds, vals)]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles + [""] * (rows * cols - n),
                        horizontal_spacing=0.04, vertical_spacing=0.12)
    imgs = [_img(v) for v in vectors]
    amp = max((float(np.abs(z).max()) for z in imgs), default=1.0) or 1.0
    for i, z in enumerate(imgs):
        fig.add_trace(go.Heatmap(z=z, colorscale="RdBu_r", zmid=0, zmin=-amp, zmax=amp, showscale=i == 0,
                                 colorbar=dict(title="pixel weight", thickness=12, len=0.9),
                                 hovertemplate="row %{y}, col %{x}<br>weight %{z:.3f}<extra></extra>"),
                      row=i // cols + 1, col=i % cols + 1)
    _square_images(fig, rows * cols)
    fig.update_annotations(font_size=12)
    fig.update_layout(height=230 * rows + 40, margin=dict(l=10, r=10, t=40, b=10))
    return fig


# ------------------------------------------------------------------------------------------------ certify
def radii_bar(radii: Any, class_names: Sequence[str], *, pred: int, runner_up: int | None = None,
              rho: float | None = None, exact: Any = None, correct: bool = True) -> go.Figure:
    """Certified radius against each target class t ≠ pred (bars); the smallest one is the certificate.

    ``radii`` (C,) with NaN at ``pred`` (or where not computed); ``exact`` (C,) bools mark targets whose
    boundary point was found exactly (the radius is then the true distance). ``correct`` False (a misclassified
    image): no bars, a sentence saying there is nothing to certify.
    """
    r = as_numpy(radii)
    C = r.shape[0]
    idx = [t for t in range(C) if t != pred and np.isfinite(r[t])]
    if not idx or not correct:
        fig = go.Figure()
        fig.add_annotation(text="no radius computed" if correct else
                           "The prediction is already wrong:<br>there is nothing to certify (every radius is 0).",
                           showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5, font=dict(size=14))
        fig.update_layout(title="Certified radius against each other class", height=360,
                          xaxis=dict(visible=False), yaxis=dict(visible=False), margin=dict(l=10, r=10, t=50, b=10))
        return fig
    tmin = min(idx, key=lambda t: r[t])
    colors = []
    for t in idx:
        if t == tmin:
            colors.append(COLORS["radius"])
        elif t == runner_up:
            colors.append(COLORS["runner_up"])
        else:
            colors.append("#b0b0b0")
    ex = as_numpy(exact).astype(bool) if exact is not None else None
    text = [f"{r[t]:.2f}" for t in idx]
    hover = [f"{r[t]:.4f}" + (" (exact: the true distance to this class)" if ex is not None and ex[t] else "")
             for t in idx]
    names = [class_names[t] if t < len(class_names) else str(t) for t in idx]
    fig = go.Figure(go.Bar(x=names, y=[r[t] for t in idx], marker_color=colors, text=text,
                           textposition="outside", cliponaxis=False, customdata=hover,
                           hovertemplate="target %{x}<br>radius %{customdata}<extra></extra>"))
    if rho is not None:  # labelled right of the plot area, clear of the bars' values
        hline(fig, rho, COLORS["rho"], f"ρ = {rho:.2f}", dash="dash", position="right")
    subtitle = f"smallest (the certificate): {names[idx.index(tmin)]}"
    if runner_up is not None and runner_up in idx and runner_up != tmin:
        subtitle += f"; runner-up (paper's choice): {names[idx.index(runner_up)]}"
    fig.update_layout(title=f"Certified radius against each other class<br><sup>{subtitle}</sup>",
                      xaxis_title="target class t", yaxis_title="certified ℓ2 radius", height=380,
                      margin=dict(l=10, r=70, t=80, b=10), showlegend=False)
    top = max(float(np.nanmax([r[t] for t in idx])), rho or 0.0)
    fig.update_yaxes(range=[0, 1.18 * top if top > 0 else 1], automargin=True)
    fig.update_xaxes(automargin=True, tickangle=-30)
    return fig


def margin_along_path(distances: Any, margin_target: Any, margin_any: Any | None = None, *,
                      radius: float | None = None, rho: float | None = None, boundary_distance: float | None = None,
                      target_name: str = "t") -> go.Figure:
    """The margin along the straight line from x0 through x_b and beyond, against the distance from x0.

    ``margin_target``: f(x) = z_y − z_t for the certified target; ``margin_any``: z_y − max_{t≠y} z_t (the
    prediction changes where it crosses 0). The certified radius, ρ and ‖x_b − x0‖ are marked.
    """
    s = as_numpy(distances)
    fig = go.Figure()
    if radius is not None and np.isfinite(radius) and radius > 0:
        fig.add_vrect(x0=0, x1=float(radius), fillcolor="rgba(44,160,44,0.12)", line_width=0,
                      annotation_text="certified: no class change possible", annotation_position="top left")
    fig.add_trace(go.Scatter(x=s, y=as_numpy(margin_target), mode="lines", name=f"f = z_y − z_{target_name}",
                             line=dict(color=COLORS["lower"], width=3)))
    if margin_any is not None:
        fig.add_trace(go.Scatter(x=s, y=as_numpy(margin_any), mode="lines", name="z_y − max other logit",
                                 line=dict(color=COLORS["neutral"], dash="dot")))
    fig.add_hline(y=0, line_color=COLORS["boundary"], line_width=1)
    vline(fig, radius, COLORS["radius"], "certified radius", position="bottom right")
    vline(fig, rho, COLORS["rho"], "ρ", dash="dash")
    vline(fig, boundary_distance, COLORS["boundary"], "x_b", dash="dot", position="top left")
    fig.update_layout(title="Margin along the line from x0 through x_b", xaxis_title="distance from x0 (ℓ2)",
                      yaxis_title="margin (logit difference)", height=360, margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def margins_bar(logits: Any, class_names: Sequence[str], *, pred: int, label: int | None = None) -> go.Figure:
    """Prediction at a glance: the margin z_pred − z_t to every other class t (all positive: pred wins)."""
    z = as_numpy(logits).ravel()
    idx = [t for t in range(z.size) if t != pred]
    idx.sort(key=lambda t: z[pred] - z[t])
    names = [class_names[t] for t in idx]
    vals = [z[pred] - z[t] for t in idx]
    colors = [COLORS["runner_up"] if k == 0 else "#b0b0b0" for k in range(len(idx))]
    if label is not None and label != pred and label in idx:
        colors[idx.index(label)] = COLORS["boundary"]
    fig = go.Figure(go.Bar(x=vals, y=names, orientation="h", marker_color=colors,
                           hovertemplate="z_pred − z_%{y} = %{x:.3f}<extra></extra>"))
    fig.update_layout(title=f"Predicted {class_names[pred]}: its lead over each other class",
                      xaxis_title="logit margin z_y − z_t", yaxis=dict(autorange="reversed", automargin=True),
                      height=380, margin=dict(l=10, r=10, t=80, b=10))
    return fig
