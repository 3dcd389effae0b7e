"""The exact truth of a 2-D model: decision regions, the true distance to the boundary, measured curvature.

In two dimensions what a certificate bounds can be computed by brute force. :func:`true_distance` searches rays from
x0 (``n_angles`` directions, ``n_radii`` samples each up to ``r_max``) for the first point where the float64 model
predicts another class, then bisects that ray's crossing to ``BISECT_STEPS`` halvings. The point it returns is
another class's (evaluated, not assumed), so its distance is an upper bound on the true distance, exact to the grid:
a sliver of another class narrower than the rays' spacing (``r · 2π / n_angles`` at radius r) can be missed.
Every sound certificate's radius is ≤ that distance (tests/test_playground_soundness.py checks it).

Also here: the class and top-two margin over a square (:func:`plane_grid`), |λ|max of the margin Hessian over it
(:func:`curvature_grid`, the measured curvature that K_ub bounds), Algorithm 2's worst points for growing ρ
(:func:`attack_path`) and the linear pieces of a ReLU net (:func:`linear_pieces`). Everything is float64 on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .attack import curvature_attack
from .errors import CRCError
from .hessian import as_dtype, margin_hessian_eigvals
from .models import MLP

__all__ = ["BISECT_STEPS", "PlaneGrid", "TrueDistance", "attack_path", "curvature_grid", "linear_pieces",
           "plane_grid", "true_distance"]

BISECT_STEPS = 40  # halvings of a ray's bracket: 2^-40 of the radial step, far below anything drawn
_CHUNK = 65_536  # points per forward pass
_COARSE_ANGLES, _COARSE_STRIDE = 90, 4  # the coarse pass: 90 rays, every 4th radial sample


@dataclass
class PlaneGrid:
    """A G×G grid over [lo, hi]²: xs (G,), ys (G,); point [i, j] = (xs[j], ys[i]) (rows follow y, as a heatmap);
    classes (G, G) int64; margin (G, G) float64: top logit − second logit (0 on the boundary); lead (C, G, G)
    float64: z_c − max_{j≠c} z_j per class c (> 0 exactly inside class c's region, its zero line the boundary)."""

    xs: torch.Tensor
    ys: torch.Tensor
    classes: torch.Tensor
    margin: torch.Tensor
    lead: torch.Tensor

    @property
    def points(self) -> torch.Tensor:
        """(G·G, 2) float64, row-major as classes.reshape(-1)."""
        return _mesh(self.xs, self.ys)


@dataclass
class TrueDistance:
    """Per point (B,): distance to the closest other-class point found (inf: none within r_max), point (B, 2)
    (nan where none), and the search's resolution: n_angles rays, radial step r_max / n_radii, each crossing
    bisected BISECT_STEPS times."""

    distance: torch.Tensor
    point: torch.Tensor
    n_angles: int
    n_radii: int
    r_max: float

    @property
    def resolution(self) -> str:
        """One line for captions: how fine the search is."""
        return (f"{self.n_angles} rays ({360 / self.n_angles:.2g}° apart), {self.n_radii} samples per ray up to "
                f"{self.r_max:.3g}, each crossing bisected {BISECT_STEPS}×")


def _mesh(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    return torch.stack([xs[None, :].expand(len(ys), -1), ys[:, None].expand(-1, len(xs))], -1).reshape(-1, 2)


@torch.no_grad()
def _logits64(m64: MLP, x: torch.Tensor) -> torch.Tensor:
    """Logits (n, C) of a float64 model on points x (n, 2), in chunks."""
    return torch.cat([m64(x[s:s + _CHUNK]) for s in range(0, x.shape[0], _CHUNK)])


@torch.no_grad()
def _first_hits(m64: MLP, x: torch.Tensor, pred: torch.Tensor, dirs: torch.Tensor, steps: torch.Tensor,
                reach: torch.Tensor) -> torch.Tensor:
    """(B,) the smallest sampled radius reach·steps along dirs (A, 2) where another class wins (inf if none)."""
    radii = reach[:, None] * steps[None, :]
    pts = x[:, None, None, :] + radii[:, None, :, None] * dirs[None, :, None, :]
    other = _logits64(m64, pts.reshape(-1, 2)).argmax(1).reshape(*pts.shape[:3]) != pred[:, None, None]
    r = torch.where(other, radii[:, None, :], torch.full_like(radii[:, None, :], math.inf))
    return r.amin((1, 2))


def _check_2d(model: MLP) -> None:
    if model.in_dim != 2:
        raise CRCError(f"The plane's exact tools are for 2-D models; this one takes {model.in_dim} inputs.")


def plane_grid(model: MLP, lo: tuple[float, float], hi: tuple[float, float], n: int = 161) -> PlaneGrid:
    """Classes and top-two margins of ``model`` on an n×n grid over [lo_x, hi_x] × [lo_y, hi_y] (n ≥ 2)."""
    _check_2d(model)
    if not (n >= 2 and hi[0] > lo[0] and hi[1] > lo[1]):
        raise CRCError(f"The plotted square must have hi > lo and at least 2 points a side, got {lo}, {hi}, {n}.")
    xs = torch.linspace(lo[0], hi[0], n, dtype=torch.float64)
    ys = torch.linspace(lo[1], hi[1], n, dtype=torch.float64)
    z = _logits64(as_dtype(model, torch.float64), _mesh(xs, ys))
    top2 = z.topk(2, dim=1).values
    best_other = torch.where(z == top2[:, :1], top2[:, 1:2], top2[:, :1])  # max over j ≠ c, for every c
    lead = (z - best_other).T.reshape(-1, n, n)
    return PlaneGrid(xs, ys, z.argmax(1).reshape(n, n), (top2[:, 0] - top2[:, 1]).reshape(n, n), lead)


@torch.no_grad()
def true_distance(model: MLP, x0: torch.Tensor, *, r_max: float, n_angles: int = 720,
                  n_radii: int = 100) -> TrueDistance:
    """The distance from each x0 (B, 2) (or (2,)) to the closest point where ``model`` predicts another class
    than at x0, by dense polar search (module docstring): an upper bound on the true distance, exact to the grid."""
    _check_2d(model)
    if not (math.isfinite(r_max) and r_max > 0 and n_angles >= 8 and n_radii >= 2):
        raise CRCError("The search needs r_max > 0, at least 8 rays and 2 samples per ray.")
    m64 = as_dtype(model, torch.float64)
    x = model.flatten_input(x0).detach().to("cpu", torch.float64)
    B = x.shape[0]
    pred = _logits64(m64, x).argmax(1)
    theta = torch.arange(n_angles, dtype=torch.float64) * (2 * math.pi / n_angles)
    dirs = torch.stack([theta.cos(), theta.sin()], 1)  # (A, 2)
    steps = torch.arange(1, n_radii + 1, dtype=torch.float64) / n_radii  # (R,) in (0, 1]
    reach = torch.full((B,), float(r_max), dtype=torch.float64)
    if n_angles >= 4 * _COARSE_ANGLES:  # a coarse pass first: nothing closer than its hit can be missed by
        coarse = _first_hits(m64, x, pred, dirs[:: n_angles // _COARSE_ANGLES], steps[:: _COARSE_STRIDE], reach)
        reach = torch.minimum(reach, coarse)  # ... searching the fine grid only up to it (finer steps, same rays)
    radii = reach[:, None] * steps[None, :]  # (B, R)
    pts = x[:, None, None, :] + radii[:, None, :, None] * dirs[None, :, None, :]  # (B, A, R, 2)
    other = _logits64(m64, pts.reshape(-1, 2)).argmax(1).reshape(B, n_angles, n_radii) != pred[:, None, None]
    hit = other.any(2)  # (B, A)
    first = other.float().argmax(2)  # (B, A): index of the first other-class sample (0 where none)
    b_idx, a_idx = hit.nonzero(as_tuple=True)
    j = first[b_idx, a_idx]
    lo = torch.where(j > 0, radii[b_idx, (j - 1).clamp_min(0)], torch.zeros_like(j, dtype=torch.float64))
    hi = radii[b_idx, j]
    bound = torch.full((B,), math.inf, dtype=torch.float64).scatter_reduce(0, b_idx, hi, reduce="amin")
    keep = lo <= bound[b_idx]  # only rays whose bracket can hold the closest crossing are refined
    b_idx, a_idx, lo, hi = b_idx[keep], a_idx[keep], lo[keep], hi[keep]
    origin, d, want = x[b_idx], dirs[a_idx], pred[b_idx]
    for _ in range(BISECT_STEPS if hi.numel() else 0):
        mid = 0.5 * (lo + hi)
        flipped = _logits64(m64, origin + mid[:, None] * d).argmax(1) != want
        hi, lo = torch.where(flipped, mid, hi), torch.where(flipped, lo, mid)
    distance = torch.full((B,), math.inf, dtype=torch.float64)
    point = torch.full((B, 2), math.nan, dtype=torch.float64)
    if hi.numel():
        distance = distance.scatter_reduce(0, b_idx, hi, reduce="amin")
        best = hi == distance[b_idx]
        point[b_idx[best]] = origin[best] + hi[best, None] * d[best]
    return TrueDistance(distance, point, n_angles, n_radii, float(r_max))


def curvature_grid(model: MLP, grid: PlaneGrid, y: int, t: int) -> torch.Tensor:
    """(G, G) measured curvature max |λ(∇²(z_y − z_t))| at every grid point (exact eigenvalues, float64): what
    a certification-grade K_ub for the pair (y, t) bounds from above everywhere in the plane."""
    _check_2d(model)
    G = grid.xs.numel()
    pts = grid.points
    yy = torch.full((pts.shape[0],), int(y))
    tt = torch.full((pts.shape[0],), int(t))
    eig = margin_hessian_eigvals(model, pts, yy, tt, chunk_size=4096)
    return eig.abs().amax(1).reshape(G, G)


def attack_path(model: MLP, x0: torch.Tensor, y: int, t: int, radii: torch.Tensor) -> torch.Tensor:
    """Algorithm 2 (curvature attack, target t) at each ρ in ``radii`` (R,) > 0: its points (R, 2), the worst
    case inside each ρ-disc (where the attack proves primal = dual), joined they show where the attack heads."""
    _check_2d(model)
    m64 = as_dtype(model, torch.float64)
    r = torch.as_tensor(radii, dtype=torch.float64).reshape(-1)
    x = model.flatten_input(x0).detach().to("cpu", torch.float64).reshape(1, 2).expand(r.numel(), 2)
    res = curvature_attack(m64, x, torch.full((r.numel(),), int(y)), torch.full((r.numel(),), int(t)), r)
    return res.x


@torch.no_grad()
def linear_pieces(model: MLP, grid: PlaneGrid) -> torch.Tensor:
    """(G, G) int64: an id per ReLU activation pattern (on/off of every hidden unit); on each piece the net is
    affine, so its Hessian is 0 there and undefined on the kinks between pieces. Ids are 0, 1, ... in order of
    first appearance along the grid."""
    _check_2d(model)
    m64 = as_dtype(model, torch.float64)
    _, zs = m64.forward_all(grid.points)
    pattern = torch.cat([(z > 0) for z in zs], 1)
    _, ids = torch.unique(pattern, dim=0, return_inverse=True)
    G = grid.xs.numel()
    return ids.reshape(G, G)
