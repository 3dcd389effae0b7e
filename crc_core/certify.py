"""Curvature-based robustness certificates (CRC, paper section 4 and Algorithm 1), sound and batched.

``certify()`` orchestrates small steps: validate → choose targets → solve → float64 finalisation → reduce.
The maths lives elsewhere, one home each:
- crc_core.dual: the sound dual bound (*) (DESIGN.md §2) and the tracker of its best value over evaluated points;
- crc_core.solvers.paper: Algorithm 1 as written; crc_core.solvers.fast: the default solver;
- crc_core.solvers.mm: the η-bisection + MM step shared with Algorithm 2 (crc_core.attack);
- crc_core.row_space: the coordinates of the fast solver when the first layer is narrower than the input.

The radius of a row is sqrt(2 · max(0, best (*))), recomputed in float64 on a float64 copy of the model at the
best point (in row-space coordinates where the solver used them: the same value of (*) at the same point): a true
lower bound however the solver stopped. When that point can be moved onto the boundary within the certified radius
(one Newton step), the certificate is ``exact``: primal = dual, the point is the closest boundary point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import torch

from .bounds import Bounds, Method, curvature_bounds
from .checks import check_images, check_labels
from .dual import BoundTracker, bound_at, dual_lower_bound
from .errors import CRCError
from .f32_bounds import f32_matmul_is_ieee
from .hessian import MarginOracle
from .local import local_certificate
from .models import MLP, as_dtype, require_curvature_model
from .row_space import RowSpace
from .solvers.fast import FastResult, ProvedStart, Rows, solve_fast
from .solvers.paper import PaperResult, solve_paper
from .targets import TARGET_MODES, TargetMode, choose_targets, margin, runner_up
from .tolerances import EXACT_DIST_RTOL, EXACT_MARGIN_RTOL, TINY_F64

SolverMode = Literal["fast", "paper"]
RefineMode = Literal["every-target", "minimum"]
SOLVER_MODES: tuple[str, ...] = get_args(SolverMode)
REFINE_MODES: tuple[str, ...] = get_args(RefineMode)


@dataclass
class CertificateBatch:
    """Certificates for B images, C classes, T targets per image (T = C - 1 for "all", 1 otherwise).

    Three kinds of arrays:

    Per image (B,): pred, label, correct (bool); radius (min over targets, 0 if misclassified); target (the arg-min
    class, -1 if none); exact (primal = dual for that target); eta; margin (f at x_boundary); n_grad (summed over
    targets); upper (distance to the closest boundary point found, inf if none: the true distance lies in
    [radius, upper]); runner_up (class id); runner_up_radius (nan when the runner-up was not a target);
    x_boundary (B, D): the arg-min target's boundary point (the dual's point when not exact).

    Per class (B, C), indexed by class id, ``…_by_class``, nan / False / 0 where the class was not a target:
    ``radius_by_class``, ``exact_by_class``, ``n_grad_by_class``; ``logits`` (B, C); ``refined_by_class`` (B, C)
    bool: the class's radius is its own certificate (solved as if it were the only target). Always True with
    refine="every-target" (the default); with refine="minimum" a class that provably cannot be the image's minimum
    is left early (False): its radius is a sound lower bound, possibly looser. The per-image radius and the
    runner-up's are always refined fully.

    Per target row (B, T), ``…_by_row``, row j of image i is the target class ``target_by_row[i, j]``:
    ``x_boundary_by_row`` (B, T, D), ``eta_by_row``, ``margin_by_row`` (f at the shown point), ``upper_by_row``.
    """

    pred: torch.Tensor
    label: torch.Tensor
    correct: torch.Tensor
    radius: torch.Tensor
    target: torch.Tensor
    exact: torch.Tensor
    eta: torch.Tensor
    margin: torch.Tensor
    n_grad: torch.Tensor
    upper: torch.Tensor
    x_boundary: torch.Tensor
    runner_up: torch.Tensor
    runner_up_radius: torch.Tensor
    radius_by_class: torch.Tensor
    exact_by_class: torch.Tensor
    n_grad_by_class: torch.Tensor
    logits: torch.Tensor
    refined_by_class: torch.Tensor
    target_by_row: torch.Tensor
    x_boundary_by_row: torch.Tensor
    eta_by_row: torch.Tensor
    margin_by_row: torch.Tensor
    upper_by_row: torch.Tensor
    mode: str = "fast"
    targets: str = "all"
    bound_method: str = ""
    extra: dict = field(default_factory=dict)

    def certified(self, rho: float) -> torch.Tensor:
        """(B,) bool: correctly classified and radius ≥ ρ (strictly provable robustness at ρ)."""
        return self.correct & (self.radius >= rho)

    def to_frame(self):
        """One row per image (pandas DataFrame): the table shared by the app and the CLI."""
        import pandas as pd

        return pd.DataFrame({
            "pred": self.pred.cpu().numpy(), "label": self.label.cpu().numpy(),
            "correct": self.correct.cpu().numpy(), "radius": self.radius.cpu().numpy(),
            "target": self.target.cpu().numpy(), "exact": self.exact.cpu().numpy(),
            "eta": self.eta.cpu().numpy(), "margin_at_boundary": self.margin.cpu().numpy(),
            "upper": self.upper.cpu().numpy(), "runner_up": self.runner_up.cpu().numpy(),
            "runner_up_radius": self.runner_up_radius.cpu().numpy(), "n_grad": self.n_grad.cpu().numpy(),
        })


@dataclass
class RowCertificates:
    """Finalised results per (image, target) row, N = B·T rows in image-major order (float64 scalars; the points
    in the solver's dtype).

    radius, eta, margin (f at x_show), upper (N,); exact (N,) bool; x_show (N, D) the boundary point (exact), else
    the closest boundary point found, else the dual's point; x_dual (N, D) the point of the best bound (None
    where the caller did not ask for it: only the local refinement starts there);
    n_grad (N,) gradient evaluations including the finalisation; refined (N,) bool: the row was solved as if it
    were the only target (False: left early as it cannot be its image's minimum; sound, possibly looser)."""

    radius: torch.Tensor
    exact: torch.Tensor
    eta: torch.Tensor
    margin: torch.Tensor
    upper: torch.Tensor
    x_show: torch.Tensor
    x_dual: torch.Tensor | None
    n_grad: torch.Tensor
    refined: torch.Tensor

    @classmethod
    def empty(cls, tracker: BoundTracker, n_grad: torch.Tensor, dropped: torch.Tensor) -> RowCertificates:
        """Rows before finalisation: radius 0, not exact, upper and x_show from the tracker (the closest boundary
        point found, else the best bound's point), n_grad (the finalisation adds its own), refined = not dropped."""
        z = torch.zeros_like(tracker.lb)
        found = torch.isfinite(tracker.d_up)[:, None]
        return cls(z.clone(), torch.zeros_like(z, dtype=torch.bool), z.clone(), z.clone(), tracker.d_up.clone(),
                   torch.where(found, tracker.x_up, tracker.x_lb), tracker.x_lb, n_grad.clone(), ~dropped)


@torch.no_grad()
def certify(model: MLP, x: torch.Tensor, labels: torch.Tensor | None = None, *, targets: TargetMode = "all",
            mode: SolverMode = "fast", bounds: Bounds | None = None, bound_method: Method = "auto",
            local: bool = False, seed: int = 0, refine: RefineMode = "every-target") -> CertificateBatch:
    """Certified L2 radii for images x (B, D) (or (B, 1, 28, 28)) in [0, 1].

    labels (B,): true labels; a misclassified image gets radius 0 (``correct`` False). Without labels the
    prediction is certified. targets: "all" (default; the radius of the classifier), "runner-up" (the paper's),
    "random", "least". mode: "fast" or "paper". bounds: a precomputed table covering the needed pairs (e.g.
    ``curvature_bounds(model)`` cached per model); computed when None. local: 2-layer nets only, tighten the
    certificates that are not exact with local curvature bounds (section 7.4); never smaller than the global ones.
    refine (fast mode, several targets): "every-target" solves each target as if it were the only one (every
    per-class radius is that class's own certificate); "minimum" solves fully only what the image's radius and
    the runner-up's need (a target that provably cannot be the minimum keeps a sound, looser bound; see
    ``refined_by_class``): same per-image and runner-up radii, far fewer gradient evaluations.

    Guarantee: no x' with ‖x' - x0‖ < radius changes the prediction (in exact arithmetic on the float64 model).
    """
    x0, label = _validate(model, x, labels, targets=targets, mode=mode, local=local, refine=refine)
    logits = model(x0)
    pred = logits.argmax(1)
    label = pred.clone() if label is None else label  # without labels the prediction is certified
    T = choose_targets(logits, pred, targets, seed=seed)  # (B, T)
    image = torch.arange(x0.shape[0], device=x0.device).repeat_interleave(T.shape[1])  # image of each row (N,)
    y_row, t_row = pred[image], T.reshape(-1)
    if bounds is None:
        pairs = torch.unique(y_row * model.n_classes + t_row)
        bounds = curvature_bounds(model, pairs // model.n_classes, pairs % model.n_classes, method=bound_method)
    pb = bounds.for_pairs(y_row, t_row)
    protect = (t_row == runner_up(logits, pred)[image]) if refine == "minimum" else torch.ones_like(t_row).bool()
    rows = Rows(x0[image], pb.m, pb.M, group=image, protect=protect)
    m64 = as_dtype(model, torch.float64)
    if mode == "paper":
        tracker = BoundTracker.new(rows.x0)
        solved = solve_paper(MarginOracle(model, y_row, t_row), rows.x0, pb.m, pb.M, pb.K, tracker)
        res = finalise(m64, rows, y_row, t_row, tracker, solved)
    else:
        res = _fast_rows(model, m64, x0, rows, y_row, t_row, keep_dual=local)
    if local:
        _tighten_locally(m64, rows, y_row, t_row, res)
    return _reduce(res, logits, pred, label, T, mode=mode, targets=targets, bound_method=bounds.method)


def _validate(model: MLP, x: torch.Tensor, labels: torch.Tensor | None, *, targets: str, mode: str, local: bool,
              refine: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every check before any work: returns images x0 (B, D) in the model's dtype and labels (B,) (or None)."""
    require_curvature_model(model)
    if local and model.depth != 2:
        raise CRCError("Local curvature certificates are available for 2-layer networks only (paper section 7.4).")
    if mode not in SOLVER_MODES:
        raise CRCError(f"Unknown solver mode {mode!r}; use one of {', '.join(SOLVER_MODES)}.")
    if targets not in TARGET_MODES:
        raise CRCError(f"Unknown target mode {targets!r}; use one of {', '.join(TARGET_MODES)}.")
    if refine not in REFINE_MODES:
        raise CRCError(f"Unknown refine mode {refine!r}; use one of {', '.join(REFINE_MODES)}.")
    x0 = check_images(model, x, dtype=model.layers[0].weight.dtype)
    if labels is None:
        return x0, None
    return x0, check_labels(labels, x0.shape[0], model.n_classes, x0.device)


def _fast_rows(model: MLP, m64: MLP, x0: torch.Tensor, rows: Rows, y: torch.Tensor, t: torch.Tensor, *,
               keep_dual: bool = False) -> RowCertificates:
    """The fast solver and the float64 finalisation on rows (image-major over the images x0 (B, D)).

    Where the first layer's row space is smaller than the input (:class:`RowSpace`), both work in its coordinates
    s = Qᵀ(x - origin) (same margins at the same points, same distances, same values of (*)): the solver in the
    model's dtype, the finalisation on the float64 model from the float64 coordinates of x0 and the exact float64
    displacement of each point; the points are taken back to the full space at the end (``x_dual`` only with
    ``keep_dual``, else None). With IEEE float32 products the first step is evaluated with proofs on the full
    model (f(x0) on the float64 copy ``m64``, a proved bound on ‖∇f(x0)‖), which the finalisation may use."""
    oracle = MarginOracle(model, y, t)
    space = RowSpace.of(model)
    start = None
    if x0.dtype == torch.float32 and f32_matmul_is_ieee(x0.device):
        start = ProvedStart(*oracle.at_images_proved(x0, m64), to_solver=None if space is None else space.coords)
    if space is None:
        tracker = BoundTracker.new(rows.x0)
        return finalise(m64, rows, y, t, tracker, solve_fast(oracle, rows, tracker, start=start))
    group = rows.group
    assert group is not None
    origin = x0.double().mean(0)  # coordinates from the images' mean: small, finely spaced in float32
    s0 = space.coords(x0, origin)[group]  # the solver's coordinates of x0, rounded to its dtype
    tr = BoundTracker.new(s0)
    solved = solve_fast(MarginOracle(space.model_on(model, origin), y, t), Rows(s0, rows.m, rows.M, group,
                                                                                 rows.protect), tr, start=start)
    if solved.f_x0 is None:  # f(x0) on the full float64 model
        solved.f_x0 = _margins(m64, rows.x0.double(), y, t, group)
    c0 = space.coords(x0.double(), origin)[group]  # float64 coordinates of x0: the centre of every bound

    def at(s: torch.Tensor) -> torch.Tensor:  # the solver's point re-centred: c0 + (s - s0), displacement exact
        return c0 + (s.double() - s0.double())

    tr64 = BoundTracker(tr.lb, tr.eta, at(tr.x_lb), at(tr.x_up), tr.d_up)
    res = finalise(space.model_on(m64, origin), Rows(c0, rows.m, rows.M, group, rows.protect), y, t, tr64, solved)
    res.x_show = space.points(rows.x0, res.x_show, c0)
    res.x_dual = space.points(rows.x0, res.x_dual, c0) if keep_dual and res.x_dual is not None else None
    return res


def finalise(m64: MLP, rows: Rows, y: torch.Tensor, t: torch.Tensor, tracker: BoundTracker,
             solved: FastResult | PaperResult) -> RowCertificates:
    """Recompute (*) in float64 on the float64 model ``m64`` at each row's best point; decide exactness.
    ``solved``: either solver's result (it leaves its points and bounds in ``tracker``). Rows the solver dropped
    (``solved.dropped``) are not ``refined``.

    Where the solver's first step proved f(x0) and an upper bound on ‖∇f(x0)‖ (``solved.grad_norm_up_x0``), rows
    still at x0 that are not protected (targets settled by their first step, which cannot be the image's minimum)
    take the bound (*) at x0 from these two numbers: (*) at x0 decreases in ‖∇f‖, so the radius is a proved lower
    bound, marginally looser and never ``exact``. Where it does not stay strictly above the image's minimum over
    its other rows, the row is finalised in float64 like the others: the per-image radius is the one the full
    float64 finalisation gives. Rows that keep the looser radius are not ``refined``."""
    oracle = MarginOracle(m64, y, t)
    x0, xb = rows.x0, tracker.x_lb  # the solver's dtype; rows are taken to float64 where they are evaluated
    settled = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)
    if solved.grad_norm_up_x0 is not None and solved.f_x0 is not None and rows.protect is not None:
        settled = (xb == x0).all(1) & ~rows.protect
    f0 = solved.f_x0 if solved.f_x0 is not None else _margins(m64, x0.double(), y, t, rows.group)
    res = RowCertificates.empty(tracker, solved.n_grad, solved.dropped)
    _finalise_rows(oracle, x0, xb, f0, rows.m, tracker, (~settled).nonzero()[:, 0], res)
    if settled.any():
        s = settled.nonzero()[:, 0]
        g_up = solved.grad_norm_up_x0[s]
        zero = torch.zeros_like(g_up)
        lb, eta = dual_lower_bound(zero, f0[s], zero, zero, g_up * g_up, zero, rows.m[s])
        rad = (2 * torch.where(f0[s] > 0, lb.clamp_min(0), zero)).sqrt()
        others = torch.full((int(rows.group.max()) + 1,), float("inf"), dtype=torch.float64, device=x0.device)
        others.scatter_reduce_(0, rows.group[~settled], res.radius[~settled], reduce="amin")
        ok = rad > others[rows.group[s]]  # strictly: never the image's arg-min; NaN fails
        res.radius[s[ok]], res.eta[s[ok]], res.margin[s[ok]] = rad[ok], eta[ok], f0[s[ok]]
        res.refined[s[ok]] = False
        _finalise_rows(oracle, x0, xb, f0, rows.m, tracker, s[~ok], res)
    return res


def _finalise_rows(oracle: MarginOracle, x0: torch.Tensor, xb: torch.Tensor, f0: torch.Tensor, m: torch.Tensor,
                   tracker: BoundTracker, idx: torch.Tensor, res: RowCertificates) -> None:
    """Rows ``idx`` in float64: (*) at the best point xb from the float64 ∇f there, and the exactness test (one
    Newton step onto the boundary within the certified radius); written into ``res`` in place."""
    if idx.numel() == 0:
        return
    x0i, xbi, f0i = x0[idx].double(), xb[idx].double(), f0[idx]
    f, g = oracle(xbi, idx)
    lb, eta = bound_at(xbi, x0i, f, g, m[idx], tracker.eta[idx])
    rad = (2 * torch.where(f0i > 0, lb.clamp_min(0), torch.zeros_like(lb))).sqrt()
    x_on = xbi - (f / (g * g).sum(1).clamp_min(TINY_F64))[:, None] * g
    d_on = (x_on - x0i).norm(dim=1)
    near = (d_on - rad <= EXACT_DIST_RTOL * (1 + d_on)) & (rad > 0)  # only these can be exact: evaluate them
    f_on = f.clone()
    if near.any():
        f_on[near] = _margins(oracle.model, x_on[near], oracle.y[idx][near, 0], oracle.t[idx][near, 0])
    exact = near & (f_on.abs() <= EXACT_MARGIN_RTOL * (1 + f0i.abs()))
    res.radius[idx], res.exact[idx], res.eta[idx], res.margin[idx] = rad, exact, eta, f_on.where(exact, f)
    res.upper[idx] = torch.where(exact, d_on, tracker.d_up[idx])
    res.x_show[idx] = torch.where(exact[:, None], x_on.to(res.x_show.dtype), res.x_show[idx])
    res.n_grad[idx] += 1 + near.long()  # the float64 ∇f at xb and the Newton check's f


def _margins(model: MLP, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, group: torch.Tensor | None = None
             ) -> torch.Tensor:
    """f = z_y - z_t (N,) at rows x (N, D) by a forward pass only; with ``group`` (N,) the rows of one image share
    one point, so each image is evaluated once (x[first row of each image])."""
    if group is None:
        return margin(model(x), y, t)
    first = torch.ones_like(group, dtype=torch.bool)
    first[1:] = group[1:] != group[:-1]
    return margin(model(x[first])[torch.cumsum(first.long(), 0) - 1], y, t)


def _tighten_locally(m64: MLP, rows: Rows, y: torch.Tensor, t: torch.Tensor, res: RowCertificates) -> None:
    """Section 7.4 on the rows that are not exact (2-layer nets, float64 copy ``m64``): res.radius only ever grows
    (in place)."""
    assert res.x_dual is not None, "the local refinement starts at the dual's points (keep_dual)"
    todo = ~res.exact & (res.radius > 0)
    if todo.any():
        r_loc = local_certificate(m64, rows.x0.double()[todo], y[todo], t[todo],
                                  res.radius[todo], res.upper[todo], rows.M[todo], x_start=res.x_dual[todo].double())
        res.radius = res.radius.clone()
        res.radius[todo] = torch.maximum(res.radius[todo], r_loc)


def _reduce(res: RowCertificates, logits: torch.Tensor, pred: torch.Tensor, label: torch.Tensor, T: torch.Tensor,
            *, mode: str, targets: str, bound_method: str) -> CertificateBatch:
    """Per image: the minimum over its target rows; per class: rows scattered to their class ids."""
    B, nT = T.shape
    C, dev, dt = logits.shape[1], logits.device, logits.dtype
    correct = pred == label
    rad = torch.where(correct[:, None], res.radius.reshape(B, nT), torch.zeros(B, nT, dtype=res.radius.dtype,
                                                                              device=dev))
    j = rad.argmin(1)
    pick = torch.arange(B, device=dev) * nT + j

    def by_class(v: torch.Tensor, fill: float | bool | int) -> torch.Tensor:
        return torch.full((B, C), fill, dtype=v.dtype, device=dev).scatter_(1, T, v.reshape(B, nT))

    radius_by_class = by_class(rad, float("nan"))
    ru = runner_up(logits, pred)
    upper = res.upper.reshape(B, nT)
    return CertificateBatch(
        pred=pred, label=label, correct=correct, radius=rad.gather(1, j[:, None])[:, 0],
        target=torch.where(correct, T.gather(1, j[:, None])[:, 0], torch.full_like(pred, -1)),
        exact=res.exact[pick] & correct, eta=res.eta[pick], margin=res.margin[pick],
        n_grad=res.n_grad.reshape(B, nT).sum(1),
        upper=torch.where(correct, upper.min(1).values, torch.zeros_like(upper[:, 0])),
        x_boundary=res.x_show[pick].to(dt), runner_up=ru,
        runner_up_radius=radius_by_class.gather(1, ru[:, None])[:, 0], radius_by_class=radius_by_class,
        exact_by_class=by_class(res.exact & correct.repeat_interleave(nT), False),
        n_grad_by_class=by_class(res.n_grad, 0), logits=logits, refined_by_class=by_class(res.refined, False),
        target_by_row=T, x_boundary_by_row=res.x_show.reshape(B, nT, -1).to(dt), eta_by_row=res.eta.reshape(B, nT),
        margin_by_row=res.margin.reshape(B, nT), upper_by_row=upper, mode=mode, targets=targets,
        bound_method=bound_method)
