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
    "bounds_summary",
    "certificate_sketch",
    "eigenvector_images",
    "gallery_figure",
    "image_heatmaps",
    "layer_terms",
    "log_ticks",
    "margin_along_path",
    "margins_bar",
    "pair_heatmap",
    "radii_bar",
    "spans_decades",
    "spectrum_histogram",
    "spectrum_sorted",
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


def _vline(fig: go.Figure, x: float, color: str, text: str, dash: str = "solid", row=None, col=None,
           position: str = "top right") -> None:
    if x is None or not np.isfinite(x):
        return
    kw = {} if row is None else {"row": row, "col": col}
    lift = {"annotation_yshift": 18} if "bottom" in position else {}  # a bottom label clears the axis ticks
    fig.add_vline(x=float(x), line_color=color, line_dash=dash, line_width=2, annotation_text=text,
                  annotation_position=position, annotation_font_color=color, **lift, **kw)


def _hline(fig: go.Figure, y: float, color: str, text: str, dash: str = "solid",
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
    line(3, epochs, "empirical_robust_accuracy", "robust to PGD at ρ (empirical, an upper bound)",
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


def gallery_figure(images: Sequence[Any], captions: Sequence[str], *, cols: int = 8) -> go.Figure:
    """A grid of small images with captions (one figure; used for static overviews)."""
    n = len(images)
    rows = max(1, math.ceil(n / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(captions) + [""] * (rows * cols - n),
                        horizontal_spacing=0.01, vertical_spacing=0.08)
    for i, im in enumerate(images):
        fig.add_trace(go.Heatmap(z=_img(im), colorscale="gray", zmin=0, zmax=1, showscale=False,
                                 hoverinfo="skip"), row=i // cols + 1, col=i % cols + 1)
    _square_images(fig, rows * cols)
    fig.update_annotations(font_size=10)
    fig.update_layout(height=130 * rows + 30, margin=dict(l=5, r=5, t=30, b=5))
    return fig


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
        _hline(fig, rho, COLORS["rho"], f"ρ = {rho:.2f}", dash="dash", position="right")
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
    _vline(fig, radius, COLORS["radius"], "certified radius", position="bottom right")
    _vline(fig, rho, COLORS["rho"], "ρ", dash="dash")
    _vline(fig, boundary_distance, COLORS["boundary"], "x_b", dash="dot", position="top left")
    fig.update_layout(title="Margin along the line from x0 through x_b", xaxis_title="distance from x0 (ℓ2)",
                      yaxis_title="margin (logit difference)", height=360, margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", y=-0.25))
    return fig


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
    add = _vline if vertical else _hline
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
