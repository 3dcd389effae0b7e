"""What the Certify page shows, computed and cached here (the page only lays it out).

Each section of the page is one call: :func:`gallery` (the certified test images), :func:`take_upload` (an
uploaded picture), :func:`certificate` (the certificate of the picked image and its closest boundary point),
:func:`margin_path` (the margin along the line to that point) and :func:`attack` (Algorithm 2 at ρ). A new
section (another certificate method, a 2-D slice) is one more function here returning a small view model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st
import torch

from app_lib import catalogue, images, margin_maths, state
from app_lib.closest_point import Boundary, closest_boundary
from app_lib.drawing import Drawing, read_drawing
from crc_core.attack import curvature_attack
from crc_core.certify import CertificateBatch, certify
from crc_core.errors import CRCError
from crc_core.hessian import margin_and_grad

POOL = 120  # test images certified for the gallery (once per model)
SHOW = 24  # thumbnails shown
PATH_POINTS = 161  # points on the margin-along-a-line chart
NO_DIRECTION = 1e-9  # a boundary point closer than this to x0 gives no direction (follow the gradient instead)


# ------------------------------------------------------------------------------------------------ gallery
@st.cache_resource(show_spinner="Certifying the gallery images (once per model)…", max_entries=8)
def _pool(key: str, dataset: str, mode: str, device: str, _model, _table
          ) -> tuple[pd.DataFrame, CertificateBatch | None]:
    ds = catalogue.cached_test_set(dataset)
    x, y = ds.images[:POOL].to(device), ds.labels[:POOL].to(device)
    if _table is None:  # no curvature bound (a ReLU model): predictions only, the radius column is NaN
        with torch.no_grad():
            pred = _model(x.reshape(len(x), -1)).argmax(1)
        df = pd.DataFrame({"index": range(len(x)), "pred": pred.cpu().numpy(), "label": y.cpu().numpy(),
                           "correct": (pred == y).cpu().numpy(), "radius": np.nan})
        return df, None
    with torch.no_grad():
        batch = certify(_model, x, y, mode=mode, bounds=_table)
    df = batch.to_frame()
    df.insert(0, "index", range(len(df)))
    return df, batch


def gallery(ctx: catalogue.Ctx, mode: str) -> pd.DataFrame:
    """One row per gallery image (the first POOL test images): index, pred, label, correct, radius, …"""
    table = ctx.bounds("auto") if catalogue.has_curvature(ctx.model) else None
    return _pool(ctx.key, ctx.dataset, mode, str(ctx.device), ctx.model, table)[0]


def prediction(ctx: catalogue.Ctx, picked: state.Picked) -> tuple[int, float, np.ndarray]:
    """(predicted class, its softmax probability, logits (C,) float64) of the picked image."""
    with torch.no_grad():
        z = ctx.model(picked.x.reshape(1, -1).to(ctx.device))[0].detach().cpu().double()
    pred = int(z.argmax())
    return pred, float(torch.softmax(z, 0)[pred]), z.numpy()


GALLERY_ORDERS = ("as in the test set", "correct first", "hardest first")


def filter_gallery(pool: pd.DataFrame, class_names: list[str], cls: str, outcome: str, at_rho: str, rho: float,
                   order: str = GALLERY_ORDERS[0]) -> pd.DataFrame:
    """The gallery rows matching the filters: class name or "any"; "correct"/"wrong"/"any"; "certified"/"not
    certified"/"any" at ρ (certified = correct and radius ≥ ρ, as :meth:`CertificateBatch.certified`); in
    ``order``: the test set's, correct ones first (largest radius first), or hardest first (misclassified, then
    the smallest radius)."""
    sel = pool
    if order == "correct first":
        sel = sel.assign(_r=sel["radius"].fillna(0.0)).sort_values(["correct", "_r"], ascending=[False, False],
                                                                    kind="stable").drop(columns="_r")
    elif order == "hardest first":
        sel = sel.assign(_r=sel["radius"].fillna(0.0)).sort_values(["correct", "_r"], ascending=[True, True],
                                                                    kind="stable").drop(columns="_r")
    if cls != "any":
        sel = sel[sel["label"] == class_names.index(cls)]
    if outcome != "any":
        sel = sel[sel["correct"] == (outcome == "correct")]
    if at_rho != "any":
        ok = sel["correct"] & (sel["radius"] >= rho)
        sel = sel[ok if at_rho == "certified" else ~ok]
    return sel


# ------------------------------------------------------------------------------------------------ upload
@st.cache_resource(show_spinner=False, max_entries=16)
def _read(key: str, name: str, colours: str, _data: bytes) -> images.UploadedImage:
    invert = {"auto": "auto", "keep": False, "invert": True}[colours]
    return images.read_upload(_data, name, invert=invert)  # type: ignore[arg-type]


def take_upload(data: bytes, name: str, colours: str) -> images.UploadedImage:
    """Read an uploaded picture (once per file and colour choice) and make it the picked image. A refused file
    also drops the previous upload, so its certificate does not stay on screen under the error."""
    try:
        done = _read(images.image_key(data), name, colours, data)
    except CRCError:
        state.forget_uploaded_image()
        raise
    if state.use_uploaded_image(name, done.x):
        st.rerun()  # a new picture: the picker's title above says so at once
    return done


# ------------------------------------------------------------------------------------------------ certificate
@dataclass(frozen=True)
class Certificate:
    """The certificate of one image. radius/target: the guarantee and its arg-min class (-1 when misclassified);
    upper: the upper end of the distance, the distance of ``boundary`` (x_b, :mod:`app_lib.closest_point`; inf when
    no point where another class wins was found); radius_by_class (C,) and exact_by_class (C,) (NaN / False at
    the prediction); ``toward`` (784,): the direction the margin chart and the slice follow (to x_b, else to the arg-min
    target's dual point, where the prediction still holds, else down the margin's gradient)."""

    pred: int
    label: int | None
    prob: float
    correct: bool
    radius: float
    target: int
    exact: bool
    upper: float
    runner_up: int
    runner_up_radius: float
    radius_by_class: np.ndarray
    exact_by_class: np.ndarray
    logits: np.ndarray
    boundary: Boundary | None
    toward: torch.Tensor
    toward_class: int

    def certified(self, rho: float) -> bool:
        """Correct and radius ≥ ρ (the same rule as :meth:`CertificateBatch.certified`)."""
        return self.correct and self.radius >= rho

    def summary(self) -> tuple[str, str]:
        """(Streamlit alert kind, sentence): what the certificate says about the distance to the boundary."""
        if not self.correct:
            return "warning", ("This image is misclassified, so there is nothing to certify: its radius is 0 by "
                               "definition (the prediction is already wrong).")
        if self.boundary is None:
            return "info", (f"The true distance to the decision boundary is **at least {self.radius:.4f}**; the "
                            "solver found no point where another class wins, so there is no upper end to the "
                            "interval yet.")
        return "info", (f"The true distance to the decision boundary lies in **[{self.radius:.4f}, "
                        f"{self.upper:.4f}]**: certified radius ≤ distance ≤ distance of the closest point found "
                        "where another class wins"
                        f"{' (the two ends meet: the certificate is exact)' if self.exact else ''}.")


def _row(batch: CertificateBatch, i: int) -> CertificateBatch:
    """Image i of a certificate batch, as a batch of one (tensor fields sliced)."""
    return dataclasses.replace(batch, **{f.name: getattr(batch, f.name)[i:i + 1] for f in dataclasses.fields(batch)
                                         if isinstance(getattr(batch, f.name), torch.Tensor)})


@st.cache_resource(show_spinner="Certifying…", max_entries=64)
def _certify_one(key: str, image_key: str, mode: str, device: str, _model, _x, _label, _table) -> CertificateBatch:
    lab = None if _label is None else torch.tensor([_label], device=device)
    with torch.no_grad():
        return certify(_model, _x[None].to(device), lab, mode=mode, bounds=_table)


def certificate_batch(ctx: catalogue.Ctx, picked: state.Picked, mode: str) -> CertificateBatch:
    """The picked image's certificate as a one-image :class:`CertificateBatch` (cached; the gallery's row when it
    is a gallery image)."""
    if picked.index is not None and picked.index < POOL:
        return _row(_pool(ctx.key, ctx.dataset, mode, str(ctx.device), ctx.model, ctx.bounds("auto"))[1],
                    picked.index)
    return _certify_one(ctx.key, picked.key, mode, str(ctx.device), ctx.model, picked.x, picked.label,
                        ctx.bounds("auto"))


@st.cache_resource(show_spinner="Searching for the closest boundary point (certifier and attack)…", max_entries=64)
def _certificate(key: str, image_key: str, index: int | None, label: int | None, dataset: str, mode: str, device: str,
                 names: tuple[str, ...], _ctx: catalogue.Ctx, _picked: state.Picked) -> Certificate:
    model, x = _ctx.model, _picked.x
    cert = certificate_batch(_ctx, _picked, mode)
    pred, target = int(cert.pred[0]), int(cert.target[0])
    logits = cert.logits[0].detach().cpu().double()
    correct = bool(cert.correct[0])
    boundary = closest_boundary(model, x, cert, list(names)) if correct else None
    if boundary is not None:
        toward, toward_class = boundary.x_b - x, boundary.cls
    else:  # no point where another class wins: the arg-min target's dual point, or down the gradient
        toward_class = target if target >= 0 else int(cert.runner_up[0])
        toward = cert.x_boundary[0].detach().cpu().float() - x
        if float(toward.norm()) < NO_DIRECTION:
            dev = model.layers[0].weight.device
            _, g = margin_and_grad(model, x[None].to(dev), torch.tensor([pred], device=dev),
                                   torch.tensor([toward_class], device=dev))
            toward = -g[0].detach().cpu().float()
    return Certificate(
        pred=pred, label=_picked.label, prob=float(torch.softmax(logits, 0)[pred]), correct=correct,
        radius=float(cert.radius[0]), target=target, exact=bool(cert.exact[0]),
        upper=boundary.distance if boundary is not None else float("inf"),
        runner_up=int(cert.runner_up[0]), runner_up_radius=float(cert.runner_up_radius[0]),
        radius_by_class=cert.radius_by_class[0].detach().cpu().double().numpy(),
        exact_by_class=cert.exact_by_class[0].cpu().numpy(),
        logits=logits.numpy(), boundary=boundary, toward=toward, toward_class=toward_class)


def certificate(ctx: catalogue.Ctx, picked: state.Picked, mode: str) -> Certificate:
    """The certificate of the picked image (from the gallery's batch when it is a gallery image) and its x_b."""
    return _certificate(ctx.key, picked.key, picked.index, picked.label, ctx.dataset, mode, str(ctx.device),
                        tuple(ctx.test_set().class_names), ctx, picked)


def margin_path(ctx: catalogue.Ctx, picked: state.Picked, cert: Certificate, rho: float) -> margin_maths.Line:
    """The margins along the straight line from x0 in the direction ``cert.toward``, far enough to show the
    boundary point, the certified radius and ρ."""
    far = cert.boundary.distance if cert.boundary is not None else 0.0
    s_max = 1.5 * max(far, rho, cert.radius, 1e-3)
    return margin_maths.margin_line(ctx.model, picked.x, cert.toward, cert.pred, cert.toward_class, s_max,
                                n=PATH_POINTS)


# ------------------------------------------------------------------------------------------------ attack
@dataclass(frozen=True)
class Attack:
    """Algorithm 2 at ρ against every target: a table (one row per target, strongest first) and the strongest
    attack: its target, whether it changed the class, whether it is provably the worst case, its point x (784,)."""

    table: pd.DataFrame
    target: int
    fooled: bool
    provably_worst: bool
    distance: float
    x: torch.Tensor

    def worst_case_words(self, class_names: list[str]) -> tuple[str, str]:
        """(value, note) of "attack provably worst case?": "yes" only when Algorithm 2 proved it for every target;
        otherwise which targets it holds for, so that one target's proof never reads as the whole answer."""
        proved = self.table["provably worst case"].astype(bool)
        if bool(proved.all()):
            return "yes", "for every target"
        if not bool(proved.any()):
            return "no", "for no target"
        strongest = bool(self.provably_worst)
        return "not for all", (f"yes for the strongest target, {class_names[self.target]}" if strongest
                               else f"for {int(proved.sum())} of {len(proved)} targets, not the strongest")

    def verdict(self, certified: bool, rho: float, class_names: list[str]) -> tuple[str, str]:
        """(Streamlit alert kind, sentence): the certificate at ρ next to what the attack found."""
        if certified and self.fooled:  # would contradict soundness: say so loudly
            return "error", ("Certified yet fooled: this should never happen. Please report it with the model and "
                             "image.")
        if certified:
            return "success", f"Certified: no image within ℓ2 distance {rho:g} of this one is classified differently."
        if self.fooled:
            return "warning", (f"Not robust at ρ = {rho:g}: the attack found an image {self.distance:.3f} away that "
                               f"is classified as {class_names[self.target]}.")
        return "info", ("Not certified, but the attack did not change the class either: the truth lies in the gap "
                        "between the certified radius and the best attack.")


@st.cache_resource(show_spinner="Running the curvature attack (Algorithm 2)…", max_entries=64)
def _attack(key: str, image_key: str, rho: float, device: str, _model, _x, pred: int, _table, names: tuple
            ) -> Attack:
    ts = torch.tensor([t for t in range(_model.n_classes) if t != pred], device=device)
    n = ts.numel()
    res = curvature_attack(_model, _x[None].to(device).expand(n, -1), torch.full((n,), pred, device=device), ts,
                           rho, bounds=_table)
    margins = res.margin.detach().cpu()
    k = int(margins.argmin())
    table = pd.DataFrame({
        "target": [names[int(t)] for t in ts.cpu()],
        "margin after attack": margins.numpy(),
        "distance used": res.distance.detach().cpu().numpy(),
        "class changed": res.fooled.cpu().numpy(),
        "provably worst case": res.success.cpu().numpy(),
    }).sort_values("margin after attack")
    return Attack(table, int(ts[k]), bool(res.fooled[k]), bool(res.success[k]), float(res.distance[k]),
                  res.x[k].detach().cpu())


def attack(ctx: catalogue.Ctx, picked: state.Picked, cert: Certificate, rho: float, class_names: list[str]) -> Attack:
    """The curvature attack (Algorithm 2) at ρ against every other class (cached per image and ρ)."""
    return _attack(ctx.key, picked.key, float(rho), str(ctx.device), ctx.model, picked.x, cert.pred,
                   ctx.bounds("auto"), tuple(class_names))


# ------------------------------------------------------------------------------------------------ 2-D slice
SLICE_GRID = 201  # grid points per side of the slice (201×201 forward passes: about a second for a 2×[256] net)
SLICE_DIRECTIONS = {
    "hessian-top": "top Hessian eigenvector",
    "hessian-bottom": "bottom Hessian eigenvector",
    "pgd": "PGD attack direction (at ρ)",
    "target": "to another class's boundary point",
    "random": "a random direction",
}  # the second directions of crc_core.slices.SECOND_DIRECTIONS, in words
@dataclass(frozen=True)
class SliceView:
    """The slice section: a Plotly figure (one panel, or two side by side) and the certified radius of each panel
    (the radius of its green disc)."""

    figure: object
    radii: tuple[float, ...]


def direction_words(second: str, cert: Certificate, names: list[str], other: int | None) -> str:
    """The slice's second direction in words, with class names (for its title and axis)."""
    pair = f"z_{names[cert.pred]} − z_{names[cert.toward_class]}"
    return {"hessian-top": f"the top Hessian eigenvector of {pair}",
            "hessian-bottom": f"the bottom Hessian eigenvector of {pair}",
            "pgd": "the PGD attack direction (at ρ)",
            "target": f"the direction to {names[other]}'s boundary point" if other is not None else "another class",
            "random": "a random direction"}[second]


def first_axis_words(cert: Certificate, names: list[str]) -> str:
    """What the slice's first axis points to: x_b when there is one, else what the point is."""
    if cert.boundary is not None:
        return "x_b"
    return (f"the certifier's best point against {names[cert.toward_class]} (not a boundary point: the prediction "
            "still holds there; no point where another class wins was found)")


@st.cache_resource(show_spinner=False, max_entries=32)
def _slice(key: str, image_key: str, mode: str, device: str, second: str, other: int | None, rho: float,
           half_width: float | None, words: str, _model, _x, _cert: Certificate, _batch: CertificateBatch):
    from crc_core.slices import decision_slice, second_direction

    other_b = None
    if second == "target":
        row = _batch.target_by_row[0].tolist()
        found = other is not None and other in row and bool(torch.isfinite(_batch.upper_by_row[0, row.index(other)]))
        if not found:
            raise CRCError("The certifier found no boundary point for that class: pick another class or direction.")
        other_b = _batch.x_boundary_by_row[0, row.index(other)]
    x0 = _x.to(device)
    d = second_direction(_model, x0, second, y=_cert.pred, t=_cert.toward_class, rho=rho, other_boundary=other_b)
    return decision_slice(_model, x0, x0 + _cert.toward.to(device), d, radius=_cert.radius, rho=rho, y=_cert.pred,
                          half_width=half_width, grid=SLICE_GRID, second=words)


def other_targets(cert: Certificate, batch: CertificateBatch) -> list[int]:
    """Classes whose boundary point can span the 'target' direction: one was found, and not x_b's class."""
    row, up = batch.target_by_row[0].tolist(), batch.upper_by_row[0]
    return [t for j, t in enumerate(row) if t != cert.toward_class and bool(torch.isfinite(up[j]))]


def slice_view(ctx: catalogue.Ctx, picked: state.Picked, mode: str, rho: float, second: str, other: int | None,
               class_names: list[str], compare: str | None = None) -> SliceView:
    """The decision-region slice of the picked image (crc_core.slices) in the plane of its x_b (the page's one
    closest boundary point) and ``second``, or, with ``compare`` (a model id), the picked model and that one side
    by side on one scale, each in the plane of its own x_b. Raises CRCError (a readable line) when the image is
    misclassified by a model, or the direction is unusable."""
    from app_lib.slice_figures import slice_figure, slice_pair_figure

    cert, batch = certificate(ctx, picked, mode), certificate_batch(ctx, picked, mode)
    if not cert.correct:
        raise CRCError("This image is misclassified: it has no certificate, hence no boundary point to draw.")
    words = direction_words(second, cert, class_names, other)
    first = first_axis_words(cert, class_names)
    if compare is None:
        s = _slice(ctx.key, picked.key, mode, str(ctx.device), second, other, float(rho), None, words, ctx.model,
                   picked.x, cert, batch)
        title = f"Class regions around x0 in the plane of {'x_b' if cert.boundary else 'the certifier’s point'} and " \
                f"{words}"
        return SliceView(slice_figure(s, class_names, title=title, point=first), (s.radius,))
    ref, model, meta = catalogue.model_by_id(compare, ctx.device)
    ctx2 = catalogue.Ctx(ref, model, meta, catalogue.catalogue_labels().get(compare, compare), ctx.device, ctx.dataset)
    cert2, batch2 = certificate(ctx2, picked, mode), certificate_batch(ctx2, picked, mode)
    if not cert2.correct:
        raise CRCError("The second model misclassifies this image: it has no certificate to draw beside.")
    from crc_core.slices import EXTENT

    reach = [float(c.toward.norm()) for c in (cert, cert2)]
    h = EXTENT * max(*reach, cert.radius, cert2.radius, float(rho))
    words2 = direction_words(second, cert2, class_names, other)
    s1 = _slice(ctx.key, picked.key, mode, str(ctx.device), second, other, float(rho), h, words, ctx.model, picked.x,
                cert, batch)
    s2 = _slice(ref.key, picked.key, mode, str(ctx.device), second, other, float(rho), h, words2, model, picked.x,
                cert2, batch2)
    names = (ctx.label.split(" · ")[0], ctx2.label.split(" · ")[0])
    return SliceView(slice_pair_figure(s1, s2, class_names, titles=names,
                                       points=(first, first_axis_words(cert2, class_names))), (s1.radius, s2.radius))


# ------------------------------------------------------------------------------------------------ local
@dataclass(frozen=True)
class LocalView:
    """The global certified radius next to the local one (paper §7.4): local ≥ global, both proven."""

    global_radius: float
    local_radius: float


@st.cache_resource(show_spinner="Local curvature certificate (section 7.4)…", max_entries=64)
def _local(key: str, image_key: str, mode: str, device: str, _model, _x, _label, _table) -> float:
    lab = None if _label is None else torch.tensor([_label], device=device)
    with torch.no_grad():
        cert = certify(_model, _x[None].to(device), lab, mode=mode, bounds=_table, local=True, refine="minimum")
        return float(cert.radius[0])


def local_view(ctx: catalogue.Ctx, picked: state.Picked, cert: Certificate, mode: str) -> LocalView:
    """The local certificate of the picked image (2-layer nets only: CRCError otherwise)."""
    if ctx.model.depth != 2:
        raise CRCError("Local certificates are available for 2-layer networks only (paper section 7.4): pick a "
                       "2-layer model to compare them.")
    r_loc = _local(ctx.key, picked.key, mode, str(ctx.device), ctx.model, picked.x, picked.label,
                   ctx.bounds("auto"))
    return LocalView(cert.radius, r_loc)


# ------------------------------------------------------------------------------------------------ drawing
CANVAS_SIDE = 280  # pixels: 10 canvas pixels per model pixel
CANVAS_KEY = "crc_canvas"
DRAWING_NAME = state.DRAWING_NAME


def draw_canvas(generation: int) -> Drawing:
    """The drawing canvas (streamlit-drawable-canvas; it sends its pixels on mouse-up) -> :class:`Drawing` (its
    28×28 image, or empty with a note). ``generation`` is part of the key: a new number gives a blank canvas."""
    # imported only inside a running Streamlit: the component registers its manifest at run time
    from streamlit_drawable_canvas import st_canvas

    res = st_canvas(stroke_width=20, stroke_color="#ffffff", background_color="#000000", height=CANVAS_SIDE,
                    width=CANVAS_SIDE, drawing_mode="freedraw", update_streamlit=True, return_image_data=True,
                    key=f"{CANVAS_KEY}_{generation}")
    return read_drawing(res.image_data, invert=False)
