"""2-D decision-region slices through an image: the plane x0 + a·u + b·v, u towards the closest boundary point.

A certificate proves that no x with ‖x − x0‖ < r changes the prediction, in all D directions. A slice shows two of
them: u = (x_b − x0)/‖x_b − x0‖ (towards the closest boundary point the certifier found) and a second direction v
the caller picks (see :data:`SECOND_DIRECTIONS` and :func:`second_direction`), made orthonormal to u by
Gram–Schmidt. On a G×G grid of (a, b) the predicted class and the margin z_y − max_{j≠y} z_j (y: the class at x0)
are evaluated in float64. In this plane the disc of radius r around x0 is a slice of the certified ball, so it holds
no grid point of another class; a slice cannot show anything about the other D − 2 directions.

Speed: the first layer is affine, so W1(x0 + a·u + b·v) + b1 = (W1 x0 + b1) + a·(W1 u) + b·(W1 v) is formed from
three vectors of width N1 without ever building the G²×D points (bench/bench_slice.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import TYPE_CHECKING

import torch

from .attack import pgd_attack
from .errors import CRCError
from .hessian import margin_hessian_eigh
from .models import MLP, require_curvature_model

if TYPE_CHECKING:  # only a type: slices reads a certificate's public fields, it never runs the certifier
    from .certify import CertificateBatch

SECOND_DIRECTIONS: tuple[str, ...] = ("hessian-top", "hessian-bottom", "pgd", "target", "random")

# A second direction whose part orthogonal to u is below this fraction of its length is numerically parallel to u:
# the plane is undefined (Gram–Schmidt would amplify round-off into an arbitrary direction).
DEGENERATE_RTOL = 1e-3
# x_b closer to x0 than this (in L2, pixels in [0, 1]) defines no direction: float64 round-off is ~1e-16 per pixel.
MIN_BOUNDARY_DISTANCE = 1e-9
# The logits of x0 must match the certificate's to this tolerance (float32 forward passes of one image may differ in
# the last bits between batch sizes), or x0 is not the certified image.
SAME_IMAGE_RTOL = 1e-4
# Grids from 3×3 (the smallest with a centre point) up to 1001×1001 (~1M forward passes; larger is never needed
# for a picture a few hundred pixels wide).
MIN_GRID, MAX_GRID = 3, 1001
# Default half side of the square, in units of the largest of ‖x_b − x0‖, r and ρ: x_b, both circles and some of
# the region beyond the boundary stay in view.
EXTENT = 1.6
# Grid points per forward chunk: bounds memory to CHUNK·max(N_I) float64 numbers (~64 MiB for width 1024).
CHUNK = 8192


@dataclass
class DecisionSlice:
    """A G×G slice of the decision regions around x0.

    a (G,), b (G,): in-plane coordinates (L2 distance along u and v, pixels in [0, 1]); grid point [i, j] is
    x0 + a[j]·u + b[i]·v (rows follow b, columns follow a, as an image / a Plotly heatmap expects).
    classes (G, G) int64: the predicted class; margin (G, G) float64: z_y − max_{j≠y} z_j, > 0 where y still wins.
    x0_ab = (0, 0); xb_ab = (‖x_b − x0‖, 0); xb_margin: the margin at x_b itself (≈ 0 for a boundary point, > 0 when
    the certifier found none and x_b is only its dual point); y: the class at x0; radius: the certified radius r and
    rho the attack budget ρ, both passed through (rho may be None); u, v (D,) float64: the orthonormal axes;
    second: how v was chosen (a label for captions).
    """

    a: torch.Tensor
    b: torch.Tensor
    classes: torch.Tensor
    margin: torch.Tensor
    x0_ab: tuple[float, float]
    xb_ab: tuple[float, float]
    xb_margin: float
    y: int
    radius: float
    rho: float | None
    u: torch.Tensor
    v: torch.Tensor
    second: str = ""

    def inside(self, radius: float) -> torch.Tensor:
        """(G, G) bool: grid points strictly closer than ``radius`` to x0 (in the plane, hence in ℝ^D)."""
        return self.a[None, :] ** 2 + self.b[:, None] ** 2 < radius**2


def plane_basis(x0: torch.Tensor, x_b: torch.Tensor, direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal (u, v), float64 (D,) each: u towards x_b, v = ``direction`` with its u-part removed, normalised.

    Raises CRCError when x_b ≈ x0 or when ``direction`` is zero, not finite or (numerically) parallel to u.
    """
    x0, x_b, d = (_flat64(t, name) for t, name in ((x0, "x0"), (x_b, "x_b"), (direction, "the second direction")))
    if not (x0.shape == x_b.shape == d.shape):
        raise CRCError(f"x0, x_b and the second direction must have the same length; got {x0.numel()}, "
                       f"{x_b.numel()} and {d.numel()}.")
    e = x_b - x0
    dist = float(e.norm())
    if dist < MIN_BOUNDARY_DISTANCE:
        raise CRCError(f"x_b coincides with x0 (distance {dist:.3g}): no direction towards the boundary to draw.")
    u = e / dist
    dn = float(d.norm())
    if dn == 0.0:
        raise CRCError("The second direction is zero: pick another one.")
    w = d - (d @ u) * u
    w = w - (w @ u) * u  # a second pass keeps u·v at round-off level when d is nearly parallel to u
    wn = float(w.norm())
    if wn < DEGENERATE_RTOL * dn:
        raise CRCError(f"The second direction is parallel to the direction of x_b (only {wn / dn:.2g} of it is "
                       "orthogonal): the two do not span a plane. Pick another direction.")
    return u, w / wn


