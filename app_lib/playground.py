"""The Playground's and Lesson's view models: toy nets trained by crc_core's loop, and everything drawn for a point.

A :class:`ToySpec` names a 2-D dataset and a small net; :func:`train_toy` trains it with
:func:`crc_core.train.train` (same loop and kinds as the image models) and caches the result per spec for the
process (``st.cache_resource``: the same spec is trained once, which is what makes the Lesson's steps instant).
:func:`point_view` gathers, for one point, every deterministic certificate (CRC or App. G, CROWN, first-order)
beside the exact truth of the plane (:func:`crc_core.plane.true_distance`). Nothing here draws: figures are
:mod:`app_lib.playground_figures`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import streamlit as st
import torch

from crc_core.baselines.relu_quadratic import RHO_HIGH as RELU_RHO_HIGH
from crc_core.bounds import curvature_bounds
from crc_core.certify import certify
from crc_core.compare import RELU_METHOD, compare_certificates
from crc_core.data import TOY_NAMES, Dataset, load_dataset
from crc_core.errors import CRCError
from crc_core.models import MLP
from crc_core.plane import (
    PlaneGrid,
    TrueDistance,
    attack_path,
    curvature_grid,
    linear_pieces,
    plane_grid,
    true_distance,
)
from crc_core.train import TrainConfig, train

ACTIVATIONS = ("tanh", "softplus", "sigmoid", "relu")
ARCHITECTURES: dict[str, tuple[int, ...]] = {"2×[16]": (16,), "2×[32]": (32,), "2×[64]": (64,),
                                             "3×[16,16]": (16, 16), "3×[32,32]": (32, 32), "3×[64,64]": (64, 64)}
KINDS = ("standard", "gamma", "crt")
KIND_LABELS = {"standard": "standard (no regularizer)", "gamma": "γ: curvature-regularized", "crt": "CRT"}
REGION_GRID = 161  # regions drawn on a 161×161 grid
CURVATURE_GRID = 61  # measured curvature on a 61×61 grid (exact 2×2 Hessian eigenvalues at each point)
PAD = 0.35  # the plotted square reaches this far beyond the data (plane units)
TRUTH_ANGLES, TRUTH_RADII = 720, 50  # the true distance's search: rays 0.5° apart, 50 samples per ray
PATH_POINTS = 8  # Algorithm 2 at 8 growing ρ: the drawn attack path
CROWN_BISECT = 14  # CROWN's bisection on ρ for the drawn disc: the last proven ρ (sound), to 2^-14 of its bracket


@dataclass(frozen=True)
class ToyRun:
    """A toy dataset and a net to train on it (hashable: the cache key). ``kind`` is a crc_core training kind."""

    dataset: str = "moons"
    size: int = 300
    noise: float = 0.1
    seed: int = 0
    classes: int = 2
    widths: tuple[int, ...] = (32,)
    activation: str = "tanh"
    kind: str = "standard"
    gamma: float = 0.02
    eps: float = 0.3
    epochs: int = 40

    def config(self) -> TrainConfig:
        """The TrainConfig of this run (Adam lr 0.01, batches of 100, no per-epoch certification: fast)."""
        return TrainConfig(dataset=self.dataset, widths=self.widths, activation=self.activation, kind=self.kind,
                           gamma=self.gamma, crt_eps=self.eps, adv_eps=self.eps, epochs=self.epochs, lr=0.01,
                           batch_size=100, seed=self.seed, device="cpu", eval_samples=0, log_every=2,
                           attack_outer=6, attack_inner=4)

    def data(self) -> tuple[Dataset, Dataset]:
        """(train, test) points; one clear CRCError (DataError) for impossible options."""
        classes = self.classes if self.dataset in ("blobs", "spirals") else None
        opts = {"size": self.size, "noise": self.noise, "seed": self.seed, "classes": classes}
        return load_dataset(self.dataset, "train", **opts), load_dataset(self.dataset, "test", **opts)

    def control(self, kind: str) -> ToyRun:
        """The same data, net and seed with another kind (the side-by-side comparison)."""
        return ToyRun(**{**asdict(self), "kind": kind})

    def label(self) -> str:
        extra = {"gamma": f" γ={self.gamma:g}", "crt": f" γ={self.gamma:g} ε={self.eps:g}"}.get(self.kind, "")
        depth = len(self.widths) + 1
        return f"{depth}×{list(self.widths)} {self.activation}, {self.kind}{extra}"


@dataclass
class TrainedToy:
    """A trained toy net: model, its run, train/test points, events of the loop, seconds, the plotted square."""

    run: ToyRun
    model: MLP
    train: Dataset
    test: Dataset
    events: list[dict[str, Any]]
    seconds: float
    lo: tuple[float, float]
    hi: tuple[float, float]
    key: str = field(default="")

    @property
    def test_accuracy(self) -> float:
        with torch.no_grad():
            return float((self.model(self.test.images).argmax(1) == self.test.labels).float().mean())


def square(points: torch.Tensor) -> tuple[tuple[float, float], tuple[float, float]]:
    """The plotted square around points (N, 2): equal sides (so discs look round), PAD beyond the data."""
    lo, hi = points.min(0).values.double(), points.max(0).values.double()
    c, half = (lo + hi) / 2, float((hi - lo).max()) / 2 + PAD
    return (float(c[0]) - half, float(c[1]) - half), (float(c[0]) + half, float(c[1]) + half)


def train_toy_now(run: ToyRun, callback: Callable[[dict[str, Any]], None] | None = None) -> TrainedToy:
    """Train ``run`` with crc_core's loop (no cache); ``callback`` gets every training event (live curves)."""
    if run.activation == "relu" and run.kind != "standard":
        raise CRCError("γ and CRT penalize curvature, and a ReLU net has none (its Hessian is 0 between kinks): "
                       "train ReLU with the standard kind.")
    train_ds, test_ds = run.data()
    t0 = time.perf_counter()
    result = train(run.config(), callback=callback, data=(train_ds, test_ds))
    lo, hi = square(torch.cat([train_ds.images, test_ds.images]))
    return TrainedToy(run, result.model, train_ds, test_ds, list(result.history), time.perf_counter() - t0, lo, hi,
                      key=repr(run))


