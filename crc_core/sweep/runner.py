"""Run a sweep's trials as Ray tasks; the driver (this process) owns the output folder.

Ray starts locally with the machine's cores unless ``address`` joins a running cluster ("auto", "HOST:PORT" or
"ray://HOST:PORT"); an already initialised Ray (``ray.init`` by the caller) is used as it is and left running.
Each trial is one task with ``cpus_per_trial`` CPUs and, when the cluster has GPUs, ``gpus_per_trial`` GPUs
(fractions pack several trials on one GPU). At most as many tasks are in flight as the cluster can run at once,
so "running" means running. A trial that raises, or whose worker dies (after Ray's one retry), is recorded as
failed and the sweep goes on; unfinished trials (failed, killed, interrupted) run again on ``resume``.

Cluster nodes need the same crc_core importable (install the project on every node, or pass
``runtime_env={"working_dir": REPO}``) and the datasets where ``data_root`` points.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CRCError
from .config import EvalSpec, SweepConfig, Trial, load_sweep_config
from .folder import SweepFolder
from .results import read_results, write_results
from .trial import TrialOutput, execute_trial

__all__ = ["ProgressTracker", "SweepProgress", "SweepResult", "check_address", "connect_ray", "default_out",
           "run_sweep", "trial_slots"]

CONNECT_TIMEOUT_S = 5.0  # TCP probe of a cluster address: fail fast instead of Ray's long connection retries
WAIT_POLL_S = 1.0  # ray.wait timeout between progress checks
TASK_MAX_RETRIES = 1  # Ray reruns a task once when its worker process dies (not when the trial raises)


@dataclass(frozen=True)
class SweepProgress:
    """One progress report. event: "start", "trial_started", "trial_epoch", "trial_finished", "trial_failed" or
    "done".

    done: finished trials (skipped ones included), running, failed, pending: counts; total: trials in the config;
    skipped: finished before this run; eta_seconds: remaining time estimated from the mean duration of this
    run's ended trials and the parallel slots (None until a trial ends; see :class:`ProgressTracker`);
    trial_id / error: the trial and its one-line error for trial events; epoch / epochs: for "trial_epoch", the
    trial's finished epochs and its total (seen through its epoch checkpoint, so only when the driver sees it).
    """

    event: str
    done: int
    running: int
    failed: int
    pending: int
    total: int
    skipped: int
    elapsed_seconds: float
    eta_seconds: float | None = None
    trial_id: str | None = None
    error: str | None = None
    epoch: int | None = None
    epochs: int | None = None


@dataclass
class SweepResult:
    """out: the output folder; table: the results DataFrame (every finished trial, this run's and earlier);
    finished / failed / skipped: trial ids (failed maps to the error); files: results files written."""

    out: Path
    table: Any
    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)


def default_out(config: SweepConfig) -> Path:
    """runs/sweeps/<name>."""
    return Path("runs") / "sweeps" / config.name


# ---- Ray -----------------------------------------------------------------------------------------------------------
def check_address(address: str) -> None:
    """Fail fast (CRCError) when a "HOST:PORT" / "ray://HOST:PORT" address accepts no TCP connection."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise CRCError(f"Ray address {address!r} must look like HOST:PORT, ray://HOST:PORT or 'auto'.")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise CRCError(f"Cannot reach the Ray cluster at {address}: {exc}. Is `ray start --head` running there?"
                       ) from None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise CRCError("Sweeps run on Ray, which is not installed: pip install 'ray[default]'.") from None
    return ray


