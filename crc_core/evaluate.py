"""Evaluation in the paper's terms (Tables 2-5, App. H.1): one per-image table shared by the app and the CLI.

Columns per image: label, pred, correct, radius (all-class certificate), target, exact, n_grad, upper, runner_up,
runner_up_radius, certified (radius ≥ ρ), pgd_fooled, curv_fooled, attack_success (Algorithm 2 at ρ against the
runner-up reached ‖x - x0‖ = ρ, i.e. primal = dual), robust_empirical (correct and no attack fooled it at ρ).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .bounds import Bounds, Method, curvature_bounds
from .certify import SolverMode, certify
from .checks import check_images, check_labels
from .curvature_stats import PairCurvature, measured_curvature
from .errors import CRCError
from .metrics import attacks_at
from .models import MLP, require_curvature_model
from .targets import TargetMode


@dataclass
class Evaluation:
    """``table``: pandas DataFrame, one row per image; ``summary``: Table-2-style numbers (fractions in [0, 1])."""

    table: object
    summary: dict
    rho: float


def evaluate(model: MLP, images: torch.Tensor, labels: torch.Tensor, *, rho: float, targets: TargetMode = "all",
             mode: SolverMode = "fast", attacks: bool = True, pgd_steps: int = 50, pgd_restarts: int = 1,
             bounds: Bounds | None = None, batch_size: int = 256, local: bool = False,
             progress: Callable[[int, int], None] | None = None, clamp: bool = True) -> Evaluation:
    """Certify (and attack at ρ) images (N, D) with labels (N,), in batches; ``progress(done, total)`` after each.

    Summary keys: n, clean_accuracy, certified_accuracy (correct and radius ≥ ρ for the chosen ``targets``),
    certified_accuracy_runner_up (the paper's, one target), empirical_robust_accuracy (:mod:`crc_core.metrics`:
    correct and fooled neither by PGD nor by Algorithm 2 at ρ; an upper bound on the true robust accuracy),
    mean_certificate (mean radius over correctly classified images), certificate_success_rate (fraction of
    correct images with an exact certificate), attack_success_rate (fraction of correct images where Algorithm 2
    at ρ proved its point is the worst case), median_n_grad. ``clamp``: PGD keeps pixels in [0, 1] (False for the
    2-D toys' raw coordinates).
    """
    import pandas as pd

    require_curvature_model(model)
    rho = float(rho)
    if not (rho > 0 and rho < float("inf")):
        raise CRCError(f"ρ must be a positive finite number, got {rho!r}.")
    x = check_images(model, images)
    labels = check_labels(labels, x.shape[0], model.n_classes, x.device)
    if bounds is None:
        bounds = curvature_bounds(model)
    frames = []
    N = x.shape[0]
    for s in range(0, N, batch_size):
        xb, lb = x[s:s + batch_size], labels[s:s + batch_size]
        c = certify(model, xb, lb, targets=targets, mode=mode, bounds=bounds, local=local, refine="minimum")
        df = c.to_frame()
        df.insert(0, "index", range(s, s + xb.shape[0]))
        if targets not in ("runner-up", "all"):  # the paper's runner-up radius (in radius_by_class for "all")
            ru = certify(model, xb, lb, targets="runner-up", mode=mode, bounds=bounds, local=local)
            df["runner_up_radius"] = ru.radius.cpu().numpy()
        df["certified"] = (c.correct & (c.radius >= rho)).cpu().numpy()
        df["certified_runner_up"] = c.correct.cpu().numpy() & (df["runner_up_radius"].to_numpy() >= rho)
        if attacks:
            fooled, ca = attacks_at(model, xb, c.pred, c.runner_up, rho, pgd_steps=pgd_steps,
                                    pgd_restarts=pgd_restarts, bounds=bounds, clamp=clamp)
            df["pgd_fooled"] = fooled.cpu().numpy()
            df["curv_fooled"] = ca.fooled.cpu().numpy()
            df["attack_success"] = ca.success.cpu().numpy()
            df["robust_empirical"] = (c.correct & ~fooled & ~ca.fooled).cpu().numpy()
        frames.append(df)
        if progress is not None:
            progress(min(s + batch_size, N), N)
    table = pd.concat(frames, ignore_index=True)
    ok = table["correct"].to_numpy()
    n_ok = max(int(ok.sum()), 1)
    summary = {
        "n": int(N), "rho": rho, "local": local, "targets": targets, "mode": mode, "bound_method": bounds.method,
        "clean_accuracy": float(ok.mean()),
        "certified_accuracy": float(table["certified"].mean()),
        "certified_accuracy_runner_up": float(table["certified_runner_up"].mean()),
        "mean_certificate": float(table.loc[ok, "radius"].mean()) if ok.any() else 0.0,
        "certificate_success_rate": float((table["exact"] & ok).sum() / n_ok),
        "median_n_grad": float(table.loc[ok, "n_grad"].median()) if ok.any() else 0.0,
    }
    if attacks:
        summary["empirical_robust_accuracy"] = float(table["robust_empirical"].mean())
        summary["attack_success_rate"] = float((table["attack_success"] & ok).sum() / n_ok)
    return Evaluation(table, summary, rho)


def curvature_table(model: MLP, images: torch.Tensor, *, min_images: int = 1, method: str = "exact",
                    bounds: Bounds | None = None, bound_method: Method = "auto",
                    progress: Callable[[int, int], None] | None = None, batch_size: int = 256):
    """K_lb (App. H.1: largest |eigenvalue| over test images whose prediction is y and runner-up t) beside K_ub,
    per pair with at least ``min_images`` images: DataFrame with y, t, n_images, K_lb, K_ub, ratio; plus the
    averages in ``df.attrs``. ``progress(done, total)`` after every ``batch_size`` images (it may raise to
    cancel)."""
    import pandas as pd

    pc: PairCurvature = measured_curvature(model, images, method=method, progress=progress, batch_size=batch_size)
    if bounds is None:
        bounds = curvature_bounds(model, method=bound_method)
    mask = pc.mask(min_images)
    y, t = mask.nonzero(as_tuple=True)
    if y.numel() == 0:
        df = pd.DataFrame(columns=["y", "t", "n_images", "K_lb", "K_ub", "ratio"])
    else:
        K_ub = bounds.for_pairs(y, t).K
        K_lb = pc.K_lb[y, t]
        df = pd.DataFrame({"y": y.cpu().numpy(), "t": t.cpu().numpy(), "n_images": pc.count[y, t].cpu().numpy(),
                           "K_lb": K_lb.cpu().numpy(), "K_ub": K_ub.cpu().numpy(),
                           "ratio": (K_ub / K_lb).cpu().numpy()})
    df.attrs.update(mean_K_lb=float(df["K_lb"].mean()) if len(df) else float("nan"),
                    mean_K_ub=float(df["K_ub"].mean()) if len(df) else float("nan"),
                    bound_method=bounds.method, method=method)
    return df
