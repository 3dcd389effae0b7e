"""The training loop for every kind of :mod:`crc_core.training_kinds` (standard, γ-regularized, CRT, PGD, TRADES):
per step, the kind's loss + γ · mean K (K the Theorem 4 bound of the (label, strongest wrong class) margins,
differentiable through warm-started power iteration, :class:`~crc_core.bounds.CurvatureRegularizer`, App. C.1).

:func:`train` reports progress through a callback (``"step"`` events every ``log_every`` steps, ``"epoch"`` events
with :func:`crc_core.metrics.epoch_metrics`, one ``"done"`` event; :mod:`crc_core.train_log`), stops cleanly between
steps when ``should_stop()`` is true, and is repeatable for a seed (the global RNG is forked, so callers' random
state is untouched). It follows ``config.device``. ReLU nets train with the kinds that allow them; their epoch
metrics use the App. G certificate for 2-layer nets and none for deeper ones.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .bounds import CurvatureRegularizer
from .data import Dataset, in_unit_box, load_dataset
from .device import default_device
from .epoch_checkpoint import load_epoch_checkpoint, restore_run, save_epoch_checkpoint
from .errors import CRCError
from .metrics import certified_accuracy, epoch_metrics
from .models import MLP
from .targets import runner_up
from .train_config import KEEP_SCORES, TrainConfig
from .train_log import Event, EventLog, StepStats
from .training_kinds import KINDS

__all__ = ["RunState", "TrainConfig", "TrainResult", "config_epoch_metrics", "final_metrics", "kept_record",
           "run_epoch", "selection_split", "train"]


@dataclass
class TrainResult:
    """What :func:`train` returns.

    model: the trained MLP (eval mode, on the training device): the last weights, or the kept epoch's under a
    ``config.keep`` other than "last". history: every event emitted, in order.
    metrics: the evaluation of the returned weights' epoch (keys as in :func:`crc_core.metrics.epoch_metrics`, plus
    "epoch"): the last one, or the kept epoch's; empty if stopped before the first epoch ended. stopped: True when
    ``should_stop`` ended the run early. seconds: wall time. kept: None under keep="last"; else which epoch's
    weights were returned and why: {"rule", "epoch" (None: no epoch was evaluated), "test_accuracy", "reason"},
    plus "train_certified_accuracy" and "select_images" under keep="best-train-certified".
    """

    model: MLP
    history: list[Event] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    stopped: bool = False
    seconds: float = 0.0
    steps: int = 0
    kept: dict[str, Any] | None = None


# ---- Pieces of the loop --------------------------------------------------------------------------------------------
def config_epoch_metrics(model: MLP, config: TrainConfig, test: Dataset) -> dict[str, Any]:
    """:func:`crc_core.metrics.epoch_metrics` with the evaluation settings of ``config`` (eval_rho, ...)."""
    return epoch_metrics(model, test, rho=config.eval_rho, eval_samples=config.eval_samples,
                         all_targets=config.eval_all_targets, mode=config.eval_mode,
                         clamp=in_unit_box(config.dataset))


def final_metrics(config: TrainConfig, result: TrainResult, test: Dataset | None = None) -> dict[str, Any]:
    """The metrics that describe ``result.model`` as saved: ``result.metrics`` after a completed run; for a run
    stopped early (or before its first evaluation) the weights are evaluated now, as after an epoch, with
    "epoch" None. ``test`` defaults to config's test split (with its test_limit)."""
    if result.metrics and not result.stopped:
        return dict(result.metrics)
    if test is None:
        test = load_dataset(config.dataset, "test", root=config.data_root, limit=config.test_limit)
    return {"epoch": None, "step": result.steps, **config_epoch_metrics(result.model, config, test)}


def _build_model(config: TrainConfig, in_dim: int, n_classes: int, init_model: MLP | None) -> MLP:
    if init_model is None:
        return MLP(in_dim, list(config.widths), n_classes, config.activation)
    want = {"in_dim": in_dim, "widths": list(config.widths), "n_classes": n_classes,
            "activation": config.activation}
    if init_model.config() != want:
        raise CRCError(
            f"init_model is {init_model.config()} but the config asks for {want}; "
            "use a config with the model's widths and activation."
        )
    return copy.deepcopy(init_model)  # never modify the caller's (possibly cached, shared) model


