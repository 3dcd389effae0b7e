"""A sweep's output folder: one config per folder, one subfolder per trial, the results table beside them.

Layout::

    OUT/sweep.json            name, config_hash, trial ids, created, crc_core version (identifies the sweep)
    OUT/config.toml           the TOML text the sweep was started from
    OUT/trials/<id>/status.json   {"state": "running" | "failed" | "interrupted", ...} while not finished
    OUT/trials/<id>/model.pt      checkpoint (crc_core.checkpoints, metadata = settings + metrics + run record)
    OUT/trials/<id>/record.json   run record: settings, timings, device, versions, per-epoch history
    OUT/trials/<id>/last-epoch.pt training state after the last finished epoch, while the trial runs
                                  (crc_core.epoch_checkpoint; deleted once the trial is finished)
    OUT/trials/<id>/result.json   the results row; written last, so it marks the trial finished
    OUT/results.csv (+ results.parquet when pyarrow is installed, results.md)

Every file is written atomically (temp file + rename): a sweep killed at any moment leaves each trial either
finished (result.json and model.pt present) or not, and an unfinished trial is simply run again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..checkpoints import atomic_write, crc_version, save_checkpoint
from ..errors import CRCError
from .config import SweepConfig, Trial

__all__ = ["SWEEP_FILE", "SweepFolder", "is_sweep_folder", "sweep_overview"]

SWEEP_FILE = "sweep.json"
RESULT_FILE = "result.json"
MODEL_FILE = "model.pt"
LOCK_FILE = ".lock"
EPOCH_FILE = "last-epoch.pt"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`crc_core.checkpoints.atomic_write`)."""
    atomic_write(path, lambda f: f.write(data))


def write_json(path: Path, obj: Any, *, sort_keys: bool = True) -> None:
    """JSON (NaN allowed, odd types as strings), atomically."""
    text = json.dumps(obj, indent=2, sort_keys=sort_keys, default=str, allow_nan=True)
    write_atomic(path, (text + "\n").encode())


