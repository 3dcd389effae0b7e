"""What the Train page needs besides widgets: the form's limits and their check, starting a run, and saving it.

The numeric fields have no browser-side limits (a field the browser marks red never reaches the script, so Start
would do nothing and say nothing); :func:`check_fields` checks them here instead, puts a bad value back to its
default and says so in a sentence.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app_lib import jobs, registry, ui
from crc_core.checkpoints import run_record
from crc_core.errors import CRCError
from crc_core.train import TrainConfig, TrainResult, final_metrics

JOB_KEY = "crc_train_job"
KINDS = {"standard": "standard (cross-entropy only)", "gamma": "γ-regularized (cross-entropy + γ·K)",
         "crt": "CRT (curvature attack inputs + γ·K)"}
DEFAULTS = TrainConfig()  # 2×[256] softplus CRT γ=0.01 ε=0.5, 3 epochs
APP_SOURCE = "CRC Explorer app, Train page"  # the run record's "command" for runs started here


@dataclass(frozen=True)
class Field:
    """A numeric field of the form: its label, allowed range [low, high], default, and whether it is a whole
    number."""

    label: str
    low: float
    high: float
    default: float
    whole: bool = False


FIELDS = {
    "tr_depth": Field("Depth L", 2, 5, 2, True),
    "tr_gamma": Field("γ", 0.0, 10.0, DEFAULTS.gamma),
    "tr_eps": Field("CRT ε", 0.05, 5.0, DEFAULTS.crt_eps),
    "tr_epochs": Field("Epochs", 1, 100, DEFAULTS.epochs, True),
    "tr_seed": Field("Seed", 0, 2**31 - 1, DEFAULTS.seed, True),
    "tr_limit": Field("Training images", 0, 1_000_000, 0, True),
    "tr_eval_samples": Field("Test images certified each epoch", 0, 2000, DEFAULTS.eval_samples, True),
    "tr_eval_rho": Field("ρ for the certified accuracy", 0.05, 5.0, DEFAULTS.eval_rho),
}


def check_fields(state: MutableMapping[str, Any]) -> list[str]:
    """Seed missing fields with their defaults; put every value outside its range (or not a finite number) back
    to its default. Returns one sentence per field put back (empty: all fine). Call before drawing the form."""
    problems = []
    for key, f in FIELDS.items():
        v = state.get(key)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and f.low <= v <= f.high
        if v is not None and not ok:
            allowed = f"{f.low:g} to {f.high:g}" if not f.whole else f"{int(f.low):,} to {int(f.high):,}"
            problems.append(f"{f.label} must be {'a whole number ' if f.whole else ''}from {allowed}; {v!r} was put "
                            f"back to {f.default:g}.")
        if v is None or not ok:
            state[key] = int(f.default) if f.whole else float(f.default)
    return problems


def start(state: MutableMapping[str, Any], config: TrainConfig, name: str) -> jobs.TrainJob:
    """Start (or queue) a training run for this session; its model is saved by :func:`save_run`."""
    job: jobs.TrainJob | None = state.get(JOB_KEY)
    if job is not None and job.active:
        raise CRCError("Your training run is still waiting in line: cancel it first." if job.waiting else
                       "Your training run is still going: stop it first (one run per session).")
    new = jobs.TrainJob(config, name=name.strip())
    new.start(ui.train_queue(), lambda result: save_run(new, result), session_alive=ui.session_alive(),
              orphan_after=ui.orphan_after())
    state[JOB_KEY] = new
    state.pop("crc_train_announced", None)
    return new


def run_metadata(job: jobs.TrainJob, result: TrainResult) -> dict[str, Any]:
    """The checkpoint metadata of an app run: :func:`crc_core.checkpoints.run_record`, the same record
    `python -m crc_core train` writes. A stopped run is evaluated as it is (:func:`crc_core.train.final_metrics`),
    so that the saved metrics describe the saved weights."""
    metrics = final_metrics(job.config, result)
    job.metrics = metrics
    return run_record(job.config, result, source=APP_SOURCE, metrics=metrics)


def save_run(job: jobs.TrainJob, result: TrainResult) -> Path:
    """Save a finished or stopped run into the runs folder (called by the worker thread)."""
    return registry.save_trained(result.model, run_metadata(job, result), job.name or job.config.describe())


def saved_history(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """A saved model's training history as events for :func:`app_lib.plots.training_curves` (empty if none)."""
    hist = meta.get("history") or {}
    return [{"kind": "step", **e} for e in hist.get("steps", [])] + [
        {"kind": "epoch", **e} for e in hist.get("epochs", [])]
