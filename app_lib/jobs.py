"""A training run in a worker thread, with progress events and a real stop (no Streamlit here).

Why a thread: Streamlit interrupts a running script on *any* click or page switch, so a loop inside the script can
neither tell a stop click from other clicks nor survive the user looking at another page. The worker calls
:func:`crc_core.train.train` with a callback that only appends events to a list and a ``should_stop`` that reads
a :class:`threading.Event`; the page polls the job (``st.fragment(run_every=...)``) to draw the curves.
The process-wide heavy-job lock is held for the whole run, so only one training (or other heavy job) runs at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crc_core.errors import CRCError
from crc_core.train import TrainConfig, TrainResult, train

SaveFn = Callable[[TrainResult], Path]


@dataclass
class TrainJob:
    """State of one training run. Read it from any thread; only the worker writes it."""

    config: TrainConfig
    name: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    status: str = "created"  # created | running | done | stopped | error
    error: str | None = None
    path: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ control
    def start(self, lock: threading.Lock, save: SaveFn) -> None:
        """Start the worker; raises CRCError when another heavy job holds ``lock``."""
        if not lock.acquire(blocking=False):
            raise CRCError("Another heavy job (a training run or a curvature survey) is running in this app. "
                           "Wait for it to finish or stop it, then start again.")
        self.status, self.started = "running", time.time()
        self._thread = threading.Thread(target=self._run, args=(lock, save), name="crc-train", daemon=True)
        try:
            self._thread.start()
        except BaseException:
            lock.release()
            self.status = "error"
            raise

    def stop(self) -> None:
        """Ask the run to end after the current step; the model so far is saved."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        return self.status == "running"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker ends (tests); True when it has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    # ------------------------------------------------------------------ progress
    def step_events(self) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("kind") == "step"]

    def epoch_events(self) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("kind") == "epoch"]

    def progress(self) -> float:
        """Fraction of the planned steps done, in [0, 1]."""
        steps = self.step_events()
        if not steps:
            return 0.0
        last = steps[-1]
        return min(1.0, last["step"] / max(1, last.get("total_steps", 1)))

    def elapsed(self) -> float:
        end = self.finished if self.finished else time.time()
        return max(0.0, end - self.started) if self.started else 0.0

    # ------------------------------------------------------------------ worker
    def _run(self, lock: threading.Lock, save: SaveFn) -> None:
        status = "error"
        try:
            result = train(self.config, callback=self.events.append, should_stop=self._stop.is_set)
            self.metrics = dict(result.metrics)
            if result.steps > 0:
                self.path = save(result)
            status = "stopped" if result.stopped else "done"
        except CRCError as exc:
            self.error = str(exc)
        except Exception as exc:  # reported on the page, never raised into Streamlit
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.finished = time.time()
            lock.release()
            self.status = status  # last: a page that sees the end can start the next job at once
