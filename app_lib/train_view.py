"""What the Train page needs besides widgets: the form's limits and their check, starting a run, and saving it.

The numeric fields have no browser-side limits (a field the browser marks red never reaches the script, so Start
would do nothing and say nothing); :func:`check_fields` checks them here instead, puts a bad value back to its
default and says so in a sentence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app_lib import heavy_jobs, jobs, registry
from crc_core.adversarial import EXPLANATIONS
from crc_core.checkpoints import run_record
from crc_core.errors import CRCError
from crc_core.metrics import upgrade_metric_keys
from crc_core.train import TrainConfig, TrainResult, final_metrics
from crc_core.training_kinds import ADVERSARIAL_KINDS, CURVATURE_KINDS, TRAIN_ACTIVATIONS

JOB_KEY = "crc_train_job"
KINDS = {"standard": "standard (cross-entropy only)", "gamma": "γ-regularized (cross-entropy + γ·K)",
         "crt": "CRT (curvature attack inputs + γ·K)", "pgd": "PGD adversarial training (Madry et al.)",
         "trades": "TRADES (cross-entropy + β·KL at a PGD point)"}
KIND_EXPLANATIONS = {  # one line each, shown under the choice
    "standard": "Cross-entropy on the training images only; its curvature bound K usually grows large.",
    "gamma": "Cross-entropy plus γ times the Theorem 4 curvature bound K (paper eq. 7): the net learns to stay "
             "smooth, so its certificates grow.",
    "crt": "Curvature-based robust training: cross-entropy at the curvature attack's point within ε (Algorithm 2) "
           "plus γ·K; it certifies best.",
    **EXPLANATIONS,
}
ACTIVATIONS = TRAIN_ACTIVATIONS  # softplus, sigmoid, tanh, relu
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
    "tr_adv_eps": Field("Attack ε", 0.01, 5.0, DEFAULTS.adv_eps),
    "tr_adv_steps": Field("PGD steps", 1, 100, DEFAULTS.adv_steps, True),
    "tr_adv_step": Field("PGD step size (0 = 2.5·ε/steps)", 0.0, 5.0, 0.0),
    "tr_beta": Field("TRADES β", 0.0, 100.0, DEFAULTS.trades_beta),
    "tr_epochs": Field("Epochs", 1, 100, DEFAULTS.epochs, True),
    "tr_seed": Field("Seed", 0, 2**31 - 1, DEFAULTS.seed, True),
    "tr_limit": Field("Training images", 0, 1_000_000, 0, True),
    "tr_eval_samples": Field("Test images certified each epoch", 0, 2000, DEFAULTS.eval_samples, True),
    "tr_eval_rho": Field("ρ for the robust and certified accuracies", 0.05, 5.0, DEFAULTS.eval_rho),
}


def check_fields(state: MutableMapping[str, Any]) -> list[str]:
    """Seed missing fields with their defaults; put every value outside its range (or not a finite number) back
    to its default; write every value back (Streamlit drops the value of a widget not drawn on a run, e.g. β while
    PGD is chosen, unless the script sets it). Returns one sentence per field put back (empty: all fine). Call
    before drawing the form."""
    problems = []
    for key, f in FIELDS.items():
        v = state.get(key)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and f.low <= v <= f.high
        if v is not None and not ok:
            allowed = f"{f.low:g} to {f.high:g}" if not f.whole else f"{int(f.low):,} to {int(f.high):,}"
            was = "it was empty" if v == "" else f"{v!r} is not allowed"
            problems.append(f"{f.label} must be {'a whole number ' if f.whole else ''}from {allowed}; {was}, so it is "
                            f"back at its default, {f.default:g}.")
        # set every run, also a valid value: a field the form hides for another kind keeps its value
        state[key] = v if ok else int(f.default) if f.whole else float(f.default)
    return problems


def kind_problem(kind: str, activation: str) -> str | None:
    """One sentence saying why ``activation`` cannot be trained with ``kind`` (None when it can): the library's own
    check (:meth:`crc_core.train.TrainConfig.validate_kind`), e.g. ReLU with γ or CRT."""
    try:
        TrainConfig(kind=kind, activation=activation, device="cpu")
    except CRCError as exc:
        return str(exc)
    return None


def shown_fields(kind: str) -> set[str]:
    """The kind-specific fields the form shows for ``kind`` (γ, CRT ε, attack ε / steps / step size, random start,
    β)."""
    out = {"tr_gamma"} if kind in CURVATURE_KINDS else set()
    if kind == "crt":
        out.add("tr_eps")
    if kind in ADVERSARIAL_KINDS:
        out |= {"tr_adv_eps", "tr_adv_steps", "tr_adv_step"}
    out |= {"pgd": {"tr_adv_random"}, "trades": {"tr_beta"}}.get(kind, set())
    return out


def make_config(values: Mapping[str, Any], name_device: str) -> TrainConfig:
    """The form's values (widget key -> value, after :func:`check_fields`) -> a validated TrainConfig on device
    ``name_device``. Raises CRCError (one sentence) for an impossible combination, e.g. ReLU with CRT."""
    v = values
    problem = kind_problem(v["tr_kind"], v["tr_activation"])
    if problem:
        raise CRCError(problem)
    step = float(v["tr_adv_step"])
    return TrainConfig(dataset=v["tr_dataset"], widths=(int(v["tr_width"]),) * (int(v["tr_depth"]) - 1),
                       activation=v["tr_activation"], kind=v["tr_kind"], gamma=float(v["tr_gamma"]),
                       crt_eps=float(v["tr_eps"]), adv_eps=float(v["tr_adv_eps"]), adv_steps=int(v["tr_adv_steps"]),
                       adv_step_size=step if step > 0 else None,
                       adv_random_start=bool(v.get("tr_adv_random", DEFAULTS.adv_random_start)),
                       trades_beta=float(v["tr_beta"]), epochs=int(v["tr_epochs"]), lr=float(v["tr_lr"]),
                       batch_size=int(v["tr_batch"]), seed=int(v["tr_seed"]), device=name_device,
                       eval_samples=int(v["tr_eval_samples"]), eval_rho=float(v["tr_eval_rho"]),
                       train_limit=int(v["tr_limit"]) or None)


NO_CURVATURE_RELU = "ReLU: no curvature bound (its Hessian is 0 almost everywhere)"


def curves_caption(activation: str, depth: int) -> str | None:
    """Why some curves of a run are missing (None when none are): ReLU nets have no curvature bound, and only
    2-layer ReLU nets have a certificate here (the App. G one)."""
    if activation != "relu":
        return None
    cert = ("certified accuracy: the App. G certificate of 2-layer ReLU nets" if depth == 2 else
            "no certified accuracy: only 2-layer ReLU nets have a certificate here (App. G); the robust accuracy "
            "under PGD is an upper bound on the true one")
    return ("ReLU network: no curvature curves (ReLU's Hessian is zero almost everywhere and undefined at its kinks, "
            f"so there is no curvature bound to penalise or plot); {cert}.")


def start(state: MutableMapping[str, Any], config: TrainConfig, name: str) -> jobs.TrainJob:
    """Start (or queue) a training run for this session; its model is saved by :func:`save_run`."""
    job: jobs.TrainJob | None = state.get(JOB_KEY)
    if job is not None and job.active:
        raise CRCError("Your training run is still waiting in line: cancel it first." if job.waiting else
                       "Your training run is still going: stop it first (one run per session).")
    new = jobs.TrainJob(config, name=name.strip())
    new.start(heavy_jobs.train_queue(), lambda result: save_run(new, result), session_alive=heavy_jobs.session_alive(),
              orphan_after=heavy_jobs.orphan_after())
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
        {"kind": "epoch", **upgrade_metric_keys(e)} for e in hist.get("epochs", [])]


def progress_text(job: jobs.TrainJob) -> str:
    """The live progress line: epoch, step (what a step is), time spent and, once it can be estimated, time left:
    "epoch 1/3, step 70 of 237 (one step = one batch of 128 images; 79 per epoch) · 21 s so far, about 50 s left"."""
    steps = job.step_events()
    if not steps:
        return f"starting (reading the data, building the model)… {job.elapsed():.0f} s"
    last = steps[-1]
    per_epoch = last.get("steps_per_epoch") or "?"
    text = (f"epoch {last['epoch']}/{job.config.epochs}, step {last['step']} of {last['total_steps']} (one step = "
            f"one batch of {job.config.batch_size} images; {per_epoch} per epoch) · {duration(job.elapsed())} so far")
    done = job.progress()
    if job.running and 0.02 <= done < 1:  # a rate from the first steps only is noise
        text += f", about {duration(job.elapsed() * (1 - done) / done)} left"
    return text


def duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '1 h 02 min'."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