@st.cache_resource(show_spinner=False, max_entries=32)
def train_toy(run: ToyRun, _callback: Callable[[dict[str, Any]], None] | None = None) -> TrainedToy:
    """:func:`train_toy_now`, once per run for the whole process (a second call with the same run is instant)."""
    return train_toy_now(run, _callback)


@st.cache_resource(show_spinner=False, max_entries=64)
def regions(key: str, _toy: TrainedToy) -> PlaneGrid:
    """Classes and margins over the toy's plotted square (REGION_GRID² points), cached per trained net."""
    return plane_grid(_toy.model, _toy.lo, _toy.hi, REGION_GRID)


@st.cache_resource(show_spinner=False, max_entries=64)
def pieces(key: str, _toy: TrainedToy) -> torch.Tensor:
    """The ReLU net's linear pieces over the regions' grid (ids, (G, G))."""
    return linear_pieces(_toy.model, regions(key, _toy))


def check_point(toy: TrainedToy, x: float, y: float) -> torch.Tensor:
    """The point (2,) float32, or one clear CRCError when it is not a finite point of the plotted square."""
    if not (math.isfinite(x) and math.isfinite(y)):
        raise CRCError(f"The point ({x}, {y}) is not a pair of finite numbers.")
    (x0, y0), (x1, y1) = toy.lo, toy.hi
    if not (x0 <= x <= x1 and y0 <= y <= y1):
        raise CRCError(f"The point ({x:g}, {y:g}) lies outside the plotted square [{x0:.2f}, {x1:.2f}] × "
                       f"[{y0:.2f}, {y1:.2f}]: pick one inside it.")
    return torch.tensor([x, y], dtype=torch.float32)


@dataclass
class PointView:
    """Everything drawn for one point x0 (2,): pred (class), target (the class CRC's radius is against, -1 if
    none), radii {method: radius} of the deterministic certificates (CRC or App. G "relu-quadratic", "crown",
    "lipschitz"), refused {method: why not}, crc_boundary (2,) the closest boundary point CRC proves (None when
    not proven exact), truth (the dense search: true distance and the other class's point), path (R, 2)
    Algorithm 2's points for growing ρ (None for ReLU), K_ub of the pair (None for ReLU), seconds."""

    x0: torch.Tensor
    pred: int
    target: int
    radii: dict[str, float]
    refused: dict[str, str]
    crc_boundary: torch.Tensor | None
    truth: TrueDistance
    path: torch.Tensor | None
    K_ub: float | None
    seconds: float

    @property
    def true_distance(self) -> float:
        return float(self.truth.distance[0])


