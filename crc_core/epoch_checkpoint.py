"""Per-epoch training checkpoints: everything :func:`crc_core.train.train` needs to continue a run exactly.

One ``.pt`` file, rewritten atomically after every finished epoch (temp file in the same folder, fsync,
``os.replace``: a run killed at any moment leaves the previous epoch's file intact)::

    {"format": "crc-explorer-epoch-checkpoint", "version": 1,
     "config": TrainConfig.to_dict(), "n_train": int, "epoch": int, "step": int, "seconds": float,
     "model": state_dict, "optimizer": Adam state_dict, "regularizer": {layer: power-iteration vector},
     "rng": {"torch": ByteTensor, "shuffle": ByteTensor, "cuda": [ByteTensor]},
     "history": [events], "metrics": {last evaluation}[, "best": {"epoch", "metrics", "model": state_dict}]}

"best" (only under a ``keep`` rule other than "last", once an epoch was evaluated) holds the weights of the best
epoch so far, so a resumed run keeps the same one.

Read only through the loading gate (:func:`crc_core.safe_load.load_file`: its checks, then
``torch.load(weights_only=True)``). Resuming restores the weights, Adam's moments, the
regularizer's warm-start vectors and every random stream as they were at the end of the epoch, so the run goes on
as if it had never stopped: on CPU the final weights equal an uninterrupted run's bit for bit (tests/test_train.py).
This is not a model checkpoint for other tools (that is :mod:`crc_core.checkpoints`); it is removed or
overwritten by the next run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .checkpoints import atomic_write
from .errors import CheckpointError
from .safe_load import load_file

if TYPE_CHECKING:
    from .train import RunState, TrainConfig

__all__ = ["EPOCH_FORMAT_TAG", "EpochState", "epochs_done", "load_epoch_checkpoint", "restore_run",
           "save_epoch_checkpoint"]

EPOCH_FORMAT_TAG = "crc-explorer-epoch-checkpoint"
EPOCH_FORMAT_VERSION = 1
# Settings that may differ between the interrupted run and its continuation: they change neither the weights
# nor the data (where the files live, the device, how often to log, and how many epochs in all: more epochs
# continue the same random streams). Evaluation settings are not among them: evaluating may draw random numbers.
RESUMABLE_CHANGES = frozenset({"device", "data_root", "log_every", "epochs"})


@dataclass
class EpochState:
    """A loaded epoch checkpoint (tensors on the CPU); see the module docstring for the fields."""

    config: dict[str, Any]
    n_train: int
    epoch: int
    step: int
    seconds: float
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    regularizer: dict[int, torch.Tensor]
    rng: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] | None = None


def save_epoch_checkpoint(path: str | os.PathLike[str], run: RunState, *, epoch: int, seconds: float,
                          history: list[dict[str, Any]], metrics: dict[str, Any]) -> Path:
    """Write the state of ``run`` after ``epoch`` finished (atomically); return the path."""
    path = Path(path)
    dev = run.X.device
    cuda = [torch.cuda.get_rng_state(dev)] if dev.type == "cuda" else []
    payload = {"format": EPOCH_FORMAT_TAG, "version": EPOCH_FORMAT_VERSION, "config": run.config.to_dict(),
               "n_train": int(run.X.shape[0]), "epoch": int(epoch), "step": int(run.step), "seconds": float(seconds),
               "model": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
               "optimizer": run.opt.state_dict(),
               "regularizer": {k: v.detach().cpu() for k, v in run.reg.state.items()},
               "rng": {"torch": torch.get_rng_state(), "shuffle": run.shuffle.get_state(), "cuda": cuda},
               "history": list(history), "metrics": dict(metrics)}
    if run.best is not None:
        payload["best"] = {"epoch": int(run.best["epoch"]), "metrics": dict(run.best["metrics"]),
                           "model": {k: v.detach().cpu() for k, v in run.best["model"].items()}}
    atomic_write(path, lambda f: torch.save(payload, f), stale_age=0)  # one writer per file: any temp is stale
    return path


def load_epoch_checkpoint(path: str | os.PathLike[str], config: TrainConfig, n_train: int) -> EpochState:
    """Read ``path`` (weights_only=True) and check that it continues ``config`` on ``n_train`` training images.

    Raises :class:`~crc_core.errors.CheckpointError` for a missing, unreadable or foreign file, and for one made
    with other settings (naming them) or more epochs than ``config.epochs``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No epoch checkpoint to resume from: {path} does not exist.")
    try:
        raw = load_file(path)[1]  # the loading gate every file goes through (crc_core.safe_load)
    except CheckpointError as exc:
        raise CheckpointError(f"{path} is not a readable epoch checkpoint (refused or corrupt): {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != EPOCH_FORMAT_TAG:
        raise CheckpointError(f"{path} is not an epoch checkpoint of crc_core.train.")
    if raw.get("version") != EPOCH_FORMAT_VERSION:
        raise CheckpointError(f"{path} has epoch-checkpoint version {raw.get('version')}, this crc_core reads "
                              f"{EPOCH_FORMAT_VERSION}.")
    try:
        state = EpochState(**{k: v for k, v in raw.items() if k not in ("format", "version")})
    except TypeError:
        raise CheckpointError(f"{path} is an epoch checkpoint with missing or unknown fields.") from None
    want, have = config.to_dict(), state.config
    # a setting added to TrainConfig since the file was written counts as unchanged at its default value
    defaults = {f.name: f.default for f in fields(config)}
    differ = sorted(k for k in set(want) | set(have) if k not in RESUMABLE_CHANGES
                    and want.get(k) != have.get(k, defaults.get(k)))
    if differ:
        shown = ", ".join(f"{k}: {have.get(k)!r} there, {want.get(k)!r} now" for k in differ)
        raise CheckpointError(f"{path} belongs to a run with other settings ({shown}); start a new run instead.")
    if state.n_train != n_train:
        raise CheckpointError(f"{path} was trained on {state.n_train} images, this run has {n_train}.")
    best_keys = {"epoch", "metrics", "model"}
    if state.best is not None and not (isinstance(state.best, dict) and best_keys <= set(state.best)):
        raise CheckpointError(f"{path} has a malformed record of the best epoch so far.")
    if state.epoch > config.epochs:
        raise CheckpointError(f"{path} has {state.epoch} epochs done, more than epochs={config.epochs}.")
    return state


def epochs_done(path: str | os.PathLike[str]) -> int:
    """Finished epochs recorded in the epoch checkpoint at ``path`` (read with weights_only=True); 0 when the
    file is unreadable (train() reports why when it loads it)."""
    try:
        raw = load_file(path)[1]
    except CheckpointError:
        return 0
    return int(raw.get("epoch", 0)) if isinstance(raw, dict) and raw.get("format") == EPOCH_FORMAT_TAG else 0


def restore_run(run: RunState, state: EpochState) -> None:
    """Put ``state`` into a freshly started ``run`` (model, optimizer, regularizer, random streams, step)."""
    dev = run.X.device
    run.model.load_state_dict(state.model)
    run.opt.load_state_dict(state.optimizer)
    run.reg.state.clear()
    run.reg.state.update({k: v.to(dev) for k, v in state.regularizer.items()})
    torch.set_rng_state(state.rng["torch"])
    run.shuffle.set_state(state.rng["shuffle"])
    if dev.type == "cuda" and state.rng.get("cuda"):
        torch.cuda.set_rng_state(state.rng["cuda"][0], dev)
    run.step = state.step
    run.best = None if state.best is None else {**state.best,
                                                "model": {k: v.to(dev) for k, v in state.best["model"].items()}}
