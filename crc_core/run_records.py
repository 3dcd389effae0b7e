"""Run records: the metadata every model's checkpoint carries (one schema for ``crc_core train``, the app's Train
page, sweeps and imports). :func:`model_record` holds the keys every model shares; :func:`run_record` adds a
training run's settings, timings and thinned history. Saved with :func:`crc_core.checkpoints.save_checkpoint`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from .device import describe_device
from .errors import CRCError
from .train_config import KEEP_SCORES

if TYPE_CHECKING:
    from .train import TrainConfig, TrainResult

__all__ = ["HISTORY_STEPS", "kept_text", "model_record", "run_record", "thin_events"]

HISTORY_STEPS = 200  # step events kept in a run record: enough for a smooth curve, small enough for the JSON


def kept_text(meta: Mapping[str, Any]) -> str | None:
    """Which epoch's weights a checkpoint holds, from its metadata (the run record's ``kept``, else
    TrainConfig.keep), e.g. "best standard test accuracy (epoch 7 of 30, 81.20%)"; the rule alone ("last") when the
    record says no more; None for a model that was not trained here. Hand-written values are shown, not used."""
    def pct(v: Any) -> str:
        return f"{100 * v:.2f}%" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)[:80]

    kept, config = meta.get("kept"), meta.get("config")
    if not isinstance(kept, dict):
        return str(config["keep"])[:80] if isinstance(config, dict) and config.get("keep") is not None else None
    if kept.get("epoch") is None:
        return f"{str(kept.get('rule'))[:80]}: {str(kept.get('reason'))[:200]}"
    key, rule = KEEP_SCORES.get(str(kept.get("rule")), ("", str(kept.get("rule"))[:80]))
    values = [pct(kept[key])] if kept.get(key) is not None else []
    if key != "test_accuracy" and kept.get("test_accuracy") is not None:
        values.append(f"test accuracy {pct(kept['test_accuracy'])}")
    where = f"epoch {str(kept['epoch'])[:20]} of {str(meta.get('epochs'))[:20]}"
    return f"{rule} ({', '.join([where, *values])})"


def thin_events(events: list[dict[str, Any]], n: int = HISTORY_STEPS) -> list[dict[str, Any]]:
    """At most n evenly spaced events, always keeping the first and the last (a compact curve)."""
    if len(events) <= n:
        return list(events)
    idx = sorted({round(i * (len(events) - 1) / (n - 1)) for i in range(n)})
    return [events[i] for i in idx]


def _round_floats(d: Mapping[str, Any], digits: int = 6) -> dict[str, Any]:
    return {k: (float(f"{v:.{digits}g}") if isinstance(v, float) and math.isfinite(v) else v) for k, v in d.items()}


def model_record(*, dataset: str | None, kind: str, label: str, command: str | None, gamma: float | None = None,
                 crt_eps: float | None = None, epochs: int | None = None, metrics: Mapping[str, Any] | None = None,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The metadata keys every model's record shares, whatever made the model (what model pickers and
    ``crc_core info`` read); :func:`run_record` (a trained model) and
    :func:`crc_core.importers.import_model` (an imported one, ``kind="imported"``) build on it.

    Args:
        dataset: "embedded", "fashion-mnist" or "mnist" (None when unknown).
        kind: how the model came to be: a training kind ("standard", "gamma", "crt") or "imported".
        label: one human-readable line, e.g. ``"2x[256] softplus, CRT γ=0.01 ε=0.5"``.
        command: how to reproduce it (a command line, or which app page made it); None when unknown.
        gamma, crt_eps, epochs: the training settings when known (None = unknown, not zero).
        metrics: measured metrics of these weights ({} when none yet); floats keep 6 significant digits.
        extra: more keys; they may not replace the ones above.

    Returns a JSON-ready dict with those keys and ``torch_version``; ``save_checkpoint`` adds architecture, created
    and crc_core_version. Raises CRCError when ``extra`` would replace a key.
    """
    record: dict[str, Any] = {
        "dataset": dataset, "kind": kind, "gamma": gamma, "crt_eps": crt_eps, "epochs": epochs, "label": label,
        "metrics": _round_floats(dict(metrics or {})), "command": command, "torch_version": torch.__version__,
    }
    clash = sorted(set(extra or {}) & set(record))
    if clash:
        raise CRCError(f"extra keys {clash} would replace the record's own keys.")
    record.update(extra or {})
    return record


def run_record(config: TrainConfig, result: TrainResult, *, source: str, metrics: Mapping[str, Any] | None = None,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint metadata of a training run; pass it to :func:`save_checkpoint` with ``result.model``.

    Args:
        config: the run's :class:`~crc_core.train.TrainConfig`.
        result: what :func:`~crc_core.train.train` returned.
        source: how the run was started, stored under ``"command"``: the exact command line for the CLI,
            e.g. ``"python -m crc_core train --kind crt ..."``, or ``"CRC Explorer app, Train page"``.
        metrics: the metrics describing these weights (default ``result.metrics``); for a stopped run pass
            :func:`crc_core.train.final_metrics`, which evaluates the weights as they are.
        extra: more keys to store (e.g. ``{"dry_run": True}``); they may not replace the keys below.

    Returns a JSON-ready dict with the keys dataset, kind, gamma (0 unless gamma / CRT), crt_eps (None unless CRT),
    kind_settings (:meth:`TrainConfig.kind_settings`: e.g. ε, steps, β of PGD / TRADES), epochs (completed),
    label (:meth:`TrainConfig.describe`), metrics, command, config (:meth:`TrainConfig.to_dict`),
    stopped, train_seconds, device, torch_version and history = {"epochs": every epoch event, "steps": at most
    ``HISTORY_STEPS`` step events, evenly thinned}; events lose their "kind" key, floats keep 6 significant digits.
    Under a ``keep`` rule other than "last" also kept = :attr:`TrainResult.kept` (which epoch's weights, and why).
    ``save_checkpoint`` adds architecture, created and crc_core_version.
    """
    epochs_done = [e for e in result.history if e.get("kind") == "epoch"]
    steps = [e for e in result.history if e.get("kind") == "step"]

    def clean(e: Mapping[str, Any]) -> dict[str, Any]:
        return _round_floats({k: v for k, v in e.items() if k != "kind"})

    own = {
        "kind_settings": config.kind_settings(),
        "config": config.to_dict(),
        "stopped": bool(result.stopped),
        "train_seconds": round(result.seconds, 2),
        "device": describe_device(result.model.layers[0].weight.device),
        "history": {"epochs": [clean(e) for e in epochs_done], "steps": [clean(e) for e in thin_events(steps)]},
    }
    if result.kept is not None:  # keep other than "last": which epoch's weights these are, and why
        own["kept"] = _round_floats(dict(result.kept))
    record = model_record(dataset=config.dataset, kind=config.kind, gamma=config.gamma_used,
                          crt_eps=config.crt_eps if config.kind == "crt" else None, epochs=len(epochs_done),
                          label=config.describe(), command=source,
                          metrics=result.metrics if metrics is None else metrics, extra=own)
    clash = sorted(set(extra or {}) & set(record))
    if clash:
        raise CRCError(f"run_record: extra keys {clash} would replace the record's own keys.")
    record.update(extra or {})
    return record
