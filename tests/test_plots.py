"""app_lib.plots and app_lib.curvature_figures: pure figure builders (numbers in, go.Figure out, no Streamlit);
crc_core stays free of plotly."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

go = pytest.importorskip("plotly.graph_objects")

from app_lib import curvature_figures as cfig  # noqa: E402
from app_lib import plots  # noqa: E402

NAMES = [f"c{i}" for i in range(10)]


def _types(fig) -> list[str]:
    return [t.type for t in fig.data]


def test_plots_does_not_import_streamlit():
    code = "import sys, app_lib.plots; assert 'streamlit' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_crc_core_imports_neither_plotly_nor_streamlit():
    """Every crc_core module imports without plotly or streamlit (the library is maths and I/O only)."""
    code = ("import importlib, pkgutil, sys, crc_core\n"
            "for m in pkgutil.walk_packages(crc_core.__path__, 'crc_core.'):\n"
            "    if not m.name.endswith('__main__'):\n"
            "        importlib.import_module(m.name)\n"
            "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('plotly', 'streamlit'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_as_numpy_and_spans_decades():
    t = torch.tensor([1.0, 2.0], requires_grad=True)
    assert plots.as_numpy(t).dtype == np.float64
    assert plots.spans_decades([1e-3, 1.0, 10.0])
    assert not plots.spans_decades([1.0, 50.0])
    assert not plots.spans_decades([np.nan, 0.0, -1.0, 5.0])  # one positive finite value: no span


def test_certificate_sketch_has_boundary_ball_and_points():
    fig = plots.certificate_sketch()
    names = " ".join(t.name or "" for t in fig.data)
    assert "decision boundary" in names and "certified ball" in names and "x_b" in names


def test_training_curves_from_train_events():
    events = [
        {"kind": "step", "step": 10, "epoch": 1, "epoch_step": 10, "steps_per_epoch": 20, "loss": 2.0, "ce": 1.9,
         "mean_K": 100.0, "accuracy": 0.3},
        {"kind": "step", "step": 20, "epoch": 1, "epoch_step": 20, "steps_per_epoch": 20, "loss": 1.0, "ce": 0.9,
         "mean_K": 0.5, "accuracy": 0.6},
        {"kind": "epoch", "epoch": 1, "test_accuracy": 0.7, "certified_accuracy": 0.4,
         "certified_accuracy_all": 0.35, "mean_K_ub": 0.8},
        {"kind": "done"},
    ]
    fig = plots.training_curves(events)
    names = [t.name for t in fig.data]
    assert {"total loss", "cross-entropy", "test accuracy", "certified at ρ (all classes)"} <= set(names)
    loss = next(t for t in fig.data if t.name == "total loss")
    assert list(loss.x) == [0.5, 1.0]  # fractional epochs
    assert fig.layout.yaxis2.type == "log"  # K spans more than a decade
    assert plots.training_curves([]).layout.annotations  # an empty run says what will appear


def test_image_heatmaps_and_triptych():
    x0 = torch.rand(784)
    xb = x0 + 0.1
    fig = plots.boundary_triptych(x0, xb)
    assert _types(fig) == ["heatmap"] * 3
    z = np.asarray(fig.data[2].z)
    assert z.shape == (28, 28) and np.allclose(z, 0.1, atol=1e-6)
    assert fig.data[2].zmid == 0  # the perturbation is diverging around 0
    assert "ℓ2 norm 2.800" in fig.layout.annotations[2].text  # ‖0.1·1‖ over 784 pixels
    with pytest.raises(ValueError, match="square"):
        plots.image_heatmaps([np.zeros(10)], ["bad"])


def test_radii_bar_marks_minimum_runner_up_and_rho():
    r = np.array([np.nan, 0.9, 0.3, 1.2] + [2.0] * 6)
    fig = plots.radii_bar(r, NAMES, pred=0, runner_up=3, rho=0.5, exact=[False, True] + [False] * 8)
    bar = fig.data[0]
    assert list(bar.x) == NAMES[1:]  # the predicted class has no bar
    colors = list(bar.marker.color)
    assert colors[1] == plots.COLORS["radius"]  # c2 has the smallest radius: the certificate
    assert colors[2] == plots.COLORS["runner_up"]
    assert "exact" in bar.customdata[0]
    assert any(s.y0 == 0.5 for s in fig.layout.shapes)  # the ρ line
    assert plots.radii_bar(np.full(10, np.nan), NAMES, pred=0).layout.annotations  # nothing computed


def test_margin_along_path_marks_radius_rho_and_boundary():
    s = np.linspace(0, 2, 21)
    fig = plots.margin_along_path(s, 1 - s, 1 - 0.8 * s, radius=0.8, rho=0.5, boundary_distance=1.0,
                                  target_name="c3")
    assert len(fig.data) == 2
    xs = sorted(float(sh.x0) for sh in fig.layout.shapes if sh.type == "line" and sh.x0 == sh.x1)
    assert xs == [0.5, 0.8, 1.0]
    assert any(sh.type == "rect" for sh in fig.layout.shapes)  # the certified band


def test_pair_heatmap_log_scale_when_spanning_decades():
    v = np.full((10, 10), np.nan)
    v[0, 1], v[1, 0], v[2, 3] = 0.01, 1.0, 100.0
    fig = cfig.pair_heatmap(v, NAMES, title="K")
    z = np.asarray(fig.data[0].z, dtype=float)
    assert np.isclose(z[2, 3], 2.0) and np.isnan(z[0, 0])
    assert fig.data[0].text[2][3] == "100"  # the text shows the value, not its log
    lin = cfig.pair_heatmap(np.where(np.isnan(v), np.nan, 1.0), NAMES, title="K")
    assert "log" not in (lin.data[0].colorbar.title.text or "")


def test_bounds_summary_bars_and_gamma_lines():
    rows = [{"model": "std", "K_lb": 1.0, "K_ub_thm4": 1000.0, "K_ub_refined": 200.0},
            {"model": "crt", "K_lb": 0.5, "K_ub_thm4": 0.9, "K_ub_refined": 0.7}]
    fig = cfig.bounds_summary(rows)
    assert _types(fig) == ["bar"] * 3 and fig.layout.yaxis.type == "log"
    lines = cfig.bounds_summary([{"γ": 0.0, "K_lb": 1, "K_ub_thm4": 5}, {"γ": 0.01, "K_lb": 1, "K_ub_thm4": 2}],
                                 x_key="γ")
    assert _types(lines) == ["scatter"] * 2


def test_spectrum_figures_draw_the_bounds():
    ev = np.r_[np.zeros(700), np.linspace(-0.5, 0.8, 84)]
    hist = cfig.spectrum_histogram(ev, m=-1.0, M=1.2, K=3.0)
    assert len(hist.data[0].x) == 84  # the 700 zeros are left out
    assert "≈ 0 not shown" in hist.layout.title.text
    xs = sorted(float(sh.x0) for sh in hist.layout.shapes)
    assert xs == [-3.0, -1.0, 1.2, 3.0]
    far = cfig.spectrum_histogram(ev, m=-1.0, M=1.2, K=50.0)  # a loose K would squash the histogram
    assert sorted(float(sh.x0) for sh in far.layout.shapes) == [-1.0, 1.2]
    assert "±K = ±50 is off the chart" in far.layout.title.text
    srt = cfig.spectrum_sorted(ev, m=-1.0, M=1.2)
    assert np.all(np.diff(np.asarray(srt.data[0].y)) >= 0)
    assert sorted(float(sh.y0) for sh in srt.layout.shapes) == [-1.0, 1.2]


def test_eigenvector_images_and_layer_terms():
    vecs = [np.random.default_rng(i).standard_normal(784) for i in range(4)]
    fig = plots.eigenvector_images(vecs, [2.0, 1.0, -1.0, -2.0], kinds=["top 1:", "top 2:", "bottom 1:", "bottom 2:"])
    assert len(fig.data) == 4 and "top 1: λ = 2" in fig.layout.annotations[0].text
    lt = cfig.layer_terms([-0.1, -2.0], [0.3, 1.0], bound_per_layer=[1.0, 5.0])
    assert len(lt.data) == 4


def test_margins_bar_sorted_and_label_marked():
    z = np.arange(10.0)[::-1]  # class 0 has the largest logit
    fig = plots.margins_bar(z, NAMES, pred=0, label=5)
    bar = fig.data[0]
    assert bar.y[0] == "c1" and np.all(np.diff(bar.x) >= 0)
    assert bar.marker.color[list(bar.y).index("c5")] == plots.COLORS["boundary"]


# ------------------------------------------------------------------------------------------------ walkthrough
def test_radii_bar_of_a_misclassified_image_names_no_certificate():
    """Finding 3: a misclassified image has nothing to certify: no "smallest (the certificate)" over zero bars."""
    fig = plots.radii_bar(np.r_[np.nan, np.zeros(9)], NAMES, pred=0, runner_up=1, rho=0.5, correct=False)
    assert not fig.data and "smallest" not in (fig.layout.title.text or "")
    assert "nothing to certify" in fig.layout.annotations[0].text


def test_labels_do_not_collide_or_clip():
    """Finding 4: ρ's label sits right of the plot (not over a bar's value); class names get room (automargin);
    m/M labels at the top and ±K labels at the bottom; eigenvectors share one colour scale with a colour bar."""
    fig = plots.radii_bar(np.array([np.nan, 0.49, 0.5, 1.2] + [2.0] * 6), NAMES, pred=0, rho=0.5)
    rho_label = next(a for a in fig.layout.annotations if a.text.startswith("ρ"))
    assert rho_label.x >= 1 and rho_label.xanchor == "left"
    assert fig.layout.xaxis.automargin and fig.layout.yaxis.automargin
    assert plots.margins_bar(np.arange(10.0), ["Ankle boot"] * 10, pred=9).layout.yaxis.automargin
    ev = np.linspace(-1, 1, 50)
    for fig in (cfig.spectrum_histogram(ev, m=-1.0, M=1.0, K=1.05), cfig.spectrum_sorted(ev, m=-1.0, M=1.0, K=1.05)):
        pos = {a.text: (a.yanchor, a.y) for a in fig.layout.annotations if a.text in ("M (bound)", "+K")}
        assert pos["M (bound)"] != pos["+K"]
    vecs = [np.random.default_rng(i).standard_normal(784) for i in range(6)]
    eig = plots.eigenvector_images(vecs, [3, 2, 1, -1, -2, -3], kinds=["top 1:", "top 2:", "top 3:", "bottom 1:",
                                                                        "bottom 2:", "bottom 3:"])
    assert [bool(t.showscale) for t in eig.data] == [True] + [False] * 5
    assert len({(t.zmin, t.zmax) for t in eig.data}) == 1  # one shared scale
    assert eig.layout.xaxis.ticks == "" and eig.layout.yaxis4.showticklabels is False
    long = cfig.bounds_summary([{"model": "20261130-085243-2x-256-softplus-CRT", "K_lb": 1, "K_ub_thm4": 2},
                                 {"model": "standard-2x256", "K_lb": 1, "K_ub_thm4": 9}])
    assert "<br>" in long.data[0].x[0] and long.layout.legend.y > 1  # wrapped names; the legend above the plot


def test_training_curves_tell_the_two_k_lines_and_the_two_certified_lines_apart():
    """Finding 5: the log K axis is left to Plotly's tick choice (several labels), the two K lines say which
    theorem each is, and the runner-up and all-class certified lines look different even when they coincide."""
    events = [{"kind": "step", "epoch": 1, "epoch_step": 5, "steps_per_epoch": 10, "loss": 1.0, "mean_K": 0.9},
              {"kind": "step", "epoch": 1, "epoch_step": 10, "steps_per_epoch": 10, "loss": 0.8, "mean_K": 0.05},
              {"kind": "epoch", "epoch": 1, "mean_K_ub": 0.12, "test_accuracy": 0.7, "certified_accuracy": 0.4,
               "certified_accuracy_all": 0.4}]
    fig = plots.training_curves(events)
    assert fig.layout.yaxis2.type == "log"
    ticks = list(fig.layout.yaxis2.tickvals)
    assert len(ticks) >= 3 and list(fig.layout.yaxis2.ticktext) == [f"{t:g}" for t in ticks]  # full values
    assert ticks[0] <= 0.05 * 1.25 and ticks[-1] >= 0.9 / 1.25
    names = [t.name for t in fig.data]
    assert any("Theorem 4" in n for n in names) and any("Theorem 3" in n for n in names)
    ru = next(t for t in fig.data if t.name.startswith("certified at ρ (runner-up"))
    al = next(t for t in fig.data if t.name.startswith("certified at ρ (all"))
    assert (ru.marker.symbol, ru.line.dash) != (al.marker.symbol, al.line.dash)
