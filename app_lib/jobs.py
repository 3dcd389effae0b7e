"""Training runs in worker threads, waiting in a first-come line for the machine (no Streamlit here).

Why a thread: Streamlit interrupts a running script on *any* click or page switch, so a loop inside the script can
neither tell a stop click from other clicks nor survive the user looking at another page. The worker calls
:func:`crc_core.train.train` with a callback that only appends events to a list and a ``should_stop`` that reads
a :class:`threading.Event`; the page polls the job (``st.fragment(run_every=...)``) to draw the curves.

One heavy job at a time: a run holds the process-wide heavy-job lock for its whole length. A run started while the
lock is taken (another run, or a curvature survey) does not fail: it joins a :class:`TrainQueue` and its worker
waits for the lock, polling with a short timeout so that a stop (the page's Cancel) takes effect at once. Only the
first job in the line tries to take the lock, so waiting runs start in the order they were submitted. A waiting job
leaves the line when it is cancelled, when its session has been gone for ``orphan_after`` seconds, or on any
error; a run releases the lock however it ends (even on an exception), so the next one starts by itself.
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

QUEUE_CAPACITY = 8  # waiting runs (besides the one that runs); more are refused with a clear message
POLL_SECONDS = 0.2  # how often a waiting worker looks at the lock, its stop flag and its session
ORPHAN_AFTER = 120.0  # seconds a waiting job's session may be gone before the job leaves the line


class TrainQueue:
    """The process-wide, first-come line of training jobs in front of the heavy-job ``lock``.

    ``capacity`` bounds the number of *waiting* jobs (the running one is not counted). Every method is safe to call
    from any thread; jobs use the private parts under ``_mutex``.
    """

    def __init__(self, lock: threading.Lock, capacity: int = QUEUE_CAPACITY, poll: float = POLL_SECONDS) -> None:
        if capacity < 0 or poll <= 0:
            raise ValueError("capacity must be ≥ 0 and poll > 0")
        self.lock, self.capacity, self.poll = lock, int(capacity), float(poll)
        self._mutex = threading.Lock()
        self._waiting: list[TrainJob] = []
        self.current: TrainJob | None = None  # the training job holding the lock (None: free, or another job)

    def waiting(self) -> list[TrainJob]:
        """The waiting jobs, first in line first."""
        with self._mutex:
            return list(self._waiting)

    def __len__(self) -> int:
        with self._mutex:
            return len(self._waiting)

    def ahead(self, job: TrainJob) -> int | None:
        """How many heavy jobs are ahead of a waiting ``job``: the one holding the machine plus those before it in
        the line (so at least 1); None when ``job`` is not waiting."""
        with self._mutex:
            try:
                return self._waiting.index(job) + 1
            except ValueError:
                return None

    def _remove(self, job: TrainJob) -> bool:  # caller holds _mutex
        try:
            self._waiting.remove(job)
            return True
        except ValueError:
            return False


@dataclass(eq=False)
class TrainJob:
    """State of one training run. Read it from any thread; the worker (and :meth:`stop` for a waiting job, under the
    queue's mutex) writes it."""

    config: TrainConfig
    name: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    status: str = "created"  # created | waiting | running | done | stopped | cancelled | error
    error: str | None = None
    path: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    queued: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _queue: TrainQueue | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ control
    def start(self, queue: TrainQueue, save: SaveFn, *, session_alive: Callable[[], bool] | None = None,
              orphan_after: float = ORPHAN_AFTER) -> None:
        """Start the run now when the machine is free and nobody waits, else join the end of ``queue``'s line
        (status ``waiting``; it starts by itself). Raises CRCError when the line is full.

        ``session_alive`` (optional) tells whether the user who asked is still there; a waiting job whose session
        has been gone for ``orphan_after`` seconds leaves the line, so a closed browser tab does not train for
        nobody. Errors of ``session_alive`` count as "alive".
        """
        if self.status != "created":
            raise CRCError("This training job was already started; create a new one.")
        lock = queue.lock
        with queue._mutex:
            have_lock = not queue._waiting and lock.acquire(blocking=False)
            if have_lock:
                queue.current = self
                self.status, self.started = "running", time.time()
            else:
                if len(queue._waiting) >= queue.capacity:
                    n = len(queue._waiting)
                    raise CRCError(
                        f"The line for training is full: {n} run{'s are' if n != 1 else ' is'} already waiting "
                        f"for the machine (at most {queue.capacity}), besides the one that runs now. "
                        "Try again in a few minutes.")
                queue._waiting.append(self)
                self.status, self.queued = "waiting", time.time()
            self._queue = queue
        self._thread = threading.Thread(target=self._work, args=(queue, save, have_lock, session_alive,
                                                                 float(orphan_after)),
                                        name="crc-train", daemon=True)
        try:
            self._thread.start()
        except BaseException:
            with queue._mutex:
                queue._remove(self)
                if have_lock:
                    queue.current = None
                    lock.release()
                self.status = "error"
            raise

    def stop(self) -> None:
        """Running: end after the current step (the model so far is saved). Waiting: leave the line at once, with
        nothing trained or saved (status ``cancelled``)."""
        self._stop.set()
        queue = self._queue
        if queue is not None and self.status == "waiting":
            with queue._mutex:
                if self.status == "waiting" and queue._remove(self):
                    self.status, self.finished = "cancelled", time.time()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def waiting(self) -> bool:
        return self.status == "waiting"

    @property
    def active(self) -> bool:
        """Waiting or running: the job has not ended yet."""
        return self.status in ("waiting", "running")

    def ahead(self) -> int | None:
        """Heavy jobs ahead of this waiting job (see :meth:`TrainQueue.ahead`); None when not waiting."""
        queue = self._queue
        return queue.ahead(self) if queue is not None and self.status == "waiting" else None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker ends (tests); True when it has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.active

    # ------------------------------------------------------------------ progress
    def step_events(self) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("kind") == "step"]

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
    def _work(self, queue: TrainQueue, save: SaveFn, have_lock: bool, session_alive: Callable[[], bool] | None,
              orphan_after: float) -> None:
        if not have_lock and not self._wait_turn(queue, session_alive, orphan_after):
            return
        self._run(queue, save)

    def _leave(self, queue: TrainQueue, status: str, error: str | None = None) -> None:
        """End a job that never ran: out of the line, with ``status`` (unless :meth:`stop` already ended it)."""
        with queue._mutex:
            queue._remove(self)
            if self.status == "waiting":
                self.error = error
                self.status, self.finished = status, time.time()

    def _wait_turn(self, queue: TrainQueue, session_alive: Callable[[], bool] | None, orphan_after: float) -> bool:
        """Wait in the line until this job holds the lock (True) or leaves the line (False)."""
        gone_since: float | None = None
        try:
            while True:
                if self._stop.is_set():
                    self._leave(queue, "cancelled")
                    return False
                if session_alive is not None:
                    try:
                        alive = bool(session_alive())
                    except Exception:
                        alive = True
                    if alive:
                        gone_since = None
                    else:
                        gone_since = gone_since if gone_since is not None else time.monotonic()
                        if time.monotonic() - gone_since >= orphan_after:
                            self._leave(queue, "cancelled", "Left the line: the session that started it is gone.")
                            return False
                with queue._mutex:
                    if self.status != "waiting":  # stop() took it out of the line
                        return False
                    first = queue._waiting[0] is self
                if not first:
                    self._stop.wait(queue.poll)
                    continue
                if queue.lock.acquire(timeout=queue.poll):
                    with queue._mutex:
                        if self.status == "waiting" and not self._stop.is_set():
                            queue._remove(self)
                            queue.current = self
                            self.status, self.started = "running", time.time()
                            return True
                    queue.lock.release()  # cancelled while taking the lock: hand it on
                    self._leave(queue, "cancelled")
                    return False
        except BaseException as exc:  # never leave a dead job in the line (it would block everyone behind it)
            self._leave(queue, "error", f"{type(exc).__name__}: {exc}")
            if isinstance(exc, Exception):
                return False
            raise

    def _run(self, queue: TrainQueue, save: SaveFn) -> None:
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
            with queue._mutex:
                if queue.current is self:
                    queue.current = None
                queue.lock.release()  # the first waiting job takes it within one poll
            self.status = status  # last: a page that sees the end can start the next job at once