def _load_data(config: TrainConfig, data: tuple[Dataset, Dataset] | None) -> tuple[Dataset, Dataset]:
    if data is not None:
        train_ds, test_ds = data
        if config.train_limit is not None:
            train_ds = train_ds.take(config.train_limit)
        if config.test_limit is not None:
            test_ds = test_ds.take(config.test_limit)
        return train_ds, test_ds
    train_ds = load_dataset(config.dataset, "train", root=config.data_root, limit=config.train_limit)
    test_ds = load_dataset(config.dataset, "test", root=config.data_root, limit=config.test_limit)
    return train_ds, test_ds


# ---- The loop: an epoch step, and train() around it ----------------------------------------------------------------
@dataclass
class RunState:
    """The state of one training run between epochs."""

    config: TrainConfig
    model: MLP
    X: torch.Tensor
    Y: torch.Tensor
    opt: torch.optim.Optimizer
    reg: CurvatureRegularizer
    shuffle: torch.Generator
    step: int = 0
    stopped: bool = False
    best: dict[str, Any] | None = None  # keep other than "last": {"epoch", "metrics", "model": state_dict}


def run_epoch(run: RunState, epoch: int, log: EventLog, should_stop: Callable[[], bool] | None) -> StepStats:
    """One pass over the shuffled training set (or until total_steps / should_stop); emits "step" events every
    ``log_every`` steps and at the end of the epoch. Returns the statistics of the epoch's steps (n = 0: none)."""
    config, n = run.config, run.X.shape[0]
    perm = torch.randperm(n, generator=run.shuffle).to(run.X.device)
    window, epoch_stats = StepStats(), StepStats()
    for epoch_step in range(1, log.steps_per_epoch + 1):
        if run.step >= log.total_steps:
            break
        if should_stop is not None and should_stop():
            run.stopped = True
            if window.n:  # report the steps done since the last event
                log.step(run.step, epoch, epoch_step - 1, window)
            break
        idx = perm[(epoch_step - 1) * config.batch_size: epoch_step * config.batch_size]
        stats = _train_step(run.model, run.opt, run.reg, run.X[idx], run.Y[idx], config, config.gamma_used)
        run.step += 1
        window.add(**stats)
        epoch_stats.add(**stats)
        if run.step % config.log_every == 0 or epoch_step == log.steps_per_epoch or run.step == log.total_steps:
            log.step(run.step, epoch, epoch_step, window)
            window = StepStats()
    return epoch_stats


def _start(config: TrainConfig, train_ds: Dataset, init_model: MLP | None, dev: torch.device) -> RunState:
    """Model, optimizer, regularizer and shuffling for a run (call inside the run's forked RNG)."""
    torch.manual_seed(config.seed)
    model = _build_model(config, train_ds.in_dim, train_ds.n_classes, init_model).to(dev)
    model.train()
    return RunState(config, model, train_ds.images.to(dev), train_ds.labels.to(dev),
                torch.optim.Adam(model.parameters(), lr=config.lr), CurvatureRegularizer(),
                torch.Generator().manual_seed(config.seed))