def _methods(model: MLP) -> list[str]:
    if model.activation_name != "relu":
        return ["crc", "crown", "lipschitz"]
    return [RELU_METHOD, "crown", "lipschitz"] if model.depth == 2 else ["crown", "lipschitz"]


def point_view(toy: TrainedToy, x0: torch.Tensor) -> PointView:
    """Certificates and truth at x0 (2,) (checked with :func:`check_point`): CRC (all classes, closest boundary
    point), CROWN, first-order, App. G on 2-layer ReLU; the true distance; Algorithm 2's path toward the boundary."""
    t0 = time.perf_counter()
    model, x = toy.model, x0.reshape(1, 2)
    r_max = 2.0 * max(toy.hi[0] - toy.lo[0], toy.hi[1] - toy.lo[1])
    truth = true_distance(model, x, r_max=r_max, n_angles=TRUTH_ANGLES, n_radii=TRUTH_RADII)
    radii: dict[str, float] = {}
    refused: dict[str, str] = {}
    boundary, path, K_ub, target = None, None, None, -1
    with torch.no_grad():
        pred = int(model(x).argmax(1))
    if model.activation_name != "relu":
        cert = certify(model, x, refine="minimum")
        radii["crc"] = float(cert.radius[0])
        target = int(cert.target[0])
        boundary = cert.x_boundary[0].detach().double() if bool(cert.exact[0]) else None
        K_ub = float(curvature_bounds(model, torch.tensor([pred]), torch.tensor([target])).K[0])
        far = min(1.3 * truth.distance[0].item(), r_max) if math.isfinite(truth.distance[0].item()) else r_max
        path = attack_path(model, x, pred, target, torch.linspace(far / PATH_POINTS, far, PATH_POINTS))
    else:
        refused["crc"] = ("a ReLU net has no curvature bound: its Hessian is 0 on every linear piece and undefined "
                          "on the kinks between them")
        if model.depth != 2:
            refused[RELU_METHOD] = "the App. G certificate is for 2-layer ReLU nets only"
    start = max(radii.get("crc", 0.0), 0.05)
    d = float(truth.distance[0])  # no certificate can exceed it: App. G's bisection need not look beyond
    relu = {"rho_high": d * (1 + 1e-6) + 1e-9} if math.isfinite(d) and d < RELU_RHO_HIGH else {}
    cmp = compare_certificates(model, x, methods=[m for m in _methods(model) if m != "crc"], attack=False,
                               crown_options={"rho_start": start, "bisect_steps": CROWN_BISECT}, relu_options=relu)
    radii.update({name: float(res.radius[0]) for name, res in cmp.methods.items()})
    return PointView(x0.double(), pred, target, radii, refused, boundary, truth, path, K_ub,
                     time.perf_counter() - t0)


@st.cache_resource(show_spinner=False, max_entries=64)
def cached_point_view(key: str, _toy: TrainedToy, x0: tuple[float, float]) -> PointView:
    """:func:`point_view` at x0 = (x, y), cached per trained net (``key``) and point (the Lesson's fixed points)."""
    return point_view(_toy, torch.tensor(x0, dtype=torch.float32))


@dataclass
class CurvatureView:
    """Measured curvature |λ|max of ∇²(z_y − z_t) over the plotted square (G, G) beside the pair's K_ub."""

    grid: PlaneGrid
    measured: torch.Tensor
    K_ub: float
    pair: tuple[int, int]


@st.cache_resource(show_spinner=False, max_entries=32)
def curvature_view(key: str, _toy: TrainedToy, y: int, t: int) -> CurvatureView:
    """The measured curvature over the plane (CURVATURE_GRID²) for the pair (y, t) and its certified K_ub."""
    model = _toy.model
    if model.activation_name == "relu":
        raise CRCError("A ReLU net has no curvature to measure: its Hessian is 0 on every linear piece.")
    grid = plane_grid(model, _toy.lo, _toy.hi, CURVATURE_GRID)
    K = float(curvature_bounds(model, torch.tensor([y]), torch.tensor([t])).K[0])
    return CurvatureView(grid, curvature_grid(model, grid, y, t), K, (y, t))