MAX_SWEEP_FILE_BYTES = 64 << 20  # sweep.json lists trial ids: ~100 bytes per trial


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A trial's JSON file (status, result) as a dict; None when missing, unreadable, not UTF-8 JSON or not an
    object (a damaged file makes the trial count as not finished, never a crash)."""
    try:
        if path.stat().st_size > MAX_SWEEP_FILE_BYTES:
            return None
        value = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def read_sweep_meta(root: Path) -> dict[str, Any]:
    """OUT/sweep.json as a dict; CRCError (one sentence) for a missing, unreadable, non-UTF-8, non-JSON or
    non-object file."""
    path = root / SWEEP_FILE
    try:
        if path.stat().st_size > MAX_SWEEP_FILE_BYTES:
            raise CRCError(f"{path} is over {MAX_SWEEP_FILE_BYTES:,} bytes: not a sweep's record.")
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CRCError(f"{path} is unreadable ({type(exc).__name__}: {str(exc)[:120]}); choose another output "
                       "folder.") from None
    if not isinstance(meta, dict):
        raise CRCError(f"{path} holds a JSON {type(meta).__name__}, not a sweep's record; choose another output "
                       "folder.")
    return meta


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class SweepFolder:
    """The output folder of one sweep config (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], config: SweepConfig) -> None:
        self.root = Path(root)
        self.config = config

    # -- claiming the folder --------------------------------------------------------------------------------
    def check(self, *, resume: bool) -> None:
        """Refuse (CRCError) a folder made by another config, a non-empty folder that is not a sweep's, and an
        existing sweep of this config without ``resume``. Writes nothing."""
        meta_path = self.root / SWEEP_FILE
        if meta_path.is_file():
            meta = read_sweep_meta(self.root)
            if meta.get("config_hash") != self.config.config_hash:
                raise CRCError(
                    f"{self.root} holds the results of another sweep config ({meta.get('name')!r}, hash "
                    f"{str(meta.get('config_hash'))[:12]}); results of different configs are never mixed: choose "
                    "another output folder.")
            if not resume:
                raise CRCError(f"{self.root} already holds this sweep ({self.n_finished()} of "
                               f"{len(self.config.trials)} trials finished): resume it, or choose another folder.")
        elif self.root.exists() and (not self.root.is_dir() or any(p.name != LOCK_FILE for p in self.root.iterdir())):
            raise CRCError(f"{self.root} exists and is not a sweep folder (no {SWEEP_FILE}); choose an empty or "
                           "new folder.")

    def claim(self) -> None:
        """Create the folder with sweep.json and config.toml, unless it already holds this sweep."""
        meta_path = self.root / SWEEP_FILE
        if meta_path.is_file():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        cfg = self.config
        write_atomic(self.root / "config.toml", cfg.text.encode())
        write_json(meta_path, {"name": cfg.name, "description": cfg.description, "config_hash": cfg.config_hash,
                               "source": cfg.source, "created": _now(), "trials": [t.trial_id for t in cfg.trials],
                               "crc_core_version": crc_version()})

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold OUT/.lock for the duration: a second process running the same folder gets a CRCError."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        created = [p for p in (self.root, *self.root.parents) if not p.exists()]
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            f = open(self.root / LOCK_FILE, "a+")  # noqa: SIM115 - closed below, after the lock file is removed
        except OSError as exc:
            raise CRCError(f"Cannot create the sweep folder {self.root}: {exc.strerror or exc}.") from None
        with f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise CRCError(f"Another process is running a sweep in {self.root}; wait for it or stop it."
                               ) from None
            try:
                yield
            finally:  # every exit path: the lock file goes (removed while held), then the lock
                with contextlib.suppress(OSError):
                    (self.root / LOCK_FILE).unlink()
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
                for folder in created:  # a refused run leaves no new empty folders behind
                    with contextlib.suppress(OSError):
                        folder.rmdir()

    # -- per trial ------------------------------------------------------------------------------------------
    def trial_dir(self, trial: Trial) -> Path:
        return self.root / "trials" / trial.trial_id

    def epoch_checkpoint(self, trial: Trial) -> Path:
        """Where the trial's training state is saved after every epoch (see crc_core.sweep.trial)."""
        return self.trial_dir(trial) / EPOCH_FILE

    def is_finished(self, trial: Trial) -> bool:
        d = self.trial_dir(trial)
        return (d / RESULT_FILE).is_file() and (d / MODEL_FILE).is_file()

    def n_finished(self) -> int:
        return sum(self.is_finished(t) for t in self.config.trials)

    def mark(self, trial: Trial, state: str, **info: Any) -> None:
        """Record a trial's state ("running", "failed", "interrupted") in its status.json."""
        write_json(self.trial_dir(trial) / "status.json", {"state": state, "time": _now(), **info})

    def status(self, trial: Trial) -> dict[str, Any]:
        """{"state": "finished"} or the last status.json ({"state": "pending"} when never started)."""
        if self.is_finished(trial):
            return {"state": "finished"}
        return read_json_object(self.trial_dir(trial) / "status.json") or {"state": "pending"}

    def save_trial(self, trial: Trial, model: Any, row: dict[str, Any], record: dict[str, Any]) -> None:
        """Checkpoint (with the run record in its metadata), record.json, then result.json (the finished mark)."""

        cfg = trial.config
        d = self.trial_dir(trial)
        metadata = {"dataset": cfg.dataset, "kind": cfg.kind, "gamma": cfg.gamma_used,
                    "crt_eps": cfg.crt_eps_used, "epochs": row.get("epochs_done"),
                    "label": cfg.describe(), "metrics": row, "config": record.get("config"),
                    "command": f"sweep {self.config.source or self.config.name} (trial {trial.trial_id})",
                    "sweep": {"name": self.config.name, "config_hash": self.config.config_hash,
                              "trial_id": trial.trial_id},
                    "run_record": record}
        save_checkpoint(d / MODEL_FILE, model, metadata)
        write_json(d / "record.json", record)
        checkpoint = (d / MODEL_FILE).relative_to(self.root).as_posix()
        write_json(d / RESULT_FILE, {**row, "checkpoint": checkpoint, "finished": _now()}, sort_keys=False)
        for name in ("status.json", EPOCH_FILE):
            with contextlib.suppress(OSError):
                (d / name).unlink()

    def rows(self) -> list[dict[str, Any]]:
        """The results rows of the finished trials, in grid order."""
        out = []
        for t in self.config.trials:
            if self.is_finished(t):
                row = read_json_object(self.trial_dir(t) / RESULT_FILE)
                if row is not None:
                    out.append(row)
        return out


def is_sweep_folder(root: str | os.PathLike[str]) -> bool:
    """True when ``root`` holds a sweep (its sweep.json)."""
    return (Path(root) / SWEEP_FILE).is_file()


def sweep_overview(root: str | os.PathLike[str], *, with_epochs: bool = False) -> dict[str, Any]:
    """What a sweep folder holds, without its config: sweep.json's name, description, config_hash, created, and
    ``trials``: [{"trial_id", "state" ("finished", "running", "failed", "interrupted" or "pending"), "error",
    "checkpoint" (path of model.pt when finished, else None)[, "epochs_done"]}] in grid order. Read-only; a sweep
    may be running ("running" stays recorded when a sweep was killed without clean-up). ``with_epochs``: also
    the finished epochs of unfinished trials (reads each last-epoch.pt). CRCError when ``root`` is not a sweep."""
    root = Path(root)
    meta = read_sweep_meta(root)
    trials = []
    for tid in meta.get("trials", []) if isinstance(meta.get("trials"), list) else []:
        d = root / "trials" / str(tid)
        if (d / RESULT_FILE).is_file() and (d / MODEL_FILE).is_file():
            trials.append({"trial_id": tid, "state": "finished", "error": None, "checkpoint": d / MODEL_FILE})
            continue
        status = read_json_object(d / "status.json") or {"state": "pending"}
        trials.append({"trial_id": tid, "state": status.get("state", "pending"), "error": status.get("error"),
                       "checkpoint": None})
        if with_epochs:
            from ..epoch_checkpoint import epochs_done

            trials[-1]["epochs_done"] = epochs_done(d / EPOCH_FILE) if (d / EPOCH_FILE).is_file() else 0
    keys = ("name", "description", "config_hash", "created")
    return {**{k: meta.get(k) for k in keys}, "root": root, "trials": trials}