def train(config: TrainConfig, *, callback: Callable[[Event], None] | None = None,
          should_stop: Callable[[], bool] | None = None, init_model: MLP | None = None,
          data: tuple[Dataset, Dataset] | None = None, epoch_checkpoint: str | Path | None = None,
          resume: bool = False) -> TrainResult:
    """Train an MLP as ``config`` says; return a :class:`TrainResult`.

    Args:
        config: a validated :class:`TrainConfig`.
        callback: called with each event dict (also collected in ``history``):
            {"kind": "step", "step", "epoch", "epoch_step", "steps_per_epoch", "total_steps", "seconds",
             "loss", "ce", "mean_K", "accuracy"[, "attack_accuracy", "attack_grads", "robust_kl"]} every
             ``log_every`` steps (means over the window; accuracy on the clean batch; mean_K absent for ReLU nets;
             ce is TRADES' natural loss; attack_accuracy on the attacked batch for CRT, PGD and TRADES;
             attack_grads = gradient evaluations per attacked image for CRT; robust_kl for TRADES);
            {"kind": "epoch", "epoch", "step", "seconds", "train_loss", "train_accuracy", + the keys of
             :func:`crc_core.metrics.epoch_metrics` (None on epochs skipped by ``eval_every``)};
            {"kind": "done", "stopped", "step", "seconds", "metrics"}.
        should_stop: polled before every step; when it returns True the loop ends after the current step and
            the result has ``stopped=True`` with the model as trained so far (usable, finite; under
            a ``config.keep`` other than "last" the best evaluated epoch so far, when there is one).
        init_model: continue from these weights (copied; must match the config's architecture).
        data: (train, test) datasets to use instead of loading ``config.dataset`` (limits still apply).
        epoch_checkpoint: write the full training state there after every finished epoch
            (:mod:`crc_core.epoch_checkpoint`; atomic, so a killed run keeps its last finished epoch).
        resume: continue from ``epoch_checkpoint`` when that file exists (its history is replayed first, then
            training goes on from the next epoch; CheckpointError when it was made with other settings). On CPU
            the final weights equal those of an uninterrupted run, bit for bit.
    """
    if not isinstance(config, TrainConfig):
        raise CRCError(f"train() needs a TrainConfig, got {type(config).__name__}.")
    log = EventLog(callback)
    dev = default_device(config.device)
    train_ds, test_ds = _load_data(config, data)
    train_ds, select_ds = selection_split(config, train_ds)
    if len(train_ds) == 0:
        raise CRCError("The training set is empty.")
    log.steps_per_epoch = math.ceil(len(train_ds) / config.batch_size)
    log.total_steps = min(log.steps_per_epoch * config.epochs, config.max_steps or math.inf)
    metrics: dict[str, Any] = {}
    rng_devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        run = _start(config, train_ds, init_model, dev)
        first, metrics = _resume(run, log, epoch_checkpoint if resume else None, config, len(train_ds))
        for epoch in range(first, config.epochs + 1):
            epoch_stats = run_epoch(run, epoch, log, should_stop)
            if run.stopped or epoch_stats.n == 0:
                break
            finished = run.step >= log.total_steps or epoch == config.epochs
            evaluated = None
            if finished or epoch % config.eval_every == 0:
                metrics = evaluated = {"epoch": epoch, "step": run.step,
                                       **config_epoch_metrics(run.model, config, test_ds)}
                if select_ds is not None:
                    evaluated["train_certified_accuracy"] = _train_certified(run, select_ds, rng_devices)
            log.epoch(epoch, run.step, epoch_stats.means(), evaluated)
            if evaluated is not None:
                _consider_for_keeping(run, evaluated)
            if epoch_checkpoint is not None:
                save_epoch_checkpoint(epoch_checkpoint, run, epoch=epoch, seconds=log.seconds(), history=log.history,
                                      metrics=metrics)
            if run.step >= log.total_steps:
                break
    kept, metrics = _apply_keep(run, metrics)
    run.model.eval()
    seconds = log.done(run.stopped, run.step, metrics)
    return TrainResult(run.model, log.history, metrics, run.stopped, seconds, run.step, kept)


def selection_split(config: TrainConfig, train_ds: Dataset) -> tuple[Dataset, Dataset | None]:
    """(the images the run trains on, the images keep="best-train-certified" certifies after each evaluated epoch:
    the last select_images training images, or all when fewer; None under the other rules). Under
    select_held_out the second are not among the first; CRCError when that leaves nothing to train on."""
    if config.keep != "best-train-certified":
        return train_ds, None
    n = min(config.select_images, len(train_ds))
    select = Dataset(train_ds.images[-n:], train_ds.labels[-n:], list(train_ds.class_names), train_ds.name,
                     train_ds.source, train_ds.split)
    if not config.select_held_out:
        return train_ds, select
    if config.select_images >= len(train_ds):
        raise CRCError(f"Holding out select_images = {config.select_images} of the {len(train_ds)} training images "
                       "leaves none to train on: choose fewer.")
    return train_ds.take(len(train_ds) - n), select


def _train_certified(run: RunState, select: Dataset, rng_devices: list[int]) -> float | None:
    """keep="best-train-certified"'s score: certified accuracy at eval_rho (runner-up) on ``select``
    (:func:`selection_split`). The global random state is left as it was, so the rule never changes the training."""
    with torch.random.fork_rng(devices=rng_devices):
        return certified_accuracy(run.model, select.images, select.labels, run.config.eval_rho,
                                  mode=run.config.eval_mode)


def _consider_for_keeping(run: RunState, evaluated: dict[str, Any]) -> None:
    """Under a keep rule other than "last", copy the weights of an evaluated epoch into ``run.best`` when its score
    (:data:`~crc_core.train_config.KEEP_SCORES`) beats every earlier one (strictly: the earliest epoch wins a
    tie); nothing under keep="last"."""
    if run.config.keep == "last":
        return
    key = KEEP_SCORES[run.config.keep][0]
    if run.best is None or evaluated[key] > run.best["metrics"][key]:
        run.best = {"epoch": int(evaluated["epoch"]), "metrics": dict(evaluated),
                    "model": {k: v.detach().clone() for k, v in run.model.state_dict().items()}}