def default_point(toy: TrainedToy) -> torch.Tensor:
    """A teaching point (2,): among the correctly classified class-0 test points whose top-two margin lies between
    the 20% and 50% quantiles (near the boundary, not on it), the one closest to the data's centre.
    Deterministic for a trained net."""
    with torch.no_grad():
        z = toy.model(toy.test.images)
    top2 = z.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    ok = (z.argmax(1) == toy.test.labels) & (toy.test.labels == 0)
    idx = ok.nonzero()[:, 0] if ok.any() else torch.arange(len(toy.test))
    lo, hi = torch.quantile(margin[idx], torch.tensor([0.2, 0.5]))
    band = idx[(margin[idx] >= lo) & (margin[idx] <= hi)]
    band = band if band.numel() else idx
    centre = toy.test.images.mean(0)
    return toy.test.images[band[(toy.test.images[band] - centre).norm(dim=1).argmin()]].clone()


TOYS: tuple[str, ...] = TOY_NAMES  # the datasets the Playground offers


def train_live(run: ToyRun, status: Any, chart: Any, *, every: float = 0.4) -> TrainedToy:
    """Train ``run`` now, drawing its training curves into the placeholder ``chart`` and the progress into
    ``status`` (a st.progress) at most every ``every`` seconds; the result is also the cache's for ``run``."""
    from . import plots  # the shared training-curves figure

    events: list[dict[str, Any]] = []
    last = [0.0]

    def on_event(e: dict[str, Any]) -> None:
        events.append(e)
        now = time.perf_counter()
        if e.get("kind") == "step" and now - last[0] >= every:
            last[0] = now
            status.progress(min(1.0, e["step"] / max(1, e["total_steps"])),
                            text=f"training {run.label()}: step {e['step']} of {e['total_steps']}")
            chart.plotly_chart(plots.training_curves(events, title=f"Training {run.label()}"), width="stretch",
                               key=f"pg_live_{run.kind}_{len(events)}")

    toy = train_toy_now(run, on_event)
    status.progress(1.0, text=f"trained {run.label()} in {toy.seconds:.1f} s, test accuracy {toy.test_accuracy:.0%}")
    return toy


def gap_rows(view: PointView) -> list[dict[str, Any]]:
    """The table beside the plane: one row per certificate (radius, gap to the true distance, sound?), then the
    truth itself."""
    names = {"crc": "CRC (curvature, this paper)", RELU_METHOD: "App. G (2-layer ReLU)", "crown": "CROWN",
             "lipschitz": "first-order (Lipschitz)"}
    d = view.true_distance
    rows = [{"certificate": names[m], "radius": r, "gap to truth": d - r if math.isfinite(d) else None,
             "sound here": bool(r <= d * (1 + 1e-9))} for m, r in view.radii.items()]
    rows += [{"certificate": f"{names.get(m, m)}: refused", "radius": None, "gap to truth": None,
              "sound here": None, "why": why} for m, why in view.refused.items()]
    rows.append({"certificate": "TRUE distance (dense search)", "radius": d, "gap to truth": 0.0,
                 "sound here": None})
    return rows


TOY_KEY = "pg_toys"  # session_state: [the trained net, its control (optional)]
CLICK_KEY = "pg_plane"  # the plane chart's selection state
_APPLIED_KEY = "pg_click_applied"
RELU_TEXT = (
    "**Why no curvature bound can exist.** On each coloured piece a ReLU net is affine: its Hessian is exactly 0. "
    "Across a kink the gradient jumps, so the curvature there is infinite (a Dirac spike): no finite K bounds "
    "it, and CRC refuses ReLU nets. **App. G still works on a 2-layer ReLU net**: each hidden unit is bounded "
    "above and below by quadratics, which gives a quadratic lower bound of the margin and a certified disc "
    "(its radius is in the table beside the plane, with CROWN and the first-order bound, which need no curvature)."
)


