"""The events of a training run (documented in :func:`crc_core.train.train`): :class:`EventLog` builds them, keeps
them in ``history`` and passes each to the callback; :class:`StepStats` averages step statistics between events."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .metrics import EPOCH_METRIC_KEYS

__all__ = ["Event", "EventLog", "StepStats"]

Event = dict[str, Any]


class StepStats:
    """Running means of step statistics between two "step" events."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0

    def add(self, **values: float) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.n += 1

    def means(self) -> dict[str, float]:
        return {k: v / max(1, self.n) for k, v in self.sums.items()}


class EventLog:
    """Builds the events of one run (documented in :func:`train`), keeps them in ``history`` and passes each to
    the callback. ``steps_per_epoch`` / ``total_steps`` are set once the data is known."""

    def __init__(self, callback: Callable[[Event], None] | None) -> None:
        self.callback = callback
        self.history: list[Event] = []
        self.t_start = time.perf_counter()
        self.steps_per_epoch = 0
        self.total_steps = 0

    def seconds(self) -> float:
        return time.perf_counter() - self.t_start

    def emit(self, event: Event) -> None:
        self.history.append(event)
        if self.callback is not None:
            self.callback(event)

    def step(self, step: int, epoch: int, epoch_step: int, window: StepStats) -> None:
        """A "step" event with the means of ``window`` (the steps since the last one)."""
        self.emit({"kind": "step", "step": step, "epoch": epoch, "epoch_step": epoch_step,
                   "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
                   "seconds": self.seconds(), **window.means()})

    def epoch(self, epoch: int, step: int, train_means: dict[str, float], metrics: dict[str, Any] | None) -> None:
        """An "epoch" event; ``metrics`` None for an epoch skipped by eval_every (its evaluation keys are None)."""
        shown = metrics if metrics is not None else {"epoch": epoch, "step": step, **dict.fromkeys(EPOCH_METRIC_KEYS)}
        self.emit({"kind": "epoch", "epoch": epoch, "step": step, "seconds": self.seconds(),
                   "train_loss": train_means["loss"], "train_accuracy": train_means["accuracy"], **shown})

    def done(self, stopped: bool, step: int, metrics: dict[str, Any]) -> float:
        """The "done" event; returns the run's wall time."""
        seconds = self.seconds()
        self.emit({"kind": "done", "stopped": stopped, "step": step, "seconds": seconds, "metrics": dict(metrics)})
        return seconds