def second_direction(model: MLP, x0: torch.Tensor, kind: str, *, y: int, t: int | None = None,
                     rho: float | None = None, other_boundary: torch.Tensor | None = None, seed: int = 0
                     ) -> torch.Tensor:
    """A candidate second axis (D,) float64 for the slice (not yet orthogonalised; see :func:`plane_basis`).

    kind: "hessian-top" / "hessian-bottom": eigenvector of the largest / smallest eigenvalue of ∇²(z_y − z_t) at x0
    (needs t); "pgd": x_pgd − x0 for an untargeted L2 PGD attack within ρ (needs rho); "target": towards another
    target's boundary point (needs other_boundary (D,)); "random": a Gaussian direction drawn from ``seed``.
    """
    if kind not in SECOND_DIRECTIONS:
        raise CRCError(f"Unknown slice direction {kind!r}; use one of {', '.join(SECOND_DIRECTIONS)}.")
    x = _flat64(x0, "x0")
    C = model.n_classes
    if not 0 <= int(y) < C:
        raise CRCError(f"The class y must lie in [0, {C - 1}], got {y}.")
    if kind.startswith("hessian"):
        if t is None or not 0 <= int(t) < C or int(t) == int(y):
            raise CRCError(f"The Hessian direction needs a target class t ≠ y in [0, {C - 1}], got {t!r}.")
        _vals, vecs = margin_hessian_eigh(model, x.to(model.layers[0].weight), int(y), int(t))
        return vecs[:, -1 if kind == "hessian-top" else 0].to(torch.float64).cpu()
    if kind == "pgd":
        if rho is None or not float(rho) > 0 or not torch.isfinite(torch.tensor(float(rho))):
            raise CRCError(f"The PGD direction needs a positive attack budget ρ, got {rho!r}.")
        w = model.layers[0].weight
        with torch.enable_grad():  # PGD differentiates the model, also when the caller is under no_grad
            x_adv, _fooled = pgd_attack(model, x[None].to(w), torch.tensor([int(y)], device=w.device), float(rho),
                                        seed=seed)
        return (x_adv[0].to(torch.float64).cpu() - x)
    if kind == "target":
        if other_boundary is None:
            raise CRCError("The 'target' direction needs the other target's boundary point.")
        ob = _flat64(other_boundary, "the other boundary point")
        if ob.shape != x.shape:
            raise CRCError(f"The other boundary point has {ob.numel()} values, x0 has {x.numel()}.")
        if float((ob - x).norm()) < MIN_BOUNDARY_DISTANCE:
            raise CRCError("The other target's boundary point coincides with x0: pick another target or direction.")
        return ob - x
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(x.numel(), generator=g, dtype=torch.float64)


@torch.no_grad()
def decision_slice(model: MLP, x0: torch.Tensor, x_b: torch.Tensor, direction: torch.Tensor, *, radius: float,
                   rho: float | None = None, y: int | None = None, half_width: float | None = None,
                   grid: int = 201, second: str = "") -> DecisionSlice:
    """Classes and margins on a ``grid``×``grid`` square of half side ``half_width`` centred on x0.

    x0, x_b, direction: (D,) (or (1, D)); radius: the certified radius r (≥ 0) and rho the budget ρ, shown as
    circles; y: the class whose margin is drawn (default: the prediction at x0); half_width defaults to
    EXTENT · max(‖x_b − x0‖, r, ρ). Grid odd or even; odd grids contain x0 itself at the centre.
    """
    require_curvature_model(model)
    D = model.in_dim
    r = _check_nonneg(radius, "The certified radius")
    rh = None if rho is None else _check_nonneg(rho, "ρ")
    if isinstance(grid, bool) or not isinstance(grid, Integral) or not MIN_GRID <= grid <= MAX_GRID:
        raise CRCError(f"The grid size must be an integer in [{MIN_GRID}, {MAX_GRID}], got {grid!r}.")
    u, v = plane_basis(x0, x_b, direction)
    if u.numel() != D:
        raise CRCError(f"The images have {u.numel()} values, the model expects {D}.")
    x = _flat64(x0, "x0")
    dist = float((_flat64(x_b, "x_b") - x).norm())
    h = EXTENT * max(dist, r, rh or 0.0) if half_width is None else _check_nonneg(half_width, "The half width")
    if not h > 0:
        raise CRCError("The slice's half width must be positive.")
    w1, b1 = (p.detach().to("cpu", torch.float64) for p in (model.layers[0].weight, model.layers[0].bias))
    z0, zu, zv = w1 @ x + b1, w1 @ u, w1 @ v  # (N1,) each
    yy = int(model_logits64(model, z0[None])[0].argmax()) if y is None else int(y)
    if not 0 <= yy < model.n_classes:
        raise CRCError(f"The class y must lie in [0, {model.n_classes - 1}], got {y}.")
    ax = h * (2 * torch.arange(grid, dtype=torch.float64) - (grid - 1)) / (grid - 1)  # exactly 0 at an odd centre
    A, B = ax[None, :].expand(grid, grid).reshape(-1), ax[:, None].expand(grid, grid).reshape(-1)
    grid = int(grid)
    classes = torch.empty(grid * grid, dtype=torch.long)
    margin = torch.empty(grid * grid, dtype=torch.float64)
    for s in range(0, grid * grid, CHUNK):
        sl = slice(s, s + CHUNK)
        z = model_logits64(model, z0 + A[sl, None] * zu + B[sl, None] * zv)
        classes[sl] = z.argmax(1)
        others = z.clone()
        others[:, yy] = float("-inf")
        margin[sl] = z[:, yy] - others.amax(1)
    zb = model_logits64(model, (z0 + dist * zu)[None])[0]  # x_b = x0 + dist·u
    xb_margin = float(zb[yy] - torch.cat([zb[:yy], zb[yy + 1:]]).max())
    return DecisionSlice(ax, ax.clone(), classes.reshape(grid, grid), margin.reshape(grid, grid), (0.0, 0.0),
                         (dist, 0.0), xb_margin, yy, r, rh, u, v, second)


