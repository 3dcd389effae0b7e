"""One trial, as a Ray worker runs it: train, then evaluate. No Ray and no disk writes here (the driver owns the
output folder, so a trial can run on any node of a cluster); :func:`execute_trial` returns everything to save.

Epoch-level resume: :func:`execute_trial` takes ``epoch_checkpoint`` and hands it to
:func:`crc_core.train.train`, which saves the full training state there after every epoch and continues from the
file when it exists (:mod:`crc_core.epoch_checkpoint`). The driver passes ``OUT/trials/<id>/last-epoch.pt``; the
worker uses it only when it sees the trial's folder (a local Ray, or a cluster on a shared filesystem), otherwise a
killed trial reruns from its first epoch. That file is the one exception to "no disk writes here"; a trial is
still finished only when its result.json exists, and the driver deletes the file then.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..compare import METHODS
from ..data import Dataset, in_unit_box, load_dataset
from ..device import describe_device
from ..evaluate import curvature_table
from ..metrics import accuracy, attacks_at, fixed_eval_sample
from ..models import MLP
from ..targets import runner_up
from ..train import TrainConfig, train
from .config import EvalSpec, Trial

__all__ = ["TrialOutput", "cert_column", "evaluate_trial", "execute_trial", "identity_columns"]


@dataclass
class TrialOutput:
    """What a finished trial sends back: the model (CPU, eval mode), its results row (flat, JSON-ready) and its
    run record (settings, timings, device, versions, per-epoch history)."""

    model: MLP
    row: dict[str, Any]
    record: dict[str, Any] = field(default_factory=dict)


def cert_column(method: str, target: str, rho: float) -> str:
    """Name of the certified-accuracy column, e.g. ``cert_crc_runner-up_0.5``."""
    return f"cert_{method}_{target}_{rho:g}"


def _attacks(model: MLP, x: torch.Tensor, y: torch.Tensor, spec: EvalSpec, clamp: bool = True,
             ) -> tuple[dict[str, float], dict[float, torch.Tensor]]:
    """Per ρ: :mod:`crc_core.metrics`' empirical robust accuracy (``empirical_robust_<ρ>``) and Algorithm 2's
    success rate (primal = dual).
    Also returns, per ρ, the (N,) mask of images an attack moved to another class within ρ."""
    with torch.no_grad():
        logits = model(x)
    pred = logits.argmax(1)
    correct = pred == y
    n_ok = max(1, int(correct.sum()))
    out: dict[str, float] = {}
    fooled_at: dict[float, torch.Tensor] = {}
    for rho in spec.rho:
        pgd_fooled, ca = attacks_at(model, x, pred, runner_up(logits, pred), rho, pgd_steps=spec.pgd_steps,
                                    clamp=clamp)
        fooled_at[rho] = pgd_fooled | ca.fooled
        out[f"empirical_robust_{rho:g}"] = float((correct & ~fooled_at[rho]).float().mean())
        out[f"attack_success_{rho:g}"] = float((ca.success & correct).sum()) / n_ok
    return out, fooled_at


def _curvature_metrics(model: MLP, x: torch.Tensor, spec: EvalSpec) -> dict[str, float | int]:
    """K_lb, K_ub (our default bound) and K_ub (Theorem 4) averaged over frequent pairs (App. H.1)."""
    ours = curvature_table(model, x, min_images=spec.curvature_min_images, method="power")
    thm4 = curvature_table(model, x, min_images=spec.curvature_min_images, method="power", bound_method="thm4")
    return {"K_lb": ours.attrs["mean_K_lb"], "K_ub": ours.attrs["mean_K_ub"], "K_ub_thm4": thm4.attrs["mean_K_ub"],
            "curvature_pairs": len(ours)}


def evaluate_trial(model: MLP, test: Dataset, spec: EvalSpec) -> dict[str, Any]:
    """The evaluation columns of a results row for ``model`` on ``test``.

    test_accuracy on every test image; on the fixed sample of ``spec.images`` images: for each method and
    supported target, ``cert_<method>_<target>_<ρ>`` (fraction certified at ρ), ``mean_radius_<method>_<target>``
    (over correctly classified images) and the method's extras; optionally attack and curvature columns. With
    attacks, ``violations_<method>_<ρ>`` counts images a deterministic method certified at ρ against every class
    that an attack nevertheless fooled within ρ: it must be 0 (anything else is a soundness bug).
    """
    t0 = time.perf_counter()
    dev = model.layers[0].weight.device
    images, labels = test.images.to(dev), test.labels.to(dev)
    row: dict[str, Any] = {"test_accuracy": accuracy(model, images, labels)}
    idx = fixed_eval_sample(images.shape[0], spec.images).to(dev)
    x, y = images[idx], labels[idx]
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    row["n_images"] = int(x.shape[0])
    fooled_at: dict[float, torch.Tensor] = {}
    if spec.attacks:
        attack_cols, fooled_at = _attacks(model, x, y, spec, in_unit_box(test.name))
        row.update(attack_cols)
    for name in spec.methods:
        method = METHODS[name]
        for target in spec.targets:
            if target not in method.targets:
                continue
            res = method.radii(model, x, y, target, spec.mode)
            for rho in spec.rho:
                certified = res.radius >= rho
                row[cert_column(name, target, rho)] = float(certified.float().mean())
                if target == "all" and method.deterministic and rho in fooled_at:  # certified yet fooled: a bug
                    row[f"violations_{name}_{rho:g}"] = int((certified & fooled_at[rho]).sum())
            row[f"mean_radius_{name}_{target}"] = float(res.radius[correct].mean()) if correct.any() else 0.0
            row.update({f"{k}_{name}_{target}": v for k, v in res.extras.items()})
    if spec.curvature:
        row.update(_curvature_metrics(model, x, spec))
    row["eval_seconds"] = time.perf_counter() - t0
    return row


def identity_columns(config: TrainConfig) -> dict[str, Any]:
    """The trial's settings as results columns (model label, dataset, architecture, training)."""
    return {"label": config.describe(), "dataset": config.dataset, "depth": len(config.widths) + 1,
            "widths": ",".join(map(str, config.widths)), "activation": config.activation, "kind": config.kind,
            "gamma": config.gamma_used, "crt_eps": config.crt_eps_used,
            "epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr, "seed": config.seed,
            "train_limit": config.train_limit, "test_limit": config.test_limit}


