"""Slice figures (app_lib.slice_figures): the certified circle has radius r, the traces a reader needs are there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("plotly.graph_objects")

from app_lib.slice_figures import CIRCLE_POINTS, SLICE_CAPTION, slice_figure, slice_pair_figure
from crc_core.slices import DecisionSlice

NAMES = [f"class {k}" for k in range(10)]
MODEL = Path(__file__).resolve().parents[1] / "assets" / "models" / "crt-2x256.pt"


def _toy_slice(radius: float = 0.8, rho: float | None = 0.5, grid: int = 31, xb_margin: float = 0.0
              ) -> DecisionSlice:
    """Class 3 left of the line a = 1, class 7 right of it; margin 1 − a."""
    ax = torch.linspace(-2.0, 2.0, grid, dtype=torch.float64)
    A = ax[None, :].expand(grid, grid)
    margin = 1.0 - A
    classes = torch.where(margin > 0, 3, 7).long()
    e = torch.eye(4, dtype=torch.float64)
    return DecisionSlice(ax, ax.clone(), classes, margin, (0.0, 0.0), (1.0, 0.0), xb_margin, 3, radius, rho, e[0],
                         e[1], "random")


def _named(fig, start: str) -> list:
    return [t for t in fig.data if (t.name or "").startswith(start)]


def _radius_of(trace) -> np.ndarray:
    return np.hypot(np.asarray(trace.x, dtype=float), np.asarray(trace.y, dtype=float))


def test_single_slice_figure_has_every_part():
    s = _toy_slice()
    fig = slice_figure(s, NAMES)
    types = [t.type for t in fig.data]
    assert types.count("heatmap") == 1 and types.count("contour") == 1
    (ball,) = _named(fig, "certified ball")
    assert len(ball.x) == CIRCLE_POINTS and ball.fill == "toself"
    np.testing.assert_allclose(_radius_of(ball), s.radius, rtol=1e-12)
    assert ball.meta["radius"] == s.radius and "0.800" in ball.name
    (rho,) = _named(fig, "attack budget")
    np.testing.assert_allclose(_radius_of(rho), 0.5, rtol=1e-12)
    (x0,) = _named(fig, "the image x0")
    assert (x0.x[0], x0.y[0]) == (0.0, 0.0) and "class 3" in x0.name
    (xb,) = _named(fig, "closest boundary point")
    assert (xb.x[0], xb.y[0]) == s.xb_ab
    (cont,) = _named(fig, "decision boundary")
    assert cont.contours.start == 0 == cont.contours.end and cont.contours.coloring == "none"
    heat = fig.data[0]
    assert heat.text[0][0] == "class 3" and heat.text[0][-1] == "class 7"
    assert "%{text}" in heat.hovertemplate and "margin" in heat.hovertemplate
    np.testing.assert_allclose(np.asarray(heat.customdata, dtype=float), s.margin.numpy(), rtol=1e-6)
    assert fig.layout.yaxis.scaleanchor == "x"  # equal scales: the circles are drawn round
    assert list(fig.layout.coloraxis.colorbar.ticktext) == NAMES


def test_x_b_off_the_boundary_is_labelled_so():
    """Issue 24 Major 2: a point off the boundary is never called x_b nor a boundary point; the caller's words
    say what it is."""
    fig = slice_figure(_toy_slice(xb_margin=0.7), NAMES)
    assert _named(fig, "the first axis's point (not a boundary point)")
    assert not _named(fig, "closest boundary point") and not _named(fig, "x_b")
    fig = slice_figure(_toy_slice(xb_margin=0.0), NAMES, point="the certifier's best point against Coat")
    assert _named(fig, "the certifier's best point against Coat") and not _named(fig, "x_b")
    assert "x_b" not in fig.layout.xaxis.title.text


def test_no_rho_circle_without_rho():
    fig = slice_figure(_toy_slice(rho=None), NAMES)
    assert not _named(fig, "attack budget")


def test_pair_figure_has_both_circles_on_one_scale():
    small, big = _toy_slice(radius=0.3), _toy_slice(radius=0.9, grid=41)
    fig = slice_pair_figure(small, big, NAMES, titles=("standard", "CRT"))
    balls = _named(fig, "certified ball")
    assert len(balls) == 2
    np.testing.assert_allclose(_radius_of(balls[0]), 0.3, rtol=1e-12)
    np.testing.assert_allclose(_radius_of(balls[1]), 0.9, rtol=1e-12)
    assert [t.type for t in fig.data].count("heatmap") == 2
    shown = [t.name for t in fig.data if t.showlegend]  # each legend entry once, without one panel's numbers
    assert len(shown) == len(set(shown)) == 5 and "certified ball (radius r)" in shown
    assert fig.layout.xaxis.range == fig.layout.xaxis2.range
    assert fig.layout.yaxis2.scaleanchor == "x2"
    assert [a.text for a in fig.layout.annotations] == ["standard: r = 0.300", "CRT: r = 0.900"]


def test_bad_input():
    with pytest.raises(ValueError, match="class names"):
        slice_figure(_toy_slice(), NAMES[:5])
    with pytest.raises(ValueError, match="titles"):
        slice_pair_figure(_toy_slice(), _toy_slice(), NAMES, titles=("one",))


def test_circle_radius_equals_the_certificate():
    """End to end on a shipped model: the drawn certified circle is the certificate's radius."""
    from crc_core.certify import certify
    from crc_core.checkpoints import load_checkpoint
    from crc_core.data import load_dataset
    from crc_core.slices import slice_from_certificate

    model, _ = load_checkpoint(MODEL)
    ds = load_dataset("embedded", "test", limit=2)
    cert = certify(model, ds.images)
    s = slice_from_certificate(model, ds.images[0], cert, index=0, second="random", rho=0.5, grid=51)
    fig = slice_figure(s, ds.class_names)
    (ball,) = _named(fig, "certified ball")
    np.testing.assert_allclose(_radius_of(ball), float(cert.radius[0]), rtol=1e-12)
    assert "784" in SLICE_CAPTION and "two" in SLICE_CAPTION


def test_module_does_not_import_streamlit():
    code = "import sys, app_lib.slice_figures; assert 'streamlit' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_the_disc_is_hatched_and_the_title_clears_the_toolbar():
    """Issue 24: a flat green tint over a class colour read as another class's colour; a long title ran under the
    chart's toolbar."""
    fig = slice_figure(_toy_slice(), NAMES, title="Class regions around x0 in the plane of x_b and a long direction")
    (disc,) = _named(fig, "certified ball")
    assert disc.fillpattern.shape == "/" and disc.fillcolor is None
    assert "<br>" in fig.layout.title.text and fig.layout.title.x == 0


def test_a_long_direction_name_stays_off_the_axis():
    s = _toy_slice()
    s.second = "the top Hessian eigenvector of z_Coat − z_Shirt"
    fig = slice_figure(s, NAMES, title=f"Class regions around x0 in the plane of x_b and {s.second}")
    assert len(fig.layout.yaxis.title.text) <= 60 and "z_Coat" in fig.layout.title.text