def connect_ray(address: str | None, *, num_cpus: int | None = None, runtime_env: dict | None = None) -> bool:
    """Initialise Ray unless it already is; return True when this call started it (so the caller shuts it down)."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    if address is not None:
        check_address(address)
    try:
        ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                 log_to_driver=False, runtime_env=runtime_env, logging_level="warning")
    except (ConnectionError, RuntimeError, TimeoutError) as exc:
        raise CRCError(f"Could not start or join Ray (address {address or 'local'}): {exc}") from None
    return True


def trial_slots(ray: Any, config: SweepConfig) -> tuple[float, float, int]:
    """(cpus, gpus) per trial and how many trials the cluster runs at once; CRCError when one cannot run."""
    res = ray.cluster_resources()
    have_cpu, have_gpu = float(res.get("CPU", 0)), float(res.get("GPU", 0))
    r = config.resources
    cpus = r.cpus_per_trial
    gpus = (1.0 if have_gpu > 0 else 0.0) if r.gpus_per_trial is None else r.gpus_per_trial
    if cpus > have_cpu:
        raise CRCError(f"Each trial asks for {cpus:g} CPU(s) but the Ray cluster has {have_cpu:g}.")
    if gpus > have_gpu:
        raise CRCError(f"Each trial asks for {gpus:g} GPU(s) but the Ray cluster has {have_gpu:g}; set "
                       "[resources] gpus_per_trial = 0 (or \"auto\").")
    n = int(have_cpu // cpus)
    if gpus > 0:
        n = min(n, int(have_gpu // gpus))
    if r.max_concurrent is not None:
        n = min(n, r.max_concurrent)
    return cpus, gpus, max(1, n)


def run_trial_task(trial: Trial, spec: EvalSpec, threads: int, epoch_checkpoint: str | None = None) -> TrialOutput:
    """The Ray task body: the GPU Ray assigned to this task (if any) decides the device. ``epoch_checkpoint`` is
    used only when this worker sees its folder (the driver created it): same machine or a shared filesystem."""
    import ray

    device = "cuda" if ray.get_gpu_ids() else "cpu"
    visible = epoch_checkpoint is not None and Path(epoch_checkpoint).parent.is_dir()
    return execute_trial(trial, spec, device=device, threads=threads,
                         epoch_checkpoint=epoch_checkpoint if visible else None)


def _error_text(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)  # RayTaskError wraps the trial's own exception
    err = cause if isinstance(cause, BaseException) else exc
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:500]


# ---- The loop ------------------------------------------------------------------------------------------------------
class ProgressTracker:
    """Counts and ETA; emits :class:`SweepProgress` to the callback.

    ETA = pending trials / parallel slots x the mean duration of the trials that ended in this run + the longest
    remaining time of a running trial (mean duration - its age). Before any trial ends, the running trials'
    epochs stand in once each has finished one in this run: duration = seconds per epoch x epochs, remaining =
    seconds per epoch x epochs left. None while neither is known (trials can differ 10x: no guess from others).
    """

    def __init__(self, total: int, skipped: int, callback: Callable[[SweepProgress], None] | None) -> None:
        self.total, self.skipped, self.callback = total, skipped, callback
        self.finished_now, self.failed, self.slots = 0, 0, 1
        self.started: dict[str, float] = {}  # running trial -> start time
        self.durations: list[float] = []
        self.epochs: dict[str, tuple[int, int, int, float]] = {}  # trial -> (resumed at, done, total, when)
        self.t0 = time.perf_counter()

    def start(self, trial_id: str, resumed_epochs: int = 0, total_epochs: int = 0) -> None:
        now = time.perf_counter()
        self.started[trial_id] = now
        self.epochs[trial_id] = (resumed_epochs, resumed_epochs, total_epochs, now)
        self.emit("trial_started", trial_id)

    def epoch(self, trial_id: str, done: int) -> None:
        """A running trial reports ``done`` finished epochs."""
        resumed, _, total, _ = self.epochs[trial_id]
        self.epochs[trial_id] = (resumed, done, total, time.perf_counter())
        self.emit("trial_epoch", trial_id, epoch=done, epochs=total)

    def _epoch_rate(self, trial_id: str) -> tuple[float, int, int, float] | None:
        """(seconds per epoch in this run, epochs done, total, time of the last epoch) or None."""
        resumed, done, total, when = self.epochs.get(trial_id, (0, 0, 0, 0.0))
        if done <= resumed or total <= 0:
            return None
        return (when - self.started[trial_id]) / (done - resumed), done, total, when

    def end(self, trial_id: str, error: str | None = None) -> None:
        self.durations.append(time.perf_counter() - self.started.pop(trial_id))
        self.epochs.pop(trial_id, None)
        if error is None:
            self.finished_now += 1
        else:
            self.failed += 1
        self.emit("trial_failed" if error else "trial_finished", trial_id, error)

    def eta(self, pending: int) -> float | None:
        now = time.perf_counter()
        rates = {tid: r for tid in self.started if (r := self._epoch_rate(tid)) is not None}
        if not self.durations and (not rates or len(rates) < len(self.started)):
            return None
        full = self.durations or [per * total for per, _, total, _ in rates.values()]
        mean = sum(full) / len(full)

        def left(tid: str) -> float:
            if self.durations or tid not in rates:
                return max(0.0, mean - (now - self.started[tid]))
            per, done, total, when = rates[tid]
            return max(0.0, per * (total - done) - (now - when))

        return pending / self.slots * mean + max((left(t) for t in self.started), default=0.0)

    def emit(self, event: str, trial_id: str | None = None, error: str | None = None, **extra: int) -> None:
        if self.callback is None:
            return
        running = len(self.started)
        done = self.skipped + self.finished_now
        pending = self.total - done - self.failed - running
        self.callback(SweepProgress(event, done, running, self.failed, pending, self.total, self.skipped,
                                    time.perf_counter() - self.t0, self.eta(pending), trial_id, error, **extra))


class EpochWatch:
    """Finished epochs of running trials, read from their epoch checkpoints when those change (a stat per
    trial per poll; the file is read once per epoch). Sees nothing when the workers write elsewhere."""

    def __init__(self, folder: SweepFolder) -> None:
        self.folder = folder
        self.seen: dict[str, tuple[int, int]] = {}  # trial -> (mtime_ns, epochs)

    def epochs(self, trial: Trial) -> int:
        """Finished epochs now (0 without a readable file); remembers the file's state."""
        from ..epoch_checkpoint import epochs_done

        path = self.folder.epoch_checkpoint(trial)
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return 0
        if self.seen.get(trial.trial_id, (None,))[0] != mtime:
            self.seen[trial.trial_id] = (mtime, epochs_done(path))
        return self.seen[trial.trial_id][1]

    def changed(self, trial: Trial) -> int | None:
        """Finished epochs when they changed since the last call, else None."""
        before = self.seen.get(trial.trial_id, (None, 0))[1]
        now = self.epochs(trial)
        return now if now != before else None