def slice_from_certificate(model: MLP, x0: torch.Tensor, cert: CertificateBatch, *, index: int = 0,
                           second: str = "hessian-top", other_target: int | None = None, rho: float | None = None,
                           grid: int = 201, half_width: float | None = None, seed: int = 0) -> DecisionSlice:
    """The slice for image ``index`` of a :func:`crc_core.certify.certify` result on x0 (D,) (that image).

    u points to the certificate's boundary point x_b (its arg-min target t); ``second`` picks v (see
    :func:`second_direction`): the Hessian eigenvectors are those of ∇²(z_y − z_t); "target" goes towards the
    boundary point of ``other_target`` (which must have been certified, i.e. be in ``cert.target_by_row``, and
    have a boundary point found: a finite ``cert.upper_by_row``).
    """
    i = int(index)
    if not 0 <= i < cert.pred.shape[0]:
        raise CRCError(f"Image index {index} is out of range: the certificate holds {cert.pred.shape[0]} images.")
    y, t = int(cert.pred[i]), int(cert.target[i])
    w = model.layers[0].weight
    with torch.no_grad():
        z = model(_flat64(x0, "x0").to(w)[None])[0]
    if not torch.allclose(z, cert.logits[i].to(z), rtol=SAME_IMAGE_RTOL, atol=SAME_IMAGE_RTOL):
        raise CRCError(f"x0 is not image {i} of this certificate (the model's scores differ): pass that image.")
    if t < 0 or not bool(cert.correct[i]):
        raise CRCError("This image is misclassified: it has no certificate, hence no boundary point to draw.")
    other = None
    if second == "target":
        row = cert.target_by_row[i].tolist()
        if other_target is None or int(other_target) not in row or int(other_target) == t:
            raise CRCError(f"The 'target' direction needs another certified target class (one of "
                           f"{[c for c in row if c != t]}), got {other_target!r}.")
        j = row.index(int(other_target))
        if not bool(torch.isfinite(cert.upper_by_row[i, j])):
            raise CRCError(f"The certifier found no boundary point for target {int(other_target)} (it proved a "
                           "radius without one): pick another target or direction.")
        other = cert.x_boundary_by_row[i, j]
    d = second_direction(model, x0, second, y=y, t=t, rho=rho, other_boundary=other, seed=seed)
    label = second if second != "target" else f"target {other_target}"
    return decision_slice(model, x0, cert.x_boundary[i], d, radius=float(cert.radius[i]), rho=rho, y=y,
                          half_width=half_width, grid=grid, second=label)


def model_logits64(model: MLP, z1: torch.Tensor) -> torch.Tensor:
    """Logits (n, C) in float64 on the CPU from first-layer pre-activations z1 (n, N1) (the rest of the network)."""
    sigma = model.activation.fn
    h = z1
    for layer in model.layers[1:]:
        h = layer.weight.detach().to("cpu", torch.float64) @ sigma(h).T
        h = h.T + layer.bias.detach().to("cpu", torch.float64)
    return h


def _flat64(t: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or not torch.is_floating_point(t):
        raise CRCError(f"{name} must be a floating-point torch tensor, got {type(t).__name__}.")
    if t.dim() == 2 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 1:
        raise CRCError(f"{name} must be one flat image (D,) or (1, D), got shape {tuple(t.shape)}.")
    t = t.detach().to("cpu", torch.float64)
    if not torch.isfinite(t).all():
        raise CRCError(f"{name} contains NaN or infinite values.")
    return t


def _check_nonneg(value: float, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise CRCError(f"{name} must be a number, got {value!r}.") from None
    if not (v >= 0 and v != float("inf")):
        raise CRCError(f"{name} must be a finite number ≥ 0, got {value!r}.")
    return v
