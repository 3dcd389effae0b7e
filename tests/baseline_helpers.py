"""Attack harness for the baseline certificates (first-order, CROWN), shared by their tests and soundness suites.

Smooth activations use :func:`crc_core.testing.attack_certificates` (PGD, Algorithm 2 against every class,
bisection along random and gradient directions); ReLU nets, which Algorithm 2 and the analytic gradients refuse,
get targeted and untargeted PGD with restarts plus bisection along random and autograd-gradient directions.
"""

from __future__ import annotations

import torch

from crc_core.attack import pgd_attack
from crc_core.models import MLP
from crc_core.testing import CertificateCheck, attack_certificates

SHRINK = 1e-4  # attack at ρ(1 - SHRINK): a flip must lie strictly inside the certified ball


def to_float64(model: MLP) -> MLP:
    m = MLP.from_config(model.config()).double()
    m.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    for p in m.parameters():
        p.requires_grad_(False)
    return m.eval()


def margin(model: MLP, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    z = model(x)
    return z.gather(1, y[:, None])[:, 0] - z.gather(1, t[:, None])[:, 0]


def min_margin_in_ball(model: MLP, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, rho: torch.Tensor, *,
                       n_samples: int = 2000, pgd_steps: int = 100, seed: int = 0) -> torch.Tensor:
    """Smallest z_y - z_t found (float64 model) over ‖x - x0‖ ≤ ρ: uniform samples in the ball, samples on the
    sphere, and targeted PGD with restarts. An upper bound on the true minimum, (N,)."""
    m64 = to_float64(model)
    x0 = x0.double()
    N, D = x0.shape
    rho = torch.as_tensor(rho, dtype=torch.float64).reshape(-1).expand(N)
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(N, n_samples, D, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=2, keepdim=True)
    scale = torch.rand(N, n_samples, 1, generator=g, dtype=torch.float64) ** (1 / D)
    scale[:, : n_samples // 2] = 1.0  # half on the sphere, where extremes of near-linear margins sit
    pts = (x0[:, None] + rho[:, None, None] * scale * u).reshape(-1, D)
    with torch.no_grad():
        f = margin(m64, pts, y.repeat_interleave(n_samples), t.repeat_interleave(n_samples)).reshape(N, n_samples)
    best = f.min(1).values
    xa, _ = pgd_attack(m64, x0, y, rho * (1 - SHRINK), target=t, steps=pgd_steps, restarts=3, clamp=False,
                       seed=seed)
    with torch.no_grad():
        return torch.minimum(best, margin(m64, xa, y, t))


def _relu_attack(model: MLP, x0: torch.Tensor, pred: torch.Tensor, radius: torch.Tensor, seed: int
                 ) -> CertificateCheck:
    m64 = to_float64(model)
    keep = radius > 0
    x0, pred, radius = x0[keep].double(), pred[keep], radius[keep].double()
    N, D = x0.shape
    if N == 0:
        return CertificateCheck(0, 0, float("inf"), 0)
    rho = radius * (1 - SHRINK)
    closest = torch.full((N,), float("inf"), dtype=torch.float64)

    def judge(x: torch.Tensor) -> None:
        with torch.no_grad():
            flipped = m64(x).argmax(1) != pred
        ratio = (x - x0).norm(dim=1) / radius
        closest.copy_(torch.minimum(closest, torch.where(flipped, ratio, torch.inf)))

    judge(pgd_attack(m64, x0, pred, rho, steps=80, restarts=3, clamp=False, seed=seed)[0])
    for t in range(model.n_classes):
        sel = pred != t
        tt = torch.where(sel, torch.full_like(pred, t), (pred + 1) % model.n_classes)
        judge(pgd_attack(m64, x0, pred, rho, target=tt, steps=60, restarts=2, clamp=False, seed=seed + t)[0])
    g = torch.Generator().manual_seed(seed)
    for _ in range(16):  # random directions, out to the sphere
        u = torch.randn(N, D, generator=g, dtype=torch.float64)
        judge(x0 + rho[:, None] * u / u.norm(dim=1, keepdim=True))
    violations = int((closest < 1 - 1e-6).sum())
    return CertificateCheck(N, violations, float(closest.min()), N * (4 + 2 * model.n_classes))


def attack_radii(model: MLP, x0: torch.Tensor, pred: torch.Tensor, radius: torch.Tensor, *, seed: int = 0
                 ) -> CertificateCheck:
    """Try to change the prediction of x0 (N, D) strictly inside ``radius`` (N,); rows with radius 0 skipped."""
    radius = radius.to(torch.float64).cpu()
    if model.activation_name == "relu":
        return _relu_attack(model, x0.cpu(), pred.cpu(), radius, seed)
    return attack_certificates(model, x0.cpu(), pred.cpu(), radius.to(x0.dtype), seed=seed)
