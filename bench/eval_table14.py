"""Table 14 at our scale: clean accuracy, empirical robust accuracy (PGD) and CRC certified accuracy at ρ.

For each smooth-activation checkpoint (standard, CRT, PGD, TRADES; see docs/reproduction.md, "Table 14"):
- clean accuracy on the whole test split;
- on the fixed sample of test images used by every evaluation here (crc_core.metrics.fixed_eval_sample):
  empirical robust accuracy = correct at the image and at the L2 PGD point within ρ (crc_core.metrics.pgd_robust,
  --pgd-steps steps; an upper bound on the true robust accuracy), and CRC certified accuracy at ρ against the
  runner-up class (the paper's metric) and against every class (crc_core.certify, "fast" solver), with the mean
  certified radius (runner-up, all classes) over the correctly classified sample images and the mean K_ub of the
  sample's (prediction, runner-up) pairs.

    .venv/bin/python bench/eval_table14.py assets/models/standard-2x256.pt runs/t14/*.pt --rho 0.5 --samples 500 \\
        --jsonl runs/t14/results.jsonl
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import append_jsonl

from crc_core.bounds import curvature_bounds
from crc_core.certify import certify
from crc_core.checkpoints import load_checkpoint
from crc_core.data import load_dataset
from crc_core.metrics import fixed_eval_sample, pgd_robust
from crc_core.targets import runner_up


def evaluate_checkpoint(path: Path, dataset: str, rho: float, samples: int, pgd_steps: int) -> dict:
    t0 = time.perf_counter()
    model, meta = load_checkpoint(path)
    model.eval()
    test = load_dataset(dataset, "test")
    with torch.no_grad():
        acc = float(torch.cat([model(test.images[s:s + 2000]).argmax(1) for s in range(0, len(test), 2000)])
                    .eq(test.labels).float().mean())
    idx = fixed_eval_sample(len(test), samples)
    x, y = test.images[idx], test.labels[idx]
    robust = pgd_robust(model, x, y, eps=rho, steps=pgd_steps)
    bounds = curvature_bounds(model)
    cert = certify(model, x, y, targets="all", mode="fast", bounds=bounds, refine="minimum")
    ok = cert.correct
    with torch.no_grad():
        logits = model(x)
    pred = logits.argmax(1)
    return {
        "checkpoint": str(path), "label": meta.get("label"), "kind": meta.get("kind"), "epochs": meta.get("epochs"),
        "command": meta.get("command"), "dataset": dataset, "rho": rho, "samples": int(x.shape[0]),
        "pgd_steps": pgd_steps, "clean_accuracy": acc,
        "empirical_robust_accuracy": float(robust.float().mean()),
        "certified_runner_up": float((ok & (cert.runner_up_radius >= rho)).float().mean()),
        "certified_all": float((ok & (cert.radius >= rho)).float().mean()),
        "mean_radius_runner_up": float(cert.runner_up_radius[ok].mean()) if ok.any() else 0.0,
        "mean_radius_all": float(cert.radius[ok].mean()) if ok.any() else 0.0,
        "mean_K_ub": float(bounds.for_pairs(pred, runner_up(logits, pred)).K.mean()),
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--dataset", default="embedded")
    p.add_argument("--rho", type=float, default=0.5)
    p.add_argument("--samples", type=int, default=500, help="fixed random test images to attack and certify")
    p.add_argument("--pgd-steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jsonl", type=Path, default=None, help="append one JSON line per checkpoint here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    head = ["model", "training", "epochs", "clean acc", f"PGD acc @{args.rho:g}",
            f"CRC cert @{args.rho:g} runner-up / all", "mean CRC radius runner-up / all", "mean K_ub"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for path in args.checkpoints:
        r = evaluate_checkpoint(path, args.dataset, args.rho, args.samples, args.pgd_steps)
        arch, _, training = str(r["label"]).partition(", ")
        cells = [arch, training, str(r["epochs"]), f"{100 * r['clean_accuracy']:.2f}%",
                 f"{100 * r['empirical_robust_accuracy']:.2f}%",
                 f"{100 * r['certified_runner_up']:.2f}% / {100 * r['certified_all']:.2f}%",
                 f"{r['mean_radius_runner_up']:.3f} / {r['mean_radius_all']:.3f}", f"{r['mean_K_ub']:.3g}"]
        print("| " + " | ".join(cells) + " |", flush=True)
        append_jsonl(args.jsonl, r)


if __name__ == "__main__":
    main()
