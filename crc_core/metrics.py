"""THE evaluation numbers, one meaning each: training curves, :func:`crc_core.evaluate.evaluate`, sweeps and the
app call these.

- ``accuracy``: fraction of images whose prediction is their label.
- certified accuracy at ρ: fraction correctly classified with a certified radius ≥ ρ, against the runner-up class
  (``certified_accuracy``, the paper's) or every class (``certified_accuracy_all``, the classifier's).
- ``pgd_robust_accuracy`` at ρ: correct at x and at the point L2 PGD finds within ρ (one run from x); the cheap
  attack of the training curves.
- ``empirical_robust_accuracy`` at ρ: correct and fooled neither by L2 PGD nor by Algorithm 2 against the
  runner-up within ρ (:func:`attacks_at`; evaluate and sweeps).
Both robust accuracies are attacks, upper bounds on the true robust accuracy (a stronger attack can only lower
them). Every model is measured on the same images: :func:`fixed_eval_sample`.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from .attack import AttackResult, curvature_attack, pgd_attack
from .baselines.relu_quadratic import certified_at
from .bounds import Bounds, curvature_bounds
from .certify import certify
from .data import Dataset
from .models import MLP
from .targets import runner_up

__all__ = ["ACCURACY_BATCH", "EPOCH_METRIC_KEYS", "EVAL_PGD_STEPS", "EVAL_SAMPLE_SEED", "accuracy", "attacks_at",
           "certified_accuracy", "epoch_metrics", "fixed_eval_sample", "pgd_robust", "upgrade_metric_keys"]

EVAL_SAMPLE_SEED = 20200712  # fixed: every model is certified on the same test images
ACCURACY_BATCH = 2000  # images per forward pass when measuring clean accuracy
EVAL_PGD_STEPS = 50  # PGD steps of the per-epoch robust accuracy (as crc_core.evaluate's default)
EPOCH_METRIC_KEYS = ("test_accuracy", "pgd_robust_accuracy", "certified_accuracy", "certified_accuracy_all",
                     "mean_K_ub", "eval_rho", "eval_samples", "eval_seconds")
# run records written before issue 22 called the training curves' PGD-only number "empirical_robust_accuracy"
_RENAMED_KEYS = {"empirical_robust_accuracy": "pgd_robust_accuracy"}


def upgrade_metric_keys(event: dict[str, Any]) -> dict[str, Any]:
    """A training event or metrics dict read back from an older run record, with today's key names."""
    return {_RENAMED_KEYS.get(k, k): v for k, v in event.items()}


def fixed_eval_sample(n_total: int, n: int) -> torch.Tensor:
    """Indices (min(n, n_total),) of the fixed evaluation sample: the same test images for every model and seed
    (training curves, sweeps and the benchmarks certify the same images)."""
    g = torch.Generator().manual_seed(EVAL_SAMPLE_SEED)
    return torch.randperm(n_total, generator=g)[: min(n, n_total)]


@torch.no_grad()
def accuracy(model: MLP, x: torch.Tensor, y: torch.Tensor, batch: int = ACCURACY_BATCH) -> float:
    """Fraction of images x (N, D) whose prediction is y (N,), in forward passes of ``batch`` images."""
    correct = 0
    for s in range(0, x.shape[0], batch):
        correct += int((model(x[s:s + batch]).argmax(1) == y[s:s + batch]).sum())
    return correct / max(1, x.shape[0])


def pgd_robust(model: MLP, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = EVAL_PGD_STEPS,
               step_size: float | None = None, clamp: bool = True) -> torch.Tensor:
    """(B,) bool: x (B, D) is classified y (B,) at x and at the last point of one L2 PGD run from x within ε (ascent
    on the margin loss max_{j≠y} z_j − z_y). Its mean is the pgd_robust_accuracy: an upper bound on the true robust
    accuracy (a stronger attack can only lower it). No gradient reaches the parameters. ``clamp``: PGD keeps
    pixels in [0, 1] (False for the 2-D toys' raw coordinates)."""
    x_adv, _ = pgd_attack(model, x, y, eps, steps=steps, step_size=step_size, keep_best=False, clamp=clamp)
    with torch.no_grad():
        return (model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)


def attacks_at(model: MLP, x: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, rho: float, *,
               pgd_steps: int = EVAL_PGD_STEPS, pgd_restarts: int = 1,
               bounds: Bounds | None = None, clamp: bool = True) -> tuple[torch.Tensor, AttackResult]:
    """The two attacks of the empirical robust accuracy at ρ on x (B, D) predicted ``pred`` (B,): (pgd_fooled (B,)
    bool, Algorithm 2 against ``target`` (B,), usually the runner-up). An image is empirically robust when it is
    correct and ``~(pgd_fooled | curvature.fooled)``. ``clamp``: PGD keeps pixels in [0, 1] (False for the 2-D
    toys' raw coordinates; Algorithm 2 never clamps)."""
    _, pgd_fooled = pgd_attack(model, x, pred, rho, steps=pgd_steps, restarts=pgd_restarts, clamp=clamp)
    return pgd_fooled, curvature_attack(model, x, pred, target, rho, bounds=bounds)