def _epochs_in(path: str | Path | None) -> int:
    """Epochs already done in an epoch checkpoint (0 when there is none); the file is checked again by train."""
    if path is None or not Path(path).is_file():
        return 0
    from ..epoch_checkpoint import epochs_done

    return epochs_done(path)


def execute_trial(trial: Trial, spec: EvalSpec, *, device: str = "cpu", threads: int | None = None,
                  epoch_checkpoint: str | Path | None = None) -> TrialOutput:
    """Train ``trial.config`` on ``device`` (threads: torch intra-op threads), evaluate, return the output.

    ``epoch_checkpoint``: save the training state there after every epoch, and continue from it when it exists
    (a trial killed mid-way loses at most one epoch). None: train from the first epoch, write nothing.

    Raises whatever training or evaluation raises (a CRCError for bad data or a diverged run); the driver
    records it as the trial's failure.
    """
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    config = dataclasses.replace(trial.config, device=device)
    started = time.time()
    train_ds = load_dataset(config.dataset, "train", root=config.data_root, limit=config.train_limit)
    test_ds = load_dataset(config.dataset, "test", root=config.data_root, limit=config.test_limit)
    resumed = _epochs_in(epoch_checkpoint)
    result = train(config, data=(train_ds, test_ds), epoch_checkpoint=epoch_checkpoint, resume=True)
    metrics = evaluate_trial(result.model, test_ds, spec)
    epochs = [{k: v for k, v in e.items() if k != "kind"} for e in result.history if e["kind"] == "epoch"]
    row = {"trial_id": trial.trial_id, **identity_columns(config), **metrics,
           "epochs_done": len(epochs), "train_seconds": result.seconds,
           "device": describe_device(result.model.layers[0].weight.device)}
    record = {"trial_id": trial.trial_id, "config": config.to_dict(), "evaluate": dataclasses.asdict(spec),
              "axes": trial.axes, "started_unix": started, "finished_unix": time.time(),
              "train_seconds": result.seconds, "eval_seconds": metrics["eval_seconds"], "device": row["device"],
              "resumed_after_epoch": resumed,
              "host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
              "history": {"epochs": epochs}}
    if result.kept is not None:  # keep other than "last": which epoch's weights these are, and why
        record["kept"] = result.kept
    return TrialOutput(result.model.cpu().eval(), row, record)