def _run_trials(ray: Any, folder: SweepFolder, todo: list[Trial], tracker: ProgressTracker,
                result: SweepResult) -> None:
    cfg = folder.config
    cpus, gpus, slots = trial_slots(ray, cfg)
    tracker.slots = slots
    remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=TASK_MAX_RETRIES)(run_trial_task)
    queue, in_flight, watch = list(todo), {}, EpochWatch(folder)
    try:
        while queue or in_flight:
            while queue and len(in_flight) < slots:
                trial = queue.pop(0)
                folder.mark(trial, "running", cpus=cpus, gpus=gpus)
                ckpt = str(folder.epoch_checkpoint(trial).resolve())
                in_flight[remote.remote(trial, cfg.evaluate, max(1, int(cpus)), ckpt)] = trial
                tracker.start(trial.trial_id, watch.epochs(trial), trial.config.epochs)
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=WAIT_POLL_S)
            for ref, trial in in_flight.items():
                if ref not in ready and (done := watch.changed(trial)) is not None:
                    tracker.epoch(trial.trial_id, done)
            for ref in ready:
                trial = in_flight.pop(ref)
                try:
                    out: TrialOutput = ray.get(ref)
                    folder.save_trial(trial, out.model, out.row, out.record)
                except Exception as exc:  # the trial's own error, a dead worker, or a failed save
                    error = _error_text(exc)
                    folder.mark(trial, "failed", error=error)
                    result.failed[trial.trial_id] = error
                    tracker.end(trial.trial_id, error)
                    continue
                result.finished.append(trial.trial_id)
                write_results(folder.root, folder.rows())
                tracker.end(trial.trial_id)
    finally:  # interrupted (Ctrl-C) or crashed: stop what runs; those trials rerun on resume
        for ref, trial in in_flight.items():
            ray.cancel(ref, force=True)
            folder.mark(trial, "interrupted")


def _check_datasets(config: SweepConfig) -> None:
    """Local runs only: every (dataset, data_root) of the grid loads (one image), before any trial starts."""
    from ..data import load_dataset

    for name, root in sorted({(t.config.dataset, t.config.data_root) for t in config.trials}, key=str):
        for split in ("train", "test"):
            load_dataset(name, split, root=root, limit=1)


def run_sweep(config_path: str | Path | SweepConfig, *, out: str | Path | None = None, address: str | None = None,
              resume: bool = False, progress: Callable[[SweepProgress], None] | None = None,
              num_cpus: int | None = None, runtime_env: dict | None = None) -> SweepResult:
    """Run (or resume) the sweep of ``config_path`` into ``out`` (default runs/sweeps/<name>); return its results.

    Everything is validated before any trial starts: the config (CRCError naming the key), the output folder
    (another config's folder is refused; an existing one of this config needs ``resume=True``), the Ray address
    (unreachable: CRCError within seconds) and, when Ray is started here, the datasets; another process running
    the same folder is refused. With ``resume``, finished trials are skipped and every other trial (never
    started, failed, killed mid-way) runs again, from its last finished epoch when its worker sees the output
    folder (OUT/trials/<id>/last-epoch.pt; see trial.py), else from the start.
    ``progress`` receives a :class:`SweepProgress` at the start, at every trial start / finish / failure and at
    the end. ``num_cpus``: CPUs of a local Ray (default: all cores).
    """
    config = config_path if isinstance(config_path, SweepConfig) else load_sweep_config(config_path)
    folder = SweepFolder(out if out is not None else default_out(config), config)
    ray = _import_ray()
    if address is not None and not ray.is_initialized():
        check_address(address)
    if address is None and not ray.is_initialized():
        _check_datasets(config)
    folder.check(resume=resume)  # before the lock, which would leave a .lock file in a refused folder
    with folder.lock():
        folder.check(resume=resume)
        skipped = [t.trial_id for t in config.trials if folder.is_finished(t)]
        todo = [t for t in config.trials if not folder.is_finished(t)]
        owns_ray = connect_ray(address, num_cpus=num_cpus, runtime_env=runtime_env) if todo else False
        result = SweepResult(folder.root, None, skipped=skipped)
        tracker = ProgressTracker(len(config.trials), len(skipped), progress)
        try:
            folder.claim()
            tracker.emit("start")
            if todo:
                _run_trials(ray, folder, todo, tracker, result)
            result.files = write_results(folder.root, folder.rows())
        finally:
            if owns_ray:
                ray.shutdown()
    result.table = read_results(folder.root)
    result.seconds = time.perf_counter() - tracker.t0
    tracker.emit("done")
    return result
