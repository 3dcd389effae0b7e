"""Adversarial-training losses for the empirical baselines of the paper's Table 14, batched and device-agnostic.

* :func:`pgd_training_loss`: L2 PGD adversarial training (Madry et al. 2018): cross-entropy at the worst point
  found by PGD in the ε-ball, min_θ E max_{‖δ‖ ≤ ε} CE(f(x + δ), y).
* :func:`trades_loss`: TRADES (Zhang et al. 2019): CE(f(x), y) + β · KL(p(x) ‖ p(x')), x' maximizing the KL term
  over the ε-ball by PGD started from x + 0.001·N(0, I) (as in the authors' code; the KL's gradient is 0 at x' = x).

Both are pure functions of (model, batch) returning ``(loss, stats)``: ``loss`` a scalar to ``backward()``,
``stats`` a dict of floats for logging. The inner maximization differentiates w.r.t. the perturbation only (no
gradients reach the parameters from it) and leaves the model's train/eval mode alone (MLPs have no dropout or batch
norm). Integrating a kind into a training step is::

    loss, stats = pgd_training_loss(model, x, y, eps=cfg.eps, steps=cfg.steps, step_size=cfg.step_size)
    opt.zero_grad(); loss.backward(); opt.step()

Call :func:`validate_adversarial_options` when the configuration is built, so bad values fail before any work.
The inner maximization is :func:`crc_core.attack.l2_pgd`, the one L2 PGD. Pixels stay in [0, 1] (``clamp``),
matching the models' input space. These are empirical defenses: they come with
no certificate (certify the trained model with CRC or another certificate).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attack import l2_pgd, random_ball_start
from .checks import check_attack_options, check_images, check_labels
from .errors import CRCError

TRADES_START_STD = 0.001  # TRADES' start x + 0.001·N(0, I): any nonzero start, since ∇KL = 0 at x' = x

# One-line explanations for the training kinds (CLI help, Train page)
EXPLANATIONS: dict[str, str] = {
    "pgd": "PGD adversarial training (Madry et al. 2018): each step trains on the worst point L2 PGD finds within "
           "ε of every image. Empirical robustness only, no certificate.",
    "trades": "TRADES (Zhang et al. 2019): cross-entropy on clean images plus β times the KL divergence between the "
              "predictions at the image and at the point within ε (found by PGD) where they differ most. Larger β "
              "trades clean accuracy for robustness. Empirical robustness only, no certificate.",
}


def validate_adversarial_options(*, eps: float, steps: int, step_size: float | None = None,
                                 beta: float | None = None) -> None:
    """Raise CRCError (one line) unless ε > 0, steps ≥ 1 (an integer), step size > 0 (or None) and β ≥ 0."""
    check_attack_options(eps=eps, steps=steps, step_size=step_size)
    if beta is not None and (isinstance(beta, bool) or not isinstance(beta, int | float) or not math.isfinite(beta)
                             or beta < 0):
        raise CRCError(f"The TRADES weight β must be a finite number ≥ 0, got {beta!r}.")


def _check_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(model, nn.Module):
        raise CRCError(f"Expected a torch model, got {type(model).__name__}.")
    check_labels(y, check_images(model, x).shape[0], getattr(model, "n_classes", None), x.device)


def _delta_max(x: torch.Tensor, x_adv: torch.Tensor) -> float:
    return float((x_adv - x).flatten(1).norm(dim=1).max())


def pgd_training_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 10,
                      step_size: float | None = None, random_start: bool = True, clamp: bool = True,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Madry et al.'s L2 PGD training loss: CE(f(x_adv), y), x_adv = PGD on CE within ‖δ‖₂ ≤ ε.

    x (B, ...) in [0, 1], y (B,) labels. ``random_start``: start uniformly in the ball (``generator`` for
    reproducibility), else at x. Returns (loss, stats) with stats: loss, clean_loss (CE at x, no gradient),
    adv_acc (accuracy at x_adv), delta_max (largest ‖x_adv − x‖, ≤ ε).
    """
    validate_adversarial_options(eps=eps, steps=steps, step_size=step_size)
    _check_batch(model, x, y)
    start = random_ball_start(x.detach(), eps, generator) if random_start else None
    x_adv = l2_pgd(lambda z: F.cross_entropy(model(z), y, reduction="none"), x, eps=eps, steps=steps,
                   step_size=step_size, start=start, clamp=clamp)
    logits_adv = model(x_adv)
    loss = F.cross_entropy(logits_adv, y)
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y)
    stats = {"loss": float(loss.detach()), "clean_loss": float(clean),
             "adv_acc": float((logits_adv.argmax(1) == y).float().mean()), "delta_max": _delta_max(x, x_adv)}
    return loss, stats


def trades_kl(logits_adv: torch.Tensor, p_clean: torch.Tensor) -> torch.Tensor:
    """Per-row KL(p_clean ‖ softmax(logits_adv)) (B,), p_clean (B, C) probabilities."""
    return F.kl_div(F.log_softmax(logits_adv, dim=1), p_clean, reduction="none").sum(1)


def trades_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, beta: float = 6.0, eps: float,
                steps: int = 10, step_size: float | None = None, clamp: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """TRADES (Zhang et al. 2019): CE(f(x), y) + β · mean KL(p(x) ‖ p(x')), x' = PGD on the KL within ‖δ‖₂ ≤ ε
    started at x + 0.001·N(0, I). β = 0 is plain cross-entropy (the inner maximization is then skipped).

    x (B, ...) in [0, 1], y (B,). Returns (loss, stats) with stats: loss, natural_loss (CE at x), robust_kl (mean
    KL at x'), adv_acc (accuracy at x'), delta_max (≤ ε). The paper's default β is 6 (1/λ in TRADES' notation).
    """
    validate_adversarial_options(eps=eps, steps=steps, step_size=step_size, beta=beta)
    _check_batch(model, x, y)
    logits = model(x)
    natural = F.cross_entropy(logits, y)
    if beta == 0:
        acc = float((logits.argmax(1) == y).float().mean())
        return natural, {"loss": float(natural.detach()), "natural_loss": float(natural.detach()),
                         "robust_kl": 0.0, "adv_acc": acc, "delta_max": 0.0}
    p_clean = F.softmax(logits.detach(), dim=1)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    x_adv = l2_pgd(lambda z: trades_kl(model(z), p_clean), x, eps=eps, steps=steps, step_size=step_size,
                   start=x.detach() + TRADES_START_STD * noise, clamp=clamp)
    logits_adv = model(x_adv)
    robust = trades_kl(logits_adv, F.softmax(logits, dim=1)).mean()
    loss = natural + beta * robust
    stats = {"loss": float(loss.detach()), "natural_loss": float(natural.detach()),
             "robust_kl": float(robust.detach()), "adv_acc": float((logits_adv.argmax(1) == y).float().mean()),
             "delta_max": _delta_max(x, x_adv)}
    return loss, stats
