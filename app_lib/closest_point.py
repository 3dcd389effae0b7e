"""The closest boundary point found for one image: x_b and the upper end of the distance, one meaning on every page.

The true distance from x0 to the decision boundary lies in [certified radius, upper end]. The **upper end** is the
distance of the closest point found where another class wins or ties, over every search the Certify page runs: the
certifier's boundary points (one per target, where it found one) and the attack's closest prediction change
(:func:`crc_core.compare.attack_upper_bound`, the number the "every certificate" chart shows). Each such point p is
moved along the segment x0 → p onto the boundary by bisection of the float64 margin (the margin is > 0 at x0 and
≤ 0 at p, so a zero lies between, no farther than p): **x_b** is that point, always on the decision boundary (to
2^-BISECT_STEPS of the segment), never a point where the prediction still holds. When no search found a point
where another class wins, there is no x_b and no upper end.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from crc_core.attack import pgd_attack
from crc_core.certify import CertificateBatch
from crc_core.compare import attack_upper_bound
from crc_core.models import MLP
from crc_core.slices import model_logits64
from crc_core.tolerances import EXACT_MARGIN_RTOL

BISECT_STEPS = 48  # halvings of the segment x0 → p: x_b lies within 2^-48 of its length from the zero of the margin
PUSH_STEPS = 40  # doublings of the outward push (1e-9 · 2^40 ≈ 1e3 segment lengths: far beyond any tie)
ATTACK_STEPS = 50  # the PGD steps of compare's attack (its default): the attack point is the one it measured


@dataclass(frozen=True)
class Boundary:
    """x_b (784,) float32, a point on the decision boundary; ``distance`` ‖x_b − x0‖ (the upper end of the
    distance); ``cls`` the class that ties with or beats the prediction there; ``found_by``: which search found the
    point it was moved from, in words ("the certifier (target Shirt)" or "the attack (L2 PGD)")."""

    x_b: torch.Tensor
    distance: float
    cls: int
    found_by: str


def margin64(model: MLP, points: torch.Tensor, pred: int) -> torch.Tensor:
    """z_pred − max_{j≠pred} z_j (K,) float64 of points (K, D) (any dtype/device), computed in float64 on the CPU."""
    w1, b1 = (p.detach().to("cpu", torch.float64) for p in (model.layers[0].weight, model.layers[0].bias))
    z = model_logits64(model, points.detach().to("cpu", torch.float64) @ w1.T + b1)
    others = z.clone()
    others[:, pred] = float("-inf")
    return z[:, pred] - others.amax(1)


def onto_boundary(model: MLP, x0: torch.Tensor, points: torch.Tensor, pred: int) -> torch.Tensor:
    """Points (K, D) float64 on the rays x0 → points[k] where the margin changes sign: each the end of the last
    bracket where another class wins or ties (margin ≤ 0). Needs margin(x0) > 0. A point whose margin is a hair
    above 0 (the certifier's "on the boundary" allows |f| ≤ EXACT_MARGIN_RTOL·(1 + |f(x0)|)) is first pushed out
    along its ray until another class ties."""
    x = x0.detach().to("cpu", torch.float64).reshape(1, -1)
    d = points.detach().to("cpu", torch.float64) - x
    lo = torch.zeros(d.shape[0], dtype=torch.float64)
    hi = torch.ones_like(lo)
    step = torch.full_like(lo, 1e-9)
    for _ in range(PUSH_STEPS):
        out = margin64(model, x + hi[:, None] * d, pred) > 0
        if not bool(out.any()):
            break
        lo, hi, step = torch.where(out, hi, lo), torch.where(out, hi + step, hi), torch.where(out, 2 * step, step)
    for _ in range(BISECT_STEPS):
        mid = (lo + hi) / 2
        holds = margin64(model, x + mid[:, None] * d, pred) > 0
        lo, hi = torch.where(holds, mid, lo), torch.where(holds, hi, mid)
    return x + hi[:, None] * d


def attack_point(model: MLP, x0: torch.Tensor, pred: int) -> torch.Tensor | None:
    """The attack's closest prediction change (D,) (compare's :func:`attack_upper_bound`, then its PGD at that
    distance to get the point itself), or None when it found none."""
    dev = model.layers[0].weight.device
    x = x0.reshape(1, -1).to(dev)
    y = torch.tensor([pred], device=dev)
    with torch.enable_grad():
        d = float(attack_upper_bound(model, x, y, pgd_steps=ATTACK_STEPS)[0])
        if not d < float("inf"):
            return None
        xa, _ = pgd_attack(model, x, y, d, steps=ATTACK_STEPS, clamp=False)
    return xa[0].detach() if float(margin64(model, xa, pred)[0]) <= 0 else None


def closest_boundary(model: MLP, x0: torch.Tensor, cert: CertificateBatch, class_names: list[str],
                     *, attack: bool = True) -> Boundary | None:
    """x_b of a correctly classified image: the closest of the certifier's boundary points (a one-image batch
    ``cert``) and the attack's point (with ``attack``), each moved onto the boundary; None when none was found."""
    pred = int(cert.pred[0])
    rows = torch.isfinite(cert.upper_by_row[0].detach().cpu())
    cands = [cert.x_boundary_by_row[0, j].detach().cpu().double()
             for j in torch.nonzero(rows).reshape(-1).tolist()]
    found = [f"the certifier (target {class_names[int(cert.target_by_row[0, j])]})"
             for j in torch.nonzero(rows).reshape(-1).tolist()]
    xa = attack_point(model, x0, pred) if attack else None
    if xa is not None:
        cands.append(xa.cpu().double())
        found.append("the attack (L2 PGD)")
    if not cands:
        return None
    pts = torch.stack(cands)
    f0 = float(margin64(model, x0.reshape(1, -1), pred)[0])
    keep = margin64(model, pts, pred) <= EXACT_MARGIN_RTOL * (1 + abs(f0))  # another class wins or ties
    if not bool(keep.any()):
        return None
    idx = torch.nonzero(keep).reshape(-1)
    on = onto_boundary(model, x0, pts[idx], pred)
    dist = (on - x0.detach().to("cpu", torch.float64).reshape(1, -1)).norm(dim=1)
    k = int(dist.argmin())
    w1, b1 = (p.detach().to("cpu", torch.float64) for p in (model.layers[0].weight, model.layers[0].bias))
    z = model_logits64(model, on[k:k + 1] @ w1.T + b1)[0]
    z[pred] = float("-inf")
    return Boundary(on[k].float(), float(dist[k]), int(z.argmax()), found[int(idx[k])])
