"""The Lesson: the paper's idea in seven projected steps, each with its own dataset, model, point and figure.

Every step's nets are :class:`app_lib.playground.ToyRun` s trained once per process by crc_core's loop
(:func:`app_lib.playground.train_toy`, cached), so a class that jumps to step 5 by a link waits only for that
step's nets. A step is one figure (two for the side-by-side step) and a few sentences; step N has the link
``?step=N`` (read once, when the page opens from a link).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import plotly.graph_objects as go

from . import playground as pg
from . import playground_figures as pf
from .navigation import PAGES

CERTIFY_PAGE = next(p for p in PAGES if p.label == "Certify")  # where the last step leads
FIG_HEIGHT = 470  # fits a 1280×720 projector with the step title above it
SMOOTH = pg.ToyRun(dataset="moons", size=300, noise=0.12, seed=1, widths=(32,), activation="tanh", epochs=40)
FLAT = SMOOTH.control("crt")
RELU = pg.ToyRun(dataset="moons", size=300, noise=0.12, seed=1, widths=(32,), activation="relu", epochs=40)


@dataclass(frozen=True)
class Step:
    """title; text (markdown, a few sentences); runs (the nets it needs); draw(toys) -> figures."""

    title: str
    text: str
    runs: tuple[pg.ToyRun, ...]
    draw: Callable[[list[pg.TrainedToy]], list[go.Figure]]


def _view(toy: pg.TrainedToy, point_of: pg.TrainedToy | None = None) -> pg.PointView:
    """The step's point view: at the teaching point of ``point_of`` (default: the toy's own), cached."""
    x = pg.default_point(point_of or toy)
    return pg.cached_point_view(toy.key, toy, (float(x[0]), float(x[1])))


def _plane(toy: pg.TrainedToy, title: str, *, point: bool = True, methods=(), truth: bool = True,
           margins: bool = False) -> go.Figure:
    view = _view(toy) if point else None
    fig = pf.regions_figure(pg.regions(toy.key, toy), toy.train.images, toy.train.labels, toy.train.class_names,
                            title=title, view=view, methods=list(methods), truth=truth, margins=margins)
    fig.update_layout(height=FIG_HEIGHT)
    return fig


def _split(toys: list[pg.TrainedToy]) -> list[go.Figure]:
    t = toys[0]
    return [_plane(t, f"A {t.run.label()} net splits the plane (test accuracy {t.test_accuracy:.0%})",
                   point=False, margins=True)]


def _nearest(toys: list[pg.TrainedToy]) -> list[go.Figure]:
    t = toys[0]
    v = _view(t)
    return [_plane(t, f"The nearest point of another class is {v.true_distance:.3f} away")]


def _disc(toys: list[pg.TrainedToy]) -> list[go.Figure]:
    t = toys[0]
    v = _view(t)
    return [_plane(t, f"CRC certifies a disc of radius {v.radii['crc']:.3f} (true distance {v.true_distance:.3f})",
                   methods=["crc"])]


def _curvature(toys: list[pg.TrainedToy]) -> list[go.Figure]:
    t = toys[0]
    v = _view(t)
    fig = pf.curvature_figure(pg.curvature_view(t.key, t, v.pred, pg.target_for(v)),
                              title="Measured curvature (K_lb: its largest value)")
    sweep = pf.bound_figure(pg.bound_sweep(t.key, t, (float(v.x0[0]), float(v.x0[1]))))
    for f in (fig, sweep):
        f.update_layout(height=FIG_HEIGHT)
    return [fig, sweep]


def _regularized(toys: list[pg.TrainedToy]) -> list[go.Figure]:
    out = []
    for t in toys:
        v = _view(t, toys[0])  # the same point on both nets
        fig = pf.regions_figure(pg.regions(t.key, t), t.train.images, t.train.labels, t.train.class_names,
                                title=f"{t.run.kind}: K_ub {v.K_ub:.3g}, CRC radius {v.radii['crc']:.3f}",
                                view=v, methods=["crc"], margins=False)
        fig.update_layout(height=FIG_HEIGHT, showlegend=False)
        out.append(fig)
    return out


def _others(toys: list[pg.TrainedToy]) -> list[go.Figure]:
    return [_plane(toys[0], "Every deterministic certificate on the same point, and the truth",
                   methods=["crc", "crown", "lipschitz"])]


def _relu(toys: list[pg.TrainedToy]) -> list[go.Figure]:
    t = toys[0]
    v = _view(t)
    fig = pf.pieces_figure(pg.regions(t.key, t), pg.pieces(t.key, t))
    pf.add_point(fig, v, methods=["relu-quadratic"])
    fig.update_layout(height=FIG_HEIGHT)
    return [fig]


STEPS: tuple[Step, ...] = (
    Step("A classifier splits the plane",
         "A small network (one hidden layer of 32 tanh units) was trained on two interleaved moons. Every point of "
         "the plane gets a class: the coloured regions. The black line is the **decision boundary**, where the two "
         "classes' scores are equal; the dotted lines are the margin's contours (score gap 1, 2, ...).",
         (SMOOTH,), _split),
    Step("An adversarial example is the nearest point of another class",
         "Take the yellow point. Moving it a little does not change its class; moving it far enough does. The "
         "**smallest move that changes the class** reaches the star: the closest point of another class, found "
         "here by brute force (every direction, 0.5° apart). In 784 dimensions nobody can search like this: "
         "attacks only find *some* close point, never provably the closest.",
         (SMOOTH,), _nearest),
    Step("A certificate is a disc with no other class inside",
         "A **certificate** proves a radius r: nothing closer than r changes the class. CRC finds it from a bound "
         "K on the curvature of the score gap: with K known, the closest boundary point solves a convex problem. "
         "When primal and dual meet, CRC even proves **which** point is closest (×); the violet path is the "
         "curvature attack reaching for it. The dashed circle is the truth: the disc never crosses it.",
         (SMOOTH,), _disc),
    Step("The smaller the curvature bound, the larger the disc",
         "CRC needs K_ub, a bound on the curvature that holds **everywhere**. Left: the curvature measured at "
         "each point of the plane (exact Hessian eigenvalues); its largest value is K_lb. Right: the radius CRC "
         "would give the same point with other bounds K. A loose bound makes the disc smaller; only K ≥ K_ub is "
         "proven, so only the solid part is a certificate. Here (one hidden layer, Theorem 3) K_ub is nearly K_lb "
         "and the disc already reaches the true distance.",
         (SMOOTH,), _curvature),
    Step("Curvature regularization and CRT flatten the boundary",
         "Left: the same net trained normally. Right: the same data, net and seed trained with **CRT** (a penalty "
         "γ·K on the curvature bound, plus training on curvature-attack points). Its boundary is straighter, K_ub "
         "is smaller, and the certified disc around the same point grows.",
         (SMOOTH, FLAT), _regularized),
    Step("Other certificates on the same point",
         "CROWN bounds the network with linear functions over the disc; the first-order bound uses only a "
         "Lipschitz constant (the steepest slope anywhere). All three are sound (none crosses the true-distance "
         "circle); on smooth nets CRC's second-order information usually gives the largest disc.",
         (SMOOTH,), _others),
    Step("ReLU: no curvature at all",
         "A ReLU net is affine on each coloured piece (Hessian 0) and bends only at the kinks, where its curvature "
         "is infinite: no curvature bound exists, and CRC refuses ReLU nets. For a 2-layer ReLU net the paper's "
         "App. G still certifies a disc (orange) from quadratic bounds on each unit. **Next:** the same ideas on "
         "real images, on the Certify page.",
         (RELU,), _relu),
)


def step_from_query(value: object) -> int:
    """The step (1..len(STEPS)) a link asks for (``?step=N``); 1 for anything else (absent, text, out of range)."""
    try:
        n = int(str(value))
    except (TypeError, ValueError):
        return 1
    return n if 1 <= n <= len(STEPS) else 1


def figures(n: int) -> list[go.Figure]:
    """Step ``n``'s figures (training its nets first if this process has not yet: a few seconds each)."""
    step = STEPS[n - 1]
    return step.draw([pg.train_toy(run) for run in step.runs])