def apply_click(state: Any) -> bool:
    """Move the typed coordinates (``pg_x``, ``pg_y``) to the point last clicked on the plane, once per click.
    Returns True when a new click was applied. ``state``: st.session_state (a mapping)."""
    event = state.get(CLICK_KEY)
    points = (event or {}).get("selection", {}).get("points", []) if hasattr(event, "get") else []
    if not points:
        return False
    p = points[0]
    sig = (round(float(p["x"]), 9), round(float(p["y"]), 9))
    if state.get(_APPLIED_KEY) == sig:
        return False
    state[_APPLIED_KEY] = sig
    state["pg_x"], state["pg_y"] = sig
    return True


def side_caption(view: PointView) -> str:
    """One line under a side-by-side panel: the radii and the truth at the shared point."""
    parts = [f"{m}: {r:.3f}" for m, r in view.radii.items()]
    return f"true distance {view.true_distance:.3f}; certified radii " + ", ".join(parts)


def curvature_caption(cv: CurvatureView) -> str:
    top = float(cv.measured.max())
    return (f"Measured: the exact Hessian eigenvalues of the margin z{cv.pair[0]} − z{cv.pair[1]} on a "
            f"{CURVATURE_GRID}×{CURVATURE_GRID} grid; their largest |λ| is {top:.3g}. K_ub = {cv.K_ub:.3g} bounds "
            f"the curvature everywhere in ℝ² (not only here), so it is larger: the ratio "
            f"{cv.K_ub / max(top, 1e-300):.2f} is what a tighter bound could still gain. "
            "A smaller K_ub gives a larger CRC disc.")


def target_for(view: PointView) -> int:
    """The class whose margin the curvature view measures: CRC's arg-min target, else the first other class."""
    return view.target if view.target >= 0 else (1 if view.pred == 0 else 0)


@dataclass
class BoundSweep:
    """CRC's radius at one point when the curvature bounds (m, M, K of every pair) are scaled: K (S,) the target
    pair's K used, radius (S,); K_ub the proven bound (scale 1), K_lb the largest curvature measured over the
    plotted square; true distance. Only K ≥ K_ub gives a certificate: below it the bound is not proven."""

    K: list[float]
    radius: list[float]
    K_ub: float
    K_lb: float
    true_distance: float


@st.cache_resource(show_spinner=False, max_entries=32)
def bound_sweep(key: str, _toy: TrainedToy, x0: tuple[float, float]) -> BoundSweep:
    """Radius vs the curvature bound used, from the measured K_lb to 100·K_ub (14 values, log-spaced), at x0."""
    from crc_core.bounds import Bounds

    model = _toy.model
    view = cached_point_view(key, _toy, x0)
    y, t = view.pred, target_for(view)
    cv = curvature_view(key, _toy, y, t)
    table = curvature_bounds(model)
    k_ub = float(table.for_pairs(torch.tensor([y]), torch.tensor([t])).K[0])
    k_lb = float(cv.measured.max())
    x = torch.tensor([x0], dtype=torch.float32)
    Ks, radii = [], []
    for s in torch.logspace(math.log10(k_lb / k_ub), 2.0, 14, dtype=torch.float64).tolist():
        scaled = Bounds(table.y, table.t, table.m * s, table.M * s, table.K * s, table.method)
        Ks.append(k_ub * s)
        radii.append(float(certify(model, x, bounds=scaled, refine="minimum").radius[0]))
    return BoundSweep(Ks, radii, k_ub, k_lb, view.true_distance)


def _coordinate(text: str) -> float:
    from .links import LinkError

    try:
        v = float(text)
    except ValueError:
        raise LinkError(f"the coordinate '{text}' is not a number; showing the default point") from None
    if not math.isfinite(v):
        raise LinkError(f"the coordinate '{text}' is not finite; showing the default point")
    return v


def link_fields() -> tuple[Any, ...]:
    """The Playground's state shared by its link (dataset, net, activation, the point): :mod:`app_lib.links`
    fields, restored once when a link opens the page and mirrored into the address bar after that."""
    from .links import Field, choice

    return (Field("data", "pg_dataset", choice(TOYS, "the dataset")),
            Field("net", "pg_arch", choice(tuple(ARCHITECTURES), "the net")),
            Field("act", "pg_act", choice(ACTIVATIONS, "the activation")),
            Field("x", "pg_x", _coordinate, lambda v: f"{float(v):.4g}"),
            Field("y", "pg_y", _coordinate, lambda v: f"{float(v):.4g}"))