def _apply_keep(run: RunState, metrics: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Put the kept epoch's weights into ``run.model``; return (what was kept and why, its metrics)."""
    if run.config.keep == "last":
        return None, metrics
    if run.best is None:
        return kept_record(run.config, None), metrics
    run.model.load_state_dict(run.best["model"])
    return kept_record(run.config, run.best["metrics"]), dict(run.best["metrics"])


def kept_record(config: TrainConfig, best: dict[str, Any] | None) -> dict[str, Any]:
    """:attr:`TrainResult.kept` for ``config.keep`` (not "last") and the kept epoch's evaluation ``best`` (its
    "epoch", "test_accuracy" and the rule's score; None: no epoch was evaluated)."""
    rule = config.keep
    key, words = KEEP_SCORES[rule]
    record: dict[str, Any] = {"rule": rule, "epoch": None, "test_accuracy": None}
    if rule == "best-train-certified":
        record.update(train_certified_accuracy=None, select_images=config.select_images)
    if best is None:
        return {**record, "reason": "no epoch was evaluated before the run ended: the weights as trained"}
    epoch, score = int(best["epoch"]), best[key]
    record.update({"epoch": epoch, "test_accuracy": best["test_accuracy"], key: score})
    if rule == "best-test-accuracy":
        why = "the paper's selection, made on the test set"
    else:
        which = "held out of training" if config.select_held_out else "all, if fewer; they are trained on"
        why = (f"certified at rho = {config.eval_rho} against the runner-up on the last {config.select_images} "
               f"training images ({which}); no test image was read")
    return {**record, "reason": f"epoch {epoch} had the {words} ({score:.4f}) of the evaluated epochs; {why}"}


def _resume(run: RunState, log: EventLog, path: str | Path | None, config: TrainConfig,
            n_train: int) -> tuple[int, dict[str, Any]]:
    """Load the epoch checkpoint at ``path`` (if any) into ``run`` and replay its events into ``log``; return
    (first epoch to run, last evaluation). Without a file: (1, {})."""
    if path is None or not Path(path).is_file():
        return 1, {}
    state = load_epoch_checkpoint(path, config, n_train)
    restore_run(run, state)
    log.t_start -= state.seconds  # event times count the earlier part of the run too
    for event in state.history:
        log.emit(event)
    return state.epoch + 1, dict(state.metrics)


def _curvature_term(model: MLP, reg: CurvatureRegularizer, y: torch.Tensor, t: torch.Tensor,
                    gamma: float) -> torch.Tensor | None:
    """K (B,) of the (y, t) margins: differentiable when γ > 0, measured without gradient (for the curves)
    otherwise; None for ReLU nets (no curvature bound)."""
    if model.activation_name == "relu":
        return None
    if gamma > 0:
        return reg(model, y, t)
    with torch.no_grad():
        return reg(model, y, t)


def _attack_bounds(model: MLP, reg: CurvatureRegularizer, y: torch.Tensor, t: torch.Tensor,
                   K: torch.Tensor | None, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The CRT attack's curvature bounds (m, K), each (B,), as ``config.attack_bounds`` says; None for other kinds."""
    if not KINDS[config.kind].crt_attack or K is None:
        return None
    if config.attack_bounds == "theorem3":
        m, M = reg.theorem3_estimate(model, y, t)
        return m, torch.maximum(-m, M)
    K = K.detach()
    return -K, K


def _train_step(model: MLP, opt: torch.optim.Optimizer, reg: CurvatureRegularizer, x: torch.Tensor,
                y: torch.Tensor, config: TrainConfig, gamma: float) -> dict[str, float]:
    """One optimizer step on a batch x (B, D), y (B,); returns scalar statistics for the logs (mean_K only for
    smooth activations)."""
    with torch.no_grad():
        clean_logits = model(x)
    t = runner_up(clean_logits, y)
    K = _curvature_term(model, reg, y, t, gamma)
    base, ce, extra = KINDS[config.kind].loss(model, x, y, t, _attack_bounds(model, reg, y, t, K, config), config)
    loss = base + gamma * K.mean() if gamma > 0 and K is not None else base
    if not torch.isfinite(loss):
        k_text = f", mean K {float(K.detach().mean())}" if K is not None else ""
        raise CRCError(
            f"Training diverged: the loss became {float(loss.detach())} (cross-entropy {float(ce.detach())}"
            f"{k_text}). Lower the learning rate (now {config.lr:g}) or γ (now {gamma:g})."
        )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    stats = {"accuracy": float((clean_logits.argmax(1) == y).float().mean()), "loss": float(loss.detach()),
             "ce": float(ce.detach()), **extra}
    if K is not None:
        stats["mean_K"] = float(K.detach().mean())
    return stats