def _curvature_certificates(model: MLP, xs: torch.Tensor, ys: torch.Tensor, rho: float, *, all_targets: bool,
                            mode: str) -> dict[str, Any]:
    """CRC on the sample of a smooth net: certified_accuracy (runner-up), certified_accuracy_all (every class,
    None unless ``all_targets``; one certify call also yields the runner-up radius), mean_K_ub."""
    with torch.no_grad():
        logits = model(xs)
    pred = logits.argmax(1)
    t = runner_up(logits, pred)
    if all_targets:
        bounds = curvature_bounds(model)
        cert = certify(model, xs, ys, targets="all", mode=mode, bounds=bounds, refine="minimum")
        every = float((cert.correct & (cert.radius >= rho)).float().mean())
        ru, pair_bounds = cert.runner_up_radius, bounds.for_pairs(pred, t)
    else:
        pair_bounds = curvature_bounds(model, pred, t)
        cert = certify(model, xs, ys, targets="runner-up", mode=mode, bounds=pair_bounds)
        every, ru = None, cert.radius
    return {"certified_accuracy": float((cert.correct & (ru >= rho)).float().mean()),
            "certified_accuracy_all": every, "mean_K_ub": float(pair_bounds.K.mean())}


def _relu_certificates(model: MLP, xs: torch.Tensor, ys: torch.Tensor, rho: float, *,
                       all_targets: bool) -> dict[str, Any]:
    """App. G on the sample of a 2-layer ReLU net (one proof at ρ per image and target, no bisection); None for
    deeper ReLU nets, which have no certificate here. No mean_K_ub (ReLU has no curvature bound)."""
    if model.depth != 2:
        return {"certified_accuracy": None, "certified_accuracy_all": None, "mean_K_ub": None}
    ru = certified_at(model, xs, ys, rho, targets="runner-up")
    every = None
    if all_targets:  # only images certified against the runner-up can be certified against every class
        ok = torch.zeros_like(ru)
        if ru.any():
            ok[ru] = certified_at(model, xs[ru], ys[ru], rho, targets="all")
        every = float(ok.float().mean())
    return {"certified_accuracy": float(ru.float().mean()), "certified_accuracy_all": every, "mean_K_ub": None}


def _certificates(model: MLP, xs: torch.Tensor, ys: torch.Tensor, rho: float, *, all_targets: bool,
                  mode: str) -> dict[str, Any]:
    """The certificate keys of :data:`EPOCH_METRIC_KEYS` on (xs, ys) for a model in eval mode: CRC for smooth
    nets, App. G for ReLU nets (None beyond 2 layers)."""
    if model.activation_name == "relu":
        return _relu_certificates(model, xs, ys, rho, all_targets=all_targets)
    return _curvature_certificates(model, xs, ys, rho, all_targets=all_targets, mode=mode)


def certified_accuracy(model: MLP, x: torch.Tensor, y: torch.Tensor, rho: float, *,
                       mode: str = "fast") -> float | None:
    """Certified accuracy at ρ against the runner-up (the paper's) of images x (N, D) with labels y (N,), N ≥ 1:
    CRC for smooth nets, App. G for 2-layer ReLU nets, None for deeper ReLU nets (no certificate). Same numbers
    as :func:`epoch_metrics`' certified_accuracy on the same images; follows the model's device."""
    dev = model.layers[0].weight.device
    was_training = model.training
    model.eval()
    out = _certificates(model, x.to(dev), y.to(dev), rho, all_targets=False, mode=mode)
    model.train(was_training)
    return out["certified_accuracy"]


def epoch_metrics(model: MLP, test: Dataset | tuple[torch.Tensor, torch.Tensor], *, rho: float = 0.5,
                  eval_samples: int = 100, all_targets: bool = True, mode: str = "fast",
                  clamp: bool = True) -> dict[str, Any]:
    """The metrics reported after a training epoch (keys EPOCH_METRIC_KEYS, meanings in the module docstring) on a
    test set (images (N, D) in [0, 1], labels (N,)): test_accuracy on all N images, the others at ρ on the fixed
    sample of ``eval_samples`` images (None when 0). Certificates: CRC for smooth nets, App. G for 2-layer ReLU
    nets, none (None) for deeper ReLU nets; mean_K_ub: mean certification-grade K over the sample's (prediction,
    runner-up) pairs (None for ReLU). ``clamp`` as in :func:`pgd_robust`. Follows the model's device."""
    t0 = time.perf_counter()
    images, labels = (test.images, test.labels) if isinstance(test, Dataset) else test
    dev = model.layers[0].weight.device
    images, labels = images.to(dev), labels.to(dev)
    was_training = model.training
    model.eval()
    out: dict[str, Any] = {**dict.fromkeys(EPOCH_METRIC_KEYS), "test_accuracy": accuracy(model, images, labels),
                           "eval_rho": float(rho), "eval_samples": 0}
    if eval_samples > 0 and images.shape[0] > 0:
        idx = fixed_eval_sample(images.shape[0], eval_samples).to(dev)
        xs, ys = images[idx], labels[idx]
        out["eval_samples"] = int(xs.shape[0])
        out["pgd_robust_accuracy"] = float(pgd_robust(model, xs, ys, eps=rho, steps=EVAL_PGD_STEPS,
                                                      clamp=clamp).float().mean())
        out.update(_certificates(model, xs, ys, rho, all_targets=all_targets, mode=mode))
    out["eval_seconds"] = time.perf_counter() - t0
    model.train(was_training)
    return out
