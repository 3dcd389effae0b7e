"""THE table of training kinds: what each kind is, which settings it uses, and its loss (train.py and sweeps read
it; the CLI and the app list it).

Per-sample loss (eq. 7): ℓ(z(x_in), y) + γ K(W, y, t), with y the true label, t the strongest wrong class
(largest logit among classes ≠ y, at the clean input; detached) and K the Theorem 4 bound. The kinds differ in
the input, the loss and γ:

* ``"standard"``: x_in = x, γ = 0 (K is still measured, without gradient, for the curves);
* ``"gamma"``:    x_in = x, loss + γ · mean K;
* ``"crt"``:      x_in = Algorithm 2's x_attack at radius ε (curvature attack with the bounds ``attack_bounds`` names:
  the detached K estimate, or Theorem 3's m and M), loss + γ · mean K;
* ``"pgd"``:      Madry et al.'s L2 PGD adversarial training at radius ``adv_eps``, γ = 0
  (:func:`crc_core.adversarial.pgd_training_loss`);
* ``"trades"``:   TRADES, CE + β · KL at the PGD point within ``adv_eps``, γ = 0
  (:func:`crc_core.adversarial.trades_loss`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from .activations import CURVATURE_ACTIVATIONS
from .adversarial import pgd_training_loss, trades_loss
from .attack import curvature_attack
from .data import in_unit_box
from .models import MLP

if TYPE_CHECKING:
    from .train_config import TrainConfig

__all__ = ["ADVERSARIAL_KINDS", "CURVATURE_KINDS", "KINDS", "RELU_KINDS", "TRAIN_ACTIVATIONS", "TrainingKind"]

TRAIN_ACTIVATIONS: tuple[str, ...] = (*CURVATURE_ACTIVATIONS, "relu")

# (model, x (B, D), y (B,), t (B,), the CRT attack's curvature bounds (m, K) each (B,) or None, config) -> (loss
# without the γ term, its cross-entropy part, extra statistics for the step events)
AttackBounds = tuple[torch.Tensor, torch.Tensor] | None
KindLoss = Callable[[MLP, torch.Tensor, torch.Tensor, torch.Tensor, AttackBounds, "TrainConfig"],
                    tuple[torch.Tensor, torch.Tensor, dict[str, float]]]


def _clean_loss(model: MLP, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, bounds: AttackBounds,
                config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Cross-entropy at the clean batch (standard, gamma)."""
    ce = F.cross_entropy(model(x), y)
    return ce, ce, {}


def _crt_loss(model: MLP, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, bounds: AttackBounds,
              config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Cross-entropy at Algorithm 2's point within crt_eps, with ``bounds`` (m, K) as its curvature bounds."""
    assert bounds is not None  # TrainConfig refuses CRT for ReLU nets
    attack = curvature_attack(model, x, y, t, config.crt_eps, m=bounds[0], K=bounds[1],
                              n_outer=config.attack_outer, n_inner=config.attack_inner)
    logits = model(attack.x)
    ce = F.cross_entropy(logits, y)
    return ce, ce, {"attack_grads": float(attack.n_grad.float().mean()),
                    "attack_accuracy": float((logits.detach().argmax(1) == y).float().mean())}


def _pgd_loss(model: MLP, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, bounds: AttackBounds,
              config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    loss, s = pgd_training_loss(model, x, y, eps=config.adv_eps, steps=config.adv_steps,
                                step_size=config.adv_step_size, random_start=config.adv_random_start,
                                clamp=in_unit_box(config.dataset))
    return loss, loss, {"attack_accuracy": s["adv_acc"]}


def _trades_loss(model: MLP, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, bounds: AttackBounds,
                 config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    loss, s = trades_loss(model, x, y, beta=config.trades_beta, eps=config.adv_eps, steps=config.adv_steps,
                          step_size=config.adv_step_size, clamp=in_unit_box(config.dataset))
    return loss, torch.tensor(s["natural_loss"]), {"attack_accuracy": s["adv_acc"], "robust_kl": s["robust_kl"]}


def _adversarial_settings(config: TrainConfig) -> dict[str, Any]:
    return {"eps": float(config.adv_eps), "steps": config.adv_steps, "step_size": config.adv_step_size}


@dataclass(frozen=True)
class TrainingKind:
    """One training kind. curvature: γ·K enters the loss (smooth activations only); adversarial: an empirical
    baseline of Table 14 (no curvature term); relu: a ReLU net can be trained with it; crt_attack: its inputs are
    Algorithm 2's points within crt_eps; loss: its :data:`KindLoss`; settings(config): its hyperparameters (run
    records, labels; their keys also say which CLI flags the kind uses); label(config): what follows the
    architecture in a model's label; title: its name in a sentence."""

    name: str
    title: str
    loss: KindLoss
    settings: Callable[[TrainConfig], dict[str, Any]]
    label: Callable[[TrainConfig], str]
    curvature: bool = False
    adversarial: bool = False
    relu: bool = False
    crt_attack: bool = False


KINDS: dict[str, TrainingKind] = {k.name: k for k in (
    TrainingKind("standard", "Standard", _clean_loss, lambda c: {}, lambda c: "standard", relu=True),
    TrainingKind("gamma", "γ-regularized", _clean_loss, lambda c: {"gamma": float(c.gamma)}, lambda c: f"γ={c.gamma:g}",
                 curvature=True),
    TrainingKind("crt", "CRT", _crt_loss, lambda c: {"gamma": float(c.gamma), "eps": float(c.crt_eps),
                                              "attack_outer": c.attack_outer, "attack_inner": c.attack_inner,
                                              "attack_bounds": c.attack_bounds},
                 lambda c: f"CRT γ={c.gamma:g} ε={c.crt_eps:g}", curvature=True, crt_attack=True),
    TrainingKind("pgd", "PGD", _pgd_loss, lambda c: {**_adversarial_settings(c), "random_start": c.adv_random_start},
                 lambda c: f"PGD ε={c.adv_eps:g}", adversarial=True, relu=True),
    TrainingKind("trades", "TRADES", _trades_loss, lambda c: {**_adversarial_settings(c), "beta": float(c.trades_beta)},
                 lambda c: f"TRADES β={c.trades_beta:g} ε={c.adv_eps:g}", adversarial=True, relu=True),
)}
CURVATURE_KINDS: tuple[str, ...] = tuple(k for k, v in KINDS.items() if v.curvature)  # ("gamma", "crt")
ADVERSARIAL_KINDS: tuple[str, ...] = tuple(k for k, v in KINDS.items() if v.adversarial)  # ("pgd", "trades")
RELU_KINDS: tuple[str, ...] = tuple(k for k, v in KINDS.items() if v.relu)  # ("standard", "pgd", "trades")
