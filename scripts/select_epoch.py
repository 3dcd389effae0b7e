"""Apply a ``keep`` rule afterwards to the per-epoch training states of one finished run, and save the kept epoch.

``crc_core train`` keeps one epoch state (``<out>.last-epoch.pt``), rewritten after every epoch; a run whose
states were copied after each epoch can have a keep rule applied afterwards, exactly as ``--keep <rule>`` would
have applied it during the run: no rule changes the training (tests/test_train_keep.py), the scores are computed
by the same function on the same weights, and the record is the one ``train`` writes (tests/test_select_epoch.py
checks both ways agree bit for bit). The Table 4 model was made so (docs/reproduction.md)::

    .venv/bin/python scripts/select_epoch.py runs/table4-official/epochs/*.pt --keep best-train-certified \\
        --out assets/models/table4-crt-2x1024-eps1.58.pt --command "python -m crc_core train ... "

Every state is read through the loading gate (``load_epoch_checkpoint``: weights_only, same run settings). The
states must be the epochs 1..E of one run that finished (E = its ``epochs``). Prints one line per evaluated epoch.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crc_core.checkpoints import save_checkpoint
from crc_core.data import load_dataset
from crc_core.epoch_checkpoint import EpochState, load_epoch_checkpoint
from crc_core.errors import CRCError
from crc_core.metrics import certified_accuracy
from crc_core.models import MLP
from crc_core.run_records import run_record
from crc_core.safe_load import load_file
from crc_core.train import TrainResult, kept_record, selection_split
from crc_core.train_config import KEEP_SCORES, TrainConfig


def load_run(paths: list[Path]) -> tuple[TrainConfig, list[EpochState]]:
    """The run's config and its epoch states 1..E in order; CRCError unless they are one finished run's."""
    if not paths:
        raise CRCError("No epoch states given.")
    first = load_file(paths[0])[1]
    if not isinstance(first, dict) or not isinstance(first.get("config"), dict):
        raise CRCError(f"{paths[0]} is not an epoch checkpoint of crc_core.train.")
    config = TrainConfig(**first["config"])
    n_train = int(first.get("n_train", -1))
    states = sorted((load_epoch_checkpoint(p, config, n_train) for p in paths), key=lambda s: s.epoch)
    if [s.epoch for s in states] != list(range(1, config.epochs + 1)):
        raise CRCError(f"Need the states of epochs 1..{config.epochs} of one finished run, once each; got epochs "
                       f"{[s.epoch for s in states]}.")
    return config, states


def select(paths: list[Path], keep: str, select_images: int | None = None
           ) -> tuple[TrainConfig, TrainResult, dict[int, float | None]]:
    """Apply ``keep`` to the run whose epoch states are ``paths``: (the config as if it had been trained with
    ``keep``, the TrainResult ``train`` would have returned, the score of each evaluated epoch). A run trained
    with select_held_out keeps it; one trained on every image cannot be given a held-out split afterwards."""
    if keep not in KEEP_SCORES:
        raise CRCError(f"keep must be one of {', '.join(KEEP_SCORES)}, got {keep!r}.")
    config, states = load_run(paths)
    changes: dict[str, Any] = {"keep": keep}
    if select_images is not None:
        changes["select_images"] = select_images
    config = dataclasses.replace(config, **changes)
    key = KEEP_SCORES[keep][0]
    train_ds, select_ds = selection_split(config, load_dataset(config.dataset, "train", root=config.data_root,
                                                               limit=config.train_limit))
    if len(train_ds) != states[0].n_train:
        raise CRCError(f"The run trained on {states[0].n_train} images; with these settings it would train on "
                       f"{len(train_ds)}.")
    scores: dict[int, float | None] = {}
    best: tuple[EpochState, dict[str, Any]] | None = None
    for s in states:
        if s.metrics.get("epoch") != s.epoch:  # not evaluated (eval_every): not a candidate
            continue
        model = _model(config, s, train_ds.in_dim, train_ds.n_classes)
        metrics = dict(s.metrics)
        if keep == "best-train-certified":
            metrics[key] = certified_accuracy(model, select_ds.images, select_ds.labels, config.eval_rho,
                                              mode=config.eval_mode)
        scores[s.epoch] = metrics[key]
        if best is None or metrics[key] > best[1][key]:
            best = (s, metrics)
    if best is None:
        raise CRCError("No epoch of the run was evaluated: nothing to select.")
    last = states[-1]
    history = [{**e, key: scores[e["epoch"]]} if e.get("kind") == "epoch" and e["epoch"] in scores else dict(e)
               for e in last.history]
    model = _model(config, best[0], train_ds.in_dim, train_ds.n_classes).eval()
    result = TrainResult(model, history, best[1], False, last.seconds, last.step,
                         kept_record(config, best[1]))
    return config, result, scores


def _model(config: TrainConfig, state: EpochState, in_dim: int, n_classes: int) -> MLP:
    model = MLP(in_dim, list(config.widths), n_classes, config.activation)
    model.load_state_dict(state.model)
    return model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("states", nargs="+", type=Path, help="the run's epoch states (epochs 1..E)")
    p.add_argument("--keep", required=True, choices=list(KEEP_SCORES))
    p.add_argument("--select-images", type=int, default=None, metavar="N",
                   help="best-train-certified: the last N training images (default: the run's select_images)")
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write")
    p.add_argument("--command", default=None, help="the train command that reproduces the file in one run")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config, result, scores = select(args.states, args.keep, args.select_images)
    key = KEEP_SCORES[args.keep][0]
    for epoch, score in scores.items():
        e = next(ev for ev in result.history if ev.get("kind") == "epoch" and ev["epoch"] == epoch)
        print(f"epoch {epoch:3d}: test accuracy {e['test_accuracy']:.4f}  {key} {score:.4f}")
    how = (f"scripts/select_epoch.py --keep {args.keep} on the per-epoch states of a run trained with "
           f"keep={load_file(args.states[0])[1]['config'].get('keep')!r}")
    record = run_record(config, result, source=args.command or how, extra={"selected_afterwards": how})
    path = save_checkpoint(args.out, result.model, record)
    print(f"saved {path}: {result.kept['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
